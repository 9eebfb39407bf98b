"""Tests for sarbridge.retrieval.geo_ranks: localisation metrics of the full ranking by counting,
against localisation_metrics / cmpc_metrics of the full stable argsort, on seeded inputs with ties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sarbridge.retrieval.distance import RetrievalInputError
from sarbridge.retrieval.geo_metrics import cmpc_metrics, localisation_metrics
from sarbridge.retrieval.geo_ranks import localisation_metrics_full, localisation_ranks, target_ranks
from sarbridge.tasks.geo.evaluate import full_target_ranks, rerank_coarse


def problem(seed, m=30, n=80):
    rng = np.random.default_rng(seed)
    dist = rng.integers(0, 6, (m, n)).astype(np.float64)  # few values: ties everywhere
    targets = rng.integers(0, n, m)
    ref_xy = rng.integers(0, 10, (n, 2)) * 50.0
    q_xy = ref_xy[targets] + rng.normal(0, 30, (m, 2))
    relevant = [{int(t)} | {int(j) for j in np.flatnonzero(np.hypot(*(ref_xy - ref_xy[t]).T) <= 60)} for t in targets]
    return dist, targets, ref_xy, q_xy, relevant


def assert_same(got, ref, tol=1e-10):
    assert got.keys() == ref.keys()
    for key, value in ref.items():
        if isinstance(value, list):
            np.testing.assert_allclose(got[key], value, rtol=0, atol=tol)
        elif isinstance(value, bool):
            assert got[key] is value
        else:
            assert got[key] == pytest.approx(value, rel=0, abs=tol), key


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("with_relevant", [False, True])
@pytest.mark.parametrize("chunk", [None, 7])
def test_full_metrics_equal_the_list_metrics_of_the_stable_sort(seed, with_relevant, chunk):
    dist, targets, ref_xy, q_xy, relevant = problem(seed)
    rel = relevant if with_relevant else None
    ranked = np.argsort(dist, axis=1, kind="stable")
    ref = localisation_metrics(ranked, targets, ref_xy, q_xy, relevant=rel, topk=(1, 5, 10, 20))
    ranks = localisation_ranks(targets, dist=dist, relevant=rel, chunk_size=chunk)
    full_rank = np.argmax(ranked == targets[:, None], axis=1) + 1
    assert np.array_equal(ranks.target_rank, full_rank)
    assert np.array_equal(ranks.top1, ranked[:, 0])
    got = localisation_metrics_full(targets, ref_xy, q_xy, dist=dist, relevant=rel, cmpc=True)
    ref.update(cmpc_metrics(ranked, targets, ref_xy, q_xy))
    assert_same(got, ref)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("metric", ["neg_dot", "sqeuclidean"])
def test_from_features_equals_from_the_matrix(seed, metric):
    rng = np.random.default_rng(seed)
    q = rng.integers(-2, 3, (25, 4)).astype(np.float32)  # integer features: exact, tied distances
    r = rng.integers(-2, 3, (70, 4)).astype(np.float32)
    targets = rng.integers(0, 70, 25)
    dist = -(q @ r.T) if metric == "neg_dot" else ((q[:, None, :] - r[None]) ** 2).sum(-1)
    ranked = np.argsort(dist, axis=1, kind="stable")
    full_rank = np.argmax(ranked == targets[:, None], axis=1) + 1
    got = localisation_ranks(targets, query=q, reference=r, metric=metric, chunk_size=6)
    assert np.array_equal(got.target_rank, full_rank)
    assert np.array_equal(got.top1, ranked[:, 0])
    assert np.allclose(got.ap, 1.0 / full_rank, rtol=0, atol=1e-12)
    assert np.array_equal(target_ranks(q, r, targets, metric=metric), full_rank)


def test_geo_task_helpers_use_the_stable_order():
    rng = np.random.default_rng(1)
    q = torch.from_numpy(rng.integers(-1, 2, (12, 3)).astype(np.float32))
    r = torch.from_numpy(rng.integers(-1, 2, (30, 3)).astype(np.float32))
    targets = rng.integers(0, 30, 12)
    order = np.argsort(-(q @ r.T).numpy(), axis=1, kind="stable")
    assert np.array_equal(full_target_ranks(r, q, targets), np.argmax(order == targets[:, None], axis=1) + 1)
    scores, ranked = rerank_coarse(torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(r, dim=1),
                                   5, "k-reciprocal", 4, 2, 0.3)
    assert ranked.shape == (12, 5) and np.all(np.diff(-scores, axis=1) >= 0)


def test_bad_inputs_raise():
    dist, targets, ref_xy, q_xy, _ = problem(0)
    with pytest.raises(RetrievalInputError, match="targets"):
        localisation_ranks(targets[:-1], dist=dist)
    with pytest.raises(RetrievalInputError, match="outside"):
        localisation_ranks(targets + 1000, dist=dist)
    bad = dist.copy()
    bad[1, 2] = np.nan
    with pytest.raises(RetrievalInputError, match="NaN"):
        localisation_ranks(targets, dist=bad)
    with pytest.raises(RetrievalInputError, match="either dist"):
        localisation_ranks(targets)
