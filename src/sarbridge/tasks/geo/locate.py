"""Reference index of a georeferenced optical map, and locating a SAR patch on it.

``build_geo_index`` cuts the map on the grid the model was trained with, embeds every patch and
saves a :class:`~sarbridge.retrieval.index.EmbeddingIndex` (vectors, per-patch metadata with map
and lon/lat coordinates, checksums) plus a copy of the model bundle, so an index folder is
self-contained. ``locate`` embeds a query, searches the index, refines the top-k with the graph
network and returns the estimated position, an error radius and the candidates.

Error radius: the score-weighted spread ``sqrt(sum p_i |x_i - x̂|^2)`` of the nodes averaged into
the position, never less than half a patch side (the resolution of the reference grid).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarbridge.core.errors import DataError, SarbridgeError
from sarbridge.core.optional import require
from sarbridge.core.utils import atomic_write, file_digest, resolve_device
from sarbridge.data.georaster import read_georaster
from sarbridge.data.io import read_image
from sarbridge.data.records import OPTICAL, SAR
from sarbridge.retrieval.index import EmbeddingIndex
from sarbridge.tasks.geo.bundle import GeoModel, load_geo_model
from sarbridge.tasks.geo.datasets import MODALITY_INDEX, PatchImages, embed_patches, prepare_patch
from sarbridge.tasks.geo.grid import make_grid, validate_optical, validate_sar
from sarbridge.tasks.geo.refine import gather_candidates

MODEL_FILE = "geo_model.pt"


class _Cell:
    """A grid cell as a patch source (``load`` + ``source``) for :class:`PatchImages`."""

    def __init__(self, grid: Any, i: int, name: str) -> None:
        self.grid, self.i = grid, i
        cell = grid.cells[i]
        self.source = f"{name}[r{cell.row},c{cell.col}]"

    def load(self) -> np.ndarray:
        return self.grid.crop(self.i)


def build_geo_index(map_path: str | Path, model_path: str | Path, out_dir: str | Path, patch_size: int | None = None,
                    stride: int | None = None, device: str = "auto", overwrite: bool = False,
                    progress: bool = True) -> Path:
    """Grid a GeoTIFF map into reference patches, embed them and save a searchable index.

    Args:
        map_path: optical GeoTIFF with a CRS (or image + world file + .prj).
        model_path: ``geo_model.pt`` from ``sarbridge geo train``.
        out_dir: index folder (created).
        patch_size: grid cell in map pixels (default: the model's ``data.patch_size``).
        stride: grid step (default: the patch size, non-overlapping as in CMPC).
        device: ``auto``, ``cpu`` or ``cuda``.
        overwrite: replace an existing index in ``out_dir``.
        progress: show a progress bar.

    Returns:
        The index folder.
    """

    out = Path(out_dir)
    if (out / "manifest.json").exists() and not overwrite:
        raise SarbridgeError(f"'{out}' already holds an index", "pass --overwrite or choose another --out")
    model = load_geo_model(model_path)
    raster = read_georaster(map_path)
    validate_optical(raster)
    grid = make_grid(raster, patch_size or model.cfg.data.patch_size, stride)
    dev = resolve_device(device)
    cells = [_Cell(grid, i, Path(map_path).name) for i in range(len(grid.cells))]
    images = PatchImages(cells, OPTICAL, model.spec, cache=False)  # type: ignore[arg-type]
    emb = embed_patches(model.encoder.to(dev), images, dev, model.cfg.eval.batch_size, progress, "embedding map patches")
    centers, lonlat = grid.centers(), grid.lonlat()
    meta = []
    for i, cell in enumerate(grid.cells):
        meta.append({"id": i, "row": cell.row, "col": cell.col, "x": float(centers[i, 0]), "y": float(centers[i, 1]),
                     "lon": float(lonlat[i, 0]), "lat": float(lonlat[i, 1]),
                     "footprint": [float(v) for v in grid.footprint(i)], "source": cells[i].source, "modality": OPTICAL})
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / MODEL_FILE, lambda tmp: shutil.copyfile(model.path, tmp))
    index = EmbeddingIndex(int(emb.shape[1]))
    index.add(emb.numpy().astype(np.float32), meta)
    side = float(max(grid.footprint(0)[2] - grid.footprint(0)[0], grid.footprint(0)[3] - grid.footprint(0)[1]))
    index.save(out, info={"kind": "geo", "map": str(Path(map_path).resolve()), "crs": raster.crs,
                          "bounds": list(raster.bounds), "patch_size": grid.patch_size, "stride": grid.stride,
                          "patch_size_m": side, "gsd": list(raster.gsd), "bands": raster.bands,
                          "model_sha256": file_digest(out / MODEL_FILE)})
    return out


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
        index_dir: folder from :func:`build_geo_index`.
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
                            "rebuild it with 'sarbridge geo build-index'")
        self.model: GeoModel = load_geo_model(model_file)
        self.device = resolve_device(device)
        self.encoder = self.model.encoder.to(self.device).eval()
        self.refiner = self.model.refiner.to(self.device).eval() if self.model.refiner is not None else None

    def locate(self, query_path: str | Path, k: int = 10) -> dict[str, Any]:
        """Estimate where the SAR patch ``query_path`` lies on the indexed map (see :func:`locate`)."""
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
        if self.refiner is not None and len(ids) >= 2:
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
        top = node_order[: max(1, model.cfg.refine.centroid_top)]
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
                          "probability": float(probs[j]) if j < len(probs) else None, "source": m.get("source")})
        result: dict[str, Any] = {
            "query": str(qpath), "lon": float(lon), "lat": float(lat), "x": float(pos[0]), "y": float(pos[1]),
            "crs": info["crs"], "error_radius_m": max(spread, half), "confidence": float(probs[node_order[0]]),
            "refined": self.refiner is not None, "patch": cands[0] if cands else None, "candidates": cands,
        }
        if facts.get("georeferenced"):
            result["check_error_m"] = float(np.hypot(pos[0] - facts["x"], pos[1] - facts["y"]))
        return result


def locate(index_dir: str | Path, query_path: str | Path, k: int = 10, device: str = "auto") -> dict[str, Any]:
    """Estimate where a SAR patch lies on the indexed map (loads the index; many queries: :class:`GeoLocator`).

    Args:
        index_dir: folder from :func:`build_geo_index`.
        query_path: SAR patch (GeoTIFF or plain image; a georeferenced one must be over the map).
        k: candidates to report.
        device: ``auto``, ``cpu`` or ``cuda``.

    Returns:
        ``{"lon", "lat", "x", "y", "crs", "error_radius_m", "confidence", "patch", "candidates": [...],
        "query": path, "check_error_m"?}``: the refined position (score-weighted centroid of the best
        nodes), the chosen patch (rank 1 after refinement) and the ranked candidates;
        ``check_error_m`` is the distance to the query's own georeferenced centre, when it has one.
    """
    return GeoLocator(index_dir, device).locate(query_path, k)
