"""Command line and config files: the official command, YAML keys = long options, CLI overrides, errors."""
from __future__ import annotations

import re

import pytest
import yaml

from ecanet.config import build_parser, config_to_yaml_dict, load_config_file, parse_config, write_config
from ecanet.errors import ConfigError
from conftest import ROOT

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_the_official_command_line_parses():
    # python main.py DATA -a eca_resnet50 --ksize 3557 [-b 256] [--lr 0.1] [--epochs 100] [-j 16]
    #                [--resume PATH] [-e] [--seed N] [-p N]   (official README / main.py)
    args = parse_config(["-a", "eca_resnet50", "--ksize", "3557", "./datasets/ILSVRC2012/images", "-b", "256",
                         "--lr", "0.1", "--epochs", "100", "-j", "16", "--resume", "ckpt.pth.tar", "-e",
                         "--seed", "7", "-p", "10"])
    assert (args.data, args.arch, args.ksize, args.batch_size, args.lr, args.epochs, args.workers) == \
        ("./datasets/ILSVRC2012/images", "eca_resnet50", "3557", 256, 0.1, 100, 16)
    assert (args.resume, args.evaluate, args.seed, args.print_freq) == ("ckpt.pth.tar", True, 7, 10)
    assert parse_config(["--learning-rate", "0.2", "--wd", "5e-5", "x"]).weight_decay == 5e-5


def test_paper_defaults():
    args = parse_config(["DATA"])
    assert (args.batch_size, args.lr, args.lr_base_batch, args.momentum, args.weight_decay, args.epochs) == \
        (256, 0.1, 256, 0.9, 1e-4, 100)
    assert (args.sched, args.lr_decay_epochs, args.lr_decay_rate, args.amp) == ("step", 30, 0.1, "off")
    assert (args.img_size, args.val_resize, args.augment) == (224, 256, "rrc")


def test_config_file_and_command_line_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("arch: eca_resnet18\nbatch-size: 32\nlr: 0.05\nweight_decay: 5e-5\nchannels-last: true\n"
                   "ksize: 3577\nmean: [0.5, 0.5, 0.5]\ndata: /somewhere\n")
    args = parse_config(["--config", str(cfg), "-b", "64"])
    assert (args.arch, args.batch_size, args.lr, args.weight_decay) == ("eca_resnet18", 64, 0.05, 5e-5)
    assert args.channels_last is True and args.ksize == "3577" and args.mean == [0.5, 0.5, 0.5]
    assert args.data == "/somewhere"
    assert parse_config(["--config", str(cfg), "/elsewhere"]).data == "/elsewhere"
    # a switch a config file turns on, the command line turns off
    modern = ROOT / "configs" / "eca_resnet50_modern.yaml"
    off = parse_config(["DATA", "--config", str(modern), "--no-compile", "--no-ema", "--no-channels-last"])
    assert (off.compile, off.ema, off.channels_last) == (False, False, False)
    assert {"compile", "ema", "channels_last"} <= off.explicit


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("batch-sise: 32\n")
    with pytest.raises(ConfigError, match=r"unknown key 'batch-sise'.*'batch-size'"):
        parse_config(["--config", str(cfg)])


@pytest.mark.parametrize(("text", "key"), [("lr: fast\n", "lr"), ("epochs: 1.5\n", "epochs"),
                                           ("channels-last: 1\n", "channels-last"), ("amp: fp8\n", "amp"),
                                           ("batch-size: [1, 2]\n", "batch-size"), ("mean: 0.5\n", "mean")])
def test_wrong_types_are_named(tmp_path, text, key):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=f"^config file {re.escape(str(cfg))}: config key '{key}'"):
        parse_config(["--config", str(cfg)])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        parse_config(["--config", str(tmp_path / "none.yaml")])
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="flat mapping"):
        parse_config(["--config", str(tmp_path / "list.yaml")])


def test_resolved_config_round_trips(tmp_path):
    args = parse_config(["DATA", "-a", "eca_resnet50", "--ksize", "3557", "--amp", "bf16", "--ema"])
    write_config(args, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["batch-size"] == 256 and saved["amp"] == "bf16" and "learning-rate" not in saved
    again = parse_config(["--config", str(tmp_path / "config.yaml")])
    assert config_to_yaml_dict(again) == config_to_yaml_dict(args)


def test_a_negatable_switch_is_one_key(tmp_path):
    """--region-decode / --no-region-decode is saved and read as `region-decode: false`; the negative name
    is not a key (it would read as the opposite of what it says)."""
    args = parse_config(["DATA", "--no-region-decode"])
    write_config(args, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["region-decode"] is False
    assert parse_config(["--config", str(tmp_path / "config.yaml")]).region_decode is False
    (tmp_path / "bad.yaml").write_text("no-region-decode: true\n")
    with pytest.raises(ConfigError, match="no-region-decode"):
        load_config_file(tmp_path / "bad.yaml", build_parser())


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_is_valid(path):
    values = load_config_file(path, build_parser())
    assert values, path
    text = path.read_text()
    assert "#" in text  # every recipe says where its values come from


def test_light_main_has_the_mobilenet_recipe():
    from light_main import mobilenet_recipe
    MOBILENET_RECIPE = mobilenet_recipe()
    args = parse_config(["DATA"], defaults=MOBILENET_RECIPE)
    assert (args.arch, args.global_batch_size, args.lr, args.lr_base_batch, args.weight_decay, args.epochs) == \
        ("eca_mobilenet_v2", 96, 0.045, 96, 4e-5, 400)
    assert (args.sched, args.lr_decay_epochs, args.lr_decay_rate) == ("step", 1, 0.98)
    assert parse_config(["DATA", "--lr", "0.09"], defaults=MOBILENET_RECIPE).lr == 0.09
    assert parse_config(["DATA", "-a", "mobilenet_v2"], defaults=MOBILENET_RECIPE).arch == "mobilenet_v2"  # baseline
    with pytest.raises(ConfigError, match="light_main.py.s defaults, the recipe of eca_mobilenet_v2, and -a is "
                                          "eca_resnet18, not a MobileNetV2.*or main.py"):
        parse_config(["DATA", "-a", "eca_resnet18"], defaults=MOBILENET_RECIPE, prog="light_main.py")
    assert parse_config(["DATA", "-e", "-a", "eca_resnet18"], defaults=MOBILENET_RECIPE).evaluate   # no training
    recipe = ROOT / "configs" / "eca_resnet18.yaml"   # a recipe of its own: the defaults do not apply
    assert parse_config(["DATA", "--config", str(recipe)], defaults=MOBILENET_RECIPE).arch == "eca_resnet18"
    # but -a of another family than the file's network trains with the file's recipe: refused
    for defaults in (MOBILENET_RECIPE, None):   # light_main.py or main.py: the file is the recipe
        with pytest.raises(ConfigError, match="from config file .*eca_mobilenet_v2.yaml, the recipe of "
                                              "eca_mobilenet_v2, and -a is eca_resnet18, not a MobileNetV2"):
            parse_config(["DATA", "--config", str(ROOT / "configs" / "eca_mobilenet_v2.yaml"), "-a", "eca_resnet18"],
                         defaults=defaults, prog="light_main.py")
    # a ResNet recipe for another ResNet is fine
    assert parse_config(["DATA", "--config", str(recipe), "-a", "eca_resnet50"]).arch == "eca_resnet50"


def test_gpu_decode_share_takes_a_number_or_auto(tmp_path, capsys):
    assert parse_config(["DATA"]).gpu_decode_share == "auto"
    assert parse_config(["DATA", "--gpu-decode-share", "0.25"]).gpu_decode_share == 0.25
    assert parse_config(["DATA", "--gpu-decode-share", "AUTO"]).gpu_decode_share == "auto"
    for value in ("auto", "0.6", "1"):
        (tmp_path / "c.yaml").write_text(f"gpu-decode-share: {value}\n")
        assert parse_config(["--config", str(tmp_path / "c.yaml")]).gpu_decode_share == \
            ("auto" if value == "auto" else float(value))
    (tmp_path / "c.yaml").write_text("gpu-decode-share: most\n")
    with pytest.raises(ConfigError, match="'gpu-decode-share' must be a number or 'auto'"):
        parse_config(["--config", str(tmp_path / "c.yaml")])
    with pytest.raises(SystemExit) as exit_info:
        parse_config(["DATA", "--gpu-decode-share", "most"])
    assert exit_info.value.code == 2 and "invalid number or 'auto' value: 'most'" in capsys.readouterr().err
    # a saved run's config.yaml keeps 'auto' and reads back
    write_config(parse_config(["DATA"]), tmp_path / "config.yaml")
    assert parse_config(["--config", str(tmp_path / "config.yaml")]).gpu_decode_share == "auto"


def test_an_empty_value_is_refused_unless_the_option_may_be_unset(tmp_path):
    (tmp_path / "c.yaml").write_text("gpu-decode-share: null\nseed: null\n")
    with pytest.raises(ConfigError, match="'gpu-decode-share' is empty .null.; give it a value.*default .auto."):
        parse_config(["--config", str(tmp_path / "c.yaml")])
    (tmp_path / "c.yaml").write_text("seed: null\narch: null\n")   # options whose default is 'unset'
    args = parse_config(["--config", str(tmp_path / "c.yaml")])
    assert args.seed is None and args.arch is None


@pytest.mark.parametrize(("argv", "val_resize"), [
    ([], 256), (["--img-size", "224"], 256), (["--img-size", "32"], 36), (["--img-size", "320"], 365),
    (["--img-size", "32", "--val-resize", "40"], 40), (["--val-resize", "300"], 300)])
def test_a_crop_size_alone_keeps_the_papers_crop_ratio(argv, val_resize):
    """--img-size without --val-resize resizes by the paper's 224/256, as timm's crop_pct does, rather than
    center-cropping a small patch out of a 256-pixel resize."""
    from ecanet import config
    args = config.parse_config(["DATA", "--device", "cpu", *argv])
    config.validate(args)
    assert config.resolve(args, default_workers=1, fresh_seed=1, timestamp="T").val_resize == val_resize


def test_light_mains_default_network_does_not_judge_the_kernel_sizes_of_a_resumed_run():
    """light_main.py's default network is ECA-MobileNetV2, but a resumed run's is its checkpoint's (say
    ECA-ResNet-18, four stages): --ksize is checked against that once resolve knows it, not against the default."""
    from light_main import mobilenet_recipe
    from ecanet.config import validate
    validate(parse_config(["DATA", "--resume", "run/last.pth", "--ksize", "3555"], defaults=mobilenet_recipe(),
                          prog="light_main.py"))
    with pytest.raises(ConfigError, match="does not fit eca_mobilenet_v2"):   # -a given: checked at once
        validate(parse_config(["DATA", "-a", "eca_mobilenet_v2", "--ksize", "3555"], defaults=mobilenet_recipe(),
                              prog="light_main.py"))


def _batches(argv, world_size=1, recorded=None, config_text=None, tmp_path=None):
    """(per-process batch, global batch) that a run with ``argv`` (and a config file holding ``config_text``)
    uses on ``world_size`` processes."""
    from ecanet import config
    if config_text is not None:
        (tmp_path / "c.yaml").write_text(config_text)
        argv = [*argv, "--config", str(tmp_path / "c.yaml")]
    cfg = config.resolve(config.parse_config(["DATA", "--device", "cpu", *argv]), default_workers=1, fresh_seed=7,
                         timestamp="T", recorded=recorded, world_size=world_size)
    return cfg.batch_size, cfg.global_batch_size


def test_the_global_batch_is_divided_among_the_processes_and_b_replaces_it(tmp_path):
    """The paper's recipe is 256 images a step on any number of GPUs: --global-batch-size (default 256, and
    in every paper config) is split among the processes; -b sets the batch per process instead; the command
    line's setting overrides the config file's, a run's config.yaml fills in what neither gives."""
    assert _batches([]) == (256, 256)
    assert _batches([], world_size=8) == (32, 256)
    assert _batches(["--global-batch-size", "96"], world_size=4) == (24, 96)
    assert _batches(["-b", "64"], world_size=8) == (64, 512)         # per process
    paper = ROOT / "configs" / "eca_resnet50.yaml"
    assert _batches(["--config", str(paper)], world_size=8) == (32, 256)
    assert _batches(["--config", str(paper), "-b", "128"], world_size=8) == (128, 1024)
    assert _batches([], world_size=2, config_text="batch-size: 48\n", tmp_path=tmp_path) == (48, 96)
    assert _batches(["--global-batch-size", "64"], world_size=2, config_text="batch-size: 48\n",
                    tmp_path=tmp_path) == (32, 64)
    # a resumed run keeps its global batch on another number of processes (main.py then asks for
    # --resume-override: the data order changes); one whose config.yaml has no global batch keeps its -b
    assert _batches([], world_size=4, recorded={"batch-size": 32, "global-batch-size": 256}) == (64, 256)
    assert _batches([], world_size=4, recorded={"batch-size": 32}) == (32, 128)
    # a run's config.yaml given back as --config holds both: its global batch decides
    assert _batches([], world_size=4, config_text="batch-size: 32\nglobal-batch-size: 256\n",
                    tmp_path=tmp_path) == (64, 256)
    # evaluation has no optimizer step: -b stays the batch per process, whatever the number of processes
    from ecanet import config
    args = config.parse_config(["DATA", "--device", "cpu", "-e", "--resume", "x.pth"])
    cfg = config.resolve(args, default_workers=1, fresh_seed=7, timestamp="T", world_size=6)
    assert cfg.batch_size == 256


@pytest.mark.parametrize("argv, config_text, message", [
    (["--global-batch-size", "100"], None, "--global-batch-size 100 does not divide evenly among 8 processes. "
                                           "Pass a multiple of 8 \\(e.g. --global-batch-size 104\\), or -b N"),
    (["--global-batch-size", "4"], None, "--global-batch-size 4 does not divide evenly among 8 processes"),
    (["-b", "4", "--global-batch-size", "64"], None, "the command line gives both --batch-size"),
])
def test_a_batch_that_cannot_be_split_or_is_given_twice_is_refused(tmp_path, argv, config_text, message):
    from ecanet import config
    if config_text:
        (tmp_path / "c.yaml").write_text(config_text)
        argv = [*argv, "--config", str(tmp_path / "c.yaml")]
    args = config.parse_config(["DATA", "--device", "cpu", *argv])
    with pytest.raises(ConfigError, match=message):
        config.validate(args)
        config.resolve(args, default_workers=1, fresh_seed=7, timestamp="T", world_size=8)


def test_an_option_that_another_switches_off_is_named_in_a_warning(caplog):
    """--ema-decay without --ema (and the like) would otherwise be ignored in silence: the run believes EMA
    is on. Defaults, a config file's settings (a recipe, or a run's config.yaml, which records every option)
    and a resumed run's own options are not warned about."""
    import logging

    from ecanet import config
    with caplog.at_level(logging.WARNING, logger="ecanet.config"):
        _batches(["--ema-decay", "0.999", "--min-lr", "0.001", "--augment", "crop", "--min-crop-scale", "0.2"])
    assert [r.getMessage() for r in caplog.records] == [
        "--ema-decay 0.999 has no effect without --ema; it is ignored",
        "--min-lr 0.001 has no effect without --sched cosine; it is ignored",
        "--min-crop-scale 0.2 has no effect without --augment rrc; it is ignored"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ecanet.config"):
        _batches(["--ema", "--ema-decay", "0.999", "--sched", "cosine", "--min-lr", "0.001"])
        _batches(["--sched", "cosine", "--config", str(ROOT / "configs" / "eca_resnet50.yaml")])   # file's step options
    assert caplog.records == []
    assert config.unused_options({"decode": "cpu", "gpu_decode_threads": 2}, frozenset({"gpu_decode_threads"})) == [
        "--gpu-decode-threads 2 has no effect without --decode gpu; it is ignored"]


def test_data_beside_synthetic_is_named_in_a_warning(caplog):
    """--synthetic never reads DATA: a run given both says so, rather than training on random images while the
    user believes it reads the dataset."""
    import logging

    from ecanet import config
    with caplog.at_level(logging.WARNING, logger="ecanet.config"):
        config.resolve(config.parse_config(["DATA", "--synthetic", "--device", "cpu"]), default_workers=1,
                       fresh_seed=7, timestamp="T")
    assert [r.getMessage() for r in caplog.records] == [
        "DATA DATA is not read: --synthetic trains and evaluates on random images. Drop one of the two."]


def test_an_unknown_network_under_another_recipe_is_called_unknown():
    """light_main.py's recipe is MobileNetV2's: a misspelt -a is an unknown name, not a network of the wrong
    family."""
    from ecanet import config
    from light_main import mobilenet_recipe
    with pytest.raises(ConfigError, match="-a: unknown architecture 'eca_resnet5'; did you mean eca_resnet50"):
        config.parse_config(["DATA", "-a", "eca_resnet5"], defaults=mobilenet_recipe(), prog="light_main.py")
    args = config.parse_config(["DATA", "-a", "eca_mobilenet_v3"], defaults=mobilenet_recipe(), prog="light_main.py")
    with pytest.raises(ConfigError, match="-a: unknown architecture 'eca_mobilenet_v3'; did you mean "
                                          "eca_mobilenet_v2"):
        config.validate(args)
