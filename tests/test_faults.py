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


def _outside_and_inside(low, low_inclusive, high, high_inclusive):
    """Values just outside each bound of a domain (refused) and one inside it (accepted)."""
    integer = float(low).is_integer() and (high == float("inf") or float(high).is_integer())
    step = 1 if integer and low >= 1 else 1e-3
    outside = [low - step if low_inclusive else low]
    if high != float("inf"):
        outside.append(high + step if high_inclusive else high)
    inside = low if low_inclusive else (low + step if high == float("inf") else (low + high) / 2)
    return outside, inside


@pytest.mark.parametrize("option", sorted(__import__("ecanet.config", fromlist=["OPTION_DOMAINS"]).OPTION_DOMAINS))
def test_every_numeric_option_is_checked_against_its_domain(option, capsys):
    """Each option of OPTION_DOMAINS: just outside its bounds is exit 2 naming the option and the range;
    inside them the checks pass (validate alone: nothing is run)."""
    from ecanet import config
    outside, inside = _outside_and_inside(*config.OPTION_DOMAINS[option])
    kind = type(config.build_parser()._option_string_actions[option].default or 0)
    for value in outside:
        if kind is int and not float(value).is_integer():
            continue  # argparse refuses it already
        argv = ["DATA", option, str(kind(value) if kind is int else value)]
        if option == "--start-epoch":
            argv += ["--epochs", "100"]
        with pytest.raises(config.ConfigError, match=option.replace("-", r"\-") + " must be"):
            config.validate(config.parse_config(argv))
    value = int(inside) if kind is int and float(inside).is_integer() else inside
    config.validate(config.parse_config(["DATA", option, str(value)]))


@pytest.mark.parametrize(("argv", "refused"), [
    (["--hflip", "1.5"], True), (["--hflip", "1"], False), (["--momentum", "1"], False),
    (["--momentum", "-0.1"], True), (["--label-smoothing", "1"], True), (["--lr", "0"], True),
    (["--random-erasing", "1"], True), (["--min-crop-scale", "0"], True), (["--ema-decay", "1"], True),
    (["--std", "0.2", "0", "0.2"], True), (["--epochs", "3", "--start-epoch", "3"], True),
    (["--workers", "-1"], True), (["--warmup-epochs", "-1"], True), (["--lr-decay-rate", "0"], True),
])
def test_option_bounds_as_the_maths_needs_them(argv, refused):
    """Fixed cases, independent of the domain table: what would crash or silently misbehave is refused."""
    from ecanet import config
    args = config.parse_config(["DATA", *argv])
    if refused:
        with pytest.raises(config.ConfigError, match=argv[-2] if argv[-2].startswith("--") else "--std"):
            config.validate(args)
    else:
        config.validate(args)


def _start_in_its_own_group(argv):
    """``python main.py argv`` as a job scheduler starts it: a process group of its own."""
    import subprocess
    import sys
    import torch
    from conftest import ROOT
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.Popen([sys.executable, str(ROOT / "main.py"), *map(str, argv)], stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, env=env, preexec_fn=os.setpgrp)


@pytest.mark.slow
def test_sigterm_to_the_process_group_mid_epoch_saves_and_exits_75(image_folder, tmp_path):
    """What SLURM and Kubernetes do: the signal reaches the loader workers too, which must leave the stop to
    the main process (before, the workers died first and the run crashed with exit 1 and no checkpoint)."""
    import signal
    import torch
    from ecanet.errors import EXIT_PREEMPTED
    out = tmp_path / "run"
    argv = [image_folder, *SMALL_RUN, "-a", "resnet18", "--epochs", "2", "-p", "1", "-j", "1", "--output", out]
    proc = _start_in_its_own_group(argv)
    log = []
    for line in proc.stderr:
        log.append(line)
        if "epoch 1/2 step 2/6" in line:
            os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=300) == EXIT_PREEMPTED, "".join(log)[-3000:]
    assert "Traceback" not in "".join(log)
    saved = torch.load(out / "last.pth", weights_only=True)
    assert saved["reason"] == "preempted" and 2 <= saved["step_in_epoch"] < 6


@pytest.mark.slow
def test_a_stop_signal_during_start_up_exits_75_with_a_message(image_folder, tmp_path):
    import signal
    import time
    from ecanet.errors import EXIT_PREEMPTED
    out = tmp_path / "run"
    proc = _start_in_its_own_group([image_folder, *RUN, "--output", out])
    time.sleep(1.0)  # inside the imports or the data set-up: training is seconds away
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    assert "SIGTERM received before training started; nothing was saved" in err and "Traceback" not in err
    assert not out.exists()


# ------------------------------------------------------------------- non-finite values never reach a save

def test_non_finite_batchnorm_statistics_are_never_saved(image_folder, tmp_path, monkeypatch, capsys):
    """A finite loss with BatchNorm running statistics gone to inf (what fp16 overflow does): the step
    checkpoint is refused, the earlier one stays, and the message says it exists."""
    import torch
    from ecanet import engine
    from ecanet.errors import EXIT_DIVERGED
    out = tmp_path / "run"
    real_step = engine._backward_and_step
    calls = {"n": 0}

    def poison_at_step_3(loss, model, *args, **kwargs):
        real_step(loss, model, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
            bn.running_var.fill_(float("inf"))

    monkeypatch.setattr(engine, "_backward_and_step", poison_at_step_3)
    assert run_main([image_folder, *RUN, "--epochs", "2", "--save-every-steps", "2", "-p", "1",
                     "--output", out]) == EXIT_DIVERGED
    err = capsys.readouterr().err
    assert "bn1.running_var became NaN/inf at global step 4" in err and "Traceback" not in err
    assert "was written before this and is intact" in err
    kept = torch.load(out / "last.pth", weights_only=True)
    assert kept["global_step"] == 2 and all(torch.isfinite(v).all() for v in kept["state_dict"].values()
                                            if v.is_floating_point())


def test_divergence_before_any_checkpoint_says_there_is_none(image_folder, tmp_path, monkeypatch, capsys):
    import math
    import torch
    from ecanet.errors import EXIT_DIVERGED
    real_forward = torch.nn.CrossEntropyLoss.forward
    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward",
                        lambda self, logits, target: real_forward(self, logits, target) * math.nan)
    assert run_main([image_folder, *RUN, "--output", tmp_path / "run"]) == EXIT_DIVERGED
    err = capsys.readouterr().err
    assert "No checkpoint of this run exists yet" in err and "intact" not in err


def test_an_explicit_lr_on_resume_replaces_the_runs(image_folder, tmp_path, caplog):
    from ecanet.metrics import read_metrics
    out = tmp_path / "run"
    assert run_main([image_folder, *RUN, "--lr", "0.05", "--output", out]) == EXIT_OK
    with caplog.at_level("INFO"):
        assert run_main([image_folder, *SMALL_RUN, "-a", "resnet18", "--epochs", "2", "--lr", "0.01",
                         "--output", out, "--resume", "auto"]) == EXIT_OK
    assert "the schedule continues from base learning rate 0.0003125 (the run had 0.0015625)" in caplog.text
    rows = read_metrics(out / "metrics.jsonl")
    assert rows[0]["lr"] == pytest.approx(0.05 * 8 / 256) and rows[1]["lr"] == pytest.approx(0.01 * 8 / 256)


# ------------------------------------------------------------------------- a changed configuration on resume

def test_resuming_with_another_batch_size_is_refused_unless_overridden(image_folder, tmp_path, capsys, caplog):
    import yaml
    out = tmp_path / "run"
    assert run_main([image_folder, *RUN, "--output", out]) == EXIT_OK
    before = _digest(out)
    changed = [image_folder, *SMALL_RUN, "-a", "resnet18", "--epochs", "2", "--output", out, "--resume", "auto",
               "-b", "16", "--img-size", "24"]
    _fails(changed, capsys, "batch-size 8 -> 16", "img-size 32 -> 24", "--resume-override")
    assert _digest(out) == before   # nothing saved is touched
    with caplog.at_level("INFO"):
        assert run_main([*changed, "--resume-override", "--lr", "0.2"]) == EXIT_OK
    assert "no longer bit-identical" in caplog.text
    assert "resumed with changed options: epochs 1 -> 2, lr 0.1 -> 0.2\n" in caplog.text
    (entry,) = yaml.safe_load((out / "config_history.yaml").read_text())
    assert entry["changed"]["batch-size"] == [8, 16] and entry["changed"]["lr"] == [0.1, 0.2]
    assert yaml.safe_load((out / "config.yaml").read_text())["batch-size"] == 16


def test_a_full_disk_is_named_as_such_not_in_torchs_words(image_folder, tmp_path, monkeypatch, capsys):
    """torch reports a full disk as '[enforce fail at inline_container.cc] ... file write failed'."""
    import torch
    from ecanet.errors import EXIT_SAVE_FAILED

    def full_disk(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "run"
    assert run_main([image_folder, *RUN, "--output", out]) == EXIT_SAVE_FAILED
    err = capsys.readouterr().err
    assert f"the disk holding {out} is full" in err and "enforce fail" not in err and "Traceback" not in err
    assert not list(out.glob("*.pth")) and not list(out.glob(".*.tmp"))
