"""scripts/plot_runs.py on synthetic runs: grouping by arch, bands, the PNG, and bad input; and scripts/summarize_runs.py --csv."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from conftest import load_script

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EPOCHS = 4

plot = load_script("plot_runs")


def val_top1(arch: str, seed: int, epoch: int) -> float:
    """A made-up learning curve: ECA a little above the baseline, seeds 1 point apart."""
    return 50.0 + 10.0 * epoch + (2.0 if arch.startswith("eca") else 0.0) + seed


def make_run(folder: Path, arch: str, seed: int, epochs: int = EPOCHS) -> Path:
    """A run directory as the trainer writes it: config.yaml and metrics.jsonl with other events mixed in."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"arch: {arch}\nseed: {seed}\nepochs: {epochs}\n")
    lines = [{"event": "start", "arch": arch}]
    for epoch in range(1, epochs + 1):
        lines.append({"event": "epoch", "epoch": epoch, "val_top1": val_top1(arch, seed, epoch),
                      "val_top5": 99.0, "val_loss": 1.0 / epoch, "train_loss": 1.2 / epoch,
                      "train_top1": 40.0 + epoch, "lr": 0.1, "epoch_time_s": 1.0, "images_per_s": 1000.0})
        lines.append({"event": "eval", "epoch": epoch, "val_top1": -1.0})  # not an epoch line: ignored
    lines.append({"event": "summary", "best_val_top1": val_top1(arch, seed, epochs)})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    """2 archs x 2 seeds."""
    return [make_run(tmp_path / "runs" / f"{arch}-s{seed}", arch, seed)
            for arch in ("resnet18", "eca_resnet18") for seed in (0, 1)]


def test_runs_are_grouped_by_arch_with_mean_and_band(runs):
    curves = plot.group_runs(plot.load_runs(runs, "val_top1", None), "minmax")
    assert [c.label for c in curves] == ["resnet18", "eca_resnet18"]
    eca = curves[1]
    assert eca.runs == 2 and eca.epochs == list(range(1, EPOCHS + 1))
    assert eca.mean[0] == pytest.approx(62.5)  # (62 + 63) / 2
    assert (eca.low[0], eca.high[0]) == (62.0, 63.0)
    std = plot.group_runs(plot.load_runs(runs, "val_top1", None), "std")[1]
    assert std.high[0] - std.mean[0] == pytest.approx(0.5 ** 0.5)  # sample std of {62, 63}


def test_writes_a_png(runs, tmp_path: Path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    output = tmp_path / "plots" / "val_top1.png"
    assert plot.main([*map(str, runs), "--output", str(output), "--title", "synthetic"]) == 0
    assert output.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(output) as image:
        image.verify()
    with Image.open(output) as image:
        assert image.size == (840, 540)


def test_a_folder_of_runs_stands_for_its_runs_and_labels_override_arch(runs, tmp_path: Path):
    found = plot.expand_run_dirs([tmp_path / "runs"])
    assert sorted(found) == sorted(runs)
    labelled = plot.load_runs(runs, "val_top1", ["a", "a", "b", "b"])
    assert [c.label for c in plot.group_runs(labelled, "none")] == ["a", "b"]


def test_a_resumed_run_keeps_the_last_line_of_an_epoch_and_skips_a_torn_line(tmp_path: Path, caplog):
    run = make_run(tmp_path / "r", "resnet18", 0, epochs=2)
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"event": "epoch", "epoch": 2, "val_top1": 99.0}) + "\n")
        f.write('{"event": "epoch", "epo')  # killed while writing
    assert plot.read_metric(run / "metrics.jsonl", "val_top1") == {1: 60.0, 2: 99.0}
    assert "not JSON" in caplog.text


def test_bad_input_exits_2(runs, tmp_path: Path, caplog):
    caplog.set_level(logging.ERROR, logger="plot_runs")
    output = str(tmp_path / "x.png")
    assert plot.main([*map(str, runs), "--output", output, "--metric", "no_such_metric"]) == 2
    assert "no_such_metric" in caplog.text
    assert plot.main([str(runs[0]), "--output", output, "--label", "a", "--label", "b"]) == 2
    assert plot.main([str(tmp_path / "missing"), "--output", output]) == 2
    assert not Path(output).exists()


summarize = load_script("summarize_runs")


def test_summarize_runs_writes_the_table_as_csv(tmp_path: Path, capsys):
    """scripts/summarize_runs.py --csv: one row per network, mean and sample std over seeds, per-seed top-1."""
    import csv

    for arch in ("eca_resnet18", "resnet18"):
        for seed in (0, 1):
            run = make_run(tmp_path / "runs" / f"{arch}-s{seed}", arch, seed, epochs=2)
            lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            for line in lines:
                if line["event"] == "epoch":
                    line.update(val_images=100, val_images_per_s=100.0, peak_memory_gib=1.0)
                if line["event"] == "summary":
                    line["parameters"] = 1000
            (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out" / "table.csv"
    assert summarize.main([str(tmp_path / "runs"), "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| eca_resnet18 | 2 (0, 1) | 2 |" in printed and printed.count("| 1.0 GiB |") == 2
    assert summarize._gib(0.0) == "-"   # runs on the CPU record no GPU memory
    rows = {r["network"]: r for r in csv.DictReader(out.open())}
    assert list(rows) == ["eca_resnet18", "resnet18"]
    eca = rows["eca_resnet18"]
    assert (eca["runs"], eca["seeds"], eca["epochs"]) == ("2", "0 1", "2")
    assert float(eca["top1_mean"]) == pytest.approx(72.5)  # seeds 0 and 1 at epoch 2: 72 and 73
    assert float(eca["top1_std"]) == pytest.approx(0.5 ** 0.5, abs=1e-4)
    assert eca["top1_per_seed"] == "72.00 73.00"
    assert float(eca["train_eval_s_per_run"]) == pytest.approx(4.0)  # 2 epochs x (1 s + 100 images / 100 per s)


def test_summarize_runs_refuses_what_is_no_finished_run_with_exit_2(tmp_path: Path, capsys):
    """Epoch lines without 'val_images' (the older format) and no --val-images, an unfinished run, a run
    without config.yaml and a folder without runs: each one paragraph and exit code 2, never a traceback.
    --json makes its folder."""
    run = make_run(tmp_path / "old", "eca_resnet18", 0)   # epochs without val_images
    lines = [json.loads(line) | {"parameters": 1000, "val_images_per_s": 100.0}
             for line in (run / "metrics.jsonl").read_text().splitlines()]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    cases = [([run], "pass --val-images N"), ([tmp_path / "empty"], "no run directories with metrics.jsonl")]
    (tmp_path / "empty").mkdir()
    unfinished = make_run(tmp_path / "unfinished", "resnet18", 0)
    (unfinished / "metrics.jsonl").write_text(json.dumps({"event": "start"}) + "\n")
    cases.append(([unfinished], "holds no finished run"))
    no_config = make_run(tmp_path / "no_config", "resnet18", 0)
    (no_config / "config.yaml").unlink()
    cases.append(([no_config, "--val-images", "100"], "no config.yaml"))
    for argv, message in cases:
        assert summarize.main([str(a) for a in argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err
    out = tmp_path / "new" / "runs.json"
    assert summarize.main([str(run), "--val-images", "100", "--json", str(out)]) == 0
    assert json.loads(out.read_text())[0]["arch"] == "eca_resnet18"
