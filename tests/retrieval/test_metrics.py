"""Tests for sarbridge.retrieval.metrics: the vectorised evaluator against a slow reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sarbridge.retrieval.metrics import (
    cmc_from_ranks,
    cmc_to_ranks,
    evaluate,
    match_statistics,
    rank_matches,
    summarize,
)


# --------------------------------------------------------------------------------------------
# Naive reference, straight from the definitions: Python loops over queries and ranks.
# --------------------------------------------------------------------------------------------
def reference_evaluate(
    dist,
    q_pids,
    g_pids,
    q_mods=None,
    g_mods=None,
    max_rank=50,
    exclude_same_modality=False,
    q_camids=None,
    g_camids=None,
    exclude_same_camera=False,
):
    num_q, num_g = len(q_pids), len(g_pids)
    cmcs, aps, inps, valid = [], [], [], []
    for i in range(num_q):
        # Ascending distance, ties broken by gallery index.
        order = sorted(range(num_g), key=lambda j: (float(dist[i][j]), j))
        kept = []
        for j in order:
            if exclude_same_modality and g_mods[j] == q_mods[i]:
                continue
            if exclude_same_camera and g_pids[j] == q_pids[i] and g_camids[j] == q_camids[i]:
                continue
            kept.append(j)
        positive_ranks = []  # 1-based ranks among the kept items
        for r, j in enumerate(kept, start=1):
            if g_pids[j] != -1 and g_pids[j] == q_pids[i]:
                positive_ranks.append(r)
        if not positive_ranks:
            valid.append(False)
            continue
        valid.append(True)
        n = len(positive_ranks)
        ap = 0.0
        for k, r in enumerate(positive_ranks, start=1):
            ap += k / r
        aps.append(ap / n)
        inps.append(n / positive_ranks[-1])
        cmcs.append([1.0 if positive_ranks[0] <= k else 0.0 for k in range(1, max_rank + 1)])
    if not aps:
        raise ValueError("no valid query")
    nv = len(aps)
    cmc = [sum(c[k] for c in cmcs) / nv for k in range(max_rank)]
    return {
        "cmc": np.array(cmc),
        "mAP": sum(aps) / nv,
        "mINP": sum(inps) / nv,
        "num_valid_queries": nv,
        "all_AP": np.array(aps),
        "all_INP": np.array(inps),
        "valid_queries": np.array(valid),
    }


def assert_same(res, ref, tol=1e-10):
    assert res["num_valid_queries"] == ref["num_valid_queries"]
    np.testing.assert_array_equal(res["valid_queries"], ref["valid_queries"])
    np.testing.assert_allclose(res["cmc"], ref["cmc"], rtol=0, atol=tol)
    np.testing.assert_allclose(res["all_AP"], ref["all_AP"], rtol=0, atol=tol)
    np.testing.assert_allclose(res["all_INP"], ref["all_INP"], rtol=0, atol=tol)
    assert abs(res["mAP"] - ref["mAP"]) <= tol
    assert abs(res["mINP"] - ref["mINP"]) <= tol


def random_problem(seed, num_q=25, num_g=80, ties=False, distractors=True, infs=False,
                   num_ids=12, dtype=np.float64):
    rng = np.random.default_rng(seed)
    if ties:
        dist = rng.integers(0, 6, size=(num_q, num_g)).astype(dtype)
    else:
        dist = rng.random((num_q, num_g)).astype(dtype)
    if infs:
        dist[rng.random(dist.shape) < 0.2] = np.inf
        dist[rng.random(dist.shape) < 0.05] = -np.inf
    # Some query ids do not occur in the gallery -> skipped queries.
    q_pids = rng.integers(0, num_ids + 4, size=num_q)
    g_pids = rng.integers(0, num_ids, size=num_g)
    if distractors:
        g_pids[rng.random(num_g) < 0.2] = -1
        q_pids[0] = -1  # a query with the distractor label is never valid
    q_mods = rng.choice(np.array(["optical", "sar"]), size=num_q)
    g_mods = rng.choice(np.array(["optical", "sar"]), size=num_g)
    q_cams = rng.integers(0, 3, size=num_q)
    g_cams = rng.integers(0, 3, size=num_g)
    return dist, q_pids, g_pids, q_mods, g_mods, q_cams, g_cams


SETTINGS = [
    dict(),
    dict(exclude_same_modality=True),
    dict(exclude_same_camera=True),
    dict(exclude_same_modality=True, exclude_same_camera=True),
]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("setting", SETTINGS, ids=["plain", "xmod", "xcam", "xmod+xcam"])
def test_matches_reference_random(seed, ties, setting):
    dist, qp, gp, qm, gm, qc, gc = random_problem(seed, ties=ties, infs=(seed % 3 == 2))
    kwargs = dict(q_mods=qm, g_mods=gm, q_camids=qc, g_camids=gc, max_rank=20, **setting)
    ref = reference_evaluate(dist, qp, gp, **kwargs)
    for chunk_size in (None, 1, 7):
        res = evaluate(dist, qp, gp, chunk_size=chunk_size, **kwargs)
        assert_same(res, ref)
        assert res["cmc"].shape == (20,)
        assert res["all_AP"].shape == (ref["num_valid_queries"],)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("exclude_same_modality", [False, True])
def test_matches_reference_long_rows_with_ties(seed, exclude_same_modality):
    # Long rows (numpy's unstable sort really reorders equal values there) with many ties,
    # float32 distances and +-inf, compared with the reference.
    dist, qp, gp, qm, gm, _, _ = random_problem(
        100 + seed, num_q=12, num_g=1500, ties=True, infs=True, num_ids=40, dtype=np.float32
    )
    kwargs = dict(q_mods=qm, g_mods=gm, exclude_same_modality=exclude_same_modality)
    ref = reference_evaluate(dist, qp, gp, **kwargs)
    assert_same(evaluate(dist, qp, gp, **kwargs), ref)


@pytest.mark.parametrize("seed", range(3))
def test_matches_reference_float32_continuous(seed):
    rng = np.random.default_rng(200 + seed)
    dist = rng.random((15, 2000), dtype=np.float32)
    qp = rng.integers(0, 30, 15)
    gp = rng.integers(0, 30, 2000)
    assert_same(evaluate(dist, qp, gp), reference_evaluate(dist, qp, gp))


# --------------------------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------------------------
def test_hand_computed_neg_pos_neg_pos():
    # Ranking [neg, pos, neg, pos]: AP = (1/2 + 2/4) / 2 = 0.5, INP = 2/4, R1 = 0, R2 = 1.
    dist = np.array([[0.1, 0.2, 0.3, 0.4]])
    res = evaluate(dist, [1], [2, 1, 3, 1], max_rank=4)
    assert res["mAP"] == pytest.approx(0.5, abs=1e-12)
    assert res["mINP"] == pytest.approx(0.5, abs=1e-12)
    np.testing.assert_allclose(res["cmc"], [0.0, 1.0, 1.0, 1.0])
    assert res["num_valid_queries"] == 1
    np.testing.assert_allclose(res["all_AP"], [0.5])
    np.testing.assert_allclose(res["all_INP"], [0.5])


def test_hand_computed_two_queries_averaged():
    # q0: [pos, neg, neg] -> AP 1, INP 1; q1: [neg, neg, pos] -> AP 1/3, INP 1/3.
    dist = np.array([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]])
    res = evaluate(dist, [5, 7], [5, 6, 7], max_rank=3)
    assert res["mAP"] == pytest.approx((1 + 1 / 3) / 2)
    assert res["mINP"] == pytest.approx((1 + 1 / 3) / 2)
    np.testing.assert_allclose(res["cmc"], [0.5, 0.5, 1.0])


def test_ties_broken_by_gallery_index():
    dist = np.zeros((1, 3))
    # All distances equal: ranking is gallery order.
    pos_last = evaluate(dist, [1], [0, 0, 1], max_rank=3)
    np.testing.assert_allclose(pos_last["cmc"], [0.0, 0.0, 1.0])
    assert pos_last["mAP"] == pytest.approx(1 / 3)
    pos_first = evaluate(dist, [1], [1, 0, 0], max_rank=3)
    np.testing.assert_allclose(pos_first["cmc"], [1.0, 1.0, 1.0])
    assert pos_first["mAP"] == pytest.approx(1.0)


def test_ties_broken_by_gallery_index_long_rows():
    # 1000 equal distances: the positive at index 700 has rank 701, whatever the sort does.
    num_g = 1000
    dist = np.full((4, num_g), 3.0, dtype=np.float32)
    g_pids = np.zeros(num_g, dtype=np.int64)
    g_pids[700] = 1
    res = evaluate(dist, [1, 1, 1, 1], g_pids, max_rank=1000)
    np.testing.assert_allclose(res["all_AP"], np.full(4, 1 / 701))
    assert res["cmc"][699] == 0.0 and res["cmc"][700] == 1.0
    # A strictly smaller distance still wins over a smaller index.
    dist[:, 999] = 2.0
    g_pids[999] = 1
    res = evaluate(dist, [1, 1, 1, 1], g_pids, max_rank=5)
    np.testing.assert_allclose(res["all_AP"], np.full(4, (1 / 1 + 2 / 702) / 2))


def test_max_rank_beyond_gallery_keeps_last_value():
    dist = np.array([[0.2, 0.1, 0.3]])
    res = evaluate(dist, [4], [9, 8, 4], max_rank=10)  # positive has rank 3 of 3
    np.testing.assert_allclose(res["cmc"], [0, 0] + [1] * 8)


def test_skipped_query_not_counted():
    dist = np.array([[0.1, 0.2], [0.1, 0.2]])
    res = evaluate(dist, [1, 99], [2, 1], max_rank=2)  # query 1 has no match
    assert res["num_valid_queries"] == 1
    np.testing.assert_array_equal(res["valid_queries"], [True, False])
    assert res["mAP"] == pytest.approx(0.5)
    np.testing.assert_allclose(res["cmc"], [0.0, 1.0])


def test_distractors_are_negatives_and_never_match():
    dist = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]])
    res = evaluate(dist, [3, -1], [-1, 3, -1], max_rank=3)
    # q0: [distractor, pos, distractor] -> rank 2; q1 (pid -1) has no match and is skipped.
    assert res["num_valid_queries"] == 1
    np.testing.assert_array_equal(res["valid_queries"], [True, False])
    assert res["mAP"] == pytest.approx(0.5)
    np.testing.assert_allclose(res["cmc"], [0.0, 1.0, 1.0])


def test_same_modality_exclusion_removes_ranks():
    # Gallery by distance: [pos sar, neg optical, pos optical, neg sar]; the query is SAR.
    dist = np.array([[0.1, 0.2, 0.3, 0.4]])
    g_pids, g_mods = [1, 2, 1, 3], ["sar", "optical", "optical", "sar"]
    plain = evaluate(dist, [1], g_pids, ["sar"], g_mods, max_rank=4)
    assert plain["mAP"] == pytest.approx((1 + 2 / 3) / 2)
    cross = evaluate(dist, [1], g_pids, ["sar"], g_mods, max_rank=4, exclude_same_modality=True)
    # Remaining [neg optical, pos optical]: the positive moves up to rank 2.
    assert cross["mAP"] == pytest.approx(0.5)
    assert cross["mINP"] == pytest.approx(0.5)
    np.testing.assert_allclose(cross["cmc"], [0.0, 1.0, 1.0, 1.0])


def test_same_camera_exclusion_only_same_pid():
    dist = np.array([[0.1, 0.2, 0.3]])
    # g0: same pid same cam (removed); g1: other pid same cam (kept); g2: same pid other cam.
    res = evaluate(dist, [1], [1, 2, 1], q_camids=[0], g_camids=[0, 0, 1],
                   exclude_same_camera=True, max_rank=3)
    assert res["mAP"] == pytest.approx(0.5)
    np.testing.assert_allclose(res["cmc"], [0.0, 1.0, 1.0])
    off = evaluate(dist, [1], [1, 2, 1], q_camids=[0], g_camids=[0, 0, 1], max_rank=3)
    assert off["mAP"] == pytest.approx((1 + 2 / 3) / 2)  # off by default


def test_all_queries_invalid_raises():
    with pytest.raises(ValueError, match="no query has a matching gallery item"):
        evaluate(np.zeros((2, 3)), [7, 8], [1, 2, 3])
    # Only same-modality matches, removed by the cross-modal protocol.
    with pytest.raises(ValueError, match="same-modality"):
        evaluate(np.zeros((1, 2)), [1], [1, 2], [0], [0, 1], exclude_same_modality=True)


def test_input_is_not_modified_and_torch_accepted():
    dist, qp, gp, qm, gm, _, _ = random_problem(5, ties=True)
    before = dist.copy()
    res = evaluate(dist, qp, gp, qm, gm, exclude_same_modality=True)
    np.testing.assert_array_equal(dist, before)
    res_t = evaluate(torch.from_numpy(dist), torch.from_numpy(qp), torch.from_numpy(gp), qm, gm,
                     exclude_same_modality=True)
    assert_same(res_t, res, tol=0.0)


def test_integer_distances_and_lists():
    res = evaluate([[3, 1, 2]], [1], [1, 0, 0], max_rank=3)
    assert res["mAP"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: evaluate(np.zeros(3), [1], [1, 2, 3]), "2-D"),
        (lambda: evaluate(np.zeros((2, 3)), [1], [1, 2, 3]), "2 query pids|1 query pids"),
        (lambda: evaluate(np.zeros((1, 3)), [1], [1, 2]), "gallery pids"),
        (lambda: evaluate(np.zeros((1, 2)), [1.5], [1, 2]), "integers"),
        (lambda: evaluate(np.zeros((1, 2)), [1], [1, 2], [0], [0]), "g_mods has 1 entries"),
        (lambda: evaluate(np.zeros((1, 2)), [1], [1, 2], exclude_same_modality=True),
         "needs both q_mods and g_mods"),
        (lambda: evaluate(np.zeros((1, 2)), [1], [1, 2], exclude_same_camera=True),
         "needs both q_camids and g_camids"),
        (lambda: evaluate(np.zeros((1, 2)), [1], [1, 2], max_rank=0), "max_rank"),
        (lambda: evaluate(np.zeros((1, 2)), [1], [1, 2], chunk_size=0), "chunk_size"),
        (lambda: evaluate(np.array([[0.0, np.nan]]), [1], [1, 2]), "NaN"),
    ],
)
def test_input_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_nan_detected_in_later_chunk():
    dist = np.zeros((10, 4))
    dist[9, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate(dist, np.ones(10, dtype=int), [1, 2, 3, 4], chunk_size=3)


# --------------------------------------------------------------------------------------------
# Reporting helpers
# --------------------------------------------------------------------------------------------
def test_cmc_to_ranks():
    cmc = np.linspace(0.1, 1.0, 10)
    assert cmc_to_ranks(cmc) == {"R1": pytest.approx(0.1), "R5": pytest.approx(0.5),
                                 "R10": pytest.approx(1.0)}
    assert list(cmc_to_ranks(cmc, ranks=(3, 1))) == ["R3", "R1"]
    with pytest.raises(ValueError, match="beyond the CMC curve"):
        cmc_to_ranks(cmc, ranks=(20,))
    with pytest.raises(ValueError, match="rank"):
        cmc_to_ranks(cmc, ranks=(0,))


def test_summarize_percentages():
    dist = np.array([[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]])
    res = evaluate(dist, [1, 3], [2, 1, 3, 1], max_rank=10)
    # q0: AP 0.5, INP 0.5, first hit rank 2; q1: AP 1/3, INP 1/3, first hit rank 3.
    s = summarize(res)
    assert list(s) == ["mAP", "R1", "R5", "R10", "mINP", "queries"]
    assert s["mAP"] == pytest.approx(100 * (0.5 + 1 / 3) / 2)
    assert s["mINP"] == pytest.approx(100 * (0.5 + 1 / 3) / 2)
    assert s["R1"] == 0.0 and s["R5"] == pytest.approx(100.0) and s["R10"] == pytest.approx(100.0)
    assert s["queries"] == 2 and isinstance(s["queries"], int)
    json.dumps(s)  # plain Python numbers
    frac = summarize(res, ranks=(1, 2), percent=False)
    assert list(frac) == ["mAP", "R1", "R2", "mINP", "queries"]
    assert frac["R2"] == pytest.approx(0.5)
    assert frac["mAP"] == pytest.approx((0.5 + 1 / 3) / 2)
    for k in ("mAP", "R1", "mINP"):  # percentages are the fractions times 100, nothing else
        assert s[k] == pytest.approx(100 * frac[k]), k
    assert frac["queries"] == s["queries"]


# --------------------------------------------------------------------------------------------
# The ranking helpers shared with retrieval.rankings
# --------------------------------------------------------------------------------------------
def test_match_statistics_against_the_definitions() -> None:
    rng = np.random.default_rng(11)
    hits = rng.random((30, 17)) < 0.2
    hits[3] = False  # a row without a match
    first, ap, inp = match_statistics(hits)
    for i, row in enumerate(hits):
        ranks = [r + 1 for r in np.flatnonzero(row)]
        if not ranks:
            assert first[i] == 0 and np.isnan(ap[i]) and np.isnan(inp[i])
            continue
        assert first[i] == ranks[0]
        assert ap[i] == pytest.approx(sum((n + 1) / r for n, r in enumerate(ranks)) / len(ranks))
        assert inp[i] == pytest.approx(len(ranks) / ranks[-1])
    assert first.dtype == np.int64 and first.shape == ap.shape == inp.shape == (30,)


def test_match_statistics_by_hand() -> None:
    first, ap, inp = match_statistics(np.array([[False, True, False, True], [True, False, False, False]]))
    assert first.tolist() == [2, 1]
    assert ap.tolist() == pytest.approx([(1 / 2 + 2 / 4) / 2, 1.0])
    assert inp.tolist() == pytest.approx([2 / 4, 1.0])


def test_cmc_from_ranks_counts_zero_as_a_miss() -> None:
    assert cmc_from_ranks([1, 3, 0, 2], 4).tolist() == [0.25, 0.5, 0.75, 0.75]
    assert cmc_from_ranks([5, 9], 3).tolist() == [0.0, 0.0, 0.0]  # beyond the curve
    assert cmc_from_ranks([], 5).size == 0 and cmc_from_ranks([1], 0).size == 0


def test_rank_matches_breaks_ties_by_index_and_puts_removed_last() -> None:
    d = np.array([[0.5, 0.1, 0.5, 0.1, np.inf]])
    match = np.array([[True, False, False, True, True]])
    removed = np.array([[False, True, False, False, False]])
    # kept order: 3 (0.1), 0 (0.5), 2 (0.5, after 0), 4 (inf); removed item 1 last
    ranked = rank_matches(d.copy(), match & ~removed, removed)
    assert ranked.tolist() == [[True, True, False, True, False]]
    assert rank_matches(d.copy(), match, None).tolist() == [[False, True, True, False, True]]


@pytest.mark.parametrize("exclude", [False, True])
def test_evaluate_cmc_and_ap_are_the_shared_helpers(exclude: bool) -> None:
    rng = np.random.default_rng(5)
    dist = np.round(rng.normal(size=(25, 40)), 1)
    qp, gp = rng.integers(0, 6, 25), rng.integers(-1, 6, 40)
    qm, gm = rng.integers(0, 2, 25), rng.integers(0, 2, 40)
    res = evaluate(dist, qp, gp, qm, gm, max_rank=12, exclude_same_modality=exclude)
    ref = reference_evaluate(dist, qp, gp, qm, gm, max_rank=12, exclude_same_modality=exclude)
    assert res["cmc"].tolist() == pytest.approx(ref["cmc"])
    assert res["all_AP"].tolist() == pytest.approx(ref["all_AP"])
