"""FFT matching against direct double loops on small random arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sarbridge.core.errors import DataError
from sarbridge.tasks.geo.register import (
    cross_correlation,
    fast_size,
    local_sums,
    match_ssd_fft,
    ncc_fft,
)


def naive_ssd(q: np.ndarray, w: np.ndarray) -> np.ndarray:
    """SSD[b, r, c] = sum (w[b, :, r:r+h, c:c+w] - q)^2, by a double loop in float64."""
    _, h, ww = q.shape
    b, _, hh, wd = w.shape
    out = np.zeros((b, hh - h + 1, wd - ww + 1))
    for k in range(b):
        for r in range(hh - h + 1):
            for c in range(wd - ww + 1):
                out[k, r, c] = ((w[k, :, r : r + h, c : c + ww] - q) ** 2).sum()
    return out


def naive_ncc(q: np.ndarray, w: np.ndarray) -> np.ndarray:
    _, h, ww = q.shape
    b, _, hh, wd = w.shape
    out = np.zeros((b, hh - h + 1, wd - ww + 1))
    qz = q - q.mean()
    for k in range(b):
        for r in range(hh - h + 1):
            for c in range(wd - ww + 1):
                p = w[k, :, r : r + h, c : c + ww]
                pz = p - p.mean()
                out[k, r, c] = (pz * qz).sum() / np.sqrt((pz**2).sum() * (qz**2).sum())
    return out


@pytest.fixture()
def arrays() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.random((3, 5, 7)).astype(np.float32), rng.random((2, 3, 13, 17)).astype(np.float32)


def test_fft_ssd_equals_the_double_loop(arrays):
    q, w = arrays
    got = match_ssd_fft(torch.from_numpy(q), torch.from_numpy(w)).numpy()
    want = naive_ssd(q.astype(np.float64), w.astype(np.float64))
    assert got.shape == (2, 9, 11)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * want.max())


def test_fft_ssd_of_several_queries_is_one_surface_per_query_and_window(arrays):
    q, w = arrays
    qq = np.stack([q, q[::-1].copy()])
    got = match_ssd_fft(torch.from_numpy(qq), torch.from_numpy(w)).numpy()
    assert got.shape == (2, 2, 9, 11)
    np.testing.assert_allclose(got[1], naive_ssd(qq[1].astype(np.float64), w.astype(np.float64)), rtol=1e-4, atol=1e-3)


def test_exact_copy_has_zero_ssd_at_its_offset(arrays):
    _, w = arrays
    q = w[1, :, 4:9, 6:13]
    ssd = match_ssd_fft(torch.from_numpy(q), torch.from_numpy(w))
    assert float(ssd[1, 4, 6]) < 1e-4 and int(ssd[1].argmin()) == 4 * 11 + 6


def test_ncc_equals_the_double_loop_and_is_one_at_an_exact_copy(arrays):
    q, w = arrays
    got = ncc_fft(torch.from_numpy(q), torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(got, naive_ncc(q.astype(np.float64), w.astype(np.float64)), atol=2e-5)
    copy = torch.from_numpy(3 * w[0, :, 2:7, 5:12] + 7)  # gain and offset do not matter
    assert ncc_fft(copy, torch.from_numpy(w))[0, 2, 5] == pytest.approx(1, abs=1e-5)


def test_cross_correlation_and_local_sums_match_their_definitions(arrays):
    q, w = arrays
    corr = cross_correlation(torch.from_numpy(q)[None], torch.from_numpy(w))[0].numpy()
    assert corr[1, 2, 3] == pytest.approx(float((w[1, :, 2:7, 3:10] * q).sum()), rel=1e-5)
    sums = local_sums(torch.from_numpy(w[:, 0]), 4, 6).numpy()
    assert sums.shape == (2, 10, 12)
    assert sums[0, 5, 7] == pytest.approx(float(w[0, 0, 5:9, 7:13].astype(np.float64).sum()), rel=1e-9)


def test_fast_size_is_the_smallest_fast_length():
    assert [fast_size(n) for n in (1, 7, 200, 300, 496, 513, 700)] == [1, 8, 256, 320, 512, 640, 768]


def test_shape_errors_are_data_errors(arrays):
    q, w = arrays
    with pytest.raises(DataError, match="channels"):
        match_ssd_fft(torch.from_numpy(q[:2]), torch.from_numpy(w))
    with pytest.raises(DataError, match="larger than the window"):
        ncc_fft(torch.zeros(3, 20, 5), torch.from_numpy(w))
