"""register() on generated images: sub-pixel shifts, optical vs SAR-like, batching, rotation, features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from register_scenes import optical_scene, sar_like
from scipy.ndimage import fourier_shift, gaussian_filter

from sarbridge.tasks.geo.register import cfog, register, register_features, warp_query


def smooth(size: int = 160, seed: int = 0, sigma: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return gaussian_filter(rng.standard_normal((size, size)), sigma)


@pytest.mark.parametrize("method", ["cfog", "ncc"])
@pytest.mark.parametrize("shift", [(0.3, -0.4), (-0.25, 0.5), (0.45, 0.1)])
def test_subpixel_shift_of_a_smooth_image_is_recovered_within_a_tenth_of_a_pixel(method, shift):
    big = smooth()
    moved = np.fft.ifft2(fourier_shift(np.fft.fft2(big), shift)).real  # moved(p) = big(p - shift)
    query = moved[40:104, 50:114].astype(np.float32)
    r = register(query, big.astype(np.float32), method)
    assert abs(r.row - (40 - shift[0])) < 0.1 and abs(r.col - (50 - shift[1])) < 0.1


def test_cfog_registers_a_sar_like_view_exactly_where_intensity_ncc_fails():
    optical, labels = optical_scene()
    sar = sar_like(optical, labels)
    ncc_errors = []
    for r0, c0 in [(20, 30), (90, 100), (60, 17), (110, 40)]:
        query = sar[r0 : r0 + 64, c0 : c0 + 64]
        res = register(query, optical, "cfog")
        ow = res.surface.shape[-1]
        assert divmod(int(res.surface[0].argmin()), ow) == (r0, c0)  # the integer peak is the true shift
        assert abs(res.row - r0) < 0.5 and abs(res.col - c0) < 0.5
        ncc = register(query, optical, "ncc")
        ncc_errors.append(np.hypot(ncc.row - r0, ncc.col - c0))
    assert np.median(ncc_errors) > 10  # inverted contrast + speckle defeat intensity NCC on this scene


def test_batched_windows_of_different_sizes_give_each_window_its_own_answer():
    optical, labels = optical_scene(seed=2)
    sar = sar_like(optical, labels, seed=3)
    query = sar[70:134, 80:144]
    wins = [optical[40:170, 50:190], optical[0:100, 0:120], optical[60:150, 60:170]]
    both = register(query, wins, "cfog", exclude=3)
    for i, w in enumerate(wins):
        alone = register(query, w, "cfog", exclude=3)
        assert both.rows[i] == pytest.approx(alone.row, abs=1e-3) and both.cols[i] == pytest.approx(alone.col, abs=1e-3)
        assert both.scores[i] == pytest.approx(alone.score, abs=1e-5)
    assert both.candidate in (0, 2) and (both.row, both.col) == pytest.approx(
        (70 - 40, 80 - 50) if both.candidate == 0 else (10, 20), abs=0.5)
    assert both.surface.shape == (3, 130 - 64 + 1, 140 - 64 + 1)
    assert torch.isinf(both.surface[1, 100 - 64 + 1 :, :]).all()  # offsets outside the smaller window


def test_origins_make_overlapping_windows_agree_instead_of_competing():
    optical, labels = optical_scene(seed=4)
    sar = sar_like(optical, labels, seed=5)
    query = sar[60:124, 60:124]
    wins, origins = [optical[30:160, 30:160], optical[40:170, 20:150]], [(30, 30), (40, 20)]
    alone = register(query, wins[0])
    unrelated = register(query, wins)
    related = register(query, wins, origins=origins)
    assert unrelated.confidence == pytest.approx(1.0, abs=0.02)  # the same place, seen twice
    assert related.confidence > 1.1 and related.confidence == pytest.approx(alone.confidence, rel=0.02)


def test_rotation_search_finds_the_rotation_and_the_centre():
    big = smooth(200, 5, 2.5).astype(np.float32)
    query = torch.from_numpy(big[60:124, 70:134].copy())
    rotated = warp_query(query[None], [-8.0], [1.0])[0][0, 0]  # the map crop resampled with angle -8
    r = register(rotated.numpy(), big, "cfog", angles=(-8.0, -4.0, 0.0, 4.0, 8.0))
    assert r.angle == 8.0 and r.scale == 1.0  # the warp that brings the query back onto the map
    assert abs(r.row - 60) < 0.5 and abs(r.col - 70) < 0.5
    plain = register(rotated.numpy(), big, "cfog")
    assert r.confidence > plain.confidence


def test_features_entry_takes_any_dense_maps_and_scales_by_the_stride():
    rng = np.random.default_rng(7)
    feats = torch.from_numpy(gaussian_filter(rng.standard_normal((16, 50, 60)), (0, 1.5, 1.5)).astype(np.float32))
    query = feats[:, 12:28, 20:36] * 4.0  # normalised per pixel: scale does not matter
    r = register_features(query, feats, stride=4)
    assert (r.row, r.col) == pytest.approx((48.0, 80.0), abs=0.05) and r.method == "features"
    desc = cfog(torch.from_numpy(smooth(80, 8)).float()[None, None])[0]
    r2 = register_features(desc[:, 20:52, 25:57], [desc[:, :60, :60], desc[:, 10:, 10:]], origins=[(0, 0), (10, 10)])
    assert (r2.row + 10 * r2.candidate, r2.col + 10 * r2.candidate) == pytest.approx((20, 25), abs=0.05)
