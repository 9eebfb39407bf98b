"""A persistent embedding index with per-item metadata (exact or approximate inner-product search).

:class:`EmbeddingIndex` stores float32 embeddings together with one JSON-serialisable metadata
dict per item (``id``, ``modality``, ``x``, ``y``, ``lon``, ``lat``, ``source`` ...) and answers
top-``k`` queries, best first. Item ids are insertion positions: the ``i``-th embedding ever added
has id ``i``, and ``index.metadata[i]`` describes it.

**Normalisation.** The ``"ip"`` metric ranks by the raw inner product, which is cosine similarity
only for L2-normalised vectors. The caller normalises (the usual case: the model already returns
unit embeddings), or passes ``normalize=True`` and the index L2-normalises every added vector and
every query itself (an all-zero vector stays zero).

**Kinds and backends.** Index kinds live in a registry (:func:`register_kind`,
:func:`available_kinds`); each kind names the metrics it supports and one store factory per
backend. The built-in ``"flat"`` kind is exact search with

* ``"faiss"`` -- a ``faiss.IndexFlatIP``;
* ``"torch"`` -- a float32 matrix scored with chunked matmul + top-k (each chunk's score block
  holds at most about 4M query x item pairs, so memory stays bounded whatever the index size).

``backend="auto"`` picks faiss when it can be imported and torch otherwise. Both backends return
the same results (up to float rounding); within the returned list, equal scores are ordered by
ascending id, but which of several items tied with the ``k``-th score makes the list is up to the
backend.

**Approximate kinds** (faiss only; without faiss they raise a :class:`~sarbridge.core.errors.SarbridgeError`
naming ``pip install faiss-cpu``). Their tuning parameters are passed as ``params={...}``:

* ``"ivfpq"`` -- ``faiss.IndexIVFPQ`` over an inner-product coarse quantiser. Parameters ``nlist``
  (inverted lists; ``"auto"`` = about ``4 * sqrt(N)`` of the training set), ``m`` (sub-quantisers,
  must divide ``dim``; default the divisor of ``dim`` nearest below ``dim // 16``), ``nbits`` (8),
  ``nprobe`` (16, lists visited per query) and ``rerank`` (4: the ``k * rerank`` PQ candidates are
  re-scored exactly against the stored float32 vectors, so the returned scores are exact inner
  products; 0 returns the raw PQ scores). It needs training: the first ``add`` that brings the
  index to at least ``2 ** nbits`` vectors trains it on everything added so far (an untrained index
  answers queries exactly). When the training set has fewer than ``39 * nlist`` vectors, ``nlist`` is
  lowered to ``N // 39`` and the value used is recorded in :attr:`EmbeddingIndex.params`.
  :meth:`EmbeddingIndex.train` trains explicitly on a chosen sample. Later adds are encoded with
  the trained quantisers.
* ``"hnsw"`` -- ``faiss.IndexHNSWFlat`` with ``METRIC_INNER_PRODUCT``; parameters ``M`` (32),
  ``ef_construction`` (200) and ``ef_search`` (64). Scores are exact, the candidate set approximate.

Both may return fewer than ``k`` hits for a query (e.g. IVF with a small ``nprobe``); missing slots
hold id ``-1`` and score ``-inf``, at the end of the row. :meth:`EmbeddingIndex.set_search_params`
changes ``nprobe`` / ``ef_search`` after construction (saved with the index).

**GPU.** When faiss is a GPU build (``faiss.get_num_gpus() > 0``; the function is absent from some
faiss-cpu builds) and ``backend`` is ``"auto"`` or ``"faiss-gpu"``, ``flat`` and ``ivfpq`` indexes
search through a copy made with ``faiss.index_cpu_to_all_gpus`` (refreshed lazily after adds; the
CPU index remains the master that is saved). ``hnsw`` has no GPU version and stays on the CPU.
``backend="faiss-gpu"`` without a usable GPU raises a :class:`~sarbridge.core.errors.SarbridgeError`.
This path cannot be exercised by the CPU test suite.

**On-disk format** (:meth:`EmbeddingIndex.save` / :meth:`EmbeddingIndex.load`). A directory with

* ``vectors.npy`` -- the ``(count, dim)`` float32 embeddings (plain ``.npy``, no pickle). This one
  portable form is written whatever the backend; loading rebuilds the search structure from it, so
  an index saved with faiss loads with torch and vice versa;
* ``metadata.json`` -- the list of per-item metadata dicts;
* any extra state files of the kind (none for ``"flat"``; ``index.faiss``, the
  ``faiss.serialize_index`` bytes, for a trained ``"ivfpq"`` and for ``"hnsw"``, so loading needs no
  retraining or graph rebuild);
* ``manifest.json`` -- ``{"format": "sarbridge-index", "version": 1, "kind", "metric", "dim",
  "count", "backend", "normalize", "params", "sha256": {file: hex digest}, "created_at", "info"}``,
  where ``params`` are the kind's effective parameters (absent for kinds without any) and
  ``info`` is a free JSON dict of the caller (model checkpoint hash, CRS, ...).

Every file is written atomically (temporary file + rename). ``save`` first removes an existing
manifest and writes the manifest last, so an interrupted save leaves a directory that ``load``
reports as incomplete. ``load`` checks the format and version, that every listed file exists, its
SHA-256, and that the vectors and metadata agree with the recorded count and dimension; anything
off raises :class:`~sarbridge.core.errors.DataError`. A damaged index is never used silently.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
import math
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

import numpy as np

from sarbridge.core.errors import DataError, SarbridgeError
from sarbridge.retrieval.distance import RetrievalInputError, to_numpy
from sarbridge.core.utils import atomic_write, atomic_write_json, file_digest

__all__ = [
    "BACKENDS",
    "FORMAT",
    "FORMAT_VERSION",
    "EmbeddingIndex",
    "IndexKind",
    "VectorStore",
    "available_kinds",
    "faiss_available",
    "register_kind",
]

#: ``format`` field of ``manifest.json``.
FORMAT: Final[str] = "sarbridge-index"
#: ``version`` field of ``manifest.json`` written by this code (and the only one it reads).
FORMAT_VERSION: Final[int] = 1
#: Accepted ``backend`` arguments.
BACKENDS: Final[tuple[str, ...]] = ("auto", "faiss", "faiss-gpu", "torch")

MANIFEST_FILE: Final[str] = "manifest.json"
VECTORS_FILE: Final[str] = "vectors.npy"
#: State file of the faiss-based approximate kinds.
FAISS_STATE_FILE: Final[str] = "index.faiss"
METADATA_FILE: Final[str] = "metadata.json"

# Query x item pairs per score block of the torch backend (16 MiB of float32 scores).
_CHUNK_PAIRS: Final[int] = 2**22
_NORM_EPS: Final[float] = 1e-12
_REBUILD_HINT: Final[str] = (
    "rebuild it with EmbeddingIndex(dim).add(embeddings, metadata) and save() from the source "
    "embeddings"
)


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------
def _import_faiss() -> Any:
    """Import faiss lazily (it is optional at import time of this module)."""
    import faiss  # noqa: PLC0415  (lazy on purpose)

    return faiss


def _faiss_num_gpus() -> int:
    """GPUs visible to faiss (0 for CPU builds, also where ``get_num_gpus`` does not exist)."""
    try:
        faiss = _import_faiss()
    except ImportError:
        return 0
    getter = getattr(faiss, "get_num_gpus", None)
    if getter is None or not hasattr(faiss, "index_cpu_to_all_gpus"):
        return 0
    try:
        return int(getter())
    except Exception:  # noqa: BLE001  (a broken CUDA runtime means: no GPU)
        return 0


def faiss_available() -> bool:
    """Whether ``import faiss`` works in this environment."""
    try:
        _import_faiss()
    except ImportError:
        return False
    return True


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


class _GpuCopyMixin:
    """A lazily refreshed ``faiss.index_cpu_to_all_gpus`` copy of ``self._index`` for searching."""

    _faiss: Any
    _index: Any
    _gpu: bool = False
    _gpu_index: Any = None

    def to_gpu(self) -> bool:
        self._gpu, self._gpu_index = True, None
        return True

    def _dirty(self) -> None:
        self._gpu_index = None

    def _searcher(self) -> Any:
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


class _FaissFlatStore(_GpuCopyMixin, VectorStore):
    """Exact inner-product search with ``faiss.IndexFlatIP`` (searched on GPUs after :meth:`to_gpu`)."""

    backend = "faiss"

    def __init__(self, dim: int, metric: str) -> None:
        super().__init__(dim, metric)
        self._faiss = _import_faiss()
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


class _TorchFlatStore(VectorStore):
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
        import torch  # noqa: PLC0415

        m, n = queries.shape[0], self._n
        scores_out = np.empty((m, k), dtype=np.float32)
        ids_out = np.empty((m, k), dtype=np.int64)
        if m == 0:
            return scores_out, ids_out
        if not queries.flags.writeable:  # torch.from_numpy warns on read-only arrays
            queries = queries.copy()
        gallery = torch.from_numpy(self._buf[:n])
        # Query rows per block: bounded by the running (rows, 2k) merge buffers too.
        q_rows = max(1, min(m, 1024, _CHUNK_PAIRS // (4 * k)))
        g_rows = max(k, _CHUNK_PAIRS // q_rows)
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


def _positive_int(value: Any, name: str, kind: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise RetrievalInputError(f"index kind '{kind}' needs a positive integer {name}, got {value!r}")
    return int(value)


def _default_m(dim: int) -> int:
    """The divisor of ``dim`` nearest below (or equal to) ``max(1, dim // 16)``."""
    target = max(1, dim // 16)
    return max(d for d in range(1, target + 1) if dim % d == 0)


class _FaissApproxStore(_TorchFlatStore):
    """Shared part of the faiss approximate kinds.

    The float32 vectors are kept in the exact buffer of :class:`_TorchFlatStore` (they are saved as
    ``vectors.npy`` and serve exact re-ranking and searches of a not yet trained index); the faiss
    index lives in ``self._index`` (None until trained) and is saved as ``index.faiss``.
    """

    backend = "faiss"
    kind = ""

    def __init__(self, dim: int, metric: str) -> None:
        super().__init__(dim, metric)
        self._faiss = _import_faiss()
        self._index: Any = None

    @property
    def is_trained(self) -> bool:
        return self._index is not None and bool(self._index.is_trained)

    def _index_add(self, vectors: np.ndarray) -> None:
        self._index.add(vectors)

    def add(self, vectors: np.ndarray) -> None:
        start = self._n
        super().add(vectors)
        if self.is_trained:
            if vectors.shape[0]:
                self._index_add(vectors)
        else:
            self._maybe_autotrain(start)

    def _maybe_autotrain(self, start: int) -> None:
        """Hook: train (and index ``buffer[:ntotal]``) once enough vectors are buffered."""
        del start

    def _faiss_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = self._index.search(queries, k)
        return scores.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not self.is_trained:
            return super().search(queries, k)
        scores, ids = self._faiss_search(queries, k)
        missing = ids < 0
        if missing.any():
            scores = np.where(missing, np.float32(-np.inf), scores).astype(np.float32)
        return scores, ids

    def state_files(self) -> dict[str, bytes]:
        if not self.is_trained:
            return {}
        return {FAISS_STATE_FILE: self._faiss.serialize_index(self._index).tobytes()}

    def restore(self, vectors: np.ndarray, files: Mapping[str, bytes]) -> None:
        raw = files.get(FAISS_STATE_FILE)
        if raw is None:  # saved before training: rebuild (and train if it now can)
            self.add(vectors)
            return
        try:
            index = self._faiss.deserialize_index(np.frombuffer(raw, dtype=np.uint8))
        except RuntimeError as exc:
            raise ValueError(f"{FAISS_STATE_FILE} cannot be deserialised by faiss ({exc})") from exc
        if int(index.d) != self.dim or int(index.ntotal) != vectors.shape[0] or not index.is_trained:
            raise ValueError(
                f"{FAISS_STATE_FILE} holds a faiss index of dimension {index.d} with {index.ntotal} vectors, "
                f"expected a trained one of dimension {self.dim} with {vectors.shape[0]}"
            )
        self._check_restored(index)
        _TorchFlatStore.add(self, vectors)
        self._index = index
        self._apply_search_params()

    def _check_restored(self, index: Any) -> None:
        """Hook: refuse a deserialised index of the wrong faiss type."""
        del index

    def _apply_search_params(self) -> None:
        """Hook: push the search-time parameters into ``self._index``."""


class _IVFPQStore(_GpuCopyMixin, _FaissApproxStore):
    """``faiss.IndexIVFPQ`` (inner-product quantiser) with optional exact re-ranking."""

    kind = "ivfpq"

    def __init__(self, dim: int, metric: str, nlist: int | str = "auto", m: int | None = None, nbits: int = 8,
                 nprobe: int = 16, rerank: int = 4) -> None:
        super().__init__(dim, metric)
        if nlist != "auto":
            nlist = _positive_int(nlist, "nlist", self.kind)
        m = _default_m(dim) if m is None else _positive_int(m, "m", self.kind)
        if dim % m:
            raise RetrievalInputError(
                f"index kind 'ivfpq' needs m (sub-quantisers) dividing the dimension {dim}, got m={m}",
                f"use m={_default_m(dim)} or another divisor of {dim}",
            )
        nbits = _positive_int(nbits, "nbits", self.kind)
        if nbits > 16:
            raise RetrievalInputError(f"index kind 'ivfpq' supports nbits up to 16, got {nbits}")
        if isinstance(rerank, bool) or not isinstance(rerank, (int, np.integer)) or rerank < 0:
            raise RetrievalInputError(f"index kind 'ivfpq' needs a non-negative integer rerank, got {rerank!r}")
        self.params = {"nlist": nlist, "m": m, "nbits": nbits,
                       "nprobe": _positive_int(nprobe, "nprobe", self.kind), "rerank": int(rerank)}

    @property
    def min_train(self) -> int:
        """Fewest training vectors: one per PQ centroid (``2 ** nbits``)."""
        return 2 ** int(self.params["nbits"])

    def _nlist_for(self, n: int) -> int:
        nlist = self.params["nlist"]
        if nlist == "auto":
            nlist = max(1, round(4 * math.sqrt(n)))
        return int(max(1, min(nlist, n // 39)))

    def train(self, vectors: np.ndarray) -> None:
        if self.is_trained:
            raise RetrievalInputError("the ivfpq index is already trained", "build a new index to retrain it")
        n = vectors.shape[0]
        if n < self.min_train:
            raise RetrievalInputError(
                f"index kind 'ivfpq' needs at least {self.min_train} training vectors (2**nbits), got {n}",
                "train on more vectors, or lower params['nbits']",
            )
        f = self._faiss
        nlist = self._nlist_for(n)
        quantizer = f.IndexFlatIP(self.dim)
        index = f.IndexIVFPQ(quantizer, self.dim, nlist, int(self.params["m"]), int(self.params["nbits"]),
                             f.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = 1  # nlist was already lowered to keep >= 39 points per list
        index.pq.cp.min_points_per_centroid = 1  # small training sets are legal; no C++ warning spam
        index.train(np.ascontiguousarray(vectors, dtype=np.float32))
        self._index = index  # faiss' Python wrapper keeps a reference to the quantiser
        self.params["nlist"] = nlist  # record what was actually used
        self._apply_search_params()
        if self._n:  # vectors buffered before training
            self._index.add(self._buf[: self._n])
        self._dirty()

    def _maybe_autotrain(self, start: int) -> None:
        del start
        if self._n >= self.min_train:
            self.train(self._buf[: self._n])

    def _index_add(self, vectors: np.ndarray) -> None:
        self._index.add(vectors)
        self._dirty()

    def _check_restored(self, index: Any) -> None:
        ivf = self._faiss.try_extract_index_ivf(index)
        pq = getattr(index, "pq", None)
        if ivf is None or pq is None or int(pq.M) != int(self.params["m"]):
            raise ValueError(f"{FAISS_STATE_FILE} is not the IVF-PQ index its manifest describes")
        self.params["nlist"] = int(ivf.nlist)

    def _apply_search_params(self) -> None:
        if self._index is not None:
            self._index.nprobe = int(self.params["nprobe"])

    def set_search_params(self, **values: int) -> None:
        unknown = set(values) - {"nprobe"}
        if unknown:
            raise RetrievalInputError(f"index kind 'ivfpq' has no search parameter {', '.join(sorted(unknown))}",
                                      "use nprobe")
        if "nprobe" in values:
            self.params["nprobe"] = _positive_int(values["nprobe"], "nprobe", self.kind)
            self._apply_search_params()

    def _faiss_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        searcher = self._searcher()
        if searcher is not self._index:
            params = getattr(self._faiss, "GpuParameterSpace", None)
            if params is not None:
                params().set_index_parameter(searcher, "nprobe", int(self.params["nprobe"]))
        rerank = int(self.params["rerank"])
        kk = min(self._n, k * rerank) if rerank else k
        scores, ids = searcher.search(queries, kk)
        ids = ids.astype(np.int64, copy=False)
        if not rerank:
            return scores.astype(np.float32, copy=False), ids
        # Exact re-scoring of the PQ candidates against the stored vectors.
        cand = self._buf[np.maximum(ids, 0)]
        exact = np.einsum("qd,qkd->qk", queries, cand, dtype=np.float64).astype(np.float32)
        exact[ids < 0] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(exact, order, axis=1), np.take_along_axis(ids, order, axis=1)


class _HNSWStore(_FaissApproxStore):
    """``faiss.IndexHNSWFlat`` with ``METRIC_INNER_PRODUCT`` (CPU only)."""

    kind = "hnsw"

    def __init__(self, dim: int, metric: str, M: int = 32, ef_construction: int = 200,  # noqa: N803
                 ef_search: int = 64) -> None:
        super().__init__(dim, metric)
        self.params = {"M": _positive_int(M, "M", self.kind),
                       "ef_construction": _positive_int(ef_construction, "ef_construction", self.kind),
                       "ef_search": _positive_int(ef_search, "ef_search", self.kind)}
        f = self._faiss
        self._index = f.IndexHNSWFlat(dim, self.params["M"], f.METRIC_INNER_PRODUCT)
        self._index.hnsw.efConstruction = self.params["ef_construction"]
        self._apply_search_params()

    def _check_restored(self, index: Any) -> None:
        if not isinstance(index, self._faiss.IndexHNSWFlat) and not hasattr(index, "hnsw"):
            raise ValueError(f"{FAISS_STATE_FILE} is not the HNSW index its manifest describes")

    def _apply_search_params(self) -> None:
        self._index.hnsw.efSearch = int(self.params["ef_search"])

    def set_search_params(self, **values: int) -> None:
        unknown = set(values) - {"ef_search"}
        if unknown:
            raise RetrievalInputError(f"index kind 'hnsw' has no search parameter {', '.join(sorted(unknown))}",
                                      "use ef_search")
        if "ef_search" in values:
            self.params["ef_search"] = _positive_int(values["ef_search"], "ef_search", self.kind)
            self._apply_search_params()


# --------------------------------------------------------------------------------------------
# Kind registry
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IndexKind:
    """An index kind: which metrics it supports and how to build its store on each backend.

    Attributes:
        name: the ``kind`` argument / manifest field (e.g. ``"flat"``).
        metrics: supported ``metric`` names.
        stores: backend name (``"faiss"``, ``"torch"``) -> factory ``(dim, metric, **params) -> store``.
        description: one line for listings and error messages.
        params: names of the tuning parameters the factories accept as keyword arguments, with
            their defaults (for listings; the factories apply the defaults themselves).
    """

    name: str
    metrics: tuple[str, ...]
    stores: Mapping[str, Callable[..., VectorStore]]
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)


_KINDS: dict[str, IndexKind] = {}


def register_kind(kind: IndexKind, replace: bool = False) -> IndexKind:
    """Add an index kind to the registry.

    Args:
        kind: the kind; its ``stores`` must cover ``"faiss"`` and/or ``"torch"``.
        replace: allow replacing an already registered kind of the same name.

    Returns:
        ``kind`` (so it can be used on a module-level constant).

    Raises:
        ValueError: the name is taken (and ``replace`` is False), or the kind has no store / an
            unknown backend.
    """
    if kind.name in _KINDS and not replace:
        raise ValueError(f"index kind '{kind.name}' is already registered")
    unknown = set(kind.stores) - {"faiss", "torch"}
    if not kind.stores or unknown:
        raise ValueError(
            f"index kind '{kind.name}' must provide stores for 'faiss' and/or 'torch'"
            + (f", got unknown backend(s) {sorted(unknown)}" if unknown else "")
        )
    if not kind.metrics:
        raise ValueError(f"index kind '{kind.name}' supports no metric")
    _KINDS[kind.name] = kind
    return kind


def available_kinds() -> tuple[str, ...]:
    """Names of the registered index kinds, sorted."""
    return tuple(sorted(_KINDS))


register_kind(
    IndexKind(
        name="flat",
        metrics=("ip",),
        stores={"faiss": _FaissFlatStore, "torch": _TorchFlatStore},
        description="exact search over all stored vectors",
    )
)
register_kind(
    IndexKind(
        name="ivfpq",
        metrics=("ip",),
        stores={"faiss": _IVFPQStore},
        description="approximate search: faiss IVF-PQ (needs training), exact re-ranking of candidates",
        params={"nlist": "auto", "m": None, "nbits": 8, "nprobe": 16, "rerank": 4},
    )
)
register_kind(
    IndexKind(
        name="hnsw",
        metrics=("ip",),
        stores={"faiss": _HNSWStore},
        description="approximate search: faiss HNSW graph over the exact vectors",
        params={"M": 32, "ef_construction": 200, "ef_search": 64},
    )
)


def _resolve(kind: str, metric: str, backend: str) -> tuple[IndexKind, str]:
    """Validate ``kind`` / ``metric`` / ``backend`` and resolve ``"auto"``."""
    spec = _KINDS.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise RetrievalInputError(
            f"unknown index kind {kind!r}", f"use one of {', '.join(available_kinds())}"
        )
    if metric not in spec.metrics:
        raise RetrievalInputError(
            f"index kind '{kind}' does not support metric {metric!r}",
            f"use one of {', '.join(spec.metrics)}",
        )
    if backend not in BACKENDS:
        raise RetrievalInputError(f"unknown index backend {backend!r}", f"use one of {', '.join(BACKENDS)}")
    if backend == "faiss-gpu":
        if "faiss" not in spec.stores:
            raise RetrievalInputError(f"index kind '{kind}' has no 'faiss' backend", "use backend='torch'")
        backend = "faiss"  # the GPU check follows in EmbeddingIndex
    if backend == "auto":
        if "faiss" in spec.stores and faiss_available():
            return spec, "faiss"
        if "torch" in spec.stores:
            return spec, "torch"
        backend = "faiss"  # the only option; fall through to the import check below
    if backend not in spec.stores:
        raise RetrievalInputError(
            f"index kind '{kind}' has no '{backend}' backend",
            f"use backend {' or '.join(repr(b) for b in spec.stores)}",
        )
    if backend == "faiss":
        try:
            _import_faiss()
        except ImportError as exc:
            if "torch" not in spec.stores:
                raise SarbridgeError(f"index kind '{kind}' needs faiss",
                                     "pip install faiss-cpu or use kind=flat") from exc
            raise SarbridgeError(
                f"index backend 'faiss' was requested but faiss cannot be imported ({exc})",
                "install faiss-cpu, or use backend='torch'",
            ) from exc
    return spec, backend


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _json_default(obj: Any) -> Any:
    """``json.dumps`` fallback: numpy scalars / arrays become Python numbers / lists."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _to_json(value: Any, what: str) -> str:
    """Serialise ``value`` as strict JSON (no NaN), naming ``what`` on failure."""
    try:
        return json.dumps(value, default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RetrievalInputError(
            f"{what} is not JSON-serialisable: {exc}",
            "use str / int / float (finite) / bool / None / lists and dicts of them",
        ) from exc


def _matrix(x: Any, name: str, dim: int) -> np.ndarray:
    """Validate a ``(n, dim)`` real, finite matrix and return it as C-contiguous float32."""
    a = to_numpy(x, name)
    if a.ndim != 2:
        raise RetrievalInputError(
            f"{name} must be a 2-D (num_items, dim) array, got shape {a.shape}",
            "reshape a single vector with .reshape(1, -1)" if a.ndim == 1 else None,
        )
    if a.dtype.kind not in "fiu":
        raise RetrievalInputError(f"{name} must hold real numbers, got dtype {a.dtype}")
    if a.shape[1] != dim:
        raise RetrievalInputError(f"{name} have dimension {a.shape[1]}, but the index has dimension {dim}")
    with np.errstate(over="ignore"):  # values beyond float32 become inf, reported below
        a = np.ascontiguousarray(a, dtype=np.float32)
    if a.size and not np.isfinite(a).all():
        bad_rows = np.flatnonzero(~np.isfinite(a).all(axis=1))
        what = "NaN" if np.isnan(a[bad_rows]).any() else "infinite"
        raise RetrievalInputError(
            f"{name} contain {what} values (in {bad_rows.size} row(s), first row {int(bad_rows[0])})",
            "check the model outputs (diverged training?); values beyond the float32 range also "
            "become infinite",
        )
    return a


def _normalized(a: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation (all-zero rows stay zero)."""
    norms = np.sqrt(np.einsum("ij,ij->i", a, a, dtype=np.float64))
    return (a / np.maximum(norms, _NORM_EPS)[:, None]).astype(np.float32)


def _write_npy(path: Path, a: np.ndarray) -> None:
    """``np.save`` through a file object (``np.save`` on a path would append ``.npy``)."""
    with open(path, "wb") as f:
        np.save(f, a, allow_pickle=False)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# --------------------------------------------------------------------------------------------
# The index
# --------------------------------------------------------------------------------------------
class EmbeddingIndex:
    """Embedding index with per-item metadata; see the module docstring for the details.

    Args:
        dim: embedding dimension.
        kind: index kind from the registry (:func:`available_kinds`; built in: ``"flat"``,
            ``"ivfpq"``, ``"hnsw"``).
        metric: similarity; ``"ip"`` (inner product, higher is better).
        backend: ``"auto"`` (faiss if importable, else torch; faiss GPUs when the faiss build has
            them), ``"faiss"`` (CPU), ``"faiss-gpu"`` or ``"torch"``.
        normalize: L2-normalise added vectors and queries inside the index. Leave False when the
            embeddings are already unit vectors (the caller's job by default).
        info: free JSON-serialisable dict saved in the manifest (checkpoint hash, CRS ...).
        params: tuning parameters of the kind (see the module docstring), e.g.
            ``{"nlist": 16, "m": 8}`` for ``"ivfpq"``; omitted ones take their defaults.

    Attributes:
        dim, kind, metric, normalize: as given.
        backend: the resolved backend (``"faiss"`` or ``"torch"``).
        gpu: whether searches run on faiss GPUs.
        info: the free info dict (also filled by :meth:`load`).
        created_at: ISO-8601 UTC time of the last :meth:`save` / of the loaded manifest, else None.

    Raises:
        RetrievalInputError: (a :class:`ValueError`) bad ``dim`` or unknown kind / metric /
            backend.
        SarbridgeError: ``backend="faiss"`` or an approximate kind but faiss cannot be imported;
            ``backend="faiss-gpu"`` without a faiss GPU.

    Example:
        >>> index = EmbeddingIndex(4)
        >>> index.add(np.eye(4, dtype=np.float32), [{"id": f"ref{i}"} for i in range(4)])
        array([0, 1, 2, 3])
        >>> scores, ids = index.search(np.eye(4, dtype=np.float32)[:1], k=2)
        >>> best = int(ids[0, 0])
        >>> best, index.metadata[best]["id"]
        (0, 'ref0')
    """

    def __init__(
        self,
        dim: int,
        kind: str = "flat",
        metric: str = "ip",
        backend: str = "auto",
        normalize: bool = False,
        info: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise RetrievalInputError(f"index dimension must be a positive integer, got {dim!r}")
        spec, resolved = _resolve(kind, metric, backend)
        given = dict(params or {})
        if params is not None and not isinstance(params, Mapping):
            raise RetrievalInputError(f"params must be a dict, got {type(params).__name__}")
        unknown = sorted(set(given) - set(spec.params))
        if unknown:
            raise RetrievalInputError(
                f"index kind '{spec.name}' has no parameter {', '.join(map(repr, unknown))}",
                f"its parameters: {', '.join(spec.params) or 'none'}",
            )
        self.dim = int(dim)
        self.kind = spec.name
        self.metric = metric
        self.backend = resolved
        self.normalize = bool(normalize)
        self.info: dict[str, Any] = {}
        if info is not None:
            self.info = self._checked_info(info)
        self.created_at: str | None = None
        self._store = spec.stores[resolved](self.dim, metric, **given)
        self._metadata: list[dict[str, Any]] = []
        self.gpu = False
        if resolved == "faiss" and backend in ("auto", "faiss-gpu") and _faiss_num_gpus() > 0:
            self.gpu = self._store.to_gpu()
        if backend == "faiss-gpu" and not self.gpu:
            raise SarbridgeError(
                "index backend 'faiss-gpu' was requested but "
                + ("faiss sees no GPU" if _faiss_num_gpus() == 0 else f"kind '{self.kind}' has no GPU search"),
                "install a GPU build of faiss, or use backend='faiss'",
            )

    # ---- basic properties -------------------------------------------------------------------
    def __len__(self) -> int:
        return self._store.ntotal

    @property
    def ntotal(self) -> int:
        """Number of stored items (same as ``len(index)``)."""
        return self._store.ntotal

    @property
    def params(self) -> dict[str, Any]:
        """Effective tuning parameters of the kind (a copy; empty for ``"flat"``)."""
        return dict(self._store.params)

    @property
    def is_trained(self) -> bool:
        """Whether the index has its trained quantisers (always True for kinds without training)."""
        return self._store.is_trained

    def train(self, vectors: Any) -> None:
        """Train the quantisers of a kind that needs it (``"ivfpq"``) on ``vectors``.

        Vectors added before are indexed right after training. A no-op for other kinds. Without an
        explicit call, ``"ivfpq"`` trains itself on the first ``add`` that reaches ``2 ** nbits``
        vectors.

        Args:
            vectors: ``(N, dim)`` training sample (normalised like added vectors when
                ``normalize=True``); it is not added to the index.

        Raises:
            RetrievalInputError: malformed vectors, too few of them, or an already trained index.
        """
        x = _matrix(vectors, "training vectors", self.dim)
        if self.normalize:
            x = _normalized(x)
        self._store.train(x)

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change search-time parameters (kept in :attr:`params` and saved).

        Args:
            nprobe: inverted lists visited per query (``"ivfpq"``); more is slower and more exact.
            ef_search: candidate list size of the graph search (``"hnsw"``).

        Raises:
            RetrievalInputError: a parameter the kind does not have, or not a positive integer.
        """
        values = {k: v for k, v in (("nprobe", nprobe), ("ef_search", ef_search)) if v is not None}
        self._store.set_search_params(**values)

    @property
    def metadata(self) -> list[dict[str, Any]]:
        """Per-item metadata, ``metadata[id]`` (the stored list itself: treat it as read-only)."""
        return self._metadata

    def __repr__(self) -> str:
        return (
            f"EmbeddingIndex(dim={self.dim}, kind={self.kind!r}, metric={self.metric!r}, "
            f"backend={self.backend!r}, count={len(self)}, normalize={self.normalize}"
            + (f", params={self._store.params}" if self._store.params else "") + ")"
        )

    # ---- adding and searching ---------------------------------------------------------------
    def add(self, embeddings: Any, metadata: Sequence[Mapping[str, Any]] | None = None) -> np.ndarray:
        """Append embeddings (and their metadata); may be called repeatedly.

        Args:
            embeddings: ``(N, dim)`` numpy array or torch tensor; converted to float32. Expected
                L2-normalised unless the index was built with ``normalize=True``.
            metadata: one JSON-serialisable dict per row (numpy scalars / arrays are converted;
                NaN and inf are rejected). The index keeps its own copy. None gives empty dicts.

        Returns:
            ``(N,)`` int64 ids given to the new items.

        Raises:
            RetrievalInputError: (a :class:`ValueError`) not 2-D, wrong dimension, non-numeric,
                NaN or infinite values (naming the first bad row), a metadata list of the wrong
                length, or metadata that is not a JSON-serialisable dict.
        """
        x = _matrix(embeddings, "embeddings", self.dim)
        n = x.shape[0]
        if metadata is None:
            items: list[dict[str, Any]] = [{} for _ in range(n)]
        else:
            if isinstance(metadata, (Mapping, str, bytes)) or not isinstance(metadata, Sequence):
                raise RetrievalInputError(
                    f"metadata must be a list with one dict per embedding, got {type(metadata).__name__}"
                )
            if len(metadata) != n:
                raise RetrievalInputError(f"got {n} embeddings but {len(metadata)} metadata entries")
            items = []
            for i, m in enumerate(metadata):
                if not isinstance(m, Mapping):
                    raise RetrievalInputError(f"metadata[{i}] must be a dict, got {type(m).__name__}")
                # A JSON round trip validates, copies and normalises (tuples -> lists, numpy -> Python)
                # so the in-memory metadata equals what load() will return.
                items.append(json.loads(_to_json(dict(m), f"metadata[{i}]")))
        if self.normalize:
            x = _normalized(x)
        start = len(self)
        self._store.add(x)
        self._metadata.extend(items)
        return np.arange(start, start + n, dtype=np.int64)

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items of every query, best (highest inner product) first.

        Args:
            queries: ``(M, dim)`` numpy array or torch tensor (L2-normalised like the items).
            k: results per query; clamped to ``len(self)``.

        Returns:
            ``(scores, ids)``: ``(M, min(k, len(self)))`` float32 scores and int64 ids, sorted by
            descending score, equal scores by ascending id. Approximate kinds may find fewer than
            ``k`` items: the missing slots at the end of a row hold id ``-1`` and score ``-inf``.

        Raises:
            RetrievalInputError: (a :class:`ValueError`) the index is empty, ``k`` is not a
                positive integer, or the queries are malformed (see :meth:`add`).
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise RetrievalInputError(f"k must be a positive integer, got {k!r}")
        n = len(self)
        if n == 0:
            raise RetrievalInputError("cannot search an empty index (it holds 0 items)", "add() embeddings first")
        q = _matrix(queries, "queries", self.dim)
        if self.normalize:
            q = _normalized(q)
        k = min(int(k), n)
        scores, ids = self._store.search(q, k)
        if k > 1 and scores.shape[0]:
            # Deterministic order inside the list: descending score, then ascending id.
            order = np.lexsort((ids, -scores.astype(np.float64)), axis=1)
            scores = np.take_along_axis(scores, order, axis=1)
            ids = np.take_along_axis(ids, order, axis=1)
        return np.ascontiguousarray(scores), np.ascontiguousarray(ids)

    def embeddings(self, ids: Any = None) -> np.ndarray:
        """The stored embeddings as a new ``(len, dim)`` float32 array (row ``i`` = id ``i``), or
        only the rows of ``ids`` (without copying the whole index).

        With ``normalize=True`` these are the normalised vectors actually searched.
        """
        if ids is None:
            return self._store.reconstruct()
        idx = np.asarray(ids, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise RetrievalInputError(f"ids must be in [0, {len(self)}), got {int(idx.min())}..{int(idx.max())}")
        return self._store.rows(idx)

    # ---- persistence ------------------------------------------------------------------------
    @staticmethod
    def _checked_info(info: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(info, Mapping):
            raise RetrievalInputError(f"info must be a dict, got {type(info).__name__}")
        return json.loads(_to_json(dict(info), "info"))

    def save(self, directory: str | Path, info: Mapping[str, Any] | None = None) -> Path:
        """Write the index to ``directory`` (created if needed; an existing index is replaced).

        Files: ``vectors.npy``, ``metadata.json``, the kind's extra state files, then
        ``manifest.json`` (see the module docstring). Each is written atomically; an existing
        ``manifest.json`` is removed first so a crash mid-way never leaves a valid-looking mix of
        old and new files.

        Args:
            directory: target folder.
            info: entries merged into :attr:`info` before writing.

        Returns:
            The directory as a :class:`~pathlib.Path`.

        Raises:
            RetrievalInputError: ``info`` is not a JSON-serialisable dict.
            DataError: the metadata list no longer matches the number of vectors (it was
                modified from outside).
        """
        if info is not None:
            self.info.update(self._checked_info(info))
        else:
            self.info = self._checked_info(self.info)
        d = Path(directory)
        n = len(self)
        if len(self._metadata) != n:
            raise DataError(
                f"cannot save index to '{d}': it has {n} vectors but {len(self._metadata)} metadata "
                "entries (was index.metadata modified?)",
                "change metadata only through add()",
            )
        vectors = self._store.reconstruct()
        meta_text = json.dumps(self._metadata, default=_json_default, allow_nan=False)
        extra = self._store.state_files()
        reserved = {MANIFEST_FILE, VECTORS_FILE, METADATA_FILE}
        for name in extra:
            if name in reserved or Path(name).name != name:
                raise ValueError(f"index kind '{self.kind}' uses an invalid state file name {name!r}")

        d.mkdir(parents=True, exist_ok=True)
        (d / MANIFEST_FILE).unlink(missing_ok=True)
        atomic_write(d / VECTORS_FILE, lambda p: _write_npy(p, vectors))
        atomic_write(d / METADATA_FILE, lambda p: p.write_text(meta_text, encoding="utf-8"))
        sha = {
            VECTORS_FILE: file_digest(d / VECTORS_FILE),
            METADATA_FILE: hashlib.sha256(meta_text.encode("utf-8")).hexdigest(),
        }
        for name, content in extra.items():
            atomic_write(d / name, lambda p, c=content: p.write_bytes(c))
            sha[name] = hashlib.sha256(content).hexdigest()
        self.created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "kind": self.kind,
            "metric": self.metric,
            "dim": self.dim,
            "count": n,
            "backend": self.backend,
            "normalize": self.normalize,
            **({"params": self._store.params} if self._store.params else {}),
            "sha256": sha,
            "created_at": self.created_at,
            "info": self.info,
        }
        atomic_write_json(d / MANIFEST_FILE, manifest)
        return d

    @classmethod
    def load(cls, directory: str | Path, backend: str = "auto") -> EmbeddingIndex:
        """Read an index written by :meth:`save`, verifying it first.

        Args:
            directory: the index folder.
            backend: backend of the rebuilt index (independent of the one that saved it).

        Returns:
            The index, with :attr:`info` and :attr:`created_at` from the manifest.

        Raises:
            DataError: the folder or its manifest is missing, the manifest is not a
                ``sarbridge-index`` of a supported version, a listed file is missing, a checksum
                does not match, or the vectors / metadata disagree with the manifest.
        """
        d = Path(directory)
        if not d.is_dir():
            raise DataError(f"index '{d}' does not exist (no such directory)", "check the path")
        mpath = d / MANIFEST_FILE
        if not mpath.is_file():
            raise DataError(
                f"index '{d}' is incomplete: {MANIFEST_FILE} is missing (not an index folder, or an "
                "interrupted save)",
                _REBUILD_HINT,
            )
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"index '{d}' is damaged: {MANIFEST_FILE} cannot be read ({exc})", _REBUILD_HINT) from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            found = manifest.get("format") if isinstance(manifest, dict) else None
            raise DataError(
                f"'{d}' is not a sarbridge index: {MANIFEST_FILE} has format {found!r}, expected '{FORMAT}'",
                "point to a folder written by EmbeddingIndex.save()",
            )
        version = manifest.get("version")
        if not _is_int(version) or version != FORMAT_VERSION:
            newer = _is_int(version) and version > FORMAT_VERSION
            raise DataError(
                f"index '{d}' has format version {version!r}; this sarbridge reads version {FORMAT_VERSION}",
                "upgrade sarbridge" if newer else _REBUILD_HINT,
            )

        def damaged(what: str) -> DataError:
            return DataError(f"index '{d}' is damaged: {what}", _REBUILD_HINT)

        dim, count = manifest.get("dim"), manifest.get("count")
        if not _is_int(dim) or dim < 1 or not _is_int(count) or count < 0:
            raise damaged(f"{MANIFEST_FILE} has an invalid dim {dim!r} or count {count!r}")
        kind, metric = manifest.get("kind"), manifest.get("metric")
        if not isinstance(kind, str) or kind not in _KINDS:
            raise DataError(
                f"index '{d}' has kind {kind!r}, which this sarbridge does not know",
                f"known kinds: {', '.join(available_kinds())}; upgrade sarbridge or rebuild the index",
            )
        sha = manifest.get("sha256")
        if (
            not isinstance(sha, dict)
            or VECTORS_FILE not in sha
            or METADATA_FILE not in sha
            or not all(isinstance(k, str) and Path(k).name == k and k != MANIFEST_FILE and isinstance(v, str)
                       for k, v in sha.items())
        ):
            raise damaged(f"{MANIFEST_FILE} has no valid sha256 table for {VECTORS_FILE} and {METADATA_FILE}")
        info = manifest.get("info", {})
        if not isinstance(info, dict):
            raise damaged(f"{MANIFEST_FILE} has a non-dict info entry")
        for name, digest in sha.items():
            path = d / name
            if not path.is_file():
                raise damaged(f"{name} is missing")
            if file_digest(path) != digest:
                raise damaged(f"checksum of {name} does not match its manifest")

        try:
            vectors = np.load(d / VECTORS_FILE, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise damaged(f"{VECTORS_FILE} cannot be read ({exc})") from exc
        if vectors.dtype != np.float32 or vectors.shape != (count, dim):
            raise damaged(
                f"{VECTORS_FILE} holds a {vectors.dtype} array of shape {vectors.shape}, but the manifest "
                f"says float32 ({count}, {dim})"
            )
        if vectors.size and not np.isfinite(vectors).all():
            raise damaged(f"{VECTORS_FILE} contains NaN or infinite values")
        try:
            metadata = json.loads((d / METADATA_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise damaged(f"{METADATA_FILE} cannot be read ({exc})") from exc
        if not isinstance(metadata, list) or not all(isinstance(m, dict) for m in metadata):
            raise damaged(f"{METADATA_FILE} is not a list of dicts")
        if len(metadata) != count:
            raise damaged(f"{METADATA_FILE} has {len(metadata)} entries, but the manifest says {count}")

        params = manifest.get("params")
        if params is not None and not isinstance(params, dict):
            raise damaged(f"{MANIFEST_FILE} has a non-dict params entry")
        try:
            index = cls(dim, kind=kind, metric=metric, backend=backend,
                        normalize=bool(manifest.get("normalize", False)), params=params)
        except RetrievalInputError as exc:
            raise DataError(f"index '{d}' cannot be opened: {exc.message}", exc.hint) from exc
        extra = {name: (d / name).read_bytes() for name in sha if name not in (VECTORS_FILE, METADATA_FILE)}
        try:
            index._store.restore(np.ascontiguousarray(vectors), extra)
        except (RuntimeError, ValueError) as exc:
            raise damaged(f"the '{kind}' search structure cannot be restored ({exc})") from exc
        if index._store.ntotal != count:
            raise damaged(f"rebuilding the search structure gave {index._store.ntotal} items, expected {count}")
        index._metadata = metadata
        index.info = info
        created = manifest.get("created_at")
        index.created_at = created if isinstance(created, str) else None
        return index
