"""Typed configuration of a ship re-identification experiment (``sarbridge train``, ``evaluate``, ``ablate``).

Same YAML + ``key=value`` override machinery as every task (:func:`sarbridge.core.config.load_config`);
defaults are the TransOSS settings, ``configs/demo.yaml`` is the CPU size. The ``data`` section is
a :class:`~sarbridge.data.transforms.PreprocessSpec` (its keys and checks) plus where the images are
and how they are batched. ``model`` (:class:`ModelConfig`) is also the backbone section of a
pretraining config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sarbridge.core.config import (
    OptimConfig,
    RerankOptions,
    RunConfig,
    load_config,
    validate_device,
    validate_eval_rerank,
    validate_optim,
)
from sarbridge.core.errors import ConfigError
from sarbridge.data.transforms import PreprocessSpec

__all__ = [
    "AblationConfig",
    "AugmentConfig",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "FusionConfig",
    "LossConfig",
    "ModelConfig",
    "SamplerConfig",
    "load_reid_config",
]


@dataclass
class SamplerConfig:
    """PK sampling: ``num_ids`` identities x ``num_instances`` images per batch."""

    num_ids: int = 8
    num_instances: int = 4
    balance_modalities: bool = True

    def validate(self, prefix: str = "data.sampler") -> None:
        """Enough identities and images per batch for triplet mining.

        Raises:
            ConfigError: naming the section.
        """
        if self.num_ids < 2 or self.num_instances < 1:
            raise ConfigError(f"{prefix} needs num_ids >= 2 and num_instances >= 1 for triplet mining",
                              "e.g. num_ids: 8, num_instances: 4")


@dataclass
class AugmentConfig:
    """Training augmentation (TransOSS defaults)."""

    flip: float = 0.5
    pad: int = 10
    random_erasing: float = 0.5

    def validate(self, prefix: str = "data.augment") -> None:
        """Probabilities in [0, 1] and a padding >= 0.

        Raises:
            ConfigError: naming the key.
        """
        for key in ("flip", "random_erasing"):
            v = getattr(self, key)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{prefix}.{key} is a probability in [0, 1], got {v}")
        if self.pad < 0:
            raise ConfigError(f"{prefix}.pad must be >= 0 pixels, got {self.pad}")


@dataclass
class DataConfig(PreprocessSpec):
    """Where the images are and how they become tensors (the preprocessing keys are those of
    :class:`~sarbridge.data.transforms.PreprocessSpec`; :meth:`spec` gives the spec alone)."""

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

    def validate(self, prefix: str = "data") -> None:
        """The preprocessing checks plus the section's own ranges.

        Raises:
            ConfigError: naming the key.
        """
        super().validate(prefix)
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"{prefix}.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.num_workers < 0:
            raise ConfigError(f"{prefix}.num_workers must be >= 0, got {self.num_workers}")
        if self.prefetch_factor < 1:
            raise ConfigError(f"{prefix}.prefetch_factor must be >= 1, got {self.prefetch_factor}")
        self.sampler.validate(f"{prefix}.sampler")
        self.augment.validate(f"{prefix}.augment")


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
    #: retrieval embeddings minus the BNNeck's running mean before L2 normalisation (docs/reid.md,
    #: "Scores"); false: the raw pre-neck feature, as TransOSS (and sarbridge before) ranked
    centre_features: bool = True

    def validate(self, prefix: str = "model") -> None:
        """Raises ConfigError for a drop-path rate outside [0, 1)."""
        if not 0.0 <= self.drop_path < 1.0:
            raise ConfigError(f"{prefix}.drop_path must be in [0, 1), got {self.drop_path}")


@dataclass
class LossConfig:
    """CE on the BNNeck logits + batch-hard triplet on pre-neck features (+ MOS CMAL when weighted)."""

    ce_weight: float = 1.0
    label_smoothing: float = 0.0
    triplet_weight: float = 1.0
    triplet_margin: float | None = None
    cmal_weight: float = 0.0
    cmal_form: Literal["mos", "w2"] = "mos"

    def validate(self, prefix: str = "loss") -> None:
        """Raises ConfigError for a negative or non-finite weight."""
        for key in ("ce_weight", "triplet_weight", "label_smoothing", "cmal_weight"):
            v = getattr(self, key)
            if not (v >= 0 and math.isfinite(v)):
                raise ConfigError(f"{prefix}.{key} must be a finite number >= 0, got {v}")


@dataclass
class EvalConfig(RerankOptions):
    """Feature extraction and ranking settings (plus the :class:`~sarbridge.core.config.RerankOptions`
    switches)."""

    batch_size: int = 64
    max_rank: int = 50
    every: int = 1

    def validate(self, prefix: str = "eval") -> None:
        """Raises ConfigError for sizes below 1 or bad re-ranking switches."""
        if self.batch_size < 1 or self.max_rank < 1 or self.every < 1:
            raise ConfigError(f"{prefix}.batch_size, {prefix}.max_rank and {prefix}.every must be >= 1")
        validate_eval_rerank(self, prefix)


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

    def validate(self, prefix: str = "fusion") -> None:
        """Raises ConfigError for tau outside [0, 1], counts below 1 or an unknown modality."""
        if not 0.0 <= self.tau <= 1.0:
            raise ConfigError(f"{prefix}.tau must be in [0, 1], got {self.tau}")
        if self.samples < 1 or self.steps < 1:
            raise ConfigError(f"{prefix}.samples and {prefix}.steps must be >= 1")
        bad = [m for m in self.modalities if m not in ("optical", "sar")]
        if bad:
            raise ConfigError(f"{prefix}.modalities has unknown modality {bad[0]!r}", "use optical and/or sar")


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

    def validate(self) -> None:
        """Range checks that types alone cannot express, section by section.

        Raises:
            ConfigError: naming the key and, where useful, the fix.
        """
        self.data.validate("data")
        self.model.validate("model")
        self.loss.validate("loss")
        validate_optim(self.optim)
        self.eval.validate("eval")
        self.fusion.validate("fusion")
        validate_device(self.device)


def load_reid_config(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load and validate a re-identification YAML (``configs/demo.yaml``) with ``key=value`` overrides.

    Raises:
        ConfigError: the file is missing or malformed, a key is unknown or a value invalid.
    """
    return load_config(path, overrides, cls=ExperimentConfig)
