"""Ranks of a few chosen items per row from the few items that can precede them (CPU, numpy).

The evaluation order is ascending distance, ties broken by column index, removed items taking
no position (:mod:`sarbridge.retrieval.metrics`). An item at column ``c`` with distance ``v``
is preceded only by kept items with ``d <= v``; so with ``thr[r]`` the largest distance of row
``r``'s chosen items (its matches), the *candidates* ``{kept k: d_k <= thr[r]}`` hold everything
that decides their ranks. :func:`candidate_ranks` finds them with one comparison pass over the
block (:meth:`RankBlock.candidates` may return a superset; the exact distances of that superset
are then checked), sorts just them by ``(row, distance, column)`` and reads every chosen item's
1-based rank off its position in its row -- no row is sorted, no ``(rows, G)`` mask besides the
one comparison is built. When the candidates are a large part of the block (an untrained model,
``+inf`` matches) it returns None and the caller counts densely
(:func:`sarbridge.retrieval.rank_counting.positive_ranks`).

Blocks are either a given distance matrix (:class:`DenseBlock`) or the raw products of
:class:`sarbridge.retrieval.distance_blocks.ProductBlock`, whose distances are computed only
for the entries asked for (bitwise the dense ones).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np

__all__ = ["CandidateRanks", "DenseBlock", "RankBlock", "candidate_ranks", "flat_rank_statistics", "segment_max"]

# Fall back to dense counting when the candidates exceed this fraction of the block.
_MAX_CANDIDATE_FRACTION: Final[float] = 1.0 / 16.0


class RankBlock(Protocol):
    """A ``(rows, G)`` block of distances that can give chosen entries and candidate supersets."""

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, G)``."""
        ...

    def values(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Exact distances at ``(rows[i], cols[i])``."""
        ...

    def candidates(self, thr: np.ndarray) -> np.ndarray:
        """Ascending flat indices ``r * G + c`` of a superset of ``{d[r, c] <= thr[r]}``."""
        ...

    def dense(self) -> np.ndarray:
        """The whole block (may consume the block)."""
        ...


class DenseBlock:
    """A :class:`RankBlock` over a given ``(rows, G)`` distance array (no NaN)."""

    def __init__(self, dist: np.ndarray) -> None:
        self.dist = dist

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, G)``."""
        return (int(self.dist.shape[0]), int(self.dist.shape[1]))

    def values(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``dist[rows, cols]``."""
        return self.dist[rows, cols]

    def candidates(self, thr: np.ndarray) -> np.ndarray:
        """Exactly the flat indices with ``dist[r, c] <= thr[r]``."""
        return np.flatnonzero(self.dist <= thr.astype(self.dist.dtype, copy=False)[:, None])

    def dense(self) -> np.ndarray:
        """The array itself."""
        return self.dist


@dataclass
class CandidateRanks:
    """Result of :func:`candidate_ranks`.

    Attributes:
        ranks: ``(P,)`` int64 1-based rank of every chosen item (same order as given).
        top: ``(rows,)`` int64 column of each row's first-ranked item, ``-1`` for a row
            without chosen items.
    """

    ranks: np.ndarray
    top: np.ndarray


def segment_max(values: np.ndarray, rows: np.ndarray, num_rows: int) -> np.ndarray:
    """Largest value of every row (``-inf`` for a row without values); ``rows`` ascending."""
    out = np.full(num_rows, -np.inf, dtype=values.dtype if values.dtype.kind == "f" else np.float64)
    if rows.size:
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        out[rows[starts]] = np.maximum.reduceat(values, starts)
    return out


def candidate_ranks(
    block: RankBlock, rows: np.ndarray, cols: np.ndarray,
    kept_at: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    max_fraction: float | None = None,
) -> CandidateRanks | None:
    """1-based ranks of the chosen entries ``(rows[i], cols[i])`` of a block (module docstring).

    Args:
        block: the distances (no NaN).
        rows: ``(P,)`` block-local rows of the chosen items, ascending; columns ascending within a row.
        cols: ``(P,)`` their columns. Chosen items must be kept.
        kept_at: ``kept_at(r, c)`` -> bools, False for entries removed from their row's ranking;
            None keeps everything.
        max_fraction: give up (return None) when the candidates exceed this fraction of the block
            (default 1/16).

    Returns:
        :class:`CandidateRanks`, or None when there are too many candidates for this method.
    """
    num_rows, num_g = block.shape
    limit = _MAX_CANDIDATE_FRACTION if max_fraction is None else max_fraction
    if rows.size == 0:
        return CandidateRanks(np.zeros(0, dtype=np.int64), np.full(num_rows, -1, dtype=np.int64))
    v = block.values(rows, cols)
    thr = segment_max(v, rows, num_rows)
    flat = block.candidates(thr)
    if flat.size > max(limit * num_rows * num_g, 4 * rows.size + 64):
        return None
    cr, cc = np.divmod(flat, num_g)
    cd = block.values(cr, cc)
    keep = cd <= thr[cr]
    if kept_at is not None:
        keep &= kept_at(cr, cc)
    cr, cc, cd, flat = cr[keep], cc[keep], cd[keep], flat[keep]
    pos, top = _positions(cr, cc, cd, num_rows)
    at = np.searchsorted(flat, rows.astype(np.int64) * num_g + cols)
    at = np.minimum(at, max(flat.size - 1, 0))
    if flat.size == 0 or not np.array_equal(flat[at], rows.astype(np.int64) * num_g + cols):
        return None  # a chosen item is no candidate: a bound was not conservative; count densely
    return CandidateRanks(pos[at] + 1, top)


def _positions(cr: np.ndarray, cc: np.ndarray, cd: np.ndarray, num_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """0-based position of every candidate within its row in ``(distance, column)`` order, and
    the column of each row's first candidate (``-1`` for none)."""
    order = np.lexsort((cc, cd, cr))
    counts = np.bincount(cr, minlength=num_rows)
    row_start = np.cumsum(counts) - counts
    pos = np.empty(cr.size, dtype=np.int64)
    pos[order] = np.arange(cr.size, dtype=np.int64) - row_start[cr[order]]
    top = np.full(num_rows, -1, dtype=np.int64)
    has = counts > 0
    top[has] = cc[order[row_start[has]]]
    return pos, top


def flat_rank_statistics(rows: np.ndarray, ranks: np.ndarray, num_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First-match rank, AP and INP of every row from its matches' ranks given flat.

    The arithmetic of :func:`sarbridge.retrieval.metrics.match_statistics` (same summation
    order), so results are bitwise those of the full ranking.

    Args:
        rows: ``(P,)`` row of every match.
        ranks: ``(P,)`` 1-based rank of every match (any order within a row).
        num_rows: number of rows.

    Returns:
        ``(first, ap, inp)``: int64 first ranks (0 for a row without a match) and float64 AP /
        INP (NaN for a row without a match).
    """
    order = np.lexsort((ranks, rows))
    row = rows[order]
    r = ranks[order].astype(np.float64)
    n_rel = np.bincount(row, minlength=num_rows)
    offsets = np.cumsum(n_rel) - n_rel
    nth = np.arange(row.size, dtype=np.float64) - offsets[row] + 1.0
    sums = np.bincount(row, weights=nth / r, minlength=num_rows)
    has = n_rel > 0
    first = np.zeros(num_rows, dtype=np.int64)
    ap = np.full(num_rows, np.nan)
    inp = np.full(num_rows, np.nan)
    first[has] = r[offsets[has]].astype(np.int64)
    ap[has] = sums[has] / n_rel[has]
    inp[has] = n_rel[has] / r[(offsets + n_rel - 1)[has]]
    return first, ap, inp
