"""Tests for sarbridge.data.io.read_image: exact round trips, real LZW chips and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from sarbridge.core.errors import DataError, SarbridgeError
from sarbridge.data.io import read_image


def test_rgb_uint8_round_trip_exact(tmp_path, write_rgb):
    path = tmp_path / "chip_RGB.tif"
    written = write_rgb(path, height=13, width=5, seed=3)
    arr = read_image(path)
    assert arr.dtype == np.uint8
    assert arr.shape == (13, 5, 3)
    np.testing.assert_array_equal(arr, written)


def test_sar_float32_round_trip_exact(tmp_path, write_sar):
    path = tmp_path / "chip_SAR.tif"
    written = write_sar(path, height=9, width=11, seed=4)
    arr = read_image(path)
    assert arr.dtype == np.float32
    assert arr.shape == (9, 11)
    np.testing.assert_array_equal(arr, written)


@pytest.mark.parametrize("compression", ["lzw", "zlib"])
def test_compressed_round_trip(tmp_path, write_rgb, write_sar, compression):
    rgb = write_rgb(tmp_path / "a.tif", height=20, width=8, seed=1, compression=compression)
    sar = write_sar(tmp_path / "b.tiff", height=6, width=17, seed=2, compression=compression)
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif"), rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "b.tiff"), sar)


def test_planar_rgb_tiff_is_returned_channels_last(tmp_path):
    chw = np.random.default_rng(0).integers(0, 256, size=(3, 10, 6), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", chw, photometric="rgb", planarconfig="separate")
    arr = read_image(tmp_path / "planar.tif")
    assert arr.shape == (10, 6, 3)
    np.testing.assert_array_equal(arr, np.moveaxis(chw, 0, -1))


def test_png_round_trip(tmp_path):
    rgb = np.random.default_rng(5).integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    np.testing.assert_array_equal(read_image(tmp_path / "x.png"), rgb)


def test_real_chips_match_manifest_sizes(hoss_sample_root, hoss_sample_manifest):
    rows_rgb = [r for r in hoss_sample_manifest if r["modality"] == "RGB"][:3]
    rows_sar = [r for r in hoss_sample_manifest if r["modality"] == "SAR"][:3]
    for row in rows_rgb + rows_sar:
        path = hoss_sample_root.parent / row["file"]
        arr = read_image(path)
        h, w = int(row["height"]), int(row["width"])
        if row["modality"] == "RGB":
            assert arr.shape == (h, w, 3), row["file"]
            assert arr.dtype == np.uint8
        else:
            assert arr.shape == (h, w), row["file"]
            assert arr.dtype == np.float32
            assert np.isfinite(arr).all()


def test_real_rgb_chip_is_lzw_and_decodes_like_pillow(hoss_sample_root, hoss_sample_manifest):
    row = next(r for r in hoss_sample_manifest if r["modality"] == "RGB")
    path = hoss_sample_root.parent / row["file"]
    with tifffile.TiffFile(path) as tf:
        assert tf.pages[0].compression == 5  # LZW: exercises the imagecodecs decoder
    with Image.open(path) as im:
        reference = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(read_image(path), reference)


def _assert_names(exc: pytest.ExceptionInfo, name: str) -> None:
    assert isinstance(exc.value, SarbridgeError)
    assert name in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found") as exc:
        read_image(tmp_path / "nope_0001_SAR.tif")
    _assert_names(exc, "nope_0001_SAR.tif")


def test_directory_is_not_an_image(tmp_path):
    (tmp_path / "folder.tif").mkdir()
    with pytest.raises(DataError) as exc:
        read_image(tmp_path / "folder.tif")
    _assert_names(exc, "folder.tif")


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty_RGB.tif").write_bytes(b"")
    with pytest.raises(DataError, match="empty") as exc:
        read_image(tmp_path / "empty_RGB.tif")
    _assert_names(exc, "empty_RGB.tif")


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_corrupt_bytes(tmp_path, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, size=512, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match="could not be read") as exc:
        read_image(path)
    _assert_names(exc, path.name)


def test_truncated_tiff(tmp_path, write_sar):
    full = tmp_path / "full.tif"
    write_sar(full, height=40, width=30, compression="lzw")
    cut = tmp_path / "cut_SAR.tif"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as exc:
        read_image(cut)
    _assert_names(exc, "cut_SAR.tif")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_tiff(tmp_path, bad):
    arr = np.ones((5, 4), dtype=np.float32)
    arr[2, 1] = bad
    path = tmp_path / "nan_SAR.tif"
    tifffile.imwrite(path, arr)
    with pytest.raises(DataError, match="NaN or infinite") as exc:
        read_image(path)
    _assert_names(exc, "nan_SAR.tif")
