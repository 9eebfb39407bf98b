"""The training input pipeline: dataset, DataLoader and the batch -> model-input step.

Wiring (what a training task does)::

    aug = build_batch_augment(cfg.data, spec, device)           # None: augment per sample on the CPU
    ds = build_train_dataset(train, spec, cfg.data, label_map, gpu_augment=aug is not None)
    loader = build_train_loader(ds, pk_sampler, cfg.data, device)
    for batch in loader:
        batch = batch_to_device(batch, device, aug)              # batch["image"]: float (B, 3, H, W)
        out = model(batch["image"], batch["modality"], batch["size"])

With GPU augmentation the workers only copy uint8 pixels out of the memory-mapped disk cache
(``data.cache_dir``) and the flip / pad-crop / normalise / erasing run batched on the device.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sarbridge.core.errors import ConfigError
from sarbridge.core.threads import loader_workers
from sarbridge.data.cache import build_cache
from sarbridge.data.gpu_augment import BatchAugment
from sarbridge.data.records import Sample
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.tasks.reid.config import DataConfig
from sarbridge.tasks.reid.dataset import ImageDataset


def gpu_augment_enabled(data_cfg: DataConfig, device: torch.device | str) -> bool:
    """Whether batches are augmented on the device: ``auto`` -> only on CUDA, ``always``, ``never``.

    Raises:
        ConfigError: ``data.gpu_augment`` has an unknown value.
    """
    mode = getattr(data_cfg, "gpu_augment", "auto")
    if mode == "auto":
        return torch.device(device).type == "cuda"
    if mode in ("always", "never"):
        return mode == "always"
    raise ConfigError(f"data.gpu_augment has value {mode!r}", "use one of 'auto', 'always', 'never'")


def build_batch_augment(
    data_cfg: DataConfig, spec: PreprocessSpec, device: torch.device | str, channels_last: bool = False,
) -> BatchAugment | None:
    """The batched augmentation of ``data_cfg.augment`` when :func:`gpu_augment_enabled`, else None."""
    if not gpu_augment_enabled(data_cfg, device):
        return None
    a = data_cfg.augment
    return BatchAugment.from_spec(spec, a.flip, a.pad, a.random_erasing, channels_last=channels_last)


def build_train_dataset(
    samples: Sequence[Sample],
    spec: PreprocessSpec,
    data_cfg: DataConfig,
    label_map: dict[int, int],
    gpu_augment: bool,
    progress: bool = True,
) -> ImageDataset:
    """Training dataset: raw uint8 items for GPU augmentation, else the CPU train transform.

    Uses the disk cache when ``data_cfg.cache_dir`` is set (built here, once; by rank 0 under
    ``torchrun``), otherwise the in-memory cache when ``data_cfg.cache``.
    """

    a = data_cfg.augment
    cache_dir = getattr(data_cfg, "cache_dir", None)
    transform = None if gpu_augment else spec.train_transform(a.flip, a.pad, a.random_erasing)
    disk = build_cache(samples, spec, cache_dir, progress) if cache_dir else None
    return ImageDataset(samples, spec, transform, label_map, cache=bool(data_cfg.cache) and not cache_dir,
                        output="raw" if gpu_augment else "transformed", progress=progress, disk_cache=disk)


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed Python's and NumPy's generators from the worker's torch seed.

    DataLoader gives each worker the torch seed ``base_seed + worker_id`` (``base_seed`` drawn from
    the main process's generator, so seeded runs repeat); NumPy and ``random`` would otherwise
    start from the same state in every forked worker.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_train_loader(
    dataset: Dataset, batch_sampler: Sampler[list[int]], data_cfg: DataConfig, device: torch.device | str,
) -> DataLoader:
    """A DataLoader over ``batch_sampler`` with the loader settings of a ``DataConfig``.

    ``num_workers`` worker processes; pinned memory only when training on CUDA and
    ``pin_memory``; ``persistent_workers`` and ``prefetch_factor`` only with workers.
    """
    workers = loader_workers(int(data_cfg.num_workers))
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs["persistent_workers"] = bool(getattr(data_cfg, "persistent_workers", True))
        kwargs["prefetch_factor"] = int(getattr(data_cfg, "prefetch_factor", 2))
        kwargs["worker_init_fn"] = seed_worker
    pin = bool(getattr(data_cfg, "pin_memory", True)) and torch.device(device).type == "cuda"
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers, pin_memory=pin, **kwargs)


def batch_to_device(
    batch: dict[str, Any],
    device: torch.device,
    augment: BatchAugment | None = None,
    generator: torch.Generator | None = None,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Move a loader batch to ``device`` (non-blocking) and make ``image`` model input.

    Args:
        batch: a collated :class:`ImageDataset` batch.
        device: target device.
        augment: batched augmentation, required when the images are raw uint8 (datasets with
            ``output="raw"``); float images (CPU-transformed) are only moved.
        generator: generator for ``augment`` (on ``device``).
        channels_last: return the image in ``torch.channels_last`` memory format.

    Returns:
        A new dict: tensors on ``device``, ``image`` float (B, 3, H, W).

    Raises:
        ValueError: the images are uint8 but no ``augment`` was given.
    """
    out = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
    image = out["image"]
    if image.dtype == torch.uint8:
        if augment is None:
            raise ValueError("the batch holds raw uint8 images: pass the BatchAugment that prepares them")
        image = augment(image, generator)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    out["image"] = image
    return out
