import io

import pytest
import torch
from torch import nn

from sarbridge.losses.wasserstein import (
    WassersteinAlignment,
    WassersteinCritic,
    clip_weights_,
    gradient_penalty,
    split_by_modality,
    wasserstein_estimate,
)


def linear_critic(w, b=0.0):
    lin = nn.Linear(len(w), 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([w], dtype=torch.float32))
        lin.bias.fill_(b)
    return lin


def clouds(n_opt=64, n_sar=48, dim=8, shift=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    h_opt = torch.randn(n_opt, dim, generator=g) + shift
    h_sar = torch.randn(n_sar, dim, generator=g)
    return h_opt, h_sar


def test_critic_shapes_and_depth():
    c = WassersteinCritic(32)
    assert c(torch.randn(5, 32)).shape == (5,)
    assert [m.out_features for m in c.net if isinstance(m, nn.Linear)] == [512, 512, 1]
    c1 = WassersteinCritic(32, hidden=16, num_hidden_layers=1)
    assert [m.out_features for m in c1.net if isinstance(m, nn.Linear)] == [16, 1]
    assert WassersteinCritic(4, num_hidden_layers=0)(torch.randn(3, 4)).shape == (3,)
    with pytest.raises(ValueError):
        WassersteinCritic(0)


def test_estimate_of_linear_critic_is_w_dot_mean_difference():
    w = [1.0, -2.0, 0.5]
    critic = linear_critic(w, b=0.7)
    h_opt = torch.tensor([[1.0, 2.0, 3.0], [3.0, 0.0, 1.0]])  # mean (2, 1, 2)
    h_sar = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [2.0, 4.0, -1.0]])  # mean (1, 2, 0)
    # w . ((2, 1, 2) - (1, 2, 0)) = 1*1 + (-2)*(-1) + 0.5*2 = 4
    assert wasserstein_estimate(critic, h_opt, h_sar).item() == pytest.approx(4.0, abs=1e-6)


@pytest.mark.parametrize("endpoints", [True, False])
def test_gradient_penalty_of_linear_critic(endpoints):
    h_opt, h_sar = clouds(10, 7, dim=2)
    g = torch.Generator().manual_seed(1)
    gp2 = gradient_penalty(linear_critic([1.2, 1.6]), h_opt, h_sar, generator=g, include_endpoints=endpoints)  # ||w|| = 2
    gp1 = gradient_penalty(linear_critic([0.6, 0.8]), h_opt, h_sar, generator=g, include_endpoints=endpoints)  # ||w|| = 1
    assert gp2.item() == pytest.approx(1.0, abs=1e-5)
    assert gp1.item() == pytest.approx(0.0, abs=1e-5)


def test_gradient_penalty_backpropagates_to_critic_not_features():
    critic = WassersteinCritic(4, hidden=8)
    h_opt = torch.randn(6, 4, requires_grad=True)
    h_sar = torch.randn(5, 4, requires_grad=True)
    gradient_penalty(critic, h_opt, h_sar).backward()
    weights = [m.weight for m in critic.net if isinstance(m, nn.Linear)]
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in weights)  # (the last bias has none)
    assert h_opt.grad is None and h_sar.grad is None
    assert gradient_penalty(critic, h_opt[:0], h_sar).item() == 0.0


def test_clip_bounds_all_weights():
    critic = WassersteinCritic(8, hidden=16)
    with torch.no_grad():
        for p in critic.parameters():
            p.normal_(0, 1)
    clip_weights_(critic, 0.05)
    assert all(p.abs().max() <= 0.05 for p in critic.parameters())


@pytest.mark.parametrize("mode", ["gp", "clip"])
def test_critic_update_increases_estimate_and_freezes_params(mode):
    torch.manual_seed(0)
    h_opt, h_sar = clouds()
    align = WassersteinAlignment(WassersteinCritic(8, hidden=32), mode=mode, critic_steps=20, critic_lr=1e-2)
    assert all(not p.requires_grad for p in align.critic.parameters())
    before = wasserstein_estimate(align.critic, h_opt, h_sar).item()
    stats = align.critic_update(h_opt, h_sar)
    after = wasserstein_estimate(align.critic, h_opt, h_sar).item()
    assert after > before + 0.1
    assert {"critic_loss", "wasserstein"} <= set(stats)
    assert ("gradient_penalty" in stats) == (mode == "gp")
    assert all(not p.requires_grad and p.grad is None for p in align.critic.parameters())
    if mode == "clip":
        assert all(p.abs().max() <= align.clip + 1e-7 for p in align.critic.parameters())


def test_encoder_loss_pulls_sar_towards_optical():
    torch.manual_seed(0)
    h_opt, h_sar0 = clouds(dim=4, shift=2.0)
    align = WassersteinAlignment(WassersteinCritic(4, hidden=32), critic_steps=50, critic_lr=1e-2, weight=1.0)
    align.critic_update(h_opt, h_sar0)
    h_sar = h_sar0.clone().requires_grad_(True)
    loss = align.encoder_loss(h_opt, h_sar)
    loss.backward()
    assert all(p.grad is None for p in align.critic.parameters())
    # gradient descent moves every SAR sample towards the optical cloud
    step = -h_sar.grad
    toward = h_opt.mean(0) - h_sar0.mean(0)
    assert (step.sum(0) @ toward).item() > 0
    with torch.no_grad():
        moved = h_sar0 - 1.0 * h_sar.grad * len(h_sar)  # one SGD step on f(h_sar)
    gap_before = (h_opt.mean(0) - h_sar0.mean(0)).norm().item()
    assert (h_opt.mean(0) - moved.mean(0)).norm().item() < gap_before
    # after re-fitting a fresh critic, the critic-measured gap is smaller
    torch.manual_seed(1)
    fresh = WassersteinAlignment(WassersteinCritic(4, hidden=32), critic_steps=50, critic_lr=1e-2)
    fresh.critic_update(h_opt, h_sar0)
    w_before = wasserstein_estimate(fresh.critic, h_opt, h_sar0).item()
    torch.manual_seed(1)
    fresh2 = WassersteinAlignment(WassersteinCritic(4, hidden=32), critic_steps=50, critic_lr=1e-2)
    fresh2.critic_update(h_opt, moved)
    assert wasserstein_estimate(fresh2.critic, h_opt, moved).item() < w_before


def test_encoder_loss_weight_and_gradients_only_into_features():
    h_opt, h_sar = clouds(8, 8, dim=3)
    critic = linear_critic([1.0, 0.0, 0.0])
    align = WassersteinAlignment(critic, weight=0.5, critic_steps=0)
    h_opt.requires_grad_(True)
    loss = align(h_opt, h_sar)
    assert loss.item() == pytest.approx(0.5 * (h_opt[:, 0].mean() - h_sar[:, 0].mean()).item(), abs=1e-5)
    loss.backward()
    assert torch.allclose(h_opt.grad[:, 0], torch.full((8,), 0.5 / 8))
    assert critic.weight.grad is None


def test_missing_modality_gives_zero_loss_and_no_update():
    align = WassersteinAlignment(WassersteinCritic(4, hidden=8), critic_steps=3)
    before = [p.clone() for p in align.critic.parameters()]
    h = torch.randn(5, 4, requires_grad=True)
    assert align.critic_update(h, h[:0]) == {}
    assert align.critic_update(None, h) == {}
    assert align.updates == 0
    assert all(torch.equal(a, b) for a, b in zip(before, align.critic.parameters()))
    loss = align.encoder_loss(h, h[:0])
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(h.grad, torch.zeros_like(h))
    assert align.encoder_loss(None, None).item() == 0.0


def test_split_by_modality():
    f = torch.arange(8.0).view(4, 2)
    h_opt, h_sar = split_by_modality(f, torch.tensor([0, 1, 1, 0]))
    assert torch.equal(h_opt, f[[0, 3]]) and torch.equal(h_sar, f[[1, 2]])


def test_state_dict_round_trip():
    torch.manual_seed(0)
    h_opt, h_sar = clouds(dim=4)
    a = WassersteinAlignment(WassersteinCritic(4, hidden=8), critic_steps=2)
    a.critic_update(h_opt, h_sar)
    state = a.state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    b = WassersteinAlignment(WassersteinCritic(4, hidden=8), critic_steps=2)
    b.load_state_dict(state)
    assert b.updates == 1
    assert all(not p.requires_grad for p in b.critic.parameters())
    for pa, pb in zip(a.critic.parameters(), b.critic.parameters()):
        assert torch.equal(pa, pb)
    # resumed optimiser continues identically (same gradient-penalty draws)
    a.generator = torch.Generator().manual_seed(3)
    b.generator = torch.Generator().manual_seed(3)
    a.critic_update(h_opt, h_sar)
    b.critic_update(h_opt, h_sar)
    for pa, pb in zip(a.critic.parameters(), b.critic.parameters()):
        assert torch.allclose(pa, pb)


def test_parent_optimizer_skips_critic():
    align = WassersteinAlignment(WassersteinCritic(4, hidden=8))
    parent = nn.Module()
    parent.encoder = nn.Linear(4, 4)
    parent.critic = align.critic
    trainable = [p for p in parent.parameters() if p.requires_grad]
    assert len(trainable) == 2


def test_invalid_arguments():
    with pytest.raises(ValueError):
        WassersteinAlignment(WassersteinCritic(4), mode="wgan")
    with pytest.raises(ValueError):
        WassersteinAlignment(WassersteinCritic(4), critic_lr=0.0)
