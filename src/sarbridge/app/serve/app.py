"""The FastAPI application of ``sarbridge serve``.

Routes:

* ``GET /`` -- the viewer page (:func:`~sarbridge.app.serve.page.render_page`);
* ``POST /api/query`` -- multipart form with ``file`` (the chip), ``modality`` (``optical``/``sar``;
  a geo index takes SAR only) and ``k``; answers the backend's JSON (matches, and for a geo index
  the estimate with its error radius, also in map-overview pixels);
* ``GET /api/thumb/{i}`` -- PNG thumbnail of indexed item ``i`` (gallery chip or map patch);
* ``GET /api/map.png`` -- the geo index's map, decimated to at most 1024 pixels;
* ``GET /api/info`` and ``GET /healthz`` -- settings and liveness.

Every rejected request is answered with a 4xx status and ``{"error": message, "hint": fix}``; the
server keeps running. Uploads are limited in size while they are received (the request is refused
from its ``Content-Length`` when it announces too much, and reading stops as soon as the body passes
the limit), copied to a temporary file for the library's readers and deleted afterwards.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from sarbridge.app.serve.backends import load_backend
from sarbridge.app.serve.page import render_page
from sarbridge.app.serve.uploads import (
    UploadError,
    UploadTooLarge,
    limited_receive,
    parse_query_modality,
    spooled_upload,
)
from sarbridge.core.errors import SarbridgeError
from sarbridge.core.optional import require

__all__ = ["MAX_K", "create_app"]

#: Largest ``k`` a query may ask for.
MAX_K = 100
#: Room for the multipart framing and the small form fields on top of the file itself.
_FORM_OVERHEAD = 64 * 1024
_log = logging.getLogger("sarbridge.app.serve")


def _error(status: int, message: str, hint: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "hint": hint}, status_code=status)


def _parse_k(value: Any, default: int) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        k = int(str(value).strip())
    except ValueError:
        raise UploadError(f"k must be a whole number, got '{str(value)[:20]}'", f"pass 1 to {MAX_K}") from None
    if not 1 <= k <= MAX_K:
        raise UploadError(f"k must be between 1 and {MAX_K}, got {k}", f"pass 1 to {MAX_K}")
    return k


def create_app(index_path: str | Path, top_k: int = 10, max_upload_mb: float = 20.0, device: str = "auto") -> FastAPI:
    """Build the viewer application for one index, loading the index and its model once.

    Args:
        index_path: folder of ``sarbridge index build`` (a re-ID gallery with ``--data`` or a map
            with ``--map``); the kind is detected from the index manifest.
        top_k: matches returned when a query does not say (1 to :data:`MAX_K`).
        max_upload_mb: largest accepted upload in MiB.
        device: ``auto``, ``cpu``, ``cuda[:N]`` for the model.

    Returns:
        The ``fastapi.FastAPI`` application.

    Raises:
        SarbridgeError: bad ``top_k`` / ``max_upload_mb``. DataError: missing or damaged index, an
            index of neither kind, a missing or changed model.
    """
    run_in_threadpool = require("starlette.concurrency", "serve").run_in_threadpool
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_K:
        raise SarbridgeError(f"top-k must be an integer from 1 to {MAX_K}, got {top_k!r}", "pass e.g. --top-k 10")
    if isinstance(max_upload_mb, bool) or not isinstance(max_upload_mb, (int, float)) or not max_upload_mb > 0:
        raise SarbridgeError(f"max upload size must be a positive number of MB, got {max_upload_mb!r}",
                             "pass e.g. --max-upload-mb 20")
    backend = load_backend(index_path, device)
    max_bytes = int(max_upload_mb * 2**20)
    body_limit = max_bytes + _FORM_OVERHEAD
    settings = {**backend.describe(), "top_k": min(top_k, len(backend)), "max_upload_mb": max_upload_mb}

    app = FastAPI(title="sarbridge viewer", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.backend = backend
    app.state.settings = settings
    page = render_page(settings)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        _log.exception("unexpected error on %s", request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}: {str(exc)[:120]})",
                      "see the server log; the server keeps running")

    @app.get("/", response_class=HTMLResponse)
    async def index_page() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "kind": backend.kind, "count": len(backend)}

    @app.get("/api/info")
    async def info() -> dict[str, Any]:
        return settings

    @app.get("/api/thumb/{i}")
    async def thumb(i: int) -> Response:
        try:
            png = await run_in_threadpool(backend.thumbnail, i)
        except SarbridgeError as exc:
            return _error(404, exc.message, exc.hint)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/map.png")
    async def map_png() -> Response:
        png = getattr(backend, "map_png", None)
        if png is None:
            if not backend.shows_map:
                return _error(404, f"{backend.name} has no map", "serve a geo index for the map view")
            return _error(404, getattr(backend, "map_error", "") or "the map is not available",
                          "restore the map file named in the index")
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.post("/api/query")
    async def query(request: Request) -> JSONResponse:
        try:
            announced = request.headers.get("content-length")
            if announced is not None and announced.isdigit() and int(announced) > body_limit:
                raise UploadTooLarge(max_bytes)
            if not request.headers.get("content-type", "").startswith("multipart/form-data"):
                raise UploadError("the query must be a multipart/form-data upload",
                                  "post the chip as form field 'file' (the page does this)", status=415)
            limited = Request(request.scope, limited_receive(request.receive, body_limit))
            try:
                form = await limited.form(max_files=1, max_fields=8)
            except UploadError:
                raise
            except Exception as exc:  # malformed multipart bodies raise several types
                raise UploadError(f"the upload could not be parsed ({type(exc).__name__}: {str(exc)[:80]})",
                                  "post the chip as form field 'file'") from None
            try:
                upload = form.get("file")
                if upload is None or isinstance(upload, str):
                    raise UploadError("no file in the upload (form field 'file')", "choose a query image")
                filename = Path(upload.filename or "upload").name
                modality = parse_query_modality(_str_field(form.get("modality")), backend.modalities, backend.name)
                k = _parse_k(form.get("k"), settings["top_k"])
                async with spooled_upload(upload, filename, max_bytes) as tmp:
                    result = await run_in_threadpool(backend.query, tmp, filename, modality, k)
            finally:
                await form.close()
        except UploadError as exc:
            return _error(exc.status, exc.message, exc.hint)
        except SarbridgeError as exc:
            return _error(422, exc.message, exc.hint)
        return JSONResponse(result)

    return app


def _str_field(value: Any) -> str | None:
    return value if isinstance(value, str) else None
