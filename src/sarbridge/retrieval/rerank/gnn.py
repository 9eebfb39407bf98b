"""GNN re-ranking (Zhang et al., "Understanding Image Retrieval Re-Ranking: A Graph Neural
Network Perspective", 2020), vectorised with torch.

All ``A = M + N`` query and gallery features ``x_i`` are L2-normalised and treated as nodes of one
graph. With ``s_ij = x_i . x_j`` (cosine similarity):

1. **Neighbour graph.** ``T1(i)``: the ``k1`` nodes with the largest ``s_ij`` (normally ``i``
   itself first), ties broken by node index. Edge weights ``w_ij = s_ij ** 2`` for
   ``j in T1(i)`` and ``0`` elsewhere (the reference code squares the top-k similarities).
2. **Propagation** over ``T2(i)``, the first ``k2`` entries of ``T1(i)`` (``k2`` is clamped to
   ``k1``), repeated ``layers`` times with the graph fixed. Two node representations are offered:

   * ``mode="features"`` (default; memory ``O(A * (k1 + D))`` plus a chunk): the embedding
     itself is propagated, ``f_i <- normalize(sum_{j in T2(i)} w_ij f_j)``, starting from
     ``f_i = x_i``.
   * ``mode="adjacency"`` (what the paper's code does; dense ``A x A``, so ``O(A^2)`` memory):
     node ``i`` starts as row ``i`` of the binary k1 adjacency matrix (``a_ij = 1`` for
     ``j in T1(i)``), and every layer first symmetrises (``a <- a + a^T``) and then propagates
     ``a_i <- normalize(sum_{j in T2(i)} w_ij a_j)``.

3. **Re-ranking.** The distance between query ``p`` and gallery item ``g`` is
   ``1 - f_p . f_g`` (``f`` L2-normalised, so this is ``1 - cos``, in ``[0, 2]``; half the
   squared Euclidean distance of the propagated features, hence the same ranking).

The paper's defaults are ``k1 = 26``, ``k2 = 7`` and two propagation layers (its code runs the
symmetrise + propagate step twice). Differences from the reference code: ``layers`` is a
parameter; propagation also runs when ``k2 == 1`` (the code skips it, leaving unnormalised
binary rows); the final similarity is a cosine of normalised rows; ties are broken by index.
Top-k neighbour lists are computed in row chunks (``rows x A`` similarity blocks of about
``2**24`` elements), so nothing ``A x A`` is materialised in ``"features"`` mode; tensors on a
GPU stay there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Literal, overload

import numpy as np
import torch

from sarbridge.retrieval.distance import RetrievalInputError
from sarbridge.retrieval.rerank.query_expansion import (
    _check_k,
    as_feature_tensor,
    l2_normalize,
    query_gallery_tensors,
    topk_stable,
)

if TYPE_CHECKING:
    import torch

__all__ = ["gnn_neighbour_graph", "gnn_propagate", "gnn_rerank"]

_CHUNK_ELEMENTS: Final[int] = 2**24
GNNMode = Literal["features", "adjacency"]


def _rows(per_row: int, total: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        return int(chunk_size)
    return max(1, min(max(total, 1), _CHUNK_ELEMENTS // max(per_row, 1)))


def gnn_neighbour_graph(
    x: torch.Tensor, k: int, chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` cosine neighbours of every row of ``x`` among all rows (itself included).

    Args:
        x: ``(A, D)`` L2-normalised features.
        k: neighbours per node (clamped to ``A``).
        chunk_size: rows per chunk; None picks it from a ~16M-element budget.

    Returns:
        ``(sim, idx)``, each ``(A, k)``: similarities sorted descending (ties by index) and the
        neighbour indices. Memory ``O(A * k)`` plus one ``rows x A`` block.
    """

    a = x.shape[0]
    k = min(k, a)
    sim = torch.empty((a, k), dtype=x.dtype, device=x.device)
    idx = torch.empty((a, k), dtype=torch.long, device=x.device)
    rows = _rows(a, a, chunk_size)
    for s in range(0, a, rows):
        sim[s: s + rows], idx[s: s + rows] = topk_stable(x[s: s + rows] @ x.T, k)
    return sim, idx


def gnn_propagate(
    features: Any,
    k1: int = 26,
    k2: int = 7,
    layers: int = 2,
    mode: GNNMode = "features",
    chunk_size: int | None = None,
    device: Any = None,
) -> torch.Tensor:
    """Propagated, L2-normalised node representations (steps 1-2 of the module docstring).

    Args:
        features: ``(A, D)`` features of all nodes (numpy array or torch tensor).
        k1: neighbours in the graph (paper: 26).
        k2: neighbours aggregated per layer (paper: 7; clamped to ``k1``).
        layers: propagation layers (paper code: 2); ``0`` returns the normalised input
            representation.
        mode: ``"features"`` (``(A, D)`` output, ``O(A * (k1 + D))`` memory) or
            ``"adjacency"`` (the paper's ``(A, A)`` rows).
        chunk_size: rows per chunk; None picks it from a ~16M-element budget.
        device: torch device; None keeps a tensor input's device (numpy -> CPU).

    Returns:
        ``(A, D)`` or ``(A, A)`` tensor, float64 for float64 input else float32.

    Raises:
        RetrievalInputError: malformed features, an unknown mode, or bad ``k1`` / ``k2`` /
            ``layers`` / ``chunk_size``.
    """

    k1, k2 = _check_k(k1, "k1"), _check_k(k2, "k2")
    if isinstance(layers, bool) or not isinstance(layers, (int, np.integer)) or layers < 0:
        raise RetrievalInputError(f"layers must be an integer >= 0, got {layers!r}")
    if chunk_size is not None:
        _check_k(chunk_size, "chunk_size")
    if mode not in ("features", "adjacency"):
        raise RetrievalInputError(f"unknown GNN mode {mode!r}", "use 'features' or 'adjacency'")
    x = l2_normalize(as_feature_tensor(features, "features", device))
    a = x.shape[0]
    if a == 0:
        return x if mode == "features" else x.new_zeros((0, 0))
    with torch.no_grad():
        sim, idx = gnn_neighbour_graph(x, k1, chunk_size)
        k2 = min(k2, idx.shape[1])
        w, nb = (sim[:, :k2] ** 2).contiguous(), idx[:, :k2].contiguous()
        del sim
        if mode == "features":
            f = x
        else:
            f = torch.zeros((a, a), dtype=x.dtype, device=x.device)
            f.scatter_(1, idx, 1.0)
        del idx
        width = f.shape[1]
        rows = _rows(k2 * width, a, chunk_size)
        for _ in range(int(layers)):
            if mode == "adjacency":
                f = f + f.T
            new = torch.empty_like(f)
            for s in range(0, a, rows):
                e = min(s + rows, a)
                new[s:e] = l2_normalize(torch.bmm(w[s:e, None, :], f[nb[s:e]]).squeeze(1))
            f = new
        return f if layers else l2_normalize(f)


@overload
def gnn_rerank(
    q: Any, g: Any, k1: int = ..., k2: int = ..., layers: int = ..., mode: GNNMode = ...,
    chunk_size: int | None = ..., device: Any = ..., topk: None = ...,
) -> np.ndarray: ...


@overload
def gnn_rerank(
    q: Any, g: Any, k1: int = ..., k2: int = ..., layers: int = ..., mode: GNNMode = ...,
    chunk_size: int | None = ..., device: Any = ..., *, topk: int,
) -> tuple[np.ndarray, np.ndarray]: ...


def gnn_rerank(
    q: Any,
    g: Any,
    k1: int = 26,
    k2: int = 7,
    layers: int = 2,
    mode: GNNMode = "features",
    chunk_size: int | None = None,
    device: Any = None,
    topk: int | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """GNN re-ranked query x gallery distances ``1 - cos`` of the propagated representations.

    Args:
        q: ``(M, D)`` query features (numpy array or torch tensor).
        g: ``(N, D)`` gallery features.
        k1, k2, layers, mode, chunk_size, device: see :func:`gnn_propagate`.
        topk: return only each query's ``topk`` best gallery items, so the output is
            ``O(M * topk)`` instead of ``O(M * N)`` (``features`` mode then stays bounded for
            50,000 x 50,000 galleries).

    Returns:
        ``(M, N)`` float32 numpy array of distances in ``[0, 2]`` (smaller = better), or with
        ``topk`` a pair ``(dist (M, k), idx (M, k) int64)``, ascending distance (ties by index).

    Raises:
        RetrievalInputError: malformed features or bad parameters.
    """

    qt, gt = query_gallery_tensors(q, g, device)
    m, n = qt.shape[0], gt.shape[0]
    f = gnn_propagate(torch.cat([qt, gt]), k1, k2, layers, mode, chunk_size)
    k = None if topk is None else max(1, min(int(topk), n))
    out = np.empty((m, n if k is None else k), dtype=np.float32)
    idx = None if k is None else np.empty((m, k), dtype=np.int64)
    rows = _rows(n, m, chunk_size)
    with torch.no_grad():
        fg = f[m:]
        for s in range(0, m, rows):
            d = (1.0 - f[s: min(s + rows, m)] @ fg.T).clamp_(0.0, 2.0)
            if idx is not None:  # i.e. k is not None
                # stable order: ascending distance, ties by gallery index
                order = torch.argsort(d, dim=1, stable=True)[:, :k]
                idx[s: s + d.shape[0]] = order.cpu().numpy()
                d = torch.gather(d, 1, order)
            out[s: s + d.shape[0]] = d.to(torch.float32).cpu().numpy()
    return out if idx is None else (out, idx)
