"""The one image reader: 8-bit RGB, 32-bit float SAR and any other TIFF/PNG/JPEG.

Returns NumPy arrays (H, W) or (H, W, C). Every failure is a :class:`DataError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from sarbridge.core.errors import DataError

TIFF_SUFFIXES = {".tif", ".tiff"}
IMAGE_SUFFIXES = TIFF_SUFFIXES | {".png", ".jpg", ".jpeg", ".bmp"}


def _read_pil(p: Path) -> np.ndarray:

    with Image.open(p) as im:
        return np.asarray(im.convert("RGB") if im.mode in ("P", "CMYK", "RGBA") else im)


def _read_tiff(p: Path) -> np.ndarray:

    try:
        return np.asarray(tifffile.imread(p))
    except ValueError:  # e.g. a codec tifffile lacks: Pillow decodes the common ones
        return _read_pil(p)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as an array without changing its values.

    Args:
        path: TIFF (any dtype, via tifffile), PNG, JPEG or BMP file.

    Returns:
        ``(H, W)`` for single-band images, ``(H, W, C)`` otherwise, in the file's dtype.

    Raises:
        DataError: the file is missing, empty, unreadable, has no pixels or holds NaN/inf.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"image '{p}' not found", "check the path or regenerate the dataset")
    if p.stat().st_size == 0:
        raise DataError(f"image '{p}' is empty (0 bytes)", "remove or replace the file")
    try:
        arr = _read_tiff(p) if p.suffix.lower() in TIFF_SUFFIXES else _read_pil(p)
    except DataError:
        raise
    except Exception as exc:  # corrupt files raise many different exception types
        raise DataError(
            f"image '{p}' could not be read ({type(exc).__name__}: {str(exc)[:80]})",
            "the file is corrupt or not an image; remove or replace it",
        ) from None
    arr = np.squeeze(arr) if arr.ndim > 3 else arr
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar (C, H, W) TIFF
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"image '{p}' has no usable pixels (shape {arr.shape})", "remove or replace it")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise DataError(f"image '{p}' contains NaN or infinite values", "mask or fill them before use")
    return arr
