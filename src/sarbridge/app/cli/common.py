"""Arguments shared by several commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_common(sp: argparse.ArgumentParser) -> None:
    """``--device`` and ``--quiet``."""
    sp.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    sp.add_argument("--quiet", action="store_true", help="no progress bars")


def add_run_args(sp: argparse.ArgumentParser, config_help: str, data_help: str) -> None:
    """``--config``, ``--set``, ``--data``, ``--out``, ``--resume``, ``--overwrite`` of a training command."""
    sp.add_argument("--config", required=True, help=config_help)
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    sp.add_argument("--data", help=data_help)
    sp.add_argument("--out", required=True, help="run folder for checkpoints and results")
    sp.add_argument("--resume", action="store_true", help="continue the run in OUT (from its last.pt)")
    sp.add_argument("--overwrite", action="store_true", help="start over in an OUT that holds a run")


def add_report_flag(sp: argparse.ArgumentParser) -> None:
    """``--no-report`` of a command that ends by writing ``OUT/report.html``."""
    sp.add_argument("--no-report", action="store_true", help="do not write OUT/report.html at the end")


def write_run_report(out: str | Path, args: argparse.Namespace) -> None:
    """Write ``out/report.html`` and print its path (rank 0 only; skipped with ``--no-report``)."""
    if getattr(args, "no_report", False):
        return
    from sarbridge.core.distributed import current_context

    if not current_context().is_main:
        return
    from sarbridge.app.report.html import write_report

    print(f"report: {write_report(out)}")


def finish_demo(out: str | Path, metrics: dict[str, Any], progress: bool = True) -> Path | None:
    """What a demo ends with: the modality-gap analysis of its run folder, then ``report.html``.

    The analysis runs on the device the demo ran on (``metrics["meta"]["device"]``). Nothing is
    done when the demo evaluated nothing (a non-zero rank of a distributed run).

    Returns:
        The path of ``report.html``, or None.
    """
    if not metrics:
        return None
    from sarbridge.app.report.analyze import analyze_run
    from sarbridge.app.report.html import write_report

    analyze_run(out, device=str((metrics.get("meta") or {}).get("device", "auto")), progress=progress)
    return write_report(out)


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
