"""Does contrastive optical/SAR pretraining help ship re-identification at the demo budget?

Protocol (all data generated, CPU):

* **Fine-tuning / test set**: ``generate_hoss_dataset(num_ids=--ids, seed=0)``, the set of
  ``sarbridge demo --data synthetic`` (half the ids train, half test, 10 distractors).
* **Pretraining set**: a *separate* generated set (``seed=--pretrain-seed``, other ships), every
  id in ``bounding_box_train``; its ``pairs.csv`` same-pose optical/SAR pairs are the pretraining
  data. No test identity (nor any image of the fine-tuning set) is seen during pretraining.
* **Pretraining**: ``configs/pretrain_demo.yaml`` (same backbone as the ReID demo; held-out pairs
  of the pretraining set for model selection), once, with ``--pretrain-epochs``.
* **Fine-tuning**: ``src/sarbridge/resources/demo.yaml`` with ``optim.epochs=--epochs``, once from
  the pretrained ``best.pt`` (``model.pretrained``) and once from random initialisation, for each
  seed in ``--seeds``: same config, data, epochs and seed (an equal fine-tuning budget); model
  selection on held-out training identities, test protocols ALL->ALL, Optical->SAR, SAR->Optical.

Usage::

    python benchmarks/pretrain_vs_scratch.py [--out runs/bench_pretrain] [--docs docs/pretraining.md]

Writes ``OUT/results.json`` and ``OUT/results.md``, prints the Markdown table, and replaces the
generated block of the docs page (between ``<!-- bench:begin -->`` and ``<!-- bench:end -->``),
leaving the hand-written text around it.
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
from typing import Any

import torch

from sarbridge.core.utils import atomic_write_json, atomic_write_text
from sarbridge.data.synthetic import generate_hoss_dataset
from sarbridge.resources import resource_path
from sarbridge.tasks.pretrain.config import load_pretrain_config
from sarbridge.tasks.pretrain.task import train_pretrain
from sarbridge.tasks.reid.config import load_reid_config
from sarbridge.tasks.reid.model import build_reid_model
from sarbridge.tasks.reid.task import evaluate_splits, load_splits, train_reid

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = (("all2all", "ALL->ALL"), ("opt2sar", "Optical->SAR"), ("sar2opt", "SAR->Optical"))
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def fmt(values: list[float]) -> str:
    m, sd = mean_std(values)
    return f"{m:.1f} ± {sd:.1f}"


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for arm, results in runs.items():
        out[arm] = {}
        for key, _ in PROTOCOLS:
            for metric in ("mAP", "R1"):
                vals = [r["metrics"][key][metric] for r in results]
                m, sd = mean_std(vals)
                out[arm][f"{key}_{metric}"] = {"mean": m, "std": sd, "values": vals}
    return out


def table(summary: dict[str, Any], arms: list[tuple[str, str]]) -> str:
    head = "| init | " + " | ".join(f"{t} mAP | {t} R1" for _, t in PROTOCOLS) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(PROTOCOLS))]
    for arm, title in arms:
        cells = []
        for key, _ in PROTOCOLS:
            for metric in ("mAP", "R1"):
                s = summary[arm][f"{key}_{metric}"]
                cells.append(f"{s['mean']:.1f} ± {s['std']:.1f}" if len(s["values"]) > 1 else f"{s['mean']:.1f}")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def delta_table(runs: dict[str, list[dict[str, Any]]], seeds: list[int]) -> str:
    """Per-seed paired differences (pretrained - scratch)."""
    lines = ["| seed | " + " | ".join(f"Δ {t} mAP | Δ {t} R1" for _, t in PROTOCOLS) + " |",
             "|" + "---|" * (1 + 2 * len(PROTOCOLS))]
    for i, seed in enumerate(seeds):
        p, s = runs["pretrained"][i]["metrics"], runs["scratch"][i]["metrics"]
        cells = [f"{p[k][m] - s[k][m]:+.1f}" for k, _ in PROTOCOLS for m in ("mAP", "R1")]
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    return {
        "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": "cpu",
        "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
        "torch": torch.__version__, "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/bench_pretrain")
    ap.add_argument("--docs", default=str(ROOT / "docs" / "pretraining.md"), help="docs page to update ('' to skip)")
    ap.add_argument("--ids", type=int, default=100, help="identities of the fine-tuning/test set")
    ap.add_argument("--pretrain-ids", type=int, default=300, help="identities of the separate pretraining set")
    ap.add_argument("--pretrain-pairs-per-id", type=int, default=2)
    ap.add_argument("--pretrain-seed", type=int, default=1000)
    ap.add_argument("--pretrain-epochs", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=40, help="fine-tuning epochs (both arms)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra fine-tuning override")
    ap.add_argument("--pretrain-set", action="append", default=[], metavar="KEY=VALUE", help="extra pretraining override")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = ("python benchmarks/pretrain_vs_scratch.py " + shlex.join(argv if argv is not None else sys.argv[1:])).strip()
    times: dict[str, float] = {}
    t_all, c_all = time.perf_counter(), time.process_time()

    t0 = time.perf_counter()
    ft_root = out / "data_finetune"
    if not (ft_root / "meta.json").is_file():
        generate_hoss_dataset(ft_root, num_ids=args.ids, seed=0, progress=args.progress)
    pre_root = out / "data_pretrain"
    if not (pre_root / "meta.json").is_file():
        n = args.pretrain_pairs_per_id
        generate_hoss_dataset(pre_root, num_ids=args.pretrain_ids, optical_per_id=n, sar_per_id=n, train_fraction=1.0,
                              num_distractors=0, seed=args.pretrain_seed, subsets=False, progress=args.progress)
    times["generate_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pcfg = load_pretrain_config(ROOT / "configs" / "pretrain_demo.yaml", [
        f"data.root={pre_root}", "data.layout=synthetic", f"optim.epochs={args.pretrain_epochs}", "device=cpu",
        *args.pretrain_set])
    pre_metrics = train_pretrain(pcfg, out / "pretrain", overwrite=True, progress=args.progress)
    times["pretrain_s"] = time.perf_counter() - t0
    ckpt = out / "pretrain" / "best.pt"
    print(f"pretraining: {pre_metrics['meta']['train_pairs']} pairs, {times['pretrain_s']:.0f} s; held-out pair R1 "
          f"O->S {pre_metrics.get('opt2sar', {}).get('R1', float('nan')):.1f} "
          f"S->O {pre_metrics.get('sar2opt', {}).get('R1', float('nan')):.1f} "
          f"on {pre_metrics['meta']['evaluated_on']}", flush=True)

    # the pretrained backbone as it is (no fine-tuning): deterministic, one run
    t0 = time.perf_counter()
    zcfg = load_reid_config(resource_path("demo.yaml"), [f"data.root={ft_root}", f"model.pretrained={ckpt}", "device=cpu"])
    zero_model = build_reid_model(zcfg.model, zcfg.data.image_size, 0).eval()
    zero = evaluate_splits(zero_model, zcfg.data.spec(), load_splits(zcfg.data), torch.device("cpu"),
                           zcfg.eval.batch_size, zcfg.eval.max_rank, progress=False)
    times["zero_shot_s"] = time.perf_counter() - t0
    print("pretrained, no fine-tuning: " + "  ".join(f"{t} {zero[k]['mAP']:.1f}/{zero[k]['R1']:.1f}" for k, t in PROTOCOLS),
          flush=True)

    runs: dict[str, list[dict[str, Any]]] = {"pretrained": [], "scratch": []}
    for seed in args.seeds:
        for arm in ("pretrained", "scratch"):
            overrides = [f"data.root={ft_root}", f"optim.epochs={args.epochs}", f"seed={seed}", "device=cpu", *args.set]
            if arm == "pretrained":
                overrides.append(f"model.pretrained={ckpt}")
            cfg = load_reid_config(resource_path("demo.yaml"), overrides)
            t0 = time.perf_counter()
            metrics = train_reid(cfg, out / f"{arm}_seed{seed}", overwrite=True, progress=args.progress)
            dt = time.perf_counter() - t0
            runs[arm].append({"seed": seed, "time_s": dt, "metrics": {k: {m: metrics[k][m] for m in ("mAP", "R1", "R5", "mINP")}
                                                                     for k, _ in PROTOCOLS},
                              "selected_epoch": metrics["meta"]["selected_epoch"]})
            print(f"seed {seed} {arm:10s} {dt:5.0f} s  " + "  ".join(
                f"{t} {metrics[k]['mAP']:.1f}/{metrics[k]['R1']:.1f}" for k, t in PROTOCOLS), flush=True)
    times["finetune_s"] = sum(r["time_s"] for arm in runs.values() for r in arm)
    times["total_s"] = time.perf_counter() - t_all
    times["total_cpu_s"] = time.process_time() - c_all  # CPU time of this process (all threads)

    zero_run = {"seed": None, "time_s": times["zero_shot_s"], "selected_epoch": None,
                "metrics": {k: {m: zero[k][m] for m in ("mAP", "R1", "R5", "mINP")} for k, _ in PROTOCOLS}}
    summary = summarise({**runs, "pretrained_no_finetune": [zero_run]})
    arms = [("pretrained", "contrastive pretraining -> fine-tune"), ("scratch", "random init -> fine-tune"),
            ("pretrained_no_finetune", "contrastive pretraining, no fine-tuning")]
    tab = table(summary, arms)
    deltas = delta_table(runs, args.seeds)
    result = {
        "command": command, "machine": machine(), "times_s": times,
        "setup": {"finetune_ids": args.ids, "pretrain_ids": args.pretrain_ids, "pretrain_seed": args.pretrain_seed,
                  "pretrain_pairs": pre_metrics["meta"]["train_pairs"] + pre_metrics["meta"]["val_pairs"],
                  "pretrain_epochs": args.pretrain_epochs, "finetune_epochs": args.epochs, "seeds": args.seeds,
                  "finetune_overrides": args.set, "pretrain_overrides": args.pretrain_set},
        "pretrain": {k: v for k, v in pre_metrics.items() if k != "cmc"},
        "runs": {**runs, "pretrained_no_finetune": [zero_run]}, "summary": summary,
    }
    for proto in ("opt2sar", "sar2opt"):
        if proto in result["pretrain"]:
            result["pretrain"][proto] = {k: v for k, v in result["pretrain"][proto].items() if k != "cmc"}
    atomic_write_json(out / "results.json", result)

    m = machine()
    pm = pre_metrics
    block = [
        f"Command: `{command}` (CPU, {m['cpu_cores']} cores, torch {m['torch']} with {m['torch_threads']} threads; "
        f"{times['total_s'] / 60:.1f} min in all: data generation {times['generate_s']:.0f} s, pretraining "
        f"{times['pretrain_s']:.0f} s, {2 * len(args.seeds)} fine-tuning runs {times['finetune_s']:.0f} s; "
        f"{times['total_cpu_s'] / 60:.1f} CPU-min).",
        "",
        f"Pretraining: {result['setup']['pretrain_pairs']} same-pose pairs of {args.pretrain_ids} generated ships "
        f"(seed {args.pretrain_seed}, disjoint from the fine-tuning/test set), {args.pretrain_epochs} epochs; "
        f"pair retrieval on {pm['meta']['evaluated_on']}: Optical->SAR R1 "
        f"{pm.get('opt2sar', {}).get('R1', float('nan')):.1f} (mAP {pm.get('opt2sar', {}).get('mAP', float('nan')):.1f}), "
        f"SAR->Optical R1 {pm.get('sar2opt', {}).get('R1', float('nan')):.1f} "
        f"(mAP {pm.get('sar2opt', {}).get('mAP', float('nan')):.1f}); contrastive loss "
        f"{pm['meta']['first_epoch_loss']:.2f} -> {pm['meta']['last_epoch_loss']:.2f}.",
        "",
        f"Fine-tuning: demo config, {args.epochs} epochs, seeds {', '.join(map(str, args.seeds))}, on the "
        f"{args.ids}-identity generated set (test protocols from its subset folders). Mean ± std over seeds "
        "(sample std), percent; the last row is the pretrained backbone's features used as they are (one "
        "deterministic evaluation):",
        "",
        tab,
        "Paired per-seed differences (pretrained - random init), percentage points:",
        "",
        deltas,
        "Epoch selected on validation (0-based, of " + str(args.epochs) + "): pretrained "
        + ", ".join(str(r["selected_epoch"]) for r in runs["pretrained"]) + "; random init "
        + ", ".join(str(r["selected_epoch"]) for r in runs["scratch"]) + ".",
        "",
    ]
    text = "\n".join(block)
    atomic_write_text(out / "results.md", "# Contrastive pretraining vs random initialisation\n\n" + text)
    print()
    print(tab)
    print(deltas)
    print(f"total {times['total_s'] / 60:.1f} min; results: {out / 'results.json'}")
    if args.docs:
        doc = Path(args.docs)
        old = doc.read_text(encoding="utf-8") if doc.is_file() else f"# Contrastive pretraining\n\n{BEGIN}\n{END}\n"
        if BEGIN in old and END in old:
            new = old[: old.index(BEGIN) + len(BEGIN)] + "\n" + text + old[old.index(END):]
        else:
            new = old.rstrip("\n") + f"\n\n{BEGIN}\n{text}{END}\n"
        atomic_write_text(doc, new)
        print(f"updated {doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
