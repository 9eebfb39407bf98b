"""``sarbridge analyze RUN_DIR...``: optical/SAR modality gap before and after training, per run."""

from __future__ import annotations

import argparse
from pathlib import Path

from sarbridge.app.cli.common import add_common


def cmd_analyze(args: argparse.Namespace) -> int:
    from sarbridge.app.report.analyze import analysis_markdown, analyze_runs
    from sarbridge.core.errors import SarbridgeError

    if args.max_samples < 4:
        raise SarbridgeError(f"--max-samples must be at least 4, got {args.max_samples}")
    names, results, paths = analyze_runs(args.runs, split=args.split, max_samples=args.max_samples,
                                         method=args.method, device=args.device or "auto", data=args.data,
                                         out=args.out, progress=not args.quiet)
    for name, res in zip(names, results):
        text = analysis_markdown(res)
        table = text[text.index("| metric"):text.index("![")].rstrip()
        run = Path(res["run"])
        print(f"{name}: {res['samples']['optical']} optical + {res['samples']['sar']} SAR ({res['split']})")
        print(table)
        print(f"results: {run / 'analysis.json'}, {run / 'analysis.md'}, {run / res['images'][0]}\n")
    if paths:
        print(f"comparison: {', '.join(str(p) for p in paths)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``analyze`` subcommand."""
    a = sub.add_parser("analyze", help="measure and picture the optical/SAR modality gap before and after training")
    a.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="run folder(s) of 'sarbridge train' or 'geo train', or an ablation folder")
    a.add_argument("--split", default="test", choices=("test", "val", "train"),
                   help="which images of the run's data to embed (default: %(default)s)")
    a.add_argument("--max-samples", type=int, default=2000, help="images per run, stratified by modality (default: %(default)s)")
    a.add_argument("--method", default="tsne", choices=("tsne", "pca"), help="2-D projection of the picture (default: %(default)s)")
    a.add_argument("--data", help="data folder or manifest CSV (default: the one recorded in the run)")
    a.add_argument("--out", help="folder for comparison.md/.json with several runs (default: the first run's parent)")
    add_common(a)
    a.set_defaults(func=cmd_analyze)
