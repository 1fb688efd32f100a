"""The torch.compile form of a block's tail, relu(ECA(BN(x)) + identity) written as one shared reduction
and one pointwise map: the same function, gradients and BatchNorm running statistics as the modules, with
and without the add and the ReLU (ResNet's tail, MobileNetV2's residual and non-residual tails)."""
from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

from ecanet import models
from ecanet.models import eca_module
from ecanet.models.eca_module import bn_eca_tail_decomposed, set_eca_impl
from conftest import bn_and_eca


def _count_calls(monkeypatch, *names: str) -> dict[str, int]:
    """Counts the calls of these functions of eca_module (a compiled model counts the calls it traced)."""
    calls = dict.fromkeys(names, 0)

    def counting(name):
        real = getattr(eca_module, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return wrapper

    for name in names:
        monkeypatch.setattr(eca_module, name, counting(name))
    return calls


# (with_identity, relu): ResNet's tail, MobileNetV2's residual tail, MobileNetV2's tail without residual.
TAILS = [(True, True), (True, False), (False, False)]


@pytest.mark.parametrize(("with_identity", "relu"), TAILS)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(("shape", "k"), [((3, 20, 7, 9), 3), ((1, 37, 5, 5), 5), ((4, 64, 2, 3), 1)])
def test_decomposed_tail_is_the_module_tail(shape, k, training, channels_last, with_identity, relu):
    bn, eca = bn_and_eca(shape[1], k)
    bn_ref = copy.deepcopy(bn)
    eca_ref = set_eca_impl(copy.deepcopy(eca), "plain")
    bn.train(training)
    bn_ref.train(training)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = (torch.randn(shape, dtype=torch.float64) * 2 + 0.3).contiguous(memory_format=layout).requires_grad_()
    identity = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    x_ref, identity_ref = x.detach().clone().requires_grad_(), identity.detach().clone().requires_grad_()

    out = bn_eca_tail_decomposed(x, bn, eca.conv.weight, identity if with_identity else None, relu=relu)
    ref = eca_ref.scale_add_relu(bn_ref(x_ref), identity_ref if with_identity else None, relu=relu)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    if not relu:
        assert (out < 0).any()   # no ReLU applied

    grad = torch.randn(shape, dtype=torch.float64)
    out.backward(grad)
    ref.backward(grad)
    pairs = [(x.grad, x_ref.grad), (bn.weight.grad, bn_ref.weight.grad), (bn.bias.grad, bn_ref.bias.grad),
             (eca.conv.weight.grad, eca_ref.conv.weight.grad)]
    if with_identity:
        pairs.append((identity.grad, identity_ref.grad))
    else:
        assert identity.grad is None
    for mine, theirs in pairs:
        torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-9)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(bn, name), getattr(bn_ref, name), rtol=1e-12, atol=1e-12)


def test_large_mean_activations_do_not_lose_the_variance():
    """Sums of squares around the first sample's channel means (not around 0): float32 activations with mean
    1000 and standard deviation 0.01 still give BatchNorm's output, as the float64 modules compute it, even
    with a 300-sigma outlier in the first pixel (which defeats a shift by that pixel alone)."""
    bn, eca = bn_and_eca(8, 3)
    torch.manual_seed(1)
    x = 1000 + 0.01 * torch.randn(16, 8, 56, 56)
    x[0, :, 0, 0] += 3.0
    identity = torch.randn(16, 8, 56, 56)
    bn32 = copy.deepcopy(bn).float()
    out = bn_eca_tail_decomposed(x, bn32, eca.conv.weight.float(), identity)
    ref = set_eca_impl(eca, "plain").scale_add_relu(bn(x.double()), identity.double())
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bn32.running_var.double(), bn.running_var, rtol=1e-4, atol=1e-9)


def test_training_tail_refuses_one_value_per_channel_and_double_backward():
    """As nn.BatchNorm2d: a batch of one 1x1 image has no variance. The written-out backward is first order."""
    bn, eca = bn_and_eca(6, 3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn_eca_tail_decomposed(torch.randn(1, 6, 1, 1, dtype=torch.float64), bn, eca.conv.weight,
                                   torch.randn(1, 6, 1, 1, dtype=torch.float64))
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    out = bn_eca_tail_decomposed(x, bn, eca.conv.weight, torch.randn(2, 6, 3, 3, dtype=torch.float64))
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        grad.sum().backward()


def test_bf16_tail_keeps_dtypes_and_matches_float64():
    """Activations in bf16 (as under autocast): out and the gradients of x and identity come back in bf16,
    the parameters' gradients in float32, all within bf16 rounding of the float64 computation."""
    bn, eca = bn_and_eca(24, 5)
    shape = (3, 24, 7, 5)
    torch.manual_seed(2)
    x64, id64, grad64 = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64), \
        torch.randn(shape, dtype=torch.float64)
    results = {}
    for dtype in (torch.float64, torch.bfloat16):
        bn_d, eca_d = copy.deepcopy(bn).float(), copy.deepcopy(eca).float()
        if dtype == torch.float64:
            bn_d, eca_d = bn_d.double(), eca_d.double()
        x = x64.to(dtype, copy=True).requires_grad_()
        identity = id64.to(dtype, copy=True).requires_grad_()
        out = bn_eca_tail_decomposed(x, bn_d, eca_d.conv.weight, identity)
        out.backward(grad64.to(dtype))
        results[dtype] = (out, x.grad, identity.grad, bn_d.weight.grad, eca_d.conv.weight.grad)
    low, high = results[torch.bfloat16], results[torch.float64]
    assert [t.dtype for t in low] == [torch.bfloat16] * 3 + [torch.float32] * 2
    for mine, reference in zip(low, high):
        scale = reference.abs().max()
        assert (mine.double() - reference).abs().max() <= 2e-2 * scale


def test_compiled_block_takes_the_decomposed_form_and_matches_eager(monkeypatch):
    torch.manual_seed(0)
    block = set_eca_impl(models.resnet.Bottleneck(16, 4, attention="eca", k_size=3).double().train(), "auto")
    x = torch.randn(2, 16, 6, 5, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    eager = set_eca_impl(copy.deepcopy(block), "plain")
    calls = _count_calls(monkeypatch, "bn_eca_tail_decomposed")
    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    assert calls["bn_eca_tail_decomposed"] >= 1  # traced through the decomposed form
    ref = eager(x_ref)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(block.bn3.running_var, eager.bn3.running_var, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(ref)
    out.backward(grad)   # the written-out backward, traced by the compiler
    ref.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-9, atol=1e-9)
    for name in ("bn3.weight", "bn3.bias", "eca.conv.weight", "conv3.weight"):
        torch.testing.assert_close(block.get_parameter(name).grad, eager.get_parameter(name).grad,
                                   rtol=1e-9, atol=1e-9)


def test_eager_and_plain_never_take_the_decomposed_form(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("decomposed form used outside torch.compile")

    monkeypatch.setattr(eca_module, "bn_eca_tail_decomposed", fail)
    model = models.create_model("eca_resnet18", num_classes=3).train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_conv_output_mean_is_the_mean_of_the_convolution(bias, channels_last):
    torch.manual_seed(3)
    conv = nn.Conv2d(6, 10, kernel_size=1, bias=bias).double()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    y = torch.randn(3, 6, 7, 5, dtype=torch.float64).contiguous(memory_format=layout)
    torch.testing.assert_close(eca_module.conv_output_mean(conv, y), conv(y).mean(dim=(2, 3)),
                               rtol=1e-12, atol=1e-12)


def test_conv_output_mean_stays_float32_under_autocast():
    """Under bf16 autocast the product is still float32: the same numbers as without autocast."""
    torch.manual_seed(4)
    conv = nn.Conv2d(8, 16, kernel_size=1, bias=False)
    y = torch.randn(2, 8, 5, 5)
    expected = eca_module.conv_output_mean(conv, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mean = eca_module.conv_output_mean(conv, y)
    assert mean.dtype == torch.float32
    torch.testing.assert_close(mean, expected, rtol=1e-6, atol=1e-6)


def _hooked(hook_kind: str) -> nn.Conv2d:
    conv = nn.Conv2d(4, 16, 1, bias=False)
    if hook_kind == "forward":
        conv.register_forward_hook(lambda module, inputs, out: out * 2)
    elif hook_kind == "pre":
        conv.register_forward_pre_hook(lambda module, inputs: (inputs[0] * 3,))
    else:
        conv.forward = lambda y: nn.functional.conv2d(y, conv.weight) + 1
    return conv


class _ConvSubclass(nn.Conv2d):
    pass


# Only a plain 1x1, stride-1, unpadded, ungrouped convolution that computes its own forward, with no more input
# than output channels, has its output's mean taken from its input.
@pytest.mark.parametrize(("build", "pools"), [
    (lambda: nn.Conv2d(4, 16, 1, bias=False), True),
    (lambda: nn.Conv2d(4, 16, 1, bias=True, padding="valid", dilation=2), True),
    (lambda: nn.Conv2d(16, 4, 1), False),                   # more input than output channels
    (lambda: nn.Conv2d(4, 16, 3, padding=1), False),
    (lambda: nn.Conv2d(4, 16, 1, stride=2), False),
    (lambda: nn.Conv2d(4, 16, 1, padding=1), False),
    (lambda: nn.Conv2d(4, 16, 1, groups=4), False),
    (lambda: _ConvSubclass(4, 16, 1), False),
    (lambda: _hooked("forward"), False),
    (lambda: _hooked("pre"), False),
    (lambda: _hooked("instance forward"), False),
])
def test_which_convolutions_pool_through_their_input(build, pools):
    conv = build()
    y = torch.randn(2, 4, 5, 5)
    assert eca_module._pools_through_conv(conv, y) == pools
    if pools:
        torch.testing.assert_close(eca_module.conv_output_mean(conv, y), conv(y).mean(dim=(2, 3)),
                                   rtol=1e-5, atol=1e-5)


def test_pooling_from_the_convolution_input_is_for_eval_only():
    bn, eca = bn_and_eca(6, 3)
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="eval mode"):
        bn_eca_tail_decomposed(x, bn.train(), eca.conv.weight, x_mean=x.mean(dim=(2, 3)))


# (block, whether compiled inference takes ECA's pooling from the last convolution's input): only
# Bottleneck's 1x1 conv3 (C/4 -> C) qualifies; BasicBlock's conv2 is 3x3 and MobileNetV2's projection
# has more input than output channels.
POOLING_BLOCKS = [
    (lambda: models.resnet.Bottleneck(16, 4, attention="eca", k_size=3), (2, 16, 6, 5), True),
    (lambda: models.resnet.BasicBlock(8, 8, attention="eca", k_size=3), (2, 8, 6, 5), False),
    (lambda: models.mobilenetv2.InvertedResidual(8, 8, 1, 6, attention="eca", k_size=3), (2, 8, 6, 5), False),
]


@pytest.mark.parametrize(("build", "shape", "pools_from_input"), POOLING_BLOCKS)
def test_compiled_inference_tail_matches_eager(monkeypatch, build, shape, pools_from_input):
    torch.manual_seed(5)
    block = set_eca_impl(build().double(), "auto")
    for module in block.modules():   # non-trivial running statistics, so that BN's map matters
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    block.eval()
    eager = set_eca_impl(copy.deepcopy(block), "plain")
    calls = _count_calls(monkeypatch, "conv_output_mean", "bn_eca_tail_decomposed")
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out = torch.compile(block, backend="aot_eager", fullgraph=True)(x)
    ref = eager(x_ref)
    assert calls["bn_eca_tail_decomposed"] >= 1
    assert (calls["conv_output_mean"] >= 1) == pools_from_input
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    grad = torch.randn_like(ref)   # eval-mode BatchNorm with trainable weights, as when fine-tuning
    out.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-9, atol=1e-9)
    for (name, mine), theirs in zip(block.named_parameters(), eager.parameters()):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-9, atol=1e-9, msg=name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_compiled_bottleneck_inference_is_as_accurate_as_plain(monkeypatch):
    """Inductor's compiled inference of Bottleneck ECA-ResNet under bf16 autocast, with ECA's pooling taken
    through conv3, lands no further from the float64 network than the plain code's bf16 does."""
    torch.manual_seed(0)
    model = models.resnet.ResNet(models.resnet.Bottleneck, (1, 1, 1, 1), num_classes=10, attention="eca",
                                 k_size=3)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    model = model.cuda().eval().to(memory_format=torch.channels_last)
    images = torch.randn(8, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
    calls = _count_calls(monkeypatch, "conv_output_mean")
    torch._dynamo.reset()

    def logits(impl, compiled, dtype=torch.float32, amp=True):
        replica = set_eca_impl(copy.deepcopy(model).to(dtype), impl)
        run = torch.compile(replica) if compiled else replica
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            return run(images.to(dtype)).double()

    exact = logits("plain", compiled=False, dtype=torch.float64, amp=False)
    error = {name: ((out - exact).norm() / exact.norm()).item()
             for name, out in (("plain", logits("plain", compiled=False)), ("auto", logits("auto", compiled=True)))}
    assert calls["conv_output_mean"] >= 1
    assert error["auto"] <= 1.5 * error["plain"] + 1e-3, error


# One training step of a compiled ECA Bottleneck in a process of its own; prints AOTAutograd's cache
# counters and the input's gradient. argv[1]: "ecanet" compiles through models.compile_model, "torch"
# through torch.compile alone.
_CACHED_STEP = r"""
import json, sys, torch
from torch._dynamo.utils import counters
from ecanet import models
torch.manual_seed(0)
block = models.set_eca_impl(models.resnet.Bottleneck(16, 4, attention="eca", k_size=3).train(), "auto")
compile_ = models.compile_model if sys.argv[1] == "ecanet" else torch.compile
x = torch.randn(2, 16, 6, 5, requires_grad=True)
compile_(block)(x).square().sum().backward()
print(json.dumps({"aot": dict(counters["aot_autograd"]), "grad": x.grad.flatten().tolist()}))
"""


@pytest.mark.slow
def test_compiled_training_step_loads_from_the_cache_in_a_new_process(tmp_path):
    """The compiled training tail is a torch.autograd.Function, which torch keeps out of AOTAutograd's cache by
    default: through compile_model a second process loads the whole compiled step from disk, with the same
    gradient, where torch.compile alone runs AOTAutograd again."""
    import json
    import subprocess
    import sys
    env = {name: value for name, value in os.environ.items()   # settings that would decide the outcome
           if name not in ("TORCHINDUCTOR_AUTOGRAD_CACHE_ALLOW_CUSTOM_AUTOGRAD", "TORCHINDUCTOR_FORCE_DISABLE_CACHES")}
    env.update(TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"), TORCHINDUCTOR_FX_GRAPH_CACHE="1",
               TORCHINDUCTOR_AUTOGRAD_CACHE="1")

    def step(how: str) -> dict:
        done = subprocess.run([sys.executable, "-c", _CACHED_STEP, how], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    first, second, torch_only = step("ecanet"), step("ecanet"), step("torch")
    assert first["aot"].get("autograd_cache_saved") == 1, first["aot"]
    assert second["aot"].get("autograd_cache_hit") == 1 and "autograd_cache_bypass" not in second["aot"], second["aot"]
    assert second["grad"] == first["grad"]
    assert torch_only["aot"].get("autograd_cache_bypass") == 1, torch_only["aot"]   # what compile_model changes
