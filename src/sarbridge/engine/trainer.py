"""One trainer for every task of the toolkit.

A task (ship re-identification, map localisation, diffusion ...) implements the small
:class:`TrainTask` protocol; the :class:`Trainer` owns everything else: device placement, the
optimiser and warm-up + cosine schedule, automatic mixed precision on CUDA, per-epoch seeding
(so a resumed run repeats exactly what an uninterrupted one does), atomic checkpoints every
epoch, model selection on a validation score and a JSON-lines training log.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from sarbridge.engine.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from sarbridge.errors import CheckpointError, SarbridgeError
from sarbridge.utils import atomic_write_text, seed_everything

StepCallback = Callable[["Trainer", int, int, dict[str, float]], None]


class TrainTask(Protocol):
    """What a task gives the trainer."""

    name: str
    model: nn.Module

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


def lr_factor(epoch: int, cfg: Any) -> float:
    """Linear warm-up from ``warmup_factor`` to 1, then cosine decay to ``min_lr_factor``."""
    if epoch < cfg.warmup_epochs:
        alpha = epoch / max(cfg.warmup_epochs, 1)
        return cfg.warmup_factor * (1 - alpha) + alpha
    span = max(cfg.epochs - cfg.warmup_epochs, 1)
    progress = (epoch - cfg.warmup_epochs) / span
    return cfg.min_lr_factor + (1 - cfg.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, cfg: Any) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW; no weight decay on biases and normalisation parameters."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    last_checkpoint: Path
    best_checkpoint: Path
    best_epoch: int
    best_score: float | None
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Runs a :class:`TrainTask` for ``optim.epochs`` epochs.

    Args:
        task: the task.
        optim: an :class:`~sarbridge.config.OptimConfig` (or any object with its fields).
        out_dir: where ``last.pt``, ``best.pt`` and ``train_log.jsonl`` go.
        device: torch device.
        seed: base seed; epoch ``e`` runs under seed ``seed * 1000 + e``.
        amp: autocast (bf16 where supported, else fp16 with loss scaling) on CUDA; ignored on CPU.
        eval_every: validate every this many epochs (and at the last).
        callbacks: called after every optimiser step as ``cb(trainer, epoch, step, logs)``.
        progress: show a progress bar.
    """

    def __init__(
        self,
        task: TrainTask,
        optim: Any,
        out_dir: str | Path,
        device: torch.device,
        seed: int = 0,
        amp: bool = True,
        eval_every: int = 1,
        callbacks: Sequence[StepCallback] = (),
        progress: bool = True,
    ) -> None:
        self.task = task
        self.cfg = optim
        self.out_dir = Path(out_dir)
        self.device = device
        self.seed = seed
        self.eval_every = max(1, eval_every)
        self.callbacks = list(callbacks)
        self.progress = progress
        self.model = task.model.to(device)
        self.optimizer = build_optimizer(self.model, optim)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda e: lr_factor(e, optim))
        self.use_amp = bool(amp) and device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.start_epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"epoch": -1, "score": None}

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
        return self.start_epoch

    def _step(self, batch: Any) -> dict[str, float]:
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            losses = self.task.training_step(batch, self.device)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise SarbridgeError(f"training loss became {loss.item()} (diverged)", "lower optim.lr or check the data for outliers")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {k: float(v.detach()) for k, v in losses.items()}

    def _write_log(self) -> None:
        import json

        text = "".join(json.dumps(h) + "\n" for h in self.history)
        atomic_write_text(self.out_dir / "train_log.jsonl", text)

    def fit(self) -> TrainResult:
        """Train from ``start_epoch`` to the last epoch; returns where the checkpoints are."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for epoch in range(self.start_epoch, self.cfg.epochs):
            seed_everything(self.seed * 1000 + epoch)
            self.model.train()
            sums: dict[str, float] = {}
            n = 0
            batches = self.task.train_batches(epoch)
            total = len(batches) if hasattr(batches, "__len__") else None
            bar = tqdm(batches, total=total, desc=f"{self.task.name} epoch {epoch + 1}/{self.cfg.epochs}",
                       disable=not self.progress, leave=False, dynamic_ncols=True)
            for step, batch in enumerate(bar):
                logs = self._step(batch)
                n += 1
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + v
                bar.set_postfix(loss=f"{logs['loss']:.3f}")
                for cb in self.callbacks:
                    cb(self, epoch, step, logs)
            bar.close()
            record: dict[str, Any] = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"], "steps": n}
            record.update({k: v / max(n, 1) for k, v in sums.items()})
            self.scheduler.step()
            last = epoch == self.cfg.epochs - 1
            if (epoch + 1) % self.eval_every == 0 or last:
                self.model.eval()
                val = self.task.validate(epoch, self.device)
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
            save_checkpoint(self._state(epoch), self.last_path)
            self._write_log()
            if self.progress:
                shown = ", ".join(f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float))
                tqdm.write(f"[{self.task.name}] epoch {epoch + 1}/{self.cfg.epochs}: {shown}")
        return TrainResult(self.last_path, self.best_path, int(self.best["epoch"]), self.best["score"], self.history)

    def _save_best(self, epoch: int) -> None:
        state = {"task": self.task.name, "epoch": epoch, "model": self.model.state_dict(),
                 "best": dict(self.best), **self.task.checkpoint_extra()}
        save_checkpoint(state, self.best_path)
