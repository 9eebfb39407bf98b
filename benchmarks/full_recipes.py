"""The papers' full recipes at full size on the CPU, each capped at a few optimiser steps.

Generates data at the published sizes, then runs the paper configs end to end through the
``sarbridge`` command line, each in its own child process, with ``optim.epochs=1`` and
``optim.max_steps=N`` (the cap the trainer honours at an optimiser-step boundary; the capped epoch
is still validated, saved and evaluated on the test set):

1. ``diffusion-train --config configs/bbdm_hoss.yaml`` (BBDM, 128 channels, batch 8, 256x128);
2. ``train --config configs/hoss_mos.yaml`` (ViT-B/16 TransOSS + MOS, batch 32; ``fusion.enabled=false``
   so this run's own test evaluation is the plain one);
3. ``evaluate --model <mos best.pt>`` on a small fusion subset (``--fusion-ids`` test ids), once plain
   (``mos-plain``) and once with ``fusion.enabled=true fusion.opt2sar_checkpoint=<bbdm best.pt>``
   (``mos-fused``: CDGF with ``--fusion-samples``/``--fusion-steps`` instead of the paper's 5 x 200); their
   difference gives seconds per generated image per sampling step, extrapolated to the HOSS-size test set
   (the full fused evaluation would take days on a CPU);
4. ``geo train --config configs/cmpc_sn6.yaml`` (ResNet-50 + Wasserstein critic, batch 24, 200x200;
   ``refine.epochs=1``, the refiner is a small graph network).

Every run gets ``model.pretrained=null`` (the timm ImageNet weights are not on an offline machine;
the architecture and sizes are the same). Data:

* HOSS-size set (:func:`sarbridge.data.synthetic.generate_hoss_dataset`, the generator behind
  ``sarbridge synth``): 538 identities with 2 optical + 1 SAR chip each, 361 of them for training
  (``train_fraction = 361/538``), and 218 distractors: 1,832 images, train 361 ids / 1,083 images,
  query 177, gallery 572 (HOSS: 1,832; 361 ids / 1,063; 176; 593). With one SAR chip per id every
  test id's query is optical (its SAR chip stays in the gallery), so the SAR->Optical protocol has
  no queries (the generator gives a protocol without queries no folder). ``sarbridge synth`` itself
  offers only ``--ids`` and ``--distractors`` (2 + 2 chips per id, half the ids for training).
* SN6-CMPC-layout set (:func:`sarbridge.data.synthetic.sn6_layout.generate_sn6_layout`): 200x200 px
  optical references cut on a grid from generated 0.5 m city scenes and one arbitrary-offset SAR
  query per reference.

Measured per run: wall time; the phases from timestamps taken inside the child (a probe wraps the
trainer): setup (process start to the first trainer: reading, decoding/caching the data, building the
model), the first optimiser step, seconds per optimiser step (median over the steps after the first),
validation + checkpoints, and what follows training (test evaluation, results, report; for
``geo train`` the refine stage too, also shown alone); peak RSS of the child's main process
(``getrusage``) and the peak PSS of its process tree (DataLoader workers included, sampled from
``/proc`` every 0.5 s); whether it completed (exit code 0 and its outputs written).

Usage: ``python benchmarks/full_recipes.py [--quick] [--out runs/bench_full_recipes] [--max-steps 4]
[--fusion-samples 1] [--fusion-steps 2] [--fusion-ids 2] [--only bbdm mos mos-plain mos-fused cmpc] [--update-docs]``. Prints a
table, writes ``OUT/results.json`` and ``OUT/results.md``; ``--update-docs`` replaces the block of
``docs/reproduce.md`` between ``<!-- bench-full-recipes:begin -->`` and ``<!-- bench-full-recipes:end -->``.
``--quick`` generates small sets and shrinks the models (the slow test runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sarbridge.core.threads import cpu_model

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- bench-full-recipes:begin -->", "<!-- bench-full-recipes:end -->"
PHASES = ("bbdm", "mos", "mos-plain", "mos-fused", "cmpc")
HOSS_IDS, HOSS_TRAIN_IDS, HOSS_DISTRACTORS = 538, 361, 218  # 538 x (2 + 1) + 218 = 1,832 images


# --- the command lines (one place: update here when the CLI changes) ------------------------------

@dataclass
class Run:
    """One ``sarbridge`` command of the benchmark."""

    name: str
    what: str
    args: list[str]
    outputs: list[str] = field(default_factory=list)  # files that must exist after a successful run


def sets(items: list[str]) -> list[str]:
    return [x for item in items for x in ("--set", item)]


def quick_overrides(name: str) -> list[str]:
    """``--quick``: small models and batches (the full runs use the configs' sizes)."""
    return {
        "bbdm": ["model.channels=16", "model.channel_mult=[1,2]", "model.attention_resolutions=[]",
                 "model.attention_head_dim=8", "model.norm_num_groups=4", "data.resolution=[32,16]",
                 "train.batch_size=2", "eval.max_pairs=4", "eval.sample_images=2", "eval.sample_steps=2",
                 "eval.batch_size=4", "bridge.sample_steps=2"],
        "mos": ["data.image_size=[32,16]", "data.sampler.num_ids=4", "data.sampler.num_instances=2",
                "model.backbone=vit_tiny_patch16_224",
                "model.backbone_kwargs={depth: 1, embed_dim: 32, num_heads: 2, patch_size: 8}",
                "eval.batch_size=16"],
        "cmpc": ["model.backbone=resnet18", "model.embed_dim=32", "data.image_size=[64,64]", "data.batch_size=4",
                 "eval.batch_size=16", "loss.wasserstein.hidden=16", "refine.hidden=16"],
    }.get(name, [])


#: Full size on a CPU: the BBDM UNet of bbdm_hoss.yaml (220 M parameters, about 1 TFLOP per forward at
#: 256x128) takes ~40 s per forward and ~134 s and 4.6 GB per training sample forward + backward on 2 cores,
#: so its batch of 8 (~22 GB of activations) does not fit a 24 GB machine: the full run trains it at batch 1
#: (per-step time and memory scale with the batch) and validates on 2 pairs with 1 sampling step
#: (``--paper-batch`` keeps the config's batch and validation).
CPU_LIMITS = {"bbdm": ["train.batch_size=1", "eval.max_pairs=2", "eval.sample_images=1", "eval.sample_steps=1",
                       "eval.batch_size=1"]}


def commands(a: argparse.Namespace, hoss: Path, sn6: Path, runs: Path, fusion_set: Path) -> list[Run]:
    """The runs, in order (``mos-plain``/``mos-fused`` use the checkpoints of ``bbdm`` and ``mos`` and
    evaluate on the small ``fusion_set``: CDGF on the whole HOSS-size test set takes hours on a CPU)."""
    cap = [f"optim.max_steps={a.max_steps}", "optim.epochs=1"]
    common = ["--overwrite", "--quiet", "--device", "cpu"]
    workers = [f"data.num_workers={a.workers}"] if a.workers is not None else []
    q = quick_overrides if a.quick else (lambda name: [] if a.paper_batch else CPU_LIMITS.get(name, []))
    bbdm, mos = runs / "bbdm", runs / "mos"
    return [
        Run("bbdm", "diffusion-train configs/bbdm_hoss.yaml (BBDM opt2sar)",
            ["diffusion-train", "--config", "configs/bbdm_hoss.yaml", "--data", str(hoss), "--direction", "opt2sar",
             "--out", str(bbdm), *common, *sets([*cap, *workers, *q("bbdm")])],
            [str(bbdm / "best.pt"), str(bbdm / "train_log.jsonl")]),
        Run("mos", "train configs/hoss_mos.yaml (TransOSS + MOS, plain test evaluation)",
            ["train", "--config", "configs/hoss_mos.yaml", "--data", str(hoss), "--out", str(mos), *common,
             *sets([*cap, "model.pretrained=null", "fusion.enabled=false", f"data.cache_dir={runs / 'cache' / 'hoss'}",
                    *workers, *q("mos")])],
            [str(mos / "best.pt"), str(mos / "metrics.json"), str(mos / "train_log.jsonl")]),
        Run("mos-plain", "evaluate the MOS model on the fusion subset, no fusion (the reference of mos-fused)",
            ["evaluate", "--model", str(mos / "best.pt"), "--data", str(fusion_set), "--out", str(runs / "mos-plain"),
             *common, *sets(["fusion.enabled=false"])],
            [str(runs / "mos-plain" / "metrics.json")]),
        Run("mos-fused", "evaluate the MOS model with CDGF fusion (BBDM opt2sar) on the fusion subset",
            ["evaluate", "--model", str(mos / "best.pt"), "--data", str(fusion_set), "--out", str(runs / "mos-fused"),
             *common,
             *sets(["fusion.enabled=true", f"fusion.opt2sar_checkpoint={bbdm / 'best.pt'}",
                    f"fusion.samples={a.fusion_samples}", f"fusion.steps={a.fusion_steps}"])],
            [str(runs / "mos-fused" / "metrics.json")]),
        Run("cmpc", "geo train configs/cmpc_sn6.yaml (CMPC coarse + refine)",
            ["geo", "train", "--config", "configs/cmpc_sn6.yaml", "--data", str(sn6), "--out", str(runs / "cmpc"),
             *common, *sets([*cap, "model.pretrained=null", "refine.epochs=1", *workers, *q("cmpc")])],
            [str(runs / "cmpc" / "geo_model.pt"), str(runs / "cmpc" / "metrics.json")]),
    ]


# --- the probe: runs the CLI in the child and timestamps the trainer ------------------------------

def probe(record_path: str, cli_args: list[str]) -> int:
    """Run ``sarbridge cli_args`` in this process with the trainer's steps timestamped."""
    t_start = time.time()
    from sarbridge.app.cli import main as cli_main  # noqa: PLC0415 - lazy: only the child imports the package
    from sarbridge.core import trainer as trainer_mod  # noqa: PLC0415 - lazy: as above

    trainers: list[dict[str, Any]] = []
    cls = trainer_mod.Trainer
    orig_init, orig_epoch, orig_step, orig_fit = cls.__init__, cls._train_epoch, cls._optimizer_step, cls.fit

    def init(self: Any, task: Any, *args: Any, **kwargs: Any) -> None:
        trainers.append({"task": getattr(task, "name", "?"), "init": time.time(), "epochs": [], "steps": []})
        self._bench = trainers[-1]
        orig_init(self, task, *args, **kwargs)

    def epoch(self: Any, e: int) -> Any:
        rec = {"start": time.time()}
        self._bench["epochs"].append(rec)
        out = orig_epoch(self, e)
        rec["end"] = time.time()
        return out

    def step(self: Any) -> None:
        orig_step(self)
        self._bench["steps"].append(time.time())

    def fit(self: Any) -> Any:
        self._bench["fit_start"] = time.time()
        out = orig_fit(self)
        self._bench["fit_end"] = time.time()
        return out

    cls.__init__, cls._train_epoch, cls._optimizer_step, cls.fit = init, epoch, step, fit  # type: ignore[method-assign]
    rc = 1
    try:
        rc = cli_main(cli_args)
    finally:
        usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        Path(record_path).write_text(json.dumps({"t_start": t_start, "t_end": time.time(), "rc": rc,
                                                 "maxrss_kb": usage[0], "children_maxrss_kb": usage[1],
                                                 "trainers": trainers}), encoding="utf-8")
    return rc


def _tree_pss_kb(root_pid: int) -> int:
    """PSS (RSS when unreadable) of ``root_pid`` and its descendants, from /proc."""
    parents: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
                parents[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        p = frontier.pop()
        for c, pp in parents.items():
            if pp == p and c not in tree:
                tree.add(c)
                frontier.append(c)
    total = 0
    for p in tree:
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
            key = "Pss:"
        except OSError:
            try:
                text, key = Path(f"/proc/{p}/status").read_text(), "VmRSS:"
            except OSError:
                continue
        for line in text.splitlines():
            if line.startswith(key):
                total += int(line.split()[1])
                break
    return total


def run_child(run: Run, out: Path, log_dir: Path) -> dict[str, Any]:
    """Run one command in a child process; returns its measurements."""
    record = log_dir / f"{run.name}.probe.json"
    record.unlink(missing_ok=True)
    log = log_dir / f"{run.name}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--probe", str(record), "--", *run.args]
    peak = [0]
    t0 = time.time()
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.5):
                if sys.platform.startswith("linux"):
                    peak[0] = max(peak[0], _tree_pss_kb(proc.pid))

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        rc = proc.wait()
        done.set()
        thread.join()
    wall = time.time() - t0
    row: dict[str, Any] = {"run": run.name, "what": run.what, "command": "sarbridge " + " ".join(run.args),
                           "rc": rc, "wall_s": round(wall, 1), "peak_tree_pss_mb": round(peak[0] / 1024, 1)}
    missing = [p for p in run.outputs if not Path(p).is_file()]
    row["completed"] = rc == 0 and not missing
    if missing:
        row["missing"] = missing
    if rc != 0:
        row["error"] = (log.read_text(encoding="utf-8", errors="replace").strip().splitlines() or ["?"])[-1][:300]
    if record.is_file():
        row.update(phases(json.loads(record.read_text(encoding="utf-8"))))
    return row


def phases(rec: dict[str, Any]) -> dict[str, Any]:
    """Setup / first step / seconds per step / validation / after-training times from a probe record."""
    out: dict[str, Any] = {"peak_rss_mb": round(rec["maxrss_kb"] / 1024, 1),
                           "workers_peak_rss_mb": round(rec["children_maxrss_kb"] / 1024, 1)}
    t_start, t_end, trainers = rec["t_start"], rec["t_end"], rec["trainers"]
    if not trainers:  # an evaluation: no training
        out["evaluation_s"] = round(t_end - t_start, 1)
        return out
    first = trainers[0]
    out["setup_s"] = round(first["init"] - t_start, 1)
    steps = first["steps"]
    epochs = first["epochs"]
    out["optimizer_steps"] = len(steps)
    if steps and epochs:
        out["first_step_s"] = round(steps[0] - epochs[0]["start"], 2)
        later = [b - a for a, b in zip(steps, steps[1:])]
        if later:
            out["s_per_step"] = round(statistics.median(later), 2)
    if epochs and "end" in epochs[-1] and "fit_end" in first:
        out["validation_s"] = round(first["fit_end"] - epochs[-1]["end"], 1)
        out["after_training_s"] = round(t_end - first["fit_end"], 1)
    for extra in trainers[1:]:  # e.g. the geo refine stage
        if "fit_end" in extra:
            out[f"{extra['task']}_stage_s"] = round(extra["fit_end"] - extra["init"], 1)
            out[f"{extra['task']}_steps"] = len(extra["steps"])
    return out


# --- data -----------------------------------------------------------------------------------------

def make_data(a: argparse.Namespace, data: Path) -> tuple[Path, Path, Path, list[dict[str, Any]]]:
    """The HOSS-size, fusion-subset and SN6-layout sets (generated once; reused when their meta.json exists)."""
    from sarbridge.data.synthetic import generate_hoss_dataset  # noqa: PLC0415 - lazy: keeps --probe start-up lean
    from sarbridge.data.synthetic.sn6_layout import generate_sn6_layout  # noqa: PLC0415 - lazy: as above

    rows = []
    ids, train_ids, distractors = (24, 16, 10) if a.quick else (HOSS_IDS, HOSS_TRAIN_IDS, HOSS_DISTRACTORS)
    hoss = data / ("hoss-quick" if a.quick else "hoss-size")
    t0 = time.time()
    if not (hoss / "meta.json").is_file():
        generate_hoss_dataset(hoss, num_ids=ids, optical_per_id=2, sar_per_id=1, train_fraction=train_ids / ids,
                              num_distractors=distractors, seed=0, progress=not a.quiet_data)
    meta = json.loads((hoss / "meta.json").read_text(encoding="utf-8"))
    counts = {d: len(list((hoss / d).glob("*.tif"))) for d in ("bounding_box_train", "query", "bounding_box_test")}
    optical = sum(len(list((hoss / d).glob("*_RGB.tif"))) for d in ("query", "bounding_box_test"))
    rows.append({"set": "HOSS-size (synthetic HOSS layout)", "path": str(hoss), "seconds": round(time.time() - t0, 1),
                 "images": sum(counts.values()), "train_ids": len(meta["train_ids"]), "optical_test": optical,
                 **counts})
    fusion_set = data / f"hoss-fusion-{a.fusion_ids}ids"
    t0 = time.time()
    if not (fusion_set / "meta.json").is_file():  # a.fusion_ids test ids (2 optical + 1 SAR each), 2 train ids
        generate_hoss_dataset(fusion_set, num_ids=a.fusion_ids + 2, optical_per_id=2, sar_per_id=1,
                              train_fraction=2 / (a.fusion_ids + 2), num_distractors=0, seed=1,
                              progress=not a.quiet_data)
    counts = {d: len(list((fusion_set / d).glob("*.tif"))) for d in ("query", "bounding_box_test")}
    optical = sum(len(list((fusion_set / d).glob("*_RGB.tif"))) for d in ("query", "bounding_box_test"))
    rows.append({"set": "fusion subset (synthetic HOSS layout)", "path": str(fusion_set),
                 "seconds": round(time.time() - t0, 1), "images": sum(counts.values()), "optical_test": optical,
                 **counts})
    refs = (24, 12, 4, 64) if a.quick else (a.sn6_train, a.sn6_test, 8, 200)
    sn6 = data / ("sn6-quick" if a.quick else "sn6-size")
    t0 = time.time()
    if not (sn6 / "meta.json").is_file():
        generate_sn6_layout(sn6, train_references=refs[0], test_references=refs[1], grid=refs[2], patch_size=refs[3],
                            seed=0, overwrite=True, progress=not a.quiet_data)
    splits = json.loads((sn6 / "meta.json").read_text(encoding="utf-8"))["splits"]
    rows.append({"set": "SN6-CMPC layout (synthetic)", "path": str(sn6), "seconds": round(time.time() - t0, 1),
                 "images": sum(v for s in splits.values() for v in s.values()),
                 **{f"{s}_{k}": v for s, c in splits.items() for k, v in c.items()}, "patch_px": refs[3]})
    return hoss, sn6, fusion_set, rows


def fusion_estimate(result: dict[str, Any]) -> str:
    """CDGF's cost per generated image per sampling step (mos-fused minus mos-plain), extrapolated to
    the HOSS-size test set at the paper's 5 samples x 200 steps."""
    rows = {r["run"]: r for r in result["rows"]}
    fused, plain = rows.get("mos-fused"), rows.get("mos-plain")
    sets_ = {d["set"].split(" (")[0]: d for d in result["data"]}
    if not (fused and plain and fused.get("completed") and plain.get("completed")):
        return ""
    optical = sets_["fusion subset"]["optical_test"]
    full = sets_["HOSS-size"]
    full_optical = full.get("optical_test") or 0
    per = (fused["wall_s"] - plain["wall_s"]) / max(1, optical * result["fusion_samples"] * result["fusion_steps"])
    line = (f"CDGF cost: {fused['wall_s'] - plain['wall_s']:.0f} s for {optical} optical test images x "
            f"{result['fusion_samples']} sample(s) x {result['fusion_steps']} step(s) = {per:.1f} s per image per step")
    if full_optical:
        hours = per * full_optical * 5 * 200 / 3600
        line += (f"; the HOSS-size test set ({full_optical} optical images) at the paper's 5 x 200 would take "
                 f"~{hours:,.0f} h on this CPU (extrapolated, not run)")
    return line + ".\n"


# --- output ---------------------------------------------------------------------------------------

COLUMNS = ("run", "completed", "wall_s", "setup_s", "first_step_s", "s_per_step", "optimizer_steps", "validation_s",
           "after_training_s", "evaluation_s", "peak_rss_mb", "peak_tree_pss_mb")


def table(rows: list[dict[str, Any]], cols: tuple[str, ...] | list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def machine() -> str:
    import torch  # noqa: PLC0415 - lazy: only for the machine line

    model = cpu_model()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.platform()}, {model}, {os.cpu_count()} CPU cores, {mem:.0f} GiB RAM, "
            f"Python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} threads")


def render(result: dict[str, Any]) -> str:
    data_cols = sorted({k for r in result["data"] for k in r} - {"set", "path"})
    extra = sorted({k for r in result["rows"] for k in r if k.endswith("_stage_s") or k.endswith("_steps")}
                   - set(COLUMNS))
    parts = [f"Machine: {result['machine']}.\n",
             f"Command: `{result['command']}` ({'quick' if result['quick'] else 'full size'}; "
             f"optim.max_steps={result['max_steps']}, optim.epochs=1, model.pretrained=null; "
             f"fusion {result['fusion_samples']} sample(s) x {result['fusion_steps']} step(s)).\n",
             "### Data\n", table(result["data"], ["set", *data_cols]),
             "### Runs (seconds, MB)\n", table(result["rows"], [*COLUMNS, *extra]),
             "### Commands\n", "".join(f"- `{r['run']}`: `{r['command']}`\n" for r in result["rows"])]
    estimate = fusion_estimate(result)
    if estimate:
        parts.insert(5, estimate)
    failed = [r for r in result["rows"] if not r["completed"]]
    if failed:
        parts.append("\nFailed: " + "; ".join(f"{r['run']}: {r.get('error', r.get('missing'))}" for r in failed) + "\n")
    return "\n".join(parts)


def update_docs(path: Path, md: str) -> None:
    text = path.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"error: {path} has no {BEGIN} ... {END} block; fix: add the two markers")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    new = f"{head}{BEGIN}\n{md}{END}{tail}"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--out", default="runs/bench_full_recipes", help="output folder (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="small sets and models, for the slow test (default: off)")
    p.add_argument("--max-steps", type=int, default=4, help="optim.max_steps of each training run (default: %(default)s)")
    p.add_argument("--fusion-samples", type=int, default=1, help="fusion.samples of the fused evaluation (default: %(default)s)")
    p.add_argument("--fusion-steps", type=int, default=2, help="fusion.steps of the fused evaluation (default: %(default)s)")
    p.add_argument("--fusion-ids", type=int, default=2,
                   help="test identities of the small set the fused evaluation runs on (default: %(default)s)")
    p.add_argument("--sn6-train", type=int, default=1024, help="SN6-layout training references (default: %(default)s)")
    p.add_argument("--sn6-test", type=int, default=256, help="SN6-layout test references (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None,
                   help="data.num_workers of every run (default: the configs' own)")
    p.add_argument("--paper-batch", action="store_true",
                   help="full size: keep bbdm_hoss.yaml's batch 8 and validation (default: batch 1, see CPU_LIMITS)")
    p.add_argument("--only", nargs="+", choices=PHASES, default=list(PHASES),
                   help="run only these (mos-fused needs the bbdm and mos runs; default: all)")
    p.add_argument("--update-docs", action="store_true",
                   help="replace the block of --docs between the benchmark's markers (default: off)")
    p.add_argument("--docs", default=str(REPO / "docs" / "reproduce.md"), help="the page to update (default: %(default)s)")
    p.add_argument("--quiet-data", action="store_true", help="no progress bars while generating data (default: off)")
    a = p.parse_args(argv)
    if min(a.max_steps, a.fusion_samples, a.fusion_steps, a.fusion_ids) < 1:
        p.error("--max-steps, --fusion-samples, --fusion-steps and --fusion-ids must be >= 1")
    return a


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--probe"]:  # the child: --probe RECORD -- sarbridge arguments
        return probe(argv[1], argv[3:])
    a = parse_args(argv)
    out = Path(a.out).resolve()
    runs, logs = out / "runs", out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    hoss, sn6, fusion_set, data_rows = make_data(a, out / "data")
    rows = []
    for run in commands(a, hoss, sn6, runs, fusion_set):
        if run.name not in a.only:
            continue
        print(f"running {run.name}: sarbridge {' '.join(run.args)}", flush=True)
        row = run_child(run, out, logs)
        rows.append(row)
        print(table([row], [c for c in COLUMNS if c in row]), end="", flush=True)
    command = " ".join(["python benchmarks/full_recipes.py", *argv])
    result = {"machine": machine(), "quick": a.quick, "max_steps": a.max_steps, "fusion_samples": a.fusion_samples,
              "fusion_steps": a.fusion_steps, "command": command, "data": data_rows, "rows": rows}
    md = render(result)
    for name, text in (("results.json", json.dumps(result, indent=2) + "\n"), ("results.md", md)):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / name)
    print(md)
    if a.update_docs:
        update_docs(Path(a.docs), md)
    return 0 if all(r["completed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
