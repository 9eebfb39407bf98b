"""Per-image framing of a ship in its chip, the chip extent and the pixel-to-ship-frame mapping.

Both renderers map pixel centres to metres with their own GSD over the same physical chip
extent, so an optical and a SAR image rendered from the same :class:`Pose` cover exactly the
same ground (up to the rounding of the chip size to whole pixels). Image rows grow downward; an
upright ship has its bow at the top (``bow_up``) or at the bottom.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sarbridge.data.synthetic.spec import ShipSpec, _jsonable

__all__ = ["Pose", "sample_pose", "chip_extent_m", "chip_shape"]

@dataclass
class Pose:
    """How a ship sits in its chip; shared by an optical and a SAR image of a same-pose pair.

    Attributes:
        bow_up: bow at the top of the chip (else at the bottom).
        jitter_deg: small clockwise rotation away from upright.
        margin_y_m: sea margin added above and below the ship's bounding box.
        margin_x_m: sea margin added left and right of the ship's bounding box.
        offset_y_m: ship centre offset from the chip centre, downward.
        offset_x_m: ship centre offset from the chip centre, rightward.
    """

    bow_up: bool
    jitter_deg: float
    margin_y_m: float
    margin_x_m: float
    offset_y_m: float = 0.0
    offset_x_m: float = 0.0

    @property
    def rotation_deg(self) -> float:
        """Clockwise rotation of the bow direction from image-up."""
        return self.jitter_deg + (0.0 if self.bow_up else 180.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible copy."""
        return _jsonable(asdict(self))


def sample_pose(
    spec: ShipSpec,
    rng: np.random.Generator,
    heading_jitter_deg: float = 4.0,
    flip_prob: float = 0.5,
    margin_frac: tuple[float, float] = (0.01, 0.05),
    offset_frac: float = 0.3,
) -> Pose:
    """Draw the per-image framing of a ship.

    Args:
        spec: the ship (its size sets the margins).
        rng: source of randomness.
        heading_jitter_deg: rotation drawn uniformly in ``[-x, x]`` degrees.
        flip_prob: probability of bow-down.
        margin_frac: range of the vertical margin as a fraction of the length; the horizontal
            margin is drawn as the same fraction range of ``4 x beam`` (plus up to 2 m each).
        offset_frac: maximal centre offset as a fraction of each margin.

    Returns:
        The :class:`Pose`.
    """
    bow_up = bool(rng.random() >= flip_prob)
    jitter = float(rng.uniform(-heading_jitter_deg, heading_jitter_deg)) if heading_jitter_deg > 0 else 0.0
    my = spec.length_m * float(rng.uniform(*margin_frac)) + float(rng.uniform(0.0, 2.0))
    mx = 4.0 * spec.beam_m * float(rng.uniform(*margin_frac)) + float(rng.uniform(0.0, 2.0))
    oy = float(rng.uniform(-offset_frac, offset_frac)) * my
    ox = float(rng.uniform(-offset_frac, offset_frac)) * mx
    return Pose(bow_up=bow_up, jitter_deg=jitter, margin_y_m=my, margin_x_m=mx, offset_y_m=oy, offset_x_m=ox)


def chip_extent_m(spec: ShipSpec, pose: Pose) -> tuple[float, float]:
    """Physical chip size ``(height_m, width_m)``: rotated ship bounding box plus margins."""
    t = math.radians(pose.jitter_deg)
    c, s = abs(math.cos(t)), abs(math.sin(t))
    h = spec.length_m * c + spec.beam_m * s + 2.0 * pose.margin_y_m
    w = spec.length_m * s + spec.beam_m * c + 2.0 * pose.margin_x_m
    return h, w


def chip_shape(spec: ShipSpec, pose: Pose, gsd_m: float) -> tuple[int, int]:
    """Chip size in pixels ``(H, W)`` at ``gsd_m`` metres per pixel (at least 4 x 4)."""
    h, w = chip_extent_m(spec, pose)
    return max(4, int(round(h / gsd_m))), max(4, int(round(w / gsd_m)))


def _ship_frame(spec: ShipSpec, pose: Pose, gsd_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-centre coordinates: ship frame ``(u, v)`` and chip frame ``(x, y)`` in metres."""
    hgt, wid = chip_shape(spec, pose, gsd_m)
    y = (np.arange(hgt, dtype=np.float64) + 0.5 - hgt / 2.0) * gsd_m - pose.offset_y_m
    x = (np.arange(wid, dtype=np.float64) + 0.5 - wid / 2.0) * gsd_m - pose.offset_x_m
    yy, xx = np.meshgrid(y, x, indexing="ij")
    t = math.radians(pose.rotation_deg)
    # bow direction in (x, y): (sin t, -cos t); starboard: (cos t, sin t)
    u = xx * math.sin(t) - yy * math.cos(t)
    v = xx * math.cos(t) + yy * math.sin(t)
    return u, v, xx, yy
