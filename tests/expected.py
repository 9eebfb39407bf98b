"""What seeded tiny runs must score (importable from every test folder).

Two kinds of expectation for the pipeline tests:

* chance levels: the metrics random features reach on the same re-identification protocols; a
  tiny training run is only evidence of learning when it beats a high percentile of them;
* pinned figures: metrics of a seeded CPU run measured once and written into the test, so that a
  change of behaviour (another random draw, preprocessing, loss or evaluation) fails the test.
  CPU runs repeat exactly on one machine; another thread count may reorder float sums (one
  thread instead of two moved an mAP by 0.07), hence the tolerances of :func:`assert_pinned`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sarbridge.data.hoss import load_hoss
from sarbridge.data.splits import build_protocols
from sarbridge.tasks.reid.evaluate import evaluate_protocols

METRICS = ("mAP", "R1", "R5", "R10", "mINP")


def random_feature_metrics(root: Path | str, draws: int = 100, dim: int = 32,
                           seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Evaluate ``draws`` sets of random Gaussian features on the protocols of a HOSS-layout folder.

    The protocols (query/gallery lists, ``subset`` folders or derived) are those a trained model is
    evaluated on, so the returned distributions are the chance level of exactly that evaluation.

    Args:
        root: the dataset folder (``query``, ``bounding_box_test`` ...).
        draws: number of random feature sets.
        dim: feature dimension.
        seed: seed of the random features.

    Returns:
        ``protocol -> metric -> (draws,) array`` of percentages, for ``mAP``, ``R1``, ``R5``,
        ``R10`` and ``mINP``.
    """
    protocols, _ = build_protocols(load_hoss(root))
    paths = sorted({s.path for q, g in protocols.values() for s in [*q, *g]})
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, dict[str, list[float]]] = {name: {k: [] for k in METRICS} for name in protocols}
    for _ in range(draws):
        feats = torch.randn(len(paths), dim, generator=gen)
        res = evaluate_protocols(dict(zip(paths, feats)), protocols)
        for name, m in res.items():
            for k in METRICS:
                out[name][k].append(m[k])
    return {name: {k: np.asarray(v) for k, v in d.items()} for name, d in out.items()}


def chance_bound(root: Path | str, protocol: str, metric: str, q: float = 99.0, draws: int = 100) -> float:
    """The ``q``-th percentile of ``metric`` under random features (see :func:`random_feature_metrics`)."""
    return float(np.percentile(random_feature_metrics(root, draws)[protocol][metric], q))


#: Tolerances of the continuous figures: mAP in points, localisation errors in metres.
CONTINUOUS = {"mAP": 0.5, "mINP": 0.5, "mean_err_m": 1.0, "median_err_m": 1.0}


def assert_pinned(metrics: dict[str, dict[str, float]], pins: dict[str, dict[str, float]],
                  tolerances: dict[str, float] | None = None) -> None:
    """Check ``metrics[group][key]`` against ``pins[group][key]`` for every pinned figure.

    A continuous figure (a key of ``tolerances``, default :data:`CONTINUOUS`) may move by its
    tolerance; any other is a rank or success rate over ``metrics[group]["queries"]`` queries and may
    move by one query (``100 / queries`` points): one near tie broken the other way.
    """
    tol = CONTINUOUS if tolerances is None else tolerances
    for group, want in pins.items():
        got = metrics[group]
        for key, value in want.items():
            abs_tol = tol[key] if key in tol else 100.0 / got["queries"] + 1e-9
            assert got[key] == pytest.approx(value, abs=abs_tol), (group, key, got[key], value)
