"""Tests for sarbridge.data.transforms.PreprocessSpec and sarbridge.tasks.reid.dataset.ImageDataset."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from sarbridge.core.errors import DataError
from sarbridge.data.records import OPTICAL, SAR, Sample
from sarbridge.data.sar import max_scale, percentile_scale
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.tasks.reid.dataset import ImageDataset, make_label_map


def transoss_size(h: int, w: int, s: float) -> list[float]:
    """The TransOSS size-token formula, written out independently of the library."""
    return [(w * s / 93 - 0.434) / 0.031, (h * s / 427 - 0.461) / 0.031, h / w]


# --------------------------------------------------------------------------- size features


def test_size_features_optical_hand_computed():
    spec = PreprocessSpec()
    got = spec.size_features(281, 60, "optical")
    # w: (60 * 0.75 / 93 - 0.434) / 0.031 = 1.6087; h: (281 * 0.75 / 427 - 0.461) / 0.031 = 1.0503
    np.testing.assert_allclose(got, [1.60874, 1.05032, 281 / 60], rtol=1e-4)
    np.testing.assert_allclose(got, transoss_size(281, 60, 0.75), rtol=1e-6)
    assert got.dtype == np.float32 and got.shape == (3,)


def test_size_features_sar_uses_gsd_one():
    spec = PreprocessSpec()
    got = spec.size_features(219, 55, "SAR")
    # w: (55 / 93 - 0.434) / 0.031 = 5.0774; h: (219 / 427 - 0.461) / 0.031 = 1.6736
    np.testing.assert_allclose(got, [5.07735, 1.67357, 219 / 55], rtol=1e-4)
    np.testing.assert_allclose(got, transoss_size(219, 55, 1.0), rtol=1e-6)


def test_size_features_differ_by_modality_and_follow_custom_gsd():
    spec = PreprocessSpec(gsd_optical=0.5, gsd_sar=2.0)
    assert spec.gsd("rgb") == 0.5 and spec.gsd("sar") == 2.0
    np.testing.assert_allclose(spec.size_features(100, 40, "optical"), transoss_size(100, 40, 0.5), rtol=1e-6)
    np.testing.assert_allclose(spec.size_features(100, 40, "sar"), transoss_size(100, 40, 2.0), rtol=1e-6)
    default = PreprocessSpec()
    opt, sar = default.size_features(100, 40, OPTICAL), default.size_features(100, 40, SAR)
    assert opt[0] < sar[0] and opt[1] < sar[1] and opt[2] == sar[2]


# --------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("size", [[32, 16], [20, 24]])
def test_eval_transform_shape_and_range(size):
    from PIL import Image

    spec = PreprocessSpec(image_size=size)
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, size=(37, 11, 3), dtype=np.uint8))
    out = spec.eval_transform()(img)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert tuple(out.shape) == (3, *size)
    assert out.min() >= -1.0 and out.max() <= 1.0
    white = spec.eval_transform()(Image.fromarray(np.full((9, 5, 3), 255, np.uint8)))
    black = spec.eval_transform()(Image.fromarray(np.zeros((9, 5, 3), np.uint8)))
    assert torch.allclose(white, torch.ones_like(white)) and torch.allclose(black, -torch.ones_like(black))
    # deterministic
    assert torch.equal(spec.eval_transform()(img), out)


def test_train_transform_shape_and_range():
    from PIL import Image

    spec = PreprocessSpec(image_size=[24, 12])
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, size=(50, 20, 3), dtype=np.uint8))
    torch.manual_seed(0)
    tf = spec.train_transform(flip=0.5, pad=2, random_erasing=0.5)
    outs = [tf(img) for _ in range(4)]
    for out in outs:
        assert tuple(out.shape) == (3, 24, 12)
        assert out.min() >= -1.0 and out.max() <= 1.0
    assert any(not torch.equal(outs[0], o) for o in outs[1:])  # augmentation is random
    plain = spec.train_transform(flip=0, pad=0, random_erasing=0)
    assert torch.equal(plain(img), spec.eval_transform()(img))


def test_to_uint8_per_modality():
    x = np.arange(21, dtype=np.float32).reshape(3, 7)
    np.testing.assert_array_equal(PreprocessSpec(sar_preprocess="max").to_uint8(x, "sar"), max_scale(x))
    spec = PreprocessSpec(sar_preprocess="percentile", sar_alpha=20.0)
    np.testing.assert_array_equal(spec.to_uint8(x, "SAR"), percentile_scale(x, alpha=20.0))
    rgb = np.random.default_rng(0).integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(spec.to_uint8(rgb, "RGB"), rgb)


def test_unknown_modality_rejected():
    with pytest.raises(DataError, match="unknown modality"):
        PreprocessSpec().to_uint8(np.zeros((3, 3), np.uint8), "infrared")


def test_prepare_returns_image_and_size():
    spec = PreprocessSpec(image_size=[16, 8])
    raw = np.random.default_rng(0).gamma(1.0, 0.1, size=(30, 12)).astype(np.float32)
    img, size = spec.prepare(raw, "sar")
    assert tuple(img.shape) == (3, 16, 8)
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])  # SAR is grey
    np.testing.assert_allclose(size.numpy(), transoss_size(30, 12, 1.0), rtol=1e-6)


def test_spec_dict_round_trip():
    spec = PreprocessSpec(image_size=[64, 32], sar_preprocess="percentile", sar_alpha=2.5,
                          gsd_optical=0.5, gsd_sar=3.0, mean=[0.1, 0.2, 0.3], std=[0.4, 0.5, 0.6])
    d = spec.to_dict()
    assert d["image_size"] == [64, 32] and d["sar_preprocess"] == "percentile" and d["sar_alpha"] == 2.5
    back = PreprocessSpec.from_dict(d)
    assert back == spec
    d["image_size"][0] = 1  # to_dict returns a copy
    assert spec.image_size == [64, 32]
    assert PreprocessSpec.from_dict(PreprocessSpec().to_dict()) == PreprocessSpec()
    with pytest.raises(TypeError):
        PreprocessSpec.from_dict({**spec.to_dict(), "bogus": 1})


def test_spec_of_an_extending_config_section_is_the_plain_spec():
    """A data section extends PreprocessSpec; to_dict()/spec() hold only the spec's own fields."""
    from dataclasses import dataclass

    @dataclass
    class Section(PreprocessSpec):
        root: str = "x"

    sec = Section(image_size=[16, 8], sar_alpha=2.0, root="/data")
    assert list(sec.to_dict()) == ["image_size", "sar_preprocess", "sar_alpha", "sar_despeckle",
                                   "sar_despeckle_window", "gsd_optical", "gsd_sar", "mean", "std"]
    spec = sec.spec()
    assert type(spec) is PreprocessSpec and spec == PreprocessSpec(image_size=[16, 8], sar_alpha=2.0)
    spec.image_size[0] = 99
    assert sec.image_size == [16, 8]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"image_size": [7, 16]}, "data.image_size must be [height, width] >= 8, got [7, 16]"),
        ({"image_size": [16]}, "data.image_size must be [height, width] >= 8"),
        ({"sar_preprocess": "log"}, "config key 'data.sar_preprocess' has value 'log'; fix: use one of 'db', 'max', 'percentile'"),
        ({"sar_alpha": 100.0}, "data.sar_alpha must be a percentile in [0, 100), got 100.0"),
        ({"sar_alpha": -0.5}, "data.sar_alpha must be a percentile"),
        ({"sar_despeckle": "median"}, "config key 'data.sar_despeckle' has value 'median'"),
        ({"sar_despeckle_window": 4}, "data.sar_despeckle_window must be odd and >= 3, got 4"),
        ({"sar_despeckle_window": 1}, "data.sar_despeckle_window must be odd and >= 3, got 1"),
        ({"gsd_optical": 0.0}, "data.gsd_optical must be a positive ground sampling distance in metres, got 0.0"),
        ({"gsd_sar": float("inf")}, "data.gsd_sar must be a positive ground sampling distance"),
        ({"std": [0.5, 0.0, 0.5]}, "data.std"),
        ({"mean": [0.5, float("nan"), 0.5]}, "data.mean"),
    ],
)
def test_validate_names_the_key_in_one_line(kwargs, message):
    from sarbridge.core.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        PreprocessSpec(**kwargs).validate()
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_validate_accepts_every_registered_choice_and_a_prefix():
    from sarbridge.core.errors import ConfigError
    from sarbridge.data.despeckle import available_despeckle
    from sarbridge.data.sar import available_sar_preprocess

    for name in available_sar_preprocess():
        PreprocessSpec(sar_preprocess=name).validate()
    for name in [None, *available_despeckle()]:
        PreprocessSpec(sar_despeckle=name, sar_despeckle_window=3).validate()
    with pytest.raises(ConfigError, match=r"geo\.data\.sar_alpha"):
        PreprocessSpec(sar_alpha=200.0).validate("geo.data")
    # a config that calls image_size something else, with a smaller minimum
    PreprocessSpec(image_size=[8, 4]).validate_size("data", key="resolution", min_size=4)
    with pytest.raises(ConfigError, match=r"data\.resolution must be \[height, width\] >= 4"):
        PreprocessSpec(image_size=[2, 4]).validate_size("data", key="resolution", min_size=4)


# --------------------------------------------------------------------------- ImageDataset


@pytest.fixture
def two_samples(tmp_path, write_rgb, write_sar):
    write_rgb(tmp_path / "0001_s01c1_RGB.tif", height=21, width=9, seed=1)
    write_sar(tmp_path / "0001_s01c2_SAR.tif", height=15, width=6, seed=2)
    return [
        Sample(str(tmp_path / "0001_s01c1_RGB.tif"), 7, OPTICAL, camid=0),
        Sample(str(tmp_path / "0001_s01c2_SAR.tif"), 9, SAR, camid=1),
    ]


def test_dataset_items(two_samples):
    spec = PreprocessSpec(image_size=[16, 8])
    ds = ImageDataset(two_samples, spec, label_map={7: 0})
    assert len(ds) == 2
    item = ds[1]
    assert set(item) == {"image", "size", "label", "pid", "modality", "camid", "index"}
    assert isinstance(item["image"], torch.Tensor) and tuple(item["image"].shape) == (3, 16, 8)
    assert item["image"].dtype == torch.float32
    assert isinstance(item["size"], torch.Tensor) and item["size"].dtype == torch.float32
    np.testing.assert_allclose(item["size"].numpy(), transoss_size(15, 6, 1.0), rtol=1e-6)
    assert (item["label"], item["pid"], item["modality"], item["camid"], item["index"]) == (-1, 9, 1, 1, 1)
    first = ds[0]
    assert (first["label"], first["pid"], first["modality"], first["camid"], first["index"]) == (0, 7, 0, 0, 0)
    np.testing.assert_allclose(first["size"].numpy(), transoss_size(21, 9, 0.75), rtol=1e-6)
    for key in ("label", "pid", "modality", "camid", "index"):
        assert type(first[key]) is int, key


def test_dataset_batches_through_dataloader(two_samples):
    ds = ImageDataset(two_samples, PreprocessSpec(image_size=[16, 8]))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert tuple(batch["image"].shape) == (2, 3, 16, 8)
    assert batch["pid"].tolist() == [7, 9] and batch["modality"].tolist() == [0, 1]


def test_dataset_cache_avoids_rereading(two_samples):
    ds = ImageDataset(two_samples, PreprocessSpec(image_size=[16, 8]), cache=True)
    before = ds[0]["image"]
    os.remove(two_samples[0].path)
    after = ds[0]["image"]
    assert torch.equal(before, after)
    os.remove(two_samples[1].path)
    with pytest.raises(DataError, match="0001_s01c2_SAR.tif"):
        ds[1]  # never loaded before the file went away


def test_dataset_without_cache_rereads(two_samples):
    ds = ImageDataset(two_samples, PreprocessSpec(image_size=[16, 8]), cache=False)
    ds[0]
    os.remove(two_samples[0].path)
    with pytest.raises(DataError, match="0001_s01c1_RGB.tif"):
        ds[0]


def test_make_label_map_is_contiguous_and_skips_distractors():
    samples = [Sample("a", 30, OPTICAL), Sample("b", -1, SAR), Sample("c", 5, SAR), Sample("d", 30, SAR)]
    assert make_label_map(samples) == {5: 0, 30: 1}
