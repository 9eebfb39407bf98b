"""``--resume`` continues the run it resumes (issue 16.1): the run folder's config.yaml is the config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sarbridge.app.cli import main
from sarbridge.core.checkpoint import load_checkpoint
from sarbridge.resources import resource_path
from tiny_setup import tiny_overrides

DEMO_YAML = str(resource_path("demo.yaml"))  # optim.epochs: 60


def _sets(epochs: int) -> list[str]:
    return [a for o in tiny_overrides(epochs=epochs) for a in ("--set", o)]


def _train(out: Path, *extra: str) -> int:
    return main(["train", "--config", DEMO_YAML, "--out", str(out), "--quiet", "--no-report", *extra])


def _epochs_logged(out: Path) -> list[int]:
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [r["epoch"] for r in rows if "event" not in r]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    assert _train(out, *_sets(2)) == 0
    return out


def _mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(out.iterdir()) if p.is_file()}


def test_interrupted_train_resumes_its_own_schedule_without_set(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C a real `sarbridge train --set optim.epochs=8` after a committed epoch; the README's resume line
    (no --set) trains to 8 epochs, not to the 60 of --config, and config.yaml keeps 8."""
    out = tmp_path / "R"
    cmd = [sys.executable, "-m", "sarbridge", "train", "--config", DEMO_YAML, "--out", str(out), "--quiet",
           "--no-report", *_sets(8)]
    # SIGINT as on a terminal even when these tests run in the background (a shell starts background jobs
    # with SIGINT ignored, and an ignored signal stays ignored across exec)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (out / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "--resume" in err
    done = load_checkpoint(out / "last.pt")["epoch"]
    assert done < 7

    assert _train(out, "--resume") == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["optim"]["epochs"] == 8
    assert load_checkpoint(out / "last.pt")["epoch"] == 7
    assert _epochs_logged(out) == list(range(8))
    assert "not used" in capsys.readouterr().err  # the values of --config that the resumed run ignores are named
    assert not (out / "config_history.jsonl").exists()


def test_a_set_that_changes_the_run_is_refused_with_one_line(finished: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    before, text = _mtimes(finished), (finished / "config.yaml").read_text()
    assert _train(finished, "--resume", "--set", "optim.lr=0.1") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"error: --resume keeps the run's config; optim.lr=0.1 differs from {finished / 'config.yaml'} "
                   "(0.01); fix: drop it (a resumed run keeps its config), or start a new run with another --out")
    assert _train(finished, "--resume", "--set", "optim.epochs=4") == 2
    assert "pass --allow-change optim.epochs" in capsys.readouterr().err
    assert _train(finished, "--resume", "--set", "optim.lr=0.1", "--allow-change", "optim.lr") == 2
    assert "only the run length may change" in capsys.readouterr().err
    assert _train(finished, "--resume", "--set", "optim.epochs=1", "--allow-change", "optim.epochs") == 2
    assert "shorter than the run's 2" in capsys.readouterr().err
    assert _train(finished, "--set", "optim.epochs=1", "--allow-change", "optim.epochs") == 2  # not resuming
    assert (finished / "config.yaml").read_text() == text and _mtimes(finished) == before


def test_a_finished_run_resumed_without_change_is_left_untouched(finished: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    before = _mtimes(finished)
    assert {"config.yaml", "last.pt", "best.pt", "metrics.json"} <= set(before)
    for extra in ([], _sets(2), ["--device", "cpu"]):  # the same values again, or where it runs: nothing changes
        assert _train(finished, "--resume", *extra) == 0
        assert f"run '{finished}' already finished at epoch 2; nothing to do" in capsys.readouterr().out
    assert _mtimes(finished) == before


def test_an_allowed_longer_run_is_recorded(finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    out = tmp_path / "longer"
    shutil.copytree(finished, out)
    assert _train(out, "--resume", "--set", "optim.epochs=3", "--allow-change", "optim.epochs") == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["optim"]["epochs"] == 3
    assert load_checkpoint(out / "last.pt")["epoch"] == 2
    history = [json.loads(line) for line in (out / "config_history.jsonl").read_text().splitlines()]
    assert [(h["key"], h["old"], h["new"]) for h in history] == [("optim.epochs", 2, 3)]
    assert "--allow-change optim.epochs" in history[0]["command"] and history[0]["time"]
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r.get("event", r.get("epoch")) for r in rows] == [0, 1, "schedule_changed", 2]
    event = rows[2]
    assert event["optim.epochs"] == [2, 3] and event["epoch"] == 2
    # the finished run had decayed to the floor: the added epoch trains there, no jump back up
    assert rows[3]["lr"] == pytest.approx(0.01 * 0.002) and event["lr_factor"] == pytest.approx(0.002)
    capsys.readouterr()
    assert _train(out, "--resume") == 0  # now finished at its new length
    assert "already finished at epoch 3" in capsys.readouterr().out


def test_keyboard_interrupt_advice_names_resume_only_where_it_exists(monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from sarbridge.app.cli import geo, reid

    def stop(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(reid, "cmd_synth", stop)
    monkeypatch.setattr(geo, "cmd_demo", stop)
    assert main(["synth", "--out", os.devnull]) == 130
    assert "--resume" not in capsys.readouterr().err
    assert main(["geo", "demo", "--out", os.devnull]) == 130
    assert "--resume" in capsys.readouterr().err


def test_a_moved_dataset_resumes_when_its_files_are_the_same(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run whose data folder was moved resumes from the new place (same files: recorded, config.yaml
    follows); a copy with one file less is refused with one line, and nothing in the run changes."""
    import shutil

    from tiny_setup import HOSS_SAMPLE

    old, new, edited = tmp_path / "data_old", tmp_path / "data_new", tmp_path / "data_edited"
    shutil.copytree(HOSS_SAMPLE, old)
    out = tmp_path / "run"
    assert main(["train", "--config", DEMO_YAML, "--out", str(out), "--quiet", "--no-report",
                 *[a for o in tiny_overrides(old, epochs=1) for a in ("--set", o)]]) == 0
    assert json.loads((out / "data_paths.json").read_text())["data.root"]["path"] == str(old)
    shutil.copytree(old, edited)
    next(p for p in sorted(edited.rglob("*")) if p.is_file() and p.suffix in (".png", ".jpg", ".tif")).unlink()
    shutil.move(str(old), str(new))
    capsys.readouterr()

    before, text = _mtimes(out), (out / "config.yaml").read_text()
    assert _train(out, "--resume", "--data", str(old), "--set", "optim.epochs=2", "--allow-change", "optim.epochs") == 2
    assert _train(out, "--resume", "--data", str(edited), "--set", "optim.epochs=2", "--allow-change", "optim.epochs") == 2
    err = capsys.readouterr().err
    assert "not found" in err and "differ from those the run started with" in err
    assert _mtimes(out) == before and (out / "config.yaml").read_text() == text

    assert _train(out, "--resume", "--data", str(new), "--set", "optim.epochs=2", "--allow-change", "optim.epochs") == 0
    assert f"moved from {old} to {new}" in capsys.readouterr().err
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["root"] == str(new)
    history = [json.loads(line) for line in (out / "config_history.jsonl").read_text().splitlines()]
    assert [(h["key"], h["old"], h["new"]) for h in history] == [("optim.epochs", 1, 2), ("data.root", str(old), str(new))]
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert json.loads((out / "data_paths.json").read_text())["data.root"]["path"] == str(new)

    # a finished run moved again: nothing to train, but the move is still recorded (evaluations
    # read config.yaml, which follows the data)
    newer = tmp_path / "data_newer"
    shutil.move(str(new), str(newer))
    capsys.readouterr()
    assert _train(out, "--resume", "--data", str(newer)) == 0
    io = capsys.readouterr()
    assert "already finished" in io.out and f"moved from {new} to {newer}" in io.err
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["root"] == str(newer)
    history = [json.loads(line) for line in (out / "config_history.jsonl").read_text().splitlines()]
    assert [(h["key"], h["new"]) for h in history][-1] == ("data.root", str(newer))
