"""Markdown tables and the ``metrics.json`` + ``results.md`` pair every run writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sarbridge.core.utils import atomic_write_json, atomic_write_text

PROTOCOL_TITLES = {"all2all": "ALL->ALL", "opt2sar": "Optical->SAR", "sar2opt": "SAR->Optical"}
METRIC_KEYS = ("mAP", "R1", "R5", "R10", "mINP", "queries")


def markdown_table(rows: list[list[Any]], header: list[str]) -> str:
    """A GitHub-flavoured Markdown table; floats shown with one decimal."""
    def fmt(v: Any) -> str:
        return f"{v:.1f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def protocol_table(metrics: dict[str, Any]) -> str:
    """One row per protocol with mAP/R1/R5/R10/mINP (percent) and the number of queries."""
    rows = []
    for key, title in PROTOCOL_TITLES.items():
        m = metrics.get(key)
        if not m:
            continue
        rows.append([title] + [m.get(k, "n/a") for k in METRIC_KEYS])
    return markdown_table(rows, ["protocol", *METRIC_KEYS])


def write_results(out_dir: str | Path, metrics: dict[str, Any], title: str = "sarbridge results") -> None:
    """Write ``metrics.json`` (machine) and ``results.md`` (human) atomically."""
    out = Path(out_dir)
    clean: dict[str, Any] = {}
    curves: dict[str, list[float]] = {}
    for k, v in metrics.items():
        if k in PROTOCOL_TITLES and isinstance(v, dict):
            clean[k] = {kk: vv for kk, vv in v.items() if kk != "cmc"}
            if "cmc" in v:
                curves[k] = [float(x) for x in v["cmc"]]
        else:
            clean[k] = v
    if curves:
        clean["cmc"] = curves
    atomic_write_json(out / "metrics.json", clean)
    md = [f"# {title}", "", protocol_table(clean)]
    if "protocol_source" in clean:
        md.append(f"Optical->SAR / SAR->Optical protocols: {clean['protocol_source']}.\n")
    meta = clean.get("meta") or {}
    if meta:
        md.append("\n".join(f"- {k}: {v}" for k, v in meta.items()) + "\n")
    md.append("Percentages; features L2-normalised, squared Euclidean distance, queries without a gallery match skipped.\n")
    atomic_write_text(out / "results.md", "\n".join(md))


LOCALISATION_KEYS = ("top1", "top5", "top10", "top20", "mAP", "mean_err_m", "median_err_m",
                     "succ_50m", "succ_100m", "succ_150m", "succ_200m", "queries")
LOCALISATION_TITLES = {"coarse": "coarse retrieval", "refined": "+ graph refinement", "reranked": "+ re-ranking (k-reciprocal or GNN)"}


def localisation_table(metrics: dict[str, Any]) -> str:
    """One row per stage (coarse, refined, re-ranked): top-k accuracy and mAP (percent), error in
    metres (mean, median) and success within 50/100/150/200 m (percent)."""
    rows = []
    for key, title in LOCALISATION_TITLES.items():
        m = metrics.get(key)
        if isinstance(m, dict):
            rows.append([title] + [m.get(k, "n/a") for k in LOCALISATION_KEYS])
    return markdown_table(rows, ["stage", *LOCALISATION_KEYS])
