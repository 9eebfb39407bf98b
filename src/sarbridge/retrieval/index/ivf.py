"""The inverted-file index kinds (faiss only): ``ivfpq`` and ``ivfsq``.

Both partition the vectors into ``nlist`` inverted lists around an inner-product coarse quantiser,
visit the ``nprobe`` lists nearest to a query, rank the vectors found there with compressed codes
and re-score the best candidates exactly against the stored float32 vectors:

* :class:`IVFPQStore` -- ``faiss.IndexIVFPQ``: product-quantised codes (``m`` bytes per vector with
  ``nbits = 8``); small, but its scores cannot separate near-ties, so it needs deep re-scoring;
* :class:`IVFSQStore` -- ``faiss.IndexIVFScalarQuantizer``: one byte per dimension (``qtype="8bit"``)
  or two (``"fp16"``); four (two) times smaller than float32 and nearly exact, so a shallow
  re-scoring suffices.

**Re-scoring depth.** ``rescore`` (when set) is the number of candidates re-scored exactly (at least
``k``; 0 returns the raw compressed scores); without it ``k * rerank`` are (``rerank = 0``: raw
scores). :func:`~sarbridge.retrieval.index.tune.tune_search` sets ``nprobe`` and ``rescore`` to
reach a recall target. ``rescore`` is written to the manifest only when set, so indexes that never
set it read exactly as before.

The parameters are documented in :mod:`sarbridge.retrieval.index`.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np

from sarbridge.retrieval.distance import RetrievalInputError
from sarbridge.retrieval.index.approximate import FAISS_STATE_FILE, FaissApproxStore, default_m, positive_int
from sarbridge.retrieval.index.gpu import GpuCopyMixin

__all__ = ["RESCORE_FLOATS", "SQ_TYPES", "IVFPQStore", "IVFSQStore", "IVFStore", "rescore_exact"]

#: Candidate vector floats gathered per block of :func:`rescore_exact` (64 MiB of float32).
RESCORE_FLOATS: int = 2**24

#: ``qtype`` values of ``ivfsq`` -> name of the faiss ``ScalarQuantizer`` type.
SQ_TYPES: Final[dict[str, str]] = {"8bit": "QT_8bit", "fp16": "QT_fp16", "6bit": "QT_6bit"}


def rescore_exact(vectors: np.ndarray, queries: np.ndarray, ids: np.ndarray,
                  k: int) -> tuple[np.ndarray, np.ndarray]:
    """Re-score candidate ids exactly and keep the best ``k`` of each query.

    Args:
        vectors: ``(N, dim)`` float32 stored vectors (row = id).
        queries: ``(M, dim)`` float32 queries.
        ids: ``(M, C)`` int64 candidate ids (``-1`` = no candidate).
        k: results per query (``<= C``).

    Returns:
        ``(scores, ids)`` of shape ``(M, k)``, best first; missing slots hold id ``-1`` and score
        ``-inf``. Queries are processed in blocks so at most about :data:`RESCORE_FLOATS` candidate
        floats are gathered at once.
    """
    m, c = ids.shape
    dim = queries.shape[1]
    out_s = np.empty((m, k), dtype=np.float32)
    out_i = np.empty((m, k), dtype=np.int64)
    rows = max(1, RESCORE_FLOATS // max(1, c * dim))
    for s in range(0, m, rows):
        block = ids[s: s + rows]
        cand = vectors[np.maximum(block, 0)]  # (r, c, dim)
        exact = np.matmul(cand, queries[s: s + rows, :, None])[:, :, 0]
        exact[block < 0] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        out_s[s: s + rows] = np.take_along_axis(exact, order, axis=1)
        out_i[s: s + rows] = np.take_along_axis(block, order, axis=1)
    return out_s, out_i


class IVFStore(GpuCopyMixin, FaissApproxStore):
    """Shared part of the IVF kinds: training, ``nprobe``, candidates and exact re-scoring.

    Subclasses set :attr:`kind`, fill their codec parameters into :attr:`params` and implement
    :meth:`_make_index` and :meth:`_check_codec`.
    """

    #: ``nlist="auto"`` gives ``round(auto_lists * sqrt(N))`` lists for ``N`` training vectors.
    auto_lists: float = 4.0

    def __init__(self, dim: int, metric: str, nlist: int | str, nprobe: int, rerank: int,
                 rescore: int | None) -> None:
        super().__init__(dim, metric)
        if nlist != "auto":
            nlist = positive_int(nlist, "nlist", self.kind)
        self.params: dict[str, Any] = {"nlist": nlist}
        self._nprobe = positive_int(nprobe, "nprobe", self.kind)
        self._rerank = self._non_negative(rerank, "rerank")
        self._rescore = None if rescore is None else self._non_negative(rescore, "rescore")

    def _non_negative(self, value: Any, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise RetrievalInputError(f"index kind '{self.kind}' needs a non-negative integer {name}, got {value!r}")
        return int(value)

    def _search_params(self) -> None:
        """Append the search-time parameters to :attr:`params` (after the codec's)."""
        self.params["nprobe"] = self._nprobe
        self.params["rerank"] = self._rerank
        self.params.pop("rescore", None)
        if self._rescore is not None:
            self.params["rescore"] = self._rescore

    @property
    def min_train(self) -> int:
        """Fewest training vectors (the first ``add`` reaching it trains the index)."""
        return 256

    def depth(self, k: int) -> int:
        """Candidates fetched from faiss for ``k`` results (re-scored exactly unless it equals ``k``
        with re-scoring off)."""
        depth = k * self._rerank if self._rescore is None else self._rescore
        return max(k, min(self._n, depth))

    def vectors(self) -> np.ndarray:
        """The stored float32 vectors (a view: read-only use)."""
        return self._buf[: self._n]

    def rescoring(self) -> bool:
        """Whether candidates are re-scored exactly (False: raw compressed scores)."""
        return bool(self._rerank) if self._rescore is None else self._rescore > 0

    def _nlist_for(self, n: int) -> int:
        nlist = self.params["nlist"]
        if nlist == "auto":
            nlist = max(1, round(self.auto_lists * math.sqrt(n)))
        return int(max(1, min(nlist, n // 39)))

    def _make_index(self, quantizer: Any, nlist: int) -> Any:
        """The untrained faiss IVF index of this kind."""
        raise NotImplementedError

    def _check_codec(self, index: Any) -> bool:
        """Whether a deserialised faiss index has this kind's codec and parameters."""
        raise NotImplementedError

    def train(self, vectors: np.ndarray) -> None:
        if self.is_trained:
            raise RetrievalInputError(f"the {self.kind} index is already trained", "build a new index to retrain it")
        n = vectors.shape[0]
        if n < self.min_train:
            raise RetrievalInputError(
                f"index kind '{self.kind}' needs at least {self.min_train} training vectors, got {n}",
                "train on more vectors" + (", or lower params['nbits']" if self.kind == "ivfpq" else ""),
            )
        nlist = self._nlist_for(n)
        index = self._make_index(self._faiss.IndexFlatIP(self.dim), nlist)
        index.cp.min_points_per_centroid = 1  # nlist was already lowered to keep >= 39 points per list
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
        if ivf is None or not self._check_codec(index):
            raise ValueError(f"{FAISS_STATE_FILE} is not the {self.kind} index its manifest describes")
        self.params["nlist"] = int(ivf.nlist)

    def _apply_search_params(self) -> None:
        if self._index is not None:
            self._index.nprobe = self._nprobe

    def set_search_params(self, **values: int | None) -> None:
        unknown = set(values) - {"nprobe", "rescore"}
        if unknown:
            raise RetrievalInputError(
                f"index kind '{self.kind}' has no search parameter {', '.join(sorted(unknown))}",
                "use nprobe and rescore",
            )
        if values.get("nprobe") is not None:
            self._nprobe = positive_int(values["nprobe"], "nprobe", self.kind)
        if values.get("rescore") is not None:
            self._rescore = self._non_negative(values["rescore"], "rescore")
        self._search_params()
        self._apply_search_params()

    def candidates(self, queries: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``depth`` best candidates of each query by compressed score (trained index only).

        Returns:
            ``(scores, ids)`` float32 / int64, best first; missing slots hold id ``-1``.
        """
        searcher = self._searcher()
        if searcher is not self._index:
            space = getattr(self._faiss, "GpuParameterSpace", None)
            if space is not None:
                space().set_index_parameter(searcher, "nprobe", self._nprobe)
        scores, ids = searcher.search(queries, depth)
        return scores.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)

    def _faiss_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = self.candidates(queries, self.depth(k) if self.rescoring() else k)
        if not self.rescoring():
            return scores, ids
        return rescore_exact(self._buf, queries, ids, k)


class IVFPQStore(IVFStore):
    """``faiss.IndexIVFPQ`` (inner-product quantiser) with exact re-scoring of the PQ candidates."""

    kind = "ivfpq"

    def __init__(self, dim: int, metric: str, nlist: int | str = "auto", m: int | None = None, nbits: int = 8,
                 nprobe: int = 16, rerank: int = 4, rescore: int | None = None) -> None:
        super().__init__(dim, metric, nlist, nprobe, rerank, rescore)
        m = default_m(dim) if m is None else positive_int(m, "m", self.kind)
        if dim % m:
            raise RetrievalInputError(
                f"index kind 'ivfpq' needs m (sub-quantisers) dividing the dimension {dim}, got m={m}",
                f"use m={default_m(dim)} or another divisor of {dim}",
            )
        nbits = positive_int(nbits, "nbits", self.kind)
        if nbits > 16:
            raise RetrievalInputError(f"index kind 'ivfpq' supports nbits up to 16, got {nbits}")
        self.params.update(m=m, nbits=nbits)
        self._search_params()

    @property
    def min_train(self) -> int:
        """Fewest training vectors: one per PQ centroid (``2 ** nbits``)."""
        return 2 ** int(self.params["nbits"])

    def _make_index(self, quantizer: Any, nlist: int) -> Any:
        f = self._faiss
        index = f.IndexIVFPQ(quantizer, self.dim, nlist, int(self.params["m"]), int(self.params["nbits"]),
                             f.METRIC_INNER_PRODUCT)
        index.pq.cp.min_points_per_centroid = 1  # small training sets are legal; no C++ warning spam
        return index

    def _check_codec(self, index: Any) -> bool:
        pq = getattr(index, "pq", None)
        return pq is not None and int(pq.M) == int(self.params["m"])


class IVFSQStore(IVFStore):
    """``faiss.IndexIVFScalarQuantizer`` (8-bit or float16 codes) with exact re-scoring."""

    kind = "ivfsq"
    auto_lists = 1.0  # sqrt(N) lists: training stays cheap, and nprobe is tuned anyway

    def __init__(self, dim: int, metric: str, nlist: int | str = "auto", qtype: str = "8bit", nprobe: int = 16,
                 rerank: int = 4, rescore: int | None = None) -> None:
        super().__init__(dim, metric, nlist, nprobe, rerank, rescore)
        if qtype not in SQ_TYPES:
            raise RetrievalInputError(f"index kind 'ivfsq' has no qtype {qtype!r}", f"use one of {', '.join(SQ_TYPES)}")
        self.params["qtype"] = qtype
        self._search_params()

    def _qtype(self) -> int:
        return int(getattr(self._faiss.ScalarQuantizer, SQ_TYPES[str(self.params["qtype"])]))

    def _make_index(self, quantizer: Any, nlist: int) -> Any:
        f = self._faiss
        return f.IndexIVFScalarQuantizer(quantizer, self.dim, nlist, self._qtype(), f.METRIC_INNER_PRODUCT)

    def _check_codec(self, index: Any) -> bool:
        sq = getattr(index, "sq", None)
        return sq is not None and int(sq.qtype) == self._qtype()
