"""The localisation data every reader produces: geo-tagged reference patches and SAR queries.

Whatever the source (a GeoTIFF map cut on a grid, the released SN6-CMPC folders, a sarbridge
JSON listing or geo CSV, BigEarthNet S1/S2 pairs, the procedural scene), training and evaluation see one
:class:`LocalisationData`: optical reference patches with map coordinates and footprints, and SAR
queries with their true position, their target reference (largest overlap) and near-misses
(other overlapping references).

Coordinates are in a *projected* CRS in metres (``x`` east, ``y`` north), so distances are
metres; ``lon``/``lat`` are WGS84 degrees for display. Images are loaded lazily through
callables returning arrays in :func:`sarbridge.data.io.read_image` layout, ``(H, W)`` or
``(H, W, C)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

ImageLoader = Callable[[], np.ndarray]

#: Query settings of CMPC.
SETTINGS = ("aligned", "arbitrary")
#: Query splits.
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class GeoReference:
    """One optical reference patch.

    Attributes:
        index: position in :attr:`LocalisationData.references`.
        x, y: projected map coordinates of the patch centre (metres).
        lon, lat: WGS84 degrees of the centre.
        footprint: ``(x0, y0, x1, y1)`` map extent (metres), ``x0 < x1``, ``y0 < y1``.
        source: where the pixels come from (a path, ``map.tif[row, col]`` ...), for messages.
        load: returns the pixels.
        region: area label (for cross-area splits), e.g. ``west``/``east``; ``""`` when unused.
    """

    index: int
    x: float
    y: float
    lon: float
    lat: float
    footprint: tuple[float, float, float, float]
    source: str
    load: ImageLoader = field(compare=False, repr=False)
    region: str = ""


@dataclass(frozen=True)
class GeoQuery:
    """One SAR query patch.

    Attributes:
        index: position in :attr:`LocalisationData.queries`.
        x, y: true projected position of the query centre (metres).
        lon, lat: WGS84 degrees of the centre.
        target: index of the reference with the largest overlap (the ground truth).
        near: indices of the other references the query overlaps (near-misses), in
            decreasing overlap.
        split: ``train``, ``val`` or ``test``.
        setting: ``aligned`` or ``arbitrary``.
        source: where the pixels come from, for messages.
        load: returns the pixels.
        footprint: ``(x0, y0, x1, y1)`` map extent (metres).
    """

    index: int
    x: float
    y: float
    lon: float
    lat: float
    target: int
    near: tuple[int, ...]
    split: str
    setting: str
    source: str
    load: ImageLoader = field(compare=False, repr=False)
    footprint: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)


@dataclass
class LocalisationData:
    """References and queries of one localisation problem.

    Attributes:
        references: optical reference patches (the database).
        queries: SAR queries of every split.
        crs: the projected CRS of ``x``/``y`` (``EPSG:n`` or WKT).
        name: a short description for reports.
        meta: free-form facts of the source (map path, patch size, GSD ...).
    """

    references: list[GeoReference]
    queries: list[GeoQuery]
    crs: str
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> list[GeoQuery]:
        """The queries of one split."""
        return [q for q in self.queries if q.split == name]

    def reference_xy(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """``(N, 2)`` float64 centres of all (or the given) references."""
        refs = self.references if indices is None else [self.references[i] for i in indices]
        return np.array([[r.x, r.y] for r in refs], dtype=np.float64).reshape(-1, 2)

    def query_xy(self, queries: Sequence[GeoQuery]) -> np.ndarray:
        """``(M, 2)`` float64 true centres of the given queries."""
        return np.array([[q.x, q.y] for q in queries], dtype=np.float64).reshape(-1, 2)

    def with_references(self, indices: Sequence[int]) -> LocalisationData:
        """A copy restricted to the given references (re-indexed); queries whose target is
        dropped are removed, near-misses are re-mapped. Used for cross-area splits."""
        keep = list(indices)
        remap = {old: new for new, old in enumerate(keep)}
        refs = [replace(self.references[old], index=new) for new, old in enumerate(keep)]
        queries: list[GeoQuery] = []
        for q in self.queries:
            if q.target not in remap:
                continue
            queries.append(replace(q, index=len(queries), target=remap[q.target],
                                   near=tuple(remap[n] for n in q.near if n in remap)))
        return LocalisationData(refs, queries, self.crs, self.name, dict(self.meta))
