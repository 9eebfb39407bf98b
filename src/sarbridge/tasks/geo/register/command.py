"""``sarbridge geo register``: place a SAR image in a georeferenced optical map, training-free.

:func:`register_on_map` reads the map (:func:`~sarbridge.data.georaster.read_georaster`) and the
query (a georeferenced GeoTIFF, or any image taken to be at the map's pixel size), picks a search
window of the map (``around`` a lon/lat point, an explicit pixel ``window``, the query's own
footprint plus ``margin`` when it is georeferenced, else the whole map), registers the query there
with :func:`~sarbridge.tasks.geo.register.registration.register` (CFOG by default) and answers with
the position of the query's centre, its shift, the confidence and an error radius.

The error radius is one pixel at the map's GSD when the confidence reaches the threshold (the
descriptor places real Sentinel pairs within a pixel, ``tests/tasks/geo/register``), else half the
search window's diagonal: an unconfident match may be anywhere in the window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sarbridge.core.errors import ConfigError, DataError
from sarbridge.core.optional import require
from sarbridge.core.utils import resolve_device
from sarbridge.data.georaster import GeoRaster, read_georaster
from sarbridge.data.io import read_image
from sarbridge.tasks.geo.register.descriptors import cfog_border
from sarbridge.tasks.geo.register.images import MAX_BANDS, optical_intensity, sar_to_db
from sarbridge.tasks.geo.register.registration import register
from sarbridge.tasks.geo.register.stage import DEFAULT_THRESHOLD

__all__ = ["COMMAND_METHODS", "MAX_WINDOW_SIDE", "parse_around", "parse_window", "register_on_map"]

#: methods of the command (``features`` needs a trained encoder, so it is not offered).
COMMAND_METHODS = ("cfog", "ncc")
#: the largest search window side in pixels (FFT memory and time grow with the window's area).
MAX_WINDOW_SIDE = 4096
#: smallest query side for ``ncc`` (CFOG's minimum is its descriptor support).
MIN_NCC_SIDE = 8
SAR_UNITS = ("auto", "db", "linear")


def _numbers(text: str, n: int, what: str, example: str) -> list[float]:
    parts = [p.strip() for p in str(text).split(",")]
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        vals = []
    if len(parts) != n or len(vals) != n or not all(np.isfinite(vals)):
        raise ConfigError(f"{what} '{text}' is not {n} comma-separated numbers", f"write it like {example}")
    return vals


def parse_around(text: str | tuple[float, float, float]) -> tuple[float, float, float]:
    """``LON,LAT,RADIUS_M`` -> numbers (checked ranges)."""
    lon, lat, radius = (float(v) for v in text) if isinstance(text, tuple) else \
        _numbers(text, 3, "--around", "--around 2.35,48.85,500")
    if not (-180 <= lon <= 180 and -90 <= lat <= 90) or radius <= 0:
        raise ConfigError(f"--around {lon},{lat},{radius}: longitude must be in [-180, 180], latitude in [-90, 90] "
                          "and the radius > 0 metres", "write it like --around 2.35,48.85,500 (LON,LAT,RADIUS_M)")
    return lon, lat, radius


def parse_window(text: str | tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """``COL0,ROW0,COL1,ROW1`` (end exclusive) -> integers, checked to be non-empty."""
    vals = [float(v) for v in text] if isinstance(text, tuple) else \
        _numbers(text, 4, "--window", "--window 100,200,612,712")
    if any(v != int(v) for v in vals):
        raise ConfigError(f"--window {text} has fractional pixels", "give whole pixels COL0,ROW0,COL1,ROW1")
    c0, r0, c1, r1 = (int(v) for v in vals)
    if c1 <= c0 or r1 <= r0:
        raise ConfigError(f"--window {c0},{r0},{c1},{r1} is empty (needs COL1 > COL0 and ROW1 > ROW0)",
                          "give COL0,ROW0,COL1,ROW1 with the end column/row exclusive")
    return c0, r0, c1, r1


def _metres_per_unit(raster: GeoRaster) -> float:
    crs = require("pyproj", "geo").CRS.from_user_input(raster.crs)
    if not crs.is_projected:
        raise DataError(f"map {raster.name} is in a geographic CRS ({raster.crs[:40]}), so pixels have no size in metres",
                        "reproject the map to a projected CRS such as UTM (gdalwarp -t_srs EPSG:326xx)")
    return float(crs.axis_info[0].unit_conversion_factor or 1.0)


def _map_intensity(raster: GeoRaster) -> np.ndarray:
    if raster.bands > MAX_BANDS:
        raise DataError(f"map {raster.name} has {raster.bands} bands, more than the {MAX_BANDS} an intensity "
                        "descriptor can use", "pass an optical map of 1 to 16 bands (grey, RGB, RGBN ...)")
    px = raster.array.astype(np.float32)
    return optical_intensity(px, (0.299, 0.587, 0.114)) if raster.bands == 3 else px.mean(axis=0)


def _to_db(arr: np.ndarray, units: str, name: str) -> np.ndarray:
    x = arr.astype(np.float32)
    if units == "db" or (units == "auto" and float(x.min()) < 0):
        return x
    try:
        return sar_to_db(x)
    except DataError:
        raise DataError(f"query {name} has negative values but --sar-units linear was given",
                        "use --sar-units db (or auto) for backscatter already in dB") from None


def _read_query(path: Path, units: str) -> tuple[np.ndarray, GeoRaster | None]:
    """Query pixels (H, W) in dB and its georeference, if it has one."""
    if not path.is_file():
        raise DataError(f"query '{path}' not found", "check the path")
    try:
        raster: GeoRaster | None = read_georaster(path)
    except DataError as exc:
        if "no CRS" not in exc.message and "no geotransform" not in exc.message:
            raise DataError(exc.message.replace("map '", "query '", 1), exc.hint) from None
        raster = None
    if raster is not None:
        arr = raster.array
    else:
        img = read_image(path)
        arr = img[None] if img.ndim == 2 else np.moveaxis(img, -1, 0)
    if arr.shape[0] not in (1, 2):
        raise DataError(f"query '{path}' has {arr.shape[0]} bands; a SAR query has 1 (intensity) or 2 (VV/VH)",
                        "pass the SAR image, not an optical one")
    return _to_db(arr.astype(np.float32).mean(axis=0), units, f"'{path}'"), raster


def _query_box(mp: GeoRaster, q: GeoRaster, h: int, w: int, margin: int) -> tuple[int, int, int, int]:
    """The query's own footprint in map pixels plus ``margin``, clipped to the map: (col0, row0, col1, row1)."""
    crs_cls = require("pyproj", "geo").CRS
    if not crs_cls.from_user_input(q.crs).equals(crs_cls.from_user_input(mp.crs)):
        raise DataError(f"query {q.name} is in {q.crs[:40]} but the map is in {mp.crs[:40]}",
                        "reproject the query to the map's CRS (gdalwarp -t_srs), or pass --around/--window")
    qg, mg = q.gsd, mp.gsd
    if max(abs(qg[0] / mg[0] - 1), abs(qg[1] / mg[1] - 1)) > 0.02:
        raise DataError(f"query {q.name} has {qg[0]:g} x {qg[1]:g} pixels, the map {mg[0]:g} x {mg[1]:g}",
                        "resample the query to the map's pixel size (gdalwarp -tr)")
    cols, rows = mp.map_to_pixel(*q.pixel_to_map([0, w, 0, w], [0, 0, h, h]))
    c0, c1 = int(np.floor(cols.min())) - margin, int(np.ceil(cols.max())) + margin
    r0, r1 = int(np.floor(rows.min())) - margin, int(np.ceil(rows.max())) + margin
    if c1 <= 0 or r1 <= 0 or c0 >= mp.width or r0 >= mp.height:
        raise DataError(f"query {q.name} lies outside the map {mp.name} (its footprint plus {margin} px)",
                        "pass a query over the map, or --around LON,LAT,RADIUS_M / --window to search elsewhere")
    return max(c0, 0), max(r0, 0), min(c1, mp.width), min(r1, mp.height)


def _around_box(mp: GeoRaster, around: tuple[float, float, float], unit_m: float) -> tuple[int, int, int, int]:
    lon, lat, radius = around
    tr = require("pyproj", "geo").Transformer.from_crs("EPSG:4326", mp.crs, always_xy=True)
    x, y = tr.transform(lon, lat)
    col, row = (float(v) for v in mp.map_to_pixel(x, y))
    rc, rr = radius / unit_m / mp.gsd[0], radius / unit_m / mp.gsd[1]
    if not (0 <= col <= mp.width and 0 <= row <= mp.height):
        raise DataError(f"--around {lon},{lat} lies outside the map {mp.name} (map pixel {col:.0f}, {row:.0f} of "
                        f"{mp.width} x {mp.height})", "give a point over the map (lon/lat in WGS84 degrees)")
    return (max(int(np.floor(col - rc)), 0), max(int(np.floor(row - rr)), 0),
            min(int(np.ceil(col + rc)), mp.width), min(int(np.ceil(row + rr)), mp.height))


def register_on_map(map_path: str | Path, query_path: str | Path, around: str | tuple[float, float, float] | None = None,
                    window: str | tuple[int, int, int, int] | None = None, method: str = "cfog", *,
                    margin: int = 32, threshold: float | None = None, sar_units: str = "auto",
                    device: str = "auto") -> dict[str, Any]:
    """Register a SAR image in a georeferenced optical map without a trained model.

    Args:
        map_path: optical GeoTIFF (or image + world file) with a projected CRS.
        query_path: SAR image: a GeoTIFF in the map's CRS and pixel size, or a plain image taken to be
            at the map's pixel size; 1 band or 2 (averaged); dB or linear (see ``sar_units``).
        around: ``"LON,LAT,RADIUS_M"`` (or a tuple): search the square of that half-side around the point.
        window: ``"COL0,ROW0,COL1,ROW1"`` (or a tuple): search these map pixels (end exclusive).
        method: ``"cfog"`` (training-free oriented-gradient descriptor) or ``"ncc"`` (intensity baseline).
        margin: pixels around a georeferenced query's footprint searched when neither ``around`` nor
            ``window`` is given.
        threshold: the confidence (peak ratio) from which the match is trusted (default
            :data:`~sarbridge.tasks.geo.register.stage.DEFAULT_THRESHOLD`).
        sar_units: ``"auto"`` (negative values mean dB, else linear and converted), ``"db"`` or ``"linear"``.
        device: ``auto`` (a GPU when there is one), ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        A JSON-ready dict: ``x``, ``y`` (map CRS) and ``lon``, ``lat`` of the query's centre, ``col``,
        ``row`` (its map pixel position, pixel corners at integers), ``shift_px`` ``[dcol, drow]``,
        ``shift_m`` ``[dx east, dy north]``, ``shift_distance_m``, ``shift_reference``, ``confidence``,
        ``threshold``, ``confident``, ``error_radius_m``, ``error_radius_basis``, ``window``
        ``[col0, row0, col1, row1]``, ``window_source``, ``crs``, ``gsd_m``, ``method``, ``map``, ``query``.

    Raises:
        ConfigError: malformed or conflicting ``around`` / ``window``, unknown method or units.
        DataError: missing or unreadable files, NaNs, a window outside the map or too large, a query
            larger than the window or smaller than the descriptor's support, unusable band counts.
    """
    if method not in COMMAND_METHODS:
        raise ConfigError(f"unknown method '{method}'", f"use one of {', '.join(COMMAND_METHODS)}")
    if sar_units not in SAR_UNITS:
        raise ConfigError(f"unknown SAR units '{sar_units}'", f"use one of {', '.join(SAR_UNITS)}")
    if around is not None and window is not None:
        raise ConfigError("both --around and --window were given", "pass one of them")
    if margin < 0:
        raise ConfigError(f"negative margin {margin}", "use a margin >= 0 pixels")
    threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    aro = parse_around(around) if around is not None else None
    win = parse_window(window) if window is not None else None
    mpath, qpath = Path(map_path), Path(query_path)
    if not mpath.is_file():
        raise DataError(f"map '{mpath}' not found", "check the path")
    if not qpath.is_file():
        raise DataError(f"query '{qpath}' not found", "check the path")
    mp = read_georaster(mpath)
    unit_m = _metres_per_unit(mp)
    intensity = _map_intensity(mp)
    query, qgeo = _read_query(qpath, sar_units)
    h, w = query.shape
    support = 2 * cfog_border() + 1 if method == "cfog" else MIN_NCC_SIDE
    if min(h, w) < support:
        raise DataError(f"query '{qpath}' ({w} x {h} px) is smaller than the {method} descriptor's support "
                        f"({support} px)", f"use a query of at least {support} x {support} pixels")
    if win is not None:
        c0, r0, c1, r1 = win
        if c0 < 0 or r0 < 0 or c1 > mp.width or r1 > mp.height:
            raise DataError(f"--window {c0},{r0},{c1},{r1} lies outside the map {mp.name} ({mp.width} x {mp.height} px)",
                            f"give 0 <= COL0 < COL1 <= {mp.width} and 0 <= ROW0 < ROW1 <= {mp.height}")
        source = "window"
    elif aro is not None:
        c0, r0, c1, r1 = _around_box(mp, aro, unit_m)
        source = "around"
    elif qgeo is not None:
        c0, r0, c1, r1 = _query_box(mp, qgeo, h, w, margin)
        source = "query georeference"
    else:
        c0, r0, c1, r1 = 0, 0, mp.width, mp.height
        source = "whole map"
    ww, wh = c1 - c0, r1 - r0
    if max(ww, wh) > MAX_WINDOW_SIDE:
        raise DataError(f"the search window ({source}: {ww} x {wh} px) is larger than {MAX_WINDOW_SIDE} px a side",
                        "pass --around LON,LAT,RADIUS_M or --window COL0,ROW0,COL1,ROW1 to search a smaller part")
    if ww < w or wh < h:
        raise DataError(f"the query ({w} x {h} px) is larger than the search window ({source}: {ww} x {wh} px)",
                        "widen --window / the --around radius, or crop the query")
    res = register(query, intensity[r0:r1, c0:c1], method, device=resolve_device(device))
    col, row = c0 + res.col + w / 2.0, r0 + res.row + h / 2.0  # the query's centre, map pixel (corners at integers)
    if qgeo is not None:
        ref_x, ref_y = (float(v) for v in qgeo.pixel_to_map(w / 2.0, h / 2.0))
        ref_col, ref_row = (float(v) for v in mp.map_to_pixel(ref_x, ref_y))
        reference = "query georeference"
    else:
        ref_col, ref_row = (c0 + c1) / 2.0, (r0 + r1) / 2.0
        reference = "window centre"
    x, y = (float(v) for v in mp.pixel_to_map(col, row))
    rx, ry = (float(v) for v in mp.pixel_to_map(ref_col, ref_row))
    lon, lat = (float(v) for v in mp.to_lonlat(x, y))
    dx, dy = (x - rx) * unit_m, (y - ry) * unit_m
    gsd_m = [g * unit_m for g in mp.gsd]
    confident = bool(res.confidence >= threshold)
    if confident:
        radius, basis = max(gsd_m), "one map pixel: the confidence reaches the threshold"
    else:
        radius, basis = 0.5 * float(np.hypot(ww * gsd_m[0], wh * gsd_m[1])), \
            "half the search window's diagonal: the confidence is below the threshold, the match may lie anywhere in it"
    return {"map": str(mpath), "query": str(qpath), "method": method, "crs": mp.crs,
            "x": x, "y": y, "lon": lon, "lat": lat, "col": col, "row": row,
            "shift_px": [col - ref_col, row - ref_row], "shift_m": [dx, dy], "shift_distance_m": float(np.hypot(dx, dy)),
            "shift_reference": reference, "confidence": float(res.confidence), "threshold": float(threshold),
            "confident": confident, "error_radius_m": float(radius), "error_radius_basis": basis,
            "window": [c0, r0, c1, r1], "window_source": source, "gsd_m": gsd_m,
            "query_size_px": [w, h]}
