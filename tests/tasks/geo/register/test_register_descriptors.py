"""CFOG: shape, normalisation, invariances and the border it declares."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from sarbridge.core.errors import DataError
from sarbridge.tasks.geo.register import CFOG_DEFAULTS, cfog, cfog_border, gaussian_blur


def smooth_image(seed: int = 0, size: int = 48) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(gaussian_filter(rng.standard_normal((size, size)), 2.0).astype(np.float32))[None, None]


def test_gaussian_blur_matches_scipy_away_from_the_edges():
    x = torch.randn(1, 2, 40, 40)
    got = gaussian_blur(x, 1.5).numpy()
    want = gaussian_filter(x.numpy().astype(np.float64), (0, 0, 1.5, 1.5), truncate=math.ceil(4.5) / 1.5, mode="wrap")
    np.testing.assert_allclose(got, want, atol=1e-5)  # circular at the edges, like mode="wrap"


def test_cfog_shape_and_unit_norm_where_there_is_structure():
    d = cfog(smooth_image(), orientations=9, floor=0.0)
    assert d.shape == (1, 9, 48, 48) and d.dtype == torch.float32
    b = cfog_border()
    norms = d[0, :, b:-b, b:-b].square().sum(0).sqrt()
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)
    assert (d >= 0).all()


def test_cfog_is_invariant_to_contrast_inversion_and_gain():
    img = smooth_image(1)
    d = cfog(img)
    assert torch.allclose(cfog(-img), d, atol=1e-5)
    assert torch.allclose(cfog(3.0 * img + 50.0), d, atol=1e-4)


def test_a_vertical_edge_lights_the_horizontal_gradient_channel():
    img = torch.zeros(1, 1, 32, 32)
    img[..., 16:] = 1.0
    d = cfog(img, orientations=4, sigma=1.0, pre_sigma=0.0, floor=0.0)[0, :, 16, 15]
    assert int(d.argmax()) == 0  # orientation 0 = the x (column) direction
    assert d[0] > 2 * d[2]  # orientation 2 = y: only the cross-orientation smoothing reaches it


def test_border_is_where_a_crop_changes_the_descriptor():
    img = smooth_image(2, 64)
    full = cfog(img)[0]
    crop = cfog(img[..., 10:50, 12:52])[0]
    b = cfog_border()
    inner_full = full[:, 10 + b : 50 - b, 12 + b : 52 - b]
    inner_crop = crop[:, b:-b, b:-b]
    # equal inside the border up to the norm floor, which is relative to each image's mean norm
    f = CFOG_DEFAULTS["floor"]
    assert torch.allclose(cfog(img, floor=0.0)[0, :, 10 + b : 50 - b, 12 + b : 52 - b],
                          cfog(img[..., 10:50, 12:52], floor=0.0)[0, :, b:-b, b:-b], atol=1e-4)
    assert f > 0 and torch.allclose(inner_full / inner_full.norm(dim=0), inner_crop / inner_crop.norm(dim=0), atol=1e-4)
    assert cfog_border(1.5, 1.0) == 3 + 1 + 5 and cfog_border(2.0, 0.0) == 7


def test_bad_inputs_are_data_errors():
    with pytest.raises(DataError, match=r"\(B, C, H, W\)"):
        cfog(torch.zeros(8, 8))
    with pytest.raises(DataError, match="NaN"):
        cfog(torch.full((1, 1, 16, 16), float("nan")))
    with pytest.raises(DataError, match="orientations"):
        cfog(torch.zeros(1, 1, 16, 16), orientations=1)
