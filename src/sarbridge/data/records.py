"""The record every reader produces: one image with its identity, modality and split."""

from __future__ import annotations

from dataclasses import dataclass

from sarbridge.core.errors import DataError

OPTICAL = "optical"
SAR = "sar"
MODALITIES = (OPTICAL, SAR)
MODALITY_INDEX = {OPTICAL: 0, SAR: 1}

_ALIASES = {
    "optical": OPTICAL, "opt": OPTICAL, "rgb": OPTICAL, "eo": OPTICAL, "s2": OPTICAL,
    "sar": SAR, "radar": SAR, "s1": SAR,
}


def parse_modality(value: str, where: str = "") -> str:
    """Normalise a modality name (``RGB``, ``optical``, ``SAR`` ...) to ``optical`` or ``sar``.

    Raises:
        DataError: the name is not a known modality.
    """
    key = str(value).strip().lower()
    if key not in _ALIASES:
        loc = f" in {where}" if where else ""
        raise DataError(
            f"unknown modality '{value}'{loc}",
            "use RGB/optical for optical images or SAR for radar images",
        )
    return _ALIASES[key]


@dataclass(frozen=True)
class Sample:
    """One image of a retrieval dataset.

    Attributes:
        path: image file.
        pid: identity (ship id or location id); -1 marks a distractor.
        modality: ``optical`` or ``sar``.
        camid: camera / sequence index (HOSS ``c`` token), 0-based.
        split: ``train``, ``query``, ``gallery`` (or ``val``).
        lon, lat: optional position in degrees.
        timestamp: optional acquisition time (ISO string).
    """

    path: str
    pid: int
    modality: str
    camid: int = 0
    split: str = "train"
    lon: float | None = None
    lat: float | None = None
    timestamp: str | None = None

    @property
    def modality_index(self) -> int:
        return MODALITY_INDEX[self.modality]
