"""Brownian Bridge diffusion (BBDM) for optical <-> SAR image translation (the CDGF component of MOS).

* :mod:`sarbridge.diffusion.bridge`: the schedule, the training objective and the skip-step
  sampler around a ``diffusers.UNet2DModel`` denoiser.
* :mod:`sarbridge.diffusion.pairs`: paired optical/SAR datasets (HOSS identity pairs, synthetic
  same-pose pairs, a generic ``opt/`` + ``sar/`` folder).
* :mod:`sarbridge.diffusion.train`: the training task for :class:`sarbridge.engine.trainer.Trainer`,
  EMA weights and the training pipeline.
* :mod:`sarbridge.diffusion.translate`: :class:`BridgeTranslator`, the inference API
  (``BridgeTranslator.from_checkpoint(path).translate(images, samples=K, steps=S)``).

Nothing heavy is imported here; import the submodules you need.
"""
