"""Progress display: a bar on a terminal, plain lines in a piped log.

:func:`progress_bar` is the one way sarbridge shows progress. On a terminal it is a ``tqdm`` bar.
When standard error is not a terminal (a log file, ``| tee``, a CI job, a scheduler) a bar's
carriage returns turn into one unreadable line, so it prints plain lines instead, at most one every
``interval`` seconds (``desc: 120/400 (30%), 8.1 it/s, ETA 35 s``), and a last line when a loop that
printed something ends. Loops shorter than ``interval`` print nothing. ``SARBRIDGE_PROGRESS=bar``
or ``=plain`` forces one style.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm.auto import tqdm

__all__ = ["PlainProgress", "progress_bar", "use_bars"]

#: Seconds between two plain progress lines.
PLAIN_INTERVAL_S = 30.0


def use_bars(stream: TextIO | None = None) -> bool:
    """Whether progress shows as a bar (a terminal) or as plain lines (anything else)."""
    forced = os.environ.get("SARBRIDGE_PROGRESS", "").strip().lower()
    if forced in ("bar", "plain"):
        return forced == "bar"
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class PlainProgress:
    """A tqdm-like counter that writes occasional plain lines (``update``, iteration, ``close``)."""

    def __init__(self, iterable: Iterable[Any] | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", stream: TextIO | None = None, interval: float = PLAIN_INTERVAL_S,
                 disable: bool = False) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream or sys.stderr
        self.interval, self.disable = interval, disable
        self.n = 0
        self.postfix = ""
        self._start = self._last = time.monotonic()
        self._printed = False
        self._closed = False

    def line(self) -> str:
        """The current progress line."""
        elapsed = time.monotonic() - self._start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        done = f"{self.n}/{self.total} ({100.0 * self.n / self.total:.0f}%)" if self.total else f"{self.n}"
        parts = [f"{self.desc}: {done}" if self.desc else done, f"{rate:.1f} {self.unit}/s"]
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"ETA {_duration((self.total - self.n) / rate)}")
        elif self.total and self.n >= self.total:
            parts.append(f"done in {_duration(elapsed)}")
        if self.postfix:
            parts.append(self.postfix)
        return ", ".join(parts)

    def _emit(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self._printed = True
        self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items; print a line if ``interval`` seconds passed since the last one."""
        self.n += n
        if not self.disable and time.monotonic() - self._last >= self.interval:
            self._emit()

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        """Extra ``key=value`` fields shown at the end of the next line."""
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = " ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """Change the label of the following lines."""
        self.desc = desc or ""

    def write(self, text: str) -> None:
        """Print a message line (tqdm's ``write``)."""
        print(text, file=self.stream, flush=True)

    def refresh(self) -> None:
        """Nothing to redraw for plain lines."""

    def close(self) -> None:
        """Print the final line if this loop printed any before."""
        if not self._closed and not self.disable and self._printed:
            self._emit()
        self._closed = True

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("PlainProgress without an iterable cannot be iterated; call update() instead")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return int(self.total or 0)

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", enabled: bool = True, leave: bool = False, disable: bool | None = None,
                 **tqdm_kwargs: Any) -> Any:
    """A progress display for a loop: a tqdm bar on a terminal, plain lines otherwise.

    Args:
        iterable: what to iterate over (or ``None`` and call ``update``).
        total: number of items when ``iterable`` has no length.
        desc: label of the bar or lines.
        unit: what an item is (``img``, ``patch``...).
        enabled: ``False`` shows nothing (``--quiet``).
        leave: keep the finished bar on the terminal.
        disable: tqdm's spelling of ``not enabled`` (wins when given).
        **tqdm_kwargs: passed to tqdm when a bar is shown (``dynamic_ncols`` is always on).

    Returns:
        A tqdm bar or a :class:`PlainProgress`; both iterate, ``update``, ``set_postfix``, ``write``
        and ``close``.
    """
    if disable is not None:
        enabled = not disable
    tqdm_kwargs.pop("dynamic_ncols", None)
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if use_bars():
        bar = tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=leave, dynamic_ncols=True,
                   **tqdm_kwargs)
        return bar if iterable is None else _CountingBar(iterable, bar)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, disable=not enabled)


class _CountingBar:
    """A tqdm bar that counts the items of an iterable it never touches itself.

    tqdm given the iterable opens an iterator of it when it is built: for a shuffled DataLoader
    that draws from the global torch RNG once more, so training would depend on whether stderr is
    a terminal. Here the iterable is iterated exactly once, by the loop, as without a bar.
    """

    def __init__(self, iterable: Iterable[Any], bar: Any) -> None:
        self.iterable, self.bar = iterable, bar

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable:
                yield item
                self.bar.update(1)
        finally:
            self.bar.close()

    def __len__(self) -> int:
        return int(self.bar.total or 0)

    def __getattr__(self, name: str) -> Any:  # set_postfix, write, update, close, n, total ...
        return getattr(self.bar, name)

    def __enter__(self) -> _CountingBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
