"""Pair readers on tiny generated layouts, the real BigEarthNet fixture, and their errors; the split."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sarbridge.core.errors import DataError
from sarbridge.data.pairs import (
    BigEarthNetRGBLoader,
    BigEarthNetSARLoader,
    PairDataset,
    PairItem,
    load_source,
    read_bigearthnet_pairs,
    read_folder_pairs,
    read_hoss_pairs,
    read_manifest_pairs,
    read_pairs,
    read_qxs_pairs,
    read_sen12_pairs,
    read_synthetic_pairs,
    split_pairs,
)
from sarbridge.data.synthetic import generate_hoss_dataset
from sarbridge.data.transforms import PreprocessSpec

BEN = Path(__file__).resolve().parents[1] / "fixtures" / "bigearthnet-s1s2-pairs"
SPEC = PreprocessSpec(image_size=[32, 32])


def png(path: Path, rgb: bool, seed: int = 0, size: int = 16) -> None:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size, size, 3) if rgb else (size, size), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def make_sen12(root: Path, n: int = 3) -> Path:
    for season in ("ROIs1158_spring", "ROIs1868_summer"):
        for k in range(n):
            png(root / season / "s1_7" / f"{season}_s1_7_p{k}.png", rgb=False, seed=k)
            png(root / season / "s2_7" / f"{season}_s2_7_p{k}.png", rgb=True, seed=k)
    return root


def make_qxs(root: Path, names=("0001", "0002", "0003")) -> Path:
    for i, name in enumerate(names):
        png(root / "opt" / f"{name}.png", rgb=True, seed=i)
        png(root / "sar" / f"{name}.png", rgb=False, seed=i)
    return root


def test_sen12_pairs_follow_s1_to_s2(tmp_path):
    items = read_sen12_pairs(make_sen12(tmp_path / "SEN12"))
    assert len(items) == 6
    for it in items:
        assert "/s1_7/" in it.sar and "_s1_7_" in Path(it.sar).name
        assert it.optical == it.sar.replace("/s1_7/", "/s2_7/").replace("_s1_7_", "_s2_7_")
    # every (optical, SAR) pair of both seasons, the ROI names kept intact (their 's1158' is not a token)
    root = tmp_path / "SEN12"
    got = sorted((Path(it.optical).relative_to(root).as_posix(), Path(it.sar).relative_to(root).as_posix())
                 for it in items)
    assert got == [(f"{s}/s2_7/{s}_s2_7_p{k}.png", f"{s}/s1_7/{s}_s1_7_p{k}.png")
                   for s in ("ROIs1158_spring", "ROIs1868_summer") for k in range(3)]
    optical, sar = items[0]  # items unpack as (optical, sar)
    assert optical.endswith(".png") and sar.endswith(".png")
    assert read_pairs(tmp_path / "SEN12", "sen12") == items


def test_sen12_errors(tmp_path):
    root = make_sen12(tmp_path / "SEN12", n=2)
    (root / "ROIs1158_spring" / "s2_7" / "ROIs1158_spring_s2_7_p1.png").unlink()
    with pytest.raises(DataError, match="1 SAR \\(s1\\) images .* no partner: 'ROIs1158_spring/s1_7/ROIs1158_spring_s1_7_p1.png'"):
        read_sen12_pairs(root)
    assert len(read_sen12_pairs(root, strict=False)) == 3
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="no s1_\\* folder"):
        read_sen12_pairs(tmp_path / "flat")
    with pytest.raises(DataError, match="not found"):
        read_sen12_pairs(tmp_path / "missing")


def test_qxs_pairs_match_by_name(tmp_path):
    root = make_qxs(tmp_path / "QXS")
    items = read_qxs_pairs(root)
    assert [it.key for it in items] == ["0001", "0002", "0003"]
    assert all(Path(it.optical).parent.name == "opt" and Path(it.sar).parent.name == "sar" for it in items)
    assert all(Path(it.optical).name == Path(it.sar).name for it in items)


def test_qxs_errors(tmp_path):
    root = make_qxs(tmp_path / "QXS")
    png(root / "opt" / "0009.png", rgb=True)
    with pytest.raises(DataError, match="no partner: 'opt/0009'"):
        read_qxs_pairs(root)
    assert len(read_qxs_pairs(root, strict=False)) == 3
    shutil.rmtree(root / "sar")
    with pytest.raises(DataError, match="lacks sar/"):
        read_qxs_pairs(root)
    empty = tmp_path / "empty"
    (empty / "opt").mkdir(parents=True)
    (empty / "sar").mkdir()
    with pytest.raises(DataError, match="no optical/SAR pairs"):
        read_qxs_pairs(empty)
    with pytest.raises(DataError, match="unknown pair layout"):
        read_pairs(root, "sen2")


def test_bigearthnet_fixture_pairs_and_conversion():
    items = read_bigearthnet_pairs(BEN)
    assert len(items) == 6
    assert {(it.meta["grid_row"], it.meta["grid_col"]) for it in items} == {
        (r, c) for r in ("37", "38") for c in ("88", "89", "90")}
    for it in items:
        assert it.key.endswith(f"_{it.meta['grid_row']}_{it.meta['grid_col']}")
        assert isinstance(it.sar, BigEarthNetSARLoader) and isinstance(it.optical, BigEarthNetRGBLoader)
    opt, sar = load_source(items[0].optical), load_source(items[0].sar)
    assert opt.shape == (120, 120, 3) and opt.dtype == np.uint8
    assert opt.min() == 0 and opt.max() == 255  # percentile stretch reaches both ends
    assert sar.shape == (120, 120) and sar.dtype == np.float32
    assert 0.0 <= sar.min() and sar.max() <= 25.0  # dB clipped to [-25, 0] and shifted
    with np.load(BEN / "s1" / Path(items[0].sar.path).name) as z:
        power = 10 ** (z["VV"].astype(np.float64) / 10) + 10 ** (z["VH"].astype(np.float64) / 10)
    np.testing.assert_allclose(load_source(BigEarthNetSARLoader(items[0].sar.path, "linear")), power, rtol=1e-5)
    np.testing.assert_allclose(sar, np.clip(10 * np.log10(power), -25, 0) + 25, rtol=1e-5, atol=1e-4)


def test_bigearthnet_without_csv_matches_grid_cells(tmp_path):
    root = tmp_path / "ben"
    shutil.copytree(BEN, root)
    (root / "pairs.csv").unlink()
    items = read_bigearthnet_pairs(root)
    assert sorted(it.key for it in items) == sorted(it.key for it in read_bigearthnet_pairs(BEN))
    next((root / "s1").glob("*_38_90.npz")).unlink()
    with pytest.raises(DataError, match="no partner: 's2/.*_T33UUP_38_90'"):
        read_bigearthnet_pairs(root)
    assert len(read_bigearthnet_pairs(root, strict=False)) == 5


def test_bigearthnet_errors(tmp_path):
    root = tmp_path / "ben"
    shutil.copytree(BEN, root)
    next((root / "s2").glob("*_37_88.npz")).unlink()
    with pytest.raises(DataError, match="pairs.csv rows .* no partner"):
        read_bigearthnet_pairs(root)
    shutil.rmtree(root / "s1")
    with pytest.raises(DataError, match="s1"):
        read_bigearthnet_pairs(root)
    bad = tmp_path / "bad.npz"
    np.savez(bad, VV=np.zeros((4, 4), np.float32))
    with pytest.raises(DataError, match="lacks band\\(s\\) VH"):
        BigEarthNetSARLoader(str(bad))()


def test_manifest_pairs_use_train_ids_only(tmp_path, write_rgb, write_sar):
    rows = ["path,id,modality,split"]
    for pid, split, n_opt, n_sar in ((1, "train", 2, 1), (2, "train", 1, 1), (3, "train", 1, 0), (9, "query", 1, 1)):
        for k in range(n_opt):
            write_rgb(tmp_path / f"{pid}_{k}_o.tif", seed=k)
            rows.append(f"{pid}_{k}_o.tif,{pid},RGB,{split}")
        for k in range(n_sar):
            write_sar(tmp_path / f"{pid}_{k}_s.tif", seed=k)
            rows.append(f"{pid}_{k}_s.tif,{pid},SAR,{split}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    items = read_manifest_pairs(tmp_path / "m.csv")
    assert [(it.group, Path(it.optical).name, Path(it.sar).name) for it in items] == [
        ("1", "1_0_o.tif", "1_0_s.tif"), ("1", "1_1_o.tif", "1_0_s.tif"), ("2", "2_0_o.tif", "2_0_s.tif")]
    assert len(read_manifest_pairs(tmp_path / "m.csv", splits=("train", "query"))) == 4
    with pytest.raises(DataError, match="no id with both"):
        read_manifest_pairs(tmp_path / "m.csv", splits=("gallery",))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_pairs")
    return generate_hoss_dataset(root, num_ids=6, num_distractors=0, seed=1, gsd_optical=3.0, gsd_sar=4.0,
                                 subsets=False, progress=False)


def test_synthetic_pairs_exclude_test_ids(synth):
    import json

    meta = json.loads((synth / "meta.json").read_text())
    items = read_synthetic_pairs(synth)
    assert {int(it.group) for it in items} == set(meta["train_ids"])
    assert all("bounding_box_train" in it.optical and "bounding_box_train" in it.sar for it in items)
    assert all(Path(it.optical).name[:8] == Path(it.sar).name[:8] for it in items)  # same pid and index
    assert all(it.gsd_optical == 3.0 and it.gsd_sar == 4.0 for it in items)
    every = read_synthetic_pairs(synth, split="all")
    assert {int(it.group) for it in every} - set(meta["train_ids"]) <= set(meta["test_ids"])
    assert len(every) > len(items)
    test = read_synthetic_pairs(synth, split="test")
    assert {int(it.group) for it in test} == set(meta["test_ids"])
    assert [it.key for it in every] == sorted(it.key for it in items + test)  # pairs.csv order: by pid
    assert all("bounding_box_train" not in it.optical + it.sar for it in test)


def test_synthetic_errors(tmp_path, synth):
    with pytest.raises(DataError, match="pairs.csv' not found"):
        read_synthetic_pairs(tmp_path)
    root = tmp_path / "copy"
    shutil.copytree(synth, root)
    next((root / "bounding_box_train").glob("*_SAR.tif")).unlink()
    with pytest.raises(DataError, match="not found in bounding_box_train"):
        read_synthetic_pairs(root)
    with pytest.raises(DataError, match="unknown synthetic split 'val'"):
        read_synthetic_pairs(synth, split="val")


def test_pair_dataset_tensors_and_size_features(synth):
    items = read_synthetic_pairs(synth)
    ds = PairDataset(items, SPEC, cache=True)
    x = ds[0]
    assert x["optical"].shape == (3, 32, 32) and x["sar"].shape == (3, 32, 32)
    raw = load_source(items[0].sar)
    expected = PreprocessSpec(image_size=[32, 32], gsd_sar=4.0).size_features(*raw.shape[:2], "sar")
    assert torch.allclose(x["sar_size"], torch.from_numpy(expected))
    assert x["group"] == ds.group_index[items[0].group]
    assert ds._cache  # cached after the first read
    zero = PairDataset(read_bigearthnet_pairs(BEN), SPEC, size_features="zero")[1]
    assert zero["optical_size"].abs().sum() == 0 and zero["sar"].shape == (3, 32, 32)
    # SAR goes through sarbridge's SAR conversion (max scaling -> the brightest pixel is white)
    assert zero["sar"].max().item() == pytest.approx(1.0)


def test_split_pairs_holds_out_whole_groups():
    items = [PairItem(f"o{i}", f"s{i}", key=f"k{i}", group=str(i // 2)) for i in range(20)]
    train, val = split_pairs(items, 0.2, seed=0)
    assert len({it.group for it in val}) == 2 and len(train) + len(val) == 20
    assert not {it.group for it in train} & {it.group for it in val}
    assert split_pairs(items, 0.2, seed=0) == (train, val)
    assert split_pairs(items[:6], 0.5) == (items[:6], [])  # 3 groups: too few to hold out
    assert split_pairs(items, 0.0)[1] == []


def test_split_pairs_draws_sorted_groups_and_respects_min_groups():
    items = [PairItem(f"o{i}", f"s{i}", key=f"k{i}", group=g) for i, g in enumerate("cabbcd")]
    groups = ["a", "b", "c", "d"]  # sorted; the draw indexes this list
    for seed in range(4):
        want = {groups[i] for i in np.random.default_rng(seed).choice(4, size=2, replace=False).tolist()}
        train, val = split_pairs(items, 0.25, seed=seed)  # round(1.0) = 1 group, raised to 2
        assert {it.group for it in val} == want and not want & {it.group for it in train}
        assert [it.key for it in val] == [it.key for it in items if it.group in want]  # input order kept
    # min_groups=1 (bridge): one group is enough on either side; with 2 groups one is held out
    assert len({it.group for it in split_pairs(items, 0.25, seed=0, min_groups=1)[1]}) == 1
    train, val = split_pairs(items[:3], 0.9, seed=0, min_groups=1)  # groups c, a, b: round(2.7) = 3, keep one
    assert len({it.group for it in val}) == 2 and len({it.group for it in train}) == 1
    assert split_pairs(items[:3], 0.9, seed=0) == (items[:3], [])  # default 2 needs 4 groups
    with pytest.raises(ValueError):
        split_pairs(items, 0.5, min_groups=0)


# Splits computed by the readers and split_pairs of the previous layout (data/pairs.py for
# pretraining): the merged readers must hold out the same pairs for the same seeds.
PRETRAIN_PINS = {
    ("synthetic", "train", 0, 0.3): [],  # 3 training ids: fewer than 4 groups, nothing held out
    ("synthetic", "all", 0, 0.3): ["0004_s01c1_RGB", "0004_s02c1_RGB", "0005_s01c1_RGB", "0005_s02c1_RGB"],
    ("synthetic", "all", 5, 0.5): ["0001_s01c1_RGB", "0001_s02c1_RGB", "0003_s01c1_RGB", "0003_s02c1_RGB",
                                   "0005_s01c1_RGB", "0005_s02c1_RGB"],
    ("qxs", None, 0, 0.25): ["t4_opt", "t5_opt", "t6_opt"],
    ("qxs", None, 3, 0.5): ["t0_opt", "t10_opt", "t11_opt", "t3_opt", "t7_opt", "t8_opt"],
}


def test_pretraining_splits_are_pinned(synth, tmp_path):
    make_qxs(tmp_path / "QXS", names=[f"t{i}_opt" for i in range(12)])
    for (layout, split, seed, fraction), want in PRETRAIN_PINS.items():
        if layout == "synthetic":
            items = read_pairs(synth, "synthetic", split=split)
        else:
            items = read_pairs(tmp_path / "QXS", layout)
        assert [it.key for it in split_pairs(items, fraction, seed=seed)[1]] == want, (layout, split, seed)


# --- opt/ + sar/ with modality tokens (the bridge's 'folder' layout) ---------------------------

def test_folder_pairs_ignore_modality_tokens_and_lonely_files(tmp_path):
    for name in ("a_RGB", "b_rgb", "c_opt", "lonely_RGB"):
        png(tmp_path / "opt" / f"{name}.png", rgb=True)
    for name in ("a_SAR", "b_sar", "c_SAR", "d_SAR"):
        png(tmp_path / "sar" / f"{name}.png", rgb=False)
    items = read_folder_pairs(tmp_path)
    assert [(it.key, Path(it.optical).name, Path(it.sar).name) for it in items] == [
        ("a", "a_RGB.png", "a_SAR.png"), ("b", "b_rgb.png", "b_sar.png"), ("c", "c_opt.png", "c_SAR.png")]
    assert read_pairs(tmp_path, "folder") == items
    with pytest.raises(DataError, match="2 images in .* no partner: 'opt/lonely', 'sar/d'"):
        read_folder_pairs(tmp_path, strict=True)
    with pytest.raises(DataError, match="no partner"):  # qxs matches whole stems: a_RGB is not a_SAR
        read_qxs_pairs(tmp_path)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="lacks opt/ and sar/"):
        read_folder_pairs(tmp_path)
    png(tmp_path / "opt" / "x.png", rgb=True)
    png(tmp_path / "sar" / "y.png", rgb=False)
    with pytest.raises(DataError, match=r"no optical/SAR pairs .*\(layout 'folder'\).*opt/a.png and sar/a.tif"):
        read_folder_pairs(tmp_path)
    png(tmp_path / "opt" / "x_RGB.png", rgb=True)
    with pytest.raises(DataError, match="'x.png' and 'x_RGB.png' .* have the same name"):
        read_folder_pairs(tmp_path)


# --- HOSS identity pairs -------------------------------------------------------------------------

def test_hoss_identity_pairs(tiny_hoss):
    items = read_hoss_pairs(tiny_hoss)
    # ids 1 and 2 have one optical and one SAR image; id 3 only optical
    assert [(it.group, Path(it.optical).name, Path(it.sar).name) for it in items] == [
        ("1", "0001_s01c1_RGB.tif", "0001_s01c2_SAR.tif"),
        ("2", "0002_s01c1_RGB.tif", "0002_s01c2_SAR.tif"),
    ]
    assert items[0].key == "0001_s01c1_RGB+0001_s01c2_SAR"
    assert read_pairs(tiny_hoss, "hoss") == items


def test_hoss_pairs_are_the_cross_product_and_can_be_capped(make_hoss_layout):
    root = make_hoss_layout({"bounding_box_train": [
        "0001_s01c1_RGB.tif", "0001_s02c1_RGB.tif", "0001_s01c2_SAR.tif", "0001_s02c2_SAR.tif",
        "0001_s03c2_SAR.tif", "-1_0001_RGB.tif", "-1_0002_SAR.tif"]})
    items = read_hoss_pairs(root)
    assert len(items) == 6 and {it.group for it in items} == {"1"}
    assert [it.key for it in items] == [f"0001_s0{o}c1_RGB+0001_s0{s}c2_SAR" for o in (1, 2) for s in (1, 2, 3)]
    capped = read_hoss_pairs(root, max_pairs_per_id=2, seed=0)
    keep = sorted(np.random.default_rng(0).choice(6, size=2, replace=False).tolist())
    assert capped == [items[i] for i in keep]
    assert capped == read_hoss_pairs(root, max_pairs_per_id=2, seed=0)


def test_hoss_without_cross_modal_ids_is_an_error(make_hoss_layout):
    root = make_hoss_layout({"bounding_box_train": ["0001_s01c1_RGB.tif", "0002_s01c2_SAR.tif"]})
    with pytest.raises(DataError, match="both optical and SAR"):
        read_hoss_pairs(root)
