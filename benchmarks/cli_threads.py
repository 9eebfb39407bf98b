"""Two sarbridge jobs on one machine: wall time with and without the command line's thread setup.

PyTorch's OpenMP threads spin while idle unless ``OMP_WAIT_POLICY=PASSIVE``; run outside ``make``
(which exports it), a job beside a second job used to crawl. The command line now sets the policy
itself (:mod:`sarbridge.core.threads`). This benchmark runs the same command

* alone, with the thread setup (the reference);
* twice at the same time, with ``SARBRIDGE_THREAD_SETUP=0`` and no OpenMP variables in the
  environment: the behaviour before the setup existed ("before");
* twice at the same time with the setup ("after"),

and prints the wall time of each, and the slowdown of each pair against the job alone (2.0 is
ideal on a machine whose cores one job already fills: two jobs share them).

Usage: ``python benchmarks/cli_threads.py [--command "geo demo --size 384"] [--out runs/bench_threads]``.
The command is a ``sarbridge`` sub-command; ``--out DIR`` is appended with a fresh folder per job.
Writes ``OUT/results.json`` and ``OUT/results.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from sarbridge.core.threads import available_cpus
from sarbridge.core.utils import atomic_write_json, atomic_write_text
from sarbridge.viz.tables import markdown_table

_OMP_VARS = ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "SARBRIDGE_THREADS")


def _env(setup: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _OMP_VARS}
    env["SARBRIDGE_THREAD_SETUP"] = "1" if setup else "0"
    return env


def _run_jobs(command: list[str], outs: list[Path], setup: bool) -> list[float]:
    """Start one job per folder at once; return each job's wall time in seconds."""
    for out in outs:
        shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "sarbridge", *command, "--quiet", "--out", str(out)],
                              env=_env(setup), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for out in outs]
    times = [0.0] * len(procs)
    pending = set(range(len(procs)))
    while pending:
        for i in list(pending):
            if procs[i].poll() is not None:
                times[i] = time.perf_counter() - start
                pending.discard(i)
                if procs[i].returncode != 0:
                    raise SystemExit(f"job {i} failed ({procs[i].returncode}): {procs[i].stderr.read()[-2000:]}")
        time.sleep(0.2)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--command", default="geo demo --size 384", help="sarbridge sub-command to run (default: %(default)s)")
    p.add_argument("--out", default="runs/bench_threads", help="results folder (default: %(default)s)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.split(args.command)
    work = out / "jobs"
    rows = []
    alone = _run_jobs(command, [work / "alone"], setup=True)[0]
    rows.append({"case": "alone, thread setup", "jobs": 1, "wall_s": round(alone, 1), "slowdown": 1.0})
    for name, setup in (("two at once, no setup (before)", False), ("two at once, thread setup (after)", True)):
        times = _run_jobs(command, [work / "a", work / "b"], setup)
        rows.append({"case": name, "jobs": 2, "wall_s": round(max(times), 1),
                     "slowdown": round(max(times) / alone, 2)})
        print(f"{name}: {[round(t, 1) for t in times]} s", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    facts = {"command": f"sarbridge {args.command}", "cpus": available_cpus(), "machine": platform.processor() or
             platform.machine(), "python": sys.version.split()[0]}
    atomic_write_json(out / "results.json", {"facts": facts, "rows": rows})
    table = markdown_table([[r["case"], r["jobs"], r["wall_s"], f"{r['slowdown']:.2f}"] for r in rows],
                           ["case", "jobs", "wall s (slowest job)", "vs alone"])
    text = f"`{facts['command']}` on {facts['cpus']} CPUs\n\n{table}\n"
    atomic_write_text(out / "results.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
