"""Tests for the procedural georeferenced optical / SAR scene generator (small scenes)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sarbridge.core.errors import DataError
from sarbridge.data.georaster import read_georaster
from sarbridge.data.synthetic import (
    SCENE_CLASSES,
    SceneLayout,
    ScenePaths,
    generate_scene,
    generate_scene_layout,
    render_scene_optical,
    render_scene_sar,
)
from sarbridge.data.synthetic.scene_layout import BUILDING, GROUND, VEGETATION, WATER

INC = 35.0
GSD = 0.5


def _box_layout(size: int = 128, height_m: float = 10.0, rows: tuple[int, int] = (40, 80),
                cols: tuple[int, int] = (60, 80)) -> SceneLayout:
    """Flat open ground with one box building."""
    cls = np.full((size, size), GROUND, dtype=np.uint8)
    hgt = np.zeros((size, size), dtype=np.float32)
    ids = np.zeros((size, size), dtype=np.int32)
    if height_m > 0:
        cls[rows[0]:rows[1], cols[0]:cols[1]] = BUILDING
        hgt[rows[0]:rows[1], cols[0]:cols[1]] = height_m
        ids[rows[0]:rows[1], cols[0]:cols[1]] = 1
    none = np.zeros((size, size), dtype=bool)
    return SceneLayout(classes=cls, heights=hgt, building_ids=ids, canopy=np.zeros((size, size), np.float32),
                       decks=none, markings=none.copy(), gsd=GSD)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> ScenePaths:
    out = tmp_path_factory.mktemp("scene")
    return generate_scene(out, height=128, width=160, gsd=GSD, seed=3)


# ---------------------------------------------------------------------------------------------
# files and georeference


def test_files_georeference_and_dtypes(scene: ScenePaths) -> None:
    for p in (scene.optical, scene.sar, scene.heights, scene.meta):
        assert p.is_file()
    with rasterio.open(scene.optical) as src:
        assert src.crs.to_epsg() == 32631
        assert src.count == 3 and src.dtypes[0] == "uint8"
        assert (src.height, src.width) == (128, 160)
        assert tuple(src.transform)[:6] == pytest.approx((GSD, 0.0, 591000.0, 0.0, -GSD, 5751000.0))
    sar = read_georaster(scene.sar)
    assert sar.crs == "EPSG:32631" and sar.bands == 1 and sar.array.dtype == np.float32
    assert tuple(sar.transform)[:6] == pytest.approx((GSD, 0.0, 591000.0, 0.0, -GSD, 5751000.0))
    assert np.isfinite(sar.array).all() and (sar.array >= 0).all() and sar.array.max() > 0
    hgt = read_georaster(scene.heights)
    assert hgt.array.dtype == np.float32 and hgt.array.shape == (1, 128, 160)
    assert 0.0 <= float(hgt.array.min()) and float(hgt.array.max()) <= 60.0
    meta = json.loads(scene.meta.read_text())
    assert meta["seed"] == 3 and meta["crs"] == "EPSG:32631"
    assert meta["origin"] == [591000.0, 5751000.0]
    assert meta["sar"]["look_direction"] == "east" and meta["sar"]["incidence_deg"] == INC
    assert sum(meta["class_counts"].values()) == 128 * 160
    assert set(meta["class_counts"]) == set(SCENE_CLASSES)


def test_sar_resampled_and_offset(tmp_path: Path) -> None:
    p = generate_scene(tmp_path, height=96, width=128, gsd=1.0, seed=1, sar_gsd=2.0, sar_offset_m=(3.0, -2.0),
                       looks=None)
    sar = read_georaster(p.sar)
    assert sar.array.shape == (1, 48, 64)
    assert tuple(sar.transform)[:6] == pytest.approx((2.0, 0.0, 591003.0, 0.0, -2.0, 5750998.0))
    # noise-free resampling preserves the mean intensity of the full-resolution render
    layout = generate_scene_layout(96, 128, 1, gsd=1.0)
    full = render_scene_sar(layout, 1, looks=None)
    assert float(sar.array.mean()) == pytest.approx(float(full.mean()), rel=1e-3)


# ---------------------------------------------------------------------------------------------
# layout and optical


def test_layout_classes_and_determinism() -> None:
    a = generate_scene_layout(128, 128, 5)
    b = generate_scene_layout(128, 128, 5)
    c = generate_scene_layout(128, 128, 6)
    for name in ("classes", "heights", "building_ids", "canopy", "decks", "markings"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.classes, c.classes)
    assert a.classes.dtype == np.uint8 and a.classes.max() < len(SCENE_CLASSES)
    assert ((a.heights > 0) == (a.building_ids > 0)).all()
    assert ((a.building_ids > 0) == (a.classes == BUILDING)).all()
    big = generate_scene_layout(256, 256, 0, gsd=1.0)
    counts = big.class_counts()
    assert all(counts[k] > 0 for k in SCENE_CLASSES)
    assert big.num_buildings >= 10 and 3.0 <= big.heights[big.heights > 0].min() and big.heights.max() <= 60.0


def test_optical_render() -> None:
    layout = generate_scene_layout(128, 128, 2)
    img = render_scene_optical(layout, 2)
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img, render_scene_optical(layout, 2))
    assert not np.array_equal(img, render_scene_optical(layout, 9))
    water = layout.classes == WATER
    if water.any():
        assert img[water][:, 2].mean() > img[water][:, 0].mean()  # blue
    # a box building casts its shadow away from the sun (sun from the south -> shadow north)
    box = render_scene_optical(_box_layout(height_m=10.0), 0, sun_azimuth_deg=180.0, sun_elevation_deg=45.0)
    north = box[25:38, 62:78].astype(float).mean()  # 20 px = 10 m shadow north of rows 40..80
    south = box[85:100, 62:78].astype(float).mean()
    assert north < 0.7 * south


# ---------------------------------------------------------------------------------------------
# SAR radiometry and geometry


def test_sar_class_ordering() -> None:
    layout = generate_scene_layout(256, 256, 0, gsd=1.0)
    sar = render_scene_sar(layout, 0, looks=1)
    assert sar.dtype == np.float32 and np.isfinite(sar).all() and (sar >= 0).all()
    mean = {k: float(sar[layout.classes == k].mean()) for k in (WATER, VEGETATION, BUILDING)}
    assert mean[WATER] < mean[VEGETATION] < mean[BUILDING]


def test_sar_shadow_double_bounce_and_layover() -> None:
    h = 10.0
    sar = render_scene_sar(_box_layout(height_m=h), 0, incidence_deg=INC, looks=None)
    rows = slice(45, 75)
    k = 1.0 / math.tan(math.radians(INC)) / GSD  # layover px per metre
    shadow_px = h * math.tan(math.radians(INC)) / GSD  # 14 px behind the building (east)
    shadow = sar[rows, 82:80 + int(shadow_px) - 1].mean()
    lit_ground = sar[rows, 100:125].mean()
    assert shadow < 0.2 * lit_ground
    # double bounce at the sensor-facing (west) wall foot, column 60
    line = sar[rows, 59:61].max(axis=1).mean()
    around = np.concatenate([sar[rows, 53:57], sar[rows, 63:67]], axis=1).mean()
    assert line > 4.0 * around
    # layover: bright returns displaced toward the sensor (west) by ~h*k/2 on average
    bright = sar[rows] > 0.3
    c_bright = np.nonzero(bright)[1].mean()
    c_foot = 69.5
    assert c_bright < c_foot - 0.3 * h * k
    # the other look directions move the returns the other ways
    west = render_scene_sar(_box_layout(height_m=h), 0, look_direction="west", looks=None)
    assert np.nonzero(west[rows] > 0.3)[1].mean() > c_foot + 0.3 * h * k
    north = render_scene_sar(_box_layout(height_m=h), 0, look_direction="north", looks=None)
    assert np.nonzero(north[:, 62:78] > 0.3)[0].mean() > 59.5 + 0.3 * h * k  # sensor in the south
    south = render_scene_sar(_box_layout(height_m=h), 0, look_direction="south", looks=None)
    assert np.nonzero(south[:, 62:78] > 0.3)[0].mean() < 59.5 - 0.3 * h * k


@pytest.mark.parametrize("looks,lo,hi", [(1, 0.85, 1.15), (4, 0.42, 0.58)])
def test_speckle_statistics(looks: int, lo: float, hi: float) -> None:
    flat = _box_layout(size=192, height_m=0.0)
    sar = render_scene_sar(flat, 4, looks=looks)
    area = sar[16:-16, 16:-16]
    cv = float(area.std() / area.mean())
    assert lo < cv < hi
    clean = render_scene_sar(flat, 4, looks=None)
    assert float(area.mean()) == pytest.approx(float(clean[16:-16, 16:-16].mean()), rel=0.03)


def test_sar_determinism() -> None:
    layout = generate_scene_layout(128, 128, 7)
    a = render_scene_sar(layout, 7, looks=2)
    np.testing.assert_array_equal(a, render_scene_sar(layout, 7, looks=2))
    assert not np.array_equal(a, render_scene_sar(layout, 8, looks=2))


def test_generate_scene_deterministic(tmp_path: Path) -> None:
    p1 = generate_scene(tmp_path / "a", height=64, width=80, seed=11)
    p2 = generate_scene(tmp_path / "b", height=64, width=80, seed=11)
    p3 = generate_scene(tmp_path / "c", height=64, width=80, seed=12)
    for name in ("optical", "sar", "heights"):
        a = read_georaster(getattr(p1, name)).array
        np.testing.assert_array_equal(a, read_georaster(getattr(p2, name)).array)
    assert not np.array_equal(read_georaster(p1.sar).array, read_georaster(p3.sar).array)


# ---------------------------------------------------------------------------------------------
# bad arguments


@pytest.mark.parametrize("kwargs", [
    dict(height=63), dict(width=10), dict(height=100.5), dict(gsd=0.0), dict(gsd=-1.0), dict(gsd=float("nan")),
    dict(seed=-1), dict(sar_gsd=0.0), dict(sar_gsd=100.0), dict(look_direction="up"), dict(incidence_deg=5.0),
    dict(looks=-1), dict(origin=(1.0,)), dict(sar_offset_m=(float("inf"), 0.0)),
])
def test_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    args = dict(height=64, width=64) | kwargs
    with pytest.raises(DataError) as err:
        generate_scene(tmp_path, **args)
    assert "fix:" in str(err.value)
    assert not (tmp_path / "optical.tif").exists()


def test_bad_layout_and_render_arguments() -> None:
    with pytest.raises(DataError):
        generate_scene_layout(32, 128, 0)
    with pytest.raises(DataError):
        generate_scene_layout(128, 128, 0, gsd=0)
    layout = _box_layout()
    with pytest.raises(DataError):
        render_scene_sar(layout, 0, look_direction="sideways")
    with pytest.raises(DataError):
        render_scene_sar(layout, 0, looks=-2)
    with pytest.raises(DataError):
        render_scene_optical(layout, 0, sun_elevation_deg=95.0)
