"""Runs you can trust: bit-identical resume (epoch boundary and mid-epoch SIGTERM), preemption, failures."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys

import pytest
import torch

from ecanet.errors import EXIT_DIVERGED, EXIT_PREEMPTED, EXIT_SAVE_FAILED
from ecanet.metrics import read_metrics
from conftest import ROOT, SMALL_RUN, run_main, state_dicts_equal

# EMA, label smoothing and dropout-free ECA-ResNet-18: everything that carries state is exercised.
RUN = [*SMALL_RUN, "-a", "eca_resnet18", "--ema", "--ema-decay", "0.9", "--label-smoothing", "0.1"]


@pytest.fixture(scope="module")
def uninterrupted(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert run_main([image_folder, *RUN, "--epochs", "2", "--output", out]) == 0
    checkpoint = torch.load(out / "last.pth", weights_only=True)
    checkpoint["metrics"] = read_metrics(out / "metrics.jsonl")
    return checkpoint


def _assert_identical(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"]
    assert state_dicts_equal(a["state_dict"], b["state_dict"])
    assert state_dicts_equal(a["ema"], b["ema"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])


def test_resume_at_an_epoch_boundary_is_bit_identical(image_folder, tmp_path, uninterrupted):
    out = tmp_path / "run"
    assert run_main([image_folder, *RUN, "--epochs", "1", "--output", out]) == 0
    assert run_main([image_folder, *RUN, "--epochs", "2", "--output", out, "--resume", "auto"]) == 0
    _assert_identical(torch.load(out / "last.pth", weights_only=True), uninterrupted)
    assert [r["epoch"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]


@pytest.mark.slow
def test_sigterm_mid_epoch_then_resume_is_bit_identical(image_folder, tmp_path, uninterrupted):
    out = tmp_path / "run"
    argv = [sys.executable, str(ROOT / "main.py"), str(image_folder), *RUN, "-p", "1", "--epochs", "2",
            "--output", str(out)]
    # The same number of intra-op threads as this process, where the run it is compared with trained:
    # CPU reductions split over another number of threads round differently.
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())})
    log = []
    for line in proc.stderr:
        log.append(line)
        if "epoch 1/2 step 2/6" in line:  # a real SIGTERM, in the middle of the first epoch
            proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == EXIT_PREEMPTED, "".join(log)[-3000:]
    text = "".join(log)
    assert "SIGTERM received" in text and "--resume auto" in text
    saved = torch.load(out / "last.pth", weights_only=True)
    assert saved["reason"] == "preempted" and saved["epoch"] == 0 and 2 <= saved["step_in_epoch"] < 6
    assert run_main([image_folder, *RUN, "--epochs", "2", "--output", out, "--resume", "auto"]) == 0
    _assert_identical(torch.load(out / "last.pth", weights_only=True), uninterrupted)


def test_a_crash_after_a_step_checkpoint_resumes_bit_identically(image_folder, tmp_path, uninterrupted,
                                                                  monkeypatch):
    import ecanet.engine
    out = tmp_path / "run"
    real_step = ecanet.engine.backward_and_step
    calls = {"n": 0}

    def crash_at_step_6(*args, **kwargs):  # the process dies (no handler runs) during global step 6
        calls["n"] += 1
        if calls["n"] == 6:
            raise RuntimeError("simulated crash")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(ecanet.engine, "backward_and_step", crash_at_step_6)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_main([image_folder, *RUN, "--epochs", "2", "--save-every-steps", "4", "--output", out])
    monkeypatch.undo()
    mid = torch.load(out / "last.pth", weights_only=True)
    assert (mid["reason"], mid["epoch"], mid["step_in_epoch"], mid["global_step"]) == ("step", 0, 4, 4)
    assert run_main([image_folder, *RUN, "--epochs", "2", "--save-every-steps", "4", "--output", out,
                     "--resume", "auto"]) == 0
    _assert_identical(torch.load(out / "last.pth", weights_only=True), uninterrupted)
    # the resumed epoch's training metrics include the 4 steps done before the crash
    resumed = read_metrics(out / "metrics.jsonl")
    assert [r["train_top1"] for r in resumed] == [r["train_top1"] for r in uninterrupted["metrics"]]
    assert [r["val_top1"] for r in resumed] == [r["val_top1"] for r in uninterrupted["metrics"]]


def test_resume_from_a_given_path(image_folder, tmp_path, uninterrupted):
    first = tmp_path / "first"
    assert run_main([image_folder, *RUN, "--epochs", "1", "--output", first]) == 0
    second = tmp_path / "second"
    assert run_main([image_folder, *RUN, "--epochs", "2", "--output", second, "--resume",
                     first / "last.pth"]) == 0
    _assert_identical(torch.load(second / "last.pth", weights_only=True), uninterrupted)


def test_a_failed_save_stops_training_and_keeps_the_last_checkpoint(image_folder, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_save = torch.save
    calls = {"n": 0}

    def save_then_fill_the_disk(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 3:  # epoch 1's last.pth and best.pth are written; epoch 2's hits a full disk half-way
            f.write(b"PK\x03\x04 partial")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_fill_the_disk)
    assert run_main([image_folder, *RUN, "--epochs", "3", "--output", out]) == EXIT_SAVE_FAILED
    monkeypatch.undo()
    kept = torch.load(out / "last.pth", weights_only=True)
    assert kept["epoch"] == 1
    assert sorted(p.name for p in out.glob("*.pth")) == ["best.pth", "last.pth"]
    assert not list(out.glob(".*.tmp"))


def test_a_non_finite_loss_stops_with_the_step_and_lr(image_folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_forward = torch.nn.CrossEntropyLoss.forward
    calls = {"train": 0}

    def nan_from_step_9(self, logits, target):
        loss = real_forward(self, logits, target)
        if logits.requires_grad:
            calls["train"] += 1
            if calls["train"] >= 9:  # global step 8 (0-based), in epoch 2
                return loss * math.nan
        return loss

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", nan_from_step_9)
    assert run_main([image_folder, *RUN, "--epochs", "2", "--output", out]) == EXIT_DIVERGED
    err = capsys.readouterr().err
    assert "NaN/inf at global step 8 (epoch 2, learning rate 0.003125)" in err and "Traceback" not in err
    assert f"The last checkpoint, {out / 'last.pth'}, was written before this and is intact" in err
    monkeypatch.undo()
    kept = torch.load(out / "last.pth", weights_only=True)
    assert kept["epoch"] == 1 and all(torch.isfinite(v).all() for v in kept["state_dict"].values()
                                      if v.is_floating_point())
    assert run_main([image_folder, *RUN, "--epochs", "2", "--output", out, "--resume", "auto"]) == 0


def test_resume_auto_with_an_empty_run_directory_starts_fresh(image_folder, tmp_path):
    out = tmp_path / "new"
    assert run_main([image_folder, *RUN, "--epochs", "1", "--output", out, "--resume", "auto"]) == 0
    assert torch.load(out / "last.pth", weights_only=True)["epoch"] == 1
