"""A synthetic SAR -> optical localisation set written in the released SN6-CMPC layout.

:func:`generate_sn6_layout` draws procedural city scenes (:mod:`~sarbridge.data.synthetic.scene`),
cuts each optical scene on a grid into non-overlapping ``patch_size`` pixel references and cuts
SAR query patches from the SAR rendering of the same ground, then writes them as CMPC's
``data/dataset_sn6loc.py`` reads SN6-CMPC (and :func:`sarbridge.tasks.geo.sn6.read_cmpc_sn6` too)::

    ROOT/{train,test}/annotations/opt/<id>.json   {"id", "pos": {"x", "y"}, "file_path"}
    ROOT/{train,test}/annotations/sar/<n>.json    {"id", "pos": {"x", "y"}, "file_path", "near_id": [...]}
    ROOT/{train,test}/imgs/opt/<id>.png           uint8 RGB patches
    ROOT/{train,test}/imgs/sar/<n>.tif            float32 linear SAR intensity patches
    ROOT/meta.json                                generator, arguments, counts

Each split is made of ``ceil(references / grid**2)`` independent scene tiles of ``grid x grid``
reference cells (plus a half-patch margin, so every query stays inside the rendered ground);
the tiles lie side by side along ``x`` with a gap, so no patch of one tile overlaps another tile.
``pos`` is the patch centre in metres (``x`` east, ``y`` north; ``gsd`` metres per pixel).

A query is drawn around a seeded choice of references (``query_fraction`` of them): ``aligned``
queries are cut on the reference grid, ``arbitrary`` ones shifted by up to ``max_shift`` of the
patch side along each axis (below half a patch, so the reference drawn around stays the one it
overlaps most). Its ``id`` is that reference's id and ``near_id`` lists every reference it
overlaps, by decreasing overlap (the first is the match, as in the release). Optical ids run over
the whole set (train first); SAR files are numbered from 0 in each split.

The output depends only on the arguments. Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image

from sarbridge.core.errors import DataError
from sarbridge.core.progress import progress_bar
from sarbridge.core.resources import check_disk, check_memory
from sarbridge.core.utils import atomic_write, atomic_write_json
from sarbridge.data.synthetic.hoss_layout import generated_by
from sarbridge.data.synthetic.scene_layout import generate_scene_layout
from sarbridge.data.synthetic.scene_render import render_optical, render_sar

__all__ = ["SN6_GENERATOR", "generate_sn6_layout"]

#: The ``generator`` name in ``meta.json`` (a folder holding it may be replaced with ``overwrite``).
SN6_GENERATOR = "sarbridge.data.synthetic.sn6_layout"
_SETTINGS = ("aligned", "arbitrary")
_TILE_GAP_M = 1000.0
#: bytes per scene pixel while a tile is rendered (scene.SCENE_BYTES_PER_PIXEL), and per patch on disk
_TILE_BYTES_PER_PIXEL = 200
_DISK_BYTES_PER_PATCH_PIXEL = 4 + 3


def _write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda p: p.write_bytes(data))


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _tif(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, photometric="minisblack", metadata=None)
    return buf.getvalue()


def _overlaps(cx: float, cy: float, centres: np.ndarray, side: float) -> np.ndarray:
    """Overlap areas of a ``side`` square at ``(cx, cy)`` with the squares at ``centres``."""
    ox = np.clip(side - np.abs(centres[:, 0] - cx), 0.0, None)
    oy = np.clip(side - np.abs(centres[:, 1] - cy), 0.0, None)
    return ox * oy


def _prepare(root: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``root`` unless ``overwrite`` and it holds a set this generator wrote."""
    if root.exists() and not root.is_dir():
        raise DataError(f"'{root}' is a file", "pass a folder to write the SN6-CMPC layout into")
    if not root.is_dir() or not any(root.iterdir()):
        return
    ours = generated_by(root, SN6_GENERATOR)
    if not overwrite:
        raise DataError(f"'{root}' is not empty", "pass overwrite=True (--overwrite) to replace a generated set, "
                                                  "or choose another folder")
    if not ours:
        raise DataError(f"'{root}' holds files this generator did not write (no {SN6_GENERATOR} meta.json)",
                        "choose an empty or new folder")
    for split in ("train", "test"):
        if (root / split).is_dir():
            shutil.rmtree(root / split)


def _check_args(train_references: int, test_references: int, grid: int, patch_size: int, gsd: float,
                setting: str, query_fraction: float, max_shift: float, seed: int) -> None:
    if train_references < 1 or test_references < 1:
        raise DataError(f"references per split must be >= 1, got train {train_references}, test {test_references}",
                        "ask for at least one reference in each split")
    if grid < 1 or patch_size < 8:
        raise DataError(f"grid {grid} / patch_size {patch_size} too small", "use grid >= 1 and patch_size >= 8")
    if not (math.isfinite(gsd) and gsd > 0):
        raise DataError(f"gsd {gsd!r} is not a positive number of metres", "pass e.g. gsd=0.5")
    if setting not in _SETTINGS:
        raise DataError(f"unknown setting {setting!r}", "use aligned or arbitrary")
    if not 0.0 < query_fraction <= 1.0:
        raise DataError(f"query_fraction {query_fraction} is out of range", "use a fraction in (0, 1]")
    if not 0.0 <= max_shift < 0.5:
        raise DataError(f"max_shift {max_shift} is out of range",
                        "use a fraction of the patch side in [0, 0.5) (the match must stay the largest overlap)")
    if seed < 0:
        raise DataError(f"seed {seed} is negative", "pass a non-negative seed")


def _tile_seed(seed: int, split: int, tile: int) -> int:
    return int(np.random.SeedSequence([seed, split, tile]).generate_state(1)[0])


def generate_sn6_layout(
    root: str | Path,
    train_references: int = 1024,
    test_references: int = 256,
    grid: int = 8,
    patch_size: int = 200,
    gsd: float = 0.5,
    setting: str = "arbitrary",
    query_fraction: float = 1.0,
    max_shift: float = 0.45,
    looks: float | None = 1,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a synthetic SN6-CMPC-layout set (module docstring).

    Args:
        root: the variant folder to write (e.g. ``SN6-CMPC/samearea``); created.
        train_references: optical reference patches of ``train/``.
        test_references: optical reference patches of ``test/``.
        grid: reference cells per side of one scene tile (a tile renders ``grid * patch_size + patch_size`` px).
        patch_size: patch side in pixels (CMPC: 200).
        gsd: metres per pixel of both modalities (SpaceNet-6: 0.5).
        setting: ``aligned`` (queries on the reference grid) or ``arbitrary`` (shifted).
        query_fraction: the share of references a SAR query is drawn around (seeded choice).
        max_shift: largest shift of an arbitrary query, as a fraction of the patch side (< 0.5).
        looks: SAR speckle looks (None: noise-free intensity).
        seed: master seed (non-negative).
        overwrite: replace a set this generator wrote before in ``root``.
        progress: show a progress bar over the tiles.

    Returns:
        ``root``.

    Raises:
        DataError: bad arguments, a non-empty ``root`` without ``overwrite`` or holding foreign files.
        ResourceError: a tile would not fit in memory, or the set on the disk.
    """
    _check_args(train_references, test_references, grid, patch_size, gsd, setting, query_fraction, max_shift, seed)
    root = Path(root)
    side = grid * patch_size + patch_size  # half a patch of margin on every side
    check_memory(float(side) ** 2 * _TILE_BYTES_PER_PIXEL, f"a {side:,} x {side:,} px scene tile",
                 "use a smaller grid")
    n_patches = 2 * (train_references + test_references)
    check_disk(root.parent if not root.exists() else root, n_patches * patch_size**2 * _DISK_BYTES_PER_PATCH_PIXEL,
               f"{n_patches:,} patches", "generate fewer references or write to a larger disk")
    _prepare(root, overwrite)
    per_tile = grid * grid
    tiles = [(s, name, t) for s, (name, n) in enumerate((("train", train_references), ("test", test_references)))
             for t in range(math.ceil(n / per_tile))]
    wanted = {"train": train_references, "test": test_references}
    counts: dict[str, dict[str, int]] = {"train": {"references": 0, "queries": 0}, "test": {"references": 0, "queries": 0}}
    next_id = 0
    tile_w_m = side * gsd
    bar = progress_bar(tiles, desc="SN6-CMPC layout tiles", unit="tile", enabled=progress)
    for s, name, t in bar:
        tseed = _tile_seed(seed, s, t)
        layout = generate_scene_layout(side, side, tseed, gsd=gsd)
        optical = render_optical(layout, tseed)
        sar = np.maximum(render_sar(layout, tseed, gsd=gsd, looks=looks), 0.0).astype(np.float32)
        del layout
        x0 = (s * 1_000_000.0) + t * (tile_w_m + _TILE_GAP_M)  # the test split far from the train split
        base = root / name
        n = min(per_tile, wanted[name] - counts[name]["references"])
        cells = [(r, c) for r in range(grid) for c in range(grid)][:n]
        half = patch_size // 2
        # reference cell (r, c) covers pixels [half + r*P, half + (r+1)*P) x [half + c*P, ...)
        centres_px = np.array([[half + c * patch_size + half, half + r * patch_size + half] for r, c in cells], float)
        centres_m = np.column_stack([x0 + centres_px[:, 0] * gsd, -centres_px[:, 1] * gsd])
        ids = list(range(next_id, next_id + n))
        next_id += n
        for (r, c), rid, (x, y) in zip(cells, ids, centres_m):
            top, left = half + r * patch_size, half + c * patch_size
            _write_bytes(base / "imgs" / "opt" / f"{rid}.png", _png(optical[top:top + patch_size, left:left + patch_size]))
            atomic_write_json(base / "annotations" / "opt" / f"{rid}.json",
                              {"id": rid, "pos": {"x": float(x), "y": float(y)}, "file_path": f"{rid}.png"})
        rng = np.random.default_rng(np.random.SeedSequence([seed, s, t, 1]))
        chosen = np.sort(rng.permutation(n)[:max(1, int(round(query_fraction * n)))])
        for j in chosen:
            r, c = cells[j]
            if setting == "arbitrary":
                dx, dy = (int(v) for v in np.rint(rng.uniform(-max_shift, max_shift, 2) * patch_size))
            else:
                dx = dy = 0
            top, left = half + r * patch_size + dy, half + c * patch_size + dx
            cx_px, cy_px = left + half, top + half
            qx, qy = x0 + cx_px * gsd, -cy_px * gsd
            areas = _overlaps(qx, qy, centres_m, patch_size * gsd)
            order = [int(k) for k in np.lexsort((np.arange(n), -areas)) if areas[k] > 0]
            qn = counts[name]["queries"]
            _write_bytes(base / "imgs" / "sar" / f"{qn}.tif", _tif(sar[top:top + patch_size, left:left + patch_size]))
            atomic_write_json(base / "annotations" / "sar" / f"{qn}.json",
                              {"id": ids[j], "pos": {"x": float(qx), "y": float(qy)}, "file_path": f"{qn}.tif",
                               "near_id": [ids[k] for k in order]})
            counts[name]["queries"] += 1
        counts[name]["references"] += n
    bar.close()
    meta: dict[str, Any] = {
        "generator": SN6_GENERATOR, "layout": "sn6-cmpc", "seed": seed,
        "params": {"train_references": train_references, "test_references": test_references, "grid": grid,
                   "patch_size": patch_size, "gsd": gsd, "setting": setting, "query_fraction": query_fraction,
                   "max_shift": max_shift, "looks": looks},
        "pos_units": "metres (x east, y north; patch centres)", "splits": counts,
    }
    atomic_write_json(root / "meta.json", meta)
    return root
