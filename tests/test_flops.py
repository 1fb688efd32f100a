"""ecanet.flops and paras_flops.py: pinned counts, the paper's units, the attention overhead, the CLI.

The pinned figures are what ``python paras_flops.py --all --json -`` prints (thop 0.1.1.post2209072238);
counts depend on shapes only, so they hold on every machine.
"""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ecanet import models
import paras_flops
from conftest import ROOT
from ecanet import flops
from ecanet.errors import EXIT_USAGE

# (arch, k_size) -> (parameters, thop MACs with the attention pooling charged, torch FLOPs), 224x224.
PINNED = {
    ("eca_resnet18", "3577"): (11_689_556, 1_824_800_768, 3_628_171_520),
    ("eca_resnet50", "3557"): (25_557_112, 4_139_363_328, 8_178_541_056),
    ("eca_mobilenet_v2", None): (3_504_903, 328_064_224, 601_555_904),
    ("resnet50", None): (25_557_032, 4_133_742_592, 8_178_368_512),
}
ECA50_MACS_AS_WRITTEN = 4_133_828_864  # ecanet's x.mean pooling, as thop sees it: free
RESNET18_PARAMS = 11_689_512
THOP_RELATIVE_TOLERANCE = 1e-3  # only when the installed thop is not the pinned release


def _pinned_thop_version() -> str:
    """The thop version pyproject.toml pins (its dependency list is where the pins live)."""
    text = (ROOT / "pyproject.toml").read_text()
    return re.search(r"""^\s*["']thop==([^"']+)["']""", text, re.MULTILINE).group(1)


def assert_thop_macs(measured: int, pinned: int) -> None:
    if flops.THOP_VERSION == _pinned_thop_version():
        assert measured == pinned
    else:
        assert measured == pytest.approx(pinned, rel=THOP_RELATIVE_TOLERANCE)


class OfficialEcaLayer(nn.Module):
    """The official ``eca_layer``'s structure: pooling, convolution and gate as modules, so thop sees the
    pooling as the official code did (ecanet's EcaModule pools with a functional ``x.mean``)."""

    def __init__(self, k_size: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:                 # x: (B, C, H, W)
        y = self.avg_pool(x)                                             # (B, C, 1, 1)
        y = self.conv(y.squeeze(-1).transpose(-1, -2))                   # (B, 1, C)
        return x * self.sigmoid(y.transpose(-1, -2).unsqueeze(-1))       # (B, C, H, W)


def _with_official_eca_layers(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    for name, k_size in models.eca_kernel_sizes(model).items():
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, OfficialEcaLayer(k_size))
    return model


# ------------------------------------------------------------------------------------------- counts
@pytest.mark.parametrize(("arch", "k_size"), list(PINNED))
def test_pinned_counts(arch, k_size):
    params, macs, torch_flops = PINNED[(arch, k_size)]
    cost = flops.model_cost(arch, k_size)
    assert cost.params == params
    assert_thop_macs(cost.macs, macs)
    assert cost.flops == torch_flops


def test_paper_units_of_eca_resnet50():
    cost = flops.model_cost("eca_resnet50", "3557")
    assert flops.format_paper_units(cost.params) == "24.37M"  # the README's and the paper's figures
    assert flops.format_paper_units(cost.macs) == "3.86G"
    assert flops.format_paper_units(cost.macs, decimals=3) == "3.855G"  # what the official tool printed
    assert flops.format_si(cost.params) == "25.56 M"
    assert flops.format_si(cost.macs) == "4.14 G"


def test_unit_formats():
    assert flops.format_si(80) == "80"
    assert flops.format_si(86_272) == "86.27 k"
    assert flops.format_si(8_178_541_056) == "8.18 G"
    # The official thresholds are decimal, the divisors binary: 1.0e9 is still "M", 1.05e9 is below 1 "G".
    assert flops.format_paper_units(1_000_000_000) == "953.67M"
    assert flops.format_paper_units(1_050_000_000) == "0.98G"
    assert flops.format_paper_units(86_272) == "84.25K"
    assert flops.format_paper_units(80) == "80.00B"


def test_attention_overhead_of_eca_resnet50():
    overhead = flops.attention_overhead(flops.build_model("eca_resnet50", "3557"))
    assert overhead == flops.AttentionCost(
        kind="ECA", layers=16,
        params=80,                     # 3*3 + 4*5 + 6*5 + 3*7
        macs=86_272,                   # sum of C*k: 3*256*3 + 4*512*5 + 6*1024*5 + 3*2048*7
        flops=172_544,                 # torch: 2 x the 1-D convolutions' MACs; its pooling charge is 0
        pool_macs=5_534_464,           # thop's nn.AdaptiveAvgPool2d charge, sum of C*(H*W + 1)
        rescaled_elements=5_519_360,   # sum of C*H*W, charged by neither counter
    )


def test_attention_overhead_of_se_and_plain_networks():
    se = flops.attention_overhead(flops.build_model("se_resnet50"))
    assert (se.kind, se.layers, se.params, se.macs, se.pool_macs) == ("SE", 16, 2_530_992, 2_514_944, 5_534_464)
    assert se.flops == 2 * se.macs
    plain = flops.attention_overhead(flops.build_model("resnet50"))
    assert plain == flops.AttentionCost(None, 0, 0, 0, 0, 0, 0)


def test_pooling_charge_reproduces_the_official_eca_layer():
    """thop on the official layer structure gives the README's 4,139,363,328 MACs for ECA-ResNet-50;
    ecanet's x.mean is free to thop, and count_thop adds exactly the official pooling's charge."""
    model = flops.build_model("eca_resnet50", "3557")
    image = torch.empty(1, 3, 224, 224, device="meta")
    official_macs, _ = thop_profile(_with_official_eca_layers(model), image)
    as_written, _ = thop_profile(copy.deepcopy(model), image)
    assert_thop_macs(official_macs, PINNED[("eca_resnet50", "3557")][1])
    assert_thop_macs(as_written, ECA50_MACS_AS_WRITTEN)
    count = flops.count_thop(model)
    assert (count.macs, count.macs_as_written) == (official_macs, as_written)
    assert flops.count_thop(model, charge_attention_pooling=False).macs == as_written
    # torch's counter charges the official pooling nothing either.
    with FlopCounterMode(display=False) as counter:
        _with_official_eca_layers(model)(image)
    assert counter.get_total_flops() == flops.count_torch_flops(model).flops


def thop_profile(model: nn.Module, image: torch.Tensor) -> tuple[int, int]:
    macs, params = flops.thop.profile(model, inputs=(image,), verbose=False)
    return int(macs), int(params)


def test_official_pool_macs_is_thops_rule():
    image = torch.empty(2, 64, 14, 14)
    macs, _ = thop_profile(nn.AdaptiveAvgPool2d(1), image)
    assert flops.official_pool_macs(image.shape) == macs == 2 * 64 * (14 * 14 + 1)


def test_counters_agree_on_convolutions_and_matmuls():
    """torch's FLOPs are exactly 2 x thop's convolution and linear MACs; thop's other charges are BN and pooling."""
    model = flops.build_model("eca_resnet50", "3557")
    count = flops.count_thop(model)
    by_type = count.macs_by_layer_type
    assert sum(by_type.values()) == count.macs_as_written
    assert set(by_type) == {"AdaptiveAvgPool2d", "BatchNorm2d", "Conv1d", "Conv2d", "Linear"}
    torch_count = flops.count_torch_flops(model)
    assert torch_count.flops == 2 * (by_type["Conv2d"] + by_type["Conv1d"] + by_type["Linear"])
    assert set(torch_count.flops_by_op) == {"aten.convolution", "aten.addmm"}


def test_counting_leaves_the_model_unchanged():
    torch.manual_seed(0)
    model = models.create_model("eca_resnet18", k_size="3577")  # a real model, on the CPU, training mode
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flops.count_thop(model)
    flops.count_torch_flops(model)
    flops.attention_overhead(model)
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and next(model.parameters()).device.type == "cpu"
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    # Why the copy: thop itself leaves buffers behind on the modules it has no rule for.
    victim = copy.deepcopy(model)
    thop_profile(victim, torch.empty(1, 3, 64, 64))
    assert "total_ops" in victim.state_dict()


def test_counts_do_not_depend_on_the_eca_implementation():
    # A fused model would skip the hooked module calls, or refuse meta tensors: the counters count a plain copy.
    model = models.set_eca_impl(flops.build_model("eca_resnet50", "3557"), "fused")
    cost = flops.cost_of(model, "eca_resnet50", "3557")
    assert model.eca_impl == "fused"                    # the caller's model keeps its choice
    assert {m.impl for m in model.modules() if isinstance(m, models.EcaModule)} == {"fused"}
    assert (cost.params, cost.flops, cost.attention.macs) == (25_557_112, 8_178_541_056, 86_272)
    assert_thop_macs(cost.macs, PINNED[("eca_resnet50", "3557")][1])


def test_released_mobilenet_rule_is_the_builder_default():
    assert flops.released_k_size("eca_mobilenet_v2") is None
    assert flops.released_k_size("eca_resnet50") == "3557" and flops.released_k_size("resnet50") is None
    default = models.eca_kernel_sizes(flops.build_model("eca_mobilenet_v2"))
    assert default == models.eca_kernel_sizes(flops.build_model("eca_mobilenet_v2", "13"))


def test_img_size_scales_the_count():
    small = flops.model_cost("resnet18", img_size=112)
    assert small.params == RESNET18_PARAMS
    assert small.flops < flops.model_cost("resnet18").flops / 3  # 1/4 of the convolutions, same classifier


# ------------------------------------------------------------------------------------------- CLI
def test_cli_all_markdown_and_json(tmp_path, capsys, monkeypatch):
    """--all counts what released_models() lists (every network, in the paper's table order, ECA networks
    with the kernel sizes of the official checkpoints: `make model-table`); here three of them, to keep the
    suite fast. test_pinned_counts pins four networks' figures."""
    every = flops.released_models()
    assert every == [("mobilenet_v2", None), ("eca_mobilenet_v2", None)] + [
        (f"{attention}resnet{depth}", k if attention == "eca_" else None)
        for depth, k in ((18, "3577"), (34, "3357"), (50, "3557"), (101, "3357"), (152, "3357"))
        for attention in ("", "se_", "eca_")]
    chosen = [(arch, k) for arch, k in every if arch in ("resnet18", "eca_resnet50", "eca_mobilenet_v2")]
    monkeypatch.setattr(flops, "released_models", lambda: chosen)
    path = tmp_path / "costs.json"
    assert paras_flops.main(["--all", "--markdown", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    by_arch = {m["arch"]: m for m in data["models"]}
    assert sorted(by_arch) == sorted(arch for arch, _ in chosen)
    assert data["thop_version"] == flops.THOP_VERSION
    for arch in ("eca_resnet50", "eca_mobilenet_v2"):
        assert by_arch[arch]["k_size"] == models.RELEASED_KERNEL_SIZES[arch]
    eca50 = by_arch["eca_resnet50"]
    assert (eca50["params"], eca50["formatted"]["params_paper"], eca50["formatted"]["macs_paper"]) == \
        (25_557_112, "24.37M", "3.86G")
    assert eca50["attention"]["params"] == 80 and eca50["attention"]["macs"] == 86_272
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| model", "| ---"))]
    assert len(rows) == len(chosen)
    assert "| eca_resnet50 | 3557 | 25.56 M | 24.37M | 4.14 G | 3.86G | 8.18 G | 80 | 86.27 k | 5.53 M |" in rows


def test_cli_report_of_one_model(capsys):
    assert paras_flops.main(["-a", "eca_resnet50", "--ksize", "3557"]) == 0
    out = capsys.readouterr().out
    for expected in ("25,557,112", "24.37M", "4,139,363,328", "3.86G", "8,178,541,056", "16 ECA layers",
                     "parameters 80", "86,272 MACs", "5,534,464"):
        assert expected in out


@pytest.mark.parametrize("argv", [["-a", "eca_resnet51"], ["-a", "eca_resnet50", "--ksize", "4"],
                                  ["-a", "resnet50", "--ksize", "3"], ["-a", "eca_resnet50", "--ksize", "35"]])
def test_cli_bad_input_exits_2(argv, capsys):
    assert paras_flops.main(argv) == EXIT_USAGE
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("argv", [["--all", "-a", "resnet50"], ["--all", "--ksize", "3"], ["--img-size", "8"],
                                  ["--num-classes", "0"], ["--json", "-", "--markdown"]])
def test_cli_conflicting_options_exit_2(argv, capsys):
    assert paras_flops.main(argv) == EXIT_USAGE
    assert capsys.readouterr().out == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_cli_bench_without_cuda_exits_2(capsys):
    assert paras_flops.main(["--bench"]) == EXIT_USAGE
    assert capsys.readouterr().out == ""


def test_cli_bench_without_ecanet_bench_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "ecanet.bench", None)  # makes the import fail
    assert paras_flops.main(["--bench"]) == EXIT_USAGE
    assert capsys.readouterr().out == ""


def test_cli_unknown_arch_in_a_process():
    result = subprocess.run([sys.executable, str(ROOT / "paras_flops.py"), "-a", "eca_resnet51"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_USAGE
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "unknown architecture 'eca_resnet51'" in result.stderr and "eca_resnet50" in result.stderr
