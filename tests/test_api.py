"""The public API of the package, and the docs pages that are generated from results files."""
from __future__ import annotations

import importlib.util
import inspect
import re

import pytest
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


def test_the_submodules_the_package_names_are_reached_from_a_plain_import():
    """``import ecanet`` then ``ecanet.models...``: the submodules the package docstring lists load on first
    use, as the public names do (checked in a fresh interpreter, where nothing imported them before)."""
    import subprocess
    import sys
    named = re.findall(r":mod:`ecanet\.(\w+)`", ecanet.__doc__)
    code = ("import ecanet, sys; assert 'ecanet.models' not in sys.modules; "
            f"print([getattr(ecanet, name).__name__ for name in {named!r}])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == str([f"ecanet.{name}" for name in named])
    assert set(named) <= set(ecanet._SUBMODULES)


def test_the_official_layout_name_builds_networks_as_the_official_code_does():
    """Scripts written for the official repository call its functions: k_size first, the official defaults
    ([3, 3, 3, 3]), a ``pretrained`` flag, and ``models.__dict__[arch]`` as its main.py does."""
    import models  # the checkout's top-level folder, as in the official repository
    from ecanet import models as networks
    assert models.create_model is networks.create_model and models.EcaModule is networks.EcaModule
    kernel_sizes = lambda model: list(networks.eca_kernel_sizes(model).values())  # noqa: E731
    model = models.eca_resnet50(k_size=[3, 5, 5, 7], num_classes=1000, pretrained=False)
    assert kernel_sizes(model) == kernel_sizes(networks.create_model("eca_resnet50", k_size="3557"))
    assert model.state_dict().keys() == networks.create_model("eca_resnet50").state_dict().keys()
    assert set(kernel_sizes(models.__dict__["eca_resnet101"]())) == {3}   # the official default
    # the official main.py's --ksize is parsed with type=list: '3557' arrives as ['3', '5', '5', '7']
    assert kernel_sizes(models.__dict__["eca_resnet50"](k_size=list("3557"))) == kernel_sizes(model)
    assert kernel_sizes(models.eca_resnet50(k_size="3557", eca_impl="plain")) == kernel_sizes(model)
    assert set(kernel_sizes(models.eca_resnet50(k_size=None))) == {3}
    small = models.eca_resnet18([3, 5, 7, 7], 10)
    assert small.fc.out_features == 10 and kernel_sizes(small) == kernel_sizes(
        networks.create_model("eca_resnet18", k_size="3577"))
    mobile = models.eca_mobilenet_v2(pretrained=False, num_classes=10, width_mult=1.0)
    assert kernel_sizes(mobile) == [1] * 10 + [3] * 7 and mobile.classifier[-1].out_features == 10
    for build in (models.eca_resnet34, models.eca_mobilenet_v2):
        with pytest.raises(ValueError, match="pretrained=True.*ecanet.load_model"):
            build(pretrained=True)


def test_performance_page_is_generated_from_the_results_files_it_names(monkeypatch):
    """docs/performance.md is what its own first line's command makes of the results files it names; a results
    file the page leaves out is evidence a design page cites, not a stray."""
    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    page_path = ROOT / "docs" / "performance.md"
    command = re.search(r"`python scripts/benchmark.py --summarize (.+?) --page docs/performance.md`",
                        page_path.read_text())
    assert command, "docs/performance.md does not say which results files it was generated from"
    results = command.group(1).split()
    assert results and all((ROOT / path).is_file() for path in results), results
    monkeypatch.chdir(ROOT)  # the page names the results files as the command was given them, from the root
    page = benchmark.performance_page(results, benchmark.summarize(results))
    assert page_path.read_text() == page, f"docs/performance.md is stale: {command.group(0).strip('`')}"
    docs = "".join(path.read_text() for path in (ROOT / "docs").rglob("*.md"))
    for path in (ROOT / "results").glob("benchmark_*.json"):
        cited = re.search(rf"results/{re.escape(path.name)}\b", docs)
        assert str(path.relative_to(ROOT)) in results or cited, f"{path.name}: on no page, cited by no doc"