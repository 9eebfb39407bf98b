"""Coarse retrieval, graph refinement (or k-reciprocal re-ranking) and localisation metrics.

Coarse search goes through the shared :class:`~sarbridge.retrieval.index.EmbeddingIndex` (exact
inner product on L2-normalised embeddings). The refined ranking is the refiner's order of the
first ``refine.top_k`` candidates followed by the rest of the coarse list; the refined position is
the score-weighted centroid of the best nodes, so refined localisation errors can be smaller than a
patch even when top-1 is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sarbridge.retrieval.geo_metrics import cmpc_metrics, localisation_metrics
from sarbridge.retrieval.geo_ranks import target_ranks
from sarbridge.retrieval.index import EmbeddingIndex
from sarbridge.retrieval.rankings import topk_stable
from sarbridge.retrieval.rerank import (
    GNNMode,
    alpha_query_expansion,
    average_query_expansion,
    gnn_rerank,
    k_reciprocal_rerank_features,
)
from sarbridge.tasks.geo.patches import GeoQuery, LocalisationData
from sarbridge.tasks.geo.refine import gather_candidates, refine_positions


@dataclass
class RankedResult:
    """Rankings of one query set (rows follow ``queries``)."""

    queries: list[GeoQuery]
    ranked: np.ndarray
    scores: np.ndarray
    pred_xy: np.ndarray
    confidence: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def coarse_search(ref_emb: torch.Tensor, query_emb: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` references of every query by inner product: ``(scores, ranked)``, best first."""
    index = EmbeddingIndex(int(ref_emb.shape[1]))
    index.add(ref_emb.numpy().astype(np.float32))
    scores, ranked = index.search(query_emb.numpy().astype(np.float32), min(k, len(index)))
    return np.asarray(scores), np.asarray(ranked, dtype=np.int64)


def patch_size_m(data: LocalisationData) -> float:
    """Median reference footprint side (metres): the natural unit of map coordinates."""
    sides = [max(r.footprint[2] - r.footprint[0], r.footprint[3] - r.footprint[1]) for r in data.references]
    sides = [s for s in sides if s > 0]
    return float(np.median(sides)) if sides else 1.0


@torch.no_grad()
def refine_ranking(refiner: torch.nn.Module, query_emb: torch.Tensor, ref_emb: torch.Tensor, ref_xy: np.ndarray,
                   ranked: np.ndarray, scores: np.ndarray, top_k: int, centroid_top: int,
                   device: torch.device, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Re-order the first ``top_k`` coarse candidates with the graph network.

    Returns:
        ``(ranked, scores, refined_xy, confidence)``: the new ranking (refined head + coarse tail)
        with the coarse similarity of each candidate, the score-weighted positions ``(M, 2)`` and
        the best node's probability ``(M,)``.
    """
    k = min(top_k, ranked.shape[1])
    if k < 2:
        return ranked, scores, ref_xy[ranked[:, 0]], np.ones(len(ranked))
    refiner.eval()
    inp = gather_candidates(query_emb, ref_emb, torch.as_tensor(ref_xy, dtype=torch.float32),
                            torch.as_tensor(ranked[:, :k]), torch.as_tensor(scores[:, :k], dtype=torch.float32), None)
    logits = refiner(inp.query_emb.to(device), inp.cand_emb.to(device), inp.cand_xy.to(device), inp.coarse_scores.to(device))
    order, rxy, conf = refine_positions(logits.float().cpu(), inp.cand_xy, top=centroid_top, temperature=temperature)
    perm = order.numpy()
    out = np.concatenate([np.take_along_axis(ranked[:, :k], perm, axis=1), ranked[:, k:]], axis=1)
    out_scores = np.concatenate([np.take_along_axis(scores[:, :k], perm, axis=1), scores[:, k:]], axis=1)
    return out, out_scores, rxy.double().numpy(), conf.numpy()


def rerank_coarse(query_emb: torch.Tensor, ref_emb: torch.Tensor, k: int, method: str, k1: int, k2: int,
                  lambda_value: float, gnn_k1: int = 26, gnn_k2: int = 7,
                  gnn_layers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank all references of every query: ``k-reciprocal`` (Zhong et al. 2017, ``k1``/``k2``/
    ``lambda_value``), ``gnn`` (Zhang et al. 2020, the published adjacency form with ``gnn_k1``/
    ``gnn_k2``) or ``gnn-features`` (the bounded-memory feature form); returns ``(scores, ranked)``
    with scores = -distance, best first."""

    n = len(ref_emb)
    if method == "k-reciprocal":
        dist = k_reciprocal_rerank_features(query_emb, ref_emb, k1=min(k1, n), k2=min(k2, n),
                                            lambda_value=lambda_value, distance="euclidean")
    elif method in ("gnn", "gnn-features"):
        mode: GNNMode = "adjacency" if method == "gnn" else "features"
        dist = gnn_rerank(query_emb, ref_emb, k1=min(gnn_k1, n), k2=min(gnn_k2, n), layers=gnn_layers, mode=mode)
    else:
        raise ValueError(f"unknown re-ranking '{method}': use k-reciprocal, gnn or gnn-features")
    dist = np.asarray(dist)
    ranked = topk_stable(dist, k)
    return -np.take_along_axis(dist, ranked, axis=1), ranked


def calibrate_temperature(logits: torch.Tensor, cand_xy: torch.Tensor, true_xy: np.ndarray, top: int,
                          grid: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)) -> float:
    """The softmax temperature of the refined position with the smallest median error on
    (validation) graphs: small values trust the best node, large ones average the top nodes."""
    def median_error(t: float) -> float:
        xy = refine_positions(logits, cand_xy, top=top, temperature=t)[1].double().numpy()
        return float(np.median(np.linalg.norm(xy - true_xy, axis=1)))

    return min(grid, key=median_error)


#: ``meta["layout"]`` of data whose metrics also get CMPC's definitions (``cmpc_*`` keys).
CMPC_LAYOUTS = ("sn6-cmpc",)


def full_target_ranks(ref_emb: torch.Tensor, query_emb: torch.Tensor, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each query's target among all references by inner product (ties broken by
    reference index, as the stable order), counted a block of queries at a time, no row sorted
    (:func:`~sarbridge.retrieval.geo_ranks.target_ranks`)."""
    return target_ranks(query_emb.float(), ref_emb.float(), targets, metric="neg_dot", normalize=False)


#: Success radii (metres) reported for every stage (``succ_<r>m``): metre-level ones for registration.
SUCCESS_M = (5, 10, 25, 50, 100, 150, 200)


def metrics_of(result: RankedResult, data: LocalisationData) -> dict[str, Any]:
    """Localisation metrics of one :class:`RankedResult` (target + near-misses known per query),
    with the 90th-percentile error ``p90_err_m`` and success within :data:`SUCCESS_M`;
    for CMPC's layouts (:data:`CMPC_LAYOUTS`) also :func:`~sarbridge.retrieval.geo_metrics.cmpc_metrics`
    (with ``extra["target_rank"]``, the full rank of each target, where known)."""
    targets = np.array([q.target for q in result.queries], dtype=np.int64)
    q_xy = data.query_xy(result.queries)
    out: dict[str, Any] = localisation_metrics(result.ranked, targets, data.reference_xy(), q_xy,
                                               pred_xy=result.pred_xy, success_m=SUCCESS_M)
    p_xy = np.asarray(result.pred_xy, dtype=np.float64)
    out["p90_err_m"] = float(np.percentile(np.hypot(p_xy[:, 0] - q_xy[:, 0], p_xy[:, 1] - q_xy[:, 1]), 90))
    if data.meta.get("layout") in CMPC_LAYOUTS:
        out.update(cmpc_metrics(result.ranked, targets, data.reference_xy(), data.query_xy(result.queries),
                                target_rank=result.extra.get("target_rank")))
    return out


def evaluate_localisation(
    data: LocalisationData,
    queries: Sequence[GeoQuery],
    ref_emb: torch.Tensor,
    query_emb: torch.Tensor,
    top_k: int = 20,
    refiner: torch.nn.Module | None = None,
    refine_top_k: int = 10,
    centroid_top: int = 3,
    temperature: float = 1.0,
    rerank: str = "none",
    rerank_args: dict[str, Any] | None = None,
    device: torch.device | None = None,
    query_expansion: str = "none",
    qe_k: int = 5,
    qe_alpha: float = 3.0,
) -> tuple[dict[str, Any], dict[str, RankedResult]]:
    """Coarse (+ refined, + re-ranked) metrics of ``queries`` against all references of ``data``.

    Args:
        data: references (their indices are the targets' indices).
        queries: the evaluated queries.
        ref_emb, query_emb: L2-normalised embeddings ``(N, D)`` and ``(M, D)``.
        top_k: coarse search depth (metrics up to top-20 need 20).
        refiner: a trained :class:`~sarbridge.tasks.geo.refine.LocationRefiner`, or None.
        refine_top_k: graph nodes per query.
        centroid_top: nodes averaged into the refined position.
        temperature: softmax temperature of the node scores in that average.
        rerank: ``none``, ``k-reciprocal`` or ``gnn`` (reported as ``reranked``).
        rerank_args: ``k1``, ``k2``, ``lambda_value`` (k-reciprocal), ``gnn_k1``, ``gnn_k2``, ``gnn_layers``.
        device: where the refiner runs.
        query_expansion: ``none``, ``aqe`` (average) or ``alpha`` (alpha-weighted) query expansion
            with the ``qe_k`` nearest references, applied to the query embeddings first.

    Returns:
        ``(metrics, results)``: ``{"coarse": {...}, "refined": {...}?, "reranked": {...}?}`` and
        the rankings behind each entry.
    """
    queries = list(queries)
    device = device or torch.device("cpu")
    if query_expansion != "none":

        k = min(qe_k, len(ref_emb))
        query_emb = (average_query_expansion(query_emb, ref_emb, k=k) if query_expansion == "aqe"
                     else alpha_query_expansion(query_emb, ref_emb, k=k, alpha=qe_alpha)).float().cpu()
    scores, ranked = coarse_search(ref_emb, query_emb, top_k)
    ref_xy = data.reference_xy()
    results = {"coarse": RankedResult(queries, ranked, scores, ref_xy[ranked[:, 0]])}
    if data.meta.get("layout") in CMPC_LAYOUTS:  # beyond the lists the coarse order holds (as in CMPC)
        results["coarse"].extra["target_rank"] = full_target_ranks(
            ref_emb, query_emb, np.array([q.target for q in queries], dtype=np.int64))
    if refiner is not None:
        r_ranked, r_scores, rxy, conf = refine_ranking(refiner, query_emb, ref_emb, ref_xy, ranked, scores,
                                                       refine_top_k, centroid_top, device, temperature)
        results["refined"] = RankedResult(queries, r_ranked, r_scores, rxy, conf,
                                          extra=dict(results["coarse"].extra))
    if rerank in ("k-reciprocal", "gnn", "gnn-features"):
        args = rerank_args or {}
        k_scores, k_ranked = rerank_coarse(query_emb, ref_emb, top_k, rerank, args.get("k1", 20), args.get("k2", 6),
                                           args.get("lambda_value", 0.3), args.get("gnn_k1", 26),
                                           args.get("gnn_k2", 7), args.get("gnn_layers", 2))
        results["reranked"] = RankedResult(queries, k_ranked, k_scores, ref_xy[k_ranked[:, 0]])
    metrics = {name: metrics_of(res, data) for name, res in results.items()}
    return metrics, results


#: share of a cell's area within which two candidates' overlaps with a registered box count as equal
OVERLAP_TIE = 0.02


def registered_result(base: RankedResult, xy: np.ndarray, confidence: np.ndarray, costs: np.ndarray,
                      threshold: float, rerank: bool = False,
                      footprints: np.ndarray | None = None) -> RankedResult:
    """The ``registered`` stage from the raw registrations of ``base``'s queries.

    Args:
        base: the retrieval stage whose candidates were registered (its rows = the queries).
        xy: ``(M, 2)`` registered query centres.
        confidence: ``(M,)`` registration confidences (peak ratios).
        costs: ``(M, k)`` best cost in the window of each of the first ``k`` candidates.
        threshold: registrations with a lower confidence keep ``base``'s position.
        rerank: re-order the first ``k`` candidates of a kept registration: with ``footprints``, by
            how much a cell-sized box centred on the registered position overlaps each candidate
            (the ground truth is the cell of largest overlap; neighbouring search windows overlap,
            so the window that held the match is not always that cell), near-ties (within
            :data:`OVERLAP_TIE` of a cell) in the retrieval order; without, by cost (lowest first).
        footprints: ``(N, 4)`` reference footprints ``(x0, y0, x1, y1)`` (metres), indexed like
            ``base.ranked``.

    Returns:
        The :class:`RankedResult` (``confidence`` the registration's; ``extra["registered"]``: the
        boolean mask of kept registrations, ``extra["threshold"]``).
    """
    keep = np.asarray(confidence) >= threshold
    pred = np.where(keep[:, None], xy, base.pred_xy)
    ranked, scores = base.ranked.copy(), base.scores.copy()
    if rerank:
        k = costs.shape[1]
        if footprints is not None:
            fp = np.asarray(footprints, dtype=np.float64)[base.ranked[:, :k]]  # (M, k, 4)
            half_w, half_h = (fp[..., 2] - fp[..., 0]) / 2.0, (fp[..., 3] - fp[..., 1]) / 2.0
            x, y = xy[:, 0:1], xy[:, 1:2]
            ow = np.clip(np.minimum(fp[..., 2], x + half_w) - np.maximum(fp[..., 0], x - half_w), 0.0, None)
            oh = np.clip(np.minimum(fp[..., 3], y + half_h) - np.maximum(fp[..., 1], y - half_h), 0.0, None)
            overlap = ow * oh
            # near-ties (within OVERLAP_TIE of a cell: a query on a cell border, registered to a fraction
            # of a pixel) keep the retrieval order among themselves, ahead of the rest
            top = overlap.max(axis=1, keepdims=True)
            front = overlap >= top - OVERLAP_TIE * (2 * half_w) * (2 * half_h)
            order = np.argsort(-np.where(front, top, overlap), axis=1, kind="stable")
        else:
            order = np.argsort(np.where(np.isfinite(costs), costs, np.inf), axis=1, kind="stable")
        order = np.where(keep[:, None], order, np.arange(k)[None, :])
        ranked[:, :k] = np.take_along_axis(base.ranked[:, :k], order, axis=1)
        scores[:, :k] = np.take_along_axis(base.scores[:, :k], order, axis=1)
    return RankedResult(base.queries, ranked, scores, pred, np.asarray(confidence, dtype=np.float64),
                        extra={**base.extra, "registered": keep, "threshold": float(threshold)})

