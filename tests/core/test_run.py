"""Tests for sarbridge.core.run: the run-folder rules and the shared setup of a training run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

from sarbridge.core.checkpoint import load_checkpoint
from sarbridge.core.config import OptimConfig, RunConfig
from sarbridge.core.errors import CheckpointError, SarbridgeError
from sarbridge.core.run import TrainingRun, check_run_folder
from sarbridge.core.trainer import Trainer
from sarbridge.core.utils import seed_everything


@dataclass
class ToyEval:
    every: int = 1


def _toy_optim() -> OptimConfig:
    return OptimConfig(name="sgd", lr=0.05, warmup_epochs=1, epochs=3)


@dataclass
class ToyConfig(RunConfig):
    """The smallest config a training run accepts."""

    name: str = "toy"
    device: str = "cpu"
    optim: OptimConfig = field(default_factory=_toy_optim)
    eval: ToyEval = field(default_factory=ToyEval)


class ToyTask:
    """Linear regression; the weights are initialised from the global generator (seeded by the run)."""

    name = "toy"

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(48, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
        self.model = torch.nn.Linear(4, 1)

    def train_batches(self, epoch: int) -> list[torch.Tensor]:
        perm = torch.randperm(48)
        return [perm[i:i + 12] for i in range(0, 48, 12)]

    def training_step(self, idx: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        pred = self.model(self.x[idx].to(device)).squeeze(1)
        return {"loss": torch.nn.functional.mse_loss(pred, self.y[idx].to(device))}

    def validate(self, epoch: int, device: torch.device) -> dict[str, float]:
        with torch.no_grad():
            mse = torch.nn.functional.mse_loss(self.model(self.x).squeeze(1), self.y)
        # epoch 1 is "best" whatever the losses: selection != last epoch, so best.pt is told apart
        return {"selection": 1.0 if epoch == 1 else 0.0, "mse": float(mse)}

    def checkpoint_extra(self) -> dict[str, object]:
        return {"arch": {"toy": 1}}


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# --- the folder rules ---------------------------------------------------------------------------

def test_a_used_folder_is_refused_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "last.pt").write_bytes(b"x")
    with pytest.raises(SarbridgeError) as exc:
        check_run_folder(tmp_path)
    assert str(exc.value) == (f"run folder '{tmp_path}' already holds a checkpoint (last.pt); fix: pass --resume to "
                              "continue it, --overwrite to start over, or choose another --out")
    check_run_folder(tmp_path, resume=True)  # allowed
    check_run_folder(tmp_path, overwrite=True)  # allowed
    check_run_folder(tmp_path / "fresh")  # an unused folder is fine


def test_a_stage_marker_names_a_run(tmp_path: Path) -> None:
    (tmp_path / "coarse").mkdir()
    (tmp_path / "coarse" / "last.pt").write_bytes(b"x")
    check_run_folder(tmp_path)  # last.pt itself is absent: not used by this rule
    with pytest.raises(SarbridgeError, match=r"already holds a run \(coarse/last\.pt\)"):
        check_run_folder(tmp_path, "coarse/last.pt")


def test_resume_rules_when_there_is_nothing_to_resume(tmp_path: Path) -> None:
    with pytest.raises(SarbridgeError, match="nothing to resume: .*last.pt' does not exist") as exc:
        check_run_folder(tmp_path, resume=True, resume_missing="refuse")
    assert exc.value.hint == "drop --resume"
    check_run_folder(tmp_path, resume=True, resume_missing="load")  # the trainer will fail reading it
    check_run_folder(tmp_path, resume=True, resume_missing="fresh")  # starts afresh


def test_load_rule_fails_where_the_trainer_reads_last_pt(tmp_path: Path) -> None:
    run = TrainingRun.open(ToyConfig(), tmp_path / "run", resume=True, progress=False)
    task = run.build_task(ToyTask)
    with pytest.raises(CheckpointError, match="last.pt' not found"):
        run.trainer(task)
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing written by a failed resume


# --- the run ------------------------------------------------------------------------------------

def test_build_task_seeds_the_model_initialisation(tmp_path: Path) -> None:
    cfg = ToyConfig(seed=11)
    run = TrainingRun.open(cfg, tmp_path, progress=False)
    torch.manual_seed(999)  # whatever happened before does not matter
    a = run.build_task(ToyTask)
    seed_everything(11)
    b = ToyTask()
    assert all(torch.equal(x, y) for x, y in zip(_weights(a.model), _weights(b.model)))
    c = TrainingRun.open(ToyConfig(seed=12), tmp_path, progress=False).build_task(ToyTask)
    assert not torch.equal(_weights(a.model)[0], _weights(c.model)[0])


def test_a_run_equals_the_hand_written_setup(tmp_path: Path) -> None:
    cfg = ToyConfig(seed=3)
    run = TrainingRun.open(cfg, tmp_path / "run", progress=False)
    assert run.device == torch.device("cpu") and run.is_main and run.results_dir == tmp_path / "run"
    task = run.build_task(ToyTask)
    trainer = run.trainer(task)
    assert trainer.cfg is cfg.optim and trainer.seed == 3 and trainer.eval_every == 1 and not trainer.progress
    result = trainer.fit()

    # the same run written out by hand, as the pipelines did before TrainingRun
    seed_everything(3)
    ref_task = ToyTask()
    ref = Trainer(ref_task, cfg.optim, tmp_path / "ref", torch.device("cpu"), seed=3, amp=cfg.amp, progress=False,
                  runtime=cfg.runtime)
    ref_result = ref.fit()
    assert all(torch.equal(x, y) for x, y in zip(_weights(task.model), _weights(ref_task.model)))
    assert [h["loss"] for h in result.history] == [h["loss"] for h in ref_result.history]

    out = tmp_path / "run"
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.yaml", "data_paths.json", "last.pt", "train_log.jsonl"]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["seed"] == 3 and saved["optim"]["lr"] == 0.05 and saved["eval"] == {"every": 1}
    assert result.best_epoch == 1 and result.task == "toy"
    fresh = torch.nn.Linear(4, 1)
    state = result.load_best(fresh)
    assert state["epoch"] == 1
    best = load_checkpoint(out / "best.pt", task="toy")["model"]
    assert torch.equal(fresh.weight, best["weight"]) and not torch.equal(fresh.weight, task.model.weight)


def test_trainer_options_and_stage_folders(tmp_path: Path) -> None:
    cfg = ToyConfig(amp=True)
    cfg.eval.every = 2
    run = TrainingRun.open(cfg, tmp_path, progress=False)
    task = run.build_task(ToyTask)
    a = run.trainer(task, stage="coarse")
    assert a.out_dir == tmp_path / "coarse" and a.eval_every == 2 and a.cfg is cfg.optim
    other = OptimConfig(name="adamw", lr=0.001, epochs=1, warmup_epochs=0)
    b = run.trainer(ToyTask(), stage="refine", optim=other, amp=False, eval_every=1)
    assert b.out_dir == tmp_path / "refine" and b.cfg is other and b.eval_every == 1 and not b.use_amp
    assert isinstance(b.optimizer, torch.optim.AdamW) and isinstance(a.optimizer, torch.optim.SGD)


def test_config_is_written_once_per_run(tmp_path: Path) -> None:
    cfg = ToyConfig()
    run = TrainingRun.open(cfg, tmp_path, progress=False)
    run.write_config()
    first = (tmp_path / "config.yaml").read_text()
    cfg.optim.lr = 0.5  # a later stage's trainer does not rewrite it
    run.trainer(run.build_task(ToyTask), stage="coarse")
    assert (tmp_path / "config.yaml").read_text() == first


class Stop(Exception):
    pass


def _stop_at_epoch(n: int):
    def cb(trainer: Trainer, epoch: int, step: int, logs: object) -> None:
        if epoch == n:
            raise Stop

    return cb


def test_resumed_run_continues_exactly(tmp_path: Path) -> None:
    full = ToyConfig(seed=5)
    full.optim.epochs = 4
    run = TrainingRun.open(full, tmp_path / "full", progress=False)
    whole = run.build_task(ToyTask)
    run.trainer(whole).fit()

    first = TrainingRun.open(full, tmp_path / "cut", progress=False)
    with pytest.raises(Stop):  # killed in the third epoch: last.pt holds epoch 2's end
        first.trainer(first.build_task(ToyTask), callbacks=[_stop_at_epoch(2)]).fit()
    with pytest.raises(SarbridgeError, match="already holds a checkpoint"):
        TrainingRun.open(full, tmp_path / "cut", progress=False)
    again = TrainingRun.open(full, tmp_path / "cut", resume=True, progress=False)
    task = again.build_task(ToyTask)
    trainer = again.trainer(task)
    assert trainer.start_epoch == 2
    trainer.fit()
    assert all(torch.equal(x, y) for x, y in zip(_weights(task.model), _weights(whole.model)))


def test_fresh_rule_resumes_only_stages_that_have_a_checkpoint(tmp_path: Path) -> None:
    cfg = ToyConfig()
    cfg.optim.epochs = 2
    run = TrainingRun.open(cfg, tmp_path, progress=False, marker="coarse/last.pt", resume_missing="fresh")
    run.trainer(run.build_task(ToyTask), stage="coarse").fit()
    again = TrainingRun.open(cfg, tmp_path, resume=True, progress=False, marker="coarse/last.pt",
                             resume_missing="fresh")
    assert again.trainer(again.build_task(ToyTask), stage="coarse").start_epoch == 2
    assert again.trainer(ToyTask(), stage="refine").start_epoch == 0  # no refine/last.pt: from scratch


def test_write_runs_on_the_writing_process_and_waits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sarbridge.core import run as run_module
    from sarbridge.core.distributed import DistContext

    events: list[str] = []
    monkeypatch.setattr(run_module, "barrier", lambda ctx=None: events.append(f"barrier {ctx.rank}"))
    main = TrainingRun(ToyConfig(), tmp_path, DistContext(rank=0, world_size=2, backend="gloo"), progress=True)
    other = TrainingRun(ToyConfig(), tmp_path, DistContext(rank=1, world_size=2, backend="gloo"), progress=False)
    for r in (main, other):
        r.write(lambda folder: events.append(f"write {folder.name}"))
    assert events == [f"write {tmp_path.name}", "barrier 0", "barrier 1"]
    assert main.results_dir == tmp_path and other.results_dir is None
    other.write_config()
    assert not (tmp_path / "config.yaml").exists()  # only rank 0 writes files
    main.write_config()
    assert (tmp_path / "config.yaml").is_file()
