"""Per-query rankings persisted at evaluation time (``RUN_DIR/rankings.json``) for the HTML report.

Evaluation writes what :func:`sarbridge.app.report.html.write_report` needs so the report needs no
model, no GPU and no feature extraction: per protocol or stage the full CMC curve and, for **every**
query, its average precision, the rank of its first true match and its top-10 gallery items
(score and status). This module holds the task-agnostic part: the stable top-k lists
(:func:`rank_lists`), the statuses, the choice of the queries to show (:func:`select_queries`) and
the file format (:func:`write_rankings`, :func:`load_rankings`). The entries of each task are
written by :mod:`sarbridge.tasks.reid.rankings` (re-identification protocols) and
:mod:`sarbridge.tasks.geo.rankings` (localisation stages and their thumbnails).

File layout (JSON, written atomically)::

    {"version": 1, "task": "reid" | "geo", "top_k": 10,
     "score": {"name": "distance" | "similarity", "higher_is_better": bool, "description": str},
     "protocols": {NAME: {
         "title": str, "cmc": [fractions, cmc[k-1] = CMC@k], "num_queries": int,
         "items": [gallery item, ...],           # only the items some top-10 list names
         "queries": [{...query fields..., "ap": float | null, "first_match_rank": int | null,
                      "top": [{"item": i, "score": s, "status": "match" | "neighbour" | "wrong",
                               ...task fields}, ...]}, ...]}}}

A gallery item is a ``match`` when it is a true answer to the query, a ``neighbour`` when it is
close to one (localisation: it overlaps the query), else ``wrong``. ``ap`` and ``first_match_rank``
follow :mod:`sarbridge.retrieval.metrics` (the same ranks and AP as
:func:`~sarbridge.retrieval.metrics.evaluate`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sarbridge.core.utils import atomic_write_text
from sarbridge.retrieval.distance import pairwise_distance
from sarbridge.retrieval.eval_protocol import EvalProtocol, block_statistics
from sarbridge.retrieval.metrics import cmc_from_ranks
from sarbridge.retrieval.sparse_ranks import DenseBlock

#: File name of the rankings inside a run folder.
RANKINGS_FILE = "rankings.json"
#: Version of the file layout.
RANKINGS_VERSION = 1
#: Gallery items kept per query.
TOP_K = 10
#: Candidate statuses, in the order the report explains them.
STATUSES = ("match", "neighbour", "wrong")

_CHUNK_PAIRS = 2**22  # query x gallery pairs per chunk (a few arrays of this size at once)


@dataclass
class QueryRankings:
    """Per-query top-k lists of one query x gallery ranking (rows follow the queries).

    Attributes:
        top_index: ``(Q, k)`` gallery indices, best first; ``-1`` pads lists shorter than ``k``
            (fewer gallery items remain after same-modality removal).
        top_score: ``(Q, k)`` the ranking score of each listed item (NaN where padded).
        first_match_rank: ``(Q,)`` 1-based rank of the first true match among the ranked gallery
            items; 0 when the query has no match.
        ap: ``(Q,)`` average precision in ``[0, 1]``; NaN for queries without a match.
        description: how the scores were computed (e.g. ``sqeuclidean distance ...``).
    """

    top_index: np.ndarray
    top_score: np.ndarray
    first_match_rank: np.ndarray
    ap: np.ndarray
    description: str = ""


def topk_stable(key: np.ndarray, k: int, removed: np.ndarray | None = None) -> np.ndarray:
    """First ``k`` columns of a stable ascending argsort of every row of ``key`` (removed items last).

    Equals ``np.argsort(row, kind="stable")[:k]`` with removed items placed after all others,
    without sorting any row: ``argpartition`` selects ``k`` items and only those are sorted by
    ``(value, column)``. In a row whose ``k``-th value ties with an unselected item the selection
    is completed exactly: every item below that value, then the tied items by column (kept before
    removed ones). Only rows whose ``k``-th value is NaN are sorted in full.

    Args:
        key: ``(R, G)`` values (smaller first).
        k: items per row, ``1 <= k``; more than ``G`` gives all ``G``.
        removed: optional ``(R, G)`` bool, True for items placed after all kept ones.

    Returns:
        ``(R, min(k, G))`` int64 column indices.
    """
    n = key.shape[1]
    k = min(int(k), n)
    work = key.astype(np.float64, copy=True)
    if removed is not None:
        work[removed] = np.inf
    if k <= 0:
        return np.zeros((work.shape[0], 0), dtype=np.int64)
    if k == n:
        part = np.broadcast_to(np.arange(n, dtype=np.int64), work.shape).copy()
    else:
        part = np.argpartition(work, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(work, part, axis=1)
    order = np.lexsort((part, vals), axis=-1)
    top = np.take_along_axis(part, order, axis=1).astype(np.int64, copy=False)
    kth = np.take_along_axis(vals, order[:, -1:], axis=1)[:, 0]
    if k < n:
        ambiguous = (np.count_nonzero(work <= kth[:, None], axis=1) > k) | np.isnan(kth)
    else:
        ambiguous = np.isnan(kth) if removed is None else (kth == np.inf) | np.isnan(kth)
    for i in np.flatnonzero(ambiguous):
        row = work[i]
        if np.isnan(kth[i]):  # NaN keys: the full stable sort (NaN after +inf, removed after NaN)
            r = row.copy()
            if removed is not None:
                r[removed[i]] = np.nan
            top[i] = np.argsort(r, kind="stable")[:k]
            continue
        below = top[i][work[i, top[i]] < kth[i]]
        tied = np.flatnonzero(row == kth[i])
        if removed is not None:
            gone = removed[i, tied]
            tied = np.concatenate([tied[~gone], tied[gone]])
        top[i] = np.concatenate([below, tied[: k - below.size]])
    return top


def rank_lists(
    dist: Any,
    q_pids: Any,
    g_pids: Any,
    q_mods: Any | None = None,
    g_mods: Any | None = None,
    exclude_same_modality: bool = False,
    top_k: int = TOP_K,
    chunk_pairs: int = _CHUNK_PAIRS,
) -> QueryRankings:
    """Top-``k`` gallery items, first-match rank and AP of every query (see :class:`QueryRankings`).

    The order is that of :func:`sarbridge.retrieval.metrics.evaluate`: ascending distance, ties
    broken by gallery index, same-modality items removed with ``exclude_same_modality``, gallery
    pid ``-1`` never matching. First-match ranks and APs come from the same code as ``evaluate``'s
    (:func:`~sarbridge.retrieval.eval_protocol.block_statistics`: the ranks of the matches are
    counted, no row is sorted), so they are bitwise equal. Works in chunks of about
    ``chunk_pairs`` query x gallery pairs; the top-``k`` lists need only a partial sort of every
    row (:func:`topk_stable`).

    Args:
        dist: ``(Q, G)`` distances, smaller = more similar.
        q_pids: ``(Q,)`` query identities.
        g_pids: ``(G,)`` gallery identities (``-1``: distractor).
        q_mods: ``(Q,)`` query modalities (needed with ``exclude_same_modality``).
        g_mods: ``(G,)`` gallery modalities.
        exclude_same_modality: drop gallery items of the query's modality.
        top_k: items listed per query.
        chunk_pairs: memory bound of one chunk.

    Returns:
        :class:`QueryRankings` (``ap`` NaN for queries without a match).
    """
    d = np.asarray(dist)
    num_q, num_g = d.shape
    qp = np.asarray(q_pids).reshape(-1)
    gp = np.asarray(g_pids).reshape(-1)
    if exclude_same_modality and (q_mods is None or g_mods is None):
        raise ValueError("exclude_same_modality needs q_mods and g_mods")
    qm = np.asarray(q_mods).reshape(-1) if exclude_same_modality else None
    gm = np.asarray(g_mods).reshape(-1) if exclude_same_modality else None
    k = max(0, min(int(top_k), num_g))
    top_index = np.full((num_q, int(top_k)), -1, dtype=np.int64)
    top_score = np.full((num_q, int(top_k)), np.nan, dtype=np.float64)
    first = np.zeros(num_q, dtype=np.int64)
    ap = np.full(num_q, np.nan)
    proto = EvalProtocol(num_q, num_g, qp, gp, qm, gm, exclude_same_modality, None, None, False,
                         integer_pids=False)
    rows = max(1, int(chunk_pairs) // max(num_g, 1))
    for start in range(0, num_q, rows):
        stop = min(start + rows, num_q)
        dc = np.asarray(d[start:stop], dtype=np.float64)
        removed = (gm[None, :] == qm[start:stop, None]) if qm is not None and gm is not None else None
        if k:
            top = topk_stable(dc, k, removed)
            scores = np.take_along_axis(dc, top, axis=1)
            if removed is not None:
                gone = np.take_along_axis(removed, top, axis=1)
                top = np.where(gone, -1, top)
                scores = np.where(gone, np.nan, scores)
            top_index[start:stop, :k] = top
            top_score[start:stop, :k] = scores
        sel, f, a, _ = block_statistics(start, DenseBlock(dc), proto)
        first[start + sel], ap[start + sel] = f, a
    return QueryRankings(top_index, top_score, first, ap)


# --------------------------------------------------------------------------------------------
# Ranking embeddings
# --------------------------------------------------------------------------------------------
def rank(query: Any, gallery: Any, k: int = 10, metric: str = "sqeuclidean") -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` gallery indices and distances for each query (ascending distance, ties by index).

    Args:
        query: ``(Q, D)`` features (array or tensor); L2-normalised before the distance.
        gallery: ``(G, D)`` features.
        k: items per query.
        metric: distance of :func:`~sarbridge.retrieval.distance.pairwise_distance`.

    Returns:
        ``(indices, distances)``, both (Q, min(k, G)).
    """
    dist = pairwise_distance(query, gallery, metric=metric, normalize=True)
    order = topk_stable(dist, min(k, dist.shape[1]))
    return order, np.take_along_axis(dist, order, axis=1)


# --------------------------------------------------------------------------------------------
# JSON entries
# --------------------------------------------------------------------------------------------
def json_number(x: Any, digits: int = 6) -> float | None:
    """A JSON-safe rounded float (None for NaN / inf)."""
    v = float(x)
    return round(v, digits) if math.isfinite(v) else None


# --------------------------------------------------------------------------------------------
# Choosing the rows to show
# --------------------------------------------------------------------------------------------
def worst_order(queries: Sequence[dict[str, Any]]) -> list[int]:
    """Indices of the scored queries (``ap`` not null), worst first.

    Worst = lowest AP; ties by the later first match (never matched is worst), then by the larger
    localisation error, then by query order.
    """
    def key(i: int) -> tuple[float, float, float, int]:
        q = queries[i]
        fm = q.get("first_match_rank")
        err = q.get("error_m")
        return (float(q["ap"]), -(float(fm) if fm else math.inf), -(float(err) if err is not None else 0.0), i)

    return sorted((i for i, q in enumerate(queries) if q.get("ap") is not None and q.get("top")), key=key)


def select_queries(
    queries: Sequence[dict[str, Any]], samples: int, worst: int, seed: int = 0, need_thumb: bool = False,
) -> tuple[list[int], list[int]]:
    """``(sampled, worst)`` query indices to display.

    Args:
        queries: the ``queries`` list of one protocol.
        samples: number of queries drawn at random (seeded; shown in query order).
        worst: number of queries with the lowest AP (see :func:`worst_order`).
        seed: seed of the random draw.
        need_thumb: draw only queries that have a saved thumbnail (localisation).
    """
    eligible = [i for i, q in enumerate(queries) if q.get("top") and (not need_thumb or q.get("thumb"))]
    rng = np.random.default_rng(seed)
    n = min(max(samples, 0), len(eligible))
    sampled = sorted(int(eligible[j]) for j in rng.choice(len(eligible), size=n, replace=False)) if n else []
    return sampled, worst_order(queries)[: max(worst, 0)]


# --------------------------------------------------------------------------------------------
# Writing / reading
# --------------------------------------------------------------------------------------------
def write_rankings(run_dir: str | Path, task: str, protocols: dict[str, dict[str, Any]],
                   score: dict[str, Any], top_k: int = TOP_K) -> Path:
    """Write ``run_dir/rankings.json`` atomically (compact JSON); returns its path.

    Args:
        run_dir: run folder.
        task: the task name recorded in the file (``reid``, ``geo``).
        protocols: ``name -> entry`` (module docstring).
        score: ``{"name", "higher_is_better", "description"}`` of the listed scores.
        top_k: length of the stored lists.
    """
    path = Path(run_dir) / RANKINGS_FILE
    payload = {"version": RANKINGS_VERSION, "task": task, "top_k": int(top_k), "score": score,
               "protocols": protocols}
    atomic_write_text(path, json.dumps(payload, separators=(",", ":")) + "\n")
    return path


def load_rankings(run_dir: str | Path) -> dict[str, Any] | None:
    """The rankings of a run folder, or None when it has none (evaluated before they existed)
    or the file is unreadable / of another layout version."""
    path = Path(run_dir) / RANKINGS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != RANKINGS_VERSION or not isinstance(data.get("protocols"), dict):
        return None
    return data


__all__ = [
    "RANKINGS_FILE", "STATUSES", "TOP_K", "QueryRankings", "cmc_from_ranks", "json_number", "load_rankings",
    "rank", "rank_lists", "select_queries", "topk_stable", "worst_order", "write_rankings",
]
