"""Query x gallery distances one block of query rows at a time, never the whole ``(Q, G)`` matrix.

:func:`distance_blocks` yields the rows of :func:`~sarbridge.retrieval.distance.pairwise_distance`
block by block, for evaluators that need each row only once
(:func:`~sarbridge.retrieval.metrics.evaluate_features`,
:func:`~sarbridge.retrieval.geo_metrics.localisation_metrics_from_features`).

* On the CPU (numpy) the arithmetic is that of ``pairwise_distance`` operation for operation, and
  with the default block size the blocks are the same BLAS calls, so the values are bitwise the
  ones ``pairwise_distance`` returns (a different block size can change the last bit of a
  distance: BLAS rounding depends on the block shape).
* On a CUDA device (features given as CUDA tensors, or ``device="cuda"``) the same formula runs
  in torch; values agree with the CPU ones to float rounding, not bitwise.

Besides the metrics of :data:`~sarbridge.retrieval.distance.METRICS`, ``"neg_dot"`` is the
negated inner product ``-q.g`` of the features as given (ranking by inner product, best first).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import numpy as np
import torch

from sarbridge.retrieval.distance import METRICS, RetrievalInputError, _features, _l2_normalize

__all__ = ["BLOCK_METRICS", "default_block_rows", "distance_blocks"]

#: Distances :func:`distance_blocks` computes.
BLOCK_METRICS: Final[tuple[str, ...]] = (*METRICS, "neg_dot")
# Same as pairwise_distance's chunk (rows x gallery elements), so default blocks are its blocks.
_BLOCK_ELEMENTS: Final[int] = 2**23
_NORM_EPS: Final[float] = 1e-12


def default_block_rows(num_gallery: int) -> int:
    """Query rows per block when none is given: about 8M distances (32 MiB in float32)."""
    return max(1, _BLOCK_ELEMENTS // max(num_gallery, 1))


def _device_of(query: Any, gallery: Any, device: str | torch.device | None) -> torch.device | None:
    """The torch device to compute on, or None for the numpy (CPU) path."""
    if device is None:
        for x in (query, gallery):
            if isinstance(x, torch.Tensor) and x.device.type != "cpu":
                return x.device
        return None
    dev = torch.device(device)
    return None if dev.type == "cpu" else dev


def _torch_features(x: Any, name: str, dev: torch.device) -> torch.Tensor:
    """Validate one feature matrix on the compute device: 2-D, real, non-empty dimension, finite."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim != 2:
        raise RetrievalInputError(f"{name} features must be a 2-D (num_items, dim) array, got shape {tuple(t.shape)}")
    if t.is_complex() or t.dtype == torch.bool:
        raise RetrievalInputError(f"{name} features must be real numbers, got dtype {t.dtype}")
    if t.shape[1] == 0:
        raise RetrievalInputError(f"{name} features have dimension 0")
    t = t.to(dev)
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        what = "NaN" if bool(torch.isnan(t).any()) else "infinite"
        raise RetrievalInputError(f"{name} contains {what} values", "check the model outputs (diverged training?)")
    return t


def _numpy_blocks(q: np.ndarray, g: np.ndarray, metric: str, normalize: bool, rows: int) -> Iterator[tuple[int, torch.Tensor]]:
    """pairwise_distance's arithmetic, one block at a time (float32 blocks as torch views)."""
    ctype = np.float64 if np.float64 in (q.dtype, g.dtype) else np.float32
    q = q.astype(ctype, copy=False)
    g = g.astype(ctype, copy=False)
    if (normalize and metric != "neg_dot") or metric == "cosine":
        q = _l2_normalize(q)
        g = _l2_normalize(g)
    g_t = np.ascontiguousarray(g.T)
    g_sq = np.einsum("ij,ij->i", g, g)
    for start in range(0, q.shape[0], rows):
        qc = q[start:start + rows]
        block = qc @ g_t
        if metric == "neg_dot":
            np.negative(block, out=block)
        elif metric == "cosine":
            np.subtract(1.0, block, out=block)
            np.clip(block, 0.0, 2.0, out=block)
        else:
            block *= -2.0
            block += np.einsum("ij,ij->i", qc, qc)[:, None]
            block += g_sq[None, :]
            np.maximum(block, 0.0, out=block)
            if metric == "euclidean":
                np.sqrt(block, out=block)
        yield start, torch.from_numpy(block.astype(np.float32, copy=False))


def _torch_blocks(q: torch.Tensor, g: torch.Tensor, metric: str, normalize: bool, rows: int) -> Iterator[tuple[int, torch.Tensor]]:
    """The same formula in torch on the features' device (float32 blocks)."""
    ctype = torch.float64 if torch.float64 in (q.dtype, g.dtype) else torch.float32
    q, g = q.to(ctype), g.to(ctype)
    if (normalize and metric != "neg_dot") or metric == "cosine":
        q = q / q.norm(dim=1, keepdim=True).clamp_min(_NORM_EPS)
        g = g / g.norm(dim=1, keepdim=True).clamp_min(_NORM_EPS)
    g_sq = (g * g).sum(dim=1)
    for start in range(0, q.shape[0], rows):
        qc = q[start:start + rows]
        block = qc @ g.T
        if metric == "neg_dot":
            block = -block
        elif metric == "cosine":
            block = (1.0 - block).clamp_(0.0, 2.0)
        else:
            block = (block * -2.0 + (qc * qc).sum(dim=1)[:, None] + g_sq[None, :]).clamp_min_(0.0)
            if metric == "euclidean":
                block = block.sqrt_()
        yield start, block.float()


def distance_blocks(
    query: Any,
    gallery: Any,
    metric: str = "sqeuclidean",
    normalize: bool = True,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(start, block)``: float32 distances of query rows ``start:start + len(block)``.

    Args:
        query: ``(Q, D)`` features (numpy array or torch tensor, any device).
        gallery: ``(G, D)`` features.
        metric: one of :data:`BLOCK_METRICS` (as :func:`~sarbridge.retrieval.distance.pairwise_distance`).
        normalize: L2-normalise the features first (ignored by ``"neg_dot"``).
        chunk_size: query rows per block; None picks :func:`default_block_rows`, whose blocks
            are bitwise ``pairwise_distance``'s on the CPU.
        device: where to compute: None (CUDA if a feature tensor is on CUDA, else the CPU),
            ``"cpu"``, or a torch device such as ``"cuda"``.

    Yields:
        ``(start, block)``: ``block`` a ``(rows, G)`` float32 tensor on the compute device.

    Raises:
        RetrievalInputError: (a :class:`ValueError`) an unknown metric, a bad ``chunk_size`` or
            invalid features (as ``pairwise_distance``).
    """
    if metric not in BLOCK_METRICS:
        raise RetrievalInputError(f"unknown distance metric '{metric}'", f"use one of {', '.join(BLOCK_METRICS)}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer))
                                   or chunk_size < 1):
        raise RetrievalInputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    dev = _device_of(query, gallery, device)
    if dev is None:
        q: np.ndarray | torch.Tensor = _features(query, "query")
        g: np.ndarray | torch.Tensor = _features(gallery, "gallery")
    else:
        q = _torch_features(query, "query", dev)
        g = _torch_features(gallery, "gallery", dev)
    if q.shape[1] != g.shape[1]:
        raise RetrievalInputError(f"feature dimensions differ: query has {q.shape[1]}, gallery has {g.shape[1]}")
    if q.shape[0] == 0 or g.shape[0] == 0:
        return
    rows = int(chunk_size) if chunk_size is not None else default_block_rows(g.shape[0])
    if isinstance(q, np.ndarray) and isinstance(g, np.ndarray):
        yield from _numpy_blocks(q, g, metric, normalize, rows)
    else:
        yield from _torch_blocks(torch.as_tensor(q), torch.as_tensor(g), metric, normalize, rows)
