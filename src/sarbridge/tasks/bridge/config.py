"""Typed configuration of a bridge-training run (``sarbridge diffusion-train``, ``configs/bbdm_demo.yaml``).

Same YAML + ``key=value`` override machinery as every task (:func:`sarbridge.core.config.load_config`).
The ``model`` and ``bridge`` sections are the denoiser's :class:`~sarbridge.tasks.bridge.model.UNetConfig`
and the schedule's :class:`~sarbridge.tasks.bridge.model.BridgeConfig`; ``data``
(:class:`PairDataConfig`) names the pairs and the preprocessing, whose spec
(:meth:`PairDataConfig.spec`) is the :class:`~sarbridge.data.transforms.PreprocessSpec` at the
model resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sarbridge.core.config import (
    OptimConfig,
    RunConfig,
    load_config,
    validate_device,
    validate_optim,
)
from sarbridge.core.errors import ConfigError
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.tasks.bridge.model import (
    BridgeConfig,
    UNetConfig,
    validate_bridge_config,
    validate_unet_config,
)

__all__ = [
    "DiffusionConfig",
    "DiffusionEvalConfig",
    "DiffusionTrainConfig",
    "EMAConfig",
    "PairDataConfig",
    "load_diffusion_config",
    "validate_diffusion_config",
]


@dataclass
class PairDataConfig:
    """Where the pairs come from and how images are prepared (``resolution`` is the
    ``image_size`` of the :class:`~sarbridge.data.transforms.PreprocessSpec`, :meth:`spec`)."""

    #: ``os``: the OS-dataset layout (``train/opt<N>.png`` + ``train/sar<N>.png``; training pairs only)
    format: Literal["auto", "hoss", "synthetic", "folder", "os"] = "auto"
    root: str = ""
    resolution: list[int] = field(default_factory=lambda: [256, 128])
    #: a registered SAR scaling (:func:`~sarbridge.data.sar.available_sar_preprocess`)
    sar_preprocess: str = "max"
    sar_alpha: float = 5.0
    gsd_optical: float = 0.75
    gsd_sar: float = 1.0
    max_pairs_per_id: int | None = None
    val_fraction: float = 0.1
    hflip: float = 0.5
    vflip: float = 0.0
    cache: bool = True
    num_workers: int = 0

    def spec(self) -> PreprocessSpec:
        """The preprocessing of the pairs (``image_size`` = the model resolution)."""
        return PreprocessSpec(image_size=list(self.resolution), sar_preprocess=self.sar_preprocess,
                              sar_alpha=self.sar_alpha, gsd_optical=self.gsd_optical, gsd_sar=self.gsd_sar)

    def validate(self, prefix: str = "data") -> None:
        """Range checks (types are checked by the config loader).

        Raises:
            ConfigError: naming the key.
        """
        spec = self.spec()
        spec.validate_size(prefix, key="resolution", min_size=4)
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"{prefix}.val_fraction must be in [0, 1), got {self.val_fraction}")
        for key in ("hflip", "vflip"):
            v = getattr(self, key)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{prefix}.{key} is a probability in [0, 1], got {v}")
        if self.max_pairs_per_id is not None and self.max_pairs_per_id < 1:
            raise ConfigError(f"{prefix}.max_pairs_per_id must be >= 1 or null, got {self.max_pairs_per_id}")
        spec.validate_conversion(prefix)
        if self.num_workers < 0:
            raise ConfigError(f"{prefix}.num_workers must be >= 0, got {self.num_workers}")


@dataclass
class EMAConfig:
    """Exponential moving average of the weights (used for validation and sampling).

    ``warmup`` uses ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so that short runs are
    not dominated by the initial weights.
    """

    enabled: bool = True
    decay: float = 0.995
    update_every: int = 1
    start_step: int = 0
    warmup: bool = True


@dataclass
class DiffusionTrainConfig:
    """Batches: ``steps_per_epoch`` batches drawn at random per epoch (None: one pass over the pairs)."""

    batch_size: int = 8
    steps_per_epoch: int | None = None


@dataclass
class DiffusionEvalConfig:
    """Validation on held-out pairs: L1 of the objective (fixed t and noise) and, optionally, the
    PSNR of a few-step sample (``sample_images: 0`` switches it off)."""

    every: int = 1
    max_pairs: int = 64
    batch_size: int = 16
    sample_images: int = 4
    sample_steps: int = 10
    select: Literal["loss", "psnr"] = "loss"


def _diffusion_optim() -> OptimConfig:
    # BBDM: Adam, lr 1e-4, no weight decay (AdamW with weight_decay 0 is Adam); constant lr.
    return OptimConfig(name="adamw", lr=1e-4, weight_decay=0.0, warmup_epochs=0, min_lr_factor=1.0, epochs=10)


@dataclass
class DiffusionConfig(RunConfig):
    """A whole bridge-training experiment (``configs/bbdm_demo.yaml``)."""

    name: str = "bbdm"
    direction: Literal["opt2sar", "sar2opt"] = "opt2sar"
    data: PairDataConfig = field(default_factory=PairDataConfig)
    model: UNetConfig = field(default_factory=UNetConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    optim: OptimConfig = field(default_factory=_diffusion_optim)
    ema: EMAConfig = field(default_factory=EMAConfig)
    train: DiffusionTrainConfig = field(default_factory=DiffusionTrainConfig)
    eval: DiffusionEvalConfig = field(default_factory=DiffusionEvalConfig)

    def validate(self) -> None:
        """Range checks (:func:`validate_diffusion_config`)."""
        validate_diffusion_config(self)


def validate_diffusion_config(cfg: DiffusionConfig) -> None:
    """Range checks beyond types.

    Raises:
        ConfigError: naming the key.
    """
    cfg.data.validate("data")
    validate_unet_config(cfg.model, cfg.data.resolution)
    validate_bridge_config(cfg.bridge)
    validate_optim(cfg.optim)
    if not 0.0 <= cfg.ema.decay < 1.0:
        raise ConfigError(f"ema.decay must be in [0, 1), got {cfg.ema.decay}")
    if cfg.ema.update_every < 1 or cfg.ema.start_step < 0:
        raise ConfigError("ema.update_every must be >= 1 and ema.start_step >= 0")
    if cfg.train.batch_size < 1:
        raise ConfigError(f"train.batch_size must be >= 1, got {cfg.train.batch_size}")
    if cfg.train.steps_per_epoch is not None and cfg.train.steps_per_epoch < 1:
        raise ConfigError(f"train.steps_per_epoch must be >= 1 or null, got {cfg.train.steps_per_epoch}")
    e = cfg.eval
    if e.every < 1 or e.batch_size < 1 or e.max_pairs < 0 or e.sample_images < 0 or e.sample_steps < 1:
        raise ConfigError("eval.every, eval.batch_size and eval.sample_steps must be >= 1; "
                          "eval.max_pairs and eval.sample_images >= 0")
    if e.select == "psnr" and e.sample_images == 0:
        raise ConfigError("eval.select is 'psnr' but eval.sample_images is 0", "set eval.sample_images > 0")
    validate_device(cfg.device)


def load_diffusion_config(path: str | Path | None, overrides: list[str] | None = None) -> DiffusionConfig:
    """Load and validate a diffusion YAML config with ``key=value`` overrides.

    Raises:
        ConfigError: the file is missing or malformed, a key is unknown or a value invalid.
    """
    return load_config(path, overrides, cls=DiffusionConfig)
