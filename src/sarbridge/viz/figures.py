"""Ranked-retrieval figures: one row per query, its top-k candidates framed by correctness.

Each row shows the query thumbnail followed by the ranked candidates. A candidate carries a
thick coloured border (:data:`STATUS_COLOURS`): green for a true match (same identity / true
location), yellow for a near miss (overlapping neighbour) and red for a wrong candidate, with a
short caption below it (e.g. ``"#3  412 m  s=0.71"``).

The figure is laid out in whole pixels by :func:`layout_boxes` and drawn with matplotlib's Agg
canvas without touching pyplot or any global matplotlib state; thumbnails are placed with
``Figure.figimage`` so they land unresampled at the boxes the layout reports (tests and
downstream tools can look pixels up there). Files are written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

from sarbridge.core.utils import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Status = Literal["match", "near", "wrong"]

#: Border colour (8-bit RGB) per candidate status.
STATUS_COLOURS: dict[str, tuple[int, int, int]] = {
    "match": (30, 170, 60),
    "near": (245, 200, 0),
    "wrong": (215, 35, 35),
}
#: Legend text per status.
STATUS_LABELS: dict[str, str] = {
    "match": "match (true match / location)",
    "near": "near (overlapping neighbour)",
    "wrong": "wrong",
}
#: Neutral frame of the query thumbnail.
QUERY_COLOUR: tuple[int, int, int] = (60, 60, 60)
#: Fill behind thumbnails whose aspect ratio is not square.
LETTERBOX_COLOUR: tuple[int, int, int] = (255, 255, 255)

_CAPTION_LINES = 2  # caption lines reserved below every thumbnail
_CHAR_WIDTH = 0.62  # rough DejaVu Sans advance width, in units of the font size (px)


Box = tuple[int, int, int, int]
"""A pixel box ``(left, top, right, bottom)`` in the saved image; ``right``/``bottom`` exclusive."""


@dataclass
class RankedCandidate:
    """One retrieved gallery item.

    Attributes:
        image: pixels, (H, W) or (H, W, C), any numeric dtype (see :func:`to_display_uint8`).
        status: ``"match"``, ``"near"`` or ``"wrong"``; picks the border colour.
        caption: short text shown under the thumbnail, e.g. ``"#3  412 m  s=0.71"``.
    """

    image: np.ndarray
    status: Status
    caption: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUS_COLOURS:
            raise ValueError(
                f"unknown candidate status {self.status!r}; use one of {', '.join(STATUS_COLOURS)}"
            )


@dataclass
class RankedRow:
    """One query and its ranked candidates (best first).

    Attributes:
        query_image: pixels of the query, (H, W) or (H, W, C), any numeric dtype.
        query_caption: text shown under the query thumbnail (after the word ``query``).
        candidates: the top-k candidates in rank order.
    """

    query_image: np.ndarray
    query_caption: str = ""
    candidates: list[RankedCandidate] = field(default_factory=list)


@dataclass(frozen=True)
class FigureLayout:
    """Pixel geometry of a retrieval figure, as saved.

    Attributes:
        width: image width in pixels.
        height: image height in pixels.
        thumb: thumbnail side in pixels (border included).
        border: border thickness in pixels.
        font_px: caption font size in pixels.
        query_boxes: per row, the box of the query thumbnail.
        candidate_boxes: per row, the boxes of its candidates in rank order.
        caption_boxes: per row, the caption boxes (query first, then the candidates).
        title_box: the band holding the title, or ``None`` without a title.
        legend_box: the band holding the legend.
        legend_columns: number of legend columns (3 side by side, or 1 stacked).
    """

    width: int
    height: int
    thumb: int
    border: int
    font_px: int
    query_boxes: list[Box]
    candidate_boxes: list[list[Box]]
    caption_boxes: list[list[Box]]
    title_box: Box | None
    legend_box: Box
    legend_columns: int


# --------------------------------------------------------------------------------------------
# Pixels
# --------------------------------------------------------------------------------------------
def _stretch(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Linear stretch of ``x`` between its ``low``/``high`` percentiles to uint8 (NaN -> 0)."""
    x = x.astype(np.float64, copy=False)
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros(x.shape, dtype=np.uint8)
    values = x[finite]
    lo, hi = (float(v) for v in np.percentile(values, [low, high]))
    if hi <= lo:  # flat between the percentiles: fall back to the full range
        lo, hi = float(values.min()), float(values.max())
    if hi <= lo:  # constant image
        return np.zeros(x.shape, dtype=np.uint8)
    scaled = np.where(finite, (x - lo) * (255.0 / (hi - lo)), 0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_display_uint8(image: np.ndarray, low: float = 2.0, high: float = 98.0) -> np.ndarray:
    """Bring any image to (H, W, 3) uint8 for display.

    uint8 images keep their values (an (H, W, 3) uint8 array is returned unchanged); other
    dtypes (float SAR backscatter, 16-bit optical, ...) get a robust linear stretch between the
    ``low`` and ``high`` percentiles of their finite values, jointly over the channels so colour
    balance is kept. Single-band images (2-D or one channel) are shown in grey by replicating
    the band; two channels keep the first, more than three keep the first three.

    Args:
        image: (H, W) or (H, W, C) array of any numeric or bool dtype.
        low: lower percentile mapped to 0.
        high: upper percentile mapped to 255.

    Returns:
        A (H, W, 3) uint8 array.

    Raises:
        ValueError: the array is empty or not 2-D / 3-D.
    """
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise ValueError(f"expected a non-empty (H, W) or (H, W, C) image, got shape {arr.shape}")
    if arr.ndim == 3:
        if arr.shape[-1] in (1, 2):
            arr = arr[..., 0]
        elif arr.shape[-1] > 3:
            arr = arr[..., :3]
    if arr.dtype == np.uint8 and arr.ndim == 3:
        return arr
    if arr.dtype == np.bool_:
        arr8 = arr.astype(np.uint8) * np.uint8(255)
    elif arr.dtype == np.uint8:
        arr8 = arr
    elif np.issubdtype(arr.dtype, np.number):
        arr8 = _stretch(arr.real if np.iscomplexobj(arr) else arr, low, high)
    else:
        raise ValueError(f"cannot display an image of dtype {arr.dtype}")
    if arr8.ndim == 2:
        arr8 = np.repeat(arr8[..., None], 3, axis=-1)
    return np.ascontiguousarray(arr8)


def _framed_thumbnail(image: np.ndarray, size: int, border: int, colour: tuple[int, int, int]) -> np.ndarray:
    """Fit ``image`` (aspect kept, letterboxed) inside a ``size``-pixel square with a solid frame."""

    rgb = to_display_uint8(image)
    inner = size - 2 * border
    h, w = rgb.shape[:2]
    scale = inner / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST
    fitted = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), resample))
    tile = np.empty((size, size, 3), dtype=np.uint8)
    tile[...] = colour
    tile[border : size - border, border : size - border] = LETTERBOX_COLOUR
    top = border + (inner - new_h) // 2
    left = border + (inner - new_w) // 2
    tile[top : top + new_h, left : left + new_w] = fitted
    return tile


# --------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------
def _text_width(n_chars: int, font_px: float) -> int:
    return math.ceil(n_chars * _CHAR_WIDTH * font_px)


def layout_boxes(
    rows: list[RankedRow], title: str | None = None, thumb: int = 96, dpi: int = 100
) -> FigureLayout:
    """Pixel layout of :func:`retrieval_figure` for the same arguments.

    The layout depends only on the number of rows, the candidates per row, whether there is a
    title (and its length), ``thumb`` and ``dpi``; boxes are in the coordinates of the saved
    PNG (origin top-left).

    Args:
        rows: the rows to draw.
        title: optional figure title.
        thumb: thumbnail side in pixels, border included.
        dpi: resolution of the saved image (sets the font size in points).

    Returns:
        The :class:`FigureLayout`.

    Raises:
        ValueError: ``rows`` is empty or ``thumb``/``dpi`` are too small.
    """
    if not rows:
        raise ValueError("retrieval figure needs at least one RankedRow; got an empty list")
    if thumb < 16:
        raise ValueError(f"thumb must be at least 16 pixels, got {thumb}")
    if dpi <= 0:
        raise ValueError(f"dpi must be positive, got {dpi}")
    k = max(len(r.candidates) for r in rows)
    font_px = min(14, max(8, round(thumb * 0.1)))
    line_px = math.ceil(font_px * 1.3)
    pad = max(4, thumb // 12)
    border = max(2, round(thumb / 16))
    caption_h = _CAPTION_LINES * line_px + pad // 2
    query_gap = 2 * pad  # extra space that sets the query apart from its candidates

    x_query = pad
    x_first = x_query + thumb + pad + query_gap
    width = x_first + k * (thumb + pad) if k else x_query + thumb + pad

    title_h = 0
    if title:
        title_px = round(font_px * 1.4)
        title_h = math.ceil(title_px * 1.6) + pad // 2
        width = max(width, _text_width(len(title), title_px) + 2 * pad)

    # Legend: three entries side by side when they fit, else stacked.
    entry_w = [_text_width(len(label), font_px) + 3 * font_px for label in STATUS_LABELS.values()]
    one_row_w = sum(entry_w) + 2 * pad + 2 * font_px
    legend_columns = 3 if one_row_w <= width else 1
    if legend_columns == 1:
        width = max(width, max(entry_w) + 2 * pad + font_px)
    legend_h = math.ceil(line_px * (1.2 if legend_columns == 3 else 3.4)) + 2 * pad

    y = pad + title_h
    title_box = (0, 0, width, pad + title_h) if title else None
    query_boxes: list[Box] = []
    candidate_boxes: list[list[Box]] = []
    caption_boxes: list[list[Box]] = []
    for row in rows:
        query_boxes.append((x_query, y, x_query + thumb, y + thumb))
        cands = [
            (x_first + j * (thumb + pad), y, x_first + j * (thumb + pad) + thumb, y + thumb)
            for j in range(len(row.candidates))
        ]
        candidate_boxes.append(cands)
        caption_boxes.append(
            [(b[0] - pad // 2, y + thumb, b[2] + pad // 2, y + thumb + caption_h) for b in [query_boxes[-1], *cands]]
        )
        y += thumb + caption_h + pad
    legend_box = (0, y, width, y + legend_h)
    height = y + legend_h
    return FigureLayout(
        width=width,
        height=height,
        thumb=thumb,
        border=border,
        font_px=font_px,
        query_boxes=query_boxes,
        candidate_boxes=candidate_boxes,
        caption_boxes=caption_boxes,
        title_box=title_box,
        legend_box=legend_box,
        legend_columns=legend_columns,
    )


def _fit_text(text: str, max_w: float, lines: int, measure: Callable[[str], float]) -> str:
    """Wrap ``text`` greedily into at most ``lines`` lines no wider than ``max_w`` pixels.

    Words longer than a line are broken; text that still does not fit ends in ``...``.
    """
    if "\n" not in text and measure(text) <= max_w:
        return text  # fits as given (keeps deliberate double spaces)
    words = text.split()
    out: list[str] = []
    current = ""
    for word in words:
        trial = f"{current} {word}" if current else word
        if measure(trial) <= max_w:
            current = trial
            continue
        if current:
            out.append(current)
        current = word
        while measure(current) > max_w and len(current) > 1:  # break an over-long word
            cut = len(current) - 1
            while cut > 1 and measure(current[:cut]) > max_w:
                cut -= 1
            out.append(current[:cut])
            current = current[cut:]
    if current:
        out.append(current)
    if len(out) > lines:
        last = " ".join(out[lines - 1 :])
        while last and measure(last + "...") > max_w:
            last = last[:-1]
        out = out[: lines - 1] + [last.rstrip() + "..."]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------
def _build_figure(rows: list[RankedRow], layout: FigureLayout, title: str | None, dpi: int) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - lazy: heavy; only when a figure is drawn
    from matplotlib.figure import Figure  # noqa: PLC0415 - lazy: heavy; only when a figure is drawn
    from matplotlib.font_manager import FontProperties  # noqa: PLC0415 - lazy: heavy; only when a figure is drawn
    from matplotlib.patches import Patch  # noqa: PLC0415 - lazy: heavy; only when a figure is drawn

    W, H = layout.width, layout.height
    # A hair over the exact size so the canvas' int() truncation cannot lose a pixel.
    fig = Figure(figsize=((W + 1e-3) / dpi, (H + 1e-3) / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    pt = 72.0 / dpi  # points per pixel
    font_pt = layout.font_px * pt

    def fx(x: float) -> float:
        return x / W

    def fy(y: float) -> float:  # layout y (from the top) -> figure fraction (from the bottom)
        return 1.0 - y / H

    def place(tile: np.ndarray, box: Box) -> None:
        fig.figimage(tile, xo=box[0], yo=H - box[3], origin="upper", resize=False)

    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    props = FontProperties(size=font_pt)
    line_px = math.ceil(layout.font_px * 1.3)

    def measure(text: str) -> float:
        return float(renderer.get_text_width_height_descent(text, props, ismath=False)[0])

    def caption(text: str, box: Box, lines: int, bold: bool = False) -> None:
        text = _fit_text(text, box[2] - box[0] - 2, lines, measure) if not bold else text
        fig.text(fx((box[0] + box[2]) / 2), fy(box[1] + layout.font_px * 0.25), text, ha="center", va="top",
                 fontsize=font_pt, linespacing=1.15, fontweight="bold" if bold else "normal", parse_math=False)

    for r, row in enumerate(rows):
        qcap = layout.caption_boxes[r][0]
        place(_framed_thumbnail(row.query_image, layout.thumb, max(1, layout.border // 3), QUERY_COLOUR),
              layout.query_boxes[r])
        caption("query", qcap, 1, bold=True)
        if row.query_caption:
            caption(row.query_caption, (qcap[0], qcap[1] + line_px, qcap[2], qcap[3]), _CAPTION_LINES - 1)
        for j, cand in enumerate(row.candidates):
            place(_framed_thumbnail(cand.image, layout.thumb, layout.border, STATUS_COLOURS[cand.status]),
                  layout.candidate_boxes[r][j])
            if cand.caption:
                caption(cand.caption, layout.caption_boxes[r][j + 1], _CAPTION_LINES)

    if title and layout.title_box is not None:
        tb = layout.title_box
        fig.text(0.5, fy((tb[1] + tb[3]) / 2), title, ha="center", va="center",
                 fontsize=font_pt * 1.4, fontweight="bold", parse_math=False)

    # the near-miss entry only when a candidate is one (never on re-identification figures)
    shown = {c.status for row in rows for c in row.candidates} | {"match", "wrong"}
    handles = [
        Patch(facecolor=(rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0), edgecolor="black", linewidth=0.5, label=STATUS_LABELS[status])
        for status, rgb in STATUS_COLOURS.items() if status in shown
    ]
    lb = layout.legend_box
    fig.legend(handles=handles, loc="center", bbox_to_anchor=(0.5, fy((lb[1] + lb[3]) / 2)),
               ncol=layout.legend_columns, fontsize=font_pt, frameon=False,
               handlelength=1.2, handletextpad=0.5, columnspacing=1.2, borderaxespad=0.0)
    return fig


def retrieval_figure(
    rows: list[RankedRow],
    path: str | Path,
    title: str | None = None,
    thumb: int = 96,
    dpi: int = 100,
) -> Path:
    """Draw a ranked-retrieval figure and save it atomically as PNG.

    One row per query: the query thumbnail (labelled ``query`` and its caption), then its
    candidates in rank order, each framed green (match), yellow (near: overlapping neighbour)
    or red (wrong) with its caption below; a legend explains the colours. Rows may have
    different numbers of candidates (the figure is as wide as the longest). The saved image is
    exactly ``layout_boxes(rows, title, thumb, dpi)`` in size and geometry.

    Args:
        rows: one :class:`RankedRow` per query.
        path: destination ``.png``; parent folders are created.
        title: optional title above the rows.
        thumb: thumbnail side in pixels, border included.
        dpi: resolution of the PNG.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``rows`` is empty, a candidate has an unknown status, or an image cannot be
            displayed.
    """

    rows = list(rows)
    layout = layout_boxes(rows, title=title, thumb=thumb, dpi=dpi)
    for row in rows:
        for cand in row.candidates:
            if cand.status not in STATUS_COLOURS:  # dataclass fields may be reassigned after init
                raise ValueError(
                    f"unknown candidate status {cand.status!r}; use one of {', '.join(STATUS_COLOURS)}"
                )
    fig = _build_figure(rows, layout, title, dpi)
    out = Path(path)
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, facecolor="white"))
    return out
