"""Ranking metrics for re-identification / cross-modal retrieval: CMC, mAP and mINP.

Semantics follow the Market-1501 evaluation as implemented by fast-reid (which the HOSS ReID
reference code uses):

* For each query the gallery is ranked by **ascending distance**. Ties are broken by **gallery
  index** (the item that comes first in the gallery ranks first), i.e. the ranking equals a
  stable sort, so results are deterministic and do not depend on the sorting algorithm.
* Optionally, gallery items are **removed** from a query's ranking before scoring: items of the
  query's own modality (``exclude_same_modality``, for strictly cross-modal protocols) and
  items with the query's pid *and* camera (``exclude_same_camera``, the Market-1501 rule; off by
  default because the HOSS protocol does not use it). Removed items take no rank position.
* Gallery items with pid ``-1`` are distractors: they stay in the ranking as negatives and never
  match (a query with pid ``-1`` therefore has no match and is skipped).
* A query with no remaining matching gallery item is **skipped**: it counts neither in CMC nor
  in mAP / mINP. If every query is skipped a :class:`ValueError` is raised.

With ``r_1 < r_2 < ... < r_n`` the 1-based ranks of a query's ``n`` matches among the remaining
gallery items:

* ``CMC@k`` = fraction of valid queries with ``r_1 <= k`` (``cmc[k - 1]``). When a query's
  remaining gallery is shorter than ``max_rank`` its curve simply stays at its last value, so
  ``cmc`` always has ``max_rank`` entries (fast-reid instead truncates the curve to the gallery
  size; the values it reports are the same).
* ``AP = (1/n) * sum_i i / r_i``; ``mAP`` is the mean over valid queries.
* ``INP = n / r_n`` (inverse negative penalty, Ye et al. 2021); ``mINP`` is the mean.

The implementation never sorts a row. It works on blocks of queries and counts the 1-based rank
of every match directly (``1 + #kept items with a smaller distance + #kept items with an equal
distance and a smaller gallery index``): a query's matches come from the gallery indices
grouped by pid, and only the items no farther than its farthest match -- the only ones that can
precede a match -- are looked at (:mod:`sarbridge.retrieval.sparse_ranks`, one comparison pass
per block); a block where most items would be looked at is counted densely
(:func:`sarbridge.retrieval.rank_counting.positive_ranks`, also the CUDA path). CMC, AP and INP
need nothing else. :func:`evaluate` takes a distance matrix (chunks of about 4M pairs);
:func:`evaluate_features` takes the features and computes one block of queries at a time, so a
10,000 x 100,000 evaluation never holds the 4 GB matrix; on the CPU it does not even finish
each block's distances -- only the entries it looks at get ``pairwise_distance``'s last
operations (bitwise the same values). :func:`rank_matches` (the full stable ordering) remains as
the reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import numpy as np
import torch

from sarbridge.retrieval.distance import RetrievalInputError, to_numpy
from sarbridge.retrieval.distance_blocks import ProductBlock, product_blocks
from sarbridge.retrieval.eval_protocol import EvalProtocol, block_statistics
from sarbridge.retrieval.eval_protocol import check_positive_int as _check_positive_int
from sarbridge.retrieval.sparse_ranks import DenseBlock, RankBlock

__all__ = [
    "cmc_from_ranks", "cmc_to_ranks", "evaluate", "evaluate_features", "match_statistics", "rank_matches", "summarize",
]

# Query x gallery pairs per chunk when ``chunk_size`` is None (about 100 MB of temporaries).
_CHUNK_PAIRS: Final[int] = 2**22


def rank_matches(
    d: np.ndarray, match: np.ndarray, removed: np.ndarray | None
) -> np.ndarray:
    """Reorder each row of ``match`` by ascending ``d``, ties broken by column index.

    The ranking shared by :func:`evaluate` and the per-query lists of
    :func:`sarbridge.retrieval.rankings.rank_lists`; :func:`match_statistics` reads first-match
    ranks, AP and INP off its result.

    Items flagged in ``removed`` (never matches) are moved behind every kept item, so a kept
    match's 1-based position in the result is its rank among the remaining gallery items. The
    result equals a stable argsort with removed items placed last, computed faster:

    * removed items are set to ``+inf`` (NaN would be equivalent but makes numpy's sort ~2x
      slower) and each row is sorted with the fast, unstable default algorithm;
    * only the positions of the matches matter, and a match's position can differ from its
      stable position only when its distance equals another item's (an ``+inf`` match equals
      the removed items). Then the tie group is contiguous in sorted order, so the match is
      adjacent to an equal value. Just those rows are re-sorted stably, with removed items set
      to NaN, which sorts after ``+inf`` and never compares equal.

    ``d`` may be modified in place when ``removed`` is given.

    Args:
        d: ``(R, G)`` distances.
        match: ``(R, G)`` bool, True where the gallery item matches the row's query.
        removed: ``(R, G)`` bool, True for items taken out of the ranking (never matches), or None.

    Returns:
        ``(R, G)`` bool: ``match`` in rank order.
    """
    if removed is not None:
        d[removed] = np.inf
    order = np.argsort(d, axis=1)
    ranked = np.take_along_axis(match, order, axis=1)
    if d.shape[1] > 1:
        s = np.take_along_axis(d, order, axis=1)
        del order
        tied = s[:, 1:] == s[:, :-1]
        del s
        tied &= ranked[:, 1:] | ranked[:, :-1]
        redo = np.flatnonzero(tied.any(axis=1))
        del tied
        if redo.size:
            dr = d[redo]
            if removed is not None:
                dr[removed[redo]] = np.nan
            stable = np.argsort(dr, axis=1, kind="stable")
            ranked[redo] = np.take_along_axis(match[redo], stable, axis=1)
    return ranked


def match_statistics(ranked: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First-match rank, AP and INP of every row of a rank-ordered match matrix.

    With ``r_1 < ... < r_n`` the 1-based positions of the ``n`` True entries of a row:
    ``first = r_1``, ``AP = (1/n) sum_i i / r_i`` and ``INP = n / r_n`` (module docstring). One
    pass over the True entries (no loop over rows).

    Args:
        ranked: ``(R, K)`` bool, True where the item at that rank matches the row's query (e.g.
            the result of :func:`rank_matches`, or ``ranked_ids == target[:, None]``).

    Returns:
        ``(first, ap, inp)``: ``(R,)`` int64 first-match ranks (0 for a row without a match) and
        ``(R,)`` float64 AP and INP (NaN for a row without a match).
    """
    hits = np.asarray(ranked, dtype=bool)
    num_rows = hits.shape[0]
    row, col = np.nonzero(hits)  # row-major: per row, positives in rank order
    ranks = col.astype(np.float64) + 1.0  # r_i (1-based)
    n_rel = np.bincount(row, minlength=num_rows)
    offsets = np.cumsum(n_rel) - n_rel
    nth = np.arange(row.size, dtype=np.float64) - offsets[row] + 1.0  # i
    sums = np.bincount(row, weights=nth / ranks, minlength=num_rows)
    has = n_rel > 0
    first = np.zeros(num_rows, dtype=np.int64)
    ap = np.full(num_rows, np.nan)
    inp = np.full(num_rows, np.nan)
    first[has] = col[offsets[has]] + 1
    ap[has] = sums[has] / n_rel[has]
    inp[has] = n_rel[has] / ranks[(offsets + n_rel - 1)[has]]
    return first, ap, inp


def cmc_from_ranks(first_match_rank: Any, length: int) -> np.ndarray:
    """CMC curve of 1-based first-match ranks: ``cmc[k-1]`` = fraction of the given ranks in ``[1, k]``.

    A rank of 0 (never matched) counts as a miss at every ``k``: pass only the scored queries'
    ranks for the :func:`evaluate` curve (skipped queries do not count there).

    Args:
        first_match_rank: ``(N,)`` integer ranks, 0 for "no match".
        length: curve length (e.g. ``max_rank``).

    Returns:
        ``(length,)`` float64 fractions in ``[0, 1]``; empty when there are no ranks or ``length < 1``.
    """
    r = np.asarray(first_match_rank, dtype=np.int64).reshape(-1)
    if r.size == 0 or length <= 0:
        return np.zeros(0, dtype=np.float64)
    hits = np.bincount(r[(r > 0) & (r <= length)] - 1, minlength=length)  # hits[k] = #ranks == k+1
    return np.cumsum(hits) / float(r.size)


def _evaluate_blocks(
    blocks: Iterable[tuple[int, RankBlock | torch.Tensor]], proto: EvalProtocol, max_rank: int,
) -> dict[str, Any]:
    """CMC / mAP / mINP from distance blocks ``(start, block)`` in query order."""
    num_q = proto.num_q
    valid = np.zeros(num_q, dtype=bool)
    first_rank = np.zeros(num_q, dtype=np.int64)  # r_1 of every valid query, 0 for the others
    aps: list[np.ndarray] = []
    inps: list[np.ndarray] = []
    for start, block in blocks:
        check_nan = True
        if isinstance(block, ProductBlock):
            if block.safe:
                check_nan = False  # finite features and no overflow: no NaN distance
            else:
                block = torch.from_numpy(block.dense())
        sel, first, ap, inp = block_statistics(start, block, proto, check_nan=check_nan)
        valid[start + sel] = True
        first_rank[start + sel] = first
        aps.append(ap)
        inps.append(inp)
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise proto.no_match_error()
    all_ap = np.concatenate(aps)
    all_inp = np.concatenate(inps)
    return {
        "cmc": cmc_from_ranks(first_rank[valid], max_rank),
        "mAP": float(all_ap.mean()),
        "mINP": float(all_inp.mean()),
        "num_valid_queries": num_valid,
        "all_AP": all_ap,
        "all_INP": all_inp,
        "valid_queries": valid,
    }


def evaluate(
    dist: Any,
    q_pids: Any,
    g_pids: Any,
    q_mods: Any | None = None,
    g_mods: Any | None = None,
    max_rank: int = 50,
    exclude_same_modality: bool = False,
    q_camids: Any | None = None,
    g_camids: Any | None = None,
    exclude_same_camera: bool = False,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """CMC, mAP and mINP of a query x gallery distance matrix.

    See the module docstring for the exact protocol. In short: ascending distance, ties broken
    by gallery index; optional same-modality and same-pid-same-camera removal; pid ``-1``
    gallery items are never-matching distractors; queries without a remaining match are
    skipped. The ranks of the matches are counted, not sorted out
    (:func:`~sarbridge.retrieval.rank_counting.positive_ranks`); a torch ``dist`` on a CUDA
    device is evaluated there.

    Args:
        dist: ``(Q, G)`` distances (numpy array or torch tensor); smaller = more similar.
            ``+-inf`` is allowed, NaN is not.
        q_pids: ``(Q,)`` integer query identities.
        g_pids: ``(G,)`` integer gallery identities; ``-1`` marks a distractor.
        q_mods: ``(Q,)`` query modalities (any comparable labels, e.g. ``"sar"`` or 0/1).
        g_mods: ``(G,)`` gallery modalities.
        max_rank: length of the returned CMC curve.
        exclude_same_modality: drop gallery items whose modality equals the query's
            (requires ``q_mods`` and ``g_mods``).
        q_camids: ``(Q,)`` query camera ids.
        g_camids: ``(G,)`` gallery camera ids.
        exclude_same_camera: drop gallery items with the query's pid and camera id
            (Market-1501 rule; requires ``q_camids`` and ``g_camids``).
        chunk_size: queries per chunk; ``None`` picks it so a chunk covers about 4M query x
            gallery pairs. The result does not depend on it.

    Returns:
        A dict with

        * ``"cmc"``: ``(max_rank,)`` float64 array of fractions in ``[0, 1]``;
        * ``"mAP"``, ``"mINP"``: floats in ``[0, 1]``;
        * ``"num_valid_queries"``: number of queries that were scored;
        * ``"all_AP"``, ``"all_INP"``: float64 arrays with one entry per valid query, in query
          order;
        * ``"valid_queries"``: ``(Q,)`` bool array, True for the scored queries (maps
          ``all_AP`` back to query indices).

    Raises:
        RetrievalInputError: (a :class:`ValueError`) shapes that disagree, NaN in ``dist``,
            non-integer pids, an exclusion flag without its labels, a bad ``max_rank`` /
            ``chunk_size``, or no query with a remaining gallery match.
    """
    on_device = isinstance(dist, torch.Tensor) and dist.device.type != "cpu"
    if on_device:
        t = dist.detach()
        if t.is_complex() or t.dtype == torch.bool:
            raise RetrievalInputError(f"dist must be real-valued, got dtype {t.dtype}")
        d: np.ndarray | torch.Tensor = t if t.dtype in (torch.float32, torch.float64) else t.to(
            torch.float64 if not t.is_floating_point() else torch.float32)
    else:
        d = to_numpy(dist, "dist")
        if d.ndim == 2 and d.dtype.kind not in "fiu":
            raise RetrievalInputError(f"dist must be real-valued, got dtype {d.dtype}")
        if d.ndim == 2 and d.dtype.kind != "f":
            d = d.astype(np.float64)
        elif d.ndim == 2 and d.dtype.itemsize < 4:
            d = d.astype(np.float32)
    if d.ndim != 2:
        raise RetrievalInputError(
            f"dist must be a 2-D (num_query, num_gallery) array, got shape {tuple(d.shape)}"
        )
    num_q, num_g = d.shape
    _check_positive_int(max_rank, "max_rank")
    _check_positive_int(chunk_size, "chunk_size", allow_none=True)
    proto = EvalProtocol(num_q, num_g, q_pids, g_pids, q_mods, g_mods, exclude_same_modality,
                         q_camids, g_camids, exclude_same_camera)
    rows = int(chunk_size) if chunk_size is not None else max(1, _CHUNK_PAIRS // max(num_g, 1))
    blocks = ((s, d[s:s + rows] if isinstance(d, torch.Tensor) else DenseBlock(d[s:s + rows]))
              for s in range(0, num_q, rows))
    return _evaluate_blocks(blocks, proto, max_rank)


def evaluate_features(
    query: Any,
    gallery: Any,
    q_pids: Any,
    g_pids: Any,
    q_mods: Any | None = None,
    g_mods: Any | None = None,
    max_rank: int = 50,
    exclude_same_modality: bool = False,
    q_camids: Any | None = None,
    g_camids: Any | None = None,
    exclude_same_camera: bool = False,
    metric: str = "sqeuclidean",
    normalize: bool = True,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """:func:`evaluate` of ``pairwise_distance(query, gallery, metric, normalize)``, without the matrix.

    The distances are computed one block of query rows at a time
    (:func:`~sarbridge.retrieval.distance_blocks.distance_blocks`) and each block is evaluated
    and dropped, so memory stays bounded by a block (about 8M distances) whatever ``Q x G`` is.
    On the CPU with the default ``chunk_size`` the distances are bitwise those of
    :func:`~sarbridge.retrieval.distance.pairwise_distance`, so the result equals
    ``evaluate(pairwise_distance(query, gallery, metric, normalize), ...)``.

    Args:
        query: ``(Q, D)`` query features (numpy array or torch tensor).
        gallery: ``(G, D)`` gallery features.
        q_pids, g_pids, q_mods, g_mods, max_rank, exclude_same_modality, q_camids, g_camids,
            exclude_same_camera: as for :func:`evaluate`.
        metric: ``"sqeuclidean"`` (default), ``"euclidean"`` or ``"cosine"``.
        normalize: L2-normalise the features first (default True).
        chunk_size: query rows per block; None (default) uses ``pairwise_distance``'s blocks.
        device: where to compute: None (default: CUDA when a feature tensor is on CUDA, else
            the CPU), ``"cpu"`` or a torch device such as ``"cuda"``. On CUDA the distances
            agree with the CPU ones to float rounding only.

    Returns:
        The dict of :func:`evaluate`.

    Raises:
        RetrievalInputError: (a :class:`ValueError`) invalid features or labels (see
            :func:`evaluate` and ``pairwise_distance``), or no query with a match.
    """
    _check_positive_int(max_rank, "max_rank")
    _check_positive_int(chunk_size, "chunk_size", allow_none=True)
    num_q = int(query.shape[0] if hasattr(query, "shape") else len(query))
    num_g = int(gallery.shape[0] if hasattr(gallery, "shape") else len(gallery))
    proto = EvalProtocol(num_q, num_g, q_pids, g_pids, q_mods, g_mods, exclude_same_modality,
                         q_camids, g_camids, exclude_same_camera)
    blocks = product_blocks(query, gallery, metric=metric, normalize=normalize, chunk_size=chunk_size,
                            device=device)
    return _evaluate_blocks(blocks, proto, max_rank)


def cmc_to_ranks(cmc: Any, ranks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Pick CMC values at given ranks.

    Args:
        cmc: CMC curve, ``cmc[k - 1]`` = CMC@k.
        ranks: 1-based ranks to report.

    Returns:
        ``{"R1": cmc[0], "R5": cmc[4], ...}`` as Python floats, in the order of ``ranks``.

    Raises:
        RetrievalInputError: (a :class:`ValueError`) a rank below 1 or beyond the curve.
    """
    c = np.asarray(cmc, dtype=np.float64).reshape(-1)
    out: dict[str, float] = {}
    for k in ranks:
        _check_positive_int(k, "rank")
        if k > c.size:
            raise RetrievalInputError(
                f"rank {k} is beyond the CMC curve (length {c.size})", "raise max_rank"
            )
        out[f"R{int(k)}"] = float(c[int(k) - 1])
    return out


def summarize(
    result: dict[str, Any], ranks: Sequence[int] = (1, 5, 10), percent: bool = True
) -> dict[str, float | int]:
    """Headline numbers of an :func:`evaluate` result (the shape written to ``metrics.json``).

    Args:
        result: the dict returned by :func:`evaluate`.
        ranks: CMC ranks to include.
        percent: report mAP, CMC and mINP as percentages in ``[0, 100]`` instead of fractions.

    Returns:
        ``{"mAP": ..., "R1": ..., "R5": ..., "R10": ..., "mINP": ..., "queries": int}`` (one
        ``R<k>`` per entry of ``ranks``), plain Python numbers.
    """
    scale = 100.0 if percent else 1.0
    out: dict[str, float | int] = {"mAP": float(result["mAP"]) * scale}
    out.update({k: v * scale for k, v in cmc_to_ranks(result["cmc"], ranks).items()})
    out["mINP"] = float(result["mINP"]) * scale
    out["queries"] = int(result["num_valid_queries"])
    return out
