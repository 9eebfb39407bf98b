import math

import pytest
import torch

from sarbridge.losses.metric import (
    CrossEntropyLabelSmooth,
    TripletLoss,
    cosine_distance,
    euclidean_distance,
    squared_euclidean_distance,
)


def naive_batch_hard(emb, labels, ref, ref_labels, same, margin):
    """Loops straight from the definition of the batch-hard triplet loss."""
    losses = []
    for i in range(len(emb)):
        pos, neg = [], []
        for j in range(len(ref)):
            if same and i == j:
                continue
            d = float(torch.linalg.norm(emb[i] - ref[j]))
            (pos if labels[i] == ref_labels[j] else neg).append(d)
        if not pos or not neg:
            continue
        diff = max(pos) - min(neg)
        losses.append(math.log1p(math.exp(diff)) if margin is None else max(0.0, diff + margin))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("margin", [None, 0.3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triplet_matches_naive_reference(seed, margin):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(12, 6, generator=g)
    labels = torch.randint(0, 4, (12,), generator=g)
    got = TripletLoss(margin=margin)(emb, labels)
    assert got.item() == pytest.approx(naive_batch_hard(emb, labels, emb, labels, True, margin), rel=1e-5)


def test_triplet_query_vs_reference_embeddings():
    g = torch.Generator().manual_seed(3)
    q, r = torch.randn(5, 4, generator=g), torch.randn(7, 4, generator=g)
    ql, rl = torch.tensor([0, 1, 2, 0, 1]), torch.tensor([0, 0, 1, 1, 2, 2, 3])
    got = TripletLoss(margin=0.5)(q, ql, r, rl)
    assert got.item() == pytest.approx(naive_batch_hard(q, ql, r, rl, False, 0.5), rel=1e-5)


def test_triplet_hand_computed_and_reducers():
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 4.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # anchor 0: d_ap = 1, d_an = 3 -> relu(1 - 3 + 0.5) = 0; anchor 2: d_ap = 1, d_an = 3 -> 0
    assert TripletLoss(margin=0.5)(emb, labels).item() == pytest.approx(0.0)
    # margin 3: d_ap = 1 for all; nearest negatives 3, sqrt(10), 3, 4 -> 1, 4 - sqrt(10), 1, 0
    per = TripletLoss(margin=3.0, reducer="none")(emb, labels)
    expected = torch.tensor([1.0, 4 - math.sqrt(10), 1.0, 0.0])
    assert torch.allclose(per, expected, atol=1e-5)
    assert TripletLoss(margin=3.0, reducer="sum")(emb, labels).item() == pytest.approx(float(expected.sum()), rel=1e-5)


def test_triplet_ignores_anchors_without_positive():
    emb = torch.tensor([[0.0], [1.0], [5.0]])
    labels = torch.tensor([0, 0, 1])  # anchor 2 has no positive
    per = TripletLoss(margin=1.0, reducer="none")(emb, labels)
    assert per[2] == 0
    assert TripletLoss(margin=1.0)(emb, labels).item() == pytest.approx(float(per[:2].mean()))


def test_triplet_gradient_pulls_positives_together():
    emb = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 0.5], [0.0, 5.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    TripletLoss(margin=1.0)(emb, labels).backward()
    assert emb.grad[0, 0] < 0  # pulled towards its positive at (2, 0)


def test_distances_against_formulas():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 3, generator=g), torch.randn(5, 3, generator=g)
    ref = torch.cdist(a, b)
    assert torch.allclose(euclidean_distance(a, b), ref, atol=1e-5)
    assert torch.allclose(squared_euclidean_distance(a, b), ref**2, atol=1e-4)
    cos = torch.nn.functional.cosine_similarity(a[:, None], b[None], dim=2)
    assert torch.allclose(cosine_distance(a, b), 1 - cos, atol=1e-6)


def test_label_smoothing_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    targets = torch.tensor([0, 2])
    eps = 0.1
    logp = torch.log_softmax(logits, 1)
    expected = 0.0
    for i, t in enumerate(targets.tolist()):
        for c in range(3):
            w = (1 - eps) * (c == t) + eps / 3
            expected -= w * logp[i, c].item()
    assert CrossEntropyLabelSmooth(eps)(logits, targets).item() == pytest.approx(expected / 2, rel=1e-6)
    assert CrossEntropyLabelSmooth(0.0)(logits, targets).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, targets).item(), rel=1e-6
    )
