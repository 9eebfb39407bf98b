"""The rankings.json of a re-identification evaluation: entries, statuses and APs against the metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sarbridge.data.records import Sample
from sarbridge.retrieval.distance import pairwise_distance
from sarbridge.retrieval.metrics import cmc_from_ranks, evaluate
from sarbridge.retrieval.rankings import load_rankings
from sarbridge.tasks.reid.evaluate import (
    ReIDEvaluator,
    evaluate_protocols,
    evaluate_protocols_with_rankings,
)
from sarbridge.tasks.reid.rankings import reid_status, write_reid_rankings


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


def test_reid_statuses_on_hand_built_cases() -> None:
    assert reid_status(4, 4) == "match" and reid_status(4, 5) == "wrong" and reid_status(-1, -1) == "wrong"
