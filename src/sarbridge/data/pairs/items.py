"""One optical / SAR pair (:class:`PairItem`), its image sources, and the checks every reader shares."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sarbridge.core.errors import DataError
from sarbridge.data.io import IMAGE_SUFFIXES, read_image

__all__ = ["PairItem", "Source", "list_images", "load_source", "nonempty", "require_dir", "unmatched_error"]

#: An image path, or a picklable loader returning the raw array.
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


def require_dir(path: Path, what: str, hint: str) -> None:
    """Raise a :class:`DataError` naming ``what`` when ``path`` is not a folder."""
    if not path.is_dir():
        raise DataError(f"{what} '{path}' not found", hint)


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files (by suffix) in ``folder`` (or below it), sorted."""
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def unmatched_error(what: str, names: Sequence[str], root: Path, hint: str) -> DataError:
    """The error for images without a partner, naming the first three."""
    shown = ", ".join(f"'{n}'" for n in list(names)[:3])
    more = f" (and {len(names) - 3} more)" if len(names) > 3 else ""
    return DataError(f"{len(names)} {what} in '{root}' have no partner: {shown}{more}", hint)


def nonempty(items: list[PairItem], layout: str, root: Path | str,
             hint: str = "check the data path and the layout (docs/pretraining.md lists the layouts)") -> list[PairItem]:
    """``items``, or a :class:`DataError` when a reader found no pair."""
    if not items:
        raise DataError(f"no optical/SAR pairs found in '{root}' (layout '{layout}')", hint)
    return items
