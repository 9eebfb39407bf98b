import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sarbridge.core.checkpoint import load_checkpoint
from sarbridge.core.config import OptimConfig, validate_optim
from sarbridge.core.errors import CheckpointError, ConfigError
from sarbridge.core.trainer import Trainer, lr_factor
from sarbridge.tasks.reid.task import train_reid
from tiny_setup import HOSS_SAMPLE, tiny_config, tiny_overrides


def test_lr_factor_warmup_then_cosine():
    cfg = OptimConfig(warmup_epochs=4, warmup_factor=0.1, min_lr_factor=0.0, epochs=14)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(2, cfg) == pytest.approx(0.1 * 0.5 + 0.5)
    assert lr_factor(4, cfg) == pytest.approx(1.0)
    assert lr_factor(9, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(14, cfg) == pytest.approx(0.0, abs=1e-12)


class ToyTask:
    """Linear regression with a random batch order: enough to test seeding and checkpoints."""

    name = "toy"

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(64, 5, generator=g)
        self.y = self.x @ torch.arange(1.0, 6.0) + 0.1 * torch.randn(64, generator=g)
        self.model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))

    def train_batches(self, epoch):
        perm = torch.randperm(64)  # global RNG: reseeded per epoch by the trainer
        return [perm[i : i + 16] for i in range(0, 64, 16)]

    def training_step(self, idx, device):
        pred = self.model(self.x[idx].to(device)).squeeze(1)
        return {"loss": torch.nn.functional.mse_loss(pred, self.y[idx].to(device))}

    def validate(self, epoch, device):
        with torch.no_grad():
            return {"selection": -float(torch.nn.functional.mse_loss(self.model(self.x).squeeze(1), self.y))}

    def checkpoint_extra(self):
        return {"arch": {"toy": 1}}


def _fit(out: Path, epochs: int, resume: bool = False, callbacks=()) -> Trainer:
    torch.manual_seed(123)
    task = ToyTask()
    tr = Trainer(task, OptimConfig(name="sgd", lr=0.01, warmup_epochs=1, epochs=epochs), out, torch.device("cpu"),
                 seed=7, callbacks=callbacks, progress=False)
    if resume:
        tr.resume()
    tr.fit()
    return tr


def test_trainer_learns_and_writes_checkpoints_log(tmp_path):
    tr = _fit(tmp_path, epochs=6)
    losses = [h["loss"] for h in tr.history]
    assert losses[-1] < 0.5 * losses[0]
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "best.pt").is_file()
    lines = (tmp_path / "train_log.jsonl").read_text().splitlines()
    assert len(lines) == 6
    state = load_checkpoint(tmp_path / "last.pt", task="toy")
    assert state["epoch"] == 5 and "optimizer" in state
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == tr.best["epoch"]


def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    ref = _fit(tmp_path / "ref", epochs=5)

    class Stop(Exception):
        pass

    def bomb(trainer, epoch, step, logs):
        if epoch == 3 and step == 2:
            raise Stop

    with pytest.raises(Stop):
        _fit(tmp_path / "cut", epochs=5, callbacks=[bomb])
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 2
    resumed = _fit(tmp_path / "cut", epochs=5, resume=True)
    for (k, a), b in zip(ref.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert [h["loss"] for h in ref.history] == [h["loss"] for h in resumed.history]


def test_resume_from_inference_checkpoint_is_refused(tmp_path):
    _fit(tmp_path, epochs=1)
    tr = Trainer(ToyTask(), OptimConfig(epochs=2), tmp_path, torch.device("cpu"), progress=False)
    with pytest.raises(CheckpointError, match="no training state"):
        tr.resume(tmp_path / "best.pt")


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from sarbridge.tasks.reid.task import train_reid
    from tiny_setup import tiny_config

    def kill(trainer, epoch, step, logs):
        if epoch == 2 and step == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # a hard kill mid-epoch: no cleanup runs

    train_reid(tiny_config(epochs=4), {out!r}, progress=False, callbacks=[kill], evaluate_test=False)
    """
)


def test_reid_run_killed_mid_epoch_resumes_to_identical_weights(tmp_path):
    """SIGKILL a real training process mid-epoch, resume it, compare with an uninterrupted run."""
    ref_out, cut_out = tmp_path / "ref", tmp_path / "cut"
    train_reid(tiny_config(epochs=4), ref_out, progress=False, evaluate_test=False)
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parents[1]), out=str(cut_out))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert load_checkpoint(cut_out / "last.pt")["epoch"] == 1  # epochs 0 and 1 complete
    assert not list(cut_out.glob("*.tmp"))
    train_reid(tiny_config(epochs=4), cut_out, resume=True, progress=False, evaluate_test=False)
    ref = load_checkpoint(ref_out / "last.pt")["model"]
    got = load_checkpoint(cut_out / "last.pt")["model"]
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k


def test_resume_with_other_architecture_is_refused(tmp_path):
    train_reid(tiny_config(epochs=1), tmp_path, progress=False, evaluate_test=False)
    other = tiny_config(epochs=2, extra=["model.size_token=false"])
    with pytest.raises(CheckpointError, match="trained with arch"):
        train_reid(other, tmp_path, resume=True, progress=False, evaluate_test=False)


def test_tiny_overrides_are_valid():
    assert tiny_overrides()[0] == f"data.root={HOSS_SAMPLE}"
    cfg = tiny_config(epochs=2)  # every override names a config key and sets it
    assert (cfg.data.root, cfg.optim.epochs, cfg.device, cfg.data.image_size) == (str(HOSS_SAMPLE), 2, "cpu", [32, 16])
    assert cfg.model.backbone == "vit_tiny_patch16_224" and cfg.model.backbone_kwargs["embed_dim"] == 32
    assert (cfg.data.sampler.num_ids, cfg.data.sampler.num_instances, cfg.optim.name) == (4, 2, "sgd")


# --- optim.max_steps: a cap on optimiser steps in total -------------------------------------


def _capped(out: Path, epochs: int = 5, max_steps: int | None = None, accumulate: int = 1, resume: bool = False,
            callbacks=()) -> Trainer:
    torch.manual_seed(123)
    cfg = OptimConfig(name="sgd", lr=0.01, warmup_epochs=1, epochs=epochs, accumulate=accumulate, max_steps=max_steps)
    tr = Trainer(ToyTask(), cfg, out, torch.device("cpu"), seed=7, callbacks=callbacks, progress=False)
    if resume:
        tr.resume()
    tr.fit()
    return tr


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_max_steps_stops_inside_an_epoch_and_saves_it_as_the_last(tmp_path):
    snapshots = {}

    def snap(trainer, epoch, step, logs):  # after the optimiser step of batch (epoch, step)
        snapshots[(epoch, step)] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    _capped(tmp_path / "ref", epochs=5, callbacks=[snap])  # uncapped: 4 batches (= steps) per epoch
    tr = _capped(tmp_path / "cap", epochs=5, max_steps=6)
    # 4 steps in epoch 0, then 2 in epoch 1: the weights after the 6th step of the uncapped run
    assert [(h["epoch"], h["steps"], h["optimizer_steps"]) for h in tr.history] == [(0, 4, 4), (1, 2, 2)]
    assert tr.optimizer_steps == 6
    for k, v in snapshots[(1, 1)].items():
        assert torch.equal(tr.model.state_dict()[k], v), k
    last = load_checkpoint(tmp_path / "cap" / "last.pt", task="toy")
    assert last["epoch"] == 1
    assert "val_selection" in tr.history[1]  # the capped epoch is validated although eval_every is not due
    rows = _log(tmp_path / "cap")
    assert [r.get("event", r.get("epoch")) for r in rows] == [0, 1, "max_steps reached"]
    assert rows[2]["optimizer_steps"] == 6 and rows[2]["optim.max_steps"] == 6 and rows[2]["epoch"] == 1
    # the LR schedule still follows optim.epochs (one scheduler step per epoch run)
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * lr_factor(2, tr.cfg))


def test_max_steps_counts_optimiser_steps_with_accumulation(tmp_path):
    # accumulate=3 over 4 batches: groups [0, 1, 2] and [3] = 2 optimiser steps per epoch
    tr = _capped(tmp_path, epochs=5, max_steps=3, accumulate=3)
    assert [(h["steps"], h["optimizer_steps"]) for h in tr.history] == [(4, 2), (3, 1)]
    assert tr.optimizer_steps == 3
    # the same weights as the uncapped run after its third group (batch 2 of epoch 1)
    snapshots = {}

    def snap(trainer, epoch, step, logs):
        snapshots[(epoch, step)] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    _capped(tmp_path / "ref", epochs=2, accumulate=3, callbacks=[snap])
    for k, v in snapshots[(1, 2)].items():
        assert torch.equal(tr.model.state_dict()[k], v), k


def test_max_steps_then_resume_trains_nothing_more(tmp_path):
    first = _capped(tmp_path, epochs=5, max_steps=6)
    before = (tmp_path / "last.pt").read_bytes()
    log_before = (tmp_path / "train_log.jsonl").read_text()
    resumed = _capped(tmp_path, epochs=5, max_steps=6, resume=True)
    assert resumed.optimizer_steps == 6 and resumed.start_epoch == 2
    assert len(resumed.history) == 2
    for (k, a), b in zip(first.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert (tmp_path / "last.pt").read_bytes() == before
    assert (tmp_path / "train_log.jsonl").read_text() == log_before


def test_max_steps_none_or_unreached_changes_nothing(tmp_path):
    plain = _capped(tmp_path / "none", epochs=3)
    high = _capped(tmp_path / "high", epochs=3, max_steps=1000)
    assert plain.max_steps is None and plain.optimizer_steps == 12
    assert [h["loss"] for h in plain.history] == [h["loss"] for h in high.history]
    assert len(plain.history) == 3
    for (k, a), b in zip(plain.model.state_dict().items(), high.model.state_dict().values()):
        assert torch.equal(a, b), k
    for out in ("none", "high"):
        assert all("event" not in r for r in _log(tmp_path / out))


def test_max_steps_must_be_positive():
    validate_optim(OptimConfig(max_steps=None))
    validate_optim(OptimConfig(max_steps=1))
    with pytest.raises(ConfigError, match=r"optim.max_steps must be >= 1 .*got 0; fix: "):
        validate_optim(OptimConfig(max_steps=0))
    with pytest.raises(ConfigError, match="optim.max_steps must be >= 1"):
        Trainer(ToyTask(), OptimConfig(max_steps=-2), "unused", torch.device("cpu"), progress=False)
