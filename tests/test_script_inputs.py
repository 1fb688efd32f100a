"""Bad input to the helper scripts (summarize_runs.py, plot_runs.py, make_jpeg_folder.py, cpu_costs.py): one
paragraph naming the problem and the fix, exit code 2, no traceback, and every file that existed before is
byte-identical afterwards; the scripts run in-process."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from conftest import load_script
from ecanet.errors import EXIT_USAGE

summarize = load_script("summarize_runs")
plot = load_script("plot_runs")
cpu_costs = load_script("cpu_costs")


def make_jpeg_folder(argv) -> int:
    """make_jpeg_folder.py's main(), loaded afresh: its process pool pickles the script's functions by the name
    sys.modules holds, which another test module may have loaded again since."""
    return load_script("make_jpeg_folder").main(argv)


def make_run(folder: Path, arch: str = "resnet18", seed: int = 0, epochs: int = 2) -> Path:
    """A finished classification run as main.py writes it: config.yaml, and metrics.jsonl with every figure
    summarize_runs.py reads."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"arch: {arch}\nseed: {seed}\nepochs: {epochs}\n")
    lines = [{"event": "epoch", "epoch": e, "val_top1": 50.0 + e, "val_top5": 90.0, "val_loss": 1.0 / e,
              "epoch_time_s": 1.0, "images_per_s": 100.0, "val_images": 10, "val_images_per_s": 10.0,
              "peak_memory_gib": 0.0} for e in range(1, epochs + 1)]
    lines.append({"event": "summary", "arch": arch, "epochs": epochs, "parameters": 1000})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def make_detection_run(folder: Path) -> Path:
    """A finished det_main.py run: its config names a detector, its records box AP and no top-1."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("detector: faster_rcnn\narch: resnet18\nepochs: 1\n")
    lines = [{"event": "epoch", "epoch": 1, "train_loss": 4.2, "epoch_time_s": 0.4, "images_per_s": 10.0,
              "box_AP": 0.0, "box_AP50": 0.0, "val_images": 3, "eval_time_s": 0.2},
             {"event": "summary", "detector": "faster_rcnn", "arch": "resnet18", "epochs": 1, "parameters": 28329606,
              "box_AP": 0.0}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``root``."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A classification run, a regular file, an empty folder and a folder with a file of its own."""
    make_run(tmp_path / "trained-run")
    (tmp_path / "afile").write_text("not a folder\n")
    (tmp_path / "somedir").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("an earlier file\n")
    return tmp_path


def one_error(text: str, prefix: str = "error: ") -> str:
    """The one error line of ``text`` (stderr, or the log), after checking there is no traceback."""
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, text
    return lines[0]


# ---------------------------------------------------------------------------------------- summarize_runs.py

def summarize_fails(argv, capsys, root: Path, *phrases) -> str:
    before = snapshot(root)
    assert summarize.main([str(a) for a in argv]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == "", "bad input is refused before the table is printed"
    message = one_error(err)
    for phrase in phrases:
        assert phrase in message, message
    assert snapshot(root) == before
    return message


@pytest.mark.parametrize("option, target, phrases", [
    ("--json", "afile/x.json", ["afile is a file, not a folder"]),
    ("--csv", "somedir", ["somedir is a folder", "--csv names the file to write", "somedir/runs.csv"]),
    ("--json", "trained-run/metrics.jsonl", ["is the metrics.jsonl of the run", "Pass another path"]),
    ("--csv", "trained-run/config.yaml", ["is the config.yaml of the run"]),
])
def test_summarize_refuses_an_output_path_it_cannot_write(work, capsys, option, target, phrases):
    summarize_fails([work / "trained-run", option, work / target], capsys, work, f"{option} {work / target}", *phrases)


def test_summarize_refuses_json_and_csv_to_one_file_and_writes_neither(work, capsys):
    summarize_fails([work / "trained-run", "--json", work / "out.txt", "--csv", work / "out.txt"], capsys, work,
                    "--json and --csv both name")


def test_summarize_checks_every_output_before_writing_any(work, capsys):
    """A good --json and a bad --csv: the --json file is not written either."""
    summarize_fails([work / "trained-run", "--json", work / "new" / "runs.json", "--csv", work / "somedir"], capsys, work,
                    "somedir is a folder")
    assert not (work / "new").exists()


def test_summarize_refuses_a_detection_run_alone_and_among_classification_runs(work, capsys):
    det = make_detection_run(work / "det")
    for argv in ([det], [work / "trained-run", det], [work]):
        summarize_fails(argv, capsys, work, f"{det} is a detection run (faster_rcnn", "box and mask AP",
                        "Leave it out", "plot_runs.py --metric box_AP")


def test_summarize_refuses_a_run_without_the_figures_it_reads(work, capsys):
    run = make_run(work / "odd")
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    del lines[0]["val_top5"]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    summarize_fails([run], capsys, work, "lacks 'val_top5'", "leave it out")


@pytest.mark.parametrize("content, phrase", [
    ("arch: [resnet18\n", "is not valid YAML (expected ',' or ']'"),
    ("- resnet18\n", "names no network (no 'arch' key)"),
    (b"\xff\xfe\x00garbage", "is not a text file"),
])
def test_a_damaged_config_yaml_is_refused_alike_by_summarize_and_plot(work, capsys, caplog, content, phrase):
    """summarize_runs.py and plot_runs.py read config.yaml with the same function and refuse it alike; plot_runs.py
    with --label does not need it."""
    run = make_run(work / "badrun")
    config = run / "config.yaml"
    config.write_bytes(content) if isinstance(content, bytes) else config.write_text(content)
    message = summarize_fails([run], capsys, work, f"{config} {phrase}", "leave the run out")
    caplog.set_level(logging.INFO, logger="plot_runs")
    before = snapshot(work)
    assert plot.main([str(run), "--output", str(work / "plot.png")]) == EXIT_USAGE
    plotted = one_error(caplog.text, "ERROR")
    assert message[len("error: "):] in plotted and "--label" in plotted, plotted
    assert snapshot(work) == before
    pytest.importorskip("matplotlib")
    assert plot.main([str(run), "--output", str(work / "plot.png"), "--label", "mine"]) == 0
    assert (work / "plot.png").is_file()


@pytest.mark.parametrize("value", ["-5", "0"])
def test_summarize_rejects_a_non_positive_val_images(work, capsys, value):
    summarize_fails([work / "trained-run", "--val-images", value], capsys, work,
                    f"--val-images must be at least 1, got {value}")


@pytest.mark.parametrize("name, phrase", [("missing", "does not exist"), ("afile", "is a file, not a run directory"),
                                          ("somedir", "no run directories with metrics.jsonl under")])
def test_summarize_refuses_a_run_argument_that_names_no_run_beside_good_ones(work, capsys, name, phrase):
    summarize_fails([work / "trained-run", work / name], capsys, work, f"{work / name}", phrase)


# --------------------------------------------------------------------------------------------- plot_runs.py

def plot_fails(argv, caplog, root: Path, *phrases) -> str:
    caplog.set_level(logging.INFO, logger="plot_runs")
    before = snapshot(root)
    assert plot.main([str(a) for a in argv]) == EXIT_USAGE
    message = one_error(caplog.text, "ERROR")
    for phrase in phrases:
        assert phrase in message, message
    assert "wrote" not in caplog.text
    assert snapshot(root) == before
    return message


@pytest.mark.parametrize("target, phrases", [
    ("afile/x.png", ["afile is a file, not a folder"]),
    ("somedir", ["somedir is a folder", "--output names the file to write", "somedir/val_top1.png"]),
    ("trained-run/metrics.jsonl", ["is the metrics.jsonl of the run"]),
])
def test_plot_refuses_an_output_path_it_cannot_write(work, caplog, target, phrases):
    plot_fails([work / "trained-run", "--output", work / target], caplog, work, f"--output {work / target}", *phrases)


def test_plot_refuses_a_format_matplotlib_does_not_write_before_drawing(work, caplog):
    pytest.importorskip("matplotlib")
    plot_fails([work / "trained-run", "--output", work / "p.txtx"], caplog, work, "matplotlib does not write '.txtx' files",
               "png", "svg", f"e.g. {work / 'p.png'}")


def test_plot_names_the_file_it_wrote_for_an_output_without_extension(work, caplog):
    pytest.importorskip("matplotlib")
    caplog.set_level(logging.INFO, logger="plot_runs")
    assert plot.main([str(work / "trained-run"), "--output", str(work / "plots" / "curve")]) == 0
    written = work / "plots" / "curve.png"
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {written}" in caplog.text and not (work / "plots" / "curve").exists()


# -------------------------------------------------------------------------------------- make_jpeg_folder.py

SMALL_SET = ["--classes", "1", "--train-per-class", "1", "--val-per-class", "1", "--workers", "1",
             "--size-scale", "0.1"]


@pytest.mark.parametrize("target, phrases", [
    ("afile/x", ["afile/x cannot be created", "afile is a file, not a folder", "Choose another output folder"]),
    ("afile", ["afile is a file, not a folder"]),
    ("full", ["full exists and is not empty", "choose another output folder, or allow replacing it (--force)"]),
    ("trained-run", ["trained-run exists and is not empty", "(--force)"]),
])
def test_jpeg_folder_refuses_an_output_that_is_not_a_new_or_empty_folder(work, capsys, target, phrases):
    before = snapshot(work)
    assert make_jpeg_folder([str(work / target), *SMALL_SET]) == EXIT_USAGE
    message = one_error(capsys.readouterr().err)
    for phrase in phrases:
        assert phrase in message, message
    assert snapshot(work) == before


def test_jpeg_folder_fills_an_empty_folder_and_replaces_a_full_one_only_with_force(work, capsys):
    assert make_jpeg_folder([str(work / "somedir"), *SMALL_SET]) == 0
    assert sorted(p.name for p in (work / "somedir").iterdir()) == ["train", "val"]
    assert make_jpeg_folder([str(work / "full"), *SMALL_SET, "--force"]) == 0
    assert sorted(p.relative_to(work / "full").as_posix() for p in (work / "full").rglob("*.jpg")) == [
        "train/class0000/00000.jpg", "val/class0000/00000.jpg"]
    assert not list(work.glob(".*partial*"))
    assert "Traceback" not in capsys.readouterr().err


def test_jpeg_folder_with_force_never_deletes_the_current_folder(work, capsys, monkeypatch):
    monkeypatch.chdir(work / "full")
    before = snapshot(work)
    for target in (".", ".."):
        assert make_jpeg_folder([target, *SMALL_SET, "--force"]) == EXIT_USAGE
        assert "holds the current folder" in one_error(capsys.readouterr().err)
    assert snapshot(work) == before


# ------------------------------------------------------------------------------------------------ cpu_costs.py

@pytest.mark.parametrize("target, phrase", [
    ("missing", "does not exist"),
    ("afile", "is a file, not a folder"),
    ("somedir", "train does not exist"),
])
def test_cpu_costs_refuses_a_data_folder_that_is_not_the_dataset_before_measuring(work, capsys, target, phrase):
    before = snapshot(work)
    assert cpu_costs.main(["--data", str(work / target)]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == "", "nothing is measured before the input is checked"
    message = one_error(err)
    assert str(work / target) in message and phrase in message, message
    assert snapshot(work) == before
