"""CFOG: channel features of oriented gradients, a dense descriptor that survives the optical/SAR gap.

Ye et al., "Fast and Robust Matching for Multimodal Remote Sensing Image Registration", IEEE TGRS
57(11), 2019. Per pixel, the image gradient is projected on ``O`` orientations spread over
``[0, 180)`` degrees; each projection's absolute value is one channel (the absolute value makes the
channels invariant to a contrast inversion, common between SAR and optical). The channels are
smoothed in space with a Gaussian and across orientations with ``[1, 2, 1] / 4`` (circularly:
orientation wraps at 180 degrees), then each pixel's ``O``-vector is L2-normalised. Matching is the
sum of squared differences (:func:`~sarbridge.tasks.geo.register.matching.match_ssd_fft`).

Multi-band images (optical RGB, SAR VV + VH) contribute the mean of their bands' oriented channels.
Near the image edge the smoothing kernels run off the image: :func:`cfog_border` says how many
pixels to ignore on each side (registration crops them from both the query and the window).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from sarbridge.core.errors import DataError

__all__ = ["CFOG_DEFAULTS", "cfog", "cfog_border", "gaussian_blur"]

#: default parameters: 9 orientations as in Ye et al.; smoothing widths and the norm floor chosen on
#: the real 10 m Sentinel-1/2 pairs of benchmarks/geo_registration.py (see docs/geo.md).
CFOG_DEFAULTS: dict[str, float] = {"orientations": 9, "sigma": 1.5, "pre_sigma": 1.0, "floor": 0.6}


def _radius(sigma: float) -> int:
    """Half-width of the Gaussian kernel used for ``sigma`` (3 sigma, at least 1; 0 for no blur)."""
    return 0 if sigma <= 0 else max(1, math.ceil(3.0 * sigma))


def cfog_border(sigma: float = CFOG_DEFAULTS["sigma"], pre_sigma: float = CFOG_DEFAULTS["pre_sigma"]) -> int:
    """Pixels on each side of an image whose CFOG descriptor sees beyond the image.

    Args:
        sigma: spatial smoothing of the oriented channels.
        pre_sigma: smoothing of the image before the gradient.

    Returns:
        The border width: pre-smoothing radius + 1 (central-difference gradient) + smoothing radius.
    """
    return _radius(pre_sigma) + 1 + _radius(sigma)


def _gaussian_1d(sigma: float, device: torch.device) -> Tensor:
    r = _radius(sigma)
    x = torch.arange(-r, r + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of every channel of ``x`` (B, C, H, W), computed with FFTs (circular at the edges).

    The kernel is the sampled Gaussian truncated at 3 sigma (:func:`cfog_border` counts its radius),
    applied as a product in the frequency domain: several times faster on the CPU than a spatial
    convolution with 9 channels. The ``radius`` pixels along each edge mix with the opposite edge;
    CFOG ignores them (they are inside its border).

    Args:
        x: float tensor (B, C, H, W).
        sigma: standard deviation in pixels; ``<= 0`` returns ``x`` unchanged.

    Returns:
        The blurred tensor, same shape, dtype and device.
    """
    if sigma <= 0:
        return x
    h, w = x.shape[-2:]
    k = _gaussian_1d(sigma, x.device)
    r = k.numel() // 2
    if 2 * r + 1 > min(h, w):
        raise DataError(f"image of {h} x {w} px is smaller than the blur kernel ({2 * r + 1} px)",
                        "use a larger image or a smaller sigma")
    kh = torch.zeros(h, device=x.device)
    kw = torch.zeros(w, device=x.device)
    kh[: r + 1], kh[h - r :] = k[r:], k[:r]
    kw[: r + 1], kw[w - r :] = k[r:], k[:r]
    transfer = torch.fft.fft(kh)[:, None] * torch.fft.rfft(kw)[None, :]
    return torch.fft.irfft2(torch.fft.rfft2(x.float()).mul_(transfer), s=(h, w)).to(x.dtype)


def cfog(image: Tensor, orientations: int = 9, sigma: float = CFOG_DEFAULTS["sigma"],
         pre_sigma: float = CFOG_DEFAULTS["pre_sigma"], floor: float = CFOG_DEFAULTS["floor"]) -> Tensor:
    """Dense CFOG descriptor of a batch of images.

    Args:
        image: (B, C, H, W) float tensor (optical reflectance or grey values, SAR in dB); the bands'
            oriented channels are averaged, so any band count works.
        orientations: number of gradient orientations ``O`` over [0, 180) degrees (at least 2).
        sigma: Gaussian smoothing of the oriented channels, in pixels.
        pre_sigma: Gaussian smoothing of the image before the gradient (tames SAR speckle); 0 for none.
        floor: added to each pixel's descriptor norm before dividing, as a fraction of the image's mean
            norm: flat areas (no structure, only noise or speckle) keep short vectors instead of
            unit-length noise, and weigh less in the match. 0 gives Ye et al.'s plain normalisation.

    Returns:
        (B, O, H, W) float32 descriptor on the input's device; pixels within :func:`cfog_border` of
        the edge are not meaningful.

    Raises:
        DataError: ``image`` is not 4-D, ``orientations < 2`` or the image holds NaN/inf.
    """
    if image.ndim != 4:
        raise DataError(f"cfog expects a (B, C, H, W) tensor, got shape {tuple(image.shape)}",
                        "add the batch and band axes, e.g. image[None, None] for one (H, W) image")
    if orientations < 2:
        raise DataError(f"cfog needs at least 2 orientations, got {orientations}", "use the default, 9")
    if not torch.isfinite(image).all():
        raise DataError("cfog input holds NaN or inf values", "fill or crop no-data pixels before registering")
    x = gaussian_blur(image.float(), pre_sigma)
    b, c, h, w = x.shape
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    grad = torch.stack([0.5 * (xp[..., 1:-1, 2:] - xp[..., 1:-1, :-2]),  # d/dx (columns)
                        0.5 * (xp[..., 2:, 1:-1] - xp[..., :-2, 1:-1])], dim=2)  # d/dy (rows): (B, C, 2, H, W)
    theta = torch.arange(orientations, dtype=torch.float32, device=x.device) * (math.pi / orientations)
    dirs = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1) / c  # (O, 2); 1/c: mean over bands
    ch = torch.einsum("ok,bckhw->bcohw", dirs, grad).abs_()
    ch = ch[:, 0] if c == 1 else ch.sum(dim=1)  # (B, O, H, W)
    # smoothing across orientations ([1, 2, 1] / 4, circular) commutes with the spatial blur: one matmul
    eye = torch.eye(orientations, device=x.device)
    mix = 0.5 * eye + 0.25 * (torch.roll(eye, 1, dims=1) + torch.roll(eye, -1, dims=1))
    ch = gaussian_blur(torch.einsum("po,bohw->bphw", mix, ch), sigma)
    norm = ch.square().sum(dim=1, keepdim=True).sqrt_()  # much faster than linalg.vector_norm over dim 1
    return ch.div_(norm.add_(floor * norm.mean(dim=(1, 2, 3), keepdim=True) + 1e-12))
