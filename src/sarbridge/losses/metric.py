"""Metric-learning losses that compose: a distance, a miner and a reducer.

Losses accept ``(embeddings, labels)`` or query-vs-reference embeddings
``(embeddings, labels, ref_embeddings, ref_labels)`` (e.g. optical queries against SAR references).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def euclidean_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distance (A x B), numerically safe at zero."""
    sq = (a * a).sum(1, keepdim=True) + (b * b).sum(1).unsqueeze(0) - 2.0 * a @ b.t()
    return sq.clamp_min(1e-12).sqrt()


def squared_euclidean_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distance (A x B)."""
    return ((a * a).sum(1, keepdim=True) + (b * b).sum(1).unsqueeze(0) - 2.0 * a @ b.t()).clamp_min(0)


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise ``1 - cos`` (A x B)."""
    return 1.0 - F.normalize(a, dim=1) @ F.normalize(b, dim=1).t()


DISTANCES: dict[str, Distance] = {
    "euclidean": euclidean_distance,
    "sqeuclidean": squared_euclidean_distance,
    "cosine": cosine_distance,
}


def batch_hard_mine(dist: torch.Tensor, labels: torch.Tensor, ref_labels: torch.Tensor, same_set: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hardest positive (largest distance) and hardest negative (smallest) per anchor.

    Returns:
        ``(d_ap, d_an, valid)``: anchors without a positive or a negative are marked invalid.
    """
    pos = labels.unsqueeze(1) == ref_labels.unsqueeze(0)
    if same_set:
        pos = pos & ~torch.eye(len(labels), dtype=torch.bool, device=dist.device)
    neg = labels.unsqueeze(1) != ref_labels.unsqueeze(0)
    big = torch.finfo(dist.dtype).max
    d_ap = torch.where(pos, dist, torch.full_like(dist, -big)).max(1).values
    d_an = torch.where(neg, dist, torch.full_like(dist, big)).min(1).values
    valid = pos.any(1) & neg.any(1)
    return d_ap, d_an, valid


class TripletLoss(nn.Module):
    """Batch-hard triplet loss, hinge with ``margin`` or soft margin ``log(1 + exp(d_ap - d_an))``.

    Args:
        margin: hinge margin, or None for the soft-margin form (TransOSS default).
        distance: ``euclidean`` (default), ``sqeuclidean``, ``cosine`` or a callable.
        normalize: L2-normalise embeddings first.
        reducer: ``mean`` over valid anchors, ``sum`` or ``none`` (per-anchor vector, 0 if invalid).
    """

    def __init__(
        self,
        margin: float | None = None,
        distance: str | Distance = "euclidean",
        normalize: bool = False,
        reducer: str = "mean",
    ) -> None:
        super().__init__()
        self.margin = margin
        self.distance = DISTANCES[distance] if isinstance(distance, str) else distance
        self.normalize = normalize
        if reducer not in ("mean", "sum", "none"):
            raise ValueError(f"unknown reducer '{reducer}': use mean, sum or none")
        self.reducer = reducer

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_embeddings: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        same = ref_embeddings is None
        ref_e = embeddings if ref_embeddings is None else ref_embeddings
        ref_l = labels if same else ref_labels
        if ref_l is None:
            raise ValueError("ref_labels are required with ref_embeddings")
        if self.normalize:
            embeddings, ref_e = F.normalize(embeddings, dim=1), F.normalize(ref_e, dim=1)
        dist = self.distance(embeddings.float(), ref_e.float())
        d_ap, d_an, valid = batch_hard_mine(dist, labels, ref_l, same)
        diff = d_ap - d_an
        per = F.softplus(diff) if self.margin is None else F.relu(diff + self.margin)
        per = torch.where(valid, per, torch.zeros_like(per))
        if self.reducer == "none":
            return per
        if self.reducer == "sum":
            return per.sum()
        return per.sum() / valid.sum().clamp_min(1)


class CrossEntropyLabelSmooth(nn.Module):
    """Cross-entropy with label smoothing ``eps``: target ``(1 - eps) * onehot + eps / C``."""

    def __init__(self, epsilon: float = 0.1) -> None:
        super().__init__()
        self.epsilon = epsilon

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1)
        onehot = torch.zeros_like(log_p).scatter_(1, targets.unsqueeze(1), 1.0)
        soft = (1.0 - self.epsilon) * onehot + self.epsilon / logits.shape[1]
        return -(soft * log_p).sum(1).mean()
