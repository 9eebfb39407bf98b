"""Tests for sarbridge.retrieval.distance.pairwise_distance against direct formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sarbridge.retrieval.distance import METRICS, pairwise_distance
from sarbridge.retrieval.metrics import evaluate


def features(seed, num_q=17, num_g=29, dim=24, dtype=np.float32):
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((num_q, dim)) * 3).astype(dtype)
    g = (rng.standard_normal((num_g, dim)) * 3).astype(dtype)
    return q, g


def direct(q, g, metric, normalize):
    """Per-pair formulas in float64 with Python loops."""
    q = np.asarray(q, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    if normalize or metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
    out = np.empty((len(q), len(g)))
    for i in range(len(q)):
        for j in range(len(g)):
            diff = q[i] - g[j]
            if metric == "sqeuclidean":
                out[i, j] = float(diff @ diff)
            elif metric == "euclidean":
                out[i, j] = float(np.sqrt(diff @ diff))
            else:
                out[i, j] = 1.0 - float(q[i] @ g[j])
    return out


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_direct_formula(seed, metric, normalize, dtype):
    q, g = features(seed, dtype=dtype)
    got = pairwise_distance(q, g, metric=metric, normalize=normalize)
    assert got.dtype == np.float32 and got.shape == (17, 29)
    want = direct(q, g, metric, normalize)
    # Output is float32; raw (unnormalised) squared distances are O(400).
    scale = 1.0 if (normalize or metric == "cosine") else float(np.abs(want).max())
    atol = (2e-5 if dtype == np.float32 else 1e-6) * scale
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)


def test_default_is_normalised_sqeuclidean():
    q, g = features(3)
    np.testing.assert_array_equal(
        pairwise_distance(q, g), pairwise_distance(q, g, metric="sqeuclidean", normalize=True)
    )
    # With unit vectors: |q - g|^2 = 2 - 2 cos = 2 * cosine distance.
    np.testing.assert_allclose(
        pairwise_distance(q, g), 2 * pairwise_distance(q, g, metric="cosine"), atol=1e-5
    )


def test_cosine_ignores_normalize_and_scale():
    q, g = features(4)
    a = pairwise_distance(q, g, metric="cosine", normalize=True)
    b = pairwise_distance(q * 7.0, g, metric="cosine", normalize=False)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_self_distance_clamped_non_negative():
    q, _ = features(5, num_q=50, dim=256)
    for normalize in (True, False):
        # Cancellation in |q|^2 + |g|^2 - 2 q.g (float32) leaves noise of a few ulp of |q|^2
        # on the diagonal; clamping keeps it non-negative.
        sq_tol = 4e-6 * (1.0 if normalize else float((q.astype(np.float64) ** 2).sum(1).max()))
        tols = {"sqeuclidean": sq_tol, "euclidean": np.sqrt(sq_tol), "cosine": 4e-6}
        for metric in METRICS:
            d = pairwise_distance(q, q, metric=metric, normalize=normalize)
            assert (d >= 0).all()
            assert np.abs(np.diag(d)).max() <= tols[metric]


@pytest.mark.parametrize("metric", METRICS)
def test_torch_and_numpy_inputs_agree(metric):
    q, g = features(6)
    want = pairwise_distance(q, g, metric=metric)
    tq = torch.from_numpy(q).requires_grad_(True)
    got = pairwise_distance(tq, torch.from_numpy(g), metric=metric)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    mixed = pairwise_distance(q, torch.from_numpy(g), metric=metric)
    np.testing.assert_array_equal(mixed, want)
    # Half precision tensors are widened to float32.
    half = pairwise_distance(tq.half(), torch.from_numpy(g).bfloat16(), metric=metric)
    np.testing.assert_allclose(half, want, atol=5e-2)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("normalize", [True, False])
def test_chunking_matches_no_chunking(metric, normalize):
    q64, g64 = features(7, num_q=41, num_g=33, dtype=np.float64)
    full = pairwise_distance(q64, g64, metric=metric, normalize=normalize, chunk_size=10_000)
    for chunk in (1, 2, 5, 16, 40, 41, None):
        got = pairwise_distance(q64, g64, metric=metric, normalize=normalize, chunk_size=chunk)
        # float64 compute, rounded to float32 once: identical.
        np.testing.assert_array_equal(got, full)
    # In float32 BLAS may pick different kernels for different block heights, so results can
    # differ in the last bit; they agree to float32 rounding.
    q32, g32 = q64.astype(np.float32), g64.astype(np.float32)
    full32 = pairwise_distance(q32, g32, metric=metric, normalize=normalize, chunk_size=10_000)
    scale = 1.0 if normalize or metric == "cosine" else float(full32.max())
    for chunk in (1, 3, 16):
        got = pairwise_distance(q32, g32, metric=metric, normalize=normalize, chunk_size=chunk)
        np.testing.assert_allclose(got, full32, rtol=0, atol=2e-6 * scale)


def test_zero_vector_and_integer_features():
    q = np.array([[0, 0, 0], [1, 0, 0]])
    g = np.array([[0, 2, 0]])
    d = pairwise_distance(q, g)  # integer input is accepted
    np.testing.assert_allclose(d, [[1.0], [2.0]], atol=1e-6)
    np.testing.assert_allclose(pairwise_distance(q, g, metric="cosine"), [[1.0], [1.0]])


def test_empty_query_set():
    _, g = features(8)
    assert pairwise_distance(np.zeros((0, 24), np.float32), g).shape == (0, 29)


def test_identical_features_give_perfect_retrieval():
    q, _ = features(9, num_q=30)
    d = pairwise_distance(q, q.copy())
    res = evaluate(d, np.arange(30), np.arange(30), max_rank=5)
    assert res["mAP"] == 1.0 and res["cmc"][0] == 1.0


@pytest.mark.parametrize(
    "query, gallery, kwargs, message",
    [
        (np.zeros((2, 3)), np.zeros((4, 5)), {},
         "feature dimensions differ: query has 3, gallery has 5"),
        (np.array([[0.0, np.nan]]), np.ones((2, 2)), {}, "query contains NaN"),
        (np.ones((2, 2)), np.array([[np.inf, 0.0]]), {}, "gallery contains infinite"),
        (torch.tensor([[float("nan"), 1.0]]), np.ones((1, 2)), {}, "query contains NaN"),
        (np.ones(3), np.ones((2, 3)), {}, "2-D"),
        (np.ones((2, 3)), np.ones((2, 3)), {"metric": "manhattan"}, "unknown distance metric"),
        (np.ones((2, 3)), np.ones((2, 3)), {"chunk_size": 0}, "chunk_size"),
        (np.ones((2, 3), complex), np.ones((2, 3)), {}, "real numbers"),
        (np.ones((2, 0)), np.ones((2, 0)), {}, "dimension 0"),
    ],
)
def test_errors(query, gallery, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pairwise_distance(query, gallery, **kwargs)
