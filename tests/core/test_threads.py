"""CPU threading: the thread count's sources, the user's variables kept, the wait policy before torch loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sarbridge.app.cli import main
from sarbridge.core.errors import ConfigError
from sarbridge.core.threads import available_cpus, configure_threads, loader_workers


@pytest.fixture()
def no_cgroup(tmp_path: Path) -> Path:
    return tmp_path / "no-cgroup"


def test_thread_count_sources_in_order(no_cgroup: Path) -> None:
    env = {"SARBRIDGE_THREADS": "3", "OMP_NUM_THREADS": "5"}
    assert configure_threads(2, env, no_cgroup).source == "--threads"
    assert env["OMP_NUM_THREADS"] == "2"
    env = {"SARBRIDGE_THREADS": "3", "OMP_NUM_THREADS": "5"}
    plan = configure_threads(None, env, no_cgroup)
    assert (plan.threads, plan.source, env["OMP_NUM_THREADS"]) == (3, "SARBRIDGE_THREADS", "3")
    env = {"OMP_NUM_THREADS": "5"}
    plan = configure_threads(None, env, no_cgroup)
    assert (plan.threads, plan.source, env["OMP_NUM_THREADS"]) == (5, "OMP_NUM_THREADS", "5")
    assert "OMP_NUM_THREADS" not in plan.env_set
    env = {}
    plan = configure_threads(None, env, no_cgroup)
    assert plan.source == "available CPUs" and plan.threads == len(os.sched_getaffinity(0))
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0", "OMP_NUM_THREADS": str(plan.threads)}


def test_user_wait_policy_is_kept(no_cgroup: Path) -> None:
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    plan = configure_threads(1, env, no_cgroup)
    assert env["OMP_WAIT_POLICY"] == "ACTIVE" and "OMP_WAIT_POLICY" not in plan.env_set
    assert env["KMP_BLOCKTIME"] == "0"


@pytest.mark.parametrize("bad", ["0", "-2", "two", ""])
def test_bad_thread_counts_are_refused(bad: str, no_cgroup: Path) -> None:
    if bad == "":
        assert configure_threads(None, {"SARBRIDGE_THREADS": ""}, no_cgroup).source == "available CPUs"
        return
    with pytest.raises(ConfigError, match="SARBRIDGE_THREADS"):
        configure_threads(None, {"SARBRIDGE_THREADS": bad}, no_cgroup)


def test_cgroup_quota_bounds_the_cpus(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert available_cpus(tmp_path) == min(2, len(os.sched_getaffinity(0)))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == len(os.sched_getaffinity(0))
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert available_cpus(v1) == 1


def test_policy_reaches_torch_when_set_before_import() -> None:
    """In a fresh process: the variables are in place when torch loads, and the count takes effect."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    env["SARBRIDGE_THREADS"] = "1"
    code = ("import os, sys; from sarbridge.core.threads import configure_threads; p = configure_threads(); "
            "assert 'torch' not in sys.modules; import torch; "
            "print(torch.get_num_threads(), os.environ['OMP_WAIT_POLICY'], p.late)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "PASSIVE", "False"]


def test_cli_refuses_a_bad_threads_option(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--threads", "0", "report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --threads=0 is not a positive number of threads")


def test_loader_workers_are_capped_at_the_cpus(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SARBRIDGE_WORKERS_UNCAPPED", raising=False)
    assert loader_workers(0, cpus=2) == 0 and loader_workers(2, cpus=2) == 2
    assert capsys.readouterr().err == ""  # within the CPUs: nothing said
    assert loader_workers(8, "data.num_workers", cpus=2) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data.num_workers=8" in err and "2 CPU(s)" in err
    monkeypatch.setenv("SARBRIDGE_WORKERS_UNCAPPED", "1")
    assert loader_workers(8, cpus=2) == 8
