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

__all__ = ["BLOCK_METRICS", "ProductBlock", "default_block_rows", "distance_blocks", "product_blocks"]

#: Distances :func:`distance_blocks` computes.
BLOCK_METRICS: Final[tuple[str, ...]] = (*METRICS, "neg_dot")
# Same as pairwise_distance's chunk (rows x gallery elements), so default blocks are its blocks.
_BLOCK_ELEMENTS: Final[int] = 2**23
_NORM_EPS: Final[float] = 1e-12
_EPS32: Final[float] = float(np.finfo(np.float32).eps)


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


class ProductBlock:
    """One block of query rows on the CPU: the raw product ``q . g`` and what turns it into distances.

    :meth:`dense` finishes the whole block with ``pairwise_distance``'s arithmetic (bitwise its
    values); :meth:`values` applies the same operations to chosen entries only, so an evaluator
    that needs few distances exactly (those of the matches and of the items that can precede
    them) never runs the elementwise passes over the block. :meth:`candidates` finds those items
    with one comparison of the product against a per-row bound.

    Attributes:
        start: first query row of the block.
        product: ``(rows, G)`` ``q . g`` in the compute dtype (float32, or float64 for float64 features).
        metric: one of :data:`BLOCK_METRICS`.
    """

    def __init__(self, start: int, product: np.ndarray, metric: str, q_sq: np.ndarray, g_sq: np.ndarray,
                 g_sq_range: tuple[float, float]) -> None:
        self.start = start
        self.product = product
        self.metric = metric
        self._q_sq = q_sq
        self._g_sq = g_sq
        self._g_lo, self._g_hi = g_sq_range

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, G)``."""
        return (int(self.product.shape[0]), int(self.product.shape[1]))

    def _finish(self, b: np.ndarray, q_sq: np.ndarray | float, g_sq: np.ndarray | float) -> np.ndarray:
        """``pairwise_distance``'s operations on ``b`` in place (``q_sq`` / ``g_sq`` broadcast to it)."""
        if self.metric == "neg_dot":
            np.negative(b, out=b)
        elif self.metric == "cosine":
            np.subtract(1.0, b, out=b)
            np.clip(b, 0.0, 2.0, out=b)
        else:
            b *= -2.0
            b += q_sq
            b += g_sq
            np.maximum(b, 0.0, out=b)
            if self.metric == "euclidean":
                np.sqrt(b, out=b)
        return b.astype(np.float32, copy=False)

    def dense(self) -> np.ndarray:
        """The whole ``(rows, G)`` float32 block (finished in place: use the block once)."""
        return self._finish(self.product, self._q_sq[:, None], self._g_sq[None, :])

    def values(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """float32 distances at ``(rows[i], cols[i])`` (block-local rows), bitwise :meth:`dense`'s."""
        return self._finish(self.product[rows, cols], self._q_sq[rows], self._g_sq[cols])

    @property
    def safe(self) -> bool:
        """True when no distance can overflow (:meth:`candidates` is then exact to its margin)."""
        limit = 1e30 if self.product.dtype == np.float32 else 1e300
        bound = float(np.max(self._q_sq, initial=0.0)) * max(abs(self._g_lo), abs(self._g_hi))
        return bool(np.isfinite(self._q_sq).all()) and np.isfinite(bound) and 4.0 * np.sqrt(bound) + \
            float(np.max(self._q_sq, initial=0.0)) + abs(self._g_hi) < limit

    def lower_bounds(self, thr: np.ndarray) -> np.ndarray:
        """Per row a bound ``L`` with ``d[r, c] <= thr[r]  =>  product[r, c] >= L[r]`` (in the product's dtype).

        Every distance is ``fl(a * p + off_r + goff_c)`` (clamped) for a product ``p``, with ``a < 0``;
        the bound takes the smallest ``goff_c`` and a margin of several roundings of every term,
        so it is conservative whatever the rounding (a few extra candidates at most).
        """
        t = thr.astype(np.float64)
        qn = np.sqrt(np.maximum(self._q_sq.astype(np.float64), 0.0))
        p_max = qn * np.sqrt(max(self._g_hi, 0.0)) * (1.0 + 1e-3) + 1e-30
        if self.metric == "neg_dot":
            a, off, g_lo, g_abs = 1.0, np.zeros_like(t), 0.0, 0.0
        elif self.metric == "cosine":
            a, off, g_lo, g_abs = 1.0, np.ones_like(t), 0.0, 0.0
            t = np.where(t >= 2.0, np.inf, t)
        else:
            a, off, g_lo, g_abs = 2.0, self._q_sq.astype(np.float64), self._g_lo, abs(self._g_hi)
            if self.metric == "euclidean":
                t = np.where(t >= 0.0, t * t * (1.0 + 8.0 * _EPS32), t)
        with np.errstate(invalid="ignore", over="ignore"):
            err = 8.0 * _EPS32 * (a * p_max + np.abs(off) + g_abs + np.abs(t)) + 1e-30
            bound = (off + g_lo - t - err) / a
        bound = np.where(t == -np.inf, np.inf, np.where(np.isnan(bound), -np.inf, bound))
        low = bound.astype(self.product.dtype)
        return np.where(low > bound, np.nextafter(low, low.dtype.type(-np.inf)), low)

    def candidates(self, thr: np.ndarray) -> np.ndarray:
        """Flat indices ``r * G + c`` (ascending) of a superset of the entries with ``d[r, c] <= thr[r]``."""
        return np.flatnonzero(self.product >= self.lower_bounds(thr)[:, None])


def _numpy_products(q: np.ndarray, g: np.ndarray, metric: str, normalize: bool, rows: int) -> Iterator[ProductBlock]:
    """pairwise_distance's products, one block at a time."""
    ctype = np.float64 if np.float64 in (q.dtype, g.dtype) else np.float32
    q = q.astype(ctype, copy=False)
    g = g.astype(ctype, copy=False)
    if (normalize and metric != "neg_dot") or metric == "cosine":
        q = _l2_normalize(q)
        g = _l2_normalize(g)
    g_t = np.ascontiguousarray(g.T)
    g_sq = np.einsum("ij,ij->i", g, g)
    g_range = (float(g_sq.min()), float(g_sq.max()))
    for start in range(0, q.shape[0], rows):
        qc = q[start:start + rows]
        yield ProductBlock(start, qc @ g_t, metric, np.einsum("ij,ij->i", qc, qc), g_sq, g_range)


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


def _validated(query: Any, gallery: Any, metric: str, chunk_size: int | None,
               device: str | torch.device | None) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor, int]:
    """Checked features (numpy on the CPU path, torch on a device) and the block rows."""
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
    rows = int(chunk_size) if chunk_size is not None else default_block_rows(g.shape[0])
    return q, g, rows


def product_blocks(
    query: Any,
    gallery: Any,
    metric: str = "sqeuclidean",
    normalize: bool = True,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> Iterator[tuple[int, ProductBlock | torch.Tensor]]:
    """Like :func:`distance_blocks`, but CPU blocks come as :class:`ProductBlock` (distances on demand).

    Arguments and errors as :func:`distance_blocks`. On a CUDA device the blocks are the finished
    float32 distance tensors of :func:`distance_blocks`.

    Yields:
        ``(start, block)``: a :class:`ProductBlock` on the CPU, a ``(rows, G)`` tensor on a device.
    """
    q, g, rows = _validated(query, gallery, metric, chunk_size, device)
    if q.shape[0] == 0 or g.shape[0] == 0:
        return
    if isinstance(q, np.ndarray) and isinstance(g, np.ndarray):
        for block in _numpy_products(q, g, metric, normalize, rows):
            yield block.start, block
    else:
        yield from _torch_blocks(torch.as_tensor(q), torch.as_tensor(g), metric, normalize, rows)


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
    for start, block in product_blocks(query, gallery, metric, normalize, chunk_size, device):
        yield start, torch.from_numpy(block.dense()) if isinstance(block, ProductBlock) else block
