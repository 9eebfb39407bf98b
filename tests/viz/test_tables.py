"""Markdown tables and the metrics.json + results.md writer."""

from __future__ import annotations

import json
from pathlib import Path

from sarbridge.viz.tables import markdown_table, split_curves, write_results


def test_markdown_table_formats_floats_with_one_decimal() -> None:
    text = markdown_table([["a", 1.25, 3], ["b", None, "x"]], ["name", "v", "n"])
    assert text == "| name | v | n |\n|---|---|---|\n| a | 1.2 | 3 |\n| b | None | x |\n"


def test_split_curves_moves_only_the_named_entries() -> None:
    metrics = {"p": {"mAP": 1.0, "cmc": [0.5, 1]}, "q": {"cmc": [0.1]}, "meta": {"x": 1}}
    out = split_curves(metrics, ["p"])
    assert out == {"p": {"mAP": 1.0}, "q": {"cmc": [0.1]}, "meta": {"x": 1}, "cmc": {"p": [0.5, 1.0]}}
    assert metrics["p"]["cmc"] == [0.5, 1]  # the input is left alone
    assert "cmc" not in split_curves({"p": {"mAP": 1.0}}, ["p"])


def test_write_results_pages_in_order(tmp_path: Path) -> None:
    metrics = {"p": {"mAP": 50.0, "cmc": [1.0]}, "meta": {"device": "cpu", "epoch": 3}}
    seen = []

    def table(m: dict) -> str:
        seen.append(m)
        return "TABLE\n"

    written = write_results(tmp_path, metrics, "T", table, curve_keys=["p"], notes=["note one\n"], footer="end\n")
    assert seen == [written] and written["cmc"] == {"p": [1.0]}
    assert json.loads((tmp_path / "metrics.json").read_text()) == written
    assert (tmp_path / "results.md").read_text() == "# T\n\nTABLE\n\nnote one\n\n- device: cpu\n- epoch: 3\n\nend\n"
