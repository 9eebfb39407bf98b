"""Markdown tables and the ``metrics.json`` + ``results.md`` pair every run writes.

The tables of a task (the re-identification protocols, the localisation stages) live with the task
(:mod:`sarbridge.tasks.reid.results`, :mod:`sarbridge.tasks.geo.results`); this module only knows
rows, columns and files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from sarbridge.core.utils import atomic_write_json, atomic_write_text


def markdown_table(rows: list[list[Any]], header: list[str]) -> str:
    """A GitHub-flavoured Markdown table; floats shown with one decimal.

    Args:
        rows: the cells of every row (floats are formatted, everything else via ``str``).
        header: the column titles.

    Returns:
        The table, one line per row, ending with a newline.
    """
    def fmt(v: Any) -> str:
        return f"{v:.1f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def split_curves(metrics: dict[str, Any], curve_keys: Iterable[str]) -> dict[str, Any]:
    """``metrics`` with the ``cmc`` list of every entry named in ``curve_keys`` moved to ``metrics["cmc"]``.

    Returns:
        A new dict: entries in ``curve_keys`` lose their ``cmc``; ``"cmc": {name: [floats]}`` is
        added when any entry had one.
    """
    names = set(curve_keys)
    clean: dict[str, Any] = {}
    curves: dict[str, list[float]] = {}
    for k, v in metrics.items():
        if k in names and isinstance(v, dict):
            clean[k] = {kk: vv for kk, vv in v.items() if kk != "cmc"}
            if "cmc" in v:
                curves[k] = [float(x) for x in v["cmc"]]
        else:
            clean[k] = v
    if curves:
        clean["cmc"] = curves
    return clean


def write_results(
    out_dir: str | Path,
    metrics: dict[str, Any],
    title: str,
    table: Callable[[dict[str, Any]], str],
    curve_keys: Iterable[str] = (),
    notes: Sequence[str] = (),
    footer: str = "",
) -> dict[str, Any]:
    """Write ``metrics.json`` (machine) and ``results.md`` (human) atomically.

    ``results.md`` is the title, ``table(metrics)``, the ``notes`` (one paragraph each), the
    ``meta`` entries as a list and the ``footer``.

    Args:
        out_dir: run folder.
        metrics: the results; ``meta`` (a dict) holds the facts of the run.
        title: the page title.
        table: the task's metrics table (Markdown) of the written metrics.
        curve_keys: entries whose ``cmc`` curve moves to ``metrics.json``'s ``cmc`` (:func:`split_curves`).
        notes: paragraphs after the table.
        footer: the last paragraph.

    Returns:
        What was written to ``metrics.json``.
    """
    out = Path(out_dir)
    clean = split_curves(metrics, curve_keys)
    atomic_write_json(out / "metrics.json", clean)
    md = [f"# {title}", "", table(clean), *notes]
    meta = clean.get("meta") or {}
    if meta:
        md.append("\n".join(f"- {k}: {v}" for k, v in meta.items()) + "\n")
    if footer:
        md.append(footer)
    atomic_write_text(out / "results.md", "\n".join(md))
    return clean


__all__ = ["markdown_table", "split_curves", "write_results"]
