"""Arguments shared by several commands."""

from __future__ import annotations

import argparse


def add_common(sp: argparse.ArgumentParser) -> None:
    """``--device`` and ``--quiet``."""
    sp.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    sp.add_argument("--quiet", action="store_true", help="no progress bars")
