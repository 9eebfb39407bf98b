import math

import pytest
import torch

from sarbridge.losses.contrastive import ContrastiveLoss


def naive_symmetric_infonce(opt, sar, scale, groups=None):
    """Loop implementation: mean over pairs of 0.5 * (CE opt->sar + CE sar->opt)."""
    n = len(opt)
    def unit(v):
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v]

    o = [unit(v) for v in opt.tolist()]
    s = [unit(v) for v in sar.tolist()]

    def dot(a, b):
        return sum(x * y for x, y in zip(a, b))

    def negatives_ok(i, j):
        return i == j or groups is None or groups[i] != groups[j]

    total = []
    for i in range(n):
        row = [scale * dot(o[i], s[j]) for j in range(n) if negatives_ok(i, j)]
        ce_o2s = -scale * dot(o[i], s[i]) + math.log(sum(math.exp(v) for v in row))
        col = [scale * dot(o[j], s[i]) for j in range(n) if negatives_ok(j, i)]
        ce_s2o = -scale * dot(o[i], s[i]) + math.log(sum(math.exp(v) for v in col))
        total.append(0.5 * (ce_o2s + ce_s2o))
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_naive_loop_on_random_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    opt, sar = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g, dtype=torch.float64)
    loss = ContrastiveLoss()
    ref = naive_symmetric_infonce(opt, sar, 1 / 0.07)
    assert loss(opt, sar).item() == pytest.approx(sum(ref) / len(ref), rel=1e-5)
    per = ContrastiveLoss(reducer="none")(opt, sar)
    assert per.tolist() == pytest.approx(ref, rel=1e-5)
    assert ContrastiveLoss(reducer="sum")(opt, sar).item() == pytest.approx(sum(ref), rel=1e-5)


def test_group_mask_matches_naive_loop():
    g = torch.Generator().manual_seed(5)
    opt, sar = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    groups = torch.tensor([0, 0, 1, 2, 2, 2])
    ref = naive_symmetric_infonce(opt.double(), sar.double(), 1 / 0.07, groups.tolist())
    assert ContrastiveLoss(reducer="none")(opt, sar, groups).tolist() == pytest.approx(ref, rel=1e-4)
    # all-distinct groups equal no mask
    assert ContrastiveLoss()(opt, sar, torch.arange(6)).item() == pytest.approx(ContrastiveLoss()(opt, sar).item())


def test_perfectly_aligned_pairs_with_high_scale_give_near_zero_loss():
    emb = torch.eye(8) * 3.0  # orthogonal, so every pair's own similarity is 1 and the others 0
    loss = ContrastiveLoss(temperature=0.01)  # scale 100
    assert loss(emb, emb.clone()).item() < 1e-6
    # swapped pairs: the loss is large
    assert loss(emb, emb.flip(0)).item() > 50


def test_temperature_parameter_init_clamp_and_gradient():
    loss = ContrastiveLoss()
    assert isinstance(loss.logit_scale, torch.nn.Parameter)
    assert loss.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    g = torch.Generator().manual_seed(0)
    opt = torch.randn(4, 3, generator=g, requires_grad=True)
    sar = torch.randn(4, 3, generator=g)
    loss(opt, sar).backward()
    assert loss.logit_scale.grad is not None and opt.grad is not None
    with torch.no_grad():
        loss.logit_scale.fill_(math.log(1000.0))
    assert loss.scale.item() == pytest.approx(100.0)
    fixed = ContrastiveLoss(learn_temperature=False)
    assert not any(True for _ in fixed.parameters()) and "logit_scale" in fixed.state_dict()


def test_scale_invariance_and_bad_inputs():
    g = torch.Generator().manual_seed(3)
    opt, sar = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    loss = ContrastiveLoss()
    assert loss(opt * 7.0, sar * 0.1).item() == pytest.approx(loss(opt, sar).item(), rel=1e-5)  # L2-normalised
    with pytest.raises(ValueError, match="shape|\\(N, D\\)"):
        loss(opt, sar[:3])
    with pytest.raises(ValueError, match="groups"):
        loss(opt, sar, torch.arange(3))
    with pytest.raises(ValueError, match="reducer"):
        ContrastiveLoss(reducer="max")
