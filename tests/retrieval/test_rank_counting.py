"""Tests for sarbridge.retrieval.rank_counting and metrics.evaluate_features: ranks by counting
against a slow per-query stable-argsort reference, on seeded inputs with many ties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sarbridge.retrieval import rank_counting
from sarbridge.retrieval.distance import pairwise_distance
from sarbridge.retrieval.distance_blocks import _torch_blocks, default_block_rows, distance_blocks
from sarbridge.retrieval.metrics import evaluate, evaluate_features, match_statistics, rank_matches
from sarbridge.retrieval.rank_counting import positive_ranks, rank_statistics


def argsort_loop_reference(dist, q_pids, g_pids, q_mods=None, g_mods=None, excl_mod=False,
                           q_cams=None, g_cams=None, excl_cam=False, max_rank=20):
    """Per query: stable argsort, drop removed items, AP / INP / first rank from the match list."""
    aps, inps, firsts, valid = [], [], [], []
    for i in range(dist.shape[0]):
        order = np.argsort(dist[i], kind="stable")
        keep = np.ones(dist.shape[1], dtype=bool)
        if excl_mod:
            keep &= g_mods != q_mods[i]
        if excl_cam:
            keep &= ~((g_pids == q_pids[i]) & (g_cams == q_cams[i]))
        order = order[keep[order]]
        hits = (g_pids[order] == q_pids[i]) & (g_pids[order] != -1) & (q_pids[i] != -1)
        if not hits.any():
            valid.append(False)
            continue
        valid.append(True)
        ranks = np.flatnonzero(hits) + 1.0
        aps.append(np.mean(np.arange(1, ranks.size + 1) / ranks))
        inps.append(ranks.size / ranks[-1])
        firsts.append(int(ranks[0]))
    cmc = np.array([np.mean(np.array(firsts) <= k) for k in range(1, max_rank + 1)])
    return {"mAP": np.mean(aps), "mINP": np.mean(inps), "cmc": cmc, "all_AP": np.array(aps),
            "all_INP": np.array(inps), "valid_queries": np.array(valid)}


def assert_equal_results(res, ref, tol=1e-10):
    np.testing.assert_array_equal(res["valid_queries"], ref["valid_queries"])
    assert abs(res["mAP"] - ref["mAP"]) <= tol
    assert abs(res["mINP"] - ref["mINP"]) <= tol
    np.testing.assert_allclose(res["cmc"], ref["cmc"], rtol=0, atol=tol)
    np.testing.assert_allclose(res["all_AP"], ref["all_AP"], rtol=0, atol=tol)
    np.testing.assert_allclose(res["all_INP"], ref["all_INP"], rtol=0, atol=tol)


def tied_problem(seed, num_q=30, num_g=120, levels=6, infs=False):
    """Quantised distances (few distinct values: ties everywhere), distractors, 2 modalities, 3 cameras."""
    rng = np.random.default_rng(seed)
    dist = rng.integers(0, levels, (num_q, num_g)).astype(np.float32) / levels
    if infs:
        dist[rng.random(dist.shape) < 0.1] = np.inf
        dist[rng.random(dist.shape) < 0.05] = -np.inf
    g_pids = rng.integers(-1, 8, num_g)
    q_pids = rng.integers(-1, 10, num_q)  # some pids absent from the gallery: skipped queries
    return (dist, q_pids, g_pids, rng.integers(0, 2, num_q), rng.integers(0, 2, num_g),
            rng.integers(0, 3, num_q), rng.integers(0, 3, num_g))


RULES = [(False, False), (True, False), (False, True), (True, True)]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("rules", RULES)
@pytest.mark.parametrize("chunk", [1, 7, None])
def test_evaluate_equals_argsort_loop_with_ties(seed, rules, chunk):
    dist, qp, gp, qm, gm, qc, gc = tied_problem(seed, infs=seed % 2 == 1)
    excl_mod, excl_cam = rules
    ref = argsort_loop_reference(dist, qp, gp, qm, gm, excl_mod, qc, gc, excl_cam)
    res = evaluate(dist, qp, gp, qm, gm, max_rank=20, exclude_same_modality=excl_mod, q_camids=qc,
                   g_camids=gc, exclude_same_camera=excl_cam, chunk_size=chunk)
    assert not ref["valid_queries"].all()  # queries without a positive are skipped, as before
    assert_equal_results(res, ref)


def test_rows_with_all_distances_equal_beyond_a_top_k():
    """Re-ranking's top-k output: every item outside a row's top-k has the same large distance."""
    rng = np.random.default_rng(3)
    num_q, num_g = 12, 300
    dist = np.full((num_q, num_g), 1.0e6, dtype=np.float32)
    top = np.argsort(rng.random((num_q, num_g)), axis=1)[:, :10]
    np.put_along_axis(dist, top, rng.random((num_q, 10)).astype(np.float32), axis=1)
    gp = rng.integers(0, 4, num_g)
    qp = rng.integers(0, 4, num_q)
    assert_equal_results(evaluate(dist, qp, gp, max_rank=20), argsort_loop_reference(dist, qp, gp))


def test_hand_computed_ranks_with_ties_and_removal():
    # row: values by column; matches at columns 1, 3, 5; column 2 removed.
    d = torch.tensor([[0.5, 0.5, 0.1, 0.5, 0.9, 0.2]])
    match = torch.tensor([[False, True, False, True, False, True]])
    kept = torch.tensor([[True, True, False, True, True, True]])
    ranks, npos = positive_ranks(d, match, kept)
    # kept order: col5 (0.2), col0 (0.5), col1 (0.5), col3 (0.5), col4 (0.9)
    assert ranks.tolist() == [[1, 3, 4]] and npos.tolist() == [3]
    first, ap, inp = rank_statistics(ranks, npos)
    assert first.tolist() == [1]
    assert ap[0] == pytest.approx((1 / 1 + 2 / 3 + 3 / 4) / 3, abs=1e-15)
    assert inp[0] == pytest.approx(3 / 4, abs=1e-15)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("pack", [0.0, 1.0])
def test_positive_ranks_equal_rank_matches(seed, pack, monkeypatch):
    """Both candidate tables (packed, full width) and float64 give the stable-sort positions."""
    monkeypatch.setattr(rank_counting, "_PACK_FRACTION", pack)
    rng = np.random.default_rng(seed)
    d = (rng.integers(0, 5, (9, 70)) / 5).astype(np.float64 if seed % 2 else np.float32)
    match = rng.random(d.shape) < 0.2
    removed = rng.random(d.shape) < 0.3
    match &= ~removed
    match[:, 0] |= ~match.any(axis=1)  # every row has a match (column 0 may be removed too)
    removed[match] = False
    first, ap, inp = match_statistics(rank_matches(d.copy(), match, removed))
    ranks, npos = positive_ranks(torch.from_numpy(d), torch.from_numpy(match), torch.from_numpy(~removed))
    f2, ap2, inp2 = rank_statistics(ranks, npos)
    np.testing.assert_array_equal(first, f2)
    np.testing.assert_allclose(ap, ap2, rtol=0, atol=1e-12)
    np.testing.assert_allclose(inp, inp2, rtol=0, atol=1e-12)


def test_small_tie_batches_give_the_same_ranks(monkeypatch):
    dist, qp, gp, *_ = tied_problem(11)
    ref = evaluate(dist, qp, gp, max_rank=20)
    monkeypatch.setattr(rank_counting, "_TIE_ELEMENTS", 1)  # one tie group per pass
    assert_equal_results(evaluate(dist, qp, gp, max_rank=20), ref, tol=0.0)


def test_positive_ranks_on_rows_without_matches():
    ranks, npos = positive_ranks(torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.bool))
    assert ranks.shape == (3, 0) and npos.tolist() == [0, 0, 0]
    first, ap, _ = rank_statistics(ranks, npos)
    assert first.tolist() == [0, 0, 0] and np.isnan(ap).all()


# ------------------------------------------------------------------------------------------------
# From features, block by block
# ------------------------------------------------------------------------------------------------
def feature_problem(seed, num_q=40, num_g=150, dim=8):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, dim))
    g_pids = rng.integers(0, 6, num_g)
    q_pids = rng.integers(0, 7, num_q)
    g = centres[g_pids] + 0.8 * rng.standard_normal((num_g, dim))
    q = centres[q_pids % 6] + 0.8 * rng.standard_normal((num_q, dim))
    return q.astype(np.float32), g.astype(np.float32), q_pids, g_pids, rng


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean", "cosine"])
def test_default_blocks_are_bitwise_pairwise_distance(metric):
    q, g, *_ = feature_problem(0, num_q=50, num_g=300, dim=16)
    full = pairwise_distance(q, g, metric=metric)
    blocks = list(distance_blocks(q, g, metric=metric))
    assert len(blocks) == 1 and np.array_equal(blocks[0][1].numpy(), full)
    many = list(distance_blocks(q, g, metric=metric, chunk_size=default_block_rows(300)))
    assert np.array_equal(np.concatenate([b.numpy() for _, b in many]), full)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("chunk", [1, 7, None])
@pytest.mark.parametrize("rules", RULES)
def test_evaluate_features_equals_argsort_loop_on_integer_features(seed, chunk, rules):
    """Integer features, no normalisation: exact distances with many ties, whatever the blocks."""
    rng = np.random.default_rng(seed)
    q = rng.integers(-2, 3, (35, 4)).astype(np.float32)
    g = rng.integers(-2, 3, (90, 4)).astype(np.float32)
    qp, gp = rng.integers(-1, 6, 35), rng.integers(-1, 5, 90)
    qm, gm, qc, gc = rng.integers(0, 2, 35), rng.integers(0, 2, 90), rng.integers(0, 3, 35), rng.integers(0, 3, 90)
    dist = pairwise_distance(q, g, normalize=False)
    ref = argsort_loop_reference(dist, qp, gp, qm, gm, rules[0], qc, gc, rules[1])
    res = evaluate_features(q, g, qp, gp, qm, gm, max_rank=20, exclude_same_modality=rules[0], q_camids=qc,
                            g_camids=gc, exclude_same_camera=rules[1], normalize=False, chunk_size=chunk)
    assert_equal_results(res, ref)


@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine"])
def test_evaluate_features_equals_evaluate_of_the_matrix(metric):
    q, g, qp, gp, rng = feature_problem(5)
    qm, gm = rng.integers(0, 2, len(q)), rng.integers(0, 2, len(g))
    ref = evaluate(pairwise_distance(q, g, metric=metric), qp, gp, qm, gm, max_rank=10, exclude_same_modality=True)
    res = evaluate_features(torch.from_numpy(q), torch.from_numpy(g), qp, gp, qm, gm, max_rank=10,
                            exclude_same_modality=True, metric=metric)
    assert_equal_results(res, ref, tol=0.0)


def test_torch_blocks_agree_with_numpy_blocks():
    """The CUDA formula, run on the CPU: equal to pairwise_distance up to float rounding."""
    q, g, *_ = feature_problem(2)
    for metric in ("sqeuclidean", "euclidean", "cosine", "neg_dot"):
        ref = np.concatenate([b.numpy() for _, b in distance_blocks(q, g, metric=metric)])
        got = torch.cat([b for _, b in _torch_blocks(torch.from_numpy(q), torch.from_numpy(g), metric, True, 7)])
        np.testing.assert_allclose(got.numpy(), ref, atol=2e-5)
        assert got.dtype == torch.float32


def test_evaluate_features_errors():
    q, g, qp, gp, _ = feature_problem(1)
    with pytest.raises(ValueError, match="no query has a matching"):
        evaluate_features(q, g, np.full(len(q), 99), gp)
    with pytest.raises(ValueError, match="feature dimensions differ"):
        evaluate_features(q[:, :3], g, qp, gp)
    with pytest.raises(ValueError, match="unknown distance metric"):
        evaluate_features(q, g, qp, gp, metric="manhattan")
    with pytest.raises(ValueError, match="chunk_size"):
        evaluate_features(q, g, qp, gp, chunk_size=0)
    bad = q.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_features(bad, g, qp, gp)
