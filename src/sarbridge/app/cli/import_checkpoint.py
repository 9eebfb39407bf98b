"""``sarbridge import-checkpoint``: a released TransOSS / MOS checkpoint as a sarbridge checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from sarbridge.app.cli.common import add_overwrite


def cmd_import_checkpoint(args: argparse.Namespace) -> int:
    from sarbridge.core.errors import SarbridgeError
    from sarbridge.tasks.reid.import_checkpoint import import_released_checkpoint

    if Path(args.out).exists() and not args.overwrite:
        raise SarbridgeError(f"'{args.out}' already exists", "pass --overwrite to replace it, or choose another --out")
    res = import_released_checkpoint(args.path, args.out, source=args.source, config=args.config,
                                     overrides=args.set)
    dropped = ", ".join(res["dropped"]) or "none"
    print(f"wrote {res['out']} ({res['source']}: {res['loaded']} tensors, {res['num_classes']} classes; "
          f"dropped: {dropped})")
    print(f"evaluate it with: sarbridge evaluate --model {res['out']} --data HOSS_DIR --out runs/{res['source']}_released")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``import-checkpoint`` command."""
    p = sub.add_parser("import-checkpoint", help="convert a released TransOSS / MOS re-ID checkpoint for 'sarbridge evaluate'")
    p.add_argument("path", metavar="PATH", help="the released .pth (model.state_dict() of the TransOSS / MOS code)")
    p.add_argument("--from", dest="source", required=True, choices=["mos", "transoss"],
                   help="which code saved it (sets the SAR preprocessing the weights were trained with)")
    p.add_argument("--out", required=True, metavar="CKPT", help="the sarbridge checkpoint to write")
    add_overwrite(p, "an existing CKPT")
    p.add_argument("--config", default=None,
                   help="re-ID YAML for the rest of the config (its model must fit; default: the paper's settings)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. model.modality_embed_scale=1.5 (default: none)")
    p.set_defaults(func=cmd_import_checkpoint)
