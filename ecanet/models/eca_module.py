"""Efficient Channel Attention (ECA), Wang et al., CVPR 2020, Section 3.

The module is parameter-for-parameter the official ``eca_layer``: its only parameter is
``conv.weight`` of shape (1, 1, k), so the released checkpoints load into it unchanged.

Two implementations compute the same function: ``"plain"``, the PyTorch code below, and ``"fused"``,
Triton kernels in :mod:`ecanet.models.eca_fused` that fuse the rescale with the residual add and ReLU.
Each module carries its choice (``EcaModule(..., impl=...)``, or :func:`set_eca_impl` on a whole network,
which is what ``create_model(..., eca_impl=...)`` does). The default ``"auto"`` runs the fused kernels on
CUDA tensors when Triton imports and the plain code everywhere else. A block's BatchNorm and ECA run together:
under ``torch.compile`` as a form Inductor fuses (:func:`bn_eca_tail_decomposed`) or as the Triton kernels of
:mod:`~ecanet.models.bn_eca_fused`, and in eager training as those kernels or as BatchNorm's module followed
by the fused ECA, each network choosing per mode what trains it faster (``compiled_tail``, ``eager_tail``).
``"fused"`` runs the tail's kernels in every network's eager training. In eager inference with no gradient
recorded both (``"auto"`` on CUDA tensors) fold the eval-mode BatchNorm before each ECA into ECA's passes.
"""
from __future__ import annotations

import logging
import math
import numbers

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.modules import module as _module_internals   # the global module hooks (_runs_own_forward)

from ..constants import ECA_IMPLEMENTATIONS
from ..errors import whole_number
from .channel_conv import channel_conv, channel_conv_weight_grad

logger = logging.getLogger(__name__)

try:  # Triton ships with CUDA builds of PyTorch; without it (CPU builds) only the plain code runs.
    from . import eca_fused
    _FUSED_IMPORT_ERROR: str | None = None
except ImportError as exc:
    eca_fused = None
    _FUSED_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
    logger.debug("fused ECA unavailable (%s); the plain implementation runs", _FUSED_IMPORT_ERROR)
except Exception as exc:  # noqa: BLE001 -- a broken Triton install must not break `import ecanet.models`
    eca_fused = None
    _FUSED_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
    logger.warning("fused ECA failed to load (%s); the plain implementation runs", _FUSED_IMPORT_ERROR)

try:  # also needs torch.library.triton_op (torch 2.6 and later); without it compiled training takes the
    from . import bn_eca_fused  # decomposed BatchNorm+ECA tail
except Exception as exc:  # noqa: BLE001 -- as above: ImportError, or a Triton that fails to load
    bn_eca_fused = None
    logger.log(logging.WARNING if eca_fused is not None and hasattr(torch.library, "triton_op") else logging.DEBUG,
               "fused BatchNorm+ECA training tail unavailable (%s: %s); compiled training takes the decomposed "
               "tail", type(exc).__name__, exc)


def check_eca_impl(impl: str) -> str:
    """``impl`` normalised to one of :data:`ECA_IMPLEMENTATIONS`, or a ValueError naming the choices."""
    name = str(impl).strip().lower()
    if name not in ECA_IMPLEMENTATIONS:
        raise ValueError(f"unknown ECA implementation {impl!r}; choose one of {', '.join(ECA_IMPLEMENTATIONS)}")
    return name


def fused_eca_available() -> bool:
    """Whether the fused kernels imported (Triton present); CUDA is still needed to run them."""
    return eca_fused is not None


def fused_eca_unavailable(on_cuda: bool) -> str | None:
    """Why implementation ``"fused"`` cannot run its kernels on a CUDA device (``on_cuda``) or on the CPU, in words;
    None where it can. Command lines ask this before they load anything."""
    if eca_fused is None:
        return f"it needs Triton, which failed to import ({_FUSED_IMPORT_ERROR})"
    if not on_cuda and not eca_fused.INTERPRETER:
        return ("its kernels run on CUDA GPUs, not the CPU (Triton's interpreter runs them on the CPU when "
                "TRITON_INTERPRET=1 is set before ecanet.models is imported)")
    return None


def _use_fused(impl: str, x: torch.Tensor, identity: torch.Tensor | None = None) -> bool:
    """Whether this call runs the fused kernels under the module's implementation ``impl``."""
    return _fused_kernels_run(impl, x) and eca_fused.supports(x, identity)


def _fused_kernels_run(impl: str, x: torch.Tensor) -> bool:
    """Whether the fused kernels can run on x's device under ``impl`` (what they take is :func:`_use_fused`'s
    and the tails' own checks); a RuntimeError where ``"fused"`` insists and they cannot."""
    if impl == "plain" or not isinstance(x, torch.Tensor):  # e.g. a torch.fx Proxy
        return False
    if impl == "auto":
        return eca_fused is not None and x.is_cuda
    reason = fused_eca_unavailable(x.is_cuda)
    if reason is not None:
        raise RuntimeError(f"ECA implementation 'fused' cannot run: {reason}. Use 'auto' to fall back to the "
                           f"plain code.")
    return True


# How compiled training runs a block's BatchNorm+ECA tail (EcaModule.bn_scale_add_relu): written out for
# Inductor to fuse, or as the Triton kernels of bn_eca_fused.
COMPILED_TAILS = ("decomposed", "kernels")
# How eager training under implementation "auto" runs it: BatchNorm as its module (cuDNN's kernels) followed by
# the fused ECA kernels, or BatchNorm with ECA as the Triton kernels of bn_eca_fused.
EAGER_TAILS = ("modules", "kernels")

# The paper's constants for the adaptive kernel size psi(C) (Eq. 13): gamma = 2, b = 1.
DEFAULT_GAMMA = 2
DEFAULT_B = 1


def adaptive_kernel_size(channels: int, gamma: int = DEFAULT_GAMMA, b: int = DEFAULT_B) -> int:
    """The paper's psi(C), Eq. (13): k = |log2(C)/gamma + b/gamma|_odd.

    ``t = int(abs((log2(C) + b) / gamma))``; ``k = t`` if ``t`` is odd, else ``t + 1``. ``C`` is the
    number of channels the ECA module sees (its input's channel count).
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 == 1 else t + 1


class EcaModule(nn.Module):
    """ECA: global average pooling -> 1-D convolution across channels -> sigmoid -> rescale.

    Implements Eq. (2) and (9) of the paper: ``y = GAP(x)``, ``w = sigmoid(C1D_k(y))``, ``out = x * w``.

    Input ``(B, C, H, W)``, output the same shape.

    Args:
        channels: channels of the input; only used to pick ``k`` when ``k_size`` is None.
        k_size: kernel size of the 1-D convolution; None picks ``adaptive_kernel_size(channels)``.
        gamma, b: constants of psi(C) (paper: 2 and 1).
        impl: ``"auto"`` (fused Triton kernels on CUDA tensors where Triton imports, else plain),
            ``"fused"`` (an error where the kernels cannot run) or ``"plain"`` (the PyTorch code). Inputs the
            kernels do not take (float64, mismatched shapes, empty tensors) run the plain code.
    """

    def __init__(self, channels: int, k_size: int | None = None, gamma: int = DEFAULT_GAMMA,
                 b: int = DEFAULT_B, impl: str = "auto") -> None:
        super().__init__()
        self.impl = check_eca_impl(impl)
        channels = whole_number(channels, "ECA channels", minimum=1)
        k_size = adaptive_kernel_size(channels, gamma, b) if k_size is None else whole_number(k_size, "ECA k_size")
        if k_size < 1 or k_size % 2 == 0:
            raise ValueError(f"ECA kernel size must be a positive odd integer, got {k_size}")
        self.channels = channels
        self.k_size = k_size
        self.conv = nn.Conv1d(1, 1, kernel_size=self.k_size, padding=(self.k_size - 1) // 2, bias=False)

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The per-(sample, channel) gate ``sigmoid(conv1d(mean_hw(x)))`` of shape (B, C, 1, 1)."""
        y = x.mean(dim=(2, 3), keepdim=True)                  # (B, C, 1, 1)
        y = self.conv(y.squeeze(-1).transpose(-1, -2))         # (B, 1, C)
        return torch.sigmoid(y.transpose(-1, -2).unsqueeze(-1))  # (B, C, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        if _use_fused(self.impl, x) and _runs_own_forward(self.conv):
            return eca_fused.eca_scale(x, self.conv.weight)
        return x * self.attention_weights(x)

    def scale_add_relu(self, x: torch.Tensor, identity: torch.Tensor | None = None, *,
                       relu: bool = True) -> torch.Tensor:
        """``relu(x * w + identity)``: ECA followed by a residual block's add and ReLU (fused on GPUs).

        ``identity`` None leaves the add out and ``relu=False`` the ReLU (MobileNetV2's block ends with
        ``x * w + identity``): ``ECA(x)`` alone is ``scale_add_relu(x, relu=False)``.
        """
        if _use_fused(self.impl, x, identity) and self._computes_inline():
            return eca_fused.eca_scale_add_relu(x, self.conv.weight, identity, relu=relu)
        out = self(x)
        if identity is not None:
            out += identity
        return torch.relu_(out) if relu else out

    def bn_scale_add_relu(self, bn: nn.Module, x: torch.Tensor, identity: torch.Tensor | None = None, *,
                          relu: bool = True, compiled_tail: str = "decomposed",
                          eager_tail: str = "modules") -> torch.Tensor:
        """``relu(ECA(bn(x)) + identity)``: a block's tail from its last convolution's output.

        ``identity`` None leaves the residual add out, ``relu=False`` the ReLU. Under ``torch.compile``
        (implementation ``"auto"``) BatchNorm and ECA are not run as modules. ``compiled_tail`` (one of
        :data:`COMPILED_TAILS`, chosen by the network) says how the training step runs them:
        ``"decomposed"`` writes the tail out so that Inductor fuses BatchNorm's statistics with ECA's pooling
        and BN's affine map with the rescale, add and ReLU (:func:`bn_eca_tail_decomposed`; what ResNets use);
        ``"kernels"`` runs it as Triton kernels, three each way, fewer launches than Inductor makes of it
        (:mod:`~ecanet.models.bn_eca_fused`; MobileNetV2, whose compiled step is bound by launches), on CUDA
        tensors where they import, the decomposed form elsewhere. Compiled inference always takes the
        decomposed form. In eager training, implementation ``"fused"`` runs the tail as those Triton kernels
        wherever they take the inputs (they read and write the tail's activations fewer times than cuDNN's
        BatchNorm followed by the fused ECA kernels); ``"auto"`` does so on CUDA tensors where the network asks
        for it with ``eager_tail="kernels"`` (one of :data:`EAGER_TAILS`; ResNets, whose eager training step
        the kernels make faster, docs/design/fused_eca.md), and otherwise runs BatchNorm as its module, then
        :meth:`scale_add_relu`. In eager inference (``bn`` in eval mode, no gradient recorded) ``"fused"``
        and ``"auto"`` (on CUDA tensors) fold BatchNorm's affine map into ECA's passes
        (:func:`~ecanet.models.eca_fused.bn_eval_eca_scale_add_relu`), so BN(x) is never written out: faster
        than BatchNorm's module followed by the fused ECA in every released network (docs/design/fused_eca.md).
        """
        if compiled_tail not in COMPILED_TAILS:
            raise ValueError(f"unknown compiled tail {compiled_tail!r}; choose one of {', '.join(COMPILED_TAILS)}")
        if eager_tail not in EAGER_TAILS:
            raise ValueError(f"unknown eager tail {eager_tail!r}; choose one of {', '.join(EAGER_TAILS)}")
        if self.impl == "auto" and torch.compiler.is_compiling() and self._computes_tail_inline(bn, x):
            if compiled_tail == "kernels" and self._tail_kernels_apply(bn, x, identity):
                return bn_eca_fused.bn_eca_tail_training(x, bn, self.conv.weight, identity, relu=relu)
            return bn_eca_tail_decomposed(x, bn, self.conv.weight, identity, relu=relu)
        # bn.training first: eval-mode calls, and torch.fx's tracing (x a Proxy), go no further.
        if (bn.training and not torch.compiler.is_compiling() and self._computes_tail_inline(bn, x)
                and (self.impl == "fused" or (self.impl == "auto" and eager_tail == "kernels" and x.is_cuda))
                and self._tail_kernels_apply(bn, x, identity) and not eca_fused.forward_ad_active()):
            return bn_eca_fused.bn_eca_tail_training(x, bn, self.conv.weight, identity, relu=relu)
        if (not bn.training and self.impl != "plain" and not torch.compiler.is_compiling()
                and self._computes_tail_inline(bn, x) and _fused_kernels_run(self.impl, x)
                and eca_fused.supports_inference_tail(x, bn, identity, weight=self.conv.weight)):
            return eca_fused.bn_eval_eca_scale_add_relu(x, bn, self.conv.weight, identity, relu=relu)
        return self.scale_add_relu(bn(x), identity, relu=relu)

    def conv_bn_scale_add_relu(self, conv: nn.Module, bn: nn.Module, y: torch.Tensor,
                               identity: torch.Tensor | None = None, *, relu: bool = True,
                               compiled_tail: str = "decomposed", eager_tail: str = "modules") -> torch.Tensor:
        """``relu(ECA(bn(conv(y))) + identity)``: a block's tail from its last convolution's input.

        ``identity``, ``relu``, ``compiled_tail`` and ``eager_tail`` as in :meth:`bn_scale_add_relu`, which this is once
        ``conv`` has run, with one exception. In compiled inference (implementation ``"auto"``, ``bn`` in eval
        mode) BatchNorm needs no statistics, so ECA's pooling would be the only pass reading ``conv(y)`` before
        the pointwise tail. When ``conv`` is a 1x1 convolution with no more input than output channels
        (ResNet's Bottleneck: C/4 to C), the pooling is taken from ``y`` instead (:func:`conv_output_mean`),
        and the tail reads ``conv(y)`` once, as BatchNorm + add + ReLU alone do.
        """
        x = conv(y)
        if (self.impl == "auto" and torch.compiler.is_compiling() and not bn.training
                and self._computes_tail_inline(bn, x) and _pools_through_conv(conv, y)):
            return bn_eca_tail_decomposed(x, bn, self.conv.weight, identity, relu=relu,
                                          x_mean=conv_output_mean(conv, y))
        return self.bn_scale_add_relu(bn, x, identity, relu=relu, compiled_tail=compiled_tail, eager_tail=eager_tail)

    def _computes_inline(self) -> bool:
        """Whether ECA may be computed without calling this module and its convolution: neither runs hooks or a
        replaced forward (:func:`_runs_own_forward`; a forward hook recording ECA's output, say, or a pruning or
        weight-norm hook recomputing the convolution's weight, needs the modules called)."""
        return _runs_own_forward(self, self.conv)

    def _computes_tail_inline(self, bn: nn.Module, x: torch.Tensor) -> bool:
        """Whether ``relu(self(bn(x)) + identity)`` may be computed without calling the modules: x a tensor,
        no module running hooks or a replaced forward (:func:`_runs_own_forward`, :meth:`_computes_inline`), and
        ``bn`` a plain affine BatchNorm2d with running statistics and, in training, a fixed momentum (not
        SyncBatchNorm)."""
        return (isinstance(x, torch.Tensor) and type(bn) is nn.BatchNorm2d and bn.affine and bn.track_running_stats
                and x.dim() == 4 and (not bn.training or bn.momentum is not None)
                and _runs_own_forward(bn, self, self.conv))

    def _tail_kernels_apply(self, bn: nn.BatchNorm2d, x: torch.Tensor, identity: torch.Tensor | None) -> bool:
        """Whether a training tail that :meth:`_computes_tail_inline` can run as
        :mod:`~ecanet.models.bn_eca_fused`'s kernels: they imported and take these inputs."""
        return (bn_eca_fused is not None
                and bn_eca_fused.supports_training_tail(x, bn, identity, weight=self.conv.weight))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, k_size={self.k_size}, impl={self.impl!r}"


def _pools_through_conv(conv: nn.Module, y: torch.Tensor) -> bool:
    """Whether :func:`conv_output_mean` applies to ``conv`` and reads no more than ``conv(y)`` would: a 1x1,
    stride-1, unpadded, ungrouped ``nn.Conv2d`` (dilation and padding mode do not matter then) with no more
    input than output channels, computing exactly its own ``forward`` (:func:`_runs_own_forward`)."""
    return (type(conv) is nn.Conv2d and _runs_own_forward(conv) and y.dim() == 4 and conv.kernel_size == (1, 1)
            and conv.stride == (1, 1) and conv.padding in ((0, 0), "valid") and conv.groups == 1
            and conv.in_channels <= conv.out_channels)


def conv_output_mean(conv: nn.Conv2d, y: torch.Tensor) -> torch.Tensor:
    """The mean over H, W of ``conv(y)`` for a 1x1, stride-1, unpadded, ungrouped convolution, taken from ``y``:
    such a convolution maps every pixel by the same matrix W, so mean_hw(W y + bias) = W mean_hw(y) + bias.
    Returns (B, C_out) in float32 (float64 for float64 input), whatever autocast is active."""
    compute = torch.promote_types(y.dtype, torch.float32)
    pooled = y.to(compute).mean(dim=(2, 3))                                      # (B, C_in)
    weight = conv.weight.reshape(conv.out_channels, conv.in_channels).to(compute)  # (C_out, C_in)
    with torch.autocast(y.device.type, enabled=False):   # autocast would round the product to bf16/fp16
        out = pooled @ weight.t()                                                # (B, C_out)
    return out if conv.bias is None else out + conv.bias.to(compute)


def _runs_own_forward(*modules: nn.Module) -> bool:
    """Whether calling each of ``modules`` computes exactly its class's ``forward`` and nothing else: no
    ``forward`` replaced on the instance, and no hooks that calling it would run (its own forward and backward
    hooks, or the global ones of ``torch.nn.modules.module``, the same test as ``nn.Module.__call__``'s fast
    path; the global ones are looked at once). Code that computes a module's function without calling it (the
    fused ECA, the BatchNorm+ECA tails, the pooling through a convolution) asks this first, so that hooks, e.g.
    ones recording ECA's output, still run."""
    if (_module_internals._global_forward_hooks or _module_internals._global_forward_pre_hooks
            or _module_internals._global_backward_hooks or _module_internals._global_backward_pre_hooks):
        return False
    for module in modules:
        if "forward" in vars(module) or (module._forward_hooks or module._forward_pre_hooks
                                         or module._backward_hooks or module._backward_pre_hooks):
            return False
    return True


def _tail_dtype(x: torch.Tensor, identity: torch.Tensor | None) -> torch.dtype:
    """The dtype of a block tail's output: x's, promoted with identity's as ``out += identity`` would be."""
    return x.dtype if identity is None else torch.promote_types(x.dtype, identity.dtype)


def _gate_and_tail(x: torch.Tensor, a: torch.Tensor, h: torch.Tensor, pooled: torch.Tensor, taps: torch.Tensor,
                   identity: torch.Tensor | None, relu: bool,
                   out_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """ECA's gate on the pooled BN output, Eq. (9), and the block's tail after BN(x) = a * x + h:
    ``(act(x * (a g) + h g [+ identity]), g)`` with g = sigmoid(C1D_k(pooled)) and act the ReLU or nothing.
    x, a, h, pooled and taps are in the arithmetic dtype; the output is cast to ``out_dtype`` before the ReLU
    (the same values)."""
    g = torch.sigmoid(channel_conv(pooled, taps))                # (B, C)
    scale, offset = (a * g)[:, :, None, None], (h * g)[:, :, None, None]   # (B, C, 1, 1) each
    out = x * scale + offset
    if identity is not None:
        out = out + identity.to(x.dtype)
    if out.dtype != out_dtype:  # a no-op .to() returns its input, and torch 2.11's torch.compile then lost the
        out = out.to(out_dtype)  # gradient of an autograd.Function output made that way
    return (torch.relu(out) if relu else out), g


class _BnEcaTailTraining(torch.autograd.Function):
    """``relu(ECA(BN(x)) + identity)`` with BatchNorm on batch statistics, both directions written out.

    The add is left out when ``identity`` is None and the ReLU when ``relu`` is False (MobileNetV2's block
    ends with ``ECA(BN(x)) + x``); the formulas below then read G' = dL/dout.

    Forward (per sample b and channel c, P = H * W pixels, n = B * P; ``xc = x - shift[c]``, where the
    shift is the first sample's mean of each channel, so that the sums below do not cancel when a channel's
    mean is large against its spread; every statistic is of xc):

        s1 = sum_p xc,  s2 = sum_p xc^2                             (B, C)  one reduction over x
        mu = sum_b s1 / n,  var = sum_b s2 / n - mu^2,  r = (var + eps)^-1/2          (C,)
        a = gamma * r,  h = beta - mu * a                   BN(x) = a * xc + h         (C,)
        m = a * s1 / P + h                                  Eq. (2): GAP of BN(x)      (B, C)
        g = sigmoid(C1D_k(m))                               Eq. (9)                    (B, C)
        out = relu(xc * (a g) + h g + identity)                                   one pointwise pass

    Backward, from G' = dL/dout * [out > 0] (which is also dL/didentity):

        dS = sum_p G' xc,  dO = sum_p G'                    (B, C)  one reduction, S = a g, O = h g
        dz = (a dS + h dO) g (1 - g);  dm = C1D_k^T(dz);  dw[j] = sum_{b,c} dz[b, c] m[b, c + j - pad]
        dh = sum_b (g dO + dm);  da = sum_b (g dS + dm s1 / P) - mu dh;  dbeta = dh;  dgamma = r da
        dvar = -r^3 gamma da / 2;  dmu = -a dh - 2 mu dvar
        dx = G' S + (dm a / P + dmu / n) + xc * 2 dvar / n                        one pointwise pass

    Autograd derives the same numbers from the forward alone, but Inductor then keeps a (B, C, H, W)
    boolean ReLU mask from the forward and G' in float32, extra memory traffic in every block
    (docs/design/fused_eca.md). Written out, G' stays in
    the activations' dtype and the ReLU mask is read from ``out``, which the next layer keeps anyway.
    Arithmetic is float32 (float64 for float64 inputs); outputs have the inputs' dtypes. The backward is
    not itself differentiable (no double backward).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, weight: torch.Tensor,
                identity: torch.Tensor | None, eps: float,
                relu: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, _, height, width = x.shape
        pixels = height * width
        count = batch * pixels
        if count == 1:  # as nn.BatchNorm2d: one value per channel has no batch variance
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
        compute = torch.promote_types(x.dtype, torch.float32)
        shift = x[0].detach().to(compute).mean(dim=(1, 2))         # (C,) the first sample's channel means
        xc = x.to(compute) - shift[:, None, None]                   # (B, C, H, W), fused into each pass
        s1 = xc.sum(dim=(2, 3))                                     # (B, C)
        s2 = (xc * xc).sum(dim=(2, 3))                              # (B, C)
        mu = s1.sum(0) / count                                      # (C,) mean of xc
        var_unclamped = s2.sum(0) / count - mu * mu                 # (C,) biased variance
        var = var_unclamped.clamp_min(0.0)
        r = torch.rsqrt(var + eps)
        a = gamma.to(compute) * r
        h = beta.to(compute) - mu * a
        m = s1 * (a / pixels) + h                                   # (B, C)
        taps = weight.reshape(-1).to(compute)
        out, g = _gate_and_tail(xc, a, h, m, taps, identity, relu, _tail_dtype(x, identity))
        # The ReLU mask is read from out; without a ReLU out is not needed.
        ctx.save_for_backward(x, shift, s1, mu, var_unclamped, r, a, h, m, g, gamma, taps, *((out,) if relu else ()))
        ctx.meta = (weight.shape, weight.dtype, None if identity is None else identity.dtype, relu)
        batchmean, batchvar = mu + shift, var
        ctx.mark_non_differentiable(batchmean, batchvar)
        return out, batchmean, batchvar

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor, _grad_mean: torch.Tensor, _grad_var: torch.Tensor):
        x, shift, s1, mu, var_unclamped, r, a, h, m, g, gamma, taps, *saved_out = ctx.saved_tensors
        weight_shape, weight_dtype, identity_dtype, relu = ctx.meta
        batch, _, height, width = x.shape
        pixels = height * width
        count = batch * pixels
        compute = s1.dtype
        grad_pre = grad_out if not relu else torch.where(   # (B, C, H, W) in grad's dtype: dL/didentity
            saved_out[0] <= 0, torch.zeros((), dtype=grad_out.dtype, device=grad_out.device), grad_out)
        gp = grad_pre.to(compute)
        xc = x.to(compute) - shift[:, None, None]
        grad_scale = (gp * xc).sum(dim=(2, 3))                     # (B, C) dS
        grad_offset = gp.sum(dim=(2, 3))                            # (B, C) dO
        grad_logit = (a * grad_scale + h * grad_offset) * g * (1 - g)  # (B, C) dz
        grad_m = channel_conv(grad_logit, taps.flip(0))            # (B, C) the conv's transpose
        grad_weight = channel_conv_weight_grad(grad_logit, m, taps.numel())
        grad_h = (g * grad_offset + grad_m).sum(0)                  # (C,)
        grad_a = (g * grad_scale + grad_m * s1 / pixels).sum(0) - mu * grad_h
        grad_gamma = r * grad_a
        grad_var = (-0.5 * r ** 3 * gamma.to(compute) * grad_a) * (var_unclamped >= 0)
        grad_mu = -a * grad_h - 2 * mu * grad_var
        per_sample = (grad_m * (a / pixels) + grad_mu / count)[:, :, None, None]   # (B, C, 1, 1)
        grad_x = gp * (a * g)[:, :, None, None] + per_sample + xc * (2 * grad_var / count)[:, None, None]
        grad_identity = None if identity_dtype is None else grad_pre.to(identity_dtype)
        return (grad_x.to(x.dtype), grad_gamma.to(gamma.dtype), grad_h.to(gamma.dtype),
                grad_weight.reshape(weight_shape).to(weight_dtype), grad_identity, None, None)


def bn_eca_tail_decomposed(x: torch.Tensor, bn: nn.BatchNorm2d, weight: torch.Tensor,
                           identity: torch.Tensor | None = None, *, relu: bool = True,
                           x_mean: torch.Tensor | None = None) -> torch.Tensor:
    """``relu(ECA(BN(x)) + identity)`` as one reduction and one pointwise pass each way, for torch.compile.

    BatchNorm (batch statistics in training, running ones in eval) and ECA (Eq. 2 and 9) share their
    reduction: the per-(sample, channel) sums of x and x^2 over H, W give BN's per-channel mean and
    variance and, because BN is affine per channel, ECA's pooled input too: mean_hw(a * x + c) =
    a * mean_hw(x) + c. What is left is one pointwise map, relu(x * (a * w) + c * w + identity), so
    Inductor makes of it the passes BatchNorm + add + ReLU need alone. ``identity`` None leaves the add
    out and ``relu=False`` the ReLU (MobileNetV2: ``ECA(BN(x)) + x`` or ``ECA(BN(x))``). In training the
    backward is written out as well (:class:`_BnEcaTailTraining`). Running statistics are updated as
    ``nn.BatchNorm2d`` does (unbiased variance, ``momentum``). ``x_mean``, the (B, C) mean of x over H, W
    in float32 when the caller already has it (:func:`conv_output_mean`), spares the eval-mode reduction;
    training takes the mean from BatchNorm's sums.
    """
    if bn.training and x_mean is not None:
        raise ValueError("x_mean applies to BatchNorm in eval mode; in training the batch sums give the mean")
    if bn.training:
        out, mean, var = _BnEcaTailTraining.apply(x, bn.weight, bn.bias, weight, identity, bn.eps, relu)
        count = x.shape[0] * x.shape[2] * x.shape[3]
        with torch.no_grad():
            bn.running_mean.mul_(1.0 - bn.momentum).add_(mean, alpha=bn.momentum)
            bn.running_var.mul_(1.0 - bn.momentum).add_(var * (count / max(count - 1, 1)), alpha=bn.momentum)
            bn.num_batches_tracked.add_(1)
        return out
    compute = torch.promote_types(x.dtype, torch.float32)  # bf16/fp16 activations: fp32 arithmetic
    xf = x.to(compute)
    a = bn.weight * torch.rsqrt(bn.running_var + bn.eps)          # (C,)
    shift = bn.bias - bn.running_mean * a                         # (C,)
    if x_mean is None:
        x_mean = xf.mean(dim=(2, 3))                              # (B, C)
    pooled = x_mean.to(compute) * a + shift                       # (B, C): mean over H, W of BN(x)
    taps = weight.reshape(-1).to(compute)
    return _gate_and_tail(xf, a, shift, pooled, taps, identity, relu, _tail_dtype(x, identity))[0]


# torch's switch that lets AOTAutograd's on-disk cache store graphs holding a torch.autograd.Function.
_AUTOGRAD_FUNCTION_CACHE_SETTING = "autograd_cache_allow_custom_autograd_functions"


def compile_model(model: nn.Module, **compile_kwargs: object) -> nn.Module:
    """``torch.compile(model, **compile_kwargs)``, with ECA networks' compiled training steps cached on disk.

    The compiled training tail (:class:`_BnEcaTailTraining`) is a ``torch.autograd.Function``. Dynamo traces
    its forward and backward into the graph, so the graph's cache key covers them, but torch keeps any graph
    holding such a function out of AOTAutograd's cache unless ``torch._functorch.config.``
    ``autograd_cache_allow_custom_autograd_functions`` is set. Without it, a process compiling an ECA
    network's training step finds Inductor's kernels on disk yet runs AOTAutograd again (the joint graph's
    trace and partition), where its baseline loads both: a restarted or resumed job pays that again each
    time. For a model holding an :class:`EcaModule` this turns the setting on for the process (torch reads it
    when it compiles a graph, lazily, so it cannot be scoped to this call); other models, and torch versions
    without the setting, are left as they are.
    """
    functorch_config = torch._functorch.config
    holds_eca = any(isinstance(module, EcaModule) for module in model.modules())
    if holds_eca and hasattr(functorch_config, _AUTOGRAD_FUNCTION_CACHE_SETTING):
        setattr(functorch_config, _AUTOGRAD_FUNCTION_CACHE_SETTING, True)
    return torch.compile(model, **compile_kwargs)


def parse_kernel_sizes(k_size: object, num_stages: int) -> list[int | None]:
    """Turn a user's ``k_size`` into one entry per stage (None = the adaptive psi(C) of each layer).

    Accepted forms: None or ``'adaptive'``; an int (every stage); the official CLI string, one digit per
    stage (``"3557"``, what ``--ksize 3557`` gives); a separated string (``"3,5,5,7"``) or a list/tuple
    (``[3, 5, 5, 7]``). A single value applies to every stage.
    """
    sizes = kernel_size_values(k_size)
    if len(sizes) == 1:
        sizes = sizes * num_stages
    if len(sizes) != num_stages:
        raise ValueError(f"ECA kernel size {k_size!r} gives {len(sizes)} values; this network has "
                         f"{num_stages} stages, so give 1 or {num_stages} values")
    return sizes


def kernel_size_values(k_size: object) -> list[int | None]:
    """The values of a user's ``k_size`` (the forms of :func:`parse_kernel_sizes`), each a positive odd int or
    None (adaptive), before they are matched to a network's stages; a ValueError for anything else."""
    if k_size is None or (isinstance(k_size, str) and k_size.strip().lower() == "adaptive"):
        return [None]
    if isinstance(k_size, bool):
        raise ValueError(f"invalid ECA kernel size {k_size!r}")
    if isinstance(k_size, numbers.Integral):   # NumPy's integers too, as EcaModule takes them
        values: list[object] = [k_size]
    elif isinstance(k_size, str):
        text = k_size.strip().strip("[]()")
        if any(sep in text for sep in ", "):
            values = [v for v in text.replace(",", " ").split() if v]
        else:
            values = list(text)
    elif isinstance(k_size, (list, tuple)):
        values = list(k_size)
    else:
        raise ValueError(f"invalid ECA kernel size {k_size!r}")
    try:
        sizes = [None if str(v).lower() == "adaptive" else int(v) for v in values]
    except (TypeError, ValueError, OverflowError):   # OverflowError: an infinite float
        raise ValueError(f"invalid ECA kernel size {k_size!r}: expected digits such as '3557', "
                         f"a list such as [3, 5, 5, 7], an int or 'adaptive'") from None
    # int() rounds 3.5 (a float, NumPy's, a Decimal) down without a word
    if any(k is not None and not isinstance(v, (str, numbers.Integral)) and v != k for v, k in zip(values, sizes)):
        raise ValueError(f"invalid ECA kernel size {k_size!r}: kernel sizes are whole numbers")
    for k in sizes:
        if k is not None and (k < 1 or k % 2 == 0):
            raise ValueError(f"ECA kernel sizes must be positive odd integers, got {k_size!r}")
    return sizes


def eca_kernel_sizes(model: nn.Module) -> dict[str, int]:
    """The kernel size of every ECA layer of ``model``, keyed by module name (``'layer1.0.eca'``)."""
    return {name: m.k_size for name, m in model.named_modules() if isinstance(m, EcaModule)}


def set_eca_kernel_sizes(model: nn.Module, sizes: dict[str, int]) -> None:
    """Rebuild the ECA layers named in ``sizes`` with the given kernel sizes (fresh weights).

    Used to build a network whose layers were trained with kernel sizes no per-stage rule describes,
    e.g. when loading a checkpoint: ``load_model`` reads every layer's size off its weight shape.
    """
    modules = dict(model.named_modules())
    for name, k in sizes.items():
        old = modules.get(name)
        if not isinstance(old, EcaModule):
            raise KeyError(f"{name!r} is not an ECA layer of this model")
        if old.k_size != k:
            parent_name, _, attr = name.rpartition(".")
            parent = modules[parent_name] if parent_name else model
            # on the old layer's device and in its dtype, as the rest of the network
            setattr(parent, attr, EcaModule(old.channels, k, impl=old.impl).to(old.conv.weight))


def set_eca_impl(model: nn.Module, impl: str) -> nn.Module:
    """Give every ECA layer of ``model`` the implementation ``impl`` (see :class:`EcaModule`); returns ``model``.

    The choice is recorded on each layer (``layer.impl``) and on the network (``model.eca_impl``), so a
    model says how it computes; the weights are untouched.
    """
    impl = check_eca_impl(impl)
    for module in model.modules():
        if isinstance(module, EcaModule):
            module.impl = impl
    model.eca_impl = impl
    return model
