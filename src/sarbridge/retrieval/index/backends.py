"""The search backends of :class:`~sarbridge.retrieval.index.EmbeddingIndex` and the optional faiss import.

faiss is optional: nothing here imports it at import time. :func:`import_faiss` imports it on
first use (when a faiss-backed store is built or the ``"auto"`` backend is resolved), and
:func:`faiss_available` tells whether that works.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["BACKENDS", "faiss_available", "import_faiss"]

#: Accepted ``backend`` arguments.
BACKENDS: Final[tuple[str, ...]] = ("auto", "faiss", "faiss-gpu", "torch")


def import_faiss() -> Any:
    """Import and return the ``faiss`` module.

    Returns:
        The module.

    Raises:
        ImportError: faiss is not installed (or ``sys.modules["faiss"]`` is None).
    """
    import faiss  # noqa: PLC0415 - lazy: optional, heavy; only when a FAISS kind or backend is used

    return faiss


def faiss_available() -> bool:
    """Whether ``import faiss`` works in this environment."""
    try:
        import_faiss()
    except ImportError:
        return False
    return True
