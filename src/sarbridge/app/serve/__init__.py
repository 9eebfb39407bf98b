"""Web viewer of a re-ID gallery index or a geo map index (``sarbridge serve``).

:func:`~sarbridge.app.serve.app.create_app` builds the FastAPI application; the upload checks live in
:mod:`sarbridge.app.serve.uploads`, the two index kinds in :mod:`sarbridge.app.serve.backends` and the page
in :mod:`sarbridge.app.serve.page`. FastAPI is imported only when an application is created.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def create_app(index_path: Any, top_k: int = 10, max_upload_mb: float = 20.0, device: str = "auto") -> Any:
    """See :func:`sarbridge.app.serve.app.create_app`."""
    from sarbridge.app.serve.app import create_app as _create

    return _create(index_path, top_k=top_k, max_upload_mb=max_upload_mb, device=device)
