"""The bridge's pairs: format detection, config -> pairs, its split (pinned), the paired-tensor Dataset.

The readers themselves are tested in tests/data/test_pairs.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sarbridge.core.errors import ConfigError, DataError
from sarbridge.data.pairs import PairItem, split_pairs
from sarbridge.data.synthetic import generate_hoss_dataset
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.tasks.bridge.config import PairDataConfig
from sarbridge.tasks.bridge.pairs import (
    BridgePairDataset,
    detect_pair_format,
    load_pairs,
    pairs_summary,
    prepare_uint8,
)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("syn") / "set"
    generate_hoss_dataset(root, num_ids=4, optical_per_id=2, sar_per_id=2, num_distractors=1, seed=3,
                          progress=False)
    return root


def _write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _folder_set(root: Path, n: int) -> Path:
    for i in range(n):
        _write_png(root / "opt" / f"p{i}_RGB.png", np.full((6, 4, 3), i, np.uint8))
        _write_png(root / "sar" / f"p{i}_SAR.png", np.full((6, 4), i, np.uint8))
    return root


def _hoss_set(make_hoss_layout) -> Path:
    names = [f"{pid:04d}_s{k:02d}c1_RGB.tif" for pid in range(1, 10) for k in (1, 2)]
    names += [f"{pid:04d}_s{k:02d}c2_SAR.tif" for pid in range(1, 10) for k in (3, 4, 5)]
    return make_hoss_layout({"bounding_box_train": names + ["-1_0001_RGB.tif", "-1_0002_SAR.tif"]})


def test_formats_are_detected_and_read(tiny_hoss, synthetic_root, tmp_path):
    assert detect_pair_format(tiny_hoss) == "hoss"
    assert detect_pair_format(synthetic_root) == "synthetic"
    assert detect_pair_format(_folder_set(tmp_path / "f", 2)) == "folder"
    pairs, fmt = load_pairs(PairDataConfig(root=str(tiny_hoss)))
    assert fmt == "hoss" and [(p.group, Path(p.sar).name) for p in pairs] == [
        ("1", "0001_s01c2_SAR.tif"), ("2", "0002_s01c2_SAR.tif")]
    pairs, fmt = load_pairs(PairDataConfig(root=str(tmp_path / "f")))
    assert fmt == "folder" and [p.key for p in pairs] == ["p0", "p1"]
    # a forced format wins over detection
    with pytest.raises(DataError, match="pairs.csv' not found"):
        load_pairs(PairDataConfig(root=str(tmp_path / "f"), format="synthetic"))


def test_synthetic_same_pose_pairs(synthetic_root):
    cfg = PairDataConfig(root=str(synthetic_root))
    train, test = load_pairs(cfg)[0], load_pairs(cfg, split="test")[0]
    assert train and test
    assert all("bounding_box_train" in p.optical and "bounding_box_train" in p.sar for p in train)
    assert all("bounding_box_train" not in p.optical for p in test)
    for p in train + test:  # same ship, same index = same pose
        assert Path(p.optical).name.replace("c1_RGB", "c2_SAR") == Path(p.sar).name
    assert {p.group for p in train}.isdisjoint({p.group for p in test})
    assert len(load_pairs(cfg, split="all")[0]) == len(train) + len(test)


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError):
        load_pairs(PairDataConfig(root=""))
    with pytest.raises(DataError, match="not found"):
        load_pairs(PairDataConfig(root=str(tmp_path / "missing")))
    with pytest.raises(DataError, match="opt/ and sar/"):
        load_pairs(PairDataConfig(root=str(tmp_path), format="folder"))


def test_pairs_without_identity_are_their_own_positional_group(tmp_path):
    pairs, _ = load_pairs(PairDataConfig(root=str(_folder_set(tmp_path, 3))))
    assert [p.group for p in pairs] == ["pair:0", "pair:1", "pair:2"]
    assert pairs_summary(pairs) == {"pairs": 3, "ids": 0, "optical_images": 3, "sar_images": 3}


def test_pairs_summary_counts_identities(make_hoss_layout):
    pairs, _ = load_pairs(PairDataConfig(root=str(_hoss_set(make_hoss_layout)), max_pairs_per_id=2), seed=3)
    assert pairs_summary(pairs) == {"pairs": 18, "ids": 9, "optical_images": len({k.split("+")[0] for k in HOSS_CAPPED}),
                                    "sar_images": len({k.split("+")[1] for k in HOSS_CAPPED})}


def test_split_by_identity_holds_out_at_least_one():
    pairs = [PairItem(f"o{i}", f"s{i}", key=f"k{i}", group=str(i // 2)) for i in range(20)]
    train, val = split_pairs(pairs, 0.2, seed=1, min_groups=1)
    assert len(val) == 4 and len(train) == 16
    assert {p.group for p in train}.isdisjoint({p.group for p in val})
    assert split_pairs(pairs, 0.2, seed=1, min_groups=1) == (train, val)
    assert split_pairs(pairs, 0.0, min_groups=1) == (pairs, [])
    assert split_pairs(pairs[:1], 0.5, min_groups=1) == (pairs[:1], [])
    assert len(split_pairs(pairs[:4], 0.1, min_groups=1)[1]) == 2  # 2 groups: one held out


# Splits of the previous layout's bridge readers (tasks/bridge/pairs.py: ImagePair, its own
# split_pairs grouping pid -1 pairs as "pair:<i>"), for the same data and seeds.
BRIDGE_PINS = {
    ("synthetic", 0, 0.3): ["0003_s01c1_RGB", "0003_s02c1_RGB"],
    ("synthetic", 2, 0.5): ["0003_s01c1_RGB", "0003_s02c1_RGB"],
    ("folder", 0, 0.25): ["p11_RGB", "p12_RGB", "p3_RGB"],  # positional groups sort as pair:10 < pair:2
    ("folder", 1, 0.1): ["p11_RGB"],
}
HOSS_CAPPED = [  # max_pairs_per_id=2, seed=3
    "0001_s01c1_RGB+0001_s03c2_SAR", "0001_s02c1_RGB+0001_s04c2_SAR", "0002_s01c1_RGB+0002_s04c2_SAR",
    "0002_s02c1_RGB+0002_s05c2_SAR", "0003_s02c1_RGB+0003_s03c2_SAR", "0003_s02c1_RGB+0003_s04c2_SAR",
    "0004_s01c1_RGB+0004_s03c2_SAR", "0004_s01c1_RGB+0004_s04c2_SAR", "0005_s01c1_RGB+0005_s05c2_SAR",
    "0005_s02c1_RGB+0005_s03c2_SAR", "0006_s01c1_RGB+0006_s03c2_SAR", "0006_s02c1_RGB+0006_s04c2_SAR",
    "0007_s01c1_RGB+0007_s03c2_SAR", "0007_s02c1_RGB+0007_s05c2_SAR", "0008_s01c1_RGB+0008_s04c2_SAR",
    "0008_s02c1_RGB+0008_s05c2_SAR", "0009_s01c1_RGB+0009_s05c2_SAR", "0009_s02c1_RGB+0009_s05c2_SAR",
]


def test_bridge_splits_are_pinned(synthetic_root, make_hoss_layout, tmp_path):
    roots = {"synthetic": synthetic_root, "folder": _folder_set(tmp_path / "folder", 13)}
    for (fmt, seed, fraction), want in BRIDGE_PINS.items():
        pairs, got_fmt = load_pairs(PairDataConfig(root=str(roots[fmt])), seed=seed)
        val = split_pairs(pairs, fraction, seed=seed, min_groups=1)[1]
        assert got_fmt == fmt and [Path(p.optical).stem for p in val] == want, (fmt, seed)
    hoss = _hoss_set(make_hoss_layout)
    pairs, _ = load_pairs(PairDataConfig(root=str(hoss)), seed=0)
    val = split_pairs(pairs, 0.25, seed=0, min_groups=1)[1]
    assert len(pairs) == 54 and sorted({p.group for p in val}) == ["6", "7"]
    pairs, _ = load_pairs(PairDataConfig(root=str(hoss), max_pairs_per_id=2), seed=3)
    val = split_pairs(pairs, 0.5, seed=3, min_groups=1)[1]
    assert [p.key for p in pairs] == HOSS_CAPPED and sorted({p.group for p in val}) == ["1", "2", "3", "5"]


def test_dataset_converts_and_flips_both_images_alike(tmp_path):
    rng = np.random.default_rng(1)
    opt = rng.integers(0, 255, (12, 6, 3), dtype=np.uint8)
    sar = (rng.gamma(1.0, 0.1, (9, 5)) + 1e-3).astype(np.float32)
    import tifffile

    (tmp_path / "sar").mkdir()
    tifffile.imwrite(tmp_path / "sar" / "p.tif", sar)
    _write_png(tmp_path / "opt" / "p.png", opt)
    spec = PreprocessSpec(image_size=[8, 4])
    pair, _ = load_pairs(PairDataConfig(root=str(tmp_path)))
    plain = BridgePairDataset(pair, spec, [8, 4])[0]
    assert plain["optical"].shape == (3, 8, 4) and plain["sar"].shape == (3, 8, 4)
    assert float(plain["sar"].max()) <= 1 and float(plain["sar"].min()) >= -1
    torch.testing.assert_close(plain["sar"][0], plain["sar"][1])  # SAR: 3 equal channels
    want_sar = prepare_uint8(sar, "sar", spec, [8, 4])
    np.testing.assert_array_equal(BridgePairDataset(pair, spec, [8, 4]).load_uint8(0)[1], want_sar)
    flipped = BridgePairDataset(pair, spec, [8, 4], hflip=1.0, vflip=1.0)[0]
    torch.testing.assert_close(flipped["optical"], plain["optical"].flip(-1).flip(-2))
    torch.testing.assert_close(flipped["sar"], plain["sar"].flip(-1).flip(-2))
    torch.manual_seed(0)
    ds = BridgePairDataset(pair, spec, [8, 4], hflip=0.5)
    for _ in range(10):  # random flips stay identical for both images
        it = ds[0]
        same = torch.equal(it["optical"], plain["optical"])
        assert same == torch.equal(it["sar"], plain["sar"])


def test_dataset_reads_loader_sources():
    img = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)

    class Loader:
        def __call__(self) -> np.ndarray:
            return img

    spec = PreprocessSpec(image_size=[2, 4])
    loader = Loader()
    ds = BridgePairDataset([PairItem(loader, loader, key="x")], spec, [2, 4])
    np.testing.assert_array_equal(ds.load_uint8(0)[0], img)  # uint8 RGB at the resolution: unchanged
    torch.testing.assert_close(ds[0]["optical"], torch.tensor(img).permute(2, 0, 1).float() / 127.5 - 1.0)
