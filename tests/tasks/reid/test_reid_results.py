"""What a re-identification run reports: the protocol table, results.md and the report's texts."""

from __future__ import annotations

import json
from pathlib import Path

from sarbridge.tasks.reid.results import (
    candidate_caption,
    protocol_table,
    query_caption,
    report_note,
    report_table,
    write_reid_results,
)

METRICS = {
    "all2all": {"mAP": 20.25, "R1": 16.0, "R5": 45.0, "R10": 58.0, "mINP": 10.5, "queries": 31, "cmc": [0.16, 0.3]},
    "opt2sar": {"queries": 0, "note": "empty query or gallery"},
    "sar2opt": {},
    "protocol_source": "derived",
    "meta": {"device": "cpu"},
}


def test_protocol_table_by_hand() -> None:
    assert protocol_table(METRICS) == (
        "| protocol | mAP | R1 | R5 | R10 | mINP | queries |\n|---|---|---|---|---|---|---|\n"
        "| ALL->ALL | 20.2 | 16.0 | 45.0 | 58.0 | 10.5 | 31 |\n"
        "| Optical->SAR | n/a | n/a | n/a | n/a | n/a | 0 |\n")  # empty protocols are left out


def test_write_reid_results(tmp_path: Path) -> None:
    write_reid_results(tmp_path, METRICS, title="run x")
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["cmc"] == {"all2all": [0.16, 0.3]} and "cmc" not in written["all2all"]
    assert (tmp_path / "results.md").read_text() == (
        "# run x\n\n" + protocol_table(METRICS) + "\n"
        "Optical->SAR / SAR->Optical protocols: derived.\n\n"
        "- device: cpu\n\n"
        "Percentages; features L2-normalised, squared Euclidean distance, queries without a gallery match skipped.\n")


def test_report_texts() -> None:
    header, rows = report_table(METRICS)
    assert header == ["protocol", "R1", "R5", "R10", "mAP", "mINP", "queries", "cos match", "cos non-match",
                      "cos gap", "note"]
    na = ["n/a"] * 3  # no similarity measured
    assert rows == [["ALL->ALL", 16.0, 45.0, 58.0, 20.25, 10.5, 31, *na, ""],
                    ["Optical->SAR", None, None, None, None, None, 0, *na, "empty query or gallery"],
                    ["SAR->Optical", None, None, None, None, None, None, *na, ""]]
    sim = {"positive_mean": 0.62345, "negative_mean": 0.2, "gap": 0.42345, "auc": 0.8}
    _, rows = report_table({"all2all": {**METRICS["all2all"], "similarity": sim}})
    assert rows == [["ALL->ALL", 16.0, 45.0, 58.0, 20.25, 10.5, 31, "0.623", "0.200", "0.423", ""]]
    assert report_note(METRICS).startswith("Optical->SAR / SAR->Optical protocols: derived. Percentages;")
    assert report_note({}) == ""
    assert query_caption({"id": 7, "ap": 0.256}) == "id 7 AP 0.26" and query_caption({"id": 7}) == "id 7 (no match)"
    assert candidate_caption(3, {"score": 0.12345}, {"id": 9}) == "#3 id 9 d=0.123"
    assert candidate_caption(1, {"score": None}, {}) == "#1 id None d=n/a"


def test_results_md_lists_the_similarity_gap(tmp_path: Path) -> None:
    sim = {"positive_mean": 0.5, "negative_mean": 0.125, "gap": 0.375}
    write_reid_results(tmp_path, {"all2all": {**METRICS["all2all"], "similarity": sim}, "meta": {}})
    md = (tmp_path / "results.md").read_text()
    assert "| protocol | cos match | cos non-match | cos gap |\n|---|---|---|---|\n| ALL->ALL | 0.500 | 0.125 | 0.375 |" in md
    assert json.loads((tmp_path / "metrics.json").read_text())["all2all"]["similarity"] == sim
