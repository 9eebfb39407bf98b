"""CPU threading of a sarbridge process: how many threads, and threads that sleep when idle.

PyTorch's OpenMP runtime keeps idle worker threads spinning for a while after each parallel region
(libgomp's default wait policy). Alone on a machine that costs nothing; beside a second job it steals
the cores that job needs, and two concurrent jobs can each run ten times slower than alone. The
command line therefore calls :func:`configure_threads` before anything imports torch:

* ``OMP_WAIT_POLICY=PASSIVE`` (idle OpenMP threads sleep) and ``KMP_BLOCKTIME=0`` (the same for
  Intel's runtime), unless the user set them;
* the intra-op thread count: ``--threads`` when given, else ``SARBRIDGE_THREADS``, else
  ``OMP_NUM_THREADS``, else the CPUs this process may use (its CPU affinity, bounded by a cgroup
  CPU quota when the container has one).

Variables the user set are never replaced. ``SARBRIDGE_THREAD_SETUP=0`` turns the whole setup off
(used by ``benchmarks/cli_threads.py`` to measure the behaviour without it).
"""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

from sarbridge.core.errors import ConfigError

__all__ = ["ThreadPlan", "apply_threads", "available_cpus", "configure_threads", "cpu_model", "loader_workers"]

#: Environment defaults that make idle OpenMP threads sleep instead of spin.
PASSIVE_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}


@dataclass(frozen=True)
class ThreadPlan:
    """What :func:`configure_threads` decided.

    Attributes:
        threads: intra-op threads torch will use.
        source: where the number came from (``--threads``, ``SARBRIDGE_THREADS``,
            ``OMP_NUM_THREADS`` or ``available CPUs``).
        env_set: the environment variables this call set (the user's own are left as they were).
        late: torch was already imported, so the wait policy could not take effect any more.
    """

    threads: int
    source: str
    env_set: dict[str, str]
    late: bool = False


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by a cgroup quota (v2 ``cpu.max`` or v1 ``cfs_quota/period``), ``None`` if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        q = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        p = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return q / p if q > 0 and p > 0 else None
    except (OSError, ValueError):
        return None


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The number of CPUs this process may use: its affinity mask, bounded by a cgroup quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows, for benchmark tables."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return model


def loader_workers(requested: int, key: str = "data.num_workers", cpus: int | None = None) -> int:
    """DataLoader worker processes for ``requested``, at most the CPUs this process may use.

    The paper configs ask for 4-8 workers (GPU machines); on a 2-core machine that many processes
    fight the model for the cores. More workers than CPUs are capped, with one line on stderr
    saying so and how to keep the value (``SARBRIDGE_WORKERS_UNCAPPED=1``).

    Args:
        requested: the configured number (0 = load in the main process).
        key: the config key, for the message.
        cpus: CPUs available (default: :func:`available_cpus`).

    Returns:
        The number of workers to start.
    """
    requested = int(requested)
    if requested <= 1 or os.environ.get("SARBRIDGE_WORKERS_UNCAPPED", "").strip() in ("1", "true", "yes"):
        return requested
    cpus = available_cpus() if cpus is None else int(cpus)
    if requested <= cpus:
        return requested
    print(f"note: {key}={requested} but this process may use {cpus} CPU(s): starting {cpus} loader workers "
          "(set SARBRIDGE_WORKERS_UNCAPPED=1 to start them all)", file=sys.stderr)
    return cpus


def _positive(value: str | int, name: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ConfigError(f"{name}={value!r} is not a positive number of threads", f"set {name} to 1 or more")
    return n


def configure_threads(requested: int | None = None, environ: MutableMapping[str, str] | None = None,
                      cgroup_root: Path = Path("/sys/fs/cgroup")) -> ThreadPlan:
    """Choose the CPU threads of this process and make idle OpenMP threads sleep.

    Call it before torch is imported (the wait policy is read when the OpenMP runtime loads); the
    thread count is applied to torch when it is imported already, else through ``OMP_NUM_THREADS``
    (and again by :func:`apply_threads` once it is).

    Args:
        requested: ``--threads`` from the command line, or ``None``.
        environ: the environment to read and update (default ``os.environ``).
        cgroup_root: where to read a cgroup CPU quota (tests point it elsewhere).

    Returns:
        The :class:`ThreadPlan`.

    Raises:
        ConfigError: ``requested``, ``SARBRIDGE_THREADS`` or ``OMP_NUM_THREADS`` is not a positive integer.
    """
    env = os.environ if environ is None else environ
    if requested is not None:
        threads, source = _positive(requested, "--threads"), "--threads"
    elif env.get("SARBRIDGE_THREADS"):
        threads, source = _positive(env["SARBRIDGE_THREADS"], "SARBRIDGE_THREADS"), "SARBRIDGE_THREADS"
    elif env.get("OMP_NUM_THREADS"):
        threads, source = _positive(env["OMP_NUM_THREADS"].split(",")[0], "OMP_NUM_THREADS"), "OMP_NUM_THREADS"
    else:
        threads, source = available_cpus(cgroup_root), "available CPUs"
    env_set: dict[str, str] = {}
    for key, value in {**PASSIVE_ENV, "OMP_NUM_THREADS": str(threads)}.items():
        if key == "OMP_NUM_THREADS" and source == "OMP_NUM_THREADS":
            continue
        if key != "OMP_NUM_THREADS" and env.get(key):
            continue  # the user's own choice
        env[key] = value
        env_set[key] = value
    late = "torch" in sys.modules
    if late:
        apply_threads(threads)
    return ThreadPlan(threads, source, env_set, late)


def apply_threads(threads: int) -> None:
    """Set torch's intra-op thread count (torch must be importable)."""
    import torch  # noqa: PLC0415 - lazy: only once the caller has set the OpenMP environment

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
