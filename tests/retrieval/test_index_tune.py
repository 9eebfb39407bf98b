"""Tests for tune_search, the ivfsq kind, the rescore depth and the stored search settings (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from sarbridge.retrieval.distance import RetrievalInputError  # noqa: E402
from sarbridge.retrieval.index import (  # noqa: E402
    EmbeddingIndex,
    describe_search_settings,
    read_search_settings,
    tune_search,
)
from sarbridge.retrieval.index.ivf import rescore_exact  # noqa: E402
from sarbridge.retrieval.index.tune import perturbed_queries  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "index-v1"
DIM = 32


def clustered(n: int, seed: int = 0, clusters: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.7 * rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_top_k(gallery: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k ids in float64, the slow obvious way."""
    s = queries.astype(np.float64) @ gallery.astype(np.float64).T
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def overlap_recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / len(t) for f, t in zip(found, truth)]))


@pytest.fixture(scope="module")
def gallery() -> np.ndarray:
    return clustered(5000)


@pytest.fixture(scope="module")
def tuned(gallery):
    """An ivfsq index over 5k vectors tuned to recall@10 >= 0.9 (and its result)."""
    index = EmbeddingIndex(DIM, kind="ivfsq", params={"nlist": 64})
    index.add(gallery, [{"id": i} for i in range(len(gallery))])
    sample = gallery[np.random.default_rng(3).choice(len(gallery), 400, replace=False)]
    return index, tune_search(index, sample, 0.9, k=10, latency_queries=20)


def test_tune_search_reaches_a_modest_target_and_applies_it(tuned):
    index, res = tuned
    assert set(res) >= {"nprobe", "rescore", "recall_at_k", "k", "target_recall", "latency_ms", "reached",
                        "sample", "grid"}
    assert res["reached"] is True and res["recall_at_k"] >= 0.9 and res["k"] == 10 and res["sample"] == 400
    assert res["target_recall"] == 0.9 and res["latency_ms"] > 0
    assert 1 <= res["nprobe"] <= 64 and res["rescore"] >= 10
    assert index.params["nprobe"] == res["nprobe"] and index.params["rescore"] == res["rescore"]
    settings = index.search_settings()
    assert settings["nprobe"] == res["nprobe"] and settings["rescore"] == res["rescore"]
    assert settings["tuned"]["recall_at_k"] == res["recall_at_k"] and "grid" not in settings["tuned"]
    # The cheapest re-scoring depth at the chosen nprobe: the next smaller one misses the target.
    rows = {(r["nprobe"], r["rescore"]): r["recall_at_k"] for r in res["grid"]}
    smaller = [d for (p, d) in rows if p == res["nprobe"] and d < res["rescore"]]
    assert all(rows[(res["nprobe"], d)] < 0.9 for d in smaller)
    # ... and every grid row with fewer lists and no deeper re-scoring misses it too.
    assert all(rec < 0.9 for (p, d), rec in rows.items() if p < res["nprobe"] and d <= res["rescore"])
    assert describe_search_settings(settings, k=10).startswith(
        f"ivfsq, nprobe {res['nprobe']}, {res['rescore']} candidates re-scored exactly (tuned: recall@10 ")


def test_reported_recall_equals_an_independent_recount(tuned, gallery):
    index, res = tuned
    sample = gallery[np.random.default_rng(3).choice(len(gallery), 400, replace=False)]
    queries = perturbed_queries(sample, res["perturb"], seed=0)  # the tuner's queries (seed 0)
    _, found = index.search(queries, 10)
    assert overlap_recall(found, brute_top_k(gallery, queries, 10)) == pytest.approx(res["recall_at_k"], abs=1e-4)
    # The perturbation is what the docs say: cosine 1/sqrt(1 + p^2) with the source, norms kept.
    cos = np.sum(queries * sample, axis=1)
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)
    assert abs(float(np.mean(cos)) - 1 / np.sqrt(1 + res["perturb"] ** 2)) < 0.05


def test_real_queries_with_perturb_zero_are_used_as_they_are(gallery):
    index = EmbeddingIndex(DIM, kind="ivfpq", params={"nlist": 64, "m": 8})
    index.add(gallery)
    queries = clustered(300, seed=9)  # other vectors of the same kind, not in the index
    res = tune_search(index, queries, 0.8, perturb=0, latency_queries=5)
    _, found = index.search(queries, 10)
    assert overlap_recall(found, brute_top_k(gallery, queries, 10)) == pytest.approx(res["recall_at_k"], abs=1e-4)
    assert res["reached"] == (res["recall_at_k"] >= 0.8)


def test_saved_index_reloads_with_the_chosen_settings(tuned, tmp_path, gallery):
    index, res = tuned
    index.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["params"]["nprobe"] == res["nprobe"] and manifest["params"]["rescore"] == res["rescore"]
    assert manifest["tuning"]["target_recall"] == 0.9 and manifest["tuning"]["reached"] is True
    loaded = EmbeddingIndex.load(tmp_path / "idx")
    assert loaded.params == index.params and loaded.tuning == index.tuning
    assert loaded.search_settings() == index.search_settings() == read_search_settings(tmp_path / "idx")
    q = clustered(50, seed=5)
    for a, b in zip(loaded.search(q, 10), index.search(q, 10)):
        np.testing.assert_array_equal(a, b)
    loaded.set_search_params(nprobe=1)  # changed by hand: the tuning record no longer applies
    assert loaded.tuning is None and loaded.search_settings()["tuned"] is None


@pytest.mark.parametrize("target", [1.01, 0, 0.0, -0.5, float("nan"), True, "0.9", None])
def test_an_impossible_target_is_refused_with_one_line(tuned, target):
    index, _ = tuned
    before = dict(index.params)
    with pytest.raises(RetrievalInputError) as exc:
        tune_search(index, np.zeros((3, DIM), dtype=np.float32) + 0.1, target)
    assert str(exc.value).startswith("target recall must be a number in (0, 1], got ") and "\n" not in str(exc.value)
    assert index.params == before


def test_bad_sample_and_empty_index_are_refused(tuned):
    index, _ = tuned
    with pytest.raises(RetrievalInputError, match="dimension"):
        tune_search(index, np.ones((4, DIM + 1), dtype=np.float32), 0.9)
    with pytest.raises(RetrievalInputError, match="empty"):
        tune_search(index, np.ones((0, DIM), dtype=np.float32), 0.9)
    with pytest.raises(RetrievalInputError, match="empty index"):
        tune_search(EmbeddingIndex(DIM, kind="ivfsq"), np.ones((4, DIM), dtype=np.float32), 0.9)


def test_an_unreached_target_is_reported_and_the_best_setting_kept(gallery):
    index = EmbeddingIndex(DIM, kind="ivfpq", params={"nlist": 64, "m": 4})
    index.add(gallery)
    res = tune_search(index, gallery[:200], 1.0, nprobe_grid=[1, 2], rescore_grid=[10, 20], latency_queries=5)
    assert res["reached"] is False and res["recall_at_k"] < 1.0
    assert res["recall_at_k"] == max(r["recall_at_k"] for r in res["grid"])
    assert (index.params["nprobe"], index.params["rescore"]) == (res["nprobe"], res["rescore"])
    assert index.tuning is not None and index.tuning["reached"] is False
    assert "< target 1.0" in describe_search_settings(index.search_settings(), k=10)


def test_hnsw_and_flat(gallery):
    hnsw = EmbeddingIndex(DIM, kind="hnsw", params={"M": 8, "ef_construction": 40})
    hnsw.add(gallery[:2000])
    res = tune_search(hnsw, gallery[:200], 0.9, latency_queries=5)
    assert res["nprobe"] is None and res["ef_search"] == hnsw.params["ef_search"]
    assert res["reached"] is (res["recall_at_k"] >= 0.9)
    flat = EmbeddingIndex(DIM)
    flat.add(gallery[:500])
    res = tune_search(flat, gallery[:50], 0.99, latency_queries=5)
    assert res["reached"] is True and res["recall_at_k"] == 1.0 and res["nprobe"] is None
    assert flat.search_settings()["exact"] is True


def test_rescore_depth_and_exact_rescoring(gallery):
    q = clustered(30, seed=4)
    want = brute_top_k(gallery, q, 10)
    index = EmbeddingIndex(DIM, kind="ivfsq", params={"nlist": 16, "nprobe": 16, "rescore": 400})
    index.add(gallery)
    assert index.params["rescore"] == 400 and index.params["qtype"] == "8bit"
    scores, ids = index.search(q, 10)  # all lists, deep exact re-scoring: the exact answer
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_allclose(scores, np.take_along_axis(q @ gallery.T, want, axis=1), atol=1e-5)
    index.set_search_params(rescore=0)  # raw 8-bit scores: approximate values
    raw, _ = index.search(q, 10)
    assert not np.allclose(raw, scores, atol=1e-7)
    with pytest.raises(RetrievalInputError, match="rescore"):
        index.set_search_params(rescore=-1)
    with pytest.raises(RetrievalInputError, match="qtype"):
        EmbeddingIndex(DIM, kind="ivfsq", params={"qtype": "3bit"})
    # rescore_exact against the slow reference, with missing candidates (-1).
    cand = np.random.default_rng(0).integers(0, len(gallery), (30, 40))
    cand[:, -5:] = -1
    s, i = rescore_exact(gallery, q, cand, 5)
    exact = np.einsum("qd,qkd->qk", q.astype(np.float64), gallery[np.maximum(cand, 0)].astype(np.float64))
    exact[cand < 0] = -np.inf
    ref = np.take_along_axis(cand, np.argsort(-exact, axis=1, kind="stable")[:, :5], axis=1)
    np.testing.assert_array_equal(i, ref)
    assert np.all(np.diff(s, axis=1) <= 0)


def test_old_indexes_load_with_todays_defaults():
    loaded = EmbeddingIndex.load(FIXTURE / "ivfpq")
    saved = json.loads((FIXTURE / "ivfpq" / "manifest.json").read_text())["params"]
    assert "rescore" not in saved and loaded.tuning is None
    settings = loaded.search_settings()
    assert settings == read_search_settings(FIXTURE / "ivfpq")
    assert settings["nprobe"] == saved["nprobe"] and settings["rescore"] is None and settings["rerank"] == saved["rerank"]
    assert describe_search_settings(settings, k=3) == (
        f"ivfpq, nprobe {saved['nprobe']}, {3 * saved['rerank']} candidates re-scored exactly")
    assert read_search_settings(FIXTURE / "flat")["exact"] is True
