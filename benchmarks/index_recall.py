"""Benchmark recall@10 and latency of the index kinds, default vs tuned to a recall target (issue 15).

For each gallery size: the seeded clustered unit vectors and the noisy queries of
``benchmarks/retrieval.py`` (same data, so the figures compare with its tables), exact ground truth
by a bare torch matmul + top-k, then for each kind

* ``flat`` -- exact search (the latency reference);
* ``ivfpq`` -- IVF-PQ with the parameters of ``benchmarks/retrieval.py`` (nlist min(1024, 4 sqrt N),
  m = dim / 16, nprobe 32, 10 x k candidates re-scored), then the same index after
  ``tune_search(target)``;
* ``ivfsq`` -- IVF with 8-bit scalar codes (defaults: nlist sqrt N, nprobe 16, 4 x k re-scored),
  then after ``tune_search(target)``.

Tuning uses its own queries: ``--sample`` indexed vectors moved by ``perturb = 1.0`` (cosine 0.71 with
their source; see ``sarbridge.retrieval.index.tune``); the table's recall is measured on the
benchmark's queries, which the tuner never saw. Columns: build time (training + adding; the tuned
rows: the tuning time), recall@10, median single-query latency (batch 1; ``flat``: 20 queries), the
median CPU time of those single queries (all threads; on a machine shared with other jobs the wall
time is inflated, the CPU time much less), batched latency (all queries in one call, per query), and
the index memory (float32 vectors kept for re-scoring + codes
+ ids + coarse centroids). Each row's latency and the exact reference are measured in the same
process.

Usage: ``python benchmarks/index_recall.py [--sizes 100000 1000000] [--dim 512] [--target-recall 0.95]
[--quick] [--out runs/bench_index_recall] [--docs docs/benchmarks.md]``. Prints the table and
writes ``OUT/results.json``, ``OUT/results.md`` and the docs block between
``<!-- bench-index-recall:begin -->`` and ``<!-- bench-index-recall:end -->``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BEGIN, END = "<!-- bench-index-recall:begin -->", "<!-- bench-index-recall:end -->"
COLS = ["n", "kind", "params", "build_s", "recall@10", "latency_ms", "cpu_ms", "batched_ms", "index_mb", "target_met"]


def index_mb(index: Any) -> float:
    """Memory of the index: float32 vectors + (IVF) codes, ids and coarse centroids, in MiB."""
    n, dim = len(index), index.dim
    total = 4 * n * dim
    faiss_index = getattr(index._store, "_index", None)
    if faiss_index is not None and hasattr(faiss_index, "nlist"):  # IVF: codes + ids + centroids
        nlist = int(getattr(faiss_index, "nlist", 0))
        total += n * (int(faiss_index.code_size) + 8) + 4 * nlist * dim
    return round(total / 2**20, 1)


def measure(index: Any, q: np.ndarray, truth: np.ndarray, k: int, single: int) -> dict[str, Any]:
    from sarbridge.retrieval.index.tune import recall_at_k

    t = time.perf_counter()
    _, ids = index.search(q, k)
    batched = time.perf_counter() - t
    times, cpu = [], []
    for i in range(min(single, len(q))):
        t, c = time.perf_counter(), time.process_time()
        index.search(q[i:i + 1], k)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"recall@10": round(recall_at_k(ids, truth), 4), "latency_ms": round(1000 * float(np.median(times)), 3),
            "cpu_ms": round(1000 * float(np.median(cpu)), 3), "batched_ms": round(1000 * batched / len(q), 3),
            "index_mb": index_mb(index)}


def settings_text(index: Any) -> str:
    s = index.search_settings()
    if "nprobe" in s:
        depth = s["rescore"] if s["rescore"] is not None else f"{s['rerank']}k"
        extra = f"m {index.params['m']}" if "m" in index.params else f"{index.params['qtype']}"
        return f"nlist {index.params['nlist']}, {extra}, nprobe {s['nprobe']}, rescore {depth}"
    return "exact"


def rows_for(n: int, dim: int, nq: int, kinds: list[str], target: float, sample: int, single: int,
             seed: int) -> list[dict[str, Any]]:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from retrieval import clustered, exact_topk, queries_of
    from sarbridge.retrieval.index import EmbeddingIndex, tune_search

    torch.set_num_threads(os.cpu_count() or 1)
    k = 10
    g = clustered(n, dim, seed)
    q = queries_of(g, nq, seed)
    truth, _ = exact_topk(q, g, k)
    tune_sample = g[np.random.default_rng(seed + 7).choice(n, min(sample, n), replace=False)]
    rows = []
    for kind in kinds:
        params: dict[str, Any] = {}
        if kind == "ivfpq":
            params = {"nlist": int(min(1024, max(16, 4 * np.sqrt(n)))), "m": dim // 16, "nprobe": 32, "rerank": 10}
        t = time.perf_counter()
        index = EmbeddingIndex(dim, kind=kind, params=params or None)
        index.add(g)
        build = time.perf_counter() - t
        row = {"n": n, "kind": kind, "build_s": round(build, 1)} | measure(index, q, truth, k,
                                                                         single if kind != "flat" else min(single, 20))
        row["params"] = settings_text(index)
        row["target_met"] = row["recall@10"] >= target and row["latency_ms"] < 2.0
        rows.append(row)
        print(row, flush=True)
        if kind == "flat":
            continue
        t = time.perf_counter()
        tuned = tune_search(index, tune_sample, target, k=k)
        took = time.perf_counter() - t
        row = {"n": n, "kind": f"{kind} tuned {target}", "build_s": f"+{took:.1f}"} | measure(index, q, truth, k, single)
        row["params"] = settings_text(index)
        row["tuning"] = {key: v for key, v in tuned.items() if key != "grid"}
        row["target_met"] = row["recall@10"] >= target and row["latency_ms"] < 2.0
        rows.append(row)
        print(row, flush=True)
        del index
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLS) + " |", "|" + "---|" * len(COLS)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in COLS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100000, 1000000], help="gallery sizes (default 100000 1000000)")
    p.add_argument("--dim", type=int, default=512, help="embedding dimension (default 512)")
    p.add_argument("--kinds", nargs="+", default=["flat", "ivfpq", "ivfsq"], help="index kinds (default flat ivfpq ivfsq)")
    p.add_argument("--queries", type=int, default=1000, help="benchmark queries (default 1000)")
    p.add_argument("--single", type=int, default=200, help="queries timed one at a time (default 200)")
    p.add_argument("--target-recall", type=float, default=0.95, help="recall@10 target of tune_search (default 0.95)")
    p.add_argument("--sample", type=int, default=1000, help="tuning sample size (default 1000)")
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--out", default="runs/bench_index_recall", help="output folder (default runs/bench_index_recall)")
    p.add_argument("--docs", default="docs/benchmarks.md", help="docs page to update ('' for none)")
    a = p.parse_args(argv)
    if a.quick:
        a.sizes, a.dim, a.queries, a.single, a.sample = [5000, 20000], 64, 200, 50, 300
    rows = [r for n in a.sizes for r in rows_for(n, a.dim, a.queries, a.kinds, a.target_recall, a.sample, a.single, 0)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    md = table(rows)
    print(md)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from retrieval import machine

    command = " ".join(["python", "benchmarks/index_recall.py", *(argv if argv is not None else sys.argv[1:])])
    head = (f"Machine: {machine()}.\n\nCommand: `{command}`.\n\nk = 10, {a.queries} queries, dim {a.dim}, "
            f"target recall@10 {a.target_recall} under 2 ms per query (batch 1); peak RSS of the run "
            f"{peak:.0f} MB.\n\n")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"machine": machine(), "command": command, "rows": rows,
                                                  "peak_mb": round(peak, 1)}, indent=2) + "\n")
    (out / "results.md").write_text(head + md)
    docs = Path(a.docs) if a.docs else None
    if docs is not None and docs.is_file() and BEGIN in docs.read_text():
        text = docs.read_text()
        before, _, rest = text.partition(BEGIN)
        _, _, after = rest.partition(END)
        docs.write_text(f"{before}{BEGIN}\n{head}{md}{END}{after}")
    print(f"results: {out / 'results.json'}, {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
