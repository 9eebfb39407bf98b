"""Per-query rankings (rankings.json): exact against a naive per-query reference, statuses, selection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sarbridge.data.records import Sample
from sarbridge.tasks.reid.evaluate import ReIDEvaluator, evaluate_protocols, evaluate_protocols_with_rankings
from sarbridge.tasks.geo.evaluate import RankedResult, metrics_of
from sarbridge.tasks.geo.patches import GeoQuery, GeoReference, LocalisationData
from sarbridge.retrieval.rankings import (
    cmc_from_ranks,
    geo_status,
    load_rankings,
    rank_lists,
    reid_status,
    select_queries,
    worst_order,
    write_geo_rankings,
    write_reid_rankings,
)
from sarbridge.retrieval.distance import pairwise_distance
from sarbridge.retrieval.metrics import evaluate


def naive(dist, qp, gp, qm=None, gm=None, exclude=False, k=10):
    """Per query: stable sort by hand, drop removed items, list top-k / first match / AP."""
    out = []
    for i in range(dist.shape[0]):
        order = sorted(range(dist.shape[1]), key=lambda j: (dist[i, j], j))
        if exclude:
            order = [j for j in order if gm[j] != qm[i]]
        hits = [r + 1 for r, j in enumerate(order) if gp[j] == qp[i] and qp[i] != -1]
        ap = float(np.mean([(n + 1) / r for n, r in enumerate(hits)])) if hits else None
        out.append((order[:k], hits[0] if hits else 0, ap))
    return out


@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("chunk_pairs", [7, 2**22])
def test_rank_lists_equal_naive_reference_with_ties(exclude: bool, chunk_pairs: int) -> None:
    rng = np.random.default_rng(1)
    q, g = rng.normal(size=(23, 6)), rng.normal(size=(41, 6))
    dist = np.round(pairwise_distance(q, g), 1)  # coarse rounding -> many ties, broken by gallery index
    qp, gp = rng.integers(-1, 6, 23), rng.integers(-1, 6, 41)
    qm, gm = rng.integers(0, 2, 23), rng.integers(0, 2, 41)
    got = rank_lists(dist, qp, gp, qm, gm, exclude_same_modality=exclude, top_k=10, chunk_pairs=chunk_pairs)
    ref = naive(dist, qp, gp, qm, gm, exclude)
    for i, (top, first, _) in enumerate(ref):
        listed = [int(j) for j in got.top_index[i] if j >= 0]
        assert listed == top, i
        assert got.first_match_rank[i] == first, i
        assert np.allclose(got.top_score[i, :len(top)], dist[i, top])
        assert np.isnan(got.top_score[i, len(top):]).all()


def test_rank_lists_shorter_gallery_than_k_is_padded() -> None:
    dist = np.array([[0.3, 0.1, 0.2]])
    got = rank_lists(dist, [1], [2, 1, 1], top_k=5)
    assert got.top_index.tolist() == [[1, 2, 0, -1, -1]]
    assert got.first_match_rank.tolist() == [1]


def test_evaluator_rankings_equal_naive_and_metrics_per_query() -> None:
    rng = np.random.default_rng(7)
    q, g = rng.normal(size=(12, 8)).astype(np.float32), rng.normal(size=(30, 8)).astype(np.float32)
    qp, gp = rng.integers(0, 5, 12), rng.integers(-1, 5, 30)
    qp[0] = 99  # a query without any gallery match: skipped by the metrics
    qm, gm = rng.integers(0, 2, 12), rng.integers(0, 2, 30)
    ev = ReIDEvaluator(num_query=12, max_rank=20)
    ev.process(torch.from_numpy(q), qp, qm)
    ev.process(torch.from_numpy(g), gp, gm)
    summary, ranks = ev.evaluate_with_rankings(top_k=10)
    assert summary == ev.evaluate()
    dist = pairwise_distance(q, g)
    ref = evaluate(dist, qp, gp, max_rank=20)
    per_query_ap = np.full(12, np.nan)
    per_query_ap[ref["valid_queries"]] = ref["all_AP"]
    for i, (top, first, ap) in enumerate(naive(dist, qp, gp)):
        assert ranks.top_index[i].tolist() == top
        assert ranks.first_match_rank[i] == first
        if ap is None:
            assert np.isnan(ranks.ap[i]) and np.isnan(per_query_ap[i])
        else:
            assert ranks.ap[i] == pytest.approx(ap) == pytest.approx(per_query_ap[i])
    assert "sqeuclidean" in ranks.description
    # the CMC curve agrees with the first-match ranks of the scored queries
    scored = ranks.first_match_rank[ranks.first_match_rank > 0]
    assert summary["cmc"] == pytest.approx(cmc_from_ranks(scored, 20))


def test_protocol_rankings_keep_metrics_and_write_rankings_json(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)

    def s(i: int, pid: int, mod: str) -> Sample:
        return Sample(path=f"/data/{mod}_{i}.tif", pid=pid, modality=mod)

    query = [s(i, i % 3, "optical") for i in range(5)]
    gallery = [s(10 + i, i % 4 - 1, "sar") for i in range(9)]
    bank = {x.path: torch.from_numpy(rng.normal(size=4).astype(np.float32)) for x in [*query, *gallery]}
    protocols = {"opt2sar": (query, gallery), "sar2opt": ([], query)}
    res, ranks = evaluate_protocols_with_rankings(bank, protocols, max_rank=12, top_k=10)
    assert res == evaluate_protocols(bank, protocols, max_rank=12)
    assert set(ranks) == {"opt2sar"}
    path = write_reid_rankings(tmp_path, ranks, {"opt2sar": res["opt2sar"]["cmc"]})
    data = load_rankings(tmp_path)
    assert path.name == "rankings.json" and data is not None and data["task"] == "reid"
    p = data["protocols"]["opt2sar"]
    assert p["title"] == "Optical->SAR" and p["cmc"] == pytest.approx(res["opt2sar"]["cmc"])
    assert len(p["queries"]) == 5 and data["score"]["higher_is_better"] is False
    for qi, qe in enumerate(p["queries"]):
        assert qe["path"] == query[qi].path and qe["id"] == query[qi].pid
        assert len(qe["top"]) == 9  # the whole gallery is shorter than 10
        for t in qe["top"]:
            item = p["items"][t["item"]]
            assert t["status"] == ("match" if item["id"] == qe["id"] else "wrong")
    mean_ap = np.mean([q["ap"] for q in p["queries"] if q["ap"] is not None]) * 100
    assert mean_ap == pytest.approx(res["opt2sar"]["mAP"], abs=1e-3)


def test_statuses_on_hand_built_cases() -> None:
    assert reid_status(4, 4) == "match" and reid_status(4, 5) == "wrong" and reid_status(-1, -1) == "wrong"
    assert geo_status(3, 3, (4, 5)) == "match"
    assert geo_status(5, 3, (4, 5)) == "neighbour"
    assert geo_status(9, 3, (4, 5)) == "wrong"


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


def test_selection_is_seeded_and_worst_is_lowest_ap() -> None:
    queries = [{"ap": ap, "first_match_rank": fm, "top": [{}]} for ap, fm in
               [(0.5, 2), (1.0, 1), (None, None), (0.1, 10), (0.1, 30), (0.9, 1), (0.3, 3)]]
    assert worst_order(queries) == [4, 3, 6, 0, 5, 1]  # AP ascending, later first match first; no-AP left out
    a = select_queries(queries, 3, 2, seed=5)
    assert a == select_queries(queries, 3, 2, seed=5)
    assert a[1] == [4, 3] and len(a[0]) == 3 and len(set(a[0])) == 3
    assert select_queries(queries, 100, 0)[0] == list(range(7))
    queries[0]["thumb"] = "thumbs/q.png"
    assert select_queries(queries, 5, 0, need_thumb=True)[0] == [0]


def test_load_rankings_rejects_missing_or_foreign_files(tmp_path: Path) -> None:
    assert load_rankings(tmp_path) is None
    (tmp_path / "rankings.json").write_text("{not json")
    assert load_rankings(tmp_path) is None
    (tmp_path / "rankings.json").write_text(json.dumps({"version": 99, "protocols": {}}))
    assert load_rankings(tmp_path) is None
