"""Memory-mapped cache folders and the one way to build them: once, atomically, rank 0 first.

A cache folder holds ``images.npy`` (uint8 ``(N, H, W, 3)``, opened read-only with
``np.load(mmap_mode="r")``), whatever arrays its owner adds, and ``index.json`` (format version,
content key, shape and the owner's lists), written last. :class:`MemmapCacheFolder` opens and checks
such a folder; owners subclass it (the chip cache of :mod:`sarbridge.data.cache`, the geo patch
cache of :mod:`sarbridge.tasks.geo.datasets`).

:func:`build_once` is the single build path of every cache: it opens ``parent/name`` when that
folder passes its owner's checks, and otherwise fills a fresh temporary folder next to it and renames
it into place (so an interrupted build never leaves a folder that is later trusted, and a truncated
or inconsistent folder is replaced). Under ``torchrun`` rank 0 builds first while the other ranks
wait at a barrier, then they open what it built; every rank must call it.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self, TypeVar

import numpy as np

from sarbridge.core.distributed import barrier, current_context
from sarbridge.core.errors import DataError
from sarbridge.core.progress import progress_bar

INDEX_NAME, IMAGES_NAME = "index.json", "images.npy"
_T = TypeVar("_T")
_A = TypeVar("_A")


class MemmapCacheFolder:
    """A cache folder of ``images.npy`` (uint8 ``(N, H, W, 3)``) and ``index.json`` (written last),
    mapped lazily and read-only; it pickles without its memory maps, so each DataLoader worker
    maps the files itself. Subclasses add their own arrays and checks (:meth:`_consistent`).

    Args:
        folder: a built folder. Use :meth:`open` to check one before trusting it.
    """

    #: the ``version`` an index must carry
    format_version: int = 1
    #: attributes holding memory maps (dropped when pickled)
    _maps: tuple[str, ...] = ("_images",)
    _images: np.ndarray | None

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.meta: dict[str, Any] = json.loads((self.folder / INDEX_NAME).read_text(encoding="utf-8"))
        for name in self._maps:
            setattr(self, name, None)

    @classmethod
    def open(cls, folder: str | Path, key: str | None = None) -> Self | None:
        """Open and check a folder.

        Args:
            folder: the cache folder.
            key: the content key its index must carry (None: any).

        Returns:
            The opened cache, or None when the folder is missing, incomplete, truncated, of another
            format version or of another key.
        """
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


def map_with_progress(fn: Callable[[_A], _T], items: Sequence[_A], num_workers: int, progress: bool,
                      desc: str) -> Iterator[tuple[int, _T]]:
    """``(i, fn(items[i]))`` in order, computed in ``num_workers`` threads (0 = this thread).

    Args:
        fn: the work per item (decoding and converting one image).
        items: the inputs.
        num_workers: threads; 0 runs ``fn`` in the calling thread.
        progress: show a progress bar.
        desc: the progress bar's label.

    Yields:
        ``(index, result)`` pairs in the order of ``items``.
    """
    bar = progress_bar(total=len(items), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
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


def build_once(parent: str | Path, name: str, write: Callable[[Path, bool], None],
               open_folder: Callable[[Path], _T | None], progress: bool = True) -> _T:
    """Open the cache folder ``parent/name``, building it first when it is missing or broken.

    The one build path of every on-disk cache. ``write(tmp, progress)`` fills a fresh temporary
    folder next to the final one (it should write its index file last); the folder is then renamed
    into place, replacing a folder that fails ``open_folder`` (truncated or inconsistent). A folder
    renamed into place by another process first is kept. Under ``torchrun`` rank 0 opens or builds
    first while the other ranks wait, then they open what it built (every rank must call this);
    progress is shown on rank 0 only.

    Args:
        parent: the cache root (created when missing).
        name: the folder name (a content key).
        write: fills a folder; its second argument says whether to show a progress bar.
        open_folder: opens a folder, or returns None when it is missing, incomplete or inconsistent.
        progress: show a progress bar while building (rank 0 only).

    Returns:
        What ``open_folder`` returns for the final folder.

    Raises:
        DataError: the cache root cannot be written, or the built folder fails ``open_folder``;
            and whatever ``write`` raises (the temporary folder is removed first).
    """
    ctx = current_context()
    show = progress and ctx.is_main
    if not ctx.distributed:
        return _build_atomically(Path(parent), name, lambda tmp: write(tmp, show), open_folder)
    if not ctx.is_main:
        barrier(ctx)  # rank 0 is building
    try:
        return _build_atomically(Path(parent), name, lambda tmp: write(tmp, show), open_folder)
    finally:
        if ctx.is_main:
            barrier(ctx)


def _build_atomically(parent: Path, name: str, write: Callable[[Path], None],
                      open_folder: Callable[[Path], _T | None]) -> _T:
    """:func:`build_once` in one process: open, else build in a temporary folder and rename it into place."""
    final = parent / name
    opened = open_folder(final)
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
        if final.exists() and open_folder(final) is None:  # broken: move it away before the rename
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
    opened = open_folder(final)
    if opened is None:
        raise DataError(f"cache '{final}' could not be read back after building it",
                        "remove the folder and check the disk")
    return opened


__all__ = ["IMAGES_NAME", "INDEX_NAME", "MemmapCacheFolder", "build_once", "map_with_progress"]
