"""CMPC's metric definitions (``cmpc_*``: its "mAP" as a mean reciprocal rank, top-1 position
error, success curve), against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from sarbridge.retrieval.distance import RetrievalInputError
from sarbridge.retrieval.geo_metrics import cmpc_metrics, localisation_metrics


def test_cmpc_metrics_by_hand():
    ranked = np.array([[1, 0, 2], [2, 0, 1], [0, 1, 2]])
    targets = np.array([0, 0, 2])
    ref_xy = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    q_xy = np.zeros((3, 2))
    m = cmpc_metrics(ranked, targets, ref_xy, q_xy, max_err=20.0, points=5)
    # ranks 2, 2, 3 -> mean(1/2, 1/2, 1/3); top-1 errors 5, 10, 0
    assert m["cmpc_map_mrr"] == pytest.approx((0.5 + 0.5 + 1 / 3) / 3 * 100)
    assert m["cmpc_err_mean"] == pytest.approx(5.0)
    assert m["cmpc_success_thresholds"] == [0.0, 5.0, 10.0, 15.0, 20.0]
    assert m["cmpc_success_curve"] == pytest.approx([100 / 3, 200 / 3, 100.0, 100.0, 100.0])
    assert m["cmpc_mrr_exact"] is True
    d = cmpc_metrics(ranked, targets, ref_xy, q_xy)
    assert len(d["cmpc_success_thresholds"]) == 20 and d["cmpc_success_thresholds"][-1] == 200.0
    assert d["cmpc_success_thresholds"][1] == pytest.approx(200 / 19)
    # a match beyond a truncated list: 0 unless its full rank is known
    short = cmpc_metrics(np.array([[1, 2]]), np.array([0]), ref_xy, q_xy[:1])
    assert short["cmpc_map_mrr"] == 0.0 and short["cmpc_mrr_exact"] is False
    full = cmpc_metrics(np.array([[1, 2]]), np.array([0]), ref_xy, q_xy[:1], target_rank=np.array([4]))
    assert full["cmpc_map_mrr"] == pytest.approx(25.0) and full["cmpc_mrr_exact"] is True


def test_cmpc_map_equals_our_map_for_a_single_match_and_errors():
    rng = np.random.default_rng(0)
    ranked = np.array([rng.permutation(6) for _ in range(5)])
    targets = rng.integers(0, 6, size=5)
    xy = rng.random((6, 2)) * 100
    q = rng.random((5, 2)) * 100
    ours, cmpc = localisation_metrics(ranked, targets, xy, q), cmpc_metrics(ranked, targets, xy, q)
    assert cmpc["cmpc_map_mrr"] == pytest.approx(ours["mAP"])
    assert cmpc["cmpc_err_mean"] == pytest.approx(ours["mean_err_m"])
    with pytest.raises(RetrievalInputError, match="points >= 2"):
        cmpc_metrics(ranked, targets, xy, q, points=1)
    with pytest.raises(RetrievalInputError, match="target_rank"):
        cmpc_metrics(ranked, targets, xy, q, target_rank=np.zeros(5))
