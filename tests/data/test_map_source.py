"""MapSource: a GeoTIFF, a VRT or a folder of tiles read lazily, window by window, as one map."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from sarbridge.core.errors import DataError
from sarbridge.data.georaster import read_georaster, write_georaster
from sarbridge.data.map_source import MapSource, open_map

pytest.importorskip("rasterio")

CRS = "EPSG:32631"
X0, Y0, GSD = 500000.0, 5700000.0, 0.5


def _pixels(height: int = 50, width: int = 70, bands: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 256, size=(bands, height, width)).astype(np.uint8)


def _write(path: Path, arr: np.ndarray, col0: int = 0, row0: int = 0, gsd: float = GSD, crs: str = CRS,
           nodata: float | None = None) -> Path:
    """Write ``arr`` as the tile whose upper-left pixel is ``(col0, row0)`` of the reference grid."""
    import rasterio
    from affine import Affine

    t = Affine(gsd, 0, X0 + col0 * GSD, 0, -gsd, Y0 - row0 * GSD)
    if nodata is None:
        return write_georaster(path, arr, t, crs)
    with rasterio.open(path, "w", driver="GTiff", height=arr.shape[1], width=arr.shape[2], count=arr.shape[0],
                       dtype=arr.dtype, crs=crs, transform=t, nodata=nodata, tiled=True, blockxsize=16,
                       blockysize=16) as dst:
        dst.write(arr)
    return path


def _split(folder: Path, arr: np.ndarray, cols: list[int], rows: list[int], drop: tuple[int, int] | None = None) -> Path:
    """Cut ``arr`` into tiles at the given column / row boundaries (uneven sizes on purpose)."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = arr.shape[1:]
    cs, rs = [0, *cols, w], [0, *rows, h]
    for j in range(len(rs) - 1):
        for i in range(len(cs) - 1):
            if drop == (j, i):
                continue
            _write(folder / f"t_{j}_{i}.tif", arr[:, rs[j]:rs[j + 1], cs[i]:cs[i + 1]], cs[i], rs[j])
    return folder


def _windows(width: int, height: int, n: int = 25, seed: int = 1) -> list[tuple[int, int, int, int]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w, h = int(rng.integers(1, width)), int(rng.integers(1, height))
        out.append((int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h))
    return out


def test_single_file_has_the_georaster_geometry_and_reads_windows(tmp_path: Path) -> None:
    arr = _pixels()
    path = _write(tmp_path / "map.tif", arr)
    src, ref = open_map(path), read_georaster(path)
    assert (src.kind, src.shape, src.dtype, src.crs) == ("file", (3, 50, 70), "uint8", ref.crs)
    assert src.bounds == ref.bounds and src.gsd == ref.gsd and tuple(src.transform) == tuple(ref.transform)
    assert np.allclose(src.to_lonlat([X0], [Y0]), ref.to_lonlat([X0], [Y0]))
    for c0, r0, w, h in _windows(70, 50):
        pixels, valid = src.read_valid(c0, r0, w, h)
        assert valid is None and np.array_equal(pixels, arr[:, r0:r0 + h, c0:c0 + w])
    with pytest.raises(DataError, match="outside map"):
        src.read(60, 0, 20, 5)


def test_tile_folder_reads_as_the_map_it_was_cut_from(tmp_path: Path) -> None:
    arr = _pixels()
    folder = _split(tmp_path / "tiles", arr, cols=[23, 40], rows=[17])
    src, ref = open_map(folder), open_map(_write(tmp_path / "whole.tif", arr))
    assert src.kind == "tiles" and len(src.tiles) == 6
    assert src.shape == ref.shape and src.bounds == ref.bounds and tuple(src.transform) == tuple(ref.transform)
    for c0, r0, w, h in _windows(70, 50):
        pixels, valid = src.read_valid(c0, r0, w, h)
        assert valid is None and np.array_equal(pixels, arr[:, r0:r0 + h, c0:c0 + w]), (c0, r0, w, h)
    # a picklable loader for DataLoader workers: open handles are dropped, reads still work
    clone = pickle.loads(pickle.dumps(src))
    assert np.array_equal(clone.read(5, 5, 30, 20), arr[:, 5:25, 5:35])


def test_gap_between_tiles_is_no_data(tmp_path: Path) -> None:
    arr = _pixels()
    src = open_map(_split(tmp_path / "tiles", arr, cols=[35], rows=[25], drop=(1, 1)))  # lower-right tile missing
    pixels, valid = src.read_valid(30, 20, 10, 10)
    assert valid is not None and valid.sum() == 100 - 25
    assert not valid[5:, 5:].any() and (pixels[:, 5:, 5:] == 0).all()
    assert np.array_equal(pixels[:, :5, :], arr[:, 20:25, 30:40])
    assert not src.read_valid(40, 30, 10, 10)[1].any()


def test_nodata_value_alpha_and_nan_make_pixels_invalid(tmp_path: Path) -> None:
    arr = _pixels()
    arr[:, :10, :] = 0
    src = open_map(_write(tmp_path / "nd.tif", arr, nodata=0))
    assert not src.read_valid(0, 0, 16, 10)[1].any()
    pixels, valid = src.read_valid(0, 5, 8, 10)
    assert valid is not None and not valid[:5].any() and valid[5:].all()
    assert np.array_equal(pixels[:, 5:], arr[:, 10:15, :8])
    rgba = np.concatenate([_pixels(bands=3), np.full((1, 50, 70), 255, np.uint8)])
    rgba[3, :, :20] = 0
    import rasterio
    from rasterio.enums import ColorInterp

    path = _write(tmp_path / "rgba.tif", rgba)
    with rasterio.open(path, "r+") as ds:
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    valid = open_map(path).read_valid(10, 0, 20, 5)[1]
    assert valid is not None and not valid[:, :10].any() and valid[:, 10:].all()
    flt = np.random.default_rng(0).random((1, 20, 20)).astype(np.float32)
    flt[0, 3, 4] = np.nan
    pixels, valid = open_map(_write(tmp_path / "f.tif", flt)).read_valid(0, 0, 20, 20)
    assert valid is not None and valid.sum() == 399 and not valid[3, 4] and pixels[0, 3, 4] == 0


def _vrt(path: Path, source: Path, width: int, height: int) -> Path:
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">{source.name}</SourceFilename><SourceBand>{b}</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>'
        f'<DstRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/></SimpleSource></VRTRasterBand>'
        for b in (1, 2, 3))
    path.write_text(f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>{CRS}</SRS>'
                    f"<GeoTransform>{X0}, {GSD}, 0, {Y0}, 0, -{GSD}</GeoTransform>{bands}</VRTDataset>")
    return path


def test_vrt_reads_its_sources_and_names_a_missing_one(tmp_path: Path) -> None:
    arr = _pixels()
    tif = _write(tmp_path / "a.tif", arr)
    src = open_map(_vrt(tmp_path / "map.vrt", tif, 70, 50))
    assert src.kind == "vrt" and src.shape == (3, 50, 70) and src.crs == CRS
    assert np.array_equal(src.read(10, 20, 30, 15), arr[:, 20:35, 10:40])
    tif.unlink()
    with pytest.raises(DataError, match=r"points at 1 missing file.*a\.tif.*fix: "):
        open_map(tmp_path / "map.vrt")


def test_bad_tile_folders_fail_with_one_line(tmp_path: Path) -> None:
    arr = _pixels(20, 20)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no .tif"):
        open_map(tmp_path / "empty")
    crs = tmp_path / "crs"
    crs.mkdir()
    _write(crs / "a.tif", arr)
    _write(crs / "b.tif", arr, col0=20, crs="EPSG:32632")
    with pytest.raises(DataError, match=r"mixes CRSs: 'b\.tif' is EPSG:32632.*fix: reproject"):
        open_map(crs)
    res = tmp_path / "res"
    res.mkdir()
    _write(res / "a.tif", arr)
    _write(res / "b.tif", arr, col0=20, gsd=1.0)
    with pytest.raises(DataError, match=r"mixes resolutions.*fix: resample"):
        open_map(res)
    off = tmp_path / "off"
    off.mkdir()
    _write(off / "a.tif", arr)
    import rasterio
    from affine import Affine

    with rasterio.open(off / "b.tif", "w", driver="GTiff", height=20, width=20, count=3, dtype="uint8", crs=CRS,
                       transform=Affine(GSD, 0, X0 + 10.1 * GSD, 0, -GSD, Y0)) as dst:
        dst.write(arr)
    with pytest.raises(DataError, match="off the pixel grid"):
        open_map(off)
    with pytest.raises(DataError, match="not found"):
        open_map(tmp_path / "nope.tif")


def test_fingerprint_changes_with_the_pixels_not_the_reading(tmp_path: Path) -> None:
    arr = _pixels()
    path = _write(tmp_path / "map.tif", arr)
    first = open_map(path).fingerprint()
    assert open_map(path).fingerprint() == first
    arr[0, 0, 0] ^= 1
    _write(path, arr)
    assert open_map(path).fingerprint() != first
    assert isinstance(MapSource.open(path), MapSource)
