"""The fingerprint of a localisation dataset: which files (and their sizes) a geo model saw.

A localisation dataset is files rather than labelled images: the optical map and SAR rasters
(``data.format: map``), or everything under ``data.root`` (a scene folder, an SN6-CMPC tree, a geo
CSV with its images, BigEarthNet pairs). :func:`geo_data_fingerprint` lists those files (hidden
folders and ``cache*`` folders left out) with their sizes through
:func:`sarbridge.data.fingerprint.data_fingerprint`; ``geo train`` stores it in ``geo_model.pt``
(``info.data_fingerprint``) and ``geo evaluate`` warns when the data it is given differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sarbridge.data.fingerprint import data_fingerprint, fingerprint_difference
from sarbridge.tasks.geo.config import GeoDataConfig

__all__ = ["geo_data_fingerprint", "geo_data_difference"]


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        return []
    out = []
    for p in root.rglob("*"):
        rel = p.relative_to(root).parts
        if any(part.startswith(".") or part.lower().startswith("cache") for part in rel[:-1]):
            continue
        if p.is_file() and not p.name.startswith("."):
            out.append(p)
    return sorted(out)


def geo_data_fingerprint(data: GeoDataConfig) -> dict[str, Any]:
    """The fingerprint of the files a geo ``data`` section names.

    Args:
        data: the config's data section (``format``, ``root``, ``map``, ``sar``).

    Returns:
        The :func:`~sarbridge.data.fingerprint.data_fingerprint` dict with one part, ``files``.
    """
    if data.format == "map":
        files = [Path(p) for p in [data.map, *data.sar] if p]
        root: Path | None = None
    else:
        root = Path(data.root)
        files = _files(root)
        if root.is_file():
            root = root.parent
    return data_fingerprint({"files": [(str(f), -1) for f in files]}, root)


def geo_data_difference(info: dict[str, Any], data: GeoDataConfig) -> str | None:
    """What differs between a bundle's training data (``info["data_fingerprint"]``) and ``data``;
    None when they match or the bundle recorded nothing (written before fingerprints)."""
    return fingerprint_difference(info.get("data_fingerprint"), geo_data_fingerprint(data))
