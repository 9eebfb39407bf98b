"""Ranks of the matching items of each row, found by counting instead of sorting the row.

A query's CMC, AP and INP depend only on the sorted 1-based ranks ``r_1 < ... < r_n`` of its
``n`` matches (:mod:`sarbridge.retrieval.metrics`). With the evaluation's order -- ascending
distance, ties broken by gallery index, removed items taking no position -- the rank of match
``p`` (column ``c_p``, distance ``v_p``) is

    ``rank(p) = 1 + #{kept k: d_k < v_p} + #{kept k < c_p: d_k == v_p}``

so no row needs an argsort and no ``(rows, G)`` match matrix is reordered. :func:`positive_ranks`
computes these counts for a block of rows at once:

1. only kept items with ``d_k <= max_p v_p`` can precede a match, so those candidates are packed
   into a ``(rows, C)`` table (``C`` the largest candidate count of a row; on a trained model
   usually a small fraction of the gallery) and their *values* are sorted -- a value sort is
   several times faster than an argsort and needs no index array;
2. ``#{kept k: d_k < v_p}`` is a binary search of ``v_p`` in its row of that table;
3. a match whose value occurs more than once among the candidates is resolved exactly by
   counting the equal kept items in front of its column (one pass per distinct tied value of a
   row, so a row where most distances are equal, e.g. after top-k re-ranking, costs one pass).

Everything is torch, on the device of the distances (CUDA when the distances are there); on the
CPU the value sort is numpy's (vectorised, much faster than torch's CPU sort).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import torch

from sarbridge.retrieval.sparse_ranks import flat_rank_statistics

__all__ = ["positive_ranks", "rank_statistics", "row_counts"]

# Query x gallery elements per sub-batch of the tie resolution (a few bool/int tensors of this size).
_TIE_ELEMENTS: Final[int] = 2**22
# Pack the candidates into a narrower table when they fill at most this fraction of the block.
_PACK_FRACTION: Final[float] = 0.5


def row_counts(mask: torch.Tensor) -> torch.Tensor:
    """``(R,)`` int64 True count of every row of a bool ``(R, G)`` mask (numpy's fast count on the CPU)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.count_nonzero(mask.numpy(), axis=1).astype(np.int64))
    return mask.sum(dim=1)


def _sort_rows_(table: torch.Tensor) -> torch.Tensor:
    """Sort every row of ``table`` ascending by value (in place on the CPU); returns the sorted rows."""
    if table.device.type == "cpu":
        table.numpy().sort(axis=1)  # numpy's SIMD sort; the tensor shares this memory
        return table
    return torch.sort(table, dim=1).values


def _candidates(dist: torch.Tensor, thr: torch.Tensor, kept: torch.Tensor | None) -> torch.Tensor:
    """``(R, C)`` values of the kept items with ``d <= thr`` of every row, sorted, ``+inf``-padded."""
    rows, num_g = dist.shape
    cand = dist <= thr[:, None]
    if kept is not None:
        cand &= kept
    n_c = row_counts(cand)
    width = int(n_c.max()) if rows else 0
    inf = torch.tensor(float("inf"), dtype=dist.dtype, device=dist.device)
    if width > _PACK_FRACTION * num_g:
        table = torch.where(cand, dist, inf)
    else:
        cr, cc = cand.nonzero(as_tuple=True)  # row-major: each row's candidates in column order
        slot = torch.arange(cr.numel(), device=dist.device) - (torch.cumsum(n_c, 0) - n_c)[cr]
        table = torch.full((rows, max(width, 1)), float("inf"), dtype=dist.dtype, device=dist.device)
        table[cr, slot] = dist[cr, cc]
    return _sort_rows_(table.contiguous())


def _ties_before(
    dist: torch.Tensor, kept: torch.Tensor | None, t_row: torch.Tensor, t_col: torch.Tensor,
    t_val: torch.Tensor, t_group: torch.Tensor,
) -> torch.Tensor:
    """For tied matches (row, column, value, group id), the number of kept items of the row in
    front of the column with the same value. Matches of one group share row and value."""
    groups, inverse = torch.unique(t_group, return_inverse=True)
    num_groups = groups.numel()
    g_row = torch.zeros(num_groups, dtype=torch.long, device=dist.device).scatter_(0, inverse, t_row)
    g_val = torch.zeros(num_groups, dtype=dist.dtype, device=dist.device).scatter_(0, inverse, t_val)
    out = torch.zeros(t_row.numel(), dtype=torch.long, device=dist.device)
    step = max(1, _TIE_ELEMENTS // max(dist.shape[1], 1))
    for start in range(0, num_groups, step):
        stop = min(start + step, num_groups)
        eq = dist[g_row[start:stop]] == g_val[start:stop, None]
        if kept is not None:
            eq &= kept[g_row[start:stop]]
        counts = torch.cumsum(eq, dim=1, dtype=torch.int32)  # counts[j, c] = #equal kept items <= c
        mine = (inverse >= start) & (inverse < stop)
        # The match itself is kept and equal, so "in front of it" is the inclusive count minus 1.
        out[mine] = counts[inverse[mine] - start, t_col[mine]].long() - 1
    return out


def positive_ranks(
    dist: torch.Tensor, match: torch.Tensor, kept: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted 1-based ranks of every row's matches, by counting (module docstring).

    The order is ascending ``dist``, ties broken by column index (a stable sort), items with
    ``kept`` False taking no position. Equal to the positions of the True entries of
    :func:`sarbridge.retrieval.metrics.rank_matches`, computed without sorting any row's indices.

    Args:
        dist: ``(R, G)`` float distances (no NaN; ``+-inf`` allowed), on any device.
        match: ``(R, G)`` bool, True for the row's matches (must be kept).
        kept: ``(R, G)`` bool, False for items removed from the row's ranking; None keeps all.

    Returns:
        ``(ranks, npos)``: ``(R, P)`` int64 ranks, ascending in each row, ``P`` the largest match
        count (entries ``>= npos[r]`` of row ``r`` are padding), and ``(R,)`` int64 match counts.
    """
    dev = dist.device
    rows, num_g = dist.shape
    npos = row_counts(match)
    width = int(npos.max()) if rows else 0
    if width == 0:
        return torch.zeros((rows, 0), dtype=torch.long, device=dev), npos
    pr, pc = match.nonzero(as_tuple=True)  # row-major: each row's matches in column order
    slot = torch.arange(pr.numel(), device=dev) - (torch.cumsum(npos, 0) - npos)[pr]
    pval = torch.full((rows, width), float("inf"), dtype=dist.dtype, device=dev)
    pval[pr, slot] = dist[pr, pc]
    thr = torch.full((rows, width), float("-inf"), dtype=dist.dtype, device=dev)
    thr[pr, slot] = pval[pr, slot]
    table = _candidates(dist, thr.amax(dim=1), kept)
    left = torch.searchsorted(table, pval, side="left")  # #{kept: d < v}
    right = torch.searchsorted(table, pval, side="right")
    ranks = left[pr, slot] + 1
    # The match is a candidate itself: another equal candidate means a tie to resolve by column.
    tied = (right[pr, slot] - left[pr, slot]) > 1
    if bool(tied.any()):
        t = tied.nonzero(as_tuple=True)[0]
        group = pr[t] * (table.shape[1] + 1) + left[pr[t], slot[t]]  # (row, value) -> one id
        ranks[t] += _ties_before(dist, kept, pr[t], pc[t], pval[pr[t], slot[t]], group)
    out = torch.full((rows, width), torch.iinfo(torch.long).max, dtype=torch.long, device=dev)
    out[pr, slot] = ranks
    return torch.sort(out, dim=1).values, npos


def rank_statistics(ranks: torch.Tensor, npos: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First-match rank, AP and INP of every row from its sorted match ranks.

    With ``r_1 < ... < r_n`` a row's ranks: ``first = r_1``, ``AP = (1/n) sum_i i / r_i`` and
    ``INP = n / r_n`` (as :func:`sarbridge.retrieval.metrics.match_statistics`).

    Args:
        ranks: ``(R, P)`` ranks of :func:`positive_ranks` (ascending, padded past ``npos``).
        npos: ``(R,)`` match counts.

    Returns:
        ``(first, ap, inp)`` numpy arrays: int64 first ranks (0 for a row without a match) and
        float64 AP / INP (NaN for a row without a match).
    """
    r = ranks.cpu().numpy()
    n = npos.cpu().numpy().astype(np.int64)
    rows, width = r.shape
    valid = np.arange(width)[None, :] < n[:, None]
    row_of, _ = np.nonzero(valid)
    return flat_rank_statistics(row_of, r[valid], rows)  # the arithmetic of match_statistics
