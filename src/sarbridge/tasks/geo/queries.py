"""CMPC localisation data from an optical map and SAR rasters of the same area.

:func:`build_map_localisation` cuts the georeferenced optical map into a grid of reference
patches (:mod:`sarbridge.tasks.geo.grid`) and crops SAR queries from one or more SAR rasters in the
same CRS (their pixel size may differ: a query always covers the same ground footprint as one
map patch):

``aligned``
    one query per grid cell (and SAR raster) that the SAR covers fully, with at most
    ``nodata_fraction`` no-data pixels; its target is that cell.
``arbitrary``
    ``count`` footprints of one patch at random (seeded) whole-pixel offsets of the map, inside
    both the SAR coverage and the gridded area; the target is the cell with the largest overlap,
    the near-misses are the other cells overlapping by at least ``min_overlap`` of a patch.

Splits:

``same-area``
    every cell is a reference of every split; the queries are shuffled (seeded) and divided by
    ``fractions`` into train/val/test.
``cross-area``
    the gridded area is cut along ``cross_axis`` (``x``: columns, left part first; ``y``: rows,
    top part first) at the cell boundary nearest to ``fractions[0] + fractions[1]`` of its
    extent. Queries inside the first (train) area are divided into train/val in proportion,
    queries inside the second area are test queries, and straddling queries are dropped.
    References carry ``region`` ``"train"`` or ``"test"`` (``"border"`` for cells crossing the
    cut, possible only when ``stride < patch_size``). Evaluate on the test area alone with::

        test = data.with_references([r.index for r in data.references if r.region == "test"])

Loaders are small picklable :class:`RasterWindow` objects (a windowed rasterio read of the file,
or a slice of the in-memory array for rasters without a file), so datasets can go to worker
processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sarbridge.core.errors import DataError
from sarbridge.core.optional import require
from sarbridge.data.georaster import GeoRaster
from sarbridge.tasks.geo.grid import (
    MapGrid,
    RasterWindow,
    box_overlap_areas,
    make_grid,
    nodata_value,
    require_north_up,
    validate_optical,
    validate_sar,
)
from sarbridge.tasks.geo.patches import SETTINGS, SPLITS, GeoQuery, GeoReference, LocalisationData

__all__ = ["RasterWindow", "build_map_localisation", "locate_target", "query_footprint_check"]

SPLIT_MODES = ("same-area", "cross-area")
_TOL = 1e-6  # pixels: rounding slack of map <-> pixel conversions
def locate_target(footprints: Any, footprint: Any, min_overlap_area: float = 0.0) -> tuple[int, tuple[int, ...]]:
    """The target and near-misses of a query footprint among reference footprints.

    Args:
        footprints: ``(N, 4)`` reference footprints ``(x0, y0, x1, y1)``.
        footprint: the query footprint ``(x0, y0, x1, y1)``.
        min_overlap_area: smallest overlap (map units squared) of a near-miss; overlaps must
            also be positive.

    Returns:
        ``(target, near)``: the reference with the largest overlap (lowest index on ties; the
        nearest centre when nothing overlaps) and the other references overlapping by at least
        ``min_overlap_area``, by decreasing overlap (then index).

    Raises:
        ValueError: no reference footprints.
    """
    boxes = np.asarray(footprints, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        raise ValueError("locate_target needs at least one reference footprint")
    areas = box_overlap_areas(boxes, footprint)
    if areas.max() > 0:
        target = int(np.argmax(areas))
    else:
        cx, cy = (footprint[0] + footprint[2]) / 2.0, (footprint[1] + footprint[3]) / 2.0
        d2 = ((boxes[:, 0] + boxes[:, 2]) / 2.0 - cx) ** 2 + ((boxes[:, 1] + boxes[:, 3]) / 2.0 - cy) ** 2
        target = int(np.argmin(d2))
    idx = np.flatnonzero((areas > 0) & (areas >= min_overlap_area))
    idx = idx[idx != target]
    order = np.lexsort((idx, -areas[idx]))
    return target, tuple(int(i) for i in idx[order])


def query_footprint_check(optical: GeoRaster, footprint: Any) -> float:
    """Check that a query footprint meets the map.

    Args:
        optical: the map.
        footprint: ``(x0, y0, x1, y1)`` in the map's CRS.

    Returns:
        The fraction of the footprint's area inside the map (``(0, 1]``).

    Raises:
        DataError: a malformed footprint, or one that lies outside the map.
    """
    try:
        x0, y0, x1, y1 = (float(v) for v in footprint)
    except (TypeError, ValueError):
        raise DataError(f"query footprint {footprint!r} is not four numbers", "pass (x0, y0, x1, y1) in map units") from None
    if not (np.isfinite([x0, y0, x1, y1]).all() and x0 < x1 and y0 < y1):
        raise DataError(f"query footprint ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is empty or not finite",
                        "pass (x0, y0, x1, y1) with x0 < x1 and y0 < y1")
    inside = float(box_overlap_areas(np.array([optical.bounds]), (x0, y0, x1, y1))[0])
    if inside <= 0:
        left, bottom, right, top = optical.bounds
        raise DataError(f"query footprint ({x0:.1f}, {y0:.1f}, {x1:.1f}, {y1:.1f}) lies outside the map {optical.name} "
                        f"(bounds {left:.1f}, {bottom:.1f}, {right:.1f}, {top:.1f} in {optical.crs[:40]})",
                        "check the query position and that it is given in the map's CRS")
    return inside / ((x1 - x0) * (y1 - y0))


# --- helpers -----------------------------------------------------------------------------------

def _same_crs(a: str, b: str) -> bool:
    if a == b:
        return True
    crs = require("pyproj", "geo").CRS
    try:
        return crs.from_user_input(a).equals(crs.from_user_input(b), ignore_axis_order=True)
    except Exception:
        return False


def _check_sar(optical: GeoRaster, sar: GeoRaster) -> None:
    validate_sar(sar)
    require_north_up(sar, "SAR")
    if not _same_crs(sar.crs, optical.crs):
        raise DataError(f"SAR {sar.name} is in {sar.crs[:60]} but the map {optical.name} is in {optical.crs[:60]}",
                        f"reproject it (e.g. gdalwarp -t_srs {optical.crs if len(optical.crs) < 40 else '<map CRS>'} "
                        "sar.tif sar_map_crs.tif)")
    if box_overlap_areas(np.array([optical.bounds]), sar.bounds)[0] <= 0:
        raise DataError(f"SAR {sar.name} (bounds {tuple(round(v, 1) for v in sar.bounds)}) does not intersect the map "
                        f"{optical.name} (bounds {tuple(round(v, 1) for v in optical.bounds)})",
                        "use a SAR raster of the mapped area (same CRS)")


def _sar_box(sar: GeoRaster, footprint: Sequence[float]) -> tuple[int, int, int, int] | None:
    """SAR pixel box covering a map footprint, or ``None`` when the SAR does not cover it fully."""
    cols, rows = sar.map_to_pixel(np.array([footprint[0], footprint[2]]), np.array([footprint[1], footprint[3]]))
    c_lo, c_hi, r_lo, r_hi = cols.min(), cols.max(), rows.min(), rows.max()
    if c_lo < -_TOL or r_lo < -_TOL or c_hi > sar.width + _TOL or r_hi > sar.height + _TOL:
        return None
    c0, r0 = int(np.clip(round(c_lo), 0, sar.width - 1)), int(np.clip(round(r_lo), 0, sar.height - 1))
    c1, r1 = int(np.clip(round(c_hi), c0 + 1, sar.width)), int(np.clip(round(r_hi), r0 + 1, sar.height))
    return c0, r0, c1, r1


def _usable(sar: GeoRaster, box: tuple[int, int, int, int], nodata: float, nodata_fraction: float) -> bool:
    c0, r0, c1, r1 = box
    pix = sar.array[:, r0:r1, c0:c1]
    return float(np.all(pix == nodata, axis=0).mean()) <= nodata_fraction


@dataclass
class _Candidate:
    sar: int
    map_box: tuple[int, int, int, int]
    sar_box: tuple[int, int, int, int]
    footprint: tuple[float, float, float, float]
    target: int
    near: tuple[int, ...]
    split: str = ""


def _aligned(grid: MapGrid, sars: list[GeoRaster], nodata: list[float], nodata_fraction: float,
             min_area: float) -> list[_Candidate]:
    fps = grid.footprints()
    out = []
    for cell in grid.cells:
        fp = grid.footprint(cell.index)
        idx = grid.cells_in(cell.box)
        areas = box_overlap_areas(fps[idx], fp)
        keep = (areas > 0) & (areas >= min_area) & (idx != cell.index)
        near_idx, near_areas = idx[keep], areas[keep]
        near = tuple(int(i) for i in near_idx[np.lexsort((near_idx, -near_areas))])
        for k, sar in enumerate(sars):
            box = _sar_box(sar, fp)
            if box is not None and _usable(sar, box, nodata[k], nodata_fraction):
                out.append(_Candidate(k, cell.box, box, fp, cell.index, near))
    return out


def _corner_range(lo: float, hi: float, patch: int) -> tuple[int, int]:
    return int(np.ceil(lo - _TOL)), int(np.floor(hi - patch + _TOL))


def _arbitrary(grid: MapGrid, sars: list[GeoRaster], nodata: list[float], nodata_fraction: float,
               min_overlap: float, count: int, rng: np.random.Generator) -> list[_Candidate]:
    optical, patch = grid.raster, grid.patch_size
    ex0, ey0, ex1, ey1 = grid.extent_pixels()
    ranges = []
    for sar in sars:
        left, bottom, right, top = sar.bounds
        cols, rows = optical.map_to_pixel(np.array([left, right]), np.array([bottom, top]))
        cx = _corner_range(max(ex0, cols.min()), min(ex1, cols.max()), patch)
        cy = _corner_range(max(ey0, rows.min()), min(ey1, rows.max()), patch)
        ranges.append((cx, cy, max(cx[1] - cx[0] + 1, 0) * max(cy[1] - cy[0] + 1, 0)))
    weights = np.array([r[2] for r in ranges], dtype=np.float64)
    if weights.sum() == 0:
        raise DataError(f"no SAR raster covers a full {patch}x{patch}-pixel patch of the gridded map {optical.name}",
                        "use SAR rasters overlapping the map by at least one patch, or a smaller patch_size")
    fps = grid.footprints()
    out: list[_Candidate] = []
    attempts = 0
    while len(out) < count and attempts < 50 * count + 100:
        attempts += 1
        k = int(rng.choice(len(sars), p=weights / weights.sum()))
        (cx0, cx1), (cy0, cy1), _ = ranges[k]
        c0, r0 = int(rng.integers(cx0, cx1 + 1)), int(rng.integers(cy0, cy1 + 1))
        map_box = (c0, r0, c0 + patch, r0 + patch)
        fp = grid.pixel_box_footprint(map_box)
        box = _sar_box(sars[k], fp)
        if box is None or not _usable(sars[k], box, nodata[k], nodata_fraction):
            continue
        area = (fp[2] - fp[0]) * (fp[3] - fp[1])
        idx = grid.cells_in(map_box)  # the few cells a patch can overlap
        if len(idx) and box_overlap_areas(fps[idx], fp).max() > 0:
            t, n = locate_target(fps[idx], fp, min_overlap * area)
            target, near = int(idx[t]), tuple(int(idx[i]) for i in n)
        else:  # in a gap of a sparse grid (stride > patch): nearest cell
            target, near = locate_target(fps, fp, min_overlap * area)
        out.append(_Candidate(k, map_box, box, fp, target, near))
    return out


def _fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    try:
        f = tuple(float(v) for v in fractions)
    except (TypeError, ValueError):
        f = ()
    if len(f) != 3 or min(f) < 0 or sum(f) <= 0 or not np.isfinite(f).all():
        raise DataError(f"fractions {tuple(fractions) if isinstance(fractions, Sequence) else fractions!r} are invalid",
                        "pass three non-negative train/val/test fractions, e.g. (0.6, 0.1, 0.3)")
    s = sum(f)
    return f[0] / s, f[1] / s, f[2] / s


def _divide(cands: list[_Candidate], shares: Sequence[float], names: Sequence[str], rng: np.random.Generator) -> None:
    """Shuffle ``cands`` and label consecutive runs with ``names`` in proportion to ``shares``."""
    n = len(cands)
    total = sum(shares)
    if n == 0 or total <= 0:
        return
    bounds = np.rint(np.cumsum(shares) / total * n).astype(int)
    bounds[-1] = n
    perm = rng.permutation(n)
    start = 0
    for name, stop in zip(names, bounds):
        for i in perm[start:stop]:
            cands[i].split = name
        start = max(start, stop)


def _cross_cut(grid: MapGrid, axis: str, frac: float) -> int:
    a = 0 if axis == "x" else 1
    starts = sorted({c.box[a] for c in grid.cells})
    if len(starts) < 2:
        raise DataError(f"map {grid.raster.name} has one grid {'column' if a == 0 else 'row'}: "
                        f"it cannot be cut into train and test areas along {axis}",
                        "use a larger map, a smaller patch_size, cross_axis='y'/'x' or split='same-area'")
    ext = grid.extent_pixels()
    raw = ext[a] + frac * (ext[a + 2] - ext[a])
    cands = np.array(starts[1:], dtype=np.float64)
    return int(cands[np.argmin(np.abs(cands - raw))])


def _region(box: Sequence[int], axis: str, cut: int) -> str:
    a = 0 if axis == "x" else 1
    if box[a + 2] <= cut:
        return "train"
    if box[a] >= cut:
        return "test"
    return "border"


# --- the builder -------------------------------------------------------------------------------

def build_map_localisation(
    optical: GeoRaster,
    sars: GeoRaster | Sequence[GeoRaster],
    patch_size: int = 200,
    stride: int | None = None,
    setting: str = "aligned",
    count: int | None = None,
    split: str = "same-area",
    fractions: Sequence[float] = (0.6, 0.1, 0.3),
    cross_axis: str = "x",
    seed: int = 0,
    min_overlap: float = 0.01,
    nodata_fraction: float = 0.05,
) -> LocalisationData:
    """CMPC localisation data: grid references of an optical map and SAR queries.

    Args:
        optical: the north-up optical map (1, 3 or 4 bands).
        sars: one or more north-up SAR rasters (1 or 2 bands) in the map's CRS; any pixel size.
        patch_size: reference side in map pixels.
        stride: grid step in map pixels (default ``patch_size``: non-overlapping).
        setting: ``aligned`` (queries on the grid cells) or ``arbitrary`` (random offsets).
        count: number of arbitrary queries drawn (default: the number of grid cells); with
            ``cross-area`` those straddling the cut are then dropped.
        split: ``same-area`` or ``cross-area`` (see the module docstring).
        fractions: train/val/test fractions (normalised to sum to 1).
        cross_axis: ``x`` or ``y``, the axis cut by ``cross-area``.
        seed: seed of the random offsets and of the split.
        min_overlap: smallest overlap of a near-miss, as a fraction of the patch area.
        nodata_fraction: largest fraction of no-data pixels (the raster's no-data value, else
            exact zeros in every band) in a SAR query.

    Returns:
        The :class:`LocalisationData` (``crs`` = the map's CRS).

    Raises:
        DataError: bad arguments or bands, a SAR raster in another CRS or outside the map, a map
            smaller than one patch, or no usable query.
    """
    validate_optical(optical)
    sar_list = [sars] if isinstance(sars, GeoRaster) else list(sars)
    if not sar_list:
        raise DataError(f"no SAR raster given for map {optical.name}", "pass at least one SAR GeoRaster")
    if setting not in SETTINGS:
        raise DataError(f"unknown query setting '{setting}'", f"use one of {', '.join(SETTINGS)}")
    if split not in SPLIT_MODES:
        raise DataError(f"unknown split '{split}'", f"use one of {', '.join(SPLIT_MODES)}")
    if cross_axis not in ("x", "y"):
        raise DataError(f"unknown cross_axis '{cross_axis}'", "use x (cut columns) or y (cut rows)")
    if not 0 <= nodata_fraction <= 1 or not 0 <= min_overlap <= 1:
        raise DataError(f"nodata_fraction {nodata_fraction} / min_overlap {min_overlap} out of range", "use values in [0, 1]")
    fr = _fractions(fractions)
    if split == "cross-area" and (fr[0] + fr[1] <= 0 or fr[2] <= 0):
        raise DataError(f"fractions {tuple(fractions)} leave the cross-area train or test area empty",
                        "give positive train (+val) and test fractions, e.g. (0.6, 0.1, 0.3)")
    for sar in sar_list:
        _check_sar(optical, sar)
    grid = make_grid(optical, patch_size, stride)
    rng = np.random.default_rng(seed)
    nodata = [nodata_value(s) for s in sar_list]
    patch_area = float(grid.patch_size * optical.gsd[0] * grid.patch_size * optical.gsd[1])
    if setting == "aligned":
        cands = _aligned(grid, sar_list, nodata, nodata_fraction, min_overlap * patch_area)
    else:
        n = len(grid.cells) if count is None else int(count)
        if n < 1:
            raise DataError(f"count {count} is invalid", "ask for at least one arbitrary query")
        cands = _arbitrary(grid, sar_list, nodata, nodata_fraction, min_overlap, n, rng)

    regions = [""] * len(grid.cells)
    meta: dict[str, Any] = {"map": str(optical.path) if optical.path else None, "patch_size": grid.patch_size,
                            "stride": grid.stride, "gsd": optical.gsd[0], "setting": setting, "split": split,
                            "fractions": fr, "seed": seed, "sars": [str(s.path) if s.path else None for s in sar_list]}
    if split == "same-area":
        _divide(cands, fr, SPLITS, rng)
    else:
        cut = _cross_cut(grid, cross_axis, fr[0] + fr[1])
        regions = [_region(c.box, cross_axis, cut) for c in grid.cells]
        area = [_region(c.map_box, cross_axis, cut) for c in cands]
        train_area = [c for c, a in zip(cands, area) if a == "train"]
        _divide(train_area, fr[:2], SPLITS[:2], rng)
        for c, a in zip(cands, area):
            if a == "test":
                c.split = "test"
        cands = [c for c, a in zip(cands, area) if a != "border"]
        cut_xy = optical.pixel_to_map(cut, cut)
        meta.update({"cross_axis": cross_axis, "cut_pixel": cut, "cut": float(cut_xy[0 if cross_axis == "x" else 1])})
    if not cands:
        raise DataError(f"no usable SAR query on map {optical.name} (setting {setting}, split {split})",
                        "check that the SAR covers whole patches without no-data, or lower patch_size")

    map_label = Path(optical.path).name if optical.path else "map"
    centres, lonlat = grid.centers(), grid.lonlat()
    refs = [GeoReference(c.index, float(centres[c.index, 0]), float(centres[c.index, 1]), float(lonlat[c.index, 0]),
                         float(lonlat[c.index, 1]), grid.footprint(c.index), f"{map_label}[r{c.row},c{c.col}]",
                         RasterWindow.of(optical, c.box, "optical"), regions[c.index]) for c in grid.cells]
    qx = np.array([(c.footprint[0] + c.footprint[2]) / 2.0 for c in cands])
    qy = np.array([(c.footprint[1] + c.footprint[3]) / 2.0 for c in cands])
    qlon, qlat = optical.to_lonlat(qx, qy)
    qlon, qlat = np.atleast_1d(qlon), np.atleast_1d(qlat)
    queries = []
    for i, c in enumerate(cands):
        sar = sar_list[c.sar]
        label = Path(sar.path).name if sar.path else f"sar{c.sar}"
        b = c.sar_box
        queries.append(GeoQuery(i, float(qx[i]), float(qy[i]), float(qlon[i]), float(qlat[i]), c.target, c.near, c.split,
                                setting, f"{label}[x{b[0]}:{b[2]},y{b[1]}:{b[3]}]", RasterWindow.of(sar, b, "sar"),
                                c.footprint))
    name = f"CMPC {map_label} ({setting}, {split})"
    return LocalisationData(refs, queries, optical.crs, name, meta)
