"""The public :class:`EmbeddingIndex`: embeddings with per-item metadata, searched and persisted.

The index validates inputs (:mod:`~sarbridge.retrieval.index.inputs`), delegates the search to the
store of its kind and backend (:mod:`~sarbridge.retrieval.index.kinds`) and reads / writes the
folder format of :mod:`~sarbridge.retrieval.index.format`. The behaviour is described in
:mod:`sarbridge.retrieval.index`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sarbridge.core.errors import DataError, SarbridgeError
from sarbridge.retrieval.distance import RetrievalInputError
from sarbridge.retrieval.index.format import damaged, read_index, write_index
from sarbridge.retrieval.index.gpu import faiss_num_gpus
from sarbridge.retrieval.index.inputs import as_matrix, l2_normalized, to_json
from sarbridge.retrieval.index.kinds import resolve
from sarbridge.retrieval.index.settings import search_settings

__all__ = ["EmbeddingIndex"]


class EmbeddingIndex:
    """Embedding index with per-item metadata; see :mod:`sarbridge.retrieval.index` for the details.

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
        params: tuning parameters of the kind (see :mod:`sarbridge.retrieval.index`), e.g.
            ``{"nlist": 16, "m": 8}`` for ``"ivfpq"``; omitted ones take their defaults.

    Attributes:
        dim, kind, metric, normalize: as given.
        backend: the resolved backend (``"faiss"`` or ``"torch"``).
        gpu: whether searches run on faiss GPUs.
        info: the free info dict (also filled by :meth:`load`).
        tuning: how :func:`~sarbridge.retrieval.index.tune.tune_search` chose the search settings
            (saved in the manifest), or None.
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
        spec, resolved = resolve(kind, metric, backend)
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
        self.tuning: dict[str, Any] | None = None
        self._store = spec.stores[resolved](self.dim, metric, **given)
        self._metadata: list[dict[str, Any]] = []
        self.gpu = False
        if resolved == "faiss" and backend in ("auto", "faiss-gpu") and faiss_num_gpus() > 0:
            self.gpu = self._store.to_gpu()
        if backend == "faiss-gpu" and not self.gpu:
            raise SarbridgeError(
                "index backend 'faiss-gpu' was requested but "
                + ("faiss sees no GPU" if faiss_num_gpus() == 0 else f"kind '{self.kind}' has no GPU search"),
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
        x = as_matrix(vectors, "training vectors", self.dim)
        if self.normalize:
            x = l2_normalized(x)
        self._store.train(x)

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None,
                          rescore: int | None = None) -> None:
        """Change search-time parameters (kept in :attr:`params` and saved).

        Args:
            nprobe: inverted lists visited per query (``"ivfpq"``, ``"ivfsq"``); more is slower
                and more exact.
            ef_search: candidate list size of the graph search (``"hnsw"``).
            rescore: candidates re-scored exactly per query (IVF kinds; at least ``k`` are; 0
                returns the compressed scores), replacing ``k * rerank``.

        A change drops :attr:`tuning` (it no longer describes the settings in use).

        Raises:
            RetrievalInputError: a parameter the kind does not have, or not a positive integer.
        """
        values = {k: v for k, v in (("nprobe", nprobe), ("ef_search", ef_search), ("rescore", rescore))
                  if v is not None}
        self._store.set_search_params(**values)
        if values:
            self.tuning = None

    def search_settings(self) -> dict[str, Any]:
        """The settings searches use now, for reports (see :func:`describe_search_settings`).

        Returns:
            ``{"kind", "exact": bool, "tuned": the tune_search record or None}`` plus
            ``"nprobe"``, ``"rescore"``, ``"rerank"`` (IVF kinds) or ``"ef_search"`` (``hnsw``).
        """
        return search_settings(self.kind, self._store.params, self.tuning, trained=self._store.is_trained)

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
        x = as_matrix(embeddings, "embeddings", self.dim)
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
                items.append(json.loads(to_json(dict(m), f"metadata[{i}]")))
        if self.normalize:
            x = l2_normalized(x)
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
        return self._search(queries, k, exact=False)

    def _search(self, queries: Any, k: int, exact: bool) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise RetrievalInputError(f"k must be a positive integer, got {k!r}")
        n = len(self)
        if n == 0:
            raise RetrievalInputError("cannot search an empty index (it holds 0 items)", "add() embeddings first")
        q = as_matrix(queries, "queries", self.dim)
        if self.normalize:
            q = l2_normalized(q)
        k = min(int(k), n)
        scores, ids = self._store.exact_search(q, k) if exact else self._store.search(q, k)
        if k > 1 and scores.shape[0]:
            # Deterministic order inside the list: descending score, then ascending id.
            order = np.lexsort((ids, -scores.astype(np.float64)), axis=1)
            scores = np.take_along_axis(scores, order, axis=1)
            ids = np.take_along_axis(ids, order, axis=1)
        return np.ascontiguousarray(scores), np.ascontiguousarray(ids)

    def exact_search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` over all stored vectors, whatever the kind (the ground truth of the
        approximate kinds; the same as :meth:`search` for ``"flat"``).

        Args:
            queries: ``(M, dim)`` queries, as for :meth:`search`.
            k: results per query; clamped to ``len(self)``.

        Returns:
            ``(scores, ids)`` as for :meth:`search`.

        Raises:
            RetrievalInputError: as for :meth:`search`.
        """
        return self._search(queries, k, exact=True)

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
        return json.loads(to_json(dict(info), "info"))

    def save(self, directory: str | Path, info: Mapping[str, Any] | None = None) -> Path:
        """Write the index to ``directory`` (created if needed; an existing index is replaced).

        Files: ``vectors.npy``, ``metadata.json``, the kind's extra state files, then
        ``manifest.json`` (see :mod:`sarbridge.retrieval.index.format`). Each is written
        atomically; an existing ``manifest.json`` is removed first so a crash mid-way never leaves
        a valid-looking mix of old and new files.

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
        self.created_at = write_index(
            d,
            kind=self.kind,
            metric=self.metric,
            backend=self.backend,
            normalize=self.normalize,
            params=self._store.params,
            info=self.info,
            vectors=self._store.reconstruct(),
            metadata=self._metadata,
            state_files=self._store.state_files(),
            tuning=self.tuning,
        )
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
        stored = read_index(d)
        try:
            index = cls(stored.dim, kind=stored.kind, metric=stored.metric, backend=backend,
                        normalize=stored.normalize, params=stored.params)
        except RetrievalInputError as exc:
            raise DataError(f"index '{d}' cannot be opened: {exc.message}", exc.hint) from exc
        try:
            index._store.restore(stored.vectors, stored.state_files)
        except (RuntimeError, ValueError) as exc:
            raise damaged(d, f"the '{stored.kind}' search structure cannot be restored ({exc})") from exc
        if index._store.ntotal != stored.count:
            raise damaged(
                d, f"rebuilding the search structure gave {index._store.ntotal} items, expected {stored.count}"
            )
        index._metadata = stored.metadata
        index.info = stored.info
        index.created_at = stored.created_at
        index.tuning = stored.tuning
        return index
