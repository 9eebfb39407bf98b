"""One rule for output folders (issue 16.2): a non-empty --out is refused unless --overwrite (or --resume);
checkpoints record their data's fingerprint and evaluating on changed data says so."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sarbridge.app.cli import main
from sarbridge.core.checkpoint import load_checkpoint
from sarbridge.resources import resource_path
from tiny_setup import HOSS_SAMPLE, tiny_overrides


def _used(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "old.txt").write_text("keep me")
    return folder


@pytest.mark.parametrize("argv", [
    ["synth", "--ids", "2", "--distractors", "0", "--quiet"],
    ["geo", "synth", "--size", "64"],
    ["demo", "--quiet"],
    ["geo", "demo", "--quiet"],
])
def test_a_used_out_is_refused_with_one_line(argv: list[str], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = _used(tmp_path / "used")
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"'{out}' is not empty (1 entries, e.g. old.txt)" in err
    assert err.endswith("fix: pass --overwrite to replace what it holds, or choose another --out")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]


def test_eval_refuses_a_used_out_after_reading_the_checkpoint(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = _used(tmp_path / "used")
    assert main(["evaluate", "--model", str(tmp_path / "absent.pt"), "--out", str(out)]) == 2
    assert "absent.pt' not found" in capsys.readouterr().err  # the input is named first
    ckpt = sorted((Path(__file__).parents[2] / "fixtures" / "checkpoint-v1").rglob("*.pt"))[0]
    assert main(["evaluate", "--model", str(ckpt), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: results folder '{out}' is not empty (1 entries, e.g. old.txt); fix: pass --overwrite to "
                   "replace what it holds, or choose another --out")


def test_synth_overwrite_replaces_the_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "set"
    assert main(["synth", "--out", str(out), "--ids", "3", "--distractors", "0", "--quiet"]) == 0
    assert main(["synth", "--out", str(out), "--ids", "2", "--distractors", "0", "--quiet"]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main(["synth", "--out", str(out), "--ids", "2", "--distractors", "0", "--quiet", "--overwrite"]) == 0
    pids = {int(p.name.split("_")[0]) for p in out.rglob("*.tif")}
    assert pids == {1, 2}  # no image of the 3-identity set is left


def test_checkpoints_record_their_data_and_eval_warns_when_it_changed(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "HOSS"
    shutil.copytree(HOSS_SAMPLE, data)
    run = tmp_path / "run"
    sets = [a for o in tiny_overrides(root=data, epochs=1) for a in ("--set", o)]
    assert main(["train", "--config", str(resource_path("demo.yaml")), "--out", str(run), "--quiet", "--no-report",
                 *sets]) == 0
    fp = load_checkpoint(run / "best.pt")["data_fingerprint"]
    assert fp["root"] == str(data) and fp["files"] == sum(p["files"] for p in fp["parts"].values())
    assert load_checkpoint(run / "last.pt")["data_fingerprint"] == fp
    capsys.readouterr()

    assert main(["evaluate", "--model", str(run / "best.pt"), "--out", str(tmp_path / "e1"), "--quiet",
                 "--no-report"]) == 0
    assert "warning" not in capsys.readouterr().err  # the same data: nothing to say

    queries = sorted((data / "query").iterdir())
    pids = {q.name.split("_")[0] for q in queries}
    gone = sorted(pids)[: len(pids) // 2]
    for q in queries:
        if q.name.split("_")[0] in gone:
            q.unlink()
    left = len(pids) - len(gone)
    assert main(["evaluate", "--model", str(run / "best.pt"), "--out", str(tmp_path / "e2"), "--quiet",
                 "--no-report"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: the data")]
    assert len(err) == 1
    assert err[0].startswith(f"warning: the data in {data} differs from what model {run / 'best.pt'} was trained on "
                             f"(query: {len(pids)} -> {left} identities")
    assert err[0].endswith("results are not comparable with the training run's")
