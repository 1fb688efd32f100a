"""ECA-MobileNetV2's block tail, ECA(BN(x)) [+ x] with no ReLU, through every ECA implementation.

CPU: the eager block computes exactly what the official block does (``x + conv(x)``, bit for bit); under
torch.compile (``aot_eager``) 'auto' takes the BatchNorm+ECA decomposition and matches the eager block in
float64, forward, backward and running statistics; the fused Triton kernels under Triton's interpreter
(tests named ``interpreter``, in a subprocess).
GPU: the whole network, fused and compiled, against the plain code in float32 and under bf16 autocast.
"""
from __future__ import annotations

import copy

import pytest
import torch

from ecanet import models
from ecanet.models import eca_module
from ecanet.models.eca_module import EcaModule, set_eca_impl
from ecanet.models.mobilenetv2 import InvertedResidual
from conftest import INTERPRETED, interpreter_parent, run_interpreter_tests

HAS_TRITON = eca_module.fused_eca_available()
HAS_CUDA = torch.cuda.is_available()
interpreter_only = pytest.mark.skipif(not (INTERPRETED and HAS_TRITON),
                                      reason="runs in test_triton_interpreter's subprocess")
gpu = pytest.mark.skipif(not (HAS_CUDA and HAS_TRITON), reason="needs a CUDA GPU and Triton")

# (inp, oup, stride, expand_ratio, k): a residual block (features.3's shape, k = 1) and a strided one
# without residual (features.14's, k = 3).
BLOCKS = {"residual": (24, 24, 1, 6, 1), "strided": (96, 160, 2, 6, 3)}


def _block(kind: str, seed: int = 0) -> InvertedResidual:
    inp, oup, stride, expand_ratio, k = BLOCKS[kind]
    torch.manual_seed(seed)
    block = InvertedResidual(inp, oup, stride, expand_ratio, attention="eca", k_size=k).double()
    bn = block.conv[-2]
    torch.nn.init.uniform_(bn.weight, 0.5, 1.5)
    torch.nn.init.uniform_(bn.bias, -0.5, 0.5)
    torch.nn.init.normal_(block.conv[-1].conv.weight)
    return block


def _inputs(kind: str, side: int = 6, batch: int = 3) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch, BLOCKS[kind][0], side, side, dtype=torch.float64).requires_grad_()


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_eager_block_is_the_official_block_bit_for_bit(kind):
    """The tail call computes ``x + conv(x)`` (or ``conv(x)``) as the official Sequential does."""
    block = set_eca_impl(_block(kind), "auto").float().train()
    assert block.use_res_connect == (kind == "residual") and isinstance(block.conv[-1], EcaModule)
    x = _inputs(kind).detach().float().requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    reference = copy.deepcopy(block)
    out = block(x)
    expected = reference.conv(x_ref) + x_ref if reference.use_res_connect else reference.conv(x_ref)
    assert torch.equal(out, expected)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    assert torch.equal(x.grad, x_ref.grad)
    for (name, mine), theirs in zip(block.named_parameters(), reference.parameters()):
        assert torch.equal(mine.grad, theirs.grad), name


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kind", list(BLOCKS))
def test_compiled_block_takes_the_decomposed_tail_and_matches_eager(kind, training, monkeypatch):
    block = set_eca_impl(_block(kind), "auto").train(training)
    eager = set_eca_impl(copy.deepcopy(block), "plain")
    calls = []
    real = eca_module.bn_eca_tail_decomposed

    def recording(x, bn, weight, identity=None, *, relu=True):
        calls.append((identity is not None, relu))
        return real(x, bn, weight, identity, relu=relu)

    monkeypatch.setattr(eca_module, "bn_eca_tail_decomposed", recording)
    torch._dynamo.reset()
    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    x = _inputs(kind)
    x_ref = x.detach().clone().requires_grad_()
    out = compiled(x)
    assert calls and set(calls) == {(kind == "residual", False)}   # traced through the decomposed form, no ReLU
    ref = eager(x_ref)
    assert (out < 0).any()
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    grad = torch.randn_like(ref)
    out.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-9, atol=1e-9)
    for (name, mine), theirs in zip(block.named_parameters(), eager.parameters()):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-9, atol=1e-9, msg=name)
    for mine, theirs in zip(block.buffers(), eager.buffers()):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


def test_state_dict_keys_keep_the_official_layout():
    keys = models.create_model("eca_mobilenet_v2").state_dict().keys()
    eca_keys = sorted((k for k in keys if k.endswith("conv.weight") and ".conv." in k and k.count(".") == 5),
                      key=lambda k: int(k.split(".")[1]))
    assert eca_keys[0] == "features.1.conv.3.conv.weight" and eca_keys[-1] == "features.17.conv.4.conv.weight"
    assert len(eca_keys) == 17


# ----------------------------------------------------------------------------------------------------
# The Triton kernels, interpreted on the CPU
# ----------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed")
@interpreter_parent
def test_triton_interpreter():
    run_interpreter_tests(__file__)


@interpreter_only
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("kind", list(BLOCKS))
def test_interpreter_fused_block_matches_plain(kind, train):
    """The block under implementation 'fused', forward and backward, in float32: in training its BatchNorm+ECA
    tail (x * s + x without the ReLU) as the tail's kernels, in eval mode BatchNorm, then the fused ECA kernels."""
    block = _block(kind).float().train(train)
    fused, plain = set_eca_impl(copy.deepcopy(block), "fused"), set_eca_impl(copy.deepcopy(block), "plain")
    results = []
    for module in (fused, plain):
        x = _inputs(kind).detach().float().contiguous(memory_format=torch.channels_last).requires_grad_()
        out = module(x)
        grads = torch.autograd.grad(out, [x, module.conv[-1].conv.weight, module.conv[-2].weight],
                                    torch.ones_like(out) + out.detach())
        results.append((out, *grads))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)


# ----------------------------------------------------------------------------------------------------
# GPU: the whole network
# ----------------------------------------------------------------------------------------------------
def _network_outputs(model, images, impl, compiled, amp, dtype=torch.float32):
    """(logits, d images, d ECA weight of features.3) of one training step's forward and backward."""
    replica = set_eca_impl(copy.deepcopy(model).to(dtype), impl)
    run = torch.compile(replica) if compiled else replica
    x = images.to(dtype).clone().requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        out = run(x).float()
    grads = torch.autograd.grad(out.square().sum(), [x, replica.features[3].conv[-1].conv.weight])
    return out, *grads


def _errors(results, reference):
    return [((got.double() - want.double()).norm() / want.double().norm()).item()
            for got, want in zip(results, reference)]


IMPLEMENTATIONS = (("fused", False), ("auto", False), ("auto", True))   # (impl, torch.compile)
FLOAT32_ORDER_FACTOR = 4   # how much further from float64 another summation order may land than the plain code


@pytest.fixture(scope="module")
def network_and_images():
    torch.manual_seed(0)
    # no dropout: on the GPU a seed draws different masks for float32 and float64, which alone moves the
    # logits by order 1 and would hide what these tests compare
    model = models.create_model("eca_mobilenet_v2", num_classes=10, dropout=0.0).cuda().to(
        memory_format=torch.channels_last)
    images = torch.randn(32, 3, 112, 112, device="cuda").contiguous(memory_format=torch.channels_last)
    return model, images


@pytest.mark.gpu
@gpu
def test_gpu_network_float32_is_as_accurate_as_plain(network_and_images, monkeypatch):
    """float32, no TF32: no implementation further from the float64 computation than the plain code's
    float32 is (within a factor for summation order). A training step's input gradient through 17 blocks of
    BatchNorm in training mode is ill-conditioned at initialisation: on the CPU the plain code's float32
    is 5e-3 from float64 there (batch 32, 112 px), and the same code in another memory layout 2e-2 from
    itself, so a fixed tolerance between implementations measures summation order, not correctness; a wrong
    kernel is off by order 1."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    model, images = network_and_images
    torch._dynamo.reset()
    exact = _network_outputs(model, images, "plain", compiled=False, amp=False, dtype=torch.float64)
    plain = _errors(_network_outputs(model, images, "plain", compiled=False, amp=False), exact)
    for impl, compiled in IMPLEMENTATIONS:
        errors = _errors(_network_outputs(model, images, impl, compiled, amp=False), exact)
        assert all(e <= FLOAT32_ORDER_FACTOR * p + 1e-5 for e, p in zip(errors, plain)), (impl, compiled, errors, plain)


@pytest.mark.gpu
@gpu
def test_gpu_network_bf16_is_as_accurate_as_plain(network_and_images, monkeypatch):
    """bf16 autocast: no implementation's logits or input gradient further from the float32 computation than
    the plain code's are. (A training step of the whole network at initialisation turns bf16 rounding into
    differences of order 1 in the logits and gradients, so the implementations are compared through their
    distance to float32, not to each other: on the CPU, through the interpreter, fused and plain were within
    15% of each other.) ECA's weight gradient is left to the float32 test: it sums B x C products that nearly
    cancel, so in bf16 every implementation, the plain code included, lands about ten times its norm away
    from float32 (one H200, 2026-12-04, STEPS=gpu-tests bash scripts/gpu_bench.sh), and two such distances
    compare rounding draws, not kernels."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    model, images = network_and_images
    torch._dynamo.reset()
    exact = _network_outputs(model, images, "plain", compiled=False, amp=False)
    plain = _errors(_network_outputs(model, images, "plain", compiled=False, amp=True), exact)
    for impl, compiled in IMPLEMENTATIONS:
        errors = _errors(_network_outputs(model, images, impl, compiled, amp=True), exact)
        assert all(e <= 1.5 * p + 1e-3 for e, p in zip(errors[:2], plain[:2])), (impl, compiled, errors, plain)
