"""Training throughput: our trainer and input pipeline against a plain reference loop, same run.

For each model (``demo``: the CPU demo ViT of ``resources/demo.yaml``; ``vit``: ViT-B/16,
``vit_base_patch16_224`` at ``--image-size``, 256x128 by default) two loops train the same model
with the same losses (cross-entropy on the BNNeck logits + batch-hard triplet) on PK batches of
``--batch-size`` images (``batch / 4`` identities x 4 images):

* **reference**: the loop of the public MOS/TransOSS code, written out here. Each DataLoader
  worker decodes the TIFF, converts it (``PreprocessSpec.to_uint8``) and runs the torchvision
  train transform per sample (no cache); fp32; ``for batch in loader: forward, loss, backward,
  step`` with ``loss.item()`` per step; no pinned memory, workers restarted every epoch.
* **ours**: :class:`sarbridge.core.trainer.Trainer` with a ReIDTask-like task on the
  :mod:`sarbridge.tasks.reid.loader` pipeline: the memory-mapped disk cache (built before timing; its
  build time is reported), batched augmentation on the GPU when training on CUDA
  (``data.gpu_augment=auto``), pinned memory and persistent workers, ``runtime.precision=auto``
  (bf16 autocast on CUDA), ``channels_last=auto`` and optionally ``torch.compile`` (``--compile``).

Images per second are timed over ``--steps`` optimiser steps after ``--warmup`` steps, and the
ratio ours / reference is computed in the same run. ``--epochs N --eval`` instead trains both loops
for N epochs on the training split and reports mAP / R1 of each on the test protocols (the equal
accuracy check). The synthetic set is generated under ``OUT/data`` (or ``--data PATH`` reads a HOSS
folder).

Usage: ``python benchmarks/train_throughput.py [--models demo vit] [--steps 50] [--warmup 10]
[--batch-size 32] [--device auto] [--compile] [--epochs N --eval] [--out runs/bench_throughput]
[--update-docs]``. Prints a table, writes ``OUT/results.json`` and ``OUT/results.md`` and with
``--update-docs`` the block of ``docs/benchmarks.md`` between ``<!-- bench-throughput:begin -->``
and ``<!-- bench-throughput:end -->``.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sarbridge.core.threads import cpu_model

BEGIN, END = "<!-- bench-throughput:begin -->", "<!-- bench-throughput:end -->"
INSTANCES = 4  # K of the PK batches (TransOSS: 4 images per identity)


# --- setup --------------------------------------------------------------------------------------

def device_name(device: torch.device) -> str:
    """GPU name, or the CPU model from /proc/cpuinfo, with the core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({os.cpu_count()} cores)"


def model_config(name: str) -> Any:
    """``demo`` (the demo.yaml ViT) or ``vit`` (ViT-B/16, TransOSS additions, no pretrained weights)."""
    from sarbridge.resources import resource_path
    from sarbridge.tasks.reid.config import ModelConfig, load_reid_config

    if name == "demo":
        return load_reid_config(resource_path("demo.yaml")).model
    if name == "vit":
        return ModelConfig(backbone="vit_base_patch16_224", pretrained=None, drop_path=0.1)
    raise SystemExit(f"error: unknown model '{name}' (use demo or vit)")


def experiment(name: str, a: argparse.Namespace) -> Any:
    """The config both loops share (model, losses, optimiser, augmentation)."""
    from sarbridge.resources import resource_path
    from sarbridge.tasks.reid.config import ExperimentConfig, load_reid_config

    cfg = ExperimentConfig(name=f"throughput-{name}", seed=0)
    demo = load_reid_config(resource_path("demo.yaml"))
    cfg.model = model_config(name)
    cfg.loss = demo.loss if name == "demo" else cfg.loss
    cfg.optim = demo.optim
    cfg.optim.epochs = max(1, a.epochs)
    cfg.optim.warmup_epochs = min(cfg.optim.warmup_epochs, max(0, cfg.optim.epochs - 1))
    d = cfg.data
    d.image_size = list(a.image_size)
    d.augment = demo.data.augment if name == "demo" else d.augment
    d.sampler.num_ids, d.sampler.num_instances = a.batch_size // INSTANCES, INSTANCES
    d.num_workers = a.workers
    d.cache_dir = str(Path(a.out) / "cache")
    d.gpu_augment = a.gpu_augment
    cfg.runtime.precision = "auto"
    cfg.runtime.channels_last = "auto"
    cfg.runtime.compile = bool(a.compile)
    return cfg


def dataset(a: argparse.Namespace) -> Any:
    """The HOSS splits: ``--data PATH`` or a synthetic set generated once under ``OUT/data``."""
    from sarbridge.data.hoss import load_hoss

    if a.data != "synthetic":
        return load_hoss(a.data)
    from sarbridge.data.synthetic import generate_hoss_dataset

    root = Path(a.out) / "data" / f"ids{a.ids}_per{a.per_id}"
    if not (root / "meta.json").is_file():
        generate_hoss_dataset(root, num_ids=2 * a.ids, optical_per_id=a.per_id, sar_per_id=a.per_id,
                              train_fraction=0.5, num_distractors=max(2, a.ids // 4), seed=0, progress=not a.quiet)
    return load_hoss(root)


def losses(cfg: Any) -> tuple[nn.Module, nn.Module]:
    from sarbridge.losses.metric import CrossEntropyLabelSmooth, TripletLoss

    lc = cfg.loss
    ce: nn.Module = CrossEntropyLabelSmooth(lc.label_smoothing) if lc.label_smoothing > 0 else nn.CrossEntropyLoss()
    return ce, TripletLoss(margin=lc.triplet_margin)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer:
    """Wall time from the end of step ``warmup`` to the end of step ``warmup + steps`` (1-based)."""

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.t0: float | None = None
        self.t1: float | None = None
        self.count = 0

    def __call__(self, *_: Any) -> None:
        """A :class:`Trainer` step callback: one more optimiser step is done."""
        self.count += 1
        self.tick(self.count)

    def start(self) -> None:
        if self.warmup == 0:
            sync(self.device)
            self.t0 = time.perf_counter()

    def tick(self, done: int) -> None:
        if done == self.warmup:
            sync(self.device)
            self.t0 = time.perf_counter()
        if done == self.warmup + self.steps:
            sync(self.device)
            self.t1 = time.perf_counter()

    def seconds(self) -> float:
        if self.t0 is None or self.t1 is None:
            raise RuntimeError("the loop ended before the timed steps were done")
        return self.t1 - self.t0


# --- the reference loop -------------------------------------------------------------------------

class ReferenceDataset(Dataset):
    """Per-sample decode + conversion + torchvision transform, as the public TransOSS code does."""

    def __init__(self, samples: Sequence[Any], spec: Any, transform: Any, label_map: dict[int, int]) -> None:
        self.samples, self.spec, self.transform, self.label_map = list(samples), spec, transform, label_map

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int, torch.Tensor]:
        from PIL import Image

        from sarbridge.data.io import read_image

        s = self.samples[i]
        raw = read_image(s.path)
        img = self.transform(Image.fromarray(self.spec.to_uint8(raw, s.modality)))
        size = torch.from_numpy(self.spec.size_features(raw.shape[0], raw.shape[1], s.modality))
        return img, self.label_map[s.pid], s.modality_index, size


def reference_loop(cfg: Any, train: Sequence[Any], device: torch.device, warmup: int, steps: int,
                   epochs: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Plain fp32 training loop; ``epochs`` trains whole epochs instead of timing steps."""
    from sarbridge.core.trainer import build_optimizer, lr_factor
    from sarbridge.core.utils import seed_everything
    from sarbridge.tasks.reid.dataset import make_label_map
    from sarbridge.tasks.reid.model import build_reid_model
    from sarbridge.tasks.reid.sampler import PKSampler

    seed_everything(cfg.seed)
    if device.type == "cuda":  # PyTorch's defaults, as the public code runs (our trainer turns TF32 on)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = True
    spec = cfg.data.spec()
    label_map = make_label_map(train)
    model = build_reid_model(cfg.model, cfg.data.image_size, len(label_map)).to(device)
    aug = cfg.data.augment
    ds = ReferenceDataset(train, spec, spec.train_transform(aug.flip, aug.pad, aug.random_erasing), label_map)
    sp = cfg.data.sampler
    sampler = PKSampler([s.pid for s in train], [s.modality_index for s in train], sp.num_ids, sp.num_instances,
                        sp.balance_modalities, seed=cfg.seed)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=cfg.data.num_workers)
    ce, tri = losses(cfg)
    opt = build_optimizer(model, cfg.optim, fused=False)  # the plain (per-parameter / foreach) update
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(e, cfg.optim))
    timer = StepTimer(warmup, steps, device)
    total = None if epochs else warmup + steps
    done, epoch, t_start = 0, 0, time.perf_counter()
    model.train()
    timer.start()
    while (epochs and epoch < epochs) or (total and done < total):
        sampler.set_epoch(epoch)
        for img, label, modality, size in loader:
            img, label, modality, size = img.to(device), label.to(device), modality.to(device), size.to(device)
            out = model(img, modality, size)
            loss = cfg.loss.ce_weight * ce(out["logits"], label) + cfg.loss.triplet_weight * tri(out["features"], label)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()  # the public code logs the loss every step
            done += 1
            timer.tick(done)
            if total and done >= total:
                break
        sched.step()
        epoch += 1
    sync(device)
    info = {"steps": done, "epochs": epoch, "train_s": round(time.perf_counter() - t_start, 2)}
    if not epochs:
        info["timed_s"] = round(timer.seconds(), 3)
    return model, info


# --- ours ---------------------------------------------------------------------------------------

def throughput_task(cfg: Any, train: Sequence[Any], device: torch.device, batches: int | None,
                    progress: bool) -> Any:
    """The library's own :class:`~sarbridge.tasks.reid.task.ReIDTask` (no validation set), its epoch
    chained until ``batches`` steps are done; ``cache_s`` is the time spent building the dataset."""
    from sarbridge.tasks.reid.task import ReIDTask

    class ThroughputTask(ReIDTask):
        def train_batches(self, epoch: int) -> Iterator[Any]:
            if batches is None:
                yield from super().train_batches(epoch)
                return
            n, k = 0, 0
            while n < batches:  # chain sampler epochs until the timed steps are done
                for batch in super().train_batches(epoch * 100000 + k):
                    yield batch
                    n += 1
                    if n >= batches:
                        return
                k += 1

    t = time.perf_counter()
    task = ThroughputTask(cfg, train, [], progress=progress, device=device)
    task.cache_s = time.perf_counter() - t
    return task


def our_loop(cfg: Any, train: Sequence[Any], device: torch.device, warmup: int, steps: int, compile_model: bool,
             progress: bool, epochs: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train with :class:`Trainer`; returns the model and timing / settings."""
    from sarbridge.core.trainer import Trainer
    from sarbridge.core.utils import seed_everything

    seed_everything(cfg.seed)
    cfg.runtime.compile = bool(compile_model)
    task = throughput_task(cfg, train, device, None if epochs else warmup + steps, progress)
    timer = StepTimer(warmup, steps, device)
    tmp = Path(tempfile.mkdtemp(prefix="bench_tp_"))
    try:
        trainer = Trainer(task, cfg.optim, tmp, device, seed=cfg.seed, amp=True, progress=False,
                          runtime=cfg.runtime, callbacks=[timer])
        t = time.perf_counter()
        timer.start()
        trainer.fit()
        train_s = time.perf_counter() - t
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    use_amp, dtype = trainer.use_amp, trainer.amp_dtype
    info = {"steps": timer.count, "cache_build_s": round(task.cache_s, 2), "train_s": round(train_s, 2),
            "precision": str(dtype).replace("torch.", "") if use_amp else "fp32",
            "gpu_augment": task.augment is not None, "compile": bool(compile_model)}
    if not epochs:
        info["timed_s"] = round(timer.seconds(), 3)
    return task.model, info


# --- evaluation ---------------------------------------------------------------------------------

def evaluate(model: nn.Module, cfg: Any, splits: Any, device: torch.device) -> dict[str, float]:
    from sarbridge.tasks.reid.task import evaluate_splits

    model.eval()
    res = evaluate_splits(model, cfg.data.spec(), splits, device, 64, 50, progress=False)
    return {f"{name}_{m}": round(float(r[m]), 2) for name, r in res.items()
            if isinstance(r, dict) and "mAP" in r for m in ("mAP", "R1")}


# --- report -------------------------------------------------------------------------------------

COLUMNS = ["model", "loop", "device", "batch", "images/s", "ratio", "precision", "gpu_augment", "workers", "notes"]


def table(rows: list[dict[str, Any]], cols: Sequence[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render(result: dict[str, Any]) -> str:
    cols = COLUMNS + ([c for c in result.get("metric_columns", [])])
    md = (f"Device: **{result['device_name']}** (`{result['device']}`), torch {result['torch']}, Python "
          f"{result['python']}.\n\nCommand: `{result['command']}`.\n\n" + table(result["rows"], cols))
    md += ("\n`ratio`: images/s of ours / the reference loop, same model, batch and data, measured in "
           "the same run. `notes`: time to build the disk cache (once per preprocessing; not in images/s)"
           + ("; with `--eval` images/s is over the whole training run (every epoch, loader start-up "
              "included) and mAP / R1 (%) are of the test protocols after it" if result.get("metric_columns") else "")
           + ".\n")
    return md


def update_docs(path: Path, md: str) -> None:
    """Replace the block between the throughput markers of ``path``."""
    from sarbridge.core.utils import atomic_write_text

    text = path.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"error: '{path}' has no {BEGIN} ... {END} block to update")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    atomic_write_text(path, f"{head}{BEGIN}\n{md}{END}{tail}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=["demo", "vit"], default=None,
                   help="default: demo and vit on CUDA, demo only on CPU (ViT-B/16 is slow there)")
    p.add_argument("--steps", type=int, default=50, help="timed optimiser steps per loop")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (loader start, autotuning)")
    p.add_argument("--batch-size", type=int, default=32, help="PK batch: batch/4 identities x 4 images")
    p.add_argument("--image-size", type=int, nargs=2, default=[256, 128], metavar=("H", "W"))
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers of both loops")
    p.add_argument("--gpu-augment", choices=["auto", "always", "never"], default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the model in our loop")
    p.add_argument("--data", default="synthetic", help="'synthetic' or a HOSS folder")
    p.add_argument("--ids", type=int, default=64, help="synthetic training identities (as many test ones)")
    p.add_argument("--per-id", type=int, default=4, help="synthetic images per identity and modality")
    p.add_argument("--epochs", type=int, default=0, help="with --eval: train both loops this many epochs")
    p.add_argument("--eval", action="store_true", help="report mAP/R1 of both loops after --epochs epochs")
    p.add_argument("--out", default="runs/bench_throughput")
    p.add_argument("--update-docs", action="store_true", help="rewrite the throughput block of --docs")
    p.add_argument("--docs", default="docs/benchmarks.md")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    if a.batch_size < 2 * INSTANCES or a.batch_size % INSTANCES:
        p.error(f"--batch-size must be a multiple of {INSTANCES} and >= {2 * INSTANCES}")
    if a.steps < 1 or a.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    if a.eval and a.epochs < 1:
        p.error("--eval needs --epochs N (N >= 1)")
    return a


def main(argv: list[str] | None = None) -> int:
    from sarbridge.core.utils import atomic_write_json, atomic_write_text, resolve_device

    a = parse_args(argv)
    device = resolve_device(a.device)
    if a.models is None:
        a.models = ["demo", "vit"] if device.type == "cuda" else ["demo"]
        if device.type != "cuda":
            print("note: on CPU only the demo model runs by default (ViT-B/16 is slow); add --models demo vit")
    name = device_name(device)
    splits = dataset(a)
    rows: list[dict[str, Any]] = []
    epochs = a.epochs if a.eval else None
    for model_name in a.models:
        cfg = experiment(model_name, a)
        ref_model, ref = reference_loop(cfg, splits.train, device, a.warmup, a.steps, epochs)
        ref_metrics = evaluate(ref_model, cfg, splits, device) if a.eval else {}
        del ref_model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        our_model, ours = our_loop(cfg, splits.train, device, a.warmup, a.steps, a.compile, not a.quiet, epochs)
        our_metrics = evaluate(our_model, cfg, splits, device) if a.eval else {}
        del our_model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        n_images = a.steps * a.batch_size
        base = {"model": "ViT-B/16" if model_name == "vit" else "demo", "device": device.type, "batch": a.batch_size,
                "workers": a.workers, "image_size": list(a.image_size)}
        if epochs:  # images/s over the whole epochs (loader start-up included)
            ref_ips = round(ref["steps"] * a.batch_size / ref["train_s"], 1)
            our_ips = round(ours["steps"] * a.batch_size / ours["train_s"], 1)
            ref_note = f"{epochs} epochs in {ref['train_s']} s"
            our_note = f"{epochs} epochs in {ours['train_s']} s; cache {ours['cache_build_s']} s"
        else:
            ref_ips = round(n_images / ref["timed_s"], 1)
            our_ips = round(n_images / ours["timed_s"], 1)
            ref_note = ""
            our_note = f"cache {ours['cache_build_s']} s" + (", compiled" if a.compile else "")
        rows.append(base | {"loop": "reference", "images/s": ref_ips, "ratio": 1.0, "precision": "fp32",
                            "gpu_augment": False, "notes": ref_note, **ref, **ref_metrics})
        rows.append(base | {"loop": "ours", "images/s": our_ips, "ratio": round(our_ips / ref_ips, 2),
                            "notes": our_note, **ours, **our_metrics})
    metric_cols = sorted({k for r in rows for k in r if k.endswith("_mAP") or k.endswith("_R1")})
    result = {"device": str(device), "device_name": name, "torch": torch.__version__,
              "python": platform.python_version(), "platform": platform.platform(),
              "command": " ".join(["python", "benchmarks/train_throughput.py", *(argv if argv is not None else sys.argv[1:])]),
              "settings": {k: v for k, v in vars(a).items()}, "rows": rows, "metric_columns": metric_cols}
    md = render(result)
    print(md)
    out = Path(a.out)
    atomic_write_json(out / "results.json", result)
    atomic_write_text(out / "results.md", md)
    if a.update_docs:
        update_docs(Path(a.docs), md)
    print(f"results: {out / 'results.json'}, {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
