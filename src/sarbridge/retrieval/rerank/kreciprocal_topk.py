"""Memory-bounded k-reciprocal re-ranking (Zhong et al. 2017): the best ``topk`` per query.

Same values as the dense :func:`~sarbridge.retrieval.rerank.kreciprocal.k_reciprocal_rerank`
(see that module for the algorithm), without ever building an ``(M+N)^2`` matrix; the memory bound
is in :func:`k_reciprocal_rerank_topk`'s docstring.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sarbridge.retrieval.distance import METRICS, RetrievalInputError
from sarbridge.retrieval.rerank.kreciprocal import (
    _CHUNK_PAIRS,
    _check_int,
    _check_params,
    _device,
    _expanded_members,
    _initial_ranking,
    _reciprocal,
    _rows,
)
from sarbridge.retrieval.rerank.query_expansion import l2_normalize, query_gallery_tensors

if TYPE_CHECKING:
    import torch

__all__ = ["k_reciprocal_rerank_topk"]

def _feature_dist(xa: torch.Tensor, xb: torch.Tensor, sa: torch.Tensor, sb: torch.Tensor,
                  metric: str) -> torch.Tensor:
    """Distances of every row of ``xa`` to every row of ``xb`` (``sa`` / ``sb``: squared norms),
    with the formulas of :func:`~sarbridge.retrieval.distance.pairwise_distance`."""
    dot = xa @ xb.T
    if metric == "cosine":
        return (1.0 - dot).clamp_(0.0, 2.0)
    d = (sa[:, None] + sb[None, :] - 2.0 * dot).clamp_(min=0.0)
    return d.sqrt_() if metric == "euclidean" else d


def _pair_dist(x: torch.Tensor, sq: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
               metric: str) -> torch.Tensor:
    """Distances ``dist(x[rows[r]], x[cols[r, t]])`` for ``cols`` of shape ``(c, w)``; 0 on the
    diagonal (``rows[r] == cols[r, t]``), as in the dense feature variant."""

    dot = torch.bmm(x[cols], x[rows][:, :, None]).squeeze(2)
    if metric == "cosine":
        d = (1.0 - dot).clamp_(0.0, 2.0)
    else:
        d = (sq[rows][:, None] + sq[cols] - 2.0 * dot).clamp_(min=0.0)
        if metric == "euclidean":
            d = d.sqrt_()
    return torch.where(cols == rows[:, None], torch.zeros_like(d), d)


def k_reciprocal_rerank_topk(
    q: Any,
    g: Any,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    topk: int = 100,
    chunk_size: int | None = None,
    distance: str = "euclidean",
    normalize: bool = True,
    device: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """k-reciprocal re-ranking from features without any ``(M + N)^2`` matrix; best ``topk`` only.

    Computes the same final distances as :func:`k_reciprocal_rerank_features` (module
    docstring, steps 1-8) and returns each query's ``topk`` smallest, ordered ascending with
    ties broken by gallery index (the order :func:`~sarbridge.retrieval.metrics.evaluate` uses):

    * a chunked pass over all ``A = M + N`` items computes each row of pairwise distances
      block by block (``rows x A``), its maximum (the normalisation of step 1, over *all*
      items like the dense version) and its initial ranking (stable top-``max(k1 + 1, k2)``);
    * k-reciprocal sets and the expansion work on those ``(A, k)`` lists; ``V`` is a sparse
      matrix holding only the members of each ``R*(p)``, whose Gaussian weights
      ``exp(-d[p, j])`` use distances recomputed for exactly those pairs;
    * local query expansion is a sparse x sparse product ``P @ V`` with
      ``P[p, j] = 1 / k2`` for the first ``k2`` items of ``p``'s ranking;
    * per chunk of queries, the Jaccard sums run over the inverted index of the gallery's
      non-zeros (a gallery item sharing no support has Jaccard distance 1), the original
      distances of the chunk are recomputed (``rows x N``), blended, and the ``topk`` smallest
      kept. Every gallery item of the chunk is scored, so the result is exactly the dense
      version's top-``topk``.

    **Memory bound.** ``O(A * (k1 * round(k1/2) + k2 * |R*|))`` for the neighbour lists and the
    sparse ``V`` (``|R*|`` is the expanded set size, at most ``(k1 + 1)(round(k1/2) + 2)``,
    typically a few dozen), plus ``O(M * topk)`` for the output, plus one chunk: a ``rows x A``
    distance block (``rows`` = ``chunk_size`` or ``2**24 / A``) and at most ``2**22``
    (query, gallery) non-zero pairs (~170 MB). The dense version needs ``~8 (M + N)^2`` bytes.

    Args:
        q: ``(M, D)`` query features (numpy array or torch tensor).
        g: ``(N, D)`` gallery features.
        k1, k2, lambda_value: as in :func:`k_reciprocal_rerank`.
        topk: gallery items kept per query (clamped to ``N``).
        chunk_size: rows per chunk in the chunked steps; None picks it from a budget.
        distance: ``"euclidean"``, ``"cosine"`` or ``"sqeuclidean"``.
        normalize: L2-normalise the features first (always done for ``"cosine"``).
        device: torch device; None uses a tensor input's device, else the CPU.

    Returns:
        ``(dist, idx)``: ``(M, topk)`` float32 final distances (ascending per row) and the
        ``(M, topk)`` int64 gallery indices they belong to.

    Raises:
        RetrievalInputError: (a :class:`ValueError`) malformed features, an unknown distance,
            or a bad ``k1`` / ``k2`` / ``lambda_value`` / ``topk`` / ``chunk_size``.
    """


    if distance not in METRICS:
        raise RetrievalInputError(f"unknown distance {distance!r}", f"use one of {', '.join(METRICS)}")
    lam = _check_params(k1, k2, lambda_value, chunk_size)
    _check_int(topk, "topk")
    qt, gt = query_gallery_tensors(q, g, _device(device, q, g))
    m, n = qt.shape[0], gt.shape[0]
    kt = min(int(topk), n)
    if m == 0 or n == 0:
        return np.zeros((m, kt), dtype=np.float32), np.zeros((m, kt), dtype=np.int64)
    x = torch.cat([qt, gt])
    if normalize or distance == "cosine":
        x = l2_normalize(x)
    with torch.no_grad():
        dist, idx = _rerank_topk(x, m, int(k1), int(k2), lam, kt, distance,
                                 None if chunk_size is None else int(chunk_size))
    return dist.to(torch.float32).cpu().numpy(), idx.cpu().numpy()


def _rerank_topk(
    x: torch.Tensor, m: int, k1: int, k2: int, lam: float, kt: int, metric: str, chunk_size: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The algorithm of :func:`k_reciprocal_rerank_topk` on validated, (normalised) features."""

    a = x.shape[0]
    n = a - m
    dtype, dev = x.dtype, x.device
    tiny = torch.finfo(dtype).tiny
    sq = (x * x).sum(dim=1)
    kf = min(k1 + 1, a)
    kh = min(round(k1 / 2) + 1, a)
    kq = min(k2, a)
    kr = max(kf, kq)

    # 1.-2. Row maxima and initial rankings, one rows x A block at a time.
    row_max = torch.empty(a, dtype=dtype, device=dev)
    rank = torch.empty((a, kr), dtype=torch.long, device=dev)
    rows = _rows(a, a, chunk_size)
    for s in range(0, a, rows):
        e = min(s + rows, a)
        d = _feature_dist(x[s:e], x, sq[s:e], sq, metric)
        d[torch.arange(e - s, device=dev), torch.arange(s, e, device=dev)] = 0.0
        row_max[s:e] = d.amax(dim=1).clamp_min(tiny)
        d /= row_max[s:e, None]
        rank[s:e] = _initial_ranking(d, kr, e - s)
        del d

    # 3.-5. k-reciprocal sets, expansion and Gaussian weights as a sparse V.
    fwd, fwd_h = rank[:, :kf].contiguous(), rank[:, :kh].contiguous()
    rec = _reciprocal(fwd, _rows(kf * kf, a, chunk_size))
    rec_h = _reciprocal(fwd_h, _rows(kh * kh, a, chunk_size))
    v_rows, v_cols, v_vals = [], [], []
    rows = _rows(kf * kh * kf, a, chunk_size)
    for s in range(0, a, rows):
        e = min(s + rows, a)
        cols, keep = _expanded_members(fwd, fwd_h, rec, rec_h, s, e)
        cols = torch.where(keep, cols, torch.full_like(cols, a))  # drop -> sentinel a
        cols = torch.sort(cols, dim=1).values
        keep = cols < a
        keep[:, 1:] &= cols[:, 1:] != cols[:, :-1]  # first of each repeated column
        r_idx = torch.arange(s, e, device=dev)
        w = torch.exp(-_pair_dist(x, sq, r_idx, cols.clamp(max=a - 1), metric) / row_max[s:e, None])
        w = w * keep
        w = w / w.sum(dim=1, keepdim=True).clamp_min(tiny)
        nz = keep.nonzero(as_tuple=True)
        v_rows.append(r_idx[nz[0]])
        v_cols.append(cols[nz])
        v_vals.append(w[nz])
    del rec, rec_h, fwd, fwd_h
    v = torch.sparse_coo_tensor(torch.stack([torch.cat(v_rows), torch.cat(v_cols)]), torch.cat(v_vals),
                                (a, a), check_invariants=False).coalesce()
    del v_rows, v_cols, v_vals

    # 6. Local query expansion: V <- P @ V.
    if k2 > 1:
        p_idx = torch.stack([torch.arange(a, device=dev).repeat_interleave(kq), rank[:, :kq].reshape(-1)])
        p = torch.sparse_coo_tensor(p_idx, torch.full((a * kq,), 1.0 / kq, dtype=dtype, device=dev), (a, a),
                                    check_invariants=False).coalesce()
        with warnings.catch_warnings():  # torch notes that its sparse support is in beta
            warnings.simplefilter("ignore", UserWarning)
            v = torch.sparse.mm(p, v).coalesce()
        del p, p_idx
    del rank
    vi, vv = v.indices(), v.values()
    del v
    is_q = vi[0] < m
    q_row, q_col, q_val = vi[0, is_q], vi[1, is_q], vv[is_q]  # sorted by (row, col)
    g_row, g_col, g_val = vi[0, ~is_q] - m, vi[1, ~is_q], vv[~is_q]
    del vi, vv, is_q
    q_sum = torch.zeros(m, dtype=dtype, device=dev).index_add_(0, q_row, q_val)
    g_sum = torch.zeros(n, dtype=dtype, device=dev).index_add_(0, g_row, g_val)
    order = torch.argsort(g_col * n + g_row)  # gallery non-zeros grouped by column
    g_row, g_col, g_val = g_row[order], g_col[order], g_val[order]
    ptr = torch.zeros(a + 1, dtype=torch.long, device=dev)
    ptr[1:] = torch.cumsum(torch.bincount(g_col, minlength=a), dim=0)
    del order, g_col

    # 7.-8. Per query chunk: Jaccard over shared support, blend, top-k.
    cnt = ptr[q_col + 1] - ptr[q_col]
    row_start = torch.searchsorted(q_row, torch.arange(m + 1, device=dev))
    pairs_before = torch.zeros(q_row.shape[0] + 1, dtype=torch.long, device=dev)
    pairs_before[1:] = torch.cumsum(cnt, dim=0)
    row_pairs = pairs_before[row_start].cpu()
    out_d = torch.empty((m, kt), dtype=dtype, device=dev)
    out_i = torch.empty((m, kt), dtype=torch.long, device=dev)
    max_rows = _rows(a, m, chunk_size)
    s = 0
    while s < m:
        e = int(torch.searchsorted(row_pairs, row_pairs[s] + _CHUNK_PAIRS, right=True)) - 1
        e = min(max(e, s + 1), s + max_rows, m)
        lo, hi = int(row_start[s]), int(row_start[e])
        c_cnt = cnt[lo:hi]
        src = torch.repeat_interleave(torch.arange(lo, hi, device=dev), c_cnt)
        first = pairs_before[lo:hi] - pairs_before[lo]
        pos = torch.arange(src.shape[0], device=dev) - torch.repeat_interleave(first, c_cnt)
        gi = torch.repeat_interleave(ptr[q_col[lo:hi]], c_cnt) + pos
        s_min = torch.zeros((e - s, n), dtype=dtype, device=dev)
        s_min.view(-1).index_add_(0, (q_row[src] - s) * n + g_row[gi],
                                  torch.minimum(q_val[src], g_val[gi]))
        del src, pos, gi
        s_max = q_sum[s:e, None] + g_sum[None, :] - s_min
        jac = torch.where(s_max > 0, 1.0 - s_min / s_max.clamp_min(tiny), torch.ones_like(s_max))
        del s_min, s_max
        orig = _feature_dist(x[s:e], x[m:], sq[s:e], sq[m:], metric) / row_max[s:e, None]
        final = (1.0 - lam) * jac + lam * orig
        del jac, orig
        idx = _initial_ranking(final, kt, e - s)
        out_i[s:e] = idx
        out_d[s:e] = final.gather(1, idx)
        s = e
    return out_d, out_i
