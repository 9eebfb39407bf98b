"""Losses that close the optical-SAR modality gap.

:class:`CMALoss` is MOS's class-wise modality alignment: for every identity ``c`` with both
modalities in the batch, on L2-normalised global features,

    ``||mu_opt^c - mu_sar^c||_2 + ||var_opt^c - var_sar^c||_2``  (population variance per dimension),

averaged over such identities. It is a diagonal-Gaussian stand-in for the 2-Wasserstein distance;
``form="w2"`` gives that distance itself (squared): ``||mu_o - mu_s||^2 + ||sigma_o - sigma_s||^2``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-12


def _safe_norm(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last dimension with a finite gradient at zero."""
    return (x.pow(2).sum(-1) + _EPS).sqrt() - _EPS**0.5


def class_modality_moments(
    features: torch.Tensor, labels: torch.Tensor, modalities: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class, per-modality mean and population variance.

    Args:
        features: (N, D).
        labels: (N,) class ids.
        modalities: (N,) 0 optical, 1 SAR.

    Returns:
        ``(mean, var, count)`` of shapes (C, 2, D), (C, 2, D), (C, 2) for the C classes present,
        in ``torch.unique`` order.
    """
    classes, inv = torch.unique(labels, return_inverse=True)
    cell = inv * 2 + modalities.long()
    onehot = F.one_hot(cell, num_classes=2 * len(classes)).to(features.dtype)  # (N, 2C)
    count = onehot.sum(0)  # (2C,)
    denom = count.clamp_min(1).unsqueeze(1)
    mean = onehot.t() @ features / denom
    sq = onehot.t() @ (features * features) / denom
    var = (sq - mean * mean).clamp_min(0)
    d = features.shape[1]
    return mean.view(-1, 2, d), var.view(-1, 2, d), count.view(-1, 2)


class CMALoss(nn.Module):
    """Class-wise modality alignment loss (MOS).

    Args:
        form: ``"mos"`` (norm of mean difference + norm of variance difference, as published) or
            ``"w2"`` (squared 2-Wasserstein distance between diagonal Gaussians).
        normalize: L2-normalise the features first (as MOS does).
    """

    def __init__(self, form: str = "mos", normalize: bool = True) -> None:
        super().__init__()
        if form not in ("mos", "w2"):
            raise ValueError(f"unknown CMAL form '{form}': use 'mos' or 'w2'")
        self.form = form
        self.normalize = normalize

    def forward(self, features: torch.Tensor, labels: torch.Tensor, modalities: torch.Tensor) -> torch.Tensor:
        feats = F.normalize(features.float(), dim=1) if self.normalize else features.float()
        mean, var, count = class_modality_moments(feats, labels, modalities)
        both = (count > 0).all(1)
        if not bool(both.any()):
            return feats.sum() * 0.0  # keeps the graph; no identity has both modalities
        mean, var = mean[both], var[both]
        if self.form == "mos":
            per = _safe_norm(mean[:, 0] - mean[:, 1]) + _safe_norm(var[:, 0] - var[:, 1])
        else:
            std = (var + _EPS).sqrt()
            per = (mean[:, 0] - mean[:, 1]).pow(2).sum(-1) + (std[:, 0] - std[:, 1]).pow(2).sum(-1)
        return per.mean()
