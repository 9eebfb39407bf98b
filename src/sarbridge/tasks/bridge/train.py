"""Training the bridge: EMA weights, the :class:`DiffusionTask` for the shared
:class:`~sarbridge.core.trainer.Trainer`, and :func:`train_diffusion`, the pipeline behind
``sarbridge diffusion-train`` (the configuration is :mod:`sarbridge.tasks.bridge.config`).

A checkpoint of this task (``task: "diffusion"``) holds, besides the Trainer's keys:

* ``config``: the resolved :class:`~sarbridge.tasks.bridge.config.DiffusionConfig`;
* ``preprocess``: the :class:`~sarbridge.data.transforms.PreprocessSpec` (``image_size`` = resolution);
* ``arch``: ``{"unet": UNet2DModel constructor arguments, "condition", "resolution", "direction",
  "channels"}`` (checked on resume);
* ``bridge``: schedule (``num_timesteps, m_min, m_max, max_var, objective, loss``) and sampler
  defaults (``sample_steps, skip_type, eta, clip_denoised``);
* ``direction``, ``source_modality``, ``target_modality``, ``resolution``;
* ``ema``: ``{"decay", "num_updates", "shadow": state_dict}`` or None; ``train_step``.

:class:`~sarbridge.tasks.bridge.translate.BridgeTranslator` rebuilds everything from the file alone.

Under ``torchrun`` training is data-parallel: every process builds the same network, trains it
through DistributedDataParallel on a disjoint share of each epoch's pairs
(:class:`ShardedRandomSampler`; ``train.batch_size`` and ``train.steps_per_epoch`` are per
process) and draws its own timesteps and noise; gradients are averaged, so the weights (and the
EMA, updated from them) stay identical on every process. Each process validates in full (no
collective); only rank 0 writes files.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Sampler

from sarbridge.core.checkpoint import load_checkpoint
from sarbridge.core.config import config_to_dict
from sarbridge.core.distributed import current_context
from sarbridge.core.errors import CheckpointError, DataError
from sarbridge.core.progress import progress_bar
from sarbridge.core.run import TrainingRun
from sarbridge.core.threads import loader_workers
from sarbridge.core.trainer import StepCallback
from sarbridge.core.utils import atomic_write_json
from sarbridge.data.pairs import PairItem, split_pairs
from sarbridge.tasks.bridge.config import DiffusionConfig, validate_diffusion_config
from sarbridge.tasks.bridge.model import (
    BridgeDenoiser,
    BrownianBridge,
    build_denoiser,
    direction_modalities,
    tensor_to_uint8,
    unet_config_dict,
)
from sarbridge.tasks.bridge.pairs import BridgePairDataset, load_pairs, pairs_summary

TASK_NAME = "diffusion"


# --------------------------------------------------------------------------------------------
# EMA
# --------------------------------------------------------------------------------------------


class EMA:
    """Float32 shadow copy of a model's floating-point state, updated after optimiser steps.

    Args:
        model: the model whose weights are averaged.
        decay: the EMA decay.
        warmup: use ``min(decay, (1 + n) / (10 + n))``.
    """

    def __init__(self, model: nn.Module, decay: float = 0.995, warmup: bool = True) -> None:
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        for k, v in model.state_dict().items():
            if k not in self.shadow:
                continue
            s = self.shadow[k]
            if s.device != v.device:
                s = self.shadow[k] = s.to(v.device)
            s.mul_(d).add_(v.detach().float(), alpha=1.0 - d)
        self.num_updates += 1

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        """Set the average to the model's current weights."""
        state = model.state_dict()
        for k in self.shadow:
            self.shadow[k] = state[k].detach().float().clone()

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model``."""
        state = model.state_dict()
        for k, v in self.shadow.items():
            state[k].copy_(v.to(device=state[k].device, dtype=state[k].dtype))

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily run ``model`` with the averaged weights."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.shadow}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                state = model.state_dict()
                for k, v in backup.items():
                    state[k].copy_(v)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "shadow": {k: v.detach().cpu().clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        shadow = state["shadow"]
        missing = [k for k in self.shadow if k not in shadow]
        if missing:
            raise CheckpointError(f"EMA weights lack {len(missing)} tensors, e.g. {missing[0]}",
                                  "resume with the config the checkpoint was trained with")
        self.shadow = {k: shadow[k].float().clone() for k in self.shadow}
        self.num_updates = int(state.get("num_updates", 0))


# --------------------------------------------------------------------------------------------
# the task
# --------------------------------------------------------------------------------------------


class ShardedRandomSampler(Sampler[int]):
    """One process's disjoint share of an epoch's random draw of dataset indices.

    Every process builds the same global list from ``(seed, epoch)``: random permutations of
    ``range(size)`` (``torch.randperm`` with a generator seeded ``seed + epoch``), concatenated
    until there are ``num_samples * world_size`` indices; process ``rank`` takes positions
    ``rank, rank + W, ...``. Without ``num_samples`` each process takes ``size // world_size``
    indices, which is exactly what ``DistributedSampler(shuffle=True, drop_last=True, seed=seed)``
    yields. Call :meth:`set_epoch` before every epoch.

    Args:
        size: dataset length.
        rank: this process's rank.
        world_size: number of processes.
        seed: base seed (the same on every process).
        num_samples: indices per process and epoch (None: ``size // world_size``).

    Raises:
        DataError: fewer items than processes.
    """

    def __init__(self, size: int, rank: int, world_size: int, seed: int = 0, num_samples: int | None = None) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        per = size // world_size if num_samples is None else int(num_samples)
        if size < 1 or per < 1:
            raise DataError(f"{size} training pairs cannot be shared by {world_size} processes",
                            "use more pairs or start fewer processes")
        self.size, self.rank, self.world_size, self.seed = size, rank, world_size, seed
        self.num_samples = per
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draw :meth:`__iter__` yields."""
        self.epoch = int(epoch)

    def global_indices(self) -> list[int]:
        """The whole epoch's draw (every process's share interleaved)."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        total = self.num_samples * self.world_size
        parts, have = [], 0
        while have < total:
            parts.append(torch.randperm(self.size, generator=g))
            have += self.size
        return torch.cat(parts)[:total].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_indices()[self.rank::self.world_size])

    def __len__(self) -> int:
        return self.num_samples


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) between two uint8 images of the same shape (100 for identical images)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def arch_signature(cfg: DiffusionConfig, model: BridgeDenoiser) -> dict[str, Any]:
    """What must match for weights and samples to be reusable."""
    return {"unet": unet_config_dict(model.unet), "condition": model.condition,
            "resolution": [int(v) for v in cfg.data.resolution], "direction": cfg.direction, "channels": 3}


def bridge_record(cfg: DiffusionConfig) -> dict[str, Any]:
    """The ``bridge`` entry of a checkpoint: schedule plus sampler defaults."""
    return asdict(cfg.bridge)


class DiffusionTask:
    """Brownian Bridge training on paired images (one :class:`TrainTask` for the shared Trainer).

    ``x0`` is the target modality and ``y`` the source (``opt2sar``: x0 = SAR, y = optical).
    The Trainer's optimiser steps update the EMA through :meth:`on_step` (pass it as a callback).
    Training forwards go through :attr:`train_module` (set by the trainer: the DDP / compiled
    wrapper of :attr:`model`); under a process group the batches come from a
    :class:`ShardedRandomSampler` (a disjoint share of each epoch per process).
    """

    name = TASK_NAME
    train_module: nn.Module | None = None

    def __init__(self, cfg: DiffusionConfig, train: Sequence[PairItem], val: Sequence[PairItem],
                 progress: bool = True) -> None:
        self.cfg = cfg
        self.progress = progress
        self.spec = cfg.data.spec()
        self.source, self.target = direction_modalities(cfg.direction)
        self.bridge = BrownianBridge.from_config(cfg.bridge)
        self.model: BridgeDenoiser = build_denoiser(cfg.model, cfg.data.resolution)
        self.ema = EMA(self.model, cfg.ema.decay, cfg.ema.warmup) if cfg.ema.enabled else None
        self.global_step = 0
        d = cfg.data
        self.train_pairs, self.val_pairs = list(train), list(val)
        self.dataset = BridgePairDataset(train, self.spec, d.resolution, d.hflip, d.vflip, d.cache)
        self.val_dataset = BridgePairDataset(self.val_pairs[: cfg.eval.max_pairs], self.spec, d.resolution, cache=True)
        n = cfg.train.steps_per_epoch * cfg.train.batch_size if cfg.train.steps_per_epoch else None
        ctx = current_context()
        self.sampler: RandomSampler | ShardedRandomSampler
        if ctx.distributed:
            self.sampler = ShardedRandomSampler(len(self.dataset), ctx.rank, ctx.world_size, seed=cfg.seed, num_samples=n)
        else:
            self.sampler = RandomSampler(self.dataset, replacement=False, num_samples=n)
        workers = loader_workers(d.num_workers)
        self.loader = DataLoader(self.dataset, batch_size=cfg.train.batch_size, sampler=self.sampler,
                                 num_workers=workers, persistent_workers=workers > 0,
                                 pin_memory=torch.cuda.is_available())

    # ---- Trainer protocol ------------------------------------------------------------------------

    def split(self, batch: dict[str, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x0, y)`` of a batch for this direction."""
        opt = batch["optical"].to(device, non_blocking=True)
        sar = batch["sar"].to(device, non_blocking=True)
        return (sar, opt) if self.cfg.direction == "opt2sar" else (opt, sar)

    def train_batches(self, epoch: int) -> DataLoader:
        if isinstance(self.sampler, ShardedRandomSampler):
            self.sampler.set_epoch(epoch)
        return self.loader

    def training_step(self, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        x0, y = self.split(batch, device)
        net = self.train_module if self.train_module is not None else self.model
        loss = self.bridge.training_loss(net, x0, y)  # type: ignore[arg-type]
        return {"loss": loss}

    def on_step(self, trainer: Any, epoch: int, step: int, logs: Mapping[str, float]) -> None:
        """Trainer callback: count steps and update the EMA."""
        self.global_step += 1
        e = self.cfg.ema
        if self.ema is not None and self.global_step >= e.start_step and self.global_step % e.update_every == 0:
            if self.ema.num_updates == 0 and e.start_step > 0:
                self.ema.reset(self.model)  # a late start averages from the current weights, not the initial ones
            self.ema.update(self.model)

    @contextmanager
    def sampling_weights(self) -> Iterator[nn.Module]:
        """The model with the weights used for sampling (EMA when enabled)."""
        if self.ema is None:
            yield self.model
        else:
            with self.ema.applied(self.model) as m:
                yield m

    @torch.no_grad()
    def validate(self, epoch: int, device: torch.device) -> dict[str, float] | None:
        if len(self.val_dataset) == 0:
            return None
        e = self.cfg.eval
        gen = torch.Generator().manual_seed(self.cfg.seed + 7919)  # the same t and noise every epoch
        total, count = 0.0, 0
        self.model.eval()
        with self.sampling_weights() as model:
            for start in range(0, len(self.val_dataset), e.batch_size):
                items = [self.val_dataset[i] for i in range(start, min(start + e.batch_size, len(self.val_dataset)))]
                batch = {k: torch.stack([it[k] for it in items]) for k in ("optical", "sar")}
                x0, y = self.split(batch, device)
                t = torch.randint(0, self.bridge.num_timesteps, (x0.shape[0],), generator=gen).to(device)
                noise = torch.randn(x0.shape, generator=gen).to(device)
                per = self.bridge.training_loss(model, x0, y, t, noise, reduction="none")
                if self.bridge.loss_type != "l1":  # always report L1 of the objective
                    target = self.bridge.objective_target(x0, y, t, noise)
                    pred = model(self.bridge.q_sample(x0, y, t, noise), t, y).float()
                    per = (pred - target).abs().flatten(1).mean(1)
                total += float(per.sum())
                count += x0.shape[0]
            out: dict[str, float] = {"l1": total / max(count, 1)}
            n_img = min(e.sample_images, len(self.val_dataset))
            if n_img:
                items = [self.val_dataset[i] for i in range(n_img)]
                batch = {k: torch.stack([it[k] for it in items]) for k in ("optical", "sar")}
                x0, y = self.split(batch, device)
                gens = [torch.Generator().manual_seed(self.cfg.seed * 100003 + i) for i in range(n_img)]
                b = self.cfg.bridge
                xs = self.bridge.sample(model, y, steps=e.sample_steps, samples=1, generator=gens, eta=b.eta,
                                        clip_denoised=b.clip_denoised, skip_type=b.skip_type)
                gen8, ref8 = tensor_to_uint8(xs[:, 0]), tensor_to_uint8(x0)
                out["psnr"] = float(np.mean([psnr_uint8(g, r) for g, r in zip(gen8, ref8)]))
        out["selection"] = out["psnr"] if e.select == "psnr" else -out["l1"]
        return out

    def checkpoint_extra(self) -> dict[str, Any]:
        return {
            "config": config_to_dict(self.cfg),
            "preprocess": self.spec.to_dict(),
            "arch": arch_signature(self.cfg, self.model),
            "bridge": bridge_record(self.cfg),
            "direction": self.cfg.direction,
            "source_modality": self.source,
            "target_modality": self.target,
            "resolution": [int(v) for v in self.cfg.data.resolution],
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "train_step": self.global_step,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Restore the EMA and the step counter from a checkpoint written by this task."""
        self.global_step = int(state.get("train_step", 0))
        if self.ema is not None:
            if state.get("ema") is None:
                raise CheckpointError("the checkpoint holds no EMA weights but this config enables them",
                                      "resume with ema.enabled=false or start a new --out folder")
            self.ema.load_state_dict(state["ema"])

    def preload(self) -> None:
        """Decode every image once (fills the cache; a corrupt file stops the run here)."""
        for ds, what in ((self.dataset, "training pairs"), (self.val_dataset, "validation pairs")):
            for i in progress_bar(range(len(ds)), desc=f"loading {what}", disable=not self.progress, leave=False,
                          dynamic_ncols=True):
                ds.load_uint8(i)


# --------------------------------------------------------------------------------------------
# pipeline
# --------------------------------------------------------------------------------------------


def _check_resumable(path: Path, cfg: DiffusionConfig) -> None:
    state = load_checkpoint(path, task=TASK_NAME)
    if state.get("direction") != cfg.direction:
        raise CheckpointError(
            f"'{path}' was trained for {state.get('direction')}, this run asks for {cfg.direction}",
            "resume with the same --direction, or start a new --out folder",
        )


def train_diffusion(
    cfg: DiffusionConfig,
    out_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    callbacks: Sequence[StepCallback] = (),
) -> dict[str, Any]:
    """Train the bridge on the pairs of ``cfg.data``, selecting ``best.pt`` on held-out pairs.

    Writes ``config.yaml``, ``last.pt``, ``best.pt``, ``train_log.jsonl`` and ``metrics.json``.
    Runs data-parallel under ``torchrun`` (see the module docstring): only rank 0 writes files and
    shows progress (the training log's losses are rank 0's own).

    Returns:
        The metrics written to ``metrics.json``.

    Raises:
        SarbridgeError: an existing run without ``resume``/``overwrite``, bad data or config.
    """
    validate_diffusion_config(cfg)
    run = TrainingRun.open(cfg, out_dir, resume=resume, overwrite=overwrite, progress=progress,
                           resume_missing="refuse")
    progress, device = run.progress, run.device
    if resume:
        _check_resumable(run.out / "last.pt", cfg)
    pairs, fmt = load_pairs(cfg.data, seed=cfg.seed)
    train, val = split_pairs(pairs, cfg.data.val_fraction, seed=cfg.seed, min_groups=1)
    task = run.build_task(lambda: DiffusionTask(cfg, train, val, progress=progress))
    task.preload()
    # resuming restores the EMA and the step count too (the trainer calls task.restore)
    result = run.trainer(task, callbacks=[task.on_step, *callbacks]).fit()
    metrics = {
        "task": TASK_NAME,
        "direction": cfg.direction,
        "best_checkpoint": str(result.best_checkpoint),
        "last_checkpoint": str(result.last_checkpoint),
        "selected_epoch": result.best_epoch,
        "selection": (f"validation {cfg.eval.select} on held-out pairs" if val
                      else "last epoch (no validation pairs)"),
        "best_score": result.best_score,
        "train_steps": task.global_step,
        "data": {"root": cfg.data.root, "format": fmt, "train": pairs_summary(train), "val": pairs_summary(val)},
        "device": str(device),
        "history": result.history,
    }
    if run.ctx.distributed:
        metrics["processes"] = run.ctx.world_size
    run.write(lambda folder: atomic_write_json(folder / "metrics.json", metrics))
    return metrics
