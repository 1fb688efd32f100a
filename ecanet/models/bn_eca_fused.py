"""A block's training tail, BatchNorm + ECA + add + ReLU, as Triton kernels: torch.compile launches them itself,
eager mode directly.

``relu(ECA(BN(x)) + identity)`` with BatchNorm on batch statistics (Wang et al., CVPR 2020, Eq. 2 and 9 after
BatchNorm); the add and the ReLU are each optional (MobileNetV2's block ends with ``ECA(BN(x)) + x``).
x is (B, C, H, W) with P = H * W pixels per sample and channel and N = B * P per channel.

Why these kernels exist next to the decomposed form (:func:`~ecanet.models.eca_module.bn_eca_tail_decomposed`):
from that form Inductor makes the same big passes as BatchNorm's own, but splits the small (B, C) and (C,)
arithmetic between them into several kernels of its own. A compiled training step of ECA-MobileNetV2 is
bound by the host launching kernels one by one (docs/design/fused_eca.md), so each extra launch costs time.
Here the tail is three kernels each way and, under torch.compile, one for the running statistics, fewer than
Inductor makes of BatchNorm alone. They are ``torch.library`` ``triton_op``s: Inductor sees the Triton kernels
inside and launches them from its own generated code, with no Python dispatch of the op on each call. In eager
training (implementation ``"fused"``) the same passes run under an ``autograd.Function`` of their own that
launches each kernel straight to its compiled code (:class:`_DirectLaunches`): they read and write the tail's
activations fewer times than cuDNN's BatchNorm followed by the fused ECA kernels (docs/design/fused_eca.md).
An eager step is bound by the host there too, so its finalize kernel also updates the running statistics
(the functional op cannot: it returns the batch statistics for a kernel of their own), and its small float32
buffers are rows of one allocation each (:func:`_float32_buffers`).

Every statistic is of ``xs = x - pivot[c]``, the pivot being each channel's mean over the first tile of the
first sample: xs's mean is then small against its spread, so E[xs^2] - E[xs]^2 does not cancel in float32,
and a channel whose mean is large against its spread (mean 1000, spread 0.01) keeps its spread's precision.

Forward::

    1. statistics  grid (channel blocks, H*W splits, B)      reads x
         per (b, split, c): sums of xs and xs^2 over the split's pixels
    2. finalize    grid (channel blocks,), loops over B      reads the (B, splits, C) partials
         mu = mean of xs, var = mean of xs^2 - mu^2, r = (var + eps)^-1/2                    (C,)
         batch mean pivot + mu, unbiased variance: in eager mode the running statistics' update here, as
         nn.BatchNorm2d's (momentum); the op returns them, for a kernel of their own under torch.compile
         xhat_mean[b, c] = r (mean over p of xs - mu)        each sample's mean of x-hat       (B, C)
         pooled = gamma xhat_mean + beta                      Eq. (2): GAP of BN(x)             (B, C)
    3. apply       grid (H*W tiles, channel blocks, B)       reads x [and identity], writes out
         g = sigmoid(C1D_k(pooled))                           Eq. (9), per program
         out = act((xs - mu) r gamma g + beta g [+ identity])

Backward, from G' = dL/dout [* (out > 0)], which is also dL/didentity::

    A. reduce      reads grad [and out, writing G'] and x: per (b, split, c) sums of G' and G' x-hat
    B. gate        grid (channel blocks,), loops over B
         dS = sum_p G' x-hat, dO = sum_p G';  dz = (gamma dS + beta dO) g (1 - g)          (B, C)
         dpooled = C1D_k^T(dz);  dw[j] = sum_{b,c} dz[b, c] pooled[b, c + j - pad]
         dgamma = sum_b (g dS + dpooled xhat_mean);  dbeta = sum_b (g dO + dpooled)            (C,)
    C. apply       reads G' and x, writes dx
         dx = gamma r (G' g + dpooled / P - dbeta / N - x-hat dgamma / N)

The last line is BatchNorm's own backward for the gradient that reaches BN(x), G' g + dpooled / P: BN(x)
feeds the rescale and, through the mean, the gate. Arithmetic is float32; x and identity may be float16,
bfloat16 or float32, contiguous or channels_last. Like the other kernels the reductions are deterministic
(partial sums, no atomics) and nothing is autotuned.
"""
import functools
import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import nn
from torch.autograd.function import once_differentiable
from torch.library import triton_op, wrap_triton

from .eca_fused import (INTERPRETER, NUM_WARPS, PLAN_CACHE_SIZE, POINTER_ALIGNMENT, _dense, _device_of, _Launch,
                        _pointwise_grid, _reduction_plan, _tile, add_relu_store, batch_norm_fits, forward_ad_active,
                        memory_format, reduction_program, relu_masked_grad, supports)

# The finalize and gate kernels read (BLOCK_B, BLOCK_S, BLOCK_C) tiles of the (B, splits, C) partial sums,
# one program per BLOCK_C channels looping over the batch. Few channels a program keep enough programs
# running: 4 to 80 for ECA-MobileNetV2's 16 to 320 channels, where 32 channels a program would leave most of
# the GPU idle on the narrow layers (docs/design/fused_eca.md, "Launch sizes").
FINALIZE_BLOCK_C = 4           # channels per program
FINALIZE_TILE_ELEMENTS = 8192  # elements of one such tile
RUNNING_STATS_BLOCK_C = 1024   # channels per program of the running statistics' update
# Rows of the passes' own float32 buffers (:func:`_float32_buffers`) start on multiples of this many elements,
# 16 bytes, so that Triton compiles their pointers as aligned, as it does a new allocation's.
ROW_ALIGNMENT = POINTER_ALIGNMENT // 4


@triton.jit
def _store_partials(first_ptr, second_ptr, first_acc, second_acc, b, split, c, C):
    """Stores a reduction program's two (BLOCK_P, BLOCK_C) accumulators, summed over pixels, at
    [b, split, c] of the (B, splits, C) partial sums."""
    row = (b.to(tl.int64) * tl.num_programs(1) + split) * C
    tl.store(first_ptr + row + c, tl.sum(first_acc, axis=0), mask=c < C)
    tl.store(second_ptr + row + c, tl.sum(second_acc, axis=0), mask=c < C)


@triton.jit
def _bn_stats_kernel(x_ptr, pivot_ptr, sum_part_ptr, square_part_ptr, B, C, P, tiles_per_split,
                     CHANNELS_LAST: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Forward 1: per (b, split, c) the sums of xs = x - pivot and of xs^2 over the split's pixels.

    The pivot is each channel's mean over the first tile of the first sample: every program computes it the
    same way, and the first split of the first sample stores it for the other passes."""
    c_start, split, b = reduction_program(B, BLOCK_C)
    c = c_start + tl.arange(0, BLOCK_C)
    offsets, mask = _tile(0, c_start, C, P, CHANNELS_LAST, BLOCK_P, BLOCK_C)
    first = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    pivot = tl.sum(first, axis=0) / tl.minimum(P, BLOCK_P).to(tl.float32)          # (BLOCK_C,)
    tl.store(pivot_ptr + c, pivot, mask=(c < C) & (split == 0) & (b == 0))
    sample = b.to(tl.int64) * C * P
    acc_sum = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    acc_square = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for i in range(tiles_per_split):
        p_start = (split * tiles_per_split + i) * BLOCK_P
        offsets, mask = _tile(p_start, c_start, C, P, CHANNELS_LAST, BLOCK_P, BLOCK_C)
        xs = tl.where(mask, tl.load(x_ptr + sample + offsets, mask=mask, other=0.0).to(tl.float32)
                      - pivot[None, :], 0.0)            # (BLOCK_P, BLOCK_C)
        acc_sum += xs
        acc_square += xs * xs
    _store_partials(sum_part_ptr, square_part_ptr, acc_sum, acc_square, b, split, c, C)


@triton.jit
def _partial_tile(b, s, c, B, C, num_splits):
    """Offsets and mask of the (BLOCK_B, BLOCK_S, BLOCK_C) tile of a (B, splits, C) array at samples b, splits
    s and channels c (channels outside [0, C) masked: the 1-D convolution's zero padding)."""
    offsets = (b[:, None, None].to(tl.int64) * num_splits + s[None, :, None]) * C + c[None, None, :]
    mask = (b < B)[:, None, None] & (s < num_splits)[None, :, None] & ((c >= 0) & (c < C))[None, None, :]
    return offsets, mask


@triton.jit
def _update_running(running_mean_ptr, running_var_ptr, batches_ptr, batch_mean, batch_var, c, C, momentum):
    """BatchNorm's running statistics at channels c after a batch, as nn.BatchNorm2d with a momentum:
    r += momentum (batch - r), batch_var unbiased. Program 0 counts the batch: every program of a launch owns
    channels of its own, and the count goes up once a launch."""
    running_mean = tl.load(running_mean_ptr + c, mask=c < C, other=0.0).to(tl.float32)
    running_var = tl.load(running_var_ptr + c, mask=c < C, other=0.0).to(tl.float32)
    tl.store(running_mean_ptr + c, (running_mean + momentum * (batch_mean - running_mean))
             .to(running_mean_ptr.dtype.element_ty), mask=c < C)
    tl.store(running_var_ptr + c, (running_var + momentum * (batch_var - running_var))
             .to(running_var_ptr.dtype.element_ty), mask=c < C)
    if tl.program_id(0) == 0:
        tl.store(batches_ptr, tl.load(batches_ptr) + 1)


@triton.jit
def _bn_finalize_kernel(sum_part_ptr, square_part_ptr, pivot_ptr, gamma_ptr, beta_ptr, centre_ptr, rstd_ptr,
                        xhat_mean_ptr, pooled_ptr, batch_mean_ptr, batch_var_ptr, running_mean_ptr, running_var_ptr,
                        batches_ptr, B, C, P, num_splits, eps, momentum, UPDATE_RUNNING: tl.constexpr,
                        BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr):
    """Forward 2: BatchNorm's batch statistics, and ECA's pooled input (Eq. 2). The batch mean and unbiased
    variance either update the running statistics here (UPDATE_RUNNING, eager mode: no launch of
    :func:`_running_stats_kernel`, no buffers for them) or are stored for the caller (the functional op); the
    pointers of the other choice are never touched."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    s = tl.arange(0, BLOCK_S)
    total = B * 1.0 * P                                 # N; B or P may come as a plain int
    acc_sum = tl.zeros((BLOCK_C,), dtype=tl.float32)
    acc_square = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for b_start in range(0, B, BLOCK_B):                 # the splits' sums; each sample's sum kept for pass 2
        b = b_start + tl.arange(0, BLOCK_B)
        offsets, mask = _partial_tile(b, s, c, B, C, num_splits)
        sample_sum = tl.sum(tl.load(sum_part_ptr + offsets, mask=mask, other=0.0), axis=1)  # (BLOCK_B, BLOCK_C)
        acc_sum += tl.sum(sample_sum, axis=0)
        acc_square += tl.sum(tl.sum(tl.load(square_part_ptr + offsets, mask=mask, other=0.0), axis=1), axis=0)
        tl.store(xhat_mean_ptr + b[:, None] * C + c[None, :], sample_sum,
                 mask=(b < B)[:, None] & (c < C)[None, :])
    mu = acc_sum / total                                 # (BLOCK_C,) mean of xs
    var = tl.maximum(acc_square / total - mu * mu, 0.0)  # the pivot keeps xs's mean small: no cancellation
    rstd = 1.0 / tl.sqrt(var + eps)
    gamma = tl.load(gamma_ptr + c, mask=c < C, other=0.0).to(tl.float32)
    beta = tl.load(beta_ptr + c, mask=c < C, other=0.0).to(tl.float32)
    tl.debug_barrier()                                   # pass 2 reads what other threads stored in pass 1
    for b_start in range(0, B, BLOCK_B):                 # pass 2: x-hat's sample means and pooled BN(x)
        b = b_start + tl.arange(0, BLOCK_B)
        index = b[:, None] * C + c[None, :]
        out_mask = (b < B)[:, None] & (c < C)[None, :]
        xhat_mean = (tl.load(xhat_mean_ptr + index, mask=out_mask, other=0.0) / P - mu[None, :]) * rstd[None, :]
        tl.store(xhat_mean_ptr + index, xhat_mean, mask=out_mask)
        tl.store(pooled_ptr + index, gamma[None, :] * xhat_mean + beta[None, :], mask=out_mask)
    tl.store(centre_ptr + c, mu, mask=c < C)
    tl.store(rstd_ptr + c, rstd, mask=c < C)
    batch_mean = tl.load(pivot_ptr + c, mask=c < C, other=0.0) + mu
    batch_var = var * (total / tl.maximum(total - 1.0, 1.0))   # unbiased, as nn.BatchNorm2d's running variance
    if UPDATE_RUNNING:
        _update_running(running_mean_ptr, running_var_ptr, batches_ptr, batch_mean, batch_var, c, C, momentum)
    else:
        tl.store(batch_mean_ptr + c, batch_mean, mask=c < C)
        tl.store(batch_var_ptr + c, batch_var, mask=c < C)


@triton.jit
def _running_stats_kernel(running_mean_ptr, running_var_ptr, batches_ptr, batch_mean_ptr, batch_var_ptr, C, momentum,
                          BLOCK_C: tl.constexpr):
    """BatchNorm's running statistics after a batch stored by the finalize kernel (the functional op's path,
    under torch.compile), as nn.BatchNorm2d with a momentum: r += momentum (batch - r)."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    batch_mean = tl.load(batch_mean_ptr + c, mask=c < C, other=0.0)
    batch_var = tl.load(batch_var_ptr + c, mask=c < C, other=0.0)
    _update_running(running_mean_ptr, running_var_ptr, batches_ptr, batch_mean, batch_var, c, C, momentum)


@triton.jit
def _bn_eca_apply_kernel(x_ptr, identity_ptr, out_ptr, gate_ptr, pivot_ptr, centre_ptr, rstd_ptr, gamma_ptr, beta_ptr,
                         pooled_ptr, weight_ptr, C, P,
                         HAS_IDENTITY: tl.constexpr, RELU: tl.constexpr, K: tl.constexpr, PAD: tl.constexpr,
                         CHANNELS_LAST: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Forward 3: the gate from the pooled BN(x) (Eq. 9), then out = act(BN(x) g [+ identity])."""
    p_start = tl.program_id(0) * BLOCK_P
    c_start = tl.program_id(1) * BLOCK_C
    b = tl.program_id(2)
    c = c_start + tl.arange(0, BLOCK_C)
    z = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for j in tl.static_range(K):                         # C1D_k with zero padding
        src = c + (j - PAD)
        z += tl.load(weight_ptr + j).to(tl.float32) * tl.load(pooled_ptr + b * C + src,
                                                               mask=(src >= 0) & (src < C), other=0.0)
    gate = tl.sigmoid(z)                                 # (BLOCK_C,)
    tl.store(gate_ptr + b * C + c, gate, mask=(c < C) & (tl.program_id(0) == 0))
    gamma = tl.load(gamma_ptr + c, mask=c < C, other=0.0).to(tl.float32)
    beta = tl.load(beta_ptr + c, mask=c < C, other=0.0).to(tl.float32)
    scale = gamma * tl.load(rstd_ptr + c, mask=c < C, other=0.0) * gate
    centre = tl.load(centre_ptr + c, mask=c < C, other=0.0)
    pivot = tl.load(pivot_ptr + c, mask=c < C, other=0.0)
    sample = b.to(tl.int64) * C * P
    offsets, mask = _tile(p_start, c_start, C, P, CHANNELS_LAST, BLOCK_P, BLOCK_C)
    xs = tl.load(x_ptr + sample + offsets, mask=mask, other=0.0).to(tl.float32) - pivot[None, :]
    y = (xs - centre[None, :]) * scale[None, :] + (beta * gate)[None, :]
    add_relu_store(y, identity_ptr, out_ptr, sample + offsets, mask, HAS_IDENTITY, RELU)


@triton.jit
def _bn_eca_backward_reduce_kernel(grad_ptr, out_ptr, x_ptr, grad_pre_ptr, pivot_ptr, centre_ptr, rstd_ptr,
                                   sum_part_ptr, dot_part_ptr, B, C, P, tiles_per_split,
                                   RELU: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK_P: tl.constexpr,
                                   BLOCK_C: tl.constexpr):
    """Backward A: G' = grad [* (out > 0)] (stored when RELU) and per (b, split, c) sums of G' and G' x-hat."""
    c_start, split, b = reduction_program(B, BLOCK_C)
    c = c_start + tl.arange(0, BLOCK_C)
    pivot = tl.load(pivot_ptr + c, mask=c < C, other=0.0)
    centre = tl.load(centre_ptr + c, mask=c < C, other=0.0)
    rstd = tl.load(rstd_ptr + c, mask=c < C, other=0.0)
    sample = b.to(tl.int64) * C * P
    acc_grad = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    acc_dot = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for i in range(tiles_per_split):
        p_start = (split * tiles_per_split + i) * BLOCK_P
        offsets, mask = _tile(p_start, c_start, C, P, CHANNELS_LAST, BLOCK_P, BLOCK_C)
        grad = relu_masked_grad(grad_ptr, out_ptr, grad_pre_ptr, sample + offsets, mask, RELU)
        xs = tl.load(x_ptr + sample + offsets, mask=mask, other=0.0).to(tl.float32) - pivot[None, :]
        acc_grad += grad
        acc_dot += grad * ((xs - centre[None, :]) * rstd[None, :])
    _store_partials(sum_part_ptr, dot_part_ptr, acc_grad, acc_dot, b, split, c, C)


@triton.jit
def _logit_grad(sum_part_ptr, dot_part_ptr, gate_ptr, gamma_ptr, beta_ptr, b, s, c, B, C, num_splits):
    """dL/dz at samples b and channels c, (BLOCK_B, BLOCK_C), 0 outside [0, C); with dS and dO there.

    dS = sum_p G' x-hat and dO = sum_p G' add up the splits' partial sums; dL/dg = gamma dS + beta dO, and
    dz = dL/dg g (1 - g) through the sigmoid of Eq. (9)."""
    offsets, mask = _partial_tile(b, s, c, B, C, num_splits)
    grad_offset = tl.sum(tl.load(sum_part_ptr + offsets, mask=mask, other=0.0), axis=1)    # (BLOCK_B, BLOCK_C)
    grad_scale = tl.sum(tl.load(dot_part_ptr + offsets, mask=mask, other=0.0), axis=1)
    valid = (c >= 0) & (c < C)
    gamma = tl.load(gamma_ptr + c, mask=valid, other=0.0).to(tl.float32)
    beta = tl.load(beta_ptr + c, mask=valid, other=0.0).to(tl.float32)
    gate = tl.load(gate_ptr + b[:, None] * C + c[None, :], mask=(b < B)[:, None] & valid[None, :], other=0.0)
    logit_grad = (gamma[None, :] * grad_scale + beta[None, :] * grad_offset) * gate * (1.0 - gate)
    return logit_grad, grad_scale, grad_offset, gate


@triton.jit
def _bn_eca_gate_backward_kernel(sum_part_ptr, dot_part_ptr, gate_ptr, pooled_ptr, xhat_mean_ptr, gamma_ptr,
                                 beta_ptr, weight_ptr, grad_pooled_ptr, grad_gamma_ptr, grad_beta_ptr,
                                 weight_partial_ptr, B, C, num_splits,
                                 K: tl.constexpr, PAD: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_B: tl.constexpr,
                                 BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr):
    """Backward B: through the gate (Eq. 9) to dpooled and dw, and BatchNorm's dgamma and dbeta."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    s = tl.arange(0, BLOCK_S)
    taps = tl.arange(0, BLOCK_K)
    acc_gamma = tl.zeros((BLOCK_C,), dtype=tl.float32)
    acc_beta = tl.zeros((BLOCK_C,), dtype=tl.float32)
    acc_weight = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for b_start in range(0, B, BLOCK_B):
        b = b_start + tl.arange(0, BLOCK_B)
        out_mask = (b < B)[:, None] & (c < C)[None, :]
        logit_grad, grad_scale, grad_offset, gate = _logit_grad(sum_part_ptr, dot_part_ptr, gate_ptr, gamma_ptr,
                                                                beta_ptr, b, s, c, B, C, num_splits)
        grad_pooled = tl.zeros((BLOCK_B, BLOCK_C), dtype=tl.float32)
        for j in tl.static_range(K):
            # dpooled[c] = sum_j w[j] dz[c - j + PAD]: tap j of output channel c - (j - PAD) read channel c.
            if j == PAD:
                neighbour = logit_grad
            else:
                neighbour = _logit_grad(sum_part_ptr, dot_part_ptr, gate_ptr, gamma_ptr, beta_ptr, b, s,
                                        c - (j - PAD), B, C, num_splits)[0]
            grad_pooled += tl.load(weight_ptr + j).to(tl.float32) * neighbour
            # dw[j] = sum dz[b, c] pooled[b, c + j - PAD]
            src = c + (j - PAD)
            pooled = tl.load(pooled_ptr + b[:, None] * C + src[None, :],
                             mask=(b < B)[:, None] & ((src >= 0) & (src < C))[None, :], other=0.0)
            acc_weight += tl.where(taps == j, tl.sum(tl.sum(logit_grad * pooled, axis=1), axis=0), 0.0)
        tl.store(grad_pooled_ptr + b[:, None] * C + c[None, :], grad_pooled, mask=out_mask)
        xhat_mean = tl.load(xhat_mean_ptr + b[:, None] * C + c[None, :], mask=out_mask, other=0.0)
        acc_gamma += tl.sum(tl.where(out_mask, gate * grad_scale + grad_pooled * xhat_mean, 0.0), axis=0)
        acc_beta += tl.sum(tl.where(out_mask, gate * grad_offset + grad_pooled, 0.0), axis=0)
    tl.store(grad_gamma_ptr + c, acc_gamma.to(grad_gamma_ptr.dtype.element_ty), mask=c < C)
    tl.store(grad_beta_ptr + c, acc_beta.to(grad_beta_ptr.dtype.element_ty), mask=c < C)
    tl.store(weight_partial_ptr + tl.program_id(0) * K + taps, acc_weight, mask=taps < K)


@triton.jit
def _bn_eca_backward_apply_kernel(grad_pre_ptr, x_ptr, grad_x_ptr, gate_ptr, grad_pooled_ptr, pivot_ptr, centre_ptr,
                                  rstd_ptr, gamma_ptr, grad_gamma_ptr, grad_beta_ptr, weight_partial_ptr,
                                  grad_weight_ptr, B, C, P, weight_rows,
                                  K: tl.constexpr, BLOCK_K: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                                  BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Backward C: dx = gamma r (G' g + dpooled / P - dbeta / N - x-hat dgamma / N); the first program also adds
    up the gate kernel's partial sums of dw."""
    p_start = tl.program_id(0) * BLOCK_P
    c_start = tl.program_id(1) * BLOCK_C
    b = tl.program_id(2)
    if (tl.program_id(0) == 0) & (tl.program_id(1) == 0) & (tl.program_id(2) == 0):
        taps = tl.arange(0, BLOCK_K)
        grad_weight = tl.zeros((BLOCK_K,), dtype=tl.float32)
        for row in range(weight_rows):
            grad_weight += tl.load(weight_partial_ptr + row * K + taps, mask=taps < K, other=0.0)
        tl.store(grad_weight_ptr + taps, grad_weight.to(grad_weight_ptr.dtype.element_ty), mask=taps < K)
    c = c_start + tl.arange(0, BLOCK_C)
    total = B * 1.0 * P                                 # N; B or P may come as a plain int
    rstd = tl.load(rstd_ptr + c, mask=c < C, other=0.0)
    norm = tl.load(gamma_ptr + c, mask=c < C, other=0.0).to(tl.float32) * rstd       # gamma r
    gate = tl.load(gate_ptr + b * C + c, mask=c < C, other=0.0)
    grad_pooled = tl.load(grad_pooled_ptr + b * C + c, mask=c < C, other=0.0)
    grad_gamma = tl.load(grad_gamma_ptr + c, mask=c < C, other=0.0).to(tl.float32)
    grad_beta = tl.load(grad_beta_ptr + c, mask=c < C, other=0.0).to(tl.float32)
    centre = tl.load(centre_ptr + c, mask=c < C, other=0.0)
    pivot = tl.load(pivot_ptr + c, mask=c < C, other=0.0)
    per_channel = norm * (grad_pooled / P - grad_beta / total)                       # (BLOCK_C,)
    xhat_factor = -norm * rstd * grad_gamma / total
    sample = b.to(tl.int64) * C * P
    offsets, mask = _tile(p_start, c_start, C, P, CHANNELS_LAST, BLOCK_P, BLOCK_C)
    grad = tl.load(grad_pre_ptr + sample + offsets, mask=mask, other=0.0).to(tl.float32)
    xs = tl.load(x_ptr + sample + offsets, mask=mask, other=0.0).to(tl.float32) - pivot[None, :]
    grad_x = (grad * (norm * gate)[None, :] + per_channel[None, :]
              + (xs - centre[None, :]) * xhat_factor[None, :])
    tl.store(grad_x_ptr + sample + offsets, grad_x.to(grad_x_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------------
# Launch sizes
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _TailPlan:
    """Grids and block sizes of the tail's kernels for one shape and layout."""

    reduce_grid: tuple[int, int, int]
    pointwise_grid: tuple[int, int, int]
    splits: int
    tiles_per_split: int
    tiling_meta: dict
    finalize_grid: tuple[int]
    finalize_meta: dict


def _empty_as(x: torch.Tensor) -> torch.Tensor:
    """A new tensor with x's shape, dtype and strides; x is dense (:func:`~ecanet.models.eca_fused._dense`).

    By strides, not ``memory_format``: Inductor's lowering of ``empty(memory_format=channels_last)`` makes a
    contiguous buffer, and giving the kernel the layout it was traced with then costs a kernel that fills a
    new one."""
    return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device)


@functools.lru_cache(maxsize=PLAN_CACHE_SIZE)
def _rows_layout(count: int, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Size and strides of ``count`` dense rows of ``shape`` in one allocation, each row starting on a multiple
    of ROW_ALIGNMENT elements."""
    strides = tuple(math.prod(shape[i + 1:]) for i in range(len(shape)))
    row = -(-math.prod(shape) // ROW_ALIGNMENT) * ROW_ALIGNMENT
    return (count, *shape), (row, *strides)


def _float32_buffers(count: int, shape: tuple[int, ...], device: torch.device,
                     direct: bool) -> tuple[torch.Tensor, ...]:
    """``count`` new dense float32 tensors of ``shape``, for the passes' own use.

    Launched directly (eager mode, whose steps wait on the host) they are the rows of one allocation: one
    ``empty_strided`` and one ``unbind`` cost the host about as much as two ``torch.empty`` calls, so this pays
    from three tensors on (two thirds of the host time of three). Each row starts 16-byte aligned
    (ROW_ALIGNMENT), as a tensor of its own would: the direct launches take the alignment of these buffers as
    fixed (:class:`_DirectLaunches`). Traced, they stay tensors of their own: the ops' outputs must not alias
    one another."""
    if not direct:
        return tuple(torch.empty(shape, device=device, dtype=torch.float32) for _ in range(count))
    size, strides = _rows_layout(count, shape)
    return torch.empty_strided(size, strides, device=device, dtype=torch.float32).unbind(0)


@functools.lru_cache(maxsize=PLAN_CACHE_SIZE)
def _tail_plan(B: int, C: int, P: int, channels_last: bool, device: torch.device) -> _TailPlan:
    r = _reduction_plan(B, C, P, channels_last, device)
    block_c = min(triton.next_power_of_2(C), FINALIZE_BLOCK_C)
    block_s = triton.next_power_of_2(r.splits)
    block_b = max(1, min(triton.next_power_of_2(B), FINALIZE_TILE_ELEMENTS // (block_s * block_c)))
    return _TailPlan(r.grid, _pointwise_grid(B, C, P, r.tiling), r.splits, r.tiles_per_split,
                     r.tiling.meta(), (triton.cdiv(C, block_c),),
                     {"BLOCK_B": block_b, "BLOCK_S": block_s, "BLOCK_C": block_c})


def _plan_for(x: torch.Tensor) -> _TailPlan:
    B, C, H, W = x.shape
    return _tail_plan(B, C, H * W, memory_format(x) == torch.channels_last, x.device)


# ----------------------------------------------------------------------------------------------------
# The passes, launched the way torch.compile traces them or directly in eager mode
# ----------------------------------------------------------------------------------------------------
_Tensors9 = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                  torch.Tensor, torch.Tensor]
_Tensors5 = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
# (kernel, grid, tensors, scalars, constexprs) -> None; each kernel takes its tensors, then its scalars, then
# its constexprs.
Launcher = Callable[[triton.JITFunction, tuple, tuple, tuple, dict], None]


def _traced_launch(kernel, grid: tuple, tensors: tuple, scalars: tuple, constexprs: dict) -> None:
    """A launch that torch.compile sees inside the ops, and launches from its own generated code."""
    wrap_triton(kernel)[grid](*tensors, *scalars, num_warps=NUM_WARPS, **constexprs)


class _DirectLaunches:
    """The eager launches of one call signature (:func:`_direct_launcher`), which fixes every kernel's grid,
    scalars and constexprs and the dtype and alignment of every tensor the caller passes (the passes' own
    buffers are new allocations, or rows of one that start 16-byte aligned, :func:`_float32_buffers`): each
    kernel goes through Triton's JIT once, then straight to its compiled kernel
    (:class:`~ecanet.models.eca_fused._Launch`, which says why). Launches go to the current CUDA device, which
    the caller makes x's."""

    def __init__(self) -> None:
        self._launches: dict = {}

    def __call__(self, kernel, grid: tuple, tensors: tuple, scalars: tuple, constexprs: dict) -> None:
        launch = self._launches.get(kernel)
        if launch is None:
            launch = self._launches[kernel] = _Launch(kernel, grid, scalars, constexprs)
        launch(*tensors)


@functools.lru_cache(maxsize=PLAN_CACHE_SIZE)
def _direct_launches(_signature: tuple) -> _DirectLaunches:
    return _DirectLaunches()


def _direct_launcher(tensors: tuple, scalars: tuple) -> _DirectLaunches:
    """The direct launches of a call on ``tensors`` (dense, None where absent) and ``scalars``: keyed by each
    tensor's shape, strides, dtype and 16-byte alignment, the scalars with their types (Triton compiles an int
    ``momentum=1`` and a float ``1.0`` differently, which compare equal) and the device. The shapes fix the
    kernels' integer arguments, the grids and the plan. Built in one pass over the tensors: the key is made on
    every eager call."""
    return _direct_launches((*[None if t is None else (t.shape, t.stride(), t.dtype,
                                                       t.data_ptr() % POINTER_ALIGNMENT == 0) for t in tensors],
                             *[(type(s), s) for s in scalars], tensors[0].device))


def _forward_passes(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, weight: torch.Tensor,
                    identity: Optional[torch.Tensor], eps: float, relu: bool, direct: bool,
                    running: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None,
                    momentum: float = 0.0) -> _Tensors9:
    """Forward passes 1-3 (module docstring); :func:`bn_eca_train_forward` says what they return. ``direct``
    launches the kernels directly (eager mode), otherwise as torch.compile traces them. ``running``, BatchNorm's
    (running_mean, running_var, num_batches_tracked), has the finalize kernel update them with ``momentum``
    (eager mode: the ops are functional); the batch statistics are then neither made nor returned (None)."""
    layout = memory_format(x)
    x, identity = _dense(x, layout), _dense(identity, layout)
    update_running = running is not None
    launch: Launcher = (_direct_launcher((x, identity, gamma, beta, weight, *(running or ())), (eps, relu, momentum))
                        if direct else _traced_launch)
    B, C, H, W = x.shape
    P = H * W
    plan = _plan_for(x)
    k = weight.numel()
    partial = dict(device=x.device, dtype=torch.float32)
    # Two tensors cost the host as much as two allocations as they would as rows of one (_float32_buffers).
    sum_part, square_part = torch.empty((B, plan.splits, C), **partial), torch.empty((B, plan.splits, C), **partial)
    pivot, centre, rstd, *batch_stats = _float32_buffers(3 if update_running else 5, (C,), x.device, direct)
    xhat_mean, pooled, gate = _float32_buffers(3, (B, C), x.device, direct)               # (B, C) each
    out = _empty_as(x)
    launch(_bn_stats_kernel, plan.reduce_grid, (x, pivot, sum_part, square_part), (B, C, P, plan.tiles_per_split),
           plan.tiling_meta)
    # The kernel touches either the batch statistics or the running ones (UPDATE_RUNNING): pivot fills the
    # slots of the others.
    statistics = (pivot, pivot, *running) if update_running else (*batch_stats, pivot, pivot, pivot)
    launch(_bn_finalize_kernel, plan.finalize_grid,
           (sum_part, square_part, pivot, gamma, beta, centre, rstd, xhat_mean, pooled, *statistics),
           (B, C, P, plan.splits, eps, momentum), {"UPDATE_RUNNING": update_running, **plan.finalize_meta})
    # An absent identity is never read (HAS_IDENTITY is off); x fills its slot.
    launch(_bn_eca_apply_kernel, plan.pointwise_grid,
           (x, x if identity is None else identity, out, gate, pivot, centre, rstd, gamma, beta, pooled, weight),
           (C, P), {"HAS_IDENTITY": identity is not None, "RELU": relu, "K": k, "PAD": (k - 1) // 2,
                    **plan.tiling_meta})
    batch_mean, batch_var = batch_stats or (None, None)
    return out, batch_mean, batch_var, pivot, centre, rstd, xhat_mean, pooled, gate


def _backward_passes(grad: torch.Tensor, x: torch.Tensor, out: Optional[torch.Tensor], gamma: torch.Tensor,
                     beta: torch.Tensor, weight: torch.Tensor, pivot: torch.Tensor, centre: torch.Tensor,
                     rstd: torch.Tensor, xhat_mean: torch.Tensor, pooled: torch.Tensor, gate: torch.Tensor,
                     direct: bool) -> _Tensors5:
    """Backward passes A-C (module docstring); :func:`bn_eca_train_backward` says what they return. The
    statistics come from :func:`_forward_passes`; ``direct`` as there."""
    layout = memory_format(x)
    grad, out, x = _dense(grad, layout), _dense(out, layout), _dense(x, layout)
    # (C,) and (B, C) each, as the forward made them unless saved-tensor hooks hand back others: keyed too.
    pivot, centre, rstd, xhat_mean, pooled, gate = (t.contiguous() for t in (pivot, centre, rstd, xhat_mean, pooled,
                                                                              gate))
    launch: Launcher = (_direct_launcher((grad, x, out, gamma, beta, weight, pivot, centre, rstd, xhat_mean, pooled,
                                          gate), ()) if direct else _traced_launch)
    B, C, H, W = x.shape
    P = H * W
    plan = _plan_for(x)
    k = weight.numel()
    relu = out is not None
    partial = dict(device=x.device, dtype=torch.float32)
    sum_part, dot_part = torch.empty((B, plan.splits, C), **partial), torch.empty((B, plan.splits, C), **partial)
    grad_pre = _empty_as(x) if relu else grad
    launch(_bn_eca_backward_reduce_kernel, plan.reduce_grid,
           (grad, out if relu else grad, x, grad_pre, pivot, centre, rstd, sum_part, dot_part),
           (B, C, P, plan.tiles_per_split), {"RELU": relu, **plan.tiling_meta})
    grad_pooled = torch.empty((B, C), **partial)
    # Tensors of their own: autograd may keep them as the parameters' .grad.
    grad_gamma, grad_beta = torch.empty_like(gamma), torch.empty_like(beta)
    weight_partial = torch.empty((plan.finalize_grid[0], k), **partial)
    block_k = 1 << (k - 1).bit_length()   # triton.next_power_of_2(k), a constexpr function slow to call on the host
    launch(_bn_eca_gate_backward_kernel, plan.finalize_grid,
           (sum_part, dot_part, gate, pooled, xhat_mean, gamma, beta, weight, grad_pooled, grad_gamma, grad_beta,
            weight_partial), (B, C, plan.splits),
           {"K": k, "PAD": (k - 1) // 2, "BLOCK_K": block_k, **plan.finalize_meta})
    grad_x, grad_weight = _empty_as(x), torch.empty_like(weight)
    launch(_bn_eca_backward_apply_kernel, plan.pointwise_grid,
           (grad_pre, x, grad_x, gate, grad_pooled, pivot, centre, rstd, gamma, grad_gamma, grad_beta, weight_partial,
            grad_weight), (B, C, P, plan.finalize_grid[0]), {"K": k, "BLOCK_K": block_k, **plan.tiling_meta})
    return grad_x, grad_gamma, grad_beta, grad_weight, grad_pre if relu else x.new_empty(0)


def _update_running_stats(running_mean: torch.Tensor, running_var: torch.Tensor, num_batches_tracked: torch.Tensor,
                          batch_mean: torch.Tensor, batch_var: torch.Tensor, momentum: float) -> None:
    """``nn.BatchNorm2d``'s update after a batch (``batch_var`` unbiased), in one kernel, as torch.compile traces
    it: the functional forward op returns the batch statistics. (Eager mode has the finalize kernel do it.)"""
    C = running_mean.numel()
    block_c = min(triton.next_power_of_2(C), RUNNING_STATS_BLOCK_C)
    _traced_launch(_running_stats_kernel, (triton.cdiv(C, block_c),),
                   (running_mean, running_var, num_batches_tracked, batch_mean, batch_var), (C, momentum),
                   {"BLOCK_C": block_c})


# ----------------------------------------------------------------------------------------------------
# The ops, for torch.compile: ecanet::bn_eca_train_forward and ecanet::bn_eca_train_backward
# ----------------------------------------------------------------------------------------------------
# The ops' schemas are read off these annotations, which must therefore be real types (this module does not
# import ``annotations`` from __future__; torch 2.11's triton_op takes no ``schema`` argument).
@triton_op("ecanet::bn_eca_train_forward", mutates_args=())
def bn_eca_train_forward(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, weight: torch.Tensor,
                         identity: Optional[torch.Tensor], eps: float, relu: bool) -> _Tensors9:
    """(out, batch_mean, unbiased batch_var, pivot, centre, rstd, xhat_mean, pooled, gate): forward passes 1-3
    (module docstring). ``identity`` must have x's dtype and layout. The op is functional, as ``torch.library``
    needs for an autograd formula: the caller updates the running statistics from the batch's."""
    return _forward_passes(x, gamma, beta, weight, identity, eps, relu, direct=False)


@triton_op("ecanet::bn_eca_train_backward", mutates_args=())
def bn_eca_train_backward(grad: torch.Tensor, x: torch.Tensor, out: Optional[torch.Tensor], gamma: torch.Tensor,
                          beta: torch.Tensor, weight: torch.Tensor, pivot: torch.Tensor, centre: torch.Tensor,
                          rstd: torch.Tensor, xhat_mean: torch.Tensor, pooled: torch.Tensor,
                          gate: torch.Tensor) -> _Tensors5:
    """(dx, dgamma, dbeta, dweight, G'): backward passes A-C. ``out`` is the forward's output when it had the
    ReLU, else None; G' = grad * (out > 0) then, and an empty placeholder without the ReLU (G' is grad)."""
    return _backward_passes(grad, x, out, gamma, beta, weight, pivot, centre, rstd, xhat_mean, pooled, gate,
                            direct=False)


@triton_op("ecanet::bn_update_running_stats", mutates_args={"running_mean", "running_var", "num_batches_tracked"})
def bn_update_running_stats(running_mean: torch.Tensor, running_var: torch.Tensor, num_batches_tracked: torch.Tensor,
                            batch_mean: torch.Tensor, batch_var: torch.Tensor, momentum: float) -> None:
    """``nn.BatchNorm2d``'s update after a batch (``batch_var`` unbiased), in one kernel: under torch.compile the
    two running statistics and the batch count would otherwise be a kernel each."""
    _update_running_stats(running_mean, running_var, num_batches_tracked, batch_mean, batch_var, momentum)


def _setup_context(ctx, inputs, output) -> None:
    x, gamma, beta, weight, identity, _eps, relu = inputs
    out, _batch_mean, _batch_var, pivot, centre, rstd, xhat_mean, pooled, gate = output
    ctx.has_identity, ctx.relu = identity is not None, relu
    # The ReLU mask is read from out, which the next layer keeps alive anyway (it is its input).
    ctx.save_for_backward(x, gamma, beta, weight, pivot, centre, rstd, xhat_mean, pooled, gate,
                          *((out,) if relu else ()))


def _gradients(ctx, grad_out: torch.Tensor, backward: Callable[..., _Tensors5]) -> tuple:
    """(dx, dgamma, dbeta, dweight, didentity or None) from what :func:`_setup_context` kept; ``backward`` runs
    the passes (the op, or :func:`_backward_passes` launching directly)."""
    x, gamma, beta, weight, pivot, centre, rstd, xhat_mean, pooled, gate, *saved_out = ctx.saved_tensors
    out = saved_out[0] if ctx.relu else None
    grad_x, grad_gamma, grad_beta, grad_weight, grad_pre = backward(
        grad_out, x, out, gamma, beta, weight, pivot, centre, rstd, xhat_mean, pooled, gate)
    grad_identity = None if not ctx.has_identity else (grad_pre if ctx.relu else grad_out)
    return grad_x, grad_gamma, grad_beta, grad_weight, grad_identity


def _backward(ctx, grad_out, *_unused_grads):
    return *_gradients(ctx, grad_out, bn_eca_train_backward), None, None


bn_eca_train_forward.register_autograd(_backward, setup_context=_setup_context)


class _EagerTail(torch.autograd.Function):
    """The ops' passes in eager mode, launched directly: neither the ops' dispatch nor Triton's JIT binding runs
    on each call (host time per call). Returns out; the finalize kernel updates BatchNorm's ``running`` buffers
    (running_mean, running_var, num_batches_tracked), which a tuple keeps out of the autograd graph."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, weight: torch.Tensor,
                identity: Optional[torch.Tensor], eps: float, relu: bool,
                running: Tuple[torch.Tensor, torch.Tensor, torch.Tensor], momentum: float) -> torch.Tensor:
        output = _forward_passes(x, gamma, beta, weight, identity, eps, relu, direct=True, running=running,
                                 momentum=momentum)
        _setup_context(ctx, (x, gamma, beta, weight, identity, eps, relu), output)
        return output[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        with _device_of(grad_out):
            return (*_gradients(ctx, grad_out, functools.partial(_backward_passes, direct=True)),
                    None, None, None, None)


# ----------------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------------
def supports_training_tail(x: torch.Tensor, bn: nn.BatchNorm2d, identity: torch.Tensor | None = None, *,
                           weight: torch.Tensor) -> bool:
    """Whether training may take :func:`bn_eca_tail_training` for these inputs: ``bn`` an affine BatchNorm in
    training mode with running statistics and a fixed momentum; what the fused ECA kernels take, on a CUDA device
    (on the CPU only under Triton's interpreter, which runs the kernels outside torch.compile); a static batch size
    (the launch grids are fixed when a graph is compiled); and BatchNorm's parameters and statistics and ECA's
    kernel ``weight`` in float32, dense, on x's device and, BatchNorm's, sized to x's channels
    (:func:`~ecanet.models.eca_fused.batch_norm_fits`; the kernels read and write them through raw pointers), with
    the batch count there too."""
    return (bn.training and bn.affine and bn.track_running_stats and bn.momentum is not None
            and supports(x, identity) and type(x.shape[0]) is int
            and (x.is_cuda or (INTERPRETER and not torch.compiler.is_compiling()))
            and batch_norm_fits(x, bn, weight, (torch.float32,))
            and bn.num_batches_tracked is not None and bn.num_batches_tracked.device == x.device)


def bn_eca_tail_training(x: torch.Tensor, bn: nn.BatchNorm2d, weight: torch.Tensor,
                         identity: torch.Tensor | None = None, *, relu: bool = True) -> torch.Tensor:
    """``relu(ECA(BN(x)) + identity)`` with BatchNorm in training (batch statistics; running statistics updated
    as ``nn.BatchNorm2d`` does), as three Triton kernels each way. ``identity`` None leaves the add out and
    ``relu=False`` the ReLU; ``identity`` is cast to x's dtype and layout, as the plain ``out += identity`` does.
    Under torch.compile it runs as the ops, which Inductor launches; in eager mode the same kernels are launched
    directly. Check :func:`supports_training_tail` first; forward-mode AD is not supported."""
    if x.shape[0] * x.shape[2] * x.shape[3] == 1:   # as nn.BatchNorm2d: one value has no batch variance
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
    if identity is not None:   # the passes make x dense in this layout
        identity = identity.to(dtype=x.dtype, memory_format=memory_format(x))
    inputs = (x, bn.weight, bn.bias, weight, identity, bn.eps, relu)
    buffers = (bn.running_mean, bn.running_var, bn.num_batches_tracked)
    if torch.compiler.is_compiling():
        out, batch_mean, batch_var, *_ = bn_eca_train_forward(*inputs)
        bn_update_running_stats(*buffers, batch_mean.detach(), batch_var.detach(), bn.momentum)
        return out
    # Eager mode: the finalize kernel updates the running statistics (``buffers``), no kernel of their own.
    with _device_of(x):
        if ((torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs[:5]))
                or forward_ad_active()):   # under forward-mode AD, apply says it has no jvp
            return _EagerTail.apply(*inputs, buffers, bn.momentum)
        # no autograd node to build (e.g. BatchNorm statistics recomputed under no_grad)
        return _forward_passes(*inputs, direct=True, running=buffers, momentum=bn.momentum)[0]
