"""Tests for the procedural optical/SAR ship generator (tiny chips via coarse GSDs)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile

from sarbridge.data.synthetic import (
    Block,
    Pose,
    ShipSpec,
    apply_speckle,
    chip_extent_m,
    chip_shape,
    derive_scatterers,
    generate_hoss_dataset,
    render_optical,
    render_pair,
    render_sar,
    sample_pose,
    sample_ship,
)
from sarbridge.data.synthetic import hoss_layout as syn

GSD_OPT, GSD_SAR = 3.0, 4.0  # tiny chips: ~15-100 px tall
NAME = re.compile(r"^(?:(?P<pid>\d{4})_s(?P<seq>\d{2})c(?P<cam>\d)|-1_(?P<idx>\d{4}))_(?P<mod>RGB|SAR)\.tif$")
SPLITS = ("bounding_box_train", "query", "bounding_box_test")
PROTOCOLS = {
    "ALL": ("query", "bounding_box_test"),
    "O2S": ("subset/O2S/query", "subset/O2S/bounding_box_test"),
    "S2O": ("subset/S2O/query", "subset/S2O/bounding_box_test"),
}
SMALL = dict(num_ids=6, num_distractors=4, gsd_optical=GSD_OPT, gsd_sar=GSD_SAR, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _parse(name: str) -> tuple[int, str]:
    m = NAME.match(name)
    assert m is not None, f"bad file name {name}"
    pid = int(m["pid"]) if m["pid"] is not None else -1
    if pid > 0:
        assert m["cam"] == ("1" if m["mod"] == "RGB" else "2"), name
    return pid, m["mod"]


def _ls(root: Path, folder: str) -> list[tuple[int, str]]:
    d = root / folder
    return [_parse(p.name) for p in sorted(d.iterdir())] if d.is_dir() else []


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_hoss_dataset(tmp_path_factory.mktemp("syn") / "HOSS", seed=7, **SMALL)


# ----------------------------------------------------------------------------------------------
# dataset writer
# ----------------------------------------------------------------------------------------------
def test_same_seed_is_byte_identical_and_other_seed_differs(dataset: Path, tmp_path: Path) -> None:
    again = _files(generate_hoss_dataset(tmp_path / "a", seed=7, **SMALL))
    first = _files(dataset)
    assert sorted(first) == sorted(again)
    assert any(k.endswith(".tif") for k in first)
    for k in first:
        assert first[k] == again[k], f"{k} differs between two runs with the same seed"
    other = _files(generate_hoss_dataset(tmp_path / "b", seed=8, **SMALL))
    common = [k for k in first if k.endswith(".tif") and k in other]
    assert common
    assert sum(first[k] != other[k] for k in common) == len(common)


def test_layout_and_names(dataset: Path) -> None:
    meta = json.loads((dataset / "meta.json").read_text())
    train_ids, test_ids = set(meta["train_ids"]), set(meta["test_ids"])
    assert train_ids | test_ids == set(range(1, 7)) and not train_ids & test_ids
    assert len(train_ids) == 3
    assert not list(dataset.rglob("*.tmp"))
    train, query, gallery = (_ls(dataset, s) for s in SPLITS)
    # train ids: all their images, nothing else
    assert {p for p, _ in train} == train_ids
    assert sorted(train) == sorted((p, m) for p in train_ids for m in ("RGB", "RGB", "SAR", "SAR"))
    # one optical + one SAR query per test id, the rest and all distractors in the gallery
    assert sorted(query) == sorted((p, m) for p in test_ids for m in ("RGB", "SAR"))
    assert sorted(x for x in gallery if x[0] > 0) == sorted(query)
    distractors = [x for x in gallery if x[0] == -1]
    assert len(distractors) == 4 and {m for _, m in distractors} == {"RGB", "SAR"}
    # subsets: single-modality queries and galleries
    assert {m for _, m in _ls(dataset, "subset/O2S/query")} == {"RGB"}
    assert {m for _, m in _ls(dataset, "subset/O2S/bounding_box_test")} == {"SAR"}
    assert {m for _, m in _ls(dataset, "subset/S2O/query")} == {"SAR"}
    assert {m for _, m in _ls(dataset, "subset/S2O/bounding_box_test")} == {"RGB"}
    assert len(_ls(dataset, "subset/O2S/query")) + len(_ls(dataset, "subset/S2O/query")) == len(query)
    # meta describes every file and the GSD of each modality
    assert meta["gsd_m"] == {"RGB": GSD_OPT, "SAR": GSD_SAR}
    assert meta["seed"] == 7 and meta["params"]["num_ids"] == 6 and meta["version"]
    names = {p.name for s in SPLITS for p in (dataset / s).iterdir()}
    assert names == set(meta["files"])
    pairs = (dataset / "pairs.csv").read_text().splitlines()
    assert pairs[0].startswith("optical,sar") and len(pairs) == 1 + 6 * 2


@pytest.mark.parametrize(
    ("n_opt", "n_sar"), [(2, 2), (1, 1), (3, 1), (1, 3)], ids=["2x2", "1x1", "3opt1sar", "1opt3sar"]
)
def test_every_query_has_cross_modal_gallery_match(
    tmp_path: Path, n_opt: int, n_sar: int, request: pytest.FixtureRequest
) -> None:
    if (n_opt, n_sar) == (2, 2):
        root = request.getfixturevalue("dataset")
    else:
        root = generate_hoss_dataset(tmp_path / "d", seed=1, optical_per_id=n_opt, sar_per_id=n_sar, **SMALL)
    poses = {k: json.dumps(v["pose"]) for k, v in json.loads((root / "meta.json").read_text())["files"].items()}
    n_queries = 0
    for proto, (qdir, gdir) in PROTOCOLS.items():
        if not (root / qdir).is_dir():  # a protocol without queries (one modality has a single image)
            assert (n_opt, n_sar) != (2, 2)
            continue
        gallery = set(_ls(root, gdir))
        gallery_poses = {poses[p.name] for p in (root / gdir).iterdir()}
        for q in sorted((root / qdir).iterdir()):
            pid, mod = _parse(q.name)
            assert pid > 0
            other = "SAR" if mod == "RGB" else "RGB"
            assert (pid, other) in gallery, f"{proto}: query {pid} {mod} has no {other} match in the gallery"
            assert poses[q.name] not in gallery_poses, f"{proto}: {q.name} shares its pose with a gallery image"
            n_queries += 1
    assert n_queries > 0


def test_image_types_and_values(dataset: Path) -> None:
    n = {"RGB": 0, "SAR": 0}
    for path in sorted(dataset.rglob("*.tif")):
        _, mod = _parse(path.name)
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            arr = page.asarray()
            if mod == "RGB":
                assert page.photometric == tifffile.PHOTOMETRIC.RGB
                assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
                assert arr.std() > 3  # not blank
            else:
                assert page.photometric == tifffile.PHOTOMETRIC.MINISBLACK
                assert arr.dtype == np.float32 and arr.ndim == 2
                assert np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 2.5
                assert arr.max() > 0.5  # bright scatterers
        n[mod] += 1
        assert 4 <= min(arr.shape[:2]) and max(arr.shape[:2]) <= 120
    assert n["RGB"] > 0 and n["SAR"] > 0


def test_chip_size_follows_physical_ship_size(dataset: Path) -> None:
    meta = json.loads((dataset / "meta.json").read_text())
    for name, f in meta["files"].items():
        if f["pid"] < 0:
            spec = f["spec"]
        else:
            spec = meta["identities"][f"{f['pid']:04d}"]
        pose = f["pose"]
        t = math.radians(pose["jitter_deg"])
        h_m = spec["length_m"] * abs(math.cos(t)) + spec["beam_m"] * abs(math.sin(t)) + 2 * pose["margin_y_m"]
        w_m = spec["length_m"] * abs(math.sin(t)) + spec["beam_m"] * abs(math.cos(t)) + 2 * pose["margin_x_m"]
        g = f["gsd_m"]
        assert f["gsd_m"] == (GSD_OPT if f["modality"] == "RGB" else GSD_SAR)
        assert abs(f["height"] * g - h_m) <= g / 2 + 1e-3, name
        assert abs(f["width"] * g - max(w_m, 4 * g)) <= g / 2 + 1e-3, name
        assert pose["margin_y_m"] < 0.1 * spec["length_m"] + 2.5  # margins stay small


def test_chip_aspect_tracks_length_over_beam() -> None:
    ratios, aspects = [], []
    for i in range(30):
        spec = sample_ship(np.random.default_rng(i))
        pose = sample_pose(spec, np.random.default_rng(100 + i), heading_jitter_deg=0.0)
        img = render_optical(spec, np.random.default_rng(200 + i), gsd_m=1.5, pose=pose)
        h, w = img.shape[:2]
        assert (h, w) == chip_shape(spec, pose, 1.5)
        assert abs(h * 1.5 - (spec.length_m + 2 * pose.margin_y_m)) <= 0.75 + 1e-6
        assert abs(w * 1.5 - (spec.beam_m + 2 * pose.margin_x_m)) <= 0.75 + 1e-6
        ratios.append(spec.length_m / spec.beam_m)
        aspects.append(h / w)
    assert np.corrcoef(ratios, aspects)[0, 1] > 0.7  # margins add noise, the trend must remain
    assert all(a > 2.5 for a in aspects)  # ships stand upright: much taller than wide


def test_identities_differ_and_are_reproducible() -> None:
    specs = [sample_ship(np.random.default_rng(i)) for i in range(40)]
    for s in specs:
        assert 40 <= s.length_m <= 300 and 4 <= s.length_m / s.beam_m <= 9
        assert s.superstructure and s.scatterers
        kinds = {sc.kind for sc in s.scatterers}
        assert {"corner", "mast", "bow"} <= kinds
    dicts = [json.dumps(s.to_dict(), sort_keys=True) for s in specs]
    assert len(set(dicts)) == len(dicts)
    assert len({round(s.length_m, 3) for s in specs}) == len(specs)
    assert len({s.ship_type for s in specs}) >= 4
    assert sample_ship(np.random.default_rng(3)).to_dict() == specs[3].to_dict()


def test_dataset_identities_differ(dataset: Path) -> None:
    ids = json.loads((dataset / "meta.json").read_text())["identities"]
    assert len(ids) == 6
    keys = {(v["length_m"], v["beam_m"], len(v["superstructure"])) for v in ids.values()}
    assert len(keys) == 6


# ----------------------------------------------------------------------------------------------
# speckle
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("looks", [1, 4, 10])
def test_speckle_equivalent_number_of_looks(looks: int) -> None:
    flat = np.full((256, 256), 0.3, dtype=np.float32)
    out = apply_speckle(flat, looks, np.random.default_rng(looks))
    assert out.dtype == np.float32 and (out >= 0).all()
    enl = out.mean() ** 2 / out.var()
    assert abs(enl - looks) <= 0.15 * looks
    assert abs(out.mean() / 0.3 - 1) < 0.03


def test_no_speckle_when_looks_is_none() -> None:
    flat = np.full((64, 64), 0.3, dtype=np.float32)
    rng = np.random.default_rng(0)
    assert np.array_equal(apply_speckle(flat, None, rng), flat)
    assert np.array_equal(apply_speckle(flat, 0, rng), flat)


def test_render_sar_speckle_is_multiplicative_gamma() -> None:
    spec = sample_ship(np.random.default_rng(5))
    pose = sample_pose(spec, np.random.default_rng(6))
    kw = dict(gsd_m=1.0, pose=pose, saturation=None)
    clean = render_sar(spec, np.random.default_rng(9), looks=None, **kw)
    again = render_sar(spec, np.random.default_rng(9), looks=0, **kw)
    assert np.array_equal(clean, again)
    for looks in (2, 4):
        noisy = render_sar(spec, np.random.default_rng(9), looks=looks, **kw)
        ratio = noisy[clean > 0] / clean[clean > 0]
        assert ratio.size > 5000
        enl = ratio.mean() ** 2 / ratio.var()
        assert abs(enl - looks) <= 0.15 * looks
        assert abs(ratio.mean() - 1) < 0.05
    # the clean scene is smooth at pixel scale; speckle is not
    sea = clean < np.percentile(clean, 30)
    lag_clean = np.abs(np.diff(np.log(clean), axis=1))[sea[:, 1:] & sea[:, :-1]].mean()
    speckled = render_sar(spec, np.random.default_rng(9), looks=4, **kw)
    lag_noisy = np.abs(np.diff(np.log(speckled), axis=1))[sea[:, 1:] & sea[:, :-1]].mean()
    assert lag_clean < 0.2 * lag_noisy


def test_render_sar_values_like_real_chips() -> None:
    spec = sample_ship(np.random.default_rng(11))
    img = render_sar(spec, np.random.default_rng(12))
    assert img.dtype == np.float32 and np.isfinite(img).all()
    assert img.min() >= 0 and img.max() <= 2.5
    assert np.percentile(img, 5) < 0.05  # dark sea
    assert np.percentile(img, 99) > 1.0  # bright scatterers


# ----------------------------------------------------------------------------------------------
# same-pose pairs
# ----------------------------------------------------------------------------------------------
def _aft_block_ship() -> ShipSpec:
    """A plain 200 m hull with one tall white block on the aft quarter."""
    spec = ShipSpec(
        ship_type="test", length_m=200.0, beam_m=32.0, bow_length_m=30.0, bow_power=2.0, bow_fullness=1.0,
        stern_type="transom", stern_length_m=12.0, stern_width_frac=0.8, freeboard_m=6.0, rim_m=1.0,
        hull_colour=(30, 30, 30), deck_colour=(60, 60, 60), superstructure_colour=(255, 255, 255),
        superstructure=[Block("deckhouse", -60.0, 0.0, 24.0, 26.0, 20.0, (255, 255, 255))],
        sar_hull_level=0.05,
    )
    spec.scatterers = derive_scatterers(spec, np.random.default_rng(0))
    return spec


def _bright_row_fraction(img: np.ndarray, q: float) -> float:
    """Mean row of the brightest pixels, as a fraction of the chip height."""
    x = img.mean(axis=2) if img.ndim == 3 else img
    rows = np.nonzero(x >= np.percentile(x, q))[0]
    return float(rows.mean() / x.shape[0])


@pytest.mark.parametrize("bow_up", [True, False])
def test_render_pair_shares_pose(bow_up: bool) -> None:
    spec = _aft_block_ship()
    pose = Pose(bow_up=bow_up, jitter_deg=3.0, margin_y_m=5.0, margin_x_m=3.0)
    pair = render_pair(spec, np.random.default_rng(1), gsd_optical=1.0, gsd_sar=2.0, looks=None, pose=pose)
    assert pair.pose == pose
    # same physical extent at each modality's GSD
    h_m, w_m = chip_extent_m(spec, pose)
    assert abs(pair.optical.shape[0] * 1.0 - h_m) <= 0.5 and abs(pair.sar.shape[0] * 2.0 - h_m) <= 1.0
    assert abs(pair.optical.shape[1] * 1.0 - w_m) <= 0.5 and abs(pair.sar.shape[1] * 2.0 - w_m) <= 1.0
    # the aft superstructure is at the bottom when the bow is up, at the top otherwise, in both images
    f_opt = _bright_row_fraction(pair.optical, 98)
    f_sar = _bright_row_fraction(pair.sar, 97)
    for f in (f_opt, f_sar):
        assert (f > 0.55) if bow_up else (f < 0.45), (f_opt, f_sar)


def test_render_pair_draws_one_pose_for_both() -> None:
    spec = sample_ship(np.random.default_rng(2))
    for seed in range(6):
        pair = render_pair(spec, np.random.default_rng(seed), gsd_optical=GSD_OPT, gsd_sar=GSD_SAR)
        assert pair.optical.shape[:2] == chip_shape(spec, pair.pose, GSD_OPT)
        assert pair.sar.shape == chip_shape(spec, pair.pose, GSD_SAR)
        assert pair.optical.dtype == np.uint8 and pair.sar.dtype == np.float32


def test_dataset_pairs_share_pose(dataset: Path) -> None:
    meta = json.loads((dataset / "meta.json").read_text())
    rows = (dataset / "pairs.csv").read_text().splitlines()[1:]
    for row in rows:
        opt, sar, pid = row.split(",")[:3]
        assert meta["files"][opt]["pose"] == meta["files"][sar]["pose"]
        assert meta["files"][opt]["pid"] == meta["files"][sar]["pid"] == int(pid)


# ----------------------------------------------------------------------------------------------
# robustness of the writer
# ----------------------------------------------------------------------------------------------
def test_interrupted_run_leaves_whole_files_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = syn.render_sar

    def flaky(*args: object, **kwargs: object) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)  # type: ignore[arg-type]

    root = tmp_path / "r"
    monkeypatch.setattr(syn, "render_sar", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_hoss_dataset(root, seed=3, **SMALL)
    monkeypatch.setattr(syn, "render_sar", real)
    partial = list(root.rglob("*.tif"))
    assert partial and not list(root.rglob("*.tmp")) and not (root / "meta.json").exists()
    for p in partial:
        tifffile.imread(p)  # complete, readable
    generate_hoss_dataset(root, seed=3, **SMALL)
    assert _files(root) == _files(generate_hoss_dataset(tmp_path / "clean", seed=3, **SMALL))


def test_refuses_foreign_images_and_cleans_its_own(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    (foreign / "query").mkdir(parents=True)
    (foreign / "query" / "0999_s01c1_RGB.tif").write_bytes(b"not ours")
    with pytest.raises(FileExistsError):
        generate_hoss_dataset(foreign, seed=0, **SMALL)
    root = generate_hoss_dataset(tmp_path / "own", seed=0, **SMALL)
    small = dict(SMALL, num_ids=3, num_distractors=0)
    generate_hoss_dataset(root, seed=0, **small)
    assert _files(root) == _files(generate_hoss_dataset(tmp_path / "fresh", seed=0, **small))


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_hoss_dataset(tmp_path, num_ids=0, progress=False)
    with pytest.raises(ValueError):
        generate_hoss_dataset(tmp_path, sar_per_id=0, progress=False)
    with pytest.raises(ValueError):
        generate_hoss_dataset(tmp_path, train_fraction=1.5, progress=False)
    with pytest.raises(ValueError):
        generate_hoss_dataset(tmp_path, looks=-1, progress=False)
    assert not list(tmp_path.iterdir())  # nothing written


def test_reader_accepts_generated_layout(dataset: Path) -> None:
    hoss = pytest.importorskip("sarbridge.data.hoss")
    splits = hoss.load_hoss(dataset)
    assert len(splits.train) == 12 and len(splits.query) == 6 and len(splits.gallery) == 10
    assert {s.modality for s in splits.query} == {"optical", "sar"}
    assert len(splits.subsets) == 2


def test_pose_replace_changes_framing_only() -> None:
    spec = sample_ship(np.random.default_rng(4))
    pose = sample_pose(spec, np.random.default_rng(4), heading_jitter_deg=0.0)
    wide = replace(pose, margin_x_m=pose.margin_x_m + 6.0)
    a = render_optical(spec, np.random.default_rng(0), gsd_m=GSD_OPT, pose=pose)
    b = render_optical(spec, np.random.default_rng(0), gsd_m=GSD_OPT, pose=wide)
    assert a.shape[0] == b.shape[0] and b.shape[1] == a.shape[1] + 4


def _bright_centroid_m(img: np.ndarray, q: float, gsd: float) -> np.ndarray:
    """(x, y) centroid of the brightest pixels, in metres from the chip centre."""
    x = img.mean(axis=2) if img.ndim == 3 else img
    rows, cols = np.nonzero(x >= np.percentile(x, q))
    h, w = x.shape
    return np.array([(cols.mean() + 0.5 - w / 2) * gsd, (rows.mean() + 0.5 - h / 2) * gsd])


@pytest.mark.parametrize("bow_up", [True, False])
def test_same_pose_aligns_optical_and_sar_in_metres(bow_up: bool) -> None:
    spec = _aft_block_ship()
    spec.superstructure[0] = replace(spec.superstructure[0], v_m=8.0, width_m=10.0)  # off-centre, to starboard
    spec.scatterers = derive_scatterers(spec, np.random.default_rng(0))
    pose = Pose(bow_up=bow_up, jitter_deg=12.0, margin_y_m=6.0, margin_x_m=4.0, offset_y_m=3.0, offset_x_m=-2.0)
    opt = render_optical(spec, np.random.default_rng(1), gsd_m=1.0, pose=pose, sun_elevation_deg=80.0)
    sar = render_sar(spec, np.random.default_rng(2), gsd_m=2.0, looks=None, pose=pose, incidence_deg=90.0)
    c_opt = _bright_centroid_m(opt, 99, 1.0)
    c_sar = _bright_centroid_m(sar, 98, 2.0)
    assert np.abs(c_opt - c_sar).max() < 4.0, (c_opt, c_sar)
    # and both agree with where the pose puts the block: starboard of an upright bow-up ship is +x
    t = math.radians(pose.rotation_deg)
    u, v = -60.0, 8.0
    expected = np.array([u * math.sin(t) + v * math.cos(t) + pose.offset_x_m,
                         -u * math.cos(t) + v * math.sin(t) + pose.offset_y_m])
    assert np.abs(c_opt - expected).max() < 4.0, (c_opt, expected)
