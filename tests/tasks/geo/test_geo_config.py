"""Localisation configs: defaults are the CMPC settings, YAML files load, bad values are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from sarbridge.core.errors import ConfigError
from sarbridge.tasks.geo.config import GeoConfig, load_geo_config
from sarbridge.resources import resource_path

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
