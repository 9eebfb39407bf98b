"""Georeferenced rasters: a GeoTIFF (or an image plus a world file) with its CRS.

A :class:`GeoRaster` holds the pixels ``(C, H, W)``, the affine pixel -> map transform
(rasterio's :class:`affine.Affine`: ``x = a*col + b*row + c``, ``y = d*col + e*row + f`` for the
pixel *corner* ``(col, row)``; the centre of pixel ``(i, j)`` is ``(i + 0.5, j + 0.5)``) and the
coordinate reference system. Map coordinates are in the CRS's units (metres for projected CRSs
such as UTM); :meth:`GeoRaster.to_lonlat` converts them to WGS84 through pyproj.

Every failure is a :class:`~sarbridge.core.errors.DataError` naming the file and the fix.
rasterio, pyproj and affine are the optional extra ``geo`` (:mod:`sarbridge.core.optional`),
imported on first use: without them this module imports, and reading or writing a raster ends
with one line naming the extra.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sarbridge.core.errors import DataError
from sarbridge.core.optional import require
from sarbridge.core.utils import atomic_write

if TYPE_CHECKING:
    from affine import Affine

WORLD_FILE_SUFFIXES = {".png": (".pgw", ".pngw", ".wld"), ".jpg": (".jgw", ".jpgw", ".wld"),
                       ".jpeg": (".jgw", ".jpegw", ".wld"), ".tif": (".tfw", ".tifw", ".wld"),
                       ".tiff": (".tfw", ".tiffw", ".wld"), ".bmp": (".bpw", ".wld")}


def affine_class() -> type[Affine]:
    """``affine.Affine`` (extra ``geo``), the type of :attr:`GeoRaster.transform`."""
    return require("affine", "geo").Affine


def as_affine(transform: Any) -> Affine:
    """An ``Affine`` from an ``Affine`` or its first six numbers ``a, b, c, d, e, f``."""
    cls = affine_class()
    return transform if isinstance(transform, cls) else cls(*tuple(transform)[:6])


def _crs_string(crs: Any) -> str:
    """A CRS as ``EPSG:n`` when it has a code, else as WKT."""
    c = require("pyproj", "geo").CRS.from_user_input(crs)
    code = c.to_epsg()
    return f"EPSG:{code}" if code else c.to_wkt()


@dataclass
class GeoRaster:
    """Pixels with a georeference.

    Attributes:
        array: ``(C, H, W)`` pixels in the file's dtype.
        transform: affine pixel-corner -> map transform.
        crs: ``EPSG:n`` or WKT.
        path: the file read, if any (for messages).
    """

    array: np.ndarray
    transform: Affine
    crs: str
    path: Path | None = None
    _to_lonlat: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.array.ndim == 2:
            self.array = self.array[None]
        if self.array.ndim != 3:
            raise DataError(f"raster {self.name} has shape {self.array.shape}", "pass (C, H, W) or (H, W) pixels")
        self.transform = as_affine(self.transform)
        if self.transform.is_degenerate:
            raise DataError(f"raster {self.name} has a degenerate geotransform", "fix the file's georeference")

    @property
    def name(self) -> str:
        return f"'{self.path}'" if self.path else "(in memory)"

    @property
    def bands(self) -> int:
        return int(self.array.shape[0])

    @property
    def height(self) -> int:
        return int(self.array.shape[1])

    @property
    def width(self) -> int:
        return int(self.array.shape[2])

    @property
    def gsd(self) -> tuple[float, float]:
        """Pixel size ``(x, y)`` in map units (for north-up rasters, the ground sampling distance)."""
        t = self.transform
        return float(np.hypot(t.a, t.d)), float(np.hypot(t.b, t.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in map coordinates."""
        xs, ys = self.pixel_to_map(np.array([0, self.width, 0, self.width]), np.array([0, 0, self.height, self.height]))
        return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())

    def pixel_to_map(self, cols: Any, rows: Any) -> tuple[np.ndarray, np.ndarray]:
        """Map coordinates of pixel positions (corners at integers; add 0.5 for centres)."""
        t = self.transform
        c, r = np.asarray(cols, dtype=np.float64), np.asarray(rows, dtype=np.float64)
        return t.a * c + t.b * r + t.c, t.d * c + t.e * r + t.f

    def map_to_pixel(self, xs: Any, ys: Any) -> tuple[np.ndarray, np.ndarray]:
        """Fractional pixel positions ``(col, row)`` of map coordinates."""
        inv = ~self.transform
        x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
        return inv.a * x + inv.b * y + inv.c, inv.d * x + inv.e * y + inv.f

    def to_lonlat(self, xs: Any, ys: Any) -> tuple[np.ndarray, np.ndarray]:
        """WGS84 longitude and latitude (degrees) of map coordinates."""
        if self._to_lonlat is None:
            transformer = require("pyproj", "geo").Transformer
            self._to_lonlat = transformer.from_crs(self.crs, "EPSG:4326", always_xy=True)
        lon, lat = self._to_lonlat.transform(np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
        return np.asarray(lon), np.asarray(lat)

    def window(self, col0: int, row0: int, width: int, height: int) -> np.ndarray:
        """Pixels ``(C, height, width)`` from corner ``(col0, row0)``; must lie inside the raster."""
        if col0 < 0 or row0 < 0 or col0 + width > self.width or row0 + height > self.height:
            raise DataError(
                f"window ({col0}, {row0}, {width}x{height}) lies outside raster {self.name} ({self.width}x{self.height})",
                "choose a window inside the image",
            )
        return self.array[:, row0:row0 + height, col0:col0 + width]


def _read_world_file(path: Path) -> Affine | None:
    for suffix in WORLD_FILE_SUFFIXES.get(path.suffix.lower(), (".wld",)):
        wf = path.with_suffix(suffix)
        if wf.is_file():
            try:
                a, d, b, e, c, f = (float(v) for v in wf.read_text().split()[:6])
            except ValueError:
                raise DataError(f"world file '{wf}' does not hold six numbers", "fix or remove it") from None
            # world files give the centre of the upper-left pixel; Affine wants its corner
            return affine_class()(a, b, c - 0.5 * a - 0.5 * b, d, e, f - 0.5 * d - 0.5 * e)
    return None


def read_georaster(path: str | Path, transform: Any = None, crs: Any = None) -> GeoRaster:
    """Read a georeferenced raster.

    Args:
        path: a GeoTIFF with a CRS, or any image with a world file (``.pgw``/``.tfw``/``.wld``)
            or an explicit ``transform``, plus a CRS from the file, a ``.prj`` beside it or ``crs``.
        transform: affine transform (6 numbers ``a, b, c, d, e, f``) overriding the file's.
        crs: CRS (``EPSG:32631``, WKT ...) overriding the file's.

    Returns:
        The :class:`GeoRaster`.

    Raises:
        DataError: missing/corrupt file, no CRS, no geotransform, NaN pixels.
    """
    rasterio = require("rasterio", "geo")
    errors = require("rasterio.errors", "geo")
    require("pyproj", "geo")  # up front: the CRS check below reads any failure as an unknown CRS
    p = Path(path)
    if not p.is_file():
        raise DataError(f"map '{p}' not found", "check the path")
    if p.stat().st_size == 0:
        raise DataError(f"map '{p}' is empty (0 bytes)", "replace the file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", errors.NotGeoreferencedWarning)
            with rasterio.open(p) as src:
                array = src.read()
                file_crs = src.crs
                file_transform = src.transform if not src.transform.is_identity else None
    except errors.RasterioIOError as exc:
        raise DataError(f"map '{p}' could not be read ({str(exc)[:80]})", "the file is corrupt or not a raster") from None
    if transform is None:
        transform = file_transform or _read_world_file(p)
    if transform is None:
        raise DataError(f"map '{p}' has no geotransform",
                        "use a GeoTIFF, add a world file (.tfw/.pgw/.wld) or pass the transform")
    if crs is None:
        if file_crs is not None:
            crs = file_crs.to_wkt()
        elif p.with_suffix(".prj").is_file():
            crs = p.with_suffix(".prj").read_text()
    if crs is None or (isinstance(crs, str) and not crs.strip()):
        raise DataError(f"map '{p}' has no CRS", "use a GeoTIFF with a CRS, add a .prj file or pass crs (e.g. EPSG:32631)")
    try:
        crs_s = _crs_string(crs)
    except Exception:
        raise DataError(f"map '{p}' has an unknown CRS '{str(crs)[:60]}'", "give an EPSG code or WKT") from None
    if array.size == 0:
        raise DataError(f"map '{p}' has no pixels", "replace the file")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise DataError(f"map '{p}' holds NaN or infinite pixels", "fill or mask them before use")
    return GeoRaster(array, as_affine(transform), crs_s, p)


def write_georaster(path: str | Path, array: np.ndarray, transform: Any, crs: Any, compress: str = "deflate") -> Path:
    """Write ``(C, H, W)`` or ``(H, W)`` pixels as a GeoTIFF with a CRS, atomically.

    Args:
        path: destination ``.tif``.
        array: pixels (any dtype rasterio supports: uint8, uint16, float32 ...).
        transform: affine transform or 6 numbers.
        crs: ``EPSG:n`` or WKT.
        compress: GeoTIFF compression.

    Returns:
        The path written.
    """
    rasterio = require("rasterio", "geo")
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DataError(f"cannot write {arr.shape} pixels to '{path}'", "pass (C, H, W) or (H, W)")
    t = as_affine(transform)
    crs_s = _crs_string(crs)

    def _write(tmp: Path) -> None:
        with rasterio.open(tmp, "w", driver="GTiff", height=arr.shape[1], width=arr.shape[2], count=arr.shape[0],
                           dtype=arr.dtype, crs=crs_s, transform=t, compress=compress) as dst:
            dst.write(arr)

    out = Path(path)
    atomic_write(out, _write)
    return out
