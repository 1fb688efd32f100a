"""One run per run directory: an exclusive lock that a second process on the same ``--output`` cannot take.

The lock is ``fcntl.flock`` on ``<run dir>/.lock``: the operating system releases it when the holding
process exits, however it exits, so a crash leaves no stale lock behind. The file names the holder (PID
and host) so that the refused process can say who has the directory. Rank 0 holds it for all ranks.
"""
from __future__ import annotations

import fcntl
import os
import shutil
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


# Files a run rewrites as a whole at its start (the rest it only appends to, or creates).
REWRITTEN_AT_START = ("config.yaml", "config_history.yaml")


class RunDirSnapshot:
    """What a run directory held when a run claimed it, so that a run that fails before its first step can
    leave it as it found it: files it created removed, files it appended to cut back, files it rewrote
    restored; a directory the run created is removed whole."""

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
        return [p for p in self.run_dir.rglob("*") if p.is_file() and not p.is_symlink()]

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
        for folder in sorted((p for p in self.run_dir.rglob("*") if p.is_dir()), reverse=True):
            if not any(folder.iterdir()) and not any(f.is_relative_to(folder) for f in self.sizes):
                folder.rmdir()
