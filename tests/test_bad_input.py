"""Bad input ends with one clear message naming the problem and the fix, exit code 2, no traceback, and
nothing already saved is lost; broken images are skipped and counted, too many of them stop the run."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from ecanet.errors import EXIT_USAGE
from ecanet.metrics import read_metrics
from imagefolder import make_image_folder
from conftest import SMALL_RUN, load_script, one_error_line, run_main, run_script


def _fails_cleanly(argv, capsys, *phrases, defaults=None, during_training=False) -> str:
    argv = [str(a) for a in argv]
    output = argv[argv.index("--output") + 1] if "--output" in argv else None
    existed = output is not None and Path(output).exists()
    assert run_main(argv, defaults) == EXIT_USAGE
    message = one_error_line(capsys.readouterr().err, *phrases)
    if output is not None and not existed and not during_training:
        assert not Path(output).exists(), "a run that fails its input checks must leave no directory behind"
    return message


@pytest.fixture
def dataset(tmp_path):
    return make_image_folder(tmp_path / "data", classes=2, train_per_class=8, val_per_class=3)


def test_missing_data_directory(tmp_path, capsys):
    _fails_cleanly([tmp_path / "nope", *SMALL_RUN], capsys, "does not exist", "train/ and val/")


@pytest.mark.parametrize("split", ["train", "val"])
def test_missing_split(dataset, capsys, split):
    shutil.rmtree(dataset / split)
    _fails_cleanly([dataset, *SMALL_RUN, "--output", dataset.parent / "run"], capsys, f"{split} does not exist", "one folder per class")


def test_split_without_class_folders(dataset, capsys):
    shutil.rmtree(dataset / "train")
    (dataset / "train").mkdir()
    _fails_cleanly([dataset, *SMALL_RUN, "--output", dataset.parent / "run"], capsys, "holds no class folders", "sub-folder")


def test_class_folders_without_images(dataset, capsys):
    for image in (dataset / "val").rglob("*.jpg"):
        image.unlink()
    _fails_cleanly([dataset, *SMALL_RUN, "--output", dataset.parent / "run"], capsys, "hold no images", "extension")


def test_train_and_val_with_different_classes(dataset, capsys):
    (dataset / "val" / "circle0").rename(dataset / "val" / "ellipse0")
    _fails_cleanly([dataset, *SMALL_RUN, "--output", dataset.parent / "run"], capsys, "different class folders", "only in train: ['circle0']",
                   "only in val: ['ellipse0']")


@pytest.mark.parametrize(("options", "phrases"), [
    (["--amp", "fp16"], ["--amp fp16 needs a CUDA GPU", "--amp bf16"]),
    (["-b", "0"], ["--batch-size must be at least 1, got 0"]),
    (["-a", "eca_resnet51"], ["unknown architecture 'eca_resnet51'", "eca_resnet50", "mobilenet_v2"]),
    (["-a", "resnet50", "--ksize", "3557"], ["has no ECA layers"]),
    (["-a", "eca_resnet50", "--ksize", "35"], ["--ksize '35'", "4 stages"]),
    (["--pretrained"], ["--weights PATH"]),
    (["-e"], ["-e --resume PATH"]),
    (["--resume", "auto"], ["--output"]),
    (["--decode", "gpu"], ["needs a CUDA GPU"]),
    (["--gpu-decode-share", "1.5"], ["--gpu-decode-share must be a fraction between 0 and 1"]),
    (["--gpu-decode-threads", "0"], ["--gpu-decode-threads must be at least 1"]),
    (["--compile-mode", "reduce-overhead"], ["--compile-mode reduce-overhead applies to torch.compile",
                                              "add --compile"]),
    (["--device", "cpu", "--eca-impl", "fused"], ["--eca-impl fused insists on the fused ECA kernels",
                                                  "not the CPU", "--eca-impl auto"]),
    (["--seed", "99999999999999999999"], ["--seed must be in [0, 4294967295], got 99999999999999999999"]),
    (["--seed", "-1"], ["--seed must be in [0, 4294967295], got -1"]),
    (["--std", "nan", "nan", "nan"], ["--std must be finite numbers", "per-channel std"]),
    (["--mean", "inf", "0", "0"], ["--mean must be finite numbers"]),
    (["--world-size", "0"], ["--world-size must be at least 1, got 0"]),
    (["--gpu", "3", "--device", "cpu"], ["--gpu 3 picks a CUDA GPU, and --device cpu runs on the CPU"]),
    (["--sched", "cosine", "--min-lr", "1.0"], ["--min-lr 1 is not below the learning rate",
                                                 "Pass a smaller --min-lr"]),
    (["-b", "1"], ["--batch-size 1 with --img-size 32 leaves the last stage's BatchNorm one value per channel",
                   "-b 2 or more, or --img-size 33 or more"]),
])
def test_impossible_options(dataset, capsys, options, phrases):
    _fails_cleanly([dataset, *SMALL_RUN, *options], capsys, *phrases)


def test_an_output_that_is_a_file_is_refused_and_left_alone(dataset, tmp_path, capsys):
    out = tmp_path / "notes.txt"
    out.write_text("my notes")
    _fails_cleanly([dataset, *SMALL_RUN, "--output", out], capsys, f"--output {out} is a file")
    assert out.read_text() == "my notes"


def test_unknown_config_key(dataset, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("epoch: 3\n")
    _fails_cleanly([dataset, "--config", tmp_path / "c.yaml"], capsys, "unknown key 'epoch'", "'epochs'")


def test_a_config_list_where_text_is_taken_and_a_config_folder_say_what_to_write(dataset, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("ksize: [3, 5, 5, 7]\n")
    _fails_cleanly([dataset, "--config", tmp_path / "c.yaml"], capsys, "must be text", "quoted: ksize: '3557'")
    _fails_cleanly([dataset, "--config", tmp_path], capsys, f"config file {tmp_path} is a folder, not a file")


def test_evaluating_the_newest_checkpoint_of_a_folder_without_one_says_what_to_pass(dataset, tmp_path, capsys):
    _fails_cleanly([dataset, *SMALL_RUN, "-e", "--resume", "auto", "--output", tmp_path], capsys,
                   f"no checkpoint in {tmp_path} to evaluate", "Pass the checkpoint's path to --resume")


@pytest.fixture
def finished_run(dataset, tmp_path):
    out = tmp_path / "run"
    assert run_main([dataset, *SMALL_RUN, "-a", "resnet18", "--epochs", "1", "--output", out]) == 0
    return out


def _snapshot(run_dir):
    return {p.name: p.read_bytes() for p in sorted(run_dir.glob("*.pth"))}


def test_checkpoint_of_another_architecture(dataset, finished_run, capsys):
    before = _snapshot(finished_run)
    _fails_cleanly([dataset, *SMALL_RUN, "-a", "eca_resnet18", "--epochs", "2", "--output", finished_run,
                    "--resume", "auto"], capsys, "checkpoint of resnet18", "-a resnet18")
    _fails_cleanly([dataset, *SMALL_RUN, "-a", "resnet50", "-e", "--resume", finished_run / "last.pth"],
                   capsys, "holds resnet18", "not resnet50")
    assert _snapshot(finished_run) == before


def test_kernel_sizes_are_checked_against_the_checkpoints_network(dataset, finished_run, capsys):
    """Without -a the network is the checkpoint's, known only once it is read: --ksize is checked against it
    then, not against the default network."""
    before = _snapshot(finished_run)
    _fails_cleanly([dataset, *SMALL_RUN, "--weights", finished_run / "last.pth", "--ksize", "3", "--epochs", "1",
                    "--output", finished_run.parent / "new"], capsys,
                   "--ksize sets ECA kernel sizes, but the checkpoint gives 'resnet18'", "Drop --ksize")
    _fails_cleanly([dataset, *SMALL_RUN, "--resume", "auto", "--output", finished_run, "--ksize", "3", "--epochs",
                    "2"], capsys, "the checkpoint gives 'resnet18'", during_training=True)
    assert _snapshot(finished_run) == before
    # --resume auto in a directory without a checkpoint yet (a job's first start): the default network's check
    new = finished_run.parent / "first-start"
    _fails_cleanly([dataset, *SMALL_RUN, "--resume", "auto", "--output", new, "--ksize", "2"], capsys,
                   "--ksize '2': ECA kernel sizes must be positive odd integers")
    _fails_cleanly([dataset, *SMALL_RUN, "--resume", "auto", "--output", new, "--ksize", "35"], capsys,
                   "--ksize '35' does not fit eca_resnet50 (the default network)")
    # -e reads the sizes off the file (the official command passes --ksize anyway): checked for being sizes at all
    _fails_cleanly([dataset, *SMALL_RUN, "-e", "--resume", finished_run / "last.pth", "--ksize", "2"], capsys,
                   "--ksize '2': ECA kernel sizes must be positive odd integers")


def test_an_eca_config_file_serves_its_baseline_without_its_kernel_sizes(tmp_path, caplog):
    """configs/eca_resnet18.yaml with -a resnet18: the recipe applies and the file's ksize, which has no
    layers to go to, is left out (with a line in the log); --ksize on the command line is still refused."""
    import logging
    from ecanet.config import parse_config, resolve, validate
    config = Path(__file__).resolve().parents[1] / "configs" / "eca_resnet18.yaml"
    args = parse_config(["--synthetic", "--config", str(config), "-a", "resnet18"])
    validate(args)
    with caplog.at_level(logging.INFO, logger="ecanet"):   # resolve logs it: logging is set up by then
        cfg = resolve(args, default_workers=0, fresh_seed=0, timestamp="t")
    assert cfg.ksize is None and "ksize" not in args.explicit and "ksize" in config.read_text()
    assert "ksize" in caplog.text and "left out: resnet18 has no ECA layers" in caplog.text
    from ecanet.errors import ConfigError
    with pytest.raises(ConfigError, match="has no ECA layers"):
        validate(parse_config(["--synthetic", "--config", str(config), "-a", "resnet18", "--ksize", "3"]))


def test_new_run_in_a_directory_with_checkpoints_is_refused(dataset, finished_run, capsys):
    before = _snapshot(finished_run)
    _fails_cleanly([dataset, *SMALL_RUN, "-a", "resnet18", "--epochs", "1", "--output", finished_run], capsys,
                   "already holds best.pth, last.pth", "Continue it with --resume auto")
    assert _snapshot(finished_run) == before


def test_a_directory_holding_weights_alone_is_not_advised_to_resume(dataset, finished_run, tmp_path, capsys):
    """best.pth without last.pth: --resume auto has nothing to continue, so no message advises it."""
    import shutil
    weights_only = tmp_path / "weights-only"
    weights_only.mkdir()
    shutil.copy(finished_run / "best.pth", weights_only)
    for resume in ([], ["--resume", "auto"], ["--resume", finished_run / "last.pth"]):
        message = _fails_cleanly([dataset, *SMALL_RUN, "-a", "resnet18", "--epochs", "2", "--output", weights_only,
                                  *resume], capsys, "best.pth")
        assert "pass --resume auto" not in message and "Continue it with --resume auto" not in message


def test_not_a_checkpoint_and_truncated_checkpoint(dataset, finished_run, tmp_path, capsys):
    for name, text in (("notes.pth", "hello"), ("README.md", "# a heading")):   # no advice on unpickling them
        (tmp_path / name).write_text(text)
        _fails_cleanly([dataset, *SMALL_RUN, "-e", "--resume", tmp_path / name], capsys,
                       "is not a PyTorch checkpoint", f"starts with {text[:4].encode()!r}")
    data = (finished_run / "last.pth").read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 3])
    message = _fails_cleanly([dataset, *SMALL_RUN, "-a", "resnet18", "--resume", cut, "--output", tmp_path / "r2"],
                             capsys, "not a readable PyTorch checkpoint (torch.load: ", "truncated")
    assert "). It may be truncated" in message, message   # torch's reason quoted whole, or cut at a word and marked
    _fails_cleanly([dataset, *SMALL_RUN, "-e", "--resume", tmp_path / "missing.pth"], capsys, "does not exist")


def test_weights_only_file_cannot_be_resumed(dataset, finished_run, tmp_path, capsys):
    bare = tmp_path / "bare.pth"
    torch.save(torch.load(finished_run / "last.pth", weights_only=True)["state_dict"], bare)
    _fails_cleanly([dataset, *SMALL_RUN, "-a", "resnet18", "--resume", bare, "--output", tmp_path / "r3"],
                   capsys, "no ecanet training state", "--weights")


@pytest.mark.slow
def test_real_process_exit_code_and_no_traceback(tmp_path):
    proc = run_script("main.py", [tmp_path / "missing", "-a", "eca_resnet50"])
    assert proc.returncode == EXIT_USAGE
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error:")
    assert "does not exist" in proc.stderr
    debug = run_script("main.py", [tmp_path / "missing", "--debug"])
    assert debug.returncode == EXIT_USAGE and "Traceback" in debug.stderr  # --debug shows where
    (tmp_path / "debug.yaml").write_text("debug: true\n")
    from_config = run_script("main.py", [tmp_path / "missing", "--config", tmp_path / "debug.yaml"])
    assert from_config.returncode == EXIT_USAGE and "Traceback" in from_config.stderr


def test_tracebacks_are_asked_for_by_debug_on_the_command_line_or_in_the_config_file(tmp_path):
    from ecanet.cli import debug_requested
    (tmp_path / "on.yaml").write_text("epochs: 3\ndebug: true\n")
    (tmp_path / "off.yaml").write_text("debug: false\n")
    (tmp_path / "broken.yaml").write_text("debug: [true\n")
    assert debug_requested(["data", "--debug"])
    assert debug_requested(["data", "--config", str(tmp_path / "on.yaml")])
    assert debug_requested(["data", f"--config={tmp_path / 'on.yaml'}"])
    for argv in (["data"], ["--config", str(tmp_path / "off.yaml")], ["--config", str(tmp_path / "broken.yaml")],
                 ["--config", str(tmp_path / "missing.yaml")], ["data", "--config"]):
        assert not debug_requested(argv), argv


def _det_main_parser():
    from ecanet.detection.options import build_parser
    return build_parser()


def _paras_flops_parser():
    import paras_flops
    return paras_flops.build_parser()


def _main_parser():
    from ecanet.config import build_parser
    return build_parser()


@pytest.mark.parametrize("build", [_main_parser, _det_main_parser, _paras_flops_parser])
def test_debug_is_seen_under_every_spelling_argparse_takes_for_it(build, capsys):
    """argparse takes a prefix of an option that no other option shares: debug_requested sees --debug in
    exactly the spellings each command's parser reads as --debug (so '--de', shared with --device, is not)."""
    from ecanet.cli import debug_requested
    for length in range(3, len("--debug") + 1):
        spelling = "--debug"[:length]
        try:
            parsed, rest = build().parse_known_args([spelling])
            taken = parsed.debug is True and not rest
        except SystemExit:   # ambiguous: argparse refuses it
            taken = False
        capsys.readouterr()
        assert debug_requested(["data", spelling]) == taken, spelling
    assert not debug_requested(["data", "--", "--debug"])   # after '--', an argument, not an option


def test_the_command_lines_parser_takes_argparses_arguments():
    import argparse
    import inspect
    from ecanet.config import ArgumentParser
    assert inspect.signature(ArgumentParser) == inspect.signature(argparse.ArgumentParser)
    assert issubclass(ArgumentParser, argparse.ArgumentParser)


def _det_main(argv):
    import det_main
    return det_main.main(argv)


def _paras_flops(argv):
    import paras_flops
    return paras_flops.main(argv)


@pytest.mark.parametrize(("command", "prog", "argv", "phrase"), [
    (_det_main, "det_main.py", ["data", "--nope"], "unrecognized arguments: --nope"),
    (_det_main, "det_main.py", ["data", "--lr-steps"], "argument --lr-steps: expected at least one argument"),
    (_det_main, "det_main.py", ["data", "--detector", "yolo"], "argument --detector: invalid choice: 'yolo'"),
    (_paras_flops, "paras_flops.py", ["--nope"], "unrecognized arguments: --nope"),
    (_paras_flops, "paras_flops.py", ["--img-size"], "argument --img-size: expected one argument"),
    (_paras_flops, "paras_flops.py", ["--img-size", "big"], "argument --img-size: invalid int value: 'big'"),
])
def test_a_parse_error_is_one_paragraph_without_the_usage_block(command, prog, argv, phrase, capsys):
    with pytest.raises(SystemExit) as exit_info:
        command(argv)
    assert exit_info.value.code == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"{prog}: error: {phrase}"), captured.err
    assert captured.err.endswith(f". See '{prog} --help' for the options.\n")
    assert len(captured.err.splitlines()) == 1 and "usage:" not in captured.err


@pytest.mark.parametrize(("argv", "phrases"), [
    (["--detector", "mask_rcnn_eca_resnet50", "--all-detectors"], ["--all-detectors all six; give one of them"]),
    (["--detector", "mask_rcnn_eca_resnet50", "-a", "resnet50"], ["leave out -a/--arch"]),
    (["--all", "-a", "resnet50"], ["--all counts every network as released", "leave out -a/--arch and --ksize"]),
    (["--json", "-", "--markdown"], ["give --json a file"]),
    (["--img-size", "8"], ["--img-size must be at least 32", "got 8", "Pass --img-size 32 or more"]),
    (["--num-classes", "0"], ["--num-classes must be at least 1, got 0", "Pass the classifier's number"]),
])
def test_paras_flops_refuses_options_in_one_paragraph_with_the_fix(argv, phrases, tmp_path, capsys):
    out = tmp_path / "costs.json"
    argv = [*argv, "--json", str(out)] if "--json" not in argv else argv
    assert _paras_flops(argv) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err and "usage:" not in captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    assert not out.exists()


def test_paras_flops_debug_shows_the_traceback(capsys, caplog):
    from ecanet.errors import ConfigError
    assert _paras_flops(["--num-classes", "0"]) == EXIT_USAGE
    assert not [r for r in caplog.records if r.exc_info]
    assert _paras_flops(["--num-classes", "0", "--deb"]) == EXIT_USAGE
    assert [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], ConfigError)]
    assert "--num-classes must be at least 1" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ broken images

def _break(path, how):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncate" else b"not an image at all")


def _corrupt_dataset(root, bad: int):
    data = make_image_folder(root, classes=4, train_per_class=60, val_per_class=2, size=24)
    images = sorted((data / "train").rglob("*.jpg"))
    for i, path in enumerate(images[7: 7 + bad]):
        _break(path, "truncate" if i % 2 else "garbage")
    return data, images[7: 7 + bad]


def test_a_few_corrupt_jpegs_are_skipped_and_counted(tmp_path, caplog):
    data, broken = _corrupt_dataset(tmp_path / "d", bad=2)  # 2 of 240 = 0.8 %
    out = tmp_path / "run"
    assert run_main([data, *SMALL_RUN, "-b", "16", "-a", "resnet18", "--epochs", "1", "--output", out]) == 0
    record = read_metrics(out / "metrics.jsonl")[0]
    assert record["skipped_images"] == 2
    for path in broken:
        assert str(path) in caplog.text
    assert "2 unreadable images skipped" in caplog.text


def test_more_than_one_percent_corrupt_stops_the_run(tmp_path, capsys):
    data, _ = _corrupt_dataset(tmp_path / "d", bad=5)  # 5 of 240 > 1 %
    out = tmp_path / "run"
    message = _fails_cleanly([data, *SMALL_RUN, "-b", "16", "-a", "resnet18", "--epochs", "1", "--output", out],
                             capsys, "more than 1%", "unreadable", during_training=True)
    assert "Fix the broken files, or remove them (resuming then needs --resume-override" in message
    assert not list(out.glob("*.pth"))


@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_cuda_graph_compile_modes_are_refused_with_several_processes(dataset, capsys, monkeypatch, mode):
    """DDP with a CUDA-graph compile mode is refused before any process group or file exists (torchrun's
    variables of rank 0 of 2; nothing is launched)."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    _fails_cleanly([dataset, *SMALL_RUN, "--compile", "--compile-mode", mode, "--output", dataset.parent / "run"],
                   capsys, f"--compile-mode {mode} (CUDA graphs) is not supported with several processes",
                   "--compile-mode default")
    assert not (dataset.parent / "run").exists()


def test_the_jpeg_folder_generator_refuses_counts_below_one(tmp_path, capsys):
    script = load_script("make_jpeg_folder")
    out = tmp_path / "jpegs"
    for option in ("--classes", "--train-per-class", "--val-per-class", "--workers"):
        with pytest.raises(SystemExit) as exit_info:
            script.main([str(out), option, "0"])
        assert exit_info.value.code == EXIT_USAGE
        assert f"{option} takes a whole number of at least 1, got 0" in capsys.readouterr().err
    assert not out.exists()
    assert script.main([str(out), "--classes", "2", "--train-per-class", "1", "--val-per-class", "1",
                        "--workers", "1", "--size-scale", "0.1"]) == 0
    assert len(list(out.rglob("*.jpg"))) == 4


def test_hidden_folders_and_files_are_not_data_and_an_empty_class_folder_is_named(dataset, capsys):
    """A notebook's .ipynb_checkpoints in both splits would otherwise become class 0 and shift every label;
    macOS's '._x.png' files are metadata, not images; a class folder with no image is named as such."""
    from PIL import Image
    from ecanet.data.folders import build_image_folder
    classes = build_image_folder(dataset, "train").classes
    for split in ("train", "val"):
        hidden = dataset / split / ".ipynb_checkpoints"
        hidden.mkdir()
        Image.new("RGB", (8, 8)).save(hidden / "x.png")
        (dataset / split / classes[0] / "._meta.png").write_bytes(b"\0\5\26\7 not an image")
        (dataset / split / classes[0] / ".AppleDouble").mkdir()
        Image.new("RGB", (8, 8)).save(dataset / split / classes[0] / ".AppleDouble" / "y.png")
    train = build_image_folder(dataset, "train")
    assert train.classes == classes
    assert not any("/." in "/" + str(Path(path).relative_to(dataset)) for path, _ in train.samples)
    for image in (dataset / "val" / classes[1]).iterdir():
        image.unlink()
    _fails_cleanly([dataset, *SMALL_RUN], capsys, f"the class folder(s) {classes[1]} hold no images",
                   "or remove them from both train/ and val/")


def test_sixteen_bit_greyscale_keeps_its_levels():
    """A 16-bit PNG opens in a 16-bit mode, which PIL's convert('RGB') clips to white above 255: the loader
    keeps each value's high byte."""
    import io
    import numpy as np
    from PIL import Image
    from ecanet.data.folders import to_rgb
    ramp = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")
    image = Image.open(io.BytesIO(buffer.getvalue()))
    assert image.mode.startswith("I")
    rgb = np.asarray(to_rgb(image))
    assert rgb.shape == (64, 64, 3) and np.array_equal(rgb[..., 0], (ramp >> 8).astype(np.uint8))
    assert np.array_equal(np.asarray(to_rgb(Image.fromarray(np.full((4, 4), 200, np.uint8)))), np.full((4, 4, 3), 200))
