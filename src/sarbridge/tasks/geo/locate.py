"""Locating a SAR patch on a georeferenced optical map's reference index.

The index is built by :func:`sarbridge.tasks.geo.map_index.build_geo_index` (vectors, per-patch metadata
with map and lon/lat coordinates, checksums, plus a copy of the model bundle, so an index folder is
self-contained). ``locate`` embeds a query, searches the index, refines the top-k with the graph
network and returns the estimated position, an error radius and the candidates.

Error radius: the score-weighted spread ``sqrt(sum p_i |x_i - x̂|^2)`` of the nodes averaged into
the position, never less than half a patch side (the resolution of the reference grid).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarbridge.core.errors import DataError
from sarbridge.core.optional import require
from sarbridge.core.utils import file_digest, resolve_device
from sarbridge.data.georaster import read_georaster
from sarbridge.data.io import read_image
from sarbridge.data.records import SAR
from sarbridge.retrieval.index import EmbeddingIndex
from sarbridge.tasks.geo.bundle import GeoModel, load_geo_model
from sarbridge.tasks.geo.datasets import MODALITY_INDEX, prepare_patch
from sarbridge.tasks.geo.grid import validate_sar
from sarbridge.tasks.geo.refine import gather_candidates
from sarbridge.tasks.geo.register.evaluation import MapRegistrar
from sarbridge.tasks.geo.register.stage import DEFAULT_THRESHOLD
from sarbridge.tasks.geo.stages import RADIUS_QUANTILE, calibrated_radius

MODEL_FILE = "geo_model.pt"


def _read_query(path: Path, crs: str, bounds: list[float]) -> tuple[np.ndarray, dict[str, Any]]:
    """Query pixels (H, W) and what its own georeference says (if it has one)."""
    if not Path(path).is_file():
        raise DataError(f"query '{path}' not found", "pass an existing SAR image file to --query")

    facts: dict[str, Any] = {}
    try:
        raster = read_georaster(path)
    except DataError as exc:
        if "no CRS" not in exc.message and "no geotransform" not in exc.message:
            raise
        raster = None
    if raster is None:
        arr = read_image(path)
        if arr.ndim == 3 and arr.shape[-1] > 2:
            raise DataError(f"query '{path}' has {arr.shape[-1]} bands; a SAR query has 1 (intensity) or 2 (VV/VH)",
                            "pass the SAR patch, not an optical image")
        return (arr.mean(axis=-1) if arr.ndim == 3 else arr), facts

    validate_sar(raster)
    pyproj_crs = require("pyproj", "geo").CRS
    if not pyproj_crs.from_user_input(raster.crs).equals(pyproj_crs.from_user_input(crs)):
        raise DataError(f"query '{path}' is in {raster.crs[:40]} but the map index is in {crs[:40]}",
                        "reproject the query to the map's CRS (e.g. gdalwarp -t_srs)")
    left, bottom, right, top = raster.bounds
    if right <= bounds[0] or left >= bounds[2] or top <= bounds[1] or bottom >= bounds[3]:
        raise DataError(f"query '{path}' lies outside the map (query {left:.0f},{bottom:.0f}..{right:.0f},{top:.0f}; "
                        f"map {bounds[0]:.0f},{bounds[1]:.0f}..{bounds[2]:.0f},{bounds[3]:.0f})",
                        "pass a query over the indexed map, or index the map that covers it")
    cx, cy = (left + right) / 2, (bottom + top) / 2
    facts.update({"georeferenced": True, "x": cx, "y": cy, "extent_m": [right - left, top - bottom]})
    arr = raster.array.astype(np.float32).mean(axis=0)
    return arr, facts


def _check_query_size(arr: np.ndarray, facts: dict[str, Any], info: dict[str, Any], path: Path) -> None:
    side_m = float(info.get("patch_size_m") or 0)
    if facts.get("extent_m") and side_m > 0:
        ratio = max(facts["extent_m"]) / side_m
        if not 0.25 <= ratio <= 4.0:
            raise DataError(f"query '{path}' covers {max(facts['extent_m']):.0f} m, the index patches {side_m:.0f} m",
                            "crop the query to about one reference patch (see the index's patch_size_m)")
    elif min(arr.shape[:2]) < 8:
        raise DataError(f"query '{path}' is only {arr.shape[1]}x{arr.shape[0]} pixels", "pass a patch of at least 8x8")


class GeoLocator:
    """A geo index and its model, loaded once, answering many :meth:`locate` calls.

    Args:
        index_dir: folder from :func:`~sarbridge.tasks.geo.map_index.build_geo_index`.
        device: ``auto``, ``cpu`` or ``cuda``.
        index: the index of ``index_dir`` when the caller has already loaded it.

    Raises:
        DataError: the index is damaged, or its model file is missing or does not match it.
    """

    def __init__(self, index_dir: str | Path, device: str = "auto", index: Any | None = None) -> None:
        self.index_dir = Path(index_dir)
        self.index = index if index is not None else EmbeddingIndex.load(self.index_dir)
        self.info: dict[str, Any] = dict(self.index.info or {})
        model_file = self.index_dir / MODEL_FILE
        if not model_file.is_file() or file_digest(model_file) != self.info.get("model_sha256"):
            raise DataError(f"index '{self.index_dir}' lacks its model or the model does not match the index",
                            "rebuild it with 'sarbridge index build --map'")
        self.model: GeoModel = load_geo_model(model_file)
        self.device = resolve_device(device)
        self.encoder = self.model.encoder.to(self.device).eval()
        self.refiner = self.model.refiner.to(self.device).eval() if self.model.refiner is not None else None
        self.registrar: MapRegistrar | None = None  # the map, read on the first registration

    @property
    def choice(self) -> dict[str, Any] | None:
        """The stages validation chose for this model (``info["stage_choice"]``), or None (older bundles)."""
        c = self.model.info.get("stage_choice")
        return c if isinstance(c, dict) else None

    def _stage(self) -> tuple[bool, str]:
        """Whether to use the graph refinement, and one line saying why."""
        c = self.choice
        if self.refiner is None:
            return False, "coarse retrieval (the model has no graph refiner)"
        if c is None:
            return True, "graph refinement (no validation choice recorded for this model)"
        if c.get("retrieval") == "refined":
            return True, f"graph refinement (it helped on the {c.get('split', 'val')} split)"
        return False, (f"coarse retrieval: the graph refinement did not help on the {c.get('split', 'val')} split, "
                       "so it is not used")

    def locate(self, query_path: str | Path, k: int = 10, register: bool | None = None) -> dict[str, Any]:
        """Estimate where the SAR patch ``query_path`` lies on the indexed map (see :func:`locate`)."""
        c = self.choice
        if register is None:
            register = bool(c and c.get("register"))
        depth = max(k, self.model.cfg.eval.register.top_k) if register else k
        res, pixels, true_xy = self._retrieve(query_path, depth)
        if register:
            res["registration"] = locate_registration(self, res, pixels, true_xy)
        res["candidates"] = res["candidates"][:k]
        return res

    def _retrieve(self, query_path: str | Path, k: int) -> tuple[dict[str, Any], np.ndarray, tuple[float, float] | None]:
        qpath, index, info, model, dev = Path(query_path), self.index, self.info, self.model, self.device
        arr, facts = _read_query(qpath, str(info.get("crs", "")), list(info.get("bounds", [0, 0, 0, 0])))
        _check_query_size(arr, facts, info, qpath)
        x = prepare_patch(arr, SAR, model.spec, f"'{qpath}'").unsqueeze(0).to(dev)
        with torch.no_grad():
            q = self.encoder.embed(x, torch.tensor([MODALITY_INDEX[SAR]], device=dev)).float().cpu()
        depth = min(max(k, model.cfg.refine.top_k), len(index))
        scores, ids = index.search(q.numpy(), depth)
        scores, ids = np.asarray(scores)[0], np.asarray(ids, dtype=np.int64)[0]
        meta = index.metadata
        xy = np.array([[meta[i]["x"], meta[i]["y"]] for i in ids], dtype=np.float64)
        half = 0.5 * float(info.get("patch_size_m") or 0.0)
        order = np.arange(len(ids))
        use_refiner, stage_note = self._stage()
        coarse_chosen = self.choice is not None and not use_refiner
        if use_refiner and self.refiner is not None and len(ids) >= 2:
            kk = min(model.cfg.refine.top_k, len(ids))
            ref_emb = torch.as_tensor(index.embeddings(ids[:kk]), dtype=torch.float32)
            inp = gather_candidates(q, ref_emb, torch.as_tensor(xy[:kk], dtype=torch.float32), torch.arange(kk)[None],
                                    torch.as_tensor(scores[None, :kk], dtype=torch.float32), None)
            with torch.no_grad():
                logits = self.refiner(inp.query_emb.to(dev), inp.cand_emb.to(dev), inp.cand_xy.to(dev),
                                      inp.coarse_scores.to(dev)).float().cpu()[0]
            node_order = torch.argsort(logits, descending=True).numpy()
            order = np.concatenate([node_order, np.arange(kk, len(ids))])
            probs = torch.softmax(logits / float(model.info.get("centroid_temperature", 1.0)), 0).numpy()
        else:
            probs = torch.softmax(torch.as_tensor(scores) * 20.0, 0).numpy()
            node_order = np.argsort(-probs)
        top = node_order[:1] if coarse_chosen else node_order[: max(1, model.cfg.refine.centroid_top)]
        w = probs[top] / probs[top].sum()
        pos = (w[:, None] * xy[top]).sum(0)
        spread = float(np.sqrt((w * ((xy[top] - pos) ** 2).sum(1)).sum()))
        transformer = require("pyproj", "geo").Transformer
        lon, lat = transformer.from_crs(info["crs"], "EPSG:4326", always_xy=True).transform(pos[0], pos[1])
        cands = []
        for rank, j in enumerate(order[:k]):
            m = meta[int(ids[j])]
            cands.append({"rank": rank + 1, "id": m["id"], "row": m.get("row"), "col": m.get("col"), "x": m["x"],
                          "y": m["y"], "lon": m["lon"], "lat": m["lat"], "score": float(scores[j]),
                          "probability": float(probs[j]) if j < len(probs) else None, "source": m.get("source"),
                          "footprint": m.get("footprint")})
        refined = bool(use_refiner and self.refiner is not None and len(ids) >= 2)
        result: dict[str, Any] = {
            "query": str(qpath), "lon": float(lon), "lat": float(lat), "x": float(pos[0]), "y": float(pos[1]),
            "crs": info["crs"], "error_radius_m": max(spread, half), "confidence": float(probs[node_order[0]]),
            "refined": refined, "stage": "refined" if refined else "coarse", "stage_note": stage_note,
            # which candidate field the ranks follow: the refiner's node probability, or the coarse similarity
            "rank_by": "probability" if refined else "score",
            "score_name": "score: cosine similarity of the coarse search; probability: "
                          + ("the graph refiner's node probability (ranks follow it)" if refined
                             else "softmax of 20 x similarity"),
            "patch": cands[0] if cands else None, "candidates": cands,
        }
        if facts.get("georeferenced"):
            result["check_error_m"] = float(np.hypot(pos[0] - facts["x"], pos[1] - facts["y"]))
        true_xy = (float(facts["x"]), float(facts["y"])) if facts.get("georeferenced") else None
        return result, arr, true_xy


def locate_registration(locator: GeoLocator, res: dict[str, Any], pixels: np.ndarray,
                        true_xy: tuple[float, float] | None = None) -> dict[str, Any]:
    """Register the located query in the indexed map around its best candidates (``geo locate --register``).

    ``pixels`` are the query's, ``true_xy`` its own georeferenced centre (if any). Updates ``res`` in place (position, ``error_radius_m`` and ``check_error_m`` follow a kept
    registration) and returns the ``registration`` entry: ``registered``, ``lon``/``lat``/``x``/``y``,
    ``shift_m`` ``[east, north]`` and ``shift_distance_m`` from the top candidate cell's centre,
    ``confidence``, ``threshold`` (and where it comes from), ``error_radius_m``, ``candidate`` (rank
    of the cell whose window held the match), ``method`` and ``note``.

    Raises:
        DataError: the index's map raster is missing.
    """
    info, model = locator.info, locator.model
    rcfg = model.cfg.eval.register
    map_path = info.get("map")
    if not map_path or not Path(str(map_path)).exists():  # a raster file, a VRT or a folder of tiles
        raise DataError(f"the index's map '{map_path}' is missing, so the query cannot be registered",
                        "restore the map file or rebuild the index with 'sarbridge index build --map'")
    if locator.registrar is None:
        locator.registrar = MapRegistrar(str(map_path), rcfg.method, rcfg.margin, rcfg.coarse, locator.device,
                                         locator.encoder, model.spec, model.matcher)
    reg = locator.registrar
    cands = res["candidates"][: max(1, rcfg.top_k)]
    side = float(info.get("patch_size") or 0) or reg.footprint_box(cands[0]["footprint"])[2]
    h = w = max(1, round(side))
    out, _ = reg.register_pixels(np.asarray(pixels), h, w, [c["footprint"] for c in cands])
    c = locator.choice
    threshold = rcfg.threshold if rcfg.threshold is not None else (c or {}).get("threshold")
    source = ("eval.register.threshold" if rcfg.threshold is not None else
              "calibrated on validation" if threshold is not None else "default, not calibrated on validation")
    threshold = float(threshold) if threshold is not None else DEFAULT_THRESHOLD
    x, y = reg.centre_xy(out.row, out.col, h, w)
    cell = cands[0]
    dx, dy = x - float(cell["x"]), y - float(cell["y"])
    kept = bool(out.confidence >= threshold)
    gsd = float(max(reg.raster.gsd))
    lon, lat = (float(v) for v in reg.raster.to_lonlat(x, y))
    calibrated = calibrated_radius((c or {}).get("radius"), float(out.confidence), floor=gsd) if kept else None
    radius = calibrated if calibrated is not None else gsd
    basis = (f"{100 * RADIUS_QUANTILE:.0f} % of the validation registrations of about this confidence were within it"
             if calibrated is not None else "one map pixel (no validation calibration of the radius in this bundle)")
    if kept:
        note = f"registered in the window of candidate {out.candidate + 1} (confidence {out.confidence:.3f} >= {threshold:.3f})"
        res.update({"lon": lon, "lat": lat, "x": x, "y": y, "error_radius_m": radius})
        if true_xy is not None:
            res["check_error_m"] = float(np.hypot(x - true_xy[0], y - true_xy[1]))
    else:
        note = (f"kept the retrieval position: confidence {out.confidence:.3f} < threshold {threshold:.3f}")
    if c is not None and not c.get("register"):
        note += f"; note: registration did not help on the {c.get('split', 'val')} split"
    return {"registered": kept, "lon": lon, "lat": lat, "x": x, "y": y, "shift_m": [dx, dy],
            "shift_distance_m": float(np.hypot(dx, dy)), "shift_reference": f"centre of candidate cell {cell['source']}",
            "confidence": float(out.confidence), "threshold": threshold, "threshold_source": source,
            "error_radius_m": radius if kept else float(res["error_radius_m"]),
            "error_radius_basis": basis if kept else "the retrieval stage's radius (registration not kept)",
            "candidate": int(out.candidate) + 1,
            "method": rcfg.method, "note": note}


def locate(index_dir: str | Path, query_path: str | Path, k: int = 10, device: str = "auto",
           register: bool | None = None) -> dict[str, Any]:
    """Estimate where a SAR patch lies on the indexed map (loads the index; many queries: :class:`GeoLocator`).

    Args:
        index_dir: folder from :func:`~sarbridge.tasks.geo.map_index.build_geo_index`.
        query_path: SAR patch (GeoTIFF or plain image; a georeferenced one must be over the map).
        k: candidates to report.
        device: ``auto``, ``cpu`` or ``cuda``.

    Returns:
        ``{"lon", "lat", "x", "y", "crs", "error_radius_m", "confidence", "patch", "candidates": [...],
        "query": path, "check_error_m"?}``: the refined position (score-weighted centroid of the best
        nodes), the chosen patch (rank 1 after refinement) and the ranked candidates;
        ``check_error_m`` is the distance to the query's own georeferenced centre, when it has one;
        ``stage``/``stage_note`` say which retrieval stage was used (the validation choice) and
        ``rank_by`` which candidate field the ranks follow. With registration (``register`` True,
        or None and validation chose it) also ``registration`` (see :func:`locate_registration`).
    """
    return GeoLocator(index_dir, device).locate(query_path, k, register=register)
