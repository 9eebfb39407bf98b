"""One trainer for every task of the toolkit.

A task (ship re-identification, map localisation, diffusion ...) implements the small
:class:`TrainTask` protocol; the :class:`Trainer` owns everything else: device placement, the
optimiser and warm-up + cosine schedule, mixed precision (bf16/fp16 autocast), channels_last,
optional ``torch.compile``, gradient accumulation, DistributedDataParallel under ``torchrun``,
per-epoch seeding (so a resumed run repeats exactly what an uninterrupted one does), atomic
checkpoints every epoch, model selection on a validation score and a JSON-lines training log.

The trainer gives the task the module to run training forwards through as
``task.train_module`` (the model wrapped by DDP and/or ``torch.compile``; the plain model in a
single process without compile): a task must forward through it in ``training_step`` so that
gradients are synchronised across processes. ``task.model`` stays the plain module (validation,
checkpoints).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sarbridge.core.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from sarbridge.core.config import OptimConfig, RuntimeConfig
from sarbridge.core.distributed import (
    DistContext,
    barrier,
    broadcast_buffers_,
    broadcast_object,
    current_context,
)
from sarbridge.core.errors import CheckpointError, ConfigError, SarbridgeError
from sarbridge.core.progress import progress_bar
from sarbridge.core.utils import atomic_write_text, seed_everything

StepCallback = Callable[["Trainer", int, int, Mapping[str, float]], None]


class TrainTask(Protocol):
    """What a task gives the trainer."""

    name: str

    @property
    def model(self) -> nn.Module:
        """The plain model being trained (read-only here, so a task may declare a subclass)."""

    def train_batches(self, epoch: int) -> Iterable[Any]:
        """The batches of one epoch (deterministic given the global seed state)."""

    def training_step(self, batch: Any, device: torch.device) -> dict[str, torch.Tensor]:
        """Forward pass and losses; the returned dict must contain ``loss``."""

    def validate(self, epoch: int, device: torch.device) -> dict[str, float] | None:
        """Validation metrics (higher ``selection`` is better), or None when there is no validation set."""

    def checkpoint_extra(self) -> dict[str, Any]:
        """What inference needs besides the weights (config, preprocessing, class count ...).

        A task may also define ``restore(state)`` to resume state it owns outside the model
        (it receives the whole checkpoint dict, including what ``checkpoint_extra`` put there).
        """


def lr_factor(epoch: int, cfg: OptimConfig) -> float:
    """Linear warm-up from ``warmup_factor`` to 1, then cosine decay to ``min_lr_factor``."""
    if epoch < cfg.warmup_epochs:
        alpha = epoch / max(cfg.warmup_epochs, 1)
        return cfg.warmup_factor * (1 - alpha) + alpha
    span = max(cfg.epochs - cfg.warmup_epochs, 1)
    progress = (epoch - cfg.warmup_epochs) / span
    return cfg.min_lr_factor + (1 - cfg.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def segment_factor(epoch: int, segment: Mapping[str, Any], min_lr_factor: float) -> float:
    """The LR factor after a change of run length: a cosine from ``segment["from"]`` at epoch
    ``segment["start"]`` down to ``min_lr_factor`` at epoch ``segment["epochs"]``."""
    start, end, top = int(segment["start"]), int(segment["epochs"]), float(segment["from"])
    progress = min(max((epoch - start) / max(end - start, 1), 0.0), 1.0)
    return min_lr_factor + (top - min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, cfg: OptimConfig, fused: bool | None = None) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW; no weight decay on biases and normalisation parameters.

    ``fused``: the fused implementation (one kernel for all parameters); None = when every
    parameter is on CUDA.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups: list[dict[str, Any]] = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    params = [p for g in groups for p in g["params"]]
    if fused is None:
        fused = bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)
    extra: dict[str, Any] = {"fused": True} if fused else {}
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, **extra)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, **extra)


_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, amp: bool, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run, or None for fp32.

    ``amp=False`` forces fp32. ``auto``: bf16 on CUDA where supported, else fp16; fp32 on other
    devices. ``bf16``/``fp16`` are honoured on every device (CPU autocast included).

    Raises:
        ConfigError: an unknown precision name.
    """
    if precision not in ("auto", *_PRECISIONS):
        raise ConfigError(f"runtime.precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if not amp:
        return None
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return _PRECISIONS[precision]


def conv_fraction(model: nn.Module) -> float:
    """Share of the model's parameters (by count) that belong to ``Conv2d`` layers."""
    total = sum(p.numel() for p in model.parameters())
    conv = sum(p.numel() for m in model.modules() if isinstance(m, nn.Conv2d) for p in m.parameters(recurse=False))
    return conv / total if total else 0.0


def use_channels_last(model: nn.Module, mode: str, device: torch.device) -> bool:
    """Whether to train in channels_last: ``always``, ``never``, or ``auto`` = on CUDA for models
    whose parameters are mostly convolutional (more than half in ``Conv2d`` layers)."""
    if mode not in ("auto", "always", "never"):
        raise ConfigError(f"runtime.channels_last must be auto, always or never, got {mode!r}")
    if mode != "auto":
        return mode == "always"
    return device.type == "cuda" and conv_fraction(model) > 0.5


def _to_channels_last(x: Any) -> Any:
    if isinstance(x, torch.Tensor) and x.ndim == 4 and x.is_floating_point():
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _channels_last_inputs(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    return tuple(_to_channels_last(a) for a in args), {k: _to_channels_last(v) for k, v in kwargs.items()}


def _epoch_optimizer_steps(record: Mapping[str, Any], accumulate: int) -> int:
    """Optimiser steps of one epoch record of the history (older records without
    ``optimizer_steps``: its batches in groups of ``accumulate``)."""
    if "optimizer_steps" in record:
        return int(record["optimizer_steps"])
    return -(-int(record.get("steps", 0)) // max(accumulate, 1))


def _with_last(items: Iterable[Any]) -> Iterator[tuple[Any, bool]]:
    """``(item, is_last)`` pairs, looking one item ahead."""
    it = iter(items)
    try:
        prev = next(it)
    except StopIteration:
        return
    for item in it:
        yield prev, False
        prev = item
    yield prev, True


class StepLogs(Mapping[str, float]):
    """The loss terms of one batch as floats, read from the device only when first looked at."""

    def __init__(self, terms: dict[str, torch.Tensor]) -> None:
        self._terms = terms
        self._floats: dict[str, float] = {}

    def __getitem__(self, key: str) -> float:
        if key not in self._floats:
            self._floats[key] = float(self._terms[key])
        return self._floats[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._terms)

    def __len__(self) -> int:
        return len(self._terms)


def check_finite(logs: Mapping[str, float]) -> None:
    """Stop a diverged run with one clear line.

    Raises:
        SarbridgeError: the loss is NaN or infinite.
    """
    loss = logs["loss"]
    if not math.isfinite(loss):
        raise SarbridgeError(f"training loss became {loss} (diverged)", "lower optim.lr or check the data for outliers")


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        last_checkpoint: ``last.pt`` (the training state of the last epoch).
        best_checkpoint: ``best.pt`` (the weights of the selected epoch).
        best_epoch: the selected epoch (best validation ``selection``, else the last epoch).
        best_score: its validation ``selection``, or None without validation.
        history: one record per epoch (the lines of ``train_log.jsonl``).
        task: the task name the checkpoints carry.
    """

    last_checkpoint: Path
    best_checkpoint: Path
    best_epoch: int
    best_score: float | None
    history: list[dict[str, Any]] = field(default_factory=list)
    task: str | None = None

    def load_best(self, model: nn.Module) -> dict[str, Any]:
        """Load the selected epoch's weights (``best.pt``) into ``model``, strictly.

        Returns:
            The whole ``best.pt`` checkpoint dict.

        Raises:
            CheckpointError: the file is missing, foreign, of another task or does not fit ``model``.
        """
        state = load_checkpoint(self.best_checkpoint, task=self.task)
        load_model_state(model, state["model"], str(self.best_checkpoint))
        return state


class Trainer:
    """Runs a :class:`TrainTask` for ``optim.epochs`` epochs.

    Under ``torchrun`` (a process group exists) the model is wrapped in DistributedDataParallel,
    only rank 0 writes checkpoints and logs and shows progress, the others wait at barriers, and the
    validation metrics (hence the selected epoch) of rank 0 are broadcast to every rank.

    Args:
        task: the task.
        optim: an :class:`~sarbridge.core.config.OptimConfig` (or any object with its fields);
            ``accumulate`` (default 1) batches make one optimiser step.
        out_dir: where ``last.pt``, ``best.pt`` and ``train_log.jsonl`` go.
        device: torch device.
        seed: base seed; epoch ``e`` runs under seed ``seed * 1000 + e`` (rank 0; other ranks derive
            their own from it, so data augmentation differs between ranks).
        amp: allow mixed precision (``False`` forces fp32 whatever ``runtime.precision`` says).
        eval_every: validate every this many epochs (and at the last).
        callbacks: called after every batch as ``cb(trainer, epoch, step, logs)``.
        progress: show a progress bar (rank 0 only).
        runtime: a :class:`~sarbridge.core.config.RuntimeConfig` (precision, channels_last, compile,
            compile_mode, cudnn_benchmark); None = its defaults.
        dist: the distributed context (default: :func:`~sarbridge.core.distributed.current_context`).
        find_unused_parameters: DDP option (tasks whose forward skips some parameters need it).
        compile_backend: ``torch.compile`` backend (None = inductor; tests use ``"eager"``).
        log_every: on CUDA, read the loss back (progress bar, divergence check) every this many
            batches instead of every batch, so the host does not wait for the GPU at each step.
        extra_state: more keys for every checkpoint (e.g. ``data_fingerprint``).
    """

    def __init__(
        self,
        task: TrainTask,
        optim: OptimConfig,
        out_dir: str | Path,
        device: torch.device,
        seed: int = 0,
        amp: bool = True,
        eval_every: int = 1,
        callbacks: Sequence[StepCallback] = (),
        progress: bool = True,
        runtime: RuntimeConfig | None = None,
        dist: DistContext | None = None,
        find_unused_parameters: bool = True,
        compile_backend: str | None = None,
        log_every: int = 25,
        extra_state: Mapping[str, Any] | None = None,
    ) -> None:
        self.task = task
        self.extra_state = dict(extra_state or {})
        self.cfg = optim
        self.out_dir = Path(out_dir)
        self.device = device
        self.seed = seed
        self.eval_every = max(1, eval_every)
        self.callbacks = list(callbacks)
        self.dist = dist if dist is not None else current_context()
        self.progress = progress and self.dist.is_main
        self.runtime = runtime if runtime is not None else RuntimeConfig()
        self.accumulate = int(getattr(optim, "accumulate", 1) or 1)
        if self.accumulate < 1:
            raise ConfigError(f"optim.accumulate must be >= 1, got {self.accumulate}")
        max_steps = getattr(optim, "max_steps", None)
        if max_steps is not None and int(max_steps) < 1:
            raise ConfigError(f"optim.max_steps must be >= 1 (optimiser steps in total), got {max_steps}",
                              "set optim.max_steps to a positive number, or null for no cap")
        #: the cap on optimiser steps in total (``optim.max_steps``), None = none
        self.max_steps: int | None = None if max_steps is None else int(max_steps)
        #: optimiser steps taken so far, over all epochs (restored from the history on resume)
        self.optimizer_steps = 0
        self.model = task.model.to(device)
        self.channels_last = use_channels_last(self.model, self.runtime.channels_last, device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
            self.model.register_forward_pre_hook(_channels_last_inputs, with_kwargs=True)
        self.log_every = max(1, int(log_every))
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = bool(self.runtime.cudnn_benchmark)
            if getattr(self.runtime, "tf32", True):  # TensorFloat-32 for what stays fp32 (Ampere and later)
                torch.backends.cuda.matmul.allow_tf32 = True
                torch.backends.cudnn.allow_tf32 = True
        self.optimizer = build_optimizer(self.model, optim)
        #: set when a resumed run's length changed (see :meth:`resume`): from ``start`` the factor
        #: follows a cosine from ``from`` down to ``min_lr_factor`` at ``epochs``
        self.lr_segment: dict[str, Any] | None = None
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda e: self._lr_factor(e))
        self.amp_dtype = resolve_precision(self.runtime.precision, amp, device)
        self.use_amp = self.amp_dtype is not None
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        module: nn.Module = self.model
        if self.dist.distributed:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=find_unused_parameters)
            module = self.ddp
        if self.runtime.compile:
            if compile_backend in (None, "inductor"):
                module = torch.compile(module, mode=self.runtime.compile_mode)  # type: ignore[assignment]
            else:
                module = torch.compile(module, backend=compile_backend)  # type: ignore[assignment]
        self.train_module = module
        task.train_module = module  # type: ignore[attr-defined]
        self.start_epoch = 0
        self.history: list[dict[str, Any]] = []
        #: run events written into ``train_log.jsonl`` beside the epochs (e.g. a longer schedule)
        self.events: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"epoch": -1, "score": None}

    def _lr_factor(self, epoch: int) -> float:
        seg = self.lr_segment
        if seg is None or epoch < seg["start"]:
            return lr_factor(epoch, self.cfg)
        return segment_factor(epoch, seg, self.cfg.min_lr_factor)

    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out_dir / "best.pt"

    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            "task": self.task.name,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best": dict(self.best),
            "history": list(self.history),
            "seed": self.seed,
            "schedule": {"epochs": self.cfg.epochs, "segment": self.lr_segment},
            "events": list(self.events),
            **self.extra_state,
            **self.task.checkpoint_extra(),
        }

    def resume(self, path: str | Path | None = None) -> int:
        """Restore the state of ``path`` (default ``out_dir/last.pt``); returns the next epoch."""
        p = Path(path) if path else self.last_path
        state = load_checkpoint(p, task=self.task.name)
        if "optimizer" not in state:
            raise CheckpointError(f"checkpoint '{p}' holds no training state", "resume from last.pt, not best.pt")
        extra = self.task.checkpoint_extra()
        for key in ("num_classes", "arch"):
            if key in extra and state.get(key) != extra[key]:
                raise CheckpointError(
                    f"checkpoint '{p}' was trained with {key}={state.get(key)!r}, this run has {extra[key]!r}",
                    "resume with the same config and data, or start a new --out folder",
                )
        load_model_state(self.model, state["model"], str(p))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.best = dict(state["best"])
        self.history = list(state["history"])
        restore = getattr(self.task, "restore", None)
        if callable(restore):  # optional: state the task owns (e.g. a critic's optimiser)
            restore(state)
        self.start_epoch = int(state["epoch"]) + 1
        self.optimizer_steps = sum(_epoch_optimizer_steps(h, self.accumulate) for h in self.history)
        self.events = list(state.get("events") or [])
        self._resume_schedule(state.get("schedule"))
        return self.start_epoch

    def _resume_schedule(self, saved: dict[str, Any] | None) -> None:
        """Carry on the learning-rate schedule of the checkpoint; a changed ``optim.epochs`` (an
        explicitly allowed change on resume) continues from the LR already reached instead of
        jumping to the new length's cosine: the remaining epochs decay along a cosine from the
        current factor down to ``min_lr_factor`` at the new last epoch (a run resumed inside its
        warm-up keeps the plain schedule of the new length, whose warm-up is the same)."""
        if not saved:  # a checkpoint from before schedules were recorded: the config's schedule
            return
        self.lr_segment = saved.get("segment")
        old_epochs = int(saved.get("epochs", self.cfg.epochs))
        if old_epochs == self.cfg.epochs:
            return
        start = self.start_epoch
        if start < self.cfg.warmup_epochs and self.lr_segment is None:
            factor = lr_factor(start, self.cfg)
        else:
            old_cfg = dataclasses.replace(self.cfg, epochs=old_epochs) if dataclasses.is_dataclass(self.cfg) else self.cfg
            seg = self.lr_segment
            factor = (segment_factor(start, seg, self.cfg.min_lr_factor) if seg is not None and start >= seg["start"]
                      else lr_factor(start, old_cfg))
            self.lr_segment = {"start": start, "from": factor, "epochs": self.cfg.epochs}
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * factor
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]  # type: ignore[attr-defined]
        self.events.append({"event": "schedule_changed", "epoch": start, "optim.epochs": [old_epochs, self.cfg.epochs],
                            "lr_factor": factor,
                            "note": "the remaining epochs decay from the LR reached to min_lr_factor"
                            if self.lr_segment is not None else "resumed in the warm-up: the new length's schedule"})

    def _epoch_seed(self, epoch: int) -> int:
        base = self.seed * 1000 + epoch
        if self.dist.rank == 0:
            return base
        return int(np.random.SeedSequence([base, self.dist.rank]).generate_state(1)[0])

    def _forward_backward(self, batch: Any, divisor: int, sync: bool) -> dict[str, torch.Tensor]:
        """One micro-batch: forward under autocast, ``loss / divisor`` backward (DDP gradient
        synchronisation only when ``sync``). Returns the detached loss terms, still on the device
        (reading them would make the host wait for the GPU)."""
        quiet = self.ddp.no_sync() if self.ddp is not None and not sync else nullcontext()
        with quiet:
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.use_amp):
                losses = self.task.training_step(batch, self.device)
            loss = losses["loss"]
            self.scaler.scale(loss / divisor).backward()
        return {k: (v.detach() if isinstance(v, torch.Tensor) else torch.tensor(float(v))) for k, v in losses.items()}

    def _optimizer_step(self) -> None:
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def _step(self, batch: Any) -> dict[str, float]:
        """One batch and one optimiser step (no accumulation)."""
        self.optimizer.zero_grad(set_to_none=True)
        logs = StepLogs(self._forward_backward(batch, 1, sync=True))
        check_finite(logs)
        self._optimizer_step()
        return dict(logs)

    def _write_log(self) -> None:
        rows: list[dict[str, Any]] = []
        after = [e for e in self.events if e.get("after_epoch")]  # e.g. "max_steps reached": after its epoch
        events = sorted((e for e in self.events if not e.get("after_epoch")), key=lambda e: int(e.get("epoch", 0)))
        for h in self.history:  # each event before the first epoch it applies to
            while events and int(events[0].get("epoch", 0)) <= int(h.get("epoch", 0)):
                rows.append(events.pop(0))
            rows.append(h)
            rows.extend(e for e in after if int(e.get("epoch", -1)) == int(h.get("epoch", 0)))
        events += [e for e in after if all(int(e.get("epoch", -1)) != int(h.get("epoch", 0)) for h in self.history)]
        text = "".join(json.dumps(r) + "\n" for r in [*rows, *events])
        atomic_write_text(self.out_dir / "train_log.jsonl", text)

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        n = steps = 0
        batches = self.task.train_batches(epoch)
        total = len(batches) if isinstance(batches, Sized) else None
        bar = progress_bar(batches, total=total, desc=f"{self.task.name} epoch {epoch + 1}/{self.cfg.epochs}",
                           enabled=self.progress, unit="batch")
        acc, group_start = self.accumulate, 0
        # On CUDA the loss is read back (a host-device sync) only every ``log_every`` batches and at
        # the end of the epoch; callbacks get lazily converted logs. Elsewhere every batch is checked.
        every = 1 if self.device.type != "cuda" else self.log_every
        for step, (batch, is_last) in enumerate(_with_last(bar)):
            if step % acc == 0:
                group_start = step
                self.optimizer.zero_grad(set_to_none=True)
            # a partial group at the end of the epoch averages over the batches it has
            divisor = min(acc, total - group_start) if total is not None else acc
            closes = (step + 1) % acc == 0 or is_last
            terms = self._forward_backward(batch, divisor, sync=closes)
            logs = StepLogs(terms)
            if (step + 1) % every == 0 or is_last:
                check_finite(logs)  # before the optimiser step applies a diverged gradient
                bar.set_postfix(loss=f"{logs['loss']:.3f}")
            if closes:
                self._optimizer_step()
                steps += 1
                self.optimizer_steps += 1
            n += 1
            for k, v in terms.items():
                sums[k] = sums[k] + v if k in sums else v.clone()
            for cb in self.callbacks:
                cb(self, epoch, step, logs)
            if closes and self.cap_reached:  # stop at an optimiser-step boundary (optim.max_steps)
                break
        bar.close()
        record: dict[str, Any] = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"], "steps": n,
                                  "optimizer_steps": steps}
        record.update({k: float(v) / max(n, 1) for k, v in sums.items()})
        return record

    @property
    def cap_reached(self) -> bool:
        """True once ``optim.max_steps`` optimiser steps have been taken (never without a cap)."""
        return self.max_steps is not None and self.optimizer_steps >= self.max_steps

    def fit(self) -> TrainResult:
        """Train from ``start_epoch`` to the last epoch; returns where the checkpoints are.

        With ``optim.max_steps`` the epoch in which the cap is reached stops after that optimiser
        step and is treated as the last one (validated, saved as ``last.pt``/``best.pt``, a
        ``max_steps reached`` line in ``train_log.jsonl``); a run resumed after the cap trains no more.
        """
        main = self.dist.is_main
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        for epoch in range(self.start_epoch, self.cfg.epochs):
            if self.cap_reached:  # resumed after the cap: nothing more to train
                break
            seed_everything(self._epoch_seed(epoch))
            record = self._train_epoch(epoch)
            self.scheduler.step()
            capped = self.cap_reached
            if capped:
                self.events.append({"event": "max_steps reached", "epoch": epoch, "after_epoch": True,
                                    "optimizer_steps": self.optimizer_steps, "optim.max_steps": self.max_steps,
                                    "note": "training stopped at the cap; this epoch is the last"})
            last = epoch == self.cfg.epochs - 1 or capped
            if (epoch + 1) % self.eval_every == 0 or last:
                self.model.eval()
                broadcast_buffers_(self.model, ctx=self.dist)  # e.g. BatchNorm statistics of rank 0
                val = broadcast_object(self.task.validate(epoch, self.device), ctx=self.dist)
                if val:
                    record.update({f"val_{k}": v for k, v in val.items()})
                    score = val.get("selection")
                    if score is not None and (self.best["score"] is None or score > self.best["score"]):
                        self.best = {"epoch": epoch, "score": float(score)}
                        self._save_best(epoch)
            if self.best["score"] is None:  # no validation: the latest epoch is the model
                self.best = {"epoch": epoch, "score": None}
                self._save_best(epoch)
            self.history.append(record)
            if main:
                save_checkpoint(self._state(epoch), self.last_path)
                self._write_log()
            if self.progress:
                shown = ", ".join(f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float))
                tqdm.write(f"[{self.task.name}] epoch {epoch + 1}/{self.cfg.epochs}: {shown}")
            barrier(self.dist)
            if capped:
                if self.progress:
                    tqdm.write(f"[{self.task.name}] optim.max_steps={self.max_steps} reached: training stopped")
                break
        return TrainResult(self.last_path, self.best_path, int(self.best["epoch"]), self.best["score"], self.history,
                           task=self.task.name)

    def close(self) -> None:
        """Drop the DDP / compiled wrappers (and their gradient hooks); ``task.train_module`` falls
        back to the plain model. Call it before wrapping part of the model in another trainer."""
        self.ddp = None
        self.train_module = self.model
        self.task.train_module = None  # type: ignore[attr-defined]

    def _save_best(self, epoch: int) -> None:
        if not self.dist.is_main:
            return
        state = {"task": self.task.name, "epoch": epoch, "model": self.model.state_dict(),
                 "best": dict(self.best), **self.extra_state, **self.task.checkpoint_extra()}
        save_checkpoint(state, self.best_path)
