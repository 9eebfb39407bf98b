"""Benchmark search, re-ranking and evaluation at scale, against references measured in the same run.

Three parts, each measurement in a fresh process so its peak memory (max RSS) is its own:

* **search**: galleries of 1k, 10k, 100k, 1M seeded clustered unit vectors (dim 512 and 768),
  1,000 queries (noisy copies of gallery items), k = 10. For each index kind (exact ``flat``,
  ``ivfpq``, ``hnsw``): build time, batched queries per second, single-query latency, recall@10 of
  the approximate kinds against exact search. Reference: a bare ``torch`` matmul + top-k of the
  same size (chunked over queries), timed in the same process.
* **re-ranking**: k-reciprocal (k1 = 20, k2 = 6, lambda = 0.3) of M queries x N gallery items,
  ours (dense for small sets, the memory-bounded top-k version for large ones) against a naive
  reference written here straight from the paper (dense (M+N)^2 matrices, a Python loop per row),
  run where its memory fits; GNN re-ranking (top-100 output per query).
* **evaluation**: CMC/mAP/mINP of Q x G distance matrices with ``retrieval.metrics.evaluate``
  against a naive per-query loop (argsort and AP per query), the naive one timed on a subset of
  queries and scaled (said in the table).

Usage: ``python benchmarks/retrieval.py [--quick] [--sizes 1000 10000 100000 1000000] [--dims 512 768]
[--out runs/bench_retrieval] [--docs docs/benchmarks.md]``. Prints the tables and writes
``OUT/results.json``, ``OUT/results.md`` and the generated block of the docs page (between
``<!-- bench-retrieval:begin -->`` and ``<!-- bench-retrieval:end -->``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

BEGIN, END = "<!-- bench-retrieval:begin -->", "<!-- bench-retrieval:end -->"


# --- helpers ------------------------------------------------------------------------------------

def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _child(queue: Any, fn: Callable[..., dict], args: tuple) -> None:
    try:
        out = fn(*args)
        out["peak_mb"] = round(_peak_mb(), 1)
        queue.put(out)
    except MemoryError:
        queue.put({"error": "out of memory"})
    except Exception as exc:  # a benchmark row reports its failure, the others still run
        queue.put({"error": f"{type(exc).__name__}: {str(exc)[:120]}"})


def isolated(fn: Callable[..., dict], *args: Any, timeout: float = 3600) -> dict:
    """Run ``fn(*args)`` in a fresh spawned process; its result dict gets ``peak_mb``."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q, fn, args))
    p.start()
    try:
        out = q.get(timeout=timeout)
    except Exception:
        out = {"error": "timed out or crashed"}
    p.join(5)
    if p.is_alive():
        p.kill()
    return out


def clustered(n: int, dim: int, seed: int, clusters: int = 1000) -> np.ndarray:
    """Seeded unit vectors around ``clusters`` random centres (retrieval-like structure)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def queries_of(g: np.ndarray, nq: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    q = g[rng.integers(0, len(g), nq)] + 0.3 * rng.standard_normal((nq, g.shape[1])).astype(np.float32) / np.sqrt(g.shape[1]) * 4
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def exact_topk(q: np.ndarray, g: np.ndarray, k: int, chunk: int = 256) -> tuple[np.ndarray, float]:
    """Bare torch matmul + top-k, chunked over queries; returns (ids, seconds)."""
    import torch

    gt, ids = torch.from_numpy(g), []
    t = time.perf_counter()
    for s in range(0, len(q), chunk):
        ids.append(torch.topk(torch.from_numpy(q[s:s + chunk]) @ gt.t(), k, dim=1).indices)
    return torch.cat(ids).numpy(), time.perf_counter() - t


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


# --- search -------------------------------------------------------------------------------------

def search_row(n: int, dim: int, kind: str, nq: int, k: int, seed: int, ivf: tuple[int, int] = (32, 10)) -> dict:
    import torch

    from sarbridge.retrieval.index import EmbeddingIndex

    torch.set_num_threads(os.cpu_count() or 1)
    g = clustered(n, dim, seed)
    q = queries_of(g, nq, seed)
    truth, t_matmul = exact_topk(q, g, k)
    params = {}
    if kind == "ivfpq":
        params = {"nlist": int(min(1024, max(16, 4 * np.sqrt(n)))), "m": dim // 16, "nbits": 8, "nprobe": ivf[0],
                  "rerank": ivf[1]}
    elif kind == "hnsw":
        params = {"M": 32, "ef_construction": 100, "ef_search": 64}
    t = time.perf_counter()
    index = EmbeddingIndex(dim, kind=kind, params=params or None)
    index.add(g)
    build = time.perf_counter() - t
    t = time.perf_counter()
    _, ids = index.search(q, k)
    batch = time.perf_counter() - t
    single = []
    for i in range(min(200, nq)):
        t = time.perf_counter()
        index.search(q[i:i + 1], k)
        single.append(time.perf_counter() - t)
    return {"n": n, "dim": dim, "kind": kind, "build_s": round(build, 3), "qps": round(nq / batch, 1),
            "latency_ms": round(1000 * float(np.median(single)), 3), "recall@10": round(recall_at_k(ids, truth), 4),
            "matmul_s": round(t_matmul, 4), "vs_matmul": round(batch / t_matmul, 2), "params": params}


# --- re-ranking ---------------------------------------------------------------------------------

def naive_k_reciprocal(q: np.ndarray, g: np.ndarray, k1: int = 20, k2: int = 6, lam: float = 0.3) -> np.ndarray:
    """The paper's definitions with dense (M+N)^2 arrays and a loop per row (the usual reference)."""
    feats = np.concatenate([q, g]).astype(np.float32)
    m, total = len(q), len(feats)
    sq = (feats ** 2).sum(1)
    original = np.maximum(sq[:, None] + sq[None, :] - 2 * feats @ feats.T, 0).astype(np.float32)
    original = np.sqrt(original)
    original = (original / original.max(axis=1, keepdims=True)).astype(np.float32)
    rank = np.argsort(original, axis=1).astype(np.int32)
    v = np.zeros((total, total), dtype=np.float32)
    for i in range(total):
        fwd = rank[i, :k1 + 1]
        recip = fwd[np.any(rank[fwd, :k1 + 1] == i, axis=1)]
        expanded = recip
        for c in recip:
            cf = rank[c, :int(round(k1 / 2)) + 1]
            cr = cf[np.any(rank[cf, :int(round(k1 / 2)) + 1] == c, axis=1)]
            if len(np.intersect1d(cr, recip)) > 2 / 3 * len(cr):
                expanded = np.append(expanded, cr)
        expanded = np.unique(expanded)
        w = np.exp(-original[i, expanded])
        v[i, expanded] = w / w.sum()
    if k2 > 1:
        v = np.stack([v[rank[i, :k2]].mean(0) for i in range(total)])
    jaccard = np.zeros((m, total - m), dtype=np.float32)
    for i in range(m):
        mins = np.minimum(v[i][None, :], v[m:]).sum(1)
        jaccard[i] = 1 - mins / (2 - mins)
    return (1 - lam) * jaccard + lam * original[:m, m:]


def rerank_row(m: int, n: int, dim: int, method: str, seed: int) -> dict:
    import torch

    from sarbridge.retrieval import rerank

    torch.set_num_threads(os.cpu_count() or 1)
    g = clustered(n, dim, seed, clusters=max(10, n // 20))
    q = queries_of(g, m, seed)
    t = time.perf_counter()
    if method == "naive k-reciprocal":
        naive_k_reciprocal(q, g)
    elif method == "k-reciprocal (dense)":
        rerank.k_reciprocal_rerank_features(torch.from_numpy(q), torch.from_numpy(g), k1=20, k2=6, lambda_value=0.3)
    elif method == "k-reciprocal (top-k)":
        rerank.k_reciprocal_rerank_topk(torch.from_numpy(q), torch.from_numpy(g), k1=20, k2=6, lambda_value=0.3, topk=100)
    elif method == "gnn":
        rerank.gnn_rerank(torch.from_numpy(q), torch.from_numpy(g), topk=100)
    else:
        raise ValueError(method)
    return {"m": m, "n": n, "method": method, "time_s": round(time.perf_counter() - t, 2)}


# --- evaluation ---------------------------------------------------------------------------------

def naive_evaluate(dist: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray) -> float:
    """Per-query loop: argsort, matches, AP; returns mAP."""
    aps = []
    for i in range(len(dist)):
        order = np.argsort(dist[i], kind="stable")
        match = g_pids[order] == q_pids[i]
        if not match.any():
            continue
        hits = np.cumsum(match)
        aps.append(float((hits[match] / (np.flatnonzero(match) + 1)).mean()))
    return float(np.mean(aps))


def eval_row(nq: int, ng: int, method: str, seed: int, subset: int) -> dict:
    import torch

    from sarbridge.retrieval.metrics import evaluate

    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(seed)
    g_pids = rng.integers(0, max(2, ng // 10), ng)
    q_pids = g_pids[rng.integers(0, ng, nq)]
    dist = rng.random((nq, ng), dtype=np.float32)
    t = time.perf_counter()
    if method == "ours":
        res = evaluate(dist, q_pids, g_pids, max_rank=50)
        value = float(res["mAP"])
        scale = 1.0
    else:
        rows = min(subset, nq)
        value = naive_evaluate(dist[:rows], q_pids[:rows], g_pids)
        scale = nq / rows
    elapsed = (time.perf_counter() - t) * scale
    return {"q": nq, "g": ng, "method": method, "time_s": round(elapsed, 2), "scaled_from": None if scale == 1 else min(subset, nq),
            "value": round(value, 6)}


# --- report -------------------------------------------------------------------------------------

def table(rows: list[dict], cols: list[str]) -> str:
    """Markdown table; a row that failed shows its error in the last column."""
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [str(r.get(c, "")) for c in cols]
        if "error" in r:
            cells[-1] = r["error"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    import faiss
    import torch

    return (f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
            f"Python {platform.python_version()}, torch {torch.__version__}, faiss {faiss.__version__}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000, 1000000])
    p.add_argument("--dims", type=int, nargs="+", default=[512, 768])
    p.add_argument("--kinds", nargs="+", default=["flat", "ivfpq", "hnsw"])
    p.add_argument("--hnsw-max", type=int, default=100000, help="largest gallery for HNSW (its build is slow on few cores)")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--ivf-nprobe", type=int, default=32, help="IVF-PQ lists visited per query")
    p.add_argument("--ivf-rerank", type=int, default=10, help="IVF-PQ candidates re-scored exactly, as a multiple of k")
    p.add_argument("--skip-search", action="store_true")
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument("--rerank", nargs="+", default=["5000", "20000"],
                   help="gallery sizes (queries = size/5) or QxG, e.g. 20000x20000")
    p.add_argument("--rerank-methods", nargs="+", default=None,
                   help="only these re-ranking rows, e.g. gnn 'k-reciprocal (top-k)'")
    p.add_argument("--naive-max", type=int, default=6000, help="largest M+N for the dense naive re-ranking")
    p.add_argument("--eval", type=str, nargs="+", default=["5000x5000", "20000x20000", "10000x100000"])
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--out", default="runs/bench_retrieval")
    p.add_argument("--docs", default="docs/benchmarks.md")
    a = p.parse_args(argv)
    if a.quick:
        a.sizes, a.dims, a.queries, a.rerank, a.eval, a.naive_max = [1000, 5000], [64], 200, ["500"], ["500x2000"], 1000
    seed = 0
    search = [] if a.skip_search else [
        isolated(search_row, n, d, kind, a.queries, 10, seed, (a.ivf_nprobe, a.ivf_rerank)) | {"n": n, "dim": d, "kind": kind}
        for d in a.dims for n in a.sizes for kind in a.kinds if not (kind == "hnsw" and n > a.hnsw_max)]
    print(table(search, ["n", "dim", "kind", "build_s", "qps", "latency_ms", "recall@10", "vs_matmul", "peak_mb"]))
    rer = []
    from sarbridge.retrieval import rerank as _r

    for spec in a.rerank:
        m, n = (int(x) for x in spec.split("x")) if "x" in str(spec) else (max(1, int(spec) // 5), int(spec))
        methods = ["k-reciprocal (dense)" if m + n <= 3 * a.naive_max else None,
                   "k-reciprocal (top-k)" if hasattr(_r, "k_reciprocal_rerank_topk") else None,
                   "gnn" if hasattr(_r, "gnn_rerank") else None,
                   "naive k-reciprocal" if m + n <= a.naive_max else None]
        for method in [x for x in methods if x and (a.rerank_methods is None or x in a.rerank_methods)]:
            rer.append(isolated(rerank_row, m, n, 128, method, seed) | {"m": m, "n": n, "method": method})
        if m + n > a.naive_max and (a.rerank_methods is None or "naive k-reciprocal" in a.rerank_methods):
            rer.append({"m": m, "n": n, "method": "naive k-reciprocal",
                        "error": f"skipped: needs ~{3 * 4 * (m + n) ** 2 / 2**30:.0f} GiB of dense matrices"})
    print(table(rer, ["m", "n", "method", "time_s", "peak_mb"]))
    ev = []
    for spec in [] if a.skip_eval else a.eval:
        nq, ng = (int(x) for x in spec.split("x"))
        for method in ("ours", "naive loop"):
            ev.append(isolated(eval_row, nq, ng, method, seed, 500) | {"q": nq, "g": ng, "method": method})
    print(table(ev, ["q", "g", "method", "time_s", "scaled_from", "peak_mb"]))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine(), "command": " ".join(["python", "benchmarks/retrieval.py", *(argv or sys.argv[1:])]),
              "search": search, "rerank": rer, "evaluation": ev}
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    md = (f"Machine: {result['machine']}.\n\nCommand: `{result['command']}`.\n\n### Search (k = 10, {a.queries} queries)\n\n"
          + table(search, ["n", "dim", "kind", "build_s", "qps", "latency_ms", "recall@10", "vs_matmul", "peak_mb"])
          + "\n`vs_matmul`: batched search time / a bare torch matmul + top-k of the same size in the same process.\n"
          + "\n### Re-ranking (k1 = 20, k2 = 6, lambda = 0.3; m queries x n gallery items, dim 128)\n\n"
          + table(rer, ["m", "n", "method", "time_s", "peak_mb"])
          + "\n### Evaluation (CMC/mAP/mINP)\n\n" + table(ev, ["q", "g", "method", "time_s", "scaled_from", "peak_mb"])
          + "\n`scaled_from`: the naive loop ran on that many queries; its time is scaled to all queries.\n")
    (out / "results.md").write_text(md)
    docs = Path(a.docs)
    if a.docs and docs.is_file() and BEGIN in docs.read_text():
        text = docs.read_text()
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        docs.write_text(f"{head}{BEGIN}\n{md}{END}{tail}")
    print(f"results: {out / 'results.json'}, {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
