"""The Dataset of pair tensors for contrastive pretraining (both images prepared like re-identification)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from sarbridge.data.pairs.items import PairItem, load_source
from sarbridge.data.records import OPTICAL, SAR
from sarbridge.data.transforms import PreprocessSpec

__all__ = ["PairDataset"]


class PairDataset(Dataset):
    """Optical and SAR tensors of each pair, prepared by a :class:`PreprocessSpec`.

    Items are dicts: ``optical`` and ``sar`` (3, H, W), ``optical_size`` and ``sar_size`` (3,)
    (the ship-size token input, or zeros with ``size_features="zero"``), ``group`` (contiguous
    integer of the pair's group) and ``index``.

    Args:
        items: the pairs.
        spec: preprocessing (SAR conversion, size, normalisation).
        transform: applied to each image independently (default ``spec.eval_transform()``).
        size_features: ``chip`` (from the image size and GSD, per-pair GSD when recorded) or
            ``zero`` (for fixed-size scene patches, where the size carries no information).
        cache: keep the decoded uint8 images in memory.
    """

    def __init__(
        self,
        items: Sequence[PairItem],
        spec: PreprocessSpec,
        transform: Callable | None = None,
        size_features: str = "chip",
        cache: bool = False,
    ) -> None:
        if size_features not in ("chip", "zero"):
            raise ValueError(f"size_features must be 'chip' or 'zero', got {size_features!r}")
        self.items = list(items)
        self.spec = spec
        self.transform = transform or spec.eval_transform()
        self.size_features = size_features
        self.cache = cache
        self.group_index = {g: i for i, g in enumerate(sorted({it.group for it in self.items}))}
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.items)

    def _size(self, arr: np.ndarray, modality: str, gsd: float | None) -> np.ndarray:
        if self.size_features == "zero":
            return np.zeros(3, dtype=np.float32)
        if gsd is None:
            return self.spec.size_features(arr.shape[0], arr.shape[1], modality)
        spec = PreprocessSpec(**{**self.spec.to_dict(), f"gsd_{'sar' if modality == SAR else 'optical'}": gsd})
        return spec.size_features(arr.shape[0], arr.shape[1], modality)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if index in self._cache:
            return self._cache[index]
        it = self.items[index]
        opt, sar = load_source(it.optical), load_source(it.sar)
        out = (self.spec.to_uint8(opt, OPTICAL), self.spec.to_uint8(sar, SAR),
               self._size(opt, OPTICAL, it.gsd_optical), self._size(sar, SAR, it.gsd_sar))
        if self.cache:
            self._cache[index] = out
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        opt, sar, opt_size, sar_size = self._load(index)
        return {
            "optical": self.transform(Image.fromarray(opt)),
            "sar": self.transform(Image.fromarray(sar)),
            "optical_size": torch.from_numpy(opt_size),
            "sar_size": torch.from_numpy(sar_size),
            "group": self.group_index[self.items[index].group],
            "index": index,
        }
