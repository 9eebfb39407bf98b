"""A torch Dataset over :class:`~sarbridge.data.records.Sample` lists."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from sarbridge.data.io import read_image
from sarbridge.data.records import Sample
from sarbridge.data.transforms import PreprocessSpec


class ImageDataset(Dataset):
    """Reads, converts and transforms images; optionally caches decoded uint8 pixels in memory.

    Items are dicts with ``image`` (3, H, W), ``size`` (3,), ``label`` (contiguous class index or
    -1), ``pid``, ``modality`` (0 optical, 1 SAR), ``camid`` and ``index``.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        spec: PreprocessSpec,
        transform: Callable | None = None,
        label_map: dict[int, int] | None = None,
        cache: bool = False,
    ) -> None:
        self.samples = list(samples)
        self.spec = spec
        self.transform = transform or spec.eval_transform()
        self.label_map = label_map or {}
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index in self._cache:
            return self._cache[index]
        s = self.samples[index]
        raw = read_image(s.path)
        out = (self.spec.to_uint8(raw, s.modality), self.spec.size_features(raw.shape[0], raw.shape[1], s.modality))
        if self.cache:
            self._cache[index] = out
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        from PIL import Image

        s = self.samples[index]
        img, size = self._load(index)
        return {
            "image": self.transform(Image.fromarray(img)),
            "size": torch.from_numpy(size),
            "label": self.label_map.get(s.pid, -1),
            "pid": s.pid,
            "modality": s.modality_index,
            "camid": s.camid,
            "index": index,
        }


def verify_images(samples: Sequence[Sample], progress: bool = True, desc: str = "checking images") -> None:
    """Read every image once so that a corrupt file stops the run before training starts.

    Raises:
        DataError: naming the first unreadable, empty or non-finite image.
    """
    from tqdm.auto import tqdm

    for s in tqdm(samples, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        read_image(s.path)


def make_label_map(samples: Sequence[Sample]) -> dict[int, int]:
    """Contiguous class indices for the identities of the training set (distractors excluded)."""
    return {pid: i for i, pid in enumerate(sorted({s.pid for s in samples if s.pid >= 0}))}
