"""Pairwise query x gallery distances for retrieval evaluation.

The reference ReID protocol (fast-reid, the HOSS ReID code) L2-normalises the embeddings and ranks
the gallery by squared Euclidean distance, computed with the expansion
``|q|^2 + |g|^2 - 2 q.g`` and clamped at zero. :func:`pairwise_distance` does exactly that by
default and also offers plain Euclidean and cosine distance. Work is chunked over queries so a
large query set never materialises more than one ``chunk x G`` block of temporaries besides the
``Q x G`` float32 result.
"""

from __future__ import annotations

import sys
from typing import Any, Final

import numpy as np

from sarbridge.core.errors import SarbridgeError

__all__ = ["METRICS", "RetrievalInputError", "pairwise_distance"]

#: Distance names accepted by :func:`pairwise_distance`.
METRICS: Final[tuple[str, ...]] = ("sqeuclidean", "euclidean", "cosine")

# Elements (rows x gallery size) of one chunk's matmul block when ``chunk_size`` is None:
# 2**23 elements is 32 MiB in float32 / 64 MiB in float64 per temporary.
_CHUNK_ELEMENTS: Final[int] = 2**23
_NORM_EPS: Final[float] = 1e-12


class RetrievalInputError(SarbridgeError, ValueError):
    """Invalid input to a retrieval function (shape mismatch, NaN/inf, unknown option).

    It is a :class:`ValueError` (catch it as such) and a :class:`~sarbridge.core.errors.SarbridgeError`
    (so the command line reports it as one ``error: ...`` line).
    """


def to_numpy(x: Any, name: str) -> np.ndarray:
    """Convert a numpy array, torch tensor or (nested) sequence to a numpy array.

    Torch tensors are detached and copied to the CPU; half / bfloat16 tensors are widened to
    float32 because numpy has no bfloat16. The ``torch`` module is only consulted when it is
    already imported, so this never imports torch itself.

    Args:
        x: the array-like.
        name: argument name used in error messages.

    Returns:
        A numpy array (not necessarily a copy).

    Raises:
        RetrievalInputError: ``x`` cannot be converted.
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        t = x.detach()
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        return t.cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:  # ragged sequences etc.
        raise RetrievalInputError(f"{name} cannot be converted to an array: {exc}") from exc


def _check_finite(a: np.ndarray, name: str) -> None:
    """Raise if ``a`` holds NaN or +-inf, naming which."""
    if a.dtype.kind != "f" or a.size == 0:
        return
    if np.isfinite(a).all():
        return
    if np.isnan(a).any():
        raise RetrievalInputError(
            f"{name} contains NaN values", "check the model outputs (diverged training?)"
        )
    raise RetrievalInputError(
        f"{name} contains infinite values", "check the model outputs (diverged training?)"
    )


def _features(x: Any, name: str) -> np.ndarray:
    """Validate one feature matrix: 2-D, real numeric, finite."""
    a = to_numpy(x, name)
    if a.ndim != 2:
        raise RetrievalInputError(
            f"{name} features must be a 2-D (num_items, dim) array, got shape {a.shape}"
        )
    if a.dtype.kind not in "fiu":
        raise RetrievalInputError(f"{name} features must be real numbers, got dtype {a.dtype}")
    if a.shape[1] == 0:
        raise RetrievalInputError(f"{name} features have dimension 0")
    _check_finite(a, name)
    return a


def _l2_normalize(a: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation; all-zero rows stay zero (norm floored at 1e-12)."""
    norms = np.sqrt(np.einsum("ij,ij->i", a, a))
    return a / np.maximum(norms, _NORM_EPS)[:, None].astype(a.dtype, copy=False)


def pairwise_distance(
    query: Any,
    gallery: Any,
    metric: str = "sqeuclidean",
    normalize: bool = True,
    chunk_size: int | None = None,
) -> np.ndarray:
    """Distance between every query and every gallery feature.

    Metrics:

    * ``"sqeuclidean"`` -- squared Euclidean distance, computed as ``|q|^2 + |g|^2 - 2 q.g``
      and clamped at 0 (the ReID reference metric).
    * ``"euclidean"`` -- the square root of the above.
    * ``"cosine"`` -- ``1 - cos(q, g)``, clipped to ``[0, 2]``; features are always
      normalised for this metric, whatever ``normalize`` says.

    The computation runs in float64 when either input is float64 and in float32 otherwise; the
    result is always float32. With ``normalize=True`` (the reference protocol: L2-normalised
    features + squared Euclidean) every feature is divided by its L2 norm first; an all-zero
    feature stays zero (its squared distance to a unit vector is 1, its cosine distance 1).

    Args:
        query: ``(Q, D)`` numpy array or torch tensor (any device).
        gallery: ``(G, D)`` numpy array or torch tensor.
        metric: one of :data:`METRICS`.
        normalize: L2-normalise the features before computing distances.
        chunk_size: number of query rows processed at once; ``None`` picks it so one chunk's
            ``rows x G`` block holds about 8M elements (32 MiB in float32). The result does not
            depend on it.

    Returns:
        ``(Q, G)`` float32 numpy array; row ``i`` holds the distances of query ``i``.

    Raises:
        RetrievalInputError: (a :class:`ValueError`) unknown metric, inputs that are not 2-D,
            not real-valued, contain NaN or inf, or whose feature dimensions differ, or a
            ``chunk_size`` below 1.
    """
    if metric not in METRICS:
        raise RetrievalInputError(
            f"unknown distance metric '{metric}'", f"use one of {', '.join(METRICS)}"
        )
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer))
        or chunk_size < 1
    ):
        raise RetrievalInputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    q = _features(query, "query")
    g = _features(gallery, "gallery")
    if q.shape[1] != g.shape[1]:
        raise RetrievalInputError(
            f"feature dimensions differ: query has {q.shape[1]}, gallery has {g.shape[1]}"
        )

    ctype = np.float64 if np.float64 in (q.dtype, g.dtype) else np.float32
    q = q.astype(ctype, copy=False)
    g = g.astype(ctype, copy=False)
    if normalize or metric == "cosine":
        q = _l2_normalize(q)
        g = _l2_normalize(g)

    num_q, num_g = q.shape[0], g.shape[0]
    out = np.empty((num_q, num_g), dtype=np.float32)
    if num_q == 0 or num_g == 0:
        return out
    rows = int(chunk_size) if chunk_size is not None else max(1, _CHUNK_ELEMENTS // num_g)
    g_t = np.ascontiguousarray(g.T)
    g_sq = np.einsum("ij,ij->i", g, g)

    for start in range(0, num_q, rows):
        qc = q[start:start + rows]
        block = qc @ g_t
        if metric == "cosine":
            np.subtract(1.0, block, out=block)
            np.clip(block, 0.0, 2.0, out=block)
        else:
            block *= -2.0
            block += np.einsum("ij,ij->i", qc, qc)[:, None]
            block += g_sq[None, :]
            np.maximum(block, 0.0, out=block)
            if metric == "euclidean":
                np.sqrt(block, out=block)
        out[start:start + rows] = block
    return out
