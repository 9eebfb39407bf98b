"""The rankings.json (+ thumbs/) of a localisation evaluation: statuses, distances, APs, CMC, thumbnails."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sarbridge.tasks.geo.evaluate import RankedResult, metrics_of
from sarbridge.tasks.geo.patches import GeoQuery, GeoReference, LocalisationData
from sarbridge.tasks.geo.rankings import (
    geo_query_summary,
    geo_status,
    write_geo_rankings,
)


def test_geo_statuses_on_hand_built_cases() -> None:
    assert geo_status(3, 3, (4, 5)) == "match"
    assert geo_status(5, 3, (4, 5)) == "neighbour"
    assert geo_status(9, 3, (4, 5)) == "wrong"


def test_geo_query_summary_by_hand() -> None:
    ranked = np.array([[4, 2, 7], [1, 0, 3], [5, 6, 8]])
    targets = np.array([2, 1, 9])  # ranks 2, 1 and not listed
    q_xy = np.zeros((3, 2))
    pred = np.array([[3.0, 4.0], [0.0, 0.0], [-6.0, 8.0]])
    ap, rank, err = geo_query_summary(ranked, targets, q_xy, pred)
    assert ap.tolist() == [0.5, 1.0, 0.0] and rank.tolist() == [2, 1, 0] and rank.dtype == np.int64
    assert err.tolist() == pytest.approx([5.0, 0.0, 10.0])


def _geo_case() -> tuple[LocalisationData, RankedResult]:
    """Four references on a line 10 m apart; two queries; ranking lists known by hand."""
    def patch(v: int):
        return lambda: np.full((8, 8, 3), v, dtype=np.uint8)

    def broken():
        raise OSError("raster gone")

    refs = [GeoReference(i, 10.0 * i, 0.0, 0.0, 0.0, (10.0 * i - 5, -5, 10.0 * i + 5, 5), f"map.tif[{i}]",
                         patch(40 * i) if i != 3 else broken) for i in range(4)]
    queries = [
        GeoQuery(0, 2.0, 0.0, 0.0, 0.0, target=0, near=(1,), split="test", setting="arbitrary", source="sar[0]",
                 load=patch(200)),
        GeoQuery(1, 21.0, 0.0, 0.0, 0.0, target=2, near=(1, 3), split="test", setting="arbitrary", source="sar[1]",
                 load=patch(100)),
    ]
    view = LocalisationData(refs, queries, "EPSG:32631", "line")
    ranked = np.array([[1, 0, 2, 3], [3, 0, 1, 2]])
    scores = np.array([[0.9, 0.8, 0.5, 0.1], [0.7, 0.6, 0.5, 0.4]])
    return view, RankedResult(queries, ranked, scores, view.reference_xy()[ranked[:, 0]])


def test_geo_rankings_statuses_distances_ap_and_thumbnails(tmp_path: Path) -> None:
    view, res = _geo_case()
    write_geo_rankings(tmp_path, {"coarse": res}, view)
    data = json.loads((tmp_path / "rankings.json").read_text())
    assert data["task"] == "geo" and data["score"]["higher_is_better"] is True
    p = data["protocols"]["coarse"]
    q0, q1 = p["queries"]
    assert [t["status"] for t in q0["top"]] == ["neighbour", "match", "wrong", "wrong"]
    assert [t["status"] for t in q1["top"]] == ["neighbour", "wrong", "neighbour", "match"]
    assert [t["distance_m"] for t in q0["top"]] == pytest.approx([8.0, 2.0, 18.0, 28.0])
    assert [t["score"] for t in q1["top"]] == pytest.approx([0.7, 0.6, 0.5, 0.4])
    assert (q0["first_match_rank"], q1["first_match_rank"]) == (2, 4)
    assert (q0["ap"], q1["ap"]) == pytest.approx((0.5, 0.25))
    assert np.mean([q0["ap"], q1["ap"]]) * 100 == pytest.approx(metrics_of(res, view)["mAP"])
    assert (q0["error_m"], q1["error_m"]) == pytest.approx((8.0, 9.0))  # top-1 centre vs. true centre
    assert p["cmc"] == pytest.approx([0.0, 0.5, 0.5, 1.0])
    # thumbnails: saved for every shown image; an unreadable reference gets none
    assert (tmp_path / q0["thumb"]).is_file()
    items = {it["id"]: it for it in p["items"]}
    assert items[3]["thumb"] is None and (tmp_path / items[0]["thumb"]).is_file()


