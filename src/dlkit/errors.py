"""User-facing errors: each says what was expected, what was given, and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DlkitError(Exception):
    """Base class of every error dlkit reports to a user (the CLI prints it on one line)."""


class ConfigError(DlkitError, ValueError):
    """An argument, option or `--set` key is invalid."""


class UnknownNameError(DlkitError, KeyError):
    """A model, recipe or other registered name does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataNotFoundError(DlkitError, FileNotFoundError):
    """A data set's files are missing from the data root."""


class CheckpointError(DlkitError, RuntimeError):
    """A checkpoint is missing, truncated or corrupted."""


class TrainingDiverged(DlkitError, RuntimeError):
    """The loss became NaN or infinite."""


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ' Did you mean: a, b?' for the closest `choices` to `name`, or ''."""
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if not close:
        close = [c for c in choices if name.lower() in c.lower()][:n]
    return f" Did you mean: {', '.join(close)}?" if close else ""


def unknown(kind: str, name: str, choices: Iterable[str], listing: str) -> UnknownNameError:
    """Build the error for an unknown registered name, with the nearest names and how to list all."""
    choices = sorted(choices)
    return UnknownNameError(f"unknown {kind} '{name}'.{suggest(name, choices)} List them with `{listing}`.")
