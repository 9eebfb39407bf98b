import numpy as np
import pytest
import torch

from sarbridge.losses.alignment import CMALoss, class_modality_moments


def naive_cmal(feats, labels, mods, form="mos"):
    """Loops straight from the MOS definition (population variance, L2 norms)."""
    f = torch.nn.functional.normalize(feats.double(), dim=1).numpy()
    terms = []
    for c in sorted(set(labels.tolist())):
        o = f[(labels.numpy() == c) & (mods.numpy() == 0)]
        s = f[(labels.numpy() == c) & (mods.numpy() == 1)]
        if len(o) == 0 or len(s) == 0:
            continue
        mo, ms = o.mean(0), s.mean(0)
        vo, vs = o.var(0), s.var(0)  # numpy var is the population variance
        if form == "mos":
            terms.append(np.linalg.norm(mo - ms) + np.linalg.norm(vo - vs))
        else:
            terms.append(((mo - ms) ** 2).sum() + ((np.sqrt(vo) - np.sqrt(vs)) ** 2).sum())
    return float(np.mean(terms))


@pytest.mark.parametrize("form", ["mos", "w2"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cmal_matches_naive_reference(seed, form):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(24, 8, generator=g)
    labels = torch.randint(0, 5, (24,), generator=g)
    mods = torch.randint(0, 2, (24,), generator=g)
    assert CMALoss(form)(feats, labels, mods).item() == pytest.approx(naive_cmal(feats, labels, mods, form), abs=1e-5)


def test_zero_when_modalities_coincide_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 4, generator=g)
    feats = torch.cat([base, base])  # every optical feature has an identical SAR twin
    labels = torch.tensor([0, 0, 1, 1, 2, 2] * 2)
    mods = torch.tensor([0] * 6 + [1] * 6)
    loss = CMALoss()(feats, labels, mods)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)
    shifted = torch.cat([base, base + 0.5])
    assert CMALoss()(shifted, labels, mods).item() > 0.01


def test_identities_missing_a_modality_are_ignored():
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0], [0.5, 0.5]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    mods = torch.tensor([0, 1, 0, 0, 0])  # identity 1 is optical only
    got = CMALoss()(feats, labels, mods)
    # identity 0 alone: means (1,0) vs (0,1) -> sqrt(2); variances all zero
    assert got.item() == pytest.approx(2**0.5, abs=1e-5)
    only_optical = CMALoss()(feats, torch.zeros(5, dtype=torch.long), torch.zeros(5, dtype=torch.long))
    assert only_optical.item() == 0.0


def test_gradient_pulls_class_means_together():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(16, 6, generator=g).requires_grad_(True)
    labels = torch.arange(4).repeat_interleave(4)
    mods = torch.tensor([0, 0, 1, 1] * 4)
    loss_fn = CMALoss()

    def mean_gap(f):
        mean, _, _ = class_modality_moments(torch.nn.functional.normalize(f, dim=1), labels, mods)
        return (mean[:, 0] - mean[:, 1]).norm(dim=1).mean().item()

    before = mean_gap(feats.detach())
    opt = torch.optim.SGD([feats], lr=0.5)
    for _ in range(100):
        opt.zero_grad()
        loss_fn(feats, labels, mods).backward()
        assert torch.isfinite(feats.grad).all()
        opt.step()
    assert mean_gap(feats.detach()) < 0.5 * before


def test_gradient_finite_at_perfect_alignment():
    base = torch.randn(4, 3)
    feats = torch.cat([base, base]).requires_grad_(True)
    labels = torch.tensor([0, 1, 0, 1] * 2)
    mods = torch.tensor([0] * 4 + [1] * 4)
    CMALoss()(feats, labels, mods).backward()
    assert torch.isfinite(feats.grad).all()


def test_moments_against_numpy():
    g = torch.Generator().manual_seed(2)
    f = torch.randn(10, 3, generator=g)
    labels = torch.tensor([3, 3, 3, 7, 7, 7, 7, 9, 9, 9])
    mods = torch.tensor([0, 1, 1, 0, 0, 1, 1, 0, 0, 0])
    mean, var, count = class_modality_moments(f, labels, mods)
    assert count.tolist() == [[1, 2], [2, 2], [3, 0]]
    sel = f[5:7].numpy()
    assert np.allclose(mean[1, 1].numpy(), sel.mean(0), atol=1e-6)
    assert np.allclose(var[1, 1].numpy(), sel.var(0), atol=1e-6)
