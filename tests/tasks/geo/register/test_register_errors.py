"""Bad inputs end with one clear DataError (message + fix) each."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sarbridge.core.errors import DataError
from sarbridge.tasks.geo.register import (
    cfog_border,
    optical_intensity,
    register,
    register_in_map,
    sar_to_db,
)

RNG = np.random.default_rng(0)
MAP = RNG.random((96, 96)).astype(np.float32)


def test_query_smaller_than_the_descriptor_support():
    b = cfog_border()
    with pytest.raises(DataError, match="smaller than the descriptor's support") as e:
        register(MAP[: 2 * b, : 2 * b], MAP)
    assert e.value.hint and "larger query" in e.value.hint
    assert register(MAP[: 2 * b + 1, : 2 * b + 1], MAP).row == pytest.approx(0, abs=0.5)  # the smallest that works
    with pytest.raises(DataError, match="support"):  # a rotation search needs more: only the inscribed box is used
        register(MAP[:24, :24], MAP, angles=(-10.0, 0.0, 10.0))


def test_window_smaller_than_the_query():
    with pytest.raises(DataError, match=r"window 1 \(40 x 96 px\) is smaller than the query \(48 x 48 px\)") as e:
        register(MAP[:48, :48], [MAP, MAP[:40]])
    assert "margin" in e.value.hint


def test_band_counts_the_method_cannot_use():
    with pytest.raises(DataError, match="channels-last") as e:  # (H, W, C) passed as (C, H, W)
        register(np.stack([MAP[:48, :48]] * 3, axis=-1), MAP)
    assert "transpose" in e.value.hint
    with pytest.raises(DataError, match="band"):
        register(np.stack([MAP[:48, :48]] * 2), np.stack([MAP] * 3), "ncc")
    with pytest.raises(DataError, match="feature maps with 8 bands"):
        register(torch.zeros(8, 10, 10), torch.zeros(4, 20, 20), "features")
    with pytest.raises(DataError, match="4 band weights for an image of 3 bands"):
        optical_intensity(np.zeros((3, 8, 8)), (1, 1, 1, 1))
    out = register(np.stack([MAP[10:58, 20:68]] * 2), np.stack([MAP] * 3))  # cfog: any band counts
    assert (round(out.row), round(out.col)) == (10, 20)


def test_nan_pixels():
    q = MAP[:48, :48].copy()
    q[3, 4] = np.nan
    with pytest.raises(DataError, match="query holds 1 NaN or inf") as e:
        register(q, MAP)
    assert "no-data" in e.value.hint
    m = MAP.copy()
    m[50, 50] = np.inf
    with pytest.raises(DataError, match="window 0 holds 1 NaN or inf"):
        register(MAP[:48, :48], m, "ncc")


def test_other_misuse():
    with pytest.raises(DataError, match="unknown registration method 'sift'"):
        register(MAP[:48, :48], MAP, "sift")
    with pytest.raises(DataError, match="unknown similarity"):
        register(MAP[:48, :48], MAP, similarity="mi")
    with pytest.raises(DataError, match="no candidate windows"):
        register(MAP[:48, :48], [])
    with pytest.raises(DataError, match="no retrieval candidates"):
        register_in_map(MAP[:48, :48], MAP, [])
    with pytest.raises(DataError, match="already in dB"):
        sar_to_db(np.array([-12.0, 0.5]))
    assert sar_to_db(np.array([1.0, 0.1, 0.0])).tolist() == pytest.approx([0.0, -10.0, -40.0])
