"""A training run's directory for the length of the run: claimed, logged into, and left as found on failure.

``main.py`` and ``det_main.py`` train inside :func:`open_run_directory`: it claims the directory
(:func:`ecanet.checkpoint.claim_run_dir`: one run per directory, leftovers of killed saves removed), writes
the configuration, adds ``train.log`` and opens ``metrics.jsonl`` and TensorBoard; it hands out the stop
handler that training installs once it starts. On the way out it stops the loader workers (they log into
``train.log`` too), closes the logs and releases the lock. A run that fails before its first step puts the
directory back as it found it (a new one is removed); a diverged run's error learns whether an earlier
checkpoint exists, so that its message says only what is true.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable, Iterator

from .checkpoint import claim_run_dir
from .distributed import DistInfo, PreemptionHandler
from .engine import NonFiniteLossError
from .metrics import MetricsLogger
from .runtime import add_run_log

CONFIG_FILE = "config.yaml"


@contextlib.contextmanager
def open_run_directory(run_dir: Path, info: DistInfo, *, write_config: Callable[[Path], None],
                       steps_done: Callable[[], int], last_checkpoint: str,
                       stop_workers: Callable[[], None]) -> Iterator[tuple[MetricsLogger, PreemptionHandler]]:
    """``with open_run_directory(...) as (metrics, preemption): ...`` (see the module docstring).

    Args:
        write_config: writes the resolved configuration to the path it is given (rank 0 only).
        steps_done: the run's global step now: unchanged on the way out means no step was taken.
        last_checkpoint: the file name of the run's resumable checkpoint (``last.pth``).
        stop_workers: stops the data loaders' worker processes.
    """
    claim = claim_run_dir(run_dir, info)
    first_step, undo = steps_done(), False
    preemption, metrics, run_log = PreemptionHandler(info), None, None
    try:
        if info.is_main:
            write_config(run_dir / CONFIG_FILE)
        run_log = add_run_log(run_dir, info)
        metrics = MetricsLogger(run_dir, enabled=info.is_main)
        yield metrics, preemption
    except NonFiniteLossError as exc:
        last = run_dir / last_checkpoint
        exc.last_checkpoint = str(last) if last.exists() else None
        raise
    except BaseException:
        undo = steps_done() == first_step  # failed before its first step: leave no debris
        raise
    finally:
        preemption.uninstall()
        stop_workers()  # the workers share train.log: stopped before the directory may be put back
        if metrics is not None:
            metrics.close()
        if run_log is not None:
            logging.getLogger().removeHandler(run_log)
            run_log.close()
        claim.release(undo=undo)
