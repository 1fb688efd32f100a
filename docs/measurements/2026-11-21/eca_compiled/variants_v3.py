# See variants_experiment.py: one of the variants it compared (2026-11-21), not maintained.
"""V3: BN(train)+ECA+add+ReLU as an autograd.Function with a hand-written backward (PyTorch ops)."""
import torch
from torch import nn
import torch.nn.functional as F

def _conv(y, taps):  # (B, C) with zero padding
    k = taps.numel(); pad = (k - 1) // 2
    padded = F.pad(y, (pad, pad)); C = y.shape[1]
    out = padded[:, 0:C] * taps[0]
    for j in range(1, k):
        out = out + padded[:, j:j + C] * taps[j]
    return out

def _conv_t(d, taps):  # transpose of _conv
    k = taps.numel(); pad = (k - 1) // 2
    padded = F.pad(d, (pad, pad)); C = d.shape[1]
    # dm[c] = sum_j taps[j] d[c - j + pad]
    out = padded[:, 2 * pad:2 * pad + C] * taps[0]
    for j in range(1, k):
        out = out + padded[:, 2 * pad - j:2 * pad - j + C] * taps[j]
    return out

class BnEcaAddRelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, w, identity, eps):
        B, C, H, W = x.shape; P = H * W; n = B * P
        xf = x.float()
        s1, s2 = _moments(xf, x)                                          # (B, C)
        mu = s1.sum(0) / n
        var_raw = s2.sum(0) / n - mu * mu
        var = var_raw.clamp_min(0.0)
        r = torch.rsqrt(var + eps)
        a = gamma.float() * r; sh = beta.float() - mu * a
        m = s1 / P * a + sh
        taps = w.reshape(-1).float()
        g = torch.sigmoid(_conv(m, taps))
        S = a * g; O = sh * g
        out = torch.relu((xf * S[:, :, None, None] + O[:, :, None, None] + identity.float()).to(x.dtype))
        ctx.save_for_backward(x, out, s1, mu, var_raw, r, a, sh, m, g, gamma, taps)
        ctx.eps = eps; ctx.wshape = w.shape; ctx.wdtype = w.dtype; ctx.iddtype = identity.dtype
        return out, mu, var

    @staticmethod
    def backward(ctx, G, _dmu, _dvar):
        x, out, s1, mu, var_raw, r, a, sh, m, g, gamma, taps = ctx.saved_tensors
        B, C, H, W = x.shape; P = H * W; n = B * P
        Gp = torch.where(out <= 0, torch.zeros((), dtype=G.dtype, device=G.device), G)  # (B, C, H, W) in G's dtype
        xf = x.float()
        Gpf = Gp.float()
        R0 = Gpf.sum(dim=(2, 3)); R1 = (Gpf * xf).sum(dim=(2, 3))          # (B, C)
        dg = R1 * a + R0 * sh
        da = (R1 * g).sum(0); dsh = (R0 * g).sum(0)
        dz = dg * g * (1 - g)
        dm = _conv_t(dz, taps)
        k = taps.numel(); pad = (k - 1) // 2
        mp = F.pad(m, (pad, pad))
        dw = torch.stack([(dz * mp[:, j:j + C]).sum() for j in range(k)])
        ds1 = dm * a / P
        da = da + (dm * s1).sum(0) / P
        dsh = dsh + dm.sum(0)
        dbeta = dsh
        dmu = -dsh * a
        da = da - dsh * mu
        dgamma = da * r
        dr = da * gamma.float()
        dvar = dr * (-0.5) * r ** 3 * (var_raw >= 0)
        dmu = dmu - 2 * mu * dvar
        ds1 = ds1 + (dmu / n)[None, :]
        ds2 = (dvar / n)                                                  # (C,)
        S = a * g
        dx = Gpf * S[:, :, None, None] + ds1[:, :, None, None] + 2 * xf * ds2[None, :, None, None]
        return (dx.to(x.dtype), dgamma.to(gamma.dtype), dbeta.to(gamma.dtype), dw.reshape(ctx.wshape).to(ctx.wdtype),
                Gp.to(ctx.iddtype), None)

USE_MOMENTS_OP = False
import triton, triton.language as tl
from models import eca_fused as ef
from models.eca_fused import _tile

@triton.jit
def _moments_kernel(x_ptr, s1_ptr, s2_ptr, B, C, P, tiles_per_split,
                    CHANNELS_LAST: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    c_start = tl.program_id(0) * BLOCK_C
    split = tl.program_id(1)
    b = B - 1 - tl.program_id(2)
    sample = b.to(tl.int64) * C * P
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for i in range(tiles_per_split):
        p_start = (split * tiles_per_split + i) * BLOCK_P
        offsets, mask = _tile(p_start, c_start, C, P, CHANNELS_LAST, BLOCK_P, BLOCK_C)
        v = tl.load(x_ptr + sample + offsets, mask=mask, other=0.0).to(tl.float32)
        acc += v
        acc2 += v * v
    c = c_start + tl.arange(0, BLOCK_C)
    tl.store(s1_ptr + (split * B + b) * C + c, tl.sum(acc, axis=0), mask=c < C)
    tl.store(s2_ptr + (split * B + b) * C + c, tl.sum(acc2, axis=0), mask=c < C)


def _moments(xf, x):
    if USE_MOMENTS_OP and x.is_cuda:
        return torch.ops.ecanet_exp.channel_moments(x)
    return xf.sum(dim=(2, 3)), (xf * xf).sum(dim=(2, 3))

def bn_eca_add_relu_v3(x, bn, weight, identity):
    if not bn.training:
        from models.eca_module import _v0
        return _v0(x, bn, weight, identity)
    out, mu, var = BnEcaAddRelu.apply(x, bn.weight, bn.bias, weight, identity, bn.eps)
    count = x.shape[0] * x.shape[2] * x.shape[3]
    with torch.no_grad():
        bn.running_mean.mul_(1.0 - bn.momentum).add_(mu.detach(), alpha=bn.momentum)
        bn.running_var.mul_(1.0 - bn.momentum).add_(var.detach() * (count / max(count - 1, 1)), alpha=bn.momentum)
        bn.num_batches_tracked.add_(1)
    return out

def _register_moments():

    @torch.library.custom_op("ecanet_exp::channel_moments", mutates_args=(), schema="(Tensor x) -> (Tensor, Tensor)")
    def channel_moments(x):
        x = ef._dense(x, x)
        B, C, P, cl = ef._shape(x)
        tiling = ef._Tiling.for_shape(C, P, cl)
        splits, tps = ef._reduction_splits(B, C, P, tiling, x.device)
        p1 = torch.empty((splits, B, C), device=x.device, dtype=torch.float32)
        p2 = torch.empty_like(p1)
        with ef._device_of(x):
            _moments_kernel[(triton.cdiv(C, tiling.block_c), splits, B)](x, p1, p2, B, C, P, tps,
                                                                       num_warps=ef.NUM_WARPS, **tiling.meta())
        return p1.sum(0), p2.sum(0)

    @channel_moments.register_fake
    def _(x):
        s = x.new_empty(x.shape[:2], dtype=torch.float32)
        return s, torch.empty_like(s)

def install(moments=False):
    global USE_MOMENTS_OP
    USE_MOMENTS_OP = moments
    if moments and not hasattr(torch.ops.ecanet_exp, "channel_moments"):
        _register_moments()
    import models.eca_module as em
    em._v0 = em.bn_eca_add_relu_decomposed
    em.bn_eca_add_relu_decomposed = bn_eca_add_relu_v3
