"""Rotated and scaled copies of a query, for a small rotation/scale search.

A search candidate ``(angle, scale)`` resamples the query at ``c + scale * R(angle) (p - c)`` (``c``
the query's centre, ``p = (x, y)`` = (column, row), ``R`` the rotation matrix): as displayed (rows
down), the content turns *counter-clockwise* by ``angle`` degrees and shrinks by ``scale``. The
candidate that matches the map undoes the query's own turn and zoom: a query showing the map
turned clockwise by 5 degrees is matched at ``angle = 5``. Only the central box that stays inside
the query for *every* candidate is matched, so all candidates compare the same number of pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["central_box", "warp_query"]


def central_box(h: int, w: int, angles: Sequence[float], scales: Sequence[float]) -> tuple[int, int, int, int]:
    """The centred box of a ``h x w`` query whose pixels sample inside the query for every candidate.

    Args:
        h: query height.
        w: query width.
        angles: rotation angles in degrees.
        scales: scale factors (> 0).

    Returns:
        ``(top, left, height, width)`` of the box (the whole query when there is only the identity).
    """
    half = (min(h, w) - 1) / 2.0
    reach = max(s * (abs(math.cos(math.radians(a))) + abs(math.sin(math.radians(a))))
                for a in angles for s in scales)
    a = half / reach - 1.0 if reach > 1.0 + 1e-9 else float("inf")  # 1 px for the bilinear neighbours
    hc = min(h, max(1, 2 * math.floor(a) + 1)) if math.isfinite(a) else h
    wc = min(w, max(1, 2 * math.floor(a) + 1)) if math.isfinite(a) else w
    return (h - hc) // 2, (w - wc) // 2, hc, wc


def warp_query(query: Tensor, angles: Sequence[float],
               scales: Sequence[float]) -> tuple[Tensor, list[tuple[float, float]]]:
    """Every (angle, scale) resampling of a query, bilinear.

    Args:
        query: (C, h, w) float tensor.
        angles: rotation angles in degrees.
        scales: scale factors (> 0).

    Returns:
        ``(N, C, h, w)`` resampled queries (zeros outside the source) and the ``N`` (angle, scale)
        pairs in the same order (angles outer, scales inner).
    """
    c, h, w = query.shape
    pairs = [(float(a), float(s)) for a in angles for s in scales]
    mats = []
    for a, s in pairs:
        t = math.radians(a)
        # affine_grid works in normalised coordinates [-1, 1] (align_corners=True): x scales by (w-1)/2
        sx, sy = (w - 1) / 2.0 or 1.0, (h - 1) / 2.0 or 1.0
        m = torch.tensor([[s * math.cos(t), -s * math.sin(t) * sy / sx, 0.0],
                          [s * math.sin(t) * sx / sy, s * math.cos(t), 0.0]], dtype=torch.float32)
        mats.append(m)
    theta = torch.stack(mats).to(query.device)
    grid = F.affine_grid(theta, [len(pairs), c, h, w], align_corners=True)
    out = F.grid_sample(query[None].expand(len(pairs), c, h, w), grid, mode="bilinear",
                        padding_mode="zeros", align_corners=True)
    return out, pairs
