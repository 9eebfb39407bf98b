"""Measured gaps between the optical and the SAR feature distributions.

Every function takes ``X`` (optical, ``(N, D)``) and ``Y`` (SAR, ``(M, D)``) as torch tensors or
NumPy arrays. Retrieval ranks by cosine similarity, so features are L2-normalised first unless
``normalize=False``. Larger values mean a larger gap for every measure except the probe accuracy
(0.5 = no gap, 1.0 = perfectly separable modalities), the nearest-neighbour cosines and the
neighbour mixing (1 = no gap):

- :func:`sliced_wasserstein`: distance between the two point clouds along random directions.
- :func:`mmd_rbf`: unbiased squared maximum mean discrepancy with a Gaussian kernel.
- :func:`linear_probe_accuracy`: how well a linear classifier tells the modalities apart.
- :func:`centroid_gap`: distance between the modality means (Euclidean and cosine).
- :func:`nearest_neighbour_cosines`: mean best cosine to another point of the same modality versus
  to a point of the other modality.
- :func:`knn_mixing`: how often nearest neighbours come from the other modality, relative to chance
  (1 = mixed, 0 = separate; like the probe, it ignores the overall scale of the distances).

:func:`modality_gap_report` computes all of them in one dictionary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = Any  # torch.Tensor | np.ndarray | nested sequences

#: One-line reading of every key of :func:`modality_gap_report` (used by ``analysis.md``).
METRIC_NOTES: dict[str, str] = {
    "sliced_wasserstein": "sliced 2-Wasserstein distance between the optical and SAR feature clouds "
                          "(0 = same distribution; lower = smaller gap)",
    "sliced_wasserstein_rel": "sliced_wasserstein divided by the median pairwise distance of all features "
                              "(scale-free: the gap relative to the spread of the features)",
    "mmd2_rbf": "unbiased squared MMD, Gaussian kernel with the median-distance bandwidth "
                "(~0 or negative = indistinguishable; lower = smaller gap)",
    "linear_probe_acc": "held-out balanced accuracy of a logistic regression predicting the modality "
                        "(0.5 = no gap, 1.0 = perfectly separable)",
    "centroid_distance": "Euclidean distance between the optical and SAR mean features on the unit sphere "
                         "(the 'modality gap' vector length; lower = smaller gap)",
    "centroid_cosine_distance": "1 - cosine between the optical and SAR mean features (0 = same direction)",
    "nn_cos_within": "mean cosine of each feature to its nearest neighbour of the SAME modality",
    "nn_cos_cross": "mean cosine of each feature to its nearest neighbour of the OTHER modality",
    "nn_cos_gap": "nn_cos_within - nn_cos_cross (0 = the other modality is as close as one's own; "
                  "lower = smaller gap)",
    "knn_mixing": "share of each feature's 5 nearest neighbours from the other modality, relative to the "
                  "share expected if modality did not matter (1 = fully mixed, 0 = separate clouds; scale-free)",
}


def _as_tensor(a: ArrayLike, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).detach().to("cpu", torch.float64)
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) array, got shape {tuple(t.shape)}")
    return t


def _prepare(X: ArrayLike, Y: ArrayLike, normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _as_tensor(X, "X"), _as_tensor(Y, "Y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"X and Y have different feature sizes: {x.shape[1]} vs {y.shape[1]}")
    if normalize:
        x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
    return x, y


def wasserstein_1d(x: ArrayLike, y: ArrayLike, p: float = 2.0) -> torch.Tensor:
    """Exact ``W_p`` between 1-D empirical distributions, one per column.

    The distance is ``(integral_0^1 |F^-1(t) - G^-1(t)|^p dt)^(1/p)`` with the empirical quantile
    functions ``F^-1`` and ``G^-1``. Both are step functions (steps at ``i/N`` and ``j/M``), so the
    integral is computed exactly on the merged steps: different sample sizes ``N != M`` need no
    resampling or interpolation.

    Args:
        x: ``(N,)`` or ``(N, L)`` samples (``L`` distributions side by side).
        y: ``(M,)`` or ``(M, L)`` samples.
        p: order, >= 1.

    Returns:
        ``(L,)`` float64 distances.
    """
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p}")
    xs = torch.sort(_as_tensor(x, "x"), dim=0).values
    ys = torch.sort(_as_tensor(y, "y"), dim=0).values
    n, m = xs.shape[0], ys.shape[0]
    # merged breakpoints of both quantile functions, exact as fractions with denominator n*m
    steps = np.union1d(np.arange(1, n + 1) * m, np.arange(1, m + 1) * n)  # t * n * m
    lower = np.concatenate([[0], steps[:-1]])
    mid2 = steps + lower  # 2 * t_mid * n * m: integer arithmetic, no rounding at the steps
    ix = torch.as_tensor(mid2 // (2 * m))  # floor(t_mid * n)
    iy = torch.as_tensor(mid2 // (2 * n))  # floor(t_mid * m)
    w = torch.as_tensor((steps - lower) / float(n * m), dtype=torch.float64)
    diff = (xs[ix] - ys[iy]).abs().pow(p)
    return (w[:, None] * diff).sum(0).pow(1.0 / p)


def sliced_wasserstein(
    X: ArrayLike, Y: ArrayLike, num_projections: int = 256, seed: int = 0, p: float = 2.0, normalize: bool = True
) -> float:
    """Sliced Wasserstein-``p`` distance between the optical and the SAR feature sets.

    ``SW_p = (mean_l W_p(<X, theta_l>, <Y, theta_l>)^p)^(1/p)`` over ``num_projections`` random unit
    directions ``theta_l`` (seeded). Each 1-D distance is exact (:func:`wasserstein_1d`; ``N != M``
    handled by integrating the two empirical quantile functions over their merged steps). With
    1-D features every direction is ``+-1`` and the result is the exact ``W_p``.

    Args:
        X: optical features ``(N, D)``.
        Y: SAR features ``(M, D)``.
        num_projections: random directions.
        seed: seed of the directions.
        p: order, >= 1.
        normalize: L2-normalise the features first.

    Returns:
        The distance (0 for identical sets).
    """
    x, y = _prepare(X, Y, normalize)
    gen = torch.Generator().manual_seed(int(seed))
    theta = F.normalize(torch.randn(x.shape[1], int(num_projections), generator=gen, dtype=torch.float64), dim=0)
    w = wasserstein_1d(x @ theta, y @ theta, p=p)
    return float(w.pow(p).mean().pow(1.0 / p))


def median_bandwidth(Z: ArrayLike, max_points: int = 2500, seed: int = 0) -> float:
    """Median of the positive pairwise Euclidean distances between points of ``Z`` (for an even
    count, the lower of the two middle values).

    Above ``max_points`` points the median is taken over a seeded random subset of that size.
    """
    z = _as_tensor(Z, "Z")
    if z.shape[0] > max_points:
        gen = torch.Generator().manual_seed(int(seed))
        z = z[torch.randperm(z.shape[0], generator=gen)[:max_points]]
    d = torch.cdist(z, z)
    iu = torch.triu_indices(z.shape[0], z.shape[0], offset=1)
    vals = d[iu[0], iu[1]]
    vals = vals[vals > 0]
    return float(vals.median()) if vals.numel() else 1.0  # all points equal: any positive width


def _rbf(a: torch.Tensor, b: torch.Tensor, bandwidths: Sequence[float]) -> torch.Tensor:
    d2 = torch.cdist(a, b).pow(2)
    return sum(torch.exp(-d2 / (2.0 * s * s)) for s in bandwidths)  # type: ignore[return-value]


def mmd_rbf(
    X: ArrayLike, Y: ArrayLike, bandwidth: float | Sequence[float] | None = None, normalize: bool = True
) -> float:
    """Unbiased estimate of the squared maximum mean discrepancy with a Gaussian kernel.

    ``MMD^2_u = sum_{i!=j} k(x_i, x_j) / (N(N-1)) + sum_{i!=j} k(y_i, y_j) / (M(M-1))
    - 2 sum_{i,j} k(x_i, y_j) / (NM)`` with ``k(a, b) = exp(-|a-b|^2 / (2 s^2))``; several
    bandwidths ``s`` sum their kernels. Being unbiased it can be slightly negative when the two
    distributions are the same.

    Args:
        X: optical features ``(N, D)``, N >= 2.
        Y: SAR features ``(M, D)``, M >= 2.
        bandwidth: ``s``, a list of them, or None for the median pairwise distance of the pooled
            (normalised) features (:func:`median_bandwidth`).
        normalize: L2-normalise the features first.
    """
    x, y = _prepare(X, Y, normalize)
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples per set, got {n} and {m}")
    if bandwidth is None:
        bws: list[float] = [median_bandwidth(torch.cat([x, y]))]
    elif isinstance(bandwidth, (int, float)):
        bws = [float(bandwidth)]
    else:
        bws = [float(b) for b in bandwidth]
    if not bws or min(bws) <= 0:
        raise ValueError(f"bandwidths must be positive, got {bws}")
    kxx, kyy, kxy = _rbf(x, x, bws), _rbf(y, y, bws), _rbf(x, y, bws)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def linear_probe_accuracy(
    X: ArrayLike, Y: ArrayLike, folds: int = 5, seed: int = 0, normalize: bool = True, C: float = 1.0
) -> float:
    """Held-out balanced accuracy of a logistic regression that predicts the modality.

    Stratified ``folds``-fold cross-validation (shuffled with ``seed``; fewer folds when a modality
    has fewer samples); features are standardised on each training fold; the balanced accuracy
    (mean of the per-modality recalls, so unequal set sizes do not inflate it) is averaged over
    the folds.

    Args:
        X: optical features ``(N, D)``.
        Y: SAR features ``(M, D)``; each set needs at least 2 samples.
        folds: cross-validation folds (>= 2).
        seed: fold shuffling seed.
        normalize: L2-normalise the features first.
        C: inverse L2 regularisation strength of the logistic regression.

    Returns:
        0.5 for indistinguishable modalities up to 1.0 for perfectly separable ones.
    """
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 - lazy: heavy; only for the linear probe
    from sklearn.metrics import balanced_accuracy_score  # noqa: PLC0415 - lazy: heavy; only for the linear probe
    from sklearn.model_selection import StratifiedKFold  # noqa: PLC0415 - lazy: heavy; only for the linear probe
    from sklearn.pipeline import make_pipeline  # noqa: PLC0415 - lazy: heavy; only for the linear probe
    from sklearn.preprocessing import StandardScaler  # noqa: PLC0415 - lazy: heavy; only for the linear probe

    x, y = _prepare(X, Y, normalize)
    k = min(int(folds), x.shape[0], y.shape[0])
    if k < 2:
        raise ValueError(f"the linear probe needs at least 2 samples per modality, got {x.shape[0]} and {y.shape[0]}")
    feats = torch.cat([x, y]).numpy()
    labels = np.concatenate([np.zeros(x.shape[0], int), np.ones(y.shape[0], int)])
    scores = []
    for tr, te in StratifiedKFold(n_splits=k, shuffle=True, random_state=int(seed)).split(feats, labels):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
        clf.fit(feats[tr], labels[tr])
        scores.append(balanced_accuracy_score(labels[te], clf.predict(feats[te])))
    return float(np.mean(scores))


def centroid_gap(X: ArrayLike, Y: ArrayLike, normalize: bool = True) -> dict[str, float]:
    """Distance between the modality means.

    Returns:
        ``{"centroid_distance": |mu_x - mu_y|, "centroid_cosine_distance": 1 - cos(mu_x, mu_y)}``.
    """
    x, y = _prepare(X, Y, normalize)
    mx, my = x.mean(0), y.mean(0)
    cos = F.cosine_similarity(mx[None], my[None], eps=1e-12)[0]
    return {"centroid_distance": float((mx - my).norm()), "centroid_cosine_distance": float(1.0 - cos)}


def nearest_neighbour_cosines(X: ArrayLike, Y: ArrayLike, normalize: bool = True) -> dict[str, float]:
    """Mean nearest-neighbour cosine within and across modalities.

    For every feature (of both sets): its largest cosine to another feature of its own modality
    (itself excluded) and its largest cosine to a feature of the other modality; each averaged over
    all ``N + M`` features. Cosines do not depend on the feature scale, so ``normalize`` only
    exists for a uniform signature.

    Returns:
        ``{"nn_cos_within": ..., "nn_cos_cross": ..., "nn_cos_gap": within - cross}``.
    """
    x, y = _prepare(X, Y, normalize)
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"nearest neighbours need at least 2 samples per modality, got {x.shape[0]} and {y.shape[0]}")
    xn, yn = F.normalize(x, dim=1), F.normalize(y, dim=1)

    def within(a: torch.Tensor) -> torch.Tensor:
        s = a @ a.t()
        s.fill_diagonal_(-float("inf"))
        return s.max(1).values

    cross_s = xn @ yn.t()
    w = torch.cat([within(xn), within(yn)]).mean()
    c = torch.cat([cross_s.max(1).values, cross_s.max(0).values]).mean()
    return {"nn_cos_within": float(w), "nn_cos_cross": float(c), "nn_cos_gap": float(w - c)}


def knn_mixing(X: ArrayLike, Y: ArrayLike, k: int = 5, normalize: bool = True) -> float:
    """How mixed the modalities are among nearest neighbours (rank-based, so scale-free).

    For every feature (of both sets), the fraction of its ``k`` nearest neighbours by cosine
    (itself excluded) that belong to the other modality; the mean of these fractions divided by
    its value under random labels (``M / (N + M - 1)`` for an optical feature, ``N / (N + M - 1)``
    for a SAR one, averaged the same way). ``k`` is clipped to ``N + M - 1``.

    Returns:
        1 when neighbours ignore the modality, 0 when no neighbour is of the other modality
        (values above 1 mean the other modality is preferred).
    """
    x, y = _prepare(X, Y, normalize)
    n, m = x.shape[0], y.shape[0]
    if n + m < 2:
        raise ValueError("knn_mixing needs at least 2 features in all")
    z = F.normalize(torch.cat([x, y]), dim=1)
    labels = torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(m, dtype=torch.bool)])
    kk = min(int(k), n + m - 1)
    sims = z @ z.t()
    sims.fill_diagonal_(-float("inf"))
    nbrs = sims.topk(kk, dim=1).indices
    observed = (labels[nbrs] != labels[:, None]).double().mean()
    expected = (n * m / (n + m - 1) + m * n / (n + m - 1)) / (n + m)
    return float(observed / expected)


def modality_gap_report(
    X: ArrayLike, Y: ArrayLike, seed: int = 0, normalize: bool = True, num_projections: int = 256, folds: int = 5
) -> dict[str, float]:
    """Every measure of this module for one pair of feature sets (keys as in :data:`METRIC_NOTES`).

    Args:
        X: optical features ``(N, D)``, N >= 2.
        Y: SAR features ``(M, D)``, M >= 2.
        seed: seed of the random directions and the probe's folds.
        normalize: L2-normalise the features first (retrieval ranks by cosine).
        num_projections: directions of the sliced Wasserstein distance.
        folds: folds of the linear probe.
    """
    x, y = _prepare(X, Y, normalize)
    sw = sliced_wasserstein(x, y, num_projections=num_projections, seed=seed, normalize=False)
    spread = median_bandwidth(torch.cat([x, y]), seed=seed)
    out = {
        "sliced_wasserstein": sw,
        "sliced_wasserstein_rel": sw / spread if spread > 0 else 0.0,
        "mmd2_rbf": mmd_rbf(x, y, normalize=False),
        "linear_probe_acc": linear_probe_accuracy(x, y, folds=folds, seed=seed, normalize=False),
    }
    out.update(centroid_gap(x, y, normalize=False))
    out.update(nearest_neighbour_cosines(x, y, normalize=False))
    out["knn_mixing"] = knn_mixing(x, y, normalize=False)
    return out


__all__ = [
    "METRIC_NOTES", "centroid_gap", "knn_mixing", "linear_probe_accuracy", "median_bandwidth", "mmd_rbf", "modality_gap_report",
    "nearest_neighbour_cosines", "sliced_wasserstein", "wasserstein_1d",
]
