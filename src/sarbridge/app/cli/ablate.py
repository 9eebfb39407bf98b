"""``sarbridge ablate``: the cumulative MOS ablation (baseline, +denoise, +CMAL, +CDGF)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sarbridge.app.cli.common import add_common, add_overwrite, config_overrides


def cmd_ablate(args: argparse.Namespace) -> int:
    from sarbridge.core.errors import ConfigError
    from sarbridge.core.run import check_output_folder
    from sarbridge.tasks.reid.ablation import run_ablation
    from sarbridge.tasks.reid.config import load_reid_config

    if args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
    cfg = load_reid_config(args.config, config_overrides(args))
    check_output_folder(args.out, args.overwrite, what="ablation folder")
    run_ablation(cfg, args.out, seeds=args.seeds, progress=not args.quiet)
    out = Path(args.out)
    print((out / "ablation.md").read_text(), end="")
    print(f"results: {out / 'ablation.json'}, {out / 'ablation.md'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``ablate`` subcommand."""
    a = sub.add_parser("ablate", help="MOS ablation: baseline, +denoise, +CMAL, +CDGF with one seed and budget")
    a.add_argument("--config", required=True, help="experiment YAML (its 'ablation' section defines the steps)")
    a.add_argument("--out", required=True, help="ablation folder: one run per row and seed, ablation.json/.md")
    add_overwrite(a)
    a.add_argument("--seeds", type=int, default=1,
                   help="repeat over this many seeds; mean and std reported (default: %(default)s)")
    a.add_argument("--data", help="dataset folder (default: the config's data.root)")
    a.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    add_common(a)
    a.set_defaults(func=cmd_ablate)
