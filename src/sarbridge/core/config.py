"""Typed experiment configuration: YAML files, ``key=value`` overrides and validation.

A configuration is a tree of dataclasses. :func:`load_config` reads a YAML file, applies
command-line overrides such as ``optim.lr=0.01`` and validates every key and value, raising a
:class:`~sarbridge.core.errors.ConfigError` with the key and the fix on the first problem. Every run
writes its resolved configuration (:func:`save_config`) beside its results.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from sarbridge.core.errors import ConfigError


@dataclass
class SamplerConfig:
    """PK sampling: ``num_ids`` identities x ``num_instances`` images per batch."""

    num_ids: int = 8
    num_instances: int = 4
    balance_modalities: bool = True


@dataclass
class AugmentConfig:
    """Training augmentation (TransOSS defaults)."""

    flip: float = 0.5
    pad: int = 10
    random_erasing: float = 0.5


@dataclass
class PreprocessConfig:
    """How optical and SAR chips become network inputs (the keys of a
    :class:`~sarbridge.data.transforms.PreprocessSpec`; shared by every data config that feeds the
    re-identification model)."""

    image_size: list[int] = field(default_factory=lambda: [256, 128])
    #: a registered SAR scaling (:func:`~sarbridge.data.sar.available_sar_preprocess`: max, percentile, db)
    sar_preprocess: str = "max"
    sar_alpha: float = 5.0
    sar_despeckle: str | None = None
    sar_despeckle_window: int = 7
    gsd_optical: float = 0.75
    gsd_sar: float = 1.0


def validate_preprocess(d: PreprocessConfig, prefix: str = "data") -> None:
    """The SAR scaling is a registered one."""
    from sarbridge.data.sar import available_sar_preprocess

    names = available_sar_preprocess()
    if d.sar_preprocess not in names:
        raise ConfigError(f"config key '{prefix}.sar_preprocess' has value {d.sar_preprocess!r}",
                          f"use one of {', '.join(repr(n) for n in names)}")


@dataclass
class DataConfig(PreprocessConfig):
    """Where the images are and how they become tensors."""

    format: Literal["hoss", "manifest"] = "hoss"
    root: str = ""
    manifest: str | None = None
    val_fraction: float = 0.15
    num_workers: int = 0
    cache: bool = True
    #: on-disk, memory-mapped cache of decoded + preprocessed images (keyed by the preprocessing);
    #: null = none (``cache`` still keeps decoded images in memory)
    cache_dir: str | None = None
    #: augment (flip, pad-crop, random erasing, normalise) on the GPU: auto = when training on CUDA
    gpu_augment: Literal["auto", "always", "never"] = "auto"
    pin_memory: bool = True
    persistent_workers: bool = True
    prefetch_factor: int = 2
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    """Backbone (any timm model name) plus the TransOSS additions."""

    backbone: str = "vit_base_patch16_224"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = None
    dual_patch_embed: bool = True
    modality_embed: bool = True
    modality_embed_scale: float = 3.0
    size_token: bool = True
    drop_path: float = 0.1


@dataclass
class LossConfig:
    """CE on the BNNeck logits + batch-hard triplet on pre-neck features (+ MOS CMAL when weighted)."""

    ce_weight: float = 1.0
    label_smoothing: float = 0.0
    triplet_weight: float = 1.0
    triplet_margin: float | None = None
    cmal_weight: float = 0.0
    cmal_form: Literal["mos", "w2"] = "mos"


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


@dataclass
class RerankOptions:
    """Re-ranking and query-expansion switches shared by the re-ID and localisation evaluators."""

    #: Re-ranking of the test (and validation) rankings: none, k-reciprocal (Zhong et al. 2017)
    #: or gnn (Zhang et al. 2020). ``k1`` / ``k2`` are the neighbourhood sizes of either.
    rerank: Literal["none", "k-reciprocal", "gnn"] = "none"
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    #: Query expansion before ranking: none, aqe (average) or alpha (alpha-weighted).
    query_expansion: Literal["none", "aqe", "alpha"] = "none"
    qe_k: int = 5
    qe_alpha: float = 3.0


@dataclass
class EvalConfig(RerankOptions):
    """Feature extraction and ranking settings (plus the :class:`RerankOptions` switches)."""

    batch_size: int = 64
    max_rank: int = 50
    every: int = 1


@dataclass
class FusionConfig:
    """MOS CDGF: fuse features with those of diffusion-generated cross-modal images at inference.

    ``f_fused = normalize((1 - tau) f + tau * mean_k f(gen_k))`` for images of the modalities in
    ``modalities`` (MOS: optical only, i.e. optical queries in Optical->SAR, the optical gallery in
    SAR->Optical, both in ALL->ALL).
    """

    enabled: bool = False
    opt2sar_checkpoint: str | None = None
    sar2opt_checkpoint: str | None = None
    tau: float = 0.02
    samples: int = 5
    steps: int = 200
    seed: int = 0
    modalities: list[str] = field(default_factory=lambda: ["optical"])
    cache_dir: str | None = None


@dataclass
class AblationConfig:
    """The cumulative MOS ablation: baseline, +denoise, +CMAL, +CDGF (``sarbridge ablate``).

    Each step is a mapping of ``dotted.key: value`` overrides applied on top of the previous step.
    The baseline switches every MOS part off. +CDGF is inference-only: it re-evaluates the +CMAL
    model with feature fusion; when ``fusion.opt2sar_checkpoint`` is unset, an optical->SAR bridge is
    trained first from ``diffusion_config`` on the training split.
    """

    denoise: dict[str, Any] = field(default_factory=lambda: {"data.sar_preprocess": "percentile"})
    cmal: dict[str, Any] = field(default_factory=lambda: {"loss.cmal_weight": 2.0})
    cdgf: dict[str, Any] = field(default_factory=lambda: {"fusion.enabled": True})
    diffusion_config: str | None = None
    diffusion_overrides: list[str] = field(default_factory=list)


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
    a name, a seed, a device, whether mixed precision is allowed, and the runtime options."""

    name: str = "run"
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


@dataclass
class ExperimentConfig(RunConfig):
    """A whole re-identification experiment."""

    name: str = "reid"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)


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
    if dataclasses.is_dataclass(tp):
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
    names = [f.name for f in dataclasses.fields(cls)]
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


def config_from_dict(data: dict[str, Any], cls: type = ExperimentConfig) -> Any:
    """Build and validate a config object from a plain mapping."""
    cfg = _from_dict(cls, data)
    validate(cfg)
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain Python types (YAML/JSON serialisable)."""
    return dataclasses.asdict(cfg)


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """Turn ``["optim.lr=0.01", "model.size_token=false"]`` into a nested mapping.

    Values are parsed as YAML scalars/lists, so ``1e-3``, ``true``, ``[128, 64]`` and ``null`` work.
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
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    path: str | Path | None,
    overrides: list[str] | None = None,
    cls: type = ExperimentConfig,
) -> Any:
    """Load a YAML config, apply ``key=value`` overrides and validate.

    Args:
        path: YAML file, or None to start from the defaults.
        overrides: ``dotted.key=value`` strings applied after the file.
        cls: the root config dataclass.

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


def validate_optim(o: OptimConfig, prefix: str = "optim") -> None:
    """Range checks of an :class:`OptimConfig` shared by every task's config."""
    if o.epochs < 1:
        raise ConfigError(f"{prefix}.epochs must be >= 1, got {o.epochs}")
    if not (o.lr > 0 and math.isfinite(o.lr)):
        raise ConfigError(f"{prefix}.lr must be a positive finite number, got {o.lr}")
    if o.warmup_epochs < 0:
        raise ConfigError(f"{prefix}.warmup_epochs must be >= 0, got {o.warmup_epochs}")
    if o.accumulate < 1:
        raise ConfigError(f"{prefix}.accumulate must be >= 1 (batches per optimiser step), got {o.accumulate}")


def validate_gsd_and_augment(d: Any) -> None:
    """Positive, finite ground sampling distances and augmentation probabilities in [0, 1]."""
    for key in ("gsd_optical", "gsd_sar"):
        v = getattr(d, key)
        if not (v > 0 and math.isfinite(v)):
            raise ConfigError(f"data.{key} must be a positive ground sampling distance in metres, got {v}")
    for key in ("flip", "random_erasing"):
        v = getattr(d.augment, key)
        if not 0.0 <= v <= 1.0:
            raise ConfigError(f"data.augment.{key} is a probability in [0, 1], got {v}")


def validate_device(device: str) -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ConfigError(f"device '{device}' is not known", "use auto, cpu, cuda or cuda:N")


def validate_eval_rerank(e: RerankOptions, prefix: str = "eval") -> None:
    """Re-ranking / query-expansion switches (:class:`RerankOptions`) of an evaluation config."""
    if e.rerank not in ("none", "k-reciprocal", "gnn"):
        raise ConfigError(f"{prefix}.rerank has value {e.rerank!r}", "use one of 'none', 'k-reciprocal', 'gnn'")
    if e.query_expansion not in ("none", "aqe", "alpha"):
        raise ConfigError(f"{prefix}.query_expansion has value {e.query_expansion!r}",
                          "use one of 'none', 'aqe', 'alpha'")
    for key in ("k1", "k2", "qe_k"):
        if getattr(e, key) < 1:
            raise ConfigError(f"{prefix}.{key} must be >= 1, got {getattr(e, key)}")
    if not 0.0 <= e.lambda_value <= 1.0:
        raise ConfigError(f"{prefix}.lambda_value must be in [0, 1], got {e.lambda_value}")
    if not (math.isfinite(e.qe_alpha) and e.qe_alpha >= 0):
        raise ConfigError(f"{prefix}.qe_alpha must be a finite number >= 0, got {e.qe_alpha}")


def validate(cfg: Any) -> None:
    """Range checks that types alone cannot express."""
    if not isinstance(cfg, ExperimentConfig):
        return
    d, m, o = cfg.data, cfg.model, cfg.optim
    if len(d.image_size) != 2 or min(d.image_size) < 8:
        raise ConfigError(f"data.image_size must be [height, width] >= 8, got {d.image_size}")
    if not 0.0 <= d.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {d.val_fraction}")
    if not 0.0 <= d.sar_alpha < 100.0:
        raise ConfigError(f"data.sar_alpha must be a percentile in [0, 100), got {d.sar_alpha}")
    validate_preprocess(d)
    if d.sampler.num_ids < 2 or d.sampler.num_instances < 1:
        raise ConfigError(
            "data.sampler needs num_ids >= 2 and num_instances >= 1 for triplet mining",
            "e.g. num_ids: 8, num_instances: 4",
        )
    validate_optim(o)
    if not 0.0 <= m.drop_path < 1.0:
        raise ConfigError(f"model.drop_path must be in [0, 1), got {m.drop_path}")
    for key in ("ce_weight", "triplet_weight", "label_smoothing", "cmal_weight"):
        v = getattr(cfg.loss, key)
        if not (v >= 0 and math.isfinite(v)):
            raise ConfigError(f"loss.{key} must be a finite number >= 0, got {v}")
    validate_gsd_and_augment(d)
    if cfg.eval.batch_size < 1 or cfg.eval.max_rank < 1 or cfg.eval.every < 1:
        raise ConfigError("eval.batch_size, eval.max_rank and eval.every must be >= 1")
    validate_eval_rerank(cfg.eval)
    if d.sar_despeckle_window < 3 or d.sar_despeckle_window % 2 == 0:
        raise ConfigError(f"data.sar_despeckle_window must be odd and >= 3, got {d.sar_despeckle_window}")
    f = cfg.fusion
    if not 0.0 <= f.tau <= 1.0:
        raise ConfigError(f"fusion.tau must be in [0, 1], got {f.tau}")
    if f.samples < 1 or f.steps < 1:
        raise ConfigError("fusion.samples and fusion.steps must be >= 1")
    bad = [m for m in f.modalities if m not in ("optical", "sar")]
    if bad:
        raise ConfigError(f"fusion.modalities has unknown modality {bad[0]!r}", "use optical and/or sar")
    if d.num_workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0, got {d.num_workers}")
    if d.prefetch_factor < 1:
        raise ConfigError(f"data.prefetch_factor must be >= 1, got {d.prefetch_factor}")
    validate_device(cfg.device)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    from sarbridge.core.utils import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
