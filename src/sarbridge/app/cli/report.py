"""``sarbridge report RUN_DIR``: write the self-contained ``RUN_DIR/report.html``."""

from __future__ import annotations

import argparse


def cmd_report(args: argparse.Namespace) -> int:
    from sarbridge.app.report.html import write_report

    path = write_report(args.run_dir, samples=args.samples, worst=args.worst, seed=args.seed)
    print(path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sarbridge report``."""
    r = sub.add_parser("report", help="write RUN_DIR/report.html: metrics, CMC, ranked lists, training curves")
    r.add_argument("run_dir", metavar="RUN_DIR", help="run folder of sarbridge train/evaluate/demo or geo train/evaluate/demo; its report.html is "
                        "rewritten (a derived view of the run's results)")
    r.add_argument("--samples", type=int, default=8, help="random (seeded) queries shown per protocol (default: %(default)s)")
    r.add_argument("--worst", type=int, default=8, help="lowest-AP queries shown per protocol (default: %(default)s)")
    r.add_argument("--seed", type=int, default=0, help="seed of the random queries (default: %(default)s)")
    r.set_defaults(func=cmd_report)
