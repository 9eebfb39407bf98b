"""Progress: bars only on a terminal; plain, rate-limited lines in a piped log."""

from __future__ import annotations

import io

import pytest
import torch
from torch.utils.data import DataLoader

from sarbridge.core import progress as progress_mod
from sarbridge.core.progress import PlainProgress, progress_bar, use_bars


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SARBRIDGE_PROGRESS", raising=False)
    assert use_bars(_Tty()) is True
    assert use_bars(io.StringIO()) is False
    monkeypatch.setenv("SARBRIDGE_PROGRESS", "plain")
    assert use_bars(_Tty()) is False
    monkeypatch.setenv("SARBRIDGE_PROGRESS", "bar")
    assert use_bars(io.StringIO()) is True


def test_piped_progress_is_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SARBRIDGE_PROGRESS", "plain")
    bar = progress_bar(range(3), desc="x")
    assert isinstance(bar, PlainProgress)
    assert list(bar) == [0, 1, 2]
    monkeypatch.setenv("SARBRIDGE_PROGRESS", "bar")
    assert not isinstance(progress_bar(range(3), desc="x", enabled=False), PlainProgress)


def test_plain_lines_are_rate_limited_and_readable(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    p = PlainProgress(total=400, desc="embedding map patches", unit="patch", stream=out, interval=30.0)
    for _ in range(80):  # 80 items in 10 s: under the interval, nothing printed
        clock[0] += 0.125
        p.update()
    assert out.getvalue() == ""
    clock[0] += 20.0  # 30 s since the start: one line
    p.update(40)
    lines = out.getvalue().splitlines()
    assert lines == ["embedding map patches: 120/400 (30%), 4.0 patch/s, ETA 70 s"]
    p.update(280)
    p.close()
    p.close()  # closing twice prints once
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("embedding map patches: 400/400 (100%)") and "done in 30 s" in lines[1]


def test_short_loops_print_nothing_and_quiet_prints_nothing() -> None:
    out = io.StringIO()
    assert list(PlainProgress(range(5), desc="fast", stream=out)) == list(range(5))
    assert out.getvalue() == ""
    quiet = PlainProgress(range(5), desc="q", stream=out, interval=0.0, disable=True)
    assert list(quiet) == list(range(5)) and out.getvalue() == ""
    loud = PlainProgress(range(2), desc="l", stream=out, interval=0.0)
    list(loud)
    assert out.getvalue().splitlines()[-1].startswith("l: 2/2 (100%)")


@pytest.mark.parametrize("style", ["bar", "plain"])
@pytest.mark.parametrize("enabled", [True, False])
def test_progress_never_draws_from_the_rng(monkeypatch: pytest.MonkeyPatch, style: str, enabled: bool) -> None:
    """A shuffled DataLoader under a bar or plain lines: the same batches and the same RNG state after
    as iterating it bare (tqdm given the iterable opened an extra iterator, one more RNG draw, so
    training depended on whether stderr was a terminal)."""
    def run(wrap):  # noqa: ANN001, ANN202 - a local helper
        torch.manual_seed(0)
        loader = DataLoader(list(range(10)), batch_size=2, shuffle=True)
        seen = []
        for batch in wrap(loader):
            seen.append((batch.tolist(), torch.rand(1).item()))
        return seen

    monkeypatch.setenv("SARBRIDGE_PROGRESS", style)
    bare = run(lambda d: d)
    bar = run(lambda d: progress_bar(d, desc="epoch", enabled=enabled))
    assert bar == bare
    shown = progress_bar(DataLoader(list(range(4)), batch_size=2), desc="x", enabled=enabled)
    assert len(shown) == 2
    shown.set_postfix(loss="0.1")
    shown.close()
