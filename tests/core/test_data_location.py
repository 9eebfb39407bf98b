"""The data-path digests that let a moved dataset resume (and refuse a changed one)."""

from __future__ import annotations

import shutil
from pathlib import Path

from sarbridge.core.data_location import data_digest, moved_data, read_record, write_record


def _tree(root: Path) -> Path:
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "x.png").write_bytes(b"12345")
    (root / "a" / "b" / "y.png").write_bytes(b"1")
    (root / "top.csv").write_text("id\n")
    return root


def test_digest_follows_names_and_sizes_not_places(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    d = data_digest(str(src))
    assert d is not None and d["files"] == 3
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(src, copy)
    assert data_digest(copy) == d  # a copy or a move keeps it
    (copy / ".hidden").write_text("x")
    (copy / "cache").mkdir()
    (copy / "cache" / "feats.npy").write_bytes(b"0" * 10)
    assert data_digest(copy) == d  # hidden files and cache folders are not the data
    (copy / "a" / "x.png").write_bytes(b"123456")  # resized
    assert data_digest(copy) != d
    (copy / "a" / "x.png").write_bytes(b"12345")
    (copy / "a" / "x.png").rename(copy / "a" / "z.png")  # renamed
    assert data_digest(copy) != d
    assert data_digest(tmp_path / "nowhere") is None and data_digest("") is None and data_digest(None) is None
    (tmp_path / "empty").mkdir()
    assert data_digest(tmp_path / "empty") is None  # no files: nothing to recognise a moved copy by
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "a").symlink_to(src / "a", target_is_directory=True)  # a root made of links is followed
    (linked / "top.csv").write_text("id\n")
    (linked / "loop").symlink_to(linked, target_is_directory=True)  # and a link loop ends
    assert data_digest(linked) == d
    (copy / "a" / "z.png").rename(copy / "a" / "x.png")
    (copy / "geo_cache").mkdir()
    (copy / "geo_cache" / "x.npy").write_bytes(b"1")
    assert data_digest(copy) == d  # cache folders (by name) are not the data
    single = data_digest(src / "top.csv")
    assert single == {"digest": single["digest"], "files": 1}
    assert data_digest([str(src / "top.csv"), str(src)]) not in (None, d, single)  # lists of paths


def test_moved_data_needs_a_record_and_the_same_files(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    run = tmp_path / "run"
    run.mkdir()
    assert moved_data(run, "data.root", str(src)) == (False, moved_data(run, "data.root", str(src))[1])
    assert "recorded no digest" in moved_data(run, "data.root", str(src))[1]
    write_record(run, {"data.root": str(src), "data.map": "", "seed": 0})
    assert set(read_record(run)) == {"data.root"}
    new = tmp_path / "new"
    shutil.move(str(src), str(new))
    ok, note = moved_data(run, "data.root", str(new))
    assert ok and f"moved from {src} to {new}" in note
    (new / "top.csv").unlink()
    ok, why = moved_data(run, "data.root", str(new))
    assert not ok and "2 files vs 3" in why
    assert moved_data(run, "data.root", str(tmp_path / "gone")) == (False, f"nothing is there at {tmp_path / 'gone'}")
