"""Query expansion for retrieval: average QE (AQE) and alpha-weighted QE (alpha-QE).

Both replace every query feature by a weighted sum of itself and its ``k`` most similar gallery
features, then L2-normalise (Chum et al. 2007 for AQE; Radenović, Tolias & Chum 2018 for
alpha-QE). With ``x_hat = x / |x|`` (an all-zero feature stays zero), ``s_j = q_hat . g_hat_j``
and ``T(q)`` the ``k`` gallery items with the largest ``s_j`` (ties broken by gallery index):

* AQE: ``q' = normalize(q_hat + sum_{j in T(q)} g_hat_j)`` -- the normalised mean of the
  query and its top-``k`` gallery features (the mean's ``1 / (k + 1)`` cancels in the
  normalisation).
* alpha-QE: ``q' = normalize(q_hat + sum_{j in T(q)} max(s_j, 0)^alpha g_hat_j)``; the query's
  own weight is ``1 = s_qq^alpha``. Negative similarities are clamped to 0 so that a
  fractional ``alpha`` stays real; ``alpha = 0`` gives AQE.

Work is vectorised and chunked over queries: one chunk holds a ``rows x N`` similarity block and
``rows x k x D`` gathered gallery features, bounded by about ``2**24`` elements.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import torch

from sarbridge.retrieval.distance import RetrievalInputError, to_numpy
from sarbridge.retrieval.rerank.kreciprocal import _initial_ranking

if TYPE_CHECKING:
    import torch

__all__ = ["alpha_query_expansion", "average_query_expansion"]

_CHUNK_ELEMENTS: Final[int] = 2**24
_NORM_EPS: Final[float] = 1e-12


def as_feature_tensor(x: Any, name: str, device: Any = None) -> torch.Tensor:
    """Validate a ``(num_items, dim)`` real, finite feature matrix and return a float tensor.

    float64 stays float64; every other dtype becomes float32.

    Args:
        x: numpy array, torch tensor or nested sequence.
        name: argument name for error messages.
        device: target device; None keeps a tensor's device (numpy goes to the CPU).

    Raises:
        RetrievalInputError: not 2-D, not real-valued, zero dimension, NaN or inf.
    """

    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_complex() or t.dtype == torch.bool:
            raise RetrievalInputError(f"{name} features must be real numbers, got dtype {t.dtype}")
    else:
        a = to_numpy(x, name)
        if a.dtype.kind not in "fiu":
            raise RetrievalInputError(f"{name} features must be real numbers, got dtype {a.dtype}")
        t = torch.from_numpy(np.array(a, copy=True) if not a.flags.writeable else a)
    if t.ndim != 2:
        raise RetrievalInputError(
            f"{name} features must be a 2-D (num_items, dim) array, got shape {tuple(t.shape)}"
        )
    if t.shape[1] == 0:
        raise RetrievalInputError(f"{name} features have dimension 0")
    t = t.to(torch.float64 if t.dtype == torch.float64 else torch.float32)
    if device is not None:
        t = t.to(device)
    if t.numel() and not torch.isfinite(t).all():
        what = "NaN" if torch.isnan(t).any() else "infinite"
        raise RetrievalInputError(f"{name} contains {what} values", "check the model outputs")
    return t


def l2_normalize(t: torch.Tensor) -> torch.Tensor:
    """Row-wise L2 normalisation; all-zero rows stay zero (norm floored at 1e-12)."""
    return t / t.norm(dim=1, keepdim=True).clamp_min(_NORM_EPS)


def topk_stable(score: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest entries of each row, sorted descending, ties broken by column index.

    Returns:
        ``(values, indices)``, each ``(rows, k)``.
    """

    idx = _initial_ranking(-score, k, max(score.shape[0], 1))
    return score.gather(1, idx), idx


def _check_k(k: Any, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise RetrievalInputError(f"{name} must be a positive integer, got {k!r}")
    return int(k)


def query_gallery_tensors(q: Any, g: Any, device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated query and gallery features on one device, in one dtype (float64 if either is).

    Args:
        q, g: ``(M, D)`` and ``(N, D)`` features (numpy arrays, tensors or nested sequences).
        device: target device; None uses the first tensor input's device, else the CPU.

    Raises:
        RetrievalInputError: malformed features (see :func:`as_feature_tensor`) or different ``D``.
    """

    if device is None:
        device = next((t.device for t in (q, g) if isinstance(t, torch.Tensor)), None)
    qt = as_feature_tensor(q, "query", device)
    gt = as_feature_tensor(g, "gallery", qt.device)
    if qt.shape[1] != gt.shape[1]:
        raise RetrievalInputError(
            f"feature dimensions differ: query has {qt.shape[1]}, gallery has {gt.shape[1]}"
        )
    dtype = torch.float64 if torch.float64 in (qt.dtype, gt.dtype) else torch.float32
    return qt.to(dtype), gt.to(dtype)


def _expand(q: Any, g: Any, k: Any, alpha: float | None, chunk_size: int | None) -> torch.Tensor:

    k = _check_k(k)
    if chunk_size is not None:
        _check_k(chunk_size, "chunk_size")
    qt, gt = query_gallery_tensors(q, g)
    qt, gt = l2_normalize(qt), l2_normalize(gt)
    m, n = qt.shape[0], gt.shape[0]
    k = min(k, n)
    if m == 0 or k == 0:
        return qt
    out = torch.empty_like(qt)
    rows = chunk_size or max(1, _CHUNK_ELEMENTS // max(n, k * qt.shape[1]))
    with torch.no_grad():
        for s in range(0, m, rows):
            qc = qt[s: s + rows]
            sim, idx = topk_stable(qc @ gt.T, k)
            w = torch.ones_like(sim) if alpha is None else sim.clamp_min(0.0) ** alpha
            agg = qc + torch.bmm(w[:, None, :], gt[idx]).squeeze(1)
            out[s: s + rows] = l2_normalize(agg)
    return out


def average_query_expansion(q: Any, g: Any, k: int = 5, chunk_size: int | None = None) -> torch.Tensor:
    """Average query expansion (see the module docstring).

    Args:
        q: ``(M, D)`` query features (numpy array or torch tensor, any device).
        g: ``(N, D)`` gallery features.
        k: gallery neighbours averaged into each query (clamped to ``N``).
        chunk_size: queries per chunk; None picks it from a ~16M-element budget.

    Returns:
        ``(M, D)`` L2-normalised expanded queries, a tensor on the inputs' device (float64 if an
        input is float64, else float32).

    Raises:
        RetrievalInputError: malformed features or a non-positive ``k`` / ``chunk_size``.
    """
    return _expand(q, g, k, None, chunk_size)


def alpha_query_expansion(
    q: Any, g: Any, k: int = 5, alpha: float = 3.0, chunk_size: int | None = None
) -> torch.Tensor:
    """alpha-weighted query expansion: neighbour weights ``max(cos, 0) ** alpha``, query weight 1.

    Args:
        q: ``(M, D)`` query features.
        g: ``(N, D)`` gallery features.
        k: gallery neighbours used (clamped to ``N``).
        alpha: exponent, finite and ``>= 0`` (``0`` is AQE).
        chunk_size: queries per chunk; None picks it from a ~16M-element budget.

    Returns:
        ``(M, D)`` L2-normalised expanded queries (see :func:`average_query_expansion`).

    Raises:
        RetrievalInputError: malformed features, bad ``k`` / ``chunk_size`` or ``alpha``.
    """
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        a = math.nan
    if not (math.isfinite(a) and a >= 0):
        raise RetrievalInputError(f"alpha must be a finite number >= 0, got {alpha!r}")
    return _expand(q, g, k, a, chunk_size)
