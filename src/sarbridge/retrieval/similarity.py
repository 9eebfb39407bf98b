"""Do similarity scores separate a match from a non-match?

:func:`similarity_gap` measures the cosine similarity of matching (same identity) and
non-matching query/gallery pairs: the two means, their gap, the probability that a random
matching pair scores above a random non-matching one (ROC AUC) and the share of queries whose
best match beats their best non-match. A gap near 0 with both means near 1 says the features are
concentrated around one direction: scores shown to people would not tell a match from a
non-match, whatever the ranking metrics say.

Pairs follow the ranking metrics (:mod:`sarbridge.retrieval.metrics`): gallery items with pid
``-1`` are distractors (never a match), a query with pid ``-1`` has no match, and with
``exclude_same_modality`` pairs of one modality are left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: One-line reading of every key of :func:`similarity_gap` (reports, ``metrics.json`` readers).
SIMILARITY_NOTES: dict[str, str] = {
    "positive_mean": "mean cosine similarity of query/gallery pairs of the same identity",
    "negative_mean": "mean cosine similarity of pairs of different identities",
    "gap": "positive_mean - negative_mean (0 = scores do not separate matches from non-matches)",
    "auc": "probability that a random matching pair scores above a random non-matching one (0.5 = chance)",
    "best_positive_wins": "share of queries with a match whose most similar match beats their most similar "
                          "non-match",
}


def _features(a: Any, name: str) -> torch.Tensor:
    t = a.detach() if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) array, got shape {tuple(t.shape)}")
    return F.normalize(t.to("cpu", torch.float32), dim=1)


def _labels(a: Any, n: int, name: str) -> np.ndarray:
    arr = np.asarray(a).reshape(-1)
    if len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} entries for {n} features")
    return arr


def _chunk_rows(num_gallery: int, budget: int) -> int:
    return max(1, budget // max(num_gallery, 1))


def similarity_gap(
    query: Any,
    gallery: Any,
    q_pids: Any,
    g_pids: Any,
    q_mods: Any | None = None,
    g_mods: Any | None = None,
    exclude_same_modality: bool = False,
    chunk_elements: int = 1 << 24,
) -> dict[str, float | int | None]:
    """Cosine similarity of matching versus non-matching query/gallery pairs.

    Features are L2-normalised here, so the scores are cosines whatever the caller's features.
    Memory stays bounded: similarities are computed for blocks of queries of at most
    ``chunk_elements`` pairs; the AUC is exact (each non-matching score is counted against the
    sorted matching scores).

    Args:
        query: ``(M, D)`` query features (tensor or array).
        gallery: ``(N, D)`` gallery features.
        q_pids: ``(M,)`` query identities (``-1``: no match).
        g_pids: ``(N,)`` gallery identities (``-1``: distractor).
        q_mods: ``(M,)`` query modalities; needed with ``exclude_same_modality``.
        g_mods: ``(N,)`` gallery modalities.
        exclude_same_modality: leave out pairs of one modality (cross-modal protocols).
        chunk_elements: query/gallery pairs held at once.

    Returns:
        ``positive_mean``, ``negative_mean``, ``gap`` (their difference), ``auc`` and
        ``best_positive_wins`` (see :data:`SIMILARITY_NOTES`; means over pairs, the last over the
        queries with both a match and a non-match), plus the counts ``positive_pairs``,
        ``negative_pairs`` and ``queries`` (queries with a match). A measure without the pairs
        it needs is None (JSON ``null``).

    Raises:
        ValueError: empty or mismatched inputs, or ``exclude_same_modality`` without modalities.
    """
    qf, gf = _features(query, "query"), _features(gallery, "gallery")
    if qf.shape[1] != gf.shape[1]:
        raise ValueError(f"query has dimension {qf.shape[1]}, gallery {gf.shape[1]}")
    qp, gp = _labels(q_pids, len(qf), "q_pids"), _labels(g_pids, len(gf), "g_pids")
    qm = gm = None
    if exclude_same_modality:
        if q_mods is None or g_mods is None:
            raise ValueError("exclude_same_modality needs q_mods and g_mods")
        qm, gm = _labels(q_mods, len(qf), "q_mods"), _labels(g_mods, len(gf), "g_mods")
    rows = _chunk_rows(len(gf), chunk_elements)

    def masks(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(matching, non-matching) pairs of queries ``start:stop`` (left-out pairs in neither)."""
        keep = np.ones((stop - start, len(gf)), dtype=bool) if qm is None or gm is None \
            else qm[start:stop, None] != gm[None, :]
        pos = (qp[start:stop, None] == gp[None, :]) & (gp[None, :] != -1) & (qp[start:stop, None] != -1) & keep
        return pos, keep & ~pos

    blocks = [(start, min(start + rows, len(qf))) for start in range(0, len(qf), rows)]
    # pass 1: the matching pairs (few) with every query's best match
    pos_scores = []
    best_pos = np.full(len(qf), -np.inf)
    for start, stop in blocks:
        qi, gi = np.nonzero(masks(start, stop)[0])
        if len(qi):
            sc = (qf[start + qi] * gf[gi]).sum(1).numpy()
            pos_scores.append(sc)
            np.maximum.at(best_pos, start + qi, sc)
    p = np.sort(np.concatenate(pos_scores)) if pos_scores else np.zeros(0)
    # pass 2: the non-matching pairs, block by block
    neg_sum, neg_count, below = 0.0, 0, 0.0
    best_neg = np.full(len(qf), -np.inf)
    for start, stop in blocks:
        neg = masks(start, stop)[1]
        sim = (qf[start:stop] @ gf.T).numpy()
        n = sim[neg]
        neg_sum += float(n.sum(dtype=np.float64))
        neg_count += int(n.size)
        best_neg[start:stop] = np.where(neg, sim, -np.inf).max(1)
        if p.size and n.size:  # matching scores above each non-matching one, ties one half
            lo, hi = np.searchsorted(p, n, side="left"), np.searchsorted(p, n, side="right")
            below += float((p.size - hi).sum() + 0.5 * (hi - lo).sum())
    pos_mean = float(p.mean(dtype=np.float64)) if p.size else None
    neg_mean = neg_sum / neg_count if neg_count else None
    both = np.isfinite(best_pos) & np.isfinite(best_neg)
    return {
        "positive_mean": pos_mean,
        "negative_mean": neg_mean,
        "gap": pos_mean - neg_mean if pos_mean is not None and neg_mean is not None else None,
        "auc": below / (p.size * neg_count) if p.size and neg_count else None,
        "best_positive_wins": float((best_pos[both] > best_neg[both]).mean()) if both.any() else None,
        "positive_pairs": int(p.size),
        "negative_pairs": neg_count,
        "queries": int(np.isfinite(best_pos).sum()),
    }


__all__ = ["SIMILARITY_NOTES", "similarity_gap"]
