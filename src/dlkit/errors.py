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


class DataError(DlkitError, OSError):
    """A data file is damaged (truncated, bad checksum, not the format its name says); the message names the file,
    what is wrong with it and how to repair it.

    Raised in a DataLoader worker process, it reaches the training process as DataLoader re-raises it:
    `DataError("Caught DataError in DataLoader worker process N. Original Traceback ...")`; the constructor keeps
    only the original one-line message, so the command line still prints one line (the worker's traceback text
    stays in `worker_traceback`, None when raised in this process).
    """

    def __init__(self, message: str = ""):
        original = _original_message(type(self), message)
        super().__init__(original)
        self.worker_traceback = message if original is not message else None


def _original_message(cls: type, message):
    """The message of a `cls` error raised in a DataLoader worker, from the traceback text that torch's
    ExceptionWrapper.reraise passes (its last line is 'module.Class: message'); any other message unchanged."""
    if not (isinstance(message, str) and message.startswith(f"Caught {cls.__name__} ") and "Traceback" in message):
        return message
    _, found, original = message.rpartition(f"{cls.__module__}.{cls.__qualname__}: ")
    return original.strip() if found else message
