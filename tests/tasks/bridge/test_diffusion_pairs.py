"""Paired datasets: HOSS identity pairs, synthetic same-pose pairs, generic opt/ + sar/ folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sarbridge.data.synthetic import generate_hoss_dataset
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.tasks.bridge.pairs import (
    ImagePair,
    PairDataConfig,
    PairDataset,
    detect_pair_format,
    folder_pairs,
    hoss_identity_pairs,
    load_pairs,
    prepare_uint8,
    split_pairs,
    synthetic_pose_pairs,
)
from sarbridge.core.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("syn") / "set"
    generate_hoss_dataset(root, num_ids=4, optical_per_id=2, sar_per_id=2, num_distractors=1, seed=3,
                          progress=False)
    return root


def test_hoss_identity_pairs(tiny_hoss):
    pairs = hoss_identity_pairs(tiny_hoss)
    # ids 1 and 2 have one optical and one SAR image; id 3 only optical
    assert [(p.pid, Path(p.optical).name, Path(p.sar).name) for p in pairs] == [
        (1, "0001_s01c1_RGB.tif", "0001_s01c2_SAR.tif"),
        (2, "0002_s01c1_RGB.tif", "0002_s01c2_SAR.tif"),
    ]
    assert detect_pair_format(tiny_hoss) == "hoss"


def test_hoss_pairs_are_the_cross_product_and_can_be_capped(make_hoss_layout):
    root = make_hoss_layout({"bounding_box_train": [
        "0001_s01c1_RGB.tif", "0001_s02c1_RGB.tif", "0001_s01c2_SAR.tif", "0001_s02c2_SAR.tif",
        "0001_s03c2_SAR.tif", "-1_0001_RGB.tif", "-1_0002_SAR.tif"]})
    pairs = hoss_identity_pairs(root)
    assert len(pairs) == 6 and {p.pid for p in pairs} == {1}
    capped = hoss_identity_pairs(root, max_pairs_per_id=2, seed=0)
    assert len(capped) == 2 and set(capped) <= set(pairs)
    assert capped == hoss_identity_pairs(root, max_pairs_per_id=2, seed=0)


def test_hoss_without_cross_modal_ids_is_an_error(make_hoss_layout):
    root = make_hoss_layout({"bounding_box_train": ["0001_s01c1_RGB.tif", "0002_s01c2_SAR.tif"]})
    with pytest.raises(DataError, match="both optical and SAR"):
        hoss_identity_pairs(root)


def test_synthetic_same_pose_pairs(synthetic_root):
    assert detect_pair_format(synthetic_root) == "synthetic"
    train = synthetic_pose_pairs(synthetic_root, "train")
    test = synthetic_pose_pairs(synthetic_root, "test")
    assert train and test
    assert all("bounding_box_train" in p.optical and "bounding_box_train" in p.sar for p in train)
    assert all("bounding_box_train" not in p.optical for p in test)
    for p in train + test:  # same ship, same index = same pose
        assert Path(p.optical).name.replace("c1_RGB", "c2_SAR") == Path(p.sar).name
    assert {p.pid for p in train}.isdisjoint({p.pid for p in test})
    assert len(synthetic_pose_pairs(synthetic_root, "all")) == len(train) + len(test)


def _write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_folder_pairs_match_names(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        _write_png(tmp_path / "opt" / f"{name}_RGB.png", rng.integers(0, 255, (10, 6, 3), dtype=np.uint8))
    for name in ("a", "c", "d"):
        _write_png(tmp_path / "sar" / f"{name}_SAR.png", rng.integers(0, 255, (10, 6), dtype=np.uint8))
    pairs = folder_pairs(tmp_path)
    assert [p.name for p in pairs] == ["a", "c"] and detect_pair_format(tmp_path) == "folder"
    cfg = PairDataConfig(root=str(tmp_path), resolution=[8, 4])
    got, fmt = load_pairs(cfg)
    assert fmt == "folder" and got == pairs


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="opt/ and sar/"):
        folder_pairs(tmp_path)
    _write_png(tmp_path / "opt" / "x.png", np.zeros((4, 4, 3), np.uint8))
    _write_png(tmp_path / "sar" / "y.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="matches"):
        folder_pairs(tmp_path)
    with pytest.raises(ConfigError):
        load_pairs(PairDataConfig(root=""))
    with pytest.raises(DataError, match="not found"):
        load_pairs(PairDataConfig(root=str(tmp_path / "missing")))


def test_split_pairs_by_identity():
    pairs = [ImagePair(f"o{i}", f"s{i}", pid=i // 2) for i in range(20)]
    train, val = split_pairs(pairs, 0.2, seed=1)
    assert len(val) == 4 and len(train) == 16
    assert {p.pid for p in train}.isdisjoint({p.pid for p in val})
    assert split_pairs(pairs, 0.2, seed=1) == (train, val)
    assert split_pairs(pairs, 0.0) == (pairs, [])
    assert split_pairs(pairs[:1], 0.5) == (pairs[:1], [])


def test_dataset_converts_and_flips_both_images_alike(tmp_path):
    rng = np.random.default_rng(1)
    opt = rng.integers(0, 255, (12, 6, 3), dtype=np.uint8)
    sar = (rng.gamma(1.0, 0.1, (9, 5)) + 1e-3).astype(np.float32)
    import tifffile

    (tmp_path / "sar").mkdir()
    tifffile.imwrite(tmp_path / "sar" / "p.tif", sar)
    _write_png(tmp_path / "opt" / "p.png", opt)
    spec = PreprocessSpec(image_size=[8, 4])
    pair = folder_pairs(tmp_path)
    plain = PairDataset(pair, spec, [8, 4])[0]
    assert plain["optical"].shape == (3, 8, 4) and plain["sar"].shape == (3, 8, 4)
    assert float(plain["sar"].max()) <= 1 and float(plain["sar"].min()) >= -1
    torch.testing.assert_close(plain["sar"][0], plain["sar"][1])  # SAR: 3 equal channels
    want_sar = prepare_uint8(sar, "sar", spec, [8, 4])
    np.testing.assert_array_equal(PairDataset(pair, spec, [8, 4]).load_uint8(0)[1], want_sar)
    flipped = PairDataset(pair, spec, [8, 4], hflip=1.0, vflip=1.0)[0]
    torch.testing.assert_close(flipped["optical"], plain["optical"].flip(-1).flip(-2))
    torch.testing.assert_close(flipped["sar"], plain["sar"].flip(-1).flip(-2))
    torch.manual_seed(0)
    ds = PairDataset(pair, spec, [8, 4], hflip=0.5)
    for _ in range(10):  # random flips stay identical for both images
        it = ds[0]
        same = torch.equal(it["optical"], plain["optical"])
        assert same == torch.equal(it["sar"], plain["sar"])
