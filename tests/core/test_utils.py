import os
import stat

import pytest

from sarbridge.core.utils import atomic_write, atomic_write_json


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"a": 1})

    def broken(p):
        p.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text().strip().startswith("{") and '"a": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left behind


def test_atomic_write_files_are_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "x.json", [1])
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "x.json").stat().st_mode)
    assert mode == 0o644
