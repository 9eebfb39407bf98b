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

Rendering is vectorised NumPy (signed-distance masks on a pixel grid); nothing happens at import.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sarbridge.errors import ConfigError, DataError

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
]

GENERATOR_VERSION = "1.0.0"
GENERATOR_NAME = "sarbridge.data.synthetic"

RGBColour = tuple[int, int, int]

# --------------------------------------------------------------------------------------------
# Palettes (sRGB 0..255)
# --------------------------------------------------------------------------------------------
_HULL_COLOURS: list[RGBColour] = [(22, 22, 26), (95, 28, 26), (30, 42, 72), (62, 62, 64), (125, 34, 30), (32, 62, 44)]
_DECK_COLOURS: list[RGBColour] = [
    (122, 54, 42), (72, 94, 62), (112, 112, 108), (62, 82, 112), (152, 74, 52), (92, 92, 92),
]
_SUPER_COLOURS: list[RGBColour] = [(236, 236, 232), (226, 222, 204), (212, 212, 218), (244, 244, 244), (200, 205, 200)]
_FUNNEL_COLOURS: list[RGBColour] = [
    (30, 30, 30), (182, 42, 40), (42, 62, 142), (222, 162, 42), (232, 232, 232), (42, 122, 62),
]
_HATCH_COLOURS: list[RGBColour] = [
    (152, 52, 46), (72, 112, 72), (102, 102, 112), (182, 122, 62), (62, 92, 142), (170, 170, 160),
]
_CONTAINER_COLOURS: list[RGBColour] = [
    (182, 42, 36), (42, 82, 152), (202, 202, 202), (62, 122, 72),
    (212, 142, 52), (122, 62, 42), (92, 92, 96), (32, 112, 142),
]
_CRANE_COLOURS: list[RGBColour] = [(212, 182, 42), (232, 232, 232), (172, 52, 42)]
_PIPE_COLOURS: list[RGBColour] = [(200, 200, 196), (180, 186, 190), (220, 214, 200)]

_SHIP_TYPES = ("bulk", "container", "tanker", "general", "small")
_TYPE_PROBS = (0.3, 0.2, 0.2, 0.2, 0.1)
_LENGTH_RANGE = {"bulk": (120.0, 300.0), "container": (140.0, 300.0), "tanker": (90.0, 300.0),
                 "general": (60.0, 180.0), "small": (40.0, 90.0)}
_RATIO_RANGE = {"bulk": (5.5, 7.0), "container": (6.5, 8.5), "tanker": (5.0, 6.5),
                "general": (5.5, 7.5), "small": (4.0, 5.5)}

# Superstructure kinds and their SAR distributed return (linear intensity) before per-image gain.
_SAR_BLOCK_LEVEL = {"deckhouse": 0.9, "bridge": 1.1, "wing": 1.0, "funnel": 1.0, "forecastle": 0.5,
                    "crane": 1.2, "jib": 0.8, "mast": 1.0, "equipment": 0.6,
                    "hatch": 0.25, "container": 0.7, "pipe": 0.5, "manifold": 0.6}


class SyntheticArgumentError(ConfigError, ValueError):
    """An invalid generator argument (also a :class:`ValueError`)."""


class SyntheticTargetError(DataError, FileExistsError):
    """The output folder holds images the generator did not write (also a :class:`FileExistsError`)."""


# --------------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------------
@dataclass
class Block:
    """A box standing on the deck (superstructure, crane, mast, hatch cover, container bay ...).

    Attributes:
        kind: what it is (``deckhouse``, ``bridge``, ``wing``, ``funnel``, ``forecastle``,
            ``crane``, ``jib``, ``mast``, ``equipment``, ``hatch``, ``container``, ``pipe``,
            ``manifold``); drives the SAR return.
        u_m: centre along the hull, metres from midship (positive toward the bow).
        v_m: centre across the hull, metres from the centre line (positive to starboard).
        length_m: extent along the hull.
        width_m: extent across the hull.
        height_m: height of its top above the deck.
        colour: RGB colour of its top.
        stripes: optional colours of equal-width strips across the beam (container rows,
            two-tone hatch covers); empty for a plain top.
    """

    kind: str
    u_m: float
    v_m: float
    length_m: float
    width_m: float
    height_m: float
    colour: RGBColour
    stripes: list[RGBColour] = field(default_factory=list)


@dataclass
class CargoPattern:
    """Cargo-area layout: hatch covers, container bays or a tanker pipe rack.

    Attributes:
        kind: ``hatches``, ``containers`` or ``pipes``.
        u_start_m: aft end of the cargo area (ship frame).
        u_end_m: forward end of the cargo area.
        blocks: the boxes making up the pattern.
    """

    kind: str
    u_start_m: float
    u_end_m: float
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Scatterer:
    """A dominant SAR scatterer fixed to the ship.

    Attributes:
        u_m: position along the hull (ship frame).
        v_m: position across the hull.
        z_m: height above the deck (drives layover).
        rcs: peak linear intensity before per-image fading.
        kind: what produces it (``corner``, ``mast``, ``crane``, ``bow``, ``stern``,
            ``coaming``, ``container``, ``rail``, ``equipment``).
    """

    u_m: float
    v_m: float
    z_m: float
    rcs: float
    kind: str


@dataclass
class ShipSpec:
    """Identity-specific geometry and appearance of one ship.

    Attributes:
        ship_type: ``bulk``, ``container``, ``tanker``, ``general`` or ``small``.
        length_m: overall length (bow tip to stern).
        beam_m: maximum breadth.
        bow_length_m: length of the tapering bow section.
        bow_power: exponent of the bow taper (higher = fuller shoulders, sharper tip).
        bow_fullness: exponent in (0, 1] applied to the taper (lower = blunter bow).
        stern_type: ``transom`` (square) or ``rounded``.
        stern_length_m: length of the narrowing stern section.
        stern_width_frac: half-width at the stern end relative to the half-beam.
        freeboard_m: deck height above the water line (casts the hull shadow).
        rim_m: width of the visible hull side / bulwark around the deck.
        hull_colour: RGB colour of the hull side.
        deck_colour: RGB colour of the open deck.
        superstructure_colour: main RGB colour of the superstructure.
        superstructure: superstructure blocks, cranes, masts and deck equipment.
        cargo: optional cargo-area pattern.
        scatterers: dominant SAR scatterers derived from the geometry.
        sar_hull_level: relative SAR brightness of the open deck and hull.
    """

    ship_type: str
    length_m: float
    beam_m: float
    bow_length_m: float
    bow_power: float
    bow_fullness: float
    stern_type: str
    stern_length_m: float
    stern_width_frac: float
    freeboard_m: float
    rim_m: float
    hull_colour: RGBColour
    deck_colour: RGBColour
    superstructure_colour: RGBColour
    superstructure: list[Block] = field(default_factory=list)
    cargo: CargoPattern | None = None
    scatterers: list[Scatterer] = field(default_factory=list)
    sar_hull_level: float = 0.2

    @property
    def blocks(self) -> list[Block]:
        """All boxes on deck (superstructure then cargo)."""
        return list(self.superstructure) + (list(self.cargo.blocks) if self.cargo is not None else [])

    @property
    def max_height_m(self) -> float:
        """Height of the tallest structure above the water line."""
        return self.freeboard_m + max((b.height_m for b in self.blocks), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        """Everything, as JSON-compatible built-in types."""
        return _jsonable(asdict(self))

    def summary(self) -> dict[str, Any]:
        """Compact JSON-compatible description (geometry and layout, no scatterer list)."""
        d = self.to_dict()
        d.pop("scatterers")
        d["num_scatterers"] = len(self.scatterers)
        if self.cargo is not None:
            d["cargo"] = {"kind": self.cargo.kind, "u_start_m": round(self.cargo.u_start_m, 2),
                          "u_end_m": round(self.cargo.u_end_m, 2), "num_blocks": len(self.cargo.blocks)}
        d["superstructure"] = [
            {k: (round(v, 2) if isinstance(v, float) else v) for k, v in b.items() if k != "stripes"}
            for b in d["superstructure"]
        ]
        return d


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


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return round(float(obj), 4)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# --------------------------------------------------------------------------------------------
# Identity sampling
# --------------------------------------------------------------------------------------------
def _jitter_colour(rng: np.random.Generator, c: RGBColour, amount: float = 12.0) -> RGBColour:
    j = rng.uniform(-amount, amount, size=3)
    return tuple(int(np.clip(c[i] + j[i], 0, 255)) for i in range(3))  # type: ignore[return-value]


def _pick(rng: np.random.Generator, options: list[RGBColour]) -> RGBColour:
    return options[int(rng.integers(len(options)))]


def _half_width(spec: ShipSpec, u: np.ndarray) -> np.ndarray:
    """Hull half-width at ship-frame positions ``u`` (0 outside the hull)."""
    half_l, half_b = spec.length_m / 2.0, spec.beam_m / 2.0
    u = np.asarray(u, dtype=np.float64)
    tb = np.clip((u - (half_l - spec.bow_length_m)) / spec.bow_length_m, 0.0, 1.0)
    fb = np.clip(1.0 - tb**spec.bow_power, 0.0, 1.0) ** spec.bow_fullness
    ts = np.clip(((-half_l + spec.stern_length_m) - u) / spec.stern_length_m, 0.0, 1.0)
    e = spec.stern_width_frac
    if spec.stern_type == "transom":
        fs = 1.0 - (1.0 - e) * ts**2
    else:
        fs = np.sqrt(np.clip(1.0 - (1.0 - e * e) * ts**2, 0.0, 1.0))
    w = half_b * fb * fs
    return np.where(np.abs(u) <= half_l, w, 0.0)


def sample_ship(rng: np.random.Generator) -> ShipSpec:
    """Draw a random ship identity.

    Args:
        rng: source of randomness; the same generator state gives the same ship.

    Returns:
        A :class:`ShipSpec` with 40-300 m length, length/beam ratio 4-9, superstructure,
        optional cargo pattern and derived SAR scatterers.
    """
    ship_type = _SHIP_TYPES[int(rng.choice(len(_SHIP_TYPES), p=_TYPE_PROBS))]
    lo, hi = _LENGTH_RANGE[ship_type]
    length = float(rng.uniform(lo, hi))
    r_lo, r_hi = _RATIO_RANGE[ship_type]
    beam = float(max(8.0, length / rng.uniform(r_lo, r_hi)))
    beam = float(min(beam, length / 4.0))
    half_l = length / 2.0

    bow_length = length * float(rng.uniform(0.12, 0.22))
    stern_type = "transom" if rng.random() < 0.75 else "rounded"
    stern_length = length * float(rng.uniform(0.05, 0.12))
    stern_width_frac = float(rng.uniform(0.55, 0.85) if stern_type == "transom" else rng.uniform(0.15, 0.4))
    freeboard = float(np.clip(length * rng.uniform(0.025, 0.05), 1.5, 12.0))
    rim = float(np.clip(beam * rng.uniform(0.015, 0.04), 0.4, 1.5))

    spec = ShipSpec(
        ship_type=ship_type, length_m=length, beam_m=beam, bow_length_m=bow_length,
        bow_power=float(rng.uniform(1.6, 3.0)), bow_fullness=float(rng.uniform(0.5, 1.0)),
        stern_type=stern_type, stern_length_m=stern_length, stern_width_frac=stern_width_frac,
        freeboard_m=freeboard, rim_m=rim,
        hull_colour=_jitter_colour(rng, _pick(rng, _HULL_COLOURS)),
        deck_colour=_jitter_colour(rng, _pick(rng, _DECK_COLOURS)),
        superstructure_colour=_jitter_colour(rng, _pick(rng, _SUPER_COLOURS), 6.0),
        sar_hull_level=float(rng.uniform(0.04, 0.2)),
    )
    sup = spec.superstructure
    sc = spec.superstructure_colour

    # --- accommodation block: aft by default, amidships / forward for some types -------------
    acc_len = length * float(rng.uniform(0.15, 0.28) if ship_type == "small" else rng.uniform(0.06, 0.11))
    acc_w = beam * float(rng.uniform(0.6, 0.88))
    acc_h = float(np.clip(length * rng.uniform(0.07, 0.12), 4.0, 32.0))
    aft_u = -half_l + stern_length * float(rng.uniform(0.6, 1.1)) + acc_len / 2.0
    placement = "aft"
    if ship_type == "small" and rng.random() < 0.5:
        placement = "forward"
    elif ship_type == "general" and rng.random() < 0.2:
        placement = "mid"
    elif ship_type == "container" and length > 220 and rng.random() < 0.6:
        placement = "split"
    if placement == "forward":
        acc_u = half_l - bow_length * float(rng.uniform(0.9, 1.2)) - acc_len / 2.0
    elif placement == "mid":
        acc_u = float(rng.uniform(-0.1, 0.05)) * length
    elif placement == "split":
        acc_u = -half_l + length * float(rng.uniform(0.25, 0.38))
    else:
        acc_u = aft_u

    tiers = int(rng.integers(1, 4))
    for t in range(tiers):
        shrink = 1.0 - 0.18 * t
        sup.append(Block("deckhouse", acc_u - 0.1 * t * acc_len, 0.0, acc_len * shrink, acc_w * (1.0 - 0.08 * t),
                         acc_h * (0.55 + 0.45 * (t + 1) / tiers), _jitter_colour(rng, sc, 5.0)))
    wing_len = float(np.clip(acc_len * 0.18, 1.5, 4.0))
    sup.append(Block("wing", acc_u + acc_len / 2.0 - wing_len / 2.0, 0.0, wing_len,
                     beam * float(rng.uniform(0.82, 0.96)),
                     acc_h + float(rng.uniform(0.0, 1.5)), _jitter_colour(rng, sc, 5.0)))
    sup.append(Block("bridge", acc_u + acc_len * 0.25, 0.0, acc_len * 0.3, acc_w * 0.7,
                     acc_h + float(rng.uniform(2.0, 4.0)),
                     _jitter_colour(rng, sc, 8.0)))
    funnel_size = float(np.clip(beam * rng.uniform(0.12, 0.25), 1.5, 9.0))
    if placement == "split":
        funnel_u = -half_l + stern_length + funnel_size
    else:
        funnel_u = acc_u - acc_len / 2.0 - funnel_size * 0.6
    if placement == "forward" and rng.random() < 0.5:
        funnel_u = acc_u - acc_len / 2.0 - funnel_size
    sup.append(Block("funnel", funnel_u, 0.0, funnel_size * float(rng.uniform(1.0, 1.6)), funnel_size,
                     acc_h + float(rng.uniform(1.0, 6.0)), _pick(rng, _FUNNEL_COLOURS)))
    if placement == "split":  # engine-room casing under the aft funnel
        sup.append(Block("deckhouse", funnel_u, 0.0, funnel_size * 2.5, acc_w * 0.7, acc_h * 0.5,
                         _jitter_colour(rng, sc, 5.0)))
    sup.append(Block("mast", acc_u + acc_len * 0.2, 0.0, 0.7, 0.7, acc_h + float(rng.uniform(5.0, 10.0)),
                     (200, 200, 200)))

    # forecastle and fore mast
    if ship_type != "small" or placement != "forward":
        fc_len = bow_length * float(rng.uniform(0.35, 0.6))
        fc_u = half_l - bow_length + fc_len / 2.0
        sup.append(Block("forecastle", fc_u, 0.0, fc_len, beam * 0.55, float(rng.uniform(1.5, 3.0)),
                         _jitter_colour(rng, spec.deck_colour, 15.0)))
    sup.append(Block("mast", half_l - bow_length * float(rng.uniform(0.3, 0.6)), 0.0, 0.6, 0.6,
                     float(rng.uniform(8.0, 16.0)), (205, 205, 205)))

    # --- cargo area ---------------------------------------------------------------------------
    if placement in ("aft", "split"):
        if placement == "aft":
            cargo_start = aft_u + acc_len / 2.0 + float(rng.uniform(2.0, 6.0))
        else:
            cargo_start = funnel_u + funnel_size * 2.0
    else:
        cargo_start = -half_l + stern_length + 2.0
    cargo_end = half_l - bow_length * float(rng.uniform(0.8, 1.0))
    if placement == "forward":
        cargo_end = acc_u - acc_len / 2.0 - funnel_size * 1.5 - 2.0
    cargo_blocks: list[Block] = []
    cargo_kind = ""
    cranes: list[Block] = []

    def add_hatches(u0: float, u1: float, pitch_range: tuple[float, float]) -> None:
        span = u1 - u0
        if span < 8.0:
            return
        n = int(np.clip(round(span / rng.uniform(*pitch_range)), 1, 12))
        pitch = span / n
        hl = pitch * float(rng.uniform(0.6, 0.8))
        hw = beam * float(rng.uniform(0.5, 0.72))
        col = _jitter_colour(rng, _pick(rng, _HATCH_COLOURS))
        dark = tuple(int(c * 0.72) for c in col)
        two_tone = rng.random() < 0.6
        for i in range(n):
            cargo_blocks.append(Block("hatch", u0 + pitch * (i + 0.5), 0.0, hl, hw, float(rng.uniform(1.2, 2.2)), col,
                                      [col, dark] if two_tone else []))  # type: ignore[list-item]

    if ship_type in ("bulk", "general", "small"):
        if placement == "mid":
            add_hatches(cargo_start, acc_u - acc_len / 2.0 - 3.0, (14.0, 24.0))
            add_hatches(acc_u + acc_len / 2.0 + 3.0, cargo_end, (14.0, 24.0))
        else:
            add_hatches(cargo_start, cargo_end, (16.0, 28.0) if ship_type != "small" else (8.0, 14.0))
        cargo_kind = "hatches"
        crane_prob = {"bulk": 0.45, "general": 0.75, "small": 0.1}[ship_type]
        if rng.random() < crane_prob and len(cargo_blocks) >= 2:
            crane_col = _pick(rng, _CRANE_COLOURS)
            h_crane = float(rng.uniform(14.0, 26.0))
            for a, b in zip(cargo_blocks[:-1], cargo_blocks[1:]):
                if rng.random() < 0.25:
                    continue
                cu = (a.u_m + b.u_m) / 2.0
                side = float(rng.choice([-1.0, 0.0, 1.0])) * beam * 0.25
                ped = float(rng.uniform(2.5, 4.0))
                cranes.append(Block("crane", cu, side, ped, ped, h_crane, crane_col))
                jib_len = float(min(rng.uniform(14.0, 26.0), (b.u_m - a.u_m) * 1.4))
                direction = 1.0 if rng.random() < 0.5 else -1.0
                cranes.append(Block("jib", cu + direction * jib_len / 2.0, side, jib_len, 1.0, h_crane * 0.55,
                                    crane_col))
    elif ship_type == "container":
        cargo_kind = "containers"
        pitch = 13.6
        n_bays = max(1, int((cargo_end - cargo_start) // pitch))
        n_rows = max(2, int(beam * 0.9 // 2.44))
        row_w = 2.44 * n_rows
        hatch_col = _jitter_colour(rng, _pick(rng, _HATCH_COLOURS))
        weights = rng.dirichlet(np.ones(len(_CONTAINER_COLOURS)) * 0.6)
        for i in range(n_bays):
            uc = cargo_start + pitch * (i + 0.5)
            if placement == "split" and abs(uc - acc_u) < acc_len / 2.0 + pitch / 2.0:
                continue
            if rng.random() < 0.12:  # empty bay: bare hatch cover
                cargo_blocks.append(Block("hatch", uc, 0.0, 12.2, row_w, 1.2, hatch_col))
                continue
            idx = rng.choice(len(_CONTAINER_COLOURS), size=n_rows, p=weights)
            stripes = [_jitter_colour(rng, _CONTAINER_COLOURS[int(k)], 8.0) for k in idx]
            tiers_c = int(rng.integers(1, 7))
            cargo_blocks.append(Block("container", uc, 0.0, 12.2, row_w, 1.2 + 2.6 * tiers_c, stripes[0], stripes))
    elif ship_type == "tanker":
        cargo_kind = "pipes"
        span = cargo_end - cargo_start
        pipe_col = _pick(rng, _PIPE_COLOURS)
        pv = float(rng.uniform(-0.08, 0.08)) * beam
        cargo_blocks.append(Block("pipe", (cargo_start + cargo_end) / 2.0, pv, span, float(rng.uniform(1.2, 3.0)),
                                  float(rng.uniform(1.2, 2.2)), pipe_col))
        mu = cargo_start + span * float(rng.uniform(0.4, 0.6))
        cargo_blocks.append(Block("manifold", mu, 0.0, float(rng.uniform(3.0, 7.0)),
                                  beam * float(rng.uniform(0.6, 0.85)),
                                  float(rng.uniform(1.8, 3.0)), pipe_col))
        n_cat = int(rng.integers(0, 4))
        for _ in range(n_cat):  # transverse walkways / tank hatches
            cargo_blocks.append(Block("pipe", cargo_start + span * float(rng.uniform(0.05, 0.95)), 0.0, 1.2,
                                      beam * float(rng.uniform(0.3, 0.7)), 1.0, pipe_col))
    sup.extend(cranes)

    # deck equipment (winches, vents, lifeboats) - small identity-specific details
    for _ in range(int(rng.integers(2, 9))):
        eu = float(rng.uniform(-half_l + stern_length, half_l - bow_length * 0.5))
        ew = float(_half_width(spec, np.array([eu]))[0])
        if ew < 2.0:
            continue
        ev = float(rng.uniform(-ew * 0.7, ew * 0.7))
        es = float(rng.uniform(1.0, 3.0))
        sup.append(Block("equipment", eu, ev, es, es * float(rng.uniform(0.6, 1.4)), float(rng.uniform(1.0, 3.0)),
                         _jitter_colour(rng, _pick(rng, _SUPER_COLOURS + _CRANE_COLOURS), 10.0)))

    spec.cargo = CargoPattern(cargo_kind, float(cargo_start), float(cargo_end), cargo_blocks) if cargo_blocks else None
    spec.scatterers = derive_scatterers(spec, rng)
    return spec


def _perimeter_points(
    b: Block, rng: np.random.Generator, spacing_m: float, rcs_range: tuple[float, float], kind: str
) -> list[Scatterer]:
    """Scatterers at random places along a block's base perimeter (wall/deck dihedrals)."""
    perim = 2.0 * (b.length_m + b.width_m)
    n = int(perim / spacing_m)
    if n <= 0:
        return []
    s = rng.uniform(0.0, perim, size=n)
    hl, hw = b.length_m / 2.0, b.width_m / 2.0
    pts: list[Scatterer] = []
    for si, r in zip(s, rng.uniform(*rcs_range, size=n)):
        if si < b.length_m:
            du, dv = -hl + si, -hw
        elif si < b.length_m + b.width_m:
            du, dv = hl, -hw + (si - b.length_m)
        elif si < 2 * b.length_m + b.width_m:
            du, dv = hl - (si - b.length_m - b.width_m), hw
        else:
            du, dv = -hl, hw - (si - 2 * b.length_m - b.width_m)
        pts.append(Scatterer(b.u_m + float(du), b.v_m + float(dv), 0.3, float(r), kind))
    return pts


def derive_scatterers(spec: ShipSpec, rng: np.random.Generator) -> list[Scatterer]:
    """Dominant SAR scatterers implied by a ship's geometry.

    Superstructure corners (dihedrals, stronger for taller blocks), masts and crane pedestals
    (strong points), jib tips, bow tip and transom corners, hatch coamings, container-bay corners,
    deck equipment and a sparse line of weak railing returns along both hull edges.

    Args:
        spec: ship geometry.
        rng: draws the identity-specific strengths and railing positions.

    Returns:
        The scatterers, in ship-frame metres.
    """
    out: list[Scatterer] = []
    half_l = spec.length_m / 2.0
    for b in spec.blocks:
        hl, hw = b.length_m / 2.0, b.width_m / 2.0
        if b.kind in ("deckhouse", "bridge", "wing", "funnel", "forecastle", "manifold"):
            for su in (-1.0, 1.0):
                for sv in (-1.0, 1.0):
                    rcs = (2.0 + 0.9 * b.height_m) * float(rng.lognormal(0.0, 0.4))
                    z = b.height_m * float(rng.uniform(0.0, 0.4))
                    out.append(Scatterer(b.u_m + su * hl, b.v_m + sv * hw, z, rcs, "corner"))
            out.extend(_perimeter_points(b, rng, 3.0, (1.0 + 0.3 * b.height_m, 3.0 + 0.6 * b.height_m), "corner"))
        elif b.kind == "mast":
            out.append(Scatterer(b.u_m, b.v_m, b.height_m * 0.7, float(rng.uniform(20.0, 80.0)), "mast"))
        elif b.kind == "crane":
            out.append(Scatterer(b.u_m, b.v_m, b.height_m * 0.5, float(rng.uniform(30.0, 120.0)), "crane"))
        elif b.kind == "jib":  # boom ends (one coincides with the pedestal)
            for su in (-1.0, 1.0):
                out.append(Scatterer(b.u_m + su * hl * 0.9, b.v_m, b.height_m, float(rng.uniform(3.0, 8.0)), "crane"))
        elif b.kind == "hatch":
            for su in (-1.0, 1.0):
                for sv in (-1.0, 1.0):
                    rcs = float(rng.uniform(2.0, 8.0))
                    out.append(Scatterer(b.u_m + su * hl, b.v_m + sv * hw, 0.5, rcs, "coaming"))
            out.extend(_perimeter_points(b, rng, 5.0, (0.5, 3.0), "coaming"))
        elif b.kind == "container":
            for su in (-1.0, 1.0):
                for sv in (-1.0, 1.0):
                    rcs = float(rng.uniform(3.0, 9.0))
                    out.append(Scatterer(b.u_m + su * hl, b.v_m + sv * hw, b.height_m, rcs, "container"))
            out.extend(_perimeter_points(b, rng, 4.0, (0.8, 4.0), "container"))
            if b.stripes:
                n = len(b.stripes)
                for k in range(1, n, 2):
                    end = float(rng.choice([-hl, hl]))
                    out.append(Scatterer(b.u_m + end, b.v_m - hw + b.width_m * k / n, b.height_m,
                                         float(rng.uniform(1.0, 4.0)), "container"))
        elif b.kind in ("equipment", "pipe"):
            out.append(Scatterer(b.u_m, b.v_m, b.height_m, float(rng.uniform(1.5, 6.0)), "equipment"))
    out.append(Scatterer(half_l - 0.5, 0.0, 0.0, float(rng.uniform(3.0, 9.0)), "bow"))
    sw = spec.beam_m / 2.0 * spec.stern_width_frac
    if spec.stern_type == "transom":
        for sv in (-1.0, 1.0):
            out.append(Scatterer(-half_l + 0.5, sv * sw, 0.0, float(rng.uniform(3.0, 9.0)), "stern"))
    else:
        out.append(Scatterer(-half_l + 0.5, 0.0, 0.0, float(rng.uniform(2.0, 6.0)), "stern"))
    n_rail = int(spec.length_m / 3.0)
    us = rng.uniform(-half_l * 0.95, half_l * 0.95, size=n_rail)
    sides = rng.choice([-1.0, 1.0], size=n_rail)
    ws = _half_width(spec, us)
    rcs = rng.lognormal(0.0, 0.6, size=n_rail) * 0.8
    for u, s, w, r in zip(us, sides, ws, rcs):
        if w > 0.5:
            out.append(Scatterer(float(u), float(s * (w - 0.4)), 1.0, float(r), "rail"))
    return out


# --------------------------------------------------------------------------------------------
# Pose and chip geometry
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Optical
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# SAR
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Dataset writer
# --------------------------------------------------------------------------------------------
_SPLIT_DIRS = ("bounding_box_train", "query", "bounding_box_test",
               "subset/O2S/query", "subset/O2S/bounding_box_test",
               "subset/S2O/query", "subset/S2O/bounding_box_test")
_STREAM_SPEC, _STREAM_POSE, _STREAM_OPT, _STREAM_SAR, _STREAM_SPLIT = 1, 2, 3, 4, 5
_STREAM_DISTRACTOR = 6


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(int(k) for k in key)))


def _tiff_bytes(arr: np.ndarray) -> bytes:
    import tifffile

    buf = io.BytesIO()
    if arr.ndim == 3:
        tifffile.imwrite(buf, arr, photometric="rgb", metadata=None)
    else:
        tifffile.imwrite(buf, arr, photometric="minisblack", metadata=None)
    return buf.getvalue()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _query_counts(n_opt: int, n_sar: int) -> tuple[int, int]:
    """How many optical / SAR images of a test id go to query so every query keeps a
    cross-modal gallery match."""
    if n_opt >= 2 and n_sar >= 2:
        return 1, 1
    if n_opt >= n_sar:
        return 1, 0  # the SAR image(s) stay in the gallery
    return 0, 1


def _shares_pose(train: bool, k: int, n_pair: int, q_opt: int, q_sar: int) -> bool:
    """Whether optical image k and SAR image k of an id are rendered from one pose."""
    return k < n_pair and (train or (k < q_opt) == (k < q_sar))


def _check_target(root: Path, planned: set[str]) -> list[Path]:
    """Stale images from an earlier generator run to remove; refuse to touch foreign data."""
    existing = [p for d in _SPLIT_DIRS if (root / d).is_dir() for p in (root / d).iterdir()
                if p.is_file() and (p.suffix.lower() in (".tif", ".tiff") or p.name.endswith(".tif.tmp"))]
    stale = [p for p in existing if p.relative_to(root).as_posix() not in planned]
    if not stale:
        return []
    meta = root / "meta.json"
    ours = False
    if meta.is_file():
        try:
            ours = json.loads(meta.read_text(encoding="utf-8")).get("generator") == GENERATOR_NAME
        except (OSError, ValueError):
            ours = False
    if not ours and any(not p.name.endswith(".tmp") for p in stale):
        raise SyntheticTargetError(
            f"'{root}' already holds {len(stale)} images this run would not write (e.g. '{stale[0].name}') "
            "and no synthetic meta.json",
            "choose an empty or new output folder",
        )
    return stale


def generate_hoss_dataset(
    root: str | Path,
    num_ids: int = 100,
    optical_per_id: int = 2,
    sar_per_id: int = 2,
    train_fraction: float = 0.5,
    num_distractors: int = 10,
    seed: int = 0,
    looks: float | None = 4,
    gsd_optical: float = 0.75,
    gsd_sar: float = 1.0,
    subsets: bool = True,
    progress: bool = True,
    heading_jitter_deg: float = 4.0,
    paired_poses: bool = True,
) -> Path:
    """Write a synthetic optical/SAR ship ReID dataset in the HOSS layout.

    Layout under ``root``: ``bounding_box_train/``, ``query/``, ``bounding_box_test/``, and with
    ``subsets`` ``subset/O2S/{query,bounding_box_test}`` (optical queries vs SAR gallery) and
    ``subset/S2O/{query,bounding_box_test}`` (SAR queries vs optical gallery); plus
    ``meta.json`` (version, seed, parameters, GSDs, per-identity specs and per-file pose and
    render summary) and, with ``paired_poses``, ``pairs.csv`` listing same-pose optical/SAR pairs.

    Names: ``{pid:04d}_s{SS}c1_RGB.tif`` / ``{pid:04d}_s{SS}c2_SAR.tif`` with ``SS`` the 1-based
    image index within the modality; distractors ``-1_{NNNN}_{RGB|SAR}.tif``. RGB is uint8
    ``(H, W, 3)`` (photometric rgb), SAR float32 ``(H, W)`` (minisblack). Every file is written
    to ``name.tmp`` and renamed, so an interrupted run leaves no partial TIFF; rerunning
    completes it. Rerunning in a folder this generator wrote before (its ``meta.json``) removes
    the images the new run does not write; a folder holding other images is refused.

    Split: a seeded ``train_fraction`` of the ids (at least one train and one test id when
    ``0 < train_fraction < 1`` and ``num_ids >= 2``) put all their images in
    ``bounding_box_train``. Each test id puts its first optical and first SAR image in ``query``
    (only one of them when a modality has a single image, so that every query keeps a gallery
    image of the other modality) and the rest in ``bounding_box_test``. Distractors (new ships,
    alternating SAR/RGB) go to the galleries. Subset queries are the ``query`` images of one
    modality; subset galleries the ``bounding_box_test`` images (distractors included) of the
    other modality. A protocol without queries gets no folders (readers then skip it).

    The output depends only on the arguments (per-image random streams derive from ``seed``
    and the image's identity and index), not on the order or the folder.

    Args:
        root: output folder (created).
        num_ids: number of ship identities (pids 1..num_ids).
        optical_per_id: optical images per identity (1-99).
        sar_per_id: SAR images per identity (1-99).
        train_fraction: fraction of identities used for training.
        num_distractors: gallery-only images of other ships (pid -1).
        seed: master seed.
        looks: SAR speckle looks (None for clean SAR).
        gsd_optical: metres per optical pixel.
        gsd_sar: metres per SAR pixel.
        subsets: also write the O2S and S2O protocols.
        progress: show a tqdm progress bar.
        heading_jitter_deg: per-image heading jitter.
        paired_poses: optical image k and SAR image k of an id share their pose (for k below
            ``min(optical_per_id, sar_per_id)``, when both land in the same split: a query
            never shares its pose with a gallery image); listed in ``pairs.csv``.

    Returns:
        The dataset root.

    Raises:
        SyntheticArgumentError: invalid counts, fractions or GSDs (a ``ValueError``).
        SyntheticTargetError: ``root`` holds other images that this run would not write (a
            ``FileExistsError``).
    """
    if num_ids < 1:
        raise SyntheticArgumentError(f"num_ids must be >= 1, got {num_ids}")
    if not (1 <= optical_per_id <= 99 and 1 <= sar_per_id <= 99):
        raise SyntheticArgumentError("optical_per_id and sar_per_id must be between 1 and 99")
    if not 0.0 <= train_fraction <= 1.0:
        raise SyntheticArgumentError(f"train_fraction must be in [0, 1], got {train_fraction}")
    if num_distractors < 0 or num_distractors > 9999:
        raise SyntheticArgumentError(f"num_distractors must be in [0, 9999], got {num_distractors}")
    if gsd_optical <= 0 or gsd_sar <= 0:
        raise SyntheticArgumentError("gsd_optical and gsd_sar must be positive")
    if looks is not None and looks < 0:
        raise SyntheticArgumentError(f"looks must be positive, 0 or None (no speckle), got {looks}")
    root = Path(root)

    pids = np.arange(1, num_ids + 1)
    n_train = int(round(num_ids * train_fraction))
    if 0.0 < train_fraction < 1.0 and num_ids >= 2:
        n_train = min(max(n_train, 1), num_ids - 1)
    perm = _rng(seed, _STREAM_SPLIT).permutation(pids)
    train_ids = set(int(p) for p in perm[:n_train])
    q_opt, q_sar = _query_counts(optical_per_id, sar_per_id)
    n_pair = min(optical_per_id, sar_per_id) if paired_poses else 0

    # --- plan: (relative dirs, file name, job) ---------------------------------------------
    jobs: list[dict[str, Any]] = []
    for pid in (int(p) for p in pids):
        for mod, count, cam, nq in (("RGB", optical_per_id, 1, q_opt), ("SAR", sar_per_id, 2, q_sar)):
            for k in range(count):
                name = f"{pid:04d}_s{k + 1:02d}c{cam}_{mod}.tif"
                if pid in train_ids:
                    dirs = ["bounding_box_train"]
                elif k < nq:
                    dirs = ["query"] + ([f"subset/{'O2S' if mod == 'RGB' else 'S2O'}/query"] if subsets else [])
                else:
                    dirs = ["bounding_box_test"] + ([f"subset/{'S2O' if mod == 'RGB' else 'O2S'}/bounding_box_test"]
                                                    if subsets else [])
                jobs.append({"pid": pid, "modality": mod, "index": k, "name": name, "dirs": dirs})
    for j in range(num_distractors):
        mod = "SAR" if j % 2 == 0 else "RGB"
        sub = "O2S" if mod == "SAR" else "S2O"
        dirs = ["bounding_box_test"] + ([f"subset/{sub}/bounding_box_test"] if subsets else [])
        jobs.append({"pid": -1, "modality": mod, "index": j, "name": f"-1_{j + 1:04d}_{mod}.tif", "dirs": dirs})

    planned = {f"{d}/{job['name']}" for job in jobs for d in job["dirs"]}
    stale = _check_target(root, planned)
    # folders are made on first use: a protocol without queries gets no folder, so readers skip it
    for d in sorted({d for job in jobs for d in job["dirs"]}):
        (root / d).mkdir(parents=True, exist_ok=True)
    for p in stale:
        p.unlink()

    specs: dict[int, ShipSpec] = {}
    files: dict[str, Any] = {}
    pairs: list[tuple[str, str, int]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="synthetic HOSS", unit="img")
    try:
        for job in jobs:
            pid, mod, k = job["pid"], job["modality"], job["index"]
            if pid > 0:
                if pid not in specs:
                    specs[pid] = sample_ship(_rng(seed, _STREAM_SPEC, pid))
                spec = specs[pid]
                shared = _shares_pose(pid in train_ids, k, n_pair, q_opt, q_sar)
                pose_key = (_STREAM_POSE, pid, k, 0 if shared else (1 if mod == "RGB" else 2))
                img_rng = _rng(seed, _STREAM_OPT if mod == "RGB" else _STREAM_SAR, pid, k)
            else:
                spec = sample_ship(_rng(seed, _STREAM_DISTRACTOR, k, 0))
                pose_key = (_STREAM_DISTRACTOR, k, 1)
                img_rng = _rng(seed, _STREAM_DISTRACTOR, k, 2)
            pose = sample_pose(spec, _rng(seed, *pose_key), heading_jitter_deg)
            if mod == "RGB":
                arr = render_optical(spec, img_rng, gsd_m=gsd_optical, pose=pose)
            else:
                arr = render_sar(spec, img_rng, gsd_m=gsd_sar, looks=looks, pose=pose)
            data = _tiff_bytes(arr)
            for d in job["dirs"]:
                _atomic_write_bytes(root / d / job["name"], data)
            entry: dict[str, Any] = {
                "pid": pid, "modality": mod, "dirs": job["dirs"],
                "height": int(arr.shape[0]), "width": int(arr.shape[1]),
                "gsd_m": gsd_optical if mod == "RGB" else gsd_sar, "pose": pose.to_dict(),
            }
            if pid < 0:
                entry["spec"] = spec.summary()
            files[job["name"]] = entry
            if pid > 0 and mod == "SAR" and _shares_pose(pid in train_ids, k, n_pair, q_opt, q_sar):
                pairs.append((f"{pid:04d}_s{k + 1:02d}c1_RGB.tif", job["name"], pid))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    meta = {
        "generator": GENERATOR_NAME,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "params": {
            "num_ids": num_ids, "optical_per_id": optical_per_id, "sar_per_id": sar_per_id,
            "train_fraction": train_fraction, "num_distractors": num_distractors, "looks": looks,
            "gsd_optical": gsd_optical, "gsd_sar": gsd_sar, "subsets": subsets,
            "heading_jitter_deg": heading_jitter_deg, "paired_poses": paired_poses,
        },
        "gsd_m": {"RGB": gsd_optical, "SAR": gsd_sar},
        "cameras": {"c1": "RGB", "c2": "SAR"},
        "train_ids": sorted(train_ids),
        "test_ids": sorted(int(p) for p in pids if int(p) not in train_ids),
        "identities": {f"{pid:04d}": specs[pid].summary() for pid in sorted(specs)},
        "files": files,
    }
    if n_pair:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["optical", "sar", "pid", "gsd_optical", "gsd_sar"])
        for o, s, p in pairs:
            w.writerow([o, s, p, gsd_optical, gsd_sar])
        _atomic_write_bytes(root / "pairs.csv", buf.getvalue().encode("utf-8"))
    elif (root / "pairs.csv").is_file():
        (root / "pairs.csv").unlink()
    _atomic_write_bytes(root / "meta.json", (json.dumps(_jsonable(meta), indent=1) + "\n").encode("utf-8"))
    return root
