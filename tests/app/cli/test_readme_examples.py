"""Every `sarbridge ...` line of the README and the docs parses with today's command line.

The commands themselves run in tests/app/cli/test_readme_run.py (slow); this fast check catches a
renamed or removed option, a sub-command that moved, or an example that still uses a deprecated
spelling.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sarbridge.app.cli import build_parser

REPO = Path(__file__).resolve().parents[3]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def example_commands(page: Path) -> list[tuple[int, str]]:
    """``(line number, command)`` of every ``sarbridge`` command in the page's bash code blocks
    (continuation lines joined, comments dropped)."""
    commands: list[tuple[int, str]] = []
    in_block, pending, start = False, "", 0
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip().startswith("```"):
            in_block = line.strip() in ("```bash", "```sh", "```console") if not in_block else False
            continue
        if not in_block:
            continue
        text = line.strip()
        if pending:
            pending += " " + text.rstrip("\\").strip()
            if not text.endswith("\\"):
                commands.append((start, pending))
                pending = ""
            continue
        text = re.sub(r"^\$\s+", "", text)
        text = re.sub(r"^torchrun .*?-m sarbridge ", "sarbridge ", text)  # the command torchrun starts
        if text.startswith("sarbridge ") or text.startswith(".venv/bin/sarbridge "):
            start = number
            if text.endswith("\\"):
                pending = text.rstrip("\\").strip()
            else:
                commands.append((number, text))
    return commands


def _cases() -> list[tuple[str, int, str]]:
    return [(p.name, n, c) for p in PAGES for n, c in example_commands(p)]


def test_the_readme_has_examples() -> None:
    names = [c for _, _, c in _cases()]
    assert len([c for c in names if c]) >= 20
    assert any(c.startswith("sarbridge train ") for c in names) and any(" geo locate " in f" {c} " for c in names)


@pytest.mark.parametrize("page, line, command", _cases(), ids=lambda v: str(v)[:60])
def test_example_parses(page: str, line: int, command: str, capsys: pytest.CaptureFixture[str]) -> None:
    words = shlex.split(command, comments=True)
    words = words[1:]  # the program name
    parser = build_parser()
    try:
        args = parser.parse_args(words)
    except SystemExit as exc:  # argparse prints the reason
        pytest.fail(f"{page}:{line}: `{command}` does not parse ({capsys.readouterr().err.strip()}; exit {exc.code})")
    assert getattr(args, "func", None) is not None, f"{page}:{line}: `{command}` names no command"
    err = capsys.readouterr().err
    assert "deprecated" not in err, f"{page}:{line}: `{command}` uses a deprecated spelling: {err.strip()}"
