"""Tests for sarbridge.retrieval.rerank.gnn against slow loops from the documented definition."""

from __future__ import annotations

import numpy as np
import pytest

from sarbridge.retrieval.distance import RetrievalInputError
from sarbridge.retrieval.rerank import gnn_propagate, gnn_rerank


def reference_gnn(q, g, k1, k2, layers, mode):
    x = np.concatenate([q, g]).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    a = len(x)
    sims = [[float(x[i] @ x[j]) for j in range(a)] for i in range(a)]
    t1 = [sorted(range(a), key=lambda j, i=i: (-sims[i][j], j))[:k1] for i in range(a)]
    k2 = min(k2, k1)
    if mode == "features":
        f = [x[i].copy() for i in range(a)]
    else:
        f = [np.array([1.0 if j in t1[i] else 0.0 for j in range(a)]) for i in range(a)]
    for _ in range(layers):
        if mode == "adjacency":
            f = [np.array([f[i][j] + f[j][i] for j in range(a)]) for i in range(a)]
        new = []
        for i in range(a):
            acc = sum(sims[i][j] ** 2 * f[j] for j in t1[i][:k2])
            new.append(acc / np.linalg.norm(acc))
        f = new
    m = len(q)
    return np.array([[1.0 - float(f[i] @ f[m + j]) for j in range(len(g))] for i in range(m)])


def feats(seed, m=6, n=20, d=5):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, d)).astype(np.float32), rng.standard_normal((n, d)).astype(np.float32)


@pytest.mark.parametrize("mode", ["features", "adjacency"])
@pytest.mark.parametrize("k1, k2, layers, chunk", [(6, 3, 1, None), (8, 4, 2, 5), (26, 7, 2, None), (4, 9, 3, 1)])
def test_matches_loop_reference(mode, k1, k2, layers, chunk):
    q, g = feats(k1 + layers)
    got = gnn_rerank(q, g, k1=k1, k2=k2, layers=layers, mode=mode, chunk_size=chunk)
    want = reference_gnn(q, g, k1, k2, layers, mode)
    assert got.shape == (6, 20) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_identical_duplicates_rank_together():
    q, g = feats(1, m=5, n=30, d=6)
    g[17] = g[4]
    d = gnn_rerank(q, g, k1=8, k2=4, layers=2)
    np.testing.assert_allclose(d[:, 4], d[:, 17], atol=1e-6)
    order = np.argsort(d, axis=1, kind="stable")
    for row in order:
        pos = {int(j): p for p, j in enumerate(row)}
        assert abs(pos[4] - pos[17]) == 1


def test_zero_layers_is_plain_cosine_and_shapes():
    q, g = feats(2)
    x = np.concatenate([q, g]).astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(gnn_rerank(q, g, layers=0), 1 - x[:6] @ x[6:].T, atol=1e-6)
    assert tuple(gnn_propagate(x, k1=5, k2=3, mode="adjacency").shape) == (26, 26)


def test_bad_parameters():
    q, g = feats(0)
    with pytest.raises(RetrievalInputError, match="mode"):
        gnn_rerank(q, g, mode="dense")
    with pytest.raises(RetrievalInputError, match="k1"):
        gnn_rerank(q, g, k1=0)
    with pytest.raises(RetrievalInputError, match="layers"):
        gnn_rerank(q, g, layers=-1)


def test_gnn_topk_output_is_the_head_of_the_full_ranking() -> None:
    import numpy as np

    from sarbridge.retrieval.rerank import gnn_rerank

    rng = np.random.default_rng(3)
    q, g = rng.standard_normal((9, 8)).astype(np.float32), rng.standard_normal((30, 8)).astype(np.float32)
    full = gnn_rerank(q, g, k1=6, k2=3)
    dist, idx = gnn_rerank(q, g, k1=6, k2=3, topk=5, chunk_size=4)
    expected = np.argsort(full, axis=1, kind="stable")[:, :5]
    assert np.array_equal(idx, expected)
    assert np.allclose(dist, np.take_along_axis(full, expected, axis=1), atol=1e-6)
