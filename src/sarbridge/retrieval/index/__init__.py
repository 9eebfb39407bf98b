"""A persistent embedding index with per-item metadata (exact or approximate inner-product search).

The package, by concept: :mod:`~sarbridge.retrieval.index.index` (the public :class:`EmbeddingIndex`),
:mod:`~sarbridge.retrieval.index.kinds` (the kind registry and backend choice),
:mod:`~sarbridge.retrieval.index.stores` (the store protocol, exact faiss / torch-matmul search),
:mod:`~sarbridge.retrieval.index.approximate` (HNSW), :mod:`~sarbridge.retrieval.index.ivf` (IVF-PQ, IVF-SQ),
:mod:`~sarbridge.retrieval.index.tune` (tuning to a recall target),
:mod:`~sarbridge.retrieval.index.settings` (the settings in use), :mod:`~sarbridge.retrieval.index.gpu`
(faiss GPU search), :mod:`~sarbridge.retrieval.index.format` (the on-disk format),
:mod:`~sarbridge.retrieval.index.inputs` (input checks) and :mod:`~sarbridge.retrieval.index.backends`
(the optional faiss import).

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
  ``nprobe`` (16, lists visited per query), ``rerank`` (4: the ``k * rerank`` PQ candidates are
  re-scored exactly against the stored float32 vectors, so the returned scores are exact inner
  products; 0 returns the raw PQ scores) and ``rescore`` (None; when set, the number of candidates
  re-scored exactly, at least ``k``, instead of ``k * rerank``; 0 returns the raw PQ scores). It needs training: the first ``add`` that brings the
  index to at least ``2 ** nbits`` vectors trains it on everything added so far (an untrained index
  answers queries exactly). When the training set has fewer than ``39 * nlist`` vectors, ``nlist`` is
  lowered to ``N // 39`` and the value used is recorded in :attr:`EmbeddingIndex.params`.
  :meth:`EmbeddingIndex.train` trains explicitly on a chosen sample. Later adds are encoded with
  the trained quantisers.
* ``"ivfsq"`` -- ``faiss.IndexIVFScalarQuantizer``: the same inverted lists with one byte per
  dimension (``qtype`` ``"8bit"``; ``"6bit"`` or ``"fp16"`` also) instead of PQ codes. Its scores
  are nearly exact, so a shallow re-scoring reaches a high recall where IVF-PQ needs hundreds of
  candidates (see docs/benchmarks.md). Parameters ``nlist`` (``"auto"`` = about ``sqrt(N)``),
  ``qtype``, ``nprobe`` (16), ``rerank`` (4) and ``rescore`` (None), as for ``"ivfpq"``; it trains
  on the first ``add`` reaching 256 vectors.
* ``"hnsw"`` -- ``faiss.IndexHNSWFlat`` with ``METRIC_INNER_PRODUCT``; parameters ``M`` (32),
  ``ef_construction`` (200) and ``ef_search`` (64). Scores are exact, the candidate set approximate.

Both may return fewer than ``k`` hits for a query (e.g. IVF with a small ``nprobe``); missing slots
hold id ``-1`` and score ``-inf``, at the end of the row. :meth:`EmbeddingIndex.set_search_params`
changes ``nprobe`` / ``rescore`` / ``ef_search`` after construction (saved with the index), and
:meth:`EmbeddingIndex.search_settings` reports them (:func:`describe_search_settings` as one line).

**Tuning to a recall target.** :func:`tune_search` measures recall@k against exact search on a
held-out sample over a grid of ``nprobe`` x ``rescore`` (IVF kinds) or ``ef_search`` (HNSW), applies
the cheapest setting reaching the target and records how it was chosen in
:attr:`EmbeddingIndex.tuning`; both are saved, so a reloaded index searches with them.

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
  ``faiss.serialize_index`` bytes, for a trained ``"ivfpq"`` / ``"ivfsq"`` and for ``"hnsw"``, so loading needs no
  retraining or graph rebuild);
* ``manifest.json`` -- ``{"format": "sarbridge-index", "version": 1, "kind", "metric", "dim",
  "count", "backend", "normalize", "params", "tuning", "sha256": {file: hex digest}, "created_at",
  "info"}``, where ``params`` are the kind's effective parameters (absent for kinds without any),
  ``tuning`` the record of :func:`tune_search` (absent unless tuned) and ``info`` is a free JSON
  dict of the caller (model checkpoint hash, CRS, ...).

Every file is written atomically (temporary file + rename). ``save`` first removes an existing
manifest and writes the manifest last, so an interrupted save leaves a directory that ``load``
reports as incomplete. ``load`` checks the format and version, that every listed file exists, its
SHA-256, and that the vectors and metadata agree with the recorded count and dimension; anything
off raises :class:`~sarbridge.core.errors.DataError`. A damaged index is never used silently.
"""

from sarbridge.retrieval.index.approximate import FAISS_STATE_FILE
from sarbridge.retrieval.index.backends import BACKENDS, faiss_available
from sarbridge.retrieval.index.format import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_FILE,
    METADATA_FILE,
    VECTORS_FILE,
    read_search_settings,
)
from sarbridge.retrieval.index.index import EmbeddingIndex
from sarbridge.retrieval.index.kinds import IndexKind, available_kinds, register_kind
from sarbridge.retrieval.index.settings import describe_search_settings
from sarbridge.retrieval.index.stores import VectorStore
from sarbridge.retrieval.index.tune import tune_search

__all__ = [
    "BACKENDS",
    "FAISS_STATE_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "METADATA_FILE",
    "VECTORS_FILE",
    "EmbeddingIndex",
    "IndexKind",
    "VectorStore",
    "available_kinds",
    "describe_search_settings",
    "faiss_available",
    "read_search_settings",
    "register_kind",
    "tune_search",
]
