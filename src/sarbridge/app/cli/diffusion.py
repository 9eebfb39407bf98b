"""Diffusion commands: ``diffusion-train`` (train a Brownian Bridge) and ``translate`` (sample with it)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sarbridge.app.cli.common import add_common, add_model_arg, add_overwrite, add_run_args, run_config


def cmd_diffusion_train(args: argparse.Namespace) -> int:
    from sarbridge.core.distributed import current_context
    from sarbridge.tasks.bridge.config import load_diffusion_config
    from sarbridge.tasks.bridge.train import train_diffusion

    cfg = run_config(args, load_diffusion_config, direction="direction")
    if cfg is None:
        return 0
    metrics = train_diffusion(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    if not current_context().is_main:  # under torchrun only rank 0 prints the summary
        return 0
    last = metrics["history"][-1] if metrics["history"] else {}
    shown = ", ".join(f"{k}={last[k]:.4g}" for k in ("loss", "val_l1", "val_psnr") if k in last)
    d = metrics["data"]
    print(f"{cfg.direction}: {d['train']['pairs']} training / {d['val']['pairs']} validation pairs "
          f"({d['format']}), {metrics['train_steps']} steps; last epoch {shown}")
    print(f"selected epoch {metrics['selected_epoch'] + 1} ({metrics['selection']}); "
          f"checkpoint: {metrics['best_checkpoint']}; metrics: {Path(args.out) / 'metrics.json'}")
    return 0


def _collect_inputs(path: str) -> list[Path]:
    from sarbridge.core.errors import DataError
    from sarbridge.data.io import IMAGE_SUFFIXES

    p = Path(path)
    if p.is_file():
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"input '{p}' is not an image file ({p.suffix or 'no suffix'})",
                            f"pass one of {', '.join(sorted(IMAGE_SUFFIXES))} or a folder of them")
        return [p]
    if not p.is_dir():
        raise DataError(f"input '{p}' not found", "pass an image file or a folder of images")
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"input folder '{p}' holds no images", f"add {', '.join(sorted(IMAGE_SUFFIXES))} files")
    return files


def cmd_translate(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from sarbridge.core.errors import DataError, SarbridgeError
    from sarbridge.core.progress import progress_bar
    from sarbridge.core.run import check_output_folder
    from sarbridge.core.utils import atomic_write, atomic_write_json
    from sarbridge.tasks.bridge.translate import BridgeTranslator, modality_from_name

    if args.samples < 1 or (args.steps is not None and args.steps < 1) or args.batch_size < 1:
        raise SarbridgeError("--samples, --steps and --batch-size must be >= 1")
    files = _collect_inputs(args.input)  # check the input and the output before loading the model
    check_output_folder(args.out, args.overwrite, what="output folder")
    tr = BridgeTranslator.from_checkpoint(args.model, device=args.device or "auto", use_ema=not args.no_ema)
    if args.direction and args.direction != tr.direction:
        raise SarbridgeError(
            f"model '{args.model}' translates {tr.direction}, not {args.direction}",
            f"pass --direction {tr.direction} or a {args.direction} checkpoint",
        )
    wrong = [f for f in files if modality_from_name(f) not in (None, tr.source_modality)]
    if wrong and not args.skip_mismatched:
        raise DataError(
            f"{len(wrong)} of {len(files)} inputs are not {tr.source_modality} images by their name "
            f"(e.g. '{wrong[0].name}'), but this {tr.direction} model translates {tr.source_modality} images",
            "pass the other modality's checkpoint, or --skip-mismatched to ignore those files",
        )
    files = [f for f in files if f not in set(wrong)]
    if not files:
        raise DataError(f"no {tr.source_modality} image left in '{args.input}'", "check the input folder")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise DataError(f"'{stems[f.stem].name}' and '{f.name}' would write the same outputs",
                            "rename one of them")
        stems[f.stem] = f
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = tr.sample_steps if args.steps is None else args.steps
    bar = progress_bar(total=len(files), desc=f"translate {tr.direction}", unit="img", enabled=not args.quiet)
    written: list[str] = []
    try:
        for s in range(0, len(files), args.batch_size):
            chunk = files[s:s + args.batch_size]
            gen = tr.translate_files(chunk, samples=args.samples, steps=steps, seed=args.seed,
                                     batch_size=args.batch_size, eta=args.eta, start_index=s)
            for f, imgs in zip(chunk, gen):
                for j, img in enumerate(imgs):
                    target = out / f"{f.stem}_k{j}.png"
                    arr = np.ascontiguousarray(img)

                    def save_png(p: Path, a: np.ndarray = arr) -> None:
                        Image.fromarray(a).save(p, format="PNG")

                    atomic_write(target, save_png)
                    written.append(target.name)
            bar.update(len(chunk))
    finally:
        bar.close()
    atomic_write_json(out / "translate.json", {
        "checkpoint": str(args.model), "direction": tr.direction, "input": str(args.input),
        "inputs": len(files), "skipped": [f.name for f in wrong], "samples": args.samples, "steps": steps,
        "seed": args.seed, "eta": tr.eta if args.eta is None else args.eta, "ema": tr.info.get("ema"),
        "resolution": tr.resolution, "device": str(tr.device), "outputs": written,
    })
    print(f"wrote {len(written)} {tr.target_modality} images ({len(files)} inputs x {args.samples} samples, "
          f"{steps} steps) to {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``diffusion-train`` and ``translate``."""
    t = sub.add_parser("diffusion-train", help="train a Brownian Bridge diffusion model on paired optical/SAR images")
    add_run_args(t, "YAML diffusion config (see configs/bbdm_demo.yaml)",
                 "HOSS folder, synthetic set (pairs.csv) or folder with opt/ + sar/")
    t.add_argument("--direction", choices=("opt2sar", "sar2opt"),
                   help="translation direction (default: the config's direction)")
    add_common(t)
    t.set_defaults(func=cmd_diffusion_train)

    r = sub.add_parser("translate", help="translate optical images to pseudo-SAR (or back) with a trained bridge")
    add_model_arg(r, "best.pt of 'diffusion-train'")
    r.add_argument("--input", required=True, help="an image file or a folder of images")
    r.add_argument("--direction", choices=("opt2sar", "sar2opt"),
                   help="must match the model's (checked; default: the model's)")
    r.add_argument("--samples", type=int, default=1, help="samples per input, K (default: %(default)s)")
    r.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's, 200)")
    r.add_argument("--seed", type=int, default=0, help="random seed of the sampler (default: %(default)s)")
    r.add_argument("--eta", type=float, default=None, help="stochasticity (default: the model's, 1.0)")
    r.add_argument("--batch-size", type=int, default=8, help="inputs per network batch (default: %(default)s)")
    r.add_argument("--skip-mismatched", action="store_true",
                   help="skip inputs whose _RGB/_SAR name suffix is the wrong modality (default: fail)")
    r.add_argument("--no-ema", action="store_true", help="sample with the raw weights instead of the EMA (default: EMA)")
    r.add_argument("--out", required=True, help="output folder for {stem}_k{j}.png and translate.json")
    add_overwrite(r)
    add_common(r)
    r.set_defaults(func=cmd_translate)
