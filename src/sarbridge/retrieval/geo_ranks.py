"""Localisation metrics over the *full* ranking of every reference, by counting instead of sorting.

:func:`~sarbridge.retrieval.geo_metrics.localisation_metrics` and
:func:`~sarbridge.retrieval.geo_metrics.cmpc_metrics` read ranked lists. To score the full
ranking of ``N`` references for ``M`` queries they would need every row sorted (``M x N``);
here only the ranks that matter are counted, one block of queries at a time
(:func:`~sarbridge.retrieval.sparse_ranks.candidate_ranks`): the rank of each query's target,
the ranks of its relevant references (e.g. those within a radius, for AP) and its top-1
reference (the predicted position). The order is ascending distance, ties broken by reference
index -- a stable sort -- so the results equal those functions on
``np.argsort(dist, axis=1, kind="stable")``.

Inputs are either a distance matrix (``dist``) or the features (``query``, ``reference``),
whose distances are computed a block at a time and never held whole (the coarse retrieval's
inner product is ``metric="neg_dot"`` on L2-normalised embeddings).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sarbridge.retrieval.distance import RetrievalInputError, to_numpy
from sarbridge.retrieval.distance_blocks import ProductBlock, product_blocks
from sarbridge.retrieval.geo_metrics import CMPC_CURVE_POINTS, CMPC_MAX_ERR, cmpc_metrics, localisation_summary
from sarbridge.retrieval.sparse_ranks import DenseBlock, RankBlock, candidate_ranks, flat_rank_statistics

__all__ = ["LocalisationRanks", "localisation_metrics_full", "localisation_ranks", "target_ranks"]

_CHUNK_PAIRS = 2**22


@dataclass
class LocalisationRanks:
    """Per-query ranks over all references (1-based, ties by reference index).

    Attributes:
        target_rank: ``(M,)`` int64 rank of every query's target.
        top1: ``(M,)`` int64 index of every query's first-ranked reference.
        ap: ``(M,)`` float64 average precision of the relevant set over the full ranking.
    """

    target_rank: np.ndarray
    top1: np.ndarray
    ap: np.ndarray


def _chosen(targets: np.ndarray, relevant: Sequence[set[int]] | None, num_ref: int) -> tuple[np.ndarray, ...]:
    """Flat ``(query, reference)`` pairs to rank -- each query's target and relevant set, unique
    and sorted -- with flags for the target and for the relevant items."""
    m = targets.shape[0]
    if relevant is None:
        q = np.arange(m, dtype=np.int64)
        return q, targets, np.ones(m, dtype=bool), np.ones(m, dtype=bool)
    if len(relevant) != m:
        raise RetrievalInputError(f"relevant has {len(relevant)} entries, expected {m} (one per query)")
    sizes = np.array([len(s) for s in relevant], dtype=np.int64)
    if (sizes == 0).any():
        raise RetrievalInputError(f"relevant[{int(np.flatnonzero(sizes == 0)[0])}] is empty")
    rel = np.fromiter((int(x) for s in relevant for x in s), dtype=np.int64, count=int(sizes.sum()))
    if rel.size and (rel.min() < 0 or rel.max() >= num_ref):
        raise RetrievalInputError(f"relevant holds a reference index outside [0, {num_ref})")
    owner = np.repeat(np.arange(m, dtype=np.int64), sizes)
    rel_keys = np.unique(owner * num_ref + rel)
    tgt_keys = np.arange(m, dtype=np.int64) * num_ref + targets
    keys = np.union1d(rel_keys, tgt_keys)
    return keys // num_ref, keys % num_ref, np.isin(keys, tgt_keys), np.isin(keys, rel_keys)


def _blocks(dist: Any, query: Any, reference: Any, metric: str, normalize: bool,
            chunk_size: int | None) -> tuple[int, int, Iterator[tuple[int, RankBlock]]]:
    """``(M, N, blocks)`` of a distance matrix or of features (numpy blocks, NaN-checked)."""
    if dist is not None:
        d = to_numpy(dist, "dist")
        if d.ndim != 2 or d.dtype.kind not in "fiu":
            raise RetrievalInputError(f"dist must be a real 2-D (num_queries, num_references) array, got shape {d.shape}")
        if d.dtype.kind != "f":
            d = d.astype(np.float64)
        if np.isnan(d).any():
            raise RetrievalInputError("dist contains NaN values", "check the features / distance computation")
        rows = chunk_size or max(1, _CHUNK_PAIRS // max(d.shape[1], 1))
        return d.shape[0], d.shape[1], ((s, DenseBlock(d[s:s + rows])) for s in range(0, d.shape[0], rows))
    if query is None or reference is None:
        raise RetrievalInputError("give either dist or both query and reference features")
    m = int(query.shape[0])
    n = int(reference.shape[0])

    def gen() -> Iterator[tuple[int, RankBlock]]:
        for start, block in product_blocks(query, reference, metric, normalize, chunk_size, device="cpu"):
            if isinstance(block, ProductBlock) and block.safe:
                yield start, block
            else:
                dense = block.dense() if isinstance(block, ProductBlock) else block.cpu().numpy()
                if np.isnan(dense).any():
                    raise RetrievalInputError("the distances contain NaN values", "check the features")
                yield start, DenseBlock(dense)

    return m, n, gen()


def localisation_ranks(
    targets: Any,
    dist: Any | None = None,
    query: Any | None = None,
    reference: Any | None = None,
    relevant: Sequence[set[int]] | None = None,
    metric: str = "neg_dot",
    normalize: bool = False,
    chunk_size: int | None = None,
) -> LocalisationRanks:
    """Target rank, top-1 reference and AP of every query over the full ranking (module docstring).

    Args:
        targets: ``(M,)`` index of every query's target reference.
        dist: ``(M, N)`` distances (smaller = closer); or None and the features below.
        query: ``(M, D)`` query features (with ``reference``, instead of ``dist``).
        reference: ``(N, D)`` reference features.
        relevant: per query the references counted as correct for AP (default ``{target}``).
        metric: distance of the features (:data:`~sarbridge.retrieval.distance_blocks.BLOCK_METRICS`;
            default ``"neg_dot"``: larger inner product first).
        normalize: L2-normalise the features first (default False: embeddings already are).
        chunk_size: query rows per block (default: about 4M (dist) or 8M (features) pairs).

    Returns:
        :class:`LocalisationRanks`.

    Raises:
        RetrievalInputError: (a :class:`ValueError`) malformed inputs, out-of-range indices, NaN.
    """
    m, n, blocks = _blocks(dist, query, reference, metric, normalize, chunk_size)
    t = to_numpy(targets, "targets")
    if t.shape != (m,) or t.dtype.kind not in "iu":
        raise RetrievalInputError(f"targets must be {m} integer reference indices, got shape {t.shape}")
    t = t.astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= n):
        raise RetrievalInputError(f"targets hold a reference index outside [0, {n})")
    q_all, r_all, is_tgt, is_rel = _chosen(t, relevant, n)
    target_rank = np.zeros(m, dtype=np.int64)
    top1 = np.full(m, -1, dtype=np.int64)
    ap = np.full(m, np.nan)
    bounds = np.searchsorted(q_all, np.arange(m + 1, dtype=np.int64))
    for start, block in blocks:
        stop = start + block.shape[0]
        lo, hi = bounds[start], bounds[stop]
        rows, cols = q_all[lo:hi] - start, r_all[lo:hi]
        res = candidate_ranks(block, rows, cols, max_fraction=np.inf)
        if res is None:  # a candidate bound missed a chosen item: rank on the finished distances
            dense = DenseBlock(block.dense())
            res = candidate_ranks(dense, rows, cols, max_fraction=np.inf)
            assert res is not None
        tg, rl = is_tgt[lo:hi], is_rel[lo:hi]
        target_rank[start + rows[tg]] = res.ranks[tg]
        top1[start:stop] = res.top
        _, block_ap, _ = flat_rank_statistics(rows[rl], res.ranks[rl], stop - start)
        ap[start:stop] = block_ap
    return LocalisationRanks(target_rank, top1, ap)


def target_ranks(query: Any, reference: Any, targets: Any, metric: str = "neg_dot", normalize: bool = False,
                 chunk_size: int | None = None) -> np.ndarray:
    """``(M,)`` 1-based rank of every query's target among all references (ties by reference index).

    Args:
        query, reference, metric, normalize, chunk_size: as :func:`localisation_ranks`.
        targets: ``(M,)`` target reference indices.
    """
    return localisation_ranks(targets, query=query, reference=reference, metric=metric, normalize=normalize,
                              chunk_size=chunk_size).target_rank


def localisation_metrics_full(
    targets: Any,
    ref_xy: Any,
    query_xy: Any,
    dist: Any | None = None,
    query: Any | None = None,
    reference: Any | None = None,
    pred_xy: Any | None = None,
    topk: Sequence[int] = (1, 5, 10, 20),
    success_m: Sequence[float] = (50, 100, 150, 200),
    relevant: Sequence[set[int]] | None = None,
    lonlat: bool = False,
    metric: str = "neg_dot",
    normalize: bool = False,
    cmpc: bool = False,
    cmpc_max_err: float = CMPC_MAX_ERR,
    cmpc_points: int = CMPC_CURVE_POINTS,
) -> dict[str, Any]:
    """:func:`~sarbridge.retrieval.geo_metrics.localisation_metrics` (and with ``cmpc``
    :func:`~sarbridge.retrieval.geo_metrics.cmpc_metrics`) of the full stable ranking, without it.

    Args:
        targets, dist, query, reference, relevant, metric, normalize: as :func:`localisation_ranks`.
        ref_xy, query_xy, pred_xy, topk, success_m, lonlat: as ``localisation_metrics``
            (``pred_xy`` defaults to the position of each query's top-1 reference).
        cmpc: also CMPC's figures (``cmpc_*`` keys; ``cmpc_map_mrr`` is the exact mean reciprocal
            rank of the target over all references).
        cmpc_max_err, cmpc_points: CMPC's success curve (as ``cmpc_metrics``).

    Returns:
        The dict of ``localisation_metrics`` (plus the ``cmpc_*`` keys with ``cmpc``).
    """
    ranks = localisation_ranks(targets, dist, query, reference, relevant, metric, normalize)
    out: dict[str, Any] = localisation_summary(ranks.target_rank, ranks.ap, ranks.top1, ref_xy, query_xy,
                                               pred_xy, topk, success_m, lonlat)
    if cmpc:
        out.update(cmpc_metrics(ranks.top1[:, None], to_numpy(targets, "targets"), ref_xy, query_xy,
                                target_rank=ranks.target_rank, max_err=cmpc_max_err, points=cmpc_points))
    return out
