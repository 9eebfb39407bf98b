"""How ``geo build-index`` scales with the map: patches/s, peak memory, index size, 1 vs 2 processes.

For each map side (default 4096, 16384 and 32768 px) the benchmark writes a 3-band uint8 GeoTIFF
tile by tile (512 px deflate blocks; mostly uniform colour per block with a lattice and a textured
square, so a 32k map is small on disk), a tiny untrained geo encoder (the demo CNN on 256 px cells
resized to 32 px) and then, in a fresh child process per size, runs
:func:`sarbridge.tasks.geo.map_index.build_map_index`. The child reports its own peak RSS
(``resource.getrusage``) and that of its DataLoader workers. The same build under
``torchrun --nproc_per_node 2`` (gloo, CPU) gives the 2-process time. Search: 200 map patches'
embeddings plus Gaussian noise (sigma 0.05, re-normalised) are searched with ``index.search``
(k = 10) one at a time; recall@10 is measured against a brute-force numpy top-10 and latency is the
median per query (recall counts ties with the exact 10th score as hits).

The flat memory claim: the in-memory build would need the whole map (3 x side^2 bytes: 50 MB at 4k,
805 MB at 16k, 3.2 GB at 32k) plus the model; the streamed build's peak RSS should not grow with it.

Usage: ``python benchmarks/map_scale.py [--sizes 4096 16384 32768] [--work /tmp/sarbridge_map_scale]
[--out runs/bench_map_scale] [--no-ddp]``. Writes ``OUT/results.json`` and ``OUT/results.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from sarbridge.core.utils import atomic_write_json, atomic_write_text
from sarbridge.viz.tables import markdown_table

TINY = ["data.patch_size=256", "data.image_size=[32,32]", "model.embed_dim=64", "eval.batch_size=128",
        "device=cpu", "model.backbone_kwargs={layers: [1, 1, 1, 1], channels: [8, 16, 32, 64], stem_width: 8}"]
BLOCK = 512


def write_map(path: Path, side: int, seed: int = 0) -> Path:
    """A ``side`` x ``side`` RGB GeoTIFF written block by block (never whole in memory)."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".part.tif")
    profile = {"driver": "GTiff", "height": side, "width": side, "count": 3, "dtype": "uint8", "crs": "EPSG:32631",
               "transform": Affine(0.5, 0, 500000, 0, -0.5, 5700000), "tiled": True, "blockxsize": BLOCK,
               "blockysize": BLOCK, "compress": "deflate", "BIGTIFF": "IF_SAFER"}
    yy, xx = np.mgrid[0:BLOCK, 0:BLOCK]
    lattice = ((yy % 64 < 2) | (xx % 64 < 2))
    with rasterio.open(tmp, "w", **profile) as dst:
        for r in range(0, side, BLOCK):
            for c in range(0, side, BLOCK):
                block = np.empty((3, BLOCK, BLOCK), np.uint8)
                block[:] = rng.integers(40, 220, size=(3, 1, 1), dtype=np.uint8)
                block[:, lattice] //= 2
                y0, x0 = (int(v) for v in rng.integers(0, BLOCK - 96, size=2))
                block[:, y0:y0 + 96, x0:x0 + 96] = rng.integers(0, 256, size=(3, 96, 96), dtype=np.uint8)
                dst.write(block, window=Window(c, r, BLOCK, BLOCK))
    os.replace(tmp, path)
    return path


def write_model(path: Path) -> Path:
    import torch

    from sarbridge.resources import resource_path
    from sarbridge.tasks.geo.bundle import build_encoder, save_geo_model
    from sarbridge.tasks.geo.config import load_geo_config

    cfg = load_geo_config(resource_path("geo_demo.yaml"), TINY)
    torch.manual_seed(0)
    return save_geo_model(path, cfg, build_encoder(cfg, False), None, {"patch_size_m": 128.0})


def child(map_path: str, model: str, out: str) -> None:
    """Build the index in this (fresh) process and print its figures as JSON."""
    from sarbridge.tasks.geo.map_index import build_map_index

    res = build_map_index(map_path, model, out, overwrite=True, device="cpu", progress=False)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"patches": res.patches, "cells": res.cells, "seconds": res.seconds,
                      "patches_per_s": res.patches_per_s, "workers": res.workers, "rss_mb": own,
                      "worker_rss_mb": workers}))


def search_figures(index_dir: Path, n: int = 200, seed: int = 0) -> tuple[float, float]:
    """recall@10 against brute force and median single-query latency (ms) of noisy map patches."""
    from sarbridge.retrieval.index import EmbeddingIndex

    index = EmbeddingIndex.load(index_dir)
    vec = index.embeddings()
    rng = np.random.default_rng(seed)
    q = vec[rng.choice(len(vec), size=min(n, len(vec)), replace=False)]
    q = q + rng.normal(0, 0.05, size=q.shape).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    scores = q @ vec.T
    kth = np.sort(scores, axis=1)[:, -10]  # tie-aware: any item scoring at least the exact 10th counts
    hits, times = 0, []
    for i in range(len(q)):
        t = time.perf_counter()
        _, ids = index.search(q[i:i + 1], 10)
        times.append(time.perf_counter() - t)
        got = np.asarray(ids)[0]
        hits += int((scores[i, got[got >= 0]] >= kth[i] - 1e-5).sum())
    return hits / (10 * len(q)), 1000 * float(np.median(times))


def _du(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 32768], help="map sides in pixels")
    ap.add_argument("--work", default="/tmp/sarbridge_map_scale", help="folder for the maps and indexes")
    ap.add_argument("--out", default="runs/bench_map_scale", help="results folder")
    ap.add_argument("--no-ddp", action="store_true", help="skip the 2-process builds")
    ap.add_argument("--child", nargs=3, metavar=("MAP", "MODEL", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    free_gb = shutil.disk_usage(work).free / 2**30
    print(f"free disk in {work}: {free_gb:.0f} GiB")
    model = write_model(work / "geo_model.pt")
    rows, facts = [], []
    for side in args.sizes:
        t = time.perf_counter()
        map_path = write_map(work / f"map_{side}.tif", side)
        gen_s = time.perf_counter() - t
        idx = work / f"idx_{side}"
        proc = subprocess.run([sys.executable, __file__, "--child", str(map_path), str(model), str(idx)],
                              capture_output=True, text=True, check=True)
        one = json.loads(proc.stdout.strip().splitlines()[-1])
        two_s = None
        if not args.no_ddp:
            idx2 = work / f"idx_{side}_2p"
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            "-m", "sarbridge", "geo", "build-index", "--map", str(map_path), "--model", str(model),
                            "--out", str(idx2), "--device", "cpu", "--quiet", "--overwrite"],
                           capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            two_s = time.perf_counter() - t
            shutil.rmtree(idx2, ignore_errors=True)
        recall, latency = search_figures(idx)
        fact = {"side_px": side, "map_mb_raw": 3 * side * side / 2**20, "map_mb_disk": map_path.stat().st_size / 2**20,
                "generate_s": gen_s, **one, "index_mb": _du(idx), "build_2p_s": two_s, "recall_at_10": recall,
                "query_ms": latency}
        facts.append(fact)
        rows.append([f"{side} x {side}", f"{fact['map_mb_raw']:.0f} / {fact['map_mb_disk']:.0f}", one["patches"],
                     f"{one['patches_per_s']:.0f}", f"{one['rss_mb']:.0f} / {one['worker_rss_mb']:.0f}",
                     f"{fact['index_mb']:.1f}", f"{one['seconds']:.1f}",
                     "-" if two_s is None else f"{two_s:.1f}", f"{recall:.3f}", f"{latency:.2f}"])
        print(json.dumps(fact))
    header = ["map (px)", "map MB raw / on disk", "patches", "patches/s", "peak RSS MB (main / worker)",
              "index MB", "build s (1 proc)", "build s (2 procs, torchrun wall)", "recall@10", "query ms"]
    table = markdown_table(rows, header)
    rss = [f["rss_mb"] for f in facts]
    ratio = max(rss) / min(rss) if rss else float("nan")
    raw = [f["map_mb_raw"] for f in facts]
    note = (f"peak RSS of the largest / smallest map: {ratio:.2f}x while the map grew "
            f"{(max(raw) / min(raw) if raw else float('nan')):.0f}x")
    env = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(table, end="")
    print(note)
    atomic_write_json(out / "results.json", {"env": env, "rows": facts})
    atomic_write_text(out / "results.md", f"# Map index scale\n\n{env}\n\n{table}\n{note}\n")


if __name__ == "__main__":
    main()
