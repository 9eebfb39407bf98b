"""Tests for sarbridge.retrieval.rerank.query_expansion against per-query loops from the definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sarbridge.retrieval.distance import RetrievalInputError
from sarbridge.retrieval.rerank import alpha_query_expansion, average_query_expansion


def reference_qe(q, g, k, alpha=None):
    q = np.asarray(q, np.float64)
    g = np.asarray(g, np.float64)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    out = []
    for x in qn:
        sims = [float(x @ y) for y in gn]
        top = sorted(range(len(gn)), key=lambda j: (-sims[j], j))[:k]
        acc = x.copy()
        for j in top:
            acc += (1.0 if alpha is None else max(sims[j], 0.0) ** alpha) * gn[j]
        out.append(acc / np.linalg.norm(acc))
    return np.array(out)


def feats(seed, m=9, n=30, d=8):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, d)).astype(np.float32), rng.standard_normal((n, d)).astype(np.float32)


@pytest.mark.parametrize("k, chunk", [(1, None), (5, None), (5, 2), (30, 4), (100, None)])
def test_aqe_matches_loop(k, chunk):
    q, g = feats(k)
    got = average_query_expansion(q, g, k=k, chunk_size=chunk)
    assert isinstance(got, torch.Tensor) and got.shape == q.shape and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), reference_qe(q, g, min(k, 30)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("k, alpha", [(5, 3.0), (3, 0.5), (10, 1.0)])
def test_alpha_qe_matches_loop(k, alpha):
    q, g = feats(10 + k)
    got = alpha_query_expansion(torch.from_numpy(q), torch.from_numpy(g), k=k, alpha=alpha, chunk_size=3)
    np.testing.assert_allclose(got.numpy(), reference_qe(q, g, k, alpha), atol=1e-5, rtol=0)


def test_alpha_zero_is_aqe_and_float64_is_kept():
    q, g = feats(3)
    q, g = q.astype(np.float64), g.astype(np.float64)
    a = alpha_query_expansion(q, g, k=4, alpha=0.0)
    assert a.dtype == torch.float64
    torch.testing.assert_close(a, average_query_expansion(q, g, k=4), rtol=0, atol=1e-12)


def test_bad_inputs():
    q, g = feats(0)
    with pytest.raises(RetrievalInputError, match="k must"):
        average_query_expansion(q, g, k=0)
    with pytest.raises(RetrievalInputError, match="alpha"):
        alpha_query_expansion(q, g, alpha=-1.0)
    with pytest.raises(RetrievalInputError, match="dimensions differ"):
        average_query_expansion(q, g[:, :3])
    with pytest.raises(RetrievalInputError, match="NaN"):
        average_query_expansion(np.full_like(q, np.nan), g)
