"""Helpers shared by the tasks' gap-analysis feature extractors."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from sarbridge.tasks.run_features import (
    StageFeatures,
    preserved_rng,
    pretrained_for_init,
    subsample_indices,
)


def test_subsample_is_stratified_and_seeded() -> None:
    mods = np.array([0] * 300 + [1] * 100)
    keep = subsample_indices(mods, 40, seed=1)
    assert len(keep) == 40 and (mods[keep] == 0).sum() == 30 and (mods[keep] == 1).sum() == 10
    assert np.array_equal(keep, subsample_indices(mods, 40, seed=1))
    assert not np.array_equal(keep, subsample_indices(mods, 40, seed=2))
    assert np.array_equal(subsample_indices(mods, 1000), np.arange(400))
    few = subsample_indices(np.array([0] * 200 + [1]), 20)
    assert (np.array([0] * 200 + [1])[few] == 1).sum() == 1


def test_preserved_rng_restores_every_generator() -> None:
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    with preserved_rng():
        random.seed(9), np.random.seed(9), torch.manual_seed(9)
        random.random(), np.random.rand(), torch.rand(1)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_pretrained_for_init(tmp_path: Path) -> None:
    assert pretrained_for_init(None, 3, tmp_path) == (None, "random initialisation (seed 3)")
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    assert pretrained_for_init(str(weights), 3, tmp_path) == (str(weights), f"pretrained weights '{weights}' (seed 3)")
    with pytest.warns(UserWarning, match="are gone"):
        got = pretrained_for_init(str(tmp_path / "gone.pt"), 3, tmp_path)
    assert got[0] is None and "not found" in got[1]


def test_stage_features_split_by_modality() -> None:
    st = StageFeatures(torch.arange(8.0).reshape(4, 2), np.array([0, 1, 0, 1]), np.array([5, 5, 6, 6]))
    assert st.optical.tolist() == [[0.0, 1.0], [4.0, 5.0]] and st.sar.tolist() == [[2.0, 3.0], [6.0, 7.0]]
