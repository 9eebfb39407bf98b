"""Sampling steps vs speed and fidelity of the Brownian Bridge translator (opt2sar) on CPU.

1. Generate a synthetic HOSS-layout set with same-pose optical/SAR pairs (``pairs.csv``).
2. Train the demo bridge (``configs/bbdm_demo.yaml``, 64x32 pixels) on the training ids' pairs for a
   fixed number of optimiser steps (``sarbridge.tasks.bridge.train.train_diffusion``; model selection on
   held-out *training* ids).
3. For every step count in ``--steps`` (default 5, 10, 25, 50, 200) translate the optical images of
   the held-out *test* ids' same-pose pairs (one sample each, seed 0) and measure

   * sampling time per image (batched, ``--batch-size`` inputs per network call; after a warm-up),
     and its ratio to the 200-step reference measured in the same run;
   * PSNR and SSIM (uniform 7x7, ``sarbridge.data.image_quality``) of the generated SAR against the
     ground-truth same-pose SAR chip, both as the 8-bit grey image the re-identification model sees
     (``PreprocessSpec.to_uint8``) at the model resolution, data range 255.

   Two references without diffusion: the mean training SAR image (a constant prediction) and the
   optical input itself in grey.

Usage: ``python benchmarks/diffusion_steps.py [--out runs/bench_diffusion] [--docs docs/diffusion.md]``.
Writes ``OUT/results.json`` and ``OUT/results.md``; with ``--docs`` it replaces the generated block
of the page (between ``<!-- bench:begin -->`` and ``<!-- bench:end -->``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

# On a shared machine, OpenMP threads that spin while waiting for a descheduled peer made training
# ~10x slower with 2 threads; passive waiting avoids that (must be set before torch starts OpenMP).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sarbridge.core.utils import atomic_write_json, atomic_write_text  # noqa: E402
from sarbridge.data.pairs import read_synthetic_pairs  # noqa: E402
from sarbridge.data.records import SAR  # noqa: E402
from sarbridge.data.synthetic import generate_hoss_dataset  # noqa: E402
from sarbridge.tasks.bridge.config import load_diffusion_config  # noqa: E402
from sarbridge.tasks.bridge.pairs import BridgePairDataset  # noqa: E402
from sarbridge.tasks.bridge.train import train_diffusion  # noqa: E402
from sarbridge.tasks.bridge.translate import BridgeTranslator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "bbdm_demo.yaml"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

try:  # the project's measures (uniform 7x7 SSIM, PSNR with an explicit range)
    from sarbridge.data.image_quality import psnr as _psnr
    from sarbridge.data.image_quality import ssim as _ssim

    def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(_psnr(a.astype(np.float64), b.astype(np.float64), data_range=255.0))

    def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(_ssim(a.astype(np.float64), b.astype(np.float64), data_range=255.0, window=7))

    MEASURES = "sarbridge.data.image_quality (PSNR R=255; SSIM uniform 7x7, R=255)"
except ImportError:  # pragma: no cover - local fallback with the same definitions
    import torch.nn.functional as F

    def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
        return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-12))

    def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(a.astype(np.float64))[:, None]
        y = torch.from_numpy(b.astype(np.float64))[:, None]
        k = torch.full((1, 1, 7, 7), 1 / 49, dtype=torch.float64)
        c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
        mx, my = F.conv2d(x, k), F.conv2d(y, k)
        sxx, syy, sxy = F.conv2d(x * x, k) - mx ** 2, F.conv2d(y * y, k) - my ** 2, F.conv2d(x * y, k) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
        return s.flatten(1).mean(1).numpy()

    MEASURES = "local PSNR (R=255) and SSIM (uniform 7x7, R=255)"


def grey(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64).mean(-1)


def fmt_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/bench_diffusion")
    ap.add_argument("--docs", default=None, help="docs page whose generated block is replaced")
    ap.add_argument("--ids", type=int, default=80, help="identities of the synthetic set (half for training)")
    ap.add_argument("--per-id", type=int, default=3, help="optical and SAR images per id (same-pose pairs)")
    ap.add_argument("--train-steps", type=int, default=300, help="optimiser steps (batch 16)")
    ap.add_argument("--steps", default="5,10,25,50,200", help="sampler step counts")
    ap.add_argument("--max-test", type=int, default=32, help="test pairs evaluated")
    ap.add_argument("--batch-size", type=int, default=32, help="inputs per network call when sampling")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    steps_list = [int(s) for s in args.steps.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    data = out / "data"
    t0 = time.perf_counter()
    generate_hoss_dataset(data, num_ids=args.ids, optical_per_id=args.per_id, sar_per_id=args.per_id,
                          num_distractors=0, seed=args.seed, progress=False)
    t_data = time.perf_counter() - t0

    per_epoch = 50
    epochs = max(1, round(args.train_steps / per_epoch))
    overrides = [f"data.root={data}", "data.format=synthetic", "device=cpu", f"seed={args.seed}",
                 f"optim.epochs={epochs}", f"train.steps_per_epoch={per_epoch}", "eval.every=2", *args.set]
    cfg = load_diffusion_config(CONFIG, overrides)
    t0 = time.perf_counter()
    metrics = train_diffusion(cfg, out / "run", overwrite=True, progress=False)
    t_train = time.perf_counter() - t0
    ckpt = Path(metrics["best_checkpoint"])

    all_test = read_synthetic_pairs(data, "test")
    pick = np.linspace(0, len(all_test) - 1, min(args.max_test, len(all_test))).round().astype(int)
    test = [all_test[i] for i in pick]  # spread over the test ids
    spec = cfg.data.spec()
    res = cfg.data.resolution
    test_ds = BridgePairDataset(test, spec, res)
    opt8 = np.stack([test_ds.load_uint8(i)[0] for i in range(len(test))])
    gt = np.stack([grey(test_ds.load_uint8(i)[1]) for i in range(len(test))])
    train_pairs = read_synthetic_pairs(data, "train")
    train_ds = BridgePairDataset(train_pairs, spec, res)
    mean_sar = np.mean([grey(train_ds.load_uint8(i)[1]) for i in range(len(train_pairs))], axis=0)

    tr = BridgeTranslator.from_checkpoint(ckpt, device="cpu")
    assert tr.target_modality == SAR
    tr.translate(opt8[:2], steps=2, batch_size=args.batch_size)  # warm-up
    rows = []
    shown: dict[int, np.ndarray] = {}
    for s in steps_list:
        t0 = time.perf_counter()
        gen = tr.translate(opt8, samples=1, steps=s, seed=0, batch_size=args.batch_size)
        dt = time.perf_counter() - t0
        g = grey(gen[:, 0])
        p, q = psnr(g, gt), ssim(g, gt)
        shown[s] = gen[:8, 0]
        rows.append({"steps": s, "seconds_per_image": dt / len(test), "total_seconds": dt,
                     "psnr": float(p.mean()), "psnr_std": float(p.std()),
                     "ssim": float(q.mean()), "ssim_std": float(q.std()),
                     "psnr_per_image": p.tolist(), "ssim_per_image": q.tolist()})
    ref = next((r for r in rows if r["steps"] == 200), rows[-1])
    for r in rows:
        r["time_ratio_to_reference"] = r["seconds_per_image"] / ref["seconds_per_image"]
        d = np.asarray(r["psnr_per_image"]) - np.asarray(ref["psnr_per_image"])
        r["psnr_paired_diff_to_reference"] = float(d.mean())
        r["fraction_images_psnr_above_reference"] = float((d > 0).mean())
    # a picture: optical input | real SAR | generated SAR at each step count (first 8 test pairs)
    from PIL import Image

    n_show = min(8, len(test))
    strip = [opt8[:n_show], np.repeat(gt[:n_show, ..., None], 3, -1).round().astype(np.uint8)]
    strip += [shown[s][:n_show] for s in steps_list]
    grid = np.concatenate([np.concatenate([col[i] for col in strip], 1) for i in range(n_show)], 0)
    Image.fromarray(grid).save(out / "samples.png")
    baselines = []
    for name, pred in (("mean training SAR image", np.broadcast_to(mean_sar, gt.shape)),
                       ("optical input (grey)", grey(opt8))):
        p, q = psnr(np.ascontiguousarray(pred), gt), ssim(np.ascontiguousarray(pred), gt)
        baselines.append({"method": name, "psnr": float(p.mean()), "ssim": float(q.mean())})

    last = metrics["history"][-1]
    machine = {
        "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": "cpu",
        "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "load_average_at_end": list(os.getloadavg()),
    }
    command = "python benchmarks/diffusion_steps.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    result = {
        "command": command.strip(),
        "machine": machine,
        "measures": MEASURES,
        "data": {"ids": args.ids, "per_id": args.per_id, "train_pairs": metrics["data"]["train"]["pairs"],
                 "val_pairs": metrics["data"]["val"]["pairs"], "test_pairs": len(test),
                 "generation_seconds": t_data},
        "training": {"optimizer_steps": metrics["train_steps"], "seconds": t_train,
                     "final_train_loss": last.get("loss"), "val_l1": last.get("val_l1"),
                     "val_psnr_10_steps": last.get("val_psnr"), "selected_epoch": metrics["selected_epoch"],
                     "resolution": list(res), "unet": vars(cfg.model), "checkpoint": str(ckpt)},
        "sampling": {"batch_size": args.batch_size, "samples": 1, "seed": 0, "eta": tr.eta,
                     "skip_type": tr.skip_type, "rows": rows, "reference_steps": ref["steps"]},
        "baselines": baselines,
        "total_seconds": time.perf_counter() - t_start,
    }
    atomic_write_json(out / "results.json", result)

    lines = [fmt_row(["sampler steps", "s / image", "time vs 200 steps", "PSNR (dB)", "SSIM"]),
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(fmt_row([str(r["steps"]), f"{r['seconds_per_image']:.3f}", f"{r['time_ratio_to_reference']:.3f}",
                              f"{r['psnr']:.2f} ± {r['psnr_std']:.2f}", f"{r['ssim']:.3f} ± {r['ssim_std']:.3f}"]))
    for b in baselines:
        lines.append(fmt_row([f"*{b['method']}*", "-", "-", f"{b['psnr']:.2f}", f"{b['ssim']:.3f}"]))
    table = "\n".join(lines)
    m = machine
    block = "\n".join([
        BEGIN,
        f"Command: `{result['command']}`  ",
        f"Machine: {m['cpu_cores']} CPU cores, CPU only, torch {m['torch']} with {m['torch_threads']} "
        f"intra-op threads (OMP_WAIT_POLICY={m['omp_wait_policy']}), Python {m['python']}; load average "
        f"{m['load_average_at_end'][1]:.1f} over the last 5 min of the run (the machine is shared).  ",
        f"Data: synthetic set of {args.ids} ids x {args.per_id} same-pose pairs; "
        f"{result['data']['train_pairs']} training / {result['data']['val_pairs']} validation pairs "
        f"(training ids), {len(test)} test pairs (held-out ids).  ",
        f"Training: {metrics['train_steps']} steps of batch {cfg.train.batch_size} at {res[0]}x{res[1]} in "
        f"{t_train:.0f} s (final training loss {last.get('loss', float('nan')):.3f}, validation L1 "
        f"{last.get('val_l1', float('nan')):.3f}). Sampling: one sample per image, seed 0, eta {tr.eta}, "
        f"{args.batch_size} images per network call, {tr.skip_type} step schedule. Measures: {MEASURES}, "
        "grey 8-bit SAR against the ground-truth same-pose chip. Total run "
        f"{result['total_seconds']:.0f} s.",
        "",
        table,
        END,
    ])
    atomic_write_text(out / "results.md", block + "\n")
    print(table)
    print(f"results: {out / 'results.json'}, {out / 'results.md'}")
    if args.docs:
        page = Path(args.docs)
        text = page.read_text(encoding="utf-8") if page.is_file() else ""
        if BEGIN in text and END in text:
            text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
        atomic_write_text(page, text)
        print(f"updated {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
