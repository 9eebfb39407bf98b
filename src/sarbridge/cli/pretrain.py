"""Contrastive optical/SAR pretraining command: ``sarbridge pretrain``."""

from __future__ import annotations

import argparse
from pathlib import Path

from sarbridge.cli.common import add_common, config_overrides

LAYOUT_CHOICES = ("sen12", "qxs", "manifest", "bigearthnet", "synthetic")


def cmd_pretrain(args: argparse.Namespace) -> int:
    from sarbridge.engine.pretrain import load_pretrain_config, train_pretrain
    from sarbridge.report.tables import protocol_table

    cfg = load_pretrain_config(args.config, config_overrides(args, layout="data.layout"))
    metrics = train_pretrain(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
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
    p.add_argument("--config", required=True, help="YAML pretraining file (see configs/pretrain_demo.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--data", help="pair data: a folder, or the manifest CSV (overrides data.root)")
    p.add_argument("--layout", choices=LAYOUT_CHOICES, help="how the pairs are laid out (overrides data.layout)")
    p.add_argument("--out", required=True, help="run folder for checkpoints and results")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--overwrite", action="store_true", help="start over in an OUT that holds a run")
    add_common(p)
    p.set_defaults(func=cmd_pretrain)
