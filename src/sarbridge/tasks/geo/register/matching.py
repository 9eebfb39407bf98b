"""Dense template matching over all offsets with FFTs: SSD of descriptors and NCC of intensities.

A query (template) of ``h x w`` pixels slides over a window of ``H x W`` pixels; offset ``(r, c)``
puts the query's top-left pixel on window pixel ``(r, c)``, so a surface has ``(H-h+1, W-w+1)``
entries. Cross-correlations are computed with ``torch.fft.rfft2`` (summed over channels in the
frequency domain, one inverse transform per query and window); the window's local sums come from
integral images in float64. Everything runs in float32 on the inputs' device, batched over windows.

* :func:`match_ssd_fft`: ``SSD(r, c) = sum w^2 - 2 corr + sum q^2`` (lower is better);
* :func:`ncc_fft`: zero-normalised cross-correlation in [-1, 1] (higher is better).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sarbridge.core.errors import DataError

__all__ = ["cross_correlation", "fast_size", "local_sums", "match_ssd_fft", "ncc_fft"]


def _check(query: Tensor, window: Tensor) -> tuple[Tensor, bool]:
    """Validate shapes; returns the query as (Q, C, h, w) and whether it was a single (C, h, w) query."""
    single = query.ndim == 3
    q = query[None] if single else query
    if q.ndim != 4 or window.ndim != 4:
        raise DataError(f"matching expects a (C, h, w) or (Q, C, h, w) query and (B, C, H, W) windows, "
                        f"got {tuple(query.shape)} and {tuple(window.shape)}", "add the missing axes")
    if q.shape[1] != window.shape[1]:
        raise DataError(f"query has {q.shape[1]} channels but the windows have {window.shape[1]}",
                        "compute both with the same descriptor (or bands)")
    if q.shape[-2] > window.shape[-2] or q.shape[-1] > window.shape[-1]:
        raise DataError(f"query {tuple(q.shape[-2:])} is larger than the window {tuple(window.shape[-2:])}",
                        "use a larger search window (a larger margin) or a smaller query")
    return q, single


def fast_size(n: int) -> int:
    """The smallest FFT length ``>= n`` of the form ``2^a``, ``3 * 2^a`` or ``5 * 2^a`` (fast transforms)."""
    best = 1 << max(0, (n - 1).bit_length())
    for f in (3, 5):
        m = f
        while m < n:
            m *= 2
        best = min(best, m)
    return best


def cross_correlation(query: Tensor, window: Tensor) -> Tensor:
    """``corr[q, b, r, c] = sum_{k, i, j} window[b, k, r+i, c+j] * query[q, k, i, j]`` via FFT.

    Args:
        query: (Q, C, h, w).
        window: (B, C, H, W), with ``h <= H`` and ``w <= W``.

    Returns:
        (Q, B, H-h+1, W-w+1) float32.
    """
    q, w = query.float(), window.float()
    hh, ww = w.shape[-2:]
    size = (fast_size(hh), fast_size(ww))  # zero padding to >= H keeps the valid offsets free of wrap-around
    wf = torch.fft.rfft2(w, s=size)
    qf = torch.fft.rfft2(q, s=size).conj()
    oh, ow = hh - q.shape[-2] + 1, ww - q.shape[-1] + 1
    out = [torch.fft.irfft2((wf * qf[i : i + 1]).sum(dim=1), s=size)[:, :oh, :ow] for i in range(q.shape[0])]
    return torch.stack(out)


def local_sums(x: Tensor, h: int, w: int) -> Tensor:
    """Sums of ``x`` over every ``h x w`` box, from an integral image in float64.

    Args:
        x: (B, H, W).
        h: box height.
        w: box width.

    Returns:
        (B, H-h+1, W-w+1) float64: entry ``(r, c)`` is ``x[:, r:r+h, c:c+w].sum()``.
    """
    s = torch.nn.functional.pad(x.double().cumsum(-2).cumsum(-1), (1, 0, 1, 0))
    return s[:, h:, w:] - s[:, :-h, w:] - s[:, h:, :-w] + s[:, :-h, :-w]


def match_ssd_fft(query_desc: Tensor, window_desc: Tensor) -> Tensor:
    """Sum of squared differences between a query descriptor and every same-size part of each window.

    Args:
        query_desc: (C, h, w) descriptor of one query, or (Q, C, h, w) of several.
        window_desc: (B, C, H, W) descriptors of the candidate windows.

    Returns:
        (B, H-h+1, W-w+1) for one query, (Q, B, H-h+1, W-w+1) for several; float32, ``>= 0``, lower
        is better.

    Raises:
        DataError: shapes or channel counts that do not fit.
    """
    q, single = _check(query_desc, window_desc)
    h, w = q.shape[-2:]
    corr = cross_correlation(q, window_desc)
    ww = local_sums(window_desc.float().pow(2).sum(dim=1), h, w)
    qq = q.double().pow(2).sum(dim=(1, 2, 3)).view(-1, 1, 1, 1)
    ssd = (ww[None] + qq - 2.0 * corr.double()).clamp_min(0.0).float()
    return ssd[0] if single else ssd


def ncc_fft(query: Tensor, window: Tensor, eps: float = 1e-6) -> Tensor:
    """Zero-normalised cross-correlation of a query with every same-size part of each window.

    Means and norms are taken over the whole template (all channels together).

    Args:
        query: (C, h, w) intensities of one query, or (Q, C, h, w) of several.
        window: (B, C, H, W) intensities of the candidate windows.
        eps: floor of the norm product, so flat parts (zero variance) score 0.

    Returns:
        (B, H-h+1, W-w+1) for one query, (Q, B, H-h+1, W-w+1) for several; float32 in [-1, 1],
        higher is better.

    Raises:
        DataError: shapes or channel counts that do not fit.
    """
    q, single = _check(query, window)
    c, h, w = q.shape[1:]
    n = float(c * h * w)
    qz = q.double() - q.double().mean(dim=(1, 2, 3), keepdim=True)
    qn = qz.pow(2).sum(dim=(1, 2, 3)).sqrt().view(-1, 1, 1, 1)
    # the big (B, C, H, W) window stays float32 and is read twice (FFT, per-pixel channel sums); the
    # per-pixel sums are shifted by the window's mean before the float64 box sums (less cancellation)
    w32 = window.float()
    corr = cross_correlation(qz.float(), w32).double()  # sum(w * qz) = sum((w - local mean) * qz)
    p1, p2 = w32.sum(dim=1).double(), w32.square().sum(dim=1).double()  # (B, H, W)
    m = (p1.mean(dim=(1, 2), keepdim=True) / c)  # global mean value of each window
    s1 = local_sums(p1 - c * m, h, w)
    s2 = local_sums(p2 - 2.0 * m * p1 + c * m.square(), h, w)
    wn = (s2 - s1.square() / n).clamp_min(0.0).sqrt()[None]
    ncc = (corr / (qn * wn).clamp_min(eps)).clamp(-1.0, 1.0).float()
    return ncc[0] if single else ncc
