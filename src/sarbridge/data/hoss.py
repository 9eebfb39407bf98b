"""Reader for the HOSS ReID layout (and any Market-1501-style folder of optical/SAR chips).

Folders: ``bounding_box_train``, ``query``, ``bounding_box_test`` and optionally
``subset/O2S/{query,bounding_box_test}`` and ``subset/S2O/...``. File names
``{pid}_s{SS}c{C}_{RGB|SAR}.tif``; the modality is the last token; pid -1 is a distractor
(``-1_{NNNN}_{RGB|SAR}.tif``).
"""

from __future__ import annotations

import re
from pathlib import Path

from sarbridge.core.errors import DataError
from sarbridge.data.io import IMAGE_SUFFIXES
from sarbridge.data.records import Sample, parse_modality
from sarbridge.data.splits import SUBSET_FOLDERS, ReIDSplits, check_nonempty

TRAIN_DIR, QUERY_DIR, GALLERY_DIR = "bounding_box_train", "query", "bounding_box_test"
_NAME = re.compile(r"^(?P<pid>-?\d+)_(?:s(?P<seq>\d+)c(?P<cam>\d+)|(?P<idx>\d+))_(?P<mod>[A-Za-z0-9]+)$")


def parse_hoss_name(path: str | Path, split: str = "train") -> Sample:
    """Parse ``0001_s05c2_SAR.tif`` into a :class:`Sample`.

    Raises:
        DataError: the name does not follow the pattern or its modality is unknown.
    """
    p = Path(path)
    m = _NAME.match(p.stem)
    if m is None:
        raise DataError(
            f"file name '{p.name}' in '{p.parent}' does not follow '{{pid}}_s{{SS}}c{{C}}_{{RGB|SAR}}'",
            "rename it, or describe your files with a manifest CSV (data.format: manifest)",
        )
    modality = parse_modality(m["mod"], where=str(p))
    camid = int(m["cam"]) - 1 if m["cam"] is not None else 0
    return Sample(path=str(p), pid=int(m["pid"]), modality=modality, camid=camid, split=split)


def find_hoss_root(root: str | Path) -> Path:
    """Accept the dataset folder itself or a parent holding a ``HOSS/`` folder."""
    r = Path(root)
    if not r.is_dir():
        raise DataError(f"data folder '{r}' not found", "pass the folder holding bounding_box_train/")
    for cand in (r, r / "HOSS"):
        if (cand / QUERY_DIR).is_dir() or (cand / TRAIN_DIR).is_dir():
            return cand
    raise DataError(
        f"'{r}' holds neither {TRAIN_DIR}/ nor {QUERY_DIR}/",
        "pass the HOSS folder (with bounding_box_train, query, bounding_box_test)",
    )


def read_hoss_folder(folder: Path, split: str) -> list[Sample]:
    """All images of one folder, sorted by name."""
    if not folder.is_dir():
        raise DataError(f"folder '{folder}' not found", f"the HOSS layout needs {folder.name}/")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    samples = [parse_hoss_name(f, split) for f in files]
    check_nonempty(samples, f"split '{folder.name}'", str(folder.parent))
    return samples


def load_hoss(root: str | Path, require_train: bool = True) -> ReIDSplits:
    """Read a HOSS-layout dataset.

    Args:
        root: the folder holding the split folders (or its parent with ``HOSS/``).
        require_train: whether ``bounding_box_train`` must exist (False for evaluation only).

    Raises:
        DataError: missing folders, empty splits or badly named files.
    """
    base = find_hoss_root(root)
    train = read_hoss_folder(base / TRAIN_DIR, "train") if require_train or (base / TRAIN_DIR).is_dir() else []
    query = read_hoss_folder(base / QUERY_DIR, "query")
    gallery = read_hoss_folder(base / GALLERY_DIR, "gallery")
    subsets = {}
    for name, sub in SUBSET_FOLDERS.items():
        d = base / "subset" / sub
        if (d / QUERY_DIR).is_dir() and (d / GALLERY_DIR).is_dir():
            subsets[name] = (read_hoss_folder(d / QUERY_DIR, "query"), read_hoss_folder(d / GALLERY_DIR, "gallery"))
    return ReIDSplits(train=train, query=query, gallery=gallery, subsets=subsets, root=str(base))
