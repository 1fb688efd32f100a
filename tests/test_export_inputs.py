"""Bad input to scripts/export.py, and checkpoints given to the wrong command: one clear message naming the problem
and the fix, exit code 2, no traceback, and nothing already saved is touched (every check runs before the
export writes its first file)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import load_script, one_error_line, run_main
from ecanet.errors import EXIT_OK, EXIT_USAGE

# A tiny classification run: 16 random 32x32 images of 3 classes, one epoch of ResNet-18 on the CPU.
TINY_RUN = ["--synthetic", "--synthetic-size", "16", "--num-classes", "3", "-a", "resnet18", "-b", "8",
            "--img-size", "32", "--val-resize", "32", "-j", "0", "--device", "cpu", "--epochs", "1", "--seed", "1"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished main.py run directory: best.pth, last.pth, config.yaml, metrics.jsonl, train.log."""
    out = tmp_path_factory.mktemp("export-inputs") / "trained-run"
    assert run_main([*TINY_RUN, "--output", out]) == EXIT_OK
    return out


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory) -> Path:
    """What det_main.py leaves in a run directory, as far as loading goes: last.pth (with training state) and
    model.pth, in det_main.py's format (torchvision's detector keys under 'model')."""
    from ecanet.detection.checkpoint import DETECTION_FORMAT, DETECTION_FORMAT_VERSION
    out = tmp_path_factory.mktemp("export-inputs") / "det"
    out.mkdir()
    weights = {"backbone.body.conv1.weight": torch.zeros(4, 3, 3, 3), "backbone.body.bn1.weight": torch.ones(4),
               "backbone.fpn.inner_blocks.0.0.weight": torch.zeros(4, 4, 1, 1),
               "rpn.head.conv.0.0.weight": torch.zeros(4, 4, 3, 3),
               "roi_heads.box_predictor.cls_score.weight": torch.zeros(3, 8)}
    fields = {"format": DETECTION_FORMAT, "format_version": DETECTION_FORMAT_VERSION, "detector": "faster_rcnn",
              "arch": "resnet18", "num_classes": 3, "model": weights, "config": {}}
    torch.save({**fields, "reason": "final", "epoch": 1}, out / "model.pth")
    torch.save({**fields, "reason": "epoch", "epoch": 1, "optimizer": {"state": {}, "param_groups": []}},
               out / "last.pth")
    (out / "config.yaml").write_text("detector: faster_rcnn\n")
    return out


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (and ``root`` itself when it is a file), by relative path, with its bytes."""
    if root.is_file():
        return {".": root.read_bytes()}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def export_fails_cleanly(argv, capsys, *phrases) -> str:
    """Run scripts/export.py in this process: exit 2, one 'error:' line holding every phrase, no traceback."""
    assert load_script("export").main([str(a) for a in argv]) == EXIT_USAGE
    return one_error_line(capsys.readouterr().err, *phrases)


def main_fails_cleanly(argv, capsys, *phrases) -> str:
    assert run_main([str(a) for a in argv]) == EXIT_USAGE
    return one_error_line(capsys.readouterr().err, *phrases)


# ------------------------------------------------------------------------------- export.py's output folder

@pytest.mark.parametrize("formats", [["--format", "onnx"], []], ids=["onnx", "safetensors"])
def test_a_folder_holding_model_onnx_is_refused_before_anything_is_written(run_dir, tmp_path, capsys, formats):
    """A folder holding an earlier model.onnx is refused before model.safetensors or config.json is written."""
    if formats:
        pytest.importorskip("onnxruntime")
    folder = tmp_path / "onnx-only"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"an earlier export's model")
    before = snapshot(folder)
    export_fails_cleanly([run_dir / "best.pth", folder, *formats], capsys, "already holds model.onnx",
                         "never overwrites")
    assert snapshot(folder) == before


def test_an_output_folder_under_a_file_is_refused(run_dir, tmp_path, capsys):
    """An output folder under a file is named as such, not a traceback."""
    afile = tmp_path / "afile"
    afile.write_text("my notes")
    export_fails_cleanly([run_dir / "best.pth", afile / "x" / "y"], capsys, f"{afile} is a file",
                         "cannot be made inside it")
    assert afile.read_text() == "my notes"


@pytest.mark.parametrize("formats", [["--format", "onnx"], []], ids=["onnx", "safetensors"])
@pytest.mark.parametrize("size", ["0", "-3"])
def test_an_input_size_that_is_no_size_is_refused(run_dir, tmp_path, capsys, formats, size):
    """--img-size 0 is refused like any other non-size, not read as 'not given' (the recipe's size)."""
    if formats:
        pytest.importorskip("onnxruntime")
    out = tmp_path / "export"
    export_fails_cleanly([run_dir / "best.pth", out, "--img-size", size, *formats], capsys,
                         f"--img-size {size} is no image size")
    assert not out.exists()


def test_an_export_into_a_training_run_directory_is_refused(run_dir, capsys):
    """An export into a training run's directory is refused: the run directory would then read as an export
    folder."""
    before = snapshot(run_dir)
    export_fails_cleanly([run_dir / "best.pth", run_dir], capsys, f"{run_dir} holds a training run",
                         "best.pth", "config.yaml", "Pick an output folder of its own")
    assert snapshot(run_dir) == before


def test_a_folder_with_a_checkpoint_or_a_run_record_is_a_run_directory_too(run_dir, detection_run, tmp_path, capsys):
    """What makes a run directory: its checkpoints (any *.pth, as ecanet.rundir counts them), its config.yaml,
    its metrics.jsonl (-e --output writes that alone); det_main.py's directories are refused alike."""
    for name in ("best.pth", "metrics.jsonl"):
        folder = tmp_path / name.replace(".", "-")
        folder.mkdir()
        (folder / name).write_bytes((run_dir / name).read_bytes())
        before = snapshot(folder)
        export_fails_cleanly([run_dir / "best.pth", folder], capsys, "holds a training run", name)
        assert snapshot(folder) == before
    before = snapshot(detection_run)
    export_fails_cleanly([run_dir / "best.pth", detection_run], capsys, "holds a training run", "last.pth")
    assert snapshot(detection_run) == before


def test_a_folder_with_other_files_takes_an_export(run_dir, tmp_path, capsys):
    """The rule chosen: a folder may hold files of its own (a README, a clone of a model hub's repository); only
    an export's files and a training run's are refused."""
    folder = tmp_path / "hub-repo"
    folder.mkdir()
    (folder / "README.md").write_text("# my model\n")
    assert load_script("export").main([str(run_dir / "best.pth"), str(folder)]) == EXIT_OK
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert (folder / "README.md").read_text() == "# my model\n"


# ---------------------------------------------------------------------- a detection checkpoint, a folder

def test_a_detection_checkpoint_names_the_command_that_takes_it(run_dir, detection_run, tmp_path, capsys):
    """det_main.py's checkpoints given where a classification network's are read name the det_main.py command
    that takes them."""
    import ecanet
    from ecanet.errors import CheckpointError
    before = snapshot(detection_run)
    model, last = detection_run / "model.pth", detection_run / "last.pth"
    out = tmp_path / "export"
    export_fails_cleanly([model, out], capsys, f"{model} is a detection checkpoint of det_main.py",
                         "faster_rcnn", f"det_main.py -e --resume {model}")
    assert not out.exists()
    main_fails_cleanly([*TINY_RUN, "--weights", model, "--output", tmp_path / "ft"], capsys,
                       "is a detection checkpoint of det_main.py", f"det_main.py -e --resume {model}")
    message = main_fails_cleanly([*TINY_RUN, "--resume", last], capsys, "is a detection checkpoint of det_main.py",
                                 f"det_main.py --resume {last}")
    assert "does not look like any network" not in message
    with pytest.raises(CheckpointError, match="detection checkpoint of det_main.py"):
        ecanet.load_model(model)
    assert snapshot(detection_run) == before and not (tmp_path / "ft").exists()


def test_weights_from_a_folder_that_is_no_export_name_what_it_holds(run_dir, tmp_path, capsys):
    """--weights DIR names what --weights takes and the checkpoint files DIR holds, not resume advice."""
    empty = tmp_path / "somedir"
    empty.mkdir()
    message = main_fails_cleanly([*TINY_RUN, "--weights", empty, "--output", tmp_path / "ft"], capsys,
                                 f"{empty} is a folder but not an export folder", "holds no checkpoint file")
    assert "--resume" not in message and "last.pth" not in message
    holding = tmp_path / "weights"
    holding.mkdir()
    (holding / "best.pth").write_bytes((run_dir / "best.pth").read_bytes())
    message = main_fails_cleanly([*TINY_RUN, "--weights", holding, "--output", tmp_path / "ft"], capsys,
                                 "It holds best.pth", f"e.g. {holding / 'best.pth'}")
    assert "--resume" not in message
    assert not (tmp_path / "ft").exists()
