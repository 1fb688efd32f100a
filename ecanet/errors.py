"""Errors a user can fix, and the process exit codes every ecanet command uses.

A :class:`UserError` is bad input (a path, an option, a file): the command line prints its message, one
paragraph naming the problem and the fix, and exits with :data:`EXIT_USAGE`, without a traceback unless
``--debug`` is given.
"""
from __future__ import annotations

import operator
import re
import sys

EXIT_OK = 0
EXIT_FAILURE = 1      # an unexpected error (a bug, or the environment): traceback printed
EXIT_USAGE = 2        # bad input: options, data, checkpoint (argparse uses 2 as well)
EXIT_DIVERGED = 3     # the loss became NaN/inf; the last good checkpoint is intact
EXIT_SAVE_FAILED = 4  # a checkpoint could not be written (disk full, permissions); training stopped
# Preempted (SIGTERM/SIGUSR1): a checkpoint was saved; requeue the job and resume with `--resume auto`.
# 75 is EX_TEMPFAIL of sysexits.h: "temporary failure, the user is invited to retry".
EXIT_PREEMPTED = 75


class UserError(Exception):
    """Bad input that the user can fix. ``str(error)`` is the whole message: the problem and the fix."""

    exit_code = EXIT_USAGE


class ConfigError(UserError):
    """Conflicting, impossible or unknown options or config keys."""


class DataError(UserError):
    """A dataset directory that is missing, empty or inconsistent, or too many unreadable images."""


class CheckpointError(UserError):
    """A file that is not a checkpoint, is truncated, or does not fit the requested network."""


def whole_number(value: object, what: str, minimum: int | None = None, note: str = "") -> int:
    """``value`` as an int: any integer type (a NumPy integer too) but not a bool or a float, at least
    ``minimum``; else a ValueError '<what> must be a whole number >= <minimum><note>, got <value>'."""
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or (minimum is not None and number < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{what} must be a whole number{bound}{note}, got {value!r}")
    return number


_ANSI_SEQUENCE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")  # terminal colour and style codes (CSI sequences)
_CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def one_paragraph(message: str) -> str:
    """``message`` as one printable paragraph: terminal escape codes (torch bolds parts of some messages)
    removed, line breaks and tabs turned into spaces, other control characters (in a file name, say)
    shown as ``\\xNN``, runs of spaces collapsed."""
    text = _ANSI_SEQUENCE.sub("", message)
    text = _CONTROL_CHARACTER.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return " ".join(text.split())


# How torch's DataLoader re-raises an exception from a worker process: the same type, with the worker's
# traceback as its message; the original message is on the last line, after the exception's name.
_WORKER_WRAPPED = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\s*\nOriginal Traceback")
_LAST_EXCEPTION_LINE = re.compile(r"^[\w.]+: (.*)$")


def user_message(error: BaseException) -> str:
    """The message of ``error`` for the user: its own text, also when a DataLoader worker raised it (torch
    then wraps it in the worker's traceback)."""
    text = str(error)
    if _WORKER_WRAPPED.match(text):
        last = text.rstrip().splitlines()[-1]
        found = _LAST_EXCEPTION_LINE.match(last)
        if found:
            return found.group(1)
    return text


def print_error(message: str) -> None:
    """Print ``error: <message>`` to stderr as one paragraph (:func:`one_paragraph`): how every ecanet
    command line reports a :class:`UserError`."""
    print("error: " + one_paragraph(message), file=sys.stderr, flush=True)
