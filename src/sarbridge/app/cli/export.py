"""``sarbridge export``: a trained model's retrieval embedding as an ONNX file."""

from __future__ import annotations

import argparse
from pathlib import Path

from sarbridge.app.cli.aliases import add_deprecated_option
from sarbridge.app.cli.common import add_model_arg, add_overwrite


def cmd_export(args: argparse.Namespace) -> int:
    from sarbridge.app.export import export_onnx
    from sarbridge.core.errors import SarbridgeError

    out = Path(args.out)
    if out.is_dir():
        raise SarbridgeError(f"--out '{out}' is a folder", "pass the ONNX file to write, e.g. --out model.onnx")
    if out.exists() and not args.overwrite:
        raise SarbridgeError(f"'{out}' already exists", "pass --overwrite to replace it, or choose another --out")
    res = export_onnx(args.model, out, opset=args.opset, verify=not args.no_verify)
    diff = res["max_abs_diff"]
    print(f"wrote {res['path']} (task {res['task']}, inputs {', '.join(res['inputs'])}, opset {res['opset']})")
    print("max abs diff vs PyTorch: " + (f"{diff:.3g}" if diff is not None else "not verified"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` command."""
    e = sub.add_parser("export", help="export a re-ID checkpoint or geo bundle to ONNX (L2-normalised embedding)")
    add_model_arg(e, "best.pt of 'sarbridge train' or geo_model.pt of 'geo train'")
    out = e.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", metavar="OUT.onnx", help="the ONNX file to write")
    add_deprecated_option(out, "--onnx", "--out", dest="out", metavar="OUT.onnx")
    add_overwrite(e, "an existing OUT.onnx")
    e.add_argument("--opset", type=int, default=17, help="ONNX opset version (default: %(default)s)")
    e.add_argument("--no-verify", action="store_true", help="skip the onnxruntime vs PyTorch check (default: check)")
    e.set_defaults(func=cmd_export)
