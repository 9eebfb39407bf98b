"""Image inputs of the Embedder (the model-backed parts are tested through the API in tests/app/test_api.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sarbridge.core.errors import DataError
from sarbridge.tasks.reid.embedder import image_array


def test_image_array_layouts() -> None:
    hwc = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    assert np.array_equal(image_array(hwc), hwc)
    assert np.array_equal(image_array(np.moveaxis(hwc, -1, 0)), hwc)  # channels first
    assert np.array_equal(image_array(torch.from_numpy(np.moveaxis(hwc, -1, 0))), hwc)
    assert np.array_equal(image_array(Image.fromarray(hwc)), hwc)
    assert image_array(np.zeros((1, 6, 7), np.float32)).shape == (6, 7)  # single channel dropped
    assert image_array(np.zeros((6, 7, 1), np.float32)).shape == (6, 7)


def test_image_array_rejects_bad_inputs() -> None:
    with pytest.raises(DataError, match="cannot embed an object of type dict"):
        image_array({})  # type: ignore[arg-type]
    with pytest.raises(DataError, match="shape"):
        image_array(np.zeros((2, 3, 4, 5)))
    with pytest.raises(DataError, match="NaN"):
        image_array(np.array([[np.inf, 0.0]]))
