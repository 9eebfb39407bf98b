"""The shared base of the approximate index kinds (faiss only) and the ``hnsw`` kind.

* :class:`FaissApproxStore` -- the float32 vectors plus a faiss index (the IVF kinds ``ivfpq`` and
  ``ivfsq`` built on it live in :mod:`sarbridge.retrieval.index.ivf`);
* :class:`HNSWStore` -- ``faiss.IndexHNSWFlat`` with ``METRIC_INNER_PRODUCT`` (exact scores, an
  approximate candidate set; CPU only).

Both keep the float32 vectors in the exact buffer of
:class:`~sarbridge.retrieval.index.stores.TorchFlatStore` (saved as ``vectors.npy``) and their
faiss index as the state file :data:`FAISS_STATE_FILE`, so loading needs no retraining or graph
rebuild. The parameters are documented in :mod:`sarbridge.retrieval.index`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from sarbridge.retrieval.distance import RetrievalInputError
from sarbridge.retrieval.index.backends import import_faiss
from sarbridge.retrieval.index.stores import TorchFlatStore

__all__ = ["FAISS_STATE_FILE", "FaissApproxStore", "HNSWStore", "default_m", "positive_int"]

#: State file of the faiss-based approximate kinds (the ``faiss.serialize_index`` bytes).
FAISS_STATE_FILE: Final[str] = "index.faiss"


def positive_int(value: Any, name: str, kind: str) -> int:
    """``value`` as an int when it is a positive integer (not a bool).

    Args:
        value: the parameter value.
        name: the parameter name, for the error message.
        kind: the index kind, for the error message.

    Returns:
        ``int(value)``.

    Raises:
        RetrievalInputError: anything else.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise RetrievalInputError(f"index kind '{kind}' needs a positive integer {name}, got {value!r}")
    return int(value)


def default_m(dim: int) -> int:
    """Default number of PQ sub-quantisers for dimension ``dim``.

    Args:
        dim: the embedding dimension (>= 1).

    Returns:
        The divisor of ``dim`` nearest below (or equal to) ``max(1, dim // 16)``.
    """
    target = max(1, dim // 16)
    return max(d for d in range(1, target + 1) if dim % d == 0)


class FaissApproxStore(TorchFlatStore):
    """Shared part of the faiss approximate kinds.

    The float32 vectors are kept in the exact buffer of :class:`TorchFlatStore` (they are saved as
    ``vectors.npy`` and serve exact re-ranking and searches of a not yet trained index); the faiss
    index lives in ``self._index`` (None until trained) and is saved as ``index.faiss``.
    """

    backend = "faiss"
    kind = ""

    def __init__(self, dim: int, metric: str) -> None:
        super().__init__(dim, metric)
        self._faiss = import_faiss()
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

    def exact_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return TorchFlatStore.search(self, queries, k)

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
        TorchFlatStore.add(self, vectors)
        self._index = index
        self._apply_search_params()

    def _check_restored(self, index: Any) -> None:
        """Hook: refuse a deserialised index of the wrong faiss type."""
        del index

    def _apply_search_params(self) -> None:
        """Hook: push the search-time parameters into ``self._index``."""


class HNSWStore(FaissApproxStore):
    """``faiss.IndexHNSWFlat`` with ``METRIC_INNER_PRODUCT`` (CPU only)."""

    kind = "hnsw"

    def __init__(self, dim: int, metric: str, M: int = 32, ef_construction: int = 200,
                 ef_search: int = 64) -> None:
        super().__init__(dim, metric)
        self.params = {"M": positive_int(M, "M", self.kind),
                       "ef_construction": positive_int(ef_construction, "ef_construction", self.kind),
                       "ef_search": positive_int(ef_search, "ef_search", self.kind)}
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
            self.params["ef_search"] = positive_int(values["ef_search"], "ef_search", self.kind)
            self._apply_search_params()
