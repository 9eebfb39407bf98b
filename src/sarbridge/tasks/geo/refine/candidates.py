"""Refinement graphs built from coarse retrieval results: :class:`RefinementInput` batches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch

__all__ = ["RefinementInput", "gather_candidates"]


@dataclass
class RefinementInput:
    """One batch of refinement graphs built from coarse retrieval (see :func:`gather_candidates`).

    Attributes:
        query_emb: (M, D) query embeddings.
        cand_emb: (M, K, D) candidate embeddings in coarse order.
        cand_xy: (M, K, 2) candidate map coordinates (metres).
        coarse_scores: (M, K) coarse similarities (higher = better).
        target_pos: (M,) long position of the true reference among the candidates or -1;
            ``None`` when the targets are unknown.
        cand_index: (M, K) long reference indices of the candidates (maps a chosen node back to
            its reference patch), or ``None``.
    """

    query_emb: torch.Tensor
    cand_emb: torch.Tensor
    cand_xy: torch.Tensor
    coarse_scores: torch.Tensor
    target_pos: torch.Tensor | None = None
    cand_index: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.query_emb.shape[0])

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> RefinementInput:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        mapped: dict[str, Any] = {name: None if v is None else fn(v) for name, v in values.items()}
        return RefinementInput(**mapped)

    def select(self, rows: torch.Tensor | slice) -> RefinementInput:
        """The graphs at ``rows`` (an index tensor, boolean mask or slice)."""
        return self._map(lambda t: t[rows])

    def to(self, device: torch.device | str) -> RefinementInput:
        """A copy with every tensor on ``device``."""
        return self._map(lambda t: t.to(device))


def gather_candidates(
    query_emb: torch.Tensor,
    ref_emb: torch.Tensor,
    ref_xy: torch.Tensor,
    ranked: torch.Tensor,
    scores: torch.Tensor,
    targets: torch.Tensor | None = None,
    top_k: int | None = None,
) -> RefinementInput:
    """Turn coarse retrieval results into a :class:`RefinementInput`.

    Args:
        query_emb: (M, D) query embeddings.
        ref_emb: (N, D) reference embeddings.
        ref_xy: (N, 2) reference map coordinates (metres).
        ranked: (M, K) reference indices of each query's candidates, best first.
        scores: (M, K) the matching coarse similarities (higher = better).
        targets: optional (M,) reference index of each query's true reference (-1 = none).
        top_k: keep only the first ``top_k`` candidates of each row (``None``: all K).

    Returns:
        The batch; ``target_pos`` is the first position of the target in its row, or -1 when it
        was not retrieved (``None`` without ``targets``); ``cand_index`` is ``ranked``.

    Raises:
        ValueError: mismatched shapes or indices outside ``0..N-1``.
    """
    if query_emb.dim() != 2 or ref_emb.dim() != 2 or query_emb.shape[1] != ref_emb.shape[1]:
        raise ValueError(
            f"query_emb (M, D) and ref_emb (N, D) must share D, got {tuple(query_emb.shape)} and "
            f"{tuple(ref_emb.shape)}"
        )
    m, n = query_emb.shape[0], ref_emb.shape[0]
    if ref_xy.shape != (n, 2):
        raise ValueError(f"ref_xy must have shape ({n}, 2), got {tuple(ref_xy.shape)}")
    ranked = torch.as_tensor(ranked, device=ref_emb.device).long()
    if ranked.dim() != 2 or ranked.shape[0] != m:
        raise ValueError(f"ranked must have shape ({m}, K), got {tuple(ranked.shape)}")
    if scores.shape != ranked.shape:
        raise ValueError(f"scores {tuple(scores.shape)} must match ranked {tuple(ranked.shape)}")
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        ranked, scores = ranked[:, :top_k], scores[:, :top_k]
    if ranked.numel() and bool(((ranked < 0) | (ranked >= n)).any()):
        raise ValueError(f"ranked holds reference indices outside 0..{n - 1}")
    ref_xy = ref_xy.to(ref_emb.device)
    target_pos = None
    if targets is not None:
        targets = torch.as_tensor(targets, device=ranked.device).long()
        if targets.shape != (m,):
            raise ValueError(f"targets must have shape ({m},), got {tuple(targets.shape)}")
        hit = ranked == targets.unsqueeze(1)
        first = hit.int().argmax(dim=1) if ranked.shape[1] else torch.zeros_like(targets)
        target_pos = torch.where(hit.any(dim=1), first, torch.full_like(first, -1))
    return RefinementInput(
        query_emb=query_emb,
        cand_emb=ref_emb[ranked],
        cand_xy=ref_xy[ranked],
        coarse_scores=scores,
        target_pos=target_pos,
        cand_index=ranked,
    )
