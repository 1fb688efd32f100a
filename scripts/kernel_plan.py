#!/usr/bin/env python
"""The kernels a compiled training step of one MobileNetV2 block launches on a GPU, counted without one.

    python scripts/kernel_plan.py [--channels 32] [--size 28] [--k 1] [--batch 256] [--json] [-v]

A compiled ECA-MobileNetV2 training step is bound by the host launching its kernels one by one
(docs/design/fused_eca.md), so the number of launches is what its speed follows. This script has Inductor
generate the CUDA code of one stride-1 inverted residual block (expansion 6, ``channels`` in and out,
``size`` x ``size`` maps, bf16 autocast, channels_last), forward and backward, without a GPU, and counts
the launches in the generated code: Inductor's Triton kernels, the Triton kernels of ecanet's ops and
extern calls (the convolutions). It prints them for the plain block and the ECA block (kernel size ``k``),
whose tail runs as ecanet's Triton kernels (what ECA-MobileNetV2 runs) or in the decomposed form that
Inductor fuses (what ECA-ResNets run).

How, without a GPU: Triton is given a stand-in driver that reports an sm_90 (H100/H200) target, Inductor
generates Triton code for the CPU tensors (``cpu_backend="triton"``) with an H200's SM count (its reduction
heuristics read it), and ecanet's Triton tail is allowed on CPU tensors. Loading the generated kernels then
fails, as it must without a GPU, after the code has been written; the step runs on with no kernel launched.
The process cannot run Triton kernels afterwards.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

H200_SMS = 132                 # streaming multiprocessors of an H200 (and an H100 SXM)
SM90 = ("cuda", 90, 32)        # Triton target: backend, compute capability, warp size
EXPANSION = 6                  # MobileNetV2's t for every block but the first (Table 2)
BLOCKS = (("plain", None, False), ("eca, Triton tail", "eca", True), ("eca, decomposed tail", "eca", False))
LAUNCH = re.compile(r"\b(\w+)\.run\(|extern_kernels\.(\w+)\(|torch\.ops\.\w+\.(\w+)\.\w+\(")


def _plan_as_sm90() -> None:
    """Make Inductor and Triton generate sm_90 code on this machine; see the module docstring."""
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver

    class StandInDriver:   # what Inductor asks the active Triton driver while it generates code
        def get_current_target(self):
            return GPUTarget(*SM90)

        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

        def get_active_torch_device(self):
            return torch.device("cpu")

    driver.set_active(StandInDriver())
    import torch._inductor.config as inductor_config
    import triton.runtime.jit as triton_jit
    from torch._dynamo import device_interface
    from torch._inductor.runtime import hints, triton_helpers

    create = hints.DeviceProperties.create.__func__
    hints.DeviceProperties.create = classmethod(lambda cls, device: create(cls, device)._replace(
        multi_processor_count=H200_SMS, cc=SM90[1], major=SM90[1] // 10, warp_size=SM90[2]))
    inductor_config.cpu_backend = "triton"
    inductor_config.compile_threads = 1
    # ecanet's triton_op kernels on CPU tensors: Inductor checks for a CPU Triton backend and filters the
    # launch options by the target's backend, neither of which exists here.
    device_interface.CpuInterface.raise_if_triton_unavailable = staticmethod(lambda *args, **kwargs: None)
    triton_helpers.try_filter_backend_options_for_target = lambda *args, **kwargs: {}
    triton_jit.JITFunction.run = lambda self, *args, **kwargs: None   # the eager run launches nothing
    for name in ("torch", "triton"):   # the kernels' failed loads log errors; the plan is complete regardless
        logging.getLogger(name).setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", message="Could not find an active CPU backend")


def launches(attention: str | None, channels: int, size: int, k: int, batch: int,
             triton_tail: bool = True) -> dict[str, list[str]]:
    """{"forward": [...], "backward": [...]}: the kernels each generated graph launches, in order.
    ``triton_tail`` False has the ECA block take the decomposed tail instead of ecanet's Triton kernels."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func
    from torch._functorch.partitioners import min_cut_rematerialization_partition
    from torch._inductor import compile_fx
    from torch._inductor.decomposition import select_decomp_table
    from ecanet.models import eca_module
    from ecanet.models.mobilenetv2 import InvertedResidual

    codes: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            codes.append(record.getMessage())

    from torch._inductor.codecache import output_code_log as logger   # where Inductor logs its generated code
    logger.addHandler(Collect())
    logger.setLevel(logging.DEBUG)
    logger.propagate = False

    def compiler(is_backward: bool):
        def compile_graph(graph, example_inputs):
            try:
                compile_fx.compile_fx_inner(graph, example_inputs, is_backward=is_backward)
            except Exception:  # noqa: BLE001 -- loading the kernels fails without a GPU; the code is written
                pass
            return make_boxed_func(graph.forward)
        return compile_graph

    # As torch.compile's Inductor backend: the same partitioner, decompositions and in-graph buffer updates.
    backend = aot_autograd(fw_compiler=compiler(False), bw_compiler=compiler(True),
                           partition_fn=min_cut_rematerialization_partition, decompositions=select_decomp_table(),
                           keep_inference_input_mutations=True)
    if eca_module.bn_eca_fused is not None:   # the block's tensors are on the CPU; its tail qualifies otherwise
        eca_module.bn_eca_fused.supports_training_tail = lambda x, bn, identity=None, *, weight: triton_tail
    block = InvertedResidual(channels, channels, 1, EXPANSION, attention, k if attention else None)
    block = block.to(memory_format=torch.channels_last).train()
    x = torch.randn(batch, channels, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()
    torch._dynamo.reset()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = torch.compile(block, backend=backend, fullgraph=True)(x)
    out.float().sum().backward()
    graphs = [_launched(code) for code in codes if "def call(" in code]
    if len(graphs) != 2:
        raise RuntimeError(f"expected a forward and a backward graph, got {len(graphs)}")
    return {"forward": graphs[0], "backward": graphs[1]}


def _launched(code: str) -> list[str]:
    """The kernels a generated module's ``call()`` launches, in order."""
    body = code[code.index("def call("):]
    return [next(name for name in match.groups() if name) for match in LAUNCH.finditer(body)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=32, help="the block's input and output channels")
    parser.add_argument("--size", type=int, default=28, help="height and width of its maps")
    parser.add_argument("--k", type=int, default=1, help="ECA kernel size (the release: 1 below 96 channels, else 3)")
    parser.add_argument("--batch", type=int, default=256, help="batch size")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("-v", "--verbose", action="store_true", help="also list the kernels")
    args = parser.parse_args(argv)
    if min(args.channels, args.size, args.batch) < 1 or args.k < 1 or args.k % 2 == 0:
        parser.error("--channels, --size and --batch must be at least 1, and --k a positive odd number")
    try:
        import triton  # noqa: F401
    except ImportError:
        parser.error("this needs Triton (it ships with PyTorch's CUDA builds and with the project's .venv)")
    _plan_as_sm90()
    plans = {name: launches(attention, args.channels, args.size, args.k, args.batch, triton_tail)
             for name, attention, triton_tail in BLOCKS}
    if args.json:
        print(json.dumps(plans))
        return
    print(f"Kernels launched by one compiled training step of a MobileNetV2 block ({args.channels} channels, "
          f"{args.size}x{args.size}, batch {args.batch}, ECA k={args.k}), generated for sm_90:")
    print("| block | forward | backward | total |\n|---|---|---|---|")
    for name, plan in plans.items():
        print(f"| {name} | {len(plan['forward'])} | {len(plan['backward'])} | "
              f"{len(plan['forward']) + len(plan['backward'])} |")
    if args.verbose:
        for name, plan in plans.items():
            for graph, kernels in plan.items():
                print(f"{name} {graph}: {' '.join(kernels)}")


if __name__ == "__main__":
    main()
