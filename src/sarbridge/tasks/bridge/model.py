"""The Brownian Bridge diffusion process (BBDM, Li et al. CVPR 2023) around a ``diffusers`` UNet.

The bridge runs between a target image ``x0`` (time 0) and a source image ``y`` (time T), both in
pixel space in [-1, 1]. With ``T`` timesteps indexed ``t = 0 .. T-1``::

    m_t     = linspace(m_min, m_max, T)                 (0.001 .. 0.999)
    delta_t = 2 s (m_t - m_t^2)                          (s = max_var = 1: peak 0.5 at m = 0.5)
    x_t     = (1 - m_t) x0 + m_t y + sqrt(delta_t) eps   (q_sample)

The denoiser predicts the objective ``m_t (y - x0) + sqrt(delta_t) eps`` ("grad"), so that
``x0_hat = x_t - prediction``; the loss is L1 (or L2) between prediction and objective. Sampling
starts from ``x_T = y`` and visits a decreasing list of timesteps ``t_0 = T-1 > ... > t_{S-1} = 0``
(one network evaluation each); from ``t`` to the next ``n``::

    sigma^2 = (delta_t - delta_n (1 - m_t)^2 / (1 - m_n)^2) delta_n / delta_t
    x_n     = (1 - m_n) x0_hat + m_n y
              + sqrt((delta_n - sigma^2) / delta_t) (x_t - (1 - m_t) x0_hat - m_t y) + sigma eps

and the last step returns ``x0_hat``. ``eta`` scales ``sigma`` (``eta = 1``: the formula above;
``eta = 0``: deterministic); the scaled sigma is used in both places so that every ``eta`` keeps
the bridge marginals (the released BBDM code scales only the noise term; both agree at the
default ``eta = 1``).

Schedule coefficients are computed in float64 and applied as Python scalars during sampling (all
images of a batch share the timestep), so a step is exactly the formula above.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import nn

from sarbridge.core.errors import ConfigError, SarbridgeError
from sarbridge.core.optional import require
from sarbridge.core.progress import progress_bar
from sarbridge.data.records import OPTICAL, SAR

DIRECTIONS: dict[str, tuple[str, str]] = {"opt2sar": (OPTICAL, SAR), "sar2opt": (SAR, OPTICAL)}
"""direction -> (source modality ``y``, target modality ``x0``)."""

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``model(x_t, t, y) -> prediction``: any module with this signature can drive the bridge."""


def direction_modalities(direction: str) -> tuple[str, str]:
    """``(source, target)`` modalities of a translation direction.

    Raises:
        ConfigError: unknown direction.
    """
    if direction not in DIRECTIONS:
        raise ConfigError(f"unknown translation direction '{direction}'", "use opt2sar or sar2opt")
    return DIRECTIONS[direction]


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


@dataclass
class BridgeConfig:
    """The Brownian Bridge schedule, objective and sampler defaults (BBDM reference values)."""

    num_timesteps: int = 1000
    m_min: float = 0.001
    m_max: float = 0.999
    max_var: float = 1.0
    objective: Literal["grad", "noise", "ysubx"] = "grad"
    loss: Literal["l1", "l2"] = "l1"
    sample_steps: int = 200
    skip_type: Literal["uniform", "bbdm"] = "uniform"
    eta: float = 1.0
    clip_denoised: bool = True


@dataclass
class UNetConfig:
    """The ``diffusers.UNet2DModel`` denoiser (defaults: the BBDM reference UNet).

    ``channels * channel_mult`` are the block widths (reference 128 x (1, 4, 8)).
    ``attention_resolutions`` are downsampling factors (1 at full resolution, 2 after the first
    downsampling ...) as in the released BBDM/LDM code: a level whose factor is listed gets
    attention blocks. With the reference ``(32, 16, 8)`` and three levels (factors 1, 2, 4) no level
    matches, so, exactly like the released model, attention is only in the middle block
    (``mid_attention``). ``condition: concat`` feeds ``[x_t, y]`` (6 channels) to the UNet like the
    reference pixel-space BBDM; ``none`` feeds ``x_t`` alone.
    """

    channels: int = 128
    channel_mult: list[int] = field(default_factory=lambda: [1, 4, 8])
    layers_per_block: int = 2
    attention_resolutions: list[int] = field(default_factory=lambda: [32, 16, 8])
    attention_head_dim: int = 64
    mid_attention: bool = True
    norm_num_groups: int = 32
    dropout: float = 0.0
    scale_shift_norm: bool = True
    resblock_updown: bool = True
    condition: Literal["concat", "none"] = "concat"


def validate_bridge_config(cfg: BridgeConfig, prefix: str = "bridge") -> None:
    """Range checks for a :class:`BridgeConfig`.

    Raises:
        ConfigError: naming the key.
    """
    if cfg.num_timesteps < 2:
        raise ConfigError(f"{prefix}.num_timesteps must be >= 2, got {cfg.num_timesteps}")
    if not 0.0 <= cfg.m_min < cfg.m_max < 1.0:
        raise ConfigError(f"{prefix}.m_min/m_max must satisfy 0 <= m_min < m_max < 1, got {cfg.m_min}, {cfg.m_max}",
                          "the reference uses 0.001 and 0.999")
    if not (cfg.max_var > 0 and math.isfinite(cfg.max_var)):
        raise ConfigError(f"{prefix}.max_var must be a positive number, got {cfg.max_var}")
    if cfg.sample_steps < 1:
        raise ConfigError(f"{prefix}.sample_steps must be >= 1, got {cfg.sample_steps}")
    if not (cfg.eta >= 0 and math.isfinite(cfg.eta)):
        raise ConfigError(f"{prefix}.eta must be >= 0, got {cfg.eta}")


def validate_unet_config(cfg: UNetConfig, resolution: Sequence[int], prefix: str = "model") -> None:
    """Check that the UNet can be built for ``resolution`` (H, W).

    Raises:
        ConfigError: naming the key and the fix.
    """
    if len(resolution) != 2 or min(resolution) < 4:
        raise ConfigError(f"resolution must be [height, width] >= 4, got {list(resolution)}")
    if cfg.channels < 1 or not cfg.channel_mult or min(cfg.channel_mult) < 1:
        raise ConfigError(f"{prefix}.channels and {prefix}.channel_mult must be positive, got {cfg.channels}, "
                          f"{cfg.channel_mult}")
    if cfg.layers_per_block < 1:
        raise ConfigError(f"{prefix}.layers_per_block must be >= 1, got {cfg.layers_per_block}")
    down = 2 ** (len(cfg.channel_mult) - 1)
    h, w = resolution
    if h % down or w % down:
        raise ConfigError(
            f"resolution {h}x{w} is not divisible by {down} ({len(cfg.channel_mult)} UNet levels)",
            f"use a height and width that are multiples of {down}",
        )
    widths = [cfg.channels * m for m in cfg.channel_mult]
    bad = [c for c in widths if c % cfg.norm_num_groups]
    if bad:
        raise ConfigError(f"{prefix}.norm_num_groups={cfg.norm_num_groups} does not divide the block width {bad[0]}",
                          "choose norm_num_groups dividing channels * every channel_mult")
    attn = [c for lvl, c in enumerate(widths) if 2 ** lvl in cfg.attention_resolutions]
    if cfg.mid_attention:
        attn.append(widths[-1])
    bad = [c for c in attn if c % cfg.attention_head_dim]
    if bad:
        raise ConfigError(f"{prefix}.attention_head_dim={cfg.attention_head_dim} does not divide the width {bad[0]}",
                          "choose attention_head_dim dividing the widths of the attention levels")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"{prefix}.dropout must be in [0, 1), got {cfg.dropout}")


# --------------------------------------------------------------------------------------------
# the denoiser
# --------------------------------------------------------------------------------------------


def build_unet(cfg: UNetConfig, resolution: Sequence[int], channels: int = 3) -> nn.Module:
    """A ``diffusers.UNet2DModel`` for ``(H, W) = resolution`` images of ``channels`` channels.

    Raises:
        MissingDependencyError: diffusers (the extra ``diffusion``) is not installed.
    """
    unet_class = require("diffusers", "diffusion").UNet2DModel
    validate_unet_config(cfg, resolution)
    levels = len(cfg.channel_mult)
    attn = [2 ** lvl in cfg.attention_resolutions for lvl in range(levels)]
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn))
    in_ch = channels * (2 if cfg.condition == "concat" else 1)
    return unet_class(
        sample_size=(int(resolution[0]), int(resolution[1])),
        in_channels=in_ch,
        out_channels=channels,
        block_out_channels=tuple(cfg.channels * m for m in cfg.channel_mult),
        layers_per_block=cfg.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        attention_head_dim=cfg.attention_head_dim,
        add_attention=cfg.mid_attention,
        norm_num_groups=cfg.norm_num_groups,
        dropout=cfg.dropout,
        resnet_time_scale_shift="scale_shift" if cfg.scale_shift_norm else "default",
        downsample_type="resnet" if cfg.resblock_updown else "conv",
        upsample_type="resnet" if cfg.resblock_updown else "conv",
    )


def unet_config_dict(unet: nn.Module) -> dict[str, Any]:
    """The UNet's constructor arguments as plain JSON types (stored in checkpoints)."""
    config = cast(Mapping[str, Any], unet.config)  # diffusers' FrozenDict, set dynamically on the module
    raw = {k: v for k, v in config.items() if not k.startswith("_")}
    return json.loads(json.dumps(raw))


def unet_from_config_dict(config: dict[str, Any]) -> nn.Module:
    """Rebuild a ``UNet2DModel`` from :func:`unet_config_dict` output."""
    unet_class = require("diffusers", "diffusion").UNet2DModel
    cfg = dict(config)
    for key in ("sample_size", "block_out_channels", "down_block_types", "up_block_types"):
        if isinstance(cfg.get(key), list):
            cfg[key] = tuple(cfg[key])
    return unet_class(**cfg)


class BridgeDenoiser(nn.Module):
    """Wraps a ``UNet2DModel`` as ``model(x_t, t, y) -> prediction``.

    Args:
        unet: the UNet (called with the integer timesteps ``t``).
        condition: ``concat`` feeds ``cat([x_t, y], dim=1)``, ``none`` only ``x_t``.
    """

    def __init__(self, unet: nn.Module, condition: str = "concat") -> None:
        super().__init__()
        if condition not in ("concat", "none"):
            raise ConfigError(f"unknown UNet condition '{condition}'", "use concat or none")
        self.unet = unet
        self.condition = condition

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        inp = torch.cat([x_t, y], dim=1) if self.condition == "concat" else x_t
        return self.unet(inp, t).sample


def build_denoiser(cfg: UNetConfig, resolution: Sequence[int], channels: int = 3) -> BridgeDenoiser:
    """:class:`BridgeDenoiser` around a fresh UNet built from ``cfg``."""
    return BridgeDenoiser(build_unet(cfg, resolution, channels), cfg.condition)


# --------------------------------------------------------------------------------------------
# the bridge
# --------------------------------------------------------------------------------------------


def _expand(values: torch.Tensor, ndim: int) -> torch.Tensor:
    return values.reshape(-1, *([1] * (ndim - 1)))


class BrownianBridge:
    """Schedule, objective, loss and samplers of the Brownian Bridge (no learnable parameters).

    Args:
        num_timesteps: T (timesteps are 0 .. T-1).
        m_min, m_max: end points of the linear ``m_t`` schedule.
        max_var: s in ``delta_t = 2 s (m_t - m_t^2)``.
        objective: what the network predicts: ``grad`` = ``m_t (y - x0) + sqrt(delta_t) eps``
            (reference), ``noise`` = ``eps``, ``ysubx`` = ``y - x0``.
        loss: ``l1`` (reference) or ``l2``.
    """

    def __init__(
        self,
        num_timesteps: int = 1000,
        m_min: float = 0.001,
        m_max: float = 0.999,
        max_var: float = 1.0,
        objective: str = "grad",
        loss: str = "l1",
    ) -> None:
        validate_bridge_config(BridgeConfig(num_timesteps=num_timesteps, m_min=m_min, m_max=m_max, max_var=max_var))
        if objective not in ("grad", "noise", "ysubx"):
            raise ConfigError(f"unknown bridge objective '{objective}'", "use grad, noise or ysubx")
        if loss not in ("l1", "l2"):
            raise ConfigError(f"unknown bridge loss '{loss}'", "use l1 or l2")
        self.num_timesteps = int(num_timesteps)
        self.m_min, self.m_max, self.max_var = float(m_min), float(m_max), float(max_var)
        self.objective, self.loss_type = objective, loss
        self.m = np.linspace(self.m_min, self.m_max, self.num_timesteps, dtype=np.float64)
        self.delta = 2.0 * self.max_var * (self.m - self.m ** 2)
        self.m_t = torch.from_numpy(self.m).float()
        self.delta_t = torch.from_numpy(self.delta).float()

    @classmethod
    def from_config(cls, cfg: BridgeConfig | dict[str, Any]) -> BrownianBridge:
        d = asdict(cfg) if isinstance(cfg, BridgeConfig) else dict(cfg)
        return cls(d.get("num_timesteps", 1000), d.get("m_min", 0.001), d.get("m_max", 0.999),
                   d.get("max_var", 1.0), d.get("objective", "grad"), d.get("loss", "l1"))

    def to_dict(self) -> dict[str, Any]:
        """The schedule parameters (what :meth:`from_config` needs)."""
        return {"num_timesteps": self.num_timesteps, "m_min": self.m_min, "m_max": self.m_max,
                "max_var": self.max_var, "objective": self.objective, "loss": self.loss_type}

    # ---- forward process and objective ------------------------------------------------------

    def _coef(self, table: torch.Tensor, t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return _expand(table.to(ref.device)[t.to(ref.device).long()], ref.ndim).to(ref.dtype)

    def q_sample(self, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``x_t = (1 - m_t) x0 + m_t y + sqrt(delta_t) noise`` for per-sample timesteps ``t`` (B,)."""
        m = self._coef(self.m_t, t, x0)
        d = self._coef(self.delta_t, t, x0)
        return (1.0 - m) * x0 + m * y + d.sqrt() * noise

    def objective_target(self, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the network must predict (``grad``: ``m_t (y - x0) + sqrt(delta_t) noise``)."""
        if self.objective == "grad":
            m = self._coef(self.m_t, t, x0)
            d = self._coef(self.delta_t, t, x0)
            return m * (y - x0) + d.sqrt() * noise
        if self.objective == "noise":
            return noise
        return y - x0

    def predict_x0(self, x_t: torch.Tensor, y: torch.Tensor, t: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """``x0_hat`` from a network prediction (``grad``: ``x_t - pred``)."""
        if self.objective == "grad":
            return x_t - pred
        if self.objective == "noise":
            m = self._coef(self.m_t, t, x_t)
            d = self._coef(self.delta_t, t, x_t)
            return (x_t - m * y - d.sqrt() * pred) / (1.0 - m)
        return y - pred

    def sample_timesteps(
        self, batch: int, device: torch.device | str, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Uniform training timesteps in ``[0, T)``."""
        gen_dev = generator.device if generator is not None else torch.device("cpu")
        return torch.randint(0, self.num_timesteps, (batch,), generator=generator, device=gen_dev).to(device)

    def training_loss(
        self,
        model: Denoiser,
        x0: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """L1 (or L2) between the network prediction at ``q_sample(x0, y, t, noise)`` and the objective.

        ``t`` and ``noise`` are drawn (from ``generator`` or the global RNG) when not given.
        ``reduction="none"`` returns one value per image.
        """
        if t is None:
            t = self.sample_timesteps(x0.shape[0], x0.device, generator)
        if noise is None:
            gen_dev = generator.device if generator is not None else x0.device
            noise = torch.randn(x0.shape, generator=generator, device=gen_dev, dtype=x0.dtype).to(x0.device)
        x_t = self.q_sample(x0, y, t, noise)
        target = self.objective_target(x0, y, t, noise)
        pred = model(x_t, t, y).float()
        err = (pred - target.float()).abs() if self.loss_type == "l1" else (pred - target.float()) ** 2
        if reduction == "none":
            return err.flatten(1).mean(1)
        return err.mean()

    # ---- reverse process ----------------------------------------------------------------------

    def skip_steps(self, steps: int | None = None, skip_type: str = "uniform") -> list[int]:
        """The decreasing timesteps the sampler visits (one network evaluation each).

        ``uniform``: exactly ``steps`` distinct timesteps ``round(linspace(T-1, 0, steps))``;
        ``steps >= T`` is the full chain ``T-1, ..., 0``; ``steps = 1`` evaluates once at ``T-1``.
        ``bbdm``: the released BBDM schedule, ``arange(T-1, 1, -((T-1) / (steps-2))).long()`` (a float
        stride, truncated) followed by ``1, 0``: exactly ``steps`` evaluations (for ``T = 1000``,
        ``steps = 200``: 999, 993, 988, ..., 5, 1, 0); full chain when ``steps >= T``.
        """
        T = self.num_timesteps
        s = T if steps is None else int(steps)
        if s < 1:
            raise SarbridgeError(f"sampling needs at least 1 step, got {s}", "pass steps >= 1")
        if s >= T:
            return list(range(T - 1, -1, -1))
        if skip_type == "uniform":
            if s == 1:
                return [T - 1]
            return [int(v) for v in np.round(np.linspace(T - 1, 0, s)).astype(np.int64)]
        if skip_type == "bbdm":
            if s <= 2:
                return [T - 1, 0][:s] if s == 2 else [T - 1]
            # computed as the released code does (torch.arange on a float stride, then .long())
            mid = torch.arange(T - 1, 1, step=-((T - 1) / (s - 2))).long().tolist()
            return [int(v) for v in mid] + [1, 0]
        raise ConfigError(f"unknown skip_type '{skip_type}'", "use uniform or bbdm")

    def step_coefficients(self, t: int, n: int, eta: float = 1.0) -> dict[str, float]:
        """Scalars of one reverse step from ``t`` to ``n < t`` (float64)."""
        m_t, m_n = float(self.m[t]), float(self.m[n])
        d_t, d_n = float(self.delta[t]), float(self.delta[n])
        sigma2 = (d_t - d_n * (1.0 - m_t) ** 2 / (1.0 - m_n) ** 2) * d_n / d_t
        sigma2 = max(sigma2, 0.0) * float(eta) ** 2
        c_dir = math.sqrt(max(d_n - sigma2, 0.0) / d_t)
        return {"m_t": m_t, "m_n": m_n, "delta_t": d_t, "delta_n": d_n, "sigma2": sigma2,
                "sigma": math.sqrt(sigma2), "c_dir": c_dir}

    def p_step(
        self,
        model: Denoiser,
        x_t: torch.Tensor,
        y: torch.Tensor,
        t: int,
        n: int | None,
        noise: torch.Tensor | None = None,
        eta: float = 1.0,
        clip_denoised: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One reverse step from timestep ``t`` to ``n`` (``None``: last step, returns ``x0_hat``).

        Returns:
            ``(x_n, x0_hat)``; on the last step both are ``x0_hat``.
        """
        tt = torch.full((x_t.shape[0],), int(t), dtype=torch.long, device=x_t.device)
        pred = model(x_t, tt, y).float()
        x0_hat = self.predict_x0(x_t, y, tt, pred)
        if clip_denoised:
            x0_hat = x0_hat.clamp(-1.0, 1.0)
        if n is None:
            return x0_hat, x0_hat
        c = self.step_coefficients(int(t), int(n), eta)
        x_n = (1.0 - c["m_n"]) * x0_hat + c["m_n"] * y + c["c_dir"] * (x_t - (1.0 - c["m_t"]) * x0_hat - c["m_t"] * y)
        if c["sigma"] > 0:
            if noise is None:
                raise SarbridgeError("p_step needs noise when sigma > 0", "pass noise or use eta=0")
            x_n = x_n + c["sigma"] * noise
        return x_n, x0_hat

    @staticmethod
    def _noise(shape: Sequence[int], n_inputs: int, generator: Any, device: torch.device) -> torch.Tensor:
        if generator is None:
            return torch.randn(tuple(shape), device=device)
        if isinstance(generator, torch.Generator):
            return torch.randn(tuple(shape), generator=generator, device=generator.device).to(device)
        per = shape[0] // n_inputs
        parts = [torch.randn((per, *shape[1:]), generator=g, device=g.device).to(device) for g in generator]
        return torch.cat(parts, 0)

    @torch.no_grad()
    def sample(
        self,
        model: Denoiser,
        y: torch.Tensor,
        steps: int | None = 200,
        samples: int = 1,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        eta: float = 1.0,
        clip_denoised: bool = True,
        skip_type: str = "uniform",
        progress: bool = False,
    ) -> torch.Tensor:
        """Translate source images ``y`` (N, C, H, W) into ``samples`` target images each.

        The batch is repeated ``samples`` times (input-major: rows ``i*K .. i*K+K-1`` belong to
        input ``i``); the chain starts at ``x_T = y``.

        Args:
            model: ``model(x_t, t, y)``; put it in eval mode first.
            y: source images in [-1, 1].
            steps: number of network evaluations (see :meth:`skip_steps`); None or >= T: full chain.
            samples: K samples per input.
            generator: one ``torch.Generator`` for the whole batch, or one per input (then each
                input's samples depend only on its own generator, not on the batch it is in);
                None uses the global RNG.
            eta: scale of the stochastic term (1 = BBDM, 0 = deterministic).
            clip_denoised: clamp ``x0_hat`` to [-1, 1] at every step.
            skip_type: ``uniform`` or ``bbdm`` (see :meth:`skip_steps`).
            progress: show a progress bar over the steps.

        Returns:
            ``(N, K, C, H, W)`` samples (float, on ``y``'s device; clamped when ``clip_denoised``).
        """
        if samples < 1:
            raise SarbridgeError(f"samples must be >= 1, got {samples}", "pass samples >= 1")
        n_in = y.shape[0]
        if generator is not None and not isinstance(generator, torch.Generator) and len(generator) != n_in:
            raise SarbridgeError(f"{len(generator)} generators for {n_in} inputs", "pass one generator per input")
        ts = self.skip_steps(steps, skip_type)
        yk = y.float().repeat_interleave(samples, dim=0)
        x = yk.clone()  # x_T = y
        for i in progress_bar(range(len(ts)), desc="sampling", disable=not progress, leave=False, dynamic_ncols=True):
            n = ts[i + 1] if i + 1 < len(ts) else None
            noise = None
            if n is not None and eta > 0:
                noise = self._noise(x.shape, n_in, generator, x.device)
            x, _ = self.p_step(model, x, yk, ts[i], n, noise, eta, clip_denoised)
        return x.reshape(n_in, samples, *y.shape[1:])


# --------------------------------------------------------------------------------------------
# conversions
# --------------------------------------------------------------------------------------------


def uint8_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> float ``(N, 3, H, W)`` in [-1, 1]."""
    arr = torch.tensor(np.asarray(images)).float()
    return arr.permute(0, 3, 1, 2) / 127.5 - 1.0


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """float ``(..., 3, H, W)`` in [-1, 1] -> uint8 ``(..., H, W, 3)`` (rounded, clipped)."""
    arr = ((x.detach().float().cpu().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return arr.movedim(-3, -1).numpy()
