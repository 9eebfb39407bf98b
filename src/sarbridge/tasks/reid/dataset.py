"""A torch Dataset over :class:`~sarbridge.data.records.Sample` lists."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from sarbridge.core.progress import progress_bar
from sarbridge.data.cache import build_cache
from sarbridge.data.io import read_image
from sarbridge.data.records import Sample
from sarbridge.data.transforms import PreprocessSpec

if TYPE_CHECKING:
    from sarbridge.data.cache import PreprocessCache


class ImageDataset(Dataset):
    """Reads, converts and transforms images; optionally caches decoded uint8 pixels in memory or on disk.

    Items are dicts with ``image`` (3, H, W), ``size`` (3,), ``label`` (contiguous class index or
    -1), ``pid``, ``modality`` (0 optical, 1 SAR), ``camid`` and ``index``.

    Args:
        samples: the images.
        spec: preprocessing (modality conversion, size features, image size).
        transform: PIL image -> tensor (default ``spec.eval_transform()``); unused with ``output="raw"``.
        label_map: identity -> contiguous class index.
        cache: keep decoded uint8 pixels in memory (per process) after the first read.
        cache_dir: use the on-disk, memory-mapped :mod:`~sarbridge.data.cache` in this folder
            (built here when missing; under ``torchrun`` rank 0 builds it first, so every rank must
            construct the dataset); its pixels are already resized to
            ``spec.image_size``, which the transforms' resize then leaves unchanged.
        output: ``"transformed"`` (``transform`` applied) or ``"raw"``: the uint8 (3, H, W) image
            resized to ``spec.image_size`` (PIL bicubic) without any other transform, for
            augmentation on the GPU (:mod:`~sarbridge.data.gpu_augment`).
        progress: progress bar while building the disk cache.
        cache_workers: decoding threads while building the disk cache.
        disk_cache: an already opened :class:`~sarbridge.data.cache.PreprocessCache` holding (at
            least) these samples, instead of ``cache_dir`` (e.g. one cache of a whole split read by
            several shards).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        spec: PreprocessSpec,
        transform: Callable | None = None,
        label_map: dict[int, int] | None = None,
        cache: bool = False,
        cache_dir: str | Path | None = None,
        output: Literal["transformed", "raw"] = "transformed",
        progress: bool = True,
        cache_workers: int = 0,
        disk_cache: PreprocessCache | None = None,
    ) -> None:
        if output not in ("transformed", "raw"):
            raise ValueError(f"output must be 'transformed' or 'raw', got {output!r}")
        self.samples = list(samples)
        self.spec = spec
        self.transform = transform or spec.eval_transform()
        self.label_map = label_map or {}
        self.cache = cache
        self.output = output
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.disk_cache: PreprocessCache | None = disk_cache
        self._rows: list[int] = []
        if disk_cache is None and cache_dir is not None:

            self.disk_cache = build_cache(self.samples, spec, cache_dir, progress=progress,
                                          num_workers=cache_workers)
        if self.disk_cache is not None:
            self._rows = [self.disk_cache.row(s.path) for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self.disk_cache is not None:
            return self.disk_cache.get(self._rows[index])
        if index in self._cache:
            return self._cache[index]
        s = self.samples[index]
        raw = read_image(s.path)
        out = (self.spec.to_uint8(raw, s.modality), self.spec.size_features(raw.shape[0], raw.shape[1], s.modality))
        if self.cache:
            self._cache[index] = out
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:

        s = self.samples[index]
        img, size = self._load(index)
        if self.output == "raw":
            h, w = self.spec.image_size
            if img.shape[:2] != (h, w):
                img = np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BICUBIC))
            image = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).contiguous()
        else:
            image = self.transform(Image.fromarray(img))
        return {
            "image": image,
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

    for s in progress_bar(samples, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        read_image(s.path)


def make_label_map(samples: Sequence[Sample]) -> dict[int, int]:
    """Contiguous class indices for the identities of the training set (distractors excluded)."""
    return {pid: i for i, pid in enumerate(sorted({s.pid for s in samples if s.pid >= 0}))}
