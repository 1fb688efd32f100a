"""scripts/benchmark.py --released: which networks it measures, the ratios and the table (no timing here)."""
from __future__ import annotations

import argparse

from conftest import load_script

benchmark = load_script("benchmark")


def _args(*argv: str) -> argparse.Namespace:
    return benchmark.build_parser().parse_args(list(argv))


def _row(pair, model, source, role, case, images_per_s, impl=None):
    return {"pair": pair, "model": model, "source": source, "role": role, "eca_impl": impl, "case": case,
            "images_per_s": images_per_s, "images_per_s_min": images_per_s - 1,
            "images_per_s_max": images_per_s + 1, "images_per_s_all": [images_per_s - 1, images_per_s,
                                                                         images_per_s + 1], "timed_steps": 7}


def test_released_pairs_are_the_six_released_networks_each_with_its_baseline():
    rows = benchmark._released_builders(_args("--released", "--no-timm"))
    labels = [(r["model"], r["role"], r["eca_impl"]) for r, _ in rows]
    assert labels == [label for eca, base in benchmark.RELEASED_PAIRS
                      for label in ((base, "baseline", None), (eca, "eca", "auto"))]
    assert len(labels) == 12
    only = benchmark._released_builders(_args("--released", "mobilenet_v2", "--eca-impl", "auto", "plain",
                                              "--no-timm"))
    assert [(r["model"], r["eca_impl"]) for r, _ in only] == [
        ("mobilenet_v2", None), ("eca_mobilenet_v2", "auto"), ("eca_mobilenet_v2", "plain")]
    model = only[1][1]()
    assert model.eca_impl == "auto" and type(model).__name__ == "MobileNetV2"


def test_missing_official_code_is_skipped_not_an_error(tmp_path, caplog):
    assert benchmark.load_official_models(None) is None
    assert benchmark.load_official_models(str(tmp_path)) is None
    assert "official rows skipped" in caplog.text
    rows = benchmark._released_builders(_args("--released", "resnet18", "--official-code", str(tmp_path), "--no-timm"))
    assert [r["source"] for r, _ in rows] == ["ecanet", "ecanet"]


def test_official_code_is_imported_as_a_package(tmp_path):
    package = tmp_path / "models"
    package.mkdir()
    (package / "__init__.py").write_text("from .nets import *\n")
    (package / "nets.py").write_text("def eca_resnet18(k_size=(3, 3, 3, 3)):\n    return ('built', list(k_size))\n")
    rows = benchmark._released_builders(_args("--released", "resnet18", "--official-code", str(package), "--no-timm"))
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
    assert lines[3] == "| resnet50 | train-eager | eca_resnet50 (auto) | ecanet | 950 | 949-951 | 3x7 | 0.950x |"
    assert lines[-1].startswith("| mobilenet_v2 | infer-eager | mobilenet_v2 | ecanet | error | RuntimeError")
