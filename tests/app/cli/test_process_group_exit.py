"""How ``sarbridge`` leaves a process group at the end of a command (one gloo process, no launcher)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch.distributed as dist

import sarbridge.app.cli as cli
import sarbridge.core.distributed as distributed


def _parser_with(func: Callable[[argparse.Namespace], int]) -> Callable[[], argparse.ArgumentParser]:
    def build() -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(prog="sarbridge")
        p.add_argument("--version", action="store_true")
        p.add_argument("--threads", type=int, default=None)
        sub = p.add_subparsers(dest="command")
        sub.add_parser("noop").set_defaults(func=func)
        return p

    return build


@pytest.fixture
def group_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("SARBRIDGE_THREAD_SETUP", "0")
    yield f"file://{tmp_path / 'pg'}"
    distributed.cleanup()
    assert not dist.is_initialized()


def test_a_group_the_command_joined_is_left_after_success(group_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def command(_: argparse.Namespace) -> int:
        dist.init_process_group("gloo", init_method=group_file, rank=0, world_size=1)
        return 0

    monkeypatch.setattr(cli, "build_parser", _parser_with(command))
    assert cli.main(["noop"]) == 0
    assert not dist.is_initialized()


def test_a_callers_own_group_is_left_alone(group_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    dist.init_process_group("gloo", init_method=group_file, rank=0, world_size=1)
    monkeypatch.setattr(cli, "build_parser", _parser_with(lambda _: 0))
    assert cli.main(["noop"]) == 0
    assert dist.is_initialized()


def test_a_failure_to_leave_is_one_warning_and_keeps_the_exit_code(
        group_file: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def command(_: argparse.Namespace) -> int:
        dist.init_process_group("gloo", init_method=group_file, rank=0, world_size=1)
        return 0

    def broken() -> None:
        raise RuntimeError("peer closed the connection")

    monkeypatch.setattr(cli, "build_parser", _parser_with(command))
    monkeypatch.setattr(distributed, "shutdown", broken)
    assert cli.main(["noop"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: leaving the process group failed") and "peer closed" in err[0]
    assert not dist.is_initialized()  # the exit path still destroyed it
