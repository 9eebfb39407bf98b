"""A georeferenced optical map cut into a grid of square reference patches (CMPC's database).

:func:`make_grid` lays ``patch_size`` x ``patch_size`` pixel cells over a north-up
:class:`~sarbridge.data.georaster.GeoRaster` every ``stride`` pixels (non-overlapping by default,
as in CMPC). A :class:`MapGrid` gives each cell's map footprint, centre (projected and WGS84) and
pixels, and the overlap of any map rectangle with every cell (vectorised), from which query
targets and near-misses are derived.

Pixel boxes are ``(x0, y0, x1, y1)`` = ``(col0, row0, col1, row1)`` with exclusive ends; map
footprints are ``(x0, y0, x1, y1)`` in the raster's CRS units with ``x0 < x1`` and ``y0 < y1``.

Band conventions (:func:`validate_optical`, :func:`validate_sar`, :func:`image_layout`): optical
maps are RGB (3 bands), RGBA/RGBN (4 bands, the first three are used) or grey (1 band); SAR
rasters hold one intensity band or two polarisations (e.g. VV/VH), which are averaged.

:class:`RasterWindow` is the picklable pixel-window loader of references and queries (a windowed
rasterio read of the file through a small per-process cache of open datasets, or a slice of the
array of an in-memory raster).
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sarbridge.core.errors import DataError
from sarbridge.core.optional import require
from sarbridge.data.georaster import GeoRaster

__all__ = [
    "GridCell",
    "MapGrid",
    "RasterWindow",
    "box_overlap_areas",
    "image_layout",
    "make_grid",
    "nodata_value",
    "require_north_up",
    "validate_optical",
    "validate_sar",
]

Box = tuple[float, float, float, float]

_MAX_OPEN = 8
_OPEN: OrderedDict[tuple[int, str], Any] = OrderedDict()
_OPEN_LOCK = threading.Lock()


def _open_dataset(path: str) -> Any:
    """A rasterio dataset from this process's small cache (datasets never cross a fork)."""
    rasterio = require("rasterio", "geo")
    pid = os.getpid()
    for key in [k for k in _OPEN if k[0] != pid]:  # inherited from a parent process: forget, never close
        del _OPEN[key]
    key = (pid, path)
    ds = _OPEN.get(key)
    if ds is not None and not ds.closed:
        _OPEN.move_to_end(key)
        return ds
    if not Path(path).is_file():
        raise DataError(f"raster '{path}' not found", "the file moved or was deleted after the data was built")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", require("rasterio.errors", "geo").NotGeoreferencedWarning)
        ds = rasterio.open(path)
    _OPEN[key] = ds
    while len(_OPEN) > _MAX_OPEN:
        _, old = _OPEN.popitem(last=False)
        old.close()
    return ds


@dataclass(frozen=True)
class RasterWindow:
    """Picklable loader of one pixel window of a raster.

    Attributes:
        path: the raster file, read with a windowed rasterio read; ``None`` to use ``array``.
        col0, row0, width, height: the window in the raster's pixels.
        kind: ``optical`` (first three bands), ``sar`` (band mean) or ``raw``; see
            :func:`~sarbridge.tasks.geo.grid.image_layout`.
        array: ``(C, H, W)`` pixels of an in-memory raster (when ``path`` is ``None``).
    """

    path: str | None
    col0: int
    row0: int
    width: int
    height: int
    kind: str = "raw"
    array: np.ndarray | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, raster: GeoRaster, box: tuple[int, int, int, int], kind: str) -> RasterWindow:
        """The window ``box`` = ``(x0, y0, x1, y1)`` (pixels) of ``raster``: from its file when
        it has one, else from its array."""
        c0, r0, c1, r1 = (int(v) for v in box)
        path = str(Path(raster.path).resolve()) if raster.path is not None and Path(raster.path).is_file() else None
        return cls(path, c0, r0, c1 - c0, r1 - r0, kind, None if path else raster.array)

    def __call__(self) -> np.ndarray:
        if self.path is None:
            if self.array is None:
                raise DataError("raster window has neither a file nor pixels", "build it with RasterWindow.of")
            pixels = self.array[:, self.row0:self.row0 + self.height, self.col0:self.col0 + self.width]
        else:
            window = require("rasterio.windows", "geo").Window(self.col0, self.row0, self.width, self.height)
            with _OPEN_LOCK:
                ds = _open_dataset(self.path)
                pixels = ds.read(window=window)
        return image_layout(pixels, self.kind)



@dataclass(frozen=True)
class GridCell:
    """One cell of a :class:`MapGrid`.

    Attributes:
        index: position in :attr:`MapGrid.cells`.
        row, col: grid row (top to bottom) and column (left to right).
        box: ``(x0, y0, x1, y1)`` map-pixel box, exclusive end.
    """

    index: int
    row: int
    col: int
    box: tuple[int, int, int, int]


def box_overlap_areas(boxes: Any, box: Any) -> np.ndarray:
    """Intersection areas of one axis-aligned rectangle with many.

    Args:
        boxes: ``(N, 4)`` rectangles ``(x0, y0, x1, y1)``.
        box: one rectangle ``(x0, y0, x1, y1)``.

    Returns:
        ``(N,)`` float64 areas (0 where disjoint or merely touching).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = (float(v) for v in box)
    w = np.clip(np.minimum(b[:, 2], x1) - np.maximum(b[:, 0], x0), 0.0, None)
    h = np.clip(np.minimum(b[:, 3], y1) - np.maximum(b[:, 1], y0), 0.0, None)
    return w * h


def require_north_up(raster: GeoRaster, what: str = "map") -> None:
    """Raise :class:`DataError` when ``raster`` is rotated or sheared (footprints must be axis-aligned)."""
    t = raster.transform
    if abs(t.b) > 1e-12 * max(abs(t.a), 1.0) or abs(t.d) > 1e-12 * max(abs(t.e), 1.0):
        raise DataError(f"{what} {raster.name} is rotated or sheared (geotransform {tuple(t)[:6]})",
                        "warp it north-up first, e.g. gdalwarp -t_srs <its CRS> in.tif out.tif")


def nodata_value(raster: GeoRaster) -> float:
    """The raster's no-data value: its ``nodata`` attribute, else its file's no-data tag, else 0."""
    value = getattr(raster, "nodata", None)
    if value is None and raster.path is not None and Path(raster.path).is_file():
        try:
            with _OPEN_LOCK:
                value = _open_dataset(str(raster.path)).nodata
        except Exception:
            value = None
    return 0.0 if value is None or not np.isfinite(value) else float(value)


def validate_optical(raster: GeoRaster) -> GeoRaster:
    """Check that an optical map has 1 (grey), 3 (RGB) or 4 (first three used) bands.

    Returns:
        ``raster`` unchanged.

    Raises:
        DataError: naming the file and its band count.
    """
    if raster.bands not in (1, 3, 4):
        raise DataError(f"optical map {raster.name} has {raster.bands} bands",
                        "use an RGB (3 bands), RGBA/RGBN (4: the first three are used) or grey (1 band) map")
    return raster


def validate_sar(raster: GeoRaster) -> GeoRaster:
    """Check that a SAR raster has 1 (intensity) or 2 (polarisations, averaged) bands.

    Returns:
        ``raster`` unchanged.

    Raises:
        DataError: naming the file and its band count.
    """
    if raster.bands not in (1, 2):
        raise DataError(f"SAR raster {raster.name} has {raster.bands} bands",
                        "use one intensity band or two polarisations (e.g. VV, VH; they are averaged)")
    return raster


def image_layout(pixels: np.ndarray, kind: str = "raw") -> np.ndarray:
    """``(C, H, W)`` raster pixels -> :func:`~sarbridge.data.io.read_image` layout.

    Args:
        pixels: ``(C, H, W)`` (or ``(H, W)``) array.
        kind: ``optical`` (first three bands of 3+ band rasters), ``sar`` (mean of the bands,
            float32, when there are several) or ``raw`` (all bands).

    Returns:
        ``(H, W)`` for one band, ``(H, W, C)`` otherwise.
    """
    arr = np.asarray(pixels)
    if arr.ndim == 2:
        return arr
    if kind == "optical" and arr.shape[0] >= 3:
        arr = arr[:3]
    elif kind == "sar" and arr.shape[0] > 1:
        return arr.astype(np.float32).mean(axis=0)
    elif kind not in ("optical", "sar", "raw"):
        raise ValueError(f"kind must be optical, sar or raw, got {kind!r}")
    if arr.shape[0] == 1:
        return arr[0]
    return np.ascontiguousarray(np.moveaxis(arr, 0, -1))


class MapGrid:
    """Square cells laid over a map.

    Attributes:
        raster: the map.
        patch_size: cell side in map pixels.
        stride: step between cells in map pixels.
        cells: the cells, row-major.
    """

    def __init__(self, raster: GeoRaster, patch_size: int, stride: int, cells: list[GridCell]) -> None:
        self.raster = raster
        self.patch_size = int(patch_size)
        self.stride = int(stride)
        self.cells = list(cells)
        self._footprints: np.ndarray | None = None
        self._boxes = np.array([c.box for c in self.cells], dtype=np.int64).reshape(-1, 4)
        self._lattice = self._find_lattice()

    def _find_lattice(self) -> tuple[int, int, int, int] | None:
        """``(x0, y0, rows, cols)`` when the cells are a complete row-major lattice (as
        :func:`make_grid` builds), else ``None``."""
        if not self.cells:
            return None
        rows, cols = max(c.row for c in self.cells) + 1, max(c.col for c in self.cells) + 1
        x0, y0 = self.cells[0].box[:2]
        ok = len(self.cells) == rows * cols and all(
            c.index == i and c.row == i // cols and c.col == i % cols
            and c.box[:2] == (x0 + c.col * self.stride, y0 + c.row * self.stride) for i, c in enumerate(self.cells))
        return (x0, y0, rows, cols) if ok else None

    def __len__(self) -> int:
        return len(self.cells)

    def __repr__(self) -> str:
        return f"MapGrid({self.raster.name}, patch_size={self.patch_size}, stride={self.stride}, cells={len(self.cells)})"

    def pixel_box_footprint(self, box: Any) -> Box:
        """Map footprint ``(x0, y0, x1, y1)`` of a map-pixel box (any, not only a cell's)."""
        c0, r0, c1, r1 = box
        xs, ys = self.raster.pixel_to_map(np.array([c0, c1], dtype=np.float64), np.array([r0, r1], dtype=np.float64))
        return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())

    def footprints(self) -> np.ndarray:
        """``(N, 4)`` float64 map footprints of all cells."""
        if self._footprints is None:
            boxes = self._boxes.astype(np.float64)
            xa, ya = self.raster.pixel_to_map(boxes[:, 0], boxes[:, 1])
            xb, yb = self.raster.pixel_to_map(boxes[:, 2], boxes[:, 3])
            self._footprints = np.stack([np.minimum(xa, xb), np.minimum(ya, yb),
                                         np.maximum(xa, xb), np.maximum(ya, yb)], axis=1)
        return self._footprints

    def footprint(self, i: int) -> Box:
        """Map footprint ``(x0, y0, x1, y1)`` of cell ``i`` (``x0 < x1``, ``y0 < y1``)."""
        return tuple(float(v) for v in self.footprints()[i])  # type: ignore[return-value]

    def centers(self) -> np.ndarray:
        """``(N, 2)`` projected ``x, y`` of the cell centres."""
        f = self.footprints()
        return np.stack([(f[:, 0] + f[:, 2]) / 2.0, (f[:, 1] + f[:, 3]) / 2.0], axis=1)

    def lonlat(self) -> np.ndarray:
        """``(N, 2)`` WGS84 longitude, latitude (degrees) of the cell centres."""
        c = self.centers()
        if len(c) == 0:
            return c.copy()
        lon, lat = self.raster.to_lonlat(c[:, 0], c[:, 1])
        return np.stack([np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)], axis=1)

    def crop(self, i: int) -> np.ndarray:
        """Pixels of cell ``i`` in :func:`~sarbridge.data.io.read_image` layout (all bands)."""
        c0, r0, c1, r1 = self.cells[i].box
        return image_layout(self.raster.window(c0, r0, c1 - c0, r1 - r0), "raw")

    def overlap_areas(self, footprint: Any) -> np.ndarray:
        """``(N,)`` intersection areas (map units squared) of a map rectangle with every cell."""
        return box_overlap_areas(self.footprints(), footprint)

    def extent_pixels(self) -> tuple[int, int, int, int]:
        """Map-pixel box ``(x0, y0, x1, y1)`` covered by the cells."""
        b = self._boxes
        return int(b[:, 0].min()), int(b[:, 1].min()), int(b[:, 2].max()), int(b[:, 3].max())

    def cells_in(self, box: Any) -> np.ndarray:
        """Indices (ascending) of the cells whose pixel boxes overlap the map-pixel ``box``
        (a look-up of a few lattice neighbours for :func:`make_grid` grids, not a scan)."""
        bx0, by0, bx1, by1 = (float(v) for v in box)
        if self._lattice is None:
            idx = np.arange(len(self.cells))
        else:
            x0, y0, rows, cols = self._lattice
            s, p = self.stride, self.patch_size
            c_lo, c_hi = max(int(np.floor((bx0 - x0 - p) / s)), 0), min(int(np.ceil((bx1 - x0) / s)), cols - 1)
            r_lo, r_hi = max(int(np.floor((by0 - y0 - p) / s)), 0), min(int(np.ceil((by1 - y0) / s)), rows - 1)
            if c_lo > c_hi or r_lo > r_hi:
                return np.zeros(0, dtype=np.int64)
            idx = (np.arange(r_lo, r_hi + 1)[:, None] * cols + np.arange(c_lo, c_hi + 1)[None, :]).ravel()
        b = self._boxes[idx]
        return idx[(b[:, 0] < bx1) & (b[:, 2] > bx0) & (b[:, 1] < by1) & (b[:, 3] > by0)]


def _positive_int(value: Any, name: str, raster: GeoRaster) -> int:
    try:
        ok = int(value) == value and int(value) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DataError(f"{name} {value!r} is invalid for map {raster.name}",
                        f"{name} must be a positive whole number of pixels")
    return int(value)


def _starts(lo: int, hi: int, patch: int, stride: int, drop_partial: bool) -> list[int]:
    starts = list(range(lo, hi - patch + 1, stride))
    if not drop_partial:
        nxt = starts[-1] + stride if starts else lo
        while nxt < hi:
            starts.append(nxt)
            nxt += stride
    return starts


def make_grid(
    raster: GeoRaster,
    patch_size: int = 200,
    stride: int | None = None,
    region: tuple[int, int, int, int] | None = None,
    drop_partial: bool = True,
) -> MapGrid:
    """Cut a north-up map into square cells.

    Args:
        raster: the optical map.
        patch_size: cell side in map pixels.
        stride: step between cells in pixels (default ``patch_size``: non-overlapping, as in CMPC).
        region: restrict the grid to this map-pixel window ``(x0, y0, x1, y1)`` (exclusive end;
            clipped to the map).
        drop_partial: drop cells cut by the right/bottom border; with ``False`` they are kept,
            clipped to the border (smaller than ``patch_size``).

    Returns:
        The :class:`MapGrid`.

    Raises:
        DataError: invalid ``patch_size``/``stride``/``region``, a rotated map, or a map (region)
            smaller than one patch.
    """
    patch = _positive_int(patch_size, "patch_size", raster)
    step = patch if stride is None else _positive_int(stride, "stride", raster)
    require_north_up(raster)
    if region is None:
        x0, y0, x1, y1 = 0, 0, raster.width, raster.height
    else:
        try:
            x0, y0, x1, y1 = (int(v) for v in region)
        except (TypeError, ValueError):
            raise DataError(f"region {region!r} for map {raster.name} is not four pixel numbers",
                            "pass region=(x0, y0, x1, y1) in map pixels") from None
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, raster.width), min(y1, raster.height)
        if x1 <= x0 or y1 <= y0:
            raise DataError(f"region {tuple(region)} lies outside map {raster.name} ({raster.width}x{raster.height} pixels)",
                            "pass a pixel window (x0, y0, x1, y1) inside the map")
    if x1 - x0 < patch or y1 - y0 < patch:
        where = "map" if region is None else "region of map"
        raise DataError(f"{where} {raster.name} is {x1 - x0}x{y1 - y0} pixels, smaller than one {patch}x{patch} patch",
                        "use a smaller patch_size or a larger map")
    rows = _starts(y0, y1, patch, step, drop_partial)
    cols = _starts(x0, x1, patch, step, drop_partial)
    cells: list[GridCell] = []
    for r, ry in enumerate(rows):
        for c, cx in enumerate(cols):
            cells.append(GridCell(len(cells), r, c, (cx, ry, min(cx + patch, x1), min(ry + patch, y1))))
    return MapGrid(raster, patch, step, cells)
