"""From node logits to the refined answer: candidate order, map position and confidence."""

from __future__ import annotations

from typing import NamedTuple

import torch

from sarbridge.tasks.geo.refine.tensors import as_float_xy, widen

__all__ = ["RefinedPositions", "refine_positions"]


class RefinedPositions(NamedTuple):
    """Output of :func:`refine_positions` (unpacks as ``order, xy, confidence``)."""

    order: torch.Tensor
    """(B, K) long candidate positions, best refined score first."""
    xy: torch.Tensor
    """(B, 2) refined map position."""
    confidence: torch.Tensor
    """(B,) softmax probability of the best node."""


def refine_positions(
    logits: torch.Tensor, cand_xy: torch.Tensor, top: int = 3, temperature: float = 1.0
) -> RefinedPositions:
    """Refined order, position and confidence from the node logits.

    With ``p = softmax(logits / temperature)`` over the K nodes, the refined position is
    ``sum_{n in best top} p_n xy_n / sum_{n in best top} p_n`` (the softmax over the ``top`` best
    nodes only) and the confidence is ``max_n p_n``. The chosen patch is ``order[:, 0]`` at
    ``cand_xy[b, order[b, 0]]``.

    Args:
        logits: (B, K) node logits.
        cand_xy: (B, K, 2) candidate map coordinates.
        top: nodes averaged into the refined position (>= 1; clamped to K).
        temperature: softmax temperature (> 0).

    Returns:
        :class:`RefinedPositions` ``(order, xy, confidence)``; ``xy`` in the floating dtype of
        ``cand_xy``.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, K), got {tuple(logits.shape)}")
    cand_xy = as_float_xy(cand_xy)
    if cand_xy.shape[:2] != logits.shape:
        raise ValueError(f"cand_xy {tuple(cand_xy.shape)} does not match logits {tuple(logits.shape)}")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    b, k = logits.shape
    scaled = widen(logits) / temperature
    order = torch.sort(scaled, dim=1, descending=True, stable=True).indices
    confidence = torch.softmax(scaled, dim=1).max(dim=1).values.to(logits.dtype)
    best = order[:, : min(top, k)]
    w = torch.softmax(scaled.gather(1, best), dim=1).to(cand_xy.dtype)  # renormalised over the best
    pts = cand_xy.gather(1, best.unsqueeze(-1).expand(b, best.shape[1], 2))
    xy = (w.unsqueeze(-1) * pts).sum(1)
    return RefinedPositions(order, xy, confidence)
