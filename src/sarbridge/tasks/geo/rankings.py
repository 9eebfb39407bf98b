"""The ``rankings.json`` (+ ``thumbs/``) of a localisation evaluation: one entry per stage.

Items carry ``id`` (reference index), ``source``, ``x``/``y`` (projected metres) and ``thumb``;
queries also ``target``, ``error_m`` (predicted vs. true position) and ``thumb``; every listed
candidate has its ``distance_m`` to the true query position. A candidate is a ``match`` when it is
the target (largest-overlap patch), a ``neighbour`` when it overlaps the query, else ``wrong``.
``ap`` is ``1 / rank`` of the target (0 when it is not listed), the per-query term of
:func:`~sarbridge.retrieval.geo_metrics.localisation_metrics`' mAP.

Localisation patches are cut from map rasters, so their thumbnails are saved at evaluation time
under ``RUN_DIR/thumbs/`` for a bounded pool of queries (the worst ones and a seeded random sample
per stage) and the candidates they list; ``thumb`` is the PNG's path relative to the run folder, or
null outside the pool. The file format is :mod:`sarbridge.retrieval.rankings`'.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from sarbridge.core.utils import atomic_write
from sarbridge.data.records import OPTICAL, SAR
from sarbridge.retrieval.metrics import cmc_from_ranks, match_statistics
from sarbridge.retrieval.rankings import (
    TOP_K,
    json_number,
    select_queries,
    write_rankings,
)
from sarbridge.tasks.geo.bundle import TASK
from sarbridge.tasks.geo.results import STAGE_TITLES
from sarbridge.viz.figures import to_display_uint8

if TYPE_CHECKING:
    from sarbridge.tasks.geo.evaluate import RankedResult
    from sarbridge.tasks.geo.patches import LocalisationData

#: Folder (inside a run folder) of the localisation thumbnails.
THUMBS_DIR = "thumbs"
_SCORE = {
    "name": "similarity", "higher_is_better": True,
    "description": "cosine similarity of the L2-normalised embeddings (coarse score of each candidate; "
                   "re-ranked stage: minus the re-ranked distance)"}


def geo_status(candidate: int, target: int, near: Sequence[int]) -> str:
    """``match`` for the target reference, ``neighbour`` for an overlapping one, else ``wrong``."""
    if candidate == target:
        return "match"
    return "neighbour" if candidate in set(near) else "wrong"


def geo_query_summary(
    ranked: np.ndarray, targets: np.ndarray, q_xy: np.ndarray, pred_xy: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-query ``(ap, first_match_rank, error_m)`` of localisation rankings.

    ``ap`` is ``1 / rank`` of the target (0 when it is not listed), ``first_match_rank`` the
    1-based rank of the target (0 when not listed), both from
    :func:`~sarbridge.retrieval.metrics.match_statistics`, and ``error_m`` the distance between
    the predicted and the true position.

    Args:
        ranked: ``(Q, K)`` reference indices, best first.
        targets: ``(Q,)`` the target reference of every query.
        q_xy: ``(Q, 2)`` true query positions.
        pred_xy: ``(Q, 2)`` predicted positions.
    """
    hit = np.asarray(ranked) == np.asarray(targets)[:, None]
    rank, ap, _ = match_statistics(hit)
    ap = np.where(rank > 0, ap, 0.0)
    err = np.hypot(pred_xy[:, 0] - q_xy[:, 0], pred_xy[:, 1] - q_xy[:, 1])
    return ap, rank, err


def save_thumbnail(path: Path, rgb: np.ndarray, size: int) -> None:
    """Write uint8 RGB pixels as a PNG whose longest side is at most ``size`` (atomically)."""
    im = Image.fromarray(rgb)
    if max(im.size) > size:
        im.thumbnail((size, size), Image.Resampling.LANCZOS)
    atomic_write(path, lambda tmp: im.save(tmp, format="PNG"))


def write_geo_rankings(
    run_dir: str | Path,
    results: dict[str, RankedResult],
    view: LocalisationData,
    spec: Any = None,
    top_k: int = TOP_K,
    pool_samples: int = 32,
    pool_worst: int = 16,
    thumb_size: int = 128,
) -> Path:
    """``rankings.json`` (+ ``thumbs/``) of a localisation evaluation.

    Args:
        run_dir: run folder.
        results: ``stage -> RankedResult`` (:func:`sarbridge.tasks.geo.evaluate.evaluate_localisation`).
        view: the references and queries the results index.
        spec: preprocessing spec; SAR query thumbnails are shown as the model sees them when given.
        top_k: length of the stored lists.
        pool_samples: queries per stage drawn at random (seed 0) whose thumbnails are saved.
        pool_worst: worst queries per stage whose thumbnails are saved.
        thumb_size: largest side of a saved thumbnail, in pixels.

    Returns:
        The path of the written file.
    """
    run = Path(run_dir)
    ref_xy = view.reference_xy()
    saved: dict[str, str | None] = {}

    def thumb(name: str, load: Any, modality: str) -> str | None:
        if name in saved:
            return saved[name]
        rel = f"{THUMBS_DIR}/{name}.png"
        try:
            pixels = load()
            rgb = spec.to_uint8(pixels, modality) if spec is not None else to_display_uint8(pixels)
            save_thumbnail(run / rel, to_display_uint8(np.asarray(rgb)), thumb_size)
            saved[name] = rel
        except Exception:  # unreadable source: the report shows a placeholder
            saved[name] = None
        return saved[name]

    out: dict[str, dict[str, Any]] = {}
    for stage, res in results.items():
        qs = list(res.queries)
        targets = np.array([q.target for q in qs], dtype=np.int64)
        q_xy = view.query_xy(qs)
        ap, rank, err = geo_query_summary(res.ranked, targets, q_xy, np.asarray(res.pred_xy, dtype=np.float64))
        items: list[dict[str, Any]] = []
        remap: dict[int, int] = {}
        entries: list[dict[str, Any]] = []
        for i, q in enumerate(qs):
            top: list[dict[str, Any]] = []
            for j in range(min(top_k, res.ranked.shape[1])):
                idx = int(res.ranked[i, j])
                if idx not in remap:
                    remap[idx] = len(items)
                    ref = view.references[idx]
                    items.append({"id": idx, "source": str(ref.source), "x": json_number(ref.x, 3),
                                  "y": json_number(ref.y, 3), "thumb": None})
                top.append({"item": remap[idx], "score": json_number(res.scores[i, j]),
                            "status": geo_status(idx, q.target, q.near),
                            "distance_m": json_number(np.linalg.norm(ref_xy[idx] - q_xy[i]), 3)})
            entries.append({"id": int(q.index), "source": str(q.source), "modality": SAR, "x": json_number(q.x, 3),
                            "y": json_number(q.y, 3), "lon": json_number(q.lon, 8), "lat": json_number(q.lat, 8),
                            "target": int(q.target), "ap": json_number(ap[i]),
                            "first_match_rank": int(rank[i]) or None,
                            "error_m": json_number(err[i], 3), "thumb": None, "top": top})
        sampled, worst = select_queries(entries, pool_samples, pool_worst, seed=0)
        for i in sorted(set(sampled) | set(worst)):
            q = qs[i]
            entries[i]["thumb"] = thumb(f"query_{q.index:06d}", q.load, SAR)
            for t in entries[i]["top"]:
                item = items[t["item"]]
                item["thumb"] = thumb(f"ref_{item['id']:06d}", view.references[item["id"]].load, OPTICAL)
        out[stage] = {"title": STAGE_TITLES.get(stage, stage),
                      "cmc": [float(c) for c in cmc_from_ranks(rank, int(res.ranked.shape[1]))],
                      "num_queries": len(entries), "items": items, "queries": entries}
    return write_rankings(run, TASK, out, _SCORE, top_k)


__all__ = ["THUMBS_DIR", "geo_query_summary", "geo_status", "save_thumbnail", "write_geo_rankings"]
