"""Web viewer of a re-ID gallery index or a geo map index (``sarbridge serve``).

:func:`~sarbridge.app.serve.app.create_app` builds the FastAPI application; the upload checks live in
:mod:`sarbridge.app.serve.uploads`, the two index kinds in :mod:`sarbridge.app.serve.backends` and the page
in :mod:`sarbridge.app.serve.page`. FastAPI is imported only when an application is created: the
viewer is the optional extra ``serve`` (``pip install 'sarbridge[serve]'``), and without it
:func:`create_app` ends with one line naming the extra.
"""

from __future__ import annotations

from typing import Any

from sarbridge.core.optional import available, require

__all__ = ["create_app", "require_serve"]


def require_serve() -> None:
    """Check the ``serve`` extra (FastAPI and python-multipart, which parses the uploads).

    Raises:
        MissingDependencyError: one of them is not installed.
    """
    require("fastapi", "serve")
    if not available("python_multipart"):  # older python-multipart releases name their module multipart
        require("multipart", "serve", package="python-multipart")


def create_app(index_path: Any, top_k: int = 10, max_upload_mb: float = 20.0, device: str = "auto") -> Any:
    """See :func:`sarbridge.app.serve.app.create_app` (the check of the ``serve`` extra first)."""
    require_serve()
    from sarbridge.app.serve.app import create_app as _create  # noqa: PLC0415 - lazy: optional extra [serve] (FastAPI at module level)

    return _create(index_path, top_k=top_k, max_upload_mb=max_upload_mb, device=device)
