"""Benchmark re-ID evaluation (CMC/mAP/mINP) from features, against references measured in the same run.

For each size Q x G (seeded clustered features, dim 256, about 10 gallery items per identity,
queries are noisy members of gallery identities) three methods run, each in a fresh process so
its peak memory is its own:

* ``argsort loop`` (the reference): the distances of the queries (``pairwise_distance``), then a
  Python loop over queries with a stable ``argsort`` of each row. It runs on the first
  ``--loop-queries`` queries and its time is scaled linearly to all queries (said in the table).
* ``full sort (before)``: ``pairwise_distance`` of all queries (the dense Q x G matrix), then the
  evaluator as it was before issue 15 (chunked argsort of every row, ``rank_matches`` +
  ``match_statistics``).
* ``counting + blocks (new)``: ``retrieval.metrics.evaluate_features`` -- products one block of
  queries at a time, the ranks of the matches counted from the few items that can precede them
  (only those get finished distances), never the Q x G matrix.

Columns: seconds (distance part and ranking part where they are separate), peak memory above
the features (max RSS of the process minus its max RSS once the features exist), speedup against
the loop, and the largest difference of the per-query AP / INP and of the CMC curve against the
loop on the queries the loop ran on.

Usage: ``python benchmarks/eval_speed.py [--quick] [--sizes 2000x20000 10000x100000] [--dim 256]
[--loop-queries 200] [--out runs/bench_eval_speed] [--docs docs/benchmarks.md]``. Prints the
table and writes ``OUT/results.json``, ``OUT/results.md`` and the generated block of the docs
page (between ``<!-- bench-eval-speed:begin -->`` and ``<!-- bench-eval-speed:end -->``).
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
from pathlib import Path
from typing import Any

import numpy as np

BEGIN, END = "<!-- bench-eval-speed:begin -->", "<!-- bench-eval-speed:end -->"
COLS = ["q", "g", "method", "dist_s", "rank_s", "total_s", "scaled_from", "peak_mb", "speedup", "max_diff"]


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def features(nq: int, ng: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded clustered float32 features, generated in slices (few temporaries)."""
    rng = np.random.default_rng(seed)
    n_ids = max(2, ng // 10)
    centres = rng.standard_normal((n_ids, dim), dtype=np.float32)
    g_pids = rng.integers(0, n_ids, ng)
    q_pids = g_pids[rng.integers(0, ng, nq)]
    g = np.empty((ng, dim), dtype=np.float32)
    q = np.empty((nq, dim), dtype=np.float32)
    for x, pids in ((g, g_pids), (q, q_pids)):
        for s in range(0, len(x), 8192):
            x[s:s + 8192] = centres[pids[s:s + 8192]] + 1.2 * rng.standard_normal((len(x[s:s + 8192]), dim),
                                                                                 dtype=np.float32)
    return q, g, q_pids, g_pids


def loop_reference(dist: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per query: stable argsort, match list, first rank, AP, INP."""
    first, ap, inp = [], [], []
    for i in range(len(dist)):
        order = np.argsort(dist[i], kind="stable")
        hits = g_pids[order] == q_pids[i]
        ranks = np.flatnonzero(hits) + 1.0
        first.append(int(ranks[0]))
        ap.append(float(np.mean(np.arange(1, ranks.size + 1) / ranks)))
        inp.append(float(ranks.size / ranks[-1]))
    return np.array(first), np.array(ap), np.array(inp)


def full_sort_before(dist: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray) -> tuple[np.ndarray, ...]:
    """The evaluator before issue 15: chunks of ~4M pairs, rank_matches (argsort) + match_statistics."""
    from sarbridge.retrieval.metrics import match_statistics, rank_matches

    rows = max(1, 2**22 // dist.shape[1])
    out: list[tuple[np.ndarray, ...]] = []
    for s in range(0, len(dist), rows):
        match = g_pids[None, :] == q_pids[s:s + rows, None]
        out.append(match_statistics(rank_matches(dist[s:s + rows], match, None)))
    return tuple(np.concatenate([o[i] for o in out]) for i in range(3))


def run_method(method: str, nq: int, ng: int, dim: int, seed: int, loop_queries: int) -> dict[str, Any]:
    import torch

    from sarbridge.retrieval.distance import pairwise_distance
    from sarbridge.retrieval.metrics import evaluate_features

    torch.set_num_threads(os.cpu_count() or 1)
    q, g, qp, gp = features(nq, ng, dim, seed)
    base = _maxrss_mb()
    t0 = time.perf_counter()
    scaled_from = None
    if method == "argsort loop":
        rows = min(loop_queries, nq)
        dist = pairwise_distance(q[:rows], g)
        t1 = time.perf_counter()
        first, ap, inp = loop_reference(dist, qp[:rows], gp)
        t2 = time.perf_counter()
        scale = nq / rows
        dist_s, rank_s = (t1 - t0) * scale, (t2 - t1) * scale
        scaled_from = rows
    elif method == "full sort (before)":
        dist = pairwise_distance(q, g)
        t1 = time.perf_counter()
        first, ap, inp = full_sort_before(dist, qp, gp)
        dist_s, rank_s = t1 - t0, time.perf_counter() - t1
    elif method == "counting + blocks (new)":
        res = evaluate_features(q, g, qp, gp, max_rank=50)
        dist_s, rank_s = None, None
        ap, inp, first = res["all_AP"], res["all_INP"], None  # CMC only for the whole query set
    else:
        raise ValueError(method)
    total = time.perf_counter() - t0 if scaled_from is None else dist_s + rank_s
    sub = min(loop_queries, nq)
    cmc = None if first is None else np.array([np.mean(first[:sub] <= k) for k in range(1, 51)])
    full_cmc = res["cmc"] if first is None else np.array([np.mean(first <= k) for k in range(1, 51)])
    return {"q": nq, "g": ng, "method": method, "dist_s": None if dist_s is None else round(dist_s, 2),
            "rank_s": None if rank_s is None else round(rank_s, 2), "total_s": round(total, 2),
            "scaled_from": scaled_from, "peak_mb": round(_maxrss_mb() - base, 1),
            "ap": ap[:sub].tolist(), "inp": inp[:sub].tolist(), "cmc_sub": None if cmc is None else cmc.tolist(),
            "cmc_full": full_cmc.tolist(), "mAP": float(np.mean(ap)), "mINP": float(np.mean(inp))}


def _child(queue: Any, args: tuple) -> None:
    try:
        queue.put(run_method(*args))
    except Exception as exc:  # a row reports its failure, the others still run
        queue.put({"error": f"{type(exc).__name__}: {str(exc)[:160]}"})


def isolated(*args: Any, timeout: float = 7200) -> dict[str, Any]:
    """Run one method in a fresh spawned process (its own peak memory)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q, args))
    p.start()
    try:
        out = q.get(timeout=timeout)
    except Exception:
        out = {"error": "timed out or crashed"}
    p.join(5)
    if p.is_alive():
        p.kill()
    return out


def compare(rows: list[dict[str, Any]]) -> None:
    """Speedup and max |diff| of every row against the loop row of its size (in place)."""
    ref = next((r for r in rows if r.get("method") == "argsort loop" and "error" not in r), None)
    before = next((r for r in rows if r.get("method") == "full sort (before)" and "error" not in r), None)
    for r in rows:
        if ref is None or "error" in r:
            continue
        r["speedup"] = round(ref["total_s"] / r["total_s"], 1) if r["total_s"] else None
        n = len(ref["ap"])
        diffs = [np.max(np.abs(np.array(r["ap"][:n]) - ref["ap"])), np.max(np.abs(np.array(r["inp"][:n]) - ref["inp"]))]
        if r.get("cmc_sub") is not None:
            diffs.append(np.max(np.abs(np.array(r["cmc_sub"]) - ref["cmc_sub"])))
        elif before is not None:  # the new method's CMC covers all queries: compare with the full sort's
            diffs.append(np.max(np.abs(np.array(r["cmc_full"]) - before["cmc_full"])))
        r["max_diff"] = f"{max(diffs):.1e}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLS) + " |", "|" + "---|" * len(COLS)]
    for r in rows:
        cells = ["" if r.get(c) is None else str(r.get(c)) for c in COLS]
        if "error" in r:
            cells[-1] = r["error"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
            f"{gpu}, Python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["2000x20000", "10000x100000"], help="QxG sizes (default: %(default)s)")
    p.add_argument("--dim", type=int, default=256, help="feature dimension (default: %(default)s)")
    p.add_argument("--loop-queries", type=int, default=200,
                   help="queries the argsort loop runs on; its time is scaled to all (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="small sizes, a smoke run (default: off)")
    p.add_argument("--out", default="runs/bench_eval_speed", help="output folder (default: %(default)s)")
    p.add_argument("--docs", default="docs/benchmarks.md", help="docs page to update, '' for none (default: %(default)s)")
    a = p.parse_args(argv)
    if a.quick:
        a.sizes, a.dim, a.loop_queries = ["300x3000"], 64, 100
    rows: list[dict[str, Any]] = []
    for spec in a.sizes:
        nq, ng = (int(x) for x in spec.split("x"))
        size_rows = []
        for method in ("argsort loop", "full sort (before)", "counting + blocks (new)"):
            r = isolated(method, nq, ng, a.dim, 0, a.loop_queries)
            size_rows.append({"q": nq, "g": ng, "method": method} | r)
            print({k: v for k, v in size_rows[-1].items() if k in COLS or k == "error"}, flush=True)
        compare(size_rows)
        rows.extend(size_rows)
    print(table(rows))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = " ".join(["python", "benchmarks/eval_speed.py", *(argv if argv is not None else sys.argv[1:])])
    result = {"machine": machine(), "command": cmd, "rows": rows}
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    md = (f"Machine: {result['machine']}.\n\nCommand: `{cmd}` (features dim {a.dim}, ~10 gallery items per "
          "identity, every query has matches).\n\n" + table(rows)
          + "\n`dist_s` / `rank_s`: distance matrix and ranking parts (the new method interleaves them). "
          "`scaled_from`: the loop ran on that many queries, its times are scaled to all queries. `peak_mb`: "
          "max RSS above the features. `max_diff`: largest |difference| of per-query AP and INP against the "
          "loop on the loop's queries, and of the CMC curve (against the loop on those queries, or for the new "
          "method, against the full sort on all queries).\n")
    (out / "results.md").write_text(md)
    docs = Path(a.docs) if a.docs else None
    if docs is not None and docs.is_file() and BEGIN in docs.read_text():
        text = docs.read_text()
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        docs.write_text(f"{head}{BEGIN}\n{md}{END}{tail}")
    print(f"results: {out / 'results.json'}, {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
