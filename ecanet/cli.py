"""What every ecanet command line shares: the errors a user can act on, as one paragraph and an exit code.

:func:`run_command` is the outermost frame of ``main.py``, ``light_main.py`` and ``det_main.py``. It
installs the start-up stop handlers (a stop signal before training exits 75 at once), and turns

* a :class:`~ecanet.errors.UserError` (bad input) into its message and exit 2;
* a stop before training into exit 75;
* a non-finite loss or weight (:class:`ecanet.engine.NonFiniteLossError`) into exit 3 and what to do;
* a failed save (:class:`ecanet.checkpoint.CheckpointSaveError`) into exit 4;

without a traceback unless ``--debug`` (on the command line, or ``debug: true`` in the ``--config`` file).
Anything else is a bug and propagates. :func:`report_user_errors` does the first of these alone, for commands
that train nothing (``paras_flops.py``). The parsers' own errors (an unknown option, a missing value) are one
paragraph too (:class:`ecanet.config.ArgumentParser`). Torch-free, so that ``--help`` stays fast: the two
torch-side error types are looked up only once their modules are loaded.
"""
from __future__ import annotations

import logging
import sys
from typing import Callable, Sequence

from . import signals as stop_signals
from .errors import EXIT_DIVERGED, EXIT_PREEMPTED, EXIT_SAVE_FAILED, UserError, print_error, user_message

log = logging.getLogger("ecanet")

SAVE_FAILED_FIX = ("Free disk space or fix permissions, then rerun with --resume auto: the previous checkpoint "
                   "is intact.")
SAVE_FAILED_FIRST_FIX = ("Free disk space or fix permissions, then rerun the same command: no checkpoint of this "
                         "run was written yet.")

# What argparse takes for --debug: the option, or a prefix no other option of the command shares ('--de' is
# shared with --device, --decode, --detector, --deterministic). tests/test_bad_input.py checks this against
# every command's parser, so that an option added later with the same start shows up there.
DEBUG_SPELLINGS = frozenset({"--deb", "--debu", "--debug"})


def _loaded_type(module: str, name: str) -> type | None:
    loaded = sys.modules.get(module)
    return getattr(loaded, name, None) if loaded is not None else None


def run_command(command: Callable[[], int], argv: Sequence[str] | None, remedies: str) -> int:
    """``command()``'s exit code, or the exit code of the error it raised (see the module docstring).

    ``argv``: the command's arguments (None: ``sys.argv[1:]``), only to see whether tracebacks are asked for
    (:func:`debug_requested`). ``remedies``: what a diverged run may change, named in exit 3's message.
    """
    debug = debug_requested(sys.argv[1:] if argv is None else argv)
    previous_handlers = stop_signals.stop_signal_handlers()
    try:
        stop_signals.install_startup_stop_handlers()  # until training starts: stop at once
        return command()
    except UserError as exc:
        return _report(exc, debug, exc.exit_code)
    except stop_signals.StoppedBeforeTraining as exc:
        return _report(exc, debug, EXIT_PREEMPTED)
    except Exception as exc:  # noqa: BLE001 - only the two kinds below are expected; others propagate
        diverged = _loaded_type("ecanet.engine", "NonFiniteLossError")
        if diverged is not None and isinstance(exc, diverged):
            return _report(exc, debug, EXIT_DIVERGED, exc.advice(remedies))
        save_failed = _loaded_type("ecanet.checkpoint", "CheckpointSaveError")
        if save_failed is not None and isinstance(exc, save_failed):
            return _report(exc, debug, EXIT_SAVE_FAILED,
                           SAVE_FAILED_FIX if getattr(exc, "resumable", True) else SAVE_FAILED_FIRST_FIX)
        raise
    finally:
        stop_signals.restore_signal_handlers(previous_handlers)


def report_user_errors(command: Callable[[], int], argv: Sequence[str] | None) -> int:
    """``command()``'s exit code, or a :class:`~ecanet.errors.UserError`'s, reported as :func:`run_command`
    reports it (one paragraph; a traceback too with ``--debug``). For commands that train nothing: stop signals
    keep Python's handling, and other errors propagate."""
    debug = debug_requested(sys.argv[1:] if argv is None else argv)
    try:
        return command()
    except UserError as exc:
        return _report(exc, debug, exc.exit_code)


def debug_requested(argv: Sequence[str]) -> bool:
    """Whether ``argv`` asks for tracebacks: ``--debug``, or ``debug: true`` in the file ``--config`` names. Read
    here, before the options are parsed, so that an error in parsing them shows its traceback too; a config file
    that cannot be read asks for nothing (the parse reports it). ``--debug`` may be abbreviated as argparse
    allows (:data:`DEBUG_SPELLINGS`); after ``--`` every item is an argument, not an option."""
    options = list(argv)
    if "--" in options:
        options = options[:options.index("--")]
    if any(item in DEBUG_SPELLINGS for item in options):
        return True
    from .config import config_file_path   # torch-free, as this module
    path = config_file_path(argv, exit_on_error=False)
    if path is None:
        return False
    import yaml  # only where a config file is given
    try:
        with open(path, encoding="utf-8") as f:
            options = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(options, dict) and options.get("debug") is True


def _report(exc: BaseException, debug: bool, code: int, fix: str = "") -> int:
    if debug:
        log.exception("error (exit code %d)", code)
    print_error(f"{user_message(exc)} {fix}")
    return code
