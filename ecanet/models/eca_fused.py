"""A fused ECA for GPUs: Triton kernels behind a ``torch.library`` custom op.

ECA (Wang et al., CVPR 2020, Eq. 2 and 9) on an activation ``x`` of shape (B, C, H, W), with P = H * W:

    y = GAP(x)                       # (B, C)   Eq. (2): y[b, c] = sum_p x[b, c, p] / P
    s = sigmoid(C1D_k(y))            # (B, C)   Eq. (9): a 1-D conv across channels, zero padding
    out = relu(x * s + identity)     # (B, C, H, W)  the residual block's tail; the add and the ReLU
                                     #   are each optional (MobileNetV2: x * s + identity, ``x * s`` alone)

The big tensors are touched only in these passes (one Triton kernel each; N = B*C*P elements):

    forward   1. channel sum      read x                                  -> partial sums (splits, B, C)
              2. gate             (B, C) only: mean, C1D_k, sigmoid
              3. scale            read x, identity; write out             out = relu(x * s + identity)
    backward  A. reduce           read grad, out, x; write grad_pre       grad_pre = grad * [out > 0] (= d identity),
                                                                          partial sums of grad_pre * x
              B. gate backward    (B, C) only: ds, dz = ds s (1 - s), dmean = C1D_k^T(dz), dweight
              C. scale            read grad_pre; write dx                 dx = grad_pre * s + dmean / P

so the block tail moves 4 N elements forward and 6 N backward, where unfused PyTorch moves about 8 N and
13 N (see ``docs/design/fused_eca.md``). Without the ReLU pass A writes nothing: ``x * s`` alone moves
3 N forward and 4 N backward, and ``x * s + identity`` 4 N and 4 N (d identity is the incoming gradient).

After a BatchNorm in eval mode (inference: no gradient recorded), BatchNorm's affine map on running statistics
folds into the same three passes (:func:`bn_eval_eca_scale_add_relu`): pass 1 sums x minus the running mean,
pass 2 turns the sums into GAP(BN(x)) before the gate (:func:`_bn_eval_gate_kernel`), and pass 3 applies
BatchNorm and the gate at once. BN(x) is never written: 4 N elements move with the identity (3 N without),
where BatchNorm's module followed by these passes moves 6 N (5 N).

Every launch's tiling and grid depend on the shape alone and are fixed (no autotuning). Each call signature
(shape, layout, flags, dtypes, alignment) gets a plan whose first call compiles its kernels through Triton's
JIT and whose later calls launch the compiled kernels directly, without the JIT's per-call handling of the
arguments (:class:`_Launch`). In eager mode the kernels are called through a plain ``torch.autograd.Function``
(none at all when no input needs a gradient), which costs less host time per call than the custom op's
dispatch; under ``torch.compile`` the custom op is what Inductor sees.

The two reductions walk the batch from its last sample to its first and the element-wise passes that
follow walk it forwards, so the first samples the second pass needs are the last the first pass read: they
are still in the L2 cache (about 50 MB on H100/H200) instead of coming again from HBM.

Everything is accumulated in float32; inputs may be float16, bfloat16 or float32, in contiguous (NCHW) or
channels_last (NHWC) layout (anything else is made contiguous first). The op runs on CUDA tensors, and on
CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``, set before this module is imported), which
is how the tests check the kernels without a GPU. :mod:`ecanet.models.eca_module` decides when it is used.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import nn
from torch.autograd.function import once_differentiable
from torch.torch_version import TorchVersion   # compares a version string with a tuple, as packaging does

from .channel_conv import channel_conv, channel_conv_weight_grad

logger = logging.getLogger(__name__)

# Kernels run on CPU tensors only in Triton's interpreter; it is chosen when the kernels are defined.
INTERPRETER = os.environ.get("TRITON_INTERPRET", "0") == "1"

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# The batch index is the grid's third axis, which CUDA caps at 65535 blocks.
MAX_BATCH = 65535

# Tiling of the big passes: one program handles a (BLOCK_P pixels x BLOCK_C channels) tile of one sample.
TILE_ELEMENTS = 4096             # elements per tile: 8 KiB in bf16, 32 per thread with 4 warps
MAX_CONTIGUOUS_BLOCK = 128       # tile extent along the contiguous axis (C in NHWC): 256 B rows in bf16
MAX_CONTIGUOUS_BLOCK_NCHW = 256  # ... along H*W in NCHW
NUM_WARPS = 4
GATE_BLOCK_C = 256               # channels per program in the (B, C) gate kernels
# The reductions split H*W so that about this many programs per SM keep loads in flight.
REDUCTION_PROGRAMS_PER_SM = 16
MAX_SPLITS = 64                  # bounds the per-channel loop over partial sums in the gate kernels
INTERPRETER_NUM_SMS = 2          # a made-up SM count for the interpreter, so small tests still split
POINTER_ALIGNMENT = 16           # bytes; Triton compiles pointers that are multiples of it differently
PLAN_CACHE_SIZE = 1024           # call signatures whose launches are kept (a network has a few dozen)
LAUNCHER_TAKES_CONSTEXPRS_SINCE = (3, 3)   # Triton version from which compiled kernels take constexpr arguments


# ----------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------
@triton.jit
def _tile(p_start, c_start, C, P, CHANNELS_LAST: tl.constexpr, BLOCK_P: tl.constexpr,
          BLOCK_C: tl.constexpr):
    """Offsets inside one sample, and the in-bounds mask, of the (BLOCK_P, BLOCK_C) tile at (p, c)."""
    p = p_start + tl.arange(0, BLOCK_P)                  # (BLOCK_P,)
    c = c_start + tl.arange(0, BLOCK_C)                  # (BLOCK_C,)
    if CHANNELS_LAST:                                    # NHWC: element (c, p) at p * C + c
        offsets = p[:, None] * C + c[None, :]
    else:                                                # NCHW: element (c, p) at c * P + p
        offsets = c[None, :] * P + p[:, None]
    mask = (p[:, None] < P) & (c[None, :] < C)
    return offsets, mask                                 # (BLOCK_P, BLOCK_C) each


@triton.jit
def reduction_program(B, BLOCK_C: tl.constexpr):
    """A reduction program's (first channel, H·W split, sample) from its (channel block, split, sample) ids:
    the samples are walked last first, so that the element-wise pass that follows, which walks them first
    first, finds the last ones read still in L2 (see the module docstring)."""
    return tl.program_id(0) * BLOCK_C, tl.program_id(1), B - 1 - tl.program_id(2)


@triton.jit
def _channel_sum_kernel(x_ptr, centre_ptr, partial_ptr, B, C, P, tiles_per_split, HAS_CENTRE: tl.constexpr,
                        CHANNELS_LAST: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Forward pass 1: partial[split, b, c] = sum of x[b, c, p] (HAS_CENTRE: of x[b, c, p] - centre[c]) over
    this split's pixels. The inference tail centres on BatchNorm's running mean: a channel whose mean is large
    against its spread then sums small values, as BatchNorm's output would be, and keeps its precision."""
    c_start, split, b = reduction_program(B, BLOCK_C)
    c = c_start + tl.arange(0, BLOCK_C)
    sample = b.to(tl.int64) * C * P                      # int64: B * C * P may pass 2**31
    if HAS_CENTRE:
        centre = tl.load(centre_ptr + c, mask=c < C, other=0.0).to(tl.float32)          # (BLOCK_C,)
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for i in range(tiles_per_split):
        p_start = (split * tiles_per_split + i) * BLOCK_P
        offsets, mask = _tile(p_start, c_start, C, P, CHANNELS_LAST, BLOCK_P, BLOCK_C)
        x = tl.load(x_ptr + sample + offsets, mask=mask, other=0.0).to(tl.float32)
        if HAS_CENTRE:
            x = tl.where(mask, x - centre[None, :], 0.0)
        acc += x
    tl.store(partial_ptr + (split * B + b) * C + c, tl.sum(acc, axis=0), mask=c < C)


@triton.jit
def relu_masked_grad(grad_ptr, out_ptr, grad_pre_ptr, offsets, mask, RELU: tl.constexpr):
    """The incoming gradient at ``offsets`` in float32; with RELU, zero where out <= 0 (torch's
    threshold_backward, NaN included) and stored to grad_pre, the residual's gradient."""
    grad = tl.load(grad_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    if RELU:
        out = tl.load(out_ptr + offsets, mask=mask, other=0.0)
        grad = tl.where(out <= 0, 0.0, grad)
        tl.store(grad_pre_ptr + offsets, grad.to(grad_pre_ptr.dtype.element_ty), mask=mask)
    return grad


@triton.jit
def _backward_reduce_kernel(grad_ptr, out_ptr, x_ptr, grad_pre_ptr, partial_ptr, B, C, P, tiles_per_split,
                            RELU: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK_P: tl.constexpr,
                            BLOCK_C: tl.constexpr):
    """Backward pass A: grad_pre = grad * [out > 0] (stored when RELU) and partial sums of grad_pre * x."""
    c_start, split, b = reduction_program(B, BLOCK_C)
    sample = b.to(tl.int64) * C * P
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for i in range(tiles_per_split):
        p_start = (split * tiles_per_split + i) * BLOCK_P
        offsets, mask = _tile(p_start, c_start, C, P, CHANNELS_LAST, BLOCK_P, BLOCK_C)
        grad = relu_masked_grad(grad_ptr, out_ptr, grad_pre_ptr, sample + offsets, mask, RELU)
        acc += grad * tl.load(x_ptr + sample + offsets, mask=mask, other=0.0).to(tl.float32)
    c = c_start + tl.arange(0, BLOCK_C)
    tl.store(partial_ptr + (split * B + b) * C + c, tl.sum(acc, axis=0), mask=c < C)


@triton.jit
def _channel_affine_kernel(x_ptr, scale_ptr, shift_ptr, centre_ptr, identity_ptr, out_ptr, C, P,
                           HAS_SHIFT: tl.constexpr, HAS_CENTRE: tl.constexpr, HAS_IDENTITY: tl.constexpr,
                           RELU: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK_P: tl.constexpr,
                           BLOCK_C: tl.constexpr):
    """Forward pass 3 / backward pass C: out = act((x - centre[c]) * scale[b, c] + shift[b, c] + identity).

    The centre (HAS_CENTRE) is BatchNorm's running mean in the inference tail: subtracted before the scale,
    as BatchNorm does, so a channel whose mean is large against its spread keeps its precision."""
    p_start = tl.program_id(0) * BLOCK_P
    c_start = tl.program_id(1) * BLOCK_C
    b = tl.program_id(2)
    sample = b.to(tl.int64) * C * P
    offsets, mask = _tile(p_start, c_start, C, P, CHANNELS_LAST, BLOCK_P, BLOCK_C)
    c = c_start + tl.arange(0, BLOCK_C)
    scale = tl.load(scale_ptr + b * C + c, mask=c < C, other=0.0)          # (BLOCK_C,) float32
    y = tl.load(x_ptr + sample + offsets, mask=mask, other=0.0).to(tl.float32)
    if HAS_CENTRE:
        y -= tl.load(centre_ptr + c, mask=c < C, other=0.0).to(tl.float32)[None, :]
    y *= scale[None, :]
    if HAS_SHIFT:
        y += tl.load(shift_ptr + b * C + c, mask=c < C, other=0.0)[None, :]
    add_relu_store(y, identity_ptr, out_ptr, sample + offsets, mask, HAS_IDENTITY, RELU)


@triton.jit
def add_relu_store(y, identity_ptr, out_ptr, offsets, mask, HAS_IDENTITY: tl.constexpr, RELU: tl.constexpr):
    """A block tail's last steps on a float32 tile y: + identity (with HAS_IDENTITY), the ReLU (with RELU),
    stored to out in out's dtype."""
    if HAS_IDENTITY:
        y += tl.load(identity_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    if RELU:
        y = tl.where(y < 0, 0.0, y)                      # relu that keeps NaN, as torch.relu
    tl.store(out_ptr + offsets, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _split_sum(partial_ptr, b, channel, B, C, num_splits, BLOCK_C: tl.constexpr):
    """sum over splits of partial[split, b, channel]; 0 where channel is outside [0, C) (zero padding)."""
    valid = (channel >= 0) & (channel < C)
    total = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for split in range(num_splits):
        total += tl.load(partial_ptr + (split * B + b) * C + channel, mask=valid, other=0.0)
    return total


@triton.jit
def _gate_forward_kernel(partial_ptr, weight_ptr, mean_ptr, gate_ptr, B, C, num_splits, inv_p,
                         K: tl.constexpr, PAD: tl.constexpr, BLOCK_C: tl.constexpr):
    """Forward pass 2, Eq. (2) and (9) on (B, C): mean = GAP(x); gate = sigmoid(sum_j w[j] * mean[c + j - PAD])."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    b = tl.program_id(1)
    z = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for j in tl.static_range(K):
        mean = _split_sum(partial_ptr, b, c + (j - PAD), B, C, num_splits, BLOCK_C) * inv_p
        z += tl.load(weight_ptr + j).to(tl.float32) * mean
        if j == PAD:                                     # the centre tap reads channel c itself
            tl.store(mean_ptr + b * C + c, mean, mask=c < C)
    tl.store(gate_ptr + b * C + c, tl.sigmoid(z), mask=c < C)


@triton.jit
def _masked_load(ptr, index, mask):
    """ptr[index] in float32 where mask holds, 0 elsewhere."""
    return tl.load(ptr + index, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _bn_eval_slope(gamma_ptr, running_var_ptr, channel, valid, eps):
    """a = gamma / sqrt(v + eps) of BatchNorm in eval mode at ``channel``: BN(x) = (x - m) a + beta."""
    var = tl.load(running_var_ptr + channel, mask=valid, other=1.0).to(tl.float32)
    return _masked_load(gamma_ptr, channel, valid) / tl.sqrt(var + eps)


@triton.jit
def _bn_eval_gate_kernel(partial_ptr, weight_ptr, gamma_ptr, beta_ptr, running_var_ptr, scale_ptr, shift_ptr,
                         B, C, num_splits, inv_p, eps,
                         K: tl.constexpr, PAD: tl.constexpr, BLOCK_C: tl.constexpr):
    """Forward pass 2 of the inference tail, ECA after a BatchNorm in eval mode, on (B, C).

    BN(x) = (x - m) a + beta per channel, with a = gamma / sqrt(v + eps) from the running mean m and variance
    v. It is affine, so GAP(BN(x)) = GAP(x - m) a + beta (Eq. 2) comes from pass 1's sums of x - m, and
    g = sigmoid(C1D_k(GAP(BN(x)))) (Eq. 9) with zero padding. Stored: scale = a g and shift = beta g, so that
    pass 3 computes BN(x) g = (x - m) scale + shift without BN(x) being written anywhere."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    b = tl.program_id(1)
    z = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for j in tl.static_range(K):
        src = c + (j - PAD)
        valid = (src >= 0) & (src < C)
        slope = _bn_eval_slope(gamma_ptr, running_var_ptr, src, valid, eps)
        pooled = _split_sum(partial_ptr, b, src, B, C, num_splits, BLOCK_C) * inv_p * slope
        z += tl.load(weight_ptr + j).to(tl.float32) * tl.where(valid, pooled + _masked_load(beta_ptr, src, valid),
                                                               0.0)
    gate = tl.sigmoid(z)                                 # (BLOCK_C,)
    slope = _bn_eval_slope(gamma_ptr, running_var_ptr, c, c < C, eps)
    tl.store(scale_ptr + b * C + c, slope * gate, mask=c < C)
    tl.store(shift_ptr + b * C + c, _masked_load(beta_ptr, c, c < C) * gate, mask=c < C)


@triton.jit
def _gate_logit_grad(partial_ptr, gate_ptr, b, channel, B, C, num_splits, BLOCK_C: tl.constexpr):
    """dL/dz = dL/ds * s * (1 - s) at (b, channel), from the partial sums of dL/ds; 0 outside [0, C)."""
    grad_gate = _split_sum(partial_ptr, b, channel, B, C, num_splits, BLOCK_C)
    valid = (channel >= 0) & (channel < C)
    gate = tl.load(gate_ptr + b * C + channel, mask=valid, other=0.0)
    return grad_gate * gate * (1.0 - gate)


@triton.jit
def _gate_backward_kernel(partial_ptr, gate_ptr, mean_ptr, weight_ptr, shift_ptr, weight_partial_ptr,
                          B, C, num_splits, inv_p,
                          K: tl.constexpr, PAD: tl.constexpr, BLOCK_C: tl.constexpr):
    """Backward pass B on (B, C): back through sigmoid, C1D_k and the mean.

    dz[c] = ds[c] s[c] (1 - s[c]); dmean[c] = sum_j w[j] dz[c - j + PAD] (the conv's transpose), stored
    as shift = dmean / P; and this program's share of dw[j] = sum_{b, c} dz[b, c] mean[b, c + j - PAD].
    """
    c_block = tl.program_id(0)
    b = tl.program_id(1)
    c = c_block * BLOCK_C + tl.arange(0, BLOCK_C)
    dz = _gate_logit_grad(partial_ptr, gate_ptr, b, c, B, C, num_splits, BLOCK_C)  # 0 for c >= C
    grad_mean = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for j in tl.static_range(K):
        # Tap j of output channel c - (j - PAD) read input channel c (the centre tap: c itself).
        if j == PAD:
            dz_j = dz
        else:
            dz_j = _gate_logit_grad(partial_ptr, gate_ptr, b, c - (j - PAD), B, C, num_splits, BLOCK_C)
        grad_mean += tl.load(weight_ptr + j).to(tl.float32) * dz_j
    tl.store(shift_ptr + b * C + c, grad_mean * inv_p, mask=c < C)

    row = b * tl.num_programs(0) + c_block
    for j in tl.static_range(K):
        src = c + (j - PAD)
        mean = tl.load(mean_ptr + b * C + src, mask=(src >= 0) & (src < C), other=0.0)
        tl.store(weight_partial_ptr + row * K + j, tl.sum(dz * mean, axis=0))


# ----------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Tiling:
    """How the (B, C, P) activation is cut into tiles; the same for every pass over one shape."""

    channels_last: bool
    block_p: int
    block_c: int

    @classmethod
    def for_shape(cls, C: int, P: int, channels_last: bool) -> "_Tiling":
        if channels_last:   # channels are contiguous: full rows of up to 128 channels
            block_c = min(triton.next_power_of_2(C), MAX_CONTIGUOUS_BLOCK)
            block_p = min(max(TILE_ELEMENTS // block_c, 1), triton.next_power_of_2(P))
        else:               # pixels are contiguous
            block_p = min(triton.next_power_of_2(P), MAX_CONTIGUOUS_BLOCK_NCHW)
            block_c = min(max(TILE_ELEMENTS // block_p, 1), triton.next_power_of_2(C))
        return cls(channels_last, block_p, block_c)

    def meta(self) -> dict:
        return {"CHANNELS_LAST": self.channels_last, "BLOCK_P": self.block_p, "BLOCK_C": self.block_c}


@functools.lru_cache(maxsize=None)
def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return INTERPRETER_NUM_SMS
    return torch.cuda.get_device_properties(device).multi_processor_count


def _reduction_splits(B: int, C: int, P: int, tiling: _Tiling, device: torch.device) -> tuple[int, int]:
    """(number of splits of H*W, tiles per split) so that the reductions fill the GPU."""
    tiles = triton.cdiv(P, tiling.block_p)
    programs = B * triton.cdiv(C, tiling.block_c)
    wanted = triton.cdiv(_num_sms(device) * REDUCTION_PROGRAMS_PER_SM, programs)
    tiles_per_split = triton.cdiv(tiles, max(1, min(wanted, MAX_SPLITS, tiles)))
    return triton.cdiv(tiles, tiles_per_split), tiles_per_split


def _device_of(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Triton launches on the current CUDA device: make it the tensor's."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


@dataclass(frozen=True)
class _Reduction:
    """How a reduction over H*W is launched for one shape: the same for forward pass 1 and backward pass A."""

    B: int
    C: int
    P: int
    tiling: _Tiling
    splits: int
    tiles_per_split: int

    @property
    def grid(self) -> tuple[int, int, int]:
        return triton.cdiv(self.C, self.tiling.block_c), self.splits, self.B


def _reduction_plan(B: int, C: int, P: int, channels_last: bool, device: torch.device) -> _Reduction:
    """The tiling and H*W splits of a reduction over one shape."""
    tiling = _Tiling.for_shape(C, P, channels_last)
    return _Reduction(B, C, P, tiling, *_reduction_splits(B, C, P, tiling, device))


class _Launch:
    """One kernel with a fixed grid and fixed scalar arguments: ``launch(*tensors)`` runs it on new tensors.

    Why not ``kernel[grid](...)`` on every call: Triton's JIT launch binds, specializes and hashes every
    argument before it finds the compiled kernel, on every call. With three launches each way per ECA layer,
    the short eager steps of ResNet-18/34/152 and MobileNetV2 waited on the host, not the GPU
    (docs/design/fused_eca.md, "Host time per call"). So the first call goes through Triton's JIT, which
    compiles the kernel or finds it in its cache, and later calls launch that compiled kernel directly
    (``CompiledKernel[grid]``, Triton's own launcher). That is valid while every argument Triton specializes
    on stays the same: the integers (fixed here), and the tensors' dtypes and 16-byte alignment, which are in
    the key of the plan that owns the launch (:func:`_forward_key`, :func:`_backward_key`; for the BatchNorm+ECA
    tail, :func:`~ecanet.models.bn_eca_fused._direct_launcher`). The direct launch
    passes what the installed Triton's JIT would pass (:func:`_launcher_arguments`), checked once against the
    compiled kernel's signature; where they disagree the launches go through the JIT, with a warning. Under
    Triton's interpreter every call goes through the JIT.
    """

    __slots__ = ("kernel", "grid", "scalars", "constexprs", "_runner", "_tail")

    def __init__(self, kernel, grid: tuple[int, ...], scalars: tuple, constexprs: dict) -> None:
        self.kernel, self.grid, self.scalars, self.constexprs = kernel, grid, scalars, constexprs
        self._runner = None
        self._tail: tuple = ()

    @property
    def direct(self) -> bool:
        """Whether calls after the first launch the compiled kernel directly."""
        return self._runner is not None

    def __call__(self, *tensors: torch.Tensor) -> None:
        if self._runner is not None:
            self._runner(*tensors, *self._tail)
            return
        compiled = self.kernel[self.grid](*tensors, *self.scalars, num_warps=NUM_WARPS, **self.constexprs)
        if INTERPRETER or compiled is None or not hasattr(compiled, "__getitem__"):
            return
        tail = _launcher_arguments(self.kernel.arg_names, len(tensors), self.scalars, self.constexprs)
        # Triton's launcher does not count its arguments: check them against the compiled signature, which
        # lists exactly what the JIT passes (every parameter from Triton 3.3 on, the non-constexprs before).
        expected = len(getattr(getattr(compiled, "src", None), "signature", None) or ())
        if len(tensors) + len(tail) != expected:
            if self.kernel.__name__ not in _JIT_ONLY:
                _JIT_ONLY.add(self.kernel.__name__)
                logger.warning("fused ECA: this Triton (%s) compiles %s to take %d arguments where %d were "
                               "worked out; its launches go through Triton's JIT", triton.__version__,
                               self.kernel.__name__, expected, len(tensors) + len(tail))
            return
        self._tail = tail
        self._runner = compiled[(*self.grid, 1, 1)[:3]]   # the compiled kernel's launcher takes 3-D grids


_JIT_ONLY: set[str] = set()   # kernels whose direct launch was refused (warned once each)


def _launcher_arguments(arg_names: list[str], num_tensors: int, scalars: tuple, constexprs: dict,
                       version: str = triton.__version__) -> tuple:
    """What follows the tensors in a call of a compiled kernel: the arguments Triton's own JIT passes to it.

    Triton 3.3 and later pass every parameter in order, constexprs included (the launcher drops them);
    earlier versions pass only the others.
    """
    if TorchVersion(version) < LAUNCHER_TAKES_CONSTEXPRS_SINCE:
        return tuple(scalars)
    return (*scalars, *(constexprs[name] for name in arg_names[num_tensors + len(scalars):]))


def _alignments(*tensors: torch.Tensor | None) -> tuple[bool | None, ...]:
    """Whether each tensor's address is a multiple of 16 bytes (None for an absent one): Triton compiles such
    pointers differently, one by one."""
    return tuple(None if t is None else t.data_ptr() % POINTER_ALIGNMENT == 0 for t in tensors)


class _ForwardPlan:
    """Forward passes 1-3 of one call signature: ``plan(x, weight, identity) -> (out, gate, mean)``."""

    def __init__(self, B: int, C: int, P: int, channels_last: bool, k: int, has_identity: bool, relu: bool,
                 device: torch.device) -> None:
        r = _reduction_plan(B, C, P, channels_last, device)
        self.partial_shape, self.stats_shape = (r.splits, B, C), (B, C)
        self.channel_sum = _Launch(_channel_sum_kernel, r.grid, (B, C, P, r.tiles_per_split),
                                   {"HAS_CENTRE": False, **r.tiling.meta()})
        self.gate = _Launch(_gate_forward_kernel, *_gate_launch(B, C, P, k, r.splits))
        self.scale = _Launch(_channel_affine_kernel, _pointwise_grid(B, C, P, r.tiling), (C, P),
                             {"HAS_SHIFT": False, "HAS_CENTRE": False, "HAS_IDENTITY": has_identity, "RELU": relu,
                              **r.tiling.meta()})

    def __call__(self, x: torch.Tensor, weight: torch.Tensor,
                 identity: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        partial = torch.empty(self.partial_shape, device=x.device, dtype=torch.float32)  # (splits, B, C)
        mean = torch.empty(self.stats_shape, device=x.device, dtype=torch.float32)       # (B, C)
        gate = torch.empty_like(mean)                                                     # (B, C)
        out = _empty_like(x)
        self.channel_sum(x, x, partial)                                                   # pass 1
        self.gate(partial, weight, mean, gate)                                            # pass 2
        # Absent operands are never read (their constexpr flag is off); any tensor fills the slot.
        self.scale(x, gate, gate, gate, x if identity is None else identity, out)         # pass 3
        return out, gate, mean


class _BackwardPlan:
    """Backward passes A-C of one call signature: ``plan(grad, x, weight, gate, mean, out)``, see
    :func:`_backward_passes`."""

    def __init__(self, B: int, C: int, P: int, channels_last: bool, k: int, relu: bool,
                 device: torch.device) -> None:
        r = _reduction_plan(B, C, P, channels_last, device)
        self.relu = relu
        self.partial_shape = (r.splits, B, C)
        self.reduce = _Launch(_backward_reduce_kernel, r.grid, (B, C, P, r.tiles_per_split),
                              {"RELU": relu, **r.tiling.meta()})
        self.gate = _Launch(_gate_backward_kernel, *_gate_launch(B, C, P, k, r.splits))
        self.weight_partial_shape = (self.gate.grid[0] * B, k)   # one row of dw partial sums per program
        self.scale = _Launch(_channel_affine_kernel, _pointwise_grid(B, C, P, r.tiling), (C, P),
                             {"HAS_SHIFT": True, "HAS_CENTRE": False, "HAS_IDENTITY": False, "RELU": False,
                              **r.tiling.meta()})

    def __call__(self, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, gate: torch.Tensor,
                 mean: torch.Tensor, out: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        grad_pre = _empty_like(x) if self.relu else grad
        partial = torch.empty(self.partial_shape, device=x.device, dtype=torch.float32)      # (splits, B, C)
        self.reduce(grad, out if self.relu else grad, x, grad_pre, partial)                   # pass A
        shift = torch.empty_like(gate)                                                         # (B, C)
        weight_partial = torch.empty(self.weight_partial_shape, device=x.device, dtype=torch.float32)
        self.gate(partial, gate, mean, weight, shift, weight_partial)                         # pass B
        grad_weight = weight_partial.sum(0).view(weight.shape).to(weight.dtype)
        grad_x = _empty_like(grad_pre)
        self.scale(grad_pre, gate, shift, shift, grad_pre, grad_x)                            # pass C
        return grad_x, grad_weight, grad_pre if self.relu else x.new_empty(0)


class _BnEvalPlan:
    """The inference tail's passes for one call signature, ``plan(x, bn tensors, weight, identity) -> out``:
    channel sums of x - running mean (pass 1), the gate with BatchNorm's eval-mode affine map folded in
    (:func:`_bn_eval_gate_kernel`), then out = act(BN(x) g [+ identity]) (pass 3)."""

    def __init__(self, B: int, C: int, P: int, channels_last: bool, k: int, has_identity: bool, relu: bool,
                 eps: float, device: torch.device) -> None:
        r = _reduction_plan(B, C, P, channels_last, device)
        self.partial_shape, self.stats_shape = (r.splits, B, C), (B, C)
        self.channel_sum = _Launch(_channel_sum_kernel, r.grid, (B, C, P, r.tiles_per_split),
                                   {"HAS_CENTRE": True, **r.tiling.meta()})
        grid, scalars, constexprs = _gate_launch(B, C, P, k, r.splits)
        self.gate = _Launch(_bn_eval_gate_kernel, grid, (*scalars, eps), constexprs)
        self.scale = _Launch(_channel_affine_kernel, _pointwise_grid(B, C, P, r.tiling), (C, P),
                             {"HAS_SHIFT": True, "HAS_CENTRE": True, "HAS_IDENTITY": has_identity, "RELU": relu,
                              **r.tiling.meta()})

    def __call__(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, running_mean: torch.Tensor,
                 running_var: torch.Tensor, weight: torch.Tensor, identity: torch.Tensor | None) -> torch.Tensor:
        partial = torch.empty(self.partial_shape, device=x.device, dtype=torch.float32)  # (splits, B, C)
        scale = torch.empty(self.stats_shape, device=x.device, dtype=torch.float32)      # (B, C)
        shift = torch.empty_like(scale)                                                   # (B, C)
        out = _empty_like(x)
        self.channel_sum(x, running_mean, partial)                                        # pass 1
        self.gate(partial, weight, gamma, beta, running_var, scale, shift)                # pass 2
        self.scale(x, scale, shift, running_mean, x if identity is None else identity, out)  # pass 3
        return out


def _gate_launch(B: int, C: int, P: int, k: int, splits: int) -> tuple[tuple[int, int], tuple, dict]:
    """(grid, scalars, constexprs) of the (B, C) gate kernels, forward pass 2 and backward pass B."""
    block_c = min(triton.next_power_of_2(C), GATE_BLOCK_C)
    return (triton.cdiv(C, block_c), B), (B, C, splits, 1.0 / P), {"K": k, "PAD": (k - 1) // 2, "BLOCK_C": block_c}


def _pointwise_grid(B: int, C: int, P: int, tiling: _Tiling) -> tuple[int, int, int]:
    """One program per (BLOCK_P, BLOCK_C) tile of each sample: forward pass 3, backward pass C."""
    return triton.cdiv(P, tiling.block_p), triton.cdiv(C, tiling.block_c), B


@functools.lru_cache(maxsize=PLAN_CACHE_SIZE)
def _forward_plan(shape: torch.Size, channels_last: bool, k: int, has_identity: bool, relu: bool,
                  device: torch.device, _specialization: tuple) -> _ForwardPlan:
    """The forward plan of one call signature (:func:`_forward_key`). ``_specialization`` (each tensor's dtype
    and whether its address is 16-byte aligned) only keys the cache: code compiled for one never runs on
    another."""
    B, C, H, W = shape
    return _ForwardPlan(B, C, H * W, channels_last, k, has_identity, relu, device)


@functools.lru_cache(maxsize=PLAN_CACHE_SIZE)
def _backward_plan(shape: torch.Size, channels_last: bool, k: int, relu: bool, device: torch.device,
                   _specialization: tuple) -> _BackwardPlan:
    """The backward plan of one call signature (:func:`_backward_key`); ``_specialization`` as for
    :func:`_forward_plan`."""
    B, C, H, W = shape
    return _BackwardPlan(B, C, H * W, channels_last, k, relu, device)


@functools.lru_cache(maxsize=PLAN_CACHE_SIZE)
def _bn_eval_plan(shape: torch.Size, channels_last: bool, k: int, has_identity: bool, relu: bool, eps: float,
                  device: torch.device, _specialization: tuple) -> _BnEvalPlan:
    """The inference tail's plan of one call signature (:func:`bn_eval_eca_scale_add_relu`); BatchNorm's ``eps``
    is one of the gate kernel's fixed arguments, so it keys the plan too. ``_specialization`` as for
    :func:`_forward_plan`."""
    B, C, H, W = shape
    return _BnEvalPlan(B, C, H * W, channels_last, k, has_identity, relu, eps, device)


# ----------------------------------------------------------------------------------------------------
# The passes of one call, forward and backward
# ----------------------------------------------------------------------------------------------------
def _forward_key(x: torch.Tensor, weight: torch.Tensor, identity: torch.Tensor | None, relu: bool) -> tuple:
    """The arguments of :func:`_forward_plan` for dense inputs: the call signature."""
    return (x.shape, memory_format(x) == torch.channels_last, weight.shape[-1], identity is not None, relu,
            x.device, (x.dtype, weight.dtype, None if identity is None else identity.dtype,
                       _alignments(x, weight, identity)))


def _backward_key(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, gate: torch.Tensor,
                  mean: torch.Tensor, out: torch.Tensor | None) -> tuple:
    """The arguments of :func:`_backward_plan` for dense inputs: the call signature."""
    return (x.shape, memory_format(x) == torch.channels_last, weight.shape[-1], out is not None, x.device,
            (x.dtype, grad.dtype, weight.dtype, gate.dtype, mean.dtype, None if out is None else out.dtype,
             _alignments(grad, x, weight, gate, mean, out)))


def _forward_passes(x: torch.Tensor, weight: torch.Tensor, identity: torch.Tensor | None,
                    relu: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward passes 1-3: (out, gate, mean), out = act(x * gate [+ identity]); gate, mean (B, C) fp32."""
    layout = memory_format(x)
    x, identity, weight = _dense(x, layout), _dense(identity, layout), weight.contiguous()
    plan = _forward_plan(*_forward_key(x, weight, identity, relu))
    with _device_of(x):
        return plan(x, weight, identity)


def _backward_passes(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, gate: torch.Tensor,
                     mean: torch.Tensor, out: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward passes A-C: (dx, dweight, grad * [out > 0]); ``out`` is the forward's output when it had the
    ReLU and None otherwise, in which case the third output is an empty placeholder (the gradient itself)."""
    layout = memory_format(x)
    grad, out, x, weight = _dense(grad, layout), _dense(out, layout), _dense(x, layout), weight.contiguous()
    gate, mean = gate.contiguous(), mean.contiguous()   # (B, C) each; under torch.compile they come from Inductor
    plan = _backward_plan(*_backward_key(grad, x, weight, gate, mean, out))
    with _device_of(x):
        return plan(grad, x, weight, gate, mean, out)


def _save_for_backward(ctx, x: torch.Tensor, weight: torch.Tensor, identity: torch.Tensor | None, relu: bool,
                       out: torch.Tensor, gate: torch.Tensor, mean: torch.Tensor) -> None:
    ctx.has_identity, ctx.relu = identity is not None, relu
    # The ReLU mask comes from out, which the next layer keeps alive anyway (it is its input).
    ctx.save_for_backward(x, weight, gate, mean, *((out,) if relu else ()))


def _gradients(ctx, grad_out: torch.Tensor, backward) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(dx, dweight, didentity or None) from what :func:`_save_for_backward` kept; ``backward`` runs the passes."""
    x, weight, gate, mean, *saved_out = ctx.saved_tensors
    out = saved_out[0] if ctx.relu else None
    grad_x, grad_weight, grad_pre = backward(grad_out, x, weight, gate, mean, out)  # it makes grad dense
    if not ctx.has_identity:
        return grad_x, grad_weight, None
    return grad_x, grad_weight, grad_pre if ctx.relu else grad_out   # without the ReLU d identity = dL/dout


# ----------------------------------------------------------------------------------------------------
# The custom ops, for torch.compile: ecanet::eca_forward and ecanet::eca_backward
# ----------------------------------------------------------------------------------------------------
# Schemas are spelled out (not inferred from annotations): torch 2.4 cannot read the string annotations
# that ``from __future__ import annotations`` makes.
@torch.library.custom_op("ecanet::eca_forward", mutates_args=(),
                         schema="(Tensor x, Tensor weight, Tensor? identity, bool relu) -> (Tensor, Tensor, Tensor)")
def eca_forward(x: torch.Tensor, weight: torch.Tensor, identity: Optional[torch.Tensor],
                relu: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out, gate, mean): out = x * gate [+ identity], then the ReLU if ``relu``; gate, mean (B, C) fp32.

    ``x`` and ``identity`` must share dtype and layout (contiguous or channels_last); use
    :func:`eca_scale_add_relu` / :func:`eca_scale`, which arrange that.
    """
    return _forward_passes(x, weight, identity, relu)


@eca_forward.register_fake
def _eca_forward_fake(x, weight, identity, relu):
    stats = x.new_empty(x.shape[:2], dtype=torch.float32)                # (B, C)
    return _empty_like(x), stats, torch.empty_like(stats)


@torch.library.custom_op("ecanet::eca_backward", mutates_args=(),
                         schema="(Tensor grad, Tensor x, Tensor weight, Tensor gate, Tensor mean, Tensor? out) "
                                "-> (Tensor, Tensor, Tensor)")
def eca_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, gate: torch.Tensor,
                 mean: torch.Tensor, out: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight, grad * [out > 0]) of :func:`eca_forward`; ``out`` is its output when it had the ReLU and
    None otherwise, in which case the third output is an empty placeholder."""
    return _backward_passes(grad, x, weight, gate, mean, out)


@eca_backward.register_fake
def _eca_backward_fake(grad, x, weight, gate, mean, out):
    grad_pre = _empty_like(x) if out is not None else x.new_empty(0)
    return _empty_like(x), torch.empty_like(weight), grad_pre


def _setup_context(ctx, inputs, output) -> None:
    _save_for_backward(ctx, *inputs, *output)


def _backward(ctx, grad_out, _grad_gate, _grad_mean):
    return *_gradients(ctx, grad_out, eca_backward), None


eca_forward.register_autograd(_backward, setup_context=_setup_context)


class _EagerEca(torch.autograd.Function):
    """The same passes as the custom op for eager mode, without the op's dispatch (host time per call)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, identity: torch.Tensor | None,
                relu: bool) -> torch.Tensor:
        out, gate, mean = _forward_passes(x, weight, identity, relu)
        _save_for_backward(ctx, x, weight, identity, relu, out, gate, mean)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        return *_gradients(ctx, grad_out, _backward_passes), None


def forward_ad_active() -> bool:
    """Whether a forward-mode AD level is open (``torch.autograd.forward_ad.dual_level``)."""
    return getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0


def _eca(x: torch.Tensor, weight: torch.Tensor, identity: torch.Tensor | None, relu: bool) -> torch.Tensor:
    if torch.compiler.is_compiling():
        return eca_forward(x, weight, identity, relu)[0]
    if (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                     or (identity is not None and identity.requires_grad))) or forward_ad_active():
        return _EagerEca.apply(x, weight, identity, relu)   # forward-mode AD: apply says it has no jvp
    return _forward_passes(x, weight, identity, relu)[0]   # inference: no autograd node to build


# ----------------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------------
def memory_format(x: torch.Tensor) -> torch.memory_format:
    """The layout the kernels use for x: channels_last if x already is (and is not also contiguous)."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _dense(t: torch.Tensor | None, layout: torch.memory_format) -> torch.Tensor | None:
    """t dense in ``layout``, the kernels' layout for a call's x (:func:`memory_format`); no copy when it
    already is."""
    return None if t is None else t.contiguous(memory_format=layout)


def _empty_like(x: torch.Tensor) -> torch.Tensor:
    """A new tensor shaped as x in the kernels' layout for x: what the ops return, real or fake.

    Under torch.compile, Inductor may hand the ops buffers with padded or permuted strides; the real
    kernels then work on a dense copy, and this rule gives the fake and the real outputs the same strides.
    """
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=memory_format(x))


def supports(x: torch.Tensor, identity: torch.Tensor | None = None) -> bool:
    """Whether the fused kernels take these inputs (else callers run the plain implementation)."""
    return (x.dim() == 4 and x.dtype in SUPPORTED_DTYPES and x.numel() > 0 and x.shape[0] <= MAX_BATCH
            and (identity is None or (identity.shape == x.shape and identity.device == x.device)))


def eca_scale(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """ECA, Eq. (2) and (9): ``x * sigmoid(C1D_k(GAP(x)))`` for x (B, C, H, W) and a conv weight (1, 1, k)."""
    return _eca(_dense(x, memory_format(x)), weight, None, False)


def eca_scale_add_relu(x: torch.Tensor, weight: torch.Tensor, identity: torch.Tensor | None = None, *,
                       relu: bool = True) -> torch.Tensor:
    """A block's tail with ECA: ``relu(x * sigmoid(C1D_k(GAP(x))) + identity)``.

    ``identity`` None leaves the add out, ``relu=False`` the ReLU. ``identity`` is cast to x's dtype and
    layout, as the plain ``out += identity`` does.
    """
    layout = memory_format(x)
    x = _dense(x, layout)
    if identity is not None:
        identity = identity.to(dtype=x.dtype, memory_format=layout)
    return _eca(x, weight, identity, relu)


def supports_inference_tail(x: torch.Tensor, bn: nn.BatchNorm2d, identity: torch.Tensor | None = None, *,
                            weight: torch.Tensor) -> bool:
    """Whether :func:`bn_eval_eca_scale_add_relu` takes these inputs: what :func:`supports` takes; ``bn`` an
    affine BatchNorm in eval mode with running statistics; its four tensors and ECA's kernel ``weight`` dense,
    in a supported dtype and on x's device (the kernels read them through raw pointers, where a tensor on
    another device is no error but a wrong address); and no gradient to record (no autograd graph is built)."""
    return (not bn.training and bn.affine and bn.track_running_stats and supports(x, identity)
            and batch_norm_fits(x, bn, weight, SUPPORTED_DTYPES)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in (x, bn.weight, bn.bias, weight, identity)
                                                     if t is not None))
            and not forward_ad_active())


def batch_norm_fits(x: torch.Tensor, bn: nn.BatchNorm2d, weight: torch.Tensor, dtypes: tuple) -> bool:
    """Whether kernels on x may read BatchNorm's parameters and running statistics and ECA's kernel ``weight``
    through raw pointers: each dense, of one of ``dtypes`` and on x's device (a tensor elsewhere is no error but a
    wrong address), and BatchNorm's with one value per channel of x, which ``nn.BatchNorm2d`` would otherwise
    refuse (the kernels would read and write past them)."""
    channels = x.shape[1]
    return bn.num_features == channels and all(
        t is not None and t.dtype in dtypes and t.device == x.device and t.is_contiguous()
        and (t is weight or t.numel() == channels)
        for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var, weight))


def bn_eval_eca_scale_add_relu(x: torch.Tensor, bn: nn.BatchNorm2d, weight: torch.Tensor,
                               identity: torch.Tensor | None = None, *, relu: bool = True) -> torch.Tensor:
    """``relu(ECA(bn(x)) + identity)`` with ``bn`` in eval mode, for inference (no autograd graph).

    BatchNorm on running statistics is an affine map per channel, so it folds into ECA's passes: x's channel
    sums, the gate (:func:`_bn_eval_gate_kernel`), then out = act(BN(x) g [+ identity]) in one pass. BatchNorm's
    module followed by the fused ECA makes four launches, one of them writing BN(x) in full and the next reading
    it back. ``identity`` None leaves the add out and ``relu=False`` the ReLU; ``identity`` is cast to x's
    dtype and layout, as the plain ``out += identity`` does. Check :func:`supports_inference_tail` first.
    """
    layout = memory_format(x)
    x = _dense(x, layout)
    if identity is not None:   # dense too: a strided or expanded identity keeps its strides through .to()
        identity = _dense(identity.to(dtype=x.dtype), layout)
    tensors = (bn.weight, bn.bias, bn.running_mean, bn.running_var, weight)
    plan = _bn_eval_plan(x.shape, layout == torch.channels_last, weight.shape[-1], identity is not None, relu,
                         float(bn.eps), x.device,
                         (x.dtype, None if identity is None else identity.dtype, *(t.dtype for t in tensors),
                          _alignments(x, identity, *tensors)))
    with _device_of(x):
        return plan(x, *tensors, identity)


# ----------------------------------------------------------------------------------------------------
# A pure-PyTorch statement of what the kernels compute (float64 in the tests), pass by pass
# ----------------------------------------------------------------------------------------------------
def reference_forward(x: torch.Tensor, weight: torch.Tensor, identity: torch.Tensor | None,
                      relu: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What :func:`eca_forward` computes, in PyTorch: (out, gate, mean)."""
    mean = x.mean(dim=(2, 3))                                    # (B, C)      pass 1
    gate = torch.sigmoid(channel_conv(mean, weight.reshape(-1)))  # (B, C)    pass 2
    out = x * gate[:, :, None, None]                             # (B, C, H, W) pass 3
    if identity is not None:
        out = out + identity
    return (torch.relu(out) if relu else out), gate, mean


def reference_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, gate: torch.Tensor,
                       mean: torch.Tensor, out: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """What :func:`eca_backward` computes, in PyTorch: (dx, dweight, grad * [out > 0], or None without ``out``)."""
    P = x.shape[2] * x.shape[3]
    taps = weight.reshape(-1)
    grad_pre = grad if out is None else torch.where(out <= 0, torch.zeros_like(grad), grad)  # pass A
    grad_gate = (grad_pre * x).sum(dim=(2, 3))                   # (B, C)    pass A's reduction
    grad_logit = grad_gate * gate * (1 - gate)                   # (B, C)    pass B: sigmoid'
    grad_mean = channel_conv(grad_logit, taps.flip(0))          # (B, C)    the conv's transpose
    grad_weight = channel_conv_weight_grad(grad_logit, mean, taps.numel()).reshape(weight.shape)
    grad_x = grad_pre * gate[:, :, None, None] + (grad_mean / P)[:, :, None, None]  # pass C
    return grad_x, grad_weight, (grad_pre if out is not None else None)
