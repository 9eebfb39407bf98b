"""CDGF feature fusion: the formula, generated-twin features, and the on-disk cache."""

import numpy as np
import pytest
import torch

from sarbridge.data.hoss import load_hoss
from sarbridge.tasks.reid.fusion import GeneratedFeatureCache, fuse, generated_features
from sarbridge.tasks.reid.task import ReIDTask
from tiny_setup import HOSS_SAMPLE, tiny_config


def test_fuse_formula_hand_computed():
    f = torch.tensor([3.0, 4.0])  # normalised: (0.6, 0.8)
    g = torch.tensor([1.0, 0.0])
    tau = 0.25
    expected = torch.tensor([0.75 * 0.6 + 0.25, 0.75 * 0.8])
    expected = expected / expected.norm()
    assert torch.allclose(fuse(f, g, tau), expected, atol=1e-6)
    assert torch.allclose(fuse(f, g, 0.0), torch.tensor([0.6, 0.8]))
    assert torch.allclose(fuse(torch.stack([f, f]), torch.stack([g, g]), tau)[1], expected, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_model():
    cfg = tiny_config(epochs=1)
    splits = load_hoss(HOSS_SAMPLE)
    task = ReIDTask(cfg, splits.train, [], progress=False)
    return task.model.eval(), task.spec, splits


def test_generated_features_are_cached_on_disk(tmp_path, tiny_model):
    model, spec, splits = tiny_model
    optical = [s for s in splits.query if s.modality == "optical"][:3]
    calls = []

    def fake_generate(raws, modality, keys):
        calls.append(len(raws))
        rng = np.random.default_rng(len(calls))
        return rng.integers(0, 256, size=(len(raws), 2, 24, 12, 3), dtype=np.uint8)

    cache = GeneratedFeatureCache(tmp_path, "k")
    first = generated_features(model, spec, optical, fake_generate, cache, torch.device("cpu"), batch_size=2,
                               progress=False)
    assert calls == [2, 1]
    assert all(cache.image_path(s).is_file() for s in optical)
    assert all(v.shape == (model.dim,) for v in first.values())
    again = generated_features(model, spec, optical, fake_generate, cache, torch.device("cpu"), progress=False)
    assert calls == [2, 1]  # nothing sampled again
    for s in optical:
        assert torch.equal(first[s.path], again[s.path])
    # features lost, images kept: features recomputed from cached images without sampling
    for f in (tmp_path / "k").glob("features_*.pt"):
        f.unlink()
    third = generated_features(model, spec, optical, fake_generate, cache, torch.device("cpu"), progress=False)
    assert calls == [2, 1]
    for s in optical:
        assert torch.allclose(first[s.path], third[s.path], atol=1e-6)


def test_generated_features_embed_twins_as_the_other_modality(tmp_path, tiny_model):
    model, spec, splits = tiny_model
    s = [x for x in splits.query if x.modality == "optical"][:1]
    img = np.random.default_rng(0).integers(0, 256, size=(1, 1, 24, 12, 3), dtype=np.uint8)
    got = generated_features(model, spec, s, lambda raws, m, keys: img, GeneratedFeatureCache(tmp_path, "a"),
                             torch.device("cpu"), progress=False)[s[0].path]
    from PIL import Image

    from sarbridge.data.io import read_image

    raw = read_image(s[0].path)
    size = torch.from_numpy(spec.size_features(raw.shape[0], raw.shape[1], "optical"))[None]
    x = spec.eval_transform()(Image.fromarray(img[0, 0]))[None]
    as_sar = torch.nn.functional.normalize(model.embed(x, torch.tensor([1]), size), dim=1)[0]
    as_opt = torch.nn.functional.normalize(model.embed(x, torch.tensor([0]), size), dim=1)[0]
    assert torch.allclose(got, as_sar, atol=1e-5)
    assert not torch.allclose(got, as_opt, atol=1e-3)


def test_enabled_fusion_without_generator_fails_before_training(tmp_path):
    from sarbridge.core.errors import ConfigError
    from sarbridge.tasks.reid.task import train_reid

    cfg = tiny_config(extra=["fusion.enabled=true"])
    with pytest.raises(ConfigError, match="opt2sar_checkpoint"):
        train_reid(cfg, tmp_path, progress=False)
    assert not (tmp_path / "last.pt").exists()
    cfg = tiny_config(extra=["fusion.enabled=true", f"fusion.opt2sar_checkpoint={tmp_path / 'nope.pt'}"])
    with pytest.raises(ConfigError, match="not found"):
        train_reid(cfg, tmp_path, progress=False)


def test_generation_noise_does_not_depend_on_where_the_data_lies(tmp_path, tiny_model):
    """Two copies of one data set in different folders get the same noise keys, hence the same twins."""
    import shutil

    from sarbridge.tasks.reid.fusion import noise_key

    model, spec, _ = tiny_model
    seen: list[list[str]] = []

    def record(raws, modality, keys):
        seen.append(list(keys))
        return np.zeros((len(raws), 1, 24, 12, 3), dtype=np.uint8)

    for copy in ("a", "b/deeper"):
        root = tmp_path / copy / "HOSS"
        shutil.copytree(HOSS_SAMPLE, root)
        optical = [s for s in load_hoss(root).query if s.modality == "optical"][:2]
        generated_features(model, spec, optical, record, GeneratedFeatureCache(tmp_path / copy / "cache", "k"),
                           torch.device("cpu"), progress=False)
    assert seen[0] == seen[1]
    assert seen[0][0].startswith("query/") and seen[0][0].endswith("_RGB.tif")
    assert noise_key(optical[0]) == seen[1][0]
