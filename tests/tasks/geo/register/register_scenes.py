"""Synthetic scenes for the registration tests: an optical-like map and a SAR-like view of it."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def optical_scene(size: int = 192, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A grey optical-like map: Voronoi fields of random brightness, a few bright roads, slight blur.

    Returns:
        ``(image, labels)``: the float32 image in [0, 1] and the field index of every pixel.
    """
    rng = np.random.default_rng(seed)
    n = 40
    centres = rng.uniform(0, size, (n, 2))
    rr, cc = np.mgrid[0:size, 0:size]
    d = (rr[..., None] - centres[:, 0]) ** 2 + (cc[..., None] - centres[:, 1]) ** 2
    labels = d.argmin(-1)
    img = rng.uniform(0.1, 0.9, n)[labels]
    for _ in range(4):  # straight roads
        a, b = rng.uniform(-1, 1, 2)
        dist = np.abs(a * (rr - size / 2) + b * (cc - size / 2) + rng.uniform(-size / 3, size / 3)) / np.hypot(a, b)
        img = np.where(dist < 1.2, 1.0, img)
    img = gaussian_filter(img, 0.7) + 0.01 * rng.standard_normal((size, size))
    return img.astype(np.float32), labels


def sar_like(optical: np.ndarray, labels: np.ndarray, seed: int = 1, looks: int = 16) -> np.ndarray:
    """A SAR-like view in dB: per-field radiometry with inverted contrast on half of the fields, speckle."""
    rng = np.random.default_rng(seed)
    n = int(labels.max()) + 1
    flip = rng.random(n) < 0.5
    gain = rng.uniform(0.5, 1.5, n)
    refl = np.where(flip[labels], 1.0 - optical, optical) * gain[labels] + 0.05
    speckle = rng.gamma(looks, 1.0 / looks, optical.shape)
    return (10.0 * np.log10(refl * speckle)).astype(np.float32)
