"""Optical (RGB) rendering of a ship seen from above, with cast shadows and sensor effects."""

from __future__ import annotations

import math

import numpy as np

from sarbridge.data.synthetic.pose import Pose, _ship_frame, sample_pose
from sarbridge.data.synthetic.raster import _blur, _coverage, _hull_sdist, _rect_sdist, _smooth_noise
from sarbridge.data.synthetic.spec import ShipSpec

__all__ = ["render_optical"]

def _cast_shadow(height: np.ndarray, gsd_m: float, sun_azimuth_deg: float, sun_elevation_deg: float) -> np.ndarray:
    """Boolean shadow mask of a height map lit from the given sun direction (image frame).

    Azimuth is clockwise from image-up. A pixel is shadowed when some point toward the sun
    rises above the sun ray through it; found by marching the height map one pixel at a time.
    """
    hmax = float(height.max())
    hgt, wid = height.shape
    shadow = np.zeros(height.shape, dtype=bool)
    if hmax <= 0:
        return shadow
    rise = gsd_m * math.tan(math.radians(sun_elevation_deg))  # metres of ray rise per pixel
    steps = min(int(math.ceil(hmax / rise)) + 1, 2 * (hgt + wid))
    a = math.radians(sun_azimuth_deg)
    dx, dy = math.sin(a), -math.cos(a)  # toward the sun, in (col, row)
    pad = steps + 1
    hp = np.pad(height, pad, mode="constant")
    for k in range(1, steps + 1):
        oy, ox = int(round(k * dy)), int(round(k * dx))
        shifted = hp[pad + oy: pad + oy + hgt, pad + ox: pad + ox + wid]
        shadow |= shifted > height + k * rise
    return shadow


def render_optical(
    spec: ShipSpec,
    rng: np.random.Generator,
    gsd_m: float = 0.75,
    heading_jitter_deg: float = 4.0,
    sun_azimuth_deg: float | None = None,
    sun_elevation_deg: float | None = None,
    pose: Pose | None = None,
) -> np.ndarray:
    """Render an optical (RGB) chip of a ship seen from above.

    Sea with low-frequency tone, swell and noise; hull side and deck; cargo pattern and
    superstructure drawn in order of height; shadows cast from the block heights for the sun
    direction; per-image illumination gain, colour cast, gamma, haze, blur and sensor noise.

    Args:
        spec: the ship.
        rng: per-image randomness (pose when not given, sun, sea state, illumination, noise).
        gsd_m: metres per pixel; the chip is ``~(length + 2 margin) / gsd`` tall.
        heading_jitter_deg: heading jitter used when ``pose`` is None.
        sun_azimuth_deg: sun azimuth, clockwise from image-up; random when None.
        sun_elevation_deg: sun elevation; random in [30, 70] when None.
        pose: framing to use (share it with :func:`render_sar` for a same-pose pair).

    Returns:
        uint8 array ``(H, W, 3)``.
    """
    if pose is None:
        pose = sample_pose(spec, rng, heading_jitter_deg)
    if sun_azimuth_deg is None:
        sun_azimuth_deg = float(rng.uniform(0.0, 360.0))
    if sun_elevation_deg is None:
        sun_elevation_deg = float(rng.uniform(30.0, 70.0))
    u, v, xx, yy = _ship_frame(spec, pose, gsd_m)
    shape = u.shape

    # --- sea ---------------------------------------------------------------------------------
    sea_rgb = np.array([rng.uniform(6, 26), rng.uniform(18, 46), rng.uniform(38, 82)]) / 255.0
    img = np.empty(shape + (3,), dtype=np.float64)
    tone = 1.0 + 0.12 * _smooth_noise(rng, shape, max(4.0, 40.0 / gsd_m))
    swell = np.zeros(shape)
    for _ in range(3):
        lam = float(rng.uniform(6.0, 40.0))
        th = float(rng.uniform(0.0, 2 * math.pi))
        swell += np.sin((xx * math.cos(th) + yy * math.sin(th)) * (2 * math.pi / lam) + rng.uniform(0, 2 * math.pi))
    sea_state = float(rng.uniform(0.0, 0.12))
    sea = tone * (1.0 + sea_state * swell / 3.0)
    img[:] = sea[..., None] * sea_rgb

    sd_hull = _hull_sdist(spec, u, v)
    # foam / bow wave hugging the hull on some images
    foam_strength = float(rng.uniform(0.0, 0.35)) if rng.random() < 0.5 else 0.0
    if foam_strength > 0:
        near = np.clip(1.0 + sd_hull / 2.5, 0.0, 1.0) * (sd_hull < 0)
        bowness = np.clip((u / (spec.length_m / 2.0)) * 1.5 - 0.3, 0.2, 1.0)
        streaks = np.clip(0.6 + 0.5 * _smooth_noise(rng, shape, max(2.0, 3.0 / gsd_m)), 0, 1)
        foam = foam_strength * near * bowness * streaks
        img += foam[..., None] * (np.array([0.85, 0.9, 0.92]) - img)

    # --- hull and deck -------------------------------------------------------------------------
    hull_cov = _coverage(sd_hull, gsd_m)
    deck_cov = _coverage(sd_hull - spec.rim_m, gsd_m)
    hull_c = np.array(spec.hull_colour) / 255.0
    deck_c = np.array(spec.deck_colour) / 255.0
    img += hull_cov[..., None] * (hull_c - img)
    deck_tex = 1.0 + 0.05 * _smooth_noise(rng, shape, max(2.0, 6.0 / gsd_m))
    img += deck_cov[..., None] * (deck_c * deck_tex[..., None] - img)
    height = np.where(sd_hull > -0.5 * gsd_m, spec.freeboard_m, 0.0)

    # --- blocks (cargo and superstructure), lowest first -------------------------------------
    for b in sorted(spec.blocks, key=lambda b: b.height_m):
        sd = np.minimum(_rect_sdist(u, v, b), sd_hull - 0.2)
        if b.kind == "mast":  # poles: at least one pixel wide
            sd = np.maximum(sd, np.where(np.hypot(u - b.u_m, v - b.v_m) < 0.5 * gsd_m, 0.5 * gsd_m, sd))
        cov = _coverage(sd, gsd_m)
        if not cov.any():
            continue
        if b.stripes:
            n = len(b.stripes)
            idx = np.clip(((v - (b.v_m - b.width_m / 2.0)) / b.width_m * n).astype(int), 0, n - 1)
            col = (np.array(b.stripes, dtype=np.float64) / 255.0)[idx]
            if b.kind == "container":  # thin dark gaps between rows and at bay ends
                frac = (v - (b.v_m - b.width_m / 2.0)) / b.width_m * n
                gap = (np.abs(frac - np.round(frac)) * (b.width_m / n) < 0.12 * max(gsd_m, 1.0))
                col = np.where(gap[..., None], col * 0.55, col)
        else:
            col = np.broadcast_to(np.array(b.colour, dtype=np.float64) / 255.0, shape + (3,))
        if b.kind in ("hatch", "container"):  # darker coaming rim
            rim = _coverage(sd - 0.6, gsd_m)
            col = col * (0.7 + 0.3 * rim)[..., None]
        img += cov[..., None] * (col - img)
        height = np.where(sd > -0.5 * gsd_m, np.maximum(height, spec.freeboard_m + b.height_m), height)

    # --- shadows --------------------------------------------------------------------------------
    shadow = _cast_shadow(height, gsd_m, sun_azimuth_deg, sun_elevation_deg).astype(np.float64)
    shadow = _blur(shadow, 0.5)
    dark = float(rng.uniform(0.35, 0.55))
    img *= (1.0 - (1.0 - dark) * shadow)[..., None] * (1.0 + np.array([-0.03, 0.0, 0.06]) * shadow[..., None])

    # --- illumination and sensor -------------------------------------------------------------
    gain = float(rng.uniform(0.75, 1.3))
    cast = rng.uniform(0.9, 1.1, size=3)
    gamma = float(rng.uniform(0.8, 1.15))
    haze = rng.uniform(0.0, 0.06) * np.array([0.8, 0.9, 1.0])
    img = np.clip(img * gain * cast, 0.0, 1.0) ** gamma + haze
    img = _blur(img, float(rng.uniform(0.3, 1.0)) * 0.75 / max(gsd_m, 0.25))
    img += rng.normal(0.0, float(rng.uniform(0.003, 0.012)), size=img.shape)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
