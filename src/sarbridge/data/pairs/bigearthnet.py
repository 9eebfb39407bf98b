"""BigEarthNet Sentinel-1/2 patch pairs (``.npz``): the ``bigearthnet`` layout and its band conversions."""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from sarbridge.core.errors import DataError
from sarbridge.data.pairs.items import PairItem, nonempty, require_dir, unmatched_error

__all__ = ["BigEarthNetRGBLoader", "BigEarthNetSARLoader", "read_bigearthnet_pairs"]

def _load_npz(path: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"patch '{p}' not found", "check the s1/ and s2/ folders")
    try:
        with np.load(p) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise DataError(f"patch '{p}' lacks band(s) {', '.join(missing)}", f"it must hold {', '.join(keys)}")
            return {k: np.asarray(z[k]) for k in keys}
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"patch '{p}' could not be read ({type(exc).__name__})", "the file is corrupt; replace it") from None


@dataclass(frozen=True)
class BigEarthNetSARLoader:
    """Sentinel-1 ``VV``/``VH`` backscatter (dB) -> one SAR intensity band (float32, H x W).

    The two polarisations are summed in linear power (``10**(dB/10)``), the total power
    ``VV + VH`` being the usual single-band intensity. Then:

    * ``mode="db"`` (default): back to dB, clipped to ``db_range`` and shifted to start at 0,
      so the values are ``[0, db_range[1] - db_range[0]]`` (a log-intensity image; sarbridge's
      SAR conversion then maps it to uint8: ``max`` divides by its maximum, ``percentile``
      drops the darkest ``alpha`` %). Sentinel-1 GRD backscatter spans roughly -25 to 0 dB
      over land, hence the default range; brighter point targets saturate.
    * ``mode="linear"``: the linear total power itself (heavy-tailed: with ``max`` scaling a
      few bright scatterers make the image mostly dark; prefer ``percentile`` or ``db``).
    """

    path: str
    mode: str = "db"
    db_range: tuple[float, float] = (-25.0, 0.0)

    def __call__(self) -> np.ndarray:
        bands = _load_npz(self.path, ("VV", "VH"))
        power = np.power(10.0, bands["VV"].astype(np.float64) / 10.0) + np.power(10.0, bands["VH"].astype(np.float64) / 10.0)
        if self.mode == "linear":
            return power.astype(np.float32)
        if self.mode != "db":
            raise DataError(f"unknown BigEarthNet SAR mode '{self.mode}'", "use db or linear")
        lo, hi = self.db_range
        db = 10.0 * np.log10(np.maximum(power, 1e-10))
        return (np.clip(db, lo, hi) - lo).astype(np.float32)


@dataclass(frozen=True)
class BigEarthNetRGBLoader:
    """Sentinel-2 ``B04, B03, B02`` (red, green, blue; uint16 reflectance x 10^4) -> uint8 RGB.

    A robust stretch: the ``low`` and ``high`` percentiles over all three bands together map to
    0 and 255 (one range for the three bands keeps the colour balance; percentiles instead of
    min/max ignore clouds and dark pixels).
    """

    path: str
    low: float = 2.0
    high: float = 98.0

    def __call__(self) -> np.ndarray:
        bands = _load_npz(self.path, ("B04", "B03", "B02"))
        rgb = np.stack([bands["B04"], bands["B03"], bands["B02"]], axis=-1).astype(np.float64)
        lo, hi = np.percentile(rgb, [self.low, self.high])
        out = 255.0 * (rgb - lo) / max(hi - lo, 1e-6)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


_CELL = re.compile(r"_T?(\d{1,2}[A-Z]{3})_(\d+)_(\d+)$")


def _cell(name: str) -> tuple[str, int, int] | None:
    m = _CELL.search(name)
    return (m[1], int(m[2]), int(m[3])) if m else None


def read_bigearthnet_pairs(
    root: str | Path,
    sar_mode: str = "db",
    db_range: tuple[float, float] = (-25.0, 0.0),
    rgb_percentiles: tuple[float, float] = (2.0, 98.0),
    strict: bool = True,
) -> list[PairItem]:
    """BigEarthNet S1/S2 ``.npz`` pairs (``s1/``, ``s2/``, optional ``pairs.csv``).

    ``pairs.csv`` (columns ``patch_id``, ``s1_name``; others are kept in ``meta``) gives the
    pairs; without it, S1 and S2 patches are matched by the MGRS tile and grid row/column ending
    their names (``..._T33UUP_37_88`` with ``..._33UUP_37_88``).

    Raises:
        DataError: missing folders or files, unmatched patches (strict) or no pairs.
    """
    if sar_mode not in ("db", "linear"):
        raise DataError(f"unknown BigEarthNet SAR mode '{sar_mode}'", "use db or linear")
    r = Path(root)
    require_dir(r, "BigEarthNet folder", "pass the folder holding s1/, s2/ (and pairs.csv)")
    for sub in ("s1", "s2"):
        require_dir(r / sub, "folder", f"the BigEarthNet pair layout needs {sub}/ with .npz patches")
    rows: list[dict[str, str]] = []
    csv_path = r / "pairs.csv"
    if csv_path.is_file():
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("patch_id", "s1_name") if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"'{csv_path}' lacks column(s) {', '.join(missing)}", "header must include patch_id,s1_name")
            rows = list(reader)
        absent = [f"{row['patch_id']}" for row in rows
                  if not (r / "s2" / f"{row['patch_id']}.npz").is_file() or not (r / "s1" / f"{row['s1_name']}.npz").is_file()]
        if absent and strict:
            raise unmatched_error("pairs.csv rows", absent, r, "every row needs s1/{s1_name}.npz and s2/{patch_id}.npz")
        rows = [row for row in rows if row["patch_id"] not in set(absent)]
    else:
        # patches whose names carry no grid cell are left out
        s1 = {c: p.stem for p in sorted((r / "s1").glob("*.npz")) if (c := _cell(p.stem)) is not None}
        s2 = {c: p.stem for p in sorted((r / "s2").glob("*.npz")) if (c := _cell(p.stem)) is not None}
        lonely = sorted([f"s1/{s1[c]}" for c in set(s1) - set(s2)] + [f"s2/{s2[c]}" for c in set(s2) - set(s1)])
        if lonely and strict:
            raise unmatched_error("patches", lonely, r, "add pairs.csv (patch_id,s1_name) or the missing twins")
        rows = [{"patch_id": s2[c], "s1_name": s1[c]} for c in sorted(set(s1) & set(s2))]
    items = []
    for row in rows:
        meta = {k: v for k, v in row.items() if k not in ("patch_id", "s1_name")}
        cell = _cell(row["patch_id"])
        if cell and "mgrs_tile" not in meta:
            meta.update({"mgrs_tile": cell[0], "grid_row": str(cell[1]), "grid_col": str(cell[2])})
        items.append(PairItem(
            optical=BigEarthNetRGBLoader(str(r / "s2" / f"{row['patch_id']}.npz"), *rgb_percentiles),
            sar=BigEarthNetSARLoader(str(r / "s1" / f"{row['s1_name']}.npz"), sar_mode,
                                     cast(tuple[float, float], tuple(db_range))),
            key=row["patch_id"], gsd_optical=10.0, gsd_sar=10.0, meta=meta,
        ))
    return nonempty(items, "bigearthnet", r)
