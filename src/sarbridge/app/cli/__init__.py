"""The ``sarbridge`` command line: parses arguments, loads configs, calls one function per command.

Each command group lives in its own module with a ``register(subparsers)`` function. Errors caused by
input (paths, data, configs, checkpoints) print one ``error: ...`` line and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from sarbridge.core.errors import SarbridgeError
from sarbridge.core.threads import configure_threads

COMMAND_MODULES = (
    "reid", "pretrain", "despeckle", "diffusion", "ablate", "geo", "index", "export", "report", "analyze", "serve",
    "import_checkpoint",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered command."""
    import importlib
    import importlib.util

    p = argparse.ArgumentParser(prog="sarbridge", description="Cross-modal optical <-> SAR retrieval.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for torch (default: SARBRIDGE_THREADS, else OMP_NUM_THREADS, else the CPUs "
                        "this process may use); idle threads always sleep instead of spinning")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(f"sarbridge.app.cli.{name}") is not None:
            importlib.import_module(f"sarbridge.app.cli.{name}").register(sub)
    return p


def _group_open() -> bool:
    """Whether a process group exists (without importing torch for commands that never did)."""
    mod = sys.modules.get("torch.distributed")
    return bool(mod is not None and mod.is_available() and mod.is_initialized())


def _leave_process_group() -> None:
    """After a command that succeeded under ``torchrun``: every rank waits for the others, then
    leaves the group (:func:`sarbridge.core.distributed.shutdown`). Commands that never touched
    the distributed module pay nothing (it is not even imported). The command's work is complete
    here, so a failure to leave (a peer that died meanwhile) is one warning line, not an error."""
    if "sarbridge.core.distributed" not in sys.modules:
        return
    distributed = sys.modules["sarbridge.core.distributed"]
    try:
        distributed.shutdown()
    except Exception as exc:  # noqa: BLE001 - a broken group at the very end; the results are written
        print(f"warning: leaving the process group failed after the command finished ({exc}); "
              "its results are written", file=sys.stderr)
        with contextlib.suppress(Exception):
            distributed.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sarbridge`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from sarbridge import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if os.environ.get("SARBRIDGE_THREAD_SETUP", "1") != "0":
            configure_threads(args.threads)
        had_group = _group_open()  # a caller's own process group is left to the caller
        code = int(args.func(args))
        if not had_group:
            _leave_process_group()
        return code
    except SarbridgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if hasattr(args, "resume"):  # the commands that can continue where they stopped
            print("interrupted; the completed steps and the last complete checkpoint are kept "
                  "(continue: the same command with --resume)", file=sys.stderr)
        else:
            print("interrupted; files are written whole or not at all (run the command again, with --overwrite "
                  "where it refuses a used --out)", file=sys.stderr)
        return 130
