"""One run per run directory: an exclusive lock that a second process on the same ``--output`` cannot take.

The lock is ``fcntl.flock`` on ``<run dir>/.lock``: the operating system releases it when the holding
process exits, however it exits, so a crash leaves no stale lock behind. The file names the holder (PID
and host) so that the refused process can say who has the directory. Rank 0 holds it for all ranks.
"""
from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from .errors import ConfigError

LOCK_FILE = ".lock"


class RunLock:
    """``with RunLock(run_dir): ...`` holds the directory's lock for the block; a :class:`ConfigError` (exit 2)
    when another process holds it."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
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
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
