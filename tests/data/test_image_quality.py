"""Image-quality measures: ENL, EPI, PSNR, SSIM against hand computations and definitions."""

import math

import numpy as np
import pytest
import torch

from sarbridge.core.errors import ConfigError, DataError
from sarbridge.data.image_quality import (
    edge_preservation_index,
    enl,
    enl_windows,
    homogeneous_windows,
    psnr,
    ssim,
)


def _box_blur(img: np.ndarray, k: int = 3) -> np.ndarray:
    p = k // 2
    pad = np.pad(img, p, mode="edge")
    return sum(pad[i:i + img.shape[0], j:j + img.shape[1]] for i in range(k) for j in range(k)) / k**2


@pytest.mark.parametrize("looks", [1.0, 4.0, 10.0])
def test_enl_of_gamma_samples_is_the_number_of_looks(looks):
    x = np.random.default_rng(0).gamma(looks, 2.0 / looks, size=(200, 200))
    assert enl(x) == pytest.approx(looks, rel=0.05)


def test_enl_hand_computed_mask_batch_and_tensor():
    x = np.array([[1.0, 3.0], [5.0, 100.0]])
    mask = np.array([[True, True], [True, False]])
    assert enl(x, mask) == pytest.approx(9.0 / (8.0 / 3.0))  # mean 3, population variance 8/3
    assert enl(np.full((4, 4), 2.0)) == math.inf
    batch = np.stack([x, 2 * x])
    e = enl(batch, mask)
    assert isinstance(e, np.ndarray) and e.shape == (2,)
    np.testing.assert_allclose(e, [27.0 / 8.0] * 2)
    et = enl(torch.from_numpy(batch)[:, None], torch.from_numpy(mask))
    assert isinstance(et, torch.Tensor)
    np.testing.assert_allclose(et.numpy(), e)
    with pytest.raises(DataError, match="at least 2"):
        enl(x, np.zeros((2, 2), dtype=bool))
    with pytest.raises(DataError, match="does not fit"):
        enl(x, np.ones((3, 3), dtype=bool))


def test_psnr_hand_computed():
    a = np.array([[0.0, 1.0], [2.0, 3.0]])
    b = np.array([[0.0, 1.0], [2.0, 4.0]])
    # MSE = 1/4, R = max(b) - min(b) = 4 -> 10 log10(16 / 0.25)
    assert psnr(a, b) == pytest.approx(10 * math.log10(64.0))
    assert psnr(a, b, data_range=1.0) == pytest.approx(10 * math.log10(4.0))
    assert psnr(b, b) == math.inf
    out = psnr(torch.tensor(np.stack([a, b])), torch.tensor(np.stack([b, b])))
    assert isinstance(out, torch.Tensor) and out[0].item() == pytest.approx(10 * math.log10(64.0))
    with pytest.raises(DataError, match="differ in shape"):
        psnr(a, np.ones((3, 3)))


def _ssim_loop(a, b, window, gaussian, sigma, data_range):
    """Mean SSIM straight from the definition, one window at a time."""
    if gaussian:
        ax = np.arange(window) - (window - 1) / 2
        g = np.exp(-0.5 * (ax / sigma) ** 2)
        w = np.outer(g, g)
    else:
        w = np.ones((window, window))
    w = w / w.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for i in range(a.shape[0] - window + 1):
        for j in range(a.shape[1] - window + 1):
            pa, pb = a[i:i + window, j:j + window], b[i:i + window, j:j + window]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va = (w * (pa - ma) ** 2).sum()
            vb = (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


@pytest.mark.parametrize("window, gaussian", [(7, False), (3, False), (5, True)])
def test_ssim_matches_definition_loop(window, gaussian):
    rng = np.random.default_rng(1)
    b = rng.random((12, 10))
    a = b + 0.3 * rng.standard_normal(b.shape)
    ref = _ssim_loop(a, b, window, gaussian, 1.5, b.max() - b.min())
    got = ssim(a, b, window=window, gaussian=gaussian)
    assert got == pytest.approx(ref, rel=1e-9)
    assert got < 0.9
    assert ssim(a, b, data_range=2.0, window=window, gaussian=gaussian) == pytest.approx(
        _ssim_loop(a, b, window, gaussian, 1.5, 2.0), rel=1e-9)


def test_ssim_identity_batch_and_errors():
    x = np.random.default_rng(2).random((2, 16, 16))
    np.testing.assert_allclose(ssim(x, x), 1.0)
    assert ssim(x[0], x[0], window=11, gaussian=True) == pytest.approx(1.0)
    assert ssim(np.ones((8, 8)), np.ones((8, 8))) == pytest.approx(1.0)
    assert ssim(_box_blur(x[0]), x[0]) < ssim(x[0], x[0])
    with pytest.raises(DataError, match="smaller than the SSIM window"):
        ssim(np.ones((5, 5)), np.ones((5, 5)), window=7)
    with pytest.raises(ConfigError, match="data_range"):
        ssim(x, x, data_range=0.0)


def test_epi_identity_and_blur():
    rng = np.random.default_rng(3)
    x = np.zeros((40, 40))
    x[10:30, 12:25] = 1.0
    x += 0.05 * rng.random(x.shape)
    for method in ("correlation", "ratio"):
        assert edge_preservation_index(x, x, method=method) == pytest.approx(1.0)
        assert edge_preservation_index(_box_blur(x), x, method=method) < 0.8
    # gain and offset do not change the correlation EPI
    assert edge_preservation_index(3 * x + 1, x) == pytest.approx(1.0)
    blurrier = edge_preservation_index(_box_blur(x, 5), x)
    assert blurrier < edge_preservation_index(_box_blur(x, 3), x)


def test_epi_hand_computed_ratio_and_batch():
    f = np.array([[0.0, 1.0], [1.0, 1.0]])
    r = np.array([[0.0, 2.0], [2.0, 4.0]])
    # f: |1-0| + |1-1| (rows) + |1-0| + |1-1| (cols) = 2; r: 2 + 2 + 2 + 2 = 8
    assert edge_preservation_index(f, r, method="ratio") == pytest.approx(0.25)
    batch = torch.rand(3, 1, 9, 9)
    out = edge_preservation_index(batch, batch)
    assert isinstance(out, torch.Tensor) and out.shape == (3,)
    torch.testing.assert_close(out, torch.ones(3, dtype=torch.float64))
    assert math.isnan(edge_preservation_index(np.ones((5, 5)), np.ones((5, 5))))
    with pytest.raises(ConfigError, match="EPI method"):
        edge_preservation_index(f, r, method="sobel")


def test_homogeneous_windows_find_the_flat_area():
    rng = np.random.default_rng(4)
    img = rng.gamma(4.0, 0.25, size=(60, 60))
    texture = 1.0 + 0.8 * np.sin(np.arange(60) / 2.0)[None, :] * np.cos(np.arange(60) / 3.0)[:, None]
    img[:, :30] *= texture[:, :30]  # textured left half, flat speckle on the right
    wins = homogeneous_windows(img, size=9, count=4)
    assert len(wins) == 4
    for _r, c in wins:
        assert c >= 30 - 2  # all in (or touching) the flat half
    for i, (r, c) in enumerate(wins):  # non-overlapping
        for r2, c2 in wins[i + 1:]:
            assert abs(r - r2) >= 9 or abs(c - c2) >= 9
    e = enl_windows(img, wins, 9)
    assert 2.5 < e < 8.0  # ~ L = 4 measured on raw speckle
    assert homogeneous_windows(np.ones((5, 5)), size=9, count=3) == []
    assert math.isnan(enl_windows(img, [], 9))
    assert 1 <= len(homogeneous_windows(img, size=30, count=10)) <= 4  # at most 4 disjoint 30x30 fit
    assert homogeneous_windows(img, size=60, count=3) == [(0, 0)]


def test_default_smoothing_limits_the_selection_bias_of_enl():
    rng = np.random.default_rng(5)
    raw, smoothed = [], []
    for _ in range(6):
        x = rng.gamma(4.0, 0.25, size=(200, 60))
        raw.append(enl_windows(x, homogeneous_windows(x, 9, 3, smooth=1), 9))
        smoothed.append(enl_windows(x, homogeneous_windows(x, 9, 3), 9))
    assert np.mean(raw) > 1.5 * 4.0  # picking the quietest raw speckle inflates ENL
    assert np.mean(smoothed) == pytest.approx(4.0, rel=0.3)
