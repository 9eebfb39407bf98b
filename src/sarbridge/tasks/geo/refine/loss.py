"""The refiner's training objective: node-classification cross-entropy over the candidate graph."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sarbridge.tasks.geo.refine.tensors import widen

__all__ = ["refinement_loss"]


def refinement_loss(
    logits: torch.Tensor, target_pos: torch.Tensor, soft_targets: torch.Tensor | None = None
) -> torch.Tensor:
    """Node-classification cross-entropy of the refiner.

    A graph is trained with a one-hot target on ``target_pos`` or, when ``soft_targets`` is given
    and its row has positive mass, with that row re-normalised to sum to 1 (e.g. overlap weights
    that also credit near-misses); the loss is ``-sum_k t_k log_softmax(logits)_k`` averaged over
    the graphs that have a target. Graphs with ``target_pos == -1`` (true reference not among the
    candidates) and no soft mass are skipped; with none left, the result is a zero still connected
    to ``logits`` (so ``backward`` works and gives zero gradients).

    Args:
        logits: (B, K) node logits.
        target_pos: (B,) long position of the true node in ``0..K-1``, or -1.
        soft_targets: optional (B, K) non-negative target weights.

    Returns:
        Scalar loss.

    Raises:
        ValueError: bad shapes, positions outside ``-1..K-1`` or negative soft targets.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, K), got {tuple(logits.shape)}")
    b, k = logits.shape
    target_pos = torch.as_tensor(target_pos, device=logits.device).long()
    if target_pos.shape != (b,):
        raise ValueError(f"target_pos must have shape ({b},), got {tuple(target_pos.shape)}")
    if bool(((target_pos < -1) | (target_pos >= k)).any()):
        raise ValueError(f"target_pos must lie in -1..{k - 1}, got {target_pos.tolist()}")
    hard = target_pos >= 0
    target = F.one_hot(target_pos.clamp_min(0), k).to(logits.dtype) * hard.unsqueeze(1).to(logits.dtype)
    valid = hard
    if soft_targets is not None:
        if soft_targets.shape != (b, k):
            raise ValueError(f"soft_targets must have shape ({b}, {k}), got {tuple(soft_targets.shape)}")
        if bool((soft_targets < 0).any()):
            raise ValueError("soft_targets must be non-negative")
        soft = soft_targets.to(device=logits.device, dtype=logits.dtype)
        mass = soft.sum(1, keepdim=True)
        has_soft = mass.squeeze(1) > 0
        target = torch.where(has_soft.unsqueeze(1), soft / mass.clamp_min(torch.finfo(soft.dtype).tiny), target)
        valid = hard | has_soft
    if not bool(valid.any()):
        return logits.sum() * 0.0
    logp = F.log_softmax(widen(logits[valid]), dim=1)
    return -(target[valid].to(logp.dtype) * logp).sum(1).mean()
