"""Arguments shared by several commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

_C = TypeVar("_C")


#: What ``--quiet`` means in every command.
QUIET_HELP = "no progress bars or per-epoch lines; warnings and the final summary are still printed (default: off)"


def add_common(sp: argparse.ArgumentParser, device: bool = True) -> None:
    """``--device`` and ``--quiet``."""
    if device:
        sp.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    sp.add_argument("--quiet", action="store_true", help=QUIET_HELP)


def add_model_arg(sp: argparse.ArgumentParser, help_text: str, required: bool = True) -> None:
    """``--model`` (a trained model file), with the old ``--checkpoint`` as a hidden, deprecated spelling."""
    from sarbridge.app.cli.aliases import add_deprecated_option

    group = sp.add_mutually_exclusive_group(required=required)
    group.add_argument("--model", dest="model", metavar="MODEL", help=help_text)
    add_deprecated_option(group, "--checkpoint", "--model", dest="model", metavar="MODEL")


def add_top_k(sp: argparse.ArgumentParser, default: int, what: str) -> None:
    """``--top-k`` / ``-k``: how many results to list."""
    sp.add_argument("--top-k", "-k", dest="top_k", type=int, default=default, metavar="K",
                    help=f"{what} (default: %(default)s)")


def add_overwrite(sp: argparse.ArgumentParser, what: str = "what a non-empty OUT holds") -> None:
    """``--overwrite``: replace what a previous run wrote."""
    sp.add_argument("--overwrite", action="store_true", help=f"replace {what} (default: refuse)")


def add_rerank(sp: argparse.ArgumentParser) -> None:
    """``--rerank``: the re-ranking method (the config key ``eval.rerank``)."""
    from sarbridge.core.config import RERANK_METHODS

    sp.add_argument("--rerank", choices=RERANK_METHODS, default=None,
                    help="re-rank the rankings: " + ", ".join(RERANK_METHODS) + " (default: the config's eval.rerank, "
                         "none); sets eval.rerank")


def add_run_args(sp: argparse.ArgumentParser, config_help: str, data_help: str) -> None:
    """``--config``, ``--set``, ``--data``, ``--out``, ``--resume``, ``--overwrite`` of a training command."""
    sp.add_argument("--config", required=True, help=config_help)
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    sp.add_argument("--data", help=f"{data_help}; default: the config's data.root")
    sp.add_argument("--out", required=True, help="run folder for checkpoints and results")
    sp.add_argument("--resume", action="store_true",
                    help="continue the run in OUT from its last.pt with OUT/config.yaml (default: off); a --set "
                         "that changes that config is refused (a --data holding the same files is a moved dataset, "
                         "accepted), a finished run is left as it is")
    sp.add_argument("--allow-change", action="append", metavar="KEY", default=[],
                    help="with --resume: let --set change this run-length key (optim.epochs, refine.epochs; longer "
                         "only; recorded in OUT/config_history.jsonl; default: none)")
    sp.add_argument("--overwrite", action="store_true", help="start over in an OUT that holds a run (default: off)")


def run_config(args: argparse.Namespace, load: Callable[[Any, list[str]], _C], **flags: str) -> _C | None:
    """The config of a training command: ``--config`` + overrides, or with ``--resume`` the run's own.

    With ``--resume`` the run folder's ``config.yaml`` is the config and the overrides are checked
    against it (:func:`sarbridge.core.run.plan_resume`); an allowed change is recorded in the run.

    Returns:
        The config, or None when ``--resume`` finds the run already finished (the line saying so is printed).
    """
    import shlex
    import sys

    from sarbridge.core.run import plan_resume

    overrides = config_overrides(args, **flags)
    if not getattr(args, "resume", False):
        if getattr(args, "allow_change", None):
            from sarbridge.core.errors import ConfigError

            raise ConfigError("--allow-change is for --resume only", "drop it (a new run takes any --set)")
        return load(args.config, overrides)
    plan = plan_resume(args.out, load, overrides, args.allow_change or (), config=args.config)
    words = ["--out", str(args.out), "--resume", *(w for o in overrides for w in ("--set", o)),
             *(w for k in args.allow_change for w in ("--allow-change", k))]
    plan.announce(args.out, " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name or "sarbridge", *words]))
    if plan.finished:
        print(f"run '{args.out}' already finished at epoch {plan.epochs}; nothing to do "
              "(pass --set optim.epochs=N --allow-change optim.epochs to train it longer)")
        return None
    return plan.cfg


def add_demo_folder_args(sp: argparse.ArgumentParser) -> None:
    """``--resume`` and ``--overwrite`` of a demo command."""
    sp.add_argument("--resume", action="store_true",
                    help="continue an interrupted demo in OUT: completed steps are kept (default: off)")
    sp.add_argument("--overwrite", action="store_true", help="start over in an OUT that is not empty (default: off)")


def demo_complete(out: str | Path, args: argparse.Namespace) -> bool:
    """With ``--resume``: True (and says so) when the demo in ``out`` ran to its end (``report.html``)."""
    run = Path(out)
    if args.resume and (run / "report.html").is_file() and (run / "metrics.json").is_file():
        print(f"demo in '{run}' is already complete; nothing to do (report: {run / 'report.html'})")
        return True
    return False


def add_report_flag(sp: argparse.ArgumentParser) -> None:
    """``--no-report`` of a command that ends by writing ``OUT/report.html``."""
    sp.add_argument("--no-report", action="store_true",
                    help="do not write OUT/report.html at the end (default: write it)")


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
