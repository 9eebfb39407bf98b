"""On-disk preprocessing cache of image chips: decode and convert every image once, then memory-map it.

:func:`build_cache` decodes each image of a sample list, applies the modality conversion
(:meth:`PreprocessSpec.to_uint8`) and the bicubic resize to ``spec.image_size`` that the eval
transform does (through PIL, so a cached image equals what ``spec.eval_transform()`` sees before
``ToTensor``), and stores

* ``images.npy``: uint8 ``(N, H, W, 3)``, opened read-only with ``np.load(mmap_mode="r")``,
* ``sizes.npy``: float32 ``(N, 3)`` ship-size features of the original chip sizes,
* ``index.json``: format version, key, preprocessing, shape and the (absolute) image paths.

The folder name is :func:`cache_key`: a hash of the preprocessing (``spec.to_dict()``) and of the
file list with sizes and modification times, so a different preprocessing or a changed file gives
a new folder. The folder is built by :func:`sarbridge.core.cache.build_once` (the one build path
of every cache): in a temporary folder renamed into place, ``index.json`` written last, so an
interrupted build never leaves a folder that is later trusted; a folder that fails the checks of
:meth:`PreprocessCache.open` (truncated arrays, bad index) is rebuilt; under ``torchrun`` rank 0
builds it and the other ranks wait, then open it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from sarbridge.core.cache import (
    IMAGES_NAME,
    INDEX_NAME,
    MemmapCacheFolder,
    build_once,
    map_with_progress,
)
from sarbridge.core.errors import DataError
from sarbridge.data.io import read_image
from sarbridge.data.records import Sample, parse_modality
from sarbridge.data.transforms import PreprocessSpec

CACHE_FORMAT_VERSION = 1
SIZES_NAME = "sizes.npy"


def _entries(samples: Sequence[Sample]) -> list[tuple[str, str]]:
    """Unique (absolute path, modality) pairs in a canonical (sorted) order."""
    seen: dict[str, str] = {}
    for s in samples:
        path = os.path.abspath(s.path)
        modality = parse_modality(s.modality)
        if seen.setdefault(path, modality) != modality:
            raise DataError(f"image '{s.path}' is listed both as {seen[path]} and as {modality}",
                            "give every file one modality")
    return sorted(seen.items())


def cache_key(samples: Sequence[Sample], spec: PreprocessSpec) -> str:
    """Hash of the preprocessing and of the files (path, modality, size, modification time).

    Raises:
        DataError: an image file is missing.
    """
    files = []
    for path, modality in _entries(samples):
        try:
            st = os.stat(path)
        except OSError:
            raise DataError(f"image '{path}' not found", "check the path or regenerate the dataset") from None
        files.append([path, modality, st.st_size, st.st_mtime_ns])
    payload = json.dumps({"version": CACHE_FORMAT_VERSION, "spec": spec.to_dict(), "files": files},
                         sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:24]


def preprocess_image(path: str, modality: str, spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    """Decode one image, convert it to uint8 RGB and resize it (PIL bicubic) to ``spec.image_size``.

    Returns:
        ``(uint8 (H, W, 3), float32 (3,) size features of the original chip)``.

    Raises:
        DataError: the image is missing, corrupt or unreadable (naming the file).
    """
    raw = read_image(path)
    u8 = spec.to_uint8(raw, modality)
    h, w = spec.image_size
    img = Image.fromarray(u8)
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8), spec.size_features(raw.shape[0], raw.shape[1], modality)


class PreprocessCache(MemmapCacheFolder):
    """A built preprocessing cache (:func:`build_cache`): images plus ship-size features, by path."""

    format_version = CACHE_FORMAT_VERSION
    _maps = ("_images", "_sizes")
    _sizes: np.ndarray | None

    def __init__(self, folder: str | Path) -> None:
        super().__init__(folder)
        self.paths: list[str] = list(self.meta["paths"])
        self.modalities: list[str] = list(self.meta["modalities"])
        self.rows: dict[str, int] = {p: i for i, p in enumerate(self.paths)}

    def _consistent(self) -> bool:
        n = len(self.paths)
        return int(self.meta["count"]) == n and self.sizes.shape == (n, 3) and len(self.modalities) == n

    @property
    def sizes(self) -> np.ndarray:
        """float32 ``(N, 3)`` size features."""
        if self._sizes is None:
            self._sizes = np.load(self.folder / SIZES_NAME, mmap_mode="r")
        return self._sizes

    def row(self, path: str) -> int:
        """Row of an image path (absolute or relative to the working directory).

        Raises:
            DataError: the image is not in this cache.
        """
        r = self.rows.get(os.path.abspath(path))
        if r is None:
            raise DataError(f"image '{path}' is not in the cache '{self.folder}'",
                            "build the cache from the same sample list")
        return r

    def get(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """``(uint8 (H, W, 3) copy, float32 (3,) copy)`` of one row."""
        return np.array(self.images[row]), np.array(self.sizes[row])


def _write(folder: Path, entries: list[tuple[str, str]], spec: PreprocessSpec, key: str, progress: bool,
           num_workers: int, desc: str) -> None:
    """Fill ``folder``: the images, their size features, then the index (last)."""
    h, w = spec.image_size
    n = len(entries)
    images = np.lib.format.open_memmap(folder / IMAGES_NAME, mode="w+", dtype=np.uint8, shape=(n, h, w, 3))
    sizes = np.zeros((n, 3), dtype=np.float32)
    for i, (img, size) in map_with_progress(lambda e: preprocess_image(e[0], e[1], spec), entries, num_workers,
                                            progress, desc):
        images[i], sizes[i] = img, size
    images.flush()
    del images
    np.save(folder / SIZES_NAME, sizes)
    meta = {"version": CACHE_FORMAT_VERSION, "key": key, "spec": spec.to_dict(), "image_size": [h, w],
            "count": n, "paths": [p for p, _ in entries], "modalities": [m for _, m in entries]}
    (folder / INDEX_NAME).write_text(json.dumps(meta) + "\n", encoding="utf-8")  # written last


def build_cache(
    samples: Sequence[Sample],
    spec: PreprocessSpec,
    cache_dir: str | Path,
    progress: bool = True,
    num_workers: int = 0,
    desc: str = "caching images",
) -> PreprocessCache:
    """Open the cache of ``samples`` under ``spec`` in ``cache_dir``, building it when needed.

    Under ``torchrun`` rank 0 builds (or opens) it first and the other ranks wait, then open it:
    every rank must call this. In a single process it simply opens or builds the cache.

    Args:
        samples: images to cache (duplicates are stored once).
        spec: preprocessing (modality conversion, image size).
        cache_dir: parent folder; the cache is ``cache_dir/<cache_key>``.
        progress: show a progress bar while building (rank 0 only).
        num_workers: decoding threads (0 = in this thread).
        desc: progress-bar label.

    Returns:
        The opened (read-only) cache.

    Raises:
        DataError: an image is missing, corrupt or unreadable (naming it); or the cache folder
            cannot be written.
    """
    entries = _entries(samples)
    key = cache_key(samples, spec)
    return build_once(cache_dir, key, lambda tmp, show: _write(tmp, entries, spec, key, show, num_workers, desc),
                      lambda folder: PreprocessCache.open(folder, key), progress)


__all__ = ["CACHE_FORMAT_VERSION", "IMAGES_NAME", "INDEX_NAME", "SIZES_NAME", "PreprocessCache", "build_cache",
           "cache_key", "preprocess_image"]
