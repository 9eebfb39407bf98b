"""Registration inputs: checked (C, H, W) float32 tensors, SAR in dB, optical band combinations.

Registration compares *structure*, so the optical side may be a grey image or any band
combination and the SAR side should be in decibels (log-backscatter makes multiplicative speckle
additive and edges between dark and bright areas comparable to optical ones).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from sarbridge.core.errors import DataError

__all__ = ["MAX_BANDS", "as_image", "optical_intensity", "sar_to_db"]

#: the most bands an intensity image may have (Sentinel-2 has 13); more means a wrong axis order.
MAX_BANDS = 16


def as_image(image: np.ndarray | Tensor, name: str, device: torch.device | str | None = None,
             max_bands: int | None = MAX_BANDS) -> Tensor:
    """A checked (C, H, W) float32 tensor from an (H, W) or (C, H, W) array or tensor.

    Args:
        image: the pixels; (H, W) is one band.
        name: what the image is ("query", "window 2"), for error messages.
        device: where the tensor goes; default the tensor's own device (CPU for arrays).
        max_bands: the most bands allowed (``None``: any, for learned feature maps).

    Returns:
        (C, H, W) float32 tensor.

    Raises:
        DataError: wrong number of axes, no bands or too many (a channels-last array), an empty
            image, or NaN/inf values.
    """
    t = image if isinstance(image, Tensor) else torch.from_numpy(np.ascontiguousarray(image))
    t = t.to(device=device if device is not None else t.device, dtype=torch.float32)
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise DataError(f"{name} must be (H, W) or (C, H, W), got shape {tuple(t.shape)}",
                        "squeeze extra axes or register one image at a time")
    c, h, w = t.shape
    if c == 0 or h == 0 or w == 0:
        raise DataError(f"{name} is empty (shape {tuple(t.shape)})", "check the crop that produced it")
    if max_bands is not None and c > max_bands:
        raise DataError(f"{name} has {c} bands, more than the {max_bands} an intensity descriptor can use "
                        f"(shape {tuple(t.shape)})",
                        "pass (C, H, W); a channels-last (H, W, C) array needs array.transpose(2, 0, 1)")
    bad = int((~torch.isfinite(t)).sum())
    if bad:
        raise DataError(f"{name} holds {bad} NaN or inf pixel values",
                        "fill no-data pixels (e.g. with the median) or pick a window without them")
    return t


def sar_to_db(backscatter: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    """Linear SAR backscatter (sigma0 / gamma0) to decibels, ``10 log10(max(x, floor))``.

    Args:
        backscatter: linear intensities, any shape.
        floor: smallest linear value kept (-40 dB by default), so zeros stay finite.

    Returns:
        float32 array in dB.

    Raises:
        DataError: the array has negative values, i.e. it is probably already in dB.
    """
    x = np.asarray(backscatter, dtype=np.float64)
    if np.nanmin(x) < 0:
        raise DataError("SAR backscatter has negative values, so it is already in dB (or not backscatter)",
                        "use the values as they are; only convert linear intensities")
    return (10.0 * np.log10(np.maximum(x, floor))).astype(np.float32)


def optical_intensity(bands: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """One-band intensity from a (C, H, W) optical image: a weighted band combination.

    Args:
        bands: (C, H, W) or (H, W) optical pixels (any dtype).
        weights: one weight per band; default the mean of the bands (for RGB, use
            ``(0.299, 0.587, 0.114)`` for luminance).

    Returns:
        (H, W) float32.

    Raises:
        DataError: the number of weights differs from the number of bands.
    """
    x = np.asarray(bands, dtype=np.float32)
    if x.ndim == 2:
        return x
    if weights is None:
        return x.mean(axis=0)
    wt = np.asarray(weights, dtype=np.float32)
    if wt.shape != (x.shape[0],):
        raise DataError(f"{len(wt)} band weights for an image of {x.shape[0]} bands",
                        "give one weight per band, in band order")
    return np.tensordot(wt, x, axes=1).astype(np.float32)
