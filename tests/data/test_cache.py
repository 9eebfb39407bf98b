"""Tests for sarbridge.data.cache (on-disk, memory-mapped preprocessing cache)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from torch.utils.data import DataLoader

from sarbridge.core.errors import DataError
from sarbridge.data.cache import IMAGES_NAME, INDEX_NAME, PreprocessCache, build_cache, cache_key
from sarbridge.data.io import read_image
from sarbridge.data.records import Sample
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.tasks.reid.dataset import ImageDataset

SPEC = PreprocessSpec(image_size=[16, 8])


def write_rgb_tiff(path: Path, height: int, width: int, seed: int) -> None:
    arr = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, arr, photometric="rgb")


def write_sar_tiff(path: Path, height: int, width: int, seed: int) -> None:
    arr = (np.random.default_rng(seed).gamma(1.0, 0.05, size=(height, width)) + 1e-4).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, arr, photometric="minisblack")


def make_samples(root: Path, n: int = 6) -> list[Sample]:
    out = []
    for i in range(n):
        if i % 2:
            p = root / f"{i:04d}_s01c2_SAR.tif"
            write_sar_tiff(p, height=20 + i, width=9 + i, seed=i)
            out.append(Sample(str(p), pid=i // 2, modality="sar", camid=1))
        else:
            p = root / f"{i:04d}_s01c1_RGB.tif"
            write_rgb_tiff(p, height=18 + i, width=7 + i, seed=i)
            out.append(Sample(str(p), pid=i // 2, modality="optical"))
    return out


def direct(s: Sample, spec: PreprocessSpec) -> np.ndarray:
    """The uncached path, written out: decode, convert, PIL bicubic resize."""
    u8 = spec.to_uint8(read_image(s.path), s.modality)
    h, w = spec.image_size
    return np.asarray(Image.fromarray(u8).resize((w, h), Image.BICUBIC))


def test_cached_pixels_equal_the_direct_path(tmp_path):
    samples = make_samples(tmp_path / "img")
    cache = build_cache(samples, SPEC, tmp_path / "cache", progress=False)
    assert cache.images.shape == (6, 16, 8, 3) and not cache.images.flags.writeable
    eval_t = SPEC.eval_transform()
    for s in samples:
        img, size = cache.get(cache.row(s.path))
        np.testing.assert_array_equal(img, direct(s, SPEC))
        raw = read_image(s.path)
        np.testing.assert_array_equal(size, SPEC.size_features(raw.shape[0], raw.shape[1], s.modality))
        # the eval transform of the cached image equals the eval transform of the uncached image
        ref = eval_t(Image.fromarray(SPEC.to_uint8(raw, s.modality)))
        assert torch.equal(eval_t(Image.fromarray(img)), ref)


def test_dataset_with_disk_cache_equals_uncached_dataset(tmp_path):
    samples = make_samples(tmp_path / "img")
    plain = ImageDataset(samples, SPEC)
    cached = ImageDataset(samples, SPEC, cache_dir=tmp_path / "cache", progress=False)
    for i in range(len(samples)):
        a, b = plain[i], cached[i]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["size"], b["size"])
    raw = ImageDataset(samples, SPEC, cache_dir=tmp_path / "cache", output="raw", progress=False)[3]["image"]
    assert raw.dtype == torch.uint8 and raw.shape == (3, 16, 8)
    np.testing.assert_array_equal(raw.permute(1, 2, 0).numpy(), direct(samples[3], SPEC))


def test_key_changes_with_spec_and_with_touched_file(tmp_path):
    samples = make_samples(tmp_path / "img")
    k0 = cache_key(samples, SPEC)
    assert cache_key(list(reversed(samples)), SPEC) == k0  # order does not matter
    assert cache_key(samples, PreprocessSpec(image_size=[16, 8], sar_alpha=2.0)) != k0
    assert cache_key(samples, PreprocessSpec(image_size=[32, 8])) != k0
    st = os.stat(samples[1].path)
    os.utime(samples[1].path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cache_key(samples, SPEC) != k0


def test_changed_file_gives_a_new_cache_with_new_pixels(tmp_path):
    samples = make_samples(tmp_path / "img", n=2)
    c1 = build_cache(samples, SPEC, tmp_path / "cache", progress=False)
    write_rgb_tiff(Path(samples[0].path), height=30, width=11, seed=99)
    st = os.stat(samples[0].path)
    os.utime(samples[0].path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    c2 = build_cache(samples, SPEC, tmp_path / "cache", progress=False)
    assert c2.folder != c1.folder
    np.testing.assert_array_equal(c2.get(c2.row(samples[0].path))[0], direct(samples[0], SPEC))


def test_existing_cache_is_reused_not_rebuilt(tmp_path):
    samples = make_samples(tmp_path / "img", n=2)
    c1 = build_cache(samples, SPEC, tmp_path / "cache", progress=False)
    before = (c1.folder / IMAGES_NAME).stat().st_mtime_ns
    c2 = build_cache(samples, SPEC, tmp_path / "cache", progress=False)
    assert c2.folder == c1.folder and (c2.folder / IMAGES_NAME).stat().st_mtime_ns == before
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [c1.folder.name]  # no temp folder left


def test_truncated_cache_is_rebuilt(tmp_path):
    samples = make_samples(tmp_path / "img")
    c1 = build_cache(samples, SPEC, tmp_path / "cache", progress=False)
    f = c1.folder / IMAGES_NAME
    good = f.read_bytes()
    f.write_bytes(good[: len(good) // 2])
    assert PreprocessCache.open(c1.folder) is None
    c2 = build_cache(samples, SPEC, tmp_path / "cache", progress=False)
    assert c2.folder == c1.folder and (c2.folder / IMAGES_NAME).read_bytes() == good


def test_folder_without_index_is_not_trusted(tmp_path):
    samples = make_samples(tmp_path / "img", n=2)
    c1 = build_cache(samples, SPEC, tmp_path / "cache", progress=False)
    (c1.folder / INDEX_NAME).unlink()  # like a build interrupted before its last write
    assert PreprocessCache.open(c1.folder) is None
    c2 = build_cache(samples, SPEC, tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(c2.get(0)[0], direct(sorted(samples, key=lambda s: s.path)[0], SPEC))


def test_corrupt_image_names_the_file_and_leaves_no_cache(tmp_path):
    samples = make_samples(tmp_path / "img", n=3)
    Path(samples[2].path).write_bytes(b"not a tiff at all")
    with pytest.raises(DataError, match=Path(samples[2].path).name):
        build_cache(samples, SPEC, tmp_path / "cache", progress=False)
    assert list((tmp_path / "cache").iterdir()) == []
    Path(samples[1].path).unlink()
    with pytest.raises(DataError, match="not found"):
        build_cache(samples, SPEC, tmp_path / "cache", progress=False)


def test_threaded_build_equals_serial_build(tmp_path):
    samples = make_samples(tmp_path / "img")
    a = build_cache(samples, SPEC, tmp_path / "c1", progress=False)
    b = build_cache(samples, SPEC, tmp_path / "c2", progress=False, num_workers=2)
    np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))
    np.testing.assert_array_equal(np.asarray(a.sizes), np.asarray(b.sizes))


def test_reading_in_dataloader_workers(tmp_path):
    samples = make_samples(tmp_path / "img")
    plain = ImageDataset(samples, SPEC)
    ds = ImageDataset(samples, SPEC, cache_dir=tmp_path / "cache", progress=False)
    assert ds.disk_cache is not None
    _ = ds.disk_cache.images  # opened in the parent: workers must still map it themselves
    loader = DataLoader(ds, batch_size=3, num_workers=2, shuffle=False)
    got = torch.cat([b["image"] for b in loader])
    want = torch.stack([plain[i]["image"] for i in range(len(samples))])
    assert torch.equal(got, want)


class _MeanEmbed(torch.nn.Module):
    """A fixed 'model': per-channel means, so features depend on every pixel of the input."""

    def embed(self, image: torch.Tensor, modality: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        return torch.cat([image.mean(dim=(2, 3)), image[:, :, ::4, ::4].flatten(1), size], dim=1)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.embed(*args)


def test_extract_features_through_the_cache_equals_the_uncached_path(tmp_path):
    from sarbridge.tasks.reid.evaluate import extract_features

    samples = make_samples(tmp_path / "img", n=7)
    cpu = torch.device("cpu")
    plain = extract_features(_MeanEmbed(), samples, SPEC, cpu, batch_size=3, progress=False)
    cached = extract_features(_MeanEmbed(), samples, SPEC, cpu, batch_size=3, progress=False,
                              cache_dir=tmp_path / "cache")
    assert cached.shape == plain.shape and torch.equal(cached, plain)
    assert len(list((tmp_path / "cache").iterdir())) == 1  # one cache for the split
    # a prebuilt cache of the whole split serves a subset (a shard) in its own order
    cache = build_cache(samples, SPEC, tmp_path / "cache", progress=False)
    sub = [samples[5], samples[1], samples[2]]
    ds = ImageDataset(sub, SPEC, disk_cache=cache)
    for i, s in enumerate(sub):
        assert torch.equal(ds[i]["image"], ImageDataset([s], SPEC)[0]["image"])
