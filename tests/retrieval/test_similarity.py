"""similarity_gap against hand-computed values and a slow pair-by-pair reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sarbridge.retrieval.similarity import SIMILARITY_NOTES, similarity_gap


def test_hand_computed_pairs():
    # unit vectors at 0, 60 and 90 degrees: cosines 1, 0.5, 0 against the query at 0 degrees
    q = np.array([[1.0, 0.0], [0.0, 2.0]])  # the second is not unit length: cosines do not care
    g = np.array([[3.0, 0.0], [0.5, math.sqrt(3) / 2], [0.0, 1.0]])
    out = similarity_gap(q, g, [1, 2], [1, 2, 3])
    # positives: (q0, g0) = 1, (q1, g1) = sqrt(3)/2; negatives: (q0, g1) = .5, (q0, g2) = 0,
    # (q1, g0) = 0, (q1, g2) = 1
    pos, neg = (1 + math.sqrt(3) / 2) / 2, (0.5 + 0 + 0 + 1) / 4
    assert out["positive_mean"] == pytest.approx(pos)
    assert out["negative_mean"] == pytest.approx(neg)
    assert out["gap"] == pytest.approx(pos - neg)
    # q0's best match (1) beats its best non-match (.5); q1's (.866) loses to g2 (1)
    assert out["best_positive_wins"] == pytest.approx(0.5)
    # AUC: pos 1 beats .5, 0, 0 and ties 1 (3.5 of 4); pos .866 beats .5, 0, 0 (3 of 4)
    assert out["auc"] == pytest.approx(6.5 / 8)
    assert (out["positive_pairs"], out["negative_pairs"], out["queries"]) == (2, 4, 2)
    assert set(SIMILARITY_NOTES) <= set(out)


def test_distractors_and_same_modality_are_handled_like_the_ranking_metrics():
    q = np.array([[1.0, 0.0], [1.0, 0.0]])
    g = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # query pid -1 never matches; gallery pid -1 is a distractor even for a query pid -1
    out = similarity_gap(q, g, [-1, 5], [-1, 5, 7])
    assert out["positive_pairs"] == 1 and out["queries"] == 1
    assert out["positive_mean"] == pytest.approx(0.0)  # (q1, g1)
    # leaving out same-modality pairs: q0 (mod 0) only sees g1 (mod 1); q1 (mod 1) sees g0, g2
    out = similarity_gap(q, g, [1, 1], [1, 1, 2], [0, 1], [0, 1, 0], exclude_same_modality=True)
    assert out["positive_pairs"] == 2 and out["negative_pairs"] == 1
    assert out["positive_mean"] == pytest.approx(0.5)  # (q0, g1) = 0, (q1, g0) = 1
    assert out["negative_mean"] == pytest.approx(1 / math.sqrt(2))  # (q1, g2)
    with pytest.raises(ValueError, match="q_mods"):
        similarity_gap(q, g, [1, 1], [1, 1, 2], exclude_same_modality=True)


def test_no_pairs_of_a_kind_gives_none_not_an_error():
    out = similarity_gap(np.eye(2), np.eye(2), [1, 2], [3, 4])
    assert out["positive_mean"] is None and out["gap"] is None and out["auc"] is None
    assert out["best_positive_wins"] is None
    assert out["negative_mean"] == pytest.approx(0.5) and out["queries"] == 0


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="dimension"):
        similarity_gap(np.ones((2, 3)), np.ones((2, 4)), [1, 2], [1, 2])
    with pytest.raises(ValueError, match="entries"):
        similarity_gap(np.ones((2, 3)), np.ones((2, 3)), [1], [1, 2])


def test_matches_a_pair_by_pair_reference_on_random_features():
    rng = np.random.default_rng(0)
    q, g = torch.from_numpy(rng.normal(size=(9, 5))), torch.from_numpy(rng.normal(size=(14, 5)))
    qp, gp = rng.integers(-1, 4, 9), rng.integers(-1, 4, 14)
    qm, gm = rng.integers(0, 2, 9), rng.integers(0, 2, 14)
    out = similarity_gap(q, g, qp, gp, qm, gm, exclude_same_modality=True)
    pos, neg, wins, valid = [], [], 0, 0
    for i in range(9):
        ps, ns = [], []
        for j in range(14):
            if qm[i] == gm[j]:
                continue
            c = float(q[i] @ g[j] / (q[i].norm() * g[j].norm()))
            (ps if qp[i] == gp[j] and qp[i] != -1 else ns).append(c)
        pos += ps
        neg += ns
        if ps and ns:
            valid += 1
            wins += max(ps) > max(ns)
    assert out["positive_mean"] == pytest.approx(np.mean(pos))
    assert out["negative_mean"] == pytest.approx(np.mean(neg))
    assert out["best_positive_wins"] == pytest.approx(wins / valid)
    auc = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg])
    assert out["auc"] == pytest.approx(auc)


def test_query_blocks_give_the_same_answer():
    rng = np.random.default_rng(1)
    q, g = rng.normal(size=(11, 4)), rng.normal(size=(7, 4))
    qp, gp = rng.integers(0, 3, 11), rng.integers(0, 3, 7)
    whole = similarity_gap(q, g, qp, gp)
    for budget in (1, 7, 20):  # one query at a time, one per block, a few per block
        part = similarity_gap(q, g, qp, gp, chunk_elements=budget)
        assert part == pytest.approx(whole)
