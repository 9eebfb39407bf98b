"""Procedural layout of a coastal city scene on a pixel grid: land cover, buildings and heights.

The layout is the ground truth shared by the optical and the SAR renderer
(:mod:`sarbridge.data.synthetic.scene_render`). It is drawn in metres and rasterised on a
north-up pixel grid (rows grow southward, columns eastward) at ``gsd`` metres per pixel:

* a smooth random coastline along one edge (sea), often a river or canal running inland,
  with a few harbour piers reaching into the sea;
* a street grid rotated by a random angle, with unequal block sizes, slightly non-parallel
  streets of varying widths, sometimes a diagonal avenue; streets cross the river on bridges;
* city blocks split into lots of random size; each lot holds a building (rectangle, L-shape,
  courtyard block or tower on a podium) of a height drawn from the block's district (low-,
  mid- or high-rise, 3-60 m), or a garden / paved yard;
* parks with trees, paths and sometimes a pond, open squares and street trees.

Every random draw comes from one seeded :class:`numpy.random.Generator`, so a seed fixes the
layout; the irregular grid, lots, heights and green spaces make every patch locally distinctive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sarbridge.core.errors import DataError

__all__ = [
    "SCENE_CLASSES",
    "WATER",
    "ROAD",
    "BUILDING",
    "VEGETATION",
    "GROUND",
    "MIN_SCENE_SIZE",
    "SceneLayout",
    "generate_scene_layout",
]

SCENE_CLASSES = ("water", "road", "building", "vegetation", "ground")
"""Land-cover class names, indexed by the codes in :attr:`SceneLayout.classes`."""
WATER, ROAD, BUILDING, VEGETATION, GROUND = range(5)
MIN_SCENE_SIZE = 64
"""Smallest scene side in pixels."""

_STREAM_LAYOUT = 1
_SIDEWALK_M = 2.5
_ROAD_WIDTHS_M = (6.0, 8.0, 10.0, 14.0, 20.0, 28.0)
_ROAD_WIDTH_P = (0.14, 0.24, 0.26, 0.16, 0.12, 0.08)
_DISTRICTS = ((3.0, 12.0), (8.0, 25.0), (15.0, 60.0))  # low-, mid-, high-rise height ranges (m)


def _scene_rng(seed: int, stream: int) -> np.random.Generator:
    """An independent generator per (seed, stream), so renderers never disturb the layout."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(stream),)))


def _check_size(height: int, width: int, gsd: float) -> None:
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < MIN_SCENE_SIZE:
            raise DataError(f"scene {name} {v!r} is too small or not an integer",
                            f"use at least {MIN_SCENE_SIZE} pixels")
    if not isinstance(gsd, (int, float, np.integer, np.floating)) or not math.isfinite(gsd) or gsd <= 0:
        raise DataError(f"scene gsd {gsd!r} is not a positive number of metres", "pass e.g. gsd=0.5")


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"scene seed {seed!r} is not a non-negative integer", "pass e.g. seed=0")


@dataclass
class SceneLayout:
    """Ground truth of a procedural scene on a north-up pixel grid.

    Attributes:
        classes: uint8 ``(H, W)`` land-cover codes (:data:`SCENE_CLASSES`). Piers are ``ground``
            and bridges ``road`` even though they stand over water (see ``decks``).
        heights: float32 ``(H, W)`` building height above ground in metres (0 off buildings).
        building_ids: int32 ``(H, W)``; ``0`` off buildings, ``1..num_buildings`` on them
            (a tower on a podium is one building with two heights).
        canopy: float32 ``(H, W)`` tree-crown height in metres (0 where no tree).
        decks: bool ``(H, W)``; bridges and piers, i.e. built surfaces over water.
        markings: bool ``(H, W)``; painted lane marks on roads.
        gsd: metres per pixel.
        seed: the seed that drew the layout.
        grid_angle_deg: rotation of the street grid, clockwise from north-south/east-west.
    """

    classes: np.ndarray
    heights: np.ndarray
    building_ids: np.ndarray
    canopy: np.ndarray
    decks: np.ndarray
    markings: np.ndarray
    gsd: float
    seed: int = 0
    grid_angle_deg: float = 0.0

    def __post_init__(self) -> None:
        shape = self.classes.shape
        if len(shape) != 2:
            raise DataError(f"scene layout classes have shape {shape}", "pass (H, W) arrays")
        for name in ("heights", "building_ids", "canopy", "decks", "markings"):
            if getattr(self, name).shape != shape:
                raise DataError(f"scene layout {name} has shape {getattr(self, name).shape}, classes {shape}",
                                "give every layout array the same (H, W) shape")
        if not math.isfinite(self.gsd) or self.gsd <= 0:
            raise DataError(f"scene layout gsd {self.gsd!r} is not positive", "pass e.g. gsd=0.5")

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` in pixels."""
        return int(self.classes.shape[0]), int(self.classes.shape[1])

    @property
    def num_buildings(self) -> int:
        """Number of buildings (the largest id)."""
        return int(self.building_ids.max()) if self.building_ids.size else 0

    def class_counts(self) -> dict[str, int]:
        """Pixel count of every land-cover class, by name."""
        counts = np.bincount(self.classes.ravel(), minlength=len(SCENE_CLASSES))
        return {name: int(counts[i]) for i, name in enumerate(SCENE_CLASSES)}


# ----------------------------------------------------------------------------------------------
# geometry helpers


def _wobble(rng: np.random.Generator, t: np.ndarray, amp_m: float, lam_min: float, lam_max: float,
            terms: int = 4) -> np.ndarray:
    """Smooth random 1-D curve (sum of sines, wavelengths in [lam_min, lam_max] m), std ~ amp_m."""
    out = np.zeros_like(t, dtype=np.float64)
    for _ in range(terms):
        lam = math.exp(rng.uniform(math.log(lam_min), math.log(lam_max)))
        weight = (lam / lam_max) ** 0.5
        out += weight * rng.normal() * np.sin(2.0 * math.pi * t / lam + rng.uniform(0.0, 2.0 * math.pi))
    return out * (amp_m * math.sqrt(2.0 / terms))


class _Grid:
    """Pixel-centre coordinates in metres: ``x`` east, ``y`` south, and the street frame ``u, v``."""

    def __init__(self, height: int, width: int, gsd: float, angle_deg: float) -> None:
        self.h, self.w, self.gsd = height, width, gsd
        self.x = ((np.arange(width) + 0.5) * gsd).astype(np.float32)
        self.y = ((np.arange(height) + 0.5) * gsd).astype(np.float32)
        a = math.radians(angle_deg)
        self.ca, self.sa = math.cos(a), math.sin(a)
        self.u = (self.x[None, :] * self.ca + self.y[:, None] * self.sa).astype(np.float32)
        self.v = (-self.x[None, :] * self.sa + self.y[:, None] * self.ca).astype(np.float32)

    def to_xy(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return u * self.ca - v * self.sa, u * self.sa + v * self.ca

    def bbox_uv(self, u0: float, u1: float, v0: float, v1: float, pad: int = 1) -> tuple[slice, slice] | None:
        """Pixel window covering a (u, v) rectangle, or None when it misses the grid."""
        xs, ys = self.to_xy(np.array([u0, u1, u0, u1]), np.array([v0, v0, v1, v1]))
        return self.bbox_xy(float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max()), pad)

    def bbox_xy(self, x0: float, x1: float, y0: float, y1: float, pad: int = 1) -> tuple[slice, slice] | None:
        c0 = max(0, int(math.floor(x0 / self.gsd)) - pad)
        c1 = min(self.w, int(math.ceil(x1 / self.gsd)) + pad)
        r0 = max(0, int(math.floor(y0 / self.gsd)) - pad)
        r1 = min(self.h, int(math.ceil(y1 / self.gsd)) + pad)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)


def _split_lots(rng: np.random.Generator, rect: tuple[float, float, float, float],
                max_side: float) -> list[tuple[float, float, float, float]]:
    """Binary space partition of a (u0, u1, v0, v1) block into lots no side of which exceeds max_side."""
    todo, lots = [rect], []
    while todo:
        u0, u1, v0, v1 = todo.pop()
        du, dv = u1 - u0, v1 - v0
        if max(du, dv) <= max_side or min(du, dv) < 6.0:
            lots.append((u0, u1, v0, v1))
            continue
        f = rng.uniform(0.35, 0.65)
        if du >= dv:
            m = u0 + f * du
            todo += [(u0, m, v0, v1), (m, u1, v0, v1)]
        else:
            m = v0 + f * dv
            todo += [(u0, u1, v0, m), (u0, u1, m, v1)]
    return lots


def _runs_along(road: np.ndarray, river: np.ndarray, road_w: float, river_w: float, gsd: float) -> bool:
    """Whether a street overlaps the river over much more than a crossing would (runs along it)."""
    overlap = float(np.count_nonzero(road & river)) * gsd * gsd
    return overlap > 3.0 * road_w * (river_w * 1.3 + 2.0)


def _add_tree(grid: _Grid, canopy: np.ndarray, x: float, y: float, radius: float, height: float) -> None:
    win = grid.bbox_xy(x - radius, x + radius, y - radius, y + radius)
    if win is None:
        return
    rs, cs = win
    d2 = ((grid.x[cs][None, :] - x) ** 2 + (grid.y[rs][:, None] - y) ** 2) / (radius * radius)
    crown = height * np.sqrt(np.clip(1.0 - d2, 0.0, 1.0)) ** 0.5 * (d2 < 1.0)
    np.maximum(canopy[rs, cs], crown.astype(np.float32), out=canopy[rs, cs])


# ----------------------------------------------------------------------------------------------
# the generator


def generate_scene_layout(height: int, width: int, seed: int, gsd: float = 0.5) -> SceneLayout:
    """Draw a random coastal city layout.

    Args:
        height: rows (pixels, at least :data:`MIN_SCENE_SIZE`).
        width: columns (pixels, at least :data:`MIN_SCENE_SIZE`).
        seed: non-negative seed; the same seed and size give the identical layout.
        gsd: metres per pixel; all features are drawn in metres (streets 6-28 m wide, blocks
            55-130 m, buildings 3-60 m tall), so a coarser ``gsd`` shows more city.

    Returns:
        The :class:`SceneLayout`.

    Raises:
        DataError: a size below the minimum, a non-positive ``gsd`` or a negative seed.
    """
    _check_size(height, width, gsd)
    _check_seed(seed)
    gsd = float(gsd)
    rng = _scene_rng(seed, _STREAM_LAYOUT)
    angle = float(rng.uniform(-25.0, 25.0))
    g = _Grid(int(height), int(width), gsd, angle)
    hm, wm = g.h * gsd, g.w * gsd

    # --- coast and river --------------------------------------------------------------------
    side = int(rng.integers(4))  # sea along the north, south, west or east edge
    along_x = side < 2
    t1 = g.x if along_x else g.y  # coordinate along the coast
    ext_s = hm if along_x else wm
    s1 = g.y if along_x else g.x
    if side in (1, 3):
        s1 = ext_s - s1  # distance from the sea edge
    depth = rng.uniform(0.12, 0.28) * ext_s
    coast = depth + _wobble(rng, t1, 0.07 * ext_s + 4.0, 60.0, 900.0) + _wobble(rng, t1, 1.5, 8.0, 40.0)

    def _on_s(a: np.ndarray) -> np.ndarray:  # a 1-D array along s, broadcastable to (H, W)
        return a[:, None] if along_x else a[None, :]

    def _on_t(a: np.ndarray) -> np.ndarray:  # a 1-D array along t, broadcastable to (H, W)
        return a[None, :] if along_x else a[:, None]

    S, T, C = _on_s(s1), _on_t(t1), _on_t(coast)
    sea = S < C
    sea_buffer = S < C + 3.0
    river = np.zeros((g.h, g.w), dtype=bool)
    river_buffer = river
    river_width = 0.0
    if rng.random() < 0.6:
        ext_t = wm if along_x else hm
        centre = rng.uniform(0.2, 0.8) * ext_t + rng.uniform(-0.25, 0.25) * s1 + _wobble(rng, s1, 12.0, 80.0, 600.0)
        river_width = rng.uniform(12.0, 40.0)
        half = 0.5 * river_width * (1.0 + 0.15 * _wobble(rng, s1, 1.0, 50.0, 300.0))
        dist = np.abs(T - _on_s(centre))
        river = dist < _on_s(half)
        river_buffer = dist < _on_s(half) + 3.0
    water = sea | river

    # --- streets ----------------------------------------------------------------------------
    corners_u = [0.0, wm * g.ca, hm * g.sa, wm * g.ca + hm * g.sa]
    corners_v = [0.0, -wm * g.sa, hm * g.ca, -wm * g.sa + hm * g.ca]
    clearance = np.full((g.h, g.w), np.inf, dtype=np.float32)  # metres to the nearest road edge
    cells = np.zeros((g.h, g.w), dtype=np.int32)
    markings = np.zeros((g.h, g.w), dtype=bool)
    roads: list[tuple[int, float, float, float]] = []  # (axis, offset, tilt, width)
    on_axis = [np.zeros((g.h, g.w), dtype=bool), np.zeros((g.h, g.w), dtype=bool)]
    for axis, (lo, hi) in enumerate(((min(corners_u), max(corners_u)), (min(corners_v), max(corners_v)))):
        a, b = (g.u, g.v) if axis == 0 else (g.v, g.u)
        p = lo - rng.uniform(0.0, 70.0)
        while p < hi + 70.0:
            w = float(rng.choice(_ROAD_WIDTHS_M, p=_ROAD_WIDTH_P))
            tilt = float(rng.uniform(-0.02, 0.02))
            d = a - tilt * b - p
            ad = np.abs(d)
            if river.any() and _runs_along(ad < 0.5 * w, river, w, river_width, gsd):
                ad = np.where(river, np.float32(np.inf), ad)  # a quay street, not a long bridge
            np.minimum(clearance, ad - 0.5 * w, out=clearance)
            on_axis[axis] |= ad < 0.5 * w
            if w >= 10.0:
                dash = np.mod(b, 9.0) < 4.5
                markings |= (ad < max(0.15, 0.5 * gsd)) & dash
                if w >= 20.0:  # lane lines either side of the centre line
                    markings |= (np.abs(ad - 0.25 * w) < max(0.1, 0.4 * gsd)) & dash
            cells += (d > 0).astype(np.int32) * (1 if axis == 0 else 1000)
            roads.append((axis, p, tilt, w))
            p += rng.uniform(55.0, 130.0)
    markings &= ~(on_axis[0] & on_axis[1])  # no lane marks inside crossings of grid streets
    if rng.random() < 0.5:  # diagonal avenue
        th = math.radians(angle + rng.uniform(30.0, 60.0) * rng.choice([-1.0, 1.0]))
        x0, y0 = rng.uniform(0.2, 0.8) * wm, rng.uniform(0.2, 0.8) * hm
        wd = float(rng.uniform(14.0, 24.0))
        d = np.abs((g.x[None, :] - x0) * math.cos(th) + (g.y[:, None] - y0) * math.sin(th))
        if river.any() and _runs_along(d < 0.5 * wd, river, wd, river_width, gsd):
            d = np.where(river, np.float32(np.inf), d)
        markings &= d > 0.5 * wd
        markings |= (d < max(0.15, 0.5 * gsd)) & (np.mod(g.u + g.v, 9.0) < 4.5)
        np.minimum(clearance, d - 0.5 * wd, out=clearance)
    road = clearance < 0
    markings &= road

    # --- blocks, lots and buildings -----------------------------------------------------------
    classes = np.full((g.h, g.w), GROUND, dtype=np.uint8)
    heights = np.zeros((g.h, g.w), dtype=np.float32)
    ids = np.zeros((g.h, g.w), dtype=np.int32)
    canopy = np.zeros((g.h, g.w), dtype=np.float32)
    buildable = (clearance > _SIDEWALK_M) & ~sea_buffer & ~river_buffer
    offsets = {ax: sorted((p, tilt, w) for a2, p, tilt, w in roads if a2 == ax) for ax in (0, 1)}
    next_id = 1
    for cell in np.unique(cells):
        iu, iv = int(cell % 1000), int(cell // 1000)
        if not (1 <= iu < len(offsets[0]) and 1 <= iv < len(offsets[1])):
            continue  # beyond the outermost streets: cannot happen with margins, kept for safety
        (pu0, tu0, wu0), (pu1, tu1, wu1) = offsets[0][iu - 1], offsets[0][iu]
        (pv0, tv0, wv0), (pv1, tv1, wv1) = offsets[1][iv - 1], offsets[1][iv]
        vm, um = 0.5 * (pv0 + pv1), 0.5 * (pu0 + pu1)
        u0 = pu0 + tu0 * vm + 0.5 * wu0 + _SIDEWALK_M
        u1 = pu1 + tu1 * vm - 0.5 * wu1 - _SIDEWALK_M
        v0 = pv0 + tv0 * um + 0.5 * wv0 + _SIDEWALK_M
        v1 = pv1 + tv1 * um - 0.5 * wv1 - _SIDEWALK_M
        win = g.bbox_uv(u0 - 5, u1 + 5, v0 - 5, v1 + 5)
        if win is None or u1 - u0 < 4.0 or v1 - v0 < 4.0:
            continue
        rs, cs = win
        in_cell = (cells[rs, cs] == cell) & ~road[rs, cs] & ~water[rs, cs]
        if not in_cell.any():
            continue
        uu, vv, bl = g.u[rs, cs], g.v[rs, cs], buildable[rs, cs] & in_cell
        kind = rng.choice(["buildings", "park", "open", "square"], p=[0.68, 0.17, 0.08, 0.07])
        if kind == "park":
            classes[rs, cs][in_cell] = VEGETATION
            for _ in range(int(rng.integers(0, 3))):  # footpaths
                ph = rng.uniform(0.0, math.pi)
                pu, pv = rng.uniform(u0, u1), rng.uniform(v0, v1)
                path = np.abs((uu - pu) * math.cos(ph) + (vv - pv) * math.sin(ph)) < rng.uniform(1.0, 1.8)
                classes[rs, cs][in_cell & path] = GROUND
            if rng.random() < 0.3:  # pond
                ru, rv = rng.uniform(0.15, 0.3) * (u1 - u0), rng.uniform(0.15, 0.3) * (v1 - v0)
                cu, cv = rng.uniform(u0 + ru, u1 - ru), rng.uniform(v0 + rv, v1 - rv)
                pond = ((uu - cu) / ru) ** 2 + ((vv - cv) / rv) ** 2 < 1.0
                classes[rs, cs][in_cell & pond] = WATER
                water[rs, cs] |= in_cell & pond
            n_trees = int((u1 - u0) * (v1 - v0) / rng.uniform(60.0, 220.0))
        elif kind in ("open", "square"):
            n_trees = int(rng.integers(0, 6)) if kind == "square" else 0
        else:
            n_trees = 0
            district = int(rng.choice(3, p=[0.5, 0.38, 0.12]))
            lo_h, hi_h = _DISTRICTS[district]
            max_side = rng.uniform(14.0, 30.0) + 10.0 * district
            for lu0, lu1, lv0, lv1 in _split_lots(rng, (u0, u1, v0, v1), max_side):
                lot = (uu >= lu0) & (uu < lu1) & (vv >= lv0) & (vv < lv1) & in_cell
                if not lot.any():
                    continue
                if rng.random() < 0.5:
                    classes[rs, cs][lot] = VEGETATION
                if rng.random() < 0.12 or min(lu1 - lu0, lv1 - lv0) < 6.0:
                    if rng.random() < 0.5:
                        for _ in range(int(rng.integers(1, 4))):
                            tu, tv = rng.uniform(lu0, lu1), rng.uniform(lv0, lv1)
                            tx, ty = g.to_xy(np.array(tu), np.array(tv))
                            _add_tree(g, canopy, float(tx), float(ty), rng.uniform(2.0, 4.5), rng.uniform(5.0, 14.0))
                    continue
                su0, su1, sv0, sv1 = rng.uniform(0.3, 3.0, size=4)
                bu0, bu1, bv0, bv1 = lu0 + su0, lu1 - su1, lv0 + sv0, lv1 - sv1
                if bu1 - bu0 < 4.0 or bv1 - bv0 < 4.0:
                    continue
                foot = (uu >= bu0) & (uu < bu1) & (vv >= bv0) & (vv < bv1) & bl
                h_main = round(float(rng.uniform(lo_h, hi_h)) * 2.0) / 2.0
                hmap = np.where(foot, h_main, 0.0)
                shape = rng.choice(["rect", "L", "court", "podium"], p=[0.55, 0.2, 0.1, 0.15])
                du, dv = bu1 - bu0, bv1 - bv0
                if shape == "L":
                    fu, fv = rng.uniform(0.35, 0.65) * du, rng.uniform(0.35, 0.65) * dv
                    cu = (uu >= bu1 - fu) if rng.random() < 0.5 else (uu < bu0 + fu)
                    cv = (vv >= bv1 - fv) if rng.random() < 0.5 else (vv < bv0 + fv)
                    foot &= ~(cu & cv)
                elif shape == "court" and min(du, dv) > 22.0:
                    ins = rng.uniform(6.0, 10.0)
                    court = (uu >= bu0 + ins) & (uu < bu1 - ins) & (vv >= bv0 + ins) & (vv < bv1 - ins)
                    foot &= ~court
                elif shape == "podium" and min(du, dv) > 12.0:
                    h_pod = round(float(rng.uniform(3.0, min(9.0, 0.6 * h_main + 3.0))) * 2.0) / 2.0
                    fu, fv = rng.uniform(0.4, 0.75) * du, rng.uniform(0.4, 0.75) * dv
                    ou, ov = rng.uniform(0.0, du - fu), rng.uniform(0.0, dv - fv)
                    tower = (uu >= bu0 + ou) & (uu < bu0 + ou + fu) & (vv >= bv0 + ov) & (vv < bv0 + ov + fv)
                    hmap = np.where(tower, max(h_main, h_pod + 3.0), h_pod)
                if not foot.any():
                    continue
                heights[rs, cs][foot] = hmap[foot]
                ids[rs, cs][foot] = next_id
                next_id += 1
        for _ in range(n_trees):
            tu, tv = rng.uniform(u0, u1), rng.uniform(v0, v1)
            tx, ty = g.to_xy(np.array(tu), np.array(tv))
            _add_tree(g, canopy, float(tx), float(ty), rng.uniform(2.0, 5.5), rng.uniform(6.0, 18.0))

    # --- street trees -----------------------------------------------------------------------
    for ax, p, tilt, w in roads:
        if rng.random() >= 0.35:
            continue
        lo, hi = (min(corners_v), max(corners_v)) if ax == 0 else (min(corners_u), max(corners_u))
        spacing = rng.uniform(7.0, 12.0)
        along = np.arange(lo + rng.uniform(0.0, spacing), hi, spacing)
        radius, th = rng.uniform(2.0, 3.5), rng.uniform(6.0, 12.0)
        for sgn in (-1.0, 1.0):
            across = p + tilt * along + sgn * (0.5 * w + 1.2)
            su, sv = (across, along) if ax == 0 else (along, across)
            xs, ys = g.to_xy(su, sv)
            for tx, ty in zip(xs, ys):
                if -radius < tx < wm + radius and -radius < ty < hm + radius:
                    _add_tree(g, canopy, float(tx), float(ty), radius, th)

    # --- harbour piers --------------------------------------------------------------------------
    decks = road & river & ~sea  # bridges
    ext_t = wm if along_x else hm
    for _ in range(int(rng.integers(0, 2 + int(ext_t // 150.0)))):
        tp = rng.uniform(0.0, ext_t)
        ip = int(np.clip(np.searchsorted(t1, tp), 0, len(t1) - 1))
        length, half_w = rng.uniform(25.0, 90.0), 0.5 * rng.uniform(8.0, 20.0)
        pier = (np.abs(T - tp) < half_w) & (S > coast[ip] - length) & sea
        decks |= pier
    # --- assemble the class map -----------------------------------------------------------------
    classes[water] = WATER
    classes[road & ~sea] = ROAD
    piers = decks & sea
    classes[piers] = GROUND
    markings &= ~water
    classes[ids > 0] = BUILDING
    canopy[(ids > 0) | water] = 0.0
    classes[canopy > 0] = VEGETATION
    markings &= classes == ROAD
    return SceneLayout(classes=classes, heights=heights, building_ids=ids, canopy=canopy, decks=decks,
                       markings=markings, gsd=gsd, seed=int(seed), grid_angle_deg=angle)
