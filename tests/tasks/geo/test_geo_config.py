"""Localisation configs: defaults are the CMPC settings, YAML files load, bad values are named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sarbridge.core.errors import ConfigError
from sarbridge.resources import resource_path
from sarbridge.tasks.geo.config import GeoConfig, load_geo_config

REPO = Path(__file__).resolve().parents[3]


def test_defaults_are_the_cmpc_paper_settings() -> None:
    cfg = GeoConfig()
    assert (cfg.model.backbone, cfg.model.embed_dim, cfg.data.patch_size) == ("resnet50", 512, 200)
    w = cfg.loss.wasserstein
    assert (w.critic_steps, w.critic_lr, w.weight, w.gamma, w.clip, w.hidden) == (5, 1e-3, 0.01, 10.0, 0.1, 512)
    assert (cfg.optim.name, cfg.optim.lr, cfg.data.batch_size, cfg.optim.epochs) == ("sgd", 0.0025, 24, 30)
    assert (cfg.refine.top_k, cfg.refine.edge_k) == (10, 5)


@pytest.mark.parametrize("name", ["geo_demo.yaml", "cmpc_sn6.yaml"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_geo_config(REPO / "configs" / name)
    assert cfg.name == name.removesuffix(".yaml")
    if name == "cmpc_sn6.yaml":
        # CMPC's utils/transform.py normalises both modalities with ImageNet's statistics
        assert (cfg.data.mean, cfg.data.std) == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        img, _ = cfg.data.spec().prepare(np.full((8, 8, 3), 255, np.uint8), "optical")
        np.testing.assert_allclose(img[:, 0, 0].numpy(),
                                   [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225], rtol=1e-5)
    else:  # the demo keeps TransOSS's 0.5 / 0.5
        assert (cfg.data.mean, cfg.data.std) == ([0.5] * 3, [0.5] * 3)


def test_packaged_demo_config_is_the_repository_one() -> None:
    assert resource_path("geo_demo.yaml").read_text() == (REPO / "configs" / "geo_demo.yaml").read_text()


@pytest.mark.parametrize("override, key", [
    ("data.patch_size=4", "data.patch_size"),
    ("data.fractions=[0.5,0.5,0.5]", "data.fractions"),
    ("refine.top_k=1", "refine.top_k"),
    ("eval.top_k=5", "eval.top_k"),
    ("loss.wasserstein.weight=-1", "loss.wasserstein.weight"),
    ("refine.hidden=30", "refine.hidden"),
    ("data.format=map", "data.format=map"),
    ("loss.wasserstein.mode=box", "loss.wasserstein.mode"),
    ("refine.epoch=3", "refine.epoch"),
])
def test_bad_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[")):
        load_geo_config(None, [override])


@pytest.mark.parametrize("override, key", [
    ("data.image_size=[4,200]", "data.image_size"),
    ("data.sar_preprocess=log", "data.sar_preprocess"),
    ("data.sar_alpha=100", "data.sar_alpha"),
    ("data.sar_despeckle=median", "data.sar_despeckle"),
    ("data.sar_despeckle_window=6", "data.sar_despeckle_window"),
    ("data.gsd_sar=0", "data.gsd_sar"),
])
def test_preprocessing_errors_are_the_specs_one_line_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key) as exc:
        load_geo_config(None, [override])
    assert "\n" not in str(exc.value)


def test_data_section_is_a_preprocess_spec_with_localisation_defaults() -> None:
    """spec() gives what the removed spec_from_geo built: the five geo keys, spec defaults for the rest
    (so the "preprocess" dict of a geo checkpoint is unchanged)."""
    from sarbridge.data.transforms import PreprocessSpec

    d = GeoConfig().data
    assert (d.image_size, d.sar_preprocess, d.sar_alpha, d.sar_despeckle, d.sar_despeckle_window) == (
        [200, 200], "percentile", 2.0, None, 7)
    cfg = load_geo_config(None, ["data.image_size=[64,64]", "data.sar_preprocess=db", "data.sar_despeckle=lee"])
    assert cfg.data.spec() == PreprocessSpec(image_size=[64, 64], sar_preprocess="db", sar_alpha=2.0,
                                             sar_despeckle="lee", sar_despeckle_window=7)
    assert cfg.data.spec().to_dict() == {
        "image_size": [64, 64], "sar_preprocess": "db", "sar_alpha": 2.0, "sar_despeckle": "lee",
        "sar_despeckle_window": 7, "gsd_optical": 0.75, "gsd_sar": 1.0, "mean": [0.5] * 3, "std": [0.5] * 3}


def test_config_of_the_previous_layout_loads() -> None:
    """A geo config.yaml (and checkpoint "config") written before the data section became a spec."""
    import yaml

    from sarbridge.core.config import config_from_dict, config_to_dict

    old = yaml.safe_load((REPO / "tests" / "fixtures" / "config-v1" / "geo.yaml").read_text(encoding="utf-8"))
    cfg = config_from_dict(old, GeoConfig)
    now = config_to_dict(cfg)
    for section, values in old.items():
        if isinstance(values, dict):
            assert {k: now[section][k] for k in values} == values, section
        else:
            assert now[section] == values, section
    # the only keys added since: the ground sampling distances every PreprocessSpec has, and the
    # normalisation statistics (config keys since CMPC's ImageNet statistics differ from TransOSS's 0.5)
    assert set(now["data"]) - set(old["data"]) == {"gsd_optical", "gsd_sar", "mean", "std"}
    assert (now["data"]["mean"], now["data"]["std"]) == ([0.5] * 3, [0.5] * 3)
