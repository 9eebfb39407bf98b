"""Fixtures of the geo tests: tiny generated GeoTIFFs with a CRS (names prefixed ``geo_``).

The standard map is 3 x 64 x 96 uint8 pixels of 0.5 m in EPSG:32631 with its upper-left corner at
``GEO_ORIGIN``; with 16-pixel patches it is a 4 x 6 grid of 8 m cells.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sarbridge.data.georaster import GeoRaster, read_georaster, write_georaster

GEO_CRS = "EPSG:32631"
GEO_ORIGIN = (500000.0, 5700000.0)


def geo_write(path: Path, bands: int = 3, height: int = 64, width: int = 96, gsd: float = 0.5,
              origin: tuple[float, float] = GEO_ORIGIN, crs: str = GEO_CRS, dtype: str = "uint8",
              seed: int = 0) -> Path:
    """Write random positive pixels ``(bands, height, width)`` as a north-up GeoTIFF."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        arr = (rng.random((bands, height, width)) + 0.1).astype(dtype)
    else:
        arr = rng.integers(1, 256, size=(bands, height, width)).astype(dtype)
    transform = (gsd, 0.0, origin[0], 0.0, -gsd, origin[1])
    return write_georaster(path, arr, transform, crs)


@pytest.fixture
def geo_write_raster(tmp_path: Path) -> Callable[..., GeoRaster]:
    """``geo_write_raster(name, **geo_write_kwargs)`` writes ``tmp_path/name`` and reads it back."""

    def make(name: str, **kwargs) -> GeoRaster:
        return read_georaster(geo_write(tmp_path / name, **kwargs))

    return make


@pytest.fixture
def geo_map(geo_write_raster: Callable[..., GeoRaster]) -> GeoRaster:
    """The standard RGB map (64 x 96 pixels of 0.5 m, EPSG:32631)."""
    return geo_write_raster("map.tif")


@pytest.fixture
def geo_sar(geo_write_raster: Callable[..., GeoRaster]) -> GeoRaster:
    """A float32 single-band SAR raster covering the standard map at 1 m pixels (32 x 48)."""
    return geo_write_raster("sar.tif", bands=1, height=32, width=48, gsd=1.0, dtype="float32", seed=1)


def geo_write_scene(folder: Path, size: int = 192, gsd: float = 0.5, seed: int = 0) -> Path:
    """A learnable optical/SAR pair: a smooth random RGB map and a SAR rendering of its luminance
    with multiplicative speckle (``folder/optical.tif``, ``folder/sar.tif``; EPSG:32631)."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((3, size // 16 + 2, size // 16 + 2))
    rgb = np.stack([np.kron(c, np.ones((16, 16)))[:size, :size] for c in coarse])
    rgb = (rgb * 200 + rng.integers(0, 40, size=rgb.shape)).clip(0, 255).astype(np.uint8)
    lum = rgb.astype(np.float32).mean(axis=0) / 255.0
    sar = (lum ** 2 * rng.gamma(4.0, 0.25, size=lum.shape)).astype(np.float32)[None]
    transform = (gsd, 0.0, GEO_ORIGIN[0], 0.0, -gsd, GEO_ORIGIN[1])
    folder.mkdir(parents=True, exist_ok=True)
    write_georaster(folder / "optical.tif", rgb, transform, GEO_CRS)
    write_georaster(folder / "sar.tif", sar, transform, GEO_CRS)
    return folder


@pytest.fixture
def geo_scene(tmp_path: Path) -> Path:
    """A 192 x 192 px learnable scene folder (``optical.tif`` + ``sar.tif``)."""
    return geo_write_scene(tmp_path / "scene")
