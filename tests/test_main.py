"""main.py end to end on CPU: training, run directory, torchrun (gloo), evaluation of checkpoints."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml

from ecanet.metrics import read_metrics
from conftest import DDP_ENV, ROOT, SMALL_RUN, run_main, run_script, state_dicts_equal, torchrun_main


@pytest.fixture(scope="module")
def trained_run(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    assert run_main([image_folder, "-a", "eca_resnet18", "--ksize", "3577", "--epochs", "2", "--output", out,
                     *SMALL_RUN]) == 0
    return out


def test_two_epoch_run_writes_a_complete_run_directory(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "last.pth", "best.pth", "train.log", "tensorboard"} <= names
    epochs = read_metrics(trained_run / "metrics.jsonl")
    assert [r["epoch"] for r in epochs] == [1, 2]
    for r in epochs:
        assert 0 <= r["val_top1"] <= 100 and r["images_per_s"] > 0 and r["skipped_images"] == 0
    assert read_metrics(trained_run / "metrics.jsonl", "summary")[0]["epochs"] == 2
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["arch"] == "eca_resnet18" and config["ksize"] == "3577" and config["seed"] == 3
    assert any(p.name.startswith("events.out.tfevents") for p in (trained_run / "tensorboard").iterdir())
    ckpt = torch.load(trained_run / "last.pth", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["arch"] == "eca_resnet18" and ckpt["global_step"] == 12
    assert set(ckpt["eca_kernel_sizes"].values()) == {3, 5, 7}
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt["state_dict"])
    assert {"torch", "torchvision", "ecanet"} <= set(ckpt["versions"])


def test_evaluating_the_checkpoint_reproduces_the_logged_top1(trained_run, image_folder, tmp_path):
    logged = read_metrics(trained_run / "metrics.jsonl")[-1]["val_top1"]
    # -e with no -a: the network is read off the checkpoint
    assert run_main([image_folder, "-e", "--resume", trained_run / "last.pth", "--output", tmp_path,
                     *SMALL_RUN]) == 0
    evaluated = read_metrics(tmp_path / "metrics.jsonl", "eval")[0]
    assert evaluated["val_top1"] == pytest.approx(logged, abs=1e-9)
    assert evaluated["images"] == 15


def test_an_official_format_file_evaluates_without_flags(trained_run, image_folder, tmp_path):
    # The released container: {'epoch', 'arch', 'state_dict' with 'module.' keys, 'best_prec1', 'optimizer'},
    # here even with a wrong 'arch' field, as one released file has.
    sd = torch.load(trained_run / "last.pth", weights_only=True)["state_dict"]
    official = tmp_path / "eca_resnet18_k3577.pth.tar"
    torch.save({"epoch": 2, "arch": "se_resnet18", "state_dict": {"module." + k: v for k, v in sd.items()},
                "best_prec1": 0.0, "optimizer": {}}, official)
    assert run_main([image_folder, "-e", "--resume", official, "--output", tmp_path, *SMALL_RUN]) == 0
    assert run_main([image_folder, "-a", "eca_resnet18", "-e", "--weights", official, "--output", tmp_path,
                     *SMALL_RUN]) == 0
    results = read_metrics(tmp_path / "metrics.jsonl", "eval")
    logged = read_metrics(trained_run / "metrics.jsonl")[-1]["val_top1"]
    assert [r["val_top1"] for r in results] == pytest.approx([logged, logged])


@pytest.mark.slow
def test_torchrun_two_processes_exact_evaluation_and_a_preempted_rank(image_folder, tmp_path):
    """Two processes (gloo): the run, whose last validation on two processes agrees with its checkpoint's
    evaluation on one (each validation image counted once), and the same run with SIGTERM sent to one rank
    mid-epoch: every rank stops at the same step, and the resumed run ends bit-identical to the
    uninterrupted one. One test, so that one reference run serves both checks."""
    env = {**os.environ, **DDP_ENV}
    out = tmp_path / "ddp"
    proc = subprocess.run(torchrun_main(image_folder, out, 29517), capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(out / "last.pth", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    assert ckpt["global_step"] == 2 * (16 * 3 // 2 // 8)  # 48 images over 2 ranks, batch 8 each
    assert "2 process(es) x batch 8 = 16" in proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr[-3000:]  # no deprecation warning from any rank

    # Evaluation under DDP counts each of the 15 validation images exactly once (15 is odd): the run's last
    # validation, on two processes, agrees with an evaluation of its checkpoint in this one process.
    eval_cmd = [str(image_folder), "-e", "--resume", str(out / "last.pth"), *SMALL_RUN]
    assert run_main([*eval_cmd, "--output", str(tmp_path / "e1")]) == 0
    one = read_metrics(tmp_path / "e1" / "metrics.jsonl", "eval")[0]
    two = read_metrics(out / "metrics.jsonl")[-1]
    assert one["images"] == two["val_images"] == 15
    assert one["val_top1"] == two["val_top1"] and one["val_top5"] == two["val_top5"]
    assert one["val_loss"] == pytest.approx(two["val_loss"], rel=1e-6)
    # So does the EMA's: every rank evaluates rank 0's EMA, BatchNorm statistics included, which is what it saves.
    assert run_main([*eval_cmd, "--use-ema", "--output", str(tmp_path / "e2")]) == 0
    ema = read_metrics(tmp_path / "e2" / "metrics.jsonl", "eval")[0]
    assert ema["val_top1"] == two["ema_val_top1"] and ema["val_loss"] == pytest.approx(two["ema_val_loss"], rel=1e-6)

    # SIGTERM to one rank only: the ranks must still agree on the step they stop at.
    preempted = tmp_path / "preempted"
    launcher = subprocess.Popen(torchrun_main(image_folder, preempted, 29532, ["-p", "1"]), stderr=subprocess.PIPE,
                                text=True, cwd=ROOT, env=env)
    log = []
    for line in launcher.stderr:
        log.append(line)
        if "epoch 1/2 step 1/3" in line:
            workers = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True).stdout.split()
            os.kill(int(sorted(workers)[-1]), signal.SIGTERM)
    launcher.wait(timeout=300)
    saved = torch.load(preempted / "last.pth", weights_only=True)
    assert saved["reason"] == "preempted", "".join(log)[-3000:]
    assert saved["epoch"] == 0 and 1 <= saved["step_in_epoch"] < 3 and len(saved["rng"]) == 2
    resumed = subprocess.run(torchrun_main(image_folder, preempted, 29533, ["--resume", "auto"]), capture_output=True,
                             text=True, timeout=300, cwd=ROOT, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = torch.load(preempted / "last.pth", weights_only=True)
    assert final["global_step"] == ckpt["global_step"] == 6
    assert state_dicts_equal(final["state_dict"], ckpt["state_dict"])


@pytest.mark.slow
def test_light_main_trains_eca_mobilenet_v2(image_folder, tmp_path):
    proc = run_script("light_main.py", [image_folder, "--epochs", "1", "--output", tmp_path / "m", *SMALL_RUN])
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = yaml.safe_load((tmp_path / "m" / "config.yaml").read_text())
    assert (config["arch"], config["lr"], config["lr-base-batch"], config["lr-decay-rate"]) == \
        ("eca_mobilenet_v2", 0.045, 96, 0.98)
    assert "lr 0.00375" in proc.stderr  # 0.045 x (8 images / 96): the linear scaling rule


def test_synthetic_data_and_schedule(tmp_path):
    out = tmp_path / "syn"
    assert run_main(["--synthetic", "--synthetic-size", "64", "--num-classes", "10", "-a", "resnet18",
                     "--epochs", "2", "-b", "16", "--img-size", "32", "--output", out, "--sched", "cosine",
                     "--warmup-epochs", "1", "--lr", "0.4", "--lr-base-batch", "16", "-p", "1"]) == 0
    rows = read_metrics(out / "metrics.jsonl")
    # cosine with one warm-up epoch (4 steps): lr after epoch 1 = warm-up end; after epoch 2 it has decayed
    assert rows[0]["lr"] == pytest.approx(0.4, rel=1e-6)
    assert rows[1]["lr"] < 0.4 * 0.5


def test_compile_mode_reaches_torch_compile(tmp_path, monkeypatch):
    """--compile-mode is handed to torch.compile (recorded here; the model runs uncompiled to stay fast)."""
    modes = []
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: modes.append(kwargs.get("mode")) or model)
    assert run_main(["--synthetic", "--synthetic-size", "32", "--num-classes", "4", "-a", "resnet18", "--epochs", "1",
                     "-b", "16", "--img-size", "32", "--output", tmp_path / "c", "--compile",
                     "--compile-mode", "max-autotune-no-cudagraphs"]) == 0
    assert modes == ["max-autotune-no-cudagraphs"]
    assert yaml.safe_load((tmp_path / "c" / "config.yaml").read_text())["compile-mode"] == "max-autotune-no-cudagraphs"


def _resolved(argv, workers_default=2):
    from ecanet import config
    args = config.parse_config(argv)
    return config.resolve(args, default_workers=workers_default, fresh_seed=7, timestamp="T")


def test_auto_share_is_resolved_once_and_the_configuration_is_read_only():
    """--decode gpu with --gpu-decode-share auto: the number replaces 'auto' in the resolved configuration
    (so config.yaml records it), which nothing can change afterwards."""
    from ecanet.config import config_to_yaml_dict
    for workers, share in ((15, 0.7), (4, 1.0)):
        cfg = _resolved(["DATA", "--decode", "gpu", "-j", str(workers)])
        assert cfg.gpu_decode_share == share and config_to_yaml_dict(cfg)["gpu-decode-share"] == share
    assert _resolved(["DATA", "--decode", "gpu", "-j", "15", "--gpu-decode-share", "0.4"]).gpu_decode_share == 0.4
    assert _resolved(["DATA", "-j", "15"]).gpu_decode_share == "auto"   # --decode cpu: nothing to resolve
    cfg = _resolved(["DATA"], workers_default=3)
    assert (cfg.workers, cfg.seed, cfg.arch, cfg.output) == (3, 7, "eca_resnet50", "runs/eca_resnet50-T")
    with pytest.raises(AttributeError, match="read-only"):
        cfg.seed = 1
    from ecanet import config
    resumed = config.resolve(config.parse_config(["DATA"]), default_workers=1, fresh_seed=7, timestamp="T",
                             resumed_seed=11)
    assert resumed.seed == 11   # a resumed run keeps its data order
    reseeded = config.resolve(config.parse_config(["DATA", "--seed", "5"]), default_workers=1, fresh_seed=7,
                              timestamp="T", resumed_seed=11)
    assert reseeded.seed == 5   # kept, so that the resume check refuses it (tests/test_fault_battery.py)


def test_a_resumed_runs_own_options_fill_in_and_are_checked_together():
    """Options left out come from the run's config.yaml; what they give with this start's options is checked
    as options are; sizes the run was started with are not refused again."""
    from ecanet import config
    from ecanet.errors import ConfigError

    def resumed(argv, recorded):
        return config.resolve(config.parse_config(["DATA", "--device", "cpu", *argv]), default_workers=1,
                              fresh_seed=7, timestamp="T", recorded=recorded)

    cfg = resumed(["--epochs", "9"], {"lr": 0.2, "epochs": 3, "batch-size": 64, "nesterov": True, "workers": 5})
    assert (cfg.lr, cfg.epochs, cfg.batch_size, cfg.nesterov, cfg.workers) == (0.2, 9, 64, True, 1)
    with pytest.raises(ConfigError, match="--sync-bn synchronises BatchNorm across GPUs"):
        resumed([], {"sync-bn": True})
    assert resumed([], {"img-size": 32, "val-resize": 28}).img_size == 32   # as the run was started
    # what the run started from stays in its config.yaml (the file itself is not read again)
    assert resumed([], {"weights": "w.pth", "use-ema": True}).weights == "w.pth"
    # another crop size keeps the run's crop ratio (a locked change, which main.py refuses without an override)
    assert resumed(["--img-size", "40"], {"img-size": 24, "val-resize": 28}).val_resize == 46   # 40 * 28 / 24
    with pytest.raises(ConfigError, match="--img-size 40 is larger than --val-resize 28"):
        resumed(["--img-size", "40", "--val-resize", "28"], {"img-size": 32, "val-resize": 28})
    # a checkpoint's recipe may give the resize: the options alone are not refused before it is read
    for argv in (["-e", "--resume", "x.pth"], ["--resume", "auto", "--output", "D"], ["--weights", "w.pth"]):
        config.validate(config.parse_config(["DATA", "--device", "cpu", "--img-size", "288", *argv]))
    assert resumed(["--img-size", "288"], {"img-size": 288, "val-resize": 330}).val_resize == 330


def test_help_answers_without_importing_torch():
    """`main.py --help` and `paras_flops.py --help` parse before anything imports torch."""
    for script in ("main.py", "paras_flops.py", "light_main.py"):
        code = (f"import runpy, sys; sys.argv = [{script!r}, '--help']\n"
                f"try:\n    runpy.run_path({script!r}, run_name='__main__')\n"
                f"except SystemExit:\n    pass\n"
                f"assert 'torch' not in sys.modules, {script!r}")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "usage:" in proc.stdout


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse prints the help and exits
        run_main(["--help"])
    assert exit_info.value.code == 0
    stdout = capsys.readouterr().out
    for option in ("--ksize", "--amp", "--channels-last", "--compile", "--resume", "--config", "--sync-bn",
                   "--save-every-steps", "--ema", "--label-smoothing", "--decode"):
        assert option in stdout


def test_cpu_habits_that_make_a_run_slow_are_named_once(tmp_path, caplog, monkeypatch):
    """--amp bf16 without native bf16, and --compile, on a CPU: one warning each, with the measured reason."""
    from ecanet import runtime
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: model)
    with caplog.at_level("WARNING", logger="ecanet"):
        assert run_main(["--synthetic", "--synthetic-size", "32", "--num-classes", "4", "-a", "resnet18",
                         "--epochs", "1", "-b", "16", "--img-size", "32", "--output", tmp_path / "w", "--device",
                         "cpu", "--amp", "bf16", "--compile"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum("--amp bf16 on a CPU" in w and "6m09s" in w for w in warnings) == 1, warnings
    assert sum("--compile on a CPU" in w for w in warnings) == 1, warnings


def test_train_log_starts_with_what_was_logged_before_the_run_directory(tmp_path):
    """What a run logs before its directory exists opens its train.log; afterwards the keeper holds nothing,
    even when a context that saved the root logger's handlers (tqdm's logging_redirect_tqdm) puts it back."""
    import logging
    from ecanet import runtime
    from ecanet.distributed import DistInfo
    root, log = logging.getLogger(), logging.getLogger("ecanet.test")
    saved_handlers, saved_level = list(root.handlers), root.level
    try:
        runtime.setup_logging(DistInfo())
        log.info("initialised from the file")
        handlers_before = list(root.handlers)
        run_log = runtime.add_run_log(tmp_path, DistInfo())
        log.info("epoch 1")
        root.handlers[:] = handlers_before   # what logging_redirect_tqdm does on leaving
        log.info("after the run")
        keepers = [h for h in root.handlers if type(h).__name__ == "_EarlyRecords"]
        assert keepers and all(not h.records for h in keepers)
        run_log.close()
        lines = (tmp_path / "train.log").read_text().splitlines()
        assert [line.rsplit(": ", 1)[1] for line in lines] == ["initialised from the file", "epoch 1"]
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_configuration_warnings_come_from_rank_0_only(capsys):
    """Every rank resolves the same options, so a configuration warning is said once (by rank 0), while other
    ranks still report their own warnings."""
    import logging
    from ecanet import runtime
    from ecanet.distributed import DistInfo
    root, config_log = logging.getLogger(), logging.getLogger(runtime.CONFIG_LOGGER)
    saved_handlers, saved_level, saved_config_level = list(root.handlers), root.level, config_log.level
    saved_configured = getattr(root, "_ecanet_configured", False)
    root._ecanet_configured = False   # so that setup_logging adds its stderr handler, which capsys sees
    try:
        for rank in (1, 0):
            runtime.setup_logging(DistInfo(rank=rank, world_size=2))
            config_log.warning("option warning from rank %d", rank)
            logging.getLogger("ecanet.data").warning("data warning from rank %d", rank)
        err = capsys.readouterr().err
        assert "option warning from rank 0" in err and "option warning from rank 1" not in err
        assert "data warning from rank 1" in err and "data warning from rank 0" in err
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        config_log.setLevel(saved_config_level)
        root._ecanet_configured = saved_configured


def test_light_main_resumes_a_run_of_another_network_without_naming_it(tmp_path):
    """A resumed run's network comes from its checkpoint: light_main.py's default network does not count as
    asking for another one (only an -a given on the command line does)."""
    from light_main import mobilenet_recipe
    out = tmp_path / "run"
    small = ["--synthetic", "--synthetic-size", "16", "--num-classes", "3", "-b", "8", "--img-size", "32",
             "--output", out]
    assert run_main([*small, "-a", "mobilenet_v2", "--epochs", "1"], defaults=mobilenet_recipe()) == 0
    assert run_main([*small, "--epochs", "2", "--resume", "auto"], defaults=mobilenet_recipe()) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["arch"] == "mobilenet_v2"
    assert [row["epoch"] for row in read_metrics(out / "metrics.jsonl") if row.get("event") == "epoch"] == [1, 2]


def test_resuming_a_runs_last_checkpoint_by_path_continues_in_its_folder(tmp_path, monkeypatch):
    """``--resume DIR/last.pth`` without --output goes on in DIR (a requeued job repeating the command continues
    from the newest checkpoint); a copy of it under another name starts a directory of its own, leaving DIR's
    last.pth as it is."""
    monkeypatch.chdir(tmp_path)   # where the default runs/ directory goes
    out = tmp_path / "run"
    small = ["--synthetic", "--synthetic-size", "16", "--num-classes", "3", "-b", "8", "--img-size", "32", "-a",
             "resnet18", "--seed", "3"]
    assert run_main([*small, "--epochs", "1", "--output", out]) == 0
    last = (out / "last.pth").read_bytes()
    (out / "after-epoch-1.pth").write_bytes(last)
    # (--action names the default directories apart: both runs may start within one second)
    assert run_main([*small, "--epochs", "2", "--resume", out / "after-epoch-1.pth", "--action", "copy"]) == 0
    assert (out / "last.pth").read_bytes() == last
    (elsewhere,) = (tmp_path / "runs").iterdir()
    assert torch.load(elsewhere / "last.pth", weights_only=True)["epoch"] == 2
    downloads = tmp_path / "downloads"   # a last.pth outside any run directory (no config.yaml beside it)
    downloads.mkdir()
    (downloads / "last.pth").write_bytes(last)
    assert run_main([*small, "--epochs", "2", "--resume", downloads / "last.pth", "--action", "downloaded"]) == 0
    assert sorted(p.name for p in downloads.iterdir()) == ["last.pth"] and len(list((tmp_path / "runs").iterdir())) == 2
    assert run_main([*small, "--epochs", "2", "--resume", out / "last.pth"]) == 0
    assert torch.load(out / "last.pth", weights_only=True)["epoch"] == 2
    assert [row["epoch"] for row in read_metrics(out / "metrics.jsonl") if row.get("event") == "epoch"] == [1, 2]


def test_an_evaluation_adds_no_record_to_a_run_directory_in_use(trained_run, image_folder, tmp_path, caplog):
    """-e --output DIR appends its record under DIR's lock: while a training run holds DIR, the evaluation's
    figures are logged but not written between that run's lines."""
    from ecanet.rundir import RunLock
    out = tmp_path / "busy"
    out.mkdir()
    evaluate = [image_folder, "-e", "--resume", trained_run / "last.pth", "--output", out, *SMALL_RUN]
    lock = RunLock(out).acquire()          # a training run holding the directory
    try:
        assert run_main(evaluate) == 0
    finally:
        lock.release()
    assert not (out / "metrics.jsonl").exists() and "is in use by a training run" in caplog.text
    assert run_main(evaluate) == 0
    assert len(read_metrics(out / "metrics.jsonl", "eval")) == 1
