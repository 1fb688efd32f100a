"""The Triton training tail relu(ECA(BN(x)) + identity) that compiled training runs on GPUs, and eager training
with implementation 'fused' (``ecanet.models.bn_eca_fused``): the function, the gradients of x, identity,
BatchNorm's affine parameters and ECA's kernel, and BatchNorm's running statistics, against the float64 modules.

CPU: the kernels under Triton's interpreter (tests named ``interpreter``, in a subprocess), launched as the
ops and directly; CPU tensors never take the tail. GPU: compiled and eager blocks of ECA-MobileNetV2 and
ECA-ResNet take it and match the plain code.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ecanet.models import eca_module
from ecanet.models.eca_module import EcaModule, set_eca_impl
from conftest import bn_and_eca, compile_triton_for_sm90, INTERPRETED, interpreter_parent, run_interpreter_tests

HAS_TAIL = eca_module.bn_eca_fused is not None
HAS_CUDA = torch.cuda.is_available()
interpreter_only = pytest.mark.skipif(not (INTERPRETED and HAS_TAIL),
                                      reason="runs in test_triton_interpreter's subprocess")
gpu = pytest.mark.skipif(not (HAS_CUDA and HAS_TAIL), reason="needs a CUDA GPU, Triton and torch.library.triton_op")

# (with_identity, relu): ResNet's tail, MobileNetV2's residual tail, MobileNetV2's tail without residual.
TAILS = [(True, True), (True, False), (False, False)]


def _tail_against_float64(x64: torch.Tensor, k: int, with_identity: bool, relu: bool, dtype: torch.dtype,
                          layout: torch.memory_format, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{name: (fused result, float64 reference)} for the output, the gradients and the running statistics of one
    training step of the tail on x64's values in ``dtype``."""
    from ecanet.models import bn_eca_fused
    bn, eca = bn_and_eca(x64.shape[1], k, seed)
    bn_fused, weight = copy.deepcopy(bn).float(), eca.conv.weight.detach().float().clone().requires_grad_()
    torch.manual_seed(seed + 1)
    identity64, grad64 = torch.randn_like(x64), torch.randn_like(x64)
    x_ref = x64.to(dtype).double().requires_grad_()
    identity_ref = identity64.to(dtype).double().requires_grad_()
    ref = eca.scale_add_relu(bn(x_ref), identity_ref if with_identity else None, relu=relu)
    x = x64.to(dtype).contiguous(memory_format=layout).requires_grad_()
    identity = identity64.to(dtype).contiguous(memory_format=layout).requires_grad_()
    out = bn_eca_fused.bn_eca_tail_training(x, bn_fused, weight, identity if with_identity else None, relu=relu)
    assert out.dtype == dtype
    ref.backward(grad64)
    out.backward(grad64.to(dtype))
    pairs = {"out": (out, ref), "x.grad": (x.grad, x_ref.grad), "gamma.grad": (bn_fused.weight.grad, bn.weight.grad),
             "beta.grad": (bn_fused.bias.grad, bn.bias.grad), "eca.grad": (weight.grad, eca.conv.weight.grad),
             "running_mean": (bn_fused.running_mean, bn.running_mean),
             "running_var": (bn_fused.running_var, bn.running_var),
             "num_batches_tracked": (bn_fused.num_batches_tracked, bn.num_batches_tracked)}
    if with_identity:
        pairs["identity.grad"] = (identity.grad, identity_ref.grad)
    else:
        assert identity.grad is None
    return pairs


def _assert_close(pairs: dict, rtol: float, atol: float, case: str = "") -> None:
    for name, (got, want) in pairs.items():
        torch.testing.assert_close(got.double().cpu(), want.double().cpu(), rtol=rtol, atol=atol,
                                   msg=f"{name} {case}".strip())


@pytest.mark.skipif(INTERPRETED, reason="Triton's interpreter runs the kernels on the CPU")
def test_cpu_tensors_never_take_the_triton_tail():
    """Without Triton's interpreter the tail's kernels need a GPU: CPU tensors take the decomposed form when
    compiled and BatchNorm, then ECA, in eager mode."""
    if not HAS_TAIL:
        pytest.skip("the Triton tail did not import")
    bn, eca = bn_and_eca(8, 3)
    assert not eca_module.bn_eca_fused.supports_training_tail(torch.randn(2, 8, 3, 3), bn.float(),
                                                              weight=eca.conv.weight.float())


@pytest.mark.skipif(INTERPRETED, reason="compiles with the real Triton compiler")
def test_tail_kernels_compile_for_sm90():
    """Triton's real compiler (ptxas included) accepts every kernel of the tail for Hopper, without a GPU: with
    the launch sizes of an ECA-ResNet-50 stage-1 tail (batch 256, bf16, channels_last), the finalize kernel both
    updating the running statistics (eager mode) and storing the batch's (the op)."""
    if not HAS_TAIL:
        pytest.skip("the Triton tail did not import")
    F = eca_module.bn_eca_fused
    plan = F._tail_plan(256, 256, 56 * 56, True, torch.device("cpu"))
    argument_types = {name: "*fp32" for name in ("pivot_ptr", "sum_part_ptr", "square_part_ptr", "gamma_ptr",
                                                 "beta_ptr", "centre_ptr", "rstd_ptr", "xhat_mean_ptr", "pooled_ptr",
                                                 "batch_mean_ptr", "batch_var_ptr", "running_mean_ptr",
                                                 "running_var_ptr", "gate_ptr", "weight_ptr", "dot_part_ptr",
                                                 "grad_pooled_ptr", "grad_gamma_ptr", "grad_beta_ptr",
                                                 "weight_partial_ptr", "grad_weight_ptr")}
    argument_types |= {name: "*bf16" for name in ("x_ptr", "identity_ptr", "out_ptr", "grad_ptr", "grad_pre_ptr",
                                                  "grad_x_ptr")}
    argument_types |= {"batches_ptr": "*i64", "eps": "fp32", "momentum": "fp32"}
    argument_types |= dict.fromkeys(("B", "C", "P", "tiles_per_split", "num_splits", "weight_rows"), "i32")
    taps = {"K": 3, "PAD": 1, "BLOCK_K": 4}
    kernels = [(F._bn_stats_kernel, plan.tiling_meta),
               (F._bn_finalize_kernel, {"UPDATE_RUNNING": True, **plan.finalize_meta}),
               (F._bn_finalize_kernel, {"UPDATE_RUNNING": False, **plan.finalize_meta}),
               (F._running_stats_kernel, {"BLOCK_C": F.RUNNING_STATS_BLOCK_C}),
               (F._bn_eca_apply_kernel, {"HAS_IDENTITY": True, "RELU": True, "K": 3, "PAD": 1, **plan.tiling_meta}),
               (F._bn_eca_backward_reduce_kernel, {"RELU": True, **plan.tiling_meta}),
               (F._bn_eca_gate_backward_kernel, {**taps, **plan.finalize_meta}),
               (F._bn_eca_backward_apply_kernel, {"K": 3, "BLOCK_K": 4, **plan.tiling_meta})]
    for kernel, constants in kernels:
        compile_triton_for_sm90(kernel, argument_types, constants)


# ----------------------------------------------------------------------------------------------------
# The kernels, interpreted on the CPU
# ----------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not HAS_TAIL, reason="Triton or torch.library.triton_op is missing")
@interpreter_parent
def test_triton_interpreter():
    run_interpreter_tests(__file__)


@interpreter_only
@pytest.mark.parametrize(("with_identity", "relu"), TAILS)
@pytest.mark.parametrize(("shape", "k", "channels_last"),
                         [((3, 20, 7, 9), 3, False), ((3, 20, 7, 9), 3, True), ((1, 37, 5, 5), 5, True),
                          ((4, 64, 2, 3), 1, False), ((5, 40, 33, 31), 3, True)])
def test_interpreter_tail_matches_float64bn_and_eca(shape, k, channels_last, with_identity, relu):
    """float32 against the float64 modules: several H*W splits (33x31), one sample, more channels than a program
    takes (64, 40), kernel sizes 1, 3 and 5, both layouts."""
    torch.manual_seed(2)
    x64 = torch.randn(shape, dtype=torch.float64) * 2 + 0.3
    layout = torch.channels_last if channels_last else torch.contiguous_format
    _assert_close(_tail_against_float64(x64, k, with_identity, relu, torch.float32, layout), rtol=1e-4, atol=1e-4)


@interpreter_only
def test_interpreter_large_mean_activations_do_not_lose_the_variance():
    """float32 activations with mean 1000 and standard deviation 0.01, a 300-sigma outlier in the first pixel,
    still give BatchNorm's output and statistics as the float64 modules do (a pivot at that pixel alone, or
    sums of squares around 0, would not)."""
    torch.manual_seed(1)
    x64 = (1000 + 0.01 * torch.randn(16, 8, 56, 56)).double()
    x64[0, :, 0, 0] += 3.0
    pairs = _tail_against_float64(x64, 3, True, True, torch.float32, torch.contiguous_format)
    _assert_close({name: pairs[name] for name in ("out", "running_var", "num_batches_tracked")}, rtol=1e-4, atol=1e-4)


@interpreter_only
def test_interpreter_bf16_tail_stays_within_bf16_rounding():
    """bf16 activations (as under autocast): out and the gradients of x and identity in bf16, the parameters'
    in float32, within bf16 rounding of the float64 computation on the same bf16 inputs."""
    torch.manual_seed(3)
    pairs = _tail_against_float64(torch.randn(3, 24, 7, 5, dtype=torch.float64), 5, True, True, torch.bfloat16,
                                  torch.channels_last)
    assert pairs["x.grad"][0].dtype == pairs["identity.grad"][0].dtype == torch.bfloat16
    assert pairs["gamma.grad"][0].dtype == pairs["eca.grad"][0].dtype == torch.float32
    for name, (got, want) in pairs.items():
        assert (got.double() - want).abs().max() <= 2e-2 * want.abs().max() + 1e-6, name


def _training_step_through(path: str, x: torch.Tensor, identity: torch.Tensor | None, grad: torch.Tensor,
                           relu: bool) -> list[torch.Tensor]:
    """Output, gradients (x, identity if any, gamma, beta, ECA's kernel) and BatchNorm's buffers after one training
    step of the tail, run as torch.compile runs it ('ops': the ops under their autograd formula) or as eager mode
    does (:func:`bn_eca_tail_training` outside torch.compile)."""
    from ecanet.models import bn_eca_fused
    bn, eca = bn_and_eca(x.shape[1], 3)
    bn = bn.float()
    weight = eca.conv.weight.detach().float().requires_grad_()
    x = x.detach().clone().requires_grad_()
    identity = None if identity is None else identity.detach().clone().requires_grad_()
    if path == "ops":
        out, batch_mean, batch_var, *_ = bn_eca_fused.bn_eca_train_forward(x, bn.weight, bn.bias, weight, identity,
                                                                           bn.eps, relu)
        bn_eca_fused.bn_update_running_stats(bn.running_mean, bn.running_var, bn.num_batches_tracked,
                                             batch_mean.detach(), batch_var.detach(), bn.momentum)
    else:
        out = bn_eca_fused.bn_eca_tail_training(x, bn, weight, identity, relu=relu)
    out.backward(grad)
    grads = [x.grad, *(() if identity is None else (identity.grad,)), bn.weight.grad, bn.bias.grad, weight.grad]
    return [out.detach(), *grads, bn.running_mean, bn.running_var, bn.num_batches_tracked]


@interpreter_only
@pytest.mark.parametrize(("with_identity", "relu"), TAILS)
def test_interpreter_ops_and_eager_path_agree_bitwise(with_identity, relu):
    """The ops under their autograd formula (what torch.compile runs) and the eager path (its own autograd.Function)
    share the code that launches; the eager path's small buffers are rows of one tensor, and its finalize kernel
    updates the running statistics with the ops' arithmetic: a training step gives the same output, gradients
    and running statistics, bit for bit. (The interpreter runs every launch through Triton's JIT; the GPU tests
    check that the eager path's launches go direct.)"""
    torch.manual_seed(4)
    x = (torch.randn(3, 20, 7, 9) * 2 + 0.5).contiguous(memory_format=torch.channels_last)
    identity, grad = torch.randn_like(x), torch.randn_like(x)
    identity = identity if with_identity else None
    through_ops = _training_step_through("ops", x, identity, grad, relu)
    eager = _training_step_through("eager", x, identity, grad, relu)
    assert through_ops[-1].item() == 1
    for got, want in zip(eager, through_ops, strict=True):
        assert torch.equal(got, want)


class _BatchNormSubclass(nn.BatchNorm2d):
    """A BatchNorm2d subclass (as SyncBatchNorm is): its forward may differ from nn.BatchNorm2d's."""


# How each case builds its BatchNorm2d (the rest take the defaults).
BATCHNORM_OPTIONS = {"affine off": {"affine": False}, "no running stats": {"track_running_stats": False}}
# Where each case puts a hook that records its calls: (module, hook kind).
HOOKS = {"forward hook": ("bn", "forward"), "backward hook": ("bn", "backward"), "ECA hook": ("eca", "forward"),
         "ECA convolution hook": ("conv", "forward"), "global hook": (None, "forward")}


@interpreter_only
@pytest.mark.parametrize("case", ["takes", "auto", "auto, kernels tail", "plain", "eval", "subclass", "momentum None",
                                  *BATCHNORM_OPTIONS, *HOOKS])
def test_interpreter_which_batchnorms_take_the_eager_tail(case):
    """Eager training takes the tail for a plain affine nn.BatchNorm2d with running statistics, in training mode,
    under implementation 'fused' (on the CPU: 'auto' asks for the tail's kernels on CUDA tensors only), and only
    where calling BatchNorm and ECA would run nothing but their forwards (hooks of either module, or global ones,
    are run by calling them). Either way a training step gives the float64 modules' output, gradients and
    buffers, and every hook runs."""
    from ecanet.models import bn_eca_fused
    torch.manual_seed(5)
    bn = (_BatchNormSubclass if case == "subclass" else nn.BatchNorm2d)(16, **BATCHNORM_OPTIONS.get(case, {}))
    bn64, eca64 = bn_and_eca(16, 3)
    bn.load_state_dict(bn64.state_dict(), strict=False)   # what bn has of the random parameters and statistics
    bn.train(case != "eval")
    if case == "momentum None":
        bn.momentum = None
    bn64 = copy.deepcopy(bn).double()
    eca = copy.deepcopy(eca64).float()
    eca.impl = {"auto": "auto", "auto, kernels tail": "auto", "plain": "plain"}.get(case, "fused")
    calls, hooked, handles = [], [], []
    real = bn_eca_fused.bn_eca_tail_training
    taken = lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs)  # noqa: E731
    if case in HOOKS:
        where, kind = HOOKS[case]
        # a global hook runs for every module: it records bn's calls
        watched = {"eca": eca, "conv": eca.conv}.get(where, bn)
        register = {("bn", "forward"): bn.register_forward_hook, ("eca", "forward"): eca.register_forward_hook,
                    ("conv", "forward"): eca.conv.register_forward_hook,
                    ("bn", "backward"): bn.register_full_backward_hook,
                    (None, "forward"): nn.modules.module.register_module_forward_hook}[(where, kind)]
        handles.append(register(lambda module, *_: hooked.append(module) if module is watched else None))
    x, identity, grad = torch.randn(4, 16, 5, 6), torch.randn(4, 16, 5, 6), torch.randn(4, 16, 5, 6)
    x64 = x.double().requires_grad_()
    x = x.requires_grad_()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(bn_eca_fused, "bn_eca_tail_training", taken)
            eager_tail = "kernels" if case == "auto, kernels tail" else "modules"
            out = eca.bn_scale_add_relu(bn, x, identity, eager_tail=eager_tail)
        out.backward(grad)
    finally:
        for handle in handles:
            handle.remove()
    assert bool(calls) == (case == "takes"), case
    assert bool(hooked) == (case in HOOKS), case
    want = eca64.scale_add_relu(bn64(x64), identity.double())
    want.backward(grad.double())
    got = {"out": out, "x.grad": x.grad, "eca.grad": eca.conv.weight.grad, **dict(bn.named_buffers()),
           **{f"{name}.grad": p.grad for name, p in bn.named_parameters()}}
    reference = {"out": want, "x.grad": x64.grad, "eca.grad": eca64.conv.weight.grad, **dict(bn64.named_buffers()),
                 **{f"{name}.grad": p.grad for name, p in bn64.named_parameters()}}
    assert got.keys() == reference.keys()
    for name in got:
        torch.testing.assert_close(got[name].double(), reference[name].double(), rtol=1e-4, atol=1e-4, msg=name)


@interpreter_only
@pytest.mark.parametrize("case", ["takes", "eval", "momentum None", *BATCHNORM_OPTIONS, "float16 statistics",
                                  "kernel on another device", "float64 input"])
def test_interpreter_supports_training_tail_answers_for_every_batchnorm(case):
    """The tail's own test of its inputs says no, rather than failing later, for every BatchNorm it does not
    take, whatever its caller checked first."""
    from ecanet.models import bn_eca_fused
    bn = nn.BatchNorm2d(8, **BATCHNORM_OPTIONS.get(case, {})).train(case != "eval")
    if case == "momentum None":
        bn.momentum = None
    if case == "float16 statistics":
        bn.half()
    weight = torch.randn(1, 1, 3, device="meta" if case == "kernel on another device" else "cpu")
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64 if case == "float64 input" else torch.float32)
    assert bn_eca_fused.supports_training_tail(x, bn, weight=weight) == (case == "takes")


def _running_statistics_after_steps(path: str, momenta: tuple, monkeypatch) -> list[str]:
    """Two training steps of a tail with 37 channels (ten programs of the finalize kernel, the last one partly
    masked) on new batches, for each BatchNorm momentum in turn (each a BatchNorm of its own, on inputs of
    one shape): after each step BatchNorm's running statistics and batch count equal the float64
    nn.BatchNorm2d's. Returns the kernels the direct launches ran, in order.

    ``path``: 'eager' (an autograd node), 'eager no_grad' (none) or 'ops' (the ops as torch.compile runs
    them). The eager paths fail if they launch the running statistics' own kernel."""
    from ecanet.models import bn_eca_fused
    launched, updates = [], []
    real_launch, real_update = bn_eca_fused._DirectLaunches.__call__, bn_eca_fused._update_running_stats

    def launch(self, kernel, *args):
        launched.append(kernel.__name__)
        return real_launch(self, kernel, *args)

    def update(*args):
        assert path == "ops", "eager mode launched the running statistics' own kernel"
        updates.append(1)
        return real_update(*args)

    monkeypatch.setattr(bn_eca_fused._DirectLaunches, "__call__", launch)
    monkeypatch.setattr(bn_eca_fused, "_update_running_stats", update)
    for momentum in momenta:
        bn64, eca64 = bn_and_eca(37, 3)
        bn64.momentum = momentum
        bn = copy.deepcopy(bn64).float()
        weight = eca64.conv.weight.detach().float().requires_grad_()
        for step in (1, 2):
            torch.manual_seed(step)
            x64 = torch.randn(3, 37, 5, 7, dtype=torch.float64) * 1.5 + 0.7
            x = x64.float().contiguous(memory_format=torch.channels_last).requires_grad_(path == "eager")
            if path == "ops":
                out, batch_mean, batch_var, *_ = bn_eca_fused.bn_eca_train_forward(x, bn.weight, bn.bias, weight,
                                                                                   x, bn.eps, True)
                bn_eca_fused.bn_update_running_stats(bn.running_mean, bn.running_var, bn.num_batches_tracked,
                                                     batch_mean, batch_var, bn.momentum)
            elif path == "eager":
                out = bn_eca_fused.bn_eca_tail_training(x, bn, weight, x)
                out.sum().backward()
            else:
                with torch.no_grad():
                    out = bn_eca_fused.bn_eca_tail_training(x, bn, weight, x)
            assert (out.grad_fn is not None) == (path != "eager no_grad")
            bn64(x64)
            for name in ("running_mean", "running_var"):
                torch.testing.assert_close(getattr(bn, name).double(), getattr(bn64, name), rtol=1e-5, atol=1e-6,
                                           msg=f"{name} after step {step}, momentum {momentum}, {path}")
            assert bn.num_batches_tracked.item() == bn64.num_batches_tracked.item() == step
    assert len(updates) == (2 * len(momenta) if path == "ops" else 0)
    return launched


@interpreter_only
@pytest.mark.parametrize("path", ["eager", "eager no_grad", "ops"])
def test_interpreter_running_statistics_match_batchnorm_step_after_step(path, monkeypatch):
    """Eager mode has the finalize kernel update the running statistics (three kernels a forward, the count once
    a step however many programs), the ops a kernel of their own after it; both as nn.BatchNorm2d does. Two
    momenta on inputs of one shape: the momentum keys the direct launches, which fix their scalars."""
    launched = _running_statistics_after_steps(path, (0.1, 0.5), monkeypatch)
    forward = ["_bn_stats_kernel", "_bn_finalize_kernel", "_bn_eca_apply_kernel"]
    backward = ["_bn_eca_backward_reduce_kernel", "_bn_eca_gate_backward_kernel", "_bn_eca_backward_apply_kernel"]
    step = {"eager": forward + backward, "eager no_grad": forward, "ops": []}[path]
    assert launched == step * 4


@interpreter_only
def test_interpreter_eager_tail_keeps_its_buffers_in_aligned_rows():
    """The eager forward's (C,) and (B, C) buffers, which the backward reads, are rows of one allocation each
    (one host call), every row starting 16-byte aligned although 37 and 3 x 37 float32 elements are not
    multiples of 16 bytes: the direct launches take these pointers as aligned."""
    from ecanet.models import bn_eca_fused
    bn, eca = bn_and_eca(37, 3)
    x = torch.randn(3, 37, 5, 7, requires_grad=True)
    out = bn_eca_fused.bn_eca_tail_training(x, bn.float(), eca.conv.weight.detach().float())
    x_saved, _gamma, _beta, _weight, *buffers, out_saved = out.grad_fn.saved_tensors
    assert torch.equal(x_saved, x) and torch.equal(out_saved, out)
    vectors, arrays = buffers[:3], buffers[3:]        # pivot, centre, rstd; xhat_mean, pooled, gate
    assert [t.shape for t in buffers] == [(37,)] * 3 + [(3, 37)] * 3
    for group in (vectors, arrays):
        assert len({t.untyped_storage().data_ptr() for t in group}) == 1
        assert all(t.is_contiguous() and t.data_ptr() % 16 == 0 for t in group)
        starts = sorted(t.data_ptr() for t in group)
        assert all(b - a >= group[0].numel() * 4 for a, b in zip(starts, starts[1:]))   # rows do not overlap


@interpreter_only
def test_interpreter_tail_refuses_one_value_per_channel():
    from ecanet.models import bn_eca_fused
    bn, eca = bn_and_eca(6, 3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn_eca_fused.bn_eca_tail_training(torch.randn(1, 6, 1, 1), bn.float(), eca.conv.weight.float())


# ----------------------------------------------------------------------------------------------------
# GPU: compiled blocks take the tail
# ----------------------------------------------------------------------------------------------------
def _training_step(block: nn.Module, x: torch.Tensor, grad: torch.Tensor, compiled: bool) -> list[torch.Tensor]:
    """Output, gradients of x and of every parameter, and buffers after one training step of ``block``."""
    x = x.detach().clone().requires_grad_()
    out = (torch.compile(block, fullgraph=True) if compiled else block)(x)
    out.backward(grad.to(out.dtype))
    return [out, x.grad, *(p.grad for p in block.parameters()), *(b.double() for b in block.buffers())]


def _block_against_plain(block: nn.Module, x: torch.Tensor, monkeypatch, compiled: bool,
                         eager_impl: str = "fused") -> None:
    """One training step of ``block``, compiled ('auto') or eager (``eager_impl``), takes the Triton tail, and its
    float32 output, gradients and buffers are no further from the float64 step than the plain block's float32 step is
    (within a factor for summation order; no TF32): gradients summed over many pixels differ by summation
    order alone by more than a fixed tolerance would allow, and a wrong kernel is off by order 1. The eager
    step is the second of its shapes (a copy of the block takes the first), so its kernels launch directly."""
    from ecanet.models import bn_eca_fused, eca_fused
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    calls = []
    real = bn_eca_fused.bn_eca_tail_training

    def recording(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    block = set_eca_impl(block.cuda().to(memory_format=torch.channels_last).train(), "auto" if compiled else eager_impl)
    x = x.cuda().contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(block(x)).double()     # (a step in train mode: the blocks below start from copies)
    torch._dynamo.reset()
    exact = _training_step(set_eca_impl(copy.deepcopy(block).double(), "plain"), x.double(), grad, False)
    plain = _training_step(set_eca_impl(copy.deepcopy(block), "plain"), x, grad, False)
    if not compiled:
        _training_step(copy.deepcopy(block), x, grad, False)
    monkeypatch.setattr(bn_eca_fused, "bn_eca_tail_training", recording)
    launchers = _recording_direct_launchers(monkeypatch)
    fused = _training_step(block, x, grad, compiled)
    assert calls, "the block did not take the Triton tail"
    assert not eca_fused._JIT_ONLY, f"launched through Triton's JIT on every call: {eca_fused._JIT_ONLY}"
    if not compiled:
        launches = [launch for launcher in launchers for launch in launcher._launches.values()]
        assert launches and all(launch.direct for launch in launches), [launch.kernel for launch in launches]
    names = ["out", "x.grad", *(f"{n}.grad" for n, _ in block.named_parameters()),
             *(n for n, _ in block.named_buffers())]
    for name, got, reference, want in zip(names, fused, plain, exact):
        want = want.double()
        error = (got.double() - want).norm() / want.norm().clamp_min(1e-12)
        plain_error = (reference.double() - want).norm() / want.norm().clamp_min(1e-12)
        assert error <= FLOAT32_ORDER_FACTOR * plain_error + 1e-6, (name, error.item(), plain_error.item())


FLOAT32_ORDER_FACTOR = 4   # how much further from float64 another summation order may land than the plain code


def _recording_direct_launchers(monkeypatch) -> list:
    """The eager tail's direct launchers (``bn_eca_fused._direct_launcher``), each time one is looked up from now."""
    from ecanet.models import bn_eca_fused
    launchers = []
    real = bn_eca_fused._direct_launcher
    monkeypatch.setattr(bn_eca_fused, "_direct_launcher", lambda *args: launchers.append(real(*args)) or launchers[-1])
    return launchers


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
@pytest.mark.parametrize("kind", ["residual", "strided"])
def test_gpu_mobilenet_block_takes_the_triton_tail(kind, compiled, monkeypatch):
    from ecanet.models.mobilenetv2 import InvertedResidual
    inp, oup, stride, k = (24, 24, 1, 1) if kind == "residual" else (96, 160, 2, 3)
    torch.manual_seed(0)
    block = InvertedResidual(inp, oup, stride, 6, attention="eca", k_size=k)
    nn.init.normal_(block.conv[-1].conv.weight)
    _block_against_plain(block, torch.randn(8, inp, 28, 28), monkeypatch, compiled)


class _ResidualTail(nn.Module):
    """A Bottleneck's end, conv3 -> BN -> ECA -> + shortcut -> ReLU, asking for the Triton tail under
    torch.compile too (compiled ResNets themselves keep the decomposed form: their larger activations run faster
    through Inductor's kernels)."""

    def __init__(self, channels: int, k: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels // 4, channels, 1, bias=False)
        self.shortcut = nn.Conv2d(channels // 4, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.eca = EcaModule(channels, k)
        nn.init.normal_(self.eca.conv.weight)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.eca.conv_bn_scale_add_relu(self.conv, self.bn, y, self.shortcut(y), compiled_tail="kernels")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
def test_gpu_residual_tail_with_relu_takes_the_triton_tail(compiled, monkeypatch):
    torch.manual_seed(0)
    _block_against_plain(_ResidualTail(256, 5), torch.randn(8, 64, 28, 28), monkeypatch, compiled)


@pytest.mark.gpu
@gpu
def test_gpu_eager_tail_without_autograd_is_the_same_step():
    """In training mode under no_grad (BatchNorm statistics recomputed, say) the eager tail builds no autograd node
    and gives the same output and running statistics, bit for bit."""
    torch.manual_seed(0)
    block = set_eca_impl(_ResidualTail(256, 5).cuda().to(memory_format=torch.channels_last).train(), "fused")
    y = torch.randn(8, 64, 28, 28, device="cuda").contiguous(memory_format=torch.channels_last)
    twin = copy.deepcopy(block)
    with_grad = block(y)
    with torch.no_grad():
        without_grad = twin(y)
    assert with_grad.grad_fn is not None and without_grad.grad_fn is None
    assert torch.equal(with_grad, without_grad)
    for got, want in zip(twin.buffers(), block.buffers(), strict=True):
        assert torch.equal(got, want)


def _steps_on_inputs_of_every_kind(device: str) -> None:
    """Training steps of one BatchNorm+ECA tail on inputs that differ only in layout, batch size or a 4-byte offset
    of their address, in turn, twice over: each matches the float64 modules' step."""
    from ecanet.models import bn_eca_fused
    bn64, eca64 = bn_and_eca(64, 3)
    height = width = 14
    for batch, channels_last, offset in [(8, True, 0), (8, False, 0), (7, True, 0), (8, True, 1)] * 2:
        numel = batch * 64 * height * width
        storage = torch.randn(2 * (numel + offset), device=device)
        x, identity = (storage[start + offset:start + offset + numel] for start in (0, numel + offset))
        x, identity = ((t.view(batch, height, width, 64).permute(0, 3, 1, 2) if channels_last
                        else t.view(batch, 64, height, width)) for t in (x, identity))
        assert (x.data_ptr() % 16 == 0) == (offset == 0)
        bn = copy.deepcopy(bn64).float().to(device)
        weight = eca64.conv.weight.detach().float().to(device).requires_grad_()
        x = x.requires_grad_()
        out = bn_eca_fused.bn_eca_tail_training(x, bn, weight, identity)
        grad = torch.randn_like(out)
        out.backward(grad)
        bn_ref, eca_ref = copy.deepcopy(bn64), copy.deepcopy(eca64)
        x64 = x.detach().double().cpu().requires_grad_()
        want = eca_ref.scale_add_relu(bn_ref(x64), identity.double().cpu())
        want.backward(grad.double().cpu())
        _assert_close({"out": (out, want), "x.grad": (x.grad, x64.grad),
                       "eca.grad": (weight.grad, eca_ref.conv.weight.grad),
                       "gamma.grad": (bn.weight.grad, bn_ref.weight.grad),
                       "running_var": (bn.running_var, bn_ref.running_var)},
                      rtol=1e-4, atol=1e-4, case=f"batch {batch}, channels_last {channels_last}, offset {offset}")


@interpreter_only
def test_interpreter_tail_steps_on_inputs_of_every_kind():
    _steps_on_inputs_of_every_kind("cpu")


@pytest.mark.gpu
@gpu
def test_gpu_eager_tail_launches_each_layout_batch_and_alignment_as_its_own():
    """The direct launches fix each tensor's strides and alignment and the grids: a launch kept for another of
    these inputs would give another step."""
    _steps_on_inputs_of_every_kind("cuda")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("impl", ["auto", "fused"])
@pytest.mark.parametrize("kind", ["bottleneck", "basic"])
def test_gpu_eager_resnet_block_takes_the_triton_tail(kind, impl, monkeypatch):
    """An ECA-ResNet block in eager training, as main.py runs it without --compile (ResNets ask 'auto' for the
    tail's kernels in eager training, resnet.EAGER_TAIL)."""
    from ecanet.models.resnet import BasicBlock, Bottleneck
    torch.manual_seed(0)
    if kind == "bottleneck":
        downsample = nn.Sequential(nn.Conv2d(64, 256, 1, bias=False), nn.BatchNorm2d(256))
        block = Bottleneck(64, 64, downsample=downsample, attention="eca", k_size=5)
    else:
        block = BasicBlock(64, 64, attention="eca", k_size=3)
    nn.init.normal_(block.attention.conv.weight)
    _block_against_plain(block, torch.randn(8, 64, 28, 28), monkeypatch, compiled=False, eager_impl=impl)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("residual", [True, False])
def test_gpu_eager_mobilenet_block_under_fused_takes_the_triton_tail(residual, monkeypatch):
    """An ECA-MobileNetV2 block in eager training (its tail without the ReLU, with and without the residual add)."""
    from ecanet.models.mobilenetv2 import InvertedResidual
    torch.manual_seed(0)
    block = InvertedResidual(24, 24 if residual else 32, 1, 6, attention="eca", k_size=3)
    nn.init.normal_(block.conv[-1].conv.weight)
    _block_against_plain(block, torch.randn(8, 24, 28, 28), monkeypatch, compiled=False, eager_impl="fused")


@pytest.mark.gpu
@gpu
def test_gpu_eager_mobilenet_block_under_auto_keeps_batchnorm_and_the_eca_kernels(monkeypatch):
    """ECA-MobileNetV2 leaves the eager tail at its default: 'auto' runs BatchNorm as its module there."""
    from ecanet.models import bn_eca_fused
    from ecanet.models.mobilenetv2 import InvertedResidual
    calls = []
    monkeypatch.setattr(bn_eca_fused, "bn_eca_tail_training", lambda *args, **kwargs: calls.append(1))
    block = set_eca_impl(InvertedResidual(24, 24, 1, 6, attention="eca", k_size=3).cuda().train(), "auto")
    block(torch.randn(4, 24, 28, 28, device="cuda")).sum().backward()
    assert not calls


def test_unknown_eager_tail_is_refused():
    bn, eca = bn_and_eca(8, 3)
    with pytest.raises(ValueError, match="unknown eager tail"):
        eca.bn_scale_add_relu(bn, torch.randn(2, 8, 3, 3, dtype=torch.float64), eager_tail="fused")


def test_unknown_compiled_tail_is_refused():
    bn, eca = bn_and_eca(8, 3)
    with pytest.raises(ValueError, match="unknown compiled tail"):
        eca.bn_scale_add_relu(bn, torch.randn(2, 8, 3, 3, dtype=torch.float64), compiled_tail="fused")
