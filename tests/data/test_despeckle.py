"""Classical speckle filters: formulas against a per-pixel loop, regimes, speckle reduction, shapes, errors."""

import math

import numpy as np
import pytest
import torch

from sarbridge.core.errors import ConfigError, DataError, SarbridgeError
from sarbridge.data.despeckle import (
    available_despeckle,
    despeckle,
    estimate_looks,
    frost,
    gamma_map,
    get_despeckle,
    kuan,
    lee,
)
from sarbridge.data.image_quality import enl

METHODS = ["frost", "gamma_map", "kuan", "lee"]


def _two_region_scene(looks: float = 4.0, seed: int = 0, size: int = 64):
    """Left half 1.0, right half 3.0, multiplied by Gamma(L, 1/L) speckle."""
    clean = np.ones((size, size))
    clean[:, size // 2:] = 3.0
    rng = np.random.default_rng(seed)
    return clean, clean * rng.gamma(looks, 1.0 / looks, size=clean.shape)


def _loop_stats(img: np.ndarray, window: int):
    """Per-pixel window mean and population variance, from the definition (reflect padding)."""
    p = window // 2
    pad = np.pad(img, p, mode="reflect")
    h, w = img.shape
    m = np.zeros((h, w))
    v = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            win = pad[i:i + window, j:j + window]
            m[i, j] = win.mean()
            v[i, j] = ((win - win.mean()) ** 2).mean()
    return m, v, pad


def _loop_filter(img: np.ndarray, method: str, window: int, looks: float, damping: float = 1.0) -> np.ndarray:
    m, v, pad = _loop_stats(img, window)
    cu2 = 1.0 / looks
    p = window // 2
    out = np.zeros_like(img)
    for i in range(img.shape[0]):
        for j in range(img.shape[1]):
            mi, vi, x = m[i, j], v[i, j], img[i, j]
            ci2 = vi / mi**2 if mi > 0 else 0.0
            if method == "lee":
                w = max(0.0, 1.0 - cu2 / ci2) if ci2 > 0 else 0.0
                out[i, j] = mi + w * (x - mi)
            elif method == "kuan":
                w = (max(0.0, 1.0 - cu2 / ci2) if ci2 > 0 else 0.0) / (1.0 + cu2)
                out[i, j] = mi + w * (x - mi)
            elif method == "gamma_map":
                if ci2 <= cu2:
                    out[i, j] = mi
                elif ci2 >= 2 * cu2:
                    out[i, j] = x
                else:
                    a = (1 + cu2) / (ci2 - cu2)
                    b = a - looks - 1
                    out[i, j] = (b * mi + math.sqrt(mi**2 * b**2 + 4 * a * looks * mi * x)) / (2 * a)
            elif method == "frost":
                num = den = 0.0
                for dy in range(-p, p + 1):
                    for dx in range(-p, p + 1):
                        wt = math.exp(-damping * ci2 * math.hypot(dy, dx))
                        num += wt * pad[i + p + dy, j + p + dx]
                        den += wt
                out[i, j] = num / den
    return out


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("window", [3, 5])
def test_filters_match_per_pixel_loop_reference(method, window):
    rng = np.random.default_rng(3)
    # a mix of flat speckle, a bright block and a point target so that every regime occurs
    img = rng.gamma(2.0, 0.5, size=(13, 11))
    img[3:7, 2:6] *= 4.0
    img[9, 8] = 40.0
    looks = 2.0
    ref = _loop_filter(img, method, window, looks, damping=1.3)
    kw = {"damping": 1.3} if method == "frost" else {"looks": looks}
    out = despeckle(img, method=method, window=window, **kw)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_loop_reference_exercises_all_gamma_map_regimes():
    rng = np.random.default_rng(3)
    img = rng.gamma(2.0, 0.5, size=(13, 11))
    img[3:7, 2:6] *= 4.0
    img[9, 8] = 40.0
    m, v, _ = _loop_stats(img, 5)
    ci2 = v / m**2
    assert (ci2 <= 0.5).any() and (ci2 >= 1.0).any() and ((ci2 > 0.5) & (ci2 < 1.0)).any()


def test_gamma_map_regimes_hand_checked():
    # window 3 on a 3x3 image: the centre pixel's window is the whole image (L = 4: Cu^2 = 0.25, Cmax^2 = 0.5)
    def centre(img):
        return float(gamma_map(np.asarray(img, dtype=np.float64), window=3, looks=4)[1, 1])

    flat = np.full((3, 3), 1.0)
    flat[1, 1] = 1.3  # m = 9.3/9, Ci^2 tiny -> mean
    assert centre(flat) == pytest.approx(9.3 / 9, rel=1e-6)

    point = np.full((3, 3), 0.1)
    point[1, 1] = 10.0  # one bright pixel: Ci^2 = 6.72 >= 0.5 -> kept
    assert centre(point) == pytest.approx(10.0, rel=1e-6)

    # mid regime: Ci^2 = 0.32, between Cu^2 and Cmax^2
    mid = np.array([[0.4, 1.0, 1.6], [1.0, 1.0, 1.0], [2.2, 0.4, 0.4]])
    m = mid.mean()
    ci2 = mid.var() / m**2
    assert 0.25 < ci2 < 0.5
    a = (1 + 0.25) / (ci2 - 0.25)
    b = a - 4 - 1
    expected = (b * m + math.sqrt(m * m * b * b + 4 * a * 4 * m * 1.0)) / (2 * a)
    assert centre(mid) == pytest.approx(expected, rel=1e-6)
    assert centre(mid) != pytest.approx(m, rel=1e-3) and centre(mid) != pytest.approx(1.0, rel=1e-3)


def test_lee_and_kuan_weights_hand_checked():
    # same 3x3 as above with a brighter centre: Ci^2 = 0.3392, L = 4
    mid = np.array([[0.4, 1.0, 1.6], [1.0, 1.0, 1.0], [2.2, 0.4, 0.4]])
    mid[1, 1] = 2.0
    m = mid.mean()
    ci2 = mid.var() / m**2
    w_lee = 1 - 0.25 / ci2
    w_kuan = w_lee / 1.25
    assert float(lee(mid, window=3, looks=4)[1, 1]) == pytest.approx(m + w_lee * (2.0 - m), rel=1e-6)
    assert float(kuan(mid, window=3, looks=4)[1, 1]) == pytest.approx(m + w_kuan * (2.0 - m), rel=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_constant_image_is_unchanged(method):
    img = np.full((20, 17), 0.37, dtype=np.float32)
    out = despeckle(img, method=method, window=7)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 0.37, rtol=1e-6)
    np.testing.assert_array_equal(despeckle(np.zeros((9, 9)), method=method, window=5), 0.0)


@pytest.mark.parametrize("method", METHODS)
def test_filters_raise_enl_and_keep_the_mean(method):
    clean, noisy = _two_region_scene(looks=4.0, seed=1)
    out = despeckle(noisy, method=method, window=7, looks=4.0)
    region = (slice(8, 56), slice(4, 24))  # inside the left (1.0) half, 8+ px from its edge
    before, after = enl(noisy[region]), enl(out[region])
    assert before == pytest.approx(4.0, rel=0.2)
    assert after > 2.0 * before
    assert float(out[region].mean()) == pytest.approx(1.0, rel=0.04)
    right = (slice(8, 56), slice(40, 60))
    assert float(out[right].mean()) == pytest.approx(3.0, rel=0.04)


@pytest.mark.parametrize("method", ["lee", "kuan", "gamma_map"])
def test_strong_point_target_is_kept_by_adaptive_filters(method):
    rng = np.random.default_rng(0)
    img = rng.gamma(4.0, 0.25, size=(31, 31))
    img[15, 15] = 200.0
    out = despeckle(img, method=method, window=7, looks=4)
    assert out[15, 15] > 0.75 * 200.0  # a box mean would give ~5
    assert despeckle(img, method="frost", window=7)[15, 15] > 0.99 * 200.0


def test_window_size_increases_smoothing():
    _, noisy = _two_region_scene(looks=1.0, seed=2)
    region = (slice(10, 54), slice(6, 22))
    e5 = enl(despeckle(noisy, "lee", 5, 1.0)[region])
    e9 = enl(despeckle(noisy, "lee", 9, 1.0)[region])
    assert e9 > e5 > 1.5 * enl(noisy[region])


def test_frost_damping_controls_smoothing():
    _, noisy = _two_region_scene(looks=4.0, seed=4)
    region = (slice(10, 54), slice(6, 22))
    strong = enl(frost(noisy, window=7, damping=0.2)[region])
    weak = enl(frost(noisy, window=7, damping=5.0)[region])
    assert strong > 1.5 * weak


@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_per_image_and_shapes_are_kept(method):
    rng = np.random.default_rng(5)
    batch = rng.gamma(2.0, 0.5, size=(3, 24, 20)).astype(np.float32)
    batch[1] *= 7.0
    looks = [1.0, 2.0, 4.0]
    kw = {} if method == "frost" else {"looks": looks}
    out = despeckle(batch, method=method, window=5, **kw)
    assert out.shape == batch.shape and out.dtype == np.float32
    for i in range(3):
        kwi = {} if method == "frost" else {"looks": looks[i]}
        np.testing.assert_allclose(out[i], despeckle(batch[i], method=method, window=5, **kwi), rtol=1e-6)
    t = torch.from_numpy(batch)[:, None]
    out4 = despeckle(t, method=method, window=5, **kw)
    assert isinstance(out4, torch.Tensor) and out4.shape == (3, 1, 24, 20) and out4.dtype == torch.float32
    np.testing.assert_array_equal(out4[:, 0].numpy(), out)


@pytest.mark.parametrize("method", METHODS)
def test_numpy_and_tensor_give_the_same_result(method):
    rng = np.random.default_rng(6)
    img = rng.gamma(1.0, 1.0, size=(16, 18)).astype(np.float32)
    a = despeckle(img, method=method, window=7)
    b = despeckle(torch.from_numpy(img), method=method, window=7)
    assert isinstance(a, np.ndarray) and isinstance(b, torch.Tensor) and a.shape == b.shape == img.shape
    np.testing.assert_array_equal(a, b.numpy())
    c = despeckle(img.astype(np.float64).tolist(), method=method, window=7)  # array-likes are NumPy
    np.testing.assert_array_equal(a, c)


def test_estimated_looks_are_close_and_used_when_none():
    rng = np.random.default_rng(7)
    for looks in (1.0, 4.0):
        img = rng.gamma(looks, 1.0 / looks, size=(96, 96))
        assert estimate_looks(img, window=9) == pytest.approx(looks, rel=0.15)
    batch = np.stack([rng.gamma(L, 1.0 / L, size=(64, 64)) for L in (1.0, 8.0)])
    est = estimate_looks(batch, window=9)
    assert est.shape == (2,) and est[1] > 4 * est[0]
    img = batch[0]
    np.testing.assert_array_equal(lee(img, 7), lee(img, 7, looks=estimate_looks(img, 7)))


def test_estimated_looks_ignore_a_majority_of_structure():
    # 75 % of the image is strongly textured (like the hull of a ship chip), 25 % flat 4-look speckle
    rng = np.random.default_rng(9)
    yy, xx = np.mgrid[:120, :80]
    scene = np.ones((120, 80))
    scene[:90] = 1.0 + 0.9 * np.sin(xx[:90] / 1.5) * np.cos(yy[:90] / 2.0)
    img = scene * rng.gamma(4.0, 0.25, size=scene.shape)
    n = 49
    m, v, _ = _loop_stats(img, 7)
    assert 1.0 / np.median(v / m**2 * n / (n - 1)) < 3.0  # the all-pixel median is fooled
    assert estimate_looks(img, 7) == pytest.approx(4.0, rel=0.2)
    assert estimate_looks(np.zeros((10, 10))) == pytest.approx(1e6)
    with pytest.raises(ConfigError, match="fraction"):
        estimate_looks(img, 7, fraction=0.0)


def test_image_smaller_than_window_uses_replicate_padding():
    img = np.random.default_rng(0).gamma(4.0, 0.25, size=(3, 40))
    for method in METHODS:
        out = despeckle(img, method=method, window=9)
        assert out.shape == img.shape and np.isfinite(out).all() and (out >= 0).all()


def test_registry_and_errors():
    assert available_despeckle() == METHODS
    assert get_despeckle("lee") is lee
    with pytest.raises(ConfigError, match="unknown despeckle method 'median'.*frost, gamma_map, kuan, lee"):
        despeckle(np.ones((8, 8)), method="median")
    with pytest.raises(ConfigError, match="odd"):
        despeckle(np.ones((8, 8)), window=4)
    with pytest.raises(ConfigError, match="odd"):
        despeckle(np.ones((8, 8)), window=1)
    with pytest.raises(ConfigError, match="looks"):
        despeckle(np.ones((8, 8)), looks=0)
    with pytest.raises(ConfigError, match="looks has 2 values"):
        despeckle(np.ones((3, 8, 8)), looks=[1, 2])
    with pytest.raises(ConfigError, match="takes no option damping"):
        despeckle(np.ones((8, 8)), method="lee", damping=2.0)
    with pytest.raises(ConfigError, match="damping"):
        despeckle(np.ones((8, 8)), method="frost", damping=-1.0)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([[1.0, -0.5], [1.0, 1.0]]), "negative"),
        (np.array([[1.0, np.nan], [1.0, 1.0]]), "NaN or infinite"),
        (np.array([[1.0, np.inf], [1.0, 1.0]]), "NaN or infinite"),
        (np.ones((2, 3, 8, 8)), "one band"),
        (np.ones((8,)), "shape"),
        (np.ones((0, 5)), "empty"),
        (np.array([["a", "b"]]), "dtype"),
        (torch.ones(4, 4, dtype=torch.complex64), "complex"),
    ],
)
def test_bad_inputs_raise_data_error(bad, match):
    with pytest.raises(DataError, match=match) as info:
        despeckle(bad, method="lee", window=3)
    assert isinstance(info.value, SarbridgeError) and "\n" not in str(info.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(8)
    x = torch.from_numpy(rng.gamma(2.0, 0.5, size=(4, 1, 64, 48)).astype(np.float32))
    for method in METHODS:
        cpu = despeckle(x, method=method, window=7)
        gpu = despeckle(x.cuda(), method=method, window=7)
        assert gpu.is_cuda
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-6)
