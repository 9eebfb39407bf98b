"""Real Sentinel-1 / Sentinel-2 pair (TerraMind validation tile, tests/fixtures/terramind-s1s2-pairs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sarbridge.data.io import read_image
from sarbridge.tasks.geo.register import optical_intensity, register

FIXTURE = Path(__file__).resolve().parents[3] / "fixtures" / "terramind-s1s2-pairs"
TILE = "609U_541L_3_0.tif"


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    sar = read_image(FIXTURE / "S1RTC" / TILE).transpose(2, 0, 1).astype(np.float32)  # VV, VH, stored in dB
    rgb = read_image(FIXTURE / "S2RGB" / TILE).transpose(2, 0, 1)
    return sar, optical_intensity(rgb, (0.299, 0.587, 0.114))


def test_fixture_is_the_pixel_aligned_pair(pair):
    sar, optical = pair
    assert sar.shape == (2, 224, 224) and optical.shape == (224, 224)
    assert sar.max() < 0 < optical.min() + 1  # SAR values are dB already (all negative here)


def test_a_64_px_sar_window_is_registered_within_one_pixel(pair):
    sar, optical = pair
    r = register(sar[:, 40:104, 40:104], optical)
    assert np.hypot(r.row - 40, r.col - 40) <= 1.0
    assert r.confidence > 1.2


def test_cfog_beats_intensity_ncc_on_several_windows(pair):
    sar, optical = pair
    cfog_err, ncc_err = [], []
    for r0, c0 in [(40, 40), (120, 60), (150, 150), (100, 20), (60, 90)]:
        q = sar[:, r0 : r0 + 64, c0 : c0 + 64]
        a, b = register(q, optical), register(q.mean(axis=0), optical, "ncc")
        cfog_err.append(np.hypot(a.row - r0, a.col - c0))
        ncc_err.append(np.hypot(b.row - r0, b.col - c0))
    assert max(cfog_err) <= 1.0  # within one 10 m pixel of the georeference on every window
    assert np.median(ncc_err) > 10 * np.median(cfog_err)
