import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sarbridge.core.checkpoint import load_checkpoint
from sarbridge.core.config import OptimConfig
from sarbridge.core.errors import CheckpointError
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
