"""scripts/benchmark.py refuses options that could only produce error rows before it measures or writes
anything, and its input-pipeline mode runs (on the CPU here)."""
from __future__ import annotations

import pytest
import torch

from conftest import load_script

benchmark = load_script("benchmark")

CPU_RUN = ["--device", "cpu", "--batch-size", "2", "--img-size", "32", "--repeats", "1", "--warmup-steps", "0",
           "--timed-steps", "1"]


def _refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--archs", "resnet51", *CPU_RUN], "unknown architecture 'resnet51'; did you mean resnet50?"),
    (["--archs", "eca_resnet18", "--ksize", "4", *CPU_RUN], "--ksize '4' does not fit eca_resnet18"),
    (["--archs", "resnet18", *CPU_RUN, "--repeats", "0"], "--repeats takes a positive number, got 0"),
    (["--archs", "resnet18", *CPU_RUN, "--batch-size", "0"], "--batch-size takes a positive number, got 0"),
    (["--archs", "resnet18", *CPU_RUN, "--img-size", "0"], "--img-size takes a positive number, got 0"),
    (["--archs", "resnet18", *CPU_RUN, "--device", "bogus"], "--device bogus is not a torch device"),
    (["--torchvision", "notamodel", *CPU_RUN], "--torchvision notamodel: not a torchvision network"),
    (["--archs", "resnet18", *CPU_RUN, "--page", "page.md"], "--page writes the page of --summarize's files"),
])
def test_bad_options_are_refused_before_the_results_file_is_touched(tmp_path, capsys, argv, message):
    results = tmp_path / "results.json"
    results.write_text('{"kept": true}')
    err = _refused([*argv, "--json", str(results)], capsys)
    assert message in err and "Traceback" not in err
    assert results.read_text() == '{"kept": true}'


def test_the_default_cuda_device_without_a_gpu_is_refused(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = _refused(["--archs", "resnet18", "--repeats", "1"], capsys)
    assert "needs a CUDA GPU" in err and "--device cpu" in err


@pytest.mark.parametrize("where", ["under_a_file", "a_folder"])
def test_output_paths_that_cannot_be_written_are_refused_first(tmp_path, capsys, where):
    a_file = tmp_path / "afile"
    a_file.write_text("kept")
    path = {"under_a_file": a_file / "x.json", "a_folder": tmp_path}[where]
    err = _refused(["--archs", "resnet18", *CPU_RUN, "--json", str(path)], capsys)
    assert str(path) in err and "Traceback" not in err
    assert a_file.read_text() == "kept"
    results = tmp_path / "results.json"
    results.write_text("{}")
    err = _refused(["--summarize", str(results), "--page", str(path)], capsys)
    assert "--page" in err


def test_a_results_file_may_go_to_a_new_folder_but_a_page_needs_an_existing_one(tmp_path, capsys):
    """The results file's writer makes its folder (a benchmark run names a fresh one); the page's does not."""
    results = tmp_path / "new" / "results.json"
    assert benchmark.main(["--archs", "resnet18", *CPU_RUN, "--modes", "infer", "--json", str(results)]) == 0
    assert results.is_file()
    err = _refused(["--summarize", str(results), "--page", str(tmp_path / "missing" / "page.md")], capsys)
    assert "is missing" in err


def test_the_input_pipeline_alone_is_timed_on_a_jpeg_folder(image_folder, capsys):
    assert benchmark.main(["--loader", "cpu", "--data", str(image_folder), "--device", "cpu", "--batch-size", "4",
                           "--img-size", "32", "--loader-batches", "2", "--repeats", "1", "--workers", "0",
                           "--region-decode", "off"]) == 0
    assert "| cpu | - | off | 0 | 4 |" in capsys.readouterr().out
