"""Pretraining configs (sarbridge.tasks.pretrain.config): shipped file, preprocessing shared with
re-identification, named errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sarbridge.core.errors import ConfigError
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.tasks.pretrain.config import (
    PretrainConfig,
    load_pretrain_config,
    reid_view,
)
from sarbridge.tasks.reid.config import load_reid_config

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / "configs" / "pretrain_demo.yaml"


def test_shipped_config_loads_with_the_reid_demo_model_and_preprocessing():
    cfg = load_pretrain_config(CONFIG)
    reid = load_reid_config(ROOT / "configs" / "demo.yaml")
    assert isinstance(cfg, PretrainConfig) and cfg.name == "pretrain_demo"
    assert cfg.model == reid.model
    assert cfg.data.spec() == reid.data.spec()  # a pretrained backbone sees its images as fine-tuning will
    assert cfg.data.augment.pad == 6 and cfg.data.augment.random_erasing == 0.0


def test_spec_and_reid_view_carry_every_preprocessing_key():
    cfg = load_pretrain_config(None, ["data.image_size=[32,16]", "data.sar_preprocess=percentile",
                                      "data.sar_alpha=2.5", "data.gsd_sar=3.0", "data.sar_despeckle=kuan"])
    expected = PreprocessSpec(image_size=[32, 16], sar_preprocess="percentile", sar_alpha=2.5, gsd_sar=3.0,
                              sar_despeckle="kuan")
    assert cfg.data.spec() == expected
    view = reid_view(cfg)
    assert view.data.spec() == expected and view.model == cfg.model
    assert PretrainConfig().data.image_size == [128, 64]


@pytest.mark.parametrize("override, key", [
    ("data.batch_size=1", "data.batch_size"),
    ("data.image_size=[4,4]", "data.image_size"),
    ("data.sar_preprocess=foo", "data.sar_preprocess"),
    ("data.sar_alpha=-1", "data.sar_alpha"),
    ("data.sar_despeckle_window=2", "data.sar_despeckle_window"),
    ("data.gsd_optical=0", "data.gsd_optical"),
    ("data.augment.flip=2", "data.augment.flip"),
    ("data.sar_db_range=[0,-25]", "data.sar_db_range"),
    ("data.rgb_percentiles=[50,10]", "data.rgb_percentiles"),
    ("data.val_fraction=1", "data.val_fraction"),
    ("loss.temperature=0", "loss.temperature"),
    ("model.drop_path=1", "model.drop_path"),
    ("eval.max_rank=0", "eval.max_rank"),
    ("data.mean=[0,0]", "data.mean"),
    ("data.std=[0.2,0,0.2]", "data.std"),
])
def test_bad_values_name_the_key_in_one_line(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[")) as exc:
        load_pretrain_config(CONFIG, [override])
    assert "\n" not in str(exc.value)
