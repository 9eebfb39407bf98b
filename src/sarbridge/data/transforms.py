"""From raw arrays to network inputs: per-modality conversion, size features and augmentation.

:class:`PreprocessSpec` is the one description of how optical and SAR images become network
inputs. It travels inside every checkpoint (``"preprocess"``: :meth:`PreprocessSpec.to_dict`), so a
trained model always sees its images prepared the same way at training, evaluation and in the
Python API; and the ``data`` section of every task config inherits it, so its keys
(``data.image_size``, ``data.sar_preprocess``, ...) and their checks (:meth:`PreprocessSpec.validate`)
are written once.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from sarbridge.core.errors import ConfigError
from sarbridge.data.despeckle import available_despeckle, despeckle
from sarbridge.data.records import OPTICAL, SAR, parse_modality
from sarbridge.data.sar import (
    available_sar_preprocess,
    get_sar_preprocess,
    optical_to_uint8_rgb,
)

# HOSS normalisation of the ship-size token (TransOSS): metres / scale, centred and standardised.
SIZE_WIDTH_SCALE, SIZE_WIDTH_MEAN = 93.0, 0.434
SIZE_HEIGHT_SCALE, SIZE_HEIGHT_MEAN = 427.0, 0.461
SIZE_STD = 0.031


@dataclass
class PreprocessSpec:
    """How an image of each modality becomes a normalised tensor.

    A task config's ``data`` section extends this class (redeclaring a field only to change its
    default). ``mean`` and ``std`` normalise every modality after scaling to [0, 1] (0.5/0.5 as in
    TransOSS/MOS; CMPC uses ImageNet's ``[0.485, 0.456, 0.406]`` / ``[0.229, 0.224, 0.225]``).
    :meth:`spec` gives the plain spec of such a section, the object that checkpoints, caches and
    datasets use.
    """

    image_size: list[int] = field(default_factory=lambda: [256, 128])
    #: a registered SAR scaling (:func:`~sarbridge.data.sar.available_sar_preprocess`: max, percentile, db)
    sar_preprocess: str = "max"
    sar_alpha: float = 5.0
    #: a registered speckle filter (:func:`~sarbridge.data.despeckle.available_despeckle`) or null
    sar_despeckle: str | None = None
    sar_despeckle_window: int = 7
    gsd_optical: float = 0.75
    gsd_sar: float = 1.0
    #: per-channel mean subtracted after scaling to [0, 1]
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    #: per-channel standard deviation divided by after the mean
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])

    def spec(self) -> PreprocessSpec:
        """The preprocessing alone: a plain :class:`PreprocessSpec` copy (of a config's data section too)."""
        return PreprocessSpec(**self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The spec's fields (only those of :class:`PreprocessSpec`) as plain, copied values: the
        ``"preprocess"`` entry of a checkpoint."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(PreprocessSpec)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        """The spec :meth:`to_dict` wrote (e.g. a checkpoint's ``"preprocess"``).

        Raises:
            TypeError: ``data`` has a key that is no field.
        """
        return cls(**data)

    def validate(self, prefix: str = "data") -> None:
        """Range checks of every preprocessing key (:meth:`validate_size`, :meth:`validate_conversion`).

        Raises:
            ConfigError: one line naming ``prefix.key`` and, where useful, the choices.
        """
        self.validate_size(prefix)
        self.validate_conversion(prefix)

    def validate_size(self, prefix: str = "data", key: str = "image_size", min_size: int = 8) -> None:
        """``image_size`` is ``[height, width]``, both at least ``min_size`` (named ``prefix.key``).

        Raises:
            ConfigError: naming the key.
        """
        size = self.image_size
        if len(size) != 2 or min(size) < min_size:
            raise ConfigError(f"{prefix}.{key} must be [height, width] >= {min_size}, got {size}")

    def validate_conversion(self, prefix: str = "data") -> None:
        """The per-modality conversion: a registered SAR scaling and speckle filter, a percentile
        ``sar_alpha``, an odd filter window, positive ground sampling distances, 3-channel
        normalisation.

        Raises:
            ConfigError: one line naming ``prefix.key`` and, where useful, the choices.
        """
        names = available_sar_preprocess()
        if self.sar_preprocess not in names:
            raise ConfigError(f"config key '{prefix}.sar_preprocess' has value {self.sar_preprocess!r}",
                              f"use one of {', '.join(repr(n) for n in names)}")
        if not 0.0 <= self.sar_alpha < 100.0:
            raise ConfigError(f"{prefix}.sar_alpha must be a percentile in [0, 100), got {self.sar_alpha}")
        filters = available_despeckle()
        if self.sar_despeckle is not None and self.sar_despeckle not in filters:
            raise ConfigError(f"config key '{prefix}.sar_despeckle' has value {self.sar_despeckle!r}",
                              f"use null or one of {', '.join(repr(n) for n in filters)}")
        w = self.sar_despeckle_window
        if w < 3 or w % 2 == 0:
            raise ConfigError(f"{prefix}.sar_despeckle_window must be odd and >= 3, got {w}")
        for key in ("gsd_optical", "gsd_sar"):
            v = getattr(self, key)
            if not (v > 0 and math.isfinite(v)):
                raise ConfigError(f"{prefix}.{key} must be a positive ground sampling distance in metres, got {v}")
        for key, low in (("mean", -math.inf), ("std", 0.0)):
            v = getattr(self, key)
            if len(v) != 3 or not all(isinstance(x, int | float) and math.isfinite(x) and x > low for x in v):
                what = "positive " if key == "std" else ""
                raise ConfigError(f"{prefix}.{key} must be 3 finite {what}numbers (one per channel), got {v}",
                                  "e.g. [0.5, 0.5, 0.5], or ImageNet's [0.485, 0.456, 0.406] / [0.229, 0.224, 0.225]")

    def to_uint8(self, arr: np.ndarray, modality: str) -> np.ndarray:
        """Raw pixels -> uint8 (H, W, 3) using the modality's rule."""
        modality = parse_modality(modality)
        if modality == SAR:
            if self.sar_despeckle:
                band = arr.mean(axis=-1) if arr.ndim == 3 else arr
                arr = despeckle(np.asarray(band, dtype=np.float32), self.sar_despeckle, self.sar_despeckle_window)
            return get_sar_preprocess(self.sar_preprocess)(arr, alpha=self.sar_alpha)
        return optical_to_uint8_rgb(arr)

    def gsd(self, modality: str) -> float:
        return self.gsd_sar if parse_modality(modality) == SAR else self.gsd_optical

    def size_features(self, height: int, width: int, modality: str) -> np.ndarray:
        """TransOSS ship-size token input from the original chip size and the modality's GSD."""
        s = self.gsd(modality)
        return np.array(
            [
                (width * s / SIZE_WIDTH_SCALE - SIZE_WIDTH_MEAN) / SIZE_STD,
                (height * s / SIZE_HEIGHT_SCALE - SIZE_HEIGHT_MEAN) / SIZE_STD,
                height / max(width, 1),
            ],
            dtype=np.float32,
        )

    def eval_transform(self) -> T.Compose:
        """Resize and normalise (no randomness)."""
        h, w = self.image_size
        return T.Compose([
            T.Resize((h, w), interpolation=T.InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(self.mean, self.std),
        ])

    def train_transform(self, flip: float = 0.5, pad: int = 10, random_erasing: float = 0.5) -> T.Compose:
        """TransOSS training augmentation: flip, pad + random crop, random erasing."""
        h, w = self.image_size
        ops: list[Any] = [T.Resize((h, w), interpolation=T.InterpolationMode.BICUBIC)]
        if flip > 0:
            ops.append(T.RandomHorizontalFlip(p=flip))
        if pad > 0:
            ops += [T.Pad(pad), T.RandomCrop((h, w))]
        ops += [T.ToTensor(), T.Normalize(self.mean, self.std)]
        if random_erasing > 0:
            ops.append(T.RandomErasing(p=random_erasing, value=0))
        return T.Compose(ops)

    def prepare(self, arr: np.ndarray, modality: str, transform: T.Compose | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw array -> (image tensor (3, H, W), size features (3,))."""
        img = self.to_uint8(arr, modality)
        size = torch.from_numpy(self.size_features(arr.shape[0], arr.shape[1], modality))
        tensor = (transform or self.eval_transform())(Image.fromarray(img))
        return tensor, size


MODALITIES_FOR_SPEC = (OPTICAL, SAR)
