"""Interrupted demos resume (issue 16.3): `demo --resume` / `geo demo --resume` continue, a complete demo says so."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sarbridge.app.cli import main
from sarbridge.core.checkpoint import load_checkpoint
from tiny_setup import tiny_overrides

GEO_TINY = ["data.patch_size=32", "data.image_size=[32,32]", "data.queries=120", "data.batch_size=16",
            "model.embed_dim=32", "loss.wasserstein.hidden=16", "optim.epochs=2", "refine.epochs=1", "matcher.steps=4", "matcher.batch_size=4",
            "refine.hidden=16", "refine.heads=2", "eval.batch_size=64", "device=cpu"]


def _kill_after(cmd: list[str], marker: Path, sig: int) -> subprocess.CompletedProcess[str]:
    # signals as on a terminal even when the tests run in the background (a shell starts background jobs
    # with SIGINT ignored, and an ignored signal stays ignored across exec)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.slow
def test_demo_interrupted_resumes_and_then_says_complete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    sets = [a for o in tiny_overrides(epochs=6) for a in ("--set", o)]
    cmd = [sys.executable, "-m", "sarbridge", "demo", "--out", str(out), "--quiet", *sets]
    killed = _kill_after(cmd, out / "last.pt", signal.SIGINT)
    assert killed.returncode == 130, killed.stderr[-2000:]
    assert "continue: the same command with --resume" in killed.stderr
    assert load_checkpoint(out / "last.pt")["epoch"] < 5 and not (out / "report.html").exists()

    assert main(["demo", "--out", str(out), "--quiet", *sets]) == 2  # a used folder needs --resume/--overwrite
    assert "is not empty" in capsys.readouterr().err
    assert main(["demo", "--out", str(out), "--quiet", "--resume", *sets]) == 0
    assert load_checkpoint(out / "last.pt")["epoch"] == 5
    epochs = [json.loads(line)["epoch"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert epochs == list(range(6))
    assert (out / "report.html").is_file() and (out / "metrics.json").is_file()
    capsys.readouterr()
    stamp = (out / "last.pt").stat().st_mtime_ns
    assert main(["demo", "--out", str(out), "--quiet", "--resume", *sets]) == 0
    assert f"demo in '{out}' is already complete; nothing to do" in capsys.readouterr().out
    assert (out / "last.pt").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_demo_resume_keeps_its_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    sets = [a for o in tiny_overrides(epochs=1) for a in ("--set", o)]
    assert main(["demo", "--out", str(out), "--quiet", *sets]) == 0
    (out / "report.html").unlink()  # as if interrupted in the report step
    assert main(["demo", "--out", str(out), "--quiet", "--resume", *sets, "--set", "optim.lr=0.5"]) == 2
    assert "--resume keeps the run's config; optim.lr=0.5 differs" in capsys.readouterr().err
    stamp = (out / "last.pt").stat().st_mtime_ns
    assert main(["demo", "--out", str(out), "--quiet", "--resume", *sets]) == 0  # only the report is redone
    assert (out / "report.html").is_file() and (out / "last.pt").stat().st_mtime_ns == stamp


def test_demo_ctrl_c_then_resume_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The fast check of the same (no modality-gap analysis/report; Ctrl-C raised after epoch 1 is committed)."""
    from sarbridge.app.cli import reid as reid_cli
    from sarbridge.core.trainer import Trainer

    finished: list[str] = []
    monkeypatch.setattr(reid_cli, "finish_demo", lambda out, metrics, progress=True: finished.append(str(out)))
    write_log = Trainer._write_log

    def ctrl_c_after_epoch_1(self: Trainer) -> None:
        write_log(self)
        if len(self.history) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_write_log", ctrl_c_after_epoch_1)
    out = tmp_path / "demo"
    sets = [a for o in tiny_overrides(epochs=3) for a in ("--set", o)]
    assert main(["demo", "--out", str(out), "--quiet", *sets]) == 130
    assert "continue: the same command with --resume" in capsys.readouterr().err
    assert load_checkpoint(out / "last.pt")["epoch"] == 1 and not finished
    monkeypatch.setattr(Trainer, "_write_log", write_log)
    assert main(["demo", "--out", str(out), "--quiet", *sets]) == 2
    assert main(["demo", "--out", str(out), "--quiet", "--resume", *sets]) == 0
    assert load_checkpoint(out / "last.pt")["epoch"] == 2 and finished == [str(out)]
    epochs = [json.loads(line)["epoch"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2]


@pytest.mark.slow
def test_geo_demo_killed_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "g"
    sets = [a for o in GEO_TINY for a in ("--set", o)]
    base = ["geo", "demo", "--out", str(out), "--size", "192", "--quiet", *sets]
    killed = _kill_after([sys.executable, "-m", "sarbridge", *base], out / "coarse" / "last.pt", signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert (out / "scene" / "meta.json").is_file() and not (out / "report.html").exists()
    scene = (out / "scene" / "optical.tif").stat().st_mtime_ns
    assert main([*base, "--resume"]) == 0
    assert (out / "scene" / "optical.tif").stat().st_mtime_ns == scene  # the complete scene is kept
    assert load_checkpoint(out / "coarse" / "last.pt")["epoch"] == 1
    for name in ("geo_model.pt", "index/manifest.json", "example_locate.json", "report.html"):
        assert (out / name).is_file(), name
    capsys.readouterr()
    assert main([*base, "--resume"]) == 0
    assert "is already complete; nothing to do" in capsys.readouterr().out
