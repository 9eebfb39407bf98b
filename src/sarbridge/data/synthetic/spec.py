"""Identity data model of a synthetic ship: hull geometry, deck blocks, cargo and SAR scatterers.

Ship-frame convention: ``u`` runs along the hull (metres from midship, positive toward the bow)
and ``v`` across it (positive to starboard).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["RGBColour", "Block", "CargoPattern", "Scatterer", "ShipSpec"]

RGBColour = tuple[int, int, int]


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
