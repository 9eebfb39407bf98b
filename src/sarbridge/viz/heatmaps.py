"""Matching-surface figures: a query, the window it was searched in, and the cost surface as a heatmap.

:func:`matching_surface_figure` draws one row per query (query image | search window with the true
and the found footprint | the matching surface, brighter = better match, with the found peak)
and saves the PNG atomically. It takes arrays only (no task objects).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarbridge.core.utils import atomic_write

__all__ = ["SurfaceRow", "matching_surface_figure"]


@dataclass
class SurfaceRow:
    """One row of :func:`matching_surface_figure`.

    Attributes:
        query: (h, w) query image.
        window: (H, W) image of the search window.
        surface: matching cost surface (lower is better; NaN where invalid), any resolution.
        found: (row, col) of the found top-left of the query in the window (pixels), or None.
        true: (row, col) of the true top-left in the window, or None when unknown.
        caption: text above the row (query id, error, confidence).
    """

    query: np.ndarray
    window: np.ndarray
    surface: np.ndarray
    found: tuple[float, float] | None
    true: tuple[float, float] | None
    caption: str


def _grey(ax: object, image: np.ndarray) -> None:
    x = np.asarray(image, dtype=np.float64)
    finite = x[np.isfinite(x)]
    lo, hi = (np.percentile(finite, 2), np.percentile(finite, 98)) if finite.size else (0.0, 1.0)
    ax.imshow(x, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)  # type: ignore[attr-defined]
    ax.set_xticks([])  # type: ignore[attr-defined]
    ax.set_yticks([])  # type: ignore[attr-defined]


def matching_surface_figure(rows: list[SurfaceRow], path: str | Path, title: str | None = None,
                            dpi: int = 90) -> Path:
    """Draw query / window / matching-surface rows and save them as one PNG (atomically).

    Args:
        rows: one :class:`SurfaceRow` per query.
        path: destination ``.png`` (parent folders are created).
        title: optional figure title.
        dpi: resolution.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``rows`` is empty.
    """
    if not rows:
        raise ValueError("matching_surface_figure needs at least one row")
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - lazy: heavy; only when a figure is drawn
    from matplotlib.figure import Figure  # noqa: PLC0415 - lazy: heavy; only when a figure is drawn
    from matplotlib.patches import Rectangle  # noqa: PLC0415 - lazy: heavy; only when a figure is drawn

    fig = Figure(figsize=(9.0, 2.9 * len(rows) + (0.4 if title else 0.0)), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    for i, row in enumerate(rows):
        ax_q, ax_w, ax_s = (fig.add_subplot(len(rows), 3, 3 * i + j + 1) for j in range(3))
        _grey(ax_q, row.query)
        ax_q.set_title("SAR query", fontsize=8)
        ax_q.set_ylabel(row.caption, fontsize=7)
        _grey(ax_w, row.window)
        h, w = row.query.shape[-2:]
        for pos, colour, label in ((row.true, "#1eaa3c", "true"), (row.found, "#00b7ff", "found")):
            if pos is not None:
                ax_w.add_patch(Rectangle((pos[1] - 0.5, pos[0] - 0.5), w, h, fill=False, edgecolor=colour,
                                         linewidth=1.5, label=label))
        ax_w.set_title("optical window (green: true, blue: found)", fontsize=8)
        surf = -np.asarray(row.surface, dtype=np.float64)  # brighter = better match
        im = ax_s.imshow(surf, cmap="magma")
        finite = np.where(np.isfinite(surf), surf, -np.inf)
        if np.isfinite(finite).any():
            pr, pc = np.unravel_index(int(np.argmax(finite)), surf.shape)
            ax_s.plot([pc], [pr], marker="+", color="#00b7ff", markersize=10, mew=1.5)
        ax_s.set_xticks([])
        ax_s.set_yticks([])
        ax_s.set_title("matching surface (-cost; +: peak)", fontsize=8)
        fig.colorbar(im, ax=ax_s, fraction=0.046, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(path)
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, facecolor="white"))
    return out
