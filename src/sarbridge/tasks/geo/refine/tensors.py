"""Tensor conventions shared by the refinement modules: coordinate checks and dtype widening."""

from __future__ import annotations

import torch

__all__ = ["as_float_xy", "widen"]


def as_float_xy(cand_xy: torch.Tensor, name: str = "cand_xy") -> torch.Tensor:
    """Check a ``(B, K, 2)`` coordinate tensor and return it in a floating dtype.

    Args:
        cand_xy: (B, K, 2) candidate map coordinates, K >= 1.
        name: its name in error messages.

    Returns:
        ``cand_xy``, converted to the default float dtype when it is an integer tensor.

    Raises:
        ValueError: a wrong shape or no candidate.
    """
    if cand_xy.dim() != 3 or cand_xy.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (B, K, 2), got {tuple(cand_xy.shape)}")
    if cand_xy.shape[1] < 1:
        raise ValueError(f"{name} needs at least one candidate per graph (K >= 1)")
    if not cand_xy.is_floating_point():
        cand_xy = cand_xy.to(torch.get_default_dtype())
    return cand_xy


def widen(x: torch.Tensor) -> torch.Tensor:
    """Half / bfloat16 to float32 (for softmax and losses); other dtypes unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
