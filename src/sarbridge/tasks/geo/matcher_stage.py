"""The dense-matcher stage of ``geo train`` (``matcher.enabled``): train it on the training queries.

The stage runs after the retrieval stages and before the validation choice, and writes
``OUT/matcher/matcher.pt`` atomically when it ends; ``--resume`` loads that file instead of
training again (the stage is short and has no checkpoints of its own: an interrupted stage trains
again from its seed, so the resumed run is the same run). The matcher goes into ``geo_model.pt``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarbridge.core.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from sarbridge.core.errors import DataError
from sarbridge.tasks.geo.config import GeoConfig
from sarbridge.tasks.geo.patches import GeoQuery, LocalisationData
from sarbridge.tasks.geo.register.dense_matcher import DenseMatcher, MatcherSample, train_dense_matcher
from sarbridge.tasks.geo.register.evaluation import MapRegistrar, query_db, registration_unavailable, resize_to

__all__ = ["MATCHER_FILE", "MATCHER_TASK", "matcher_samples", "train_or_load_matcher"]

#: the stage's file in the run folder
MATCHER_FILE = Path("matcher") / "matcher.pt"
#: the checkpoint task of that file
MATCHER_TASK = "geo-matcher"


def matcher_samples(registrar: MapRegistrar, queries: Sequence[GeoQuery]) -> list[MatcherSample]:
    """The training samples of queries cut from the registrar's map: SAR in dB at map resolution
    and the top-left map pixel.

    Raises:
        DataError: a query with NaN/inf pixels (named).
    """
    out = []
    for q in queries:
        r0, c0, fh, fw = registrar.footprint_box(q.footprint)
        h, w = max(1, round(fh)), max(1, round(fw))
        sar = resize_to(query_db(np.asarray(q.load())), h, w)
        if not np.isfinite(sar).all():
            raise DataError(f"training query {q.source} holds no-data (NaN/inf) pixels, which the dense matcher "
                            "cannot train on", "fill or mask the no-data area of the SAR raster, or set matcher.enabled=false")
        out.append(MatcherSample(sar, int(round(r0)), int(round(c0))))
    return out


def train_or_load_matcher(cfg: GeoConfig, view: LocalisationData, queries: Sequence[GeoQuery], out: Path,
                          resume: bool, device: torch.device, progress: bool,
                          write: bool = True) -> tuple[DenseMatcher | None, dict[str, Any]]:
    """Train the dense matcher of ``cfg.matcher`` on ``queries`` (or load the run's, resuming).

    Args:
        cfg: the run's config.
        view: the training area (its ``meta["map"]`` is the optical map).
        queries: the training queries.
        out: the run folder.
        resume: load ``out/matcher/matcher.pt`` when it is there (every rank reads it, as every
            rank reads the trainers' checkpoints, so no rank trains again on resume).
        device: where to train.
        progress: show a progress bar.
        write: save ``out/matcher/matcher.pt`` (False on the ranks that do not write files).

    Returns:
        ``(matcher, info)``: None and a ``matcher`` note when disabled or without a map; else the
        matcher and ``{"matcher": {"steps", "loss", "top1", "queries"}}`` for the bundle's info.
    """
    mc = cfg.matcher
    if not mc.enabled:
        return None, {}
    why = registration_unavailable(view)
    if why is not None:
        return None, {"matcher": f"not trained: {why}"}
    path = out / MATCHER_FILE
    if resume and path.is_file():
        saved = load_checkpoint(path, task=MATCHER_TASK)
        matcher = DenseMatcher(int(saved["channels"]), int(saved["dim"]))
        load_model_state(matcher, saved["model"], str(path))
        return matcher.eval(), {"matcher": dict(saved["stats"])}
    registrar = MapRegistrar(str(view.meta["map"]), "cfog", coarse=1)
    matcher, stats = train_dense_matcher(
        matcher_samples(registrar, queries), registrar.window_image, registrar.shape, steps=mc.steps,
        batch_size=mc.batch_size, lr=mc.lr, channels=mc.channels, dim=mc.dim, margin=mc.margin, seed=cfg.seed,
        device=device, progress=progress)
    stats = {"steps": mc.steps, "queries": len(queries), **{k: round(v, 4) for k, v in stats.items()}}
    if write:
        save_checkpoint({"task": MATCHER_TASK, "channels": matcher.channels, "dim": matcher.dim,
                         "model": matcher.state_dict(), "stats": stats}, path)
    return matcher, {"matcher": stats}
