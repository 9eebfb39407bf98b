"""On-disk preprocessing cache: decode and convert every image once, then memory-map it.

:func:`build_cache` decodes each image of a sample list, applies the modality conversion
(:meth:`PreprocessSpec.to_uint8`) and the bicubic resize to ``spec.image_size`` that the eval
transform does (through PIL, so a cached image equals what ``spec.eval_transform()`` sees before
``ToTensor``), and stores

* ``images.npy``: uint8 ``(N, H, W, 3)``, opened read-only with ``np.load(mmap_mode="r")``,
* ``sizes.npy``: float32 ``(N, 3)`` ship-size features of the original chip sizes,
* ``index.json``: format version, key, preprocessing, shape and the (absolute) image paths.

The folder name is :func:`cache_key`: a hash of the preprocessing (``spec.to_dict()``) and of the
file list with sizes and modification times, so a different preprocessing or a changed file gives
a new folder. A cache is built in a temporary folder and renamed into place, and ``index.json`` is
written last, so an interrupted build never leaves a folder that is later trusted; a folder that
fails the checks of :meth:`PreprocessCache.open` (truncated arrays, bad index) is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from sarbridge.data.io import read_image
from sarbridge.data.records import Sample, parse_modality
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.core.errors import DataError

CACHE_FORMAT_VERSION = 1
INDEX_NAME, IMAGES_NAME, SIZES_NAME = "index.json", "images.npy", "sizes.npy"
_T = TypeVar("_T")
_A = TypeVar("_A")


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
    from PIL import Image

    raw = read_image(path)
    u8 = spec.to_uint8(raw, modality)
    h, w = spec.image_size
    img = Image.fromarray(u8)
    if img.size != (w, h):
        img = img.resize((w, h), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8), spec.size_features(raw.shape[0], raw.shape[1], modality)


class MemmapCacheFolder:
    """A cache folder of ``images.npy`` (uint8 ``(N, H, W, 3)``) and ``index.json`` (written last),
    mapped lazily and read-only; it pickles without its memory maps, so each DataLoader worker
    maps the files itself. Subclasses add their own arrays and checks (:meth:`_consistent`).

    Args:
        folder: a built folder. Use :meth:`open` to check one before trusting it.
    """

    #: the ``version`` an index must carry
    format_version: int = CACHE_FORMAT_VERSION
    #: attributes holding memory maps (dropped when pickled)
    _maps: tuple[str, ...] = ("_images",)

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.meta: dict[str, Any] = json.loads((self.folder / INDEX_NAME).read_text(encoding="utf-8"))
        for name in self._maps:
            setattr(self, name, None)

    @classmethod
    def open(cls: type[_C], folder: str | Path, key: str | None = None) -> _C | None:
        """Open and check a folder; None when it is missing, incomplete, truncated or of another key."""
        try:
            cache = cls(folder)
            meta = cache.meta
            if meta.get("version") != cls.format_version or (key is not None and meta.get("key") != key):
                return None
            h, w = meta["image_size"]
            images = cache.images
            if images.shape != (int(meta["count"]), h, w, 3) or images.dtype != np.uint8:
                return None
            if not cache._consistent():
                return None
        except (OSError, ValueError, KeyError, TypeError):  # missing/truncated files, bad JSON
            return None
        return cache

    def _consistent(self) -> bool:
        """Checks beyond the image array (other arrays, index lists); may raise what :meth:`open` catches."""
        return True

    @property
    def images(self) -> np.ndarray:
        """uint8 ``(N, H, W, 3)`` read-only memory map."""
        if self._images is None:
            self._images = np.load(self.folder / IMAGES_NAME, mmap_mode="r")
        return self._images

    def __len__(self) -> int:
        return int(self.meta["count"])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in self._maps:
            state[name] = None  # each worker maps the files itself
        return state


_C = TypeVar("_C", bound=MemmapCacheFolder)


class PreprocessCache(MemmapCacheFolder):
    """A built preprocessing cache (:func:`build_cache`): images plus ship-size features, by path."""

    _maps = ("_images", "_sizes")

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


def map_with_progress(fn: Callable[[_A], _T], items: Sequence[_A], num_workers: int, progress: bool,
                      desc: str) -> Iterator[tuple[int, _T]]:
    """``(i, fn(items[i]))`` in order, in ``num_workers`` threads (0 = this thread), with a progress bar."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(items), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    try:
        if num_workers > 0:
            with ThreadPoolExecutor(num_workers) as pool:
                for i, out in enumerate(pool.map(fn, items)):
                    yield i, out
                    bar.update()
        else:
            for i, item in enumerate(items):
                yield i, fn(item)
                bar.update()
    finally:
        bar.close()


def _write(folder: Path, entries: list[tuple[str, str]], spec: PreprocessSpec, key: str, progress: bool,
           num_workers: int, desc: str) -> None:
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

    Args:
        samples: images to cache (duplicates are stored once).
        spec: preprocessing (modality conversion, image size).
        cache_dir: parent folder; the cache is ``cache_dir/<cache_key>``.
        progress: show a progress bar while building.
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
    return build_folder_atomically(cache_dir, key, lambda tmp: _write(tmp, entries, spec, key, progress, num_workers, desc),
                                   lambda folder: PreprocessCache.open(folder, key))


def build_cache_once(
    samples: Sequence[Sample],
    spec: PreprocessSpec,
    cache_dir: str | Path,
    progress: bool = True,
    num_workers: int = 0,
    desc: str = "caching images",
) -> PreprocessCache:
    """:func:`build_cache` under ``torchrun``: rank 0 builds, the other ranks wait and then open it.

    In a single process this is :func:`build_cache`. Every rank must call it.
    """
    from sarbridge.core.distributed import current_context

    show = progress and current_context().is_main
    return main_process_first(lambda: build_cache(samples, spec, cache_dir, show, num_workers, desc))


# --- shared helpers for other on-disk caches (the geo patch cache) --------------------------------

def build_folder_atomically(parent: str | Path, name: str, write: Callable[[Path], None],
                            check: Callable[[Path], _T | None]) -> _T:
    """Return ``check(parent/name)`` when it passes, else build the folder atomically and check it.

    ``write(tmp)`` fills a fresh temporary folder next to the final one (it should write its index
    file last); the folder is then renamed into place, replacing a folder that fails ``check``
    (truncated or inconsistent). A folder renamed into place by another process first is kept.

    Args:
        parent: the cache root (created when missing).
        name: the folder name (usually a content key).
        write: fills a folder.
        check: opens a folder, or returns None when it is missing, incomplete or inconsistent.

    Returns:
        What ``check`` returns for the final folder.

    Raises:
        DataError: the cache root cannot be written, or the built folder fails ``check``.
    """
    parent = Path(parent)
    final = parent / name
    opened = check(final)
    if opened is not None:
        return opened
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = parent / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.mkdir()
    except OSError as exc:
        raise DataError(f"cache folder '{parent}' cannot be written ({exc.strerror})",
                        "set data.cache_dir to a writable folder") from None
    try:
        write(tmp)
        if final.exists() and check(final) is None:  # broken: move it away before the rename
            stale = parent / f".{name}.{uuid.uuid4().hex[:8]}.stale"
            os.replace(final, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:  # another process renamed its complete folder into place first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    opened = check(final)
    if opened is None:
        raise DataError(f"cache '{final}' could not be read back after building it",
                        "remove the folder and check the disk")
    return opened


def main_process_first(fn: Callable[[], _T]) -> _T:
    """Run ``fn`` on rank 0 first, then on the other ranks (which then find its result on disk).

    In a single process this is ``fn()``. Under ``torchrun`` every rank must call it.
    """
    from sarbridge.core.distributed import barrier, current_context

    ctx = current_context()
    if not ctx.distributed:
        return fn()
    if not ctx.is_main:
        barrier(ctx)  # rank 0 is building
    try:
        return fn()
    finally:
        if ctx.is_main:
            barrier(ctx)
