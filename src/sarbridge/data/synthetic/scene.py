"""A georeferenced optical / SAR pair of one procedural city scene, for SAR-to-map localisation.

:func:`generate_scene` draws a :class:`~.scene_layout.SceneLayout` (coast, river, street grid,
buildings with heights, parks), renders the optical map (:func:`~.scene_render.render_optical`)
and the SAR image (:func:`~.scene_render.render_sar`) of it and writes them as north-up GeoTIFFs
in a projected CRS, with the building heights and a ``meta.json``::

    out_dir/optical.tif   3 bands uint8, gsd metres per pixel
    out_dir/sar.tif       1 band float32 linear intensity, sar_gsd metres per pixel
    out_dir/heights.tif   1 band float32 building heights (metres), on the optical grid
    out_dir/meta.json     seed, sizes, gsd, CRS, origin, SAR geometry, class counts ...

Both rasters cover the same ground (the SAR one up to ``sar_offset_m``, a deliberate shift of
its georeference that emulates misregistration), so a SAR patch can be located on the optical
map through the georeferences. The layout and renderers are re-exported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarbridge.core.errors import DataError
from sarbridge.core.resources import check_disk, check_memory
from sarbridge.core.utils import atomic_write_json
from sarbridge.data.georaster import as_affine, write_georaster
from sarbridge.data.synthetic.sar import apply_speckle
from sarbridge.data.synthetic.scene_layout import (
    MIN_SCENE_SIZE,
    SCENE_CLASSES,
    SceneLayout,
    _check_seed,
    _check_size,
    _scene_rng,
    generate_scene_layout,
)
from sarbridge.data.synthetic.scene_render import (
    LOOK_DIRECTIONS,
    SUN_AZIMUTH_DEG,
    SUN_ELEVATION_DEG,
    _check_look,
    render_optical,
    render_sar,
)

__all__ = [
    "SCENE_CLASSES",
    "LOOK_DIRECTIONS",
    "SCENE_GENERATOR_VERSION",
    "SceneLayout",
    "ScenePaths",
    "generate_scene_layout",
    "render_optical",
    "render_sar",
    "generate_scene",
]

SCENE_GENERATOR_VERSION = "1.0.0"
_STREAM_SAR_RESAMPLED = 5


@dataclass(frozen=True)
class ScenePaths:
    """Files written by :func:`generate_scene`.

    Attributes:
        optical: 3-band uint8 GeoTIFF.
        sar: 1-band float32 GeoTIFF (linear intensity).
        heights: 1-band float32 GeoTIFF of building heights in metres, on the optical grid.
        meta: JSON description of the scene.
    """

    optical: Path
    sar: Path
    heights: Path
    meta: Path


#: peak memory of :func:`generate_scene` per pixel (measured: ~145-170 bytes at 256-512 px), with a margin
SCENE_BYTES_PER_PIXEL = 200


def _area_weights(n_in: int, size_in: float, n_out: int, size_out: float) -> np.ndarray:
    """``(n_out, n_in)`` overlap weights of output cells of ``size_out`` over input cells of
    ``size_in`` starting at the same edge; rows sum to 1 (cells beyond the input reuse the last)."""
    lo = np.arange(n_out)[:, None] * size_out
    hi = lo + size_out
    a = np.arange(n_in)[None, :] * size_in
    b = a + size_in
    b[0, -1] = max(float(b[0, -1]), float(hi[-1, 0]))  # extend the last input cell to the output edge
    ov = np.clip(np.minimum(hi, b) - np.maximum(lo, a), 0.0, None)
    return ov / np.maximum(ov.sum(axis=1, keepdims=True), 1e-12)


def _resample_area(img: np.ndarray, gsd_in: float, shape_out: tuple[int, int], gsd_out: float) -> np.ndarray:
    """Area-weighted resampling of a 2-D image to another pixel size over the same upper-left corner."""
    wy = _area_weights(img.shape[0], gsd_in, shape_out[0], gsd_out)
    wx = _area_weights(img.shape[1], gsd_in, shape_out[1], gsd_out)
    return (wy @ img.astype(np.float64) @ wx.T).astype(np.float32)


def _check_number(name: str, value: object, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)) or (positive and float(value) <= 0):
        raise DataError(f"scene {name} {value!r} is not a {'positive ' if positive else ''}number",
                        f"pass {name} in metres, e.g. 0.5" if positive else f"pass {name} in metres")
    return float(value)


def generate_scene(
    out_dir: str | Path,
    height: int = 1024,
    width: int = 1024,
    gsd: float = 0.5,
    seed: int = 0,
    crs: str = "EPSG:32631",
    origin: tuple[float, float] = (591000.0, 5751000.0),
    sar_gsd: float | None = None,
    sar_offset_m: tuple[float, float] = (0.0, 0.0),
    looks: float | None = 1,
    look_direction: str = "east",
    incidence_deg: float = 35.0,
) -> ScenePaths:
    """Generate and write a georeferenced optical / SAR scene pair.

    Args:
        out_dir: folder to write into (created; the four files are replaced atomically).
        height: optical rows (at least 64).
        width: optical columns (at least 64).
        gsd: optical pixel size in metres (the layout grid).
        seed: non-negative seed; the same arguments give identical files.
        crs: projected CRS of the map coordinates (default UTM 31N).
        origin: map ``(x, y)`` of the upper-left corner (default: Rotterdam area).
        sar_gsd: SAR pixel size in metres; ``None`` uses ``gsd``. Otherwise the noise-free SAR
            intensity is area-resampled to ``round(extent / sar_gsd)`` pixels of exactly
            ``sar_gsd`` from the same corner, and speckled at that resolution.
        sar_offset_m: ``(dx, dy)`` metres added to the SAR raster's georeferenced corner
            (east, north), emulating misregistration; the content is unchanged.
        looks: SAR speckle looks; ``None`` or ``0`` writes the noise-free intensity.
        look_direction: SAR range direction (``east``, ``west``, ``north``, ``south``).
        incidence_deg: SAR incidence angle in degrees.

    Returns:
        The :class:`ScenePaths` written.

    Raises:
        DataError: a size below 64 pixels, a non-positive ``gsd`` or ``sar_gsd``, a SAR image
            smaller than 8 pixels, a bad offset, origin, look direction, incidence or looks.
    """
    _check_size(height, width, gsd)
    check_memory(float(height) * float(width) * SCENE_BYTES_PER_PIXEL, f"a {height:,} x {width:,} px scene",
                 "generate a smaller scene (--size)")
    check_disk(out_dir, float(height) * float(width) * 8, f"a {height:,} x {width:,} px scene",
               "generate a smaller scene (--size) or write to a larger disk")
    _check_seed(seed)
    gsd = float(gsd)
    sar_gsd = gsd if sar_gsd is None else _check_number("sar_gsd", sar_gsd)
    _check_look(look_direction, incidence_deg, gsd)
    if looks is not None and (isinstance(looks, bool) or not math.isfinite(looks) or looks < 0):
        raise DataError(f"SAR looks {looks!r} is not positive", "pass looks >= 1, or None for no speckle")
    try:
        ox, oy = (_check_number("origin", v, positive=False) for v in origin)
        dx, dy = (_check_number("sar_offset_m", v, positive=False) for v in sar_offset_m)
    except (TypeError, ValueError):
        raise DataError(f"scene origin {origin!r} / sar_offset_m {sar_offset_m!r} are not (x, y) pairs",
                        "pass two numbers each, in map units") from None
    ext_x, ext_y = width * gsd, height * gsd
    sar_shape = (int(round(ext_y / sar_gsd)), int(round(ext_x / sar_gsd)))
    if min(sar_shape) < 8:
        raise DataError(f"sar_gsd {sar_gsd} gives a {sar_shape[1]}x{sar_shape[0]} SAR image",
                        "use a sar_gsd at most 1/8 of the scene extent")

    layout = generate_scene_layout(height, width, seed, gsd=gsd)
    optical = render_optical(layout, seed)
    if math.isclose(sar_gsd, gsd, rel_tol=1e-9):
        sar = render_sar(layout, seed, look_direction, incidence_deg, gsd=gsd, looks=looks)
    else:
        clean = render_sar(layout, seed, look_direction, incidence_deg, gsd=gsd, looks=None)
        resampled = _resample_area(clean, gsd, sar_shape, sar_gsd)
        sar = apply_speckle(resampled, looks, _scene_rng(seed, _STREAM_SAR_RESAMPLED))
    sar = np.maximum(sar, 0.0).astype(np.float32)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_opt = as_affine((gsd, 0.0, ox, 0.0, -gsd, oy))
    t_sar = as_affine((sar_gsd, 0.0, ox + dx, 0.0, -sar_gsd, oy + dy))
    paths = ScenePaths(optical=out / "optical.tif", sar=out / "sar.tif", heights=out / "heights.tif",
                       meta=out / "meta.json")
    write_georaster(paths.optical, np.moveaxis(optical, -1, 0), t_opt, crs)
    write_georaster(paths.sar, sar, t_sar, crs)
    write_georaster(paths.heights, layout.heights.astype(np.float32), t_opt, crs)
    meta = {
        "generator": "sarbridge.data.synthetic.scene",
        "version": SCENE_GENERATOR_VERSION,
        "seed": int(seed),
        "crs": crs,
        "origin": [ox, oy],
        "optical": {"file": paths.optical.name, "height": int(height), "width": int(width), "gsd": gsd,
                    "transform": list(t_opt)[:6], "sun_azimuth_deg": SUN_AZIMUTH_DEG,
                    "sun_elevation_deg": SUN_ELEVATION_DEG},
        "sar": {"file": paths.sar.name, "height": sar_shape[0], "width": sar_shape[1], "gsd": sar_gsd,
                "transform": list(t_sar)[:6], "offset_m": [dx, dy], "look_direction": look_direction,
                "incidence_deg": float(incidence_deg), "looks": looks, "units": "linear intensity"},
        "heights": {"file": paths.heights.name, "units": "m"},
        "classes": list(SCENE_CLASSES),
        "class_counts": layout.class_counts(),
        "num_buildings": layout.num_buildings,
        "max_height_m": float(layout.heights.max()),
        "grid_angle_deg": layout.grid_angle_deg,
        "min_size_px": MIN_SCENE_SIZE,
    }
    atomic_write_json(paths.meta, meta)
    return paths

