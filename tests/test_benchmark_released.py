"""scripts/benchmark.py --released and its report (ecanet.bench_report): which networks it measures, the
ratios and the table (no timing here)."""
from __future__ import annotations

import argparse
import os
import time

import pytest
import torch

from conftest import load_script
from ecanet import bench, bench_report

benchmark = load_script("benchmark")


def _args(*argv: str) -> argparse.Namespace:
    return benchmark.build_parser().parse_args(list(argv))


def _row(pair, model, source, role, case, images_per_s, impl=None):
    return {"pair": pair, "model": model, "source": source, "role": role, "eca_impl": impl, "case": case,
            "images_per_s": images_per_s, "images_per_s_min": images_per_s - 1,
            "images_per_s_max": images_per_s + 1, "images_per_s_all": [images_per_s - 1, images_per_s,
                                                                         images_per_s + 1], "timed_steps": 7}


def test_released_pairs_are_the_six_released_networks_each_with_its_baseline():
    rows = benchmark._released_builders(_args("--released", "--sources", "ecanet", "official"))
    labels = [(r["model"], r["role"], r["eca_impl"]) for r, _ in rows]
    assert labels == [label for eca, base in bench_report.RELEASED_PAIRS
                      for label in ((base, "baseline", None), (eca, "eca", "auto"))]
    assert len(labels) == 12
    only = benchmark._released_builders(_args("--released", "mobilenet_v2", "--eca-impl", "auto", "plain",
                                              "--sources", "ecanet", "official"))
    assert [(r["model"], r["eca_impl"]) for r, _ in only] == [
        ("mobilenet_v2", None), ("eca_mobilenet_v2", "auto"), ("eca_mobilenet_v2", "plain")]
    model = only[1][1]()
    assert model.eca_impl == "auto" and type(model).__name__ == "MobileNetV2"


def test_missing_official_code_is_skipped_not_an_error(tmp_path, caplog):
    assert benchmark.load_official_models(None) is None
    assert benchmark.load_official_models(str(tmp_path)) is None
    assert "official rows skipped" in caplog.text
    rows = benchmark._released_builders(_args("--released", "resnet18", "--official-code", str(tmp_path), "--sources", "ecanet", "official"))
    assert [r["source"] for r, _ in rows] == ["ecanet", "ecanet"]


def test_official_code_is_imported_as_a_package(tmp_path):
    package = tmp_path / "models"
    package.mkdir()
    (package / "__init__.py").write_text("from .nets import *\n")
    (package / "nets.py").write_text("def eca_resnet18(k_size=(3, 3, 3, 3)):\n    return ('built', list(k_size))\n")
    rows = benchmark._released_builders(_args("--released", "resnet18", "--official-code", str(package), "--sources", "ecanet", "official"))
    official = [(r, build) for r, build in rows if r["source"] == "official"]
    assert len(official) == 1 and official[0][0]["model"] == "eca_resnet18"
    assert official[0][1]() == ("built", ["3", "5", "7", "7"])    # the released kernel sizes, one per stage


def test_ratios_compare_with_the_same_sources_baseline_and_the_table_shows_the_spread():
    records = [_row("resnet50", "resnet50", "ecanet", "baseline", "train-eager", 1000.0),
               _row("resnet50", "eca_resnet50", "ecanet", "eca", "train-eager", 950.0, "auto"),
               _row("resnet50", "eca_resnet50", "official", "eca", "train-eager", 800.0),
               _row("resnet50", "resnet50d", "timm", "baseline", "train-eager", 900.0),
               _row("resnet50", "ecaresnet50d", "timm", "eca", "train-eager", 870.0)]
    bench_report.released_ratios(records)
    assert [r.get("vs_baseline") for r in records] == [None, 0.95, 0.8, None, 870 / 900]
    failed = {"pair": "mobilenet_v2", "model": "mobilenet_v2", "source": "ecanet", "role": "baseline",
              "eca_impl": None, "case": "infer-eager", "error": "RuntimeError: out of memory"}
    table = bench_report._released_markdown(records + [failed])
    lines = table.splitlines()
    assert lines[3] == ("| resnet50 | train-eager | eca_resnet50 (auto) | ecanet | 950 | 949-951 | 0.21% | 3x7 "
                        "| 0.950x |")
    assert lines[-1].startswith("| mobilenet_v2 | infer-eager | mobilenet_v2 | ecanet | error | RuntimeError")


def _pair_records(ratio: float, eca_spread: float, base_spread: float = 0.0) -> list[dict]:
    """ecanet's six pairs in all four cases, every ECA network at ``ratio`` of its baseline."""
    records = []
    for eca, base in bench_report.RELEASED_PAIRS:
        for case in bench_report.CASES:
            for model, role, rate, spread, impl in ((base, "baseline", 1000.0, base_spread, None),
                                                    (eca, "eca", 1000.0 * ratio, eca_spread, "auto")):
                records.append(_row(base, model, "ecanet", role, case, rate, impl) | {
                    "images_per_s_min": rate * (1 - spread / 2), "images_per_s_max": rate * (1 + spread / 2)})
    bench_report.released_ratios(records)
    return records


def test_targets_name_each_slow_or_unsteady_measurement_and_what_was_not_measured():
    records = _pair_records(0.96, eca_spread=0.0008)
    official = _row("resnet50", "eca_resnet50", "official", "eca", "train-eager", 700.0) | {
        "images_per_s_min": 600.0, "images_per_s_max": 800.0}          # slow and unsteady, but a reference
    bench_report.released_ratios(records + [official])
    met = bench_report._released_targets(records + [official])
    assert "24 of 24 measurements met" in met and "not measured" not in met
    assert "24 of 24 met" in met                       # spreads under the noise floor pass; the official row is not judged

    records = _pair_records(0.96, eca_spread=0.004, base_spread=0.001)
    slow = next(r for r in records if r["model"] == "eca_resnet152" and r["case"] == "train-compiled")
    slow["images_per_s"] = 940.0
    bench_report.released_ratios(records)
    verdict = bench_report._released_targets([r for r in records if not (r["pair"] == "mobilenet_v2"
                                                                      and r["case"] == "infer-compiled")])
    assert "22 of 23 measurements met; NOT met: eca_resnet152 train-compiled 0.940x" in verdict
    assert "(not measured: mobilenet_v2 infer-compiled)" in verdict
    assert "spread" in verdict and "0 of 23 met; NOT met: eca_resnet18 (auto) [ecanet] train-eager 0.40% " \
           "(baseline 0.10%)" in verdict


def test_the_tables_show_each_rows_gpu_clocks_slowdowns_and_busy_time():
    """A row timed while the GPU lowered its clock or waited for the host says so beside its spread; rows
    without GPU reads (measured without NVML) show nothing, and a page with no such row has no such columns."""
    records = _pair_records(0.96, eca_spread=0.004, base_spread=0.001)
    assert "SM clock" not in bench_report._released_markdown(records)
    steady = {"sm_clock_mhz": 1980.0, "sm_clock_min_mhz": 1980, "temperature_max_c": 60, "power_w": 500.0,
              "busy_percent": 100.0, "slowdowns": []}
    eca = next(r for r in records if r["model"] == "eca_resnet152" and r["case"] == "train-compiled")
    eca["gpu_all"] = [steady, steady | {"sm_clock_mhz": 1750.0, "slowdowns": ["power cap"]},
                      steady | {"busy_percent": 86.6}]
    base = next(r for r in records if r["model"] == "resnet152" and r["case"] == "train-compiled")
    base["gpu_all"] = [steady, steady | {"sm_clock_mhz": 1970.0}, None]
    table = bench_report._released_markdown(records)
    assert "| 1,750-1,980 (power cap) | 87-100% |" in table       # the repeats' means differ by more than 1%
    assert "| 1,980 | 100% |" in table                            # within 1%: one figure
    assert "eca_resnet152 (auto) [ecanet] train-compiled 0.40% (baseline 0.10%; SM clock 1,750-1,980 MHz " \
           "(power cap); GPU busy 87-100%)" in bench_report._released_targets(records)
    assert table.splitlines()[2].endswith("|  |  |")     # no reads recorded: empty cells


def test_ratio_table_has_one_row_per_eca_network_and_code():
    records = [_row("resnet50", "resnet50", "ecanet", "baseline", "train-eager", 1000.0),
               _row("resnet50", "eca_resnet50", "ecanet", "eca", "train-eager", 950.0, "auto"),
               _row("resnet50", "eca_resnet50", "official", "eca", "train-eager", 800.0),
               _row("resnet50", "resnet50", "ecanet", "baseline", "infer-eager", 2000.0),
               _row("resnet50", "eca_resnet50", "ecanet", "eca", "infer-eager", 2100.0, "auto")]
    bench_report.released_ratios(records)
    lines = bench_report._released_ratio_table(records).splitlines()
    assert lines[0] == "| pair | ECA network | code | train-eager | infer-eager |"
    assert lines[2:] == ["| resnet50 | eca_resnet50 (auto) | ecanet | 0.950x | 1.050x |",
                         "| resnet50 | eca_resnet50 | official | 0.800x | - |"]


def test_sources_pick_whose_networks_are_measured(tmp_path):
    package = tmp_path / "models"
    package.mkdir()
    (package / "__init__.py").write_text("def eca_resnet18(k_size=(3, 3, 3, 3)):\n    return 'official'\n")
    rows = benchmark._released_builders(_args("--released", "resnet18", "--official-code", str(package),
                                              "--sources", "official"))
    assert [(r["source"], r["model"]) for r, _ in rows] == [("official", "eca_resnet18")]


def test_a_failed_row_is_not_met():
    records = _pair_records(0.96, eca_spread=0.0)
    for r in records:
        r.pop("vs_baseline", None)
    baseline = next(r for r in records if r["model"] == "resnet18" and r["case"] == "train-eager")
    baseline["error"] = "RuntimeError: out of memory"
    del baseline["images_per_s"]
    bench_report.released_ratios(records)
    verdict = bench_report._released_targets(records)
    assert "23 of 24 measurements met; NOT met: eca_resnet18 train-eager failed" in verdict
    assert "none measured" in bench_report._released_targets([])


def test_merged_results_files_keep_each_runs_own_baseline(tmp_path):
    import json
    paths = []
    for index, (scale, case) in enumerate(((1.0, "train-eager"), (0.5, "infer-eager"))):   # the second run's
        records = [_row("resnet50", "resnet50", "ecanet", "baseline", case, 1000.0 * scale),  # machine is twice
                   _row("resnet50", "eca_resnet50", "ecanet", "eca", case, 960.0 * scale, "auto")]  # as slow
        path = tmp_path / f"run{index}.json"
        path.write_text(json.dumps({"environment": {}, "args": {}, "released": records}))
        paths.append(str(path))
    summary = bench_report.summarize(paths)
    assert "| resnet50 | eca_resnet50 (auto) | ecanet | 0.960x | 0.960x |" in summary
    assert "1.920x" not in summary and "0.480x" not in summary


def test_a_later_results_file_supersedes_the_measurements_it_repeats(tmp_path):
    """Each ECA network's case comes from the last file that measured it with its baseline: here the second
    run re-measured resnet18's pair, and was interrupted after resnet152's baseline, so resnet152's pair (and
    the official network, which only the first run measured) keep the first run's rows."""
    import json
    first = [_row("resnet18", "resnet18", "ecanet", "baseline", "train-compiled", 1000.0),
             _row("resnet18", "eca_resnet18", "ecanet", "eca", "train-compiled", 830.0, "auto"),
             _row("resnet18", "eca_resnet18", "official", "eca", "train-compiled", 700.0),
             _row("resnet152", "resnet152", "ecanet", "baseline", "train-compiled", 300.0),
             _row("resnet152", "eca_resnet152", "ecanet", "eca", "train-compiled", 290.0, "auto")]
    second = [_row("resnet18", "resnet18", "ecanet", "baseline", "train-compiled", 1010.0),
              _row("resnet18", "eca_resnet18", "ecanet", "eca", "train-compiled", 990.0, "auto"),
              _row("resnet152", "resnet152", "ecanet", "baseline", "train-compiled", 310.0)]
    paths = []
    for index, records in enumerate((first, second)):
        path = tmp_path / f"run{index}.json"
        path.write_text(json.dumps({"environment": {}, "args": {}, "released": records}))
        paths.append(str(path))
    summary = bench_report.summarize(paths)
    assert "| resnet18 | eca_resnet18 (auto) | ecanet | 0.980x |" in summary      # 990 / 1010, the second run
    assert "| resnet18 | eca_resnet18 | official | 0.700x |" in summary           # 700 / 1000, the first run
    assert "| resnet152 | eca_resnet152 (auto) | ecanet | 0.967x |" in summary    # 290 / 300, the first run
    assert "0.830x" not in summary and "310 |" not in summary
    assert "| 1,000 |" in summary and "| 1,010 |" in summary     # each run's resnet18 baseline its rows compare with


def _resnet18_pair_files(tmp_path, runs) -> list[str]:
    """One results file per (environment, case) of ``runs``: resnet18 at 1,000 img/s, eca_resnet18 at 990."""
    import json
    paths = []
    for environment, case in runs:
        path = tmp_path / f"{environment['date_utc'][:10]}.json"
        path.write_text(json.dumps({"environment": environment, "args": {}, "released": [
            _row("resnet18", "resnet18", "ecanet", "baseline", case, 1000.0),
            _row("resnet18", "eca_resnet18", "ecanet", "eca", case, 990.0, "auto")]}))
        paths.append(str(path))
    return paths


def test_rows_from_several_files_show_each_files_date_and_one_file_shows_none(tmp_path):
    """A pair's baseline measured in two runs appears twice in "Every measurement": the date of each row's file
    tells them apart. Rows of a single file need no such column."""
    paths = _resnet18_pair_files(tmp_path, [({"date_utc": "2026-12-04T09:00:00+00:00"}, "train-eager"),
                                            ({"date_utc": "2026-12-05T03:00:00+00:00"}, "infer-eager")])
    table = bench_report.summarize(paths).split("### Every measurement")[1]
    assert "| pair | case | network | code | measured | img/s (median) |" in table
    assert "| resnet18 | train-eager | resnet18 | ecanet | 2026-12-04 | 1,000 |" in table
    assert "| resnet18 | infer-eager | eca_resnet18 (auto) | ecanet | 2026-12-05 | 990 |" in table
    alone = bench_report.summarize(paths[:1]).split("### Every measurement")[1]
    assert "measured" not in alone and "| resnet18 | train-eager | resnet18 | ecanet | 1,000 |" in alone


def test_rows_from_files_of_different_gpus_show_each_files_gpu_beside_its_date(tmp_path):
    paths = _resnet18_pair_files(tmp_path, [
        ({"date_utc": "2026-12-04T09:00:00+00:00", "gpu": "NVIDIA H200"}, "train-compiled"),
        ({"date_utc": "2026-12-05T03:00:00+00:00", "gpu": "NVIDIA H100 80GB HBM3"}, "train-eager")])
    table = bench_report.summarize(paths).split("### Every measurement")[1]
    assert "| resnet18 | train-compiled | resnet18 | ecanet | 2026-12-04, H200 | 1,000 |" in table
    assert "| resnet18 | train-eager | eca_resnet18 (auto) | ecanet | 2026-12-05, H100 80GB HBM3 | 990 |" in table


def test_the_most_recently_measured_file_supersedes_whatever_order_the_files_are_given_in(tmp_path):
    import json
    paths = []
    # the later file is given first; its date is written with another UTC offset than the earlier one's
    for name, date, rate in (("later", "2026-12-04T03:00:00-07:00", 990.0), ("earlier", "2026-12-04T09:00:00+00:00",
                                                                            830.0)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"environment": {"date_utc": date}, "args": {}, "released": [
            _row("resnet18", "resnet18", "ecanet", "baseline", "train-compiled", 1000.0),
            _row("resnet18", "eca_resnet18", "ecanet", "eca", "train-compiled", rate, "auto")]}))
        paths.append(str(path))
    summary = bench_report.summarize(paths)
    assert "| resnet18 | eca_resnet18 (auto) | ecanet | 0.990x |" in summary and "0.830x" not in summary


def test_within_a_pair_and_case_the_rows_follow_the_sources_order():
    records = [_row("resnet50", "resnet50d", "timm", "baseline", "train-eager", 900.0),
               _row("resnet50", "eca_resnet50", "official", "eca", "train-eager", 800.0),
               _row("resnet50", "resnet50", "ecanet", "baseline", "train-eager", 1000.0)]
    lines = bench_report._released_markdown(records).splitlines()[2:]
    assert [line.split(" | ")[3] for line in lines] == ["ecanet", "official", "timm"]


def test_rows_compiled_with_inductor_settings_stand_beside_the_default_rows(tmp_path):
    """A later file measured with --inductor-option neither replaces the default compiler's rows nor counts
    towards the targets; its compiled rows show their settings, its eager rows are plain eager rows."""
    import json
    default = [_row("mobilenet_v2", "mobilenet_v2", "ecanet", "baseline", "train-compiled", 1000.0),
               _row("mobilenet_v2", "eca_mobilenet_v2", "ecanet", "eca", "train-compiled", 740.0, "auto")]
    graphs = [_row("mobilenet_v2", "mobilenet_v2", "ecanet", "baseline", "train-compiled", 1200.0),
              _row("mobilenet_v2", "eca_mobilenet_v2", "ecanet", "eca", "train-compiled", 1188.0, "auto"),
              _row("mobilenet_v2", "mobilenet_v2", "ecanet", "baseline", "train-eager", 800.0),
              _row("mobilenet_v2", "eca_mobilenet_v2", "ecanet", "eca", "train-eager", 776.0, "auto")]
    paths = []
    for index, (records, options) in enumerate(((default, []), (graphs, [["triton.cudagraphs", True]]))):
        path = tmp_path / f"run{index}.json"
        path.write_text(json.dumps({"environment": {}, "args": {"inductor_option": options}, "released": records}))
        paths.append(str(path))
    summary = bench_report.summarize(paths)
    assert "| mobilenet_v2 | eca_mobilenet_v2 (auto) | ecanet | 0.970x | 0.740x |" in summary
    assert "| mobilenet_v2 | eca_mobilenet_v2 (auto; triton.cudagraphs=True) | ecanet | - | 0.990x |" in summary
    # files without a date: "?" in the measured column, which rows from several files have
    assert ("| mobilenet_v2 | train-compiled | eca_mobilenet_v2 (auto; triton.cudagraphs=True) | ecanet | ? | 1,188 |"
            in summary)
    assert "1 of 2 measurements met; NOT met: eca_mobilenet_v2 train-compiled 0.740x" in summary


def test_inductor_options_reach_torch_compile(monkeypatch):
    """--inductor-option NAME=VALUE pairs become torch.compile's options (literals parsed); none leaves the
    defaults; a name Inductor lacks, or a pair without '=', is refused by the parser (exit 2)."""
    args = _args("--inductor-option", "combo_kernels=True", "--inductor-option", "max_fusion_size=32")
    assert dict(args.inductor_option) == {"combo_kernels": True, "max_fusion_size": 32}
    assert _args().inductor_option == []
    seen = []
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: seen.append(kwargs) or model)
    model = torch.nn.Linear(2, 2)
    assert bench._fresh_compile(model, True, dict(args.inductor_option)) is model
    bench._fresh_compile(model, True, {})
    assert bench._fresh_compile(model, False, {"combo_kernels": True}) is model
    assert seen == [{"options": {"combo_kernels": True, "max_fusion_size": 32}}, {"options": None}]
    assert dict(_args("--inductor-option", "combo-kernels=False").inductor_option) == {"combo_kernels": False}
    for bad in ("no_such_setting=1", "combo_kernels", "combo_kernels=yes", "max_fusion_size=1.5"):
        with pytest.raises(SystemExit) as exit_info:
            _args("--inductor-option", bad)
        assert exit_info.value.code == 2


def test_inductor_options_reach_every_compiled_measurement(monkeypatch):
    """The throughput, released, profile and loss-curve suites all hand --inductor-option to ecanet.bench."""
    seen = {}

    def recording(name):
        def fake(*args, **kwargs):
            seen.setdefault(name, []).append(kwargs)
            if name == "loss_curves":
                return {impl: [1.0] for impl in args[1]}
            raise RuntimeError("not measured in this test")   # each suite records the row as failed
        return fake

    for name in ("measure_throughput", "profile_step", "loss_curves"):
        monkeypatch.setattr(bench, name, recording(name))
    common = ("--device", "cpu", "--inductor-option", "combo_kernels=True")
    for suite, argv in ((benchmark.run_released, ("--released", "resnet18", "--sources", "ecanet",
                                                  "--cases", "infer-compiled", "--fresh-process", "none")),
                        (benchmark.run_models, ("--archs", "resnet18", "--cases", "infer-compiled")),
                        (benchmark.run_profile, ("--archs", "resnet18", "--cases", "infer-compiled", "--profile", "1")),
                        (benchmark.run_loss_curve, ("--loss-curve", "1", "--eca-impl", "auto", "plain",
                                                    "--compile", "on"))):
        args = _args(*argv, *common)
        suite(args, bench_report.Report(None, args))
    compiled = [kwargs for calls in seen.values() for kwargs in calls if kwargs.get("compile")]
    assert {name for name, calls in seen.items() if any(c.get("compile") for c in calls)} == {
        "measure_throughput", "profile_step", "loss_curves"}
    assert len(compiled) == 2 + 1 + 1 + 1   # resnet18 and eca_resnet18 released, one --archs, profile, curve
    assert all(kwargs["compile_options"] == {"combo_kernels": True} for kwargs in compiled)


def test_a_fresh_process_row_is_measured_by_a_child_process(tmp_path, monkeypatch):
    """--fresh-process all: a row runs in its own process (this one cannot measure: its measure_throughput
    raises). The run continues a results file (--resume) that holds the baseline's row already, so one child
    measures eca_resnet18, and the file then holds both rows with the ratio."""
    import json
    monkeypatch.setattr(bench, "measure_throughput", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")   # the child's tiny CPU steps; more threads only contend with the suite
    out = tmp_path / "rows.json"
    argv = ["--released", "resnet18", "--sources", "ecanet", "--cases", "infer-eager", "--fresh-process", "all",
            "--device", "cpu", "--amp", "fp32", "--batch-size", "2", "--img-size", "32", "--repeats", "2",
            "--warmup-steps", "1", "--timed-steps", "1", "--json", str(out)]
    args = _args(*argv)
    baseline = _row("resnet18", "resnet18", "ecanet", "baseline", "infer-eager", 1000.0)
    out.write_text(json.dumps({"environment": bench_report.environment(), "args": vars(args), "released": [baseline]}))
    assert benchmark.main(argv + ["--resume"]) == 0
    records = json.loads(out.read_text())["released"]
    assert [r["model"] for r in records] == ["resnet18", "eca_resnet18"] and records[0] == baseline
    assert "error" not in records[1] and len(records[1]["images_per_s_all"]) == 2
    assert records[1]["vs_baseline"] == records[1]["images_per_s"] / 1000.0


def test_compile_jobs_fill_the_cache_before_the_timed_rows(tmp_path, monkeypatch):
    """--compile-jobs N starts one short process per compiled row, at most N at once, before any row is timed;
    each timed row is then a process of its own, and eager rows stay in this one with the default. The kernel
    configurations the compiling processes autotuned are deleted from Inductor's cache; earlier ones stay."""
    events = []
    cache = tmp_path / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))
    earlier = cache / "ab" / "triton_red_earlier.best_config"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("{}")
    os.utime(earlier, (time.time() - 60, time.time() - 60))

    class FakePopen:
        running = 0

        def __init__(self, command, **kwargs):
            FakePopen.running += 1
            assert FakePopen.running <= 2
            events.append(("compile", command))
            tuned = cache / "cd" / f"triton_red_{len(events)}.best_config"   # what its first calls would save
            tuned.parent.mkdir(exist_ok=True)
            tuned.write_text("{}")

        def wait(self):
            FakePopen.running -= 1
            return 0

    monkeypatch.setattr(benchmark.subprocess, "Popen", FakePopen)
    monkeypatch.setattr(benchmark.subprocess, "run", lambda command, **kwargs: "--row" in command and events.append(
        ("time", command)) or benchmark.subprocess.CompletedProcess(command, 3))   # not git's
    monkeypatch.setattr(bench, "measure_throughput", lambda *a, **k: events.append(("here", None)) or
                        (_ for _ in ()).throw(RuntimeError("not measured in this test")))
    argv = ["--released", "resnet18", "resnet34", "--sources", "ecanet", "--cases", "train-compiled",
            "infer-eager", "--compile-jobs", "2", "--device", "cpu"]
    args = _args(*argv)
    args.argv = argv
    args_report = bench_report.Report(None, args)
    benchmark.run_released(args, args_report)
    kinds = [kind for kind, _ in events]
    assert kinds == ["compile"] * 4 + ["time"] * 4 + ["here"] * 4
    records = args_report.data["released"]
    assert all("exited with code 3" in r["error"] for r in records if r["case"] == "train-compiled")
    for kind, command in events[:8]:
        row = command.index("--row")
        assert command[row + 1] == "train-compiled" and command[command.index("--fresh-process") + 1] == "none"
        assert ("--repeats" in command) == (kind == "compile")
    assert sorted(int(command[command.index("--row") + 2]) for _, command in events[:4]) == [0, 1, 2, 3]
    assert sorted(cache.rglob("*.best_config")) == [earlier]


def test_a_row_outside_the_run_and_an_unknown_pair_are_refused(capsys):
    for argv, message in ((["--row", "train-eager", "x"], "takes a case"),
                          (["--cases", "infer-eager", "--row", "infer-eager", "5"], "not a row of this --released run"),
                          (["--released", "resnet19"], "takes baselines of released pairs")):
        with pytest.raises(SystemExit) as exit_info:
            benchmark.main(["--released", "resnet18", "--sources", "ecanet", "--device", "cpu", *argv])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_summarizing_a_missing_or_foreign_results_file_is_refused(tmp_path, capsys):
    (tmp_path / "other.json").write_text('{"rows": []}')
    (tmp_path / "broken.json").write_text('{"environment": ')
    for name, message in (("missing.json", "cannot read results file"), ("other.json", "no 'environment'"),
                          ("broken.json", "is not JSON")):
        with pytest.raises(SystemExit) as exit_info:
            benchmark.main(["--summarize", str(tmp_path / name), "--page", str(tmp_path / "page.md")])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "page.md").exists()


def test_a_child_that_measured_another_row_or_nothing_gives_an_error_row(tmp_path):
    import json
    expected = {"pair": "resnet18", "case": "train-compiled", "source": "ecanet", "model": "resnet18",
                "eca_impl": None}
    path = tmp_path / "row.json"
    assert "wrote no record" in benchmark._row_from_child(path, -9, expected)["error"]
    path.write_text(json.dumps({"released": [expected | {"model": "eca_resnet18", "images_per_s": 1.0}]}))
    assert "not this row" in benchmark._row_from_child(path, 0, expected)["error"]
    path.write_text(json.dumps({"released": [expected | {"images_per_s": 1.0, "vs_baseline": 2.0}]}))
    assert benchmark._row_from_child(path, 0, expected) == expected | {"images_per_s": 1.0}


def test_a_failed_compile_process_is_reported(tmp_path, monkeypatch, caplog):
    """A compile process that fails is logged with the end of its error output; the row is still timed."""
    class FailingPopen:
        def __init__(self, command, stdout, stderr):
            stderr.write("Traceback\ntorch.OutOfMemoryError: CUDA out of memory\n")
            stderr.flush()
            self.returncode = 1

        def wait(self):
            return self.returncode

    monkeypatch.setattr(benchmark.subprocess, "Popen", FailingPopen)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))   # not the shared cache it cleans
    args = _args("--released", "resnet18", "--sources", "ecanet", "--cases", "train-compiled", "--compile-jobs", "2")
    args.argv = []
    with caplog.at_level("WARNING", logger="benchmark"):
        benchmark._fill_compile_cache(args, [("train-compiled", 0), ("train-compiled", 1)], tmp_path)
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 2 and all("CUDA out of memory" in message for message in failures)


class _FakeResult:
    def __init__(self, images_per_s):
        self.images_per_s = images_per_s

    def to_dict(self):
        v = self.images_per_s
        return {"images_per_s": v, "images_per_s_min": v, "images_per_s_max": v, "images_per_s_all": [v] * 3,
                "timed_steps": 5}


def _resume_argv(path, *pairs, extra=()):
    return ["--released", *pairs, "--sources", "ecanet", "--cases", "infer-eager", "--fresh-process", "none",
            "--device", "cpu", "--json", str(path), *extra]


def test_resume_keeps_the_measured_rows_and_measures_the_rest(tmp_path, monkeypatch):
    """A run cut short (here: eca_resnet18 failed) is continued with --resume: resnet18's row is kept, the
    failed row is measured again, and pairs the first run did not name are added; the file records both runs."""
    import json
    calls = []

    def fake(model, **kwargs):
        calls.append(type(model).__name__ + str(sum(p.numel() for p in model.parameters())))
        if len(calls) == 2:                            # the first run's second row fails
            raise RuntimeError("cut short")
        return _FakeResult(100.0 * len(calls))

    monkeypatch.setattr(bench, "measure_throughput", fake)
    path = tmp_path / "released.json"
    assert benchmark.main(_resume_argv(path, "resnet18")) == 0
    first = json.loads(path.read_text())["released"]
    assert [("error" in r) for r in first] == [False, True]
    assert benchmark.main(_resume_argv(path, "resnet18", "resnet34", extra=["--resume"])) == 0
    data = json.loads(path.read_text())
    records = data["released"]
    assert [(r["model"], "error" in r) for r in records] == [("resnet18", False), ("eca_resnet18", False),
                                                             ("resnet34", False), ("eca_resnet34", False)]
    assert len(calls) == 5                                       # 2 in the first run, 3 in the second
    assert records[0]["images_per_s"] == 100.0                    # kept, not measured again
    assert records[1]["vs_baseline"] == records[1]["images_per_s"] / 100.0
    assert len(data["environment"]["continued"]) == 1
    assert benchmark.main(_resume_argv(path, "resnet18", "resnet34", extra=["--resume"])) == 0
    assert len(calls) == 5 and json.loads(path.read_text()) == data   # nothing left to measure or to write
    page = bench_report.performance_page([str(path)], bench_report.summarize([str(path)]))
    assert page.count("; continued ") == 1


def test_the_page_gives_each_command_the_path_its_results_file_is_kept_at():
    """A results file written elsewhere (the GPU machine's output folder) and kept in results/ is shown with
    the command that writes it there."""
    kept = "results/benchmark_h200_released.json"
    command = "scripts/benchmark.py --released --json /root/out/released.json --resume"
    assert bench_report.command_writing(command, kept) == (
        f"scripts/benchmark.py --released --json {kept} --resume")
    assert bench_report.command_writing("scripts/benchmark.py --released", kept) == "scripts/benchmark.py --released"


def test_host_time_times_each_eager_step_on_a_tiny_input_and_the_page_shows_its_median(tmp_path, monkeypatch):
    """--host-time adds each eager row's step time on HOST_TIME_BATCH images of HOST_TIME_IMG_SIZE px, and the
    table a column for it that rows measured without leave out."""
    import json
    shapes = []

    def fake_time_ms(step, steps, device):
        return float(len(shapes))

    real_prepared = bench._prepared_step

    def recording_prepared(model, **kwargs):
        shapes.append((kwargs["batch_size"], kwargs["img_size"], kwargs["train"], kwargs["compile"]))
        return real_prepared(model, **kwargs)

    monkeypatch.setattr(bench, "measure_throughput", lambda model, **kwargs: _FakeResult(100.0))
    monkeypatch.setattr(bench, "_prepared_step", recording_prepared)
    monkeypatch.setattr(bench, "_time_ms", fake_time_ms)
    path = tmp_path / "released.json"
    argv = ["--released", "resnet18", "--sources", "ecanet", "--cases", "train-eager", "--fresh-process", "none",
            "--device", "cpu", "--repeats", "3", "--warmup-steps", "1", "--host-time", "--json", str(path)]
    assert benchmark.main(argv) == 0
    records = json.loads(path.read_text())["released"]
    tiny = (bench.HOST_TIME_BATCH, bench.HOST_TIME_IMG_SIZE, True, False)
    assert shapes == [tiny, tiny]                          # one host timing per row, eager, training
    assert [r["host_ms_all"] for r in records] == [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]
    table = bench_report._released_markdown(records)
    assert table.splitlines()[0].endswith("| vs baseline | host ms/step |")
    assert table.splitlines()[2].endswith("| 1.0 |") and table.splitlines()[3].endswith("| 2.0 |")
    for record in records:
        del record["host_ms_all"]
    assert "host ms/step" not in bench_report._released_markdown(records)


def test_a_failed_host_timing_keeps_the_rows_throughput(tmp_path, monkeypatch):
    import json
    monkeypatch.setattr(bench, "measure_throughput", lambda model, **kwargs: _FakeResult(100.0))
    monkeypatch.setattr(bench, "measure_host_time", lambda model, **kwargs: (_ for _ in ()).throw(RuntimeError("x")))
    path = tmp_path / "released.json"
    assert benchmark.main(_resume_argv(path, "resnet18", extra=["--host-time"])) == 0
    records = json.loads(path.read_text())["released"]
    assert [(r["images_per_s"], r["host_time_error"]) for r in records] == [(100.0, "RuntimeError: x")] * 2
    assert "host ms/step" not in bench_report._released_markdown(records)


def test_resume_refuses_a_file_measured_differently_and_leaves_it_untouched(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "measure_throughput", lambda model, **kwargs: _FakeResult(10.0))
    monkeypatch.setattr(bench_report, "code_tree", lambda: "1" * 40)
    path = tmp_path / "released.json"
    assert benchmark.main(_resume_argv(path, "resnet18")) == 0
    before = path.read_bytes()
    for extra in (["--resume", "--batch-size", "128"], ["--resume", "--inductor-option", "combo_kernels=True"]):
        with pytest.raises(SystemExit) as exit_info:
            benchmark.main(_resume_argv(path, "resnet18", extra=extra))
        assert exit_info.value.code == 2 and "measured differently" in capsys.readouterr().err
        assert path.read_bytes() == before
    monkeypatch.setattr(bench_report, "code_tree", lambda: "2" * 40)   # other files, whatever the commit says
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(_resume_argv(path, "resnet18", extra=["--resume"]))
    assert exit_info.value.code == 2 and "code (git tree) 1111" in capsys.readouterr().err
    assert path.read_bytes() == before
    path.write_text('{"environment": [], "args": []}')
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(_resume_argv(path, "resnet18", extra=["--resume"]))
    assert exit_info.value.code == 2 and "is not a results file" in capsys.readouterr().err
    path.write_text("not json")
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(_resume_argv(path, "resnet18", extra=["--resume"]))
    assert exit_info.value.code == 2 and "is not a results file" in capsys.readouterr().err
    assert path.read_text() == "not json"
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--released", "resnet18", "--resume"])
    assert exit_info.value.code == 2


def test_code_tree_names_the_files_as_git_would_commit_them(tmp_path, monkeypatch):
    """code_tree is the tree id a commit of the tracked files as they are would have: equal to HEAD's on a clean
    checkout, to ``git stash create``'s with changes, blind to untracked files and to results/; it writes
    nothing to .git."""
    import subprocess
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)   # no user settings (signing, hooks) in these commits
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*command: str) -> str:
        return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *command],
                              capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    (repo / "a.txt").write_text("a\n")
    (repo / "sub" / "deeper").mkdir(parents=True)
    (repo / "sub" / "b.py").write_text("print(1)\n")
    (repo / "sub" / "deeper" / "c").write_bytes(b"\x00\x01\r\n")
    (repo / "sub-file").write_text("sorts between 'sub' and 'sub/' in git's order\n")
    for odd in ('"quoted.txt', "new\nline", "space and \u00e9"):   # names git quotes or that hold a newline
        (repo / odd).write_text(odd)
    (repo / "run.sh").write_text("#!/bin/sh\n")
    (repo / "run.sh").chmod(0o755)
    (repo / "link").symlink_to("a.txt")
    git("add", "-A")
    git("commit", "-qm", "files")
    assert bench_report.code_tree(repo) == git("rev-parse", "HEAD^{tree}")
    objects = sorted(p.name for p in (repo / ".git" / "objects").rglob("*"))
    (repo / "a.txt").write_text("changed\n")
    (repo / "untracked.json").write_text("{}")
    changed = bench_report.code_tree(repo)
    assert sorted(p.name for p in (repo / ".git" / "objects").rglob("*")) == objects
    assert changed != git("rev-parse", "HEAD^{tree}")
    assert changed == git("rev-parse", git("stash", "create") + "^{tree}")
    (repo / "results").mkdir()
    (repo / "results" / "benchmark.json").write_text("{}")
    git("add", "results")
    (repo / "results" / "benchmark.json").write_text('{"continued": 1}')   # a tracked results file, continued
    assert bench_report.code_tree(repo) == changed
    (tmp_path / "plain").mkdir()
    assert bench_report.code_tree(tmp_path / "plain") is None   # not a git checkout
