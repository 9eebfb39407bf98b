"""Typed run configuration: YAML files, ``key=value`` overrides and validation.

A configuration is a tree of dataclasses. :func:`load_config` reads a YAML file, applies
command-line overrides such as ``optim.lr=0.01``, checks every key and value against the
dataclasses' annotations and then runs the root class's own range checks (its ``validate()``
method), raising a :class:`~sarbridge.core.errors.ConfigError` with the key and the fix on the first
problem. Every run writes its resolved configuration (:func:`save_config`) beside its results.

This module holds the machinery and the sections every run shares (:class:`RunConfig`,
:class:`RuntimeConfig`, :class:`OptimConfig`, :class:`RerankOptions`); each task declares its own
root config (``sarbridge.tasks.<task>.config``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from sarbridge.core.errors import ConfigError

__all__ = [
    "NOT_A_KEY",
    "OptimConfig",
    "RerankOptions",
    "RunConfig",
    "RuntimeConfig",
    "config_from_dict",
    "config_keys",
    "config_to_dict",
    "load_config",
    "merge_dicts",
    "parse_overrides",
    "save_config",
    "validate_device",
    "validate_eval_rerank",
    "validate_optim",
]

C = TypeVar("C")

#: Field metadata marking a dataclass field that is no config key: YAML and ``--set`` cannot set
#: it and :func:`config_to_dict` leaves it out (``field(..., metadata={NOT_A_KEY: True})``), e.g.
#: the normalisation constants of a preprocessing spec that a data section inherits.
NOT_A_KEY = "sarbridge.config.not_a_key"


# --------------------------------------------------------------------------------------------
# sections every run shares
# --------------------------------------------------------------------------------------------


@dataclass
class OptimConfig:
    """SGD/AdamW with linear warm-up then cosine decay (per epoch)."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 5e-4
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: int = 5
    warmup_factor: float = 0.01
    min_lr_factor: float = 0.002
    epochs: int = 60
    grad_clip: float | None = None
    #: gradient accumulation: optimiser step every this many batches (effective batch x this)
    accumulate: int = 1
    #: stop after this many optimiser steps in total, a cap for trials; the LR schedule still
    #: follows optim.epochs (the capped epoch is validated and saved as the last; None = no cap)
    max_steps: int | None = None


RERANK_METHODS: tuple[str, ...] = ("none", "k-reciprocal", "gnn", "gnn-features")


@dataclass
class RerankOptions:
    """Re-ranking and query-expansion switches shared by the re-ID and localisation evaluators."""

    #: Re-ranking of the test (and validation) rankings: none; k-reciprocal (Zhong et al. 2017,
    #: ``k1``/``k2``/``lambda_value``, paper defaults 20/6/0.3); gnn = the published GNN re-ranking
    #: (Zhang et al. 2020: adjacency propagation, ``gnn_k1``/``gnn_k2`` = the paper's 26/7,
    #: ``gnn_layers`` = 2 as its code); gnn-features = the same propagation on feature vectors,
    #: memory O(N * (k1 + D)) instead of O(N^2), for galleries too large for the published form.
    rerank: Literal["none", "k-reciprocal", "gnn", "gnn-features"] = "none"
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    gnn_k1: int = 26
    gnn_k2: int = 7
    gnn_layers: int = 2
    #: Query expansion before ranking: none, aqe (average) or alpha (alpha-weighted).
    query_expansion: Literal["none", "aqe", "alpha"] = "none"
    qe_k: int = 5
    qe_alpha: float = 3.0


def rerank_arguments(opts: RerankOptions) -> dict[str, Any]:
    """Every re-ranking / query-expansion switch of ``opts`` as keyword arguments for the evaluators."""
    return {f.name: getattr(opts, f.name) for f in fields(RerankOptions)}


@dataclass
class RuntimeConfig:
    """How a training loop uses the hardware (shared by every task's config).

    ``precision``: ``auto`` = bf16 autocast on CUDA where supported, else fp16 with loss scaling,
    fp32 on CPU (``amp: false`` forces fp32). ``channels_last``: ``auto`` = for convolutional
    backbones on CUDA. ``compile``: wrap the model in ``torch.compile`` (``compile_mode``).
    """

    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: Literal["auto", "always", "never"] = "auto"
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    cudnn_benchmark: bool = True
    #: TensorFloat-32 matmuls/convolutions for what runs in fp32 on CUDA (Ampere and later)
    tf32: bool = True


@dataclass
class RunConfig:
    """What every run config has (re-identification, localisation, pretraining, diffusion):
    a name, a seed, a device, whether mixed precision is allowed, and the runtime options.

    A task's root config extends it and overrides :meth:`validate` with its range checks;
    :func:`config_from_dict` and :func:`load_config` call it.
    """

    name: str = "run"
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def validate(self) -> None:
        """Range checks that types alone cannot express (here: the device).

        Raises:
            ConfigError: naming the key.
        """
        validate_device(self.device)


# --------------------------------------------------------------------------------------------
# shared validators
# --------------------------------------------------------------------------------------------


def validate_optim(o: OptimConfig, prefix: str = "optim") -> None:
    """Range checks of an :class:`OptimConfig` shared by every task's config.

    Raises:
        ConfigError: naming the key.
    """
    if o.epochs < 1:
        raise ConfigError(f"{prefix}.epochs must be >= 1, got {o.epochs}")
    if not (o.lr > 0 and math.isfinite(o.lr)):
        raise ConfigError(f"{prefix}.lr must be a positive finite number, got {o.lr}")
    if o.warmup_epochs < 0:
        raise ConfigError(f"{prefix}.warmup_epochs must be >= 0, got {o.warmup_epochs}")
    if o.accumulate < 1:
        raise ConfigError(f"{prefix}.accumulate must be >= 1 (batches per optimiser step), got {o.accumulate}")
    if o.max_steps is not None and o.max_steps < 1:
        raise ConfigError(f"{prefix}.max_steps must be >= 1 (optimiser steps in total), got {o.max_steps}",
                          f"set {prefix}.max_steps to a positive number, or null for no cap")


def validate_device(device: str) -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        ConfigError: any other device name.
    """
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ConfigError(f"device '{device}' is not known", "use auto, cpu, cuda or cuda:N")


def validate_eval_rerank(e: RerankOptions, prefix: str = "eval") -> None:
    """Re-ranking / query-expansion switches (:class:`RerankOptions`) of an evaluation config.

    Raises:
        ConfigError: naming the key.
    """
    if e.rerank not in RERANK_METHODS:
        raise ConfigError(f"{prefix}.rerank has value {e.rerank!r}",
                          "use one of " + ", ".join(f"'{m}'" for m in RERANK_METHODS))
    if e.query_expansion not in ("none", "aqe", "alpha"):
        raise ConfigError(f"{prefix}.query_expansion has value {e.query_expansion!r}",
                          "use one of 'none', 'aqe', 'alpha'")
    for key in ("k1", "k2", "qe_k", "gnn_k1", "gnn_k2", "gnn_layers"):
        if getattr(e, key) < 1:
            raise ConfigError(f"{prefix}.{key} must be >= 1, got {getattr(e, key)}")
    if not 0.0 <= e.lambda_value <= 1.0:
        raise ConfigError(f"{prefix}.lambda_value must be in [0, 1], got {e.lambda_value}")
    if not (math.isfinite(e.qe_alpha) and e.qe_alpha >= 0):
        raise ConfigError(f"{prefix}.qe_alpha must be a finite number >= 0, got {e.qe_alpha}")


# --------------------------------------------------------------------------------------------
# machinery
# --------------------------------------------------------------------------------------------


def config_keys(cls: type) -> list[str]:
    """The config keys of a config dataclass: its fields, less those marked :data:`NOT_A_KEY`."""
    return [f.name for f in dataclasses.fields(cls) if not f.metadata.get(NOT_A_KEY)]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``, converting where it is unambiguous."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(
                f"config key '{key}' has value {value!r}",
                f"use one of {', '.join(repr(c) for c in choices)}",
            )
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}", "write [a, b]")
        (item_tp,) = get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}", "write {k: v}")
        return dict(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, key)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}", "write true/false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be an integer, got {value!r}", "write e.g. 8")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}' must be a number, got {value!r}", "write e.g. 0.01")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}' must be a string, got {value!r}", "quote the value")
    raise ConfigError(f"config key '{key}' has unsupported type {_type_name(tp)}")


def _from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        where = f"section '{prefix}'" if prefix else "the configuration"
        raise ConfigError(f"{where} must be a mapping, got {data!r}", "indent keys under it")
    hints = typing.get_type_hints(cls)
    names = config_keys(cls)
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean '{prefix + '.' if prefix else ''}{close[0]}'?" if close else (
                f"valid keys here: {', '.join(names)}"
            )
            raise ConfigError(f"unknown config key '{full}'", hint)
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any], cls: type[C]) -> C:
    """Build a config object of class ``cls`` from a plain mapping and validate it.

    Args:
        data: nested mapping of config keys (what :func:`config_to_dict` returns).
        cls: the root config dataclass; its ``validate()`` method, when it has one, runs last.

    Returns:
        The validated config object.

    Raises:
        ConfigError: a key is unknown or a value invalid.
    """
    cfg = _from_dict(cls, data)
    check = getattr(cfg, "validate", None)
    if callable(check):
        check()
    return cfg


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain Python types (YAML/JSON serialisable): every config key, in field order
    (fields marked :data:`NOT_A_KEY` are left out); lists and mappings are copies."""
    return {name: _plain(getattr(cfg, name)) for name in config_keys(type(cfg))}


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """Turn ``["optim.lr=0.01", "model.size_token=false"]`` into a nested mapping.

    Values are parsed as YAML scalars/lists, so ``1e-3``, ``true``, ``[128, 64]`` and ``null`` work.

    Raises:
        ConfigError: an item is not ``key=value`` or two items conflict.
    """
    nested: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not key=value", "write e.g. --set optim.lr=0.01")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override '{item}' has an empty key", "write e.g. --set optim.lr=0.01")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with another override of '{part}'")
        node[parts[-1]] = value
    return nested


def merge_dicts(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``update``, nested mappings merged key by key (neither is modified)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None, overrides: list[str] | None = None, *, cls: type[C]) -> C:
    """Load a YAML config, apply ``key=value`` overrides and validate.

    Args:
        path: YAML file, or None to start from the defaults.
        overrides: ``dotted.key=value`` strings applied after the file.
        cls: the root config dataclass (e.g. a task's ``ExperimentConfig``).

    Returns:
        The validated config object.

    Raises:
        ConfigError: the file is missing or malformed, a key is unknown or a value invalid.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file '{p}' not found", "pass an existing YAML file to --config")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"config file '{p}' is not valid YAML{where}", "fix the syntax") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file '{p}' must contain a mapping of keys", "see configs/demo.yaml")
        data = loaded or {}
    data = merge_dicts(data, parse_overrides(overrides))
    return config_from_dict(data, cls)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config (:func:`config_to_dict`) as YAML, atomically."""
    from sarbridge.core.utils import atomic_write_text  # noqa: PLC0415 - lazy: pulls in torch

    atomic_write_text(Path(path), yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
