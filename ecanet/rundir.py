"""The run directory (``--output``) of a training run: which checkpoint it continues, its claim and lock, its life.

Before a run starts, :func:`find_run_checkpoint` names the checkpoint ``--resume`` continues and
:func:`check_run_dir_is_free` refuses a run that would overwrite another run's checkpoints.

``main.py`` and ``det_main.py`` train inside :func:`open_run_directory`: it claims the directory
(:func:`claim_run_dir`: one run per directory, leftovers of killed saves removed, and a refusal where the
directory's checkpoints changed since the run read them), writes the configuration,
adds ``train.log`` and opens ``metrics.jsonl`` and TensorBoard; it hands out the stop handler that training
installs once it starts. On the way out it stops the loader workers (they log into ``train.log`` too), closes
the logs and releases the lock. A run that fails before its first step puts its own files and TensorBoard
folder back as it found them (a new directory is removed: :class:`RunDirSnapshot`); a diverged run's error
learns whether an earlier checkpoint exists, so that its message says only what is true.

One run per directory is :class:`RunLock`: ``fcntl.flock`` on ``<run dir>/.lock``. The operating system
releases it when the holding process exits, however it exits, so a crash leaves no stale lock behind; forked
children (the data loaders' workers, which can outlive a killed main process by seconds) close their copies
of its descriptor, so that they do not hold it on. The file names the holder (PID and host) so that the
refused process can say who has the directory. Rank 0 holds it for all ranks.

The checkpoint files themselves (their names, format, atomic saves) are :mod:`ecanet.checkpoint`'s.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .checkpoint import FILE_MODE, LAST_CHECKPOINT, UNFINISHED_SAVES, find_resume_checkpoint
from .constants import RUN_CONFIG
from .distributed import DistInfo, PreemptionHandler, all_gather_objects, any_rank
from .engine import NonFiniteLossError
from .errors import CheckpointError, ConfigError, UserError
from .metrics import TENSORBOARD_DIR, MetricsLogger
from .runtime import add_run_log

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
WRITE_PROBE = ".write-probe"
# Files a run rewrites as a whole at its start (the rest it only appends to, or creates).
REWRITTEN_AT_START = (RUN_CONFIG, "config_history.yaml")


# ------------------------------------------------------------------------------------- before the claim

def find_run_checkpoint(resume: str | None, run_dir: Path | None) -> Path | None:
    """The checkpoint ``--resume`` names: a path, the newest in ``run_dir`` for ``'auto'``, or None.

    Refuses (:class:`CheckpointError`) to start a new run in a directory that already holds checkpoints,
    which would overwrite them.
    """
    path = None
    if resume == "auto":
        path = find_resume_checkpoint(run_dir) if run_dir is not None and run_dir.is_dir() else None
        if path is None:
            log.info("--resume auto: no checkpoint in %s yet, starting a new run", run_dir)
    elif resume:
        path = Path(resume)
    check_run_dir_is_free(run_dir, resume, path)
    return path


def check_run_dir_is_free(run_dir: Path | None, resume: str | None, path: Path | None) -> None:
    """Refuse (:class:`CheckpointError`) a training run that would overwrite ``run_dir``'s checkpoints (any
    ``*.pth``, another program's too): a new run there (``path`` None, after ``--resume`` ``resume`` found
    nothing), or the continuation of a checkpoint ``path`` of another directory. The advice names
    ``--resume auto`` only where the directory holds a ``last.pth`` for it to continue."""
    held = sorted(p.name for p in run_dir.glob("*.pth")) if run_dir is not None and run_dir.is_dir() else []
    if not held:
        return
    resumable = LAST_CHECKPOINT in held
    if path is None and resume == "auto":
        raise CheckpointError(f"run directory {run_dir} holds {', '.join(held)} but no training checkpoint to "
                              f"continue from (weights alone cannot resume a run); starting a new run there would "
                              f"overwrite {'them' if len(held) > 1 else 'it'}. Move them away, or pick another "
                              f"--output.")
    if path is None:
        raise CheckpointError(f"run directory {run_dir} already holds {', '.join(held)}; starting a new run there "
                              f"would overwrite {'them' if len(held) > 1 else 'it'}. "
                              f"{'Continue it with --resume auto, or pick' if resumable else 'Pick'} another --output.")
    if path.parent.resolve() != run_dir.resolve():
        raise CheckpointError(f"--resume {path} continues another run directory than --output {run_dir}, which "
                              f"holds checkpoints of its own ({', '.join(held)}) that saving would overwrite. "
                              f"{f'To continue the run in {run_dir}, pass --resume auto; to' if resumable else 'To'} "
                              f"continue {path}, pass an --output without checkpoints.")


# {file name: (modification time in ns, size in bytes)} of a directory's *.pth. An atomic save writes a new file,
# so its time changes; the inode would too, but FUSE mounts (sshfs, object stores) may renumber an unchanged file.
CheckpointStamps = dict[str, tuple[int, int]]


def checkpoint_stamps(run_dir: Path | None) -> CheckpointStamps | None:
    """What identifies each of ``run_dir``'s checkpoints (``*.pth``) as a run finds them, before it reads one:
    taken again once the run has claimed the directory (:func:`claim_run_dir`), they tell whether a process
    still at work there saved in between (an atomic save makes a new file). None for no directory given."""
    if run_dir is None:
        return None
    found = {}
    for path in (run_dir.glob("*.pth") if run_dir.is_dir() else ()):
        with contextlib.suppress(FileNotFoundError):   # replaced or removed while listed: a change too
            stat = path.stat()
            found[path.name] = (stat.st_mtime_ns, stat.st_size)
    return found


# ------------------------------------------------------------------------------------ the lock, the claim

# The descriptors of the run locks this process holds. flock's lock belongs to the open file, which a fork
# shares: a loader worker forked while the lock is held would keep it until the worker exits, after its main
# process was killed, and the requeued run would be refused for those seconds. So each forked child closes
# its copies (closing does not unlock: only the last descriptor does, or LOCK_UN).
_HELD_LOCKS: set[int] = set()


def _close_held_locks_in_child() -> None:
    for fd in _HELD_LOCKS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_close_held_locks_in_child)


class RunLock:
    """``with RunLock(run_dir): ...`` holds the directory's lock for the block; a :class:`ConfigError` (exit 2)
    when another process holds it."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(f"run directory {self.path.parent} is in use by {holder}: two runs in one directory "
                              f"would overwrite each other's checkpoints and metrics. Wait for it to finish, "
                              f"stop it, or pass another --output.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        _HELD_LOCKS.add(fd)
        return self

    def release(self) -> None:
        if self._fd is not None:
            _HELD_LOCKS.discard(self._fd)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class RunDirSnapshot:
    """What a run directory held when a run claimed it, so that a run that fails before its first step can
    leave it as it found it: files it created removed, files it appended to cut back, files it rewrote
    restored; a directory the run created is removed whole.

    Only what a run writes is watched: the directory's own files and its TensorBoard folder. Any other folder
    in it (``--output runs`` holding other runs' directories, say) belongs to someone else, who may be writing
    to it meanwhile."""

    def __init__(self, run_dir: Path, existed: bool) -> None:
        self.run_dir, self.existed = Path(run_dir), existed
        self.sizes: dict[Path, int] = {}
        self.contents: dict[Path, bytes] = {}
        if existed:
            for path in self._files():
                self.sizes[path] = path.stat().st_size
                if path.name in REWRITTEN_AT_START:
                    self.contents[path] = path.read_bytes()

    def _files(self) -> list[Path]:
        nested = (self.run_dir / TENSORBOARD_DIR).rglob("*")
        return [p for p in (*self.run_dir.iterdir(), *nested) if p.is_file() and not p.is_symlink()]

    def restore(self) -> None:
        if not self.existed:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        for path in self._files():
            if path not in self.sizes:
                path.unlink(missing_ok=True)
            elif path in self.contents:
                path.write_bytes(self.contents[path])
            elif path.stat().st_size > self.sizes[path]:
                os.truncate(path, self.sizes[path])
        events = self.run_dir / TENSORBOARD_DIR
        for folder in sorted((p for p in (events, *events.rglob("*")) if p.is_dir() and not p.is_symlink()),
                             reverse=True):
            if not any(folder.iterdir()) and not any(f.is_relative_to(folder) for f in self.sizes):
                folder.rmdir()


@dataclass
class RunClaim:
    """A run's hold on its directory (:func:`claim_run_dir`): the lock (rank 0) and what the directory held."""

    lock: RunLock | None
    snapshot: RunDirSnapshot | None

    def release(self, undo: bool = False) -> None:
        """Release the lock; ``undo``: first put the directory back as it was claimed (a run that failed
        before its first step leaves no debris)."""
        if undo and self.snapshot is not None:
            self.snapshot.restore()
        if self.lock is not None:
            self.lock.release()


def _check_writable(directory: Path) -> None:
    """Create and remove a file in ``directory``: an OSError (permissions, a read-only or immutable directory)
    where saving would fail. ``os.access`` does not answer it: root passes it, and it ignores ACLs."""
    probe = directory / WRITE_PROBE
    os.close(os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, FILE_MODE))
    probe.unlink()


def claim_run_dir(run_dir: Path, info: DistInfo, checkpoints_seen: CheckpointStamps | None = None) -> RunClaim:
    """Create ``run_dir`` and lock it for this run (rank 0 holds the lock for all ranks), then remove the
    temporary files of saves that an earlier process did not finish (killed mid-write). Every rank raises
    the same :class:`~ecanet.errors.CheckpointError` when the directory cannot be made or another run holds it,
    or when its checkpoints are no longer those of ``checkpoints_seen`` (:func:`checkpoint_stamps`, taken before
    the run read them): a run that ended or was stopped after this one started saved in between, and what this
    run read (the checkpoint it continues, or an empty directory) is out of date.
    """
    error, lock, snapshot = None, None, None
    # Every rank read the checkpoint itself: each one's view is checked. Every rank joins the gather, whatever it
    # found (a rank that saw no run directory gives None), so that none waits for another.
    seen_by_rank = [seen for seen in all_gather_objects(checkpoints_seen, info) if seen is not None]
    if info.is_main:
        existed = run_dir.exists()
        try:
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CheckpointError(f"cannot create the run directory {run_dir} ({exc.strerror or exc}). "
                                      f"Pass an --output in a writable place.") from None
            lock = RunLock(run_dir).acquire()
            if any(seen != checkpoint_stamps(run_dir) for seen in seen_by_rank):
                raise ConfigError(f"the checkpoints in {run_dir} changed while this run was starting: another "
                                  f"process saved there after this one read them, so what it would continue is "
                                  f"out of date. Nothing was written; rerun the same command to start from what "
                                  f"the directory holds now.")
            _check_writable(run_dir)   # a directory that takes no new file fails its first save only after an epoch
            for leftover in sorted(run_dir.glob(UNFINISHED_SAVES)):
                log.warning("removing %s, left by a save that did not finish", leftover)
                leftover.unlink(missing_ok=True)
            snapshot = RunDirSnapshot(run_dir, existed)
        except (UserError, OSError) as exc:
            error = str(exc) if isinstance(exc, UserError) else (
                f"cannot use the run directory {run_dir} ({exc.strerror or exc}). Pass an --output in a "
                f"writable place.")
            if lock is not None:
                lock.release()
            if not existed:
                shutil.rmtree(run_dir, ignore_errors=True)
    if any_rank(error is not None, info):
        raise CheckpointError(error or f"rank 0 could not claim the run directory {run_dir}")
    return RunClaim(lock, snapshot)


def append_record(run_dir: Path, event: str, values: Mapping[str, Any]) -> bool:
    """Add one record to ``run_dir``'s ``metrics.jsonl`` (an evaluation's, ``-e --output DIR``) under the
    directory's lock, so that it never lands between the lines of a training run writing there: a directory in
    use gets no record, and a warning says so. Returns whether the record was written."""
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = RunLock(run_dir).acquire()
    except ConfigError:
        log.warning("%s is in use by a training run: this evaluation's record is not added to its metrics.jsonl "
                    "(the figures above stand; pass another --output to keep them in a file)", run_dir)
        return False
    try:
        metrics = MetricsLogger(run_dir, tensorboard=False)
        metrics.record(event, values)
        metrics.close()
    finally:
        lock.release()
    return True


# ------------------------------------------------------------------------------------------ the run's life

@contextlib.contextmanager
def open_run_directory(run_dir: Path, info: DistInfo, *, write_config: Callable[[Path], None],
                       steps_done: Callable[[], int], last_checkpoint: str, stop_workers: Callable[[], None],
                       checkpoints_seen: CheckpointStamps | None = None
                       ) -> Iterator[tuple[MetricsLogger, PreemptionHandler]]:
    """``with open_run_directory(...) as (metrics, preemption): ...`` (see the module docstring).

    Args:
        write_config: writes the resolved configuration to the path it is given (rank 0 only).
        steps_done: the run's global step now: unchanged on the way out means no step was taken.
        last_checkpoint: the file name of the run's resumable checkpoint (``last.pth``).
        stop_workers: stops the data loaders' worker processes.
        checkpoints_seen: the directory's checkpoints as the run found them before reading one
            (:func:`checkpoint_stamps`); the claim refuses the directory where they have changed since.
    """
    claim = claim_run_dir(run_dir, info, checkpoints_seen)
    first_step, undo = steps_done(), False
    preemption, metrics, run_log = PreemptionHandler(info), None, None
    try:
        if info.is_main:
            write_config(run_dir / RUN_CONFIG)
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
