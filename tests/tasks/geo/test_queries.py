"""CMPC localisation data from a map and SAR rasters: settings, splits, targets and errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from sarbridge.core.errors import DataError
from sarbridge.data.georaster import GeoRaster, read_georaster, write_georaster
from sarbridge.tasks.geo.grid import make_grid
from sarbridge.tasks.geo.queries import build_map_localisation, locate_target, query_footprint_check

X0, Y0 = 500000.0, 5700000.0


# --- locate_target -----------------------------------------------------------------------------

def test_locate_target_hand_computed():
    refs = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 10, 20], [10, 10, 20, 20], [30, 30, 40, 40]], float)
    # query (4, 3)-(14, 13): overlaps 6x7=42, 4x7=28, 6x3=18, 4x3=12, none
    assert locate_target(refs, (4, 3, 14, 13)) == (0, (1, 2, 3))
    assert locate_target(refs, (4, 3, 14, 13), min_overlap_area=15) == (0, (1, 2))
    # (7, 1)-(17, 11): 3x9=27, 7x9=63, 3x1=3, 7x1=7
    assert locate_target(refs, (7, 1, 17, 11), min_overlap_area=5) == (1, (0, 3))
    # exact tie between 0 and 1 goes to the lower index; nothing overlapping: nearest centre
    assert locate_target(refs, (5, 0, 15, 10)) == (0, (1,))
    assert locate_target(refs, (50, 50, 60, 60)) == (4, ())
    assert locate_target(refs, (20, 0, 30, 10)) == (1, ())  # (20,0) touches 1 and 3: nearest centre is 1


# --- aligned -----------------------------------------------------------------------------------

def test_aligned_queries_target_their_cell(geo_map, geo_sar):
    data = build_map_localisation(geo_map, geo_sar, patch_size=16)
    assert len(data.references) == 24 and len(data.queries) == 24
    assert data.crs == "EPSG:32631"
    assert data.meta["patch_size"] == 16 and data.meta["stride"] == 16 and data.meta["gsd"] == 0.5
    assert data.meta["setting"] == "aligned" and data.meta["split"] == "same-area"
    for q in data.queries:
        ref = data.references[q.target]
        assert q.footprint == ref.footprint and (q.x, q.y) == (ref.x, ref.y) and q.near == ()
        assert q.setting == "aligned" and abs(q.lon - ref.lon) < 1e-12
    assert {r.region for r in data.references} == {""}
    assert data.references[7].source == "map.tif[r1,c1]"
    # 8 m footprints: 16 map pixels of 0.5 m, 8 SAR pixels of 1 m
    ref_img, q = data.references[7].load(), next(q for q in data.queries if q.target == 7)
    assert ref_img.shape == (16, 16, 3)
    np.testing.assert_array_equal(q.load(), geo_sar.array[0, 8:16, 8:16])
    assert q.source == "sar.tif[x8:16,y8:16]"
    # loaders are picklable
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(data.references[7].load))(), ref_img)
    # same-area split: 24 -> 14 train, 3 val, 7 test, seeded
    assert [len(data.split(s)) for s in ("train", "val", "test")] == [14, 3, 7]
    again = build_map_localisation(geo_map, geo_sar, patch_size=16)
    assert [q.split for q in again.queries] == [q.split for q in data.queries]


def test_aligned_partial_cover_nodata_and_finer_sar(geo_map, tmp_path):
    # SAR of 0.25 m pixels covering x 4..28 m, y -24..0 m (relative to the map corner)
    arr = np.full((1, 96, 96), 5.0, np.float32)
    arr[0, 32:64, 16:48] = 0.0  # no data over map cell (r1, c1) = x 8..16, y -16..-8
    arr[0, 0, 60] = 0.0  # one no-data pixel in cell (r0, c2): 1/1024 is tolerated
    sar = read_georaster(write_georaster(tmp_path / "fine.tif", arr, (0.25, 0, X0 + 4.0, 0, -0.25, Y0), "EPSG:32631"))
    data = build_map_localisation(geo_map, sar, patch_size=16)
    # fully covered cells: columns 1-2 (x 8..24), rows 0-2; cell 7 (r1, c1) is all no-data
    assert sorted(q.target for q in data.queries) == [1, 2, 8, 13, 14]
    q = next(q for q in data.queries if q.target == 8)
    assert q.load().shape == (32, 32)


def test_two_band_sar_and_in_memory_rasters(geo_map, geo_write_raster):
    sar = geo_write_raster("vvvh.tif", bands=2, height=32, width=48, gsd=1.0, dtype="float32")
    mem_map = GeoRaster(geo_map.array.copy(), geo_map.transform, geo_map.crs)
    mem_sar = GeoRaster(sar.array.copy(), sar.transform, sar.crs)
    data = build_map_localisation(mem_map, [mem_sar], patch_size=16)
    q = data.queries[0]
    c0, r0 = int(round(q.footprint[0] - X0)), int(round(Y0 - q.footprint[3]))
    img = pickle.loads(pickle.dumps(q.load))()
    np.testing.assert_allclose(img, sar.array[:, r0:r0 + 8, c0:c0 + 8].mean(0))
    assert data.references[0].source == "map[r0,c0]" and data.meta["map"] is None


# --- arbitrary ---------------------------------------------------------------------------------

def _brute_overlaps(fp, cells):
    out = []
    for c in cells:
        w = max(0.0, min(fp[2], c[2]) - max(fp[0], c[0]))
        h = max(0.0, min(fp[3], c[3]) - max(fp[1], c[1]))
        out.append(w * h)
    return out


def test_arbitrary_targets_and_near_misses_by_hand(geo_map, geo_sar):
    data = build_map_localisation(geo_map, geo_sar, patch_size=16, setting="arbitrary", count=40, seed=3)
    assert len(data.queries) == 40
    cells = [r.footprint for r in data.references]
    offsets = set()
    for q in data.queries:
        x0, y0, x1, y1 = q.footprint
        assert (x1 - x0, y1 - y0) == (8.0, 8.0) and (q.x, q.y) == ((x0 + x1) / 2, (y0 + y1) / 2)
        assert X0 <= x0 and x1 <= X0 + 48 and Y0 - 32 <= y0 and y1 <= Y0
        # offset from the target cell in whole map pixels (0.5 m) -> overlap (16-|dx|)(16-|dy|)/4
        t = data.references[q.target].footprint
        dx, dy = (x0 - t[0]) / 0.5, (y0 - t[1]) / 0.5
        assert dx == int(dx) and dy == int(dy) and abs(dx) <= 8 and abs(dy) <= 8
        ov = _brute_overlaps(q.footprint, cells)
        assert ov[q.target] == (16 - abs(dx)) * (16 - abs(dy)) / 4 == max(ov)
        near = [i for i in np.argsort([-v for v in ov], kind="stable") if i != q.target and ov[i] >= 0.01 * 64]
        assert list(q.near) == near
        offsets.add((dx, dy))
        assert q.load().shape == (8, 8)
    assert len(offsets) > 10  # really arbitrary offsets
    again = build_map_localisation(geo_map, geo_sar, patch_size=16, setting="arbitrary", count=40, seed=3)
    assert [q.footprint for q in again.queries] == [q.footprint for q in data.queries]


def test_arbitrary_default_count_and_min_overlap(geo_map, geo_sar):
    data = build_map_localisation(geo_map, geo_sar, patch_size=16, setting="arbitrary", min_overlap=0.5, seed=1)
    assert len(data.queries) == 24
    for q in data.queries:
        ov = _brute_overlaps(q.footprint, [r.footprint for r in data.references])
        assert all(ov[i] >= 32.0 for i in q.near)


# --- cross-area --------------------------------------------------------------------------------

@pytest.mark.parametrize("setting", ["aligned", "arbitrary"])
def test_cross_area_split_along_x(geo_map, geo_sar, setting):
    data = build_map_localisation(geo_map, geo_sar, patch_size=16, setting=setting, count=60, split="cross-area", seed=2)
    # 0.7 of 96 px = 67.2 -> nearest column boundary 64 px = 32 m
    assert data.meta["cut_pixel"] == 64 and data.meta["cut"] == X0 + 32.0
    cut = X0 + 32.0
    test_refs = [r.index for r in data.references if r.region == "test"]
    assert len(test_refs) == 8 and all(data.references[i].footprint[0] >= cut for i in test_refs)
    assert all(r.footprint[2] <= cut for r in data.references if r.region == "train")
    splits = {s: data.split(s) for s in ("train", "val", "test")}
    assert splits["train"] and splits["test"]
    for q in data.queries:
        x0, _, x1, _ = q.footprint
        assert x1 <= cut or x0 >= cut  # never straddling
        assert (x0 >= cut) == (q.split == "test")
    test = data.with_references(test_refs)
    assert len(test.split("test")) == len(splits["test"]) and not test.split("train")
    for q in test.queries:
        assert test.references[q.target].region == "test"
    if setting == "aligned":  # 16 train-area queries: 0.6 : 0.1 of them -> 14 train, 2 val
        assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (14, 2, 8)


def test_cross_area_along_y_and_border_cells(geo_map, geo_sar):
    data = build_map_localisation(geo_map, geo_sar, patch_size=16, split="cross-area", cross_axis="y")
    assert data.meta["cut_pixel"] == 48  # 0.7 * 64 = 44.8 -> 48
    assert [r.region for r in data.references].count("test") == 6
    over = build_map_localisation(geo_map, geo_sar, patch_size=16, stride=8, split="cross-area")
    assert "border" in {r.region for r in over.references}
    assert all(r.footprint[0] >= X0 + 32.0 for r in over.references if r.region == "test")


# --- errors ------------------------------------------------------------------------------------

def test_sar_in_another_crs(geo_map, geo_write_raster):
    sar = geo_write_raster("utm32.tif", bands=1, height=32, width=48, gsd=1.0, crs="EPSG:32632")
    with pytest.raises(DataError) as err:
        build_map_localisation(geo_map, sar, patch_size=16)
    msg = str(err.value)
    assert "utm32.tif" in msg and "EPSG:32632" in msg and "EPSG:32631" in msg and "gdalwarp -t_srs EPSG:32631" in msg


def test_sar_outside_map_and_bad_arguments(geo_map, geo_sar, geo_write_raster):
    far = geo_write_raster("far.tif", bands=1, height=8, width=8, gsd=1.0, origin=(600000.0, 5700000.0))
    with pytest.raises(DataError, match="far.tif.*does not intersect the map"):
        build_map_localisation(geo_map, [geo_sar, far], patch_size=16)
    with pytest.raises(DataError, match="smaller than one 100x100 patch"):
        build_map_localisation(geo_map, geo_sar, patch_size=100)
    with pytest.raises(DataError, match="has 3 bands"):
        build_map_localisation(geo_map, geo_map, patch_size=16)
    with pytest.raises(DataError, match="unknown query setting"):
        build_map_localisation(geo_map, geo_sar, patch_size=16, setting="random")
    with pytest.raises(DataError, match="unknown split"):
        build_map_localisation(geo_map, geo_sar, patch_size=16, split="other")
    with pytest.raises(DataError, match="fractions"):
        build_map_localisation(geo_map, geo_sar, patch_size=16, fractions=(0.5, -0.1, 0.6))
    with pytest.raises(DataError, match="test area empty"):
        build_map_localisation(geo_map, geo_sar, patch_size=16, split="cross-area", fractions=(1, 0, 0))
    with pytest.raises(DataError, match="one grid column"):
        build_map_localisation(geo_map, geo_sar, patch_size=60, split="cross-area")
    tiny = geo_write_raster("tiny.tif", bands=1, height=4, width=4, gsd=1.0)  # 4 m: less than an 8 m patch
    with pytest.raises(DataError, match="no SAR raster covers a full"):
        build_map_localisation(geo_map, tiny, patch_size=16, setting="arbitrary")
    with pytest.raises(DataError, match="no usable SAR query"):
        build_map_localisation(geo_map, tiny, patch_size=16)


def test_query_footprint_check(geo_map):
    assert query_footprint_check(geo_map, (X0 + 1, Y0 - 9, X0 + 9, Y0 - 1)) == 1.0
    assert query_footprint_check(geo_map, (X0 - 4, Y0 - 8, X0 + 4, Y0)) == 0.5
    with pytest.raises(DataError, match=r"query footprint .* lies outside the map '.*map.tif'"):
        query_footprint_check(geo_map, (X0 - 100, Y0, X0 - 90, Y0 + 10))
    with pytest.raises(DataError, match="empty"):
        query_footprint_check(geo_map, (X0 + 5, Y0 - 5, X0 + 5, Y0))
    assert len(make_grid(geo_map, patch_size=16).cells) == 24
