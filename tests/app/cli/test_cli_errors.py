"""Bad input through the command line: one clear error line, exit code 2, nothing damaged."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from sarbridge.app.cli import main
from sarbridge.resources import resource_path
from tiny_setup import HOSS_SAMPLE, tiny_overrides

CONFIG = str(resource_path("demo.yaml"))


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err.strip()


def tiny_args(root=HOSS_SAMPLE, epochs=1):
    args = []
    for o in tiny_overrides(root, epochs):
        args += ["--set", o]
    return args


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture
def hoss_copy(tmp_path):
    dst = tmp_path / "HOSS"
    shutil.copytree(HOSS_SAMPLE, dst)
    return dst


def test_missing_config_file(capsys, tmp_path):
    code, err = run_cli(capsys, "train", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "nope.yaml", "fix:")


def test_unknown_config_key(capsys, tmp_path):
    code, err = run_cli(capsys, "train", "--config", CONFIG, "--set", "model.backbon=resnet18", "--out", str(tmp_path))
    assert_one_line_error(code, err, "model.backbon", "model.backbone")


def test_missing_data_folder(capsys, tmp_path):
    code, err = run_cli(capsys, "train", "--config", CONFIG, *tiny_args(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "missing", "not found")


def test_empty_split(capsys, hoss_copy, tmp_path):
    for f in (hoss_copy / "query").iterdir():
        f.unlink()
    code, err = run_cli(capsys, "train", "--config", CONFIG, *tiny_args(hoss_copy), "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "query", "empty")


@pytest.mark.parametrize("damage", ["zero", "corrupt", "nan"])
def test_bad_images_named(capsys, hoss_copy, tmp_path, damage):
    victim = sorted((hoss_copy / "bounding_box_train").glob("*_SAR.tif"))[0]
    if damage == "zero":
        victim.write_bytes(b"")
    elif damage == "corrupt":
        victim.write_bytes(b"II*\x00" + bytes(range(200)))
    else:
        tifffile.imwrite(victim, np.full((20, 10), np.nan, np.float32))
    code, err = run_cli(capsys, "train", "--config", CONFIG, *tiny_args(hoss_copy), "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, victim.name)
    assert not (tmp_path / "o" / "last.pt").exists()


def test_unknown_modality_suffix(capsys, hoss_copy, tmp_path):
    src = sorted((hoss_copy / "bounding_box_train").glob("*_RGB.tif"))[0]
    src.rename(src.with_name(src.name.replace("_RGB", "_IR")))
    code, err = run_cli(capsys, "train", "--config", CONFIG, *tiny_args(hoss_copy), "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "_IR.tif", "unknown modality")


def test_eval_with_checkpoint_of_other_architecture_and_nothing_damaged(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--config", CONFIG, *tiny_args(), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert {"config.yaml", "metrics.json", "results.md", "best.pt", "last.pt"} <= set(before)
    # a checkpoint whose weights do not fit the architecture its config describes
    state = torch.load(out / "best.pt", weights_only=True)
    state["config"]["model"]["backbone_kwargs"]["embed_dim"] = 48
    torch.save(state, tmp_path / "other.pt")
    code, err = run_cli(capsys, "evaluate", "--model", str(tmp_path / "other.pt"), "--out", str(out))
    assert_one_line_error(code, err, "other.pt", "does not fit")
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 64)
    code, err = run_cli(capsys, "evaluate", "--model", str(tmp_path / "junk.pt"), "--out", str(out))
    assert_one_line_error(code, err, "junk.pt", "cannot be read")
    # training again into the same folder without --resume is refused
    code, err = run_cli(capsys, "train", "--config", CONFIG, *tiny_args(), "--out", str(out))
    assert_one_line_error(code, err, "already holds a checkpoint", "--resume")
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before


def test_console_script_prints_no_traceback(tmp_path):
    exe = Path(sys.executable).with_name("sarbridge")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sarbridge.app.cli"]
    proc = subprocess.run(cmd + ["evaluate", "--model", str(tmp_path / "none.pt"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
