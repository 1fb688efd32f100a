"""Stop signals: what a run does when a cluster (or a user) asks it to stop. Importable without torch.

SLURM and Kubernetes send SIGTERM (SLURM with ``--signal``: SIGUSR1 first) to the whole process group, and
Ctrl-C sends SIGINT. Loader workers ignore them (:func:`ignore_stop_signals`) and leave the stop to the main
process. Before training starts, a stop signal ends the process at once with exit code 75 and nothing saved
(:func:`install_startup_stop_handlers`); once it has started, every rank finishes its step, one checkpoint is
saved and the process exits with 75 (:class:`ecanet.distributed.PreemptionHandler`). After training hands the
signals back (its wrap-up, or an error's), a stop exits with 75 at once, the checkpoints being training's.
"""
from __future__ import annotations

import signal
from typing import Any

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class StoppedBeforeTraining(BaseException):
    """A stop signal arrived while the run was starting (imports, data, model): nothing was saved. Or, with
    ``after_training``, once training had handed the signals back (the run's wrap-up after its last epoch, or an
    error's): the checkpoints are what training saved.

    A BaseException, as KeyboardInterrupt is: the signal can arrive inside any code, and code that catches
    ``Exception`` (an optional import that falls back, say) must not swallow the stop.
    """

    def __init__(self, signal_name: str, after_training: bool = False) -> None:
        if after_training:
            message = (f"{signal_name} received after training stopped; the run's checkpoints are as training "
                       f"saved them. Rerun the same command with --resume auto to continue the run, or to find "
                       f"it complete.")
        else:
            message = (f"{signal_name} received before training started; nothing was saved. Rerun the same "
                       f"command to start the run (with --resume auto it continues a run that has a checkpoint).")
        super().__init__(message)
        self.signal_name = signal_name


# The stop signal received during start-up, if any. Kept because the exception the handler raises can be
# lost: a signal that lands inside a weakref callback or a __del__ (an import lock's, say) has its exception
# printed as "Exception ignored in ..." and dropped, and the start-up would go on into training.
_stop_received: str | None = None
# Whether training has taken the stop signals over (mark_training_began): the handlers it hands them back to
# are the start-up ones, and a stop after that is not one before training.
_training_began = False


def _stop_before_training(signum: int, frame: Any) -> None:
    global _stop_received
    _stop_received = signal.Signals(signum).name
    raise StoppedBeforeTraining(_stop_received, after_training=_training_began)


def mark_training_began() -> None:
    """Training has taken the stop signals over: a stop the start-up handlers meet from now on (after training
    hands them back) says that the checkpoints are training's, not that nothing was saved."""
    global _training_began
    _training_began = True


def stop_signal_handlers() -> dict[int, Any]:
    """The stop signals' handlers now, for :func:`restore_signal_handlers`."""
    return {sig: signal.getsignal(sig) for sig in PREEMPTION_SIGNALS}


def install_startup_stop_handlers() -> None:
    """From a command's first line until training starts, a stop signal ends the process at once with
    :class:`StoppedBeforeTraining` (exit code 75, nothing saved).

    The signal can already arrive while the handlers are being installed, and its exception is then raised
    from here: call this inside the ``try`` that handles the stop, after saving the handlers to restore with
    :func:`stop_signal_handlers`."""
    global _stop_received, _training_began
    _stop_received, _training_began = None, False
    for sig in PREEMPTION_SIGNALS:
        signal.signal(sig, _stop_before_training)


def raise_if_stopped_before_training() -> None:
    """Raise :class:`StoppedBeforeTraining` if a stop signal arrived during start-up and its exception was
    lost (see ``_stop_received``): called as training is about to start, so such a stop still ends the run
    before its first step."""
    if _stop_received is not None:
        raise StoppedBeforeTraining(_stop_received)


def restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        if handler is not None:   # None: a handler installed outside Python, which Python cannot reinstall
            signal.signal(sig, handler)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """A loader worker's ``worker_init_fn``: the stop signals sent to the whole process group are the main
    process's to handle; a worker that died of one would crash the main process before it could save."""
    for sig in PREEMPTION_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
