"""Typed configuration of a contrastive optical/SAR pretraining run (``sarbridge pretrain``).

Same YAML + ``key=value`` override machinery as every task (:func:`sarbridge.core.config.load_config`);
``configs/pretrain_demo.yaml`` is the CPU size. The ``model`` section is the re-identification
:class:`~sarbridge.tasks.reid.config.ModelConfig` and the preprocessing keys of ``data`` are those
of :class:`~sarbridge.data.transforms.PreprocessSpec`, so a pretrained backbone is built, and sees
its images, exactly as the re-identification model that fine-tunes it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
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
from sarbridge.tasks.reid.config import (
    AugmentConfig,
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    ModelConfig,
)

__all__ = [
    "ContrastiveConfig",
    "PretrainConfig",
    "PretrainDataConfig",
    "load_pretrain_config",
    "reid_view",
    "validate_pretrain",
]


@dataclass
class PretrainDataConfig(PreprocessSpec):
    """Which pairs, and how they become tensors (the :class:`~sarbridge.data.transforms.PreprocessSpec`
    keys mean what they mean in ``data`` of a re-identification config).

    ``size_features`` is a config key here (the size-token input of a pair: ``chip`` size, ``zero``
    or ``auto``) and hides the spec method of that name: size features come from :meth:`spec`.
    """

    image_size: list[int] = field(default_factory=lambda: [128, 64])
    layout: Literal["sen12", "qxs", "manifest", "bigearthnet", "synthetic", "os"] = "synthetic"
    root: str = ""
    include_test: bool = False
    size_features: Literal["auto", "chip", "zero"] = "auto"  # type: ignore[assignment]  # a key, see above
    sar_mode: Literal["db", "linear"] = "db"
    sar_db_range: list[float] = field(default_factory=lambda: [-25.0, 0.0])
    rgb_percentiles: list[float] = field(default_factory=lambda: [2.0, 98.0])
    val_fraction: float = 0.15
    batch_size: int = 64
    num_workers: int = 0
    cache: bool = True
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(flip=0.5, pad=6, random_erasing=0.0))

    def validate(self, prefix: str = "data") -> None:
        """The preprocessing checks plus the section's own ranges.

        Raises:
            ConfigError: naming the key.
        """
        super().validate(prefix)
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"{prefix}.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.batch_size < 2:
            raise ConfigError(f"{prefix}.batch_size must be >= 2 (the other pairs are the negatives), "
                              f"got {self.batch_size}")
        if self.num_workers < 0:
            raise ConfigError(f"{prefix}.num_workers must be >= 0, got {self.num_workers}")
        lo_hi = self.sar_db_range
        if len(lo_hi) != 2 or not lo_hi[0] < lo_hi[1]:
            raise ConfigError(f"{prefix}.sar_db_range must be [low, high] with low < high, got {lo_hi}")
        p = self.rgb_percentiles
        if len(p) != 2 or not 0.0 <= p[0] < p[1] <= 100.0:
            raise ConfigError(f"{prefix}.rgb_percentiles must be [low, high] in [0, 100], low < high, got {p}")
        self.augment.validate(f"{prefix}.augment")


@dataclass
class ContrastiveConfig:
    """The CLIP loss: initial temperature, learned or fixed, scale clamp.

    ``gather_negatives`` (only matters under torchrun): contrast every pair against the batches of
    all processes (features all-gathered with gradients) instead of its own process's batch.
    """

    temperature: float = 0.07
    learn_temperature: bool = True
    max_scale: float = 100.0
    mask_same_group: bool = True
    gather_negatives: bool = False

    def validate(self, prefix: str = "loss") -> None:
        """Raises ConfigError for a temperature or scale clamp that is not positive."""
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ConfigError(f"{prefix}.temperature must be > 0, got {self.temperature}")
        if not self.max_scale > 0:
            raise ConfigError(f"{prefix}.max_scale must be > 0, got {self.max_scale}")


@dataclass
class PretrainConfig(RunConfig):
    """A whole pretraining run; ``model`` is the re-identification ``ModelConfig``."""

    name: str = "pretrain"
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        """Range checks (:func:`validate_pretrain`)."""
        validate_pretrain(self)


def validate_pretrain(cfg: PretrainConfig) -> None:
    """Range checks of a :class:`PretrainConfig` (types are checked by the loader).

    Raises:
        ConfigError: naming the key.
    """
    cfg.data.validate("data")
    cfg.model.validate("model")
    cfg.loss.validate("loss")
    validate_optim(cfg.optim)
    cfg.eval.validate("eval")
    validate_device(cfg.device)


def load_pretrain_config(path: str | Path | None, overrides: list[str] | None = None) -> PretrainConfig:
    """Load and validate a pretraining YAML (``configs/pretrain_demo.yaml``) with overrides.

    Raises:
        ConfigError: the file is missing or malformed, a key is unknown or a value invalid.
    """
    return load_config(path, overrides, cls=PretrainConfig)


def reid_view(cfg: PretrainConfig) -> ExperimentConfig:
    """The re-identification config with this run's model and preprocessing keys (every key a
    ``DataConfig`` shares with ``PretrainDataConfig`` is copied; the others keep their defaults).
    The architecture signature of a pretraining checkpoint is derived from it by the re-ID code
    itself, so that ``sarbridge train`` can check a pretrained backbone fits its model."""
    data = DataConfig()
    for f in dataclasses.fields(DataConfig):
        if f.name not in ("root", "augment", "val_fraction", "num_workers", "cache") and hasattr(cfg.data, f.name):
            setattr(data, f.name, copy.deepcopy(getattr(cfg.data, f.name)))
    return ExperimentConfig(name=cfg.name, seed=cfg.seed, device=cfg.device, amp=cfg.amp, data=data,
                            model=copy.deepcopy(cfg.model))
