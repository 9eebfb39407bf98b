"""Per-query rankings (rankings.json), task-agnostic part: top-k lists, first-match ranks and APs exact
against a naive per-query reference, query selection, the file format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sarbridge.retrieval.distance import pairwise_distance
from sarbridge.retrieval.metrics import evaluate
from sarbridge.retrieval.rankings import (
    cmc_from_ranks,
    load_rankings,
    rank,
    rank_lists,
    select_queries,
    worst_order,
    write_rankings,
)


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
    for i, (top, first, ap) in enumerate(ref):
        listed = [int(j) for j in got.top_index[i] if j >= 0]
        assert listed == top, i
        assert got.first_match_rank[i] == first, i
        assert np.allclose(got.top_score[i, :len(top)], dist[i, top])
        assert np.isnan(got.top_score[i, len(top):]).all()
        if ap is None:
            assert np.isnan(got.ap[i]), i
        else:
            assert got.ap[i] == pytest.approx(ap), i


def test_rank_lists_shorter_gallery_than_k_is_padded() -> None:
    dist = np.array([[0.3, 0.1, 0.2]])
    got = rank_lists(dist, [1], [2, 1, 1], top_k=5)
    assert got.top_index.tolist() == [[1, 2, 0, -1, -1]]
    assert got.first_match_rank.tolist() == [1]
    assert got.ap.tolist() == pytest.approx([(1 / 1 + 2 / 2) / 2])  # matches at ranks 1 and 2


def test_rank_lists_ap_is_bitwise_the_metrics_ap() -> None:
    rng = np.random.default_rng(3)
    dist = np.round(rng.normal(size=(40, 70)), 1).astype(np.float32)
    qp, gp = rng.integers(0, 9, 40), rng.integers(-1, 9, 70)
    qm, gm = rng.integers(0, 2, 40), rng.integers(0, 2, 70)
    res = evaluate(dist, qp, gp, qm, gm, max_rank=30, exclude_same_modality=True, chunk_size=6)
    got = rank_lists(dist, qp, gp, qm, gm, exclude_same_modality=True, chunk_pairs=300)
    assert np.array_equal(got.ap[res["valid_queries"]], res["all_AP"])  # the same function, not just close
    assert np.isnan(got.ap[~res["valid_queries"]]).all()
    assert np.array_equal(cmc_from_ranks(got.first_match_rank[res["valid_queries"]], 30), res["cmc"])


def test_rank_is_a_stable_top_k_of_normalised_features() -> None:
    q = np.array([[1.0, 0.0]])
    g = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]])
    idx, dist = rank(q, g, k=3)
    assert idx.tolist() == [[1, 2, 0]]  # items 1 and 2 coincide after normalisation: index order
    assert dist[0].tolist() == pytest.approx([0.0, 0.0, 2.0], abs=1e-6)


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


def test_write_and_load_rankings_round_trip(tmp_path: Path) -> None:
    protocols = {"p": {"title": "P", "cmc": [0.5, 1.0], "num_queries": 1, "items": [{"id": 3}],
                       "queries": [{"id": 3, "ap": 1.0, "first_match_rank": 1, "top": [{"item": 0, "status": "match"}]}]}}
    score = {"name": "distance", "higher_is_better": False, "description": "d"}
    path = write_rankings(tmp_path, "sometask", protocols, score, top_k=4)
    assert path == tmp_path / "rankings.json" and path.read_text().count("\n") == 1  # compact JSON
    data = load_rankings(tmp_path)
    assert data == {"version": 1, "task": "sometask", "top_k": 4, "score": score, "protocols": protocols}


def test_load_rankings_rejects_missing_or_foreign_files(tmp_path: Path) -> None:
    assert load_rankings(tmp_path) is None
    (tmp_path / "rankings.json").write_text("{not json")
    assert load_rankings(tmp_path) is None
    (tmp_path / "rankings.json").write_text(json.dumps({"version": 99, "protocols": {}}))
    assert load_rankings(tmp_path) is None


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 3, 10, 40, 60])
@pytest.mark.parametrize("with_removed", [False, True])
def test_topk_stable_is_the_stable_sort_prefix_with_ties(seed: int, k: int, with_removed: bool) -> None:
    from sarbridge.retrieval.rankings import topk_stable

    rng = np.random.default_rng(seed)
    key = rng.integers(0, 4, (25, 40)).astype(np.float64)  # ties at every k-th value
    key[rng.random(key.shape) < 0.1] = np.inf
    key[rng.random(key.shape) < 0.05] = -np.inf
    key[0] = 1.0  # a row of one value
    removed = rng.random(key.shape) < 0.3 if with_removed else None
    ref = key.copy()
    if removed is not None:
        ref[removed] = np.nan  # NaN sorts after +inf: removed items last, by index
    expected = np.argsort(ref, axis=1, kind="stable")[:, :k]
    assert np.array_equal(topk_stable(key, k, removed), expected)


def test_topk_stable_rows_with_nan_keys_fall_back_to_the_full_sort() -> None:
    from sarbridge.retrieval.rankings import topk_stable

    key = np.array([[np.nan, 2.0, np.nan, 1.0], [3.0, np.nan, np.nan, np.nan]])
    assert topk_stable(key, 3).tolist() == [[3, 1, 0], [0, 1, 2]]
