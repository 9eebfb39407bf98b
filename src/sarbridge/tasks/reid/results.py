"""What a re-identification run reports: the protocol table, ``results.md`` and the report's texts.

The protocols and their titles are defined in :mod:`sarbridge.data.splits`; the HTML report
(:mod:`sarbridge.app.report.html`) takes the texts and captions below through the task registry.
Pretraining reports its held-out pair retrieval with the same table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sarbridge.data.splits import PROTOCOL_TITLES
from sarbridge.viz.tables import markdown_table, write_results

#: The task name (checkpoints, ``rankings.json``, gallery indexes).
TASK = "reid"
#: The checkpoint a finished re-identification run folder holds.
RUN_CHECKPOINT = "best.pt"
#: Columns of the protocol table in ``results.md`` and the command summaries.
METRIC_KEYS = ("mAP", "R1", "R5", "R10", "mINP", "queries")
#: Columns of the protocol table in the HTML report.
REPORT_KEYS = ("R1", "R5", "R10", "mAP", "mINP", "queries")
#: Entries of ``metrics.json`` besides the protocols that belong to the results.
RESULT_KEYS = ("protocol_source",)
#: How the report names the task.
REPORT_TITLE = "ship re-identification (reid)"
#: Y axis of the report's CMC curves.
CMC_YLABEL = "matching rate (%)"
#: Columns of the report's metrics table from ``similarity`` (column -> key), see
#: :func:`sarbridge.retrieval.similarity.similarity_gap`.
SIMILARITY_KEYS = {"cos match": "positive_mean", "cos non-match": "negative_mean", "cos gap": "gap"}
#: What the captions of the report's ranked lists say.
RANKED_NOTE = ("Query caption: identity and average precision; candidate caption: rank, identity, distance "
               "d = 2 - 2 cos (0 = same direction, 2 = orthogonal).")
_SIMILARITY_NOTE = ("cos match / cos non-match: mean cosine similarity of the (centred, L2-normalised) features "
                    "of query/gallery pairs of the same / of different identities, before any re-ranking; "
                    "cos gap: their difference (0 = scores do not tell a match from a non-match).")
_FOOTER = "Percentages; features L2-normalised, squared Euclidean distance, queries without a gallery match skipped.\n"


def protocol_table(metrics: dict[str, Any]) -> str:
    """One row per protocol with mAP/R1/R5/R10/mINP (percent) and the number of queries.

    Args:
        metrics: ``protocol -> {metric: value}`` (other entries are ignored).

    Returns:
        The Markdown table.
    """
    rows = []
    for key, title in PROTOCOL_TITLES.items():
        m = metrics.get(key)
        if not m:
            continue
        rows.append([title] + [m.get(k, "n/a") for k in METRIC_KEYS])
    return markdown_table(rows, ["protocol", *METRIC_KEYS])


def write_reid_results(out_dir: str | Path, metrics: dict[str, Any], title: str = "sarbridge results") -> None:
    """Write ``metrics.json`` (CMC curves gathered under ``cmc``) and ``results.md`` atomically.

    Args:
        out_dir: run folder.
        metrics: ``protocol -> {metric: value, "cmc": [...]}`` plus ``protocol_source`` and ``meta``.
        title: the title of ``results.md``.
    """
    notes = []
    if "protocol_source" in metrics:
        notes.append(f"Optical->SAR / SAR->Optical protocols: {metrics['protocol_source']}.\n")
    sims = [[title, *similarity_cells(m)] for key, title in PROTOCOL_TITLES.items()
            if isinstance(m := metrics.get(key), dict) and isinstance(m.get("similarity"), dict)]
    if sims:
        notes.append(markdown_table(sims, ["protocol", *SIMILARITY_KEYS]) + "\n" + _SIMILARITY_NOTE + "\n")
    write_results(out_dir, metrics, title, protocol_table, curve_keys=PROTOCOL_TITLES, notes=notes, footer=_FOOTER)


def _cos(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "n/a"


def similarity_cells(protocol: dict[str, Any]) -> list[str]:
    """A protocol's :data:`SIMILARITY_KEYS` cells (three decimals; ``n/a`` when not measured)."""
    sim = protocol.get("similarity")
    sim = sim if isinstance(sim, dict) else {}
    return [_cos(sim.get(k)) for k in SIMILARITY_KEYS.values()]


def report_table(metrics: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """``(header, rows)`` of the report's metrics table: one row per protocol with the
    matching / non-matching cosine similarity and their gap, and its note."""
    rows = []
    for k, title in PROTOCOL_TITLES.items():
        v = metrics.get(k)
        if isinstance(v, dict):
            rows.append([title, *[v.get(c) for c in REPORT_KEYS], *similarity_cells(v), v.get("note", "")])
    return ["protocol", *REPORT_KEYS, *SIMILARITY_KEYS, "note"], rows


def report_note(metrics: dict[str, Any]) -> str:
    """The sentence under the report's metrics table (empty without a protocol source)."""
    if "protocol_source" not in metrics:
        return ""
    return (f"Optical->SAR / SAR->Optical protocols: {metrics['protocol_source']}. "
            "Percentages; CMC (R1/R5/R10), mAP and mINP over queries with a gallery match. "
            f"{_SIMILARITY_NOTE}")


def query_caption(query: dict[str, Any]) -> str:
    """Caption of a query in the report's ranked lists: identity and AP."""
    ap = query.get("ap")
    return f"id {query.get('id')} AP {ap:.2f}" if ap is not None else f"id {query.get('id')} (no match)"


def candidate_caption(rank: int, top: dict[str, Any], item: dict[str, Any]) -> str:
    """Caption of the ``rank``-th (1-based) gallery item: rank, identity, distance."""
    s = top.get("score")
    s_txt = f"{s:.3f}" if isinstance(s, (int, float)) else "n/a"
    return f"#{rank} id {item.get('id')} d={s_txt}"


__all__ = [
    "CMC_YLABEL", "METRIC_KEYS", "RANKED_NOTE", "REPORT_KEYS", "REPORT_TITLE", "RESULT_KEYS", "RUN_CHECKPOINT",
    "SIMILARITY_KEYS", "TASK", "candidate_caption", "protocol_table", "query_caption", "report_note", "report_table",
    "similarity_cells", "write_reid_results",
]
