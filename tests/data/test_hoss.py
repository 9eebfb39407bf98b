"""Tests for sarbridge.data.hoss (file names, layout reading) and splits.build_protocols."""

from __future__ import annotations

import re
import shutil
from collections import Counter

import pytest

from sarbridge.core.errors import DataError
from sarbridge.data.hoss import find_hoss_root, load_hoss, parse_hoss_name
from sarbridge.data.records import OPTICAL, SAR, Sample
from sarbridge.data.splits import build_protocols, holdout_validation

SPLIT_OF_FOLDER = {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}
MODALITY_OF_TOKEN = {"RGB": OPTICAL, "SAR": SAR}


# --------------------------------------------------------------------------- file names


def test_parse_regular_sar_name(tmp_path):
    s = parse_hoss_name(tmp_path / "0001_s05c2_SAR.tif", split="query")
    assert (s.pid, s.camid, s.modality, s.split) == (1, 1, SAR, "query")
    assert s.path == str(tmp_path / "0001_s05c2_SAR.tif")
    assert s.modality_index == 1


def test_parse_regular_rgb_name():
    s = parse_hoss_name("0123_s11c1_RGB.tif")
    assert (s.pid, s.camid, s.modality, s.split) == (123, 0, OPTICAL, "train")
    assert s.modality_index == 0


def test_parse_distractor_name():
    s = parse_hoss_name("-1_0003_RGB.tif", split="gallery")
    assert (s.pid, s.camid, s.modality, s.split) == (-1, 0, OPTICAL, "gallery")
    s = parse_hoss_name("-1_0091_SAR.tif")
    assert (s.pid, s.modality) == (-1, SAR)


@pytest.mark.parametrize(
    "name",
    ["ship.tif", "0001_SAR.tif", "0001_s05c2.tif", "0001_s05_SAR.tif", "abc_s05c2_SAR.tif", "0001_s05c2_SAR_x.tif"],
)
def test_bad_names_raise_data_error_naming_the_file(tmp_path, name):
    with pytest.raises(DataError, match="does not follow") as exc:
        parse_hoss_name(tmp_path / name)
    assert name in str(exc.value)


def test_unknown_modality_suffix(tmp_path):
    with pytest.raises(DataError, match="unknown modality 'IR'") as exc:
        parse_hoss_name(tmp_path / "0001_s05c1_IR.tif")
    assert "0001_s05c1_IR.tif" in str(exc.value)


# --------------------------------------------------------------------------- the real sample


def test_load_real_sample_counts(hoss_sample_root, hoss_sample_manifest):
    splits = load_hoss(hoss_sample_root)
    assert (len(splits.train), len(splits.query), len(splits.gallery)) == (56, 31, 78)
    assert splits.subsets == {}
    for name, samples in (("train", splits.train), ("query", splits.query), ("gallery", splits.gallery)):
        got = Counter(s.modality for s in samples)
        want = Counter(
            MODALITY_OF_TOKEN[r["modality"]] for r in hoss_sample_manifest if SPLIT_OF_FOLDER[r["split"]] == name
        )
        assert got == want, name
        assert {s.split for s in samples} == {name}


def test_real_sample_records_match_manifest(hoss_sample_root, hoss_sample_manifest):
    splits = load_hoss(hoss_sample_root)
    by_file = {r["file"].split("/", 1)[1]: r for r in hoss_sample_manifest}
    for s in splits.train + splits.query + splits.gallery:
        rel = "/".join(s.path.replace("\\", "/").split("/")[-2:])
        row = by_file[rel]
        assert s.pid == int(row["pid"]), rel
        # sarbridge's camid is the 0-based HOSS ``c`` token (the manifest's ``camid`` column
        # follows TransOSS instead: 0 for RGB, 1 for SAR)
        cam_token = re.search(r"c(\d+)$", row["seq_cam"])
        assert s.camid == (int(cam_token[1]) - 1 if cam_token else 0), rel
        assert s.modality == MODALITY_OF_TOKEN[row["modality"]], rel
    # the README's description: 21 training identities, 18 distractors in the gallery
    assert len({s.pid for s in splits.train}) == 21
    assert sum(s.pid == -1 for s in splits.gallery) == 18
    assert all(s.pid >= 0 for s in splits.query)


def test_parent_folder_and_hoss_folder_are_equivalent(hoss_sample_root):
    a = load_hoss(hoss_sample_root)
    b = load_hoss(hoss_sample_root.parent)
    assert find_hoss_root(hoss_sample_root.parent) == hoss_sample_root
    assert a.root == b.root == str(hoss_sample_root)
    assert [s.path for s in a.train + a.query + a.gallery] == [s.path for s in b.train + b.query + b.gallery]


def test_real_sample_protocols_are_derived(hoss_sample_root):
    splits = load_hoss(hoss_sample_root)
    protocols, source = build_protocols(splits)
    assert source == "derived"
    assert set(protocols) == {"all2all", "opt2sar", "sar2opt"}
    q, g = protocols["opt2sar"]
    assert q == [s for s in splits.query if s.modality == OPTICAL]
    assert g == [s for s in splits.gallery if s.modality == SAR]
    assert (len(q), len(g)) == (18, 26)
    q, g = protocols["sar2opt"]
    assert q == [s for s in splits.query if s.modality == SAR]
    assert g == [s for s in splits.gallery if s.modality == OPTICAL]
    assert (len(q), len(g)) == (13, 52)
    assert protocols["all2all"] == (splits.query, splits.gallery)


# --------------------------------------------------------------------------- generated layouts


def test_tiny_layout_is_read_sorted(tiny_hoss):
    splits = load_hoss(tiny_hoss)
    assert [s.pid for s in splits.train] == [1, 1, 2, 2, 3]
    assert [s.modality for s in splits.train] == [OPTICAL, SAR, OPTICAL, SAR, OPTICAL]
    assert sorted(s.pid for s in splits.gallery) == [-1, -1, 10, 11]


def test_non_image_files_are_ignored(tiny_hoss):
    (tiny_hoss / "query" / "notes.txt").write_text("hello")
    (tiny_hoss / "query" / "Thumbs.db").write_bytes(b"\0")
    assert len(load_hoss(tiny_hoss).query) == 2


def test_badly_named_image_in_layout_is_reported(tiny_hoss):
    (tiny_hoss / "query" / "ship_42.tif").write_bytes(b"x")
    with pytest.raises(DataError) as exc:
        load_hoss(tiny_hoss)
    assert "ship_42.tif" in str(exc.value)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="not found") as exc:
        load_hoss(tmp_path / "no_such_dataset")
    assert "no_such_dataset" in str(exc.value)


def test_folder_without_splits(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="bounding_box_train") as exc:
        load_hoss(tmp_path)
    assert str(tmp_path) in str(exc.value)


def test_missing_gallery_folder(make_hoss_layout):
    root = make_hoss_layout({"bounding_box_train": ["0001_s01c1_RGB.tif"], "query": ["0002_s01c1_RGB.tif"]})
    with pytest.raises(DataError, match="bounding_box_test"):
        load_hoss(root)


@pytest.mark.parametrize("empty", ["bounding_box_train", "query", "bounding_box_test"])
def test_empty_split_folder(tiny_hoss, empty):
    for f in (tiny_hoss / empty).iterdir():
        f.unlink()
    with pytest.raises(DataError, match="empty") as exc:
        load_hoss(tiny_hoss)
    assert empty in str(exc.value)


def test_require_train_false_allows_missing_train(make_hoss_layout):
    root = make_hoss_layout({"query": ["0002_s01c1_RGB.tif"], "bounding_box_test": ["0002_s01c2_SAR.tif"]})
    splits = load_hoss(root, require_train=False)
    assert splits.train == []
    assert len(splits.query) == len(splits.gallery) == 1
    with pytest.raises(DataError, match="bounding_box_train"):
        load_hoss(root, require_train=True)


SUBSETS = {
    "subset/O2S/query": ["0010_s01c1_RGB.tif"],
    "subset/O2S/bounding_box_test": ["0010_s01c2_SAR.tif", "-1_0001_SAR.tif"],
    "subset/S2O/query": ["0011_s01c2_SAR.tif"],
    "subset/S2O/bounding_box_test": ["0011_s01c1_RGB.tif", "-1_0002_RGB.tif", "-1_0003_RGB.tif"],
}


def test_subset_folders_are_used_when_present(tiny_hoss, make_hoss_layout):
    assert make_hoss_layout(SUBSETS) == tiny_hoss
    splits = load_hoss(tiny_hoss)
    assert set(splits.subsets) == {"opt2sar", "sar2opt"}
    protocols, source = build_protocols(splits)
    assert source == "subset folders"
    q, g = protocols["opt2sar"]
    assert [(s.pid, s.modality, s.split) for s in q] == [(10, OPTICAL, "query")]
    assert sorted((s.pid, s.modality) for s in g) == [(-1, SAR), (10, SAR)]
    assert all("O2S" in s.path for s in q + g)
    q, g = protocols["sar2opt"]
    assert [(s.pid, s.modality) for s in q] == [(11, SAR)]
    assert len(g) == 3 and all("S2O" in s.path for s in g)
    assert protocols["all2all"] == (splits.query, splits.gallery)


def test_one_subset_folder_alone_falls_back_to_derived(tiny_hoss, make_hoss_layout):
    make_hoss_layout(SUBSETS)
    shutil.rmtree(tiny_hoss / "subset" / "S2O")
    splits = load_hoss(tiny_hoss)
    assert set(splits.subsets) == {"opt2sar"}
    protocols, source = build_protocols(splits)
    assert source == "derived"
    q, g = protocols["opt2sar"]
    assert q == [s for s in splits.query if s.modality == OPTICAL]
    assert g == [s for s in splits.gallery if s.modality == SAR]


def test_derived_protocols_on_tiny_layout(tiny_hoss):
    splits = load_hoss(tiny_hoss)
    protocols, source = build_protocols(splits)
    assert source == "derived"
    q, g = protocols["opt2sar"]
    assert [(s.pid, s.modality) for s in q] == [(10, OPTICAL)]
    assert sorted((s.pid, s.modality) for s in g) == [(-1, SAR), (10, SAR)]
    q, g = protocols["sar2opt"]
    assert [(s.pid, s.modality) for s in q] == [(11, SAR)]
    assert sorted((s.pid, s.modality) for s in g) == [(-1, OPTICAL), (11, OPTICAL)]


# --------------------------------------------------------------------------- validation hold-out


def _samples(spec: dict[int, tuple[int, int]]) -> list[Sample]:
    """``{pid: (n_optical, n_sar)}`` -> samples in pid order."""
    out = []
    for pid, (n_opt, n_sar) in spec.items():
        out += [Sample(f"{pid}_o{i}.tif", pid, OPTICAL) for i in range(n_opt)]
        out += [Sample(f"{pid}_s{i}.tif", pid, SAR) for i in range(n_sar)]
    return out


def _mods_by_pid(samples):
    out: dict[int, set[str]] = {}
    for s in samples:
        out.setdefault(s.pid, set()).add(s.modality)
    return out


def test_holdout_on_real_sample(hoss_sample_root):
    train = load_hoss(hoss_sample_root).train
    both = {pid for pid, m in _mods_by_pid(train).items() if len(m) == 2}
    kept, val = holdout_validation(train, 0.15, seed=0)
    val_ids = {s.pid for s in val}
    assert len(val_ids) == round(0.15 * 21)  # 3 of the 21 training identities
    assert val_ids <= both
    assert val_ids.isdisjoint({s.pid for s in kept})
    assert sorted(kept + val, key=lambda s: s.path) == sorted(train, key=lambda s: s.path)
    # every image of a held-out identity is held out, so each has both modalities in val
    assert all(len(m) == 2 for m in _mods_by_pid(val).values())


def test_holdout_is_deterministic_per_seed():
    train = _samples({pid: (2, 2) for pid in range(20)})
    a = holdout_validation(train, 0.3, seed=7)
    b = holdout_validation(train, 0.3, seed=7)
    assert a == b
    selections = {frozenset(s.pid for s in holdout_validation(train, 0.3, seed=seed)[1]) for seed in range(6)}
    assert len(selections) > 1  # the seed matters
    assert all(len(sel) == 6 for sel in selections)


def test_holdout_only_picks_identities_with_both_modalities():
    spec = {pid: (3, 0) for pid in range(10)}  # optical only
    spec.update({pid: (0, 2) for pid in range(10, 15)})  # SAR only
    spec.update({pid: (1, 1) for pid in range(15, 20)})  # both
    train = _samples(spec)
    for seed in range(5):
        kept, val = holdout_validation(train, 0.5, seed=seed)
        val_ids = {s.pid for s in val}
        assert val_ids and val_ids <= set(range(15, 20))
        assert val_ids.isdisjoint({s.pid for s in kept})


@pytest.mark.parametrize("fraction", [0.0, -0.1])
def test_holdout_fraction_zero_gives_no_val(fraction):
    train = _samples({pid: (2, 2) for pid in range(10)})
    kept, val = holdout_validation(train, fraction, seed=0)
    assert val == [] and kept == train
    assert kept is not train  # a copy, not the caller's list


def test_holdout_too_few_eligible_identities_gives_no_val():
    train = _samples({1: (2, 1), 2: (3, 0), 3: (0, 2)})  # only one identity has both modalities
    kept, val = holdout_validation(train, 0.5, seed=0)
    assert val == [] and kept == train


def test_holdout_holds_out_at_least_two_and_keeps_at_least_two():
    train = _samples({pid: (1, 1) for pid in range(10)})
    _, val = holdout_validation(train, 0.01, seed=0)
    assert len({s.pid for s in val}) == 2
    kept, val = holdout_validation(train, 0.95, seed=0)
    assert len({s.pid for s in kept}) == 2 and len({s.pid for s in val}) == 8


def test_holdout_never_holds_out_distractors():
    train = _samples({-1: (2, 2), **{pid: (1, 1) for pid in range(6)}})
    for seed in range(5):
        _, val = holdout_validation(train, 0.5, seed=seed)
        assert -1 not in {s.pid for s in val}


def test_holdout_keeps_two_real_identities_when_train_has_distractors():
    train = _samples({-1: (1, 1), 1: (1, 1), 2: (1, 1), 3: (1, 1)})
    kept, val = holdout_validation(train, 0.9, seed=0)
    assert len({s.pid for s in kept if s.pid >= 0}) >= 2
