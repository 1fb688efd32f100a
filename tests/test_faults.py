"""Faults that clusters and users cause: each ends with exit 2, one message naming the problem and the fix,
no traceback, and nothing already saved touched (the start of the fault battery)."""
from __future__ import annotations

import hashlib
import os
import socket

import pytest

from ecanet.errors import EXIT_OK, EXIT_USAGE
from ecanet.runlock import RunLock
from conftest import SMALL_RUN, run_main

RUN = [*SMALL_RUN, "-a", "resnet18", "--epochs", "1"]


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _fails(argv, capsys, *phrases):
    assert run_main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_a_config_file_that_is_not_text(image_folder, tmp_path, capsys):
    config = tmp_path / "model.pth"
    config.write_bytes(bytes(range(256)) * 4)
    _fails([image_folder, "--config", config], capsys, str(config), "is not text", "YAML file")


def test_an_output_that_is_a_file(image_folder, tmp_path, capsys):
    output = tmp_path / "notes.txt"
    output.write_text("keep me")
    _fails([image_folder, *RUN, "--output", output], capsys, "cannot create the run directory", "--output")
    assert output.read_text() == "keep me"


def test_a_second_run_on_the_same_output_is_refused(image_folder, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("the first run's")
    before = _digest(out)
    with RunLock(out):  # another process holds the directory (the lock is per open file, as across processes)
        _fails([image_folder, *RUN, "--output", out], capsys, "is in use by process", socket.gethostname(),
               "another --output")
    assert {k: v for k, v in _digest(out).items() if k != ".lock"} == before
    assert run_main([image_folder, *RUN, "--output", out]) == EXIT_OK  # released: the directory is free again


def test_leftovers_of_a_killed_save_are_removed_at_the_next_start(image_folder, tmp_path, caplog):
    out = tmp_path / "run"
    out.mkdir()
    leftover = out / ".last.pth.k3j2h1.tmp"   # what a save killed half-way leaves (ecanet.checkpoint._atomic_file)
    leftover.write_bytes(os.urandom(1024))
    with caplog.at_level("WARNING"):
        assert run_main([image_folder, *RUN, "--output", out]) == EXIT_OK
    assert not leftover.exists() and "left by a save that did not finish" in caplog.text
