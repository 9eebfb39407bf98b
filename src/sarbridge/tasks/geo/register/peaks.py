"""Peaks of matching-cost surfaces: sub-pixel position and a peak-to-second-peak confidence.

All surfaces here are *costs* (lower is better): SSD for descriptors, ``1 - NCC`` for intensities.
Entries that are not valid offsets (a padded window) hold ``+inf``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["peak_ratio", "subpixel_peak"]


def _parabola(lo: Tensor, mid: Tensor, hi: Tensor) -> Tensor:
    """Vertex offset in [-0.5, 0.5] of the parabola through (-1, lo), (0, mid), (1, hi); 0 when undefined."""
    den = lo - 2.0 * mid + hi
    ok = torch.isfinite(lo) & torch.isfinite(hi) & (den > 0)
    off = torch.where(ok, 0.5 * (lo - hi) / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(den))
    return off.clamp(-0.5, 0.5)


def subpixel_peak(surface: Tensor) -> Tensor:
    """Sub-pixel position of the minimum of each cost surface.

    The integer minimum is refined by a parabola through it and its two neighbours, separately
    along rows and columns (no refinement on an axis where the minimum lies on the surface's edge).

    Args:
        surface: (..., H, W) costs, lower is better (``+inf`` marks invalid entries).

    Returns:
        (..., 2) float64 ``(row, col)`` of each minimum.
    """
    *lead, h, w = surface.shape
    s = surface.reshape(-1, h, w).double()
    idx = s.flatten(1).argmin(dim=1)
    r, c = idx // w, idx % w
    n = torch.arange(s.shape[0], device=s.device)
    inf = torch.full_like(r, 0, dtype=s.dtype) + float("inf")
    mid = s[n, r, c]
    up = torch.where(r > 0, s[n, (r - 1).clamp_min(0), c], inf)
    down = torch.where(r < h - 1, s[n, (r + 1).clamp_max(h - 1), c], inf)
    left = torch.where(c > 0, s[n, r, (c - 1).clamp_min(0)], inf)
    right = torch.where(c < w - 1, s[n, r, (c + 1).clamp_max(w - 1)], inf)
    pos = torch.stack([r.double() + _parabola(up, mid, down), c.double() + _parabola(left, mid, right)], dim=-1)
    return pos.reshape(*lead, 2)


def peak_ratio(surface: Tensor, exclude: int = 4, origins: Tensor | None = None, eps: float = 1e-6) -> float:
    """Second-best cost outside the best peak's neighbourhood, divided by the best cost.

    The best entry is taken over all windows; the second best over every entry farther than
    ``exclude`` pixels (Chebyshev distance) from it. With ``origins`` (the windows' top-left corners
    in one common frame, e.g. map pixels) distances are measured in that frame, so overlapping
    windows do not count the same place twice; without them, other windows are other places.

    Args:
        surface: (B, H, W) costs, lower is better.
        exclude: radius of the neighbourhood of the best entry that is not a second peak.
        origins: optional (B, 2) window origins ``(row, col)`` in a common frame.
        eps: added to both costs (a perfect match costs 0).

    Returns:
        The ratio, ``>= 1``; 1 means a tie (ambiguous), larger is more distinctive. ``inf`` when
        there is no second candidate position at all.
    """
    s = surface.double()
    b, h, w = s.shape
    idx = int(s.flatten().argmin())
    bi, r, c = idx // (h * w), (idx % (h * w)) // w, idx % w
    best = float(s[bi, r, c])
    rows = torch.arange(h, device=s.device, dtype=torch.float64).view(1, h, 1)
    cols = torch.arange(w, device=s.device, dtype=torch.float64).view(1, 1, w)
    if origins is None:
        near = torch.zeros(b, 1, 1, dtype=torch.bool, device=s.device)
        near[bi] = True
        dr, dc = rows - r, cols - c
        mask = near & (dr.abs() <= exclude) & (dc.abs() <= exclude)
    else:
        o = origins.to(device=s.device, dtype=torch.float64)
        dr = rows + o[:, 0].view(b, 1, 1) - (o[bi, 0] + r)
        dc = cols + o[:, 1].view(b, 1, 1) - (o[bi, 1] + c)
        mask = (dr.abs() <= exclude) & (dc.abs() <= exclude)
    second = float(torch.where(mask, torch.full_like(s, float("inf")), s).min())
    return (second + eps) / (best + eps)
