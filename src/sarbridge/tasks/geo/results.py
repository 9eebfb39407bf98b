"""What a localisation run reports: the stage titles, the localisation table and the report's texts.

A localisation evaluation has up to three stages (``coarse`` retrieval, graph-``refined``,
``reranked``); their titles are defined here once and used by ``results.md``, ``rankings.json``
and the HTML report (:mod:`sarbridge.app.report.html`, through the task registry).
"""

from __future__ import annotations

import math
from typing import Any

from sarbridge.viz.tables import markdown_table

#: The ``kind`` that :func:`~sarbridge.tasks.geo.locate.build_geo_index` records in a map index's info.
INDEX_KIND = "geo"
#: The model bundle a finished localisation run folder holds.
RUN_CHECKPOINT = "geo_model.pt"
#: Display titles of the stages, in stage order.
STAGE_TITLES = {"coarse": "coarse retrieval", "refined": "+ graph refinement", "reranked": "+ re-ranking"}
#: What the stage titles add in the results table.
STAGE_DETAILS = {"reranked": " (k-reciprocal or GNN)"}
#: Columns of the localisation table in ``results.md`` and the command summaries.
LOCALISATION_KEYS = ("top1", "top5", "top10", "top20", "mAP", "mean_err_m", "median_err_m",
                     "succ_50m", "succ_100m", "succ_150m", "succ_200m", "queries")
#: Leading columns of the stage table in the HTML report (the ``succ_*`` columns follow).
REPORT_KEYS = ("top1", "top5", "top10", "top20", "mAP", "mean_err_m", "median_err_m")
#: How the report names the task.
REPORT_TITLE = "SAR-to-map localisation (geo)"
#: Y axis of the report's CMC curves.
CMC_YLABEL = "target within top-k (%)"
#: What the captions of the report's ranked lists say.
RANKED_NOTE = ("Captions under candidates: rank, distance of the candidate's centre to the true query "
               "position in metres, similarity.")
#: Extra columns of the report's per-query tables: ``(title, query field)``.
QUERY_COLUMNS = (("error m", "error_m"),)


def localisation_table(metrics: dict[str, Any]) -> str:
    """One row per stage (coarse, refined, re-ranked): top-k accuracy and mAP (percent), error in
    metres (mean, median) and success within 50/100/150/200 m (percent).

    Args:
        metrics: ``stage -> {metric: value}`` (other entries are ignored).

    Returns:
        The Markdown table.
    """
    rows = []
    for key, title in STAGE_TITLES.items():
        m = metrics.get(key)
        if isinstance(m, dict):
            rows.append([title + STAGE_DETAILS.get(key, "")] + [m.get(k, "n/a") for k in LOCALISATION_KEYS])
    return markdown_table(rows, ["stage", *LOCALISATION_KEYS])


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
    keys = [*REPORT_KEYS, *succ, "queries"]
    rows = [[STAGE_TITLES[k], *[v.get(c) for c in keys]] for k, v in stages.items()]
    return ["stage", *keys], rows


def report_note(metrics: dict[str, Any]) -> str:
    """The sentence under the report's metrics table."""
    return ("top-k and mAP: percent of queries whose true patch (largest overlap) is ranked within k; errors in "
            "metres between the estimated and the true query centre; succ_Xm: percent of queries located "
            "within X m.")


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
    "CMC_YLABEL", "INDEX_KIND", "LOCALISATION_KEYS", "QUERY_COLUMNS", "RANKED_NOTE", "REPORT_KEYS", "REPORT_TITLE",
    "RUN_CHECKPOINT", "STAGE_DETAILS", "STAGE_TITLES", "candidate_caption", "is_localisation", "localisation_table",
    "query_caption", "report_note", "report_table",
]
