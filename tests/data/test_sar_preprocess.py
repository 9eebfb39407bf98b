"""Tests for sarbridge.data.sar: SAR normalisations and optical conversion, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from sarbridge.core.errors import ConfigError
from sarbridge.data.sar import (
    available_sar_preprocess,
    get_sar_preprocess,
    max_scale,
    optical_to_uint8_rgb,
    percentile_scale,
)


def _check_rgb_identical(out: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    assert out.dtype == np.uint8
    assert out.shape == (*shape, 3)
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    return out[..., 0]


def test_max_scale_hand_computed():
    x = np.array([[0.0, 1.0, 2.0], [3.0, 5.0, 7.0]], dtype=np.float32)
    # 255 * x / 7 = 0, 36.43, 72.86, 109.29, 182.14, 255 -> rounded
    expected = np.array([[0, 36, 73], [109, 182, 255]], dtype=np.uint8)
    band = _check_rgb_identical(max_scale(x), (2, 3))
    np.testing.assert_array_equal(band, expected)


def test_max_scale_is_scale_invariant_and_peak_is_255():
    rng = np.random.default_rng(0)
    x = rng.gamma(1.0, 0.05, size=(8, 6)).astype(np.float32)
    a = max_scale(x)
    b = max_scale(x * 1000.0)
    np.testing.assert_array_equal(a, b)
    assert a[..., 0].max() == 255
    flat = np.argmax(x)
    assert a[..., 0].flat[flat] == 255


def test_max_scale_all_zero_gives_black():
    out = max_scale(np.zeros((3, 4), dtype=np.float32))
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8
    assert not out.any()


def test_max_scale_multiband_input_is_averaged():
    band = np.array([[1.0, 3.0], [5.0, 7.0]])
    stacked = np.stack([band - 1, band, band + 1], axis=-1)  # mean == band
    np.testing.assert_array_equal(max_scale(stacked), max_scale(band))


def test_percentile_scale_hand_computed():
    # values 0..20 (21 of them) in shuffled positions; the 5th percentile (linear) is exactly 1.0
    values = np.random.default_rng(1).permutation(np.arange(21, dtype=np.float32))
    x = values.reshape(3, 7)
    band = _check_rgb_identical(percentile_scale(x, alpha=5.0), (3, 7))
    expected = {0: 0, 1: 0, 2: 13, 10: 121, 19: 242, 20: 255}  # 255 * (v - 1) / 19, rounded
    for v, want in expected.items():
        (pos,) = np.flatnonzero(x.ravel() == v)
        assert band.ravel()[pos] == want, (v, band.ravel()[pos], want)


def test_percentile_scale_at_or_below_alpha_is_zero_and_max_is_255():
    rng = np.random.default_rng(2)
    x = rng.gamma(1.0, 0.1, size=(20, 10)).astype(np.float32)
    alpha = 20.0
    band = percentile_scale(x, alpha=alpha)[..., 0]
    p = np.percentile(x.astype(np.float64), alpha)
    assert (band[x <= p] == 0).all()
    assert band[x > p].min() >= 0
    assert band.ravel()[np.argmax(x)] == 255
    # a larger alpha clips more pixels to black
    assert (percentile_scale(x, alpha=50.0)[..., 0] == 0).sum() > (band == 0).sum()


def test_percentile_alpha_zero_is_min_max():
    x = np.array([[2.0, 4.0], [6.0, 10.0]])
    # (x - 2) / 8 * 255 = 0, 63.75, 127.5 (- eps), 255
    band = percentile_scale(x, alpha=0.0)[..., 0]
    assert band[0, 0] == 0 and band[1, 1] == 255
    assert band[0, 1] == 64


def test_registry_lookup():
    assert {"max", "percentile"} <= set(available_sar_preprocess())
    assert get_sar_preprocess("max") is max_scale
    assert get_sar_preprocess("percentile") is percentile_scale
    x = np.arange(21, dtype=np.float32).reshape(3, 7)
    np.testing.assert_array_equal(get_sar_preprocess("percentile")(x, alpha=5.0), percentile_scale(x, alpha=5.0))
    # max ignores alpha (the spec always passes it)
    np.testing.assert_array_equal(get_sar_preprocess("max")(x, alpha=30.0), max_scale(x))


def test_unknown_preprocess_is_config_error():
    with pytest.raises(ConfigError, match="unknown SAR preprocessing 'log'") as exc:
        get_sar_preprocess("log")
    assert "max" in str(exc.value) and "percentile" in str(exc.value)


def test_optical_grey_uint8_is_replicated_unchanged():
    grey = np.array([[0, 17, 200], [255, 3, 99]], dtype=np.uint8)
    out = optical_to_uint8_rgb(grey)
    band = _check_rgb_identical(out, (2, 3))
    np.testing.assert_array_equal(band, grey)


def test_optical_rgb_uint8_is_passed_through():
    rgb = np.random.default_rng(0).integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(optical_to_uint8_rgb(rgb), rgb)


def test_optical_uint16_is_max_scaled():
    x = np.array([[0, 1000], [250, 4000]], dtype=np.uint16)
    # 255 * x / 4000 = 0, 63.75, 15.94, 255
    band = _check_rgb_identical(optical_to_uint8_rgb(x), (2, 2))
    np.testing.assert_array_equal(band, np.array([[0, 64], [16, 255]], dtype=np.uint8))


def test_optical_uint16_rgb_scaled_by_global_peak():
    x = np.zeros((1, 2, 3), dtype=np.uint16)
    x[0, 0] = [100, 200, 400]
    x[0, 1] = [0, 0, 800]
    out = optical_to_uint8_rgb(x)
    assert out.dtype == np.uint8
    # 255 * v / 800: 31.875 -> 32, 63.75 -> 64, 127.5 -> 128 (half to even), 255
    np.testing.assert_array_equal(out[0, 0], [32, 64, 128])
    np.testing.assert_array_equal(out[0, 1], [0, 0, 255])


def test_optical_unit_float_is_times_255():
    x = np.array([[0.0, 0.25], [0.8, 1.0]], dtype=np.float32)
    # 0, 63.75, 204, 255 (not rescaled to the peak: the peak is already 1)
    band = _check_rgb_identical(optical_to_uint8_rgb(x), (2, 2))
    np.testing.assert_array_equal(band, np.array([[0, 64], [204, 255]], dtype=np.uint8))
    half = np.full((2, 2), 0.5, dtype=np.float32)
    assert optical_to_uint8_rgb(half)[0, 0, 0] == 128  # not stretched to 255


def test_optical_float_above_one_is_max_scaled():
    x = np.array([[0.0, 2.0], [4.0, 8.0]], dtype=np.float64)
    band = _check_rgb_identical(optical_to_uint8_rgb(x), (2, 2))
    np.testing.assert_array_equal(band, np.array([[0, 64], [128, 255]], dtype=np.uint8))


def test_optical_rgba_drops_alpha():
    rgba = np.random.default_rng(0).integers(0, 256, size=(3, 3, 4), dtype=np.uint8)
    out = optical_to_uint8_rgb(rgba)
    assert out.shape == (3, 3, 3)
    np.testing.assert_array_equal(out, rgba[..., :3])


def test_db_scale_hand_computed():
    from sarbridge.data.sar import db_scale

    # 1, 10, 100, 1000 -> 0, 10, 20, 30 dB; alpha 0 keeps the full range: 0, 85, 170, 255
    x = np.array([[1.0, 10.0], [100.0, 1000.0]])
    out = _check_rgb_identical(db_scale(x, alpha=0.0), (2, 2))
    np.testing.assert_array_equal(out, [[0, 85], [170, 255]])
    assert get_sar_preprocess("db") is db_scale


def test_db_scale_clips_bright_outliers_and_zeros():
    from sarbridge.data.sar import db_scale

    rng = np.random.default_rng(0)
    x = rng.gamma(1.0, 0.1, size=(50, 50))
    x[0, 0] = 1e6  # one double-bounce spike
    x[1, 1] = 0.0  # a no-return pixel: clamped to the smallest positive value, not -inf
    out = _check_rgb_identical(db_scale(x, alpha=2.0), (50, 50))
    assert out[0, 0] == 255 and out[1, 1] == 0
    assert 80 < out.mean() < 180  # the spike does not darken the rest, as max scaling would
    assert max_scale(x)[..., 0].mean() < 1
