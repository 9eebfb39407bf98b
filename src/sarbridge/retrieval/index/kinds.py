"""The registry of index kinds and the choice of backend.

An :class:`IndexKind` names the metrics it supports and one store factory per backend
(``"faiss"``, ``"torch"``). The registry starts with the built-in kinds :data:`BUILT_IN_KINDS`:
``"flat"`` (exact; faiss or torch), ``"ivfpq"``, ``"ivfsq"`` and ``"hnsw"`` (approximate; faiss only);
:func:`register_kind` adds more.
:func:`resolve` validates a ``kind`` / ``metric`` / ``backend`` triple and resolves ``"auto"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sarbridge.core.errors import SarbridgeError
from sarbridge.retrieval.distance import RetrievalInputError
from sarbridge.retrieval.index.approximate import HNSWStore
from sarbridge.retrieval.index.backends import BACKENDS, faiss_available, import_faiss
from sarbridge.retrieval.index.ivf import IVFPQStore, IVFSQStore
from sarbridge.retrieval.index.stores import FaissFlatStore, TorchFlatStore, VectorStore

__all__ = ["BUILT_IN_KINDS", "IndexKind", "available_kinds", "get_kind", "register_kind", "resolve"]


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


#: The built-in kinds (in the registry from the start).
BUILT_IN_KINDS: tuple[IndexKind, ...] = (
    IndexKind(
        name="flat",
        metrics=("ip",),
        stores={"faiss": FaissFlatStore, "torch": TorchFlatStore},
        description="exact search over all stored vectors",
    ),
    IndexKind(
        name="ivfpq",
        metrics=("ip",),
        stores={"faiss": IVFPQStore},
        description="approximate search: faiss IVF-PQ (needs training), exact re-ranking of candidates",
        params={"nlist": "auto", "m": None, "nbits": 8, "nprobe": 16, "rerank": 4, "rescore": None},
    ),
    IndexKind(
        name="ivfsq",
        metrics=("ip",),
        stores={"faiss": IVFSQStore},
        description="approximate search: faiss IVF with 8-bit (or float16) scalar codes, exact re-scoring",
        params={"nlist": "auto", "qtype": "8bit", "nprobe": 16, "rerank": 4, "rescore": None},
    ),
    IndexKind(
        name="hnsw",
        metrics=("ip",),
        stores={"faiss": HNSWStore},
        description="approximate search: faiss HNSW graph over the exact vectors",
        params={"M": 32, "ef_construction": 200, "ef_search": 64},
    ),
)
_KINDS: dict[str, IndexKind] = {kind.name: kind for kind in BUILT_IN_KINDS}


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


def get_kind(name: Any) -> IndexKind | None:
    """The registered kind called ``name``, or None (also for a non-string ``name``)."""
    return _KINDS.get(name) if isinstance(name, str) else None


def resolve(kind: str, metric: str, backend: str) -> tuple[IndexKind, str]:
    """Validate ``kind`` / ``metric`` / ``backend`` and resolve ``"auto"``.

    Args:
        kind: a registered kind name.
        metric: a metric the kind supports.
        backend: one of :data:`~sarbridge.retrieval.index.backends.BACKENDS`; ``"auto"`` becomes
            ``"faiss"`` when the kind has a faiss store and faiss imports, else ``"torch"``;
            ``"faiss-gpu"`` becomes ``"faiss"`` (the GPU check is the caller's).

    Returns:
        ``(kind spec, resolved backend)``, the backend ``"faiss"`` or ``"torch"``.

    Raises:
        RetrievalInputError: unknown kind, metric or backend, or a backend the kind lacks.
        SarbridgeError: the faiss backend is needed but faiss cannot be imported.
    """
    spec = get_kind(kind)
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
            import_faiss()
        except ImportError as exc:
            if "torch" not in spec.stores:
                raise SarbridgeError(f"index kind '{kind}' needs faiss",
                                     "pip install faiss-cpu or use kind=flat") from exc
            raise SarbridgeError(
                f"index backend 'faiss' was requested but faiss cannot be imported ({exc})",
                "install faiss-cpu, or use backend='torch'",
            ) from exc
    return spec, backend
