"""Coarse-to-fine registration: search every offset at a reduced resolution, refine at full resolution.

The exhaustive search is the expensive part of :func:`~sarbridge.tasks.geo.register.registration.register`
(descriptors and FFTs of whole windows). :func:`register_coarse_to_fine` runs it on copies of the
query and the windows reduced ``factor`` times (mean of ``factor x factor`` blocks), so it costs
about ``1 / factor^2`` as much, then registers the full-resolution query again inside a small
sub-window of each window around its coarse answer (``factor`` + ``slack`` pixels of search on
every side, plus the descriptor border). The confidence and the cost surfaces are the coarse
level's (the only level that sees the whole window); positions and scores are the fine level's.

The coarse level sees less detail: a query needs enough structure at the reduced resolution (in
the benchmark, 96 px Sentinel windows keep their accuracy at ``factor = 2``; 64 px ones lose some).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sarbridge.core.errors import DataError
from sarbridge.tasks.geo.register.descriptors import CFOG_DEFAULTS, cfog_border
from sarbridge.tasks.geo.register.images import MAX_BANDS, as_image
from sarbridge.tasks.geo.register.registration import RegistrationResult, register

__all__ = ["register_coarse_to_fine"]


def _reduce(x: Tensor, factor: int) -> Tensor:
    """Mean of ``factor x factor`` blocks of a (C, H, W) image (the last partial blocks dropped)."""
    return F.avg_pool2d(x[None], factor)[0]


def register_coarse_to_fine(query: np.ndarray | Tensor, windows: np.ndarray | Tensor | Sequence[np.ndarray | Tensor],
                            method: str = "cfog", *, factor: int = 2, slack: int = 2,
                            origins: Sequence[tuple[float, float]] | None = None,
                            device: torch.device | str | None = None, **kwargs: Any) -> RegistrationResult:
    """Register like :func:`register`, searching all offsets at ``1 / factor`` resolution first.

    Args:
        query: (H, W) or (C, H, W) query (see :func:`register`).
        windows: one window or a sequence of windows.
        method: ``"cfog"`` or ``"ncc"`` (learned feature maps have their own resolution).
        factor: resolution reduction of the exhaustive search (2 = half resolution); 1 is plain
            :func:`register`.
        slack: extra full-resolution pixels searched around the coarse answer, beyond ``factor``.
        origins: window origins in a common frame (full-resolution pixels), for the confidence.
        device: where to compute.
        **kwargs: other :func:`register` parameters (similarity, CFOG parameters, exclude, angles,
            scales); ``exclude`` applies at the coarse level.

    Returns:
        The :class:`RegistrationResult`: full-resolution positions and scores, the coarse level's
        confidence and surfaces (coarse pixels).

    Raises:
        DataError: ``factor < 1``, a method other than cfog/ncc, precomputed windows, or any input
            problem :func:`register` reports (at either level).
    """
    if factor < 1:
        raise DataError(f"coarse-to-fine factor must be >= 1, got {factor}", "use 1 (no pyramid) or 2")
    if factor == 1:
        return register(query, windows, method, origins=origins, device=device, **kwargs)
    if method not in ("cfog", "ncc") or kwargs.get("precomputed"):
        raise DataError(f"coarse-to-fine registration takes cfog or ncc on images, not '{method}'"
                        + (" with precomputed descriptors" if kwargs.get("precomputed") else ""),
                        "register feature maps or precomputed descriptors with register() directly")
    q = as_image(query, "query", device, MAX_BANDS)
    seq = [windows] if isinstance(windows, (np.ndarray, Tensor)) else list(windows)
    ws = [as_image(w, f"window {i}", q.device, None) for i, w in enumerate(seq)]
    org = None if origins is None else [(r / factor, c / factor) for r, c in origins]
    coarse = register(_reduce(q, factor), [_reduce(w, factor) for w in ws], method, origins=org, **kwargs)
    h, w = q.shape[-2:]
    sigma = kwargs.get("sigma", CFOG_DEFAULTS["sigma"])
    pre = max(kwargs.get("pre_sigma", CFOG_DEFAULTS["pre_sigma"]), kwargs.get("query_pre_sigma") or 0.0)
    border = cfog_border(sigma, pre) if method == "cfog" else 0
    reach = factor + slack + border
    boxes, subs = [], []
    for i, win in enumerate(ws):
        hh, ww = win.shape[-2:]
        r = int(round(coarse.rows[i] * factor))
        c = int(round(coarse.cols[i] * factor))
        r0, c0 = max(0, min(r - reach, hh - h)), max(0, min(c - reach, ww - w))
        r1, c1 = min(hh, max(r + h + reach, r0 + h)), min(ww, max(c + w + reach, c0 + w))
        boxes.append((r0, c0))
        subs.append(win[:, r0:r1, c0:c1])
    fine_kw = {k: v for k, v in kwargs.items() if k not in ("angles", "scales")}
    fine = register(q, subs, method, angles=(coarse.angle,), scales=(coarse.scale,), **fine_kw)
    off = np.array(boxes, dtype=np.float64)
    rows, cols = fine.rows + off[:, 0], fine.cols + off[:, 1]
    best = int(fine.scores.argmin())
    return replace(coarse, row=float(rows[best]), col=float(cols[best]), score=float(fine.scores[best]),
                   candidate=best, rows=rows, cols=cols, scores=fine.scores)
