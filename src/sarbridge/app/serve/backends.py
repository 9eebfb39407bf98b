"""What the web viewer serves: a re-ID gallery index or a geo map index, loaded once.

:func:`load_backend` opens an index folder, asks the task registry which task built it (from the
manifest's ``info``: ``task: "reid"`` from ``sarbridge index build``, ``kind: "geo"`` from ``sarbridge
index build --map``) and returns a :class:`ReidBackend` or :class:`GeoBackend`. Both answer ``query(path, filename,
modality, k)`` with a JSON-ready dict and render PNG thumbnails of indexed items.
"""

from __future__ import annotations

import base64
import io
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sarbridge.app.serve.uploads import channels_last, check_bands, client_names
from sarbridge.core.errors import DataError
from sarbridge.core.optional import require
from sarbridge.data.io import read_image
from sarbridge.data.sar import get_sar_preprocess, optical_to_uint8_rgb
from sarbridge.retrieval.index import EmbeddingIndex
from sarbridge.tasks.geo.grid import RasterWindow, image_layout
from sarbridge.tasks.geo.locate import GeoLocator
from sarbridge.tasks.registry import task_of_index
from sarbridge.tasks.reid.embedder import load_embedder
from sarbridge.tasks.reid.gallery import gallery_checkpoint

__all__ = ["GeoBackend", "ReidBackend", "display_uint8", "load_backend", "png_bytes"]

#: Longest side of a thumbnail / query preview, and of the served map overview.
THUMB_SIDE = 160
MAP_SIDE = 1024
_THUMB_CACHE = 256


def display_uint8(arr: np.ndarray, modality: str) -> np.ndarray:
    """Pixels -> uint8 ``(H, W, 3)`` for display: optical as the models read it, SAR in dB.

    Args:
        arr: ``(H, W)`` or ``(H, W, C)`` pixels as :func:`~sarbridge.data.io.read_image` returns them.
        modality: ``"optical"`` or ``"sar"``.
    """
    if modality == "sar":
        return get_sar_preprocess("db")(np.asarray(arr, dtype=np.float64))
    return optical_to_uint8_rgb(arr)


def png_bytes(rgb: np.ndarray, max_side: int = THUMB_SIDE) -> bytes:
    """Encode uint8 ``(H, W, 3)`` pixels as PNG, shrunk (aspect kept) so the longest side is at most ``max_side``."""
    im = Image.fromarray(np.ascontiguousarray(rgb))
    scale = max_side / max(im.size)
    if scale < 1:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


class _ThumbCache:
    """A small thread-safe LRU of rendered thumbnails."""

    def __init__(self, size: int = _THUMB_CACHE) -> None:
        self._items: OrderedDict[int, bytes] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: int) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: int, value: bytes) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)


class _Backend:
    """Shared parts: the loaded index, the model lock, thumbnails and the query preview.

    Class attributes: ``kind`` (the task that built the index), ``modalities`` (of the queries it
    takes), ``name`` (how messages name it) and ``shows_map`` (whether it has a map view).
    """

    kind = ""
    modalities: tuple[str, ...] = ()
    name = "this index"
    shows_map = False

    def __init__(self, index_dir: Path, index: Any) -> None:
        self.index_dir = index_dir
        self.index = index
        self.lock = threading.Lock()  # one forward pass at a time
        self._thumbs = _ThumbCache()

    def __len__(self) -> int:
        return len(self.index)

    def describe(self) -> dict[str, Any]:
        """Facts the page needs: kind, item count, accepted modalities, map size (geo)."""
        return {"kind": self.kind, "count": len(self), "index": str(self.index_dir)}

    def thumbnail(self, i: int) -> bytes:
        """PNG thumbnail of indexed item ``i``.

        Raises:
            DataError: ``i`` is not an item of the index, or its image cannot be read.
        """
        if not 0 <= i < len(self):
            raise DataError(f"no item {i} in the index (it holds {len(self)})", "use a rank's 'index' field")
        png = self._thumbs.get(i)
        if png is None:
            png = png_bytes(self._render(i))
            self._thumbs.put(i, png)
        return png

    def _render(self, i: int) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def read_query(path: Path, filename: str, modality: str) -> np.ndarray:
        """Read and check an uploaded query (library reader, band rule); messages name ``filename``."""
        with client_names(path, filename):
            arr = channels_last(read_image(path))
        check_bands(arr, modality, filename)
        return arr


class ReidBackend(_Backend):
    """A re-ID gallery index (``sarbridge index build``) with its checkpoint's embedder.

    Args:
        index_dir: the index folder.
        index: the loaded :class:`~sarbridge.retrieval.index.EmbeddingIndex`.
        device: where the model runs.

    Raises:
        DataError: the index names no checkpoint, or the checkpoint is missing or has changed.
    """

    kind = "reid"
    modalities = ("optical", "sar")
    name = "a re-ID gallery index"

    def __init__(self, index_dir: Path, index: Any, device: str = "auto") -> None:
        super().__init__(index_dir, index)
        ckpt = gallery_checkpoint(index_dir, index.info)
        self.embedder = load_embedder(ckpt, device)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "modalities": list(self.modalities), "has_map": False}

    def query(self, path: Path, filename: str, modality: str, k: int) -> dict[str, Any]:
        """Embed the uploaded chip and rank the gallery.

        Returns:
            ``{"kind", "query": {"name", "modality", "shape", "preview"}, "matches": [{"rank", "index",
            "score", "id", "identity", "modality", "path", "name", "camid"}, ...]}``, best first.
        """
        arr = self.read_query(path, filename, modality)
        with self.lock:
            q = self.embedder.embed(arr, modality).numpy()
            scores, ids = self.index.search(q, min(k, len(self.index)))
        matches: list[dict[str, Any]] = []
        meta = self.index.metadata
        for score, i in zip(scores[0].tolist(), ids[0].tolist()):
            if i < 0:
                continue
            m = meta[i]
            p = m.get("path")
            matches.append({"rank": len(matches) + 1, "index": int(i), "score": float(score), "id": p,
                            "identity": m.get("id"), "modality": m.get("modality"), "path": p,
                            "name": Path(p).name if isinstance(p, str) else None, "camid": m.get("camid")})
        return {"kind": self.kind, "query": _query_facts(arr, filename, modality), "matches": matches}

    def _render(self, i: int) -> np.ndarray:
        m = self.index.metadata[i]
        return display_uint8(read_image(m["path"]), str(m.get("modality", "optical")))


class GeoBackend(_Backend):
    """A geo map index (``sarbridge index build --map``): locates SAR patches with a :class:`~sarbridge.tasks.geo.locate.GeoLocator` loaded once.

    The map named in the index info is read once, decimated to at most :data:`MAP_SIDE` pixels, for
    the overview (``map_png``); estimates are also returned in that overview's pixel coordinates.
    A map that has moved away leaves the viewer working without the overview and thumbnails.

    Args:
        index_dir: the index folder.
        index: the loaded :class:`~sarbridge.retrieval.index.EmbeddingIndex`.
        device: where the model runs.

    Raises:
        DataError: the index lacks its model bundle or the bundle does not match it.
    """

    kind = "geo"
    modalities = ("sar",)
    name = "a geo (map) index"
    shows_map = True

    def __init__(self, index_dir: Path, index: Any, device: str = "auto") -> None:
        super().__init__(index_dir, index)
        info = index.info
        self.locator = GeoLocator(index_dir, device, index=index)  # checks the model bundle against the index
        self.device = device
        self.info = info
        self.map_path = Path(str(info.get("map", "")))
        self.map_png: bytes | None = None
        self.map_error = ""
        self.map_size = (0, 0)
        self._scale_xy = (1.0, 1.0)
        self._inv: Any = None
        self._gsd = 1.0
        try:
            self._load_map()
        except DataError as exc:
            self.map_error = str(exc)

    def _load_map(self) -> None:
        rasterio = require("rasterio", "geo")
        resampling = require("rasterio.enums", "geo").Resampling
        errors = require("rasterio.errors", "geo")
        if not self.map_path.is_file():
            raise DataError(f"map '{self.map_path}' of the index not found", "restore the map file to show it")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", errors.NotGeoreferencedWarning)
                with rasterio.open(self.map_path) as src:
                    scale = min(1.0, MAP_SIDE / max(src.width, src.height))
                    h, w = max(1, round(src.height * scale)), max(1, round(src.width * scale))
                    bands = list(range(1, min(src.count, 3) + 1))
                    pixels = src.read(bands, out_shape=(len(bands), h, w), resampling=resampling.average)
                    transform = src.transform
                    self._scale_xy = (w / src.width, h / src.height)
        except errors.RasterioIOError as exc:
            raise DataError(f"map '{self.map_path}' could not be read ({str(exc)[:80]})",
                            "restore the map file") from None
        self._inv = ~transform
        self._gsd = float(np.hypot(transform.a, transform.d))
        self.map_size = (w, h)
        self.map_png = png_bytes(display_uint8(image_layout(pixels, "optical"), "optical"), max_side=MAP_SIDE)

    def describe(self) -> dict[str, Any]:
        w, h = self.map_size
        return {**super().describe(), "modalities": list(self.modalities), "has_map": self.map_png is not None,
                "map_width": w, "map_height": h, "crs": self.info.get("crs"),
                "patch_size_m": self.info.get("patch_size_m")}

    def map_pixels(self, x: float, y: float) -> tuple[float, float]:
        """Map coordinates (the index CRS) -> pixel position in the served overview (``map.png``)."""
        col, row = self._inv @ (x, y)
        sx, sy = self._scale_xy
        return float(col * sx), float(row * sy)

    def query(self, path: Path, filename: str, modality: str, k: int) -> dict[str, Any]:
        """Locate the uploaded SAR patch on the map.

        Returns:
            ``{"kind", "query": {...}, "estimate": {"lon", "lat", "x", "y", "crs", "error_radius_m",
            "confidence", "refined", "check_error_m"?, "registration": {"registered", "method", "confidence",
            "threshold"}?, "map_px": {"x", "y", "r"}?}, "matches": [{"rank",
            "index", "id", "score", "probability", "row", "col", "lon", "lat", "x", "y", "source", "map_px"?}]}``.
        """
        arr = self.read_query(path, filename, modality)
        with self.lock, client_names(path, filename):
            res = self.locator.locate(path, k=min(k, len(self.index)))
        est = {key: res[key] for key in ("lon", "lat", "x", "y", "crs", "error_radius_m", "confidence", "refined")}
        if "check_error_m" in res:
            est["check_error_m"] = res["check_error_m"]
        reg = res.get("registration")
        if isinstance(reg, dict):  # the stage validation chose: metre-level registration in the map
            est["registration"] = {k: reg[k] for k in ("registered", "method", "confidence", "threshold") if k in reg}
        matches = []
        for c in res["candidates"]:
            match = {**c, "index": int(c["id"])}
            if self._inv is not None:
                px, py = self.map_pixels(c["x"], c["y"])
                match["map_px"] = {"x": px, "y": py}
            matches.append(match)
        if self._inv is not None:
            px, py = self.map_pixels(res["x"], res["y"])
            est["map_px"] = {"x": px, "y": py, "r": float(res["error_radius_m"]) / self._gsd * self._scale_xy[0]}
        return {"kind": self.kind, "query": _query_facts(arr, filename, modality), "estimate": est,
                "matches": matches}

    def _render(self, i: int) -> np.ndarray:
        if self._inv is None:
            raise DataError(self.map_error or f"map '{self.map_path}' not available", "restore the map file")
        left, bottom, right, top = self.index.metadata[i]["footprint"]
        c0, r0 = self._inv @ (left, top)
        c1, r1 = self._inv @ (right, bottom)
        c0, c1 = sorted((c0, c1))
        r0, r1 = sorted((r0, r1))
        window = RasterWindow(str(self.map_path), round(c0), round(r0), max(1, round(c1 - c0)),
                              max(1, round(r1 - r0)), "optical")
        return display_uint8(window(), "optical")


def _query_facts(arr: np.ndarray, filename: str, modality: str) -> dict[str, Any]:
    return {"name": filename, "modality": modality, "shape": list(arr.shape),
            "preview": _data_url(png_bytes(display_uint8(arr, modality)))}


#: The viewer of each task's indexes (by task name).
_BACKENDS: dict[str, type[ReidBackend | GeoBackend]] = {b.kind: b for b in (ReidBackend, GeoBackend)}


def load_backend(index_dir: str | Path, device: str = "auto") -> ReidBackend | GeoBackend:
    """Open an index folder and its model, detecting whether it is a re-ID gallery or a geo map index.

    Args:
        index_dir: folder written by ``sarbridge index build`` (``--data`` or ``--map``).
        device: ``auto``, ``cpu``, ``cuda[:N]``.

    Raises:
        DataError: missing or damaged index, an index of neither kind, a missing or changed model.
    """
    d = Path(index_dir)
    index = EmbeddingIndex.load(d)
    if len(index) == 0:
        raise DataError(f"index '{d}' is empty", "rebuild it from a non-empty gallery or map")
    task = task_of_index(index.info or {})
    backend = _BACKENDS.get(task.name) if task is not None else None
    if backend is not None:
        return backend(d, index, device)
    raise DataError(f"index '{d}' is neither a re-ID gallery index nor a geo map index",
                    "build one with 'sarbridge index build'")
