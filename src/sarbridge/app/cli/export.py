"""``sarbridge export``: a trained model's retrieval embedding as an ONNX file."""

from __future__ import annotations

import argparse


def cmd_export(args: argparse.Namespace) -> int:
    from sarbridge.app.export import export_onnx

    res = export_onnx(args.checkpoint, args.onnx, opset=args.opset, verify=not args.no_verify)
    diff = res["max_abs_diff"]
    print(f"wrote {res['path']} (task {res['task']}, inputs {', '.join(res['inputs'])}, opset {res['opset']})")
    print("max abs diff vs PyTorch: " + (f"{diff:.3g}" if diff is not None else "not verified"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` command."""
    e = sub.add_parser("export", help="export a re-ID checkpoint or geo bundle to ONNX (L2-normalised embedding)")
    e.add_argument("--checkpoint", required=True, help="best.pt of 'sarbridge train' or geo_model.pt")
    e.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    e.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")
    e.add_argument("--no-verify", action="store_true", help="skip the onnxruntime vs PyTorch check")
    e.set_defaults(func=cmd_export)
