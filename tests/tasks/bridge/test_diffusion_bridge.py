"""The Brownian Bridge: schedule, forward process, objective and the skip-step sampler, checked
against the formulas of METHODS.md section 1 (BBDM) with stub predictors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from sarbridge.core.errors import ConfigError, SarbridgeError
from sarbridge.tasks.bridge.model import (
    BridgeConfig,
    BrownianBridge,
    UNetConfig,
    build_denoiser,
    direction_modalities,
    tensor_to_uint8,
    uint8_to_tensor,
    validate_unet_config,
)


class Stub(nn.Module):
    """Returns a known tensor (broadcast to x_t) and records its inputs."""

    def __init__(self, out: torch.Tensor | float = 0.0) -> None:
        super().__init__()
        self.out = torch.as_tensor(out, dtype=torch.float32)
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls.append((x_t.clone(), t.clone(), y.clone()))
        return self.out.expand_as(x_t).clone()


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---- schedule -----------------------------------------------------------------------------------


def test_schedule_values_follow_the_formulas():
    b = BrownianBridge()
    assert b.num_timesteps == 1000 and b.m.shape == (1000,)
    assert b.m[0] == pytest.approx(0.001, abs=1e-15) and b.m[-1] == pytest.approx(0.999, abs=1e-15)
    np.testing.assert_allclose(np.diff(b.m), 0.998 / 999, rtol=1e-9)
    np.testing.assert_allclose(b.delta, 2.0 * (b.m - b.m ** 2), rtol=1e-12)
    assert b.delta[0] == pytest.approx(2 * (0.001 - 0.001 ** 2)) and b.delta[-1] == pytest.approx(b.delta[0])
    # delta_t peaks at 0.5 where m_t = 0.5 (between t = 499 and 500 on the grid)
    assert int(np.argmax(b.delta)) in (499, 500)
    assert b.delta.max() == pytest.approx(0.5, abs=1e-6) and b.delta.max() <= 0.5
    # the float32 tables used on tensors agree
    np.testing.assert_allclose(b.m_t.numpy(), b.m, rtol=1e-6)


def test_max_var_scales_delta():
    b = BrownianBridge(max_var=0.5)
    assert b.delta.max() == pytest.approx(0.25, abs=1e-6)
    np.testing.assert_allclose(b.delta, 2 * 0.5 * (b.m - b.m ** 2))


def test_invalid_schedule_is_a_config_error():
    with pytest.raises(ConfigError):
        BrownianBridge(m_min=0.5, m_max=0.4)
    with pytest.raises(ConfigError):
        BrownianBridge(objective="velocity")
    with pytest.raises(ConfigError):
        BrownianBridge(loss="huber")


def test_q_sample_equals_formula():
    b = BrownianBridge()
    x0, y, eps = rand(4, 3, 8, 4, seed=1), rand(4, 3, 8, 4, seed=2), rand(4, 3, 8, 4, seed=3)
    t = torch.tensor([0, 250, 499, 999])
    got = b.q_sample(x0, y, t, eps).double().numpy()
    for i, ti in enumerate(t.tolist()):
        m, d = b.m[ti], b.delta[ti]
        want = (1 - m) * x0[i].double().numpy() + m * y[i].double().numpy() + math.sqrt(d) * eps[i].double().numpy()
        np.testing.assert_allclose(got[i], want, atol=1e-5)


@pytest.mark.parametrize("objective", ["grad", "noise", "ysubx"])
def test_objective_inverts_to_x0(objective):
    b = BrownianBridge(objective=objective)
    x0, y, eps = rand(3, 3, 8, 4, seed=4), rand(3, 3, 8, 4, seed=5), rand(3, 3, 8, 4, seed=6)
    t = torch.tensor([3, 400, 990])
    x_t = b.q_sample(x0, y, t, eps)
    target = b.objective_target(x0, y, t, eps)
    torch.testing.assert_close(b.predict_x0(x_t, y, t, target), x0, atol=1e-4, rtol=1e-4)


def test_grad_objective_and_l1_loss():
    b = BrownianBridge()
    x0, y, eps = rand(2, 3, 8, 4, seed=7), rand(2, 3, 8, 4, seed=8), rand(2, 3, 8, 4, seed=9)
    t = torch.tensor([10, 700])
    target = b.objective_target(x0, y, t, eps)
    m, d = b.m_t[t].view(-1, 1, 1, 1), b.delta_t[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(target, m * (y - x0) + d.sqrt() * eps)
    assert float(b.training_loss(Stub(0.0), x0, y, t, eps)) == pytest.approx(float(target.abs().mean()), rel=1e-6)
    l2 = BrownianBridge(loss="l2").training_loss(Stub(0.0), x0, y, t, eps)
    assert float(l2) == pytest.approx(float((target ** 2).mean()), rel=1e-6)
    per = b.training_loss(Stub(0.0), x0, y, t, eps, reduction="none")
    assert per.shape == (2,)


# ---- step schedules -------------------------------------------------------------------------------


def test_skip_steps_uniform():
    b = BrownianBridge()
    s200 = b.skip_steps(200)
    assert len(s200) == 200 and s200[0] == 999 and s200[-1] == 0
    assert all(a > c for a, c in zip(s200, s200[1:]))
    assert b.skip_steps(10) == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert b.skip_steps(1000) == list(range(999, -1, -1)) == b.skip_steps(None) == b.skip_steps(5000)
    assert b.skip_steps(1) == [999] and b.skip_steps(2) == [999, 0]
    for s in (3, 5, 25, 50, 333, 999):
        steps = b.skip_steps(s)
        assert len(steps) == s and len(set(steps)) == s and steps[0] == 999 and steps[-1] == 0
    with pytest.raises(SarbridgeError):
        b.skip_steps(0)


def test_skip_steps_bbdm_reference():
    """The released BBDM schedule: arange(T-1, 1, -((T-1)/(s-2))).long() then 1, 0 (hand-written lists)."""
    b = BrownianBridge()
    assert b.skip_steps(10, "bbdm") == [999, 874, 749, 624, 499, 374, 249, 124, 1, 0]
    s = b.skip_steps(200, "bbdm")
    assert len(s) == 200 and len(set(s)) == 200
    assert s[:12] == [999, 993, 988, 983, 978, 973, 968, 963, 958, 953, 948, 943]
    assert s[-8:] == [30, 25, 20, 15, 10, 5, 1, 0]
    # every middle step is floor(999 - i * 999 / 198): the float stride truncated, never a rounded one
    assert s[:-2] == [int(999 - i * 999 / 198) for i in range(198)]
    assert b.skip_steps(1000, "bbdm") == list(range(999, -1, -1))
    assert b.skip_steps(3, "bbdm") == [999, 1, 0]


# ---- one reverse step by hand -------------------------------------------------------------------


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_one_step_by_hand(clip, eta):
    b = BrownianBridge()
    t, n = 777, 666
    x_t, y = rand(2, 3, 8, 4, seed=10) * 1.5, rand(2, 3, 8, 4, seed=11)
    pred, noise = rand(2, 3, 8, 4, seed=12), rand(2, 3, 8, 4, seed=13)
    x_n, x0_hat = b.p_step(Stub(pred), x_t, y, t, n, noise, eta=eta, clip_denoised=clip)

    X, Y, P, E = (v.double().numpy() for v in (x_t, y, pred, noise))
    m_t, m_n = 0.001 + 0.998 * t / 999, 0.001 + 0.998 * n / 999
    d_t, d_n = 2 * (m_t - m_t ** 2), 2 * (m_n - m_n ** 2)
    x0 = X - P
    if clip:
        x0 = np.clip(x0, -1, 1)
    sigma2 = (d_t - d_n * (1 - m_t) ** 2 / (1 - m_n) ** 2) * d_n / d_t
    sigma2 *= eta ** 2
    want = (1 - m_n) * x0 + m_n * Y + math.sqrt((d_n - sigma2) / d_t) * (X - (1 - m_t) * x0 - m_t * Y) \
        + math.sqrt(sigma2) * E
    np.testing.assert_allclose(x0_hat.double().numpy(), x0, atol=1e-6)
    np.testing.assert_allclose(x_n.double().numpy(), want, atol=1e-5)


def test_last_step_returns_x0_hat():
    b = BrownianBridge()
    x_t, y, pred = rand(2, 3, 4, 4, seed=14), rand(2, 3, 4, 4, seed=15), rand(2, 3, 4, 4, seed=16) * 3
    out, x0 = b.p_step(Stub(pred), x_t, y, 0, None, clip_denoised=False)
    torch.testing.assert_close(out, x_t - pred)
    out, _ = b.p_step(Stub(pred), x_t, y, 0, None, clip_denoised=True)
    torch.testing.assert_close(out, (x_t - pred).clamp(-1, 1))


def test_step_variance_is_valid_for_every_pair():
    b = BrownianBridge()
    ts = b.skip_steps(50)
    for t, n in zip(ts, ts[1:]):
        c = b.step_coefficients(t, n)
        assert 0 <= c["sigma2"] <= c["delta_n"] + 1e-15
    c0 = b.step_coefficients(500, 400, eta=0.0)
    assert c0["sigma"] == 0 and c0["c_dir"] == pytest.approx(math.sqrt(b.delta[400] / b.delta[500]))


# ---- the sampler --------------------------------------------------------------------------------


def test_sampling_starts_at_y_and_visits_the_schedule():
    b = BrownianBridge()
    stub = Stub(0.1)
    y = rand(2, 3, 8, 4, seed=17)
    b.sample(stub, y, steps=10, samples=3, generator=torch.Generator().manual_seed(0), clip_denoised=False)
    x_first, t_first, y_seen = stub.calls[0]
    torch.testing.assert_close(x_first, y.repeat_interleave(3, 0))  # x_T = y
    torch.testing.assert_close(y_seen, y.repeat_interleave(3, 0))
    assert [int(c[1][0]) for c in stub.calls] == b.skip_steps(10)
    assert all(int(c[1].unique().numel()) == 1 for c in stub.calls)
    assert t_first.dtype == torch.long


def test_sampler_equals_hand_rolled_loop():
    b = BrownianBridge()
    pred = rand(4, 3, 8, 4, seed=18) * 0.3
    y = rand(2, 3, 8, 4, seed=19)
    got = b.sample(Stub(pred), y, steps=4, samples=2, generator=torch.Generator().manual_seed(5), clip_denoised=False)
    assert got.shape == (2, 2, 3, 8, 4)
    g = torch.Generator().manual_seed(5)
    yk = y.repeat_interleave(2, 0)
    x = yk.clone()
    ts = b.skip_steps(4)
    for i, t in enumerate(ts):
        x0 = x - pred
        if i == len(ts) - 1:
            x = x0
            break
        n = ts[i + 1]
        c = b.step_coefficients(t, n)
        eps = torch.randn(x.shape, generator=g)
        x = ((1 - c["m_n"]) * x0 + c["m_n"] * yk + c["c_dir"] * (x - (1 - c["m_t"]) * x0 - c["m_t"] * yk)
             + c["sigma"] * eps)
    torch.testing.assert_close(got.reshape(4, 3, 8, 4), x, atol=1e-5, rtol=1e-5)


def test_sampler_shapes_and_seeds():
    b = BrownianBridge()
    stub = Stub(rand(1, 3, 8, 4, seed=20) * 0.2)
    y = rand(3, 3, 8, 4, seed=21)

    def run(seed, steps=5, k=2):
        return b.sample(stub, y, steps=steps, samples=k, generator=torch.Generator().manual_seed(seed))

    a, a2, c = run(1), run(1), run(2)
    assert a.shape == (3, 2, 3, 8, 4)
    torch.testing.assert_close(a, a2)
    assert not torch.equal(a, c)
    assert not torch.equal(a[:, 0], a[:, 1])  # K samples differ
    assert b.sample(stub, y, steps=1, samples=1).shape == (3, 1, 3, 8, 4)
    full = b.sample(Stub(0.0), y[:1], steps=1000, samples=1, generator=torch.Generator().manual_seed(0))
    assert full.shape == (1, 1, 3, 8, 4)
    assert len(b.skip_steps(1000)) == 1000


def test_per_input_generators_make_samples_batch_independent():
    b = BrownianBridge()
    y = rand(3, 3, 8, 4, seed=22)
    gens = lambda: [torch.Generator().manual_seed(100 + i) for i in range(3)]  # noqa: E731
    batch = b.sample(Stub(0.05), y, steps=6, samples=2, generator=gens())
    alone = b.sample(Stub(0.05), y[1:2], steps=6, samples=2, generator=[gens()[1]])
    torch.testing.assert_close(batch[1:2], alone)
    with pytest.raises(SarbridgeError):
        b.sample(Stub(0.0), y, steps=3, generator=gens()[:2])


def test_eta_zero_is_deterministic():
    b = BrownianBridge()
    y = rand(2, 3, 8, 4, seed=23)
    a = b.sample(Stub(0.1), y, steps=8, eta=0.0, generator=torch.Generator().manual_seed(0))
    c = b.sample(Stub(0.1), y, steps=8, eta=0.0, generator=torch.Generator().manual_seed(99))
    torch.testing.assert_close(a, c)


# ---- UNet and helpers -----------------------------------------------------------------------------


def tiny_unet_config(**kw) -> UNetConfig:
    base = dict(channels=8, channel_mult=[1, 2], layers_per_block=1, attention_resolutions=[],
                attention_head_dim=8, mid_attention=False, norm_num_groups=4, resblock_updown=False)
    base.update(kw)
    return UNetConfig(**base)


def test_unet_denoiser_runs_with_integer_timesteps():
    torch.manual_seed(0)
    model = build_denoiser(tiny_unet_config(), [16, 8]).eval()
    assert model.unet.config.in_channels == 6  # [x_t, y]
    x, y = rand(2, 3, 16, 8, seed=24), rand(2, 3, 16, 8, seed=25)
    out = model(x, torch.tensor([0, 999]), y)
    assert out.shape == (2, 3, 16, 8)
    plain = build_denoiser(tiny_unet_config(condition="none", attention_resolutions=[2], mid_attention=True), [16, 8])
    assert plain.unet.config.in_channels == 3
    assert plain.unet.config.down_block_types[1] == "AttnDownBlock2D"
    out = BrownianBridge().sample(model, y, steps=3, samples=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 2, 3, 16, 8) and out.abs().max() <= 1.0


def test_unet_config_errors():
    with pytest.raises(ConfigError, match="divisible"):
        validate_unet_config(tiny_unet_config(channel_mult=[1, 2, 2, 2]), [12, 8])
    with pytest.raises(ConfigError, match="norm_num_groups"):
        validate_unet_config(tiny_unet_config(norm_num_groups=3), [16, 8])


def test_reference_defaults():
    b, u = BridgeConfig(), UNetConfig()
    assert (b.num_timesteps, b.m_min, b.m_max, b.max_var, b.objective, b.loss, b.sample_steps) == \
        (1000, 0.001, 0.999, 1.0, "grad", "l1", 200)
    assert u.channels == 128 and u.channel_mult == [1, 4, 8] and u.attention_resolutions == [32, 16, 8]
    assert direction_modalities("opt2sar") == ("optical", "sar")
    assert direction_modalities("sar2opt") == ("sar", "optical")
    with pytest.raises(ConfigError):
        direction_modalities("rgb2ir")


def test_uint8_tensor_round_trip():
    img = np.random.default_rng(0).integers(0, 256, size=(2, 5, 4, 3), dtype=np.uint8)
    x = uint8_to_tensor(img)
    assert x.shape == (2, 3, 5, 4) and float(x.min()) >= -1 and float(x.max()) <= 1
    np.testing.assert_array_equal(tensor_to_uint8(x), img)
