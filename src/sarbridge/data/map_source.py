"""A georeferenced map opened lazily: one GeoTIFF / COG, a VRT, or a folder of tiles read as one map.

:class:`MapSource` holds only the map's geometry (size, bands, affine transform, CRS, no-data rule)
and reads pixel windows on demand (rasterio windowed reads), so what a caller holds in memory is one
window, never the map. It offers the geometry API of :class:`~sarbridge.data.georaster.GeoRaster`
(``width``, ``height``, ``bands``, ``transform``, ``crs``, ``gsd``, ``bounds``, ``pixel_to_map``,
``map_to_pixel``, ``to_lonlat``, ``window``), so a grid can be laid over it without reading a pixel.

Sources:

* a single raster (GeoTIFF, Cloud-Optimised GeoTIFF, any GDAL raster; an image with a world file and a
  ``.prj`` as in :func:`~sarbridge.data.georaster.read_georaster`);
* a ``.vrt`` (GDAL virtual mosaic): every source file it names must exist;
* a folder of GeoTIFF tiles (``*.tif`` / ``*.tiff``, sorted by name) in one CRS, at one resolution,
  with one band count and dtype, north-up and on one pixel grid. The map is their bounding box; pixels
  no tile covers are no-data; where tiles overlap, the later tile (by name) wins.

Validity (:meth:`MapSource.read_valid`): a pixel is valid unless GDAL's mask says otherwise (the
file's no-data value, an alpha band or an internal mask), it lies in a gap between tiles, or it is
NaN / infinite (float maps). Invalid pixels are returned as 0.

Open datasets are cached per process and never pickled, so a :class:`MapSource` can be handed to
DataLoader workers. Every failure is a :class:`~sarbridge.core.errors.DataError` naming the file.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import xml.etree.ElementTree as ET
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sarbridge.core.errors import DataError
from sarbridge.core.optional import require
from sarbridge.data.georaster import _crs_string, _read_world_file, as_affine

if TYPE_CHECKING:
    from affine import Affine

TILE_SUFFIXES = (".tif", ".tiff")
_MAX_OPEN = 16
_HEAD_BYTES = 1 << 16
GDAL_CACHE_MB = 128


@dataclass(frozen=True)
class MapTile:
    """One file of a :class:`MapSource` and where it sits in the map's pixel grid.

    Attributes:
        path: the file.
        col0, row0: its upper-left pixel in the map.
        width, height: its size in pixels.
    """

    path: str
    col0: int
    row0: int
    width: int
    height: int


def _limit_block_cache() -> None:
    """Cap GDAL's block cache at ``GDAL_CACHE_MB`` unless the user set ``GDAL_CACHEMAX``.

    GDAL's default (5 % of RAM) keeps every decompressed block read, so a streamed pass over a big
    map would grow to that size; windows are read once, so a small cache loses nothing.
    """
    if "GDAL_CACHEMAX" not in os.environ:
        require("rasterio.env", "geo").set_gdal_config("GDAL_CACHEMAX", GDAL_CACHE_MB)


def _open(path: str | Path) -> Any:
    rasterio = require("rasterio", "geo")
    _limit_block_cache()
    errors = require("rasterio.errors", "geo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", errors.NotGeoreferencedWarning)
        try:
            return rasterio.open(path)
        except errors.RasterioIOError as exc:
            raise DataError(f"map '{path}' could not be read ({str(exc)[:80]})",
                            "the file is corrupt, missing or not a raster") from None


def _all_valid(ds: Any) -> bool:
    """True when GDAL says every pixel of every band is valid (no no-data, alpha or mask)."""
    flags = require("rasterio.enums", "geo").MaskFlags
    return all(f == [flags.all_valid] for f in ds.mask_flag_enums)


def _vrt_sources(path: Path) -> list[Path]:
    """Files a VRT names (``SourceFilename``), resolved against the VRT's folder when relative."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DataError(f"VRT '{path}' is not valid XML ({exc})", "rebuild it, e.g. gdalbuildvrt map.vrt tiles/*.tif") from None
    out = []
    for el in root.iter("SourceFilename"):
        name = (el.text or "").strip()
        if not name or name.startswith("/vsi"):
            continue
        p = Path(name)
        if el.get("relativeToVRT", "0") == "1" or not p.is_absolute():
            p = path.parent / p
        out.append(p)
    return out


def _file_head(path: str) -> list[Any]:
    """``[name, size, sha256 of the first 64 KiB]``: a cheap identity of a (possibly huge) file."""
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(_HEAD_BYTES)).hexdigest()[:16]
    return [os.path.basename(path), os.path.getsize(path), head]


class MapSource:
    """A map read window by window; build it with :meth:`open`.

    Attributes:
        path: the file or folder opened.
        kind: ``file``, ``vrt`` or ``tiles``.
        width, height, bands: map size in pixels and band count.
        dtype: pixel dtype name.
        transform: affine pixel-corner -> map transform (north-up for tile folders).
        crs: ``EPSG:n`` or WKT.
        nodata: the files' no-data value (None when they declare none).
        tiles: the files and where they sit (one entry for a single file or a VRT).
    """

    def __init__(self, path: Path, kind: str, width: int, height: int, bands: int, dtype: str, transform: Affine,
                 crs: str, nodata: float | None, tiles: list[MapTile], masked: bool) -> None:
        self.path, self.kind = Path(path), kind
        self.width, self.height, self.bands, self.dtype = int(width), int(height), int(bands), str(dtype)
        self.transform, self.crs, self.nodata = transform, crs, nodata
        self.tiles = list(tiles)
        self._masked = bool(masked) or kind == "tiles"
        self._boxes = np.array([[t.col0, t.row0, t.col0 + t.width, t.row0 + t.height] for t in self.tiles],
                               dtype=np.int64).reshape(-1, 4)
        self._handles: OrderedDict[str, Any] = OrderedDict()
        self._pid = os.getpid()
        self._to_lonlat: Any = None

    # ---- opening ----------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> MapSource:
        """Open a raster file, a ``.vrt`` or a folder of tiles (reads headers only).

        Raises:
            DataError: missing or unreadable file, a VRT naming missing files, a tile folder with no
                tiles or with tiles in mixed CRSs / resolutions / band counts / dtypes or off one
                pixel grid, no CRS or no geotransform.
        """
        require("pyproj", "geo")
        p = Path(path)
        if p.is_dir():
            return cls._open_folder(p)
        if not p.is_file():
            raise DataError(f"map '{p}' not found", "check the path (a GeoTIFF, a .vrt or a folder of tiles)")
        if p.stat().st_size == 0:
            raise DataError(f"map '{p}' is empty (0 bytes)", "replace the file")
        kind = "file"
        if p.suffix.lower() == ".vrt":
            kind = "vrt"
            missing = list(dict.fromkeys(s for s in _vrt_sources(p) if not s.is_file()))
            if missing:
                raise DataError(f"VRT '{p}' points at {len(missing)} missing file(s), first '{missing[0]}'",
                                "restore the tiles or rebuild the VRT (gdalbuildvrt) from the files that exist")
        with _open(p) as ds:
            transform = ds.transform if not ds.transform.is_identity else None
            transform = transform or _read_world_file(p)
            if transform is None:
                raise DataError(f"map '{p}' has no geotransform",
                                "use a GeoTIFF, add a world file (.tfw/.pgw/.wld) or a VRT with a geotransform")
            crs: Any = ds.crs.to_wkt() if ds.crs is not None else None
            if crs is None and p.with_suffix(".prj").is_file():
                crs = p.with_suffix(".prj").read_text()
            if not crs or not str(crs).strip():
                raise DataError(f"map '{p}' has no CRS", "use a GeoTIFF with a CRS or add a .prj file")
            try:
                crs_s = _crs_string(crs)
            except Exception:
                raise DataError(f"map '{p}' has an unknown CRS '{str(crs)[:60]}'", "give an EPSG code or WKT") from None
            if ds.width == 0 or ds.height == 0 or ds.count == 0:
                raise DataError(f"map '{p}' has no pixels", "replace the file")
            tile = MapTile(str(p.resolve()), 0, 0, ds.width, ds.height)
            return cls(p, kind, ds.width, ds.height, ds.count, ds.dtypes[0], as_affine(transform), crs_s, ds.nodata,
                       [tile], masked=not _all_valid(ds))

    @classmethod
    def _open_folder(cls, folder: Path) -> MapSource:
        files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in TILE_SUFFIXES)
        if not files:
            raise DataError(f"map folder '{folder}' holds no .tif/.tiff tiles", "pass a folder of GeoTIFF tiles")
        pyproj_crs = require("pyproj", "geo").CRS
        heads = []
        for f in files:
            with _open(f) as ds:
                if ds.crs is None:
                    raise DataError(f"tile '{f}' has no CRS", "give every tile of the folder a CRS")
                t = ds.transform
                if t.is_identity:
                    raise DataError(f"tile '{f}' has no geotransform", "give every tile of the folder a geotransform")
                if abs(t.b) > 1e-12 or abs(t.d) > 1e-12 or t.a <= 0 or t.e >= 0:
                    raise DataError(f"tile '{f}' is not north-up (geotransform {tuple(t)[:6]})",
                                    "warp the tiles north-up first (gdalwarp)")
                heads.append((f, ds.crs.to_wkt(), t, ds.width, ds.height, ds.count, ds.dtypes[0], ds.nodata))
        first = heads[0]
        ref_crs = pyproj_crs.from_user_input(first[1])
        for f, crs, t, _w, _h, count, dtype, _nd in heads[1:]:
            if not pyproj_crs.from_user_input(crs).equals(ref_crs):
                raise DataError(f"tile folder '{folder}' mixes CRSs: '{f.name}' is {_crs_string(crs)[:40]}, "
                                f"'{first[0].name}' is {_crs_string(first[1])[:40]}",
                                "reproject the tiles to one CRS (gdalwarp -t_srs) or index them separately")
            if not (np.isclose(t.a, first[2].a, rtol=1e-9, atol=0) and np.isclose(t.e, first[2].e, rtol=1e-9, atol=0)):
                raise DataError(f"tile folder '{folder}' mixes resolutions: '{f.name}' has {t.a:g} x {-t.e:g}, "
                                f"'{first[0].name}' {first[2].a:g} x {-first[2].e:g} map units per pixel",
                                "resample the tiles to one resolution (gdalwarp -tr) or index them separately")
            if count != first[5] or dtype != first[6]:
                raise DataError(f"tile folder '{folder}' mixes band layouts: '{f.name}' has {count} {dtype} bands, "
                                f"'{first[0].name}' {first[5]} {first[6]}", "give every tile the same bands and dtype")
        res_x, res_y = first[2].a, -first[2].e
        left = min(h[2].c for h in heads)
        top = max(h[2].f for h in heads)
        tiles = []
        for f, _crs, t, w, h, *_ in heads:
            cx, cy = (t.c - left) / res_x, (top - t.f) / res_y
            if abs(cx - round(cx)) > 1e-3 or abs(cy - round(cy)) > 1e-3:
                raise DataError(f"tile '{f.name}' of folder '{folder}' is off the pixel grid of '{first[0].name}' "
                                f"(offset {cx:.3f}, {cy:.3f} px)", "resample the tiles onto one pixel grid (gdalwarp -tap)")
            tiles.append(MapTile(str(f.resolve()), int(round(cx)), int(round(cy)), w, h))
        width = max(t.col0 + t.width for t in tiles)
        height = max(t.row0 + t.height for t in tiles)
        transform = as_affine((res_x, 0.0, left, 0.0, -res_y, top))
        return cls(folder, "tiles", width, height, first[5], first[6], transform, _crs_string(first[1]), first[7],
                   tiles, masked=True)

    # ---- geometry (the GeoRaster API) -------------------------------------------------------
    @property
    def name(self) -> str:
        return f"'{self.path}'"

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(bands, height, width)``."""
        return self.bands, self.height, self.width

    @property
    def gsd(self) -> tuple[float, float]:
        """Pixel size ``(x, y)`` in map units."""
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
            self._to_lonlat = require("pyproj", "geo").Transformer.from_crs(self.crs, "EPSG:4326", always_xy=True)
        lon, lat = self._to_lonlat.transform(np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
        return np.asarray(lon), np.asarray(lat)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this map cheaply: geometry plus each file's name, size and first 64 KiB."""
        return {"kind": self.kind, "shape": list(self.shape), "dtype": self.dtype, "crs": self.crs,
                "transform": [float(v) for v in tuple(self.transform)[:6]],
                "files": [_file_head(t.path) for t in self.tiles]}

    # ---- pixels -----------------------------------------------------------------------------
    def _dataset(self, path: str) -> Any:
        if self._pid != os.getpid():  # a forked worker: the parent's handles are not ours to use or close
            self._handles, self._pid = OrderedDict(), os.getpid()
        ds = self._handles.get(path)
        if ds is None or ds.closed:
            if not Path(path).exists():
                raise DataError(f"map file '{path}' not found", "the map moved or was deleted while it was read")
            ds = self._handles[path] = _open(path)
            while len(self._handles) > _MAX_OPEN:
                self._handles.popitem(last=False)[1].close()
        self._handles.move_to_end(path)
        return ds

    def close(self) -> None:
        """Close the datasets this process opened."""
        if self._pid == os.getpid():
            for ds in self._handles.values():
                ds.close()
        self._handles = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"], state["_to_lonlat"] = OrderedDict(), None
        return state

    def _check_window(self, col0: int, row0: int, width: int, height: int) -> None:
        if col0 < 0 or row0 < 0 or width < 1 or height < 1 or col0 + width > self.width or row0 + height > self.height:
            raise DataError(f"window ({col0}, {row0}, {width}x{height}) lies outside map {self.name} "
                            f"({self.width}x{self.height})", "choose a window inside the map")

    def read_valid(self, col0: int, row0: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Pixels ``(C, height, width)`` of a window and its validity.

        Returns:
            ``(pixels, valid)``: ``valid`` is a ``(height, width)`` bool mask, or None when every
            pixel is valid; invalid pixels are 0.
        """
        self._check_window(col0, row0, width, height)
        window_cls = require("rasterio.windows", "geo").Window
        if self.kind != "tiles":
            ds = self._dataset(self.tiles[0].path)
            window = window_cls(col0, row0, width, height)
            pixels = ds.read(window=window)
            valid = ds.dataset_mask(window=window) > 0 if self._masked else None
        else:
            pixels = np.zeros((self.bands, height, width), dtype=self.dtype)
            valid = np.zeros((height, width), dtype=bool)
            b = self._boxes
            hit = np.flatnonzero((b[:, 0] < col0 + width) & (b[:, 2] > col0) & (b[:, 1] < row0 + height) & (b[:, 3] > row0))
            for i in hit:
                t = self.tiles[int(i)]
                c0, r0 = max(col0, t.col0), max(row0, t.row0)
                c1, r1 = min(col0 + width, t.col0 + t.width), min(row0 + height, t.row0 + t.height)
                ds = self._dataset(t.path)
                window = window_cls(c0 - t.col0, r0 - t.row0, c1 - c0, r1 - r0)
                part = ds.read(window=window)
                ok = ds.dataset_mask(window=window) > 0 if not _all_valid(ds) else np.ones(part.shape[1:], dtype=bool)
                dst = pixels[:, r0 - row0:r1 - row0, c0 - col0:c1 - col0]
                dst[:, ok] = part[:, ok]
                valid[r0 - row0:r1 - row0, c0 - col0:c1 - col0] |= ok
        if np.issubdtype(pixels.dtype, np.floating):
            finite = np.isfinite(pixels).all(axis=0)
            if not finite.all():
                valid = finite if valid is None else valid & finite
        if valid is not None:
            if valid.all():
                return pixels, None
            pixels[:, ~valid] = 0
        return pixels, valid

    def read(self, col0: int, row0: int, width: int, height: int) -> np.ndarray:
        """Pixels ``(C, height, width)`` of a window (invalid pixels 0)."""
        return self.read_valid(col0, row0, width, height)[0]

    def window(self, col0: int, row0: int, width: int, height: int) -> np.ndarray:
        """Same as :meth:`read` (the :meth:`GeoRaster.window` signature)."""
        return self.read(col0, row0, width, height)

    def __repr__(self) -> str:
        return f"MapSource({self.name}, {self.kind}, {self.width}x{self.height}x{self.bands} {self.dtype})"


def open_map(path: str | Path) -> MapSource:
    """:meth:`MapSource.open`: a GeoTIFF / COG / raster file, a ``.vrt`` or a folder of tiles, read lazily."""
    return MapSource.open(path)
