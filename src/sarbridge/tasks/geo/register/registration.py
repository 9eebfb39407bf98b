"""Register a SAR query inside one or several optical windows: dense descriptors + FFT matching.

:func:`register` places a query ``(C, h, w)`` in each candidate window (batched: windows of
different sizes are padded to a common size and the offsets that would leave a window are
masked), takes the best offset over all windows, refines it to sub-pixel precision and scores its
distinctiveness (:func:`~sarbridge.tasks.geo.register.peaks.peak_ratio`). Methods:

* ``"cfog"`` (default): oriented-gradient descriptors of each image, compared over all offsets by
  ZNCC (``similarity="zncc"``, the default, cost ``1 - ZNCC``) or by SSD as in Ye et al.
  (``similarity="ssd"``); on the real Sentinel pairs ZNCC is the more robust of the two
  (``benchmarks/geo_registration.py``);
* ``"ncc"``: zero-normalised cross-correlation of intensities (the baseline), cost ``1 - NCC``;
* ``"features"``: any dense (C, h, w) feature maps of query and windows (e.g. a trained
  encoder's), L2-normalised per pixel, same similarities; ``stride`` maps feature pixels to image
  pixels.

Descriptors are computed on each image separately and the border where their smoothing runs off
the image is cropped from both sides, so it never takes part in a match. An optional small search
over rotations and scales (:mod:`~sarbridge.tasks.geo.register.warp`) multiplies the query-side
work and the inverse FFTs by the number of (angle, scale) pairs; the windows' descriptors and
transforms are computed once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sarbridge.core.errors import DataError
from sarbridge.tasks.geo.register.descriptors import CFOG_DEFAULTS, cfog, cfog_border
from sarbridge.tasks.geo.register.images import MAX_BANDS, as_image
from sarbridge.tasks.geo.register.matching import match_ssd_fft, ncc_fft
from sarbridge.tasks.geo.register.peaks import peak_ratio, subpixel_peak
from sarbridge.tasks.geo.register.warp import central_box, warp_query

__all__ = ["METHODS", "SIMILARITIES", "RegistrationResult", "register", "register_features"]

METHODS = ("cfog", "ncc", "features")
SIMILARITIES = ("zncc", "ssd")

ImageLike = np.ndarray | Tensor


@dataclass
class RegistrationResult:
    """Where the query lies in the best window, how well it fits and how distinctive the fit is.

    Attributes:
        row: sub-pixel row of the query's top-left pixel in window ``candidate`` (with a rotation or
            scale search: the matched centre minus ``(h - 1) / 2``).
        col: sub-pixel column, likewise.
        score: matching cost at the peak (``1 - ZNCC``, or the SSD with ``similarity="ssd"``); lower is better.
        confidence: peak-to-second-peak ratio (second-best cost outside the peak's neighbourhood over
            the best cost), ``>= 1``; near 1 means ambiguous.
        candidate: index of the window holding the best match.
        surface: cost surfaces of every window (``+inf`` at invalid offsets) for the best (angle,
            scale), indexed by the offset of the matched template: (B, H-h+1, W-w+1), entry (r, c)
            = query top-left at (r, c), in the plain case; with ``precomputed`` windows the template
            is the query less its border ``b`` (entry (r, c) = top-left at (r - b, c - b)), with a
            rotation/scale search the central box of :func:`~sarbridge.tasks.geo.register.warp.central_box`.
        rows: per window, the sub-pixel row of its own best offset.
        cols: per window, the sub-pixel column of its own best offset.
        scores: per window, its best cost.
        angle: the angle (degrees) of :func:`~sarbridge.tasks.geo.register.warp.warp_query` that brings
            the query onto the map (0 without a search).
        scale: the scale of that warp (1 without a search).
        method: the method used.
    """

    row: float
    col: float
    score: float
    confidence: float
    candidate: int
    surface: Tensor = field(repr=False)
    rows: np.ndarray = field(repr=False)
    cols: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)
    angle: float = 0.0
    scale: float = 1.0
    method: str = "cfog"


def _pad_stack(items: list[Tensor]) -> Tensor:
    """Zero-pad (C, H_i, W_i) tensors to a common size and stack them: (B, C, H, W)."""
    hm = max(t.shape[-2] for t in items)
    wm = max(t.shape[-1] for t in items)
    return torch.stack([F.pad(t, (0, wm - t.shape[-1], 0, hm - t.shape[-2])) for t in items])


def _normalise(feats: Tensor) -> Tensor:
    return feats / (feats.square().sum(dim=-3, keepdim=True).sqrt() + 1e-8)


def _inputs(query: ImageLike, windows: ImageLike | Sequence[ImageLike], device: torch.device | str | None,
            max_bands: int | None) -> tuple[Tensor, list[Tensor]]:
    q = as_image(query, "query", device, max_bands)
    seq = [windows] if isinstance(windows, (np.ndarray, Tensor)) else list(windows)
    if not seq:
        raise DataError("no candidate windows to register the query in", "pass at least one window")
    ws = [as_image(w, f"window {i}", q.device, None) for i, w in enumerate(seq)]  # bands: _check_bands
    for i, w in enumerate(ws):
        if w.shape[-2] < q.shape[-2] or w.shape[-1] < q.shape[-1]:
            raise DataError(f"window {i} ({w.shape[-2]} x {w.shape[-1]} px) is smaller than the query "
                            f"({q.shape[-2]} x {q.shape[-1]} px)", "widen the search margin around the candidate")
    return q, ws


def _check_bands(method: str, q: Tensor, ws: list[Tensor], precomputed: bool, orientations: int) -> None:
    if method == "cfog" and not precomputed:
        bad = [i for i, w in enumerate(ws) if w.shape[0] > MAX_BANDS]
        if bad:
            raise DataError(f"window {bad[0]} has {ws[bad[0]].shape[0]} bands, more than the {MAX_BANDS} an "
                            "intensity descriptor can use",
                            "pass (C, H, W); a channels-last (H, W, C) array needs array.transpose(2, 0, 1)")
        return
    want = orientations if method == "cfog" else q.shape[0]
    if any(w.shape[0] != want for w in ws):
        what = {"cfog": "precomputed CFOG descriptors", "ncc": "intensity images", "features": "feature maps"}[method]
        fix = {"cfog": f"compute the window descriptors with cfog(..., orientations={orientations})",
               "ncc": "combine bands into one intensity (optical_intensity) on both sides",
               "features": "extract query and window features with the same encoder"}[method]
        raise DataError(f"'{method}' needs {what} with {want} bands, but the windows have "
                        f"{sorted({w.shape[0] for w in ws})} (query: {q.shape[0]})", fix)


def _costs(similarity: str, templates: Tensor, wins: Tensor) -> Tensor:
    """(N, B, ., .) cost surfaces (lower is better) of N query templates against the windows."""
    if similarity == "zncc":
        return 1.0 - ncc_fft(templates, wins)
    return match_ssd_fft(templates, wins)


def register(query: ImageLike, windows: ImageLike | Sequence[ImageLike], method: str = "cfog", *,
             origins: Sequence[tuple[float, float]] | None = None, exclude: int = 4,
             similarity: str = "zncc", orientations: int = int(CFOG_DEFAULTS["orientations"]),
             sigma: float = CFOG_DEFAULTS["sigma"], pre_sigma: float = CFOG_DEFAULTS["pre_sigma"],
             query_pre_sigma: float | None = None, floor: float = CFOG_DEFAULTS["floor"],
             precomputed: bool = False, angles: Sequence[float] = (0.0,), scales: Sequence[float] = (1.0,),
             stride: int = 1, device: torch.device | str | None = None) -> RegistrationResult:
    """Register a query in one or several candidate windows.

    Args:
        query: (H, W) or (C, H, W) query: SAR in dB for ``"cfog"``/``"ncc"``, a feature map for ``"features"``.
        windows: one window or a sequence of windows (optical grey or band combination; feature maps),
            each at least as large as the query; sizes may differ.
        method: ``"cfog"``, ``"ncc"`` or ``"features"``.
        origins: optional (row, col) of each window's top-left in a common frame (map pixels), so the
            confidence does not count overlapping windows' copies of the peak as second peaks.
        exclude: neighbourhood radius (pixels of the matching grid) of the peak, ignored when looking
            for the second peak.
        similarity: how descriptors are compared (``"cfog"``, ``"features"``): ``"zncc"``, the
            zero-normalised correlation over all channels (cost ``1 - ZNCC``), or ``"ssd"`` (Ye et al.).
        orientations: CFOG orientations.
        sigma: CFOG spatial smoothing.
        pre_sigma: CFOG pre-smoothing of the windows (and of the query unless ``query_pre_sigma``).
        query_pre_sigma: CFOG pre-smoothing of the query, when it should differ.
        floor: CFOG norm floor (see :func:`~sarbridge.tasks.geo.register.descriptors.cfog`).
        precomputed: ``"cfog"`` only: the windows are already CFOG descriptors (O, H, W), cut from the
            descriptor of a larger image (the whole map, computed once with the same parameters), so
            none of their pixels is a border to ignore.
        angles: rotation angles (degrees) to search; the identity alone by default.
        scales: scale factors to search; 1 alone by default.
        stride: image pixels per feature pixel (``"features"``): positions are multiplied by it.
        device: where to compute; default the query's device (CPU for arrays).

    Returns:
        The :class:`RegistrationResult` of the best window.

    Raises:
        DataError: an unknown method or similarity, NaN/inf pixels, a query smaller than the
            descriptor's support, a window smaller than the query, or band counts the method cannot use.
    """
    if method not in METHODS:
        raise DataError(f"unknown registration method '{method}'", f"use one of {', '.join(METHODS)}")
    if similarity not in SIMILARITIES:
        raise DataError(f"unknown similarity '{similarity}'", f"use one of {', '.join(SIMILARITIES)}")
    q, ws = _inputs(query, windows, device, None if method == "features" else MAX_BANDS)
    _check_bands(method, q, ws, precomputed, orientations)
    qps = pre_sigma if query_pre_sigma is None else query_pre_sigma
    border = cfog_border(sigma, max(pre_sigma, qps)) if method == "cfog" else 0
    wb = 0 if precomputed else border  # border cropped from the windows
    h, w = q.shape[-2:]
    top, left, hc, wc = central_box(h, w, angles, scales)
    th, tw = hc - 2 * border, wc - 2 * border
    if th < 1 or tw < 1:
        support = 2 * border + 1 + (h - hc)
        raise DataError(f"query ({h} x {w} px) is smaller than the descriptor's support ({support} px: "
                        f"{border} px of border per side)", "use a larger query or smaller sigma / pre_sigma")
    qs, pairs = warp_query(q, angles, scales) if len(angles) * len(scales) > 1 else (q[None], [(0.0, 1.0)])
    if method == "cfog":
        qs = cfog(qs, orientations, sigma, qps, floor)
        if not precomputed:  # each window on its own (its norm floor is its own), one call when sizes agree
            same = len({tuple(x.shape) for x in ws}) == 1
            ws = list(cfog(torch.stack(ws), orientations, sigma, pre_sigma, floor)) if same else \
                [cfog(x[None], orientations, sigma, pre_sigma, floor)[0] for x in ws]
    elif method == "features":
        qs, ws = _normalise(qs), [_normalise(x) for x in ws]
    sizes = torch.tensor([x.shape[-2:] for x in ws], device=q.device)
    wins = ws[0][None] if len(ws) == 1 else _pad_stack(ws)
    templ = qs[:, :, top + border : top + border + th, left + border : left + border + tw]
    # whole windows go to the FFT (fast sizes, no copy); offsets whose template would touch a window's
    # border of wb pixels (or its padding) are cut off / masked instead
    cost = _costs("zncc" if method == "ncc" else similarity, templ, wins)  # (N, B, H-th+1, W-tw+1)
    cost = cost[..., wb : cost.shape[-2] - wb, wb : cost.shape[-1] - wb]
    oh, ow = cost.shape[-2:]
    rr = torch.arange(oh, device=cost.device).view(1, oh, 1)
    cc = torch.arange(ow, device=cost.device).view(1, 1, ow)
    valid = (rr <= (sizes[:, 0] - 2 * wb - th).view(-1, 1, 1)) & (cc <= (sizes[:, 1] - 2 * wb - tw).view(-1, 1, 1))
    cost = torch.where(valid[None], cost, torch.full_like(cost, float("inf")))
    n = int(cost.flatten(1).min(dim=1).values.argmin())
    surf = cost[n]
    # template offset (r, c) -> query top-left in the window: r + wb - (top + border)
    pos = (subpixel_peak(surf).cpu().numpy() + np.array([wb - top - border, wb - left - border])) * stride
    per_window = surf.flatten(1).min(dim=1).values.cpu().numpy().astype(np.float64)
    best = int(per_window.argmin())
    org = None if origins is None else torch.as_tensor(np.asarray(origins, dtype=np.float64) / stride)
    conf = peak_ratio(surf, exclude=exclude, origins=org)
    angle, scale = pairs[n]
    return RegistrationResult(row=float(pos[best, 0]), col=float(pos[best, 1]), score=float(per_window[best]),
                              confidence=conf, candidate=best, surface=surf, rows=pos[:, 0], cols=pos[:, 1],
                              scores=per_window, angle=angle, scale=scale, method=method)


def register_features(query_features: ImageLike, window_features: ImageLike | Sequence[ImageLike], *,
                      stride: int = 1, origins: Sequence[tuple[float, float]] | None = None,
                      exclude: int = 4, similarity: str = "zncc",
                      device: torch.device | str | None = None) -> RegistrationResult:
    """Register with dense learned feature maps (any encoder): per-pixel L2-normalised SSD over all offsets.

    Args:
        query_features: (C, h, w) features of the query.
        window_features: (C, H, W) features of one window, or a sequence of them (same ``C``).
        stride: image pixels per feature pixel; the returned position is in image pixels.
        origins: window origins in a common frame, in image pixels (see :func:`register`).
        exclude: peak neighbourhood radius in feature pixels.
        similarity: ``"zncc"`` or ``"ssd"`` of the normalised features.
        device: where to compute.

    Returns:
        The :class:`RegistrationResult` (positions in image pixels).

    Raises:
        DataError: NaN/inf, a window smaller than the query, or different channel counts.
    """
    return register(query_features, window_features, "features", origins=origins, exclude=exclude,
                    similarity=similarity, stride=stride, device=device)
