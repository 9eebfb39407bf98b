"""From raw arrays to network inputs: per-modality conversion, size features and augmentation.

A :class:`PreprocessSpec` travels inside every checkpoint, so a trained model always sees its
images prepared the same way at training, evaluation and in the Python API.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from sarbridge.data.records import OPTICAL, SAR, parse_modality
from sarbridge.data.sar import get_sar_preprocess, optical_to_uint8_rgb

# HOSS normalisation of the ship-size token (TransOSS): metres / scale, centred and standardised.
SIZE_WIDTH_SCALE, SIZE_WIDTH_MEAN = 93.0, 0.434
SIZE_HEIGHT_SCALE, SIZE_HEIGHT_MEAN = 427.0, 0.461
SIZE_STD = 0.031


@dataclass
class PreprocessSpec:
    """How an image of each modality becomes a normalised tensor."""

    image_size: list[int] = field(default_factory=lambda: [256, 128])
    sar_preprocess: str = "max"
    sar_alpha: float = 5.0
    sar_despeckle: str | None = None
    sar_despeckle_window: int = 7
    gsd_optical: float = 0.75
    gsd_sar: float = 1.0
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        return cls(**data)

    def to_uint8(self, arr: np.ndarray, modality: str) -> np.ndarray:
        """Raw pixels -> uint8 (H, W, 3) using the modality's rule."""
        modality = parse_modality(modality)
        if modality == SAR:
            if self.sar_despeckle:
                from sarbridge.data.despeckle import despeckle

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
