"""The OS dataset layout (optical / SAR patch pairs as CMPC's ``data/data_os.py`` reads them).

``ROOT/train/`` and ``ROOT/test/`` each hold flat image pairs ``opt<N>.png`` / ``sar<N>.png``; the
number ``N`` (the CMPC ``id``) pairs the two. CMPC trains on ``train/`` and evaluates on
``test/`` (``opt<N>`` is the one match of ``sar<N>``); there are no positions.
"""

from __future__ import annotations

import re
from pathlib import Path

from sarbridge.core.errors import DataError
from sarbridge.data.pairs.items import PairItem, list_images, nonempty, require_dir, unmatched_error

__all__ = ["OS_SPLITS", "read_os_pairs"]

#: Splits :func:`read_os_pairs` can read (``all``: both folders).
OS_SPLITS = ("train", "test", "all")

_NAME = re.compile(r"^(opt|sar)(\d+)$", re.IGNORECASE)


def _split_folder(folder: Path, split: str, strict: bool) -> list[PairItem]:
    found: dict[str, dict[int, Path]] = {"opt": {}, "sar": {}}
    for p in list_images(folder):
        m = _NAME.match(p.stem)
        if m is None:
            if strict:
                raise DataError(f"'{p}' is not named opt<N> or sar<N> (layout 'os')",
                                "keep only the opt<N>.png / sar<N>.png pairs in the split folders")
            continue
        kind, n = m.group(1).lower(), int(m.group(2))
        if n in found[kind]:
            raise DataError(f"'{found[kind][n].name}' and '{p.name}' in '{folder}' have the same number",
                            "keep one image per number and modality")
        found[kind][n] = p
    opt, sar = found["opt"], found["sar"]
    if strict:
        unmatched = [f"sar{n}" for n in sorted(set(sar) - set(opt))] + [f"opt{n}" for n in sorted(set(opt) - set(sar))]
        if unmatched:
            raise unmatched_error("images", unmatched, folder, "every sar<N> needs its opt<N> (and back)")
    return [PairItem(optical=str(opt[n]), sar=str(sar[n]), key=f"{split}/{n}", meta={"split": split, "id": n})
            for n in sorted(set(opt) & set(sar))]


def read_os_pairs(root: str | Path, split: str = "train", strict: bool = True) -> list[PairItem]:
    """OS-dataset pairs: ``ROOT/<split>/opt<N>.<ext>`` with ``ROOT/<split>/sar<N>.<ext>``.

    Args:
        root: the dataset folder holding ``train/`` and ``test/``.
        split: ``train`` (default: test pairs never reach training), ``test`` or ``all``.
        strict: raise on images without a partner or with another name (else leave them out).

    Returns:
        The pairs in ``(split, N)`` order; keys are ``<split>/<N>``, each pair its own group,
        ``meta`` holds ``split`` and ``id`` (``N``).

    Raises:
        DataError: a missing folder, an unknown split, unmatched or misnamed images (strict),
            two images of one number, or no pairs.
    """
    r = Path(root)
    if split not in OS_SPLITS:
        raise DataError(f"unknown OS-dataset split '{split}'", f"use one of {', '.join(OS_SPLITS)}")
    require_dir(r, "OS-dataset folder", "pass the folder holding train/ and test/")
    items: list[PairItem] = []
    for name in (("train", "test") if split == "all" else (split,)):
        folder = r / name
        require_dir(folder, f"OS-dataset {name} folder", "the OS layout is ROOT/{train,test}/opt<N>.png + sar<N>.png")
        items.extend(_split_folder(folder, name, strict))
    return nonempty(items, "os", r, "name the pairs opt<N>.png and sar<N>.png in ROOT/train/ and ROOT/test/")
