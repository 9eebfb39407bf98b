"""A cheap, stable fingerprint of the data a model was trained on, and the comparison eval makes.

What it covers: the sorted list of the dataset's image files, each as its path relative to the
data root plus its size in bytes, grouped by part (``train``, ``query``, ``gallery`` ...), and the
number of identities of each part. It reads no pixels and ignores modification times (a copy of
the same data keeps its fingerprint), so replacing, adding or removing images, or renaming them
(which relabels re-ID identities), changes it; editing an image in place to one of the same size
does not. Checkpoints carry it as ``checkpoint["data_fingerprint"] = {"digest", "files", "root",
"identities", "covers"}``; checkpoints written before it existed have none, and nothing is said.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

COVERS = "relative image paths + sizes per part, identity counts (no pixels, no mtimes)"


def _relative(path: str, root: Path | None) -> str:
    if root is not None:
        try:
            return Path(os.path.relpath(path, root)).as_posix()
        except ValueError:  # another drive on Windows
            pass
    return Path(path).as_posix()


def data_fingerprint(parts: Mapping[str, Iterable[tuple[str, int]]], root: str | Path | None = None) -> dict[str, Any]:
    """The fingerprint of a dataset given as ``{part: [(image path, identity), ...]}``.

    Args:
        parts: the dataset's parts, each a list of (path, identity label) pairs; empty parts are left out.
        root: the data root the paths are made relative to (and reported as ``root``).

    Returns:
        ``{"digest", "files", "identities", "root", "covers", "parts"}``: the digest (sha256 hex),
        file and identity counts of the whole set, and ``parts = {part: {"digest", "files",
        "identities"}}``.
    """
    base = Path(root) if root else None
    whole = hashlib.sha256()
    per_part: dict[str, dict[str, Any]] = {}
    ids: set[int] = set()
    for part in sorted(parts):
        items = sorted((_relative(p, base), int(pid)) for p, pid in parts[part])
        if not items:
            continue
        h = hashlib.sha256()
        for rel, pid in items:
            path = base / rel if base is not None else Path(rel)
            size = path.stat().st_size if path.is_file() else -1
            line = f"{part}\t{rel}\t{size}\t{pid}\n".encode()
            h.update(line)
            whole.update(line)
        part_ids = {pid for _, pid in items if pid >= 0}
        ids |= part_ids
        per_part[part] = {"digest": h.hexdigest(), "files": len(items), "identities": len(part_ids)}
    return {"digest": whole.hexdigest(), "files": sum(p["files"] for p in per_part.values()), "identities": len(ids),
            "root": str(root) if root else "", "covers": COVERS, "parts": per_part}


def fingerprint_difference(trained: Mapping[str, Any] | None, given: Mapping[str, Any]) -> str | None:
    """What differs between the training data's fingerprint and the given data's, in words.

    Only the parts the given data has are compared (an evaluation set without a training split is
    compared on its query and gallery).

    Returns:
        None when they match, or when ``trained`` is missing or malformed (a checkpoint written
        before fingerprints: nothing is known, nothing is said); otherwise e.g.
        ``"query: 20 -> 5 identities, 40 -> 10 files; gallery: ..."``.
    """
    if not isinstance(trained, Mapping) or not isinstance(trained.get("parts"), Mapping):
        return None
    old_parts: Mapping[str, Any] = trained["parts"]
    bits: list[str] = []
    for part, new in sorted(dict(given.get("parts") or {}).items()):
        old = old_parts.get(part)
        if old is None:
            bits.append(f"{part}: not in the training data")
            continue
        if old.get("digest") == new.get("digest"):
            continue
        what = []
        if old.get("identities") != new.get("identities"):
            what.append(f"{old.get('identities')} -> {new.get('identities')} identities")
        if old.get("files") != new.get("files"):
            what.append(f"{old.get('files')} -> {new.get('files')} files")
        if not what:
            what.append(f"digest {str(old.get('digest'))[:12]} -> {str(new.get('digest'))[:12]}")
        bits.append(f"{part}: {', '.join(what)}")
    return "; ".join(bits) or None


__all__ = ["COVERS", "data_fingerprint", "fingerprint_difference"]
