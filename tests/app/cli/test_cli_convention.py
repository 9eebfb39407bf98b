"""The whole command line follows one convention (docs/cli.md): walk every parser and check it.

Fails on an option without help, a help text that does not state the default, a second name for
an idea that already has one, the same idea explained two ways, and on docs/cli.md out of date.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from sarbridge.app.cli import build_parser, main
from sarbridge.app.cli.common import QUIET_HELP
from sarbridge.app.cli.docs import render_cli_docs

REPO = Path(__file__).resolve().parents[3]

#: idea -> its one option name, and the spellings that must not name it (visible) anywhere
CANONICAL = {
    "--model": {"--checkpoint", "--ckpt", "--weights", "--model-path"},
    "--query": {"--image", "--img", "--query-image"},
    "--out": {"--onnx", "--output", "--out-dir", "--output-dir", "-o"},
    "--top-k": {"--k", "--topk", "--num-results"},
    "--overwrite": {"--force", "--replace", "-f"},
    "--quiet": {"--silent", "-q", "--no-progress"},
    "--rerank": {"--re-rank", "--reranking"},
}
#: commands that exist under one name only (the old spellings are hidden aliases)
OLD_COMMANDS = {"eval": "evaluate"}


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("sarbridge",)
          ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, bool]]:
    yield path, parser, True
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            shown = {a.dest for a in action._choices_actions}
            for name, sub in action.choices.items():
                for p, sp, visible in _walk(sub, (*path, name)):
                    yield p, sp, visible and name in shown


def _required(parser: argparse.ArgumentParser, action: argparse.Action) -> bool:
    """Required by itself or as the visible member of a required either-or group (new and old spelling)."""
    return action.required or any(g.required and action in g._group_actions
                                  for g in parser._mutually_exclusive_groups)


def _visible_options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for a in parser._actions:
        if isinstance(a, argparse._HelpAction | argparse._SubParsersAction) or a.help == argparse.SUPPRESS:
            continue
        yield a


COMMANDS = [(p, sp) for p, sp, visible in _walk(build_parser()) if visible]


def test_every_visible_command_is_walked() -> None:
    names = {" ".join(p) for p, _ in COMMANDS}
    for cmd in ("sarbridge train", "sarbridge evaluate", "sarbridge geo locate", "sarbridge index build",
                "sarbridge geo register", "sarbridge export", "sarbridge despeckle", "sarbridge serve"):
        assert cmd in names
    assert "sarbridge eval" not in names  # hidden, deprecated


@pytest.mark.parametrize("path, parser", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_option_has_help_stating_its_default(path: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
    for a in _visible_options(parser):
        name = "/".join(a.option_strings) or a.dest
        assert a.help and a.help.strip(), f"{' '.join(path)} {name}: no help text"
        if _required(parser, a) or not a.option_strings or a.dest == "version":
            continue
        text = a.help.lower()
        assert "default" in text or "repeatable" in text or "(required)" in text, f"{' '.join(path)} {name}: help does not state the default"


@pytest.mark.parametrize("path, parser", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_one_name_per_idea(path: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
    for a in _visible_options(parser):
        for s in a.option_strings:
            for canonical, others in CANONICAL.items():
                assert s not in others, f"{' '.join(path)}: '{s}' is a second name for {canonical}"
            if s == "-k":
                assert "--top-k" in a.option_strings, f"{' '.join(path)}: -k must be the short form of --top-k"
        if "--quiet" in a.option_strings and path[-1] != "serve":
            assert a.help == QUIET_HELP, f"{' '.join(path)}: --quiet explained differently"
        if "--device" in a.option_strings:
            assert a.help == "auto (default), cpu, cuda or cuda:N", f"{' '.join(path)}: --device explained differently"
    dests = [a.dest for a in _visible_options(parser)]
    assert len(dests) == len(set(dests)), f"{' '.join(path)}: two visible options fill the same value"


def test_old_spellings_still_work_with_a_note(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    parser = build_parser()
    args = parser.parse_args(["eval", "--checkpoint", "m.pt", "--out", str(tmp_path)])
    assert args.model == "m.pt"
    err = capsys.readouterr().err
    assert "'--checkpoint' is deprecated" in err and "use '--model'" in err
    args = parser.parse_args(["export", "--checkpoint", "m.pt", "--onnx", "m.onnx"])
    assert (args.model, args.out) == ("m.pt", "m.onnx")
    assert main(["eval", "--model", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "'eval' is deprecated" in err and "use 'evaluate'" in err
    for old, new in OLD_COMMANDS.items():
        assert new in parser._subparsers._group_actions[0].choices and old in parser._subparsers._group_actions[0].choices


def test_new_names_print_no_note(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    build_parser().parse_args(["evaluate", "--model", "m.pt", "--out", str(tmp_path)])
    assert capsys.readouterr().err == ""


def test_model_stays_required() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "--out", "x"])


def test_docs_cli_page_is_generated_from_the_parser() -> None:
    page = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert page == render_cli_docs(), "docs/cli.md is out of date: python -m sarbridge.app.cli.docs > docs/cli.md"
