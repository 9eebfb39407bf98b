"""Tests for sarbridge.data.gpu_augment.BatchAugment against the CPU train transform's semantics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sarbridge.data.gpu_augment import BatchAugment
from sarbridge.data.transforms import PreprocessSpec

SPEC = PreprocessSpec(image_size=[16, 8], mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3])


def batch(b: int = 6, seed: int = 0) -> torch.Tensor:
    g = np.random.default_rng(seed)
    return torch.from_numpy(g.integers(0, 256, size=(b, 16, 8, 3), dtype=np.uint8))


def eval_ref(x: torch.Tensor) -> torch.Tensor:
    t = SPEC.eval_transform()
    return torch.stack([t(Image.fromarray(img.numpy())) for img in x])


def test_identity_settings_equal_eval_transform_both_layouts():
    x = batch()
    aug = BatchAugment.from_spec(SPEC, flip=0, pad=0, random_erasing=0)
    want = eval_ref(x)
    torch.testing.assert_close(aug(x), want, rtol=0, atol=1e-6)
    torch.testing.assert_close(aug(x.permute(0, 3, 1, 2).contiguous()), want, rtol=0, atol=1e-6)
    out = BatchAugment.from_spec(SPEC, 0, 0, 0, channels_last=True)(x)
    assert out.is_contiguous(memory_format=torch.channels_last) and out.dtype == torch.float32


def test_flip_probability_one_equals_flipped_image():
    x = batch()
    got = BatchAugment.from_spec(SPEC, flip=1.0, pad=0, random_erasing=0)(x)
    torch.testing.assert_close(got, eval_ref(x).flip(-1), rtol=0, atol=1e-6)


def reference_pad_crop(img: np.ndarray, pad: int, i: int, j: int, flip: bool) -> np.ndarray:
    """The CPU transform's flip -> T.Pad -> crop at (i, j), written with NumPy."""
    if flip:
        img = img[:, ::-1]
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
    return padded[i:i + img.shape[0], j:j + img.shape[1]]


def test_pad_crop_matches_a_numpy_reference_for_every_offset_found():
    x = batch(b=64, seed=1)
    pad = 3
    aug = BatchAugment(mean=[0, 0, 0], std=[1 / 255] * 3, flip=0.5, pad=pad, random_erasing=0)
    out = aug(x, torch.Generator().manual_seed(5)).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    offsets = set()
    for b in range(len(x)):
        matches = [(i, j, f) for i in range(2 * pad + 1) for j in range(2 * pad + 1) for f in (False, True)
                   if np.array_equal(reference_pad_crop(x[b].numpy(), pad, i, j, f), out[b])]
        assert matches, f"sample {b} is not a flip/pad/crop of its input"
        offsets.add(matches[0][:2])
    assert len(offsets) > 10  # offsets vary across the batch
    # row and column offsets cover [0, 2 * pad] inclusive, like T.RandomCrop after T.Pad
    assert {i for i, _ in offsets} == set(range(2 * pad + 1)) == {j for _, j in offsets}


def test_seeded_generator_is_deterministic_and_samples_differ():
    x = batch(b=1).repeat(16, 1, 1, 1)
    aug = BatchAugment.from_spec(SPEC, flip=0.5, pad=2, random_erasing=0.5)
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    c = aug(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    distinct = {tuple(v.flatten().tolist()) for v in a}
    assert len(distinct) > 8  # the same image gets different augmentations within one batch


def test_flip_fraction_is_close_to_p():
    x = torch.zeros(4000, 2, 8, 3, dtype=torch.uint8)
    x[:, :, 0] = 255  # bright left column: a flipped sample has it on the right
    out = BatchAugment(mean=[0] * 3, std=[1] * 3, flip=0.3, pad=0, random_erasing=0)(x, torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, -1] > 0.5).float().mean().item()
    assert abs(flipped - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 4000)


def test_random_erasing_statistics_and_value():
    h, w, n = 32, 16, 3000
    x = torch.full((n, h, w, 3), 200, dtype=torch.uint8)
    aug = BatchAugment(mean=[0] * 3, std=[1] * 3, flip=0, pad=0, random_erasing=0.5, erase_value=-7.0)
    out = aug(x, torch.Generator().manual_seed(1))
    erased = out[:, 0] == -7.0
    any_erased = erased.flatten(1).any(1)
    assert abs(any_erased.float().mean().item() - 0.5) < 0.05
    # erased pixels are the same rectangle in every channel and exactly one axis-aligned rectangle
    assert torch.equal(erased, out[:, 2] == -7.0)
    fractions = []
    for m in erased[any_erased][:300]:
        rows, cols = m.any(1).nonzero()[:, 0], m.any(0).nonzero()[:, 0]
        eh, ew = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert int(m.sum()) == int(eh * ew) and eh < h and ew < w
        fractions.append(float(eh * ew) / (h * w))
    # same distribution of erased areas as torchvision's RandomErasing on the same image size
    from torchvision.transforms import RandomErasing

    torch.manual_seed(0)
    tv = RandomErasing(p=1.0, value=-7.0)
    ref = [float((tv(torch.ones(3, h, w))[0] == -7.0).float().mean()) for _ in range(600)]
    assert min(fractions) > 0.01 and max(fractions) < 0.36
    assert abs(np.mean(fractions) - np.mean(ref)) < 0.02
    assert abs(np.std(fractions) - np.std(ref)) < 0.02
    untouched = out[~any_erased]
    assert torch.all(untouched == 200 / 255)


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        BatchAugment(flip=1.5)
    with pytest.raises(ValueError):
        BatchAugment()(torch.zeros(2, 8, 8, dtype=torch.uint8))
