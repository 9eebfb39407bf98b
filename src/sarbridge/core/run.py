"""One training run: the run-folder rules and the setup every training pipeline shares.

Each pipeline (``train_reid``, ``train_geo``, ``train_pretrain``, ``train_diffusion``) keeps its
data, its task and its evaluation; :class:`TrainingRun` does the rest, in this order:

1. :meth:`TrainingRun.open`: refuse a used ``--out`` folder (one holding ``marker``, normally
   ``last.pt``) unless resuming or overwriting, apply the resume rule when there is nothing to
   resume, then join ``torchrun``'s process group (:func:`~sarbridge.core.distributed.init_distributed`),
   which picks the device; progress is shown on rank 0 only.
2. :meth:`TrainingRun.build_task`: seed every generator with ``cfg.seed``, then build the task
   (model initialisation is part of a run's reproducibility: the same weights on every rank).
3. :meth:`TrainingRun.trainer`: the :class:`~sarbridge.core.trainer.Trainer` with the run's
   optimiser, precision, runtime options, seed and process group, writing into the run folder (or a
   stage folder of it), resumed from its ``last.pt`` when asked; then ``config.yaml`` (rank 0, once).
4. ``trainer.fit()`` writes ``last.pt``, ``best.pt`` and ``train_log.jsonl`` and names the selected
   ``best.pt`` (:meth:`~sarbridge.core.trainer.TrainResult.load_best` loads it into a model).
5. :meth:`TrainingRun.write`: rank 0 writes the results (``metrics.json``, ``results.md``, a
   bundle ...) and every rank waits for it.

Resume rules (``resume_missing``) when ``--resume`` finds no ``marker``: ``"load"`` lets the trainer
read ``last.pt`` (and fail naming the missing file), ``"refuse"`` stops at once with "nothing to
resume", ``"fresh"`` starts the stage from scratch (a multi-stage run resumes each stage that has
a ``last.pt``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import torch

from sarbridge.core.config import OptimConfig, RuntimeConfig, save_config
from sarbridge.core.distributed import DistContext, barrier, init_distributed
from sarbridge.core.errors import SarbridgeError
from sarbridge.core.trainer import StepCallback, Trainer, TrainTask
from sarbridge.core.utils import seed_everything

_T = TypeVar("_T")
ResumeMissing = Literal["load", "refuse", "fresh"]


class TrainingConfig(Protocol):
    """What a run config gives the run setup (every task's root config has these keys)."""

    name: str
    seed: int
    device: str
    amp: bool
    runtime: RuntimeConfig
    optim: OptimConfig
    eval: Any  # with an ``every`` key: validate every this many epochs


def check_run_folder(out: Path, marker: str = "last.pt", resume: bool = False, overwrite: bool = False,
                     resume_missing: ResumeMissing = "load") -> None:
    """The ``--out`` rules of a training run.

    Args:
        out: the run folder.
        marker: the file (relative to ``out``) whose presence marks a used folder: ``last.pt``, or
            the first stage's ``coarse/last.pt`` of a multi-stage run.
        resume: ``--resume`` was given.
        overwrite: ``--overwrite`` was given.
        resume_missing: what ``--resume`` without ``marker`` does (see the module docstring).

    Raises:
        SarbridgeError: a used folder without ``--resume``/``--overwrite``; ``--resume`` with
            nothing to resume under ``resume_missing="refuse"``.
    """
    path = out / marker
    if path.exists() and not (resume or overwrite):
        holds = "a checkpoint" if Path(marker).parent == Path(".") else "a run"
        raise SarbridgeError(f"run folder '{out}' already holds {holds} ({marker})",
                             "pass --resume to continue it, --overwrite to start over, or choose another --out")
    if resume and resume_missing == "refuse" and not path.exists():
        raise SarbridgeError(f"nothing to resume: '{path}' does not exist", "drop --resume")


class TrainingRun:
    """The run folder, process group, device and progress of one training run (see the module docstring).

    Build it with :meth:`open`. Under ``torchrun`` every process makes one; only rank 0 writes files.

    Attributes:
        cfg: the run's config.
        out: the run folder.
        ctx: this process's place in the run (single-process outside ``torchrun``).
        progress: show progress bars and per-epoch lines (rank 0 only).
        resume: continue from the folder's checkpoints.
        resume_missing: the resume rule for a stage without ``last.pt``.
    """

    def __init__(self, cfg: TrainingConfig, out: Path, ctx: DistContext, progress: bool, resume: bool = False,
                 resume_missing: ResumeMissing = "load") -> None:
        self.cfg = cfg
        self.out = out
        self.ctx = ctx
        self.progress = progress
        self.resume = resume
        self.resume_missing = resume_missing
        self._config_written = False

    @classmethod
    def open(cls, cfg: TrainingConfig, out_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
             progress: bool = True, marker: str = "last.pt", resume_missing: ResumeMissing = "load") -> TrainingRun:
        """Check the run folder (:func:`check_run_folder`), then join the process group and pick the device.

        Args:
            cfg: the run's config (its ``device`` selects the device).
            out_dir: the run folder.
            resume: continue from the folder's checkpoints.
            overwrite: start over in a folder that already holds a run.
            progress: progress bars and per-epoch lines (kept on rank 0 only).
            marker: the file that marks a used folder.
            resume_missing: what ``resume`` does where there is no ``last.pt``.

        Raises:
            SarbridgeError: the folder rules, or a device that is not available.
        """
        out = Path(out_dir)
        check_run_folder(out, marker, resume, overwrite, resume_missing)
        ctx = init_distributed(cfg.device)
        return cls(cfg, out, ctx, progress and ctx.is_main, resume, resume_missing)

    @property
    def device(self) -> torch.device:
        """The torch device this process trains on."""
        return self.ctx.device

    @property
    def is_main(self) -> bool:
        """True on the process that writes files (rank 0)."""
        return self.ctx.is_main

    @property
    def results_dir(self) -> Path | None:
        """The run folder on the process that writes files, None on the others."""
        return self.out if self.ctx.is_main else None

    def build_task(self, factory: Callable[[], _T]) -> _T:
        """Seed every generator with ``cfg.seed``, then build the task (its model's initial weights
        are then the same on every rank and in every run with this seed)."""
        seed_everything(self.cfg.seed)
        return factory()

    def trainer(self, task: TrainTask, *, stage: str | None = None, optim: OptimConfig | None = None, amp: bool | None = None,
                eval_every: int | None = None, callbacks: Sequence[StepCallback] = ()) -> Trainer:
        """The trainer of ``task``, resumed when the run resumes; writes ``config.yaml`` (rank 0, once).

        Args:
            task: the task.
            stage: a sub-folder for this stage's checkpoints and log (None: the run folder itself).
            optim: the optimiser settings (None: ``cfg.optim``).
            amp: allow mixed precision (None: ``cfg.amp``).
            eval_every: validate every this many epochs (None: ``cfg.eval.every``).
            callbacks: per-step trainer callbacks.

        Raises:
            CheckpointError: the checkpoint to resume from is missing (``resume_missing="load"``),
                foreign, or of another architecture.
        """
        cfg = self.cfg
        trainer = Trainer(task, cfg.optim if optim is None else optim, self.out / stage if stage else self.out,
                          self.device, seed=cfg.seed, amp=cfg.amp if amp is None else amp,
                          eval_every=cfg.eval.every if eval_every is None else eval_every, callbacks=callbacks,
                          progress=self.progress, runtime=cfg.runtime, dist=self.ctx)
        if self.resume and (self.resume_missing != "fresh" or trainer.last_path.exists()):
            trainer.resume()
        self.write_config()
        return trainer

    def write_config(self) -> None:
        """Write the resolved config to ``config.yaml`` (rank 0; once per run)."""
        if self._config_written:
            return
        if self.ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.out / "config.yaml")
        self._config_written = True

    def write(self, fn: Callable[[Path], object]) -> None:
        """Rank 0 runs ``fn(run folder)`` (writes results, a bundle ...); every rank then waits for it."""
        if self.ctx.is_main:
            fn(self.out)
        barrier(self.ctx)

    def wait(self) -> None:
        """Every rank waits here until all have arrived (a no-op in a single process)."""
        barrier(self.ctx)


__all__ = ["ResumeMissing", "TrainingConfig", "TrainingRun", "check_run_folder"]
