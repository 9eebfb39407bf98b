"""Features of a trained run before and after training, for the modality-gap analysis.

Each task that has a gap analysis (:mod:`sarbridge.tasks.reid.run_features`,
:mod:`sarbridge.tasks.geo.run_features`) extracts optical and SAR features of one split with the
run's INITIAL model (rebuilt from the run's config exactly as training initialised it) and with the
TRAINED model, and returns them as :class:`RunFeatures`; :mod:`sarbridge.app.report.analyze`
measures and pictures them. The helpers below are shared by those extractors.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarbridge.nn.pretrained import is_hub_spec

#: The data splits a gap analysis can use.
SPLITS: tuple[str, ...] = ("test", "val", "train")


@dataclass
class StageFeatures:
    """Features of one stage: ``features`` ``(N, D)`` with per-row ``modality`` (0 optical, 1 SAR)
    and ``ids`` (identity / location, -1 for none)."""

    features: torch.Tensor
    modality: np.ndarray
    ids: np.ndarray

    @property
    def optical(self) -> torch.Tensor:
        """The optical rows of ``features``."""
        return self.features[torch.as_tensor(self.modality == 0)]

    @property
    def sar(self) -> torch.Tensor:
        """The SAR rows of ``features``."""
        return self.features[torch.as_tensor(self.modality == 1)]


@dataclass
class RunFeatures:
    """Everything extracted from one run folder.

    Attributes:
        task: the task name (``reid``, ``geo``).
        stages: ``"before"`` / ``"after"`` -> features.
        init: how the initial model was built (pretrained file or random seed).
        data: where the images came from.
        checkpoint: the trained checkpoint.
        extra: more facts for ``analysis.json`` (e.g. ``selected_epoch``).
    """

    task: str
    stages: dict[str, StageFeatures]
    init: str
    data: str
    checkpoint: str
    extra: dict[str, Any] = field(default_factory=dict)


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Seed as training did without leaving the global generators changed for the caller."""
    py, np_state, torch_state = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.random.set_rng_state(torch_state)


def pretrained_for_init(pretrained: str | None, seed: int, run: Path) -> tuple[str | None, str]:
    """The pretrained weights to rebuild a run's initial model with, and a description of the start.

    Args:
        pretrained: the weights file the run's config names (or None).
        seed: the run's seed.
        run: the run folder (for the warning).

    Returns:
        ``(weights or None, description)``; None with a warning when the file is gone.
    """
    if not pretrained:
        return None, f"random initialisation (seed {seed})"
    if is_hub_spec(pretrained) or Path(pretrained).is_file():
        return pretrained, f"pretrained weights '{pretrained}' (seed {seed})"
    msg = (f"the pretrained weights '{pretrained}' named by run '{run}' are gone; 'before' uses a random "
           f"initialisation (seed {seed}), not the run's true start")
    warnings.warn(msg, stacklevel=3)
    return None, f"random initialisation (seed {seed}); pretrained file '{pretrained}' not found"


def subsample_indices(modality: np.ndarray, max_samples: int, seed: int = 0) -> np.ndarray:
    """Seeded subsample of at most ``max_samples`` rows, stratified by modality.

    Each modality keeps its share of ``max_samples`` (proportional allocation, at least 2 per
    modality where available); sorted indices. Everything is kept when there are at most
    ``max_samples`` rows.
    """
    modality = np.asarray(modality)
    n = len(modality)
    if max_samples <= 0 or n <= max_samples:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    keep = []
    for m in np.unique(modality):
        idx = np.flatnonzero(modality == m)
        k = min(len(idx), max(2, int(round(max_samples * len(idx) / n))))
        keep.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(keep))


__all__ = ["SPLITS", "RunFeatures", "StageFeatures", "preserved_rng", "pretrained_for_init", "subsample_indices"]
