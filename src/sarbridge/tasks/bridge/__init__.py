"""Brownian Bridge diffusion (BBDM) for optical <-> SAR image translation (the CDGF component of MOS).

* :mod:`sarbridge.tasks.bridge.model`: the schedule, the training objective and the skip-step
  sampler around a ``diffusers.UNet2DModel`` denoiser.
* :mod:`sarbridge.tasks.bridge.pairs`: the pairs of ``data.format`` (HOSS identity pairs, synthetic
  same-pose pairs, a generic ``opt/`` + ``sar/`` folder; read by :mod:`sarbridge.data.pairs`) and
  the Dataset of paired tensors.
* :mod:`sarbridge.tasks.bridge.train`: the training task for :class:`sarbridge.core.trainer.Trainer`,
  EMA weights and the training pipeline.
* :mod:`sarbridge.tasks.bridge.translate`: :class:`BridgeTranslator`, the inference API
  (``BridgeTranslator.from_checkpoint(path).translate(images, samples=K, steps=S)``).

Nothing heavy is imported here; import the submodules you need.
"""
