"""Weights that carry their recipe: fine-tuning keeps a released file's ECA layers, evaluation preprocesses as
the run trained, a finished run is left alone, best.pth is the weights alone, and export folders, ONNX and
torch.hub read it all back."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

import ecanet
from ecanet import checkpoint as ckpt
from ecanet.errors import EXIT_OK, EXIT_USAGE, CheckpointError
from ecanet.metrics import MetricsLogger, read_metrics
from ecanet.recipe import RECIPE_FORMAT_VERSION, Recipe
from conftest import ROOT, SMALL_RUN, load_script, official_layouts, official_state_dict, run_main, run_script

# The image folder's images are 32x32: a run at 24-pixel crops of 28-pixel resizes records a recipe that
# differs from every default.
SMALL_PREPROCESSING = ["--img-size", "24", "--val-resize", "28", "--mean", "0.4", "0.5", "0.6",
                       "--std", "0.2", "0.25", "0.3"]


def _strict_json_lines(path):
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not JSON")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def _snapshot(folder):
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_run(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe") / "run"
    assert run_main([image_folder, *SMALL_RUN, "-a", "eca_resnet18", "--epochs", "1", "--ema",
                     "--ema-decay", "0.9", "--output", out, *SMALL_PREPROCESSING]) == EXIT_OK
    return out


# ------------------------------------------------------------------------- what a checkpoint records

def test_checkpoints_record_the_recipe_and_best_holds_the_weights_alone(small_run, image_folder):
    last = torch.load(small_run / "last.pth", weights_only=True)
    best = torch.load(small_run / "best.pth", weights_only=True)
    for obj in (last, best):
        recipe = Recipe.from_dict(obj["recipe"], "test")
        assert (recipe.arch, recipe.num_classes, recipe.img_size, recipe.val_resize) == ("eca_resnet18", 3, 24, 28)
        assert recipe.mean == (0.4, 0.5, 0.6) and recipe.std == (0.2, 0.25, 0.3)
        assert recipe.interpolation == "bilinear" and recipe.grayscale == "repeat"
        assert recipe.classes == tuple(sorted(p.name for p in (image_folder / "train").iterdir()))
        assert dict(recipe.eca_kernel_sizes) == obj["eca_kernel_sizes"] and recipe.ecanet_version == ecanet.__version__
    assert "optimizer" in last and "optimizer" not in best and "rng" not in best
    assert best["ema_state_dict"] is not None and best["ema_state_dict"].keys() == best["state_dict"].keys()
    assert (small_run / "best.pth").stat().st_size < 0.7 * (small_run / "last.pth").stat().st_size  # EMA: 2/3
    assert (small_run / "best.pth").stat().st_mode & 0o044 == 0o044   # readable by others, like any file
    assert ckpt.find_resume_checkpoint(small_run) == small_run / "last.pth"  # best.pth is no training state


def test_load_model_returns_the_recipe(small_run):
    model = ecanet.load_model(small_run / "best.pth")
    assert model.recipe.img_size == 24 and model.recipe.origin == "recorded"


def test_an_official_file_gets_the_paper_defaults(tmp_path):
    path = tmp_path / "eca_resnet18_k3577.pth.tar"
    torch.save({"state_dict": official_state_dict(official_layouts()["eca_resnet18_k3577"]), "arch": "eca_resnet18"},
               path)
    recipe = ckpt.read_recipe(path)
    assert (recipe.img_size, recipe.val_resize, recipe.mean) == (224, 256, (0.485, 0.456, 0.406))
    assert recipe.origin == "the paper's ImageNet defaults" and recipe.crop_ratio == 0.875


# ------------------------------------------------------------------ finding 1: --weights keeps the ECA layers

@pytest.fixture(scope="module")
def released_r18(tmp_path_factory):
    """A file in the official release's layout (DataParallel's module. keys, 1000 classes, k 3577)."""
    path = tmp_path_factory.mktemp("released") / "eca_resnet18_k3577.pth.tar"
    state = official_state_dict(official_layouts()["eca_resnet18_k3577"])
    torch.save({"epoch": 100, "arch": "eca_resnet18", "state_dict": state, "best_prec1": 70.9}, path)
    return path


def test_weights_from_a_released_file_keep_every_eca_layer(image_folder, released_r18, tmp_path, caplog):
    out = tmp_path / "ft"
    with caplog.at_level(logging.INFO):
        assert run_main([image_folder, *SMALL_RUN, "--weights", released_r18, "--epochs", "1", "--lr", "1e-9",
                         "--output", out]) == EXIT_OK
    text = caplog.text
    assert "not loading fc.weight, fc.bias: the file's classifier has 1000 classes, this model's 3" in text
    file_state = ckpt.read_weights(released_r18)[0]
    assert f"({len(file_state) - 2} of {len(file_state)} tensors)" in text
    # What the run started from is decided before its directory exists; its train.log still says so, first.
    run_log = (out / "train.log").read_text()
    for line in ("recipe: ", f"initialised from {released_r18}", "not loading fc.weight, fc.bias"):
        assert line in run_log and run_log.index(line) < run_log.index("epoch 1"), line
    saved = torch.load(out / "last.pth", weights_only=True)
    assert saved["arch"] == "eca_resnet18"   # -a left out: the file's network
    file_k = {k[: -len(".conv.weight")]: v.shape[-1] for k, v in file_state.items() if k.endswith("eca.conv.weight")}
    assert saved["eca_kernel_sizes"] == file_k and set(file_k.values()) == {3, 5, 7}
    for name in file_k:  # the ECA weights are the file's (lr 1e-9: one step moves them by nothing visible)
        assert torch.allclose(saved["state_dict"][name + ".conv.weight"], file_state[name + ".conv.weight"],
                              atol=1e-6)


def test_weights_of_other_classes_start_a_fresh_classifier(small_run, image_folder, tmp_path, caplog):
    """Fine-tuning onto as many classes of other names: the file's classifier scores other classes, so it is not
    loaded; onto the same classes it is."""
    import shutil
    data = Path(shutil.copytree(image_folder, tmp_path / "data"))
    first = sorted((data / "train").iterdir())[0].name
    for split in ("train", "val"):
        (data / split / first).rename(data / split / f"zz_{first}")
    with caplog.at_level(logging.INFO):
        assert run_main([data, *SMALL_RUN, "--weights", small_run / "best.pth", "--epochs", "1",
                         "--output", tmp_path / "other"]) == EXIT_OK
    assert f"not loading fc.weight, fc.bias: the file's classifier scores other classes (class 0 is {first!r}" \
        in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert run_main([image_folder, *SMALL_RUN, "--weights", small_run / "best.pth", "--epochs", "1",
                         "--output", tmp_path / "same"]) == EXIT_OK
    assert "not loading" not in caplog.text
    total = len(torch.load(small_run / "best.pth", weights_only=True)["state_dict"])
    assert f"({total} of {total} tensors)" in caplog.text


def test_light_main_trains_no_resnet_from_weights_but_evaluates_one(small_run, image_folder, tmp_path, capsys):
    """light_main.py's defaults are the MobileNetV2 recipe: the ResNet of --weights is not trained with it, and
    -e of a ResNet evaluates it (the program's default network is no request for another)."""
    from light_main import mobilenet_recipe
    from main import main
    light = {"defaults": mobilenet_recipe(), "prog": "light_main.py"}
    argv = [image_folder, *SMALL_RUN, "--weights", small_run / "best.pth", "--epochs", "1"]
    assert main(list(map(str, [*argv, "--output", tmp_path / "t"])), **light) == EXIT_USAGE
    assert "the network of --weights is eca_resnet18, not a MobileNetV2" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "t").exists()
    assert main(list(map(str, [image_folder, "-e", "--weights", small_run / "best.pth", "-j", "0",
                               "--output", tmp_path / "e"])), **light) == EXIT_OK
    # a config file that names no network leaves the MobileNetV2 recipe in force: still refused
    partial = tmp_path / "partial.yaml"
    partial.write_text("epochs: 1\n")
    assert main(list(map(str, [*argv, "--config", partial, "--output", tmp_path / "p"])), **light) == EXIT_USAGE


def test_headless_weights_start_a_fresh_classifier_and_are_not_evaluated(image_folder, tmp_path, caplog, capsys):
    path = tmp_path / "headless.pth"
    torch.save(ecanet.create_model("eca_resnet18", num_classes=0).state_dict(), path)
    with caplog.at_level(logging.INFO):
        assert run_main([image_folder, *SMALL_RUN, "--weights", path, "--epochs", "1", "--output",
                         tmp_path / "ft"]) == EXIT_OK
    assert "holds no classifier: this model's 3-class classifier starts fresh (fc.weight, fc.bias)" in caplog.text
    assert run_main([image_folder, "-e", "--weights", path, "-j", "0"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "without a classifier (headless weights)" in err and "Traceback" not in err


def test_synthetic_evaluation_does_not_compare_class_names(small_run):
    assert run_main(["--synthetic", "--synthetic-size", "16", "-e", "--resume", small_run / "best.pth",
                     "--num-classes", "3", "-b", "8", "-j", "0"]) == EXIT_OK


def test_evaluation_on_other_class_folders_is_refused(small_run, image_folder, tmp_path, capsys):
    """The same number of classes under other names: the labels would be scored against the wrong classes."""
    import shutil
    data = Path(shutil.copytree(image_folder, tmp_path / "data"))
    first = sorted((data / "val").iterdir())[0].name
    for split in ("train", "val"):
        (data / split / first).rename(data / split / f"zz_{first}")
    assert run_main([data, "-e", "--resume", small_run / "best.pth", "-j", "0"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "was trained on other classes than" in err and "class 0 is" in err and "Traceback" not in err


def test_a_ksize_that_disagrees_with_the_weights_is_refused(image_folder, released_r18, tmp_path, capsys):
    out = tmp_path / "ft"
    assert run_main([image_folder, *SMALL_RUN, "--weights", released_r18, "--ksize", "3555", "--epochs", "1",
                     "--output", out]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--ksize 3555" in err and "3577" in err and "Traceback" not in err
    assert not out.exists()


# ------------------------------------------------------- finding 2: -e preprocesses as the run trained

def test_evaluation_uses_the_recipe_unless_an_option_overrides_it(small_run, image_folder, tmp_path, caplog,
                                                                  capsys):
    trained = read_metrics(small_run / "metrics.jsonl")[-1]
    with caplog.at_level(logging.INFO):
        assert run_main([image_folder, "-e", "--resume", small_run / "last.pth", "-j", "0",
                         "--output", tmp_path / "e"]) == EXIT_OK
    assert "Resize(28) + CenterCrop(24)" in caplog.text
    evaluated = read_metrics(tmp_path / "e" / "metrics.jsonl", "eval")[0]
    assert evaluated["val_top1"] == pytest.approx(trained["val_top1"]) and evaluated["val_loss"] == pytest.approx(
        trained["val_loss"], rel=1e-5)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert run_main([image_folder, "-e", "--resume", small_run / "last.pth", "-j", "0", "--img-size", "32",
                         "--val-resize", "32", "--output", tmp_path / "e2"]) == EXIT_OK
    assert "overridden by --img-size, --val-resize" in caplog.text and "CenterCrop(32)" in caplog.text
    # a crop size alone keeps the recipe's crop ratio (24 of 28): 32 of floor(32 * 28 / 24) = 37
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert run_main([image_folder, "-e", "--resume", small_run / "last.pth", "-j", "0", "--img-size", "32",
                         "--output", tmp_path / "e3"]) == EXIT_OK
    assert "Resize(37) + CenterCrop(32)" in caplog.text
    # a crop larger than the resize asked for would be padded with black: refused
    assert run_main([image_folder, "-e", "--resume", small_run / "last.pth", "-j", "0", "--img-size", "32",
                     "--val-resize", "28"]) == EXIT_USAGE
    assert "--img-size 32 is larger than --val-resize 28" in capsys.readouterr().err


# --------------------------------------------------------------- finding 3: a finished run, strict JSON

def test_resuming_a_finished_run_does_nothing(small_run, image_folder, caplog):
    before = _snapshot(small_run)
    with caplog.at_level(logging.INFO):
        assert run_main([image_folder, *SMALL_RUN, "-a", "eca_resnet18", "--epochs", "1", "--output", small_run,
                         "--resume", "auto", *SMALL_PREPROCESSING]) == EXIT_OK
    assert "the run is complete (1 of 1 epochs); nothing to do" in caplog.text
    assert _snapshot(small_run) == before


def test_metrics_are_strict_json_and_say_why_a_value_is_null(small_run, tmp_path):
    for record in _strict_json_lines(small_run / "metrics.jsonl"):
        assert isinstance(record["event"], str)
    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.record("summary", {"final_top1": float("nan"), "best_top1": float("-inf"), "loss": 1.5})
    logger.close()
    (record,) = _strict_json_lines(tmp_path / "metrics.jsonl")
    assert record["final_top1"] is None and record["final_top1_null_because"] == "not a number"
    assert record["best_top1"] is None and record["best_top1_null_because"] == "negative infinite"
    assert record["loss"] == 1.5 and "loss_null_because" not in record


# ---------------------------------------------------------------------- sharing: export, ONNX, hub

def test_an_export_folder_loads_back_without_pickle(small_run, tmp_path, monkeypatch):
    model = ecanet.load_model(small_run / "best.pth")
    folder = ckpt.save_export(model, model.recipe, tmp_path / "export")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("an export folder must load without pickle"))
    again = ecanet.load_model(folder)
    assert again.recipe == model.recipe
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(CheckpointError, match="never overwrites"):
        ckpt.save_export(model, model.recipe, folder)


def test_the_export_command_writes_onnx_that_onnxruntime_agrees_with(small_run, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "onnx"
    # --format before the two paths (it takes one value); the recipe's 24 px
    proc = run_script("scripts/export.py", ["--format", "onnx", small_run / "best.pth", out])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "onnxruntime matches PyTorch" in proc.stderr
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "model.onnx"}
    import onnxruntime
    from ecanet.export import ONNX_TOLERANCE
    model = ecanet.load_model(out, eca_impl="plain")
    images = torch.randn(3, 3, 24, 24)   # a batch size other than the export's example: the batch is dynamic
    runner = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = torch.from_numpy(runner.run(["logits"], {"images": images.numpy()})[0])
    with torch.no_grad():
        assert (logits - model(images)).abs().max() < ONNX_TOLERANCE


def test_torch_hub_loads_a_file_or_an_export_folder(small_run, tmp_path):
    model = ecanet.load_model(small_run / "best.pth")
    folder = ckpt.save_export(model, model.recipe, tmp_path / "hub")
    for weights in (small_run / "best.pth", folder):
        hubbed = torch.hub.load(str(ROOT), "eca_resnet18", source="local", weights=str(weights))
        assert hubbed.recipe.img_size == 24 and not hubbed.training
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), hubbed.state_dict().values()))
    untrained = torch.hub.load(str(ROOT), "eca_resnet50", source="local", num_classes=7)
    assert untrained.fc.out_features == 7
    with pytest.raises(CheckpointError, match="holds eca_resnet18"):
        torch.hub.load(str(ROOT), "eca_resnet50", source="local", weights=str(folder))


def test_pretrained_says_where_the_weights_are():
    with pytest.raises(ValueError, match="downloads nothing.*ecanet.load_model"):
        ecanet.create_model("eca_resnet50", pretrained=True)
    zoo = (ROOT / "docs" / "model_zoo.md").read_text()
    for name in ("eca_resnet18_k3577", "eca_resnet34_k3357", "eca_resnet50_k3557", "eca_resnet101_k3357",
                 "eca_resnet152_k3357", "eca_mobilenetv2_k13"):
        assert zoo.count(name) >= 2, name   # the file in the table, and its evaluation command


# ------------------------------------------------------------------------------------------ bad input

def _fails_with(argv, capsys, *phrases):
    assert run_main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in err, err
    return err


def test_a_recipe_from_a_newer_format_is_refused(small_run, image_folder, tmp_path, capsys):
    obj = torch.load(small_run / "best.pth", weights_only=True)
    obj["recipe"]["format_version"] = RECIPE_FORMAT_VERSION + 1
    path = tmp_path / "future.pth"
    torch.save(obj, path)
    _fails_with([image_folder, "-e", "--resume", path, "-j", "0"], capsys, str(path), "newer than this ecanet",
                "Upgrade ecanet")


@pytest.mark.parametrize("damage", ["no config", "bad json", "no weights", "bad weights", "not an export"])
def test_a_damaged_export_folder_is_named_with_the_fix(small_run, image_folder, tmp_path, capsys, damage):
    model = ecanet.load_model(small_run / "best.pth")
    folder = ckpt.save_export(model, model.recipe, tmp_path / "export")
    if damage == "no config":
        (folder / "config.json").unlink()
    elif damage == "bad json":
        (folder / "config.json").write_text("{ not json")
    elif damage == "no weights":
        (folder / "model.safetensors").unlink()
    elif damage == "bad weights":
        (folder / "model.safetensors").write_bytes(b"\x00" * 100)
    else:
        (folder / "config.json").write_text(json.dumps({"something": "else"}))
    before = _snapshot(folder)
    _fails_with([image_folder, "-e", "--weights", folder, "-j", "0"], capsys, str(folder), "Export the checkpoint again")
    assert _snapshot(folder) == before


def test_unsupported_onnx_options_are_refused_before_anything_is_written(small_run, tmp_path, capsys):
    out = tmp_path / "onnx"
    proc = run_script("scripts/export.py", [small_run / "best.pth", out, "--format", "onnx", "--opset", "9"])
    assert proc.returncode == EXIT_USAGE and "--opset 9 is too old" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
    script = load_script("export")
    assert script.main([str(small_run / "best.pth"), str(out), "--format", "onnx", "--opset", "99"]) == EXIT_USAGE
    assert "--opset 99 is newer than this torch's ONNX exporter writes" in capsys.readouterr().err
    assert not out.exists()


def test_an_export_onto_a_file_is_refused_and_the_file_kept(small_run, tmp_path, capsys):
    out = tmp_path / "notes.md"
    out.write_text("my notes")
    assert load_script("export").main([str(small_run / "best.pth"), str(out)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{out} is a file; an export is a folder" in err and "Traceback" not in err
    assert out.read_text() == "my notes"


def test_onnx_without_its_packages_is_refused_before_anything_is_written(small_run, tmp_path, monkeypatch, capsys):
    import importlib.util
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime"
                        else real_find_spec(name, *a))
    script = load_script("export")
    out = tmp_path / "onnx"
    assert script.main([str(small_run / "best.pth"), str(out), "--format", "onnx"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "needs onnxruntime" in err and "pip install 'ecanet[export]'" in err and not out.exists()


def test_an_older_ecanet_checkpoint_gets_the_recipe_of_its_run(small_run, image_folder, tmp_path, caplog):
    """Checkpoints written before recipes were recorded still say how their run preprocessed: its options."""
    obj = torch.load(small_run / "last.pth", weights_only=True)
    del obj["recipe"]
    obj["format_version"] = 1
    old = tmp_path / "old.pth"
    torch.save(obj, old)
    recipe = ckpt.read_recipe(old)
    assert (recipe.img_size, recipe.val_resize, recipe.mean) == (24, 28, (0.4, 0.5, 0.6))
    assert "older ecanet checkpoint" in recipe.origin
    with caplog.at_level(logging.INFO):
        assert run_main([image_folder, "-e", "--resume", old, "-j", "0", "--output", tmp_path / "e"]) == EXIT_OK
    assert "Resize(28) + CenterCrop(24)" in caplog.text


def test_a_resumed_run_keeps_its_recipe(small_run, image_folder, tmp_path):
    """A run that took its preprocessing from --weights continues with it, without repeating the options."""
    out = tmp_path / "ft"
    assert run_main([image_folder, *SMALL_RUN, "--weights", small_run / "best.pth", "--epochs", "1", "--output", out,
                     "--img-size", "24", "--val-resize", "28"]) == EXIT_OK
    assert run_main([image_folder, "-b", "8", "-j", "0", "--epochs", "2", "--resume", "auto", "--output", out]) == EXIT_OK
    saved = torch.load(out / "last.pth", weights_only=True)
    assert saved["epoch"] == 2 and saved["arch"] == "eca_resnet18"
    assert (saved["recipe"]["img_size"], saved["recipe"]["val_resize"], saved["recipe"]["mean"]) == (24, 28, [0.4, 0.5, 0.6])


def test_weights_into_another_network_name_both(small_run, image_folder, tmp_path, capsys):
    _fails_with([image_folder, *SMALL_RUN, "--weights", small_run / "best.pth", "-a", "eca_resnet50", "--epochs", "1",
                 "--output", tmp_path / "x"], capsys, "is eca_resnet18", "-a asks for eca_resnet50",
                "Drop -a")
    assert not (tmp_path / "x").exists()


def test_hub_refuses_options_that_the_weights_decide(small_run):
    with pytest.raises(ValueError, match="num_classes: the network comes from weights"):
        torch.hub.load(str(ROOT), "eca_resnet18", source="local", weights=str(small_run / "best.pth"), num_classes=5)


@pytest.mark.parametrize("what", ["checkpoint", "export"])
def test_files_from_a_newer_ecanet_are_refused(small_run, tmp_path, what):
    model = ecanet.load_model(small_run / "best.pth")
    if what == "checkpoint":
        obj = torch.load(small_run / "best.pth", weights_only=True)
        obj["format_version"] = ckpt.CHECKPOINT_VERSION + 1
        path = tmp_path / "new.pth"
        torch.save(obj, path)
    else:
        path = ckpt.save_export(model, model.recipe, tmp_path / "export")
        config = json.loads((path / "config.json").read_text())
        config["format_version"] = ckpt.EXPORT_VERSION + 1
        (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="Upgrade ecanet"):
        ecanet.load_model(path)


def test_a_resumed_run_keeps_its_kernel_sizes_without_repeating_them(image_folder, tmp_path):
    """Resuming with only --resume auto (no -a, no --ksize): the network is the checkpoint's, kernel sizes too."""
    out = tmp_path / "run"
    assert run_main([image_folder, *SMALL_RUN, "-a", "eca_resnet18", "--ksize", "3577", "--epochs", "1",
                     "--output", out]) == EXIT_OK
    assert run_main([image_folder, *SMALL_RUN, "--epochs", "2", "--output", out, "--resume", "auto"]) == EXIT_OK
    saved = torch.load(out / "last.pth", weights_only=True)
    assert saved["epoch"] == 2 and saved["arch"] == "eca_resnet18"
    assert sorted(set(saved["eca_kernel_sizes"].values())) == [3, 5, 7]


@pytest.mark.parametrize(("field", "value", "named"), [
    ("std", [0.0, 0.0, 0.0], "every value must be positive"), ("mean", [0.5], "3 finite numbers"),
    ("std", [0.2, float("nan"), 0.2], "3 finite numbers"), ("img_size", -5, "positive pixel counts"),
    ("val_resize", 0, "positive pixel counts"), ("num_classes", -1, "0 or more"),
    ("interpolation", "bicubic", "resizes with 'bilinear' only"), ("grayscale", "luma", "'repeat' only")])
def test_a_recipe_that_cannot_be_used_is_refused_naming_the_field(field, value, named):
    """An edited config.json or a damaged checkpoint: refused before evaluation divides by 0, crops a negative
    size, or resizes otherwise than the recipe claims."""
    good = Recipe("eca_resnet18", 3).to_dict()
    assert Recipe.from_dict(good, "f") == Recipe("eca_resnet18", 3)
    with pytest.raises(CheckpointError, match=f"f: its recipe's {field} .*{named}"):
        Recipe.from_dict({**good, field: value}, "f")


def test_the_ema_weights_of_a_checkpoint_are_loaded_when_asked(small_run, image_folder, tmp_path, capsys):
    """A run trained with --ema keeps the EMA's weights beside the model's: load_model, -e and --weights take
    them with use_ema / --use-ema; a file without them, or an option that has no file to take them from, is
    refused."""
    best = torch.load(small_run / "best.pth", weights_only=True)
    ema = ecanet.load_model(small_run / "best.pth", use_ema=True).state_dict()
    assert all(torch.equal(ema[k], v) for k, v in best["ema_state_dict"].items())
    own = ecanet.load_model(small_run / "best.pth").state_dict()
    assert not all(torch.equal(own[k], ema[k]) for k in own)
    # last.pth keeps the whole AveragedModel (its network under 'module.', and a count): the same weights
    from_last = ecanet.load_model(small_run / "last.pth", use_ema=True).state_dict()
    assert all(torch.equal(from_last[k], v) for k, v in ema.items())
    assert run_main([image_folder, "-e", "--resume", small_run / "last.pth", "--use-ema", "-j", "0",
                     "--output", tmp_path / "e_last"]) == EXIT_OK
    assert run_main([image_folder, "-e", "--weights", small_run / "best.pth", "--use-ema", "-j", "0",
                     "--output", tmp_path / "e"]) == EXIT_OK
    bare = tmp_path / "bare.pth"
    torch.save(best["state_dict"], bare)
    assert run_main([image_folder, "-e", "--weights", bare, "--use-ema", "-j", "0"]) == EXIT_USAGE
    assert "holds no EMA weights" in capsys.readouterr().err
    assert run_main([image_folder, *SMALL_RUN, "--use-ema", "--output", tmp_path / "t"]) == EXIT_USAGE
    assert "--use-ema picks the EMA's weights" in " ".join(capsys.readouterr().err.split())


def test_the_export_command_exports_the_ema_weights_when_asked(small_run, tmp_path):
    proc = run_script("scripts/export.py", [small_run / "best.pth", tmp_path / "ema", "--use-ema"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    exported = ecanet.load_model(tmp_path / "ema").state_dict()
    ema = torch.load(small_run / "best.pth", weights_only=True)["ema_state_dict"]
    assert exported.keys() == ema.keys() and all(torch.equal(exported[k], v) for k, v in ema.items())
