"""The on-disk geo patch cache: exact equality with the in-memory path, keys, reuse, repair, training."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import geo_write_scene
from sarbridge.core.errors import ConfigError
from sarbridge.data.records import OPTICAL, SAR
from sarbridge.data.transforms import PreprocessSpec
from sarbridge.tasks.geo import datasets as geo_datasets
from sarbridge.tasks.geo import grid as geo_grid
from sarbridge.tasks.geo.config import load_geo_config
from sarbridge.tasks.geo.datasets import (
    GeoPatchCache,
    PatchImages,
    build_patch_cache,
    patch_cache_key,
    prepare_patch,
)
from sarbridge.tasks.geo.grid import RasterWindow
from sarbridge.tasks.geo.patches import GeoReference
from sarbridge.tasks.geo.run import load_localisation, train_geo

REPO = Path(__file__).resolve().parents[3]
TINY = ["data.patch_size=32", "data.image_size=[24,24]", "data.queries=60", "data.batch_size=16",
        "model.embed_dim=32", "loss.wasserstein.hidden=16", "optim.epochs=1", "refine.epochs=1", "matcher.steps=4", "matcher.batch_size=4",
        "refine.hidden=16", "refine.heads=2", "device=cpu", "eval.batch_size=64"]


def tiny_cfg(scene: Path, *extra: str):
    return load_geo_config(REPO / "configs" / "geo_demo.yaml", [f"data.root={scene}", *TINY, *extra])


def _data(scene: Path):
    return load_localisation(tiny_cfg(scene))


def _spec(**kw) -> PreprocessSpec:
    base = dict(image_size=[24, 24], sar_preprocess="db", sar_alpha=2.0)  # 32 px patches: the resize is exercised
    base.update(kw)
    return PreprocessSpec(**base)


@pytest.mark.parametrize("despeckle", [None, "lee"])
def test_cached_items_equal_prepare_patch(geo_scene: Path, tmp_path: Path, despeckle: str | None) -> None:
    data = _data(geo_scene)
    spec = _spec(sar_despeckle=despeckle, sar_despeckle_window=5)
    refs, queries = data.references[:10], data.queries[:10]
    for items, modality in ((refs, OPTICAL), (queries, SAR)):
        cached = PatchImages(items, modality, spec, cache_dir=tmp_path / "cache")
        assert cached.cache is None  # the in-memory dict is off
        cached.preload("caching", progress=False)
        assert cached.disk is not None and cached.disk.images.shape == (len(items), 24, 24, 3)
        for i, it in enumerate(items):
            want = prepare_patch(it.load(), modality, spec, it.source)
            got = cached[i]
            assert got.dtype == want.dtype and torch.equal(got, want), (modality, i)
    plain = PatchImages(queries, SAR, spec)  # no cache_dir: the in-memory path of before
    assert plain.cache == {} and plain.cache_dir is None
    assert torch.equal(plain[3], prepare_patch(queries[3].load(), SAR, spec, queries[3].source))


def test_despeckling_changes_the_cached_pixels(geo_scene: Path, tmp_path: Path) -> None:
    qs = _data(geo_scene).queries[:3]
    a = build_patch_cache(qs, SAR, _spec(), tmp_path, progress=False)
    b = build_patch_cache(qs, SAR, _spec(sar_despeckle="lee", sar_despeckle_window=5), tmp_path, progress=False)
    assert a.folder != b.folder and not np.array_equal(a.images, b.images)


def test_key_follows_spec_grid_and_raster(tmp_path: Path) -> None:
    scene = geo_write_scene(tmp_path / "scene")
    refs = _data(scene).references
    spec = _spec()
    key = patch_cache_key(refs, OPTICAL, spec)
    assert key == patch_cache_key(refs, OPTICAL, _spec())  # deterministic
    assert key != patch_cache_key(refs, OPTICAL, _spec(image_size=[16, 16]))
    assert key != patch_cache_key(refs, SAR, spec)
    assert key != patch_cache_key(refs[:-1], OPTICAL, spec)  # another patch set
    other_grid = load_localisation(tiny_cfg(scene, "data.stride=16")).references
    assert key != patch_cache_key(other_grid, OPTICAL, spec)
    first = build_patch_cache(refs, OPTICAL, spec, tmp_path / "cache", progress=False)
    geo_write_scene(scene, seed=5)  # new pixels in the same files
    for ds in geo_grid._OPEN.values():  # this process keeps rasters open: forget the old files
        ds.close()
    geo_grid._OPEN.clear()
    st = os.stat(scene / "optical.tif")
    os.utime(scene / "optical.tif", ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000_000))
    new_refs = _data(scene).references
    assert patch_cache_key(new_refs, OPTICAL, spec) != key
    second = build_patch_cache(new_refs, OPTICAL, spec, tmp_path / "cache", progress=False)
    assert second.folder != first.folder and not np.array_equal(first.images, second.images)


def test_in_memory_raster_pixels_are_hashed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, size=(3, 16, 16)).astype(np.uint8)

    def refs(a: np.ndarray) -> list[GeoReference]:
        return [GeoReference(0, 0.0, 0.0, 0.0, 0.0, (0.0, 0.0, 1.0, 1.0), "mem[r0,c0]",
                             RasterWindow(None, 0, 0, 16, 16, "optical", a))]

    key = patch_cache_key(refs(arr), OPTICAL, _spec())
    assert key == patch_cache_key(refs(arr.copy()), OPTICAL, _spec())
    changed = arr.copy()
    changed[0, 0, 0] ^= 1
    assert key != patch_cache_key(refs(changed), OPTICAL, _spec())


def test_built_cache_is_reused_without_preparing(geo_scene: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    refs = _data(geo_scene).references[:6]
    spec = _spec()
    calls = []
    real = geo_datasets.patch_uint8
    monkeypatch.setattr(geo_datasets, "patch_uint8", lambda *a: calls.append(1) or real(*a))
    first = build_patch_cache(refs, OPTICAL, spec, tmp_path / "cache", progress=False)
    assert len(calls) == 6
    mtime = (first.folder / "index.json").stat().st_mtime_ns
    again = build_patch_cache(refs, OPTICAL, spec, tmp_path / "cache", progress=False)
    assert len(calls) == 6 and again.folder == first.folder
    assert (again.folder / "index.json").stat().st_mtime_ns == mtime
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.folder.name]  # no temporary folder left
    meta = json.loads((first.folder / "index.json").read_text())
    assert meta["count"] == 6 and meta["sources"] == [r.source for r in refs]


def test_truncated_cache_is_rebuilt(geo_scene: Path, tmp_path: Path) -> None:
    refs = _data(geo_scene).references[:6]
    spec = _spec()
    built = build_patch_cache(refs, OPTICAL, spec, tmp_path / "cache", progress=False)
    expected = np.array(built.images)
    images = built.folder / "images.npy"
    del built
    size = images.stat().st_size
    with open(images, "r+b") as fh:
        fh.truncate(size // 2)
    assert GeoPatchCache.open(images.parent) is None
    rebuilt = build_patch_cache(refs, OPTICAL, spec, tmp_path / "cache", progress=False)
    assert rebuilt.folder == images.parent and images.stat().st_size == size
    assert np.array_equal(rebuilt.images, expected)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [rebuilt.folder.name]  # the stale folder is gone


def test_workers_map_the_cache_themselves(geo_scene: Path, tmp_path: Path) -> None:
    qs = _data(geo_scene).queries[:8]
    spec = _spec()
    images = PatchImages(qs, SAR, spec, cache_dir=tmp_path)
    images.preload("caching", progress=False)
    assert images.disk is not None and images.disk._images is not None
    clone = pickle.loads(pickle.dumps(images))
    assert clone.disk is not None and clone.disk._images is None  # the mapping is not pickled
    assert torch.equal(clone[5], images[5])
    batch = next(iter(DataLoader(images, batch_size=8, num_workers=2)))
    want = torch.stack([prepare_patch(q.load(), SAR, spec, q.source) for q in qs])
    assert torch.equal(batch, want)


def test_empty_cache_dir_is_a_config_error(geo_scene: Path) -> None:
    with pytest.raises(ConfigError, match="data.cache_dir"):
        tiny_cfg(geo_scene, "data.cache_dir=''")


def test_training_with_the_disk_cache_gives_the_same_metrics(geo_scene: Path, tmp_path: Path) -> None:
    plain = train_geo(tiny_cfg(geo_scene), tmp_path / "plain", progress=False)
    cache = tmp_path / "geo_cache"
    cached = train_geo(tiny_cfg(geo_scene, f"data.cache_dir={cache}"), tmp_path / "cached", progress=False)
    assert len([p for p in cache.iterdir() if p.name.startswith("geo-")]) == 3  # references, train, val queries
    assert cached["coarse"] == plain["coarse"] and cached["refined"] == plain["refined"]


@pytest.mark.parametrize("rank", [0, 1])
def test_rank_zero_builds_first_and_the_others_wait(geo_scene: Path, tmp_path: Path, rank: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from sarbridge.core import cache as core_cache
    from sarbridge.core.distributed import DistContext

    events: list[str] = []
    ctx = DistContext(rank=rank, world_size=2, backend="gloo")
    monkeypatch.setattr(core_cache, "current_context", lambda: ctx)
    monkeypatch.setattr(core_cache, "barrier", lambda c=None: events.append("barrier"))
    real = geo_datasets.map_with_progress
    monkeypatch.setattr(geo_datasets, "map_with_progress",
                        lambda *a: events.append(f"build progress={a[3]}") or real(*a))
    refs = _data(geo_scene).references[:3]
    images = PatchImages(refs, OPTICAL, _spec(), cache_dir=tmp_path / "cache")
    images.preload("caching", progress=True)
    if rank == 0:
        assert events == ["build progress=True", "barrier"]
    else:  # waits for rank 0, then opens (builds here: no real rank 0); no progress bar off rank 0
        assert events == ["barrier", "build progress=False"]
    assert torch.equal(images[1], prepare_patch(refs[1].load(), OPTICAL, _spec(), refs[1].source))


def test_threaded_build_equals_serial_build(geo_scene: Path, tmp_path: Path) -> None:
    qs = _data(geo_scene).queries[:12]
    serial = build_patch_cache(qs, SAR, _spec(), tmp_path / "a", progress=False)
    threaded = build_patch_cache(qs, SAR, _spec(), tmp_path / "b", progress=False, num_workers=3)
    assert serial.folder.name == threaded.folder.name and np.array_equal(serial.images, threaded.images)


def test_bad_patch_names_its_source_and_leaves_no_cache(tmp_path: Path) -> None:
    from sarbridge.core.errors import DataError

    arr = np.full((3, 16, 16), 7, dtype=np.float32)
    arr[0, 3, 3] = np.nan
    refs = [GeoReference(0, 0.0, 0.0, 0.0, 0.0, (0.0, 0.0, 1.0, 1.0), "mem[r0,c0]",
                         RasterWindow(None, 0, 0, 16, 16, "optical", arr))]
    with pytest.raises(DataError, match=r"mem\[r0,c0\]"):
        build_patch_cache(refs, OPTICAL, _spec(), tmp_path / "cache", progress=False)
    assert list((tmp_path / "cache").iterdir()) == []
