"""Tests for sarbridge.retrieval.rerank against a slow reference written from the paper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sarbridge.retrieval.distance import RetrievalInputError, pairwise_distance
from sarbridge.retrieval.rerank import k_reciprocal_rerank, k_reciprocal_rerank_features


# --------------------------------------------------------------------------------------------
# Slow reference: Python loops, sets and dicts, straight from the definitions of Zhong et al.
# --------------------------------------------------------------------------------------------
def reference_rerank(q_g, q_q, g_g, k1, k2, lambda_value):
    q_g, q_q, g_g = (np.asarray(x, dtype=np.float64).tolist() for x in (q_g, q_q, g_g))
    m, n = len(q_g), len(g_g)
    a = m + n
    # Original distance over probe + gallery, each row divided by its maximum.
    full = [q_q[i] + q_g[i] for i in range(m)]
    full += [[q_g[i][j] for i in range(m)] + g_g[j] for j in range(n)]
    d = [[x / max(row) for x in row] for row in full]
    # Initial ranking: ascending distance, ties by index.
    rank = [sorted(range(a), key=lambda j, i=i: (d[i][j], j)) for i in range(a)]

    def neighbours(i, k):  # N(i, k): the top k + 1 of i's ranking
        return set(rank[i][: k + 1])

    def reciprocal(i, k):  # R(i, k)
        return {j for j in neighbours(i, k) if i in neighbours(j, k)}

    half = int(round(k1 / 2))
    v = []
    for p in range(a):
        r_p = reciprocal(p, k1)
        expanded = set(r_p)
        for c in r_p:
            r_c = reciprocal(c, half)
            if len(r_c & r_p) > 2.0 / 3.0 * len(r_c):
                expanded |= r_c
        weights = {j: math.exp(-d[p][j]) for j in expanded}
        total = sum(weights.values())
        v.append({j: w / total for j, w in weights.items()})
    if k2 != 1:
        v_qe = []
        for p in range(a):
            acc = {}
            for nb in rank[p][:k2]:
                for j, w in v[nb].items():
                    acc[j] = acc.get(j, 0.0) + w / k2
            v_qe.append(acc)
        v = v_qe
    out = np.empty((m, n))
    for i in range(m):
        for j in range(n):
            vp, vg = v[i], v[m + j]
            keys = set(vp) | set(vg)
            s_min = sum(min(vp.get(x, 0.0), vg.get(x, 0.0)) for x in keys)
            s_max = sum(max(vp.get(x, 0.0), vg.get(x, 0.0)) for x in keys)
            jaccard = 1.0 - s_min / s_max
            out[i, j] = (1 - lambda_value) * jaccard + lambda_value * d[i][m + j]
    return out


def random_features(seed, m=7, n=25, dim=8):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((m, dim)).astype(np.float32),
            rng.standard_normal((n, dim)).astype(np.float32))


def matrices(q, g, metric="euclidean"):
    qg = pairwise_distance(q, g, metric=metric)
    qq = pairwise_distance(q, q, metric=metric)
    gg = pairwise_distance(g, g, metric=metric)
    np.fill_diagonal(qq, 0.0)
    np.fill_diagonal(gg, 0.0)
    return qg, qq, gg


# --------------------------------------------------------------------------------------------
# Agreement with the reference
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "seed, k1, k2, lam",
    [(0, 6, 3, 0.3), (1, 6, 3, 0.3), (2, 5, 1, 0.0), (3, 7, 2, 0.5), (4, 20, 6, 0.3), (5, 1, 1, 0.3)],
)
def test_matches_reference_on_random_features(seed, k1, k2, lam):
    q, g = random_features(seed)
    qg, qq, gg = matrices(q, g)
    got = k_reciprocal_rerank(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam)
    want = reference_rerank(qg, qq, gg, k1, k2, lam)
    assert got.dtype == np.float32 and got.shape == (7, 25)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_matches_reference_with_float64_and_cosine():
    q, g = random_features(11, m=9, n=30, dim=5)
    qg, qq, gg = (x.astype(np.float64) for x in matrices(q, g, "cosine"))
    got = k_reciprocal_rerank(qg, qq, gg, k1=8, k2=4, lambda_value=0.2)
    np.testing.assert_allclose(got, reference_rerank(qg, qq, gg, 8, 4, 0.2), atol=1e-6, rtol=0)


def test_matches_reference_with_ties_broken_by_index():
    # Integer-valued distances with many exact ties: both sides break them by item index.
    rng = np.random.default_rng(3)
    m, n = 6, 14
    full = rng.integers(1, 6, size=(m + n, m + n)).astype(np.float32)
    full = np.triu(full, 1)
    full = full + full.T  # symmetric, zero diagonal
    qq, qg, gg = full[:m, :m], full[:m, m:], full[m:, m:]
    for k1, k2 in [(4, 3), (6, 2), (3, 1)]:
        got = k_reciprocal_rerank(qg, qq, gg, k1=k1, k2=k2, lambda_value=0.3)
        np.testing.assert_allclose(got, reference_rerank(qg, qq, gg, k1, k2, 0.3), atol=1e-5, rtol=0)


def test_lambda_one_gives_the_normalised_original_distance():
    q, g = random_features(4)
    qg, qq, gg = matrices(q, g)
    got = k_reciprocal_rerank(qg, qq, gg, k1=6, k2=3, lambda_value=1.0)
    row_max = np.maximum(qq.max(axis=1), qg.max(axis=1))  # max over the full probe + gallery row
    np.testing.assert_allclose(got, qg / row_max[:, None], rtol=1e-6, atol=0)


def test_lambda_zero_is_pure_jaccard_in_unit_interval_and_identical_items_are_closest():
    q, g = random_features(5, m=4, n=20)
    g[7] = q[2]  # an exact copy of query 2 in the gallery
    got = k_reciprocal_rerank_features(q, g, k1=5, k2=2, lambda_value=0.0)
    assert ((got >= -1e-6) & (got <= 1 + 1e-6)).all()
    assert int(np.argmin(got[2])) == 7


def test_features_variant_builds_the_three_matrices():
    q, g = random_features(6)
    for metric in ("euclidean", "cosine", "sqeuclidean"):
        want = k_reciprocal_rerank(*matrices(q, g, metric), k1=6, k2=3, lambda_value=0.3)
        got = k_reciprocal_rerank_features(q, g, k1=6, k2=3, lambda_value=0.3, distance=metric)
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    # Torch tensors are accepted too.
    got_t = k_reciprocal_rerank_features(torch.from_numpy(q), torch.from_numpy(g), k1=6, k2=3)
    want_t = k_reciprocal_rerank_features(q, g, k1=6, k2=3)
    np.testing.assert_array_equal(got_t, want_t)


@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
def test_chunk_size_does_not_change_the_result(chunk_size):
    q, g = random_features(7, m=11, n=40, dim=6)
    qg, qq, gg = matrices(q, g)
    base = k_reciprocal_rerank(qg, qq, gg, k1=7, k2=3)
    got = k_reciprocal_rerank(qg, qq, gg, k1=7, k2=3, chunk_size=chunk_size)
    np.testing.assert_allclose(got, base, atol=1e-6, rtol=0)


def test_torch_inputs_and_large_k_are_clamped():
    q, g = random_features(8, m=3, n=5)
    qg, qq, gg = matrices(q, g)
    # k1 and k2 larger than the 8 items: neighbourhoods become "everything".
    got = k_reciprocal_rerank(torch.from_numpy(qg), torch.from_numpy(qq), torch.from_numpy(gg), k1=50, k2=20)
    np.testing.assert_allclose(got, reference_rerank(qg, qq, gg, 50, 20, 0.3), atol=1e-5, rtol=0)


def test_empty_query_or_gallery():
    assert k_reciprocal_rerank(np.zeros((0, 4)), np.zeros((0, 0)), np.zeros((4, 4))).shape == (0, 4)
    assert k_reciprocal_rerank(np.zeros((3, 0)), np.zeros((3, 3)), np.zeros((0, 0))).shape == (3, 0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"qg": np.zeros((2, 3)), "qq": np.zeros((2, 2)), "gg": np.zeros((4, 4))}, "shapes disagree"),
        ({"qg": np.full((2, 3), np.nan)}, "NaN"),
        ({"qg": np.full((2, 3), np.inf)}, "infinite"),
        ({"qg": -np.ones((2, 3))}, "negative"),
        ({"qg": np.ones(3)}, "2-D"),
        ({"k1": 0}, "k1"),
        ({"k2": 1.5}, "k2"),
        ({"lambda_value": 1.5}, "lambda_value"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, match):
    args = {"qg": np.ones((2, 3)), "qq": np.ones((2, 2)), "gg": np.ones((3, 3))}
    for key in ("qg", "qq", "gg"):
        if key in kwargs:
            args[key] = kwargs.pop(key)
    with pytest.raises(ValueError, match=match):
        k_reciprocal_rerank(args["qg"], args["qq"], args["gg"], **kwargs)


def test_unknown_distance_is_rejected():
    q, g = random_features(0, m=2, n=3)
    with pytest.raises(RetrievalInputError, match="unknown distance"):
        k_reciprocal_rerank_features(q, g, distance="manhattan")


def test_initial_ranking_equals_a_stable_sort():
    from sarbridge.retrieval.rerank import _initial_ranking

    gen = torch.Generator().manual_seed(0)
    for d in (torch.randint(0, 4, (40, 60), generator=gen).float(), torch.rand(40, 60, generator=gen)):
        want = torch.sort(d, dim=1, stable=True).indices
        for kt in (1, 7, 60):
            for rows in (1, 16, 40):
                torch.testing.assert_close(_initial_ranking(d, kt, rows), want[:, :kt], rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# Memory-bounded top-k variant
# --------------------------------------------------------------------------------------------
from sarbridge.retrieval.rerank import k_reciprocal_rerank_topk  # noqa: E402


def _check_topk(q, g, topk, **kw):
    dense = k_reciprocal_rerank_features(q, g, **{k: v for k, v in kw.items() if k != "chunk_size"})
    dist, idx = k_reciprocal_rerank_topk(q, g, topk=topk, **kw)
    kt = min(topk, g.shape[0])
    assert dist.shape == idx.shape == (q.shape[0], kt)
    assert dist.dtype == np.float32 and idx.dtype == np.int64
    np.testing.assert_allclose(dist, np.take_along_axis(dense, idx, axis=1), atol=1e-5, rtol=0)
    want = np.argsort(dense, axis=1, kind="stable")[:, :kt]
    np.testing.assert_allclose(dist, np.take_along_axis(dense, want, axis=1), atol=1e-5, rtol=0)
    differ = idx != want  # only where the dense values tie (within float noise)
    assert np.all(np.abs(np.take_along_axis(dense, idx, 1) - np.take_along_axis(dense, want, 1))[differ] < 1e-5)
    assert (~differ).mean() > 0.99


@pytest.mark.parametrize("distance, k1, k2, chunk", [("euclidean", 20, 6, None), ("sqeuclidean", 20, 6, 7),
                                                     ("cosine", 9, 1, 13), ("euclidean", 5, 3, 1)])
def test_topk_equals_dense_top_k(distance, k1, k2, chunk):
    rng = np.random.default_rng(42)
    q = rng.standard_normal((40, 16)).astype(np.float32)
    g = rng.standard_normal((200, 16)).astype(np.float32)
    _check_topk(q, g, 50, k1=k1, k2=k2, lambda_value=0.3, distance=distance, chunk_size=chunk)


def test_topk_equal_to_gallery_size_and_beyond():
    q, g = random_features(9, m=12, n=35, dim=6)
    _check_topk(q, g, 35, k1=7, k2=3, lambda_value=0.2)
    _check_topk(q, g, 500, k1=7, k2=3, lambda_value=0.0)
    _check_topk(torch.from_numpy(q).double(), torch.from_numpy(g).double(), 35, k1=50, k2=20)


def test_topk_bad_inputs_and_empty():
    q, g = random_features(0, m=3, n=5)
    with pytest.raises(RetrievalInputError, match="topk"):
        k_reciprocal_rerank_topk(q, g, topk=0)
    with pytest.raises(RetrievalInputError, match="unknown distance"):
        k_reciprocal_rerank_topk(q, g, distance="l1")
    d, i = k_reciprocal_rerank_topk(q[:0], g, topk=3)
    assert d.shape == i.shape == (0, 3)
