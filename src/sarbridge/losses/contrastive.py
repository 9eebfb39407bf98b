"""CLIP-style symmetric contrastive loss (InfoNCE) on optical / SAR pair embeddings.

For a batch of ``N`` pairs with L2-normalised embeddings ``o_i`` (optical) and ``s_i`` (SAR),
the logits are ``L = scale * O S^T`` (N x N) and the loss is the mean of the two cross-entropies
whose targets are the diagonal::

    loss = 0.5 * (CE(L, arange(N)) + CE(L^T, arange(N)))

``scale = exp(logit_scale)`` is learned; ``logit_scale`` starts at ``log(1 / temperature)``
(``log(1 / 0.07)`` as in CLIP) and the scale is clamped at ``max_scale`` (100). Like the losses of
:mod:`sarbridge.losses.metric` the module takes a ``reducer`` (``mean``, ``sum`` or ``none``:
the per-pair loss ``0.5 * (ce_opt->sar_i + ce_sar->opt_i)``) and can be used on any pair of
embedding tensors. Optional ``groups`` mark pairs that show the same thing (the same ship in two
poses, the same place twice): off-diagonal entries of the same group are removed from the
softmax denominators, so they are not pushed apart as false negatives.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ContrastiveLoss", "contrastive_logits"]


def contrastive_logits(optical: torch.Tensor, sar: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """``scale * normalize(optical) @ normalize(sar).T`` (N x M), in float32."""
    o = F.normalize(optical.float(), dim=1)
    s = F.normalize(sar.float(), dim=1)
    return scale * (o @ s.t())


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE between optical and SAR embeddings of the same pairs.

    Args:
        temperature: initial temperature; ``logit_scale`` starts at ``log(1 / temperature)``.
        learn_temperature: make ``logit_scale`` a trainable parameter (else a fixed buffer).
        max_scale: upper clamp of ``exp(logit_scale)`` (CLIP: 100).
        reducer: ``mean`` (default), ``sum`` or ``none`` (per-pair loss vector).

    Call ``loss(optical, sar, groups=None)`` with ``optical``/``sar`` of shape (N, D), row ``i``
    of both forming pair ``i``. ``groups`` (N,) integer labels: pairs sharing a label are not
    treated as negatives of each other.
    """

    def __init__(
        self,
        temperature: float = 0.07,
        learn_temperature: bool = True,
        max_scale: float = 100.0,
        reducer: str = "mean",
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not max_scale > 0:
            raise ValueError(f"max_scale must be > 0, got {max_scale}")
        if reducer not in ("mean", "sum", "none"):
            raise ValueError(f"unknown reducer '{reducer}': use mean, sum or none")
        init = torch.tensor(math.log(1.0 / temperature), dtype=torch.float32)
        if learn_temperature:
            self.logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("logit_scale", init)
        self.max_scale = float(max_scale)
        self.reducer = reducer

    @property
    def scale(self) -> torch.Tensor:
        """``exp(logit_scale)`` clamped at ``max_scale``."""
        return self.logit_scale.float().exp().clamp(max=self.max_scale)

    def logits(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        """Optical-to-SAR logits (N x N); the SAR-to-optical logits are the transpose."""
        return contrastive_logits(optical, sar, self.scale)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        if optical.ndim != 2 or optical.shape != sar.shape:
            raise ValueError(f"optical and sar embeddings must both be (N, D), got {tuple(optical.shape)} and {tuple(sar.shape)}")
        n = optical.shape[0]
        logits = self.logits(optical, sar)
        if groups is not None:
            groups = groups.to(logits.device).view(-1)
            if groups.numel() != n:
                raise ValueError(f"groups must have {n} entries, got {groups.numel()}")
            same = groups.unsqueeze(0) == groups.unsqueeze(1)
            same.fill_diagonal_(False)
            logits = logits.masked_fill(same, float("-inf"))
        target = torch.arange(n, device=logits.device)
        per = 0.5 * (F.cross_entropy(logits, target, reduction="none")
                     + F.cross_entropy(logits.t(), target, reduction="none"))
        if self.reducer == "none":
            return per
        if self.reducer == "sum":
            return per.sum()
        return per.mean()

    def extra_repr(self) -> str:
        return f"max_scale={self.max_scale}, reducer={self.reducer!r}"
