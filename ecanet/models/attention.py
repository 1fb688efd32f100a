"""Channel attention as a swappable part of a block: ``'eca'``, ``'se'`` or none.

ResNet and ECA-ResNet (and SE-ResNet) are the same code: a block asks :func:`create_attention` for its
attention module and stores it under the kind's name (``block.eca`` / ``block.se``), which is what gives
the official state-dict keys (``layer1.0.eca.conv.weight``). Blocks end with
:func:`conv_bn_scale_add_relu`, ``relu(attention(bn(conv(y))) + identity)`` (MobileNetV2's without the
ReLU), so an implementation may fuse the BatchNorm, the rescale, the residual add and the ReLU (see
``ecanet/models/eca_fused.py`` and ``docs/design/fused_eca.md``).
"""
from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import nn

from .eca_module import EcaModule

AttentionKind = Optional[Literal["eca", "se"]]
ATTENTION_KINDS: tuple[str, ...] = ("eca", "se")
# Squeeze-and-excitation reduction ratio r = 16 (Hu et al., CVPR 2018, Section 6.1), the SE rows of the
# ECA paper's tables.
SE_REDUCTION = 16


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al., 2018): GAP -> 1x1 conv C/r -> ReLU -> 1x1 conv C -> sigmoid -> rescale.

    The function and the parameter names of ``torchvision.ops.SqueezeExcitation(C, C // r)``, written out so that
    it pools as :class:`~ecanet.models.EcaModule` does, with ``x.mean``: the FLOP counts (:mod:`ecanet.flops`)
    then charge both attentions' pooling by one rule, where torchvision's ``AdaptiveAvgPool2d`` module would be
    counted by thop a second time.
    """

    def __init__(self, channels: int, reduction: int = SE_REDUCTION) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        y = x.mean(dim=(2, 3), keepdim=True)             # (B, C, 1, 1)
        y = torch.sigmoid(self.fc2(self.relu(self.fc1(y))))  # (B, C, 1, 1)
        return x * y


def scale_add_relu(attention: nn.Module | None, x: torch.Tensor, identity: torch.Tensor | None = None, *,
                   relu: bool = True) -> torch.Tensor:
    """The tail of a block: ``relu(attention(x) + identity)`` (``relu(x + identity)`` without attention).

    ``identity`` None leaves the residual add out and ``relu=False`` the ReLU: MobileNetV2's inverted
    residual ends with ``attention(x) + identity``, no ReLU. An attention module that offers a fused
    ``scale_add_relu(x, identity, relu=...)`` (the ECA module does) is asked to do the whole tail, so it can
    touch the activation once instead of three times.
    """
    fused = getattr(attention, "scale_add_relu", None)  # None for no attention too
    if fused is not None:
        return fused(x, identity, relu=relu)
    if attention is None:
        out = x if identity is None else x + identity
    else:
        out = attention(x)
        if identity is not None:
            out += identity
    if not relu:
        return out
    return torch.relu(out) if out is x else torch.relu_(out)  # never overwrite the caller's x


def bn_scale_add_relu(bn: nn.Module, attention: nn.Module | None, x: torch.Tensor,
                      identity: torch.Tensor | None = None, *, relu: bool = True) -> torch.Tensor:
    """``relu(attention(bn(x)) + identity)``: a block's tail from its last convolution's output.

    ``identity`` and ``relu`` as in :func:`scale_add_relu`. An attention module with a
    ``bn_scale_add_relu`` (the ECA module) does it all, so it can share work with the BatchNorm; otherwise
    BN runs, then :func:`scale_add_relu`.
    """
    fused = getattr(attention, "bn_scale_add_relu", None)  # None for no attention too
    if fused is not None:
        return fused(bn, x, identity, relu=relu)
    return scale_add_relu(attention, bn(x), identity, relu=relu)


def conv_bn_scale_add_relu(conv: nn.Module, bn: nn.Module, attention: nn.Module | None, y: torch.Tensor,
                           identity: torch.Tensor | None = None, *, relu: bool = True,
                           compiled_tail: str = "decomposed", eager_tail: str = "modules") -> torch.Tensor:
    """``relu(attention(bn(conv(y))) + identity)``: a block's tail from its last convolution's input.

    ``identity`` and ``relu`` as in :func:`scale_add_relu`. An attention module with a
    ``conv_bn_scale_add_relu`` (the ECA module) may take its pooling from ``y`` and chooses its compiled
    and eager training forms by ``compiled_tail`` and ``eager_tail`` (see
    :meth:`~ecanet.models.eca_module.EcaModule.bn_scale_add_relu`); otherwise the convolution runs, then
    :func:`bn_scale_add_relu`.
    """
    fused = getattr(attention, "conv_bn_scale_add_relu", None)  # None for no attention too
    if fused is not None:
        return fused(conv, bn, y, identity, relu=relu, compiled_tail=compiled_tail, eager_tail=eager_tail)
    return bn_scale_add_relu(bn, attention, conv(y), identity, relu=relu)


def create_attention(kind: AttentionKind, channels: int, k_size: int | None = None) -> nn.Module | None:
    """Build the attention module of one block; None for a plain block.

    Args:
        kind: ``'eca'``, ``'se'`` or None.
        channels: channels the module sees.
        k_size: ECA kernel size (None: the paper's adaptive psi(C)); must be None for other kinds.
    """
    if kind is None:
        return None
    if kind == "eca":
        return EcaModule(channels, k_size)
    if k_size is not None:
        raise ValueError(f"k_size applies to ECA attention only, not to '{kind}'")
    if kind == "se":
        return SqueezeExcitation(channels)
    raise ValueError(f"unknown attention kind {kind!r}; known: {', '.join(ATTENTION_KINDS)} or None")
