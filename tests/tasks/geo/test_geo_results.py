"""What a localisation run reports: stage titles, the localisation table and the report's texts."""

from __future__ import annotations

from sarbridge.tasks.geo.results import (
    STAGE_TITLES,
    candidate_caption,
    is_localisation,
    localisation_table,
    query_caption,
    report_table,
)


def test_localisation_table_names_the_reranking_methods() -> None:
    lines = localisation_table({"reranked": {"top1": 2.0}, "coarse": {"top1": 1.5, "queries": 4}, "meta": {}}).splitlines()
    assert lines[0].startswith("| stage | top1 | top5 |") and lines[0].endswith("| succ_200m | queries |")
    assert lines[2].startswith("| coarse retrieval | 1.5 | n/a") and lines[2].endswith("| 4 |")
    assert lines[3].startswith("| + re-ranking (k-reciprocal or GNN) | 2.0 |")  # stage order, not dict order
    assert len(lines) == 4


def test_report_table_orders_success_columns_by_distance() -> None:
    metrics = {"refined": {"top1": 1.0, "succ_100m": 5.0, "succ_50m": 4.0, "succ_7.5m": 1.0, "queries": 3},
               "coarse": {"top1": 2.0, "succ_50m": 3.0}}
    header, rows = report_table(metrics)
    assert header == ["stage", "top1", "top5", "top10", "top20", "mAP", "mean_err_m", "median_err_m",
                      "succ_7.5m", "succ_50m", "succ_100m", "queries"]
    assert [r[0] for r in rows] == [STAGE_TITLES["refined"], STAGE_TITLES["coarse"]]  # metrics order
    assert rows[0][8:] == [1.0, 4.0, 5.0, 3] and rows[1][8:] == [None, 3.0, None, None]


def test_captions_and_detection() -> None:
    assert query_caption({"id": 12, "error_m": 31.6}) == "#12 err 32 m" and query_caption({"id": 12}) == "#12"
    assert candidate_caption(2, {"score": 0.5, "distance_m": 10.4}, {}) == "#2 10 m s=0.500"
    assert candidate_caption(2, {"score": 0.5}, {}) == "#2 s=0.500"
    assert is_localisation({"coarse": {}}) and not is_localisation({"coarse": 1}) and not is_localisation({})
