"""ECA's 1-D convolution across channels (paper Eq. 9), written out for torch.compile and as a reference.

A leaf module: both the plain ECA code (:mod:`.eca_module`) and the fused kernels' PyTorch reference
(:mod:`.eca_fused`) use it.
"""
from __future__ import annotations

import torch
from torch import nn


def channel_conv(y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """ECA's 1-D convolution across channels, ``conv1d(y, weight, padding=(k-1)//2)`` for y (B, C), written
    as k shifted multiply-adds: under torch.compile these fuse into one small kernel (forward and backward)
    instead of cuDNN calls on a (B, 1, C) tensor."""
    k = weight.shape[-1]
    pad = (k - 1) // 2
    padded = nn.functional.pad(y, (pad, pad))                     # (B, C + k - 1)
    taps = weight.reshape(k)
    channels = y.shape[1]
    out = padded[:, 0:channels] * taps[0]
    for j in range(1, k):
        out = out + padded[:, j:j + channels] * taps[j]
    return out                                                    # (B, C)


def channel_conv_weight_grad(grad: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """dL/dw of :func:`channel_conv`: dw[j] = sum_{b,c} grad[b, c] * y[b, c + j - pad] (zero padding)."""
    pad = (k - 1) // 2
    windows = nn.functional.pad(y, (pad, pad)).unfold(1, k, 1)   # (B, C, k)
    return (windows * grad[:, :, None]).sum(dim=(0, 1))           # (k,)
