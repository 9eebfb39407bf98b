"""Tests for sarbridge.retrieval.geo_metrics: hand-computed cases and a naive per-query loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sarbridge.retrieval.distance import RetrievalInputError
from sarbridge.retrieval.geo_metrics import EARTH_RADIUS_M, haversine_m, localisation_metrics

REF_XY = np.array([[0, 0], [100, 0], [0, 100], [100, 100], [200, 0], [0, 200]], dtype=np.float64)
RANKED = np.array([[0, 1, 2], [3, 1, 0], [4, 5, 2]])
TARGETS = np.array([0, 1, 3])
QUERY_XY = np.array([[0.0, 0.0], [100.0, 30.0], [0.0, 0.0]])


# --------------------------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------------------------
def test_hand_computed_default_case():
    # q0: target at rank 1; q1: target at rank 2; q2: target not in its 3-long list.
    # Predictions = top-1 references (0,0), (100,100), (200,0) -> errors 0, 70, 200 m.
    out = localisation_metrics(RANKED, TARGETS, REF_XY, QUERY_XY)
    assert list(out) == ["top1", "top5", "top10", "top20", "mAP", "mean_err_m", "median_err_m",
                         "succ_50m", "succ_100m", "succ_150m", "succ_200m", "queries"]
    assert out["top1"] == pytest.approx(100 / 3)
    # K = 3 < 5: only the ranked references count, so top5 == top10 == top20 == top3.
    assert out["top5"] == out["top10"] == out["top20"] == pytest.approx(200 / 3)
    assert out["mAP"] == pytest.approx(100 * (1 + 0.5 + 0) / 3)
    assert out["mean_err_m"] == pytest.approx(90.0)
    assert out["median_err_m"] == pytest.approx(70.0)
    assert out["succ_50m"] == pytest.approx(100 / 3)
    assert out["succ_100m"] == out["succ_150m"] == pytest.approx(200 / 3)
    assert out["succ_200m"] == 100.0  # the 200 m error counts (<=)
    assert out["queries"] == 3
    assert all(type(v) is float for k, v in out.items() if k != "queries")
    assert type(out["queries"]) is int


def test_hand_computed_relevant_sets_pred_xy_and_custom_keys():
    relevant = [{0, 1}, {1, 5}, {3}]
    # q0: hits at ranks 1, 2 -> AP = (1/1 + 2/2) / 2 = 1
    # q1: only 1 found, at rank 2 (5 is missing) -> AP = (1/2) / 2 = 0.25
    # q2: nothing found -> 0
    pred = np.array([[3.0, 4.0], [100.0, 30.0], [0.0, 12.5]])  # errors 5, 0, 12.5
    out = localisation_metrics(RANKED, TARGETS, REF_XY, QUERY_XY, pred_xy=pred, topk=(1, 2),
                               success_m=(5, 12.5), relevant=relevant)
    assert out["mAP"] == pytest.approx(100 * 1.25 / 3)
    assert out["top1"] == pytest.approx(100 / 3) and out["top2"] == pytest.approx(200 / 3)
    assert out["mean_err_m"] == pytest.approx(17.5 / 3)
    assert out["median_err_m"] == pytest.approx(5.0)
    assert out["succ_5m"] == pytest.approx(200 / 3)
    assert out["succ_12.5m"] == 100.0
    assert "top5" not in out and "succ_50m" not in out


def test_perfect_ranking_gives_100_and_zero_error():
    ref = np.random.default_rng(0).uniform(0, 1000, size=(10, 2))
    ranked = np.stack([np.roll(np.arange(10), -i) for i in range(10)])  # target first
    out = localisation_metrics(ranked, np.arange(10), ref, ref)
    assert out["top1"] == out["mAP"] == out["succ_50m"] == 100.0
    assert out["mean_err_m"] == out["median_err_m"] == 0.0


def test_torch_inputs_are_accepted():
    out = localisation_metrics(torch.from_numpy(RANKED), torch.from_numpy(TARGETS),
                               torch.from_numpy(REF_XY), torch.from_numpy(QUERY_XY))
    assert out == localisation_metrics(RANKED, TARGETS, REF_XY, QUERY_XY)


# --------------------------------------------------------------------------------------------
# Naive per-query loop on random data
# --------------------------------------------------------------------------------------------
def naive(ranked, targets, ref_xy, query_xy, pred_xy, topk, success_m, relevant):
    m = len(ranked)
    out = {}
    for k in topk:
        out[f"top{k}"] = 100.0 * sum(targets[i] in list(ranked[i][:k]) for i in range(m)) / m
    aps = []
    for i in range(m):
        rel = relevant[i] if relevant is not None else {targets[i]}
        found, total = 0, 0.0
        for pos, ref in enumerate(ranked[i], start=1):
            if ref in rel:
                found += 1
                total += found / pos
        aps.append(total / len(rel))
    out["mAP"] = 100.0 * sum(aps) / m
    errs = []
    for i in range(m):
        p = pred_xy[i] if pred_xy is not None else ref_xy[ranked[i][0]]
        errs.append(math.dist(p, query_xy[i]))
    out["mean_err_m"] = sum(errs) / m
    out["median_err_m"] = float(np.median(errs))
    for t in success_m:
        out[f"succ_{t}m"] = 100.0 * sum(e <= t for e in errs) / m
    out["queries"] = m
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("with_relevant", [False, True])
@pytest.mark.parametrize("with_pred", [False, True])
def test_matches_naive_loop(seed, with_relevant, with_pred):
    rng = np.random.default_rng(seed)
    m, n, k = 40, 60, 15
    ref_xy = rng.uniform(0, 600, size=(n, 2))
    targets = rng.integers(0, n, size=m)
    ranked = np.stack([rng.permutation(n)[:k] for _ in range(m)])
    # Put the target into about half of the lists at a random rank.
    for i in range(0, m, 2):
        if targets[i] not in ranked[i]:
            ranked[i, rng.integers(0, k)] = targets[i]
    query_xy = ref_xy[targets] + rng.normal(0, 60, size=(m, 2))
    pred = query_xy + rng.normal(0, 120, size=(m, 2)) if with_pred else None
    relevant = None
    if with_relevant:
        relevant = [{int(targets[i])} | set(rng.integers(0, n, size=rng.integers(0, 5)).tolist())
                    for i in range(m)]
    topk, success = (1, 5, 10, 20), (50, 100, 150, 200)
    got = localisation_metrics(ranked, targets, ref_xy, query_xy, pred_xy=pred, relevant=relevant)
    want = naive(ranked.tolist(), targets.tolist(), ref_xy.tolist(), query_xy.tolist(),
                 None if pred is None else pred.tolist(), topk, success, relevant)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-9), key


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, match",
    [
        ({"targets": np.array([0, 1])}, "targets must have shape"),
        ({"query_xy": QUERY_XY[:2]}, "query_xy has 2 rows"),
        ({"query_xy": np.array([[0.0, 0.0], [np.nan, 1.0], [0.0, 0.0]])}, "query_xy has NaN"),
        ({"ref_xy": np.vstack([REF_XY[:5], [[np.nan, 0.0]]])}, "ref_xy has NaN"),
        ({"pred_xy": np.full((3, 2), np.inf)}, "pred_xy has infinite"),
        ({"ref_xy": REF_XY[:, :1]}, "shape \\(num_points, 2\\)"),
        ({"ranked": np.array([[0, 1, 9], [3, 1, 0], [4, 5, 2]])}, "outside \\[0, 6\\)"),
        ({"ranked": RANKED.astype(float)}, "integer"),
        ({"ranked": np.array([[0, 1, 0], [3, 1, 0], [4, 5, 2]])}, "row 0 lists a reference more than once"),
        ({"ranked": np.zeros((0, 3), dtype=int), "targets": np.zeros(0, dtype=int),
          "query_xy": np.zeros((0, 2))}, "no queries"),
        ({"ranked": np.zeros((3, 0), dtype=int)}, "empty"),
        ({"relevant": [{0}, {1}]}, "relevant has 2 entries"),
        ({"relevant": [{0}, set(), {1}]}, "relevant\\[1\\] is empty"),
        ({"relevant": [{0}, {7}, {1}]}, "relevant holds reference index 7"),
        ({"topk": (0,)}, "topk"),
        ({"success_m": (-1,)}, "success_m"),
    ],
)
def test_bad_inputs_raise_value_errors(change, match):
    args = {"ranked": RANKED, "targets": TARGETS, "ref_xy": REF_XY, "query_xy": QUERY_XY}
    args.update(change)
    with pytest.raises(ValueError, match=match):
        localisation_metrics(**args)


def test_errors_are_retrieval_input_errors():
    with pytest.raises(RetrievalInputError):
        localisation_metrics(RANKED, TARGETS[:2], REF_XY, QUERY_XY)


# --------------------------------------------------------------------------------------------
# haversine
# --------------------------------------------------------------------------------------------
def test_haversine_one_degree_of_latitude_and_longitude_at_the_equator():
    one_degree = EARTH_RADIUS_M * math.pi / 180.0  # 111,195.08 m
    assert one_degree == pytest.approx(111_195.08, abs=0.01)
    assert haversine_m(0.0, 0.0, 0.0, 1.0) == pytest.approx(one_degree, rel=1e-12)
    assert haversine_m(10.0, 45.0, 10.0, 46.0) == pytest.approx(one_degree, rel=1e-12)
    assert haversine_m(0.0, 0.0, 1.0, 0.0) == pytest.approx(one_degree, rel=1e-12)
    assert isinstance(haversine_m(0.0, 0.0, 0.0, 1.0), float)


def test_haversine_special_cases_and_vectorisation():
    assert haversine_m(0.0, 0.0, 180.0, 0.0) == pytest.approx(math.pi * EARTH_RADIUS_M)  # antipodes
    assert haversine_m(0.0, 90.0, 123.0, 90.0) == pytest.approx(0.0, abs=1e-6)  # both at the pole
    assert haversine_m(179.5, 0.0, -179.5, 0.0) == pytest.approx(EARTH_RADIUS_M * math.pi / 180.0)
    # 1 degree of longitude at latitude 60: the great circle is a bit shorter than the parallel.
    d60 = haversine_m(0.0, 60.0, 1.0, 60.0)
    assert 0.4999 * 111_195.08 < d60 < 0.5 * 111_195.08
    lon = np.array([0.0, 0.0, 10.0])
    lat = np.array([0.0, 1.0, 45.0])
    out = haversine_m(lon, lat, lon[:, None], lat[:, None])
    assert out.shape == (3, 3)
    np.testing.assert_allclose(out, out.T)
    np.testing.assert_allclose(np.diag(out), 0.0, atol=1e-6)
    assert np.isnan(haversine_m(np.nan, 0.0, 0.0, 0.0))


def test_haversine_rejects_swapped_coordinates():
    with pytest.raises(ValueError, match="latitude outside"):
        haversine_m(0.0, 120.0, 0.0, 0.0)


def test_localisation_metrics_with_lonlat():
    ref = np.array([[0.0, 0.0], [0.0, 1.0]])
    out = localisation_metrics(np.array([[1, 0]]), np.array([0]), ref, np.array([[0.0, 0.0]]),
                               success_m=(100_000, 120_000), lonlat=True)
    assert out["mean_err_m"] == pytest.approx(EARTH_RADIUS_M * math.pi / 180.0)
    assert out["succ_100000m"] == 0.0 and out["succ_120000m"] == 100.0
    assert out["top1"] == 0.0 and out["top5"] == 100.0 and out["mAP"] == 50.0
