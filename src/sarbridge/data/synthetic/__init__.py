"""Procedural paired optical / SAR ship chips, written in the HOSS ReID layout.

Each identity is a :class:`ShipSpec`: hull geometry (length, beam, bow taper, stern shape,
freeboard), superstructure blocks (bridge, funnel, cranes, masts, deck equipment), an optional
cargo pattern (hatch covers, container bays, tanker pipe rack) and the dominant SAR scatterers
derived from that geometry. Identity is therefore recoverable across modalities from geometry:
the chip size (length, beam), the superstructure layout (blocks and shadows optically, clusters
of bright scatterers in SAR) and the cargo pattern.

Per-image nuisances vary independently of the identity: heading jitter, bow up/down, crop margin
and offset (the :class:`Pose`), and per modality the sea state, sun azimuth/elevation,
illumination, blur and noise (optical) or clutter level, look direction, incidence, resolution,
scatterer fading and speckle (SAR).

Geometry conventions: the ship frame has ``u`` along the hull (metres from midship, positive
toward the bow) and ``v`` across it (positive to starboard). Image rows grow downward; an upright
ship has its bow at the top (``bow_up``) or at the bottom. Both renderers map pixel centres to
metres with their own GSD over the same physical chip extent, so an optical and a SAR image
rendered from the same :class:`Pose` cover exactly the same ground (up to the rounding of the
chip size to whole pixels) and differ only by the GSD ratio.

:mod:`~sarbridge.data.synthetic.scene` draws a georeferenced optical / SAR pair of a whole
procedural city scene (coast, streets, buildings with heights, parks) for SAR-patch -> optical-map
localisation; its renderers are exported as ``render_scene_optical`` / ``render_scene_sar``.

Rendering is vectorised NumPy (signed-distance masks on a pixel grid); nothing happens at import.
"""

from __future__ import annotations

from sarbridge.data.synthetic.hoss_layout import (
    GENERATOR_VERSION,
    SyntheticArgumentError,
    SyntheticTargetError,
    generate_hoss_dataset,
)
from sarbridge.data.synthetic.optical import render_optical
from sarbridge.data.synthetic.pairs import SyntheticPair, render_pair
from sarbridge.data.synthetic.pose import Pose, chip_extent_m, chip_shape, sample_pose
from sarbridge.data.synthetic.sar import apply_speckle, render_sar
from sarbridge.data.synthetic.scene import (
    LOOK_DIRECTIONS,
    SCENE_CLASSES,
    SceneLayout,
    ScenePaths,
    generate_scene,
    generate_scene_layout,
)
from sarbridge.data.synthetic.scene import render_optical as render_scene_optical
from sarbridge.data.synthetic.scene import render_sar as render_scene_sar
from sarbridge.data.synthetic.ships import derive_scatterers, sample_ship
from sarbridge.data.synthetic.spec import Block, CargoPattern, Scatterer, ShipSpec

__all__ = [
    "SyntheticArgumentError",
    "SyntheticTargetError",
    "GENERATOR_VERSION",
    "Block",
    "CargoPattern",
    "Scatterer",
    "ShipSpec",
    "Pose",
    "SyntheticPair",
    "sample_ship",
    "derive_scatterers",
    "sample_pose",
    "chip_extent_m",
    "chip_shape",
    "apply_speckle",
    "render_optical",
    "render_sar",
    "render_pair",
    "generate_hoss_dataset",
    "SCENE_CLASSES",
    "LOOK_DIRECTIONS",
    "SceneLayout",
    "ScenePaths",
    "generate_scene_layout",
    "render_scene_optical",
    "render_scene_sar",
    "generate_scene",
]
