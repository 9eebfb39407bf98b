"""SAR intensity preprocessing: from 32-bit float backscatter to 8-bit, 3-channel images.

Two normalisations are provided and selected by name (``data.sar_preprocess``):

* ``max`` (TransOSS): ``255 * x / max(x)``.
* ``percentile`` (MOS MCRL denoising): values below the ``alpha``-th percentile are dropped
  (p_min), p_max = max, ``255 * (x - p_min) / (p_max - p_min + eps)`` clipped to [0, 255].
* ``db``: log intensity ``10 log10(x)``, clipped to its ``alpha``-th and ``(100 - alpha)``-th
  percentiles and stretched to [0, 255] (the usual display of scene SAR, where a few very bright
  double-bounce returns would otherwise leave the rest of the image black).

New methods register with :func:`register_sar_preprocess`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sarbridge.core.errors import ConfigError

EPS = 1e-8
SarPreprocess = Callable[..., np.ndarray]
_REGISTRY: dict[str, SarPreprocess] = {}


def register_sar_preprocess(name: str) -> Callable[[SarPreprocess], SarPreprocess]:
    """Decorator that makes a preprocessing function selectable by ``name``."""

    def deco(fn: SarPreprocess) -> SarPreprocess:
        _REGISTRY[name] = fn
        return fn

    return deco


def _single_band(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.mean(axis=-1) if x.ndim == 3 else x


def _to_uint8_rgb(x: np.ndarray) -> np.ndarray:
    # rounded (the reference code truncates with astype(uint8), which maps the peak to 254)
    x8 = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return np.repeat(x8[..., None], 3, axis=-1)


@register_sar_preprocess("max")
def max_scale(x: np.ndarray, **_: float) -> np.ndarray:
    """TransOSS scaling: divide by the maximum, map to [0, 255], replicate to 3 channels."""
    x = _single_band(x)
    peak = float(x.max())
    return _to_uint8_rgb(255.0 * x / peak if peak > 0 else np.zeros_like(x))


@register_sar_preprocess("percentile")
def percentile_scale(x: np.ndarray, alpha: float = 5.0, **_: float) -> np.ndarray:
    """MOS denoising: drop the lowest ``alpha`` % of values, rescale the rest to [0, 255]."""
    x = _single_band(x)
    p_min = float(np.percentile(x, alpha))
    p_max = float(x.max())
    return _to_uint8_rgb(255.0 * (x - p_min) / (p_max - p_min + EPS))


@register_sar_preprocess("db")
def db_scale(x: np.ndarray, alpha: float = 2.0, **_: float) -> np.ndarray:
    """Log intensity (dB), clipped to the ``[alpha, 100 - alpha]`` percentiles, rescaled to [0, 255]."""
    x = _single_band(x)
    positive = x[x > 0]
    floor = float(positive.min()) if positive.size else 1.0
    db = 10.0 * np.log10(np.maximum(x, floor))
    lo, hi = (float(v) for v in np.percentile(db, [alpha, 100.0 - alpha]))
    return _to_uint8_rgb(np.clip(255.0 * (db - lo) / max(hi - lo, EPS), 0.0, 255.0))


def available_sar_preprocess() -> list[str]:
    """Names accepted by :func:`get_sar_preprocess`."""
    return sorted(_REGISTRY)


def get_sar_preprocess(name: str) -> SarPreprocess:
    """Look up a SAR preprocessing function by name."""
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown SAR preprocessing '{name}'", f"use one of {', '.join(available_sar_preprocess())}"
        )
    return _REGISTRY[name]


def optical_to_uint8_rgb(x: np.ndarray) -> np.ndarray:
    """Bring an optical image to uint8 (H, W, 3): grey is replicated, >8-bit is max-scaled."""
    arr = np.asarray(x)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.shape[-1] > 3:
        arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return arr
    arr = arr.astype(np.float64)
    peak = float(arr.max())
    is_unit_float = np.issubdtype(np.asarray(x).dtype, np.floating) and peak <= 1.0
    scale = 1.0 if is_unit_float else max(peak, EPS)
    return np.clip(np.rint(255.0 * arr / scale), 0, 255).astype(np.uint8)
