"""Checks of uploaded query images: size limit, file type, empty files, band count, pixels.

Each failed check raises an :class:`UploadError` that carries the HTTP status the web app answers
with. The pixels themselves are read by the library's own :func:`~sarbridge.data.io.read_image`
from a temporary copy of the upload (deleted afterwards by :func:`spooled_upload`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sarbridge.core.errors import SarbridgeError

__all__ = [
    "BAND_RULES",
    "UploadError",
    "UploadTooLarge",
    "channels_last",
    "check_bands",
    "client_names",
    "limited_receive",
    "parse_query_modality",
    "sniff_image_type",
    "spooled_upload",
]

#: Leading bytes of the accepted image formats -> file suffix used for the temporary copy.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"), (b"II+\x00", ".tif"), (b"MM\x00+", ".tif"),
    (b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"BM", ".bmp"),
)
#: Band counts the models accept per modality (a 2-D image counts as 1 band). Optical chips are
#: grey (replicated), RGB or RGBA (alpha dropped); SAR is one intensity band or a VV/VH pair
#: (averaged), as in :meth:`~sarbridge.data.transforms.PreprocessSpec.to_uint8` and ``geo locate``.
BAND_RULES: dict[str, tuple[int, ...]] = {"optical": (1, 3, 4), "sar": (1, 2)}
_CHUNK = 1 << 16


class UploadError(SarbridgeError):
    """A rejected upload; ``status`` is the HTTP status code to answer with.

    Args:
        message: what is wrong with the upload (one line).
        hint: how to fix it.
        status: HTTP status (400 bad request, 413 too large, 415 not an image, 422 unusable image).
    """

    def __init__(self, message: str, hint: str | None = None, status: int = 400) -> None:
        super().__init__(message, hint)
        self.status = status


class UploadTooLarge(UploadError):
    """The request body or the uploaded file exceeds the configured limit (HTTP 413)."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"upload exceeds the limit of {limit_bytes / 2**20:g} MB",
                         "upload a smaller chip (crop it) or restart the server with a larger --max-upload-mb",
                         status=413)


class _AsyncReadable(Protocol):
    async def read(self, size: int = -1) -> bytes: ...


def sniff_image_type(head: bytes) -> str | None:
    """The suffix (``.tif``, ``.png``, ``.jpg``, ``.bmp``) of the format whose signature starts ``head``.

    Args:
        head: the first bytes of a file (at least 8 for PNG).

    Returns:
        The suffix, or None when the bytes start no accepted image format.
    """
    for magic, suffix in _MAGIC:
        if head.startswith(magic):
            return suffix
    return None


def limited_receive(receive: Callable[[], Awaitable[MutableMapping[str, Any]]], limit_bytes: int
                    ) -> Callable[[], Awaitable[MutableMapping[str, Any]]]:
    """Wrap an ASGI ``receive`` so that reading more than ``limit_bytes`` of body raises at once.

    Args:
        receive: the ASGI receive callable of the request.
        limit_bytes: largest body accepted.

    Returns:
        A receive callable raising :class:`UploadTooLarge` as soon as the body passes the limit,
        before the rest is read.
    """
    seen = 0

    async def wrapped() -> MutableMapping[str, Any]:
        nonlocal seen
        message = await receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit_bytes:
                raise UploadTooLarge(limit_bytes)
        return message

    return wrapped


@asynccontextmanager
async def spooled_upload(upload: _AsyncReadable, filename: str, max_bytes: int) -> AsyncIterator[Path]:
    """Copy an upload into a temporary file named with its sniffed image suffix; delete it on exit.

    Args:
        upload: object with an async ``read(size)`` (a Starlette ``UploadFile``).
        filename: the client's file name (for messages only).
        max_bytes: largest file accepted.

    Yields:
        The temporary file's path.

    Raises:
        UploadError: empty (400), larger than ``max_bytes`` (413) or not a TIFF/PNG/JPEG/BMP (415).
    """
    head = await upload.read(16)
    if not head:
        raise UploadError(f"'{filename}' is empty (0 bytes)", "choose the image file again", status=400)
    suffix = sniff_image_type(head)
    if suffix is None:
        raise UploadError(f"'{filename}' is not an image (no TIFF, PNG, JPEG or BMP signature)",
                          "upload a .tif/.png/.jpg/.bmp chip", status=415)
    fd, name = tempfile.mkstemp(prefix="sarbridge-upload-", suffix=suffix)
    path = Path(name)
    try:
        size = len(head)
        with os.fdopen(fd, "wb") as fh:
            fh.write(head)
            while chunk := await upload.read(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise UploadTooLarge(max_bytes)
                fh.write(chunk)
        yield path
    finally:
        path.unlink(missing_ok=True)


@contextmanager
def client_names(tmp: Path, filename: str) -> Iterator[None]:
    """Re-raise a :class:`SarbridgeError` naming ``tmp`` with the client's ``filename`` instead."""
    try:
        yield
    except SarbridgeError as exc:
        def fix(text: str | None) -> str | None:
            return text.replace(str(tmp), filename) if text else text

        status = exc.status if isinstance(exc, UploadError) else 422
        raise UploadError(fix(exc.message) or "", fix(exc.hint), status=status) from None


def parse_query_modality(value: str | None, accepted: Sequence[str], index_name: str = "this index") -> str:
    """Normalise the form's modality for an index that takes queries of the ``accepted`` modalities.

    Args:
        value: ``optical``/``rgb`` or ``sar`` (any case); may be empty when the index takes one modality.
        accepted: the modalities the index takes (e.g. ``("optical", "sar")`` for a re-ID gallery,
            ``("sar",)`` for a geo map index).
        index_name: how messages name the index (e.g. ``a geo (map) index``).

    Returns:
        ``"optical"`` or ``"sar"``.

    Raises:
        UploadError: missing (with several accepted modalities), unknown or not accepted modality (400).
    """
    key = (value or "").strip().lower()
    if not key:
        if len(accepted) == 1:
            return accepted[0]
        raise UploadError("no modality given", "choose optical or sar", status=400)
    aliases = {"optical": "optical", "rgb": "optical", "sar": "sar"}
    if key not in aliases:
        raise UploadError(f"unknown modality '{value}'", "choose optical or sar", status=400)
    if aliases[key] not in accepted:
        names = {"optical": "optical", "sar": "SAR"}
        raise UploadError(f"{index_name} takes {' or '.join(names[m] for m in accepted)} queries, not "
                          f"{names[aliases[key]]} ones", f"choose {' or '.join(accepted)}", status=400)
    return aliases[key]


def channels_last(arr: np.ndarray) -> np.ndarray:
    """Move the bands of a planar ``(C, H, W)`` array (few bands, wide image) last.

    :func:`~sarbridge.data.io.read_image` already does so for 1, 3 and 4 bands; this also covers
    2 (VV/VH) and 5+ bands, so that band counts are reported and used correctly.
    """
    if arr.ndim == 3 and arr.shape[0] <= 16 and min(arr.shape[1], arr.shape[2]) > 16 and arr.shape[-1] > arr.shape[0]:
        return np.ascontiguousarray(np.moveaxis(arr, 0, -1))
    return arr


def check_bands(arr: np.ndarray, modality: str, filename: str) -> None:
    """Refuse band counts the model cannot take for ``modality`` (see :data:`BAND_RULES`).

    Args:
        arr: pixels from :func:`~sarbridge.data.io.read_image` (``(H, W)`` or ``(H, W, C)``).
        modality: ``"optical"`` or ``"sar"``.
        filename: the client's file name (for the message).

    Raises:
        UploadError: wrong band count (422).
    """
    bands = 1 if arr.ndim == 2 else int(arr.shape[-1])
    allowed = BAND_RULES[modality]
    if bands not in allowed:
        if modality == "optical":
            names, hint = "1 (grey), 3 (RGB) or 4 (RGBA)", "save the chip as a grey or RGB image"
        else:
            names, hint = "1 (intensity) or 2 (VV/VH)", "save only the intensity band (or the VV/VH pair)"
        article = "an" if modality == "optical" else "a"
        raise UploadError(f"'{filename}' has {bands} bands (shape {tuple(arr.shape)}); {article} {modality} query "
                          f"has {names}", hint, status=422)
