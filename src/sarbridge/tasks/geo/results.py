"""What a localisation run reports: the stage titles, the localisation table and the report's texts.

A localisation evaluation has up to four stages (``coarse`` retrieval, graph-``refined``,
``reranked``, metre-level ``registered``); their titles are defined here once and used by ``results.md``, ``rankings.json``
and the HTML report (:mod:`sarbridge.app.report.html`, through the task registry).
"""

from __future__ import annotations

import math
from typing import Any

from sarbridge.tasks.geo.stages import RADIUS_QUANTILE, stage_verdicts
from sarbridge.viz.tables import markdown_table

#: The ``kind`` that :func:`~sarbridge.tasks.geo.map_index.build_geo_index` records in a map index's info.
INDEX_KIND = "geo"
#: The model bundle a finished localisation run folder holds.
RUN_CHECKPOINT = "geo_model.pt"
#: Display titles of the stages, in stage order.
STAGE_TITLES = {"coarse": "coarse retrieval", "refined": "+ graph refinement", "reranked": "+ re-ranking",
                "registered": "+ registration"}
#: What the stage titles add in the results table.
STAGE_DETAILS = {"reranked": " (k-reciprocal or GNN)", "registered": " (metre-level, in the map)"}
#: Columns of the localisation table in ``results.md`` and the command summaries.
LOCALISATION_KEYS = ("top1", "top5", "top10", "top20", "mAP", "mean_err_m", "median_err_m",
                     "succ_50m", "succ_100m", "succ_150m", "succ_200m", "queries")
#: Metre-level columns the table adds (after ``median_err_m``) when a stage has them.
FINE_KEYS = ("p90_err_m", "succ_5m", "succ_10m", "succ_25m")
#: Leading columns of the stage table in the HTML report (the ``succ_*`` columns follow).
REPORT_KEYS = ("top1", "top5", "top10", "top20", "mAP", "mean_err_m", "median_err_m")
#: How the report names the task.
REPORT_TITLE = "SAR-to-map localisation (geo)"
#: Y axis of the report's CMC curves.
CMC_YLABEL = "target within top-k (%)"
#: What the captions of the report's ranked lists say.
RANKED_NOTE = ("Captions under candidates: rank, distance of the candidate's centre to the true query "
               "position in metres, similarity.")
#: The registered stage's matching-surface figure in a run folder (written by the evaluation).
REGISTRATION_FIGURE = "registration.png"
#: Run-folder figures the report shows: ``(file, caption)``.
REPORT_FIGURES = ((REGISTRATION_FIGURE,
                   "Registration: matching surfaces of sampled queries and of the worst ones (largest registered "
                   "error). Left: the SAR query; middle: the optical search window of the best candidate (green: "
                   "true footprint, blue: found); right: the matching surface (brighter = better match)."),)
#: Extra columns of the report's per-query tables: ``(title, query field)``.
QUERY_COLUMNS = (("error m", "error_m"),)


def localisation_table(metrics: dict[str, Any]) -> str:
    """One row per stage (coarse, refined, re-ranked, registered): top-k accuracy and mAP (percent),
    error in metres (mean, median; 90th percentile when known) and success within 50/100/150/200 m
    (and 5/10/25 m when known), in percent.

    Args:
        metrics: ``stage -> {metric: value}`` (other entries are ignored).

    Returns:
        The Markdown table.
    """
    stages = [(key, title, metrics[key]) for key, title in STAGE_TITLES.items() if isinstance(metrics.get(key), dict)]
    fine = [k for k in FINE_KEYS if any(k in m for _, _, m in stages)]
    at = LOCALISATION_KEYS.index("median_err_m") + 1
    keys = [*LOCALISATION_KEYS[:at], *fine, *LOCALISATION_KEYS[at:]]
    rows = [[title + STAGE_DETAILS.get(key, "")] + [m.get(k, "n/a") for k in keys] for key, title, m in stages]
    return markdown_table(rows, ["stage", *keys])


def stage_lines(metrics: dict[str, Any]) -> list[str]:
    """Whether each later stage helped over the one it builds on, and which stages ``geo locate``
    uses (the validation choice in ``meta.stage_choice``), as sentences for ``results.md`` and the report."""
    lines = stage_verdicts(metrics, STAGE_TITLES)
    meta = metrics.get("meta") if isinstance(metrics.get("meta"), dict) else {}
    choice = (meta or {}).get("stage_choice")
    if isinstance(choice, dict):
        used = STAGE_TITLES.get(str(choice.get("retrieval")), str(choice.get("retrieval")))
        reg = (f" + registration (confidence threshold {choice.get('threshold')})" if choice.get("register")
               else ", without registration")
        lines.append(f"geo locate uses {used}{reg}: chosen on the {choice.get('split', 'val')} split "
                     f"({choice.get('queries', '?')} queries): {choice.get('reason') or 'no later stage to compare'}.")
    elif "coarse" in metrics:
        lines.append("No validation choice is recorded for this model (trained before it was made): geo locate "
                     "uses the graph refinement when the bundle has one.")
    registered = metrics.get("registered")
    if isinstance(registered, dict) and "radius_coverage" in registered:
        lines.append(f"The error radius geo locate gives a kept registration (the {100 * RADIUS_QUANTILE:.0f}th percentile "
                     "of the errors of the validation registrations nearest in confidence) has a median of "
                     f"{registered['median_radius_m']:.1f} m here and held for {registered['radius_coverage']:.1f} % of the kept "
                     f"registrations (calibrated for {100 * RADIUS_QUANTILE:.0f} %).")
    return lines


def is_localisation(metrics: dict[str, Any]) -> bool:
    """Whether ``metrics.json`` content is a localisation run's (it has a ``coarse`` stage)."""
    return isinstance(metrics.get("coarse"), dict)


def _succ_order(key: str) -> float:
    value = key[5:-1]
    return float(value) if value.replace(".", "", 1).isdigit() else math.inf


def report_table(metrics: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """``(header, rows)`` of the report's metrics table: one row per stage, every ``succ_*`` column."""
    stages = {k: v for k, v in metrics.items() if k in STAGE_TITLES and isinstance(v, dict)}
    succ = sorted({k for v in stages.values() for k in v if k.startswith("succ_")}, key=_succ_order)
    p90 = ["p90_err_m"] if any("p90_err_m" in v for v in stages.values()) else []
    keys = [*REPORT_KEYS, *p90, *succ, "queries"]
    rows = [[STAGE_TITLES[k], *[v.get(c) for c in keys]] for k, v in stages.items()]
    return ["stage", *keys], rows


def report_note(metrics: dict[str, Any]) -> str:
    """The sentences under the report's metrics table: what the columns mean, and whether each stage helped."""
    return " ".join(["top-k and mAP: percent of queries whose true patch (largest overlap) is ranked within k; errors "
                     "in metres between the estimated and the true query centre; succ_Xm: percent of queries "
                     "located within X m.", *stage_lines(metrics)])


def query_caption(query: dict[str, Any]) -> str:
    """Caption of a query in the report's ranked lists: its index and localisation error."""
    err = query.get("error_m")
    return f"#{query.get('id')} err {err:.0f} m" if err is not None else f"#{query.get('id')}"


def candidate_caption(rank: int, top: dict[str, Any], item: dict[str, Any]) -> str:
    """Caption of the ``rank``-th (1-based) candidate: rank, distance to the true position, similarity."""
    s = top.get("score")
    s_txt = f"{s:.3f}" if isinstance(s, (int, float)) else "n/a"
    d = top.get("distance_m")
    return f"#{rank} {d:.0f} m s={s_txt}" if d is not None else f"#{rank} s={s_txt}"


__all__ = [
    "CMC_YLABEL", "FINE_KEYS", "INDEX_KIND", "LOCALISATION_KEYS", "QUERY_COLUMNS", "REGISTRATION_FIGURE",
    "REPORT_FIGURES", "RANKED_NOTE", "REPORT_KEYS", "REPORT_TITLE",
    "RUN_CHECKPOINT", "STAGE_DETAILS", "STAGE_TITLES", "candidate_caption", "is_localisation", "localisation_table",
    "query_caption", "report_note", "report_table", "stage_lines",
]
