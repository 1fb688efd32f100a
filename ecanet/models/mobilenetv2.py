"""MobileNetV2 (Sandler et al., CVPR 2018) with a pluggable channel attention per inverted residual.

Module names reproduce torchvision's ``mobilenet_v2`` and the official ``eca_mobilenetv2.py``: each
block is ``features.N.conv`` = [pw ConvBNReLU6 (if expanded)], dw ConvBNReLU6, pw-linear Conv2d, BN and,
for ECA, the ECA layer last (after the projection BN, before the residual add).

With attention, a block's projection convolution, BatchNorm, attention and residual add (no ReLU) run as one
tail, :func:`~ecanet.models.attention.conv_bn_scale_add_relu` with ``relu=False``, the same call that ends
a ResNet block. Under ``torch.compile`` ECA's pooling then comes out of BatchNorm's statistics pass and the
rescale and the add join BatchNorm's pointwise pass; in training on a GPU the tail runs as the Triton kernels
of :mod:`~ecanet.models.bn_eca_fused` (``compiled_tail="kernels"``), which launch fewer kernels than Inductor
makes of it, so that this network's small compiled steps depend less on the host's pace
(``docs/design/fused_eca.md``).
"""
from __future__ import annotations

import torch
from torch import nn

from ..constants import IMAGE_CHANNELS
from .attention import AttentionKind, conv_bn_scale_add_relu, create_attention
from .eca_module import parse_kernel_sizes
from .heads import check_global_pool, check_num_classes, classifier_layer

STEM_CHANNELS = 32
LAST_CHANNELS = 1280
# t (expansion), c (output channels), n (repeats), s (first stride): Sandler et al. 2018, Table 2.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# The released ECA-MobileNetV2 ("k13") uses k = 1 for blocks with fewer than 96 output channels and k = 3
# for the rest (read off the released weights: features.11-13, 96 channels, hold 1x1x3 kernels).
OFFICIAL_SMALL_K, OFFICIAL_LARGE_K, OFFICIAL_K_SPLIT_CHANNELS = 1, 3, 96
TORCHVISION_DROPOUT = 0.2   # torchvision's mobilenet_v2 classifier
OFFICIAL_ECA_DROPOUT = 0.25  # the official eca_mobilenetv2.py classifier


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_planes: int, out_planes: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1) -> None:
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_planes, out_planes, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_planes),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int,
                 attention: AttentionKind = None, k_size: int | None = None) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(inp, hidden_dim, kernel_size=1))              # pw
        layers += [
            ConvBNReLU(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim),  # dw
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),                        # pw-linear
            nn.BatchNorm2d(oup),
        ]
        module = create_attention(attention, oup, k_size)
        if module is not None:
            layers.append(module)
        self.conv = nn.Sequential(*layers)
        self.has_attention = module is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, inp, H, W)
        if not self.has_attention:
            return x + self.conv(x) if self.use_res_connect else self.conv(x)
        *body, project, bn, attention = self.conv
        out = x
        for layer in body:
            out = layer(out)                              # (B, hidden, H / stride, W / stride)
        # Compiled, this block's training step runs at the host's launch pace: the tail's Triton kernels
        # launch fewer kernels than Inductor makes of the decomposed form (docs/design/fused_eca.md).
        return conv_bn_scale_add_relu(project, bn, attention, out, x if self.use_res_connect else None,
                                      relu=False, compiled_tail="kernels")


def block_kernel_sizes(k_size: object) -> list[int | None]:
    """One ECA kernel size per inverted residual block (17 of them).

    ``k_size`` None: the official rule (k=1 below 96 output channels, else 3). Two values (``"13"``, the
    release's name): the same split with other sizes. Seven values: one per stage of Table 2. One value
    or ``'adaptive'``: every block (adaptive = psi(C) of the block's output channels).
    """
    if k_size is None:
        k_size = (OFFICIAL_SMALL_K, OFFICIAL_LARGE_K)
    num_stages = len(INVERTED_RESIDUAL_SETTING)
    try:
        stage_k = parse_kernel_sizes(k_size, num_stages)
        return [k for k, (_, _, n, _) in zip(stage_k, INVERTED_RESIDUAL_SETTING) for _ in range(n)]
    except ValueError:
        pass
    try:
        small, large = parse_kernel_sizes(k_size, 2)
    except ValueError:
        raise ValueError(f"invalid ECA kernel sizes {k_size!r} for MobileNetV2: give 1 value, 2 values "
                         f"(k below / from {OFFICIAL_K_SPLIT_CHANNELS} channels, the release's '13') or "
                         f"{num_stages} values (one per stage)") from None
    return [small if c < OFFICIAL_K_SPLIT_CHANNELS else large
            for _, c, n, _ in INVERTED_RESIDUAL_SETTING for _ in range(n)]


class MobileNetV2(nn.Module):
    """MobileNetV2 with optional ECA/SE in every inverted residual block.

    Args:
        num_classes: outputs of the classifier; 0 leaves it out (the pooled features, :mod:`.heads`).
        attention: ``'eca'``, ``'se'`` or None.
        k_size: ECA kernel sizes (see :func:`block_kernel_sizes`).
        width_mult: channel multiplier, applied as in the official code (``int(c * width_mult)``).
        dropout: classifier dropout (torchvision 0.2; official ECA-MobileNetV2 0.25).
    """

    def __init__(self, num_classes: int = 1000, attention: AttentionKind = None, k_size: object = None,
                 width_mult: float = 1.0, dropout: float = TORCHVISION_DROPOUT) -> None:
        super().__init__()
        if attention != "eca" and k_size is not None:
            raise ValueError("k_size applies to ECA networks only")
        block_k = block_kernel_sizes(k_size) if attention == "eca" else None
        input_channel = int(STEM_CHANNELS * width_mult)
        self.last_channel = int(LAST_CHANNELS * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNReLU(IMAGE_CHANNELS, input_channel, stride=2)]
        block_index = 0
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            output_channel = int(c * width_mult)
            for i in range(n):
                k = block_k[block_index] if block_k is not None else None
                features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t,
                                                 attention, k))
                input_channel = output_channel
                block_index += 1
        features.append(ConvBNReLU(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.global_pool = "avg"                # "" after reset_classifier(0, ""): no pooling
        self.num_features = self.last_channel   # channels of the pooled features
        self.num_classes = check_num_classes(num_classes)   # 0: no classifier
        self.classifier = nn.Sequential(nn.Dropout(dropout), classifier_layer(self.num_features, self.num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        # As torchvision and the official code: He-normal (fan_out) convs, BN 1/0, Linear N(0, 0.01).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                _init_linear(m)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)                           # (B, 1280, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if not self.global_pool:
            return x                                      # (B, num_features, H/32, W/32)
        x = x.mean(dim=(2, 3))                            # (B, num_features)
        return x if pre_logits else self.classifier(x)    # (B, num_classes), dropout first

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 3, H, W)
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier[-1]

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for ``num_classes``, initialised as the network's, on its device and in its dtype; 0
        leaves it out. ``global_pool`` as for :meth:`ResNet.reset_classifier`."""
        num_classes = check_num_classes(num_classes)
        self.global_pool = check_global_pool(global_pool, num_classes, self.global_pool)
        self.num_classes = num_classes
        layer = classifier_layer(self.num_features, self.num_classes)
        if isinstance(layer, nn.Linear):
            _init_linear(layer)
        self.classifier[-1] = layer.to(self.features[0][0].weight)


def _init_linear(layer: nn.Linear) -> None:
    """The classifier's initialisation in torchvision and the official code: N(0, 0.01), bias 0."""
    nn.init.normal_(layer.weight, 0.0, 0.01)
    nn.init.zeros_(layer.bias)
