"""scripts/benchmark.py --released: which networks it measures, the ratios and the table (no timing here)."""
from __future__ import annotations

import argparse

import pytest
import torch

from conftest import load_script
from ecanet import bench

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
    assert labels == [label for eca, base in benchmark.RELEASED_PAIRS
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
    benchmark._released_ratios(records)
    assert [r.get("vs_baseline") for r in records] == [None, 0.95, 0.8, None, 870 / 900]
    table = benchmark._released_markdown(records + [{"pair": "mobilenet_v2", "model": "mobilenet_v2", "source": "ecanet",
                                                     "role": "baseline", "eca_impl": None, "case": "infer-eager",
                                                     "error": "RuntimeError: out of memory"}])
    lines = table.splitlines()
    assert lines[3] == ("| resnet50 | train-eager | eca_resnet50 (auto) | ecanet | 950 | 949-951 | 0.21% | 3x7 "
                        "| 0.950x |")
    assert lines[-1].startswith("| mobilenet_v2 | infer-eager | mobilenet_v2 | ecanet | error | RuntimeError")


def _pair_records(ratio: float, eca_spread: float, base_spread: float = 0.0) -> list[dict]:
    """ecanet's six pairs in all four cases, every ECA network at ``ratio`` of its baseline."""
    records = []
    for eca, base in benchmark.RELEASED_PAIRS:
        for case in benchmark.CASES:
            for model, role, rate, spread, impl in ((base, "baseline", 1000.0, base_spread, None),
                                                    (eca, "eca", 1000.0 * ratio, eca_spread, "auto")):
                records.append(_row(base, model, "ecanet", role, case, rate, impl) | {
                    "images_per_s_min": rate * (1 - spread / 2), "images_per_s_max": rate * (1 + spread / 2)})
    benchmark._released_ratios(records)
    return records


def test_targets_name_each_slow_or_unsteady_measurement_and_what_was_not_measured():
    met = benchmark._released_targets(_pair_records(0.96, eca_spread=0.0008))
    assert "24 of 24 measurements met" in met and "not measured" not in met
    assert "24 of 24 met" in met                       # spreads under the noise floor pass

    records = _pair_records(0.96, eca_spread=0.004, base_spread=0.001)
    slow = next(r for r in records if r["model"] == "eca_resnet152" and r["case"] == "train-compiled")
    slow["images_per_s"] = 940.0
    benchmark._released_ratios(records)
    verdict = benchmark._released_targets([r for r in records if not (r["pair"] == "mobilenet_v2"
                                                                      and r["case"] == "infer-compiled")])
    assert "22 of 23 measurements met; NOT met: eca_resnet152 train-compiled 0.940x" in verdict
    assert "(not measured: mobilenet_v2 infer-compiled)" in verdict
    assert "spread" in verdict and "0 of 23 met; NOT met: eca_resnet18 (auto) [ecanet] train-eager 0.40% " \
           "(baseline 0.10%)" in verdict


def test_ratio_table_has_one_row_per_eca_network_and_code():
    records = [_row("resnet50", "resnet50", "ecanet", "baseline", "train-eager", 1000.0),
               _row("resnet50", "eca_resnet50", "ecanet", "eca", "train-eager", 950.0, "auto"),
               _row("resnet50", "eca_resnet50", "official", "eca", "train-eager", 800.0),
               _row("resnet50", "resnet50", "ecanet", "baseline", "infer-eager", 2000.0),
               _row("resnet50", "eca_resnet50", "ecanet", "eca", "infer-eager", 2100.0, "auto")]
    benchmark._released_ratios(records)
    lines = benchmark._released_ratio_table(records).splitlines()
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
    benchmark._released_ratios(records)
    verdict = benchmark._released_targets(records)
    assert "23 of 24 measurements met; NOT met: eca_resnet18 train-eager failed" in verdict
    assert "none measured" in benchmark._released_targets([])


def test_merged_results_files_keep_each_runs_own_baseline(tmp_path):
    import json
    paths = []
    for index, scale in enumerate((1.0, 0.5)):      # the second run's machine is twice as slow
        records = [_row("resnet50", "resnet50", "ecanet", "baseline", "train-eager", 1000.0 * scale),
                   _row("resnet50", "eca_resnet50", "ecanet", "eca", "train-eager", 960.0 * scale, "auto")]
        path = tmp_path / f"run{index}.json"
        path.write_text(json.dumps({"environment": {}, "args": {}, "released": records}))
        paths.append(str(path))
    summary = benchmark.summarize(paths)
    # the ratio table (one row per network) and the two runs' rows of every measurement
    assert summary.count("| 0.960x |") == 3 and "1.920x" not in summary and "0.480x" not in summary


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
                                                  "--cases", "infer-compiled")),
                        (benchmark.run_models, ("--archs", "resnet18", "--cases", "infer-compiled")),
                        (benchmark.run_profile, ("--archs", "resnet18", "--cases", "infer-compiled", "--profile", "1")),
                        (benchmark.run_loss_curve, ("--loss-curve", "1", "--eca-impl", "auto", "plain",
                                                    "--compile", "on"))):
        args = _args(*argv, *common)
        suite(args, benchmark.Report(None, args))
    compiled = [kwargs for calls in seen.values() for kwargs in calls if kwargs.get("compile")]
    assert {name for name, calls in seen.items() if any(c.get("compile") for c in calls)} == {
        "measure_throughput", "profile_step", "loss_curves"}
    assert len(compiled) == 2 + 1 + 1 + 1   # resnet18 and eca_resnet18 released, one --archs, profile, curve
    assert all(kwargs["compile_options"] == {"combo_kernels": True} for kwargs in compiled)
