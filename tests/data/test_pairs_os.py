"""The OS-dataset pair layout (``ROOT/{train,test}/opt<N>.png`` + ``sar<N>.png``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sarbridge.core.errors import DataError
from sarbridge.data.pairs import LAYOUTS, load_source, read_os_pairs, read_pairs
from sarbridge.tasks.pretrain.config import load_pretrain_config
from sarbridge.tasks.pretrain.task import read_config_pairs


def _png(path: Path, value: int, rgb: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (8, 8, 3) if rgb else (8, 8)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)


def make_os(root: Path) -> Path:
    for split, numbers in (("train", (0, 1, 10)), ("test", (2, 3))):
        for n in numbers:
            _png(root / split / f"opt{n}.png", 100 + n, True)
            _png(root / split / f"sar{n}.png", n, False)
    return root


def test_os_pairs_match_by_number_and_keep_splits_apart(tmp_path):
    root = make_os(tmp_path / "os")
    train = read_os_pairs(root)
    assert [p.key for p in train] == ["train/0", "train/1", "train/10"]
    for p in train:
        n = p.meta["id"]
        assert Path(str(p.optical)).name == f"opt{n}.png" and Path(str(p.sar)).name == f"sar{n}.png"
        assert load_source(p.sar)[0, 0] == n and load_source(p.optical)[0, 0, 0] == 100 + n
        assert p.group == p.key
    assert [p.key for p in read_os_pairs(root, split="test")] == ["test/2", "test/3"]
    assert len(read_os_pairs(root, split="all")) == 5
    assert "os" in LAYOUTS and [p.key for p in read_pairs(root, "os")] == [p.key for p in train]


def test_os_errors(tmp_path):
    root = make_os(tmp_path / "os")
    with pytest.raises(DataError, match="split 'val'"):
        read_os_pairs(root, split="val")
    _png(root / "train" / "sar7.png", 7, False)
    with pytest.raises(DataError, match="no partner: 'sar7'"):
        read_os_pairs(root)
    assert len(read_os_pairs(root, strict=False)) == 3
    _png(root / "train" / "thumb.png", 1, False)
    with pytest.raises(DataError, match="not named opt<N> or sar<N>"):
        read_os_pairs(root)
    with pytest.raises(DataError, match="OS-dataset folder"):
        read_os_pairs(tmp_path / "absent")
    with pytest.raises(DataError, match="test folder"):
        read_os_pairs(make_os(tmp_path / "only") / "train", split="test")


def test_pretraining_reads_the_os_layout(tmp_path):
    root = make_os(tmp_path / "os")
    cfg = load_pretrain_config(None, ["data.layout=os", f"data.root={root}"])
    assert [p.key for p in read_config_pairs(cfg)] == ["train/0", "train/1", "train/10"]
    cfg = load_pretrain_config(None, ["data.layout=os", f"data.root={root}", "data.include_test=true"])
    assert len(read_config_pairs(cfg)) == 5


def test_pretrain_command_accepts_the_os_layout(tmp_path):
    from sarbridge.app.cli import build_parser

    args = build_parser().parse_args(["pretrain", "--config", "configs/pretrain_demo.yaml", "--layout", "os", "--data", str(tmp_path), "--out", str(tmp_path)])
    assert args.layout == "os"


def test_bridge_training_reads_the_os_layout(tmp_path):
    """The bridge's data.format: os reads the training pairs only (test pairs never reach training)."""
    from sarbridge.tasks.bridge.config import load_diffusion_config
    from sarbridge.tasks.bridge.pairs import load_pairs

    root = make_os(tmp_path / "os")
    cfg = load_diffusion_config(None, ["data.format=os", f"data.root={root}"])
    items, fmt = load_pairs(cfg.data)
    assert fmt == "os" and [p.key for p in items] == ["train/0", "train/1", "train/10"]
    assert len({p.group for p in items}) == 3  # each pair its own group
