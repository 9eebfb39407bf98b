"""Tests for sarbridge.core.config: the generic machinery (YAML loading, key=value overrides, type
coercion, the root ``validate()`` hook, hidden fields, saving) and the shared sections' checks.

The machinery is exercised on a small config tree defined here; the task configs have their own
tests (tests/tasks/<task>/test_config.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from sarbridge.core.config import (
    NOT_A_KEY,
    OptimConfig,
    RerankOptions,
    RunConfig,
    config_from_dict,
    config_keys,
    config_to_dict,
    load_config,
    merge_dicts,
    parse_overrides,
    save_config,
    validate_device,
    validate_eval_rerank,
    validate_optim,
)
from sarbridge.core.errors import ConfigError


@dataclass
class Inner:
    size: list[int] = field(default_factory=lambda: [4, 2])
    ratio: float = 0.5
    secret: list[float] = field(default_factory=lambda: [1.0], metadata={NOT_A_KEY: True})


@dataclass
class Section(Inner):
    mode: Literal["a", "b"] = "a"
    count: int = 3
    label: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    flag: bool = True


@dataclass
class Root(RunConfig):
    name: str = "toy"
    section: Section = field(default_factory=Section)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checked: list[str] = field(default_factory=list, metadata={NOT_A_KEY: True})

    def validate(self) -> None:
        super().validate()
        if self.section.count < 0:
            raise ConfigError(f"section.count must be >= 0, got {self.section.count}")
        validate_optim(self.optim)
        self.checked.append("validated")


def _error(data: dict[str, Any] | None = None, overrides: list[str] | None = None, path: Path | None = None) -> str:
    with pytest.raises(ConfigError) as exc:
        if data is not None:
            config_from_dict(data, Root)
        else:
            load_config(path, overrides, cls=Root)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# --------------------------------------------------------------------------- building and coercion


def test_defaults_and_validate_hook_runs():
    cfg = load_config(None, cls=Root)
    assert cfg.section == Section() and cfg.optim == OptimConfig()
    assert cfg.checked == ["validated"]  # the root's validate() ran once


def test_values_are_coerced_to_the_annotations():
    cfg = config_from_dict({"seed": 3, "section": {"size": (8, 6), "ratio": 1, "count": 5, "label": 7,
                                                   "extra": {"k": [1]}, "flag": False},
                            "optim": {"lr": "1e-3"}}, Root)
    s = cfg.section
    assert s.size == [8, 6] and type(s.size) is list
    assert s.ratio == 1.0 and type(s.ratio) is float
    assert s.label == "7" and s.extra == {"k": [1]} and s.flag is False
    assert cfg.optim.lr == 1e-3 and type(cfg.optim.lr) is float  # YAML 1.1 reads '1e-3' as a string
    assert cfg.seed == 3


@pytest.mark.parametrize(
    "data,fragments",
    [
        ({"section": {"count": "x"}}, ["section.count", "integer"]),
        ({"section": {"count": 2.5}}, ["section.count", "integer"]),
        ({"section": {"flag": "yes"}}, ["section.flag", "true or false"]),
        ({"section": {"ratio": "fast"}}, ["section.ratio", "number"]),
        ({"section": {"size": 4}}, ["section.size", "list"]),
        ({"section": {"size": [4, "a"]}}, ["section.size[1]", "integer"]),
        ({"section": {"extra": 3}}, ["section.extra", "mapping"]),
        ({"section": {"mode": "c"}}, ["section.mode", "'c'", "'a'", "'b'"]),
        ({"section": 5}, ["section 'section'", "mapping"]),
        ({"seed": True}, ["seed", "integer"]),
    ],
)
def test_wrong_types_name_the_key(data, fragments):
    msg = _error(data)
    for frag in fragments:
        assert frag in msg, msg


def test_unknown_keys_suggest_the_close_one_or_list_the_keys():
    msg = _error({"section": {"cout": 1}})
    assert "unknown config key 'section.cout'" in msg and "did you mean 'section.count'?" in msg
    msg = _error({"sed": 1})
    assert "'sed'" in msg and "did you mean 'seed'?" in msg
    msg = _error({"section": {"zzzz": 1}})
    assert "valid keys here: size, ratio, mode, count, label, extra, flag" in msg


def test_hidden_fields_are_no_keys():
    assert config_keys(Section) == ["size", "ratio", "mode", "count", "label", "extra", "flag"]
    msg = _error({"section": {"secret": [2.0]}})
    assert "unknown config key 'section.secret'" in msg
    cfg = Root()
    d = config_to_dict(cfg)
    assert "secret" not in d["section"] and "checked" not in d
    assert list(d) == ["name", "seed", "device", "amp", "runtime", "section", "optim"]


def test_config_to_dict_copies_and_round_trips():
    cfg = config_from_dict({"section": {"size": [9, 7], "extra": {"a": [1, 2]}}}, Root)
    d = config_to_dict(cfg)
    d["section"]["size"][0] = 0
    d["section"]["extra"]["a"].append(3)
    assert cfg.section.size == [9, 7] and cfg.section.extra == {"a": [1, 2]}
    back = config_from_dict(config_to_dict(cfg), Root)
    assert config_to_dict(back) == config_to_dict(cfg)


def test_validate_hook_errors_surface_from_loading():
    assert "section.count must be >= 0" in _error({"section": {"count": -1}})
    assert "device 'gpu'" in _error({"device": "gpu"})  # RunConfig.validate, through super()
    assert "optim.epochs" in _error({"optim": {"epochs": 0}})


# --------------------------------------------------------------------------- overrides and files


def test_parse_overrides_nesting():
    assert parse_overrides(["a.b.c=1", "a.b.d=x", "e=[1, 2]", "f="]) == {
        "a": {"b": {"c": 1, "d": "x"}}, "e": [1, 2], "f": ""
    }
    assert parse_overrides(None) == {}


def test_merge_dicts_is_deep_and_does_not_modify():
    base = {"a": {"b": 1, "c": 2}, "d": 3}
    assert merge_dicts(base, {"a": {"b": 5}, "e": 6}) == {"a": {"b": 5, "c": 2}, "d": 3, "e": 6}
    assert base == {"a": {"b": 1, "c": 2}, "d": 3}


def test_overrides_apply_after_the_file_and_later_wins(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("section:\n  count: 1\n  ratio: 0.25\noptim:\n  lr: 0.1\n", encoding="utf-8")
    cfg = load_config(path, ["section.count=7", "optim.lr=0.2", "optim.lr=0.3", "section.size=[16, 8]"], cls=Root)
    assert cfg.section.count == 7 and cfg.section.ratio == 0.25  # sibling kept
    assert cfg.optim.lr == 0.3 and cfg.section.size == [16, 8]
    assert load_config(path, ["section.label=null"], cls=Root).section.label is None


@pytest.mark.parametrize("item", ["optim.lr", "=3", " =3"])
def test_malformed_override(item):
    assert "override" in _error(overrides=[item])


def test_conflicting_overrides():
    assert "conflicts" in _error(overrides=["section=5", "section.count=1"])


def test_missing_file(tmp_path):
    msg = _error(path=tmp_path / "nope.yaml")
    assert "nope.yaml" in msg and "not found" in msg


def test_invalid_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\noptim:\n  lr: [0.1\n  epochs: 3\n", encoding="utf-8")
    msg = _error(path=bad)
    assert "bad.yaml" in msg and "not valid YAML" in msg and "line" in msg


def test_yaml_that_is_not_a_mapping(tmp_path):
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n", encoding="utf-8")
    msg = _error(path=bad)
    assert "list.yaml" in msg and "mapping" in msg


def test_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    assert load_config(path, cls=Root) == load_config(None, cls=Root)


def test_save_then_load_round_trips(tmp_path):
    cfg = load_config(None, ["section.size=[64,32]", "section.label=x", "optim.lr=0.01"], cls=Root)
    out = tmp_path / "run" / "config.yaml"
    save_config(cfg, out)
    assert not [p for p in out.parent.iterdir() if p.name != "config.yaml"]  # no temp files left
    raw = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert list(raw) == ["name", "seed", "device", "amp", "runtime", "section", "optim"]
    assert raw["section"]["size"] == [64, 32] and "secret" not in raw["section"]
    assert load_config(out, cls=Root) == cfg


# --------------------------------------------------------------------------- shared validators


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"epochs": 0}, "optim.epochs"),
        ({"lr": 0.0}, "optim.lr"),
        ({"lr": float("nan")}, "optim.lr"),
        ({"lr": float("inf")}, "optim.lr"),
        ({"warmup_epochs": -1}, "optim.warmup_epochs"),
        ({"accumulate": 0}, "optim.accumulate"),
    ],
)
def test_validate_optim(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_optim(OptimConfig(**kwargs))
    validate_optim(OptimConfig())


@pytest.mark.parametrize("device,ok", [("auto", True), ("cpu", True), ("cuda", True), ("cuda:1", True),
                                       ("gpu", False), ("mps", False)])
def test_validate_device(device, ok):
    if ok:
        validate_device(device)
    else:
        with pytest.raises(ConfigError, match=f"device '{device}'"):
            validate_device(device)


@pytest.mark.parametrize(
    "kwargs,key",
    [({"k1": 0}, "geo.k1"), ({"qe_k": 0}, "geo.qe_k"), ({"lambda_value": 1.5}, "geo.lambda_value"),
     ({"qe_alpha": -1.0}, "geo.qe_alpha"), ({"rerank": "fast"}, "geo.rerank")],
)
def test_validate_eval_rerank_names_the_prefixed_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_eval_rerank(RerankOptions(**kwargs), prefix="geo")
    validate_eval_rerank(RerankOptions(), prefix="geo")
