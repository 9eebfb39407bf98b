"""Jobs too large for the machine are refused up front, in one line, before anything is allocated or written."""

from __future__ import annotations

import pytest

from sarbridge.app.cli import main
from sarbridge.core import resources
from sarbridge.core.resources import ResourceError, available_disk, available_memory, check_disk, check_memory


def test_checks_compare_against_what_is_available(monkeypatch, tmp_path):
    monkeypatch.setattr(resources, "available_memory", lambda: 10 * resources.GIB)
    check_memory(9 * resources.GIB, "a job", "shrink it")
    with pytest.raises(ResourceError) as exc:
        check_memory(11 * resources.GIB, "a job", "shrink it")
    assert str(exc.value) == "a job needs about 11.0 GiB of memory; 10.0 GiB are available; fix: shrink it"
    free = available_disk(tmp_path)
    check_disk(tmp_path / "not" / "yet", free // 2, "a set", "write less")  # the nearest existing parent counts
    with pytest.raises(ResourceError, match="would write about"):
        check_disk(tmp_path / "not" / "yet", free * 2, "a set", "write less")
    assert 0 < available_memory() and 0 < free


@pytest.mark.parametrize("argv, needle", [
    (["synth", "--ids", "99999999999"], "99,999,999,999 identities"),
    (["demo", "--data", "synthetic", "--ids", "100000000"], "100,000,000 identities"),
    (["geo", "demo", "--size", "1000000"], "1,000,000 x 1,000,000 px scene"),
    (["geo", "synth", "--size", "1000000"], "1,000,000 x 1,000,000 px scene"),
])
def test_absurd_sizes_end_in_one_line_and_write_nothing(argv, needle, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "fix:" in err and "\n" not in err, err
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))
