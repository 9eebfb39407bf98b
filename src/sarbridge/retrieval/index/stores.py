"""The search structures behind an index: the store protocol and the exact (``flat``) stores.

A store holds the vectors of one index kind on one backend and answers top-``k`` inner-product
queries; :class:`~sarbridge.retrieval.index.EmbeddingIndex` validates inputs, keeps the metadata and
persists the store. The exact stores are

* :class:`FaissFlatStore` -- a ``faiss.IndexFlatIP`` (searched on GPUs after ``to_gpu``);
* :class:`TorchFlatStore` -- a float32 matrix scored with chunked matmul + top-k (each chunk's
  score block holds at most about :data:`CHUNK_PAIRS` query x item pairs, so memory stays bounded
  whatever the index size). It is also the fallback when faiss is not installed.

The approximate faiss stores live in :mod:`sarbridge.retrieval.index.approximate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from sarbridge.retrieval.distance import RetrievalInputError
from sarbridge.retrieval.index.backends import import_faiss
from sarbridge.retrieval.index.gpu import GpuCopyMixin

__all__ = ["CHUNK_PAIRS", "FaissFlatStore", "TorchFlatStore", "VectorStore"]

#: Query x item pairs per score block of the torch backend (16 MiB of float32 scores).
CHUNK_PAIRS: int = 2**22


class VectorStore:
    """Search structure of one index kind on one backend (internal protocol).

    Ids are insertion positions. ``add`` gets validated, C-contiguous float32 ``(n, dim)``
    arrays; ``search`` gets validated float32 ``(m, dim)`` queries and ``1 <= k <= ntotal`` and
    returns ``(scores (m, k) float32, ids (m, k) int64)`` best first.

    Kinds whose state cannot be rebuilt from the vectors alone (trained quantisers ...) override
    :meth:`state_files` and :meth:`restore`; the index saves, checksums and verifies those files.
    Kinds with tuning parameters keep their effective values in :attr:`params` (saved in the
    manifest and passed back to the factory as keyword arguments on load).
    """

    backend: str = ""

    def __init__(self, dim: int, metric: str) -> None:
        self.dim = dim
        self.metric = metric
        self.params: dict[str, Any] = {}

    @property
    def is_trained(self) -> bool:
        """Whether the store can encode vectors (always True for kinds without training)."""
        return True

    def train(self, vectors: np.ndarray) -> None:
        """Train on ``vectors`` (no-op for kinds without training)."""
        del vectors

    def set_search_params(self, **values: int) -> None:
        """Change search-time parameters; the base store has none."""
        if values:
            raise RetrievalInputError(
                f"this index kind has no search parameter {', '.join(sorted(values))}",
                "nprobe applies to kind 'ivfpq', ef_search to kind 'hnsw'",
            )

    def to_gpu(self) -> bool:
        """Search on all faiss GPUs from now on; returns False where the store cannot."""
        return False

    @property
    def ntotal(self) -> int:
        """Number of stored vectors."""
        raise NotImplementedError

    def add(self, vectors: np.ndarray) -> None:
        """Append ``vectors``; their ids continue from :attr:`ntotal`."""
        raise NotImplementedError

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, ids)`` of every query, best first."""
        raise NotImplementedError

    def exact_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` ``(scores, ids)`` over all stored vectors (the ground truth of the
        approximate kinds; :meth:`search` itself for the exact ones)."""
        return self.search(queries, k)

    def reconstruct(self) -> np.ndarray:
        """All stored vectors as a new ``(ntotal, dim)`` float32 array, in id order."""
        raise NotImplementedError

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` (valid ids), as a new ``(len(ids), dim)`` float32 array."""
        return self.reconstruct()[ids]

    def state_files(self) -> dict[str, bytes]:
        """Extra files (name -> content) needed besides the vectors to restore this store."""
        return {}

    def restore(self, vectors: np.ndarray, files: Mapping[str, bytes]) -> None:
        """Rebuild the store of a loaded index from its vectors and :meth:`state_files`."""
        del files
        self.add(vectors)


class FaissFlatStore(GpuCopyMixin, VectorStore):
    """Exact inner-product search with ``faiss.IndexFlatIP`` (searched on GPUs after :meth:`to_gpu`)."""

    backend = "faiss"

    def __init__(self, dim: int, metric: str) -> None:
        super().__init__(dim, metric)
        self._faiss = import_faiss()
        self._index = self._faiss.IndexFlatIP(dim)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        if vectors.shape[0]:
            self._index.add(vectors)
            self._dirty()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = self._searcher().search(queries, k)
        return scores.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)

    def reconstruct(self) -> np.ndarray:
        n = self.ntotal
        if n == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        return np.ascontiguousarray(self._index.reconstruct_n(0, n), dtype=np.float32)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for j, i in enumerate(ids):
            out[j] = self._index.reconstruct(int(i))
        return out


class TorchFlatStore(VectorStore):
    """Exact inner-product search with chunked torch matmul + top-k (CPU).

    Vectors live in a growing float32 buffer (capacity doubles), so ``add`` is amortised O(n)
    and searching never concatenates the store.
    """

    backend = "torch"

    def __init__(self, dim: int, metric: str) -> None:
        super().__init__(dim, metric)
        self._buf = np.empty((0, dim), dtype=np.float32)
        self._n = 0

    @property
    def ntotal(self) -> int:
        return self._n

    def add(self, vectors: np.ndarray) -> None:
        n = vectors.shape[0]
        if n == 0:
            return
        need = self._n + n
        if need > self._buf.shape[0]:
            cap = max(need, 2 * self._buf.shape[0], 16)
            buf = np.empty((cap, self.dim), dtype=np.float32)
            buf[: self._n] = self._buf[: self._n]
            self._buf = buf
        self._buf[self._n: need] = vectors
        self._n = need

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        m, n = queries.shape[0], self._n
        scores_out = np.empty((m, k), dtype=np.float32)
        ids_out = np.empty((m, k), dtype=np.int64)
        if m == 0:
            return scores_out, ids_out
        if not queries.flags.writeable:  # torch.from_numpy warns on read-only arrays
            queries = queries.copy()
        gallery = torch.from_numpy(self._buf[:n])
        # Query rows per block: bounded by the running (rows, 2k) merge buffers too.
        q_rows = max(1, min(m, 1024, CHUNK_PAIRS // (4 * k)))
        g_rows = max(k, CHUNK_PAIRS // q_rows)
        for qs in range(0, m, q_rows):
            q = torch.from_numpy(queries[qs: qs + q_rows])
            best_s: torch.Tensor | None = None
            best_i: torch.Tensor | None = None
            for gs in range(0, n, g_rows):
                block = q @ gallery[gs: gs + g_rows].T
                s, i = torch.topk(block, min(k, block.shape[1]), dim=1)
                i += gs
                if best_s is not None and best_i is not None:
                    s = torch.cat([best_s, s], dim=1)
                    i = torch.cat([best_i, i], dim=1)
                    s, pos = torch.topk(s, k, dim=1)
                    i = torch.gather(i, 1, pos)
                best_s, best_i = s, i
            assert best_s is not None and best_i is not None
            scores_out[qs: qs + q.shape[0]] = best_s.numpy()
            ids_out[qs: qs + q.shape[0]] = best_i.numpy()
        return scores_out, ids_out

    def reconstruct(self) -> np.ndarray:
        return self._buf[: self._n].copy()

    def rows(self, ids: np.ndarray) -> np.ndarray:
        return self._buf[ids]

