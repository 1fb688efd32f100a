"""The public API of the package, and the docs pages that are generated from results files."""
from __future__ import annotations

import importlib.util
import inspect

import torch

import ecanet
from conftest import ROOT

PUBLIC = ("create_model", "list_models", "load_model", "EcaModule")


def test_the_public_api_is_listed_documented_and_works(tmp_path):
    assert set(PUBLIC) <= set(dir(ecanet)) and set(PUBLIC) <= set(ecanet.__all__)
    for name in PUBLIC:
        assert inspect.getdoc(getattr(ecanet, name)), name
    assert "eca_resnet50" in ecanet.list_models("eca_*")
    model = ecanet.create_model("eca_resnet18", k_size="3577", num_classes=10)
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    loaded = ecanet.load_model(path)
    assert not loaded.training and loaded.eca_impl == "auto"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    layer = ecanet.EcaModule(64)
    assert layer(torch.randn(2, 64, 4, 4)).shape == (2, 64, 4, 4)


def test_the_official_layout_name_re_exports_the_networks():
    import models  # the checkout's top-level folder, as in the official repository
    from ecanet import models as networks
    assert models.create_model is networks.create_model and models.eca_resnet50 is networks.eca_resnet50


def test_performance_page_is_generated_from_the_results_file(monkeypatch):
    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    results = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "results").glob("benchmark_*.json"))
    assert results, "no benchmark results file"
    monkeypatch.chdir(ROOT)  # the page names the results files as the command was given them, from the root
    page = benchmark.performance_page(results, benchmark.summarize(results))
    assert (ROOT / "docs" / "performance.md").read_text() == page, \
        "docs/performance.md is stale: python scripts/benchmark.py --summarize results/benchmark_*.json --page docs/performance.md"
