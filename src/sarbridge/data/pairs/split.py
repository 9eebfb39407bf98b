"""The seeded split of pairs into training and held-out parts, by whole groups."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sarbridge.data.pairs.items import PairItem

__all__ = ["split_pairs"]


def split_pairs(
    items: Sequence[PairItem], fraction: float, seed: int = 0, min_groups: int = 2
) -> tuple[list[PairItem], list[PairItem]]:
    """Hold out a seeded ``fraction`` of the *groups* (so no group is in both parts).

    The groups are sorted (as strings) and ``round(fraction * groups)`` of them drawn without
    replacement by ``numpy.random.default_rng(seed)``, but at least ``min_groups`` are held out
    and at least ``min_groups`` stay for training; with fewer than ``2 * min_groups`` groups (or
    ``fraction <= 0``) nothing is held out. Pretraining keeps the default 2 (pair retrieval
    needs a choice among held-out pairs); bridge training passes 1.

    Args:
        items: the pairs (their order is kept in both parts).
        fraction: share of the groups to hold out.
        seed: seed of the draw.
        min_groups: fewest groups on either side when any are held out (>= 1).

    Returns:
        ``(train, val)``.
    """
    if min_groups < 1:
        raise ValueError(f"min_groups must be >= 1, got {min_groups}")
    groups = sorted({it.group for it in items})
    if fraction <= 0 or len(groups) < 2 * min_groups:
        return list(items), []
    n_val = min(max(int(round(fraction * len(groups))), min_groups), len(groups) - min_groups)
    rng = np.random.default_rng(seed)
    val = {groups[i] for i in rng.choice(len(groups), size=n_val, replace=False).tolist()}
    return [it for it in items if it.group not in val], [it for it in items if it.group in val]
