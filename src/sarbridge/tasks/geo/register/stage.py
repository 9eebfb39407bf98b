"""The registration stage after retrieval: windows around the top candidates, register, or keep.

Retrieval proposes where the SAR query lies in the optical map: the top-left map pixel of each
of its best candidate cells, best first. :func:`register_in_map` cuts a search window around each
candidate (the query's footprint there plus ``margin`` pixels on every side, clipped to the map),
registers the query in all of them at once and returns the metre-level position, unless the
match is not distinctive enough (confidence below ``threshold``): then it keeps the retrieval
position of the best candidate and says so in :attr:`Placement.note`.

:class:`MapDescriptors` computes the map's CFOG descriptor once (a map serves many queries), so
each query costs only its own descriptor and the FFT matching.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sarbridge.core.errors import DataError
from sarbridge.tasks.geo.register.descriptors import CFOG_DEFAULTS, cfog
from sarbridge.tasks.geo.register.images import MAX_BANDS, as_image
from sarbridge.tasks.geo.register.pyramid import register_coarse_to_fine
from sarbridge.tasks.geo.register.registration import RegistrationResult, register

__all__ = ["DEFAULT_THRESHOLD", "MapDescriptors", "Placement", "candidate_boxes", "register_in_map"]

#: default confidence threshold (peak ratio of ``1 - ZNCC`` costs); to be calibrated on validation queries.
DEFAULT_THRESHOLD = 1.05


@dataclass
class Placement:
    """The stage's answer for one query.

    Attributes:
        row: map row of the query's top-left pixel (sub-pixel when registered).
        col: map column of the query's top-left pixel.
        registered: True when the registration was kept, False when the retrieval position was.
        confidence: the registration's peak ratio.
        candidate: index of the retrieval candidate whose window held the match (0 when kept).
        note: one line saying what was done and why.
        result: the full :class:`RegistrationResult` (positions relative to its window).
    """

    row: float
    col: float
    registered: bool
    confidence: float
    candidate: int
    note: str
    result: RegistrationResult


def candidate_boxes(map_shape: Sequence[int], query_shape: tuple[int, int],
                    candidates: Sequence[tuple[float, float]], margin: int) -> list[tuple[int, int, int, int]]:
    """Search windows ``(row0, col0, row1, col1)`` (end exclusive) around each candidate position.

    Args:
        map_shape: (H, W) of the map.
        query_shape: (h, w) of the query.
        candidates: (row, col) of the query's top-left in the map according to retrieval, best first.
        margin: pixels added on every side of the query's footprint.

    Returns:
        One box per candidate, clipped to the map and always at least as large as the query.

    Raises:
        DataError: the map is smaller than the query or the margin is negative.
    """
    (mh, mw), (h, w) = map_shape, query_shape
    if mh < h or mw < w:
        raise DataError(f"the map ({mh} x {mw} px) is smaller than the query ({h} x {w} px)",
                        "register a smaller query or use a larger map")
    if margin < 0:
        raise DataError(f"negative search margin {margin}", "use a margin >= 0 pixels")
    boxes = []
    for r, c in candidates:
        r0 = int(np.clip(round(r), 0, mh - h))  # a footprint that sticks out of the map is moved inside
        c0 = int(np.clip(round(c), 0, mw - w))
        boxes.append((max(0, r0 - margin), max(0, c0 - margin), min(mh, r0 + h + margin), min(mw, c0 + w + margin)))
    return boxes


class MapDescriptors:
    """The CFOG descriptor of a whole optical map, computed once and cut into windows per query.

    Args:
        map_image: (H, W) or (C, H, W) optical map (grey or band combination).
        device: where to keep the descriptor.
        **params: CFOG parameters (``orientations``, ``sigma``, ``pre_sigma``, ``floor``).
    """

    def __init__(self, map_image: np.ndarray | Tensor, device: torch.device | str | None = None,
                 **params: Any) -> None:
        self.params = {**CFOG_DEFAULTS, **params}
        self.params["orientations"] = int(self.params["orientations"])
        img = as_image(map_image, "map", device)
        self.shape = tuple(img.shape[-2:])
        self.descriptor: Tensor = cfog(img[None], **self.params)[0]

    def windows(self, boxes: Sequence[tuple[int, int, int, int]]) -> list[Tensor]:
        """The descriptor cut to each box ``(row0, col0, row1, col1)``."""
        return [self.descriptor[:, r0:r1, c0:c1] for r0, c0, r1, c1 in boxes]


def register_in_map(query: np.ndarray | Tensor, map_image: np.ndarray | Tensor | MapDescriptors,
                    candidates: Sequence[tuple[float, float]], *, margin: int = 32,
                    threshold: float = DEFAULT_THRESHOLD, method: str = "cfog", coarse: int = 1,
                    **kwargs: Any) -> Placement:
    """Place a query in the map to the pixel: register it around the retrieval candidates, or keep retrieval's answer.

    Args:
        query: (H, W) or (C, H, W) SAR query in dB (or a feature map for ``method="features"``).
        map_image: the optical map (H, W) / (C, H, W), or its precomputed :class:`MapDescriptors`
            (``"cfog"`` only; the descriptor's parameters are used).
        candidates: (row, col) map position of the query's top-left per retrieval candidate, best first.
        margin: search margin in pixels around each candidate footprint.
        threshold: the smallest confidence (peak ratio) at which the registration is trusted.
        method: ``"cfog"``, ``"ncc"`` or ``"features"`` (see :func:`register`).
        coarse: > 1 searches the windows at ``1 / coarse`` resolution first
            (:func:`~sarbridge.tasks.geo.register.pyramid.register_coarse_to_fine`; map images only).
        **kwargs: passed on to :func:`register` (``exclude``, ``similarity``, CFOG parameters, ...).

    Returns:
        The :class:`Placement` (map pixels).

    Raises:
        DataError: no candidates, or any input problem :func:`register` reports.
    """
    if not candidates:
        raise DataError("no retrieval candidates to register around", "pass at least the top-1 candidate")
    q = as_image(query, "query", kwargs.get("device"), None if method == "features" else MAX_BANDS)
    h, w = q.shape[-2:]
    if isinstance(map_image, MapDescriptors):
        if method != "cfog" or coarse > 1:
            raise DataError("precomputed map descriptors serve method 'cfog' at full resolution only",
                            "pass the map image instead")
        boxes = candidate_boxes(map_image.shape, (h, w), candidates, margin)
        kwargs = {**kwargs, **map_image.params}  # the descriptor's own parameters
        wins: list[Any] = map_image.windows(boxes)
        res = register(q, wins, "cfog", origins=[b[:2] for b in boxes], precomputed=True, **kwargs)
    else:
        m = as_image(map_image, "map", q.device, None)
        boxes = candidate_boxes(tuple(m.shape[-2:]), (h, w), candidates, margin)
        wins = [m[:, r0:r1, c0:c1] for r0, c0, r1, c1 in boxes]
        origins = [b[:2] for b in boxes]
        res = register_coarse_to_fine(q, wins, method, factor=coarse, origins=origins, **kwargs) if coarse > 1 \
            else register(q, wins, method, origins=origins, **kwargs)
    r0, c0 = boxes[res.candidate][:2]
    if res.confidence >= threshold:
        note = f"registered in candidate {res.candidate} (confidence {res.confidence:.3f} >= {threshold:.3f})"
        return Placement(row=r0 + res.row, col=c0 + res.col, registered=True, confidence=res.confidence,
                         candidate=res.candidate, note=note, result=res)
    row, col = (float(v) for v in candidates[0])
    return Placement(row=row, col=col, registered=False, confidence=res.confidence, candidate=0,
                     note=f"kept the retrieval position: confidence {res.confidence:.3f} < threshold {threshold:.3f}",
                     result=res)
