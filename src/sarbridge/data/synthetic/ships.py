"""Random ship identities: hull, superstructure and cargo layout, and the SAR scatterers they imply."""

from __future__ import annotations

import numpy as np

from sarbridge.data.synthetic.spec import Block, CargoPattern, RGBColour, Scatterer, ShipSpec, _half_width

__all__ = ["sample_ship", "derive_scatterers"]

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


def _jitter_colour(rng: np.random.Generator, c: RGBColour, amount: float = 12.0) -> RGBColour:
    j = rng.uniform(-amount, amount, size=3)
    return tuple(int(np.clip(c[i] + j[i], 0, 255)) for i in range(3))  # type: ignore[return-value]


def _pick(rng: np.random.Generator, options: list[RGBColour]) -> RGBColour:
    return options[int(rng.integers(len(options)))]


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
    rail_rcs = rng.lognormal(0.0, 0.6, size=n_rail) * 0.8
    for u, s, w, r in zip(us, sides, ws, rail_rcs):
        if w > 0.5:
            out.append(Scatterer(float(u), float(s * (w - 0.4)), 1.0, float(r), "rail"))
    return out
