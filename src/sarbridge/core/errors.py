"""User-facing errors.

Every problem caused by user input (paths, data, configs, checkpoints) is raised as a
:class:`SarbridgeError` whose message names the offending thing and the fix. The command line
prints it as a single ``error: ...`` line and exits with code 2; library users can catch it.
"""

from __future__ import annotations


class SarbridgeError(Exception):
    """A problem with user input, reported as one clear line.

    Args:
        message: what is wrong, naming the file, key or value involved.
        hint: how to fix it (appended after ``; fix: ``).
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message}; fix: {hint}")


class ConfigError(SarbridgeError):
    """An invalid configuration file or override."""


class DataError(SarbridgeError):
    """Missing, empty, unreadable or malformed data."""


class CheckpointError(SarbridgeError):
    """A checkpoint that is missing, damaged or does not fit the model."""
