"""Same-pose optical / SAR chip pairs of one ship."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sarbridge.data.synthetic.optical import render_optical
from sarbridge.data.synthetic.pose import Pose, sample_pose
from sarbridge.data.synthetic.sar import render_sar
from sarbridge.data.synthetic.spec import ShipSpec

__all__ = ["SyntheticPair", "render_pair"]

@dataclass
class SyntheticPair:
    """An optical and a SAR chip of the same ship in the same pose.

    Attributes:
        optical: uint8 ``(H, W, 3)`` image at ``gsd_optical``.
        sar: float32 ``(H', W')`` intensity image at ``gsd_sar``.
        pose: the shared pose.
        gsd_optical: metres per optical pixel.
        gsd_sar: metres per SAR pixel.
    """

    optical: np.ndarray
    sar: np.ndarray
    pose: Pose
    gsd_optical: float
    gsd_sar: float


def render_pair(
    spec: ShipSpec,
    rng: np.random.Generator,
    gsd_optical: float = 0.75,
    gsd_sar: float = 1.0,
    looks: float | None = 4,
    pose: Pose | None = None,
    heading_jitter_deg: float = 4.0,
) -> SyntheticPair:
    """Render an optical and a SAR chip of the same ship in the same pose.

    Both chips cover the same physical extent (:func:`chip_extent_m`), so resampling one to the
    other's GSD aligns them; the other nuisances (sun, sea state, speckle ...) are independent.

    Args:
        spec: the ship.
        rng: per-pair randomness.
        gsd_optical: metres per optical pixel.
        gsd_sar: metres per SAR pixel.
        looks: SAR speckle looks (None for clean).
        pose: shared framing; drawn from ``rng`` when None.
        heading_jitter_deg: heading jitter used when ``pose`` is None.

    Returns:
        A :class:`SyntheticPair`.
    """
    if pose is None:
        pose = sample_pose(spec, rng, heading_jitter_deg)
    opt = render_optical(spec, rng, gsd_m=gsd_optical, pose=pose)
    sar = render_sar(spec, rng, gsd_m=gsd_sar, looks=looks, pose=pose)
    return SyntheticPair(optical=opt, sar=sar, pose=pose, gsd_optical=gsd_optical, gsd_sar=gsd_sar)
