"""Coarse-to-fine registration: same answer as the full search, the coarse level's confidence."""

from __future__ import annotations

import numpy as np
import pytest
from register_scenes import optical_scene, sar_like

from sarbridge.core.errors import DataError
from sarbridge.tasks.geo.register import register, register_coarse_to_fine, register_in_map


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    optical, labels = optical_scene(256, seed=21)
    return optical, sar_like(optical, labels, seed=22)


def test_coarse_to_fine_finds_the_full_search_answer(scene):
    optical, sar = scene
    for r0, c0 in [(30, 40), (150, 90), (101, 153)]:
        query = sar[r0 : r0 + 96, c0 : c0 + 96]
        full = register(query, optical)
        c2f = register_coarse_to_fine(query, optical, factor=2)
        assert (c2f.row, c2f.col) == pytest.approx((full.row, full.col), abs=0.05)
        assert abs(c2f.row - r0) < 0.75 and abs(c2f.col - c0) < 0.75
        assert c2f.score == pytest.approx(full.score, abs=5e-3)  # fine-level cost (own norm floor) at the same place
        assert c2f.surface.shape[-1] == (256 // 2) - (96 // 2) + 1  # the coarse level's surface


def test_coarse_to_fine_over_several_windows_and_in_the_stage(scene):
    optical, sar = scene
    query = sar[120:216, 60:156]
    wins = [optical[:140, :200], optical[90:230, 20:190]]
    res = register_coarse_to_fine(query, wins, factor=2, origins=[(0, 0), (90, 20)])
    assert res.candidate == 1 and abs(res.row + 90 - 120) < 0.75 and abs(res.col + 20 - 60) < 0.75
    p = register_in_map(query, optical, [(100, 80)], margin=40, coarse=2)
    assert p.registered and abs(p.row - 120) < 0.75 and abs(p.col - 60) < 0.75


def test_factor_one_is_the_plain_search_and_bad_uses_are_refused(scene):
    optical, sar = scene
    query = sar[10:74, 10:74]
    assert register_coarse_to_fine(query, optical, factor=1).row == register(query, optical).row
    with pytest.raises(DataError, match="factor"):
        register_coarse_to_fine(query, optical, factor=0)
    with pytest.raises(DataError, match="cfog or ncc"):
        register_coarse_to_fine(query, optical, "features", factor=2)
