"""Readers of the pair layouts (see :mod:`sarbridge.data.pairs`) and :func:`read_pairs`, which picks one by name."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sarbridge.core.errors import DataError
from sarbridge.data.hoss import GALLERY_DIR, QUERY_DIR, TRAIN_DIR, find_hoss_root, read_hoss_folder
from sarbridge.data.manifest import read_manifest
from sarbridge.data.pairs.bigearthnet import read_bigearthnet_pairs
from sarbridge.data.pairs.items import PairItem, list_images, nonempty, require_dir, unmatched_error
from sarbridge.data.pairs.os_dataset import read_os_pairs
from sarbridge.data.records import OPTICAL, Sample

__all__ = [
    "LAYOUTS",
    "SCENE_LAYOUTS",
    "SYNTHETIC_SPLITS",
    "read_folder_pairs",
    "read_hoss_pairs",
    "read_manifest_pairs",
    "read_pairs",
    "read_qxs_pairs",
    "read_sen12_pairs",
    "read_synthetic_pairs",
]

#: Every layout :func:`read_pairs` reads.
LAYOUTS = ("sen12", "qxs", "manifest", "bigearthnet", "synthetic", "hoss", "folder", "os")
#: Layouts of fixed-size scene patches: the ship-size token carries no information there.
SCENE_LAYOUTS = ("sen12", "qxs", "bigearthnet", "os")
#: Identities :func:`read_synthetic_pairs` can take pairs of.
SYNTHETIC_SPLITS = ("train", "test", "all")


def _by_identity(samples: Sequence[Sample]) -> dict[int, tuple[list[str], list[str]]]:
    """``pid -> (sorted optical paths, sorted SAR paths)`` of the ids (>= 0) with both modalities."""
    by: dict[int, tuple[list[str], list[str]]] = {}
    for s in samples:
        if s.pid >= 0:
            by.setdefault(s.pid, ([], []))[0 if s.modality == OPTICAL else 1].append(s.path)
    return {pid: (sorted(opt), sorted(sar)) for pid, (opt, sar) in sorted(by.items()) if opt and sar}


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
    require_dir(r, "SEN1-2 folder", "pass the folder holding ROI*/s1_*/ and ROI*/s2_*/")
    s1_dirs = sorted(d for d in r.rglob("*") if d.is_dir() and _S1_DIR.match(d.name))
    if not s1_dirs:
        raise DataError(f"'{r}' holds no s1_* folder (SEN1-2 layout)", "pass the SEN1-2 root, or choose another --layout")
    items, unmatched = [], []
    for d in s1_dirs:
        for p in list_images(d):
            rel = p.relative_to(r)
            twin = r.joinpath(*(_s1_to_s2(part) for part in rel.parts))
            if not twin.is_file():
                unmatched.append(rel.as_posix())
                continue
            items.append(PairItem(optical=str(twin), sar=str(p), key=rel.as_posix()))
    if unmatched and strict:
        raise unmatched_error("SAR (s1) images", unmatched, r,
                              "each s1_*/NAME_s1_* needs an s2_*/NAME_s2_* twin (s1 -> s2 in folder and file names)")
    return nonempty(items, "sen12", r)


# --- opt/ + sar/ folders (QXS-SAROPT, generic) -------------------------------------------------

def _find_child(r: Path, names: Sequence[str]) -> Path | None:
    wanted = {n.lower() for n in names}
    for c in sorted(r.iterdir()):
        if c.is_dir() and c.name.lower() in wanted:
            return c
    return None


_MODALITY_TOKENS = {"rgb", "sar", "opt", "optical", "eo"}


def _strip_modality_token(stem: str) -> str:
    """``a_RGB`` -> ``a`` (a trailing ``_rgb``/``_sar``/``_opt``/``_optical``/``_eo``, any case)."""
    head, sep, tail = stem.rpartition("_")
    return head if sep and head and tail.lower() in _MODALITY_TOKENS else stem


def _read_opt_sar_folders(root: str | Path, layout: str, what: str, strict: bool,
                          strip_modality_token: bool) -> list[PairItem]:
    r = Path(root)
    require_dir(r, what, "pass the folder holding opt/ and sar/")
    opt_dir, sar_dir = _find_child(r, ("opt", "optical")), _find_child(r, ("sar",))
    if opt_dir is None or sar_dir is None:
        missing = " and ".join(n for n, d in (("opt/", opt_dir), ("sar/", sar_dir)) if d is None)
        raise DataError(f"'{r}' lacks {missing} (layout '{layout}')",
                        "put paired images with matching names in opt/ (or optical/) and sar/")

    def index(folder: Path) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for p in list_images(folder):
            key = _strip_modality_token(p.stem) if strip_modality_token else p.stem
            if key in out:
                raise DataError(f"'{out[key].name}' and '{p.name}' in '{folder}' have the same name",
                                "keep one image per name")
            out[key] = p
        return out

    opt, sar = index(opt_dir), index(sar_dir)
    only_opt = sorted(set(opt) - set(sar))
    only_sar = sorted(set(sar) - set(opt))
    if strict and (only_opt or only_sar):
        names = [f"opt/{n}" for n in only_opt] + [f"sar/{n}" for n in only_sar]
        raise unmatched_error("images", names, r, "opt/ and sar/ must hold files with the same names")
    items = [PairItem(optical=str(opt[k]), sar=str(sar[k]), key=k) for k in sorted(set(opt) & set(sar))]
    return nonempty(items, layout, r, "name the two images of a pair alike, e.g. opt/a.png and sar/a.tif")


def read_qxs_pairs(root: str | Path, strict: bool = True) -> list[PairItem]:
    """QXS-SAROPT style pairs: ``opt/NAME`` with ``sar/NAME`` (file stems matched exactly).

    Args:
        root: the folder holding ``opt/`` (or ``optical/``) and ``sar/`` (any case).
        strict: raise on images without a partner (else leave them out).

    Raises:
        DataError: missing folders, two images of one name in a folder, unmatched names
            (strict: in either direction) or no pairs.
    """
    return _read_opt_sar_folders(root, "qxs", "QXS-SAROPT folder", strict, strip_modality_token=False)


def read_folder_pairs(root: str | Path, strict: bool = False) -> list[PairItem]:
    """Pairs of ``opt/`` (or ``optical/``) and ``sar/`` matched by name, ignoring a trailing
    modality token (``opt/a_RGB.png`` pairs with ``sar/a_SAR.tif``; the key is ``a``).

    Args:
        root: the folder holding the two folders.
        strict: raise on images without a partner (default: leave them out).

    Raises:
        DataError: missing folders, two images of one name in a folder, unmatched names
            (strict) or no matching names.
    """
    return _read_opt_sar_folders(root, "folder", "data folder", strict, strip_modality_token=True)


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
    samples = [s for s in read_manifest(path) if s.split in set(splits)]
    items = []
    for pid, (opt, sar) in _by_identity(samples).items():
        for i in range(max(len(opt), len(sar))):
            items.append(PairItem(optical=opt[i % len(opt)], sar=sar[i % len(sar)], key=f"{pid}#{i}", group=str(pid)))
    if not items:
        raise DataError(f"manifest '{path}' has no id with both an optical and a SAR image in split(s) "
                        f"{', '.join(splits)}", "pairs are images sharing an id across modalities")
    return items


# --- HOSS identity pairs ----------------------------------------------------------------------

def read_hoss_pairs(root: str | Path, max_pairs_per_id: int | None = None, seed: int = 0) -> list[PairItem]:
    """Every optical x SAR pair of the same identity in ``bounding_box_train`` of a HOSS folder.

    Args:
        root: the HOSS-layout folder (or the folder above ``HOSS/``).
        max_pairs_per_id: keep at most this many pairs per id (a seeded choice; None: all).
        seed: seed of that choice (one generator drawn id after id, in id order).

    Returns:
        Pairs in id order, keyed ``{optical stem}+{SAR stem}``, grouped by id.

    Raises:
        DataError: missing folders, badly named files, or no identity with both modalities.
    """
    base = find_hoss_root(root)
    by_pid = _by_identity(read_hoss_folder(base / TRAIN_DIR, "train"))
    rng = np.random.default_rng(seed)
    items: list[PairItem] = []
    for pid, (opt, sar) in by_pid.items():
        cand = [(o, s) for o in opt for s in sar]
        if max_pairs_per_id is not None and len(cand) > max_pairs_per_id:
            keep = sorted(rng.choice(len(cand), size=max_pairs_per_id, replace=False).tolist())
            cand = [cand[i] for i in keep]
        items += [PairItem(optical=o, sar=s, key=f"{Path(o).stem}+{Path(s).stem}", group=str(pid)) for o, s in cand]
    if not items:
        raise DataError(f"no identity in '{base / TRAIN_DIR}' has both optical and SAR images",
                        "paired training needs ids with both modalities")
    return items


# --- synthetic ---------------------------------------------------------------------------------

_SYNTH_DIRS = (TRAIN_DIR, QUERY_DIR, GALLERY_DIR)


def _csv_float(row: dict[str, str], key: str) -> float | None:
    """A float cell of a CSV row, or None when the column is missing or empty."""
    raw = (row.get(key) or "").strip()
    return float(raw) if raw else None


def read_synthetic_pairs(root: str | Path, split: str = "train") -> list[PairItem]:
    """Same-pose pairs listed in the ``pairs.csv`` of a generated set.

    Args:
        root: folder written by :func:`~sarbridge.data.synthetic.generate_hoss_dataset`.
        split: ``train`` (pairs in ``bounding_box_train``: the default, so training never sees
            the identities a model is tested on), ``test`` (pairs of the held-out identities, in
            ``query``/``bounding_box_test``) or ``all``.

    Returns:
        Pairs in the file's order, keyed by the optical file's stem, grouped by ``pid`` (a pair
        without one is its own group), with the per-pair GSDs when the file lists them.

    Raises:
        DataError: missing folder or ``pairs.csv``, a listed file not found, or no pairs.
    """
    if split not in SYNTHETIC_SPLITS:
        raise DataError(f"unknown synthetic split '{split}'", f"use one of {', '.join(SYNTHETIC_SPLITS)}")
    r = Path(root)
    require_dir(r, "synthetic dataset folder", "pass a folder written by 'sarbridge synth'")
    csv_path = r / "pairs.csv"
    if not csv_path.is_file():
        raise DataError(f"'{csv_path}' not found", "generate the set with paired poses (the default of 'sarbridge synth')")
    items = []
    with csv_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("optical", "sar") if c not in (reader.fieldnames or [])]
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
            in_train = [p.parent.name == TRAIN_DIR for p in found]
            if (split == "train" and not all(in_train)) or (split == "test" and any(in_train)):
                continue

            items.append(PairItem(optical=str(found[0]), sar=str(found[1]), key=Path(row["optical"]).stem,
                                  group=(row.get("pid") or "").strip(), gsd_optical=_csv_float(row, "gsd_optical"),
                                  gsd_sar=_csv_float(row, "gsd_sar")))
    return nonempty(items, "synthetic", r, f"the set lists no {split} pairs: generate more identities or "
                    "use another split")


# --- by name -----------------------------------------------------------------------------------

def read_pairs(root: str | Path, layout: str, **kwargs: Any) -> list[PairItem]:
    """Read pairs of ``layout`` (one of :data:`LAYOUTS`) from ``root`` (a folder or, for
    ``manifest``, the CSV); ``kwargs`` go to the layout's reader."""
    readers: dict[str, Callable[..., list[PairItem]]] = {
        "sen12": read_sen12_pairs, "qxs": read_qxs_pairs, "manifest": read_manifest_pairs,
        "bigearthnet": read_bigearthnet_pairs, "synthetic": read_synthetic_pairs, "hoss": read_hoss_pairs,
        "folder": read_folder_pairs, "os": read_os_pairs,
    }
    if layout not in readers:
        raise DataError(f"unknown pair layout '{layout}'", f"use one of {', '.join(LAYOUTS)}")
    if not str(root):
        raise DataError("no pair data given", "pass --data PATH")
    return readers[layout](root, **kwargs)
