"""The ``registered`` stage of ``geo evaluate`` / ``geo train``: registration after retrieval, its
confidence threshold (configured, calibrated on validation, or the default) and its figure.

:func:`add_registered_stage` registers every query around the top ``eval.register.top_k`` cells of
the retrieval stage validation chose (:mod:`sarbridge.tasks.geo.stages`), adds ``registered`` to the
metrics and results, and records how (``meta.registration``). :func:`write_registration_figure`
draws the matching surfaces of sampled queries and of the worst ones (``registration.png``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarbridge.tasks.geo.config import RegisterConfig
from sarbridge.tasks.geo.evaluate import RankedResult, metrics_of, registered_result
from sarbridge.tasks.geo.patches import GeoQuery, LocalisationData
from sarbridge.tasks.geo.register.evaluation import (
    MapRegistrar,
    QueryRegistrations,
    query_db,
    registration_unavailable,
)
from sarbridge.tasks.geo.register.stage import DEFAULT_THRESHOLD
from sarbridge.tasks.geo.stages import calibrate_threshold, calibrated_radius, choose_stages, helps, radius_calibration
from sarbridge.viz.heatmaps import SurfaceRow, matching_surface_figure

__all__ = ["add_registered_stage", "retrieval_base", "write_registration_figure"]


def retrieval_base(results: dict[str, RankedResult], choice: dict[str, Any] | None) -> str:
    """The retrieval stage registration starts from: the validation choice, else ``refined`` when there
    is one (what ``geo locate`` did before choices were recorded), else ``coarse``."""
    if choice and choice.get("retrieval") in results:
        return str(choice["retrieval"])
    return "refined" if "refined" in results else "coarse"


def _stage_metrics(base: RankedResult, regs: QueryRegistrations, view: LocalisationData, threshold: float,
                   rerank: bool) -> tuple[RankedResult, dict[str, Any]]:
    footprints = np.array([r.footprint for r in view.references], dtype=np.float64)
    res = registered_result(base, regs.xy, regs.confidence, regs.costs, threshold, rerank, footprints)
    m = metrics_of(res, view)
    m["kept"] = float(np.mean(res.extra["registered"]) * 100.0)
    return res, m


def add_registered_stage(metrics: dict[str, Any], results: dict[str, RankedResult], view: LocalisationData,
                         queries: Sequence[GeoQuery], rcfg: RegisterConfig, device: torch.device,
                         encoder: Any, spec: Any, choice: dict[str, Any] | None, choose: bool = False,
                         progress: bool = False, matcher: Any = None) -> tuple[QueryRegistrations, MapRegistrar] | None:
    """Add the ``registered`` stage (and, with ``choose``, the validation choice) to ``metrics``/``results``.

    Args:
        metrics: ``stage -> metrics`` so far (``meta`` is updated: ``register_base``,
            ``registration``, ``stage_choice``).
        results: ``stage -> RankedResult`` so far.
        view: the references and the map the queries were cut from.
        queries: the evaluated queries.
        rcfg: ``eval.register``.
        device: where to register.
        encoder: the trained encoder (``method: features``).
        spec: its preprocessing.
        choice: the bundle's recorded validation choice, if any.
        choose: these are validation queries: choose the retrieval stage, calibrate the threshold
            (unless ``rcfg.threshold`` is set) and record the choice in ``meta.stage_choice``.
        progress: show a progress bar.
        matcher: the bundle's dense matcher (``method: learned``).

    Returns:
        ``(registrations, registrar)`` for the figure, or None when the stage was not computed
        (disabled, or data without a map: ``meta.registration`` says why).
    """
    meta = metrics.setdefault("meta", {})
    if choose:
        refined = metrics.get("refined")
        base = "refined" if isinstance(refined, dict) and helps(metrics["coarse"], refined) else "coarse"
    else:
        base = retrieval_base(results, choice)
    why = "eval.register.enabled is false" if not rcfg.enabled else registration_unavailable(view)
    if why is not None:
        meta["registration"] = f"not computed: {why}"
        if choose:
            meta["stage_choice"] = choose_stages(metrics)
        elif choice:
            meta["stage_choice"] = choice
        return None
    registrar = MapRegistrar(str(view.meta["map"]), rcfg.method, rcfg.margin, rcfg.coarse, device, encoder, spec,
                             matcher)
    start = time.perf_counter()
    regs = registrar.register_queries(list(queries), view.references, results[base].ranked, rcfg.top_k, progress)
    per_query = (time.perf_counter() - start) / max(1, len(queries))
    table: list[dict[str, Any]] = []
    if rcfg.threshold is not None:
        threshold, source = float(rcfg.threshold), "eval.register.threshold"
    elif choose:
        threshold, table = calibrate_threshold(lambda t: _stage_metrics(results[base], regs, view, t, rcfg.rerank)[1],
                                               metrics[base])
        source = "calibrated on these validation queries (lowest median error with top-1 not lower)"
    elif choice and choice.get("threshold") is not None:
        threshold, source = float(choice["threshold"]), f"validation choice ({choice.get('split', 'val')} split)"
    else:
        threshold, source = DEFAULT_THRESHOLD, "default (no validation choice recorded)"
    res, m = _stage_metrics(results[base], regs, view, threshold, rcfg.rerank)
    other = _stage_metrics(results[base], regs, view, threshold, not rcfg.rerank)[1]
    kept = np.asarray(res.extra["registered"], dtype=bool)
    err = np.linalg.norm(res.pred_xy - view.query_xy(res.queries), axis=1)
    calibration = radius_calibration(regs.confidence[kept], err[kept]) if choose else (choice or {}).get("radius")
    if calibration and kept.any():  # how often the error radius holds (on validation: by construction ~68 %)
        gsd = float(max(registrar.raster.gsd))  # as geo locate: never less than a map pixel
        radii = np.array([calibrated_radius(calibration, float(c), floor=gsd) or gsd for c in regs.confidence[kept]])
        m["radius_coverage"] = float(np.mean(err[kept] <= radii) * 100.0)
        m["median_radius_m"] = float(np.median(radii))
    m["top1_base"] = metrics[base]["top1"]
    m["top1_reordered"] = other["top1"] if not rcfg.rerank else m["top1"]
    results["registered"], metrics["registered"] = res, m
    meta["register_base"] = base
    meta["registration"] = {"method": rcfg.method, "candidates": regs.top_k, "margin_px": rcfg.margin,
                            "coarse": rcfg.coarse, "seconds_per_query": round(per_query, 4),
                            "threshold": threshold if np.isfinite(threshold) else None,
                            "threshold_source": source, "rerank": rcfg.rerank,
                            "reorder_helps_top1": bool(m["top1_reordered"] > m["top1_base"]),
                            **({"threshold_table": table} if table else {})}
    if choose:
        meta["stage_choice"] = {**choose_stages(metrics, threshold), "radius": calibration}
    elif choice:
        meta["stage_choice"] = choice
    return regs, registrar


def write_registration_figure(path: Path, result: RankedResult, regs: QueryRegistrations, registrar: MapRegistrar,
                              view: LocalisationData, samples: int = 3, worst: int = 3, seed: int = 0) -> Path | None:
    """``registration.png``: matching surfaces of ``samples`` random queries and the ``worst`` ones
    (largest registered error), with the true and the found footprint in the search window."""
    n = len(result.queries)
    if n == 0:
        return None
    err = np.linalg.norm(result.pred_xy - view.query_xy(result.queries), axis=1)
    bad = [int(i) for i in np.argsort(-err)[:worst]]
    rng = np.random.default_rng(seed)
    picks = [int(i) for i in rng.permutation(n) if int(i) not in bad][:samples] + bad
    rows = []
    for i in picks:
        q = result.queries[i]
        box = regs.windows[i]
        r0, c0, _, _ = registrar.footprint_box(q.footprint)
        kept = bool(result.extra.get("registered", np.ones(n, bool))[i])
        rows.append(SurfaceRow(
            query=query_db(np.asarray(q.load())), window=registrar.window_image(box), surface=regs.surfaces[i],
            found=(float(regs.topleft[i, 0]) - box[0], float(regs.topleft[i, 1]) - box[1]),
            true=(r0 - box[0], c0 - box[1]),
            caption=(f"query {q.index}{' (worst)' if i in bad else ''}\nerr {err[i]:.1f} m, conf "
                     f"{regs.confidence[i]:.3f}{'' if kept else ' (kept retrieval)'}")))
    return matching_surface_figure(rows, path, title=f"registration ({regs.method}): sampled and worst queries")

