"""det_main.py: training, evaluation, exact resume, preemption and bad input on a tiny COCO-format toy set.

Every run is a ResNet-18 detector on 64x64 canvases (min/max size 64) of the toy set from
``detection_fixtures`` (6 training and 3 validation images, Fashion-MNIST-like pictures), a few steps on the CPU,
run through ``det_main.main`` in this process.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from detection_fixtures import make_tiny_toyset
from ecanet.errors import EXIT_DIVERGED, EXIT_OK, EXIT_PREEMPTED, EXIT_USAGE

# pycocotools' mask code trips a NumPy 2 deprecation inside its own code.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

TINY = ["--arch", "resnet18", "--min-size", "64", "--max-size", "64", "-j", "0", "--seed", "5", "--device", "cpu",
        "-p", "1"]
# Faster R-CNN with 32 sampled proposals per image (the cheapest R-CNN step), 4 images in steps of 2, 2 epochs,
# an ECA-ResNet-18 backbone from a classification checkpoint whose kernel sizes (5333) are not the default.
FASTER = [*TINY, "--arch", "eca_resnet18", "--detector", "faster_rcnn", "--box-batch-per-image", "32", "-b", "2",
          "--limit-train", "4", "--epochs", "2", "--eval-every", "0", "--lr", "0.02", "--warmup-iters", "2"]


def run_det(argv) -> int:
    import det_main
    return det_main.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("det") / "toy"
    make_tiny_toyset(root)
    return root


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    """An ECA-ResNet-18 classification checkpoint (official container) with ECA kernel sizes 5333: those of
    layer1 (frozen) and layer2 differ from ResNet-18's adaptive 3555."""
    from ecanet import models
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("backbone") / "eca_resnet18_k5333.pth.tar"
    model = models.create_model("eca_resnet18", num_classes=10, k_size="5333")
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "arch": "eca_resnet18"}, path)
    return path


@pytest.fixture(scope="module")
def mask_run(toy, tmp_path_factory) -> Path:
    """Mask R-CNN, 2 steps of 2 images, then COCO evaluation of boxes and masks."""
    out = tmp_path_factory.mktemp("mask") / "run"
    assert run_det([toy, *TINY, "--detector", "mask_rcnn", "--box-batch-per-image", "32", "-b", "2",
                    "--limit-train", "4", "--epochs", "1", "--output", out]) == EXIT_OK
    return out


@pytest.fixture(scope="module")
def straight_run(toy, backbone, tmp_path_factory) -> Path:
    """Faster R-CNN, 4 steps over 2 epochs without a stop."""
    out = tmp_path_factory.mktemp("straight") / "run"
    assert run_det([toy, *FASTER, "--weights", backbone, "--output", out]) == EXIT_OK
    return out


def records(run_dir: Path, event: str = "epoch") -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ----------------------------------------------------------------------------------------------- the CLI

def test_help_answers_without_importing_torch():
    check = ("import sys, runpy\nsys.argv = ['det_main.py', '--help']\n"
             "try:\n    runpy.run_path('det_main.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print('torch loaded' if 'torch' in sys.modules else 'torch not loaded')")
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "--resume-override" in result.stdout and "instances_train2017.json" in result.stdout, result.stderr
    assert result.stdout.strip().endswith("torch not loaded")


def test_help_lines_fit_100_columns(monkeypatch):
    from ecanet.detection.options import DESCRIPTION, EPILOG, HELP_COLUMNS, build_parser
    monkeypatch.setenv("COLUMNS", str(HELP_COLUMNS))   # argparse wraps the options' help to the terminal
    text = build_parser().format_help()
    assert DESCRIPTION.splitlines()[0] in text and EPILOG.splitlines()[-1] in text
    too_long = [line for line in text.splitlines() if len(line) > HELP_COLUMNS]
    assert HELP_COLUMNS == 100 and not too_long, too_long


@pytest.mark.parametrize(("options", "phrases"), [
    (["-b", "1", "--min-size", "16", "--max-size", "16"],
     ["--min-size 16 is below 64 pixels", "one value per channel", "Pass --min-size and --max-size 64 or more"]),
    (["--min-size", "64", "--max-size", "32"], ["--max-size 32 is below 64 pixels"]),
    (["--min-size", "96", "--max-size", "80"], ["--min-size 96 is larger than --max-size 80", "Raise --max-size"]),
    (["--lr-steps", "11", "8"], ["--lr-steps 11 8 are not increasing", "e.g. --lr-steps 8 11"]),
    (["--lr-steps", "8", "8"], ["--lr-steps 8 8 are not increasing", "e.g. --lr-steps 8."]),
    (["--lr-steps", "0", "8"], ["--lr-steps 0 8", "from 1 on", "Pass epochs of 1 or more"]),
])
def test_sizes_and_lr_steps_that_cannot_train_exit_2_before_anything_is_written(options, phrases, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_det([tmp_path / "toy", *TINY, *options, "--output", out]) == EXIT_USAGE
    line = one_error_line(capsys)
    for phrase in phrases:
        assert phrase in line, line
    assert not out.exists()


def test_a_shorter_run_of_a_schedule_is_not_refused(caplog):
    """Steps past the run's last epoch are not refused (a shorter run of the default schedule, a config file's
    or a resumed run's, as the quick detection demo trains): the drops that do not happen are logged, as a
    warning where the command line gives the steps."""
    import logging
    from ecanet.detection import options
    paths = ["--train-images", "t", "--train-annotations", "t.json", "--val-images", "v", "--val-annotations",
             "v.json"]
    paper = str(ROOT / "configs" / "detection" / "mask_rcnn_eca_resnet50.yaml")
    resolve = dict(default_workers=0, fresh_seed=0, timestamp="t")
    for argv, recorded in ((["--epochs", "2"], None), (["--config", paper, "--epochs", "1"], None),
                           (["--epochs", "9", "--resume", "runs/x/last.pth"], {"epochs": 12, "lr-steps": [8, 11]}),
                           (["--epochs", "2", "--lr-steps", "8", "11"], None)):
        args = options.parse_options([*paths, *argv])
        options.validate(args)
        with caplog.at_level(logging.INFO, logger=options.log.name):
            cfg = options.resolve(args, **resolve, recorded=recorded)
        assert cfg.lr_steps == [8, 11], argv
        assert f"no learning-rate drop after epoch {'8 and 11' if cfg.epochs < 8 else '11'}" in caplog.text, argv
        assert [r.levelname for r in caplog.records if "lr-steps" in r.getMessage()] == \
            ["WARNING" if "--lr-steps" in argv else "INFO"], argv
        caplog.clear()


def test_the_paper_configs_load_with_their_values():
    from ecanet.detection.configs import load_detection_config
    from ecanet.detection.options import parse_options
    for path in sorted((ROOT / "configs" / "detection").glob("*.yaml")):
        args = parse_options(["data", "--config", str(path)])
        expected = load_detection_config(path)
        assert {key: getattr(args, key) for key in expected} == expected, path.name
        assert args.lr_base_batch == expected["batch_size"]  # the config's lr is for its own batch
    args = parse_options(["data", "--config", str(ROOT / "configs/detection/mask_rcnn_eca_resnet50.yaml"), "-b", "16"])
    assert (args.batch_size, args.lr, args.lr_base_batch) == (16, 0.01, 8)


def test_schedule_warms_up_then_steps_down():
    from ecanet.detection.engine import lr_factor_fn
    factor = lr_factor_fn(steps_per_epoch=10, lr_steps=[2, 3], warmup_iters=4, warmup_factor=0.2)
    assert [round(factor(step), 6) for step in (0, 1, 2, 4, 19, 20, 29, 30)] == \
        [0.2, 0.4, 0.6, 1.0, 1.0, 0.1, 0.1, 0.01]


# ---------------------------------------------------------------------------------- training, evaluation

def test_mask_rcnn_trains_and_is_evaluated_with_pycocotools(mask_run, toy):
    files = {p.name for p in mask_run.iterdir()}
    assert {"config.yaml", "train.log", "metrics.jsonl", "last.pth", "model.pth"} <= files
    assert any((mask_run / "tensorboard").iterdir())
    (epoch,) = records(mask_run)
    # 2 steps of 2 images; lr 0.01 for 8 images scaled to 2, then warm-up from 1/3 over 500 steps, at step 2
    assert epoch["step"] == 2 and epoch["val_images"] == 3
    assert epoch["lr"] == pytest.approx(0.01 * 2 / 8 * (1 / 3 * (1 - 2 / 500) + 2 / 500), rel=1e-12)
    losses = {"train_loss_classifier", "train_loss_box_reg", "train_loss_mask", "train_loss_objectness",
              "train_loss_rpn_box_reg"}
    assert losses <= epoch.keys()
    assert epoch["train_loss"] == pytest.approx(sum(epoch[k] for k in losses))
    assert [key for key in epoch if not key.startswith(("train_", "box_", "mask_"))] == [
        "event", "time", "epoch", "step", "lr", "epoch_time_s", "images_per_s", "images_per_s_per_gpu",
        "peak_memory_gib", "val_images", "eval_time_s"]
    # every canvas item is below 32x32 pixels: COCO's small objects only, so APm and APl do not exist
    areas = [a["area"] for a in json.loads((toy / "annotations/instances_val.json").read_text())["annotations"]]
    assert max(areas) < 32 ** 2
    for kind in ("box", "mask"):
        assert all(0.0 <= epoch[f"{kind}_{name}"] <= 100.0 for name in ("AP", "AP50", "AP75", "APs"))
        assert epoch[f"{kind}_APm"] is None and epoch[f"{kind}_APl"] is None
    last = torch.load(mask_run / "last.pth", map_location="cpu", weights_only=True)
    assert (last["epoch"], last["step_in_epoch"], last["global_step"], last["num_classes"]) == (1, 0, 2, 11)
    assert last["train_set"].startswith("4 images, ")


def test_the_run_log_says_which_weights_the_backbone_started_from(straight_run, backbone):
    assert f"from {backbone}: " in (straight_run / "train.log").read_text()


def test_evaluating_the_trained_detector_prints_the_same_numbers(straight_run, toy, capsys):
    """-e rebuilds the detector from model.pth alone (detector, backbone, kernel sizes, image sizes recorded)."""
    capsys.readouterr()
    assert run_det([toy, "-e", "--resume", straight_run / "model.pth", "--device", "cpu", "-j", "0"]) == EXIT_OK
    out = capsys.readouterr().out
    (summary,) = records(straight_run, "summary")
    assert "| mask |" not in out
    for kind in ("box",):
        row = next(line for line in out.splitlines() if line.startswith(f"| {kind} |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")][1:]
        assert cells == [f"{summary[f'{kind}_{n}']:.2f}" if summary[f"{kind}_{n}"] is not None else "-"
                         for n in ("AP", "AP50", "AP75", "APs", "APm", "APl")]


def test_evaluation_of_perfect_detections_is_100_ap(toy):
    """The engine's evaluation against an oracle that returns the ground truth: box and mask AP 100."""
    from pycocotools import mask as mask_util

    from ecanet.detection.data import CocoDetectionDataset, collate_fn
    from ecanet.detection.engine import evaluate
    from ecanet.distributed import DistInfo
    from ecanet.engine import Precision

    dataset = CocoDetectionDataset(toy / "val", toy / "annotations/instances_val.json", with_masks=True)

    class Oracle(torch.nn.Module):
        """Returns each image's ground truth, in the order the batches come."""

        def forward(self, images):
            outputs = []
            for _ in images:
                annotations = dataset.coco.imgToAnns[self.pending.pop(0)]
                boxes = torch.tensor([a["bbox"] for a in annotations], dtype=torch.float32)   # (N, 4) x, y, w, h
                boxes[:, 2:] += boxes[:, :2]                                                  # x1, y1, x2, y2
                masks = torch.stack([torch.from_numpy(mask_util.decode(dataset.coco.annToRLE(a)))
                                     for a in annotations])                                   # (N, H, W)
                outputs.append({"boxes": boxes, "scores": torch.ones(len(annotations)),
                                "labels": torch.tensor([a["category_id"] for a in annotations]),
                                "masks": masks[:, None].float()})                         # (N, 1, H, W)
            return outputs

    oracle = Oracle()
    oracle.pending = list(dataset.ids)
    batches = [collate_fn([dataset[index]]) for index in range(len(dataset))]
    result = evaluate(oracle, batches, dataset, DistInfo(), Precision(), with_masks=True)
    assert result.metrics["box_AP"] == pytest.approx(100.0) and result.metrics["mask_AP"] == pytest.approx(100.0)
    assert result.metrics["box_APm"] is None and result.images == 3


# ------------------------------------------------------------------------------ preemption, exact resume

def test_a_stop_signal_saves_and_the_resumed_run_ends_bit_identical(straight_run, toy, backbone, tmp_path,
                                                                    monkeypatch, capsys):
    import ecanet.detection.engine as det_engine
    step = det_engine.backward_and_step
    steps_done = []

    def sigterm_after_the_third_step(*args, **kwargs):
        step(*args, **kwargs)
        steps_done.append(1)
        if len(steps_done) == 3:  # in the second epoch: what SLURM or Kubernetes send before they kill
            signal.raise_signal(signal.SIGTERM)

    out = tmp_path / "run"
    monkeypatch.setattr(det_engine, "backward_and_step", sigterm_after_the_third_step)
    assert run_det([toy, *FASTER, "--weights", backbone, "--output", out, "--resume", "auto"]) == EXIT_PREEMPTED
    monkeypatch.undo()
    last = torch.load(out / "last.pth", map_location="cpu", weights_only=True)
    assert (last["reason"], last["epoch"], last["step_in_epoch"], last["global_step"]) == ("preempted", 1, 1, 3)
    assert not (out / "model.pth").exists()
    assert (last["eca_kernel_sizes"]["layer1.0.eca"], last["eca_kernel_sizes"]["layer2.0.eca"]) == (5, 3)  # the file's

    # the same command resumes: --weights is not read again, the run's own weights and kernel sizes are used
    assert run_det([toy, *FASTER, "--weights", backbone, "--output", out, "--resume", "auto"]) == EXIT_OK
    assert "resumed from" in capsys.readouterr().err
    straight, resumed = weights(straight_run / "model.pth"), weights(out / "model.pth")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    # the second epoch's mean losses include the step before the stop (restored from last.pth)
    assert records(out)[-1]["train_loss"] == records(straight_run)[-1]["train_loss"]
    assert records(out)[-1]["box_AP"] == records(straight_run)[-1]["box_AP"]


def test_an_epoch_whose_evaluation_failed_is_evaluated_and_recorded_when_the_run_resumes(straight_run, toy, tmp_path,
                                                                                         monkeypatch, capsys):
    """An epoch is saved before its evaluation, which can fail (a broken validation image, memory) or be killed.
    The run extended by an epoch here fails so: its model.pth is then the older run's, which -e --resume auto
    and the complete-run check must not take for the result, and the resumed run evaluates the saved epoch,
    records its row once and writes model.pth, without training again."""
    import ecanet.detection.engine as det_engine
    from ecanet.errors import DataError
    out = Path(shutil.copytree(straight_run, tmp_path / "run"))
    evaluate = det_engine.evaluate

    def broken_validation_image(*args, **kwargs):
        raise DataError("a validation image is cut short")

    monkeypatch.setattr(det_engine, "evaluate", broken_validation_image)
    extended = [toy, *FASTER, "--epochs", "3", "--output", out, "--resume", "auto"]
    assert run_det(extended) == EXIT_USAGE
    assert torch.load(out / "last.pth", weights_only=True)["epoch"] == 3
    assert torch.load(out / "model.pth", weights_only=True)["epoch"] == 2 and [r["epoch"] for r in records(out)] == [1, 2]

    evaluated = []
    monkeypatch.setattr(det_engine, "evaluate", lambda *a, **k: evaluated.append(1) or evaluate(*a, **k))
    capsys.readouterr()
    assert run_det([toy, "-e", "--resume", "auto", "--output", out, "-j", "0", "--device", "cpu"]) == EXIT_OK
    assert str(out / "last.pth") in capsys.readouterr().err      # not the stale model.pth
    steps = torch.load(out / "last.pth", weights_only=True)["global_step"]
    assert run_det(extended) == EXIT_OK
    assert len(evaluated) == 2                                      # -e's, then the saved epoch's once
    assert [r["epoch"] for r in records(out)] == [1, 2, 3] and "box_AP" in records(out)[-1]
    assert torch.load(out / "last.pth", weights_only=True)["global_step"] == steps   # nothing trained again
    final = torch.load(out / "model.pth", weights_only=True)
    assert (final["epoch"], final["global_step"]) == (3, steps)
    assert records(out, "summary")[-1]["epochs"] == 3


def test_resuming_a_finished_run_does_nothing(straight_run, toy, tmp_path):
    out = Path(shutil.copytree(straight_run, tmp_path / "run"))
    before = digest(out)
    assert run_det([toy, *FASTER, "--output", out, "--resume", "auto"]) == EXIT_OK
    assert digest(out) == before


def test_ksize_for_a_resumed_run_without_eca_layers_is_refused(mask_run, toy, tmp_path, capsys):
    """The backbone of a resumed run is the run's (ResNet-18 here), known only once its config is read: a --ksize
    given on the command line is refused then, not dropped."""
    out = Path(shutil.copytree(mask_run, tmp_path / "run"))
    before = digest(out)
    assert run_det([toy, "--min-size", "64", "--max-size", "64", "-j", "0", "--device", "cpu", "--epochs", "2",
                    "--resume", "auto", "--output", out, "--ksize", "3"]) == EXIT_USAGE
    assert "the checkpoint's resnet18 backbone has no ECA layers" in one_error_line(capsys)
    assert digest(out) == before


def test_a_non_finite_loss_stops_with_exit_3_and_saves_nothing(toy, tmp_path, monkeypatch, capsys):
    from torchvision.models.detection import roi_heads
    loss = roi_heads.fastrcnn_loss
    monkeypatch.setattr(roi_heads, "fastrcnn_loss", lambda *a: tuple(x * float("nan") for x in loss(*a)))
    out = tmp_path / "run"
    assert run_det([toy, *FASTER, "--output", out]) == EXIT_DIVERGED
    assert "NaN/inf at global step 0" in one_error_line(capsys)
    assert not list(out.glob("*.pth"))


# ------------------------------------------------------------------------------------------- bad input

def broken_copy(toy: Path, tmp: Path, change) -> Path:
    data = Path(shutil.copytree(toy, tmp / "data"))
    change(data)
    return data


def box_outside(data: Path) -> None:
    path = data / "annotations/instances_train.json"
    content = json.loads(path.read_text())
    content["annotations"][0]["bbox"] = [50.0, 50.0, 40.0, 40.0]  # reaches 90 px on a 64 px canvas
    path.write_text(json.dumps(content))


def edit_annotations(split: str, edit):
    """A change to a copy's annotation file of ``split``: ``edit(content)`` modifies the loaded JSON."""
    def change(data: Path) -> None:
        path = data / f"annotations/instances_{split}.json"
        content = json.loads(path.read_text())
        edit(content)
        path.write_text(json.dumps(content))
    return change


def without_area(content: dict) -> None:
    del content["annotations"][0]["area"]


def category_zero(content: dict) -> None:
    content["categories"].append({"id": 0, "name": "zero"})
    content["annotations"][0]["category_id"] = 0


def repeated_annotation_id(content: dict) -> None:
    content["annotations"][1]["id"] = content["annotations"][0]["id"]


def annotation_id_zero(content: dict) -> None:
    content["annotations"][0]["id"] = 0


def two_point_polygon(content: dict) -> None:
    content["annotations"][0]["segmentation"] = [[5.0, 10.0, 25.0, 10.0]]


BAD_DATA = {
    "missing annotation file": (lambda d: (d / "annotations/instances_train.json").unlink(),
                                "no train annotation file"),
    # COCOeval reads area and iscrowd: without them an epoch would train and its evaluation fail
    "validation annotation without area": (edit_annotations("val", without_area), "which COCO's evaluation reads"),
    "category id 0 for an R-CNN": (edit_annotations("train", category_zero), "keeps for the background"),
    "box outside the image": (box_outside, "invalid boxes"),
    # pycocotools keeps one annotation per id (in training too) and scores a match of id 0 as no match
    "an annotation id twice": (edit_annotations("train", repeated_annotation_id), "annotation id(s) more than once"),
    "annotation id 0": (edit_annotations("val", annotation_id_zero), "annotation ids below 1 (0)"),
    "missing image": (lambda d: (d / "train/000002.jpg").unlink(), "000002.jpg"),
}


@pytest.mark.parametrize("case", BAD_DATA)
def test_bad_data_exits_2_and_leaves_no_run_directory(case, toy, tmp_path, capsys):
    change, fragment = BAD_DATA[case]
    data = broken_copy(toy, tmp_path, change)
    out = tmp_path / "run"
    assert run_det([data, *FASTER, "--output", out]) == EXIT_USAGE
    assert fragment in one_error_line(capsys)
    assert not out.exists()


def empty_polygon_list(content: dict) -> None:
    content["annotations"][0]["segmentation"] = [[]]


def test_masks_pycocotools_cannot_read_exit_2_before_training(toy, tmp_path, capsys):
    """A training file where more than 0.1% of the masks are unusable, and a validation segmentation COCO's
    evaluation cannot read, stop the run before its first step (rare unusable training masks are left out:
    tests/test_detection_data.py)."""
    mask = [*TINY, "--detector", "mask_rcnn", "--box-batch-per-image", "32", "-b", "2", "--limit-train", "2",
            "--epochs", "1", "--eval-every", "0"]
    for split, edit, words in (("train", two_point_polygon, "more than 0.1% of its annotations"),
                               ("val", empty_polygon_list, "COCO's mask evaluation cannot rasterise")):
        data = Path(shutil.copytree(toy, tmp_path / split))
        edit_annotations(split, edit)(data)
        out = tmp_path / f"run-{split}"
        assert run_det([data, *mask, "--output", out]) == EXIT_USAGE
        assert words in one_error_line(capsys)
        assert not out.exists()


def test_a_finished_run_without_its_model_writes_it(straight_run, toy, tmp_path):
    """model.pth missing from a finished run (its save failed, or the job ended after last.pth): the same
    --resume auto command evaluates and writes it, instead of calling the run complete."""
    out = Path(shutil.copytree(straight_run, tmp_path / "run"))
    (out / "model.pth").unlink()
    assert run_det([toy, *FASTER, "--output", out, "--resume", "auto"]) == EXIT_OK
    assert torch.load(out / "model.pth", weights_only=True)["metrics"]


def test_data_given_on_the_command_line_replaces_the_recorded_paths(mask_run, toy, tmp_path, capsys):
    """-e of a run's model on DATA evaluates DATA's validation split, not the one the run recorded."""
    moved = Path(shutil.copytree(toy, tmp_path / "moved"))
    for path in (moved / "val").iterdir():   # the recorded split's images are gone from the new place's view
        path.rename(path.with_name(f"x{path.name}"))
    assert run_det([moved, *TINY, "-e", "--resume", mask_run / "model.pth"]) == EXIT_USAGE
    assert str(moved / "val") in one_error_line(capsys)   # DATA's split was read (and its images are missing)


def test_a_new_run_never_writes_over_another_runs_directory(toy, tmp_path, capsys):
    out = tmp_path / "classification-run"
    out.mkdir()
    torch.save({"state_dict": {}}, out / "best.pth")
    before = digest(out)
    assert run_det([toy, *FASTER, "--output", out]) == EXIT_USAGE
    assert "already holds best.pth" in one_error_line(capsys)
    assert digest(out) == before


def test_resume_with_another_batch_keeps_the_runs_place_in_its_schedule(straight_run, toy, tmp_path, caplog,
                                                                       capsys):
    """2 epochs of 2 steps of 2 images, resumed with batches of 4: epoch 3 starts at global step 2 (two epochs of
    1 step), where the step schedule puts it; the trainable stages cannot change on resume."""
    out = Path(shutil.copytree(straight_run, tmp_path / "run"))
    (out / "model.pth").unlink()
    with caplog.at_level("WARNING"):
        assert run_det([toy, *FASTER, "-b", "4", "--epochs", "3", "--resume-override", "--output", out,
                        "--resume", "auto"]) == EXIT_OK
    assert "continuing at epoch 3, step 0 (global step 2; the checkpoint was at step 0, global step 4)" in caplog.text
    again = Path(shutil.copytree(straight_run, tmp_path / "again"))
    assert run_det([toy, *FASTER, "--trainable-layers", "5", "--resume-override", "--epochs", "3", "--output", again,
                    "--resume", "auto"]) == EXIT_USAGE
    assert "trainable-layers 3 -> 5" in one_error_line(capsys)


def test_a_data_given_replaces_paths_the_run_named_itself(toy, tmp_path):
    """A run started with its four paths (no DATA) and resumed with DATA reads DATA's split; the same DATA by
    another spelling (a symbolic link) keeps the recorded paths, a per-split choice among them."""
    from ecanet.detection import options
    recorded = {"data": None, "train-images": "/gone/train", "train-annotations": "/gone/train.json",
                "val-images": "/gone/val", "val-annotations": "/gone/val.json"}

    def resolved(data, recorded):
        args = options.parse_options([str(data)])
        return options.resolve(args, default_workers=0, fresh_seed=0, timestamp="t", recorded=recorded)

    assert resolved(toy, recorded).train_annotations == str(toy / "annotations" / "instances_train.json")
    link = tmp_path / "same"
    link.symlink_to(toy)
    minival = {**recorded, "data": str(toy), "val-annotations": str(toy / "annotations" / "instances_train.json")}
    assert resolved(link, minival).val_annotations == minival["val-annotations"]


def test_a_retinanet_runs_own_config_file_is_a_config_file(tmp_path):
    """RetinaNet's config.yaml records the R-CNN option's default: read back as --config it is no request."""
    from ecanet.config import ConfigError
    from ecanet.detection import options
    config = tmp_path / "config.yaml"
    for value, refused in ((options.PAPER_BOX_BATCH_PER_IMAGE, False), (64, True)):
        config.write_text(f"detector: retinanet\nbox-batch-per-image: {value}\n")
        args = options.parse_options(["DATA", "--config", str(config)])
        if refused:
            with pytest.raises(ConfigError, match="applies to the R-CNN heads"):
                options.validate(args)
        else:
            options.validate(args)


def test_the_run_records_the_classes_it_found(straight_run):
    """--num-classes left open is recorded as what the annotations gave: the run's config.yaml builds its
    detector."""
    import yaml
    recorded = yaml.safe_load((straight_run / "config.yaml").read_text())["num-classes"]
    assert recorded == torch.load(straight_run / "model.pth", weights_only=True)["num_classes"] > 0


def test_an_output_that_is_a_file_exits_2(toy, tmp_path, capsys):
    out = tmp_path / "file"
    out.write_text("not a directory")
    assert run_det([toy, *FASTER, "--output", out]) == EXIT_USAGE
    assert "is a file" in one_error_line(capsys)
    assert out.read_text() == "not a directory"


def test_the_fused_eca_on_the_cpu_exits_2_before_anything_is_written(toy, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_det([toy, *FASTER, "--eca-impl", "fused", "--device", "cpu", "--output", out]) == EXIT_USAGE
    assert "--eca-impl fused insists on the fused ECA kernels" in one_error_line(capsys)
    assert not out.exists()


def test_without_pycocotools_det_main_says_what_to_install(toy, tmp_path, capsys, monkeypatch):
    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pycocotools" else
                        find_spec(name, *a))
    out = tmp_path / "run"
    assert run_det([toy, *FASTER, "--output", out]) == EXIT_USAGE
    assert "pip install pycocotools" in one_error_line(capsys)
    assert not out.exists()


def test_a_second_run_in_the_same_output_exits_2(toy, tmp_path, capsys):
    from ecanet.rundir import RunLock
    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out):
        assert run_det([toy, *FASTER, "--output", out]) == EXIT_USAGE
    assert "is in use by" in one_error_line(capsys)


def test_resuming_with_another_batch_size_exits_2_naming_both(straight_run, toy, tmp_path, capsys):
    out = Path(shutil.copytree(straight_run, tmp_path / "run"))
    (out / "model.pth").unlink()  # as if stopped before the end
    before = digest(out)
    assert run_det([toy, *FASTER, "-b", "4", "--epochs", "3", "--output", out, "--resume", "auto"]) == EXIT_USAGE
    assert "batch-size 2 -> 4" in one_error_line(capsys)
    assert digest(out) == before


def test_a_classification_checkpoint_is_not_resumed(toy, tmp_path, capsys):
    path = tmp_path / "classifier.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, path)
    assert run_det([toy, *FASTER, "--resume", path, "--output", tmp_path / "run"]) == EXIT_USAGE
    assert "pass it as --weights" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_a_weights_file_keeps_its_kernel_sizes_over_the_config_files(toy, backbone):
    """The paper's Mask R-CNN row names k 3377, the released ECA-ResNet-50 file has 3557: with --weights, the
    file's kernel sizes are used unless --ksize is given on the command line."""
    from ecanet.detection import options
    config = ROOT / "configs" / "detection" / "mask_rcnn_eca_resnet50.yaml"

    def resolved(*extra):
        args = options.parse_options([str(toy), "--config", str(config), "--arch", "eca_resnet18", "--weights",
                                      str(backbone), *extra])
        options.validate(args)
        return options.resolve(args, default_workers=0, fresh_seed=0, timestamp="t")

    assert resolved().ksize is None
    assert resolved("--ksize", "3377").ksize == "3377"


def test_annotation_id_0_trains_and_only_evaluation_refuses_it(toy, tmp_path):
    """COCO's evaluation reads annotation id 0 as "no match"; training reads ids as keys only. A training file
    numbered from 0 (some exports are) loads; a validation file so numbered is refused."""
    from ecanet.detection.data import CocoDetectionDataset
    from ecanet.errors import DataError
    data = broken_copy(toy, tmp_path, edit_annotations("train", annotation_id_zero))
    train = CocoDetectionDataset(data / "train", data / "annotations/instances_train.json", for_training=True)
    assert len(train) > 0
    with pytest.raises(DataError, match="annotation ids below 1"):
        CocoDetectionDataset(data / "train", data / "annotations/instances_train.json", for_training=False)


def test_a_run_continued_in_another_directory_does_not_evaluate_the_epoch_its_checkpoint_recorded(
        straight_run, toy, tmp_path, monkeypatch):
    """The record last.pth keeps of its epoch belongs to that run's directory: continued elsewhere, the run
    trains on and evaluates its own epochs only."""
    import ecanet.detection.engine as det_engine
    evaluate, evaluated = det_engine.evaluate, []
    monkeypatch.setattr(det_engine, "evaluate", lambda *a, **k: evaluated.append(1) or evaluate(*a, **k))
    out = tmp_path / "elsewhere"
    assert run_det([toy, *FASTER, "--epochs", "3", "--resume", straight_run / "last.pth", "--output", out]) == EXIT_OK
    assert len(evaluated) == 1 and [r["epoch"] for r in records(out)] == [3]


@pytest.mark.parametrize("rank", [0, 1])
def test_a_resumed_epochs_loss_sums_go_to_rank_0_alone(rank):
    """last.pth holds the loss sums of every process: only rank 0 takes them back, so that adding the ranks' sums
    at the next sync point counts each saved step once."""
    from types import SimpleNamespace
    from ecanet.detection import checkpoint as det_ckpt
    from ecanet.detection.engine import LossTotals
    from ecanet.distributed import DistInfo
    from ecanet.engine import Precision
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    state = SimpleNamespace(optimizer=optimizer, scheduler=scheduler, precision=Precision(),
                            losses=LossTotals(torch.device("cpu")))
    saved = {"names": ["loss_a"], "sums": torch.tensor([6.0], dtype=torch.float64), "steps": 3}
    checkpoint = {"optimizer": optimizer.state_dict(), "lr_scheduler": scheduler.state_dict(), "epoch": 0,
                  "step_in_epoch": 3, "global_step": 3, "epoch_losses": saved, "world_size": 2, "rng": None}
    det_ckpt.restore_training_state(state, checkpoint, DistInfo(rank=rank, world_size=2))
    assert state.position.step_in_epoch == 3
    assert state.losses.steps == (3 if rank == 0 else 0)
