"""Readers of ready-made localisation sets into :class:`~sarbridge.tasks.geo.patches.LocalisationData`.

sarbridge JSON listing (:func:`read_geo_listing`; ``read_sn6_cmpc`` is its former name)
    sarbridge's own format for a localisation set of your own data, one JSON file (the released
    SN6-CMPC folders are read by :mod:`sarbridge.tasks.geo.sn6`)::

        {
          "crs": "EPSG:32631",            # optional projected CRS of x/y; default: the UTM zone
                                          # (EPSG:326xx north / 327xx south) of the mean lon/lat
          "patch_size_m": 100.0,          # optional footprint side (metres); default: the median
                                          # nearest-neighbour spacing of the references
          "references": [
            {"id": "r0", "image": "opt/r0.png",      # path relative to the JSON file
             "x": 627000.0, "y": 5757000.0,          # projected centre, or "lon"/"lat" (degrees)
             "footprint": [x0, y0, x1, y1],          # optional, projected metres
             "region": "test"}                       # optional area label (cross-area splits)
          ],
          "queries": [
            {"id": "q0", "image": "sar/q0.tif", "lon": 4.5, "lat": 52.0,
             "target": "r0",              # optional reference id; default: the largest footprint
                                          # overlap, else the nearest reference centre
             "near": ["r1"],              # optional reference ids; default: the other references
                                          # overlapping by >= min_overlap of the query footprint
             "split": "test",             # train | val | test (default test)
             "setting": "arbitrary",      # aligned | arbitrary (default arbitrary)
             "footprint": [x0, y0, x1, y1]}   # optional
          ]
        }

Geo manifest CSV (:func:`read_geo_manifest`)
    sarbridge's own CSV format. One image per row: ``path`` (relative to the CSV), ``role`` (``reference`` or ``query``), the
    centre as ``lon``, ``lat`` (degrees) or ``x``, ``y`` with a ``crs`` column (or the ``crs``
    argument), and optional ``id``, ``split`` (queries; default ``test``), ``setting`` (default
    ``arbitrary``), ``size_m`` (footprint side; default: the median nearest-neighbour spacing of
    the references) and ``target`` (a reference id; default: the largest overlap, else the
    nearest centre). Errors name the CSV line.

BigEarthNet S1/S2 (:func:`read_bigearthnet_localisation`)
    Every Sentinel-2 patch is a reference and its Sentinel-1 twin the query. There is no map
    projection: positions come from the MGRS tile and the grid row/column of 1,200 m cells,
    ``x = col * 1200 + 600`` and ``y = -(row * 1200 + 600)`` within a tile, tiles being shifted by
    ``1e7`` m each (in sorted order) so they are never near each other. The CRS is recorded as
    ``"LOCAL:mgrs-grid"`` and ``lon``/``lat`` are NaN. The near-misses of a query are its target's
    8-neighbour cells present in the set (adjacent, hard negatives), nearest first.

Every problem is a :class:`~sarbridge.core.errors.DataError` naming the file and the entry.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sarbridge.core.errors import DataError
from sarbridge.core.optional import require
from sarbridge.data.io import read_image
from sarbridge.data.pairs import read_bigearthnet_pairs
from sarbridge.tasks.geo.grid import box_overlap_areas
from sarbridge.tasks.geo.patches import SETTINGS, SPLITS, GeoQuery, GeoReference, LocalisationData

__all__ = [
    "ImageFile",
    "median_nn_spacing",
    "project_lonlat",
    "read_bigearthnet_localisation",
    "read_geo_listing",
    "read_geo_manifest",
    "read_sn6_cmpc",
    "utm_crs",
]

BIGEARTHNET_CELL_M = 1200.0
BIGEARTHNET_TILE_OFFSET_M = 1e7
BIGEARTHNET_CRS = "LOCAL:mgrs-grid"


@dataclass(frozen=True)
class ImageFile:
    """Picklable loader: :func:`~sarbridge.data.io.read_image` of ``path``."""

    path: str

    def __call__(self) -> np.ndarray:
        return read_image(self.path)


def utm_crs(lon: float, lat: float) -> str:
    """``EPSG:326zz`` (north) or ``EPSG:327zz`` (south) of the UTM zone holding ``lon, lat``
    (the Norway/Svalbard zone exceptions are ignored)."""
    zone = min(max(int(math.floor((lon + 180.0) / 6.0)) + 1, 1), 60)
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


@dataclass
class _Entry:
    where: str
    id: str
    image: str
    x: float | None = None
    y: float | None = None
    lon: float | None = None
    lat: float | None = None
    footprint: tuple[float, float, float, float] | None = None
    size: float | None = None
    region: str = ""
    split: str = "test"
    setting: str = "arbitrary"
    target: str | None = None
    near: list[str] | None = None


def _num(value: Any, key: str, where: str, hint: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not math.isfinite(v):
        raise DataError(f"{where}: '{key}' = {value!r} is not a finite number", hint)
    return v


def _crs(crs: Any, where: str) -> str:
    pyproj_crs = require("pyproj", "geo").CRS
    try:
        c = pyproj_crs.from_user_input(crs)
    except Exception:
        raise DataError(f"{where}: unknown CRS {str(crs)[:60]!r}", "give an EPSG code such as EPSG:32631") from None
    if c.is_geographic:
        raise DataError(f"{where}: CRS {str(crs)[:60]} is geographic (degrees)",
                        "give positions as lon/lat and a projected CRS (metres), or leave the CRS out for UTM")
    code = c.to_epsg()
    return f"EPSG:{code}" if code else c.to_wkt()


def median_nn_spacing(xy: np.ndarray) -> float | None:
    """Median distance of each ``(N, 2)`` point to its nearest other point (chunked, no O(N^2)
    memory); None for fewer than two points."""
    if len(xy) < 2:
        return None
    nn = np.empty(len(xy))
    for s in range(0, len(xy), 1024):
        d2 = ((xy[s:s + 1024, None, :] - xy[None, :, :]) ** 2).sum(-1)
        d2[np.arange(d2.shape[0]), np.arange(s, s + d2.shape[0])] = np.inf
        nn[s:s + 1024] = np.sqrt(d2.min(axis=1))
    return float(np.median(nn))


def project_lonlat(crs: str, where: str) -> Callable[[float, float], tuple[float, float]]:
    """``(x, y) -> (lon, lat)`` from the projected ``crs`` (validated; ``where`` names the source).

    Raises:
        DataError: an unknown or geographic CRS.
    """
    inv = require("pyproj", "geo").Transformer.from_crs(_crs(crs, where), "EPSG:4326", always_xy=True)

    def to_lonlat(x: float, y: float) -> tuple[float, float]:
        lon, lat = inv.transform(x, y)
        return float(lon), float(lat)

    return to_lonlat


def _check_entry(e: _Entry, base: Path) -> None:
    if not (base / e.image).is_file():
        raise DataError(f"{e.where}: image '{base / e.image}' not found", "check the path (relative to the listing file)")
    if e.split not in SPLITS:
        raise DataError(f"{e.where}: unknown split '{e.split}'", f"use one of {', '.join(SPLITS)}")
    if e.setting not in SETTINGS:
        raise DataError(f"{e.where}: unknown setting '{e.setting}'", f"use one of {', '.join(SETTINGS)}")
    if (e.x is None or e.y is None) and (e.lon is None or e.lat is None):
        raise DataError(f"{e.where}: no position", "give x and y (projected metres) or lon and lat (degrees)")


def _assemble(refs: list[_Entry], queries: list[_Entry], crs: str | None, size: float | None, source: Path,
              name: str, layout: str, min_overlap: float) -> LocalisationData:
    """Project, size and link reference/query entries into :class:`LocalisationData`."""
    transformer = require("pyproj", "geo").Transformer
    base = source.parent
    entries = refs + queries
    for e in entries:
        _check_entry(e, base)
    inferred = crs is None
    if crs is None:
        xy_only = next((e for e in entries if e.lon is None or e.lat is None), None)
        if xy_only is not None:
            raise DataError(f"{xy_only.where}: projected x/y position without a CRS",
                            "give the CRS (e.g. EPSG:32631) or lon/lat positions")
        ll = np.array([[e.lon, e.lat] for e in entries], dtype=np.float64)
        crs = utm_crs(float(ll[:, 0].mean()), float(ll[:, 1].mean()))
    fwd = transformer.from_crs("EPSG:4326", crs, always_xy=True)
    inv = transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    for e in entries:
        if e.x is None or e.y is None:
            e.x, e.y = (float(v) for v in fwd.transform(e.lon, e.lat))
        elif e.lon is None or e.lat is None:
            e.lon, e.lat = (float(v) for v in inv.transform(e.x, e.y))
        if not all(math.isfinite(v) for v in (e.x, e.y)):
            raise DataError(f"{e.where}: position cannot be projected to {crs[:40]}", "check lon/lat (degrees) and the CRS")
    if size is None and any(e.footprint is None and e.size is None for e in entries):
        size = median_nn_spacing(np.array([[e.x, e.y] for e in refs], dtype=np.float64))
        if not size:
            raise DataError(f"'{source}': cannot infer the footprint size from {len(refs)} reference position(s)",
                            "give the footprint side (patch_size_m / size_m) or footprints")

    def fp(e: _Entry) -> tuple[float, float, float, float]:
        if e.footprint is not None:
            return e.footprint
        h = (e.size or size) / 2.0  # type: ignore[operator]
        return (e.x - h, e.y - h, e.x + h, e.y + h)  # type: ignore[operator]

    ids: dict[str, int] = {}
    for i, e in enumerate(refs):
        if e.id in ids:
            raise DataError(f"{e.where}: duplicate reference id '{e.id}'", "give every reference a unique id")
        ids[e.id] = i
    out_refs = [GeoReference(i, e.x, e.y, e.lon, e.lat, fp(e), str(base / e.image),  # type: ignore[arg-type]
                             ImageFile(str(base / e.image)), e.region) for i, e in enumerate(refs)]
    ref_fps = np.array([r.footprint for r in out_refs], dtype=np.float64)
    centres = np.array([[r.x, r.y] for r in out_refs], dtype=np.float64)
    out_q = []
    for j, e in enumerate(queries):
        f = fp(e)
        for key, vals in (("target", [e.target] if e.target is not None else []), ("near", e.near or [])):
            bad = [v for v in vals if v not in ids]
            if bad:
                raise DataError(f"{e.where}: {key} '{bad[0]}' is not a reference id", "use the id of a listed reference")
        areas = box_overlap_areas(ref_fps, f)
        if e.target is not None:
            target = ids[e.target]
        elif areas.max() > 0:
            target = int(np.argmax(areas))
        else:
            target = int(np.argmin(((centres - [e.x, e.y]) ** 2).sum(1)))
        if e.near is not None:
            near = tuple(ids[n] for n in e.near if ids[n] != target)
        else:
            idx = np.flatnonzero((areas > 0) & (areas >= min_overlap * (f[2] - f[0]) * (f[3] - f[1])))
            idx = idx[idx != target]
            near = tuple(int(i) for i in idx[np.lexsort((idx, -areas[idx]))])
        out_q.append(GeoQuery(j, e.x, e.y, e.lon, e.lat, target, near, e.split,  # type: ignore[arg-type]
                              e.setting, str(base / e.image), ImageFile(str(base / e.image)), f))
    meta = {"layout": layout, "source": str(source), "footprint_m": size, "crs_inferred": inferred}
    return LocalisationData(out_refs, out_q, crs, name, meta)


# --- sarbridge JSON listing -------------------------------------------------------------------------------

def _json_entry(d: Any, where: str, query: bool) -> _Entry:
    hint = "see the schema in the sarbridge.tasks.geo.readers docstring"
    if not isinstance(d, dict):
        raise DataError(f"{where} is not an object", hint)
    for key in ("id", "image"):
        if key not in d or d[key] in (None, ""):
            raise DataError(f"{where} lacks '{key}'", hint)
    where = f"{where} (id '{d['id']}')"
    e = _Entry(where, str(d["id"]), str(d["image"]))
    if "x" in d or "y" in d:
        e.x, e.y = _num(d.get("x"), "x", where, hint), _num(d.get("y"), "y", where, hint)
    if "lon" in d or "lat" in d:
        e.lon, e.lat = _num(d.get("lon"), "lon", where, hint), _num(d.get("lat"), "lat", where, hint)
    if d.get("footprint") is not None:
        f = d["footprint"]
        if not isinstance(f, list) or len(f) != 4:
            raise DataError(f"{where}: footprint {f!r} is not [x0, y0, x1, y1]", hint)
        x0, y0, x1, y1 = (_num(v, "footprint", where, hint) for v in f)
        if not (x0 < x1 and y0 < y1):
            raise DataError(f"{where}: footprint {f!r} is empty", "give [x0, y0, x1, y1] with x0 < x1 and y0 < y1")
        e.footprint = (x0, y0, x1, y1)
    if query:
        e.split, e.setting = str(d.get("split", "test")), str(d.get("setting", "arbitrary"))
        e.target = None if d.get("target") is None else str(d["target"])
        if d.get("near") is not None:
            if not isinstance(d["near"], list):
                raise DataError(f"{where}: near {d['near']!r} is not a list of reference ids", hint)
            e.near = [str(n) for n in d["near"]]
    else:
        e.region = str(d.get("region", "") or "")
    return e


def read_geo_listing(path_json: str | Path, min_overlap: float = 0.01) -> LocalisationData:
    """Read a sarbridge JSON listing (schema in the module docstring).

    Args:
        path_json: the JSON file; image paths are relative to its folder.
        min_overlap: smallest overlap of a computed near-miss, as a fraction of the query
            footprint.

    Returns:
        The :class:`LocalisationData` (``crs`` = the file's CRS or the UTM zone of its positions).

    Raises:
        DataError: unreadable JSON, missing keys, unknown ids/splits/settings, missing images.
    """
    p = Path(path_json)
    if not p.is_file():
        raise DataError(f"sarbridge JSON listing '{p}' not found", "check the path")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"sarbridge JSON listing '{p}' is not valid JSON ({str(exc)[:80]})", "fix the file") from None
    hint = "see the schema in the sarbridge.tasks.geo.readers docstring"
    if not isinstance(doc, dict):
        raise DataError(f"sarbridge JSON listing '{p}' does not hold a JSON object", hint)
    for key in ("references", "queries"):
        if not isinstance(doc.get(key), list) or not doc[key]:
            raise DataError(f"sarbridge JSON listing '{p}' lacks a non-empty '{key}' list", hint)
    crs = _crs(doc["crs"], f"'{p}'") if doc.get("crs") else None
    size = None
    if doc.get("patch_size_m") is not None:
        size = _num(doc["patch_size_m"], "patch_size_m", f"'{p}'", "give the footprint side in metres")
        if size <= 0:
            raise DataError(f"'{p}': patch_size_m must be positive, got {size}", "give the footprint side in metres")
    refs = [_json_entry(d, f"'{p}': references[{i}]", False) for i, d in enumerate(doc["references"])]
    queries = [_json_entry(d, f"'{p}': queries[{i}]", True) for i, d in enumerate(doc["queries"])]
    return _assemble(refs, queries, crs, size, p, f"geo listing {p.stem}", "geo-listing", min_overlap)


#: Former name of :func:`read_geo_listing` (kept for existing code).
read_sn6_cmpc = read_geo_listing


# --- manifest CSV ------------------------------------------------------------------------------

def read_geo_manifest(path_csv: str | Path, crs: str | None = None, size_m: float | None = None,
                      min_overlap: float = 0.01) -> LocalisationData:
    """Read a geo manifest CSV (columns in the module docstring).

    Args:
        path_csv: the CSV; image paths are relative to its folder.
        crs: CRS of ``x``/``y`` columns (overrides a ``crs`` column); lon/lat rows are projected
            to it, or to the UTM zone of their mean position when no CRS is known.
        size_m: footprint side for rows without ``size_m`` (default: the median
            nearest-neighbour spacing of the references).
        min_overlap: smallest overlap of a near-miss, as a fraction of the query footprint.

    Returns:
        The :class:`LocalisationData`.

    Raises:
        DataError: missing columns or values, unknown roles/splits/settings/targets, missing
            images, mixed CRSs; messages give ``file:line``.
    """
    p = Path(path_csv)
    if not p.is_file():
        raise DataError(f"geo manifest '{p}' not found", "check the path")
    hint = "see the column list in the sarbridge.tasks.geo.readers docstring"
    refs: list[_Entry] = []
    queries: list[_Entry] = []
    crs_values: set[str] = set()
    with p.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        missing = [c for c in ("path", "role") if c not in cols]
        if missing or not ({"lon", "lat"} <= cols or {"x", "y"} <= cols):
            need = ", ".join(missing) if missing else "lon, lat (or x, y)"
            raise DataError(f"geo manifest '{p}' lacks column(s) {need}", hint)
        for line, row in enumerate(reader, start=2):
            where = f"{p}:{line}"
            get = {k: (v or "").strip() for k, v in row.items() if k is not None}
            role = get.get("role", "").lower()
            if role not in ("reference", "query"):
                raise DataError(f"{where}: role '{get.get('role', '')}' is not reference or query", hint)
            if not get.get("path"):
                raise DataError(f"{where}: empty path", hint)
            e = _Entry(where, get.get("id") or f"line{line}", get["path"])
            if get.get("x") or get.get("y"):
                e.x, e.y = _num(get.get("x"), "x", where, hint), _num(get.get("y"), "y", where, hint)
                if get.get("crs"):
                    crs_values.add(get["crs"])
            if get.get("lon") or get.get("lat"):
                e.lon, e.lat = _num(get.get("lon"), "lon", where, hint), _num(get.get("lat"), "lat", where, hint)
            if get.get("size_m"):
                e.size = _num(get["size_m"], "size_m", where, "give the footprint side in metres")
                if e.size <= 0:
                    raise DataError(f"{where}: size_m must be positive, got {e.size}", "give the footprint side in metres")
            e.split = get.get("split") or "test"
            e.setting = get.get("setting") or "arbitrary"
            e.target = get.get("target") or None
            if role == "query":
                queries.append(e)
            else:
                e.split, e.setting = "test", "arbitrary"  # unused for references
                refs.append(e)
    if not refs or not queries:
        raise DataError(f"geo manifest '{p}' has {len(refs)} reference and {len(queries)} query rows",
                        "list at least one reference and one query")
    if crs is None and len(crs_values) > 1:
        raise DataError(f"geo manifest '{p}' mixes CRSs ({', '.join(sorted(crs_values))[:120]})",
                        "reproject all x/y to one CRS or use lon/lat")
    if crs is None and crs_values:
        crs = next(iter(crs_values))
    crs_s = _crs(crs, f"geo manifest '{p}'") if crs else None
    if size_m is not None and size_m <= 0:
        raise DataError(f"size_m must be positive, got {size_m}", "give the footprint side in metres")
    return _assemble(refs, queries, crs_s, size_m, p, f"geo manifest {p.stem}", "geo-manifest", min_overlap)


# --- BigEarthNet -------------------------------------------------------------------------------

def read_bigearthnet_localisation(root: str | Path, val_fraction: float = 0.0, seed: int = 0) -> LocalisationData:
    """BigEarthNet S1/S2 pairs as a localisation set on the MGRS grid (see the module docstring).

    Args:
        root: the BigEarthNet pair folder (``s1/``, ``s2/``, optional ``pairs.csv``).
        val_fraction: seeded fraction of the queries moved from ``test`` to ``val``.
        seed: seed of that choice.

    Returns:
        The :class:`LocalisationData` (``crs`` = ``"LOCAL:mgrs-grid"``, ``lon``/``lat`` NaN).

    Raises:
        DataError: reader problems (:func:`~sarbridge.data.pairs.read_bigearthnet_pairs`), a patch
            without MGRS tile and grid cell, or an invalid ``val_fraction``.
    """

    if not 0.0 <= val_fraction <= 1.0:
        raise DataError(f"val_fraction {val_fraction} is out of range", "use a fraction in [0, 1]")
    items = read_bigearthnet_pairs(root)
    cells = []
    for it in items:
        try:
            cells.append((str(it.meta["mgrs_tile"]), int(it.meta["grid_row"]), int(it.meta["grid_col"])))
        except (KeyError, ValueError):
            raise DataError(f"BigEarthNet patch '{it.key}' in '{root}' has no MGRS tile and grid row/column",
                            "name patches ..._TILE_ROW_COL or give mgrs_tile, grid_row, grid_col in pairs.csv") from None
    tiles = {t: k for k, t in enumerate(sorted({c[0] for c in cells}))}
    half = BIGEARTHNET_CELL_M / 2.0
    xy = np.array([[tiles[t] * BIGEARTHNET_TILE_OFFSET_M + c * BIGEARTHNET_CELL_M + half, -(r * BIGEARTHNET_CELL_M + half)]
                   for t, r, c in cells], dtype=np.float64).reshape(-1, 2)
    at = {cell: i for i, cell in reversed(list(enumerate(cells)))}
    rng = np.random.default_rng(seed)
    n_val = int(round(val_fraction * len(items)))
    val = set(rng.permutation(len(items))[:n_val].tolist())
    refs, queries = [], []
    nan = float("nan")
    for i, (it, (t, r, c)) in enumerate(zip(items, cells)):
        x, y = float(xy[i, 0]), float(xy[i, 1])
        fp = (x - half, y - half, x + half, y + half)
        refs.append(GeoReference(i, x, y, nan, nan, fp, it.key, it.optical))  # type: ignore[arg-type]
        neigh = sorted((dr * dr + dc * dc, at[(t, r + dr, c + dc)]) for dr in (-1, 0, 1) for dc in (-1, 0, 1)
                        if (dr or dc) and (t, r + dr, c + dc) in at)
        sar_source = getattr(it.sar, "path", None) or f"{it.key} (S1)"
        queries.append(GeoQuery(i, x, y, nan, nan, i, tuple(j for _, j in neigh), "val" if i in val else "test",
                                "aligned", str(sar_source), it.sar, fp))  # type: ignore[arg-type]
    meta = {"layout": "bigearthnet", "root": str(root), "cell_m": BIGEARTHNET_CELL_M,
            "tile_offset_m": BIGEARTHNET_TILE_OFFSET_M, "tiles": list(tiles),
            "crs_note": "local MGRS-grid coordinates: x = col*1200+600, y = -(row*1200+600), +1e7 m per tile"}
    return LocalisationData(refs, queries, BIGEARTHNET_CRS, f"BigEarthNet {Path(root).name}", meta)
