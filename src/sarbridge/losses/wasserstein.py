"""Wasserstein adversarial alignment of optical and SAR embeddings (WDGRL, as used by CMPC).

A *critic* ``f`` (a small MLP) estimates the 1-Wasserstein distance between the optical and the
SAR embedding distributions through the Kantorovich-Rubinstein dual,

    ``W(P_opt, P_sar) ~= max_{||f||_L <= 1}  E_opt[f(h)] - E_sar[f(h)]``,

the Lipschitz constraint being enforced either by a gradient penalty (WDGRL, ``mode="gp"``) or by
clipping the critic's weights (WGAN, ``mode="clip"``; an option of CMPC). Training alternates:

1. :meth:`WassersteinAlignment.critic_update` fits the critic for a few steps on *detached*
   features (maximise ``W - gamma * GP``),
2. :meth:`WassersteinAlignment.encoder_loss` returns ``weight * W`` with the critic frozen; the
   encoder minimises it together with its task loss, pulling the two modalities together.

Typical use inside a training step::

    align = WassersteinAlignment(WassersteinCritic(512))
    model.critic = align.critic            # optional: saved/moved with the model
    h_opt, h_sar = split_by_modality(out["embedding"], modality)
    align.critic_update(h_opt, h_sar)      # own optimiser, own backward passes
    loss = task_loss + align.encoder_loss(h_opt, h_sar)
    loss.backward(); optimizer.step()

The critic's parameters are kept at ``requires_grad=False`` except inside ``critic_update``, so an
optimiser built over a parent module from its trainable parameters (as the sarbridge trainer does)
skips them, and the encoder's backward pass never accumulates gradients into the critic.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from sarbridge.core.distributed import all_reduce_gradients_

_EPS = 1e-12

MODES = ("gp", "clip")


class WassersteinCritic(nn.Module):
    """MLP critic ``dim -> hidden -> ... -> hidden -> 1`` with ReLU activations.

    The default (two hidden layers of 512 units) follows CMPC's 512-512-1 domain critic.

    Args:
        dim: input (embedding) dimension.
        hidden: width of each hidden layer.
        num_hidden_layers: number of hidden layers (0 gives a linear critic).

    Raises:
        ValueError: a non-positive ``dim``/``hidden`` or a negative ``num_hidden_layers``.
    """

    def __init__(self, dim: int, hidden: int = 512, num_hidden_layers: int = 2) -> None:
        super().__init__()
        if dim <= 0 or hidden <= 0 or num_hidden_layers < 0:
            raise ValueError(
                f"WassersteinCritic needs dim > 0, hidden > 0 and num_hidden_layers >= 0 "
                f"(got {dim}, {hidden}, {num_hidden_layers})"
            )
        layers: list[nn.Module] = []
        width = dim
        for _ in range(num_hidden_layers):
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.dim = dim

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Critic values (N,) of embeddings ``h`` (N, dim)."""
        return self.net(h).squeeze(-1)


def _critic_dtype(critic: nn.Module) -> torch.dtype:
    p = next(critic.parameters(), None)
    return p.dtype if p is not None and p.is_floating_point() else torch.float32


def wasserstein_estimate(critic: nn.Module, h_opt: torch.Tensor, h_sar: torch.Tensor) -> torch.Tensor:
    """Critic estimate of the Wasserstein distance: ``mean f(h_opt) - mean f(h_sar)``.

    Features are cast to the critic's dtype (float32 under mixed precision).

    Args:
        critic: maps (N, D) to (N,) (or (N, 1)).
        h_opt: optical embeddings (N_opt, D), N_opt >= 1.
        h_sar: SAR embeddings (N_sar, D), N_sar >= 1.

    Returns:
        A scalar tensor; differentiable w.r.t. the critic and the features.
    """
    dtype = _critic_dtype(critic)
    return critic(h_opt.to(dtype)).mean() - critic(h_sar.to(dtype)).mean()


def _rand_index(n: int, k: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.randperm(n, generator=generator, device=gen_device)[:k].to(device)


def gradient_penalty(
    critic: nn.Module,
    h_opt: torch.Tensor,
    h_sar: torch.Tensor,
    generator: torch.Generator | None = None,
    include_endpoints: bool = True,
) -> torch.Tensor:
    """WDGRL gradient penalty ``mean((||grad_h f(h)||_2 - 1)^2)``.

    ``n = min(N_opt, N_sar)`` optical and SAR samples are drawn at random (without replacement)
    and paired; each pair gives an interpolate ``alpha * h_opt + (1 - alpha) * h_sar`` with
    ``alpha ~ U(0, 1)`` drawn per pair. As in the reference WDGRL implementation, the penalty is
    taken over the interpolates *and* the original samples (all of ``h_opt`` and ``h_sar``) when
    ``include_endpoints`` is true (the default); over the interpolates only (WGAN-GP) otherwise.

    The features are detached: the penalty only constrains (and trains) the critic. The graph of
    the input gradients is kept (``create_graph=True``) so the result can be backpropagated to the
    critic's parameters.

    Args:
        critic: maps (N, D) to (N,) (or (N, 1)).
        h_opt: optical embeddings (N_opt, D).
        h_sar: SAR embeddings (N_sar, D).
        generator: random generator for the pairing and ``alpha`` (reproducibility); on any device.
        include_endpoints: also penalise at the original samples (WDGRL).

    Returns:
        A scalar tensor (zero when a modality is empty).
    """
    dtype = _critic_dtype(critic)
    h_opt = h_opt.detach().to(dtype)
    h_sar = h_sar.detach().to(dtype)
    n = min(h_opt.shape[0], h_sar.shape[0])
    if n == 0:
        return torch.zeros((), dtype=dtype, device=h_opt.device)
    device = h_opt.device
    a = h_opt[_rand_index(h_opt.shape[0], n, generator, device)]
    b = h_sar[_rand_index(h_sar.shape[0], n, generator, device)]
    gen_device = generator.device if generator is not None else device
    alpha = torch.rand(n, 1, generator=generator, device=gen_device, dtype=dtype).to(device)
    points = alpha * a + (1.0 - alpha) * b
    if include_endpoints:
        points = torch.cat([h_opt, h_sar, points], dim=0)
    points = points.requires_grad_(True)
    with torch.enable_grad():
        values = critic(points)
        (grads,) = torch.autograd.grad(values.sum(), points, create_graph=True)
    norm = (grads.pow(2).sum(dim=1) + _EPS).sqrt()
    return (norm - 1.0).pow(2).mean()


@torch.no_grad()
def clip_weights_(critic: nn.Module, clip: float = 0.1) -> None:
    """Clamp every parameter of ``critic`` to ``[-clip, clip]`` in place (WGAN weight clipping)."""
    for p in critic.parameters():
        p.clamp_(-clip, clip)


def split_by_modality(features: torch.Tensor, modality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a mixed batch (N, D) by modality index (N,) (0 optical, 1 SAR) into ``(h_opt, h_sar)``."""
    sar = modality.to(device=features.device, dtype=torch.bool)
    return features[~sar], features[sar]


def _no_autocast(device: torch.device) -> AbstractContextManager[Any]:
    """Disable autocast on ``device`` (a no-op where autocast does not exist)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return nullcontext()


def _empty(h: torch.Tensor | None) -> bool:
    return h is None or h.shape[0] == 0


class WassersteinAlignment:
    """Adversarial Wasserstein alignment of optical and SAR embeddings (WDGRL / CMPC).

    A plain object (not an ``nn.Module``): it owns the critic and the critic's Adam optimiser.
    Register :attr:`critic` on your model (``model.critic = align.critic``) to have it moved and
    checkpointed with the model, or call :meth:`to`; the critic must sit on the features' device.
    The critic's parameters stay at ``requires_grad=False`` outside :meth:`critic_update`, so a
    parent optimiser built over trainable parameters skips them.

    Args:
        critic: the critic network (e.g. :class:`WassersteinCritic`).
        mode: ``"gp"`` (gradient penalty, WDGRL) or ``"clip"`` (weight clipping).
        gamma: gradient-penalty coefficient (``mode="gp"``).
        clip: weight-clipping bound (``mode="clip"``).
        critic_steps: critic optimiser steps per :meth:`critic_update`.
        critic_lr: Adam learning rate of the critic.
        weight: ``lambda``, the multiplier of the encoder loss.
        generator: random generator for the gradient penalty (reproducibility).
        sync_gradients: under ``torchrun`` (a process group of more than one process), average the
            critic's gradients over the processes before each critic step, so every rank's critic
            (and its Adam state) stays identical. Every rank must then call :meth:`critic_update`
            equally often with both modalities present.

    With ``mode="clip"`` the critic's weights are clipped once at construction as well.

    Raises:
        ValueError: unknown ``mode`` or out-of-range numbers.
    """

    def __init__(
        self,
        critic: nn.Module,
        mode: str = "gp",
        gamma: float = 10.0,
        clip: float = 0.1,
        critic_steps: int = 5,
        critic_lr: float = 1e-3,
        weight: float = 0.01,
        generator: torch.Generator | None = None,
        sync_gradients: bool = True,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown Wasserstein alignment mode '{mode}': use 'gp' or 'clip'")
        if critic_steps < 0 or critic_lr <= 0 or gamma < 0 or clip <= 0:
            raise ValueError(
                f"need critic_steps >= 0, critic_lr > 0, gamma >= 0 and clip > 0 "
                f"(got {critic_steps}, {critic_lr}, {gamma}, {clip})"
            )
        self.critic = critic
        self.mode = mode
        self.gamma = float(gamma)
        self.clip = float(clip)
        self.critic_steps = int(critic_steps)
        self.critic_lr = float(critic_lr)
        self.weight = float(weight)
        self.generator = generator
        self.sync_gradients = bool(sync_gradients)
        self.optimizer = torch.optim.Adam(self.critic.parameters(), lr=self.critic_lr)
        self.updates = 0
        self._freeze()
        if self.mode == "clip":
            clip_weights_(self.critic, self.clip)

    # -- critic ---------------------------------------------------------------------------------

    def _freeze(self) -> None:
        for p in self.critic.parameters():
            p.requires_grad_(False)

    @contextmanager
    def _trainable(self) -> Iterator[None]:
        for p in self.critic.parameters():
            p.requires_grad_(True)
        try:
            yield
        finally:
            self.optimizer.zero_grad(set_to_none=True)  # no stale gradients for a parent optimiser
            self._freeze()

    def critic_update(self, h_opt: torch.Tensor | None, h_sar: torch.Tensor | None) -> dict[str, float]:
        """Fit the critic for ``critic_steps`` steps on detached features.

        Maximises ``W - gamma * GP`` (``mode="gp"``) or ``W`` followed by weight clipping
        (``mode="clip"``). Runs its own backward passes (outside autocast, in the critic's dtype)
        and leaves no gradients on the critic.

        Args:
            h_opt: optical embeddings (N_opt, D).
            h_sar: SAR embeddings (N_sar, D).

        Returns:
            ``critic_loss``, ``wasserstein`` and ``gradient_penalty`` (``mode="gp"``) of the last
            step, measured before that step; an empty dict when a modality is missing (no update).
        """
        if _empty(h_opt) or _empty(h_sar) or self.critic_steps == 0:
            return {}
        assert h_opt is not None and h_sar is not None
        h_opt, h_sar = h_opt.detach(), h_sar.detach()
        stats: dict[str, float] = {}
        with self._trainable(), torch.enable_grad(), _no_autocast(h_opt.device):
            for _ in range(self.critic_steps):
                self.optimizer.zero_grad(set_to_none=True)
                w = wasserstein_estimate(self.critic, h_opt, h_sar)
                if self.mode == "gp":
                    gp = gradient_penalty(self.critic, h_opt, h_sar, generator=self.generator)
                    loss = -(w - self.gamma * gp)
                    stats["gradient_penalty"] = float(gp.detach())
                else:
                    loss = -w
                loss.backward()
                if self.sync_gradients:

                    all_reduce_gradients_(self.critic.parameters())
                self.optimizer.step()
                if self.mode == "clip":
                    clip_weights_(self.critic, self.clip)
                stats["critic_loss"] = float(loss.detach())
                stats["wasserstein"] = float(w.detach())
        self.updates += 1
        return stats

    # -- encoder --------------------------------------------------------------------------------

    def encoder_loss(self, h_opt: torch.Tensor | None, h_sar: torch.Tensor | None) -> torch.Tensor:
        """``weight * W`` with the critic frozen: gradients flow only into ``h_opt``/``h_sar``.

        Args:
            h_opt: optical embeddings (N_opt, D).
            h_sar: SAR embeddings (N_sar, D).

        Returns:
            A scalar tensor; zero (still attached to the graph of the given features) when a
            modality is missing.
        """
        if _empty(h_opt) or _empty(h_sar):
            present = h_opt if h_opt is not None else h_sar
            if present is not None:
                return present.sum().float() * 0.0  # keeps the graph; nothing to align
            p = next(self.critic.parameters(), None)
            return torch.zeros((), device=p.device if p is not None else None)
        assert h_opt is not None and h_sar is not None
        self._freeze()
        with _no_autocast(h_opt.device):
            return self.weight * wasserstein_estimate(self.critic, h_opt, h_sar)

    def __call__(self, h_opt: torch.Tensor | None, h_sar: torch.Tensor | None) -> torch.Tensor:
        """Alias of :meth:`encoder_loss`."""
        return self.encoder_loss(h_opt, h_sar)

    # -- bookkeeping ----------------------------------------------------------------------------

    def to(self, *args: Any, **kwargs: Any) -> WassersteinAlignment:
        """Move the critic (``nn.Module.to`` arguments) and the optimiser's state with it."""
        self.critic.to(*args, **kwargs)
        for state in self.optimizer.state.values():
            for k, v in state.items():
                if isinstance(v, torch.Tensor) and v.dim() > 0:
                    state[k] = v.to(*args, **kwargs)
        self._freeze()
        return self

    def state_dict(self) -> dict[str, Any]:
        """Resumable state (a copy): the critic optimiser (``optimizer``), the critic weights
        (``critic``) and the number of critic updates (``updates``)."""
        return copy.deepcopy(
            {"optimizer": self.optimizer.state_dict(), "critic": self.critic.state_dict(), "updates": self.updates}
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (``critic`` may be absent when the critic is restored
        with its parent model)."""
        if "critic" in state:
            self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state.get("updates", 0))
        self._freeze()
