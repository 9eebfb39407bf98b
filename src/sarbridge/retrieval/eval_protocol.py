"""The re-identification evaluation protocol of one query x gallery problem, and ranks per block.

:class:`EvalProtocol` holds the validated label codes of an evaluation (pids, optional
modalities and cameras, the removal rules of :mod:`sarbridge.retrieval.metrics`) and gives, for
a block of query rows, each query's matches (from the gallery indices grouped by pid -- no
``(rows, G)`` match mask) and which gallery items a query keeps. :func:`block_statistics`
turns one block of distances into the first-match rank, AP and INP of its queries: on the CPU by
:func:`~sarbridge.retrieval.sparse_ranks.candidate_ranks` (only the items that can precede a
match are looked at), densely by :func:`~sarbridge.retrieval.rank_counting.positive_ranks`
for CUDA tensors or when most of a block would be candidates.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sarbridge.retrieval.distance import RetrievalInputError, to_numpy
from sarbridge.retrieval.rank_counting import positive_ranks, rank_statistics, row_counts
from sarbridge.retrieval.sparse_ranks import RankBlock, candidate_ranks, flat_rank_statistics

__all__ = ["EvalProtocol", "block_statistics", "check_positive_int"]


def _labels(x: Any, name: str, length: int | None = None, integer: bool = False) -> np.ndarray:
    """Validate a 1-D label array (pids, modalities or camera ids)."""
    a = to_numpy(x, name)
    if a.ndim != 1:
        raise RetrievalInputError(f"{name} must be 1-D, got shape {a.shape}")
    if integer and a.dtype.kind not in "iu":
        raise RetrievalInputError(f"{name} must hold integers, got dtype {a.dtype}")
    if length is not None and a.shape[0] != length:
        raise RetrievalInputError(f"{name} has {a.shape[0]} entries, expected {length}")
    return a


def _codes(q: np.ndarray, g: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Map query and gallery labels to shared int64 codes (equal labels <=> equal codes)."""
    try:
        _, inv = np.unique(np.concatenate([q, g]), return_inverse=True)
    except TypeError as exc:  # e.g. mixed str / int object arrays
        raise RetrievalInputError(f"{name} labels cannot be compared: {exc}") from exc
    inv = inv.reshape(-1).astype(np.int64, copy=False)
    return inv[: q.shape[0]], inv[q.shape[0]:]


def _optional_codes(
    q: Any, g: Any, exclude: bool, suffix: str, what: str, num_q: int, num_g: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Shared integer codes of optional query/gallery labels (modalities or cameras), or Nones."""
    if q is None and g is None and not exclude:
        return None, None
    if q is None or g is None:
        raise RetrievalInputError(
            f"exclude_same_{what} needs both q_{suffix} and g_{suffix}"
            if exclude else f"q_{suffix} and g_{suffix} must be given together"
        )
    return _codes(_labels(q, f"q_{suffix}", num_q), _labels(g, f"g_{suffix}", num_g), what)


def check_positive_int(value: Any, name: str, allow_none: bool = False) -> None:
    """Raise :class:`RetrievalInputError` unless ``value`` is a positive integer (or None when allowed)."""
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise RetrievalInputError(f"{name} must be a positive integer, got {value!r}")


class EvalProtocol:
    """Validated label codes of one evaluation: matches and removals per block of query rows.

    Args:
        num_q, num_g: numbers of queries and gallery items.
        q_pids, g_pids, q_mods, g_mods, exclude_same_modality, q_camids, g_camids,
            exclude_same_camera: as :func:`sarbridge.retrieval.metrics.evaluate`.
        integer_pids: require integer pids (any comparable labels otherwise).
    """

    def __init__(
        self, num_q: int, num_g: int, q_pids: Any, g_pids: Any, q_mods: Any, g_mods: Any,
        exclude_same_modality: bool, q_camids: Any, g_camids: Any, exclude_same_camera: bool,
        integer_pids: bool = True,
    ) -> None:
        qp = _labels(q_pids, "q_pids", integer=integer_pids)
        gp = _labels(g_pids, "g_pids", integer=integer_pids)
        if qp.shape[0] != num_q or gp.shape[0] != num_g:
            raise RetrievalInputError(
                f"there are {num_q} queries and {num_g} gallery items but {qp.shape[0]} query pids and "
                f"{gp.shape[0]} gallery pids"
            )
        # Shared pid codes; gallery distractors (-1) get code -1 and query -1 gets -2, so neither
        # ever matches anything.
        qp_c, gp_c = _codes(qp, gp, "pid")
        self.qp = np.where(qp == -1, -2, qp_c) if qp.dtype.kind in "iu" else qp_c
        self.gp = np.where(gp == -1, -1, gp_c) if gp.dtype.kind in "iu" else gp_c
        qm, gm = _optional_codes(q_mods, g_mods, exclude_same_modality, "mods", "modality", num_q, num_g)
        qc, gc = _optional_codes(q_camids, g_camids, exclude_same_camera, "camids", "camera", num_q, num_g)
        self.mods = (qm, gm) if exclude_same_modality and qm is not None and gm is not None else None
        self.cams = (qc, gc) if exclude_same_camera and qc is not None and gc is not None else None
        self.num_q, self.num_g = num_q, num_g
        self.remove_mod, self.remove_cam = bool(exclude_same_modality), bool(exclude_same_camera)
        self._g_order = np.argsort(self.gp, kind="stable")  # gallery indices grouped by pid, ascending
        self._g_sorted = self.gp[self._g_order]

    def positives(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, cols)`` of the kept matches of query rows ``start:stop`` (rows block-local and
        ascending, columns ascending within a row)."""
        codes = self.qp[start:stop]
        lo = np.searchsorted(self._g_sorted, codes, side="left")
        hi = np.searchsorted(self._g_sorted, codes, side="right")
        counts = np.where(codes < 0, 0, hi - lo)
        rows = np.repeat(np.arange(stop - start, dtype=np.int64), counts)
        within = np.arange(rows.size, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        cols = self._g_order[np.repeat(lo, counts) + within]
        if self.mods is not None or self.cams is not None:
            keep = self.kept_at(start)(rows, cols)
            rows, cols = rows[keep], cols[keep]
        return rows, cols

    def kept_at(self, start: int) -> Any:
        """``f(rows, cols)`` -> bools: False for the gallery items removed from the rankings of
        block-local query rows (``start`` the block's first row); None when nothing is removed."""
        if self.mods is None and self.cams is None:
            return None

        def kept(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
            q = rows + start
            out = np.ones(rows.shape, dtype=bool)
            if self.mods is not None:
                out &= self.mods[1][cols] != self.mods[0][q]
            if self.cams is not None:
                out &= ~((self.gp[cols] == self.qp[q]) & (self.cams[1][cols] == self.cams[0][q]))
            return out

        return kept

    def masks(self, start: int, stop: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Dense ``(match, kept)`` of query rows ``start:stop`` (kept None when nothing is removed)."""
        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        match = t(self.gp)[None, :] == t(self.qp[start:stop])[:, None]
        removed = None
        if self.mods is not None:
            removed = t(self.mods[1])[None, :] == t(self.mods[0][start:stop])[:, None]
        if self.cams is not None:
            same_cam = match & (t(self.cams[1])[None, :] == t(self.cams[0][start:stop])[:, None])
            removed = same_cam if removed is None else removed | same_cam
        if removed is None:
            return match, None
        return match & ~removed, ~removed

    def no_match_error(self) -> RetrievalInputError:
        """The error of an evaluation where no query has a match."""
        return RetrievalInputError(
            f"no query has a matching gallery item (out of {self.num_q} queries"
            + (", after same-modality removal" if self.remove_mod else "")
            + (", after same-camera removal" if self.remove_cam else "")
            + ")",
            "check that query and gallery share identities (pid -1 is a distractor)",
        )


def _dense_statistics(
    dc: torch.Tensor, proto: EvalProtocol, start: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`block_statistics` by dense counting (any device)."""
    if bool(np.isnan(dc.numpy()).any() if dc.device.type == "cpu" else torch.isnan(dc).any()):
        raise RetrievalInputError("dist contains NaN values", "check the features / distance computation")
    match, kept = proto.masks(start, start + dc.shape[0], dc.device)
    sel = np.flatnonzero(row_counts(match).cpu().numpy())
    if sel.size == 0:
        return sel, np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
    if sel.size < dc.shape[0]:
        rows = torch.from_numpy(sel).to(dc.device)
        dc, match = dc[rows], match[rows]
        kept = kept[rows] if kept is not None else None
    ranks, npos = positive_ranks(dc, match, kept)
    first, ap, inp = rank_statistics(ranks, npos)
    return sel, first, ap, inp


def block_statistics(
    start: int, block: RankBlock | torch.Tensor, proto: EvalProtocol, check_nan: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """First-match rank, AP and INP of the queries of one block that have a match.

    Args:
        start: the block's first query row.
        block: a :class:`~sarbridge.retrieval.sparse_ranks.RankBlock` (CPU) or a ``(rows, G)``
            distance tensor (any device, counted densely).
        proto: the evaluation's labels and rules.
        check_nan: scan a CPU block for NaN first (not needed for distances that cannot be NaN).

    Returns:
        ``(rows, first, ap, inp)``: block-local rows of the queries with a match (ascending) and
        their int64 first ranks and float64 AP / INP.

    Raises:
        RetrievalInputError: NaN distances.
    """
    if isinstance(block, torch.Tensor):
        return _dense_statistics(block, proto, start)
    num_rows = block.shape[0]
    if check_nan and bool(np.isnan(block.dense()).any()):
        raise RetrievalInputError("dist contains NaN values", "check the features / distance computation")
    rows, cols = proto.positives(start, start + num_rows)
    if rows.size == 0:
        return rows, np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
    res = candidate_ranks(block, rows, cols, proto.kept_at(start))
    if res is None:
        return _dense_statistics(torch.from_numpy(block.dense()), proto, start)
    first, ap, inp = flat_rank_statistics(rows, res.ranks, num_rows)
    sel = np.flatnonzero(first > 0)
    return sel, first[sel], ap[sel], inp[sel]
