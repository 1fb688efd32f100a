"""scripts/kernel_plan.py: the kernels a compiled training step of a MobileNetV2 block launches, generated for
an sm_90 GPU on this CPU-only machine. The compiled ECA-MobileNetV2 step is bound by its launches: the block's
Triton tail must launch no more kernels than the plain block does, and fewer than the decomposed tail."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from ecanet.models import eca_module
from conftest import ROOT

# The tail's kernels, in launch order (ecanet/models/bn_eca_fused.py).
FORWARD_TAIL = ["_bn_stats_kernel", "_bn_finalize_kernel", "_running_stats_kernel", "_bn_eca_apply_kernel"]
BACKWARD_TAIL = ["_bn_eca_backward_reduce_kernel", "_bn_eca_gate_backward_kernel", "_bn_eca_backward_apply_kernel"]


@pytest.mark.skipif(eca_module.bn_eca_fused is None, reason="the Triton tail did not import")
def test_the_triton_tail_launches_fewer_kernels_than_the_plain_block():
    done = subprocess.run([sys.executable, "scripts/kernel_plan.py", "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    plans = json.loads(done.stdout.strip().splitlines()[-1])
    total = {name: len(plan["forward"]) + len(plan["backward"]) for name, plan in plans.items()}
    assert total["eca, Triton tail"] < total["plain"] < total["eca, decomposed tail"], total

    def ours(kernels):
        return [re.sub(r"_\d+$", "", k) for k in kernels if k.startswith("_bn") or k.startswith("_running")]
    tail = plans["eca, Triton tail"]
    assert ours(tail["forward"]) == FORWARD_TAIL and ours(tail["backward"]) == BACKWARD_TAIL
    assert not ours(plans["eca, decomposed tail"]["forward"])
