"""Raster helpers shared by the optical and SAR renderers: signed distances, coverage, noise, blur."""

from __future__ import annotations

import math

import numpy as np

from sarbridge.data.synthetic.spec import Block, ShipSpec, _half_width


def _hull_sdist(spec: ShipSpec, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Approximate signed distance to the hull outline in metres (positive inside)."""
    half_l = spec.length_m / 2.0
    return np.minimum(_half_width(spec, u) - np.abs(v), np.minimum(half_l - u, u + half_l))


def _rect_sdist(u: np.ndarray, v: np.ndarray, b: Block) -> np.ndarray:
    return np.minimum(b.length_m / 2.0 - np.abs(u - b.u_m), b.width_m / 2.0 - np.abs(v - b.v_m))


def _coverage(sd: np.ndarray, gsd_m: float) -> np.ndarray:
    return np.clip(sd / gsd_m + 0.5, 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell_px: float) -> np.ndarray:
    """Zero-mean, unit-ish low-frequency noise by bilinear upsampling of a coarse random grid."""
    h, w = shape
    gh, gw = max(2, int(math.ceil(h / cell_px)) + 1), max(2, int(math.ceil(w / cell_px)) + 1)
    grid = rng.standard_normal((gh, gw))
    ys = np.linspace(0.0, gh - 1.0, h)
    xs = np.linspace(0.0, gw - 1.0, w)
    y0 = np.clip(np.floor(ys).astype(int), 0, gh - 2)
    x0 = np.clip(np.floor(xs).astype(int), 0, gw - 2)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    g00 = grid[y0][:, x0]
    g01 = grid[y0][:, x0 + 1]
    g10 = grid[y0 + 1][:, x0]
    g11 = grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fy) * (1 - fx) + g01 * (1 - fy) * fx + g10 * fy * (1 - fx) + g11 * fy * fx)


def _blur(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """Separable Gaussian blur on the first two axes (edge-replicating), via shifted sums."""
    if sigma_px <= 0.05:
        return img
    r = max(1, int(math.ceil(2.5 * sigma_px)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_px) ** 2)
    k /= k.sum()
    h, w = img.shape[:2]
    pad = [(r, r), (0, 0)] + [(0, 0)] * (img.ndim - 2)
    p = np.pad(img, pad, mode="edge")
    out = sum(k[i] * p[i:i + h] for i in range(2 * r + 1))
    pad = [(0, 0), (r, r)] + [(0, 0)] * (img.ndim - 2)
    p = np.pad(out, pad, mode="edge")
    return sum(k[i] * p[:, i:i + w] for i in range(2 * r + 1))
