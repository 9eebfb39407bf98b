"""The stage after retrieval: windows around candidates, registration or the retrieval position kept."""

from __future__ import annotations

import numpy as np
import pytest
from register_scenes import optical_scene, sar_like

from sarbridge.tasks.geo.register import (
    MapDescriptors,
    candidate_boxes,
    register_in_map,
)


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    optical, labels = optical_scene(256, seed=11)
    return optical, sar_like(optical, labels, seed=12)


def test_candidate_boxes_add_the_margin_and_clip_to_the_map():
    boxes = candidate_boxes((100, 120), (32, 40), [(10, 20), (80, 100), (-5, 3.6)], margin=16)
    assert boxes == [(0, 4, 58, 76), (52, 64, 100, 120), (0, 0, 48, 60)]
    for r0, c0, r1, c1 in boxes:
        assert r1 - r0 >= 32 and c1 - c0 >= 40


def test_registration_corrects_a_retrieval_position_that_is_tens_of_pixels_off(scene):
    optical, sar = scene
    query = sar[100:164, 130:194]
    p = register_in_map(query, optical, [(120, 110), (20, 20)], margin=32)
    assert p.registered and p.candidate == 0 and "registered in candidate 0" in p.note
    assert abs(p.row - 100) < 0.5 and abs(p.col - 130) < 0.5
    p2 = register_in_map(query, optical, [(20, 20), (85, 150)], margin=24)  # the second candidate is the right one
    assert p2.registered and p2.candidate == 1 and abs(p2.row - 100) < 0.5 and abs(p2.col - 130) < 0.5


def test_low_confidence_keeps_the_retrieval_position_and_says_so(scene):
    optical, _ = scene
    noise = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    p = register_in_map(noise, optical, [(30.5, 40.0), (150, 150)], margin=16)
    assert not p.registered and (p.row, p.col) == (30.5, 40.0) and p.candidate == 0
    assert p.note.startswith("kept the retrieval position: confidence") and p.confidence < 1.05
    forced = register_in_map(noise, optical, [(30.5, 40.0)], margin=16, threshold=1.0)
    assert forced.registered  # a threshold of 1 accepts every registration


def test_precomputed_map_descriptors_give_the_same_position(scene):
    optical, sar = scene
    query = sar[60:124, 40:104]
    md = MapDescriptors(optical)
    assert md.descriptor.shape == (9, 256, 256)
    a = register_in_map(query, optical, [(70, 30)], margin=24)
    b = register_in_map(query, md, [(70, 30)], margin=24)
    assert a.registered and b.registered
    assert (b.row, b.col) == pytest.approx((a.row, a.col), abs=0.15)
    assert abs(b.row - 60) < 1.0 and abs(b.col - 40) < 1.0
