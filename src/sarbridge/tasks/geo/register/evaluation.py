"""The ``registered`` stage of an evaluation: every query registered around its retrieval candidates.

:class:`MapRegistrar` holds the optical map a :class:`~sarbridge.tasks.geo.patches.LocalisationData`
was cut from (``meta["map"]``) and registers each SAR query in windows around its best ``top_k``
retrieval cells (the cell's footprint plus ``margin`` map pixels) with
:func:`~sarbridge.tasks.geo.register.stage.register_in_map` (``cfog`` / ``ncc``, coarse-to-fine) or
with the trained encoder's dense feature maps (``features``) or the learned dense matcher trained
with the model (``learned``, :mod:`~sarbridge.tasks.geo.register.dense_matcher`). The raw answers
(:class:`QueryRegistrations`: best position, confidence, per-window costs, the best window's cost
surface) are kept, so a confidence threshold can be swept on validation queries without
registering again (:func:`sarbridge.tasks.geo.evaluate.registered_result`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sarbridge.core.errors import ConfigError, DataError
from sarbridge.core.progress import progress_bar
from sarbridge.data.georaster import GeoRaster
from sarbridge.data.map_source import MapSource, open_map
from sarbridge.data.records import OPTICAL, SAR
from sarbridge.tasks.geo.patches import GeoQuery, GeoReference, LocalisationData
from sarbridge.tasks.geo.register.dense_matcher import STRIDE, DenseMatcher
from sarbridge.tasks.geo.register.descriptors import cfog_border
from sarbridge.tasks.geo.register.images import MAX_BANDS, optical_intensity, sar_to_db
from sarbridge.tasks.geo.register.peaks import peak_ratio
from sarbridge.tasks.geo.register.pyramid import register_coarse_to_fine
from sarbridge.tasks.geo.register.registration import RegistrationResult, register
from sarbridge.tasks.geo.register.stage import candidate_boxes

__all__ = ["MapRegistrar", "QueryRegistrations", "map_intensity", "pixels_intensity", "query_db", "resize_to",
           "registration_unavailable"]


@dataclass
class QueryRegistrations:
    """Raw registration answers of M queries (rows follow the queries).

    Attributes:
        xy: ``(M, 2)`` map position (CRS units) of the query centre at the best match.
        confidence: ``(M,)`` peak ratio of the best match.
        window: ``(M,)`` rank (0-based, in the retrieval list) of the candidate whose window held it.
        costs: ``(M, k)`` best matching cost in each candidate's window (lower is better; ``inf``
            where a query had fewer candidates).
        topleft: ``(M, 2)`` map pixel (row, col) of the query's top-left at the best match.
        surfaces: per query, the cost surface of the best window (float16; may be coarse pixels).
        windows: per query, the best window ``(row0, col0, row1, col1)`` in map pixels.
        method: the registration method.
        top_k: candidates registered per query.
    """

    xy: np.ndarray
    confidence: np.ndarray
    window: np.ndarray
    costs: np.ndarray
    topleft: np.ndarray
    surfaces: list[np.ndarray] = field(repr=False)
    windows: list[tuple[int, int, int, int]] = field(repr=False)
    method: str = "cfog"
    top_k: int = 3


#: candidate windows are searched as one box when it covers at most this share of their summed area
UNION_SEARCH_SHARE = 0.75


def union_box(boxes: Sequence[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    """Bounding box ``(row0, col0, row1, col1)`` of windows ``(row0, col0, row1, col1)``."""
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def box_area(box: tuple[int, int, int, int]) -> int:
    """Pixels of a window ``(row0, col0, row1, col1)`` (end exclusive)."""
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def registration_unavailable(data: LocalisationData) -> str | None:
    """Why ``data`` cannot be registered (one sentence), or None when it can."""
    path = data.meta.get("map")
    if not path:
        return "the data is not cut from one optical map raster (formats scene / map only)"
    if not Path(str(path)).exists():
        return f"the map '{path}' is no longer there"
    return None


def _check_map_bands(name: str, bands: int) -> None:
    if bands > MAX_BANDS:
        raise DataError(f"map {name} has {bands} bands, more than the {MAX_BANDS} an intensity "
                        "descriptor can use", "pass an optical map of 1 to 16 bands (grey, RGB, RGBN ...)")


def pixels_intensity(pixels: np.ndarray) -> np.ndarray:
    """(H, W) float32 intensity of (C, H, W) optical pixels (luminance of RGB(N), mean of other band counts)."""
    px = np.asarray(pixels, dtype=np.float32)
    return optical_intensity(px[:3], (0.299, 0.587, 0.114)) if px.shape[0] in (3, 4) else px.mean(axis=0)


def map_intensity(raster: GeoRaster) -> np.ndarray:
    """(H, W) float32 intensity of a whole optical map (luminance of RGB, mean of other band counts)."""
    _check_map_bands(raster.name, raster.bands)
    return pixels_intensity(raster.array)


def query_db(pixels: np.ndarray) -> np.ndarray:
    """(H, W) SAR query in dB: bands averaged; negative values mean dB already, else linear converted."""
    x = np.asarray(pixels, dtype=np.float32)
    if x.ndim == 3:
        x = x.mean(axis=-1)
    return x if float(x.min()) < 0 else sar_to_db(x)


def resize_to(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """``x`` (H, W) resampled to ``h x w`` (area average when shrinking, bilinear when enlarging)."""
    if x.shape == (h, w):
        return x
    t = torch.as_tensor(x, dtype=torch.float32)[None, None]
    return F.interpolate(t, size=(h, w), mode="area" if x.shape[0] >= h else "bilinear")[0, 0].numpy()


class MapRegistrar:
    """The optical map of a localisation problem, ready to register SAR queries in it.

    The map is opened lazily (:func:`sarbridge.data.map_source.open_map`: a GeoTIFF, a ``.vrt`` or
    a folder of tiles) and only the search windows are read, each once: the intensities of the
    last :attr:`CACHE` windows are kept, since many queries share candidate cells.

    Args:
        map_path: the optical map (raster file, VRT or folder of GeoTIFF tiles).
        method: ``cfog``, ``ncc``, ``features`` or ``learned``.
        margin: map pixels searched on every side of a candidate cell (None: half a patch).
        coarse: resolution reduction of the exhaustive search (1: full resolution); lowered to 1
            when the reduced query would be smaller than the descriptor's support.
        device: where to compute.
        encoder: the trained :class:`~sarbridge.tasks.geo.model.GeoEmbeddingNet` (``features`` only).
        spec: its preprocessing (``features`` only).
        matcher: the trained :class:`~sarbridge.tasks.geo.register.dense_matcher.DenseMatcher` (``learned`` only).

    Raises:
        ConfigError: an unknown method, ``learned`` without a matcher, or ``features`` without an
            encoder or with a backbone that has no dense intermediate features.
        DataError: the map cannot be opened, or has more bands than an intensity descriptor uses.
    """

    #: search windows whose pixels are kept between queries
    CACHE = 128

    def __init__(self, map_path: str | Path, method: str = "cfog", margin: int | None = None, coarse: int = 2,
                 device: torch.device | str = "cpu", encoder: Any = None, spec: Any = None,
                 matcher: DenseMatcher | None = None) -> None:
        if method not in ("cfog", "ncc", "features", "learned"):
            raise ConfigError(f"eval.register.method '{method}' is unknown", "use cfog, ncc, features or learned")
        if method == "learned" and matcher is None:
            raise ConfigError("eval.register.method=learned needs the dense matcher trained with the model "
                              "(matcher.enabled: true in the training config)",
                              "retrain with --set matcher.enabled=true, or use eval.register.method=cfog")
        if method == "features" and (encoder is None or spec is None or
                                     not hasattr(getattr(encoder.backbone, "net", None), "forward_intermediates")):
            raise ConfigError("eval.register.method=features needs the trained CNN encoder (a timm backbone with "
                              "forward_intermediates)", "use eval.register.method=cfog")
        self.raster: MapSource = open_map(map_path)
        _check_map_bands(self.raster.name, self.raster.bands)
        self.shape = (self.raster.height, self.raster.width)
        self.method, self.margin, self.coarse = method, margin, max(1, int(coarse))
        self.device = torch.device(device)
        self.encoder, self.spec = encoder, spec
        self.matcher = matcher.to(self.device).eval() if matcher is not None else None
        self._windows: OrderedDict[tuple[str, tuple[int, int, int, int]], np.ndarray] = OrderedDict()

    # --- geometry -------------------------------------------------------------------------------
    def footprint_box(self, footprint: Sequence[float]) -> tuple[float, float, float, float]:
        """(row0, col0, height, width) in map pixels of a map footprint ``(x0, y0, x1, y1)``."""
        x0, y0, x1, y1 = footprint
        cols, rows = self.raster.map_to_pixel([x0, x1], [y1, y0])
        return float(rows[0]), float(cols[0]), float(rows[1] - rows[0]), float(cols[1] - cols[0])

    def centre_xy(self, row: float, col: float, h: int, w: int) -> tuple[float, float]:
        """Map position of the centre of an ``h x w`` box whose top-left map pixel is ``(row, col)``."""
        x, y = self.raster.pixel_to_map(col + w / 2.0, row + h / 2.0)
        return float(x), float(y)

    # --- map windows ----------------------------------------------------------------------------
    def _read(self, kind: str, box: tuple[int, int, int, int]) -> Any:
        key = (kind, box)
        hit: Any = self._windows.get(key)
        if hit is None:
            r0, c0, r1, c1 = box
            px = self.raster.read(c0, r0, c1 - c0, r1 - r0)
            if kind == "intensity":
                hit = pixels_intensity(px)
            elif kind == "learned":  # the dense matcher's optical features (dim, H / 4, W / 4)
                assert self.matcher is not None
                hit = self.matcher.features(pixels_intensity(px), OPTICAL)
            else:  # channels-last RGB (or grey) pixels, as the encoder's preprocessing takes them
                rgb = np.moveaxis(px[:3] if px.shape[0] >= 3 else px[:1], 0, -1)
                hit = rgb[..., 0] if rgb.shape[-1] == 1 else rgb
            self._windows[key] = hit
            while len(self._windows) > self.CACHE:
                self._windows.popitem(last=False)
        self._windows.move_to_end(key)
        return hit

    def window_image(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """The map's intensity inside a window ``(row0, col0, row1, col1)`` (end exclusive)."""
        image: np.ndarray = self._read("intensity", box)
        return image

    # --- one query ------------------------------------------------------------------------------
    def _features(self, image: np.ndarray, modality: str, scale: float) -> torch.Tensor:
        """Dense (C, h, w) features of the encoder's layer-1 output (stride 4 in network pixels)."""
        h, w = image.shape[:2]
        size = [max(8, round(h * scale)), max(8, round(w * scale))]
        spec = replace(self.spec, image_size=size)
        tensor, _ = spec.prepare(image, modality)
        backbone = self.encoder.backbone
        duals = backbone.duals
        for d in duals:
            d.sar_mask = torch.tensor([modality == SAR], device=self.device)
        try:
            with torch.no_grad():
                feats = backbone.net.forward_intermediates(tensor[None].to(self.device), indices=[1],
                                                           intermediates_only=True)[0]
        finally:
            for d in duals:
                d.sar_mask = None
        return feats[0].float()

    def _register_features(self, sar_px: np.ndarray, boxes: list[tuple[int, int, int, int]],
                           h: int, w: int) -> tuple[RegistrationResult, float]:
        scale = float(self.spec.image_size[0]) / h
        q = self._features(sar_px, SAR, scale)
        wins = [self._features(self._read("rgb", box), OPTICAL, scale) for box in boxes]
        stride = h / q.shape[-2]  # map pixels per feature pixel
        origins = [(r0 / stride, c0 / stride) for r0, c0, _, _ in boxes]
        res = register(q, wins, "features", origins=origins, exclude=2, device=self.device)
        return res, stride

    def register_pixels(self, sar: np.ndarray, h: int, w: int, footprints: Sequence[Sequence[float]]
                        ) -> tuple[RegistrationResult, list[tuple[int, int, int, int]]]:
        """Register SAR pixels (any size; resampled to ``h x w`` map pixels) around candidate cells.

        Args:
            sar: (H, W) SAR pixels (dB, or linear: converted), or (H, W, C) bands (averaged).
            h, w: the query's size in map pixels.
            footprints: map footprints ``(x0, y0, x1, y1)`` of the candidate cells, best first.

        Returns:
            ``(result, boxes)``: the registration (``row``/``col``/``rows``/``cols`` in map pixels) and
            the search windows (row0, col0, row1, col1).

        Raises:
            DataError: no candidates, a map smaller than the query, or a window that cannot be read.
        """
        if not footprints:
            raise DataError("no retrieval candidates to register around", "pass at least the top-1 candidate")
        margin = self.margin if self.margin is not None else max(1, h // 2)
        cands = [self.footprint_box(f)[:2] for f in footprints]
        boxes = candidate_boxes(self.shape, (h, w), cands, margin)
        if self.method == "learned":
            assert self.matcher is not None
            qf = self.matcher.features(resize_to(query_db(sar), h, w), SAR)
            union = union_box(boxes)
            if len(boxes) > 1 and box_area(union) <= UNION_SEARCH_SHARE * sum(box_area(b) for b in boxes):
                return self._register_union((h, w), boxes, union, STRIDE, lambda box: self._learned(qf, [box])), boxes
            res = self._learned(qf, boxes)
            rows, cols = res.rows, res.cols
        elif self.method == "features":  # the encoder takes the raw pixels its preprocessing expects
            raw = np.asarray(sar, dtype=np.float32)
            res, stride = self._register_features(resize_to(raw.mean(axis=-1) if raw.ndim == 3 else raw, h, w), boxes, h, w)
            rows, cols = res.rows * stride, res.cols * stride
        else:
            q = resize_to(query_db(sar), h, w)
            support = 2 * cfog_border() + 1 if self.method == "cfog" else 8
            factor = self.coarse
            while factor > 1 and min(h, w) // factor < support:
                factor -= 1
            union = union_box(boxes)
            if len(boxes) > 1 and box_area(union) <= UNION_SEARCH_SHARE * sum(box_area(b) for b in boxes):
                return self._register_union(q.shape, boxes, union, factor, lambda box: register_coarse_to_fine(
                    q, [self.window_image(box)], self.method, factor=factor, origins=[box[:2]], device=self.device)), boxes
            wins = [self.window_image(box) for box in boxes]
            res = register_coarse_to_fine(q, wins, self.method, factor=factor, origins=[b[:2] for b in boxes],
                                          device=self.device)
            rows, cols = res.rows, res.cols
        rows = rows + np.array([b[0] for b in boxes])
        cols = cols + np.array([b[1] for b in boxes])
        res = replace(res, row=float(rows[res.candidate]), col=float(cols[res.candidate]), rows=rows, cols=cols)
        return res, boxes

    def _learned(self, qf: torch.Tensor, boxes: list[tuple[int, int, int, int]]) -> RegistrationResult:
        """The dense matcher's search of query features ``qf`` in the windows ``boxes`` (positions in
        map pixels relative to each window; surfaces on the 4-pixel feature grid)."""
        wins = [self._read("learned", box) for box in boxes]
        return register(qf, wins, "features", similarity="ssd", stride=STRIDE,  # exclude: as the union search
                        origins=[(b[0], b[1]) for b in boxes], exclude=4, device=self.device)

    def _register_union(self, size: tuple[int, int], boxes: list[tuple[int, int, int, int]],
                        union: tuple[int, int, int, int], factor: int,
                        search: Callable[[tuple[int, int, int, int]], RegistrationResult]) -> RegistrationResult:
        """One search in the bounding box of heavily overlapping candidate windows (the answer of
        :meth:`register_pixels`, map pixels): the same positions as searching each window, about
        ``1 / overlap`` of the work. Every candidate's cost and position are its window's part of
        the surface (coarse pixels with ``factor`` > 1; the best candidate's position is the fine one);
        the best match is the one with the lowest cost in any window (positions in the gaps between
        windows are not searched). ``size`` is the query's (h, w) in map pixels; ``search(box)`` is the
        exhaustive search of one box whose surface has an entry every ``factor`` map pixels (the
        coarse-to-fine search, or the learned matcher's on its 4-pixel grid)."""
        h, w = size
        res = search(union)
        surface = res.surface[0]  # entry (i, j): the query's top-left at union + (i, j) * factor
        inside = torch.zeros_like(surface, dtype=torch.bool)
        parts, scores, rows, cols = [], np.full(len(boxes), np.inf), np.zeros(len(boxes)), np.zeros(len(boxes))
        for n, (r0, c0, r1, c1) in enumerate(boxes):  # the offsets whose query lies inside window n
            i0, j0 = -(-(r0 - union[0]) // factor), -(-(c0 - union[1]) // factor)
            i1 = min(surface.shape[0], (r1 - h - union[0]) // factor + 1)
            j1 = min(surface.shape[1], (c1 - w - union[1]) // factor + 1)
            part = surface[i0:i1, j0:j1]
            parts.append(part)
            inside[i0:i1, j0:j1] = True
            if part.numel() and bool(torch.isfinite(part).any()):
                k = int(part.flatten().argmin())
                scores[n] = float(part.flatten()[k])
                rows[n] = union[0] + (i0 + k // part.shape[1]) * factor
                cols[n] = union[1] + (j0 + k % part.shape[1]) * factor
        best = int(np.argmin(scores))
        fine = (union[0] + res.row, union[1] + res.col)
        masked = torch.where(inside, surface, torch.full_like(surface, float("inf")))
        gi, gj = (int(v) for v in divmod(int(masked.flatten().argmin()), masked.shape[1]))
        global_best = union[0] + gi * factor, union[1] + gj * factor
        if abs(fine[0] - global_best[0]) <= factor and abs(fine[1] - global_best[1]) <= factor:
            rows[best], cols[best] = fine  # the fine level refined this very peak
            scores[best] = min(scores[best], float(res.score))
        conf = peak_ratio(masked[None], exclude=4)  # as register(): 4 pixels of the searched grid
        size = (max(p.shape[0] for p in parts), max(p.shape[1] for p in parts))
        stack = torch.full((len(parts), *size), float("inf"), dtype=surface.dtype, device=surface.device)
        for n, part in enumerate(parts):
            stack[n, : part.shape[0], : part.shape[1]] = part
        return replace(res, row=float(rows[best]), col=float(cols[best]), score=float(scores[best]), confidence=conf,
                       candidate=best, surface=stack, rows=rows, cols=cols, scores=scores)

    def register_query(self, query: GeoQuery, candidates: Sequence[GeoReference]) -> tuple[RegistrationResult, int, int,
                                                                                            list[tuple[int, int, int, int]]]:
        """Register one query around its candidate cells (best first).

        Returns:
            ``(result, h, w, boxes)``: the registration (positions in map pixels, relative to the
            map), the query's size in map pixels and the search windows (row0, col0, row1, col1).
        """
        _, _, fh, fw = self.footprint_box(query.footprint)
        h, w = max(1, round(fh)), max(1, round(fw))
        res, boxes = self.register_pixels(np.asarray(query.load()), h, w, [r.footprint for r in candidates])
        return res, h, w, boxes

    # --- many queries ---------------------------------------------------------------------------
    def register_queries(self, queries: Sequence[GeoQuery], references: Sequence[GeoReference], ranked: np.ndarray,
                         top_k: int = 3, progress: bool = False) -> QueryRegistrations:
        """Register every query around its first ``top_k`` ranked references.

        Args:
            queries: the queries (their ``footprint`` gives the query's size on the map).
            references: the references ``ranked`` indexes.
            ranked: ``(M, K)`` reference indices per query, best first.
            top_k: candidates registered per query.
            progress: show a progress bar.

        Returns:
            The :class:`QueryRegistrations`.
        """
        k = max(1, min(top_k, ranked.shape[1]))
        m = len(queries)
        xy = np.zeros((m, 2))
        conf, win = np.zeros(m), np.zeros(m, dtype=np.int64)
        costs = np.full((m, k), np.inf)
        topleft = np.zeros((m, 2))
        surfaces: list[np.ndarray] = []
        windows: list[tuple[int, int, int, int]] = []
        for i, q in enumerate(progress_bar(queries, desc="registering queries", enabled=progress, unit="query")):
            res, h, w, boxes = self.register_query(q, [references[int(j)] for j in ranked[i, :k]])
            xy[i] = self.centre_xy(res.row, res.col, h, w)
            topleft[i] = res.row, res.col
            conf[i], win[i] = res.confidence, res.candidate
            costs[i, : len(res.scores)] = res.scores
            surf = res.surface[res.candidate].detach().float().cpu().numpy()
            surfaces.append(np.where(np.isfinite(surf), surf, np.nan).astype(np.float16))
            windows.append(boxes[res.candidate])
        return QueryRegistrations(xy, conf, win, costs, topleft, surfaces, windows, self.method, k)

