"""Classical adaptive speckle filters for SAR intensity images, vectorised in torch.

Four filters, selected by name through :func:`despeckle` (``available_despeckle()`` lists them):

* ``lee``       -- Lee (1980, 1981), local linear MMSE with the first-order multiplicative model;
* ``kuan``      -- Kuan et al. (1985), the exact LLMMSE solution of the multiplicative model;
* ``frost``     -- Frost et al. (1982), an adaptive exponentially weighted mean;
* ``gamma_map`` -- Gamma-MAP of Lopes, Nezry, Touzi & Laur (1990), with its three regimes.

Conventions shared by all filters (I = observed intensity, window = an odd square of n = w^2 pixels):

* local statistics over the window centred on each pixel, computed with box filters
  (``avg_pool2d``) on a reflect-padded image (replicate padding when the image is smaller than the
  half window): ``m = mean(I)``, ``v = mean(I^2) - m^2`` (population variance, clamped at 0);
* ``Ci^2 = v / m^2``, the local squared coefficient of variation (0 where ``m = 0``, i.e. an
  all-zero window, which is then treated as homogeneous);
* ``Cu^2 = 1 / L``, the squared coefficient of variation of fully developed speckle in an
  L-look intensity image. ``looks=None`` estimates L per image with :func:`estimate_looks`.

Inputs are linear intensities: a tensor ``(B, 1, H, W)``, ``(B, H, W)`` or ``(H, W)``, or a NumPy
array of those shapes. The result has the same kind, shape and device, as float32. Statistics and
filters are computed in float64 (``mean(I^2) - m^2`` loses digits in float32 on SAR's dynamic range)
and run on batches on CPU or GPU alike.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sarbridge.core.errors import ConfigError, DataError

__all__ = [
    "available_despeckle",
    "despeckle",
    "estimate_looks",
    "frost",
    "gamma_map",
    "get_despeckle",
    "kuan",
    "lee",
    "local_stats",
    "register_despeckle",
]

Looks = float | Sequence[float] | np.ndarray | torch.Tensor | None
DespeckleFn = Callable[..., Any]
_REGISTRY: dict[str, DespeckleFn] = {}
_TINY = 1e-30


# --------------------------------------------------------------------------------------------------
# input / output handling


def _to_batch(x: Any) -> tuple[torch.Tensor, Callable[[torch.Tensor], Any]]:
    """Validate ``x`` and return it as float64 ``(B, 1, H, W)`` plus a function restoring its kind/shape."""
    is_numpy = not isinstance(x, torch.Tensor)
    if is_numpy:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # ragged lists and the like
            raise DataError(f"despeckle input could not be read as an array ({exc})") from None
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise DataError(f"despeckle input has dtype {arr.dtype}", "pass a numeric intensity image")
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64))
    else:
        if x.is_complex():
            raise DataError("despeckle input is complex", "pass intensity |s|^2, not the complex SLC")
        t = x.detach().to(torch.float64)
    shape = tuple(t.shape)
    if t.ndim == 2:
        t = t[None, None]
    elif t.ndim == 3:
        t = t[:, None]
    elif t.ndim == 4:
        if t.shape[1] != 1:
            raise DataError(
                f"despeckle input has shape {shape}: expected one band (B, 1, H, W)",
                "pass a single-band intensity image (average or select the band first)",
            )
    else:
        raise DataError(f"despeckle input has shape {shape}", "pass (H, W), (B, H, W) or (B, 1, H, W)")
    if t.numel() == 0:
        raise DataError(f"despeckle input is empty (shape {shape})", "pass an image with pixels")
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise DataError(f"despeckle input contains {bad} NaN or infinite value(s)", "mask or fill them first")
    if bool((t < 0).any()):
        raise DataError(
            f"despeckle input contains {int((t < 0).sum())} negative value(s) (min {float(t.min()):.4g})",
            "speckle filters expect linear intensity >= 0 (not dB, not a zero-mean normalised image)",
        )

    def restore(out: torch.Tensor) -> Any:
        out = out.to(torch.float32).reshape(shape)
        if is_numpy:
            return out.cpu().numpy()
        return out

    return t, restore


def _check_window(window: int) -> int:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 3 or window % 2 == 0:
        raise ConfigError(f"despeckle window must be an odd integer >= 3, got {window!r}", "use 3, 5, 7, 9 or 11")
    return int(window)


def _pad(t: torch.Tensor, p: int) -> torch.Tensor:
    mode = "reflect" if min(t.shape[-2:]) > p else "replicate"
    return F.pad(t, (p, p, p, p), mode=mode)


def local_stats(t: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Local mean and population variance over a ``window`` x ``window`` box (reflect padding).

    Args:
        t: float tensor ``(B, 1, H, W)``.
        window: odd box size.

    Returns:
        ``(m, v)``, each ``(B, 1, H, W)``: ``m = mean(I)``, ``v = max(mean(I^2) - m^2, 0)``.
    """
    p = window // 2
    tp = _pad(t, p)
    m = F.avg_pool2d(tp, window, stride=1)
    m2 = F.avg_pool2d(tp * tp, window, stride=1)
    return m, (m2 - m * m).clamp_min(0.0)


def _ci2(m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Ci^2 = v / m^2, 0 where the window is all zeros (m = 0)."""
    pos = m > _TINY
    return torch.where(pos, v / torch.where(pos, m * m, torch.ones_like(m)), torch.zeros_like(m))


def estimate_looks(x: Any, window: int = 7, fraction: float = 0.1) -> Any:
    """Estimate the equivalent number of looks of each image from its most homogeneous pixels.

    Speckle estimates need homogeneous areas, and in SAR ship chips most pixels are structure
    (hull, superstructure, sidelobes): the median ``Ci^2`` of all pixels then measures structure and
    underestimates L several-fold. So pixels are first ranked by how homogeneous their neighbourhood
    is -- the coefficient of variation, over a ``window`` box, of a ``window``-box-smoothed copy (the
    smoothing makes the ranking follow scene texture rather than the pixel's own speckle) -- and

    ``L_hat = 1 / median(Ci^2 * n / (n - 1))`` over the ``fraction`` most homogeneous pixels,

    with ``Ci^2`` the local squared coefficient of variation over the ``window`` box (``n = window^2``;
    the factor makes the window variance unbiased). On pure L-look speckle the estimate is about
    5-10 % high; on textured clutter it measures speckle plus the weakest texture present. Pixels with
    a zero local mean are ignored; an image without any (constant or all-zero) gets L = 1e6.

    Args:
        x: intensity image(s), any shape accepted by the filters.
        window: odd box size.
        fraction: share of the pixels, in (0, 1], used for the median.

    Returns:
        A float for one ``(H, W)`` image, else a float64 NumPy array ``(B,)`` (NumPy input) or tensor.
    """
    window = _check_window(window)
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
    t, _ = _to_batch(x)
    L = _estimate_looks_t(t, window, fraction)
    if (x.ndim if isinstance(x, torch.Tensor) else np.ndim(x)) == 2:
        return float(L[0])
    return L if isinstance(x, torch.Tensor) else L.cpu().numpy()


def _estimate_looks_t(t: torch.Tensor, window: int, fraction: float = 0.1) -> torch.Tensor:
    n = window * window
    m, v = local_stats(t, window)
    ci2 = (_ci2(m, v) * (n / (n - 1))).flatten(1)
    ms, vs = local_stats(m, window)  # texture of the box-smoothed copy
    valid = (m > _TINY) & (ms > _TINY)
    score = torch.where(valid, vs.sqrt() / torch.where(valid, ms, torch.ones_like(ms)),
                        torch.full_like(ms, math.inf)).flatten(1)
    k = max(1, int(round(fraction * score.shape[1])))
    idx = score.topk(k, dim=1, largest=False).indices
    sel = torch.where(valid.flatten(1), ci2, torch.full_like(ci2, math.nan)).gather(1, idx)
    med = torch.nanmedian(sel, dim=1).values
    # no valid or no varying pixel: no speckle information, call it very many looks
    med = torch.where(torch.isnan(med) | (med <= 0), torch.full_like(med, 1e-6), med)
    return 1.0 / med


def _looks_tensor(looks: Looks, t: torch.Tensor, window: int) -> torch.Tensor:
    """Per-image L as a ``(B, 1, 1, 1)`` float64 tensor."""
    b = t.shape[0]
    if looks is None:
        L = _estimate_looks_t(t, window)
    else:
        L = torch.as_tensor(np.asarray(looks.cpu() if isinstance(looks, torch.Tensor) else looks,
                                       dtype=np.float64)).to(t.device).flatten()
        if L.numel() == 1:
            L = L.expand(b)
        if L.numel() != b:
            raise ConfigError(f"looks has {L.numel()} values for a batch of {b} images",
                              "pass one number, or one per image")
        if not bool(torch.isfinite(L).all()) or bool((L <= 0).any()):
            raise ConfigError(f"looks must be positive and finite, got {looks!r}", "e.g. --looks 1 or 4")
    return L.reshape(b, 1, 1, 1)


# --------------------------------------------------------------------------------------------------
# registry


def register_despeckle(name: str) -> Callable[[DespeckleFn], DespeckleFn]:
    """Decorator that makes a speckle filter selectable by ``name`` in :func:`despeckle`."""

    def deco(fn: DespeckleFn) -> DespeckleFn:
        _REGISTRY[name] = fn
        return fn

    return deco


def available_despeckle() -> list[str]:
    """Names accepted by :func:`despeckle` and :func:`get_despeckle`."""
    return sorted(_REGISTRY)


def get_despeckle(name: str) -> DespeckleFn:
    """Look up a speckle filter by name.

    Raises:
        ConfigError: ``name`` is not registered (the message lists the choices).
    """
    if name not in _REGISTRY:
        raise ConfigError(f"unknown despeckle method '{name}'", f"use one of {', '.join(available_despeckle())}")
    return _REGISTRY[name]


def despeckle(x: Any, method: str = "lee", window: int = 7, looks: Looks = None, **kw: Any) -> Any:
    """Apply the speckle filter ``method`` to ``x``.

    Args:
        x: linear intensity, tensor or NumPy array ``(H, W)``, ``(B, H, W)`` or ``(B, 1, H, W)``.
        method: one of :func:`available_despeckle` (``frost``, ``gamma_map``, ``kuan``, ``lee``).
        window: odd window size (>= 3).
        looks: number of looks L (one number or one per image); ``None`` estimates it per image.
            Frost does not use it.
        **kw: method-specific options (Frost: ``damping``).

    Returns:
        The filtered image, same kind and shape as ``x``, float32.

    Raises:
        ConfigError: unknown method, bad window or looks, or an option the method does not take.
        DataError: ``x`` is not a finite, non-negative single-band image.
    """
    fn = get_despeckle(method)
    params = inspect.signature(fn).parameters
    unknown = sorted(k for k in kw if k not in params or k in ("x", "window", "looks"))
    if unknown:
        opts = [k for k in params if k not in ("x", "window", "looks")]
        raise ConfigError(f"despeckle method '{method}' takes no option {', '.join(unknown)}",
                          f"its options are: {', '.join(opts) or 'none'}")
    if "looks" in params:
        return fn(x, window=window, looks=looks, **kw)
    return fn(x, window=window, **kw)


# --------------------------------------------------------------------------------------------------
# filters


@register_despeckle("lee")
def lee(x: Any, window: int = 7, looks: Looks = None) -> Any:
    """Lee filter (Lee 1980/1981, multiplicative-noise form).

    ``x_hat = m + W (I - m)``,  ``W = max(0, 1 - Cu^2 / Ci^2)``  (W = 0 where Ci = 0),

    with ``m`` the local mean, ``Ci^2 = var / m^2`` the local and ``Cu^2 = 1/L`` the speckle
    squared coefficient of variation. Homogeneous areas (Ci <= Cu) get the local mean, strong
    edges and point targets (Ci >> Cu) keep their value.
    """
    window = _check_window(window)
    t, restore = _to_batch(x)
    cu2 = 1.0 / _looks_tensor(looks, t, window)
    m, v = local_stats(t, window)
    ci2 = _ci2(m, v)
    w = torch.where(ci2 > 0, 1.0 - cu2 / torch.where(ci2 > 0, ci2, torch.ones_like(ci2)), torch.zeros_like(ci2))
    w = w.clamp(0.0, 1.0)
    return restore(m + w * (t - m))


@register_despeckle("kuan")
def kuan(x: Any, window: int = 7, looks: Looks = None) -> Any:
    """Kuan filter (Kuan, Sawchuk, Strand & Chavel 1985).

    ``x_hat = m + W (I - m)``,  ``W = max(0, 1 - Cu^2 / Ci^2) / (1 + Cu^2)``  (W = 0 where Ci = 0).

    The exact LLMMSE weight under ``I = x * u`` with unit-mean speckle ``u``; the numerator is
    clipped at 0 (the signal-variance estimate ``(Ci^2 - Cu^2) m^2 / (1 + Cu^2)`` cannot be
    negative), so homogeneous areas get the local mean. Note W <= 1 / (1 + Cu^2): unlike Lee,
    even an isolated point target is pulled toward the mean by the factor ``1/(1 + Cu^2)``.
    """
    window = _check_window(window)
    t, restore = _to_batch(x)
    cu2 = 1.0 / _looks_tensor(looks, t, window)
    m, v = local_stats(t, window)
    ci2 = _ci2(m, v)
    num = torch.where(ci2 > 0, 1.0 - cu2 / torch.where(ci2 > 0, ci2, torch.ones_like(ci2)), torch.zeros_like(ci2))
    w = num.clamp_min(0.0) / (1.0 + cu2)
    return restore(m + w * (t - m))


@register_despeckle("frost")
def frost(x: Any, window: int = 7, damping: float = 1.0) -> Any:
    """Frost filter (Frost, Stiles, Shanmugan & Holtzman 1982).

    ``x_hat(p) = sum_j w_j I(p + d_j) / sum_j w_j``,  ``w_j = exp(-K * Ci^2(p) * |d_j|)``,

    over the window offsets ``d_j`` (``|d_j|`` the Euclidean distance in pixels from the centre),
    with ``K = damping`` and ``Ci^2 = var / m^2`` the local squared coefficient of variation of the
    window around ``p`` -- not normalised by Cu^2 (the form of Frost's paper and of the usual
    implementations), so the number of looks is not used: flat L-look areas get ``Ci^2 ~ 1/L``
    (strong smoothing at L = 4, weak at L = 1), edges get large ``Ci^2`` and keep the centre value.
    The weights are evaluated per pixel by looping over the ``window^2`` offsets (memory ``O(HW)``).
    """
    window = _check_window(window)
    if not (isinstance(damping, (int, float)) and math.isfinite(damping) and damping >= 0):
        raise ConfigError(f"frost damping must be a finite number >= 0, got {damping!r}", "the default is 1.0")
    t, restore = _to_batch(x)
    m, v = local_stats(t, window)
    b = float(damping) * _ci2(m, v)
    p = window // 2
    tp = _pad(t, p)
    h, w = t.shape[-2:]
    num = torch.zeros_like(t)
    den = torch.zeros_like(t)
    for dy in range(-p, p + 1):
        for dx in range(-p, p + 1):
            wt = torch.exp(-b * math.hypot(dy, dx))
            num += wt * tp[..., p + dy:p + dy + h, p + dx:p + dx + w]
            den += wt
    return restore(num / den)


@register_despeckle("gamma_map")
def gamma_map(x: Any, window: int = 7, looks: Looks = None) -> Any:
    """Gamma-MAP filter (Lopes, Nezry, Touzi & Laur 1990), Gamma-distributed scene prior.

    With ``Cu = 1/sqrt(L)``, ``Cmax = sqrt(2) Cu`` and local ``m``, ``Ci``:

    * ``Ci <= Cu``:          ``x_hat = m``   (homogeneous);
    * ``Ci >= Cmax``:        ``x_hat = I``   (point target / strong edge, kept);
    * ``Cu < Ci < Cmax``:    ``x_hat = ((a - L - 1) m + sqrt(m^2 (a - L - 1)^2 + 4 a L m I)) / (2 a)``,
      ``a = (1 + Cu^2) / (Ci^2 - Cu^2)`` (the scene's Gamma order parameter).
    """
    window = _check_window(window)
    t, restore = _to_batch(x)
    L = _looks_tensor(looks, t, window)
    cu2 = 1.0 / L
    cmax2 = 2.0 * cu2
    m, v = local_stats(t, window)
    ci2 = _ci2(m, v)
    mid = (ci2 > cu2) & (ci2 < cmax2)
    alpha = (1.0 + cu2) / torch.where(mid, ci2 - cu2, torch.ones_like(ci2))
    bb = alpha - L - 1.0
    disc = (m * m * bb * bb + 4.0 * alpha * L * m * t).clamp_min(0.0)
    map_ = (bb * m + torch.sqrt(disc)) / (2.0 * alpha)
    out = torch.where(ci2 <= cu2, m, torch.where(ci2 >= cmax2, t, map_))
    return restore(out)
