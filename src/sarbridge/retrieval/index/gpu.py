"""Searching faiss indexes on GPUs.

When faiss is a GPU build, the ``flat`` and ``ivfpq`` stores search through a copy made with
``faiss.index_cpu_to_all_gpus`` (:class:`GpuCopyMixin`), refreshed lazily after adds; the CPU index
remains the master that is saved. This path cannot be exercised by the CPU test suite.
"""

from __future__ import annotations

import warnings
from typing import Any

from sarbridge.retrieval.index.backends import import_faiss

__all__ = ["GpuCopyMixin", "faiss_num_gpus"]


def faiss_num_gpus() -> int:
    """GPUs visible to faiss (0 without faiss, for CPU builds, also where ``get_num_gpus`` does not exist)."""
    try:
        faiss = import_faiss()
    except ImportError:
        return 0
    getter = getattr(faiss, "get_num_gpus", None)
    if getter is None or not hasattr(faiss, "index_cpu_to_all_gpus"):
        return 0
    try:
        return int(getter())
    except Exception:  # noqa: BLE001  (a broken CUDA runtime means: no GPU)
        return 0


class GpuCopyMixin:
    """A lazily refreshed ``faiss.index_cpu_to_all_gpus`` copy of ``self._index`` for searching.

    Stores mixing this in keep their faiss module in ``self._faiss`` and the CPU index in
    ``self._index``, call :meth:`_dirty` after every change of the CPU index and search through
    :meth:`_searcher`.
    """

    _faiss: Any
    _index: Any
    _gpu: bool = False
    _gpu_index: Any = None

    def to_gpu(self) -> bool:
        """Search on all faiss GPUs from now on (the copy is made on the next search)."""
        self._gpu, self._gpu_index = True, None
        return True

    def _dirty(self) -> None:
        """Drop the GPU copy: the CPU index changed."""
        self._gpu_index = None

    def _searcher(self) -> Any:
        """The index to search: the GPU copy (made now if needed) or, off the GPU, the CPU index."""
        if not self._gpu:
            return self._index
        if self._gpu_index is None:
            try:
                self._gpu_index = self._faiss.index_cpu_to_all_gpus(self._index)
            except RuntimeError as exc:  # e.g. a PQ layout the GPU code does not support
                warnings.warn(f"faiss GPU copy failed, searching on the CPU ({exc})", RuntimeWarning, stacklevel=3)
                self._gpu = False
                return self._index
        return self._gpu_index
