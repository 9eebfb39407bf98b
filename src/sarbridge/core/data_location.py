"""Where a run's data lives, and whether a new place holds the same data (resuming a moved dataset).

A run folder records, beside its ``config.yaml``, a digest of the files behind every data-path key
of its config (:data:`DATA_PATH_KEYS`) in ``data_paths.json``: per key the path(s) given and a
sha256 over the files' paths relative to that path plus their sizes (no pixels read, no modification
times, hidden folders and folders whose name contains ``cache`` left out; linked folders followed), so a copied or moved dataset keeps its digest and an
edited one (files added, removed, renamed or resized) does not. ``--resume`` with a data path that
differs from the run's is accepted only when the digest at the new place equals the recorded one
(:func:`moved_data`); the move is then recorded like any other change of a resumed run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sarbridge.core.utils import atomic_write_text

__all__ = ["DATA_PATH_KEYS", "RECORD", "data_digest", "data_paths", "moved_data", "read_record", "update_record", "write_record"]

#: config keys (flattened) that name where a run reads its data from
DATA_PATH_KEYS: tuple[str, ...] = ("data.root", "data.map", "data.sar")
#: the file in a run folder that records the digests
RECORD = "data_paths.json"


def _files(root: Path) -> list[tuple[str, int]]:
    if root.is_file():
        return [(root.name, root.stat().st_size)]
    out = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):  # linked folders are part of the data
        real = os.path.realpath(dirpath)
        if real in seen:  # a link loop
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and "cache" not in d.lower())
        for name in filenames:
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            if p.is_file():
                out.append((p.relative_to(root).as_posix(), p.stat().st_size))
    return sorted(out)


def data_paths(value: Any) -> list[Path]:
    """The paths a data-path key's value names: one path, a list of them, or none (empty values)."""
    given = [value] if isinstance(value, (str, os.PathLike)) else list(value or [])
    return [Path(p) for p in given if str(p)]


def data_digest(value: Any) -> dict[str, Any] | None:
    """The digest of the file or folder (or list of them) a data-path key names.

    Args:
        value: a path, a list of paths, or an empty value.

    Returns:
        ``{"digest": sha256 hex, "files": count}``, or None when ``value`` is empty or names
        nothing that exists or no files.
    """
    paths = data_paths(value)
    if not paths or not all(p.exists() for p in paths):
        return None
    h = hashlib.sha256()
    count = 0
    for i, p in enumerate(paths):
        for rel, size in _files(p):
            h.update(f"{i}\t{rel}\t{size}\n".encode())
            count += 1
    return {"digest": h.hexdigest(), "files": count} if count else None


def _rows(values: Mapping[str, Any]) -> dict[str, Any]:
    """Record rows ``{key: {"path", "digest", "files"}}`` of the values that name existing files."""
    rows = {}
    for key, value in values.items():
        digest = data_digest(value)
        if digest is not None:
            rows[key] = {"path": value, **digest}
    return rows


def _write(out: str | Path, rows: Mapping[str, Any]) -> None:
    atomic_write_text(Path(out) / RECORD, json.dumps(rows, indent=2, default=str) + "\n")


def write_record(out: str | Path, flat_config: Mapping[str, Any]) -> None:
    """Write ``out/data_paths.json`` for the data-path keys of a flattened config (atomically).

    Keys without a value or naming nothing that exists are left out.
    """
    _write(out, _rows({key: flat_config.get(key) for key in DATA_PATH_KEYS}))


def update_record(out: str | Path, moves: dict[str, Any]) -> None:
    """Point the rows of moved keys (``{key: new path}``) at their new place, keeping every other row."""
    _write(out, {**read_record(out), **_rows(moves)})


def read_record(out: str | Path) -> dict[str, Any]:
    """The digests ``out/data_paths.json`` records ({} when there is none or it cannot be read)."""
    path = Path(out) / RECORD
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def moved_data(out: str | Path, key: str, new: Any) -> tuple[bool, str]:
    """Whether the data-path ``key`` of the run in ``out`` may now point at ``new``.

    Returns:
        ``(True, note)`` when ``new`` holds the same files as the run recorded for ``key``;
        ``(False, reason)`` otherwise, the reason in words (no record, nothing there, or what differs).
    """
    row = read_record(out).get(key)
    if not isinstance(row, Mapping) or "digest" not in row:
        return False, f"the run recorded no digest of its {key} ({Path(out) / RECORD} is missing)"
    now = data_digest(new)
    if now is None:
        return False, f"nothing is there at {new}"
    if now["digest"] != row["digest"]:
        return False, (f"the files there differ from those the run started with ({now['files']} files vs "
                       f"{row.get('files')}, or their names or sizes)")
    return True, f"note: {key} moved from {row.get('path')} to {new} (same {now['files']} files); the run continues there"
