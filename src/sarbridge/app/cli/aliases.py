"""Old spellings of options and commands, kept for one release with a deprecation note.

The command line has one name per idea (``docs/cli.md``). Names used before that convention still
work: they are hidden from ``--help`` and from the docs, they print one ``note:`` line on standard
error, and they land in the same place as the new name.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["DeprecatedOption", "add_deprecated_option", "deprecated_command", "deprecation_note"]


def deprecation_note(old: str, new: str) -> str:
    """The note printed when an old spelling is used."""
    return f"note: '{old}' is deprecated and will be removed in the next release; use '{new}'"


class DeprecatedOption(argparse.Action):
    """Stores like the new option (same ``dest``) and prints a deprecation note."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str = "", **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(deprecation_note(option_string or self.option_strings[0], self.new), file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_option(parser: argparse.ArgumentParser | Any, old: str, new: str, dest: str,
                          **kwargs: Any) -> argparse.Action:
    """Add ``old`` as a hidden spelling of the option ``new`` (stored in ``dest``).

    Args:
        parser: the parser or argument group (a required mutually exclusive group keeps ``new``
            required while accepting ``old``).
        old: the old option string, e.g. ``--checkpoint``.
        new: the new option string, e.g. ``--model``.
        dest: the namespace attribute both fill.
        **kwargs: ``type``, ``metavar``... as for the new option.

    Returns:
        The added action.
    """
    return parser.add_argument(old, dest=dest, action=DeprecatedOption, new=new, help=argparse.SUPPRESS, **kwargs)


def deprecated_command(old: str, new: str, func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a command's function so that running it by its old name prints a deprecation note first."""

    def run(args: argparse.Namespace) -> int:
        print(deprecation_note(old, new), file=sys.stderr)
        return func(args)

    return run
