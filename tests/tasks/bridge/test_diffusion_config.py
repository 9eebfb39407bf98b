"""Bridge-training configs (sarbridge.tasks.bridge.config): shipped file, the pair preprocessing
spec, named errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sarbridge.core.config import config_from_dict, config_to_dict
from sarbridge.core.errors import ConfigError
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.tasks.bridge.config import (
    DiffusionConfig,
    PairDataConfig,
    load_diffusion_config,
)

DEMO = Path(__file__).resolve().parents[3] / "configs" / "bbdm_demo.yaml"


def test_shipped_config_loads_and_round_trips():
    cfg = load_diffusion_config(DEMO)
    assert cfg.name == "bbdm_demo" and cfg.data.resolution == [64, 32] and cfg.optim.name == "adamw"
    assert config_from_dict(config_to_dict(cfg), DiffusionConfig) == cfg
    assert list(config_to_dict(cfg)["data"]) == [
        "format", "root", "resolution", "sar_preprocess", "sar_alpha", "gsd_optical", "gsd_sar",
        "max_pairs_per_id", "val_fraction", "hflip", "vflip", "cache", "num_workers"]


def test_pair_spec_is_the_preprocessing_at_the_model_resolution():
    d = PairDataConfig(resolution=[16, 8], sar_preprocess="percentile", sar_alpha=3.0, gsd_sar=2.0)
    assert d.spec() == PreprocessSpec(image_size=[16, 8], sar_preprocess="percentile", sar_alpha=3.0,
                                      gsd_optical=0.75, gsd_sar=2.0)
    # every registered scaling the re-ID config accepts (the ablation passes its data.sar_preprocess on)
    assert load_diffusion_config(DEMO, ["data.sar_preprocess=db"]).data.spec().sar_preprocess == "db"
    # resolutions down to 4 pixels stay allowed (the spec's own minimum for image_size is 8)
    assert load_diffusion_config(DEMO, ["data.resolution=[8,4]", "model.channel_mult=[1,2]"]).data.resolution == [8, 4]


@pytest.mark.parametrize("override, fragment", [
    ("data.resolution=[2,4]", "data.resolution must be [height, width] >= 4"),
    ("data.sar_preprocess=foo", "config key 'data.sar_preprocess' has value 'foo'"),
    ("data.sar_alpha=100", "data.sar_alpha"),
    ("data.gsd_sar=-1", "data.gsd_sar"),
    ("data.hflip=1.5", "data.hflip"),
    ("data.max_pairs_per_id=0", "data.max_pairs_per_id"),
    ("data.num_workers=-2", "data.num_workers"),
    ("ema.decay=1", "ema.decay"),
    ("train.batch_size=0", "train.batch_size"),
])
def test_bad_values_name_the_key_in_one_line(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_diffusion_config(DEMO, [override])
    msg = str(exc.value)
    assert fragment in msg and "\n" not in msg, msg
