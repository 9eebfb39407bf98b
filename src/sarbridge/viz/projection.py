"""2-D projections of optical and SAR features, and the before/after picture.

:func:`project_2d` maps L2-normalised features to the plane with t-SNE (scikit-learn, PCA
initialisation, perplexity clipped to the sample count) or PCA; :func:`modality_projection_figure`
draws one panel per stage (e.g. the initial and the trained model) side by side, optical and SAR
points in two colours and markers, with a few identities' optical-SAR pairs joined by lines.

Figures are drawn on a matplotlib Agg canvas without pyplot and written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sarbridge.core.utils import atomic_write

#: Projection methods accepted by :func:`project_2d`.
METHODS: tuple[str, ...] = ("tsne", "pca")
#: Colour (matplotlib) and marker of each modality index (0 optical, 1 SAR).
MODALITY_STYLE: dict[int, tuple[str, str, str]] = {0: ("optical", "#1f77b4", "o"), 1: ("SAR", "#ff7f0e", "^")}
#: Below this many samples t-SNE is not meaningful and :func:`project_2d` uses PCA.
MIN_TSNE_SAMPLES = 10


def _normalised(features: Any) -> np.ndarray:
    x = np.asarray(features.detach().cpu().numpy() if hasattr(features, "detach") else features, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The first two principal components of ``x`` (``(N, 2)``; zero columns where there are fewer).

    Signs are fixed so that each component's largest-magnitude loading is positive, which makes
    the result deterministic.
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros((x.shape[0], 2))
    if x.shape[0] < 2:
        return out
    centred = x - x.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(2, vt.shape[0])
    comps = vt[:k]
    signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(1)])
    signs[signs == 0] = 1.0
    out[:, :k] = centred @ (comps * signs[:, None]).T
    return out


def project_2d(features: Any, method: str = "tsne", seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """Project L2-normalised features ``(N, D)`` to ``(N, 2)``.

    Args:
        features: tensor or array ``(N, D)`` (optical and SAR together, so both share one map).
        method: ``"tsne"`` (scikit-learn, PCA initialisation, Euclidean distance on the unit
            sphere = cosine ranking) or ``"pca"``. t-SNE falls back to PCA below
            :data:`MIN_TSNE_SAMPLES` samples.
        seed: random state of t-SNE.
        perplexity: t-SNE perplexity, clipped to ``(N - 1) / 3``.

    Returns:
        float64 ``(N, 2)`` coordinates.
    """
    if method not in METHODS:
        raise ValueError(f"unknown projection method {method!r}; use one of {', '.join(METHODS)}")
    x = _normalised(features)
    if method == "pca" or x.shape[0] < MIN_TSNE_SAMPLES:
        return pca_2d(x)
    from sklearn.manifold import TSNE  # noqa: PLC0415 - lazy: heavy; only when a t-SNE is drawn

    perp = float(max(1.0, min(perplexity, (x.shape[0] - 1) / 3.0)))
    tsne = TSNE(n_components=2, perplexity=perp, init="pca", random_state=int(seed), learning_rate="auto")
    return np.asarray(tsne.fit_transform(x.astype(np.float32)), dtype=np.float64)


@dataclass
class ProjectionPanel:
    """One stage's projected points.

    Attributes:
        title: panel title, e.g. ``"before training"``.
        xy: ``(N, 2)`` coordinates.
        modality: ``(N,)`` modality indices (0 optical, 1 SAR).
        ids: ``(N,)`` identities (ship or location), or None; used to join a few pairs.
        subtitle: a line under the title, e.g. measured gaps.
    """

    title: str
    xy: np.ndarray
    modality: np.ndarray
    ids: np.ndarray | None = None
    subtitle: str = ""


def paired_identities(modality: np.ndarray, ids: np.ndarray | None, count: int, seed: int = 0) -> list[Any]:
    """Up to ``count`` identities (seeded choice) that have points of both modalities."""
    if ids is None or count <= 0:
        return []
    ids = np.asarray(ids)
    modality = np.asarray(modality)
    both = sorted({i for i in np.unique(ids[modality == 0]) if np.any((ids == i) & (modality == 1)) and i != -1})
    if not both:
        return []
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(both), size=min(count, len(both)), replace=False)
    return [both[i] for i in sorted(chosen)]


def modality_projection_figure(
    panels: Sequence[ProjectionPanel],
    path: str | Path,
    title: str | None = None,
    connect: int = 6,
    seed: int = 0,
    panel_size: float = 5.0,
    dpi: int = 100,
) -> Path:
    """Draw the panels side by side (optical vs SAR) and save a PNG atomically.

    Args:
        panels: one per stage, e.g. before and after training.
        path: output ``.png``.
        title: figure title.
        connect: join the optical and SAR points of this many identities (the same identities in
            every panel) with thin grey lines and outline them; 0 disables it.
        seed: choice of the joined identities.
        panel_size: inches per panel side.
        dpi: resolution.

    Returns:
        The written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - lazy: heavy; only when a figure is drawn
    from matplotlib.figure import Figure  # noqa: PLC0415 - lazy: heavy; only when a figure is drawn
    from matplotlib.lines import Line2D  # noqa: PLC0415 - lazy: heavy; only when a figure is drawn


    panels = list(panels)
    if not panels:
        raise ValueError("no panels to draw")
    fig = Figure(figsize=(panel_size * len(panels), panel_size + 0.6), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    chosen = paired_identities(panels[0].modality, panels[0].ids, connect, seed)
    for ax, panel in zip(axes, panels):
        xy, mod = np.asarray(panel.xy, dtype=float), np.asarray(panel.modality)
        for m, (label, colour, marker) in MODALITY_STYLE.items():
            sel = mod == m
            ax.scatter(xy[sel, 0], xy[sel, 1], s=12, c=colour, marker=marker, alpha=0.6, linewidths=0,
                       label=f"{label} ({int(sel.sum())})")
        if panel.ids is not None:
            ids = np.asarray(panel.ids)
            for ident in chosen:
                o = xy[(ids == ident) & (mod == 0)]
                s = xy[(ids == ident) & (mod == 1)]
                for a in o:
                    for b in s:
                        ax.plot([a[0], b[0]], [a[1], b[1]], color="0.35", linewidth=0.7, alpha=0.7, zorder=1)
                pts = np.concatenate([o, s])
                ax.scatter(pts[:, 0], pts[:, 1], s=22, facecolors="none", edgecolors="black", linewidths=0.8,
                           zorder=3)
        ax.set_title(panel.title + (f"\n{panel.subtitle}" if panel.subtitle else ""), fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, labels = axes[0].get_legend_handles_labels()
    if chosen:
        handles.append(Line2D([0], [0], color="0.35", linewidth=0.7))
        labels.append(f"same identity ({len(chosen)} shown)")
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95 if title else 1))
    out = Path(path)
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, facecolor="white"))
    return out


__all__ = ["METHODS", "ProjectionPanel", "modality_projection_figure", "paired_identities", "pca_2d", "project_2d"]
