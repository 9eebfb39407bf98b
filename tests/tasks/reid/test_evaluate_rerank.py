"""Re-ranking and query-expansion switches of the ReID evaluator and the eval config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sarbridge.core.config import config_from_dict, config_to_dict, merge_dicts, parse_overrides, rerank_arguments
from sarbridge.core.errors import ConfigError
from sarbridge.data.records import Sample
from sarbridge.retrieval.distance import pairwise_distance
from sarbridge.retrieval.metrics import evaluate, summarize
from sarbridge.retrieval.rerank import average_query_expansion, gnn_rerank, k_reciprocal_rerank
from sarbridge.tasks.reid.config import ExperimentConfig
from sarbridge.tasks.reid.evaluate import ReIDEvaluator, evaluate_protocols

KEYS = ("mAP", "R1", "R5", "R10", "mINP", "queries")


def data(seed=0, m=12, n=60, d=8):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, d))
    qp, gp = rng.integers(0, 10, m), np.r_[np.arange(10), rng.integers(0, 10, n - 10)]
    q = (centres[qp] + 0.9 * rng.normal(size=(m, d))).astype(np.float32)
    g = (centres[gp] + 0.9 * rng.normal(size=(n, d))).astype(np.float32)
    return q, g, qp, gp


def run(q, g, qp, gp, **kw):
    ev = ReIDEvaluator(num_query=len(q), **kw)
    ev.process(torch.from_numpy(q), qp, np.zeros(len(q), int))
    ev.process(torch.from_numpy(g), gp, np.ones(len(g), int))
    return ev.evaluate()


def test_none_is_unchanged():
    q, g, qp, gp = data()
    got = run(q, g, qp, gp, rerank="none", query_expansion="none")
    ref = summarize(evaluate(pairwise_distance(q, g), qp, gp))
    for k in KEYS:
        assert got[k] == pytest.approx(ref[k])


def test_k_reciprocal_equals_evaluate_on_hand_reranked_distances():
    q, g, qp, gp = data(1)
    got = run(q, g, qp, gp, rerank="k-reciprocal", k1=8, k2=3, lambda_value=0.3)
    qq, gg = pairwise_distance(q, q), pairwise_distance(g, g)
    np.fill_diagonal(qq, 0.0)
    np.fill_diagonal(gg, 0.0)
    dist = k_reciprocal_rerank(pairwise_distance(q, g), qq, gg, k1=8, k2=3, lambda_value=0.3)
    ref = summarize(evaluate(dist, qp, gp))
    for k in KEYS:
        assert got[k] == pytest.approx(ref[k])


def test_topk_path_for_large_sets_keeps_the_head_of_the_ranking():
    q, g, qp, gp = data(2)
    dense = run(q, g, qp, gp, rerank="k-reciprocal", k1=8, k2=3)
    sparse = run(q, g, qp, gp, rerank="k-reciprocal", k1=8, k2=3, dense_limit=10, rerank_topk=60)
    for k in KEYS:
        assert sparse[k] == pytest.approx(dense[k], abs=1e-4)
    short = run(q, g, qp, gp, rerank="k-reciprocal", k1=8, k2=3, dense_limit=10, rerank_topk=10)
    assert short["R1"] == pytest.approx(dense["R1"]) and short["R5"] == pytest.approx(dense["R5"])


def test_gnn_and_query_expansion_switches():
    q, g, qp, gp = data(3)
    # eval.rerank=gnn is the published form: adjacency propagation with the GNN's own k1/k2 (26/7)
    got = run(q, g, qp, gp, rerank="gnn", gnn_k1=10, gnn_k2=4)
    ref = summarize(evaluate(gnn_rerank(q, g, k1=10, k2=4, mode="adjacency"), qp, gp))
    assert got["mAP"] == pytest.approx(ref["mAP"])
    paper = summarize(evaluate(gnn_rerank(q, g, k1=26, k2=7, layers=2, mode="adjacency"), qp, gp))
    assert run(q, g, qp, gp, rerank="gnn", k1=3, k2=2)["mAP"] == pytest.approx(paper["mAP"])  # k1/k2: k-reciprocal's
    feats = run(q, g, qp, gp, rerank="gnn-features", gnn_k1=10, gnn_k2=4)
    assert feats["mAP"] == pytest.approx(summarize(evaluate(gnn_rerank(q, g, k1=10, k2=4, mode="features"), qp, gp))["mAP"])
    assert not np.allclose(gnn_rerank(q, g, k1=10, k2=4, mode="features"), gnn_rerank(q, g, k1=10, k2=4, mode="adjacency"))
    ev = ReIDEvaluator(len(q), rerank="gnn")
    assert "adjacency propagation, k1=26, k2=7, 2 layers" in ev.score_description()
    base = run(q, g, qp, gp)
    aqe = run(q, g, qp, gp, query_expansion="aqe", qe_k=3)
    assert aqe == run(q, g, qp, gp, query_expansion="aqe", qe_k=3)  # deterministic
    assert aqe["mAP"] != pytest.approx(base["mAP"])
    ref = summarize(evaluate(pairwise_distance(average_query_expansion(q, g, k=3), g), qp, gp))
    assert aqe["mAP"] == pytest.approx(ref["mAP"])
    alpha = run(q, g, qp, gp, query_expansion="alpha", qe_k=3, qe_alpha=3.0)
    assert alpha["mAP"] != pytest.approx(aqe["mAP"])
    with pytest.raises(ValueError, match="rerank"):
        ReIDEvaluator(3, rerank="knn")
    with pytest.raises(ValueError, match="query_expansion"):
        ReIDEvaluator(3, query_expansion="dba")


def test_evaluate_protocols_passes_options():
    q, g, qp, gp = data(4)
    query = [Sample(path=f"q{i}", pid=int(p), modality="optical") for i, p in enumerate(qp)]
    gallery = [Sample(path=f"g{i}", pid=int(p), modality="sar") for i, p in enumerate(gp)]
    bank = {**{s.path: torch.from_numpy(f) for s, f in zip(query, q)},
            **{s.path: torch.from_numpy(f) for s, f in zip(gallery, g)}}
    opts = {"rerank": "k-reciprocal", "k1": 8, "k2": 3, "lambda_value": 0.3}
    res = evaluate_protocols(bank, {"p": (query, gallery)}, rerank_options=opts)["p"]
    assert res["mAP"] == pytest.approx(run(q, g, qp, gp, **opts)["mAP"])
    plain = evaluate_protocols(bank, {"p": (query, gallery)})["p"]
    assert plain["mAP"] == pytest.approx(run(q, g, qp, gp)["mAP"])


def _cfg(overrides):
    return config_from_dict(merge_dicts(config_to_dict(ExperimentConfig()), parse_overrides(overrides)), ExperimentConfig)


def test_config_switches_load_and_validate():
    cfg = _cfg(["eval.rerank=gnn", "eval.k1=26", "eval.k2=7", "eval.query_expansion=alpha"])
    assert cfg.eval.rerank == "gnn" and cfg.eval.query_expansion == "alpha"
    assert rerank_arguments(cfg.eval) == {"rerank": "gnn", "k1": 26, "k2": 7, "lambda_value": 0.3,
                                        "query_expansion": "alpha", "qe_k": 5, "qe_alpha": 3.0,
                                        "gnn_k1": 26, "gnn_k2": 7, "gnn_layers": 2}
    # defaults: k-reciprocal's 20/6/0.3 (Zhong et al.), the GNN's 26/7 (Zhang et al.)
    d = _cfg([]).eval
    assert (d.k1, d.k2, d.lambda_value, d.gnn_k1, d.gnn_k2, d.gnn_layers) == (20, 6, 0.3, 26, 7, 2)
    assert _cfg(["eval.rerank=gnn-features"]).eval.rerank == "gnn-features"
    assert _cfg([]).eval.rerank == "none"
    for bad, match in [("eval.rerank=knn", "eval.rerank"), ("eval.query_expansion=dba", "eval.query_expansion"),
                       ("eval.k1=0", "k1"), ("eval.lambda_value=1.5", "lambda_value"),
                       ("eval.qe_alpha=-1", "qe_alpha"), ("eval.qe_k=0", "qe_k"),
                       ("eval.gnn_k1=0", "gnn_k1"), ("eval.gnn_layers=0", "gnn_layers")]:
        with pytest.raises(ConfigError, match=match):
            _cfg([bad])
