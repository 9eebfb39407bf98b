"""Checks of what a job needs against what the machine has, made before anything is allocated or written."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sarbridge.core.errors import SarbridgeError

GIB = 1024**3


class ResourceError(SarbridgeError):
    """A job that cannot fit into this machine's memory or disk."""


def available_memory() -> int:
    """Bytes of memory available to a new allocation (``MemAvailable`` on Linux, else physical memory)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return 1 << 62  # unknown: do not refuse


def available_disk(path: str | Path) -> int:
    """Free bytes on the file system that ``path`` (or its nearest existing parent) lives on."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def _gib(n: float) -> str:
    return f"{n / GIB:,.1f} GiB"


def check_memory(nbytes: float, what: str, fix: str) -> None:
    """Refuse a job that needs more memory than is available.

    Args:
        nbytes: the job's estimated peak memory.
        what: the job, e.g. ``"a 100000 x 100000 px scene"``.
        fix: how to make it fit.

    Raises:
        ResourceError: one line with both figures and the fix.
    """
    have = available_memory()
    if nbytes > have:
        raise ResourceError(f"{what} needs about {_gib(nbytes)} of memory; {_gib(have)} are available", fix)


def check_disk(path: str | Path, nbytes: float, what: str, fix: str) -> None:
    """Refuse a job that would write more than the free space where ``path`` lives.

    Raises:
        ResourceError: one line with both figures and the fix.
    """
    have = available_disk(path)
    if nbytes > have:
        raise ResourceError(f"{what} would write about {_gib(nbytes)} to {path}; {_gib(have)} are free there", fix)
