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

Resuming continues the run it resumes (:func:`plan_resume`, called by the command line before the
pipeline): the run folder's ``config.yaml`` is THE config; ``--set`` items are applied on top of it and
compared: identical is fine, a different value is refused with one line naming the keys, except the
run-length keys of :data:`SCHEDULE_KEYS` under an explicit ``--allow-change KEY`` (longer only; the
trainer then decays the LR from where it is to the floor over the new remaining epochs, see
:meth:`~sarbridge.core.trainer.Trainer.resume`), and :data:`FREE_KEYS` (where the run executes, not what
it computes). A data path (:data:`~sarbridge.core.data_location.DATA_PATH_KEYS`) may differ when the
files there are the ones the run started with (``data_paths.json``, written beside ``config.yaml``):
the dataset was moved, not changed. An allowed change or move is recorded in ``config_history.jsonl`` (time, key, old, new, command),
in ``train_log.jsonl`` (a ``schedule_changed`` line, run-length changes only) and in the rewritten
``config.yaml``. A finished
run (``metrics.json`` written) resumed without a change is left untouched: "already finished".

Resume rules (``resume_missing``) when ``--resume`` finds no ``marker``: ``"load"`` lets the trainer
read ``last.pt`` (and fail naming the missing file), ``"refuse"`` stops at once with "nothing to
resume", ``"fresh"`` starts the stage from scratch (a multi-stage run resumes each stage that has
a ``last.pt``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

import torch

from sarbridge.core.config import OptimConfig, RuntimeConfig, config_to_dict, save_config
from sarbridge.core.data_location import (
    DATA_PATH_KEYS,
    RECORD,
    data_paths,
    moved_data,
    read_record,
    update_record,
    write_record,
)
from sarbridge.core.distributed import DistContext, barrier, init_distributed
from sarbridge.core.errors import ConfigError, SarbridgeError
from sarbridge.core.trainer import StepCallback, Trainer, TrainTask
from sarbridge.core.utils import atomic_write_text, seed_everything

_T = TypeVar("_T")
_C = TypeVar("_C")
ResumeMissing = Literal["load", "refuse", "fresh"]

#: The keys ``--allow-change`` may change when resuming: the length of the run (epochs of a stage).
SCHEDULE_KEYS: tuple[str, ...] = ("optim.epochs", "refine.epochs")
#: Keys (or ``prefix.``) a resumed run may change freely: where it runs, not what it computes.
FREE_KEYS: tuple[str, ...] = ("device", "runtime.", "data.num_workers")


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


def check_output_folder(out: str | Path, overwrite: bool = False, what: str = "output folder") -> None:
    """The rule of every command that writes a folder: a non-empty ``out`` needs ``--overwrite``.

    Raises:
        SarbridgeError: ``out`` is a file, or a non-empty folder without ``overwrite``.
    """
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise SarbridgeError(f"{what} '{p}' is a file", "pass a folder to --out")
    if overwrite or not p.is_dir():
        return
    entries = sorted(e.name for e in p.iterdir())
    if entries:
        raise SarbridgeError(f"{what} '{p}' is not empty ({len(entries)} entries, e.g. {entries[0]})",
                             "pass --overwrite to replace what it holds, or choose another --out")


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def _free(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in FREE_KEYS)


@dataclass
class ResumePlan(Generic[_C]):
    """What ``--resume`` does (see :func:`plan_resume`).

    Attributes:
        cfg: the config to run with (the run folder's, with the allowed changes).
        changes: ``(key, old, new)`` of every allowed change of the run's length.
        finished: the run is complete and nothing changes: there is nothing to do.
        notes: lines for the user (e.g. values of ``--config`` that the resumed run does not use).
        epochs: the run's ``optim.epochs`` as stored.
        moves: ``(key, old, new)`` of every data path that now points at the same files elsewhere.
    """

    cfg: _C
    changes: list[tuple[str, Any, Any]] = field(default_factory=list)
    finished: bool = False
    notes: list[str] = field(default_factory=list)
    epochs: int | None = None
    moves: list[tuple[str, Any, Any]] = field(default_factory=list)

    def announce(self, out: str | Path, command: str) -> None:
        """What every ``--resume`` does once its plan stands: print the :attr:`notes` (stderr) and
        record the changes and moves under ``command`` (:meth:`_record`); rank 0 only."""
        if os.environ.get("RANK", "0") != "0":
            return
        for note in self.notes:
            print(note, file=sys.stderr)
        self._record(out, command)

    def _record(self, out: str | Path, command: str) -> None:
        """Append the changes and data moves to ``out/config_history.jsonl`` (atomically); with a
        move, ``config.yaml`` and ``data_paths.json`` follow the new place at once."""
        if not (self.changes or self.moves):
            return
        path = Path(out) / "config_history.jsonl"
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        rows = [json.dumps({"time": stamp, "key": k, "old": a, "new": b, "command": command}, default=str)
                for k, a, b in [*self.changes, *self.moves]]
        atomic_write_text(path, old + "".join(r + "\n" for r in rows))
        if self.moves:
            save_config(self.cfg, Path(out) / "config.yaml")
            update_record(out, {k: b for k, _, b in self.moves})


def plan_resume(out: str | Path, load: Callable[[str | Path | None, list[str]], _C], overrides: Sequence[str] = (),
                allow_change: Sequence[str] = (), config: str | Path | None = None,
                finished_marker: str = "metrics.json") -> ResumePlan[_C]:
    """The config of a resumed run: the run folder's ``config.yaml`` with ``overrides`` checked against it.

    Args:
        out: the run folder.
        load: the task's config loader, ``load(yaml path, overrides) -> config``.
        overrides: the command line's ``key=value`` items (``--set``, ``--data``, ``--device`` ...).
        allow_change: keys (of :data:`SCHEDULE_KEYS`) that may change; only to a larger value.
        config: the ``--config`` file given; its values are not used, those that differ are noted.
        finished_marker: the file a finished run holds.

    Returns:
        The plan; a run folder without ``config.yaml`` (nothing to resume yet) resumes with the
        command line's config, as before.

    Raises:
        ConfigError: ``--allow-change`` of another key, a key that differs without it, or a shorter run.
    """
    run = Path(out)
    stored_path = run / "config.yaml"
    for key in allow_change:
        if key not in SCHEDULE_KEYS:
            raise ConfigError(f"--allow-change {key}: only the run length may change on resume "
                              f"({', '.join(SCHEDULE_KEYS)})", "drop it, or start a new run with another --out")
    if not stored_path.is_file():
        return ResumePlan(load(config, list(overrides)))
    stored = load(stored_path, [])
    wanted = load(stored_path, list(overrides))
    notes: list[str] = []
    old, new = _flat(config_to_dict(stored)), _flat(config_to_dict(wanted))
    changed = [k for k in new if k in old and new[k] != old[k] and not _free(k)]
    recorded = read_record(run)
    for k in [k for k in DATA_PATH_KEYS if k in recorded or (k in old and new.get(k) != old[k])]:
        # before anything is recorded: a resume that cannot read its data changes nothing
        missing = [p for p in data_paths(new.get(k)) if not p.exists()]
        if missing:
            raise ConfigError(f"--resume: {k} '{missing[0]}' not found", "point it at the run's data (--data), "
                              f"as recorded in {run / RECORD}")
    moves: list[tuple[str, Any, Any]] = []
    for k in [k for k in changed if k in DATA_PATH_KEYS]:
        ok, why = moved_data(run, k, new[k])
        if not ok:
            raise ConfigError(f"--resume keeps the run's data; {k}={new[k]} differs from {stored_path} ({old[k]}): {why}",
                              "point it at the data the run started with (moved is fine, changed is not), or start a new run "
                              "with another --out")
        moves.append((k, old[k], new[k]))
        notes.append(why)
    changed = [k for k in changed if k not in DATA_PATH_KEYS]
    refused = [k for k in changed if k not in allow_change]
    if refused:
        given = ", ".join(f"{k}={new[k]}" for k in refused)
        were = ", ".join(f"{old[k]}" if len(refused) == 1 else f"{k}: {old[k]}" for k in refused)
        length = [k for k in refused if k in SCHEDULE_KEYS]
        hint = (f"drop it, or pass --allow-change {length[0]} to change the run's length" if length
                else "drop it (a resumed run keeps its config), or start a new run with another --out")
        raise ConfigError(f"--resume keeps the run's config; {given} differs from {stored_path} ({were})", hint)
    shorter = [k for k in changed if not isinstance(new[k], int) or new[k] < old[k]]
    if shorter:
        k = shorter[0]
        raise ConfigError(f"--allow-change {k}: {k}={new[k]} is shorter than the run's {old[k]} ({stored_path})",
                          f"pass a value above {old[k]}, or start a new run with another --out")
    plan: ResumePlan[_C] = ResumePlan(wanted, [(k, old[k], new[k]) for k in changed], moves=moves, notes=notes)
    plan.epochs = old.get("optim.epochs")
    plan.finished = not plan.changes and (run / finished_marker).is_file()
    if config is not None and Path(config).resolve() != stored_path.resolve():
        try:
            given_cfg = _flat(config_to_dict(load(config, list(overrides))))
        except SarbridgeError:
            given_cfg = {}
        ignored = [k for k in given_cfg if k in new and given_cfg[k] != new[k] and not _free(k)]
        if ignored:
            shown = ", ".join(ignored[:5]) + (" ..." if len(ignored) > 5 else "")
            plan.notes.append(f"note: --resume continues with {stored_path}; --config {config} differs in "
                              f"{shown} (not used)")
    return plan


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
        #: more keys for every checkpoint of the run (``data_fingerprint``, see :meth:`record_data`)
        self.checkpoint_extra: dict[str, Any] = {}

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

    def record_data(self, fingerprint: Mapping[str, Any]) -> None:
        """Write ``fingerprint`` (:func:`sarbridge.data.fingerprint.data_fingerprint`) into every
        checkpoint of the run as ``data_fingerprint``, for evaluations to compare against."""
        self.checkpoint_extra["data_fingerprint"] = dict(fingerprint)

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
                          progress=self.progress, runtime=cfg.runtime, dist=self.ctx,
                          extra_state=self.checkpoint_extra)
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
            if not self.resume or not (self.out / RECORD).is_file():
                write_record(self.out, _flat(config_to_dict(self.cfg)))
        self._config_written = True

    def write(self, fn: Callable[[Path], object]) -> None:
        """Rank 0 runs ``fn(run folder)`` (writes results, a bundle ...); every rank then waits for it."""
        if self.ctx.is_main:
            fn(self.out)
        barrier(self.ctx)

    def wait(self) -> None:
        """Every rank waits here until all have arrived (a no-op in a single process)."""
        barrier(self.ctx)


__all__ = ["FREE_KEYS", "SCHEDULE_KEYS", "ResumeMissing", "ResumePlan", "TrainingConfig", "TrainingRun",
           "check_output_folder", "check_run_folder", "plan_resume"]
