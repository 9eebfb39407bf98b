"""Tests for sarbridge.tasks.reid.loader (training DataLoader and batch -> model input)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from sarbridge.core.errors import ConfigError
from sarbridge.data.gpu_augment import BatchAugment
from sarbridge.data.io import read_image
from sarbridge.data.records import Sample
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.tasks.reid.config import DataConfig
from sarbridge.tasks.reid.dataset import make_label_map
from sarbridge.tasks.reid.loader import (
    batch_to_device,
    build_batch_augment,
    build_train_dataset,
    build_train_loader,
    gpu_augment_enabled,
    seed_worker,
)
from sarbridge.tasks.reid.sampler import PKSampler

SPEC = PreprocessSpec(image_size=[16, 8])


def tiny_set(root: Path, ids: int = 4, per_id: int = 2) -> list[Sample]:
    out = []
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for pid in range(ids):
        for k in range(per_id):
            p = root / f"{pid:04d}_s{k + 1:02d}c1_RGB.tif"
            tifffile.imwrite(p, rng.integers(0, 256, size=(20, 9, 3), dtype=np.uint8), photometric="rgb")
            out.append(Sample(str(p), pid, "optical"))
            q = root / f"{pid:04d}_s{k + 1:02d}c2_SAR.tif"
            tifffile.imwrite(q, (rng.gamma(1.0, 0.05, size=(22, 10)) + 1e-4).astype(np.float32))
            out.append(Sample(str(q), pid, "sar", camid=1))
    return out


def data_cfg(tmp_path: Path, **kw) -> DataConfig:
    kw.setdefault("num_workers", 2)
    cfg = DataConfig(image_size=[16, 8], cache_dir=str(tmp_path / "cache"), **kw)
    cfg.sampler.num_ids, cfg.sampler.num_instances = 2, 4
    return cfg


def test_gpu_augment_enabled_modes():
    assert gpu_augment_enabled(DataConfig(gpu_augment="auto"), "cuda") is True
    assert gpu_augment_enabled(DataConfig(gpu_augment="auto"), "cpu") is False
    assert gpu_augment_enabled(DataConfig(gpu_augment="always"), "cpu") is True
    assert gpu_augment_enabled(DataConfig(gpu_augment="never"), "cuda") is False
    bad = DataConfig()
    bad.gpu_augment = "sometimes"  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="gpu_augment"):
        gpu_augment_enabled(bad, "cpu")
    assert build_batch_augment(DataConfig(gpu_augment="never"), SPEC, "cpu") is None
    aug = build_batch_augment(DataConfig(gpu_augment="always"), SPEC, "cpu")
    assert isinstance(aug, BatchAugment) and aug.pad == DataConfig().augment.pad


def test_loader_options_follow_config_and_device(tmp_path):
    samples = tiny_set(tmp_path / "img")
    cfg = data_cfg(tmp_path, prefetch_factor=3)
    ds = build_train_dataset(samples, SPEC, cfg, make_label_map(samples), gpu_augment=False, progress=False)
    sampler = PKSampler([s.pid for s in samples], [s.modality_index for s in samples], 2, 4)
    loader = build_train_loader(ds, sampler, cfg, torch.device("cpu"))
    assert loader.num_workers == 2 and loader.persistent_workers and loader.prefetch_factor == 3
    assert loader.pin_memory is False  # only on CUDA
    assert loader.worker_init_fn is seed_worker
    cfg0 = data_cfg(tmp_path, num_workers=0)
    l0 = build_train_loader(ds, sampler, cfg0, torch.device("cpu"))
    assert l0.num_workers == 0 and not l0.persistent_workers and l0.prefetch_factor is None


def test_workers_raw_batches_then_gpu_augment_on_cpu(tmp_path):
    samples = tiny_set(tmp_path / "img")
    cfg = data_cfg(tmp_path, gpu_augment="always")
    cfg.augment.flip, cfg.augment.pad, cfg.augment.random_erasing = 0.0, 0, 0.0
    device = torch.device("cpu")
    aug = build_batch_augment(cfg, SPEC, device)
    ds = build_train_dataset(samples, SPEC, cfg, make_label_map(samples), gpu_augment=aug is not None, progress=False)
    assert ds.output == "raw" and ds.disk_cache is not None
    sampler = PKSampler([s.pid for s in samples], [s.modality_index for s in samples], 2, 4, seed=0)
    loader = build_train_loader(ds, sampler, cfg, device)
    eval_t = SPEC.eval_transform()
    seen = 0
    for epoch in range(2):  # persistent workers serve a second epoch
        sampler.set_epoch(epoch)
        for raw in loader:
            assert raw["image"].dtype == torch.uint8 and raw["image"].shape[1:] == (3, 16, 8)
            b = batch_to_device(raw, device, aug)
            assert b["image"].dtype == torch.float32 and b["label"].shape == (8,)
            for k, idx in enumerate(raw["index"].tolist()):
                s = samples[idx]
                want = eval_t(Image.fromarray(SPEC.to_uint8(read_image(s.path), s.modality)))
                torch.testing.assert_close(b["image"][k], want, rtol=0, atol=1e-6)
                seen += 1
    assert seen >= 16
    with pytest.raises(ValueError, match="uint8"):
        batch_to_device(raw, device, None)


def test_cpu_transform_path_is_unchanged_and_moves_float_batches(tmp_path):
    samples = tiny_set(tmp_path / "img")
    cfg = data_cfg(tmp_path)
    ds = build_train_dataset(samples, SPEC, cfg, make_label_map(samples), gpu_augment=False, progress=False)
    assert ds.output == "transformed"
    sampler = PKSampler([s.pid for s in samples], [s.modality_index for s in samples], 2, 4, seed=0)
    batch = next(iter(build_train_loader(ds, sampler, cfg, torch.device("cpu"))))
    assert batch["image"].dtype == torch.float32
    out = batch_to_device(batch, torch.device("cpu"), None, channels_last=True)
    assert torch.equal(out["image"], batch["image"])
    assert out["image"].is_contiguous(memory_format=torch.channels_last)


def test_seed_worker_seeds_numpy_and_random():
    torch.manual_seed(1234)
    seed_worker(0)
    a = (np.random.rand(), random.random())
    torch.manual_seed(1234)
    seed_worker(0)
    assert (np.random.rand(), random.random()) == a
    torch.manual_seed(99)
    seed_worker(0)
    assert np.random.rand() != a[0]
