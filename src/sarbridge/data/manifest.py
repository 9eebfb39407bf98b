"""Generic CSV manifest so users can bring their own data without renaming files.

Columns: ``path, id, modality, split`` and optionally ``lon, lat, timestamp, camid``.
``split`` is one of ``train``, ``query``, ``gallery``; relative paths are resolved against the
manifest's folder. Example::

    path,id,modality,split,lon,lat,timestamp
    ships/a1.tif,17,optical,train,4.12,51.95,2024-03-01T10:22:00Z
    ships/a1_sar.tif,17,sar,query,,,
"""

from __future__ import annotations

import csv
from pathlib import Path

from sarbridge.core.errors import DataError
from sarbridge.data.records import Sample, parse_modality
from sarbridge.data.splits import ReIDSplits, check_nonempty

REQUIRED = ("path", "id", "modality", "split")
SPLITS = ("train", "query", "gallery")


def _opt_float(row: dict[str, str], key: str, where: str) -> float | None:
    raw = (row.get(key) or "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise DataError(f"{where}: column '{key}' is not a number ({raw!r})", "write decimal degrees") from None


def read_manifest(path: str | Path) -> list[Sample]:
    """Read a manifest CSV into samples.

    Raises:
        DataError: missing file or columns, bad values, unknown modality or split, missing images.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"manifest '{p}' not found", "pass an existing CSV to data.manifest")
    with p.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"manifest '{p}' lacks column(s) {', '.join(missing)}", f"header must include {','.join(REQUIRED)}")
        samples = []
        for line, row in enumerate(reader, start=2):
            where = f"{p}:{line}"
            if any(row.get(c) is None for c in REQUIRED):
                raise DataError(f"{where}: row has fewer fields than the header", "fill every column (empty is fine for optional ones)")
            img = Path(row["path"].strip())
            img = img if img.is_absolute() else p.parent / img
            if not img.is_file():
                raise DataError(f"{where}: image '{img}' not found", "fix the path (relative paths start at the manifest's folder)")
            try:
                pid = int(row["id"])
            except ValueError:
                raise DataError(f"{where}: id {row['id']!r} is not an integer", "use integer identities, -1 for distractors") from None
            split = row["split"].strip().lower()
            if split not in SPLITS:
                raise DataError(f"{where}: unknown split '{row['split']}'", f"use one of {', '.join(SPLITS)}")
            try:
                camid = int(row["camid"]) if (row.get("camid") or "").strip() else 0
            except ValueError:
                raise DataError(f"{where}: camid {row['camid']!r} is not an integer", "use integer camera ids") from None
            samples.append(Sample(
                path=str(img), pid=pid, modality=parse_modality(row["modality"], where), camid=camid,
                split=split, lon=_opt_float(row, "lon", where), lat=_opt_float(row, "lat", where),
                timestamp=(row.get("timestamp") or "").strip() or None,
            ))
    check_nonempty(samples, "manifest", str(p))
    return samples


def load_manifest_splits(path: str | Path, require_train: bool = True) -> ReIDSplits:
    """Split a manifest into train/query/gallery (protocols are derived by modality)."""
    samples = read_manifest(path)
    by = {s: [x for x in samples if x.split == s] for s in SPLITS}
    if require_train:
        check_nonempty(by["train"], "split 'train'", str(path))
    check_nonempty(by["query"], "split 'query'", str(path))
    check_nonempty(by["gallery"], "split 'gallery'", str(path))
    return ReIDSplits(train=by["train"], query=by["query"], gallery=by["gallery"], root=str(path))
