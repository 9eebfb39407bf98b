"""Tests for sarbridge.retrieval.sparse_ranks, ProductBlock and EvalProtocol: ranks from the few
candidates against slow stable-argsort references, the candidate bound against the exact set,
and the dense fallback, on seeded inputs with many ties."""

from __future__ import annotations

import numpy as np
import pytest
from test_rank_counting import argsort_loop_reference, assert_equal_results, tied_problem

from sarbridge.retrieval import sparse_ranks
from sarbridge.retrieval.distance import pairwise_distance
from sarbridge.retrieval.distance_blocks import ProductBlock, distance_blocks, product_blocks
from sarbridge.retrieval.eval_protocol import EvalProtocol
from sarbridge.retrieval.metrics import evaluate, evaluate_features, match_statistics, rank_matches
from sarbridge.retrieval.sparse_ranks import DenseBlock, candidate_ranks, flat_rank_statistics

METRICS = ["sqeuclidean", "euclidean", "cosine", "neg_dot"]


def features(seed, n_q=20, n_g=200, dim=6, integer=False, dtype=np.float32, scale=1.0):
    rng = np.random.default_rng(seed)
    if integer:
        return (rng.integers(-2, 3, (n_q, dim)).astype(dtype), rng.integers(-2, 3, (n_g, dim)).astype(dtype))
    return ((scale * rng.standard_normal((n_q, dim))).astype(dtype),
            (scale * rng.standard_normal((n_g, dim))).astype(dtype))


def only_block(q, g, metric, normalize):
    blocks = list(product_blocks(q, g, metric=metric, normalize=normalize))
    assert len(blocks) == 1 and isinstance(blocks[0][1], ProductBlock)
    return blocks[0][1]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_product_values_are_bitwise_the_dense_distances(metric, normalize, dtype):
    q, g = features(0, dtype=dtype, scale=3.0)
    dense = np.concatenate([b.numpy() for _, b in distance_blocks(q, g, metric=metric, normalize=normalize)])
    if metric != "neg_dot":
        assert np.array_equal(dense, pairwise_distance(q, g, metric=metric, normalize=normalize))
    block = only_block(q, g, metric, normalize)
    rng = np.random.default_rng(1)
    r, c = rng.integers(0, 20, 500), rng.integers(0, 200, 500)
    got = block.values(r, c)
    assert got.dtype == np.float32
    assert np.array_equal(got, dense[r, c])


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_candidates_contain_every_entry_below_the_threshold(metric, normalize, integer, dtype):
    q, g = features(2, integer=integer, dtype=dtype, scale=5.0)
    block = only_block(q, g, metric, normalize)
    dense = ProductBlock(0, block.product.copy(), metric, block._q_sq, block._g_sq, (block._g_lo, block._g_hi)).dense()
    rng = np.random.default_rng(3)
    # thresholds at existing distances (ties at the bound), between them, and +-inf
    thr = dense[np.arange(20), rng.integers(0, 200, 20)].copy()
    thr[:3] = np.nextafter(thr[:3], np.float32(-np.inf))
    thr[3], thr[4] = np.inf, -np.inf
    got = set(block.candidates(thr).tolist())
    exact = set(np.flatnonzero(dense <= thr[:, None]).tolist())
    assert exact <= got
    if normalize or metric in ("cosine", "neg_dot"):  # |g|^2 all (nearly) equal: the bound is tight
        assert len(got) <= len(exact) + 200 + 20  # (+inf row: all of it)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("with_kept", [False, True])
def test_candidate_ranks_equal_stable_argsort_positions(seed, with_kept):
    rng = np.random.default_rng(seed)
    d = rng.integers(0, 5, (15, 60)).astype(np.float64)  # ties everywhere
    d[rng.random(d.shape) < 0.05] = np.inf
    chosen = rng.random(d.shape) < 0.1
    removed = (rng.random(d.shape) < 0.3) & ~chosen if with_kept else np.zeros(d.shape, dtype=bool)
    rows, cols = np.nonzero(chosen)
    res = candidate_ranks(DenseBlock(d), rows, cols, (lambda r, c: ~removed[r, c]) if with_kept else None,
                          max_fraction=np.inf)
    assert res is not None
    for i in range(d.shape[0]):
        order = [j for j in np.argsort(d[i], kind="stable") if not removed[i, j]]
        pos = {j: p + 1 for p, j in enumerate(order)}
        sel = rows == i
        assert res.ranks[sel].tolist() == [pos[j] for j in cols[sel]]
        assert res.top[i] == (order[0] if sel.any() else res.top[i])


def test_candidate_ranks_give_up_on_too_many_candidates():
    d = np.zeros((4, 100))
    rows, cols = np.arange(4), np.full(4, 99)
    assert candidate_ranks(DenseBlock(d), rows, cols, max_fraction=0.1) is None
    assert candidate_ranks(DenseBlock(d), rows, cols, max_fraction=np.inf).ranks.tolist() == [100] * 4


def test_flat_rank_statistics_are_bitwise_match_statistics():
    rng = np.random.default_rng(4)
    hits = rng.random((30, 50)) < 0.2
    rows, cols = np.nonzero(hits)
    perm = rng.permutation(rows.size)  # any order within a row
    got = flat_rank_statistics(rows[perm], cols[perm] + 1, 30)
    ref = match_statistics(hits)
    for a, b in zip(got, ref, strict=True):
        assert np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("rules", [(False, False), (True, False), (False, True), (True, True)])
def test_protocol_positives_are_the_dense_match_mask(rules):
    _, qp, gp, qm, gm, qc, gc = tied_problem(3, num_q=25, num_g=90)
    proto = EvalProtocol(25, 90, qp, gp, qm, gm, rules[0], qc, gc, rules[1])
    match, kept = proto.masks(4, 19, __import__("torch").device("cpu"))
    rows, cols = proto.positives(4, 19)
    r_ref, c_ref = np.nonzero(match.numpy())
    assert rows.tolist() == r_ref.tolist() and cols.tolist() == c_ref.tolist()
    if kept is not None:
        rr, cc = np.nonzero(np.ones((15, 90), dtype=bool))
        assert np.array_equal(proto.kept_at(4)(rr, cc), kept.numpy()[rr, cc])


@pytest.mark.parametrize("seed", range(3))
def test_dense_fallback_gives_the_same_results(seed, monkeypatch):
    dist, qp, gp, qm, gm, qc, gc = tied_problem(seed, infs=True)
    ref = argsort_loop_reference(dist, qp, gp, qm, gm, True, qc, gc, True)
    monkeypatch.setattr(sparse_ranks, "_MAX_CANDIDATE_FRACTION", 0.0)
    res = evaluate(dist, qp, gp, qm, gm, max_rank=20, exclude_same_modality=True, q_camids=qc, g_camids=gc,
                   exclude_same_camera=True)
    assert_equal_results(res, ref)


def test_evaluate_features_of_huge_unnormalised_features_is_exact():
    """Products that could overflow float32 are finished densely (no candidate bound), still exact."""
    rng = np.random.default_rng(5)
    q = rng.integers(-2, 3, (12, 4)).astype(np.float32) * np.float32(1e18)
    g = rng.integers(-2, 3, (40, 4)).astype(np.float32) * np.float32(1e18)
    qp, gp = rng.integers(0, 4, 12), rng.integers(0, 4, 40)
    block = next(product_blocks(q, g, normalize=False))[1]
    assert isinstance(block, ProductBlock) and not block.safe
    dist = pairwise_distance(q, g, normalize=False)
    res = evaluate_features(q, g, qp, gp, normalize=False, max_rank=5)
    assert_equal_results(res, argsort_loop_reference(dist, qp, gp, max_rank=5))


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean", "cosine"])
def test_evaluate_features_is_bitwise_the_old_evaluator(metric):
    """Clustered float features (the benchmark's kind): every per-query AP / INP bitwise equal to
    the full sort of the dense matrix (rank_matches + match_statistics)."""
    rng = np.random.default_rng(6)
    centres = rng.standard_normal((30, 16)).astype(np.float32)
    gp, qp = rng.integers(0, 30, 400), rng.integers(0, 30, 60)
    g = centres[gp] + 1.2 * rng.standard_normal((400, 16)).astype(np.float32)
    q = centres[qp] + 1.2 * rng.standard_normal((60, 16)).astype(np.float32)
    dist = pairwise_distance(q, g, metric=metric)
    first, ap, inp = match_statistics(rank_matches(dist.copy(), gp[None, :] == qp[:, None], None))
    res = evaluate_features(q, g, qp, gp, metric=metric, max_rank=50)
    assert np.array_equal(res["all_AP"], ap) and np.array_equal(res["all_INP"], inp)
    assert np.array_equal(res["cmc"], np.array([np.mean(first <= k) for k in range(1, 51)]))
