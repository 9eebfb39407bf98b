"""The modality-gap measures against slow, obviously-correct references on seeded data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sarbridge.retrieval.modality_gap import (
    METRIC_NOTES,
    centroid_gap,
    knn_mixing,
    linear_probe_accuracy,
    median_bandwidth,
    mmd_rbf,
    modality_gap_report,
    nearest_neighbour_cosines,
    sliced_wasserstein,
    wasserstein_1d,
)


def exact_wp_by_repetition(x: np.ndarray, y: np.ndarray, p: float) -> float:
    """W_p of two 1-D empirical distributions: repeat every sample so both sets have lcm(N, M)
    equally weighted atoms, then pair the sorted atoms (the optimal 1-D coupling)."""
    n, m = len(x), len(y)
    L = n * m // math.gcd(n, m)
    xs = np.sort(np.repeat(x, L // n))
    ys = np.sort(np.repeat(y, L // m))
    return float(np.mean(np.abs(xs - ys) ** p) ** (1.0 / p))


@pytest.mark.parametrize("n,m,p", [(7, 7, 2.0), (6, 9, 2.0), (5, 8, 1.0), (13, 4, 3.0), (1, 5, 2.0)])
def test_wasserstein_1d_is_exact(n: int, m: int, p: float) -> None:
    rng = np.random.default_rng(n * 100 + m)
    x, y = rng.normal(size=n), rng.normal(0.7, 2.0, size=m)
    got = float(wasserstein_1d(x, y, p=p)[0])
    assert got == pytest.approx(exact_wp_by_repetition(x, y, p), rel=1e-10)
    if n == m:  # the textbook formula: sorted samples paired one to one
        assert got == pytest.approx(float(np.mean(np.abs(np.sort(x) - np.sort(y)) ** p) ** (1 / p)), rel=1e-10)


def test_wasserstein_1d_matches_scipy_for_p1() -> None:
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(1)
    x, y = rng.exponential(size=23), rng.normal(size=31)
    assert float(wasserstein_1d(x, y, p=1)[0]) == pytest.approx(wasserstein_distance(x, y), rel=1e-10)


def test_sliced_wasserstein_on_1d_data_is_the_exact_distance() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(11, 1)), rng.normal(1.0, 0.5, size=(17, 1))
    for p in (1.0, 2.0):
        sw = sliced_wasserstein(x, y, num_projections=16, p=p, normalize=False)
        assert sw == pytest.approx(exact_wp_by_repetition(x[:, 0], y[:, 0], p), rel=1e-10)


def test_sliced_wasserstein_zero_for_identical_sets_and_monotone_in_shift() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 8))
    assert sliced_wasserstein(x, x.copy(), normalize=False) == pytest.approx(0.0, abs=1e-12)
    assert sliced_wasserstein(x, x[::-1].copy()) == pytest.approx(0.0, abs=1e-12)  # order does not matter
    direction = rng.normal(size=8)
    direction /= np.linalg.norm(direction)
    shifts = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0]
    values = [sliced_wasserstein(x, x + s * direction, normalize=False) for s in shifts]
    assert all(a < b for a, b in zip(values, values[1:])), values
    # a pure translation by t moves every projection by <t, theta>: SW_2 = t * sqrt(mean <d, theta>^2)
    gen = torch.Generator().manual_seed(0)
    theta = torch.nn.functional.normalize(torch.randn(8, 256, generator=gen, dtype=torch.float64), dim=0).numpy()
    expected = 2.0 * float(np.sqrt(np.mean((direction @ theta) ** 2)))
    assert values[4] == pytest.approx(expected, rel=1e-9)


def test_sliced_wasserstein_is_seeded() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(25, 5)) + 1
    assert sliced_wasserstein(x, y, seed=5) == sliced_wasserstein(torch.tensor(x), torch.tensor(y), seed=5)
    assert sliced_wasserstein(x, y, seed=5) != sliced_wasserstein(x, y, seed=6)


def mmd_double_loop(x: np.ndarray, y: np.ndarray, bandwidths: list[float]) -> float:
    def k(a: np.ndarray, b: np.ndarray) -> float:
        d2 = float(np.sum((a - b) ** 2))
        return sum(math.exp(-d2 / (2 * s * s)) for s in bandwidths)

    n, m = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    sxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return sxx + syy - 2 * sxy


def test_mmd_matches_double_loop() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(12, 4)), rng.normal(0.5, 1.2, size=(9, 4))
    assert mmd_rbf(x, y, bandwidth=1.3, normalize=False) == pytest.approx(mmd_double_loop(x, y, [1.3]), rel=1e-9)
    assert mmd_rbf(x, y, bandwidth=[0.5, 2.0], normalize=False) == pytest.approx(
        mmd_double_loop(x, y, [0.5, 2.0]), rel=1e-9)
    # default bandwidth: the median pairwise distance of the pooled, normalised features
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    yn = y / np.linalg.norm(y, axis=1, keepdims=True)
    z = np.concatenate([xn, yn])
    dists = sorted(float(np.linalg.norm(z[i] - z[j])) for i in range(len(z)) for j in range(i + 1, len(z)))
    med = dists[(len(dists) - 1) // 2]
    assert median_bandwidth(z) == pytest.approx(med, rel=1e-9)
    assert mmd_rbf(x, y) == pytest.approx(mmd_double_loop(xn, yn, [med]), rel=1e-9)


def test_mmd_near_zero_for_same_distribution_and_larger_for_shift() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(150, 6)), rng.normal(size=(150, 6))
    same = mmd_rbf(a, b, normalize=False)
    shifted = mmd_rbf(a, b + 1.0, normalize=False)
    assert abs(same) < 0.02 and shifted > 0.2


def test_linear_probe_chance_and_separable() -> None:
    rng = np.random.default_rng(7)
    same = linear_probe_accuracy(rng.normal(size=(200, 8)), rng.normal(size=(160, 8)), seed=0)
    assert 0.38 <= same <= 0.62, same
    sep = linear_probe_accuracy(rng.normal(size=(100, 8)) + 4.0, rng.normal(size=(80, 8)) - 4.0, seed=0)
    assert sep >= 0.99, sep
    with pytest.raises(ValueError, match="at least 2"):
        linear_probe_accuracy(np.ones((1, 3)), np.ones((5, 3)))


def test_centroid_gap_hand_computed() -> None:
    # optical means (1, 0) after normalisation, SAR (0, 1): distance sqrt(2), cosine distance 1
    g = centroid_gap([[2.0, 0.0], [5.0, 0.0]], [[0.0, 3.0], [0.0, 0.5], [0.0, 9.0]])
    assert g["centroid_distance"] == pytest.approx(math.sqrt(2))
    assert g["centroid_cosine_distance"] == pytest.approx(1.0)
    # optical mean (0.5, 0.5), SAR mean (1/sqrt2, 1/sqrt2): same direction
    g = centroid_gap([[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0]])
    assert g["centroid_cosine_distance"] == pytest.approx(0.0, abs=1e-12)
    assert g["centroid_distance"] == pytest.approx(math.sqrt(2) * (1 / math.sqrt(2) - 0.5))


def test_nearest_neighbour_cosines_match_double_loop() -> None:
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(9, 5)), rng.normal(size=(7, 5)) + 0.3

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    within, cross = [], []
    for own, other in ((x, y), (y, x)):
        for i, a in enumerate(own):
            within.append(max(cos(a, b) for j, b in enumerate(own) if j != i))
            cross.append(max(cos(a, b) for b in other))
    got = nearest_neighbour_cosines(x, y)
    assert got["nn_cos_within"] == pytest.approx(np.mean(within), rel=1e-10)
    assert got["nn_cos_cross"] == pytest.approx(np.mean(cross), rel=1e-10)
    assert got["nn_cos_gap"] == pytest.approx(np.mean(within) - np.mean(cross), rel=1e-9)


def test_knn_mixing_matches_double_loop_and_extremes() -> None:
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(8, 4)), rng.normal(size=(5, 4)) + 0.4
    z = np.concatenate([x, y])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    lab = [0] * 8 + [1] * 5
    n, m, k = 8, 5, 3
    observed, expected = [], []
    for i in range(n + m):
        others = sorted((j for j in range(n + m) if j != i), key=lambda j: -float(z[i] @ z[j]))[:k]
        observed.append(sum(lab[j] != lab[i] for j in others) / k)
        expected.append((m if lab[i] == 0 else n) / (n + m - 1))
    assert knn_mixing(x, y, k=k) == pytest.approx(np.mean(observed) / np.mean(expected), rel=1e-10)
    far = knn_mixing(rng.normal(size=(30, 6)) + 10.0, rng.normal(size=(30, 6)) - 10.0, normalize=False)
    assert far == 0.0
    same = knn_mixing(rng.normal(size=(200, 6)), rng.normal(size=(200, 6)))
    assert 0.85 <= same <= 1.15, same


def test_report_has_every_documented_metric_and_orders_gaps() -> None:
    rng = np.random.default_rng(9)
    base = rng.normal(size=(80, 16))
    aligned = modality_gap_report(base[:40], base[40:])
    gap = modality_gap_report(base[:40] + 3.0, base[40:] - 3.0)
    assert list(aligned) == [k for k in METRIC_NOTES if k in aligned] and set(aligned) == set(METRIC_NOTES)
    for k in ("sliced_wasserstein", "sliced_wasserstein_rel", "mmd2_rbf", "linear_probe_acc", "centroid_distance",
              "centroid_cosine_distance", "nn_cos_gap"):
        assert gap[k] > aligned[k], k
    assert gap["knn_mixing"] < aligned["knn_mixing"]
    assert gap["linear_probe_acc"] >= 0.99 and aligned["linear_probe_acc"] < 0.75
    assert all(isinstance(v, float) for v in gap.values())
