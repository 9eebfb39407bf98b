"""SAR intensity rendering of a ship: sea clutter, hull and block returns, point scatterers, speckle."""

from __future__ import annotations

import math

import numpy as np

from sarbridge.data.synthetic.pose import Pose, _ship_frame, sample_pose
from sarbridge.data.synthetic.raster import _coverage, _hull_sdist, _rect_sdist, _smooth_noise
from sarbridge.data.synthetic.spec import ShipSpec

__all__ = ["apply_speckle", "render_sar"]

# Superstructure kinds and their SAR distributed return (linear intensity) before per-image gain.
_SAR_BLOCK_LEVEL = {"deckhouse": 0.9, "bridge": 1.1, "wing": 1.0, "funnel": 1.0, "forecastle": 0.5,
                    "crane": 1.2, "jib": 0.8, "mast": 1.0, "equipment": 0.6,
                    "hatch": 0.25, "container": 0.7, "pipe": 0.5, "manifold": 0.6}


def apply_speckle(intensity: np.ndarray, looks: float | None, rng: np.random.Generator) -> np.ndarray:
    """Multiply an intensity image by fully developed speckle, Gamma(looks, 1/looks) (mean 1).

    Args:
        intensity: non-negative linear intensity.
        looks: equivalent number of looks; ``None`` or ``0`` returns the input unchanged.
        rng: source of randomness.

    Returns:
        The speckled intensity (float32), whose equivalent number of looks ``mean^2/var`` over a
        homogeneous region is ``looks``.
    """
    intensity = np.asarray(intensity, dtype=np.float32)
    if not looks:
        return intensity
    if looks < 0:
        raise ValueError(f"looks must be positive or None, got {looks}")
    return (intensity * rng.gamma(float(looks), 1.0 / float(looks), size=intensity.shape)).astype(np.float32)


def render_sar(
    spec: ShipSpec,
    rng: np.random.Generator,
    gsd_m: float = 1.0,
    looks: float | None = 4,
    pose: Pose | None = None,
    heading_jitter_deg: float = 4.0,
    look_direction_deg: float | None = None,
    incidence_deg: float | None = None,
    saturation: float | None = 2.35,
) -> np.ndarray:
    """Render a SAR intensity chip of a ship.

    Dark sea clutter with low-frequency texture; hull and deck as a moderately bright region with
    a double-bounce line along the hull side facing the sensor; superstructure and cargo
    footprints brighter; the ship's dominant scatterers (with per-image fading, dropout and
    layover toward the sensor) as 2-D sinc^2 point responses whose sidelobes draw a cross along
    range and azimuth; then multiplicative speckle and a soft saturation ``s * tanh(I / s)``
    (linear for the dark sea) that keeps values in ``[0, s]`` like the real chips.

    Speckle is drawn last, so the same ``rng`` state with ``looks=None`` renders the identical
    noise-free scene.

    Args:
        spec: the ship.
        rng: per-image randomness.
        gsd_m: metres per pixel.
        looks: speckle looks; ``None`` or ``0`` for a speckle-free image.
        pose: framing (share it with :func:`render_optical` for a same-pose pair).
        heading_jitter_deg: heading jitter used when ``pose`` is None.
        look_direction_deg: range direction in the chip, clockwise from image-up; random if None.
        incidence_deg: incidence angle (layover); random in [30, 50] when None.
        saturation: soft ceiling ``s``; None keeps raw linear intensity.

    Returns:
        float32 array ``(H, W)``, finite and non-negative.
    """
    if pose is None:
        pose = sample_pose(spec, rng, heading_jitter_deg)
    if look_direction_deg is None:
        look_direction_deg = float(rng.uniform(0.0, 360.0))
    if incidence_deg is None:
        incidence_deg = float(rng.uniform(30.0, 50.0))
    u, v, xx, yy = _ship_frame(spec, pose, gsd_m)
    shape = u.shape
    t = math.radians(pose.rotation_deg)
    bow_xy = np.array([math.sin(t), -math.cos(t)])
    stb_xy = np.array([math.cos(t), math.sin(t)])
    la = math.radians(look_direction_deg)
    rng_xy = np.array([math.sin(la), -math.cos(la)])  # range direction (away from the sensor)
    az_xy = np.array([-rng_xy[1], rng_xy[0]])

    # --- distributed scene ---------------------------------------------------------------------
    clutter = float(np.exp(rng.uniform(np.log(0.004), np.log(0.025))))
    texture = np.exp(0.35 * _smooth_noise(rng, shape, max(3.0, 25.0 / gsd_m)))
    scene = clutter * texture
    sd_hull = _hull_sdist(spec, u, v)
    hull_cov = _coverage(sd_hull, gsd_m)
    hull_gain = float(rng.lognormal(0.0, 0.35))
    deck_tex = np.exp(0.5 * _smooth_noise(rng, shape, max(2.0, 5.0 / gsd_m)))
    hull_level = spec.sar_hull_level * hull_gain * deck_tex
    scene = scene + hull_cov * (hull_level - scene)
    # double bounce along the hull side facing the sensor
    side = np.sign(v)
    normal_dot = side * float(stb_xy @ (-rng_xy))
    edge = np.clip(1.0 - np.abs(sd_hull - 0.5) / max(1.0, gsd_m), 0.0, 1.0) * (normal_dot > 0.2)
    scene += edge * float(rng.uniform(0.5, 2.0)) * np.clip(normal_dot, 0, 1)
    edge_gain = float(rng.lognormal(0.0, 0.4))
    for b in spec.blocks:
        sd_b = np.minimum(_rect_sdist(u, v, b), sd_hull)
        cov = _coverage(sd_b, gsd_m)
        lvl = _SAR_BLOCK_LEVEL.get(b.kind, 0.5) * float(rng.lognormal(0.0, 0.3))
        scene = scene + cov * np.maximum(lvl * deck_tex - scene, 0.0) * 0.6
        if b.kind not in ("mast", "crane", "jib", "equipment"):  # wall/deck dihedral outline
            scene += np.clip(1.0 - np.abs(sd_b) / max(0.7, 0.7 * gsd_m), 0.0, 1.0) * edge_gain * 0.8 * deck_tex

    # --- point scatterers ----------------------------------------------------------------------
    res_m = float(rng.uniform(1.0, 2.0)) * max(1.0, gsd_m)
    cot_inc = 1.0 / math.tan(math.radians(incidence_deg))
    sc = spec.scatterers
    su = np.array([s.u_m for s in sc])
    sv = np.array([s.v_m for s in sc])
    sz = np.array([s.z_m for s in sc])
    amp = np.array([s.rcs for s in sc]) * rng.lognormal(0.0, 0.6, size=len(sc)) * float(rng.lognormal(0.0, 0.3))
    amp *= rng.random(len(sc)) > 0.15  # fading / aspect dropout
    jit = rng.normal(0.0, 0.3, size=(len(sc), 2))
    # ship-frame -> chip-frame metres, then layover toward the sensor
    px = su * bow_xy[0] + sv * stb_xy[0] + pose.offset_x_m + jit[:, 0] - sz * cot_inc * rng_xy[0]
    py = su * bow_xy[1] + sv * stb_xy[1] + pose.offset_y_m + jit[:, 1] - sz * cot_inc * rng_xy[1]
    hgt, wid = shape
    xs = (np.arange(wid) + 0.5 - wid / 2.0) * gsd_m
    ys = (np.arange(hgt) + 0.5 - hgt / 2.0) * gsd_m
    points = np.zeros(shape, dtype=np.float64)
    floor = 0.1 * clutter  # stop drawing a response where it falls below this level
    for i in np.flatnonzero(amp > 0):
        # sinc^2 tails fall as 1/(pi x/res)^2: radius beyond which the response < floor
        rad = res_m / math.pi * math.sqrt(amp[i] / floor)
        c0 = max(0, int((px[i] - rad) / gsd_m + wid / 2.0))
        c1 = min(wid, int(math.ceil((px[i] + rad) / gsd_m + wid / 2.0)) + 1)
        r0 = max(0, int((py[i] - rad) / gsd_m + hgt / 2.0))
        r1 = min(hgt, int(math.ceil((py[i] + rad) / gsd_m + hgt / 2.0)) + 1)
        if c0 >= c1 or r0 >= r1:
            continue
        dxg = xs[None, c0:c1] - px[i]
        dyg = ys[r0:r1, None] - py[i]
        dr = dxg * rng_xy[0] + dyg * rng_xy[1]
        da = dxg * az_xy[0] + dyg * az_xy[1]
        points[r0:r1, c0:c1] += amp[i] * np.sinc(dr / res_m) ** 2 * np.sinc(da / res_m) ** 2

    intensity = (scene + points).astype(np.float32)
    intensity = apply_speckle(intensity, looks, rng)
    if saturation:
        intensity = (saturation * np.tanh(intensity / saturation)).astype(np.float32)
    return np.maximum(intensity, 0.0).astype(np.float32)
