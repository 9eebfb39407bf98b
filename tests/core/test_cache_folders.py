"""Tests for sarbridge.core.cache: memory-mapped cache folders and their one build path.

(Named apart from tests/data/test_cache.py: pytest needs unique test-module basenames here.)
"""

from __future__ import annotations

import json
import os
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sarbridge.core import cache as core_cache
from sarbridge.core.cache import (
    IMAGES_NAME,
    INDEX_NAME,
    MemmapCacheFolder,
    build_once,
    map_with_progress,
)
from sarbridge.core.distributed import DistContext
from sarbridge.core.errors import DataError


def _pixels(n: int) -> np.ndarray:
    """n images of 4x3 pixels whose values are (row, y, x, channel)-dependent, so rows can be told apart."""
    i, y, x, c = np.meshgrid(np.arange(n), np.arange(4), np.arange(3), np.arange(3), indexing="ij")
    return (i * 50 + y * 10 + x * 3 + c).astype(np.uint8)


def _write(folder: Path, n: int = 5, key: str = "k1", version: int = 1) -> None:
    np.save(folder / IMAGES_NAME, _pixels(n))
    meta = {"version": version, "key": key, "image_size": [4, 3], "count": n}
    (folder / INDEX_NAME).write_text(json.dumps(meta), encoding="utf-8")


class Recorder:
    """A ``write`` callback that records its calls (and the progress flag it got)."""

    def __init__(self, n: int = 5, key: str = "k1", fail: bool = False) -> None:
        self.n, self.key, self.fail = n, key, fail
        self.calls: list[bool] = []

    def __call__(self, folder: Path, progress: bool) -> None:
        self.calls.append(progress)
        assert folder.name.endswith(".tmp") and folder.is_dir() and not any(folder.iterdir())
        _write(folder, self.n, self.key)
        if self.fail:
            raise DataError("image 'bad.tif' is corrupt")


def _open(key: str = "k1"):
    return lambda folder: MemmapCacheFolder.open(folder, key)


def test_open_accepts_a_complete_folder_and_maps_it_read_only(tmp_path: Path) -> None:
    _write(tmp_path)
    cache = MemmapCacheFolder.open(tmp_path, "k1")
    assert cache is not None and len(cache) == 5
    assert cache.images.shape == (5, 4, 3, 3) and not cache.images.flags.writeable
    assert int(cache.images[2, 1, 2, 1]) == 2 * 50 + 10 + 6 + 1
    assert MemmapCacheFolder.open(tmp_path) is not None  # no key: any key


@pytest.mark.parametrize("damage", ["no-index", "bad-json", "other-key", "other-version", "truncated",
                                    "wrong-count", "wrong-dtype"])
def test_open_refuses_a_damaged_or_foreign_folder(tmp_path: Path, damage: str) -> None:
    _write(tmp_path, version=2 if damage == "other-version" else 1)
    index, images = tmp_path / INDEX_NAME, tmp_path / IMAGES_NAME
    if damage == "no-index":
        index.unlink()
    elif damage == "bad-json":
        index.write_text("{not json", encoding="utf-8")
    elif damage == "truncated":
        data = images.read_bytes()
        images.write_bytes(data[: len(data) - 7])
    elif damage == "wrong-count":
        meta = json.loads(index.read_text())
        index.write_text(json.dumps({**meta, "count": 6}))
    elif damage == "wrong-dtype":
        np.save(images, _pixels(5).astype(np.float32))
    key = "k2" if damage == "other-key" else "k1"
    assert MemmapCacheFolder.open(tmp_path, key) is None


def test_pickling_drops_the_memory_map(tmp_path: Path) -> None:
    _write(tmp_path)
    cache = MemmapCacheFolder.open(tmp_path)
    assert cache is not None and cache._images is not None  # mapped by the checks
    clone = pickle.loads(pickle.dumps(cache))
    assert clone._images is None and clone.meta == cache.meta
    np.testing.assert_array_equal(clone.images, _pixels(5))  # the clone maps the file itself


@pytest.mark.parametrize("workers", [0, 3])
def test_map_with_progress_keeps_the_order(workers: int) -> None:
    def slow_square(x: int) -> int:
        time.sleep(0.002 * (7 - x))  # later items finish first in threads
        return x * x

    got = list(map_with_progress(slow_square, list(range(8)), workers, progress=False, desc="t"))
    assert got == [(i, i * i) for i in range(8)]


def test_map_with_progress_passes_errors_on() -> None:
    def boom(x: int) -> int:
        if x == 2:
            raise DataError("item 2 is bad")
        return x

    with pytest.raises(DataError, match="item 2"):
        list(map_with_progress(boom, [0, 1, 2, 3], 2, progress=False, desc="t"))


def test_build_once_builds_then_reuses_without_writing(tmp_path: Path) -> None:
    write = Recorder()
    first = build_once(tmp_path / "root", "k1", write, _open(), progress=False)
    assert write.calls == [False] and first.folder == tmp_path / "root" / "k1"
    np.testing.assert_array_equal(first.images, _pixels(5))
    mtime = (first.folder / INDEX_NAME).stat().st_mtime_ns
    again = build_once(tmp_path / "root", "k1", write, _open(), progress=True)
    assert write.calls == [False] and again.folder == first.folder  # opened, not rebuilt
    assert (again.folder / INDEX_NAME).stat().st_mtime_ns == mtime
    assert [p.name for p in (tmp_path / "root").iterdir()] == ["k1"]  # no temporary folder left


def test_build_once_replaces_a_broken_folder(tmp_path: Path) -> None:
    final = tmp_path / "k1"
    final.mkdir()
    _write(final, n=2)
    (final / IMAGES_NAME).write_bytes(b"\x93NUMPY garbage")  # an unreadable image array
    assert MemmapCacheFolder.open(final, "k1") is None
    write = Recorder(n=5)
    built = build_once(tmp_path, "k1", write, _open(), progress=False)
    assert write.calls == [False] and len(built) == 5
    np.testing.assert_array_equal(built.images, _pixels(5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k1"]  # the stale folder is gone


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="bad.tif"):
        build_once(tmp_path / "root", "k1", Recorder(fail=True), _open(), progress=False)
    assert list((tmp_path / "root").iterdir()) == []


def test_a_folder_that_fails_its_checks_after_building_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="could not be read back"):
        build_once(tmp_path, "k1", Recorder(key="other"), _open("k1"), progress=False)


def test_unwritable_cache_root_is_a_data_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match="cannot be written"):
        build_once(blocker / "root", "k1", Recorder(), _open(), progress=False)


def test_concurrent_builders_in_threads_agree(tmp_path: Path) -> None:
    """Two builders of the same key (two independent processes, here threads) both succeed."""
    results: list[MemmapCacheFolder] = []
    barrier = threading.Barrier(2)

    def write(folder: Path, progress: bool) -> None:
        barrier.wait(timeout=10)  # both are building at the same time
        _write(folder)

    threads = [threading.Thread(target=lambda: results.append(build_once(tmp_path, "k1", write, _open())))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert len(results) == 2 and {r.folder for r in results} == {tmp_path / "k1"}
    assert sorted(os.listdir(tmp_path)) == ["k1"]


@pytest.mark.parametrize("rank", [0, 1])
def test_rank_zero_builds_first_and_the_others_wait(tmp_path: Path, rank: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    monkeypatch.setattr(core_cache, "current_context", lambda: DistContext(rank=rank, world_size=2, backend="gloo"))
    monkeypatch.setattr(core_cache, "barrier", lambda ctx=None: events.append("barrier"))

    def write(folder: Path, progress: bool) -> None:
        events.append(f"write progress={progress}")
        _write(folder)

    build_once(tmp_path, "k1", write, _open(), progress=True)
    if rank == 0:  # builds, then releases the others
        assert events == ["write progress=True", "barrier"]
    else:  # waits for rank 0 (here nobody built, so it builds itself); never shows progress
        assert events == ["barrier", "write progress=False"]
    events.clear()
    build_once(tmp_path, "k1", write, _open(), progress=True)
    assert events == ["barrier"]  # built: every rank only opens it, still collectively


def test_single_process_needs_no_barrier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core_cache, "barrier", lambda ctx=None: pytest.fail("barrier in a single process"))
    write = Recorder()
    build_once(tmp_path, "k1", write, _open(), progress=True)
    assert write.calls == [True]
