"""Benchmark the classical speckle filters (Lee, Frost, Kuan, Gamma-MAP) on SAR images.

Every method is run with windows 5, 7 and 9, next to the identity (no filter), on:

* generated ship scenes with known clean truth: ``render_sar(..., looks=None)`` gives the
  speckle-free chip, ``apply_speckle`` multiplies it by L = 1 and L = 4 Gamma speckle;
  ENL on the most homogeneous windows of the clean truth (so the speckle does not steer the choice),
  EPI (Laplacian correlation), PSNR and SSIM (uniform 7x7) against the clean truth, on linear
  intensity with R = the truth's range;
* a piecewise-constant test card (4 flat blocks 0.25 / 1 / 4 / 16, thin bars 1-8 px, a disk and
  point targets), L = 1 and 4: the same measures, ENL on the block interiors and the bias of the
  filtered mean there (filtered / true - 1);
* the real SAR chips of the embedded HOSS sample: no truth, so ENL on the most homogeneous windows
  found automatically on the unfiltered chip and EPI against the unfiltered chip; twice: with L
  estimated per chip (``looks=None``, the command-line default) and with L set to the ENL measured on
  the chip's own homogeneous windows (the classical practice).

Synthetic scenes are filtered with the true L. Time: per image the best of 3 calls (the machine is
shared), then the median over the images (CPU unless ``--device``).

Usage: ``python benchmarks/despeckle.py [--out runs/bench_despeckle] [--docs docs/despeckle.md]``.
Writes ``OUT/results.json`` and ``OUT/results.md`` and replaces the generated block of the docs page
(between ``<!-- bench:begin -->`` and ``<!-- bench:end -->``), leaving the hand-written text around it.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sarbridge.core.utils import atomic_write_json, atomic_write_text
from sarbridge.data.despeckle import available_despeckle, despeckle, estimate_looks
from sarbridge.data.image_quality import edge_preservation_index, enl, enl_windows, homogeneous_windows, psnr, ssim
from sarbridge.data.io import read_image
from sarbridge.data.synthetic import apply_speckle, render_sar, sample_ship

ROOT = Path(__file__).resolve().parents[1]
HOSS = ROOT / "src" / "sarbridge" / "resources" / "hoss-sample" / "HOSS"
WINDOWS = (5, 7, 9)
ENL_SIZE = 11  # side of the homogeneous windows on synthetic ship scenes
REAL_ENL_SIZE = 9  # real chips are 14-70 px wide
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def test_card(size: int = 192) -> tuple[np.ndarray, list[tuple[slice, slice, float]]]:
    """Piecewise-constant truth and its flat regions (eroded block interiors) as (rows, cols, level)."""
    card = np.ones((size, size), dtype=np.float64)
    half, q = size // 2, size // 4
    levels = (0.25, 1.0, 4.0, 16.0)
    flats = []
    er = 12
    for k, lv in enumerate(levels):
        card[:half, k * q:(k + 1) * q] = lv
        flats.append((slice(er, half - er), slice(k * q + er, (k + 1) * q - er), lv))
    # bottom half on level 1: bars of width 1, 2, 3, 5, 8 at level 4
    c = 8
    for wdt in (1, 2, 3, 5, 8):
        card[half + 8:half + 56, c:c + wdt] = 4.0
        c += wdt + 10
    yy, xx = np.mgrid[:size, :size]
    card[(yy - (half + 32)) ** 2 + (xx - (size - 40)) ** 2 <= 15**2] = 3.0
    for k in range(6):  # point targets
        card[half + 76, 12 + 30 * k] = 16.0
    return card, flats


def ship_scenes(n: int, seed: int) -> list[np.ndarray]:
    out = []
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, i)))
        spec = sample_ship(rng)
        out.append(render_sar(spec, rng, looks=None).astype(np.float64))
    return out


def run_filter(img: np.ndarray, method: str, window: int, looks, device: torch.device,
               repeats: int = 3) -> tuple[np.ndarray, float]:
    x = torch.from_numpy(img.astype(np.float32)).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    best = math.inf
    for _ in range(repeats):  # best of a few: the machine is shared, single calls are noisy
        t0 = time.perf_counter()
        if method == "none":
            y = x.clone()
        else:
            kw = {} if method == "frost" else {"looks": looks}
            y = despeckle(x, method=method, window=window, **kw)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return y.cpu().numpy().astype(np.float64), best


def configs() -> list[tuple[str, int]]:
    return [("none", 0)] + [(m, w) for m in available_despeckle() for w in WINDOWS]


def bench_synthetic(name: str, truths: list[np.ndarray], looks: float, flats_per_image, seed: int,
                    device: torch.device) -> list[dict]:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, int(looks * 10), len(truths))))
    noisy = [apply_speckle(t, looks, rng).astype(np.float64) for t in truths]
    rows = []
    for method, window in configs():
        acc = {"enl": [], "bias": [], "epi": [], "psnr": [], "ssim": [], "ms": []}
        for clean, obs, flats in zip(truths, noisy, flats_per_image):
            out, dt = run_filter(obs, method, window, looks, device)
            acc["ms"].append(1000 * dt)
            acc["enl"].append(np.mean([enl(out[r, c]) for r, c, _ in flats]))
            acc["bias"].append(np.mean([out[r, c].mean() / clean[r, c].mean() - 1.0 for r, c, _ in flats]))
            acc["epi"].append(edge_preservation_index(out, clean))
            acc["psnr"].append(psnr(out, clean))
            acc["ssim"].append(ssim(out, clean))
        rows.append({
            "method": method, "window": window or None,
            "enl": float(np.mean(acc["enl"])), "mean_bias_pct": 100 * float(np.mean(acc["bias"])),
            "epi": float(np.mean(acc["epi"])), "psnr_db": float(np.mean(acc["psnr"])),
            "ssim": float(np.mean(acc["ssim"])), "ms_per_image": float(np.median(acc["ms"])),
        })
        print(f"  {name} {method:9s} w={window}: ENL {rows[-1]['enl']:.1f}", flush=True)
    return rows


def bench_real(device: torch.device, limit: int | None) -> tuple[dict[str, list[dict]], dict]:
    files = sorted(HOSS.glob("*/*_SAR.tif"))[:limit]
    chips = [read_image(f).astype(np.float64) for f in files]
    wins = [homogeneous_windows(c, REAL_ENL_SIZE, 3) for c in chips]
    est = np.array([estimate_looks(c, 7) for c in chips])
    # the classical alternative: L = the ENL of the chip's own homogeneous windows (estimate if none)
    win_enl = np.array([enl_windows(c, w, REAL_ENL_SIZE) for c, w in zip(chips, wins)])
    win_looks = np.where(np.isfinite(win_enl), win_enl, est)
    tables = {"hoss_real": _bench_real_rows(chips, wins, [None] * len(chips), device),
              "hoss_real_window_looks": _bench_real_rows(chips, wins, list(win_looks), device)}
    shapes = np.array([c.shape for c in chips])
    info = {"chips": len(chips), "height_range": [int(shapes[:, 0].min()), int(shapes[:, 0].max())],
            "width_range": [int(shapes[:, 1].min()), int(shapes[:, 1].max())],
            "estimated_looks_median": float(np.median(est)),
            "estimated_looks_range": [float(est.min()), float(est.max())],
            "window_looks_median": float(np.median(win_looks)),
            "window_looks_range": [float(win_looks.min()), float(win_looks.max())],
            "windows_per_chip": float(np.mean([len(w) for w in wins]))}
    return tables, info


def _bench_real_rows(chips, wins, looks, device: torch.device) -> list[dict]:
    rows = []
    for method, window in configs():
        e, epi, ms = [], [], []
        for chip, w, lk in zip(chips, wins, looks):
            out, dt = run_filter(chip, method, window, lk, device)
            ms.append(1000 * dt)
            e.append(enl_windows(out, w, REAL_ENL_SIZE))
            epi.append(edge_preservation_index(out, chip))
        rows.append({"method": method, "window": window or None, "enl": float(np.nanmean(e)),
                     "enl_median": float(np.nanmedian(e)), "epi": float(np.nanmean(epi)),
                     "ms_per_image": float(np.median(ms))})
        print(f"  real {method:9s} w={window}: ENL {rows[-1]['enl']:.1f}", flush=True)
    return rows


def _fmt(v: float | None, nd: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else "nan"
    return f"{v:.{nd}f}"


def md_table(rows: list[dict], real: bool = False) -> str:
    if real:
        head = ("| method | window | ENL (mean) | ENL (median) | EPI vs unfiltered | ms / image |\n"
                "|---|---|---|---|---|---|\n")
        body = "".join(
            f"| {r['method']} | {r['window'] or '-'} | {_fmt(r['enl'], 1)} | {_fmt(r['enl_median'], 1)} "
            f"| {_fmt(r['epi'], 3)} | {_fmt(r['ms_per_image'], 1)} |\n" for r in rows)
        return head + body
    head = ("| method | window | ENL | mean bias % | EPI | PSNR dB | SSIM | ms / image |\n"
            "|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['method']} | {r['window'] or '-'} | {_fmt(r['enl'], 1)} | {_fmt(r['mean_bias_pct'], 1)} "
        f"| {_fmt(r['epi'], 3)} | {_fmt(r['psnr_db'], 2)} | {_fmt(r['ssim'], 3)} | {_fmt(r['ms_per_image'], 1)} |\n"
        for r in rows)
    return head + body


def machine(device: torch.device) -> str:
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU only"
    nt = torch.get_num_threads()
    return (f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, {dev}, torch {torch.__version__} "
            f"({nt} thread{'s' if nt > 1 else ''}), Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/bench_despeckle", help="output folder (results.json, results.md)")
    ap.add_argument("--docs", default=str(ROOT / "docs" / "despeckle.md"), help="docs page to update ('' = none)")
    ap.add_argument("--scenes", type=int, default=8, help="generated ship scenes per number of looks")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--real-limit", type=int, default=None, help="use only the first N real chips")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: on a small shared machine more threads make "
                         "millisecond calls slower and erratic)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(max(1, args.threads))
    t_start = time.perf_counter()
    command = "python benchmarks/despeckle.py" + (" " + shlex.join(argv if argv is not None else sys.argv[1:])
                                                  if (argv if argv is not None else sys.argv[1:]) else "")

    results: dict[str, list[dict]] = {}
    ships = ship_scenes(args.scenes, args.seed)
    ship_flats = []
    for s in ships:
        ws = homogeneous_windows(s, ENL_SIZE, 4, smooth=1)
        ship_flats.append([(slice(r, r + ENL_SIZE), slice(c, c + ENL_SIZE), None) for r, c in ws])
    card, card_flats = test_card()
    cards = [card, card]  # two speckle realisations
    for looks in (1.0, 4.0):
        print(f"ship scenes, L={looks:g}", flush=True)
        results[f"ships_L{looks:g}"] = bench_synthetic("ships", ships, looks, ship_flats, args.seed, device)
        print(f"test card, L={looks:g}", flush=True)
        results[f"card_L{looks:g}"] = bench_synthetic("card", cards, looks, [card_flats] * 2, args.seed, device)
    print("real HOSS chips", flush=True)
    real, real_info = bench_real(device, args.real_limit)
    results.update(real)
    elapsed = time.perf_counter() - t_start

    shapes = np.array([s.shape for s in ships])
    meta = {
        "command": command, "machine": machine(device), "elapsed_s": round(elapsed, 1), "seed": args.seed,
        "ship_scenes": {"count": len(ships), "height_range": [int(shapes[:, 0].min()), int(shapes[:, 0].max())],
                        "width_range": [int(shapes[:, 1].min()), int(shapes[:, 1].max())],
                        "enl_windows": f"4 x {ENL_SIZE}x{ENL_SIZE} per scene, chosen on the clean truth"},
        "test_card": {"size": list(card.shape), "realisations": len(cards), "flat_regions": len(card_flats)},
        "hoss_real": real_info,
        "metrics": {"enl": "mean^2/var (population) per region, averaged", "epi": "Laplacian correlation (Sattar 1997)",
                    "psnr_ssim": "linear intensity, R = max - min of the truth; SSIM uniform 7x7, valid region"},
    }
    titles = {
        "ships_L1": "Generated ship scenes, L = 1 (single look)",
        "ships_L4": "Generated ship scenes, L = 4",
        "card_L1": "Piecewise-constant test card, L = 1",
        "card_L4": "Piecewise-constant test card, L = 4",
        "hoss_real": "Real HOSS SAR chips, L estimated per chip (`looks=None`, the command-line default)",
        "hoss_real_window_looks": "Real HOSS SAR chips, L = ENL of the chip's homogeneous windows",
    }
    sections = [f"Command: `{command}` ({elapsed:.0f} s wall time)  \nMachine: {machine(device)}\n"]
    sr, sc = meta["ship_scenes"], meta["hoss_real"]
    sections.append(
        f"Ship scenes: {sr['count']} generated chips of {sr['height_range'][0]}-{sr['height_range'][1]} x "
        f"{sr['width_range'][0]}-{sr['width_range'][1]} px, ENL on {sr['enl_windows']}. Test card: "
        f"{card.shape[0]}x{card.shape[1]} px, {len(cards)} speckle realisations, ENL and bias on the interiors of "
        f"the 4 flat blocks. Real chips: {sc['chips']} SAR chips of {sc['height_range'][0]}-{sc['height_range'][1]} x "
        f"{sc['width_range'][0]}-{sc['width_range'][1]} px, ENL on up to 3 automatically found "
        f"{REAL_ENL_SIZE}x{REAL_ENL_SIZE} windows per chip ({sc['windows_per_chip']:.1f} on average); "
        f"L from `estimate_looks` (median over chips) {sc['estimated_looks_median']:.2f} "
        f"(range {sc['estimated_looks_range'][0]:.2f}-{sc['estimated_looks_range'][1]:.2f}), L from the "
        f"homogeneous windows {sc['window_looks_median']:.2f} "
        f"(range {sc['window_looks_range'][0]:.2f}-{sc['window_looks_range'][1]:.2f}).\n")
    for key, title in titles.items():
        sections.append(f"### {title}\n\n" + md_table(results[key], real=key.startswith("hoss_real")))
    block = "\n".join(sections)

    out = Path(args.out)
    atomic_write_json(out / "results.json", {"meta": meta, "results": results})
    atomic_write_text(out / "results.md", block)
    print()
    print(block)
    if args.docs:
        update_docs(Path(args.docs), block)
        print(f"updated {args.docs}")
    print(f"wrote {out / 'results.json'} and {out / 'results.md'} in {elapsed:.0f} s")
    return 0


def update_docs(path: Path, block: str) -> None:
    """Replace the generated block of ``path`` (create a minimal page when it has none)."""
    gen = f"{BEGIN}\n<!-- generated by benchmarks/despeckle.py; edits here are overwritten -->\n\n{block}\n{END}"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if BEGIN in text and END in text:
        pre, rest = text.split(BEGIN, 1)
        post = rest.split(END, 1)[1]
        text = pre + gen + post
    else:
        text = (text or "# SAR speckle filters: measured results\n\n") + "\n" + gen + "\n"
    atomic_write_text(path, text)


if __name__ == "__main__":
    raise SystemExit(main())
