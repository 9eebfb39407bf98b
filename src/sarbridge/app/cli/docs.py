"""``docs/cli.md`` from the argument parser itself, so the page and the command line never disagree.

``python -m sarbridge.app.cli.docs > docs/cli.md`` regenerates the page; a test fails when the
committed page differs from what the parser says. Hidden (deprecated) spellings are left out.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from sarbridge.app.cli import build_parser

INTRO = """# Command line reference

Generated from the parser by `python -m sarbridge.app.cli.docs > docs/cli.md` (a test keeps it in
sync). One name per idea across every command:

| idea | option |
|---|---|
| a trained model (checkpoint, `geo_model.pt`) | `--model` |
| image(s) to look up | `--query` |
| image(s) to transform (translate, despeckle) | `--input` |
| where results go (folder or file) | `--out` |
| how many results | `--top-k` (`-k`) |
| replace a non-empty output / continue a run | `--overwrite` / `--resume` |
| re-ranking | `--rerank` |
| quiet | `--quiet`: no progress bars or per-epoch lines; warnings and the summary still printed |
| device | `--device auto|cpu|cuda|cuda:N` |
| machine-readable output | `--json` |

Old spellings (`--checkpoint`, `--image`, `--onnx`, `eval`, `geo build-index`, positional
despeckle paths) still work for one release and print a deprecation note. Progress bars are drawn
on a terminal only; a piped log gets a plain line every 30 s (`SARBRIDGE_PROGRESS=bar|plain`
forces one). `sarbridge --threads N` sets the CPU threads (default: `SARBRIDGE_THREADS`, else
`OMP_NUM_THREADS`, else the CPUs this process may use); idle threads sleep instead of spinning.
"""


def _visible_subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            # sub-commands listed with help; hidden aliases have none
            shown = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                if name in shown:
                    yield name, shown[name], sub


def _option_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for a in parser._actions:
        if isinstance(a, argparse._HelpAction | argparse._SubParsersAction) or a.help == argparse.SUPPRESS:
            continue
        names = ", ".join(f"`{s}`" for s in a.option_strings) or f"`{a.metavar or a.dest.upper()}`"
        if a.required:
            names += " (required)"
        text = (a.help or "").replace("%(default)s", str(a.default)).replace("|", "\\|")
        rows.append(f"| {names} | {text} |")
    return rows


def _render(parser: argparse.ArgumentParser, path: list[str], summary: str, out: list[str]) -> None:
    subs = list(_visible_subcommands(parser))
    rows = _option_rows(parser)
    if rows or not subs:
        out.append(f"## `{' '.join(path)}`\n")
        text = (parser.description or summary).strip()
        if text:
            out.append(text[0].upper() + text[1:] + ("" if text.endswith(".") else ".") + "\n")
        if rows:
            out.extend(["| option | meaning |", "|---|---|", *rows, ""])
    for name, help_text, sub in subs:
        _render(sub, [*path, name], help_text, out)


def render_cli_docs(parser: argparse.ArgumentParser | None = None) -> str:
    """The Markdown reference of every command and option.

    Args:
        parser: the parser to describe (default: the full ``sarbridge`` parser).

    Returns:
        The page's text.
    """
    parser = parser or build_parser()
    out = [INTRO]
    _render(parser, ["sarbridge"], "", out)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_cli_docs())
