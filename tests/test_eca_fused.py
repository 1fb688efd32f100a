"""The fused ECA (ecanet/models/eca_fused.py) computes the plain function; each module carries its choice.

CPU, in CI: the per-module implementation (``EcaModule(impl=...)``, ``set_eca_impl``,
``create_model(eca_impl=...)``; no process-wide state); the CPU path is the plain PyTorch code bit for bit;
the fused backward formulas against autograd in float64; the Triton kernels under Triton's interpreter
(tests named ``interpreter``, run in a subprocess because ``TRITON_INTERPRET`` must be set before Triton
is imported); the kernels compiling for sm_90 (no GPU needed); the benchmark helpers.
GPU: fused against plain in float64 on awkward shapes (odd H, W; C not a power of two; batch 1), both
layouts, fp32/bf16/fp16; autocast; ``torch.compile(fullgraph=True)``; a short training run.
"""
from __future__ import annotations

import copy
import sys
import time
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from ecanet import models
from ecanet.models import eca_module
from ecanet.models.eca_module import EcaModule, set_eca_impl, set_eca_kernel_sizes
from conftest import compile_triton_for_sm90, INTERPRETED, interpreter_parent, run_interpreter_tests

ROOT = Path(__file__).resolve().parents[1]
HAS_TRITON = eca_module.fused_eca_available()
HAS_CUDA = torch.cuda.is_available()

needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed")
interpreter_only = pytest.mark.skipif(not (INTERPRETED and HAS_TRITON),
                                      reason="runs in test_triton_interpreter's subprocess")


def gpu_test(fn):
    """Marked ``gpu`` and skipped without CUDA (or without Triton)."""
    return pytest.mark.gpu(pytest.mark.skipif(not (HAS_CUDA and HAS_TRITON), reason="needs a CUDA GPU and Triton")(fn))


# Largest admissible max|fused - reference| / max|reference| per dtype.
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}
# Pre-activations closer to 0 than this are pushed away, so the ReLU mask cannot flip between a
# low-precision fused run and its float64 reference (one flipped element is an O(1) gradient error).
RELU_MARGIN = 0.05


def max_rel_err(actual: torch.Tensor, reference: torch.Tensor) -> float:
    reference = reference.double()
    return ((actual.double() - reference).abs().max() / reference.abs().max().clamp_min(1e-30)).item()


def norm_rel_err(actual: torch.Tensor, reference: torch.Tensor) -> float:
    """||actual - reference|| / ||reference||: for whole blocks in bf16, where max errors are noisy."""
    reference = reference.double()
    return ((actual.double() - reference).norm() / reference.norm().clamp_min(1e-30)).item()


def _original_eca(module: EcaModule, x: torch.Tensor) -> torch.Tensor:
    """The official eca_layer's forward written out, for the bit-for-bit check of the plain path."""
    y = x.mean(dim=(2, 3), keepdim=True)
    y = module.conv(y.squeeze(-1).transpose(-1, -2))
    return x * torch.sigmoid(y.transpose(-1, -2).unsqueeze(-1))


# ----------------------------------------------------------------------------------------------------
# Inputs shared by the interpreter and GPU tests
# ----------------------------------------------------------------------------------------------------
def make_inputs(shape, dtype, channels_last, k, with_identity, device="cpu", seed=0):
    """x, identity (or None), grad, weight (1, 1, k): random, with the ReLU's inputs kept off 0."""
    gen = torch.Generator().manual_seed(seed)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x, identity, grad = (torch.randn(shape, generator=gen).to(dtype) for _ in range(3))
    weight = torch.randn(1, 1, k, generator=gen)
    if with_identity:
        identity = _off_zero(x, identity, weight)
    move = lambda t: t.to(device).contiguous(memory_format=layout)  # noqa: E731
    return move(x), (move(identity) if with_identity else None), move(grad), weight.to(device)


def _off_zero(x: torch.Tensor, identity: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """identity moved so that x * gate + identity keeps RELU_MARGIN away from 0."""
    from ecanet.models.eca_fused import reference_forward
    x64, id64 = x.double(), identity.double()
    gate = reference_forward(x64, weight.double(), None, False)[1][:, :, None, None]
    pre = x64 * gate + id64
    push = torch.where(pre >= 0, 2 * RELU_MARGIN, -2 * RELU_MARGIN)
    id64 = torch.where(pre.abs() < RELU_MARGIN, id64 + push, id64)
    identity = id64.to(identity.dtype)
    assert ((x64 * gate + identity.double()).abs() > RELU_MARGIN / 2).all()
    return identity


def _tail(module: EcaModule, x: torch.Tensor, identity: torch.Tensor | None, relu: bool) -> torch.Tensor:
    """``relu(ECA(x) + identity)``, the add and the ReLU each optional; plain ECA(x) without either."""
    if identity is None and not relu:
        return module(x)
    return module.scale_add_relu(x, identity, relu=relu)


def fused_vs_float64_plain(shape, dtype, channels_last, k, with_identity, device, relu=None):
    """Max relative errors of the fused module (dtype) against the plain one in float64, by output.
    ``relu`` None: the ReLU exactly when there is an identity (ResNet's tail, or ECA alone)."""
    relu = with_identity if relu is None else relu
    x, identity, grad, weight = make_inputs(shape, dtype, channels_last, k, with_identity, device)
    results = {}
    for impl, run_dtype in (("plain", torch.float64), ("fused", None)):
        module = EcaModule(shape[1], k, impl=impl).to(device)
        with torch.no_grad():
            module.conv.weight.copy_(weight)
        module = module.to(run_dtype) if run_dtype else module
        cast = (lambda t: t.to(run_dtype)) if run_dtype else (lambda t: t)  # noqa: E731
        xi = cast(x).detach().requires_grad_()
        ii = cast(identity).detach().requires_grad_() if with_identity else None
        out = _tail(module, xi, ii, relu)
        wrt = [xi, module.conv.weight] + ([ii] if with_identity else [])
        grads = torch.autograd.grad(out, wrt, cast(grad))
        results[impl] = dict(zip(["out", "x", "weight", "identity"], [out, *grads]))
    fused, plain = results["fused"], results["plain"]
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert fused["out"].dtype == dtype and fused["out"].is_contiguous(memory_format=layout)
    return {name: max_rel_err(fused[name], plain[name]) for name in fused}


# ----------------------------------------------------------------------------------------------------
# CPU: the per-module implementation and the plain path
# ----------------------------------------------------------------------------------------------------
def _impls(model: nn.Module) -> list[str]:
    return [m.impl for m in model.modules() if isinstance(m, EcaModule)]


def test_module_stores_its_implementation_normalised():
    assert EcaModule(8, 3).impl == "auto"
    assert EcaModule(8, 3, impl="PLAIN").impl == "plain"
    assert EcaModule(8, 3, impl=" Fused ").impl == "fused"
    assert "impl='plain'" in repr(EcaModule(8, 3, impl="plain"))


def test_unknown_implementation_is_a_value_error_naming_the_choices():
    message = "unknown ECA implementation 'triton'; choose one of auto, fused, plain"
    with pytest.raises(ValueError, match=message):
        EcaModule(8, 3, impl="triton")
    with pytest.raises(ValueError, match=message):
        set_eca_impl(models.create_model("eca_resnet18", num_classes=2), "triton")
    with pytest.raises(ValueError, match=message):
        models.create_model("eca_resnet18", num_classes=2, eca_impl="triton")


def test_create_model_records_the_implementation_on_the_model_and_every_layer():
    model = models.create_model("eca_resnet18", num_classes=2, eca_impl="plain")
    assert model.eca_impl == "plain"
    assert _impls(model) and set(_impls(model)) == {"plain"}
    default = models.create_model("eca_resnet18", num_classes=2)
    assert default.eca_impl == "auto" and set(_impls(default)) == {"auto"}


def test_set_eca_impl_changes_every_layer_and_keeps_the_weights():
    model = models.create_model("eca_mobilenet_v2", num_classes=2, eca_impl="plain")
    before = copy.deepcopy(model.state_dict())
    assert set_eca_impl(model, "Fused") is model
    assert model.eca_impl == "fused" and _impls(model) and set(_impls(model)) == {"fused"}
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)


def test_set_eca_kernel_sizes_keeps_the_implementation():
    model = models.create_model("eca_resnet18", num_classes=2, k_size=3, eca_impl="plain")
    set_eca_kernel_sizes(model, {"layer1.0.eca": 5, "layer4.1.eca": 7})
    sizes = models.eca_kernel_sizes(model)
    assert (sizes["layer1.0.eca"], sizes["layer4.1.eca"], sizes["layer2.0.eca"]) == (5, 7, 3)
    assert set(_impls(model)) == {"plain"}


def test_two_models_with_different_implementations_in_one_process():
    """No process-wide switch: each model computes as its own layers say, whatever the other one does."""
    torch.manual_seed(0)
    plain = models.create_model("eca_resnet18", num_classes=3, eca_impl="plain").eval()
    fused = set_eca_impl(copy.deepcopy(plain), "fused")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = plain(x)
        if INTERPRETED and HAS_TRITON:          # 'fused' runs its kernels on the CPU
            assert max_rel_err(fused(x), expected) < TOLERANCE[torch.float32]
        else:                                    # 'fused' refuses a CPU tensor (or a missing Triton)
            with pytest.raises(RuntimeError, match="'fused' cannot run"):
                fused(x)
        assert torch.equal(plain(x), expected)
    assert (plain.eca_impl, fused.eca_impl) == ("plain", "fused")
    assert set(_impls(plain)) == {"plain"} and set(_impls(fused)) == {"fused"}


@pytest.mark.parametrize("impl", ["auto", "plain"])
@pytest.mark.parametrize("tail", [True, False])
def test_cpu_runs_the_original_code_bit_for_bit(impl, tail):
    torch.manual_seed(0)
    module = EcaModule(24, 5, impl=impl)
    x, identity, grad = (torch.randn(2, 24, 7, 5, requires_grad=True) for _ in range(3))

    def original():
        out = _original_eca(module, x)
        if tail:  # the residual block's tail: add, then ReLU
            out += identity
            out = torch.relu_(out)
        return out

    out = module.scale_add_relu(x, identity) if tail else module(x)
    expected = original()
    wrt = [x, identity, module.conv.weight] if tail else [x, module.conv.weight]
    assert torch.equal(out, expected)
    for got, want in zip(torch.autograd.grad(out, wrt, grad), torch.autograd.grad(expected, wrt, grad)):
        assert torch.equal(got, want)


@needs_triton
@pytest.mark.skipif(INTERPRETED, reason="under the interpreter 'fused' runs on the CPU")
def test_fused_on_a_cpu_tensor_is_an_error_not_a_silent_fallback():
    with pytest.raises(RuntimeError, match="its kernels run on CUDA GPUs, not the CPU"):
        EcaModule(8, 3, impl="fused")(torch.randn(1, 8, 4, 4))


@needs_triton
def test_supports_only_what_the_kernels_take():
    from ecanet.models.eca_fused import supports
    x = torch.randn(2, 8, 3, 3)
    assert supports(x) and supports(x.half(), x.half()) and supports(x.bfloat16())
    assert not supports(x.double())
    assert not supports(x, torch.randn(2, 8, 1, 1))          # a broadcast identity
    assert not supports(x[0])                                 # not (B, C, H, W)
    assert not supports(torch.randn(0, 8, 3, 3))


# ----------------------------------------------------------------------------------------------------
# CPU: the fused formulas, stated in PyTorch, against autograd (float64)
# ----------------------------------------------------------------------------------------------------
# (with_identity, relu): ResNet's tail, MobileNetV2's residual tail, ECA alone, ECA then a ReLU.
TAILS = [(True, True), (True, False), (False, False), (False, True)]


@needs_triton
@pytest.mark.parametrize("shape", [(2, 7, 5, 3), (1, 16, 4, 4), (3, 5, 1, 1)])
@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize(("with_identity", "relu"), TAILS)
def test_reference_formulas_match_autograd(shape, k, with_identity, relu):
    from ecanet.models.eca_fused import reference_backward, reference_forward
    x, identity, grad, weight = make_inputs(shape, torch.float64, False, k, with_identity)
    module = EcaModule(shape[1], k, impl="plain").double()
    with torch.no_grad():
        module.conv.weight.copy_(weight)
    xi = x.clone().requires_grad_()
    ii = identity.clone().requires_grad_() if with_identity else None
    out = _tail(module, xi, ii, relu)
    gate = module.attention_weights(x)[:, :, 0, 0]
    wrt = [xi, module.conv.weight] + ([ii] if with_identity else [])
    expected = torch.autograd.grad(out, wrt, grad)

    ref_out, ref_gate, ref_mean = reference_forward(x, weight.double(), identity, relu)
    torch.testing.assert_close(ref_out, out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ref_gate, gate, rtol=1e-12, atol=1e-12)
    dx, dw, grad_pre = reference_backward(grad, x, weight.double(), ref_gate, ref_mean, ref_out if relu else None)
    di = grad_pre if relu else grad                               # d identity
    for got, want in zip([dx, dw] + ([di] if with_identity else []), expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------------
# CPU: the Triton kernels, interpreted (in a subprocess) and compiled for sm_90
# ----------------------------------------------------------------------------------------------------
@needs_triton
@interpreter_parent
def test_triton_interpreter():
    run_interpreter_tests(__file__)


# Shapes for the interpreter: several C-blocks (C > 128 channels, > 256 gate channels, so taps cross
# block edges), H*W splits, odd sizes, batch 1, k from 1 to 9.
INTERPRETER_CASES = [
    # shape, dtype, channels_last, k, with_identity, relu
    ((2, 300, 5, 7), torch.float32, True, 5, True, True),
    ((2, 300, 5, 7), torch.float32, False, 3, True, True),
    ((1, 24, 16, 16), torch.float32, True, 7, True, True),
    ((1, 24, 16, 16), torch.float32, False, 9, False, False),
    ((3, 10, 1, 1), torch.float32, True, 3, True, True),
    ((2, 40, 9, 11), torch.bfloat16, True, 3, True, True),
    ((2, 40, 9, 11), torch.float16, False, 5, True, True),
    ((2, 40, 9, 11), torch.bfloat16, False, 1, False, False),
    ((2, 24, 14, 14), torch.bfloat16, True, 1, True, False),      # MobileNetV2: x * s + identity, k = 1
    ((2, 160, 7, 7), torch.float32, True, 3, True, False),
    ((2, 16, 9, 9), torch.float32, False, 3, False, True),
]


@interpreter_only
@pytest.mark.parametrize(("shape", "dtype", "channels_last", "k", "with_identity", "relu"), INTERPRETER_CASES)
def test_interpreter_ops_match_reference(shape, dtype, channels_last, k, with_identity, relu):
    from ecanet.models.eca_fused import eca_backward, eca_forward, reference_backward, reference_forward
    x, identity, grad, weight = make_inputs(shape, dtype, channels_last, k, with_identity)
    out, gate, mean = eca_forward(x, weight, identity, relu)
    d64 = lambda t: None if t is None else t.double()  # noqa: E731
    ref_out, ref_gate, ref_mean = reference_forward(d64(x), d64(weight), d64(identity), relu)
    assert max_rel_err(out, ref_out) < TOLERANCE[dtype]
    assert max_rel_err(gate, ref_gate) < 1e-6 and max_rel_err(mean, ref_mean) < 1e-6
    dx, dw, grad_pre = eca_backward(grad, x, weight, gate, mean, out if relu else None)
    ref_dx, ref_dw, ref_grad_pre = reference_backward(d64(grad), d64(x), d64(weight), ref_gate, ref_mean,
                                                      ref_out if relu else None)
    assert max_rel_err(dx, ref_dx) < TOLERANCE[dtype]
    assert max_rel_err(dw, ref_dw) < 1e-5
    assert (max_rel_err(grad_pre, ref_grad_pre) < TOLERANCE[dtype]) if relu else grad_pre.numel() == 0


@interpreter_only
@pytest.mark.parametrize(("channels_last", "with_identity", "relu"),
                         [(True, True, True), (False, True, True), (True, False, False), (True, True, False),
                          (False, False, True)])
def test_interpreter_module_gradients_match_float64_plain(channels_last, with_identity, relu):
    """Through the module, as the networks call it (the eager autograd function, not the custom op)."""
    errors = fused_vs_float64_plain((2, 36, 7, 5), torch.float32, channels_last, 5, with_identity, "cpu",
                                    relu=relu)
    assert max(errors.values()) < TOLERANCE[torch.float32], errors


@interpreter_only
def test_interpreter_takes_other_layouts_and_mixed_dtypes():
    module = EcaModule(16, 3, impl="fused")
    x = torch.randn(2, 16, 6, 10)[:, :, :, ::2]                 # neither contiguous nor channels_last
    identity = torch.randn(2, 16, 6, 5, dtype=torch.float64)    # cast to x's dtype, as `out += identity`
    fused = module.scale_add_relu(x, identity)
    plain = set_eca_impl(copy.deepcopy(module), "plain").scale_add_relu(x, identity)
    assert fused.dtype == plain.dtype == torch.float32
    assert max_rel_err(fused, plain) < TOLERANCE[torch.float32]


@interpreter_only
def test_interpreter_opcheck():
    from ecanet.models.eca_fused import eca_forward
    x = torch.randn(2, 24, 5, 7, requires_grad=True)
    weight = torch.randn(1, 1, 3, requires_grad=True)
    identity = torch.randn(2, 24, 5, 7, requires_grad=True)
    channels_last = lambda t: t.detach().contiguous(memory_format=torch.channels_last).requires_grad_()  # noqa: E731
    for args in [(x, weight, identity, True), (x, weight, None, False), (x, weight, identity, False),
                 (channels_last(x), weight, channels_last(identity), True)]:
        torch.library.opcheck(eca_forward, args)


@interpreter_only
def test_interpreter_compiles_without_graph_breaks():
    torch.manual_seed(0)
    block = models.create_model("eca_resnet50", num_classes=5).layer1[0].to(memory_format=torch.channels_last)
    x = torch.randn(2, 64, 9, 7).contiguous(memory_format=torch.channels_last)
    results = []
    for impl, compiled in (("plain", False), ("fused", True)):
        torch._dynamo.reset()
        set_eca_impl(block, impl)
        run = torch.compile(block, fullgraph=True, backend="aot_eager") if compiled else block
        xi = x.clone().requires_grad_()
        out = run(xi)
        grads = torch.autograd.grad(out, [xi, block.eca.conv.weight], torch.ones_like(out))
        results.append((out, *grads))
    for fused, plain in zip(*results):
        assert max_rel_err(fused, plain) < 1e-5


def _losses_per_implementation(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, lr: float,
                               steps: int) -> dict[str, list[float]]:
    """The training losses of ``steps`` SGD steps from the same weights, once with each ECA implementation."""
    losses = {}
    for impl in ("plain", "fused"):
        replica = set_eca_impl(copy.deepcopy(model), impl).train()
        optimizer = torch.optim.SGD(replica.parameters(), lr=lr, momentum=0.9)
        losses[impl] = []
        for _ in range(steps):
            loss = nn.functional.cross_entropy(replica(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses[impl].append(loss.item())
    return losses


def _misaligned_copy(t: torch.Tensor) -> torch.Tensor:
    """t's values and strides at an address 4 bytes past a 16-byte boundary (Triton compiles such pointers apart)."""
    storage = torch.empty(t.untyped_storage().nbytes() // t.element_size() + 1, dtype=t.dtype, device=t.device)
    out = storage[1:].as_strided(t.shape, t.stride())
    out.copy_(t)
    assert out.data_ptr() % 16 != 0 and out.stride() == t.stride()
    return out


def repeated_and_misaligned_calls(device: str, dtype: torch.dtype) -> dict[str, float]:
    """Max relative errors against float64 references of forward+backward calls of one shape: three aligned
    (the first builds the plans; on a GPU the later ones launch the compiled kernels directly), one with
    every input 4 bytes off a 16-byte boundary and one with only the identity off; C and H*W are multiples
    of 16, where Triton's code for aligned pointers uses 16-byte vector accesses. Each alignment pattern must
    get its own plan."""
    from ecanet.models import eca_fused
    from ecanet.models.eca_fused import eca_backward, eca_forward, reference_backward, reference_forward
    eca_fused._forward_plan.cache_clear()
    eca_fused._backward_plan.cache_clear()
    x, identity, grad, weight = make_inputs((2, 32, 4, 4), dtype, True, 5, True, device)
    d64 = lambda t: t.double()  # noqa: E731
    ref_out, ref_gate, ref_mean = reference_forward(d64(x), d64(weight), d64(identity), True)
    ref_dx, ref_dw, _ = reference_backward(d64(grad), d64(x), d64(weight), ref_gate, ref_mean, ref_out)
    errors = {}
    for call, misaligned in (("first", ()), ("second", ()), ("third", ()), ("all misaligned", (0, 1, 2)),
                             ("identity misaligned", (1,))):
        args = [_misaligned_copy(t) if i in misaligned else t for i, t in enumerate((x, identity, grad))]
        out, gate, mean = eca_forward(args[0], weight, args[1], True)
        dx, dw, _ = eca_backward(args[2], args[0], weight, gate, mean, out)
        errors[call] = max(max_rel_err(out, ref_out), max_rel_err(dx, ref_dx), max_rel_err(dw, ref_dw))
    forward, backward = eca_fused._forward_plan.cache_info(), eca_fused._backward_plan.cache_info()
    assert (forward.hits, forward.misses) == (2, 3), forward     # aligned, all misaligned, identity misaligned
    assert (backward.hits, backward.misses) == (3, 2), backward  # its inputs: aligned twice over, or all misaligned
    plan = eca_fused._forward_plan(*eca_fused._forward_key(x, weight.contiguous(), identity, True))
    direct = not eca_fused.INTERPRETER   # on a GPU the launches have gone direct; the interpreter never does
    assert [launch.direct for launch in (plan.channel_sum, plan.gate, plan.scale)] == [direct] * 3
    return errors


@interpreter_only
def test_interpreter_repeated_and_misaligned_calls_match_reference():
    errors = repeated_and_misaligned_calls("cpu", torch.float32)
    assert max(errors.values()) < TOLERANCE[torch.float32], errors


@interpreter_only
def test_interpreter_inference_calls_the_passes_without_the_autograd_function(monkeypatch):
    from ecanet.models import eca_fused
    module = EcaModule(24, 3, impl="fused")
    x, identity = torch.randn(2, 24, 5, 4), torch.randn(2, 24, 5, 4)
    trained = module.scale_add_relu(x.clone().requires_grad_(), identity)

    def no_apply(*args):
        raise AssertionError("inference went through the autograd function")
    monkeypatch.setattr(eca_fused._EagerEca, "apply", no_apply)
    with torch.no_grad():
        inferred = module.scale_add_relu(x, identity)
    with torch.inference_mode():
        inferred_in_inference_mode = module.scale_add_relu(x, identity)
    assert torch.equal(inferred, trained.detach()) and torch.equal(inferred_in_inference_mode, inferred)


@interpreter_only
def test_interpreter_training_steps_match_plain():
    torch.manual_seed(0)
    model = models.create_model("eca_resnet18", num_classes=5)
    # 64 px, batch 4: at 32 px, batch 2 the last stage is 1x1 and BatchNorm over 2 values makes the plain
    # network itself turn 1e-7 input noise into 2e-4 differences in the loss.
    images, labels = torch.randn(4, 3, 64, 64), torch.tensor([1, 3, 0, 4])
    losses = _losses_per_implementation(model, images, labels, lr=0.1, steps=2)
    torch.testing.assert_close(losses["fused"], losses["plain"], rtol=1e-5, atol=1e-6)


def _eval_batch_norm(channels: int, large_mean_channel: bool = True, seed: int = 0) -> nn.BatchNorm2d:
    """An eval-mode BatchNorm with random affine parameters and running statistics; with ``large_mean_channel``,
    channel 0's running mean is large against its spread (1000 and 1e-4), where (x - m) a and x a - m a differ
    in float32."""
    gen = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels, eps=1e-3)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(channels, generator=gen))
        bn.bias.copy_(torch.randn(channels, generator=gen))
        bn.running_mean.copy_(torch.randn(channels, generator=gen))
        bn.running_var.copy_(torch.rand(channels, generator=gen) + 0.5)
        if large_mean_channel:
            bn.running_mean[0], bn.running_var[0] = 1000.0, 1e-4
    return bn.eval()


def inference_tail_vs_float64_plain(shape, dtype, channels_last, k, with_identity, relu, device):
    """Max relative error of ``ECA(bn(x)) [+ identity] [ReLU]`` under no_grad, fused (dtype, BatchNorm's
    parameters in float32) against the plain modules in float64; asserts the inference tail ran."""
    from ecanet.models import eca_fused
    x, identity, _, weight = make_inputs(shape, dtype, channels_last, k, with_identity, device)
    x[:, 0] = (1000 + 1e-2 * x[:, 0].float()).to(dtype)       # channel 0 near its running mean
    bn = _eval_batch_norm(shape[1]).to(device)
    eca_fused._bn_eval_plan.cache_clear()
    outputs = {}
    for impl, run_dtype in (("plain", torch.float64), ("fused", None)):
        module = EcaModule(shape[1], k, impl=impl).to(device)
        with torch.no_grad():
            module.conv.weight.copy_(weight)
        norm = copy.deepcopy(bn).to(run_dtype) if run_dtype else bn
        cast = (lambda t: t if t is None else t.to(run_dtype)) if run_dtype else (lambda t: t)  # noqa: E731
        with torch.no_grad():
            outputs[impl] = module.to(run_dtype or torch.float32).bn_scale_add_relu(norm, cast(x), cast(identity),
                                                                                    relu=relu)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert outputs["fused"].dtype == dtype and outputs["fused"].is_contiguous(memory_format=layout)
    assert eca_fused._bn_eval_plan.cache_info().misses == 1, "the inference tail did not run"
    return max_rel_err(outputs["fused"], outputs["plain"])


INFERENCE_TAIL_CASES = [
    # shape, dtype, channels_last, k, with_identity, relu
    ((2, 300, 5, 7), torch.float32, True, 5, True, True),        # several channel blocks, taps across them
    ((2, 300, 5, 7), torch.float32, False, 3, True, True),
    ((1, 24, 16, 16), torch.float32, True, 7, False, False),
    ((2, 40, 9, 11), torch.bfloat16, True, 3, True, True),
    ((2, 24, 14, 14), torch.bfloat16, True, 1, True, False),      # MobileNetV2: ECA(BN(x)) + x, k = 1
    ((2, 16, 9, 9), torch.float32, False, 3, False, True),
]


@interpreter_only
@pytest.mark.parametrize(("shape", "dtype", "channels_last", "k", "with_identity", "relu"), INFERENCE_TAIL_CASES)
def test_interpreter_inference_tail_matches_float64_plain(shape, dtype, channels_last, k, with_identity, relu):
    error = inference_tail_vs_float64_plain(shape, dtype, channels_last, k, with_identity, relu, "cpu")
    assert error < TOLERANCE[dtype], error


@interpreter_only
def test_interpreter_inference_tail_runs_only_without_autograd(monkeypatch):
    """Under no_grad or inference_mode an eval-mode tail folds BatchNorm into ECA's passes (BatchNorm's module
    is not called); where a gradient is to be recorded, or in training, the modules run as before."""
    from ecanet.models import eca_fused
    module, bn = EcaModule(24, 3, impl="fused"), _eval_batch_norm(24, large_mean_channel=False)
    x, identity = torch.randn(2, 24, 5, 4), torch.randn(2, 24, 5, 4)
    calls = []
    # The class's forward, not the instance's: a forward set on the instance is a replaced forward, which
    # keeps the modules running.
    original = nn.BatchNorm2d.forward
    monkeypatch.setattr(nn.BatchNorm2d, "forward", lambda self, t: calls.append("bn") or original(self, t))
    with torch.no_grad():
        folded = module.bn_scale_add_relu(bn, x, identity)
    with torch.inference_mode():
        folded_in_inference_mode = module.bn_scale_add_relu(bn, x, identity)
    assert calls == []
    xi = x.clone().requires_grad_()
    recorded = module.bn_scale_add_relu(bn, xi, identity)
    assert calls == ["bn"] and recorded.requires_grad
    torch.testing.assert_close(folded, recorded.detach(), rtol=1e-5, atol=1e-5)
    assert torch.equal(folded, folded_in_inference_mode)
    assert not eca_fused.supports_inference_tail(x, bn, identity, weight=module.conv.weight)   # weight needs grad
    with torch.no_grad():
        assert eca_fused.supports_inference_tail(x, bn, identity, weight=module.conv.weight)
        assert not eca_fused.supports_inference_tail(x, bn.train(), identity, weight=module.conv.weight)


@needs_triton
def test_auto_and_fused_fold_the_inference_tail(monkeypatch):
    """Where the fused kernels would run (made to look so on the CPU), an eval-mode tail under no_grad folds
    BatchNorm into ECA's passes under 'auto' and 'fused' (measured faster than BatchNorm's module followed by the
    fused ECA in every released network)."""
    from ecanet.models import eca_fused
    monkeypatch.setattr(eca_module, "_use_fused", lambda impl, x, identity=None: True)
    monkeypatch.setattr(eca_module, "_fused_kernels_run", lambda impl, x: True)
    monkeypatch.setattr(eca_fused, "supports_inference_tail", lambda *args, **kwargs: True)
    taken = []
    monkeypatch.setattr(eca_fused, "bn_eval_eca_scale_add_relu", lambda *args, **kwargs: taken.append("fold"))
    monkeypatch.setattr(eca_fused, "eca_scale_add_relu", lambda *args, **kwargs: taken.append("bn, then eca"))
    bn, x = _eval_batch_norm(8, large_mean_channel=False), torch.randn(2, 8, 3, 3)
    with torch.no_grad():
        for impl in ("auto", "fused"):
            EcaModule(8, 3, impl=impl).bn_scale_add_relu(bn, x, x)
    assert taken == ["fold", "fold"]


@interpreter_only
def test_interpreter_inference_tail_takes_a_strided_or_expanded_identity():
    """The kernels read the identity through a raw pointer as dense in x's layout: one that is not dense (a
    strided view, a broadcast) is made so first, as the plain ``out += identity`` reads it."""
    module, bn = EcaModule(8, 3, impl="fused"), _eval_batch_norm(8, large_mean_channel=False)
    plain = set_eca_impl(copy.deepcopy(module), "plain")
    x = torch.randn(2, 8, 5, 4)
    for identity in (torch.randn(2, 8, 10, 4)[:, :, ::2], torch.randn(1, 8, 1, 1).expand(2, 8, 5, 4)):
        with torch.no_grad():
            torch.testing.assert_close(module.bn_scale_add_relu(bn, x, identity),
                                       plain.bn_scale_add_relu(bn, x, identity), rtol=1e-5, atol=1e-5)


@interpreter_only
@pytest.mark.parametrize("training", [True, False])
def test_interpreter_a_batchnorm_of_other_width_is_refused_as_batchnorm_refuses_it(training):
    """A BatchNorm of 16 channels fed 24: the kernels would read and write past its parameters and statistics;
    the tail leaves it to nn.BatchNorm2d, which raises."""
    module, bn = EcaModule(24, 3, impl="fused"), _eval_batch_norm(16, large_mean_channel=False).train(training)
    running = bn.running_mean.clone()
    with torch.no_grad(), pytest.raises(RuntimeError, match="running_mean should contain 24 elements not 16"):
        module.bn_scale_add_relu(bn, torch.randn(2, 24, 5, 4), torch.randn(2, 24, 5, 4))
    assert torch.equal(bn.running_mean, running)


@interpreter_only
@pytest.mark.parametrize("arch", ["eca_resnet18", "eca_resnet50", "eca_mobilenet_v2"])
def test_interpreter_network_inference_matches_plain(arch):
    """A whole network's eval-mode forward with the inference tail in every block against the plain modules."""
    from ecanet.models import eca_fused
    torch.manual_seed(0)
    model = models.create_model(arch, num_classes=5)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):   # running statistics of a trained net
        with torch.no_grad():
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    images = torch.randn(2, 3, 64, 64)
    outputs = {}
    eca_fused._bn_eval_plan.cache_clear()
    for impl in ("plain", "fused"):
        with torch.no_grad():
            outputs[impl] = set_eca_impl(model, impl).eval()(images)
    calls = eca_fused._bn_eval_plan.cache_info()
    assert calls.hits + calls.misses == sum(isinstance(m, EcaModule) for m in model.modules())
    torch.testing.assert_close(outputs["fused"], outputs["plain"], rtol=1e-4, atol=1e-5)


@needs_triton
@pytest.mark.parametrize(("version", "takes_constexprs"), [("3.0.0", False), ("3.2.0", False), ("3.3.0", True),
                                                           ("3.6.0+git0a1b2c3", True)])
def test_direct_launches_pass_what_tritons_jit_passes(version, takes_constexprs):
    """Triton 3.3 and later hand a compiled kernel every parameter, constexprs included; earlier ones only the
    others. The direct launches must pass what the installed version's JIT would."""
    from ecanet.models import eca_fused
    # (x_ptr, centre_ptr, partial_ptr, B, C, P, tiles_per_split, <4 constexprs>)
    kernel = eca_fused._channel_sum_kernel
    constexprs = {"BLOCK_C": 128, "CHANNELS_LAST": True, "BLOCK_P": 32, "HAS_CENTRE": False}
    tail = eca_fused._launcher_arguments(kernel.arg_names, 3, (8, 64, 49, 1), constexprs, version)
    assert tail == ((8, 64, 49, 1, False, True, 32, 128) if takes_constexprs else (8, 64, 49, 1))


class _FakeKernel:
    """Stands in for a @triton.jit kernel of parameters (x_ptr, n, BLOCK: constexpr): ``kernel[grid](...)`` is
    the JIT launch and returns the 'compiled kernel', whose ``[grid](...)`` is the direct launch and whose
    ``src.signature`` lists ``compiled_arguments`` parameters."""

    __name__ = "fake_kernel"
    arg_names = ["x_ptr", "n", "BLOCK"]

    def __init__(self, compiled_arguments: int) -> None:
        self.src = types.SimpleNamespace(signature=dict.fromkeys(self.arg_names[:compiled_arguments], "i32"))
        self.jit_launches, self.direct_launches = 0, []

    def __getitem__(self, grid):
        def jit_launch(*args, num_warps, **constexprs):
            self.jit_launches += 1
            return _FakeCompiledKernel(self)
        return jit_launch


class _FakeCompiledKernel:
    def __init__(self, kernel: _FakeKernel) -> None:
        self.kernel, self.src = kernel, kernel.src

    def __getitem__(self, grid):
        assert len(grid) == 3   # Triton's compiled-kernel launcher reads grid[0], grid[1] and grid[2]
        return lambda *args: self.kernel.direct_launches.append(args)


@needs_triton
@pytest.mark.skipif(INTERPRETED, reason="under the interpreter every launch goes through the JIT")
@pytest.mark.parametrize("signature_matches", [True, False])
def test_a_launch_goes_direct_after_its_first_call_when_the_arguments_match(signature_matches, monkeypatch,
                                                                           caplog):
    """The direct launch passes x and what this Triton's JIT would (n and, from Triton 3.3 on, BLOCK); a
    compiled signature of another length keeps every launch on the JIT, with one warning."""
    from ecanet.models import eca_fused
    monkeypatch.setattr(eca_fused, "_JIT_ONLY", set())
    tail = eca_fused._launcher_arguments(_FakeKernel.arg_names, 1, (7,), {"BLOCK": 16})
    kernel = _FakeKernel(1 + len(tail) if signature_matches else len(tail))
    launch = eca_fused._Launch(kernel, (4,), (7,), {"BLOCK": 16})
    x = torch.zeros(1)
    for _ in range(3):
        launch(x)
    if signature_matches:
        assert kernel.jit_launches == 1 and launch.direct
        assert [(args[0] is x, *args[1:]) for args in kernel.direct_launches] == [(True, *tail)] * 2
    else:
        assert kernel.jit_launches == 3 and not kernel.direct_launches and not launch.direct
        assert caplog.text.count("its launches go through Triton's JIT") == 1


@needs_triton
@pytest.mark.skipif(INTERPRETED, reason="compiles with the real Triton compiler")
def test_kernels_compile_for_sm90():
    """Triton's real compiler (ptxas included) accepts every kernel for Hopper, without a GPU."""
    from ecanet.models import eca_fused as F
    meta = {"CHANNELS_LAST": True, "BLOCK_P": 32, "BLOCK_C": 128}
    big = {"x_ptr": "*bf16", "grad_ptr": "*bf16", "out_ptr": "*bf16", "grad_pre_ptr": "*bf16",
           "identity_ptr": "*bf16", "partial_ptr": "*fp32", "scale_ptr": "*fp32", "shift_ptr": "*fp32",
           "B": "i32", "C": "i32", "P": "i32", "tiles_per_split": "i32"}
    small = {"partial_ptr": "*fp32", "weight_ptr": "*fp32", "mean_ptr": "*fp32", "gate_ptr": "*fp32",
             "shift_ptr": "*fp32", "weight_partial_ptr": "*fp32", "B": "i32", "C": "i32", "num_splits": "i32",
             "inv_p": "fp32", "gamma_ptr": "*fp32", "beta_ptr": "*fp32", "running_mean_ptr": "*fp32",
             "running_var_ptr": "*fp32", "scale_ptr": "*fp32", "eps": "fp32"}
    big["centre_ptr"] = "*fp32"
    gate = {"K": 5, "PAD": 2, "BLOCK_C": 256}
    kernels = [(F._channel_sum_kernel, big, {**meta, "HAS_CENTRE": True}),
               (F._backward_reduce_kernel, big, {**meta, "RELU": True}),
               (F._channel_affine_kernel, big, {**meta, "HAS_SHIFT": False, "HAS_CENTRE": False, "HAS_IDENTITY": True,
                                                "RELU": True}),
               (F._channel_affine_kernel, big, {**meta, "HAS_SHIFT": True, "HAS_CENTRE": True, "HAS_IDENTITY": False,
                                                "RELU": False}),
               (F._gate_forward_kernel, small, gate), (F._gate_backward_kernel, small, gate),
               (F._bn_eval_gate_kernel, small, gate)]
    for kernel, argument_types, constants in kernels:
        compile_triton_for_sm90(kernel, argument_types, constants)


# ----------------------------------------------------------------------------------------------------
# CPU: the benchmark helpers
# ----------------------------------------------------------------------------------------------------
def test_throughput_helper_on_cpu(monkeypatch):
    from ecanet import bench
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    for train in (True, False):
        result = bench.measure_throughput(model, batch_size=2, img_size=16, train=train, amp_dtype=None,
                                          warmup_steps=1, timed_steps=1, repeats=2, device="cpu")
        assert result.images_per_s > 0 and len(result.step_ms_all) == 2
    assert not model.training                   # the caller's mode is restored
    assert all(p.grad is None for p in model.parameters())
    repeats_ms = iter([4.0, 9.0, 6.0])          # ms per step of three repeats: median 6 ms
    monkeypatch.setattr(bench, "_time_ms", lambda step, steps, device: next(repeats_ms))
    result = bench.measure_throughput(model, batch_size=2, img_size=16, train=True, amp_dtype=None,
                                      warmup_steps=1, timed_steps=1, repeats=3, device="cpu")
    assert result.step_ms_all == [4.0, 9.0, 6.0] and result.step_ms_median == 6.0
    assert result.images_per_s == pytest.approx(2 / 0.006)   # 2 images every 6 ms


def test_repeats_are_sized_by_the_fastest_of_a_few_steps_with_the_heap_frozen(monkeypatch):
    """repeat_seconds sizes a repeat from the fastest of SIZING_STEPS steps timed after the warm-up, as the
    repeats run them (heap frozen): one slow step (a collection, a host stall) must not cut the repeats short."""
    import gc
    from ecanet import bench
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    ms_per_step = iter([330.0, 83.0, 85.0, 83.0, 84.0, 83.0])   # three sizing steps, then three repeats
    calls = []

    def fake_time_ms(step, steps, device):
        calls.append((steps, gc.get_freeze_count() > 0))
        return next(ms_per_step)
    monkeypatch.setattr(bench, "_time_ms", fake_time_ms)
    result = bench.measure_throughput(model, batch_size=2, img_size=8, train=False, amp_dtype=None,
                                      warmup_steps=1, timed_steps=30, repeats=3, device="cpu", repeat_seconds=1.0)
    assert bench.SIZING_STEPS == 3 and calls[:3] == [(1, True)] * 3
    assert result.timed_steps == round(1.0 / 0.083) == 12 and calls[3:] == [(12, True)] * 3


class _CollectsGarbage(nn.Module):
    """A layer whose forward runs a full garbage collection: the pause a launch-bound step can suffer."""

    def forward(self, x):
        import gc
        gc.collect()
        return x


def test_throughput_records_each_repeats_garbage_collections():
    import gc
    from ecanet.bench import measure_throughput
    gc.collect()     # the generations' counters start from zero: six small steps allocate too little for another
    quiet = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    result = measure_throughput(quiet, batch_size=2, img_size=8, train=False, amp_dtype=None, warmup_steps=1,
                                timed_steps=2, repeats=3, device="cpu")
    assert len(result.gc_full_collections_all) == len(result.gc_pause_ms_all) == 3
    assert result.gc_full_collections_all == [0, 0, 0]
    noisy = nn.Sequential(_CollectsGarbage(), nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    result = measure_throughput(noisy, batch_size=2, img_size=8, train=False, amp_dtype=None, warmup_steps=1,
                                timed_steps=2, repeats=3, device="cpu")
    assert result.gc_full_collections_all == [2, 2, 2]       # one per step
    assert all(ms > 0 for ms in result.gc_pause_ms_all)
    assert result.frozen_heap and gc.get_freeze_count() == 0     # timed frozen, released afterwards
    assert "gc_pause_ms_all" in result.to_dict()


def test_gpu_watch_summarises_each_repeats_reads():
    """The watch reads in the background while the block runs, and once as it ends; the summary is the mean
    and lowest clock, the hottest read, the mean power and busy time, and every slowdown any read reported
    (bits named by NVML's values)."""
    from ecanet.bench import GpuReading, GpuWatch
    reads = iter([GpuReading(1980, 60, 600.0, 100, 0), GpuReading(1755, 71, 700.0, 97, 0x4),
                  GpuReading(1800, 70, 650.0, 91, 0x20 | 0x1)])

    def read():
        return next(reads)   # StopIteration past the third read ends the record, as a failed NVML read does
    with GpuWatch(read, interval_s=0.001) as watch:
        time.sleep(0.05)
    assert watch.summary() == {"sm_clock_mhz": (1980 + 1755 + 1800) / 3, "sm_clock_min_mhz": 1755,
                               "temperature_max_c": 71, "power_w": 650.0, "busy_percent": 96.0,
                               "slowdowns": ["power cap", "thermal"]}
    reads = iter([GpuReading(1500, 80, 700.0, 100, 0x40)])
    with GpuWatch(read, interval_s=60) as short:   # a block shorter than the interval: the read as it ends
        pass
    assert short.summary()["sm_clock_min_mhz"] == 1500 and short.summary()["slowdowns"] == ["hardware thermal"]
    with GpuWatch(None) as nothing:     # no NVML (a CPU, no pynvml): nothing recorded
        pass
    assert nothing.summary() is None


def test_nvml_reader_finds_the_gpu_by_uuid_and_reads_it_in_watts_and_mhz(monkeypatch, caplog):
    """A stand-in pynvml: the GPU is looked up by the UUID CUDA gives it (whatever CUDA_VISIBLE_DEVICES
    renumbers), power comes in milliwatts, and an NVML without the clock-event call falls back to the older
    throttle-reasons one. Where NVML cannot be read the timing goes on unrecorded, with a warning."""
    import types
    from ecanet import bench
    looked_up = []
    fake = types.SimpleNamespace(
        NVML_CLOCK_SM=0, NVML_TEMPERATURE_GPU=0, nvmlInit=lambda: None,
        nvmlDeviceGetHandleByUUID=lambda uuid: looked_up.append(uuid) or "handle",
        nvmlDeviceGetCurrentClocksThrottleReasons=lambda handle: 0x4,
        nvmlDeviceGetClockInfo=lambda handle, kind: 1830, nvmlDeviceGetTemperature=lambda handle, kind: 64,
        nvmlDeviceGetPowerUsage=lambda handle: 699_500,
        nvmlDeviceGetUtilizationRates=lambda handle: types.SimpleNamespace(gpu=93))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device: types.SimpleNamespace(uuid="0c1d2e3f-aaaa-bbbb-cccc-0123456789ab"))
    bench._nvml_reader.cache_clear()
    try:
        read = bench._nvml_reader(torch.device("cuda", 3))
        assert looked_up == [b"GPU-0c1d2e3f-aaaa-bbbb-cccc-0123456789ab"]
        assert read() == bench.GpuReading(1830, 64, 699.5, 93, 0x4)
        fake.nvmlInit = lambda: (_ for _ in ()).throw(RuntimeError("NVML Shared Library Not Found"))
        assert bench._nvml_reader(torch.device("cuda", 4)) is None
        assert "NVML cannot be read (RuntimeError: NVML Shared Library Not Found)" in caplog.text
        assert bench._nvml_reader(torch.device("cpu")) is None
    finally:
        bench._nvml_reader.cache_clear()


def test_throughput_on_cpu_records_no_gpu_reads():
    from ecanet.bench import measure_throughput
    result = measure_throughput(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)), batch_size=2, img_size=8,
                                train=False, amp_dtype=None, warmup_steps=1, timed_steps=2, repeats=2, device="cpu")
    assert result.gpu_all == [None, None] and result.warmup_steps == 1


def test_warm_up_goes_on_while_steps_still_grow_the_allocators_pool(monkeypatch, caplog):
    """Each step that asks the driver for memory is followed by another warm-up step; the repeats record how
    often they still asked. Here the pool grows over the first 8 steps: 2 of warm-up and 6 more, and the 9th
    step is the first that asks for nothing. A pool that never stops growing ends the warm-up at
    MAX_SETTLING_STEPS more, with a warning, and every repeat records its steps' requests."""
    from ecanet import bench
    steps = []

    class Counting(nn.Module):
        def forward(self, x):
            steps.append(1)
            return x.flatten(1)[:, :3]

    def measure():
        steps.clear()
        return bench.measure_throughput(Counting(), batch_size=2, img_size=8, train=False, amp_dtype=None,
                                        warmup_steps=2, timed_steps=2, repeats=2, device="cpu")
    monkeypatch.setattr(bench, "_device_allocations", lambda device: min(len(steps), 8))
    result = measure()
    assert result.warmup_steps == 9 and result.device_allocations_all == [0, 0]
    monkeypatch.setattr(bench, "_device_allocations", lambda device: len(steps))
    result = measure()
    assert result.warmup_steps == 2 + bench.MAX_SETTLING_STEPS
    assert result.device_allocations_all == [2, 2]      # one request per step, in every repeat
    assert "still asked the driver for memory" in caplog.text


def test_profile_helper_on_cpu_attributes_the_step():
    """On a CPU the profile lists PyTorch's operators; the convolutions are found, the model's mode restored."""
    from ecanet.bench import profile_step
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3)).eval()
    result = profile_step(model, batch_size=2, img_size=16, train=True, amp_dtype=None, warmup_steps=1,
                          steps=2, timed_steps=2, repeats=1, device="cpu")
    families = result.families()
    assert "convolution / GEMM (cuDNN, cuBLAS, CUTLASS)" in families
    assert families["convolution / GEMM (cuDNN, cuBLAS, CUTLASS)"][0] >= 2   # forward and backward, per step
    # milliseconds per step on both sides (the profiler's own overhead inflates the operators' times)
    assert 0 < result.kernel_ms <= 20 * result.step_ms and result.step_ms > 0
    assert [k.ms_per_step for k in result.kernels] == sorted((k.ms_per_step for k in result.kernels), reverse=True)
    assert not model.training


@pytest.mark.parametrize(("name", "family"), [
    # names as torch.profiler reported them for compiled ResNet-50 training on an H200 (2026-11-21)
    ("triton_red_fused__native_batch_norm_legit_functional_8", "Inductor reduction"),
    ("triton_per_fused__to_copy_mul_sum_78", "Inductor reduction"),
    ("triton_poi_fused__native_batch_norm_legit_functional_relu_5", "Inductor pointwise"),
    ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64_warpgroupsize1x1x1_g1_"
     "execute_segment_k_off_kernel__5x_cudnn", "convolution / GEMM (cuDNN, cuBLAS, CUTLASS)"),
    ("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_TNT", "convolution / GEMM (cuDNN, cuBLAS, CUTLASS)"),  # cuBLAS
    ("void at::native::vectorized_elementwise_kernel<4, ...>", "other (eager elementwise, reductions)"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<...>", "optimizer (foreach)"),
    ("_channel_sum_kernel", "ecanet Triton (fused ECA)"),
    ("void bn_fw_tr_1C11_kernel_NCHW<__nv_bfloat16, float, float, 512, true, 1, true>", "batch norm (eager)"),
    ("void at::native::max_pool_forward_nhwc<float, float>(...)", "other (eager elementwise, reductions)"),
    ("void cublasLt::splitKreduce_kernel<32, 16, int, float, float, ...>",
     "convolution / GEMM (cuDNN, cuBLAS, CUTLASS)"),
])
def test_kernel_families(name, family):
    from ecanet.bench import kernel_family
    assert kernel_family(name) == family


def test_memory_floor_and_resnet50_shapes():
    from ecanet.bench import eca_floor_bytes, measure_eca_layer, resnet_eca_shapes
    shapes = resnet_eca_shapes(50, 256, 224, "3557")
    assert [(s.shape, s.k_size, s.count) for s in shapes] == [
        ((256, 256, 56, 56), 3, 3), ((256, 512, 28, 28), 5, 4), ((256, 1024, 14, 14), 5, 6),
        ((256, 2048, 7, 7), 7, 3)]
    n_bytes = 256 * 256 * 56 * 56 * 2                       # layer1's 411 MB bf16 activation at batch 256
    assert eca_floor_bytes((256, 256, 56, 56), torch.bfloat16, "layer") == (3 * n_bytes, 4 * n_bytes)
    assert eca_floor_bytes((256, 256, 56, 56), torch.bfloat16, "tail") == (4 * n_bytes, 6 * n_bytes)
    result = measure_eca_layer((2, 8, 5, 5), k_size=3, dtype=torch.float32, variant="tail", impl="plain",
                               device="cpu", copy_bandwidth=1e10, warmup=1, iters=2, repeats=1)
    assert result.forward_ms > 0 and result.floor_forward_ms == pytest.approx(4 * 400 * 4 / 1e10 * 1e3)


# ----------------------------------------------------------------------------------------------------
# GPU
# ----------------------------------------------------------------------------------------------------
GPU_SHAPES = [(3, 120, 7, 9), (1, 256, 56, 56), (2, 2048, 7, 7), (5, 1000, 13, 11), (4, 16, 112, 112)]


@pytest.mark.parametrize("shape", GPU_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize(("with_identity", "relu"), TAILS[:3])
@pytest.mark.parametrize("inputs", ["x", "x through an eval-mode BatchNorm"])
@gpu_test
def test_gpu_fused_matches_float64_plain(inputs, shape, dtype, channels_last, with_identity, relu):
    """ECA's kernels in training (output and gradients), and the inference tail that folds an eval-mode BatchNorm
    into them (output)."""
    k = 3 + 2 * (shape[1] % 3)                                   # 3, 5 or 7
    if inputs == "x":
        errors = fused_vs_float64_plain(shape, dtype, channels_last, k, with_identity, "cuda", relu=relu)
    else:
        errors = {"out": inference_tail_vs_float64_plain(shape, dtype, channels_last, k, with_identity, relu, "cuda")}
    assert max(errors.values()) < TOLERANCE[dtype], errors


@gpu_test
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_repeated_and_misaligned_calls_match_reference(dtype):
    """After its first call a plan launches the compiled kernels directly; that path must compute the same."""
    errors = repeated_and_misaligned_calls("cuda", dtype)
    assert max(errors.values()) < TOLERANCE[dtype], errors


@gpu_test
@pytest.mark.parametrize("channels_last", [True, False])
def test_gpu_float16(channels_last):
    errors = fused_vs_float64_plain((2, 200, 15, 9), torch.float16, channels_last, 5, True, "cuda")
    assert max(errors.values()) < TOLERANCE[torch.float16], errors


@gpu_test
@pytest.mark.parametrize("arch", ["eca_resnet50", "eca_mobilenet_v2"])
def test_gpu_network_inference_folds_batchnorm_under_auto_and_fused_and_matches_plain(arch):
    """bf16 autocast, channels_last, as the benchmark's eager inference: 'auto' and 'fused' take the inference
    tail in every ECA block and agree with the plain network."""
    from ecanet.models import eca_fused
    torch.manual_seed(0)
    model = models.create_model(arch).cuda().to(memory_format=torch.channels_last).eval()
    images = torch.randn(8, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
    blocks = sum(isinstance(m, EcaModule) for m in model.modules())
    outputs, folded = {}, {}
    for impl in ("plain", "auto", "fused"):
        eca_fused._bn_eval_plan.cache_clear()
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            outputs[impl] = set_eca_impl(model, impl)(images).float()
        folded[impl] = eca_fused._bn_eval_plan.cache_info().misses + eca_fused._bn_eval_plan.cache_info().hits
    assert folded == {"plain": 0, "auto": blocks, "fused": blocks}
    assert norm_rel_err(outputs["fused"], outputs["plain"]) < 2e-2
    assert torch.equal(outputs["auto"], outputs["fused"])


@gpu_test
def test_gpu_autocast_block_compiles_without_graph_breaks():
    """A Bottleneck under bf16 autocast: eager fused == compiled fused (fullgraph) ~= eager plain."""
    torch.manual_seed(0)
    block = models.create_model("eca_resnet50").layer2[1].cuda().to(memory_format=torch.channels_last)
    x = torch.randn(8, 512, 28, 28, device="cuda").contiguous(memory_format=torch.channels_last)
    results = {}
    for name, impl, compiled in (("plain", "plain", False), ("fused", "fused", False),
                                 ("compiled", "fused", True)):
        torch._dynamo.reset()
        set_eca_impl(block, impl)
        run = torch.compile(block, fullgraph=True) if compiled else block
        xi = x.clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = run(xi)
        # d(out^2)/d out = 2 out vanishes where the ReLU mask could flip between bf16 computations.
        grads = torch.autograd.grad(out.float().square().sum(), [xi, block.eca.conv.weight])
        results[name] = (out, *grads)
    for name in ("fused", "compiled"):
        errors = [norm_rel_err(got, want) for got, want in zip(results[name], results["plain"])]
        assert max(errors) < 2e-2, (name, errors)
    assert results["compiled"][0].is_contiguous(memory_format=torch.channels_last)


@gpu_test
def test_gpu_training_steps_match_plain():
    """Five fp32 SGD steps of ECA-ResNet-18: the same losses (deterministic cuDNN, no TF32).

    The tolerance is fp32 reordering noise: in this setting (run on the CPU with the interpreter) the plain
    model alone gives losses 5.5e-3 apart between NHWC and NCHW, and fused vs plain 8e-4 apart.
    """
    flags = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = \
        True, False, False
    try:
        torch.manual_seed(0)
        model = models.create_model("eca_resnet18", num_classes=10)
        images = torch.randn(16, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, 10, (16,), device="cuda")
        losses = _losses_per_implementation(model.cuda().to(memory_format=torch.channels_last), images, labels,
                                            lr=0.02, steps=5)
        torch.testing.assert_close(losses["fused"], losses["plain"], rtol=1e-2, atol=1e-3)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = flags
