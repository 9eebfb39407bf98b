"""The map grid: cells, footprints, centres, crops, overlaps and band checks."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from affine import Affine
from pyproj import Transformer

from sarbridge.core.errors import DataError
from sarbridge.data.georaster import GeoRaster, read_georaster
from sarbridge.tasks.geo.grid import (
    GridCell,
    RasterWindow,
    box_overlap_areas,
    image_layout,
    make_grid,
    validate_optical,
    validate_sar,
)

X0, Y0 = 500000.0, 5700000.0


def test_non_overlapping_grid_cells_and_footprints(geo_map):
    grid = make_grid(geo_map, patch_size=16)
    assert (grid.patch_size, grid.stride, len(grid.cells)) == (16, 16, 24)
    assert grid.cells[0] == GridCell(0, 0, 0, (0, 0, 16, 16))
    assert grid.cells[7] == GridCell(7, 1, 1, (16, 16, 32, 32))
    assert grid.cells[-1].box == (80, 48, 96, 64)
    # 16 px of 0.5 m = 8 m; y decreases downwards
    assert grid.footprint(0) == (X0, Y0 - 8.0, X0 + 8.0, Y0)
    assert grid.footprint(7) == (X0 + 8.0, Y0 - 16.0, X0 + 16.0, Y0 - 8.0)
    np.testing.assert_allclose(grid.centers()[7], [X0 + 12.0, Y0 - 12.0])
    assert grid.extent_pixels() == (0, 0, 96, 64)


def test_lonlat_matches_pyproj(geo_map):
    grid = make_grid(geo_map, patch_size=16)
    ll = grid.lonlat()
    assert ll.shape == (24, 2)
    lon, lat = Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True).transform(X0 + 4.0, Y0 - 4.0)
    np.testing.assert_allclose(ll[0], [lon, lat], atol=1e-9)
    assert 2.9 < ll[0, 0] < 3.1 and 51 < ll[0, 1] < 52  # zone 31 central meridian is 3 E


def test_crop_is_the_cell_in_image_layout(geo_map):
    grid = make_grid(geo_map, patch_size=16)
    crop = grid.crop(7)
    assert crop.shape == (16, 16, 3)
    np.testing.assert_array_equal(crop, np.moveaxis(geo_map.array[:, 16:32, 16:32], 0, -1))


def test_overlap_areas_hand_computed(geo_map):
    grid = make_grid(geo_map, patch_size=16)
    # a patch shifted by (+2 m, -3 m) from cell 0: overlaps cell 0 by 6 x 5, cell 1 by 2 x 5,
    # cell 6 (below) by 6 x 3, cell 7 by 2 x 3
    box = (X0 + 2.0, Y0 - 11.0, X0 + 10.0, Y0 - 3.0)
    areas = grid.overlap_areas(box)
    assert areas.shape == (24,)
    expected = np.zeros(24)
    expected[[0, 1, 6, 7]] = [30.0, 10.0, 18.0, 6.0]
    np.testing.assert_allclose(areas, expected)
    assert box_overlap_areas([[0, 0, 1, 1]], (1, 0, 2, 1))[0] == 0.0  # touching is no overlap


def test_overlapping_stride_region_and_partial_cells(geo_map):
    assert len(make_grid(geo_map, patch_size=16, stride=8).cells) == 7 * 11
    g = make_grid(geo_map, patch_size=16, region=(16, 0, 64, 40))
    assert [c.box for c in g.cells] == [(16, 0, 32, 16), (32, 0, 48, 16), (48, 0, 64, 16),
                                        (16, 16, 32, 32), (32, 16, 48, 32), (48, 16, 64, 32)]
    kept = make_grid(geo_map, patch_size=20, drop_partial=False)
    assert len(make_grid(geo_map, patch_size=20).cells) == 3 * 4
    assert len(kept.cells) == 4 * 5
    assert kept.cells[-1].box == (80, 60, 96, 64)
    assert kept.crop(len(kept.cells) - 1).shape == (4, 16, 3)


@pytest.mark.parametrize("kwargs, words", [
    ({"patch_size": 80}, "smaller than one 80x80 patch"),
    ({"patch_size": 0}, "patch_size"),
    ({"patch_size": 2.5}, "patch_size"),
    ({"patch_size": 16, "stride": -1}, "stride"),
    ({"patch_size": 16, "region": (200, 200, 300, 300)}, "outside"),
])
def test_make_grid_errors(geo_map, kwargs, words):
    with pytest.raises(DataError, match="map.tif") as err:
        make_grid(geo_map, **kwargs)
    assert words in str(err.value)


def test_rotated_map_is_rejected(geo_map):
    rotated = GeoRaster(geo_map.array, Affine(0.5, 0.1, X0, 0.1, -0.5, Y0), "EPSG:32631")
    with pytest.raises(DataError, match="rotated"):
        make_grid(rotated, patch_size=16)


def test_band_checks(geo_write_raster):
    validate_optical(geo_write_raster("rgba.tif", bands=4))
    validate_optical(geo_write_raster("grey.tif", bands=1))
    validate_sar(geo_write_raster("vvvh.tif", bands=2))
    with pytest.raises(DataError, match=r"two\.tif' has 2 bands"):
        validate_optical(geo_write_raster("two.tif", bands=2))
    with pytest.raises(DataError, match=r"three\.tif' has 3 bands"):
        validate_sar(geo_write_raster("three.tif", bands=3))


def test_image_layout_and_raster_window(geo_write_raster):
    rgba = geo_write_raster("rgba.tif", bands=4)
    win = RasterWindow.of(rgba, (8, 4, 24, 20), "optical")
    assert win.path is not None and win.array is None
    np.testing.assert_array_equal(win(), np.moveaxis(rgba.array[:3, 4:20, 8:24], 0, -1))
    pol = np.stack([np.full((2, 3), 1.0), np.full((2, 3), 3.0)]).astype(np.float32)
    out = image_layout(pol, "sar")
    assert out.shape == (2, 3) and out.dtype == np.float32 and np.all(out == 2.0)
    assert image_layout(pol[:1], "sar").shape == (2, 3)
    mem = GeoRaster(rgba.array.copy(), rgba.transform, rgba.crs)  # no file: the window holds the array
    w2 = RasterWindow.of(mem, (8, 4, 24, 20), "optical")
    assert w2.path is None
    np.testing.assert_array_equal(w2(), win())


def test_maps_without_georeference_are_rejected(tmp_path):
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    with pytest.raises(DataError, match="plain.tif' has no geotransform"):
        read_georaster(plain)
    (tmp_path / "plain.tfw").write_text("0.5\n0\n0\n-0.5\n500000.25\n5699999.75\n")
    with pytest.raises(DataError, match="plain.tif' has no CRS"):
        read_georaster(plain)


@pytest.mark.parametrize("kwargs", [{"patch_size": 16}, {"patch_size": 16, "stride": 6},
                                    {"patch_size": 20, "drop_partial": False}, {"patch_size": 10, "stride": 25}])
def test_cells_in_matches_a_full_scan(geo_map, kwargs):
    grid = make_grid(geo_map, **kwargs)
    boxes = np.array([c.box for c in grid.cells])
    rng = np.random.default_rng(0)
    for _ in range(50):
        x0, y0 = rng.integers(-20, 100), rng.integers(-20, 70)
        box = (x0, y0, x0 + rng.integers(1, 30), y0 + rng.integers(1, 30))
        expected = np.flatnonzero(box_overlap_areas(boxes, box) > 0)
        np.testing.assert_array_equal(grid.cells_in(box), expected)
