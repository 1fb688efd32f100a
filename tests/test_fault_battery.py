"""The fault battery: what busy clusters and hostile users throw at a run, one case per row.

Every case states the exit code the run must end with, a fragment of what it must say (the single
``error:`` paragraph on stderr, or the log for runs that go on), and what becomes of the checkpoint an
earlier run left in ``--output`` (SHA-256 of the files before and after):

* ``untouched``: every file of the run directory is as it was (a failure before the first step);
* ``kept``: the checkpoints are as they were (a failure after training steps, which may have logged);
* ``saved``: the run went on and saved a newer, loadable checkpoint;
* None: the case starts without an earlier run.

No case may print a traceback, and a run that fails before its first step in a new ``--output`` leaves no
directory. Cases run ``main.main`` in this process, except those that send real signals to a real process
group, as SLURM and Kubernetes do. All share one small image folder and one finished run, and train a few
steps of ResNet-18 on 32x32 images.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from conftest import ROOT, SMALL_RUN, run_main
from ecanet.errors import EXIT_DIVERGED, EXIT_OK, EXIT_PREEMPTED, EXIT_SAVE_FAILED, EXIT_USAGE

RUN = [*SMALL_RUN, "-a", "resnet18", "--epochs", "1"]           # 48 training images: 6 steps of 8
RESUME = [*SMALL_RUN, "-a", "resnet18", "--epochs", "2", "--resume", "auto"]


@pytest.fixture(scope="module")
def finished_run(image_folder, tmp_path_factory) -> Path:
    """A run directory after one finished epoch: last.pth, best.pth, config.yaml, train.log, metrics."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert run_main([image_folder, *RUN, "--output", out]) == EXIT_OK
    return out


def digest(folder: Path, pattern: str = "*") -> dict[str, str]:
    """SHA-256 of every file under ``folder`` matching ``pattern`` (the lock file names its holder: left out)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob(pattern)) if p.is_file() and p.name != ".lock"}


class Context:
    """What a case arranges: the data folder (``own_data`` for a copy it may break), the output (a copy of
    the finished run, or ``fresh_output``), and pytest's monkeypatch."""

    def __init__(self, image_folder: Path, finished: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.data, self.tmp, self.monkeypatch = image_folder, tmp, monkeypatch
        self.out = tmp / "run"
        shutil.copytree(finished, self.out)
        self.has_previous = True

    def fresh_output(self) -> Path:
        shutil.rmtree(self.out)
        self.has_previous = False
        return self.out

    def own_data(self) -> Path:
        if self.data.parent != self.tmp:
            self.data = Path(shutil.copytree(self.data, self.tmp / "data"))
        return self.data


@dataclass(frozen=True)
class Case:
    name: str
    arrange: Callable[[Context], list]        # returns main.py's arguments
    exit_code: int
    says: str                                  # a fragment of the error paragraph, or of the log
    checkpoint: str | None                     # 'untouched', 'kept', 'saved' or None (see the module docstring)
    signal_to_send: tuple[str, int, str] | None = None   # (log line to wait for, signal, 'group' or 'main')
    after_steps: bool = False                  # the failure comes after training steps (a run directory stays)


# ------------------------------------------------------------------------------------- arranging the cases

def _poison_batchnorm_at_step(ctx: Context, step: int) -> None:
    """After training step ``step`` of this process, a BatchNorm's running variance becomes inf (what an fp16
    overflow does): the loss stays finite, so only the check of the buffers can catch it."""
    import torch
    from ecanet import engine
    real_step, calls = engine.backward_and_step, {"n": 0}

    def poisoned(loss, model, *args, **kwargs):
        real_step(loss, model, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == step:
            next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_var.fill_(float("inf"))

    ctx.monkeypatch.setattr(engine, "backward_and_step", poisoned)


def non_finite_buffers(ctx):
    _poison_batchnorm_at_step(ctx, 1)
    return [ctx.data, *RESUME, "--save-every-steps", "1", "--output", ctx.out]


def nan_loss_before_any_checkpoint(ctx):
    import math
    import torch
    real_forward = torch.nn.CrossEntropyLoss.forward
    ctx.monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward",
                            lambda self, logits, target: real_forward(self, logits, target) * math.nan)
    return [ctx.data, *RUN, "--output", ctx.fresh_output()]


def read_only_filesystem(ctx, new_run: bool):
    """The output's filesystem is mounted read-only: creating anything in it fails with EROFS."""
    output = ctx.fresh_output() if new_run else ctx.out
    real_mkdir, real_open = Path.mkdir, os.open

    def refuse(path):
        if Path(path).resolve().is_relative_to(output.resolve()):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    def mkdir(self, *args, **kwargs):
        refuse(self)
        return real_mkdir(self, *args, **kwargs)

    def open_(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    ctx.monkeypatch.setattr(Path, "mkdir", mkdir)
    ctx.monkeypatch.setattr(os, "open", open_)
    return [ctx.data, *(RUN if new_run else RESUME), "--output", output]


def held_by_another_process(ctx):
    from ecanet.rundir import RunLock
    lock = RunLock(ctx.out).acquire()   # flock is per open file: it excludes this process's own second open
    ctx.monkeypatch.setattr(Context, "lock", lock, raising=False)  # released when the case's context goes
    return [ctx.data, *RESUME, "--output", ctx.out]


def undecodable_training_image(ctx):
    """One training image that PIL refuses with an error outside OSError: a decompression bomb (pixels over
    twice ``Image.MAX_IMAGE_PIXELS``), which raises ``DecompressionBombError``."""
    from PIL import Image
    data = ctx.own_data()
    big = sorted((data / "train").rglob("*.jpg"))[5]
    Image.new("RGB", (64, 64), "white").save(big)
    ctx.monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 32 * 32 + 1)  # 64 x 64 > 2 x that: a bomb; 32 x 32 is not
    return [data, *RUN, "--output", ctx.fresh_output()]


def special_file(ctx):
    data = ctx.own_data()
    os.mkfifo(sorted((data / "train").iterdir())[0] / "pipe.jpg")   # open() would wait for a writer forever
    return [data, *RUN, "--output", ctx.fresh_output()]


def link_loop(ctx):
    data = ctx.own_data()
    os.symlink("..", sorted((data / "train").iterdir())[0] / "again")  # train/<class>/again -> train/
    return [data, *RUN, "--output", ctx.fresh_output()]


def _break_validation_image(ctx) -> Path:
    data = ctx.own_data()
    broken = sorted((data / "val").rglob("*.jpg"))[2]
    broken.write_bytes(b"not an image")
    return data


def unreadable_validation_image(ctx):
    return [_break_validation_image(ctx), *SMALL_RUN, "-e", "--resume", ctx.out / "last.pth"]


def unreadable_validation_image_within_limit(ctx):
    from ecanet import engine
    ctx.monkeypatch.setattr(engine, "MAX_BAD_IMAGE_FRACTION", 0.5)
    return [_break_validation_image(ctx), *SMALL_RUN, "-e", "--resume", ctx.out / "last.pth"]


def every_training_image_broken(ctx):
    data = ctx.own_data()
    for path in (data / "train").rglob("*.jpg"):
        path.write_bytes(b"broken")
    return [data, *RESUME, "--output", ctx.out]


def killed_save_leftover(ctx):
    (ctx.out / ".last.pth.k3j2h1.tmp").write_bytes(os.urandom(4096))   # what SIGKILL during a save leaves
    return [ctx.data, *RESUME, "--output", ctx.out]


def full_disk(ctx):
    import torch

    def disk_full(obj, f, *args, **kwargs):  # how torch reports ENOSPC while writing a checkpoint
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    ctx.monkeypatch.setattr(torch, "save", disk_full)
    return [ctx.data, *RESUME, "--output", ctx.out]


def short_write_before_any_checkpoint(ctx):
    """torch's zip writer on a full disk or quota can also say 'unexpected pos': a fresh run's first save."""
    import torch

    def short_write(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 25352768 vs 25352676")

    ctx.monkeypatch.setattr(torch, "save", short_write)
    return [ctx.data, *RUN, "--output", ctx.fresh_output()]


def unwritable_run_directory(ctx):
    """A directory the run may not create files in (another user's, read-only): as a cluster job meets it."""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(ctx.out))

    ctx.monkeypatch.setattr(tempfile, "mkstemp", refuse)
    return [ctx.data, *RESUME, "--output", ctx.out]


def run_directory_that_takes_no_new_file(ctx):
    """The directory refuses new files (permissions, read-only, immutable; root cannot be refused by chmod, so
    the refusal is arranged) but its lock file, left by the earlier run, opens: the run stops before training,
    not after an epoch at its first save."""
    real_open = os.open

    def refuse_new_files(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and Path(path).parent == ctx.out and Path(path).name != ".lock":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    ctx.monkeypatch.setattr(os, "open", refuse_new_files)
    return [ctx.data, *RESUME, "--output", ctx.out]


def code_on_unpickling(ctx):
    import torch

    class RunsCode:
        def __reduce__(self):
            return (os.system, ("echo this must never run",))

    hostile = ctx.tmp / "hostile.pth"
    torch.save({"state_dict": {}, "payload": RunsCode()}, hostile)
    return [ctx.data, *SMALL_RUN, "-e", "--resume", hostile]


def truncated_checkpoint(ctx):
    data = (ctx.out / "last.pth").read_bytes()
    cut = ctx.tmp / "cut.pth"
    cut.write_bytes(data[: len(data) // 3])
    return [ctx.data, *SMALL_RUN, "-e", "--resume", cut]


def config_not_text(ctx):
    config = ctx.tmp / "model.pth"
    config.write_bytes(bytes(range(256)) * 4)
    return [ctx.data, "--config", config, *RESUME, "--output", ctx.out]


def output_is_a_file(ctx):
    notes = ctx.tmp / "notes.txt"
    notes.write_text("keep me")
    return [ctx.data, *RUN, "--output", notes]


def python_process(argv) -> list:
    return [sys.executable, str(ROOT / "main.py"), *map(str, argv)]


def resume_another_runs_checkpoint(ctx):
    """--resume names a checkpoint of another run while --output holds checkpoints of its own."""
    other = Path(shutil.copytree(ctx.out, ctx.tmp / "other"))
    return [ctx.data, *RESUME, "--resume", other / "last.pth", "--output", ctx.out]


def unreadable_checkpoints_only(ctx):
    """--resume auto over a directory whose only checkpoints are truncated (a copy cut short)."""
    for path in ctx.out.glob("*.pth"):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return [ctx.data, *RESUME, "--output", ctx.out]


def renamed_class(ctx):
    """The same images, but the first class folder renamed: every label would now mean another class."""
    data = ctx.own_data()
    first = sorted((data / "train").iterdir())[0].name
    for split in ("train", "val"):
        (data / split / first).rename(data / split / f"zz_{first}")
    return [data, *RESUME, "--output", ctx.out]


def one_more_training_image(ctx):
    """A training image added: an epoch has another number of samples (and, at some sizes, of steps)."""
    data = ctx.own_data()
    folder = sorted((data / "train").iterdir())[0]
    image = sorted(folder.iterdir())[0]
    shutil.copy(image, folder / f"again_{image.name}")
    return [data, *RESUME, "--output", ctx.out]


CASES = [
    # stop signals: SLURM and Kubernetes signal the whole process group, DataLoader workers included
    Case("sigterm-to-process-group-mid-epoch", lambda c: [c.data, *RESUME, "-j", "1", "-p", "1", "--output", c.out],
         EXIT_PREEMPTED, "SIGTERM received: saving a checkpoint", "saved",
         signal_to_send=("epoch 2/2 step 2/6", signal.SIGTERM, "group")),
    Case("sigusr1-to-main-process-mid-epoch", lambda c: [c.data, *RESUME, "-j", "1", "-p", "1", "--output", c.out],
         EXIT_PREEMPTED, "SIGUSR1 received: saving a checkpoint", "saved",
         signal_to_send=("epoch 2/2 step 2/6", signal.SIGUSR1, "main")),
    Case("sigterm-during-start-up", lambda c: [c.data, *RESUME, "--output", c.out],
         EXIT_PREEMPTED, "SIGTERM received before training started; nothing was saved", "untouched",
         signal_to_send=("", signal.SIGTERM, "group")),
    Case("sigkill-during-a-save-leaves-a-temporary-file", killed_save_leftover,
         EXIT_OK, "left by a save that did not finish", "saved"),
    # non-finite values never reach a checkpoint, and the messages say only what is true
    Case("non-finite-batchnorm-buffers", non_finite_buffers,
         EXIT_DIVERGED, "running_var became NaN/inf", "kept"),
    Case("nan-loss-before-any-checkpoint", nan_loss_before_any_checkpoint,
         EXIT_DIVERGED, "No checkpoint of this run exists yet", None),
    Case("explicit-lr-on-resume", lambda c: [c.data, *RESUME, "--lr", "0.05", "--output", c.out],
         EXIT_OK, "the schedule continues from base learning rate 0.0015625 (the run had 0.003125)", "saved"),
    # a changed configuration on resume
    Case("resume-with-another-batch-size", lambda c: [c.data, *RESUME, "-b", "16", "--output", c.out],
         EXIT_USAGE, "batch-size 8 -> 16", "untouched"),
    Case("resume-with-another-image-size", lambda c: [c.data, *RESUME, "--img-size", "24", "--output", c.out],
         EXIT_USAGE, "img-size 32 -> 24", "untouched"),
    Case("resume-with-another-seed", lambda c: [c.data, *RESUME, "--seed", "4", "--output", c.out],
         EXIT_USAGE, "seed 3 -> 4", "untouched"),
    Case("resume-from-another-runs-checkpoint-over-this-ones", resume_another_runs_checkpoint,
         EXIT_USAGE, "that saving would overwrite. To continue the run in", "untouched"),
    Case("resume-auto-over-truncated-checkpoints", unreadable_checkpoints_only,
         EXIT_USAGE, "holds no training checkpoint that can be read", "untouched"),
    Case("resume-on-renamed-classes", renamed_class,
         EXIT_USAGE, "was trained on other classes than the dataset's: class 0 is", "untouched"),
    Case("resume-with-another-training-set-size", one_more_training_image,
         EXIT_USAGE, "training images 48 -> 49", "untouched"),
    Case("resume-with-override", lambda c: [c.data, *RESUME, "-b", "16", "--resume-override", "--output", c.out],
         EXIT_OK, "the run is no longer bit-identical", "saved"),
    # one run per output directory
    Case("second-process-on-the-same-output", held_by_another_process,
         EXIT_USAGE, f"is in use by process {os.getpid()} on {socket.gethostname()}", "untouched"),
    # options and files a user gives
    Case("option-outside-its-domain", lambda c: [c.data, *RESUME, "--hflip", "1.5", "--output", c.out],
         EXIT_USAGE, "--hflip must be", "untouched"),
    Case("crop-larger-than-the-validation-resize", lambda c: [c.data, *RUN, "--img-size", "40", "--output",
                                                             c.fresh_output()],
         EXIT_USAGE, "--img-size 40 is larger than --val-resize 32", None),
    Case("sync-bn-on-the-cpu", lambda c: [c.data, *RUN, "--sync-bn", "--device", "cpu", "--output", c.fresh_output()],
         EXIT_USAGE, "--sync-bn synchronises BatchNorm across GPUs", None),
    Case("momentum-outside-its-domain", lambda c: [c.data, *RESUME, "--momentum", "-0.1", "--output", c.out],
         EXIT_USAGE, "--momentum must be", "untouched"),
    Case("config-file-that-is-not-text", config_not_text, EXIT_USAGE, "is not text", "untouched"),
    Case("output-that-is-a-file", output_is_a_file, EXIT_USAGE, "is a file, not a directory", "untouched"),
    Case("output-on-a-read-only-filesystem", lambda c: read_only_filesystem(c, new_run=True),
         EXIT_USAGE, "Read-only file system", None),
    Case("resume-on-a-read-only-filesystem", lambda c: read_only_filesystem(c, new_run=False),
         EXIT_USAGE, "Read-only file system", "untouched"),
    # the data tree
    Case("image-that-pil-refuses-outside-oserror", undecodable_training_image,
         EXIT_USAGE, "images are unreadable", None, after_steps=True),
    Case("special-file-in-the-data-tree", special_file, EXIT_OK, "not a regular file (a FIFO", None),
    Case("directory-link-that-loops", link_loop, EXIT_OK, "48 train / 15 val images", None),
    Case("unreadable-validation-image-counts-toward-the-limit", unreadable_validation_image,
         EXIT_USAGE, "1 of the 15 validation images are unreadable", "untouched"),
    Case("unreadable-validation-image-is-not-counted-twice", unreadable_validation_image_within_limit,
         EXIT_OK, "(14 images,", "untouched"),
    # messages
    Case("full-disk", full_disk, EXIT_SAVE_FAILED, "is full", "kept"),
    Case("short-write-before-any-checkpoint", short_write_before_any_checkpoint, EXIT_SAVE_FAILED,
         "is full or over its quota", None),
    Case("unwritable-run-directory", unwritable_run_directory, EXIT_SAVE_FAILED, "Permission denied", "kept"),
    Case("run-directory-that-takes-no-new-file", run_directory_that_takes_no_new_file, EXIT_USAGE,
         "cannot use the run directory", "untouched"),
    Case("checkpoint-that-runs-code-on-unpickling", code_on_unpickling,
         EXIT_USAGE, "refuses (it refers to posix.system)", "untouched"),
    Case("truncated-checkpoint", truncated_checkpoint, EXIT_USAGE, "It may be truncated", "untouched"),
    # no debris
    Case("failure-before-the-first-step-in-an-existing-directory", every_training_image_broken,
         EXIT_USAGE, "unreadable images in a row", "untouched"),
    Case("failure-in-a-loader-worker-process", lambda c: [*every_training_image_broken(c), "-j", "1"],
         EXIT_USAGE, "64 unreadable images in a row", "untouched"),
]


# ----------------------------------------------------------------------------------------- running a case

def run_in_process(argv, capsys, caplog) -> tuple[int, str, str]:
    with caplog.at_level("INFO"):
        code = run_main(argv)
    return code, capsys.readouterr().err, caplog.text


def run_with_signal(argv, case: Case) -> tuple[int, str, str]:
    """main.py in a process group of its own (as a job scheduler starts it); the signal goes to the group or
    to the main process once the awaited line appears (at once for an empty line)."""
    import torch
    wait_for, signum, target = case.signal_to_send
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(python_process(argv), stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
                            preexec_fn=os.setpgrp)
    send = (lambda: os.killpg(proc.pid, signum)) if target == "group" else (lambda: os.kill(proc.pid, signum))
    if not wait_for:  # during start-up: as soon as the process handles the signal (it then imports torch)
        while not catches(proc.pid, signum) and proc.poll() is None:
            time.sleep(0.01)
        send()
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if wait_for and wait_for in line:
            send()
            wait_for = None
    text = "".join(lines)
    return proc.wait(timeout=300), text, text


def catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (Linux: the SigCgt mask of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def _error_paragraph(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.signal_to_send else [])
                                  for c in CASES])
def test_fault(case, image_folder, finished_run, tmp_path, monkeypatch, capsys, caplog):
    import torch
    ctx = Context(image_folder, finished_run, tmp_path, monkeypatch)
    argv = [str(a) for a in case.arrange(ctx)]
    # "untouched": nothing the case arranged changes (the run directory, and e.g. a file given as --output);
    # hashed only for the cases that compare them
    before_all = digest(ctx.tmp) if case.checkpoint == "untouched" else None
    before_checkpoints = digest(ctx.out, "*.pth") if case.checkpoint in ("kept", "saved") else None
    fresh = not ctx.out.exists()
    if case.signal_to_send:
        code, err, logged = run_with_signal(argv, case)
    else:
        code, err, logged = run_in_process(argv, capsys, caplog)
        monkeypatch.undo()  # the case's patches (a read-only disk, a failing torch.save) end with the run
    assert code == case.exit_code, (err + logged)[-3000:]
    assert "Traceback" not in err
    assert "\x1b" not in err, "terminal escape codes in a message"
    if code in (EXIT_USAGE, EXIT_DIVERGED, EXIT_SAVE_FAILED):
        assert case.says in _error_paragraph(err)
    else:
        assert case.says in logged, logged[-3000:]
    if case.checkpoint == "untouched":
        assert digest(ctx.tmp) == before_all
    elif case.checkpoint == "kept":
        assert digest(ctx.out, "*.pth") == before_checkpoints
    elif case.checkpoint == "saved":
        assert digest(ctx.out, "*.pth")["last.pth"] != before_checkpoints["last.pth"]
        saved = torch.load(ctx.out / "last.pth", weights_only=True)
        assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
    if fresh and code == EXIT_USAGE and not case.after_steps:
        assert not ctx.out.exists(), "a run that fails before its first step must leave no directory"


# ------------------------------------------------------------------- what a few cases must show beyond that

def test_a_stop_signal_while_the_handlers_are_installed_exits_75(monkeypatch, capsys):
    """A scheduler's SIGTERM can land between the first stop handler's installation and the last one's: the
    command still exits 75 with its one paragraph, and every handler is put back."""
    from ecanet import cli, signals
    install = signal.signal

    def install_then_receive(signum, handler):
        previous = install(signum, handler)
        if handler is signals._stop_before_training and signum == signals.PREEMPTION_SIGNALS[0]:
            signal.raise_signal(signum)   # before the other stop signals have their handlers
        return previous

    before = signals.stop_signal_handlers()
    monkeypatch.setattr(signal, "signal", install_then_receive)
    code = cli.run_command(lambda: pytest.fail("the command ran after the stop"), [], "")
    monkeypatch.undo()
    assert code == EXIT_PREEMPTED
    assert f"{signals.PREEMPTION_SIGNALS[0].name} received before training started" in capsys.readouterr().err
    assert signals.stop_signal_handlers() == before


def test_a_link_loop_is_reported_and_not_followed(image_folder, tmp_path, caplog):
    from ecanet.data.folders import RobustImageFolder
    data = Path(shutil.copytree(image_folder, tmp_path / "data"))
    link = sorted((data / "train").iterdir())[0] / "again"
    os.symlink("..", link)
    with caplog.at_level("WARNING"):
        folder = RobustImageFolder(str(data / "train"))
    assert len(folder.samples) == 48 and f"not following {link}" in caplog.text and "link loop" in caplog.text


def test_a_linked_class_folder_that_is_no_loop_is_followed(image_folder, tmp_path):
    """Datasets are often assembled from links: only links back to a folder above are refused."""
    from ecanet.data.folders import RobustImageFolder
    data = Path(shutil.copytree(image_folder, tmp_path / "data"))
    first = sorted((data / "train").iterdir())[0]
    shutil.move(first, tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", first)
    assert len(RobustImageFolder(str(data / "train")).samples) == 48


@pytest.mark.parametrize("limit", [0.5, 0.01])
def test_validation_leaves_unreadable_rows_out_instead_of_counting_a_stand_in(limit, monkeypatch):
    """Row 1's image is unreadable: its row holds a stand-in (the next image, of another class) only to keep
    the batch's shape. Counted, it would cost a quarter of top-1; left out, top-1 is 100%. A quarter of the
    images unreadable is over the 1% limit."""
    import torch
    from ecanet import engine
    from ecanet.distributed import DistInfo
    from ecanet.errors import DataError
    classes = torch.tensor([0, 2, 2, 1])                      # what each row's image shows
    images = classes.float().view(4, 1, 1, 1).expand(4, 3, 2, 2)
    target = torch.tensor([0, 1, 2, 1])                       # row 1's own image showed class 1
    unreadable = torch.tensor([0, 1, 0, 0])

    class ReadsTheClass(torch.nn.Module):
        def forward(self, x):                                 # (B, 3, 2, 2) -> (B, 3) logits
            return torch.nn.functional.one_hot(x[:, 0, 0, 0].long(), 3).float()

    monkeypatch.setattr(engine, "MAX_BAD_IMAGE_FRACTION", limit)
    batches = [(images, target, unreadable)] * 5
    if limit < 0.25:
        with pytest.raises(DataError, match="5 of the 20 validation images are unreadable"):
            engine.evaluate(ReadsTheClass(), batches, DistInfo(), engine.Precision())
        return
    result = engine.evaluate(ReadsTheClass(), batches, DistInfo(), engine.Precision())
    assert (result.images, result.skipped_images, result.top1) == (15, 5, 100.0)


def test_an_explicit_lr_on_resume_is_the_one_trained_with(finished_run, image_folder, tmp_path):
    """Not only logged: the resumed epochs train at the new learning rate (the scheduler's state is rebased)."""
    from ecanet.metrics import read_metrics
    out = Path(shutil.copytree(finished_run, tmp_path / "run"))
    assert run_main([image_folder, *RESUME, "--lr", "0.01", "--output", out]) == EXIT_OK
    rows = read_metrics(out / "metrics.jsonl")
    assert rows[0]["lr"] == pytest.approx(0.1 * 8 / 256) and rows[1]["lr"] == pytest.approx(0.01 * 8 / 256)
    # the run's wall time counts both starts: the first one's (recorded in its last.pth) and this one's epoch
    import torch
    first = torch.load(finished_run / "last.pth", weights_only=True)["elapsed_s"]
    both = read_metrics(out / "metrics.jsonl", "summary")[-1]["wall_time_s"]
    assert first > 0 and both >= first + rows[1]["epoch_time_s"]


def test_an_overridden_resume_keeps_the_configuration_history(finished_run, image_folder, tmp_path, caplog):
    import yaml
    out = Path(shutil.copytree(finished_run, tmp_path / "run"))
    with caplog.at_level("INFO"):
        assert run_main([image_folder, *RESUME, "-b", "16", "--img-size", "24", "--resume-override", "--lr", "0.2",
                         "--output", out]) == EXIT_OK
    assert "resumed with changed options: epochs 1 -> 2, lr 0.1 -> 0.2\n" in caplog.text
    (entry,) = yaml.safe_load((out / "config_history.yaml").read_text())
    assert entry["changed"]["batch-size"] == [8, 16] and entry["changed"]["lr"] == [0.1, 0.2]
    # the normalisation recorded as the default (null), now the default's numbers from the recipe: no change
    assert "mean" not in entry["changed"] and "std" not in entry["changed"]
    assert yaml.safe_load((out / "config.yaml").read_text())["batch-size"] == 16


def test_a_failed_save_names_what_is_left_and_leaves_no_epoch_recorded_twice(finished_run, image_folder, tmp_path,
                                                                            monkeypatch, capsys):
    """An epoch whose save failed is redone by the resumed run and recorded once; before the first checkpoint the
    advice is to rerun, not to resume."""
    import torch
    from ecanet.metrics import read_metrics
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = Path(shutil.copytree(finished_run, tmp_path / "run"))
    real_save = torch.save
    monkeypatch.setattr(torch, "save", no_space)
    assert run_main([image_folder, *RESUME, "--output", out]) == EXIT_SAVE_FAILED
    assert "rerun with --resume auto: the previous checkpoint is intact" in _error_paragraph(capsys.readouterr().err)
    monkeypatch.setattr(torch, "save", real_save)
    assert run_main([image_folder, *RESUME, "--output", out]) == EXIT_OK
    assert [row["epoch"] for row in read_metrics(out / "metrics.jsonl")] == [1, 2]
    fresh = tmp_path / "fresh"
    monkeypatch.setattr(torch, "save", no_space)
    assert run_main([image_folder, *RUN, "--output", fresh]) == EXIT_SAVE_FAILED
    assert "no checkpoint of this run was written yet" in _error_paragraph(capsys.readouterr().err)
    # the first epoch's best.pth written, its last.pth not (the larger file): the run is left to start over
    def training_state_fails(obj, f, *args, **kwargs):
        if "optimizer" in obj:
            no_space()
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", training_state_fails)
    assert run_main([image_folder, *RUN, "--output", fresh]) == EXIT_SAVE_FAILED
    assert "no checkpoint of this run was written yet" in _error_paragraph(capsys.readouterr().err)
    assert not list(fresh.glob("*.pth"))
    monkeypatch.setattr(torch, "save", real_save)
    assert run_main([image_folder, *RUN, "--output", fresh]) == EXIT_OK   # the same command, as the advice says


def test_options_left_out_on_resume_are_the_runs_own(image_folder, tmp_path, caplog):
    """A resumed run's options are its config.yaml's unless given: leaving --lr out neither changes the learning
    rate nor is reported as a change, and what config.yaml says is what trained."""
    import yaml
    from ecanet.metrics import read_metrics
    out = tmp_path / "run"
    assert run_main([image_folder, *RUN, "--lr", "0.2", "--output", out]) == EXIT_OK
    with caplog.at_level("INFO"):
        assert run_main([image_folder, *SMALL_RUN, "--epochs", "2", "--resume", "auto", "--output", out]) == EXIT_OK
    assert "resumed with changed options: epochs 1 -> 2\n" in caplog.text
    assert yaml.safe_load((out / "config.yaml").read_text())["lr"] == 0.2
    assert read_metrics(out / "metrics.jsonl")[1]["lr"] == pytest.approx(0.2 * 8 / 256)


def test_explicit_sgd_options_on_resume_are_the_ones_trained_with(finished_run, image_folder, tmp_path, capsys):
    import torch
    out = Path(shutil.copytree(finished_run, tmp_path / "run"))
    assert run_main([image_folder, *RESUME, "--momentum", "0.5", "--wd", "0.05", "--nesterov", "--output",
                     out]) == EXIT_OK
    (group,) = torch.load(out / "last.pth", weights_only=True)["optimizer"]["param_groups"]
    assert (group["momentum"], group["weight_decay"], group["nesterov"]) == (0.5, 0.05, True)
    again = Path(shutil.copytree(finished_run, tmp_path / "again"))
    before = digest(again)
    assert run_main([image_folder, *RESUME, "--no-wd-bn-bias", "--output", again]) == EXIT_USAGE
    assert "cannot change on resume" in _error_paragraph(capsys.readouterr().err)
    assert digest(again) == before


def test_an_overridden_batch_size_keeps_the_runs_place_in_its_schedule(finished_run, image_folder, tmp_path,
                                                                      caplog):
    """After one epoch of 6 steps of 8, a resume with batches of 16 continues at epoch 2 of 3-step epochs
    (global step 3, not 6), with the base learning rate scaled to the new batch (linear scaling)."""
    from ecanet.metrics import read_metrics
    out = Path(shutil.copytree(finished_run, tmp_path / "run"))
    with caplog.at_level("INFO"):
        assert run_main([image_folder, *RESUME, "-b", "16", "--resume-override", "--lr-decay-epochs", "1",
                         "--output", out]) == EXIT_OK
    assert "the schedule continues from base learning rate 0.00625 (the run had 0.003125)" in caplog.text
    # the schedule's step after epoch 2 is 6 (two epochs of 3): two decays, not the three of step 9
    assert read_metrics(out / "metrics.jsonl")[1]["lr"] == pytest.approx(0.1 * 16 / 256 * 0.1 ** 2)


def test_a_mid_epoch_position_is_kept_in_samples_when_the_batch_changes():
    from ecanet.engine import EpochPosition
    position = EpochPosition(epoch=2, step_in_epoch=9, global_step=45)          # 18 samples of batch 2 seen
    assert position.rebatched(2, 8, 4) == EpochPosition(2, 2, 10)                # 16 of them in whole batches
    assert position.rebatched(2, 2, 18) == EpochPosition(2, 9, 45)               # nothing changed
    assert EpochPosition(1, 5, 11).rebatched(64, 8, 7) == EpochPosition(1, 7, 14)   # at most a whole epoch


def test_messages_are_one_paragraph_without_escape_codes():
    from ecanet.errors import one_paragraph
    assert one_paragraph("a \x1b[1mbold\x1b[0m step.\n\t(1) next\x07") == r"a bold step. (1) next\x07"


# ------------------------------------------------------------------------ every option against its domain

def _outside_and_inside(low, low_inclusive, high, high_inclusive, integer):
    """Values just outside each bound of a domain (refused) and one inside it (accepted); ``integer``: the
    option takes whole numbers, so "just outside" is one away."""
    step = 1 if integer else 1e-3
    outside = [low - step if low_inclusive else low]
    if high != float("inf"):
        outside.append(high + step if high_inclusive else high)
    inside = low if low_inclusive else (low + step if high == float("inf") else (low + high) / 2)
    return outside, inside


@pytest.mark.parametrize("option", sorted(__import__("ecanet.config", fromlist=["OPTION_DOMAINS"]).OPTION_DOMAINS))
def test_every_numeric_option_is_checked_against_its_domain(option):
    """Each option of OPTION_DOMAINS: just outside its bounds is a ConfigError naming the option and the
    range; inside them the checks pass (validate alone: nothing is run)."""
    from ecanet import config
    integer = config.build_parser()._option_string_actions[option].type is int
    outside, inside = _outside_and_inside(*config.OPTION_DOMAINS[option], integer=integer)
    # the crop fits in the validation resize whatever the resize (check_crop_fits)
    crop = ["--img-size", "1"] if option == "--val-resize" else []
    for value in outside:
        argv = ["DATA", option, str(int(value) if integer else value), *crop]
        if option == "--start-epoch":
            argv += ["--epochs", "100"]
        with pytest.raises(config.ConfigError, match=re.escape(option) + " must be"):
            config.validate(config.parse_config(argv))
    config.validate(config.parse_config(["DATA", option, str(int(inside) if integer else inside), *crop]))


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


def test_a_run_that_fails_before_its_first_step_puts_back_its_own_files_only(tmp_path):
    """``--output runs`` may hold other runs' directories, which their own runs keep writing while this run
    starts: putting the directory back touches its own files and its TensorBoard folder, nothing else."""
    from ecanet.rundir import RunDirSnapshot
    out = tmp_path / "runs"
    sibling = out / "other-run"
    sibling.mkdir(parents=True)
    (out / "config.yaml").write_text("arch: resnet18\n")
    (out / "train.log").write_text("an earlier line\n")
    (sibling / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (sibling / "last.pth").write_bytes(b"x" * 10)
    snapshot = RunDirSnapshot(out, existed=True)
    (out / "config.yaml").write_text("arch: eca_resnet18\n")          # this run's own files
    with open(out / "train.log", "a") as log_file:
        log_file.write("this run's line\n")
    (out / "tensorboard" / "sub").mkdir(parents=True)
    (out / "tensorboard" / "sub" / "events.out").write_bytes(b"e")
    with open(sibling / "metrics.jsonl", "a") as metrics:              # the other run, meanwhile
        metrics.write('{"epoch": 2}\n')
    (sibling / "last.pth").write_bytes(b"y" * 20)
    (sibling / "best.pth").write_bytes(b"z")
    snapshot.restore()
    assert (out / "config.yaml").read_text() == "arch: resnet18\n"
    assert (out / "train.log").read_text() == "an earlier line\n"
    assert not (out / "tensorboard").exists()
    assert (sibling / "metrics.jsonl").read_text() == '{"epoch": 1}\n{"epoch": 2}\n'
    assert (sibling / "last.pth").read_bytes() == b"y" * 20 and (sibling / "best.pth").read_bytes() == b"z"


@pytest.mark.parametrize("started", ["resumed", "new"])
def test_checkpoints_saved_by_another_process_while_a_run_starts_stop_it_before_it_writes(
        started, finished_run, image_folder, tmp_path, monkeypatch, capsys):
    """A requeued job can start while the old one still saves (its last epoch, or a stop signal's checkpoint):
    the new one read the directory before that save and would continue from what it read, or start afresh over
    it. Claiming the directory finds the checkpoints changed and stops with exit 2, every file as the other
    process left it."""
    import ecanet.data
    out = tmp_path / "run"
    if started == "resumed":
        shutil.copytree(finished_run, out)
    else:                  # the directory was still empty when the run looked
        out.mkdir()
    real_build = ecanet.data.build_data_from_config
    left = {}

    def another_process_saves(*args, **kwargs):   # while this run lists its data: the other one saves
        (out / "last.pth.tmp").write_bytes((finished_run / "last.pth").read_bytes())
        os.replace(out / "last.pth.tmp", out / "last.pth")
        left.update(digest(out))
        return real_build(*args, **kwargs)

    monkeypatch.setattr(ecanet.data, "build_data_from_config", another_process_saves)
    argv = RESUME if started == "resumed" else [*RUN, "--resume", "auto"]
    assert run_main([image_folder, *argv, "--output", out]) == EXIT_USAGE
    assert "changed while this run was starting" in _error_paragraph(capsys.readouterr().err)
    assert left and digest(out) == left


def test_the_run_lock_ends_with_its_process_not_with_the_children_it_forked(tmp_path):
    """A killed run's loader workers (forked while it held the lock) outlive it by seconds: the requeued run
    must find the directory free at once, not while they are still exiting."""
    import time
    from ecanet.rundir import RunLock
    forked = tmp_path / "worker-forked"
    pid = os.fork()
    if pid == 0:                            # the run: takes the lock, forks a worker, then dies at once
        try:
            RunLock(tmp_path).acquire()
            if os.fork() == 0:
                time.sleep(10)              # the worker, still alive when the next run starts
                os._exit(0)
            forked.write_text("")
        finally:
            os._exit(0)                     # no release, no cleanup: as SIGKILL leaves it
    os.waitpid(pid, 0)
    assert forked.exists()
    RunLock(tmp_path).acquire().release()   # free although the worker still runs
