"""Output paths of the command lines and scripts: checked before any work, and folders that appear whole.

Shared by scripts/benchmark.py, summarize_runs.py, plot_runs.py, make_jpeg_folder.py, export folders
(:mod:`ecanet.checkpoint`) and the detection toy set (:mod:`ecanet.detection.toyset`), so that each refuses a
path it cannot write in the same words, and none leaves a half-written folder behind.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator

from .errors import ConfigError


def blocking_file(path: Path) -> Path | None:
    """The nearest existing parent of ``path`` when it is a file, not a folder (``path`` then cannot be created
    under it); None when the nearest existing parent is a folder."""
    for folder in path.parents:
        if folder.exists():
            return None if folder.is_dir() else folder
    return None


def check_output_file(path: Path, option: str, example: str, inputs: Iterable[Path] = ()) -> None:
    """Refuse (:class:`ConfigError`), before any work, an output file that cannot be written: ``path`` is a
    folder, lies under a file, or is one of ``inputs`` (the files being read). Missing folders are created when
    writing; an existing file is replaced."""
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; {option} names the file to write. Pass a file path, e.g. "
                          f"{path / example}.")
    blocker = blocking_file(path)
    if blocker is not None:
        raise ConfigError(f"{option} {path} cannot be written: {blocker} is a file, not a folder. Pass a "
                          f"path in a folder (missing folders are created).")
    resolved = path.resolve()
    for read in inputs:
        if read.resolve() == resolved:
            raise ConfigError(f"{option} {path} is the {read.name} of the run {read.parent}, which is being read; "
                              f"writing it would destroy the run's record. Pass another path, e.g. "
                              f"{read.parent.parent / example}.")


@contextlib.contextmanager
def folder_written_whole(output: Path) -> Iterator[Path]:
    """A temporary sibling folder of ``output`` to fill; when the block ends normally it takes ``output``'s
    place (a missing or empty ``output`` receives its contents; any other is replaced, which the caller has
    checked may happen), and when the block raises it is removed. So an interrupted writer leaves no
    half-written folder, and a folder that readers find is complete."""
    partial = output.parent / f".{output.name}.partial-{os.getpid()}"
    output.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        yield partial
        if not output.exists():
            partial.rename(output)
        elif output.is_dir() and not any(output.iterdir()):   # keep the folder itself (it may be the cwd)
            for child in sorted(partial.iterdir()):
                child.rename(output / child.name)
            partial.rmdir()
        else:
            shutil.rmtree(output)
            partial.rename(output)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
