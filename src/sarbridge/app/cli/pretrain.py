"""Contrastive optical/SAR pretraining command: ``sarbridge pretrain``."""

from __future__ import annotations

import argparse
from pathlib import Path

from sarbridge.app.cli.common import add_common, add_run_args, run_config

LAYOUT_CHOICES = ("sen12", "qxs", "manifest", "bigearthnet", "synthetic", "os")


def cmd_pretrain(args: argparse.Namespace) -> int:
    from sarbridge.core.distributed import current_context
    from sarbridge.tasks.pretrain.config import load_pretrain_config
    from sarbridge.tasks.pretrain.task import train_pretrain
    from sarbridge.tasks.reid.results import protocol_table

    cfg = run_config(args, load_pretrain_config, layout="data.layout")
    if cfg is None:
        return 0
    metrics = train_pretrain(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    if not current_context().is_main:  # under torchrun only rank 0 prints the summary
        return 0
    out = Path(args.out)
    meta = metrics.get("meta", {})
    if "opt2sar" in metrics:
        print(f"pair retrieval on {meta.get('evaluated_on')}:")
        print(protocol_table(metrics), end="")
    else:
        print(f"no held-out pairs: {meta.get('evaluated_on')}")
    print(f"pretrained backbone: {out / 'best.pt'} (use it with: sarbridge train --set model.pretrained={out / 'best.pt'})")
    print(f"results: {out / 'metrics.json'}, {out / 'results.md'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``pretrain`` subcommand."""
    p = sub.add_parser("pretrain", help="contrastive (CLIP-style) optical/SAR pretraining of the ReID backbone")
    add_run_args(p, "YAML pretraining file (see configs/pretrain_demo.yaml)",
                 "pair data: a folder, or the manifest CSV (overrides data.root)")
    p.add_argument("--layout", choices=LAYOUT_CHOICES, help="how the pairs are laid out (default: the config's data.layout)")
    add_common(p)
    p.set_defaults(func=cmd_pretrain)
