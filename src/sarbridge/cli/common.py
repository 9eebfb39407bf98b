"""Arguments shared by several commands."""

from __future__ import annotations

import argparse


def add_common(sp: argparse.ArgumentParser) -> None:
    """``--device`` and ``--quiet``."""
    sp.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    sp.add_argument("--quiet", action="store_true", help="no progress bars")


def config_overrides(args: argparse.Namespace, **flags: str) -> list[str]:
    """``--set`` items, then ``--data``/``--device`` and each extra ``flag=config.key`` when given.

    Example: ``config_overrides(args, direction="direction")`` adds ``direction=opt2sar`` for
    ``--direction opt2sar``.
    """
    out = list(getattr(args, "set", None) or [])
    for attr, key in {"data": "data.root", "device": "device", **flags}.items():
        value = getattr(args, attr, None)
        if value:
            out.append(f"{key}={value}")
    return out
