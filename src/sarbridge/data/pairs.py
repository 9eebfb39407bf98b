"""Paired optical / SAR data for contrastive pretraining: readers for common layouts and a Dataset.

Every reader returns a list of :class:`PairItem` (an optical source, a SAR source, a key and a
group); a source is either an image path (read with :func:`sarbridge.data.io.read_image`) or a
picklable loader that returns the raw array. A :class:`PairItem` also unpacks as
``optical, sar = item``.

Layouts (:func:`read_pairs` dispatches on the name):

``sen12``
    SEN1-2 style: ``ROI*/s1_N/..._s1_N_pK.png`` with the optical twin at the same path where the
    ``s1`` tokens of folder and file names read ``s2`` (``ROI*/s2_N/..._s2_N_pK.png``).
``qxs``
    QXS-SAROPT style: ``opt/`` (or ``optical/``) and ``sar/`` folders holding files of the same
    name (the stem is matched, so ``opt/a.png`` pairs with ``sar/a.tif``).
``manifest``
    sarbridge's manifest CSV (:mod:`sarbridge.data.manifest`): images with the same ``id`` and
    different modalities form pairs; by default only the ``train`` split is used, so test
    identities never reach pretraining. An id with ``a`` optical and ``b`` SAR images gives
    ``max(a, b)`` pairs (the shorter list is cycled), so every image is used.
``bigearthnet``
    BigEarthNet Sentinel-1/2 patches as ``.npz`` (``s1/{s1_name}.npz`` with ``VV``, ``VH`` and
    ``s2/{patch_id}.npz`` with the bands), paired by ``pairs.csv`` (``patch_id``, ``s1_name``)
    or, without it, by the MGRS tile and grid row/column at the end of the names.
    SAR: see :class:`BigEarthNetSARLoader`; optical: see :class:`BigEarthNetRGBLoader`.
``synthetic``
    a set written by :func:`sarbridge.data.synthetic.generate_hoss_dataset`: its ``pairs.csv``
    lists same-pose optical/SAR chips. Only training identities (``bounding_box_train``) are
    used unless ``include_test=True``.

:class:`PairDataset` turns pairs into tensors through a :class:`~sarbridge.data.transforms.PreprocessSpec`
(the same per-modality conversion, resizing and normalisation as re-identification).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from sarbridge.data.io import IMAGE_SUFFIXES, read_image
from sarbridge.data.records import OPTICAL, SAR
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.core.errors import DataError

__all__ = [
    "LAYOUTS",
    "SCENE_LAYOUTS",
    "BigEarthNetRGBLoader",
    "BigEarthNetSARLoader",
    "PairDataset",
    "PairItem",
    "load_source",
    "read_bigearthnet_pairs",
    "read_manifest_pairs",
    "read_pairs",
    "read_qxs_pairs",
    "read_sen12_pairs",
    "read_synthetic_pairs",
    "split_pairs",
]

LAYOUTS = ("sen12", "qxs", "manifest", "bigearthnet", "synthetic")
#: Layouts of fixed-size scene patches: the ship-size token carries no information there.
SCENE_LAYOUTS = ("sen12", "qxs", "bigearthnet")

Source = str | Callable[[], np.ndarray]


@dataclass(frozen=True)
class PairItem:
    """One optical / SAR pair.

    Attributes:
        optical: optical image path, or a loader returning the raw array.
        sar: SAR image path, or a loader returning the raw array.
        key: unique name of the pair (for messages and results).
        group: pairs with the same group show the same object (a ship id, a place); validation
            counts any SAR image of the query's group as a match, and the contrastive loss does
            not treat them as negatives. Defaults to ``key``.
        gsd_optical, gsd_sar: metres per pixel when the layout records them (size token).
        meta: free-form metadata of the layout (e.g. MGRS tile and grid cell).
    """

    optical: Source
    sar: Source
    key: str
    group: str = ""
    gsd_optical: float | None = None
    gsd_sar: float | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.group:
            object.__setattr__(self, "group", self.key)

    def __iter__(self) -> Iterator[Source]:
        return iter((self.optical, self.sar))


def load_source(src: Source) -> np.ndarray:
    """The raw array of a source: ``read_image(path)`` or ``loader()``."""
    if isinstance(src, (str, Path)):
        return read_image(src)
    return np.asarray(src())


def _require_dir(path: Path, what: str, hint: str) -> None:
    if not path.is_dir():
        raise DataError(f"{what} '{path}' not found", hint)


def _images(folder: Path, recursive: bool = False) -> list[Path]:
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _unmatched_error(what: str, names: Sequence[str], root: Path, hint: str) -> DataError:
    shown = ", ".join(f"'{n}'" for n in list(names)[:3])
    more = f" (and {len(names) - 3} more)" if len(names) > 3 else ""
    return DataError(f"{len(names)} {what} in '{root}' have no partner: {shown}{more}", hint)


def _nonempty(items: list[PairItem], layout: str, root: Path | str) -> list[PairItem]:
    if not items:
        raise DataError(f"no optical/SAR pairs found in '{root}' (layout '{layout}')",
                        "check --data and --layout (see docs/pretraining.md for the layouts)")
    return items


# --- SEN1-2 ------------------------------------------------------------------------------------

_S1_DIR = re.compile(r"^s1(?:[_\-.].*)?$", re.IGNORECASE)
_S1_TOKEN = re.compile(r"(^|[_\-.])([sS])1(?=$|[_\-.])")


def _s1_to_s2(part: str) -> str:
    return _S1_TOKEN.sub(r"\g<1>\g<2>2", part)


def read_sen12_pairs(root: str | Path, strict: bool = True) -> list[PairItem]:
    """SEN1-2 style pairs: every image under an ``s1*`` folder pairs with its ``s2`` twin.

    The twin's path replaces each ``s1`` token (delimited by ``_``, ``-``, ``.`` or the ends) of
    the folder and file names below ``root`` by ``s2``:
    ``ROIs1158_spring/s1_7/ROIs1158_spring_s1_7_p30.png`` ->
    ``ROIs1158_spring/s2_7/ROIs1158_spring_s2_7_p30.png``.

    Args:
        root: dataset folder (holding the ``s1*`` folders at any depth).
        strict: raise on SAR images without an optical twin (else drop them).

    Raises:
        DataError: missing folder, no ``s1*`` folder, unmatched names (strict) or no pairs.
    """
    r = Path(root)
    _require_dir(r, "SEN1-2 folder", "pass the folder holding ROI*/s1_*/ and ROI*/s2_*/")
    s1_dirs = sorted(d for d in r.rglob("*") if d.is_dir() and _S1_DIR.match(d.name))
    if not s1_dirs:
        raise DataError(f"'{r}' holds no s1_* folder (SEN1-2 layout)", "pass the SEN1-2 root, or choose another --layout")
    items, unmatched = [], []
    for d in s1_dirs:
        for p in _images(d):
            rel = p.relative_to(r)
            twin = r.joinpath(*(_s1_to_s2(part) for part in rel.parts))
            if not twin.is_file():
                unmatched.append(rel.as_posix())
                continue
            items.append(PairItem(optical=str(twin), sar=str(p), key=rel.as_posix()))
    if unmatched and strict:
        raise _unmatched_error("SAR (s1) images", unmatched, r,
                               "each s1_*/NAME_s1_* needs an s2_*/NAME_s2_* twin (s1 -> s2 in folder and file names)")
    return _nonempty(items, "sen12", r)


# --- QXS-SAROPT --------------------------------------------------------------------------------

def _find_child(r: Path, names: Sequence[str]) -> Path | None:
    wanted = {n.lower() for n in names}
    for c in sorted(r.iterdir()):
        if c.is_dir() and c.name.lower() in wanted:
            return c
    return None


def read_qxs_pairs(root: str | Path, strict: bool = True) -> list[PairItem]:
    """QXS-SAROPT style pairs: ``opt/NAME`` with ``sar/NAME`` (file stems matched).

    Raises:
        DataError: missing folders, unmatched names (strict: in either direction) or no pairs.
    """
    r = Path(root)
    _require_dir(r, "QXS-SAROPT folder", "pass the folder holding opt/ and sar/")
    opt_dir, sar_dir = _find_child(r, ("opt", "optical")), _find_child(r, ("sar",))
    if opt_dir is None or sar_dir is None:
        missing = " and ".join(n for n, d in (("opt/", opt_dir), ("sar/", sar_dir)) if d is None)
        raise DataError(f"'{r}' lacks {missing} (QXS-SAROPT layout)", "pass the folder holding opt/ and sar/")
    opt = {p.stem: p for p in _images(opt_dir)}
    sar = {p.stem: p for p in _images(sar_dir)}
    only_opt = sorted(set(opt) - set(sar))
    only_sar = sorted(set(sar) - set(opt))
    if strict and (only_opt or only_sar):
        names = [f"opt/{n}" for n in only_opt] + [f"sar/{n}" for n in only_sar]
        raise _unmatched_error("images", names, r, "opt/ and sar/ must hold files with the same names")
    items = [PairItem(optical=str(opt[k]), sar=str(sar[k]), key=k) for k in sorted(set(opt) & set(sar))]
    return _nonempty(items, "qxs", r)


# --- manifest ----------------------------------------------------------------------------------

def read_manifest_pairs(path: str | Path, splits: Sequence[str] = ("train",)) -> list[PairItem]:
    """Pairs from a manifest CSV: images of the same ``id`` (>= 0) and different modalities.

    Args:
        path: manifest CSV.
        splits: manifest splits to use (default only ``train``: test identities stay unseen).

    Raises:
        DataError: manifest problems (see :func:`~sarbridge.data.manifest.read_manifest`) or no
            identity with both modalities in the chosen splits.
    """
    from sarbridge.data.manifest import read_manifest

    samples = [s for s in read_manifest(path) if s.split in set(splits) and s.pid >= 0]
    by: dict[int, dict[str, list[str]]] = {}
    for s in samples:
        by.setdefault(s.pid, {OPTICAL: [], SAR: []})[s.modality].append(s.path)
    items = []
    for pid in sorted(by):
        opt, sar = sorted(by[pid][OPTICAL]), sorted(by[pid][SAR])
        if not opt or not sar:
            continue
        for i in range(max(len(opt), len(sar))):
            items.append(PairItem(optical=opt[i % len(opt)], sar=sar[i % len(sar)], key=f"{pid}#{i}", group=str(pid)))
    if not items:
        raise DataError(f"manifest '{path}' has no id with both an optical and a SAR image in split(s) "
                        f"{', '.join(splits)}", "pairs are images sharing an id across modalities")
    return items


# --- BigEarthNet S1/S2 -------------------------------------------------------------------------

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
    _require_dir(r, "BigEarthNet folder", "pass the folder holding s1/, s2/ (and pairs.csv)")
    for sub in ("s1", "s2"):
        _require_dir(r / sub, "folder", f"the BigEarthNet pair layout needs {sub}/ with .npz patches")
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
            raise _unmatched_error("pairs.csv rows", absent, r, "every row needs s1/{s1_name}.npz and s2/{patch_id}.npz")
        rows = [row for row in rows if row["patch_id"] not in set(absent)]
    else:
        s1 = {_cell(p.stem): p.stem for p in sorted((r / "s1").glob("*.npz"))}
        s2 = {_cell(p.stem): p.stem for p in sorted((r / "s2").glob("*.npz"))}
        s1.pop(None, None)
        s2.pop(None, None)
        lonely = sorted([f"s1/{s1[c]}" for c in set(s1) - set(s2)] + [f"s2/{s2[c]}" for c in set(s2) - set(s1)])
        if lonely and strict:
            raise _unmatched_error("patches", lonely, r, "add pairs.csv (patch_id,s1_name) or the missing twins")
        rows = [{"patch_id": s2[c], "s1_name": s1[c]} for c in sorted(set(s1) & set(s2))]
    items = []
    for row in rows:
        meta = {k: v for k, v in row.items() if k not in ("patch_id", "s1_name")}
        cell = _cell(row["patch_id"])
        if cell and "mgrs_tile" not in meta:
            meta.update({"mgrs_tile": cell[0], "grid_row": str(cell[1]), "grid_col": str(cell[2])})
        items.append(PairItem(
            optical=BigEarthNetRGBLoader(str(r / "s2" / f"{row['patch_id']}.npz"), *rgb_percentiles),
            sar=BigEarthNetSARLoader(str(r / "s1" / f"{row['s1_name']}.npz"), sar_mode, tuple(db_range)),
            key=row["patch_id"], gsd_optical=10.0, gsd_sar=10.0, meta=meta,
        ))
    return _nonempty(items, "bigearthnet", r)


# --- synthetic ---------------------------------------------------------------------------------

_SYNTH_DIRS = ("bounding_box_train", "query", "bounding_box_test")


def read_synthetic_pairs(root: str | Path, include_test: bool = False) -> list[PairItem]:
    """Same-pose pairs listed in the ``pairs.csv`` of a generated set.

    Args:
        root: folder written by :func:`~sarbridge.data.synthetic.generate_hoss_dataset`.
        include_test: also use pairs of test identities (``query``/``bounding_box_test``);
            off by default, so pretraining never sees the identities a model is tested on.

    Raises:
        DataError: missing folder or ``pairs.csv``, a listed file not found, or no pairs.
    """
    r = Path(root)
    _require_dir(r, "synthetic dataset folder", "pass a folder written by 'sarbridge synth'")
    csv_path = r / "pairs.csv"
    if not csv_path.is_file():
        raise DataError(f"'{csv_path}' not found", "generate the set with paired poses (the default of 'sarbridge synth')")
    dirs = _SYNTH_DIRS if include_test else _SYNTH_DIRS[:1]
    items = []
    with csv_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("optical", "sar", "pid") if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"'{csv_path}' lacks column(s) {', '.join(missing)}", "header must include optical,sar,pid")
        for line, row in enumerate(reader, start=2):
            found = []
            for name in (row["optical"], row["sar"]):
                hit = next((r / d / name for d in _SYNTH_DIRS if (r / d / name).is_file()), None)
                if hit is None:
                    raise DataError(f"{csv_path}:{line}: image '{name}' not found in {', '.join(_SYNTH_DIRS)}",
                                    "regenerate the dataset")
                found.append(hit)
            if any(p.parent.name not in dirs for p in found):
                continue

            def gsd(key: str) -> float | None:
                raw = (row.get(key) or "").strip()
                return float(raw) if raw else None

            items.append(PairItem(optical=str(found[0]), sar=str(found[1]), key=Path(row["optical"]).stem,
                                  group=str(row["pid"]), gsd_optical=gsd("gsd_optical"), gsd_sar=gsd("gsd_sar")))
    return _nonempty(items, "synthetic", r)


# --- dispatch, split, dataset ------------------------------------------------------------------

def read_pairs(root: str | Path, layout: str, **kwargs: Any) -> list[PairItem]:
    """Read pairs of ``layout`` (one of :data:`LAYOUTS`) from ``root`` (a folder or, for
    ``manifest``, the CSV); ``kwargs`` go to the layout's reader."""
    readers: dict[str, Callable[..., list[PairItem]]] = {
        "sen12": read_sen12_pairs, "qxs": read_qxs_pairs, "manifest": read_manifest_pairs,
        "bigearthnet": read_bigearthnet_pairs, "synthetic": read_synthetic_pairs,
    }
    if layout not in readers:
        raise DataError(f"unknown pair layout '{layout}'", f"use one of {', '.join(LAYOUTS)}")
    if not str(root):
        raise DataError("no pair data given", "pass --data PATH")
    return readers[layout](root, **kwargs)


def split_pairs(items: Sequence[PairItem], fraction: float, seed: int = 0) -> tuple[list[PairItem], list[PairItem]]:
    """Hold out a seeded ``fraction`` of the *groups* (so no group is in both parts).

    At least two groups are held out when any are (retrieval needs a choice) and at least two
    stay for training; with fewer than four groups nothing is held out.

    Returns:
        ``(train, val)``.
    """
    groups = sorted({it.group for it in items})
    if fraction <= 0 or len(groups) < 4:
        return list(items), []
    n_val = min(max(int(round(fraction * len(groups))), 2), len(groups) - 2)
    rng = np.random.default_rng(seed)
    val = {groups[i] for i in rng.choice(len(groups), size=n_val, replace=False).tolist()}
    return [it for it in items if it.group not in val], [it for it in items if it.group in val]


class PairDataset(Dataset):
    """Optical and SAR tensors of each pair, prepared by a :class:`PreprocessSpec`.

    Items are dicts: ``optical`` and ``sar`` (3, H, W), ``optical_size`` and ``sar_size`` (3,)
    (the ship-size token input, or zeros with ``size_features="zero"``), ``group`` (contiguous
    integer of the pair's group) and ``index``.

    Args:
        items: the pairs.
        spec: preprocessing (SAR conversion, size, normalisation).
        transform: applied to each image independently (default ``spec.eval_transform()``).
        size_features: ``chip`` (from the image size and GSD, per-pair GSD when recorded) or
            ``zero`` (for fixed-size scene patches, where the size carries no information).
        cache: keep the decoded uint8 images in memory.
    """

    def __init__(
        self,
        items: Sequence[PairItem],
        spec: PreprocessSpec,
        transform: Callable | None = None,
        size_features: str = "chip",
        cache: bool = False,
    ) -> None:
        if size_features not in ("chip", "zero"):
            raise ValueError(f"size_features must be 'chip' or 'zero', got {size_features!r}")
        self.items = list(items)
        self.spec = spec
        self.transform = transform or spec.eval_transform()
        self.size_features = size_features
        self.cache = cache
        self.group_index = {g: i for i, g in enumerate(sorted({it.group for it in self.items}))}
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.items)

    def _size(self, arr: np.ndarray, modality: str, gsd: float | None) -> np.ndarray:
        if self.size_features == "zero":
            return np.zeros(3, dtype=np.float32)
        if gsd is None:
            return self.spec.size_features(arr.shape[0], arr.shape[1], modality)
        spec = PreprocessSpec(**{**self.spec.to_dict(), f"gsd_{'sar' if modality == SAR else 'optical'}": gsd})
        return spec.size_features(arr.shape[0], arr.shape[1], modality)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if index in self._cache:
            return self._cache[index]
        it = self.items[index]
        opt, sar = load_source(it.optical), load_source(it.sar)
        out = (self.spec.to_uint8(opt, OPTICAL), self.spec.to_uint8(sar, SAR),
               self._size(opt, OPTICAL, it.gsd_optical), self._size(sar, SAR, it.gsd_sar))
        if self.cache:
            self._cache[index] = out
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        from PIL import Image

        opt, sar, opt_size, sar_size = self._load(index)
        return {
            "optical": self.transform(Image.fromarray(opt)),
            "sar": self.transform(Image.fromarray(sar)),
            "optical_size": torch.from_numpy(opt_size),
            "sar_size": torch.from_numpy(sar_size),
            "group": self.group_index[self.items[index].group],
            "index": index,
        }
