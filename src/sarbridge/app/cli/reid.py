"""Ship re-identification commands: train, evaluate, demo, synth."""

from __future__ import annotations

import argparse
from pathlib import Path

from sarbridge.app.cli.aliases import deprecated_command
from sarbridge.app.cli.common import (
    add_common,
    add_demo_folder_args,
    add_model_arg,
    add_overwrite,
    add_report_flag,
    add_rerank,
    add_run_args,
    demo_complete,
    finish_demo,
    run_config,
    write_run_report,
)


def _print_summary(metrics: dict, out: Path) -> None:
    from sarbridge.core.distributed import current_context
    from sarbridge.tasks.reid.results import protocol_table

    if not current_context().is_main:  # under torchrun only rank 0 prints the summary
        return
    print(protocol_table(metrics), end="")
    if "protocol_source" in metrics:
        print(f"protocols: {metrics['protocol_source']}")
    print(f"results: {out / 'metrics.json'}, {out / 'results.md'}")


def cmd_train(args: argparse.Namespace) -> int:
    from sarbridge.tasks.reid.config import load_reid_config
    from sarbridge.tasks.reid.task import train_reid

    cfg = run_config(args, load_reid_config)
    if cfg is None:
        return 0
    metrics = train_reid(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    _print_summary(metrics, Path(args.out))
    write_run_report(args.out, args)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from sarbridge.tasks.reid.task import evaluate_reid

    overrides = list(args.set or []) + ([f"eval.rerank={args.rerank}"] if args.rerank else [])
    metrics = evaluate_reid(args.model, args.out, data=args.data, device=args.device or "auto",
                            progress=not args.quiet, overrides=overrides, overwrite=args.overwrite)
    _print_summary(metrics, Path(args.out))
    write_run_report(args.out, args)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from sarbridge.tasks.reid.demo import run_demo

    if demo_complete(Path(args.out), args):
        return 0
    overrides = list(args.set or [])
    if args.device:
        overrides.append(f"device={args.device}")
    metrics = run_demo(args.out, data=args.data, overrides=overrides, num_ids=args.ids, progress=not args.quiet,
                       resume=args.resume, overwrite=args.overwrite)
    report = finish_demo(args.out, metrics, progress=not args.quiet)
    _print_summary(metrics, Path(args.out))
    if report is not None:
        print(f"report: {report}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from sarbridge.core.run import check_output_folder
    from sarbridge.data.synthetic import generate_hoss_dataset

    check_output_folder(args.out, args.overwrite, what="dataset folder")
    root = generate_hoss_dataset(args.out, num_ids=args.ids, seed=args.seed, looks=args.looks,
                                 num_distractors=args.distractors, progress=not args.quiet)
    print(f"wrote a synthetic HOSS-layout dataset to {root}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the re-identification subcommands."""
    t = sub.add_parser("train", help="train a ship re-identification model and evaluate it")
    add_run_args(t, "YAML experiment file (see configs/)", "dataset folder (overrides data.root)")
    add_report_flag(t)
    add_common(t)
    t.set_defaults(func=cmd_train)

    for name in ("evaluate", "eval"):  # 'eval': the old name, hidden and deprecated
        description = "Evaluate a re-ID model (best.pt of 'sarbridge train') under ALL->ALL, Optical->SAR and SAR->Optical."
        if name == "evaluate":
            e = sub.add_parser(name, help="evaluate a re-ID model under ALL->ALL, Optical->SAR, SAR->Optical",
                               description=description)
        else:
            e = sub.add_parser(name, description=description)
        add_model_arg(e, "best.pt of 'sarbridge train' (or of 'import-checkpoint')")
        e.add_argument("--data", help="HOSS folder or manifest CSV (default: the data the model was trained on)")
        e.add_argument("--out", required=True, help="results folder (refused when not empty, unless --overwrite)")
        add_overwrite(e)
        add_rerank(e)
        e.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="evaluation-time override, e.g. fusion.enabled=true fusion.opt2sar_checkpoint=CKPT "
                            "(repeatable)")
        add_report_flag(e)
        add_common(e)
        e.set_defaults(func=cmd_eval if name == "evaluate" else deprecated_command("eval", "evaluate", cmd_eval))

    d = sub.add_parser("demo", help="train + evaluate on the embedded HOSS sample (or --data synthetic)")
    d.add_argument("--out", default="runs/demo", help="demo folder (default: %(default)s)")
    d.add_argument("--data", default="hoss",
                   help="hoss (the embedded sample), synthetic (generated), or a HOSS folder (default: %(default)s)")
    d.add_argument("--ids", type=int, default=100, help="identities of the synthetic set (default: %(default)s)")
    d.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a key of the demo config (repeatable)")
    add_demo_folder_args(d)
    add_common(d)
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("synth", help="generate a synthetic optical/SAR ship set in the HOSS layout")
    s.add_argument("--out", required=True, help="dataset folder to write (HOSS layout)")
    s.add_argument("--ids", type=int, default=100, help="ship identities (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    s.add_argument("--looks", type=float, default=4.0, help="SAR speckle looks L (default: %(default)s)")
    s.add_argument("--distractors", type=int, default=10,
                   help="gallery images of ships that are never queried (default: %(default)s)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace the set in an OUT that is not empty (its images are removed; default: refuse)")
    add_common(s, device=False)
    s.set_defaults(func=cmd_synth)
