"""The torch.compile form of a block's tail, relu(ECA(BN(x)) + identity) written as one shared reduction
and one pointwise map: the same function, gradients and BatchNorm running statistics as the modules."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import models
from models.eca_module import EcaModule, bn_eca_add_relu_decomposed, eca_implementation


def _modules(channels: int, k: int, seed: int = 0):
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(channels).double()
    nn.init.uniform_(bn.weight, 0.5, 1.5)
    nn.init.uniform_(bn.bias, -0.5, 0.5)
    bn.running_mean.uniform_(-0.2, 0.2)
    bn.running_var.uniform_(0.5, 1.5)
    eca = EcaModule(channels, k).double()
    nn.init.normal_(eca.conv.weight)
    return bn, eca


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(("shape", "k"), [((3, 20, 7, 9), 3), ((1, 37, 5, 5), 5), ((4, 64, 2, 3), 1)])
def test_decomposed_tail_is_the_module_tail(shape, k, training):
    bn, eca = _modules(shape[1], k)
    bn_ref = copy.deepcopy(bn)
    eca_ref = copy.deepcopy(eca)
    bn.train(training)
    bn_ref.train(training)
    x = (torch.randn(shape, dtype=torch.float64) * 2 + 0.3).requires_grad_()
    identity = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    x_ref, identity_ref = x.detach().clone().requires_grad_(), identity.detach().clone().requires_grad_()

    out = bn_eca_add_relu_decomposed(x, bn, eca.conv.weight, identity)
    with eca_implementation("plain"):
        ref = eca_ref.scale_add_relu(bn_ref(x_ref), identity_ref)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)

    grad = torch.randn(shape, dtype=torch.float64)
    out.backward(grad)
    ref.backward(grad)
    for mine, theirs in ((x.grad, x_ref.grad), (identity.grad, identity_ref.grad),
                         (bn.weight.grad, bn_ref.weight.grad), (bn.bias.grad, bn_ref.bias.grad),
                         (eca.conv.weight.grad, eca_ref.conv.weight.grad)):
        torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-9)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(bn, name), getattr(bn_ref, name), rtol=1e-12, atol=1e-12)


def test_compiled_block_takes_the_decomposed_form_and_matches_eager():
    torch.manual_seed(0)
    block = models.resnet.Bottleneck(16, 4, attention="eca", k_size=3).double().train()
    x = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    eager = copy.deepcopy(block)
    calls = {"n": 0}
    real = models.eca_module.bn_eca_add_relu_decomposed

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    models.eca_module.bn_eca_add_relu_decomposed = counting
    try:
        with eca_implementation("auto"):
            compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
            out = compiled(x)
    finally:
        models.eca_module.bn_eca_add_relu_decomposed = real
    assert calls["n"] >= 1  # traced through the decomposed form
    with eca_implementation("plain"):
        ref = eager(x)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(block.bn3.running_var, eager.bn3.running_var, rtol=1e-12, atol=1e-12)


def test_eager_and_plain_never_take_the_decomposed_form(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("decomposed form used outside torch.compile")

    monkeypatch.setattr(models.eca_module, "bn_eca_add_relu_decomposed", fail)
    model = models.create_model("eca_resnet18", num_classes=3).train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
