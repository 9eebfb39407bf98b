"""``sarbridge despeckle --input IN --out OUT``: classical speckle filtering of float SAR TIFFs.

IN is one TIFF or a folder. A folder is searched recursively for ``*.tif`` / ``*.tiff`` (or the
``--glob`` pattern, e.g. ``'*_SAR.tif'`` in a HOSS folder that also holds optical chips; add
``--no-recursive`` to stay at the top level), and every file is written under OUT with the same
relative path. A single file goes to OUT when OUT ends in .tif/.tiff and is not a folder, else into
the folder OUT under its own name. Outputs are float32 single-band TIFFs, each written atomically.
Every input is checked to be single-band before anything is written. Without --looks, L is
estimated per image (homogeneous pixels only); pass it when the data's number of looks is known.
Existing output files are never replaced without --overwrite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import cast

from sarbridge.app.cli.common import add_common, add_overwrite
from sarbridge.core.errors import ConfigError, DataError, SarbridgeError

TIFF_SUFFIXES = (".tif", ".tiff")


def _list_inputs(src: Path, out: Path, pattern: str | None, recursive: bool) -> list[Path]:
    if pattern:
        files = src.rglob(pattern) if recursive else src.glob(pattern)
    else:
        files = (p for p in (src.rglob("*") if recursive else src.iterdir()) if p.suffix.lower() in TIFF_SUFFIXES)
    out_r = out.resolve()
    keep = []
    for p in files:
        if not p.is_file():
            continue
        pr = p.resolve()
        if pr == out_r or out_r in pr.parents:  # earlier outputs written inside IN
            continue
        keep.append(p)
    return sorted(keep)


def _bands(path: Path) -> int | None:
    """Number of bands from the TIFF header without decoding pixels (None: header unreadable)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            page = cast("tifffile.TiffPage", tf.pages[0])  # the first page is never a TiffFrame
            shape = tf.series[0].shape if tf.series else page.shape
            if page.samplesperpixel > 1:
                return int(page.samplesperpixel)
            squeezed = [s for s in shape if s != 1]
            return 1 if len(squeezed) <= 2 else int(squeezed[0])
    except Exception:
        return None


def _write_tiff(path: Path, arr) -> None:  # noqa: ANN001
    import tifffile

    from sarbridge.core.utils import atomic_write

    atomic_write(path, lambda p: tifffile.imwrite(p, arr, photometric="minisblack"))


def cmd_despeckle(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from sarbridge.app.cli.aliases import deprecation_note
    from sarbridge.core.progress import progress_bar
    from sarbridge.core.utils import resolve_device
    from sarbridge.data.despeckle import available_despeckle, despeckle
    from sarbridge.data.io import read_image

    if args.paths:  # the old positional form: despeckle IN OUT
        if len(args.paths) != 2 or args.input or args.out:
            raise ConfigError("give the input and output as --input IN --out OUT", "e.g. despeckle --input sar/ --out den/")
        print(deprecation_note("despeckle IN OUT", "despeckle --input IN --out OUT"), file=sys.stderr)
        args.input, args.out = args.paths
    if not args.input or not args.out:
        raise ConfigError("despeckle needs --input and --out", "e.g. sarbridge despeckle --input sar/ --out den/")
    if args.method not in available_despeckle():
        raise ConfigError(f"unknown despeckle method '{args.method}'",
                          f"use one of {', '.join(available_despeckle())}")
    if args.window < 3 or args.window % 2 == 0:
        raise ConfigError(f"--window must be an odd integer >= 3, got {args.window}", "use 3, 5, 7, 9 or 11")
    if args.looks is not None and not args.looks > 0:
        raise ConfigError(f"--looks must be > 0, got {args.looks}", "omit it to estimate L per image")
    kw = {}
    if args.damping is not None:
        if args.method != "frost":
            raise ConfigError("--damping applies to --method frost only")
        kw["damping"] = args.damping
    src, out = Path(args.input), Path(args.out)
    if not src.exists():
        raise SarbridgeError(f"input '{src}' not found", "check the path")
    if src.resolve() == out.resolve():
        raise SarbridgeError(f"output '{out}' is the input",
                             "choose another output path; the input is never overwritten")
    if src.is_dir():
        files = _list_inputs(src, out, args.glob, not args.no_recursive)
        if not files:
            what = f"matching '{args.glob}'" if args.glob else "(.tif/.tiff)"
            where = "at the top level of" if args.no_recursive else "in"
            raise DataError(f"no SAR images {what} found {where} '{src}'", "point IN at a folder of float SAR TIFFs")
        if out.exists() and not out.is_dir():
            raise SarbridgeError(f"output '{out}' is a file but IN is a folder", "give an output folder")
        targets = [out / f.relative_to(src) for f in files]
    else:
        if src.suffix.lower() not in TIFF_SUFFIXES:
            raise DataError(f"input '{src}' is not a TIFF", "pass a float SAR .tif/.tiff or a folder of them")
        files = [src]
        into_folder = out.is_dir() or out.suffix.lower() not in TIFF_SUFFIXES
        targets = [out / src.name if into_folder else out]
        if targets[0].resolve() == src.resolve():
            raise SarbridgeError(f"output '{targets[0]}' is the input", "choose another output path")
    existing = [t for t in targets if t.exists()]
    if existing and not args.overwrite:
        raise SarbridgeError(f"{len(existing)} output file(s) exist already, e.g. '{existing[0]}'",
                             "pass --overwrite to replace them, or choose another --out")
    for f in files:
        nb = _bands(f)
        if nb is not None and nb != 1:
            raise DataError(f"'{f}' has {nb} bands; despeckling needs single-band SAR intensity",
                            "select the SAR files (e.g. --glob '*_SAR.tif')")
    device = resolve_device(args.device or "auto")
    for f, dst in progress_bar(list(zip(files, targets)), desc=f"despeckle {args.method}", unit="img",
                               enabled=not args.quiet and len(files) > 1):
        img = read_image(f)
        if img.ndim != 2:
            raise DataError(f"'{f}' has shape {img.shape}; despeckling needs a single-band image",
                            "select the SAR files (e.g. --glob '*_SAR.tif')")
        x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).to(device)
        try:
            y = despeckle(x, method=args.method, window=args.window, looks=args.looks, **kw)
        except DataError as exc:
            raise DataError(f"'{f}': {exc.message}", exc.hint) from None
        _write_tiff(dst, y.cpu().numpy().astype(np.float32))
    looks = f"L={args.looks:g}" if args.looks is not None else "L estimated per image"
    print(f"despeckled {len(files)} image(s) with {args.method} (window {args.window}, {looks}) -> {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``despeckle`` command."""
    d = sub.add_parser(
        "despeckle",
        help="filter SAR speckle (Lee, Frost, Kuan, Gamma-MAP) in one TIFF or a folder of them",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    d.add_argument("--input", metavar="IN", help="a float SAR TIFF, or a folder searched for TIFFs (required)")
    d.add_argument("--out", metavar="OUT", help="output TIFF (or folder); never the input (required)")
    d.add_argument("paths", nargs="*", metavar="IN OUT", help=argparse.SUPPRESS)  # deprecated positional form
    add_overwrite(d, "existing output files")
    d.add_argument("--method", default="lee", help="lee (default), frost, kuan or gamma_map")
    d.add_argument("--window", type=int, default=7, help="odd window size (default: %(default)s)")
    d.add_argument("--looks", type=float, default=None,
                   help="number of looks L (Cu = 1/sqrt(L)); default: estimated per image")
    d.add_argument("--damping", type=float, default=None, help="Frost damping K (default: 1.0)")
    d.add_argument("--glob", default=None, help="file pattern inside a folder (default: *.tif and *.tiff)")
    d.add_argument("--no-recursive", action="store_true", help="do not descend into sub-folders (default: descend)")
    add_common(d)
    d.set_defaults(func=cmd_despeckle)
