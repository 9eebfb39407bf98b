"""SN6-CMPC in its released layout (as CMPC's ``data/dataset_sn6loc.py`` and ``test.py`` read it).

Layout (``ROOT`` is a variant folder such as ``SN6-CMPC/samearea``)::

    ROOT/{train,test}/annotations/opt/<name>.json   {"id", "pos": {"x", "y"}, "file_path", ...}
    ROOT/{train,test}/annotations/sar/<name>.json   {"id", "pos": {"x", "y"}, "file_path", "near_id": [...]}
    ROOT/{train,test}/imgs/{opt,sar}/<file_path>

* ``file_path`` is relative to ``ROOT/<split>/imgs/<modality>/``.
* Every optical patch is a reference; references of ``train/`` get region ``train``, those of
  ``test/`` region ``test``, so training queries search the training references and test
  queries the test references (CMPC's galleries), also for same-area sets.
* The match of a SAR query is the optical patch with the query's ``id`` (CMPC's evaluation
  compares ids; ``near_id`` lists the nearest optical ids, the first being that match). When
  the ``id`` names no optical patch of the split, ``near_id[0]`` is used. Queries whose ``id``
  and ``near_id[0]`` differ are counted in ``meta["id_near_mismatch"]``.
* Near-misses are ``near_id[1:]`` (CMPC samples its semi-positives from ``near_id[1:4]``); without
  ``near_id`` the references overlapping the query footprint.
* ``pos`` is used as ``x, y`` unchanged. Its units are not stated by CMPC (it reports errors in
  "m"); the CRS is recorded as ``LOCAL:sn6-cmpc-pos`` and ``lon``/``lat`` are NaN unless a
  projected ``crs`` is given. Footprints are squares of side ``patch_size`` (pos units;
  default: the median nearest-neighbour spacing of the references).
* Queries of ``train/`` are split ``train`` (a seeded ``val_fraction`` of them ``val``), those of
  ``test/`` split ``test``. JSON files are read in the numeric order of their names.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from sarbridge.core.errors import DataError
from sarbridge.tasks.geo.grid import box_overlap_areas
from sarbridge.tasks.geo.patches import SETTINGS, GeoQuery, GeoReference, LocalisationData
from sarbridge.tasks.geo.readers import ImageFile, median_nn_spacing, project_lonlat

__all__ = ["CMPC_SN6_CRS", "CMPC_SPLITS", "is_cmpc_sn6_folder", "read_cmpc_sn6"]

#: CRS recorded for ``pos`` coordinates of unknown projection.
CMPC_SN6_CRS = "LOCAL:sn6-cmpc-pos"
#: Split folders of the layout.
CMPC_SPLITS = ("train", "test")
_HINT = "the SN6-CMPC layout is ROOT/{train,test}/annotations/{opt,sar}/<id>.json + ROOT/{train,test}/imgs/{opt,sar}/"


def is_cmpc_sn6_folder(root: str | Path) -> bool:
    """True when ``root`` holds ``<split>/annotations/{opt,sar}`` for ``train`` or ``test``."""
    r = Path(root)
    return any((r / s / "annotations" / "opt").is_dir() and (r / s / "annotations" / "sar").is_dir()
               for s in CMPC_SPLITS)


def _name_key(p: Path) -> tuple[int, str]:
    m = re.search(r"\d+", p.stem)
    return (int(m.group()) if m else -1, p.name)


def _read_annotations(folder: Path, img_dir: Path, sar: bool) -> list[dict[str, Any]]:
    out = []
    for p in sorted(folder.glob("*.json"), key=_name_key):
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"annotation '{p}' is not valid JSON ({str(exc)[:80]})", "fix or remove the file") from None
        if not isinstance(d, dict):
            raise DataError(f"annotation '{p}' does not hold a JSON object", _HINT)
        for key in ("id", "pos", "file_path"):
            if d.get(key) is None:
                raise DataError(f"annotation '{p}' lacks '{key}'", _HINT)
        pos = d["pos"]
        try:
            x, y = float(pos["x"]), float(pos["y"])
        except (TypeError, KeyError, ValueError):
            raise DataError(f"annotation '{p}': pos {str(pos)[:60]} is not {{\"x\": .., \"y\": ..}}", _HINT) from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise DataError(f"annotation '{p}': pos ({x}, {y}) is not finite", "fix the position")
        image = img_dir / str(d["file_path"])
        if not image.is_file():
            raise DataError(f"annotation '{p}': image '{image}' not found", "file_path is relative to imgs/<modality>/")
        near = d.get("near_id")
        if sar and near is not None and not isinstance(near, list):
            raise DataError(f"annotation '{p}': near_id {str(near)[:60]} is not a list of optical ids", _HINT)
        out.append({"where": str(p), "id": str(d["id"]), "x": x, "y": y, "image": str(image),
                    "near": [str(n) for n in near] if sar and near else None})
    return out


def read_cmpc_sn6(root: str | Path, setting: str = "arbitrary", patch_size: float | None = None,
                  crs: str | None = None, val_fraction: float = 0.0, seed: int = 0,
                  min_overlap: float = 0.01) -> LocalisationData:
    """Read an SN6-CMPC variant folder in its released layout (module docstring).

    Args:
        root: the variant folder (e.g. ``SN6-CMPC/samearea``) holding ``train/`` and/or ``test/``.
        setting: ``aligned`` or ``arbitrary`` (the variant's query setting, for reports).
        patch_size: footprint side in ``pos`` units (default: median reference spacing).
        crs: projected CRS of ``pos`` (then lon/lat are computed); default: unknown (NaN).
        val_fraction: seeded fraction of the training queries moved to ``val``.
        seed: seed of that choice.
        min_overlap: smallest overlap of a computed near-miss (queries without ``near_id``), as a
            fraction of the query footprint.

    Returns:
        The :class:`LocalisationData`; ``meta`` holds ``layout="sn6-cmpc"``, the per-split counts
        and ``id_near_mismatch``.

    Raises:
        DataError: no split folder, malformed or missing annotations or images, duplicate optical
            ids, a query whose match is no optical id of its split, bad arguments.
    """
    r = Path(root)
    if not r.is_dir() or not is_cmpc_sn6_folder(r):
        raise DataError(f"'{r}' is not an SN6-CMPC folder", _HINT)
    if setting not in SETTINGS:
        raise DataError(f"unknown setting '{setting}'", f"use one of {', '.join(SETTINGS)}")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction {val_fraction} is out of range", "use a fraction in [0, 1)")
    if patch_size is not None and patch_size <= 0:
        raise DataError(f"patch_size must be positive, got {patch_size}", "give the footprint side in pos units")
    splits = [s for s in CMPC_SPLITS if (r / s / "annotations" / "opt").is_dir()]
    anns = {}
    for s in splits:
        base = r / s
        for mod in ("opt", "sar"):
            if not (base / "annotations" / mod).is_dir():
                raise DataError(f"'{base / 'annotations' / mod}' not found", _HINT)
        anns[s] = (_read_annotations(base / "annotations" / "opt", base / "imgs" / "opt", False),
                   _read_annotations(base / "annotations" / "sar", base / "imgs" / "sar", True))
        if not anns[s][0] or not anns[s][1]:
            raise DataError(f"'{base}' has {len(anns[s][0])} optical and {len(anns[s][1])} SAR annotations",
                            "each split needs both")
    all_xy = np.array([[e["x"], e["y"]] for s in splits for e in anns[s][0]], dtype=np.float64)
    size = patch_size if patch_size is not None else median_nn_spacing(all_xy)
    if not size:
        raise DataError(f"'{r}': cannot infer the footprint size from {len(all_xy)} reference(s)",
                        "give data.patch_size_m (the footprint side in pos units)")
    half = size / 2.0
    lonlat = project_lonlat(crs, f"'{r}'") if crs else None

    def ll(x: float, y: float) -> tuple[float, float]:
        return lonlat(x, y) if lonlat is not None else (float("nan"), float("nan"))

    refs: list[GeoReference] = []
    queries: list[GeoQuery] = []
    mismatch = 0
    counts: dict[str, Any] = {}
    rng = np.random.default_rng(seed)
    for s in splits:
        opts, sars = anns[s]
        ids: dict[str, int] = {}
        for e in opts:
            if e["id"] in ids:
                raise DataError(f"annotation '{e['where']}': optical id '{e['id']}' repeats in {s}/",
                                "give every optical patch a unique id")
            ids[e["id"]] = len(refs)
            fp = (e["x"] - half, e["y"] - half, e["x"] + half, e["y"] + half)
            refs.append(GeoReference(len(refs), e["x"], e["y"], *ll(e["x"], e["y"]), fp, e["image"],
                                     ImageFile(e["image"]), s))
        first = refs[ids[opts[0]["id"]]].index
        split_fps = np.array([rf.footprint for rf in refs[first:]], dtype=np.float64)
        n_val = int(round(val_fraction * len(sars))) if s == "train" else 0
        val = set(rng.permutation(len(sars))[:n_val].tolist())
        for j, e in enumerate(sars):
            near_ids = e["near"] or []
            if e["id"] in ids:
                target = ids[e["id"]]
            elif near_ids and near_ids[0] in ids:
                target = ids[near_ids[0]]
            else:
                raise DataError(f"annotation '{e['where']}': neither id '{e['id']}' nor near_id[0] is an optical id of {s}/",
                                "the SAR id (or near_id[0]) must name the matching optical patch")
            if near_ids and near_ids[0] != e["id"]:
                mismatch += 1
            fp = (e["x"] - half, e["y"] - half, e["x"] + half, e["y"] + half)
            if e["near"] is not None:
                near = tuple(dict.fromkeys(ids[n] for n in near_ids if n in ids and ids[n] != target))
            else:
                areas = box_overlap_areas(split_fps, fp)
                idx = np.flatnonzero((areas > 0) & (areas >= min_overlap * size * size)) + first
                idx = idx[idx != target]
                near = tuple(int(i) for i in idx[np.lexsort((idx, -areas[idx - first]))])
            split = "test" if s == "test" else ("val" if j in val else "train")
            queries.append(GeoQuery(len(queries), e["x"], e["y"], *ll(e["x"], e["y"]), target, near, split, setting,
                                    e["image"], ImageFile(e["image"]), fp))
        counts[s] = {"references": len(opts), "queries": len(sars)}
    meta = {"layout": "sn6-cmpc", "root": str(r), "footprint_m": size, "footprint_inferred": patch_size is None,
            "splits": counts, "id_near_mismatch": mismatch, "pos_units": "as given by pos (CMPC reports metres)"}
    return LocalisationData(refs, queries, crs or CMPC_SN6_CRS, f"SN6-CMPC {r.name}", meta)
