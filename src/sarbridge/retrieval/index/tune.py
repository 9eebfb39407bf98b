"""Tune the search settings of an approximate index to a recall target: :func:`tune_search`.

The index searches a held-out sample of its own kind of vectors, each moved a little off its
original (see *queries* below), and compares the results with exact search. For the IVF kinds
(``ivfpq``, ``ivfsq``) it walks a grid of ``nprobe`` (lists visited: 1, 2, 4, ...) x ``rescore``
(candidates re-scored exactly: k, 2k, 5k, 10k, 20k, 50k, 100k), cheap to expensive; for ``hnsw``
the ``ef_search`` ladder 16 ... 1024. It keeps the cheapest setting, by measured single-query
latency, whose recall@k reaches the target, or else the one with the best recall, and stores it in
the index (``params`` and the manifest's ``tuning`` record), so that a saved and reloaded index
searches with it by default.

**Queries.** A localisation query is a SAR embedding near the optical embedding of its map patch:
close, but not the same vector, and across the modality gap not very close either (cosines of 0.6
to 0.8 between matching SAR and optical embeddings are usual). Searching the sample vectors
themselves would be far too easy (each query lies on a stored point, which IVF always finds), and
settings tuned on queries easier than the real ones promise a recall the real queries do not get:
a smaller perturbation picks fewer lists. The default is on the safe side: every sample vector is
moved by a random direction of norm ``perturb = 1.0`` times its own norm and rescaled to its
original norm, so a query has cosine about ``1 / sqrt(1 + 1.0 ** 2) = 0.71`` with its source vector
(the benchmark's queries, ``benchmarks/retrieval.py``, have 0.64). Callers who have real queries
(e.g. SAR embeddings of validation patches) pass them as ``sample`` with ``perturb=0``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from sarbridge.core.progress import progress_bar
from sarbridge.retrieval.distance import RetrievalInputError
from sarbridge.retrieval.index.index import EmbeddingIndex
from sarbridge.retrieval.index.inputs import as_matrix, l2_normalized
from sarbridge.retrieval.index.ivf import IVFStore, rescore_exact

__all__ = ["EF_SEARCH_GRID", "RESCORE_FACTORS", "check_target_recall", "perturbed_queries", "recall_at_k", "tune_search"]

#: Re-scoring depths tried, as multiples of ``k``.
RESCORE_FACTORS: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100)
#: ``ef_search`` values tried for ``hnsw``.
EF_SEARCH_GRID: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 1024)
#: Extra nprobe levels tried after the first one that reaches the target (a cheaper re-scoring
#: depth may pay for the longer scan).
_EXTRA_LEVELS = 2


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's true top-k found (ids ``-1`` never match).

    Args:
        found: ``(M, k')`` ids returned by a search.
        truth: ``(M, k)`` exact top-k ids.

    Returns:
        ``mean_q |found_q & truth_q| / k`` (1.0 for no queries).
    """
    if truth.shape[0] == 0:
        return 1.0
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=1).sum(axis=1)
    return float(np.mean(hits / truth.shape[1]))


def perturbed_queries(sample: np.ndarray, perturb: float, seed: int = 0) -> np.ndarray:
    """Sample vectors moved by a random direction of ``perturb`` times their norm, norms kept.

    Args:
        sample: ``(M, dim)`` float32 vectors.
        perturb: relative size of the move (0 returns a copy of ``sample``).
        seed: random seed.

    Returns:
        ``(M, dim)`` float32 queries; each has cosine ``1 / sqrt(1 + perturb ** 2)`` with its source
        row (exactly so when the random direction is orthogonal to it; on average in high dimension).
    """
    x = np.array(sample, dtype=np.float32, copy=True)
    if perturb == 0 or x.size == 0:
        return x
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    z = np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32)
    z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    q = x + np.float32(perturb) * norms * z
    q *= norms / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    return q.astype(np.float32)


def check_target_recall(target_recall: Any) -> float:
    """``target_recall`` as a float when it is a number in ``(0, 1]``.

    Raises:
        RetrievalInputError: (one line) anything else (0, 1.01, NaN, a bool, a string).
    """
    ok = isinstance(target_recall, (int, float, np.floating)) and not isinstance(target_recall, bool)
    if not ok or not math.isfinite(float(target_recall)) or not 0 < float(target_recall) <= 1:
        raise RetrievalInputError(
            f"target recall must be a number in (0, 1], got {target_recall!r}",
            "use e.g. --target-recall 0.95 (1.0 asks for exact results)",
        )
    return float(target_recall)


def _latency_ms(index: EmbeddingIndex, queries: np.ndarray, k: int) -> float:
    """Median wall time of single-query searches, in milliseconds."""
    times = []
    for i in range(queries.shape[0]):
        t = time.perf_counter()
        index.search(queries[i: i + 1], k)
        times.append(time.perf_counter() - t)
    return round(1000.0 * float(np.median(times)), 3) if times else 0.0


def _ladder(values: Sequence[int], limit: int) -> list[int]:
    out = sorted({min(int(v), limit) for v in values if int(v) >= 1})
    return out or [limit]


def _tune_ivf(index: EmbeddingIndex, store: IVFStore, q: np.ndarray, truth: np.ndarray, k: int, target: float,
              lat_q: np.ndarray, nprobe_grid: Sequence[int] | None, rescore_grid: Sequence[int] | None,
              progress: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    nlist = int(store.params["nlist"])
    probes = _ladder(nprobe_grid or [2 ** i for i in range(int(math.log2(nlist)) + 2)], nlist)
    depths = _ladder(rescore_grid or [k * f for f in RESCORE_FACTORS], len(index))
    depths = [d for d in depths if d >= k] or [k]
    grid: list[dict[str, Any]] = []
    feasible: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    stale, extra = 0, -1
    for nprobe in progress_bar(probes, desc="tuning nprobe", enabled=progress):
        index.set_search_params(nprobe=nprobe)
        _, cand = store.candidates(q, depths[-1])
        first_ok = None
        for depth in depths:
            _, ids = rescore_exact(store.vectors(), q, cand[:, :depth], k)
            row = {"nprobe": nprobe, "rescore": depth, "recall_at_k": round(recall_at_k(ids, truth), 4)}
            grid.append(row)
            if best is None or row["recall_at_k"] > best["recall_at_k"]:
                best, stale = row, -1
            if first_ok is None and row["recall_at_k"] >= target:
                first_ok = row
        stale += 1
        if first_ok is not None:
            index.set_search_params(rescore=first_ok["rescore"])
            first_ok["latency_ms"] = _latency_ms(index, lat_q, k)
            feasible.append(first_ok)
            extra = _EXTRA_LEVELS if extra < 0 else extra - 1
            if first_ok["rescore"] == depths[0] or extra == 0:
                break  # more lists cannot make the re-scoring cheaper
        elif stale >= 2:
            break  # recall has stopped growing with nprobe
    if feasible:
        choice = min(feasible, key=lambda r: (r["latency_ms"], r["nprobe"], r["rescore"]))
    else:
        assert best is not None
        choice = best
    index.set_search_params(nprobe=choice["nprobe"], rescore=choice["rescore"])
    if "latency_ms" not in choice:
        choice["latency_ms"] = _latency_ms(index, lat_q, k)
    return choice, grid


def _tune_hnsw(index: EmbeddingIndex, q: np.ndarray, truth: np.ndarray, k: int, target: float,
               lat_q: np.ndarray) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    grid: list[dict[str, Any]] = []
    for ef in EF_SEARCH_GRID:
        index.set_search_params(ef_search=ef)
        _, ids = index.search(q, k)
        grid.append({"ef_search": ef, "recall_at_k": round(recall_at_k(ids, truth), 4)})
        if grid[-1]["recall_at_k"] >= target:
            break
    choice = next((r for r in grid if r["recall_at_k"] >= target), None)
    if choice is None:
        choice = max(grid, key=lambda r: r["recall_at_k"])
    index.set_search_params(ef_search=choice["ef_search"])
    choice["latency_ms"] = _latency_ms(index, lat_q, k)
    return choice, grid


def tune_search(
    index: EmbeddingIndex,
    sample: Any,
    target_recall: float,
    k: int = 10,
    *,
    perturb: float = 1.0,
    seed: int = 0,
    latency_queries: int = 100,
    nprobe_grid: Sequence[int] | None = None,
    rescore_grid: Sequence[int] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Choose and store the cheapest search settings of ``index`` that reach ``target_recall``.

    Ground truth is exact top-``k`` search of the (perturbed) sample over the whole index. The
    chosen settings are applied to ``index`` and recorded in :attr:`EmbeddingIndex.tuning`; save
    the index to keep them (:meth:`EmbeddingIndex.save`). See :mod:`sarbridge.retrieval.index.tune`
    for the grid and for the choice of queries.

    Args:
        index: a built index (``ivfpq`` / ``ivfsq``: nprobe x rescore; ``hnsw``: ef_search;
            ``flat`` or a not yet trained IVF index: exact, nothing to tune).
        sample: ``(M, dim)`` held-out vectors of the indexed kind (e.g. a random subset of the
            indexed vectors), or real queries with ``perturb=0``. About 1,000 rows are plenty.
        target_recall: wanted recall@k against exact search, in ``(0, 1]``.
        k: results per query the recall is measured at (clamped to ``len(index)``).
        perturb: relative size of the random move applied to each sample vector (0: none).
        seed: seed of the perturbation and of the latency sample.
        latency_queries: single-query searches timed per candidate setting (median reported).
        nprobe_grid: nprobe values to try (default 1, 2, 4, ... up to ``nlist``).
        rescore_grid: re-scoring depths to try (default ``k`` x 1, 2, 5, 10, 20, 50, 100).
        progress: show a progress bar over the nprobe levels.

    Returns:
        ``{"nprobe", "rescore", "recall_at_k", "k", "target_recall", "latency_ms", "reached",
        "sample", "perturb", "kind", "grid"}`` (``nprobe`` / ``rescore`` are None for ``hnsw``,
        which adds ``"ef_search"``, and for exact search). ``reached`` is False when no setting
        of the grid reached the target; the best one found is then applied. ``grid`` lists every
        setting tried with its recall (it is not stored in the index).

    Raises:
        RetrievalInputError: (one line) a target outside ``(0, 1]``, an empty index or sample, a
            sample of the wrong dimension or with NaN / inf values, a bad ``k`` or ``perturb``.
    """
    target = check_target_recall(target_recall)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise RetrievalInputError(f"k must be a positive integer, got {k!r}")
    if isinstance(perturb, bool) or not isinstance(perturb, (int, float)) or not 0 <= perturb < 100:
        raise RetrievalInputError(f"perturb must be a number in [0, 100), got {perturb!r}", "use e.g. 1.0")
    if len(index) == 0:
        raise RetrievalInputError("cannot tune the search of an empty index", "add() embeddings first")
    x = as_matrix(sample, "tuning sample", index.dim)
    if x.shape[0] == 0:
        raise RetrievalInputError("the tuning sample is empty", "pass some of the indexed vectors, e.g. 1000")
    if index.normalize:
        x = l2_normalized(x)
    k = min(int(k), len(index))
    q = perturbed_queries(x, float(perturb), seed)
    _, truth = index.exact_search(q, k)
    rng = np.random.default_rng(seed + 1)
    lat_q = q[rng.permutation(q.shape[0])[: max(0, int(latency_queries))]]
    store = index._store  # the tuner is part of the index package
    result: dict[str, Any] = {"nprobe": None, "rescore": None}
    if isinstance(store, IVFStore) and store.is_trained:
        choice, grid = _tune_ivf(index, store, q, truth, k, target, lat_q, nprobe_grid, rescore_grid, progress)
        result.update(nprobe=choice["nprobe"], rescore=choice["rescore"])
    elif "ef_search" in index.params:
        choice, grid = _tune_hnsw(index, q, truth, k, target, lat_q)
        result["ef_search"] = choice["ef_search"]
    else:  # exact search: measure it all the same
        _, ids = index.search(q, k)
        choice = {"recall_at_k": round(recall_at_k(ids, truth), 4), "latency_ms": _latency_ms(index, lat_q, k)}
        grid = [dict(choice)]
    result.update(
        recall_at_k=choice["recall_at_k"], k=k, target_recall=target, latency_ms=choice["latency_ms"],
        reached=bool(choice["recall_at_k"] >= target), sample=int(q.shape[0]), perturb=float(perturb),
        kind=index.kind,
    )
    index.tuning = dict(result)
    result["grid"] = grid
    return result
