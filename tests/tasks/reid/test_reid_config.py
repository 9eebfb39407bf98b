"""Re-identification configs (sarbridge.tasks.reid.config) through the shared machinery: shipped files,
overrides, named errors for bad types and ranges, saving."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import sarbridge
from sarbridge.core.config import config_from_dict, config_to_dict, save_config
from sarbridge.core.errors import ConfigError
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.tasks.reid.config import ExperimentConfig, load_reid_config

REPO = Path(__file__).resolve().parents[3]
RESOURCE_DEMO = Path(sarbridge.__file__).resolve().parent / "resources" / "demo.yaml"
CONFIG_FILES = {
    "resources/demo.yaml": RESOURCE_DEMO,
    "configs/demo.yaml": REPO / "configs" / "demo.yaml",
    "configs/hoss_transoss.yaml": REPO / "configs" / "hoss_transoss.yaml",
}


@pytest.fixture(params=sorted(CONFIG_FILES))
def shipped_config(request) -> Path:
    path = CONFIG_FILES[request.param]
    if not path.is_file():
        pytest.skip(f"{request.param} is not present")
    return path


def test_shipped_configs_load_and_match_their_yaml(shipped_config):
    cfg = load_reid_config(shipped_config)
    assert isinstance(cfg, ExperimentConfig)
    raw = yaml.safe_load(shipped_config.read_text(encoding="utf-8"))
    resolved = config_to_dict(cfg)
    for section, values in raw.items():
        if isinstance(values, dict):
            for key, value in values.items():
                got = resolved[section][key]
                assert got == value, f"{section}.{key}: {got!r} != {value!r}"
        else:
            assert resolved[section] == values, section


def test_resource_demo_values():
    cfg = load_reid_config(RESOURCE_DEMO)
    assert cfg.name == "demo"
    assert cfg.data.image_size == [128, 64]
    assert cfg.model.backbone == "vit_tiny_patch16_224" and cfg.model.backbone_kwargs == {"depth": 4}
    assert cfg.model.pretrained is None and cfg.loss.triplet_margin is None
    assert cfg.optim.name == "adamw" and cfg.optim.lr == pytest.approx(5e-4)
    assert cfg.data.sampler.num_ids == 8 and cfg.data.augment.pad == 6
    # keys the file leaves out keep their defaults
    assert cfg.optim.momentum == ExperimentConfig().optim.momentum


def test_defaults_without_a_file():
    cfg = load_reid_config(None)
    assert cfg == ExperimentConfig()
    assert cfg.data.image_size == [256, 128] and cfg.data.sar_preprocess == "max"


def test_overrides_are_applied_with_correct_types():
    cfg = load_reid_config(RESOURCE_DEMO, ["optim.lr=0.01", "data.image_size=[64,32]", "model.size_token=false"])
    assert cfg.optim.lr == 0.01 and type(cfg.optim.lr) is float
    assert cfg.data.image_size == [64, 32] and all(type(v) is int for v in cfg.data.image_size)
    assert cfg.model.size_token is False
    # untouched neighbours of an overridden key keep the file's values
    assert cfg.optim.epochs == 60 and cfg.data.sar_preprocess == "max" and cfg.model.modality_embed is True


@pytest.mark.parametrize(
    "override,getter,expected",
    [
        ("optim.lr=1e-3", lambda c: c.optim.lr, 1e-3),  # YAML 1.1 reads '1e-3' as a string
        ("optim.epochs=7", lambda c: c.optim.epochs, 7),
        ("optim.weight_decay=0", lambda c: c.optim.weight_decay, 0.0),
        ("data.sampler.num_ids=4", lambda c: c.data.sampler.num_ids, 4),
        ("data.sar_preprocess=percentile", lambda c: c.data.sar_preprocess, "percentile"),
        ("model.pretrained=/w/vit.safetensors", lambda c: c.model.pretrained, "/w/vit.safetensors"),
        ("model.pretrained=null", lambda c: c.model.pretrained, None),
        ("loss.triplet_margin=0.3", lambda c: c.loss.triplet_margin, 0.3),
        ("model.backbone_kwargs={depth: 2}", lambda c: c.model.backbone_kwargs, {"depth": 2}),
        ("name=run 1", lambda c: c.name, "run 1"),
        ("device=cuda:1", lambda c: c.device, "cuda:1"),
    ],
)
def test_single_override(override, getter, expected):
    cfg = load_reid_config(RESOURCE_DEMO, [override])
    got = getter(cfg)
    assert got == expected and type(got) is type(expected)


def test_later_override_wins_and_deep_merge():
    cfg = load_reid_config(RESOURCE_DEMO, ["optim.lr=0.1", "optim.lr=0.2", "data.sampler.num_instances=2"])
    assert cfg.optim.lr == 0.2
    assert cfg.data.sampler.num_instances == 2 and cfg.data.sampler.num_ids == 8  # sibling kept


def _config_error(overrides=None, path=RESOURCE_DEMO) -> str:
    with pytest.raises(ConfigError) as exc:
        load_reid_config(path, overrides)
    return str(exc.value)


def test_unknown_key_suggests_the_close_one():
    msg = _config_error(["model.backbon=x"])
    assert "'model.backbon'" in msg
    assert "did you mean 'model.backbone'" in msg


def test_unknown_nested_and_top_level_keys():
    msg = _config_error(["data.sampler.num_id=3"])
    assert "'data.sampler.num_id'" in msg and "'data.sampler.num_ids'" in msg
    msg = _config_error(["sed=3"])
    assert "'sed'" in msg and "did you mean 'seed'" in msg
    msg = _config_error(["data.zzzz=1"])
    assert "'data.zzzz'" in msg and "valid keys here" in msg and "image_size" in msg


@pytest.mark.parametrize(
    "override,fragments",
    [
        ("optim.epochs=abc", ["optim.epochs", "integer", "abc"]),
        ("optim.epochs=2.5", ["optim.epochs", "integer"]),
        ("seed=true", ["seed", "integer"]),
        ("optim.lr=fast", ["optim.lr", "number"]),
        ("model.size_token=maybe", ["model.size_token", "true or false"]),
        ("data.image_size=64", ["data.image_size", "list"]),
        ("data.image_size=[64, a]", ["data.image_size[1]", "integer"]),
        ("loss.triplet_margin=abc", ["loss.triplet_margin", "number"]),
        ("model.backbone_kwargs=3", ["model.backbone_kwargs", "mapping"]),
        ("data=5", ["section 'data'", "mapping"]),
    ],
)
def test_wrong_type(override, fragments):
    msg = _config_error([override])
    for frag in fragments:
        assert frag in msg, msg


@pytest.mark.parametrize(
    "override,fragments",
    [
        ("data.sar_preprocess=foo", ["data.sar_preprocess", "'foo'", "'max'", "'percentile'"]),
        ("optim.name=adam", ["optim.name", "'sgd'", "'adamw'"]),
        ("data.format=coco", ["data.format", "'hoss'", "'manifest'"]),
    ],
)
def test_bad_literal(override, fragments):
    msg = _config_error([override])
    for frag in fragments:
        assert frag in msg, msg


@pytest.mark.parametrize(
    "override,key",
    [
        ("data.val_fraction=1.5", "data.val_fraction"),
        ("data.val_fraction=-0.1", "data.val_fraction"),
        ("data.image_size=[64]", "data.image_size"),
        ("data.image_size=[4, 64]", "data.image_size"),
        ("data.sar_alpha=100", "data.sar_alpha"),
        ("data.sampler.num_ids=1", "num_ids"),
        ("data.sampler.num_instances=0", "num_instances"),
        ("optim.epochs=0", "optim.epochs"),
        ("optim.lr=0", "optim.lr"),
        ("optim.lr=-1e-3", "optim.lr"),
        ("optim.warmup_epochs=-1", "optim.warmup_epochs"),
        ("model.drop_path=1.0", "model.drop_path"),
        ("loss.ce_weight=-1", "loss.ce_weight"),
        ("device=gpu", "device 'gpu'"),
        ("data.gsd_sar=0", "data.gsd_sar"),
        ("data.gsd_optical=-0.5", "data.gsd_optical"),
        ("data.sar_despeckle=median", "data.sar_despeckle"),
        ("data.sar_despeckle_window=4", "data.sar_despeckle_window"),
        ("data.augment.flip=1.5", "data.augment.flip"),
        ("data.augment.random_erasing=-0.1", "data.augment.random_erasing"),
        ("data.augment.pad=-1", "data.augment.pad"),
        ("data.num_workers=-1", "data.num_workers"),
        ("data.prefetch_factor=0", "data.prefetch_factor"),
        ("eval.batch_size=0", "eval.batch_size"),
        ("eval.k1=0", "eval.k1"),
        ("eval.lambda_value=1.5", "eval.lambda_value"),
        ("fusion.tau=2", "fusion.tau"),
        ("fusion.modalities=[infrared]", "fusion.modalities"),
    ],
)
def test_bad_range(override, key):
    msg = _config_error([override])
    assert key in msg and "\n" not in msg, msg


def test_preprocessing_keys_and_their_checks_are_the_specs():
    """The data section is a PreprocessSpec: same keys (mean/std are config keys too), same checks,
    and spec() is the plain spec a checkpoint stores, with exactly the keys old checkpoints hold."""
    cfg = load_reid_config(RESOURCE_DEMO, ["data.sar_preprocess=db", "data.sar_alpha=3", "data.gsd_sar=2.5",
                                           "data.sar_despeckle=lee", "data.sar_despeckle_window=5"])
    spec = cfg.data.spec()
    assert type(spec) is PreprocessSpec
    assert spec == PreprocessSpec(image_size=[128, 64], sar_preprocess="db", sar_alpha=3.0, sar_despeckle="lee",
                                  sar_despeckle_window=5, gsd_optical=0.75, gsd_sar=2.5)
    assert list(spec.to_dict()) == ["image_size", "sar_preprocess", "sar_alpha", "sar_despeckle",
                                    "sar_despeckle_window", "gsd_optical", "gsd_sar", "mean", "std"]
    spec.image_size[0] = 1  # a copy, not a view of the config
    assert cfg.data.image_size == [128, 64]
    assert list(config_to_dict(cfg)["data"]) == [
        "image_size", "sar_preprocess", "sar_alpha", "sar_despeckle", "sar_despeckle_window", "gsd_optical",
        "gsd_sar", "mean", "std", "format", "root", "manifest", "val_fraction", "num_workers", "cache", "cache_dir", "gpu_augment",
        "pin_memory", "persistent_workers", "prefetch_factor", "sampler", "augment"]
    assert load_reid_config(RESOURCE_DEMO, ["data.mean=[0.485,0.456,0.406]"]).data.spec().mean == [0.485, 0.456, 0.406]
    msg = _config_error(["data.std=[1, 1]"])
    assert msg.startswith("data.std must be 3 finite positive numbers") and "\n" not in msg


def test_config_of_an_old_checkpoint_loads(tmp_path):
    """The 'config' dict a checkpoint of the previous layout holds (every key written out) loads back."""
    old = yaml.safe_load((REPO / "tests" / "fixtures" / "config-v1" / "reid.yaml").read_text(encoding="utf-8"))
    cfg = config_from_dict(old, ExperimentConfig)
    # keys added since that layout take their defaults; nothing else changes
    added = {"eval": {"gnn_k1": 26, "gnn_k2": 7, "gnn_layers": 2}, "data": {"mean": [0.5] * 3, "std": [0.5] * 3},
             "model": {"centre_features": True}, "optim": {"max_steps": None}}
    expected = {k: ({**v, **added[k]} if k in added else v) for k, v in old.items()}
    assert config_to_dict(cfg) == expected
    assert cfg.data.spec().to_dict()["image_size"] == [128, 64]


def test_val_fraction_bounds_are_half_open():
    assert load_reid_config(None, ["data.val_fraction=0"]).data.val_fraction == 0.0
    assert load_reid_config(None, ["data.val_fraction=0.99"]).data.val_fraction == 0.99


def test_bad_value_in_file_names_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  epochs: many\n", encoding="utf-8")
    assert "optim.epochs" in _config_error(path=path)


def test_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    assert load_reid_config(path) == ExperimentConfig()


def test_save_then_load_round_trips(tmp_path):
    cfg = load_reid_config(RESOURCE_DEMO, ["optim.lr=0.01", "data.image_size=[64,32]", "model.size_token=false",
                                      "model.pretrained=/x/w.pt", "loss.triplet_margin=0.3", "data.root=/data/HOSS"])
    out = tmp_path / "run" / "config.yaml"
    save_config(cfg, out)
    assert out.is_file()
    assert not [p for p in out.parent.iterdir() if p.name != "config.yaml"]  # no temp files left
    back = load_reid_config(out)
    assert back == cfg
    assert config_to_dict(back) == config_to_dict(cfg)
    assert config_from_dict(config_to_dict(cfg), ExperimentConfig) == cfg


@pytest.mark.parametrize("override", ["optim.lr=nan", "optim.lr=.inf", "loss.ce_weight=nan", "loss.triplet_weight=.nan"])
def test_non_finite_numbers_rejected(override):
    try:
        load_reid_config(None, [override])
    except ConfigError:
        return
    raise AssertionError(f"{override} was accepted")


def test_packaged_demo_config_is_the_repository_copy():
    """`sarbridge demo` reads the packaged copy; configs/demo.yaml is what users read and edit."""
    assert (REPO / "configs" / "demo.yaml").read_text() == RESOURCE_DEMO.read_text()
