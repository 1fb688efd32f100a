"""ResNet-18/34/50/101/152 (He et al., 2016; torchvision's v1 stem) with a pluggable channel attention.

One code path builds ResNet, ECA-ResNet and SE-ResNet. Module names and order reproduce the official
ECA-Net code (``BangguWu/ECANet/models/eca_resnet.py``) and torchvision's ``resnet*``, so
``state_dict()`` keys equal those of the released checkpoints and of torchvision's weights. As in the
official code the attention sits after ``bn2`` (BasicBlock) / ``bn3`` (Bottleneck), before the residual add.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence, Type, Union

import torch
from torch import nn

from ..constants import IMAGE_CHANNELS
from .attention import AttentionKind, conv_bn_scale_add_relu, create_attention
from .eca_module import parse_kernel_sizes
from .heads import check_global_pool, check_num_classes, classifier_layer

STEM_CHANNELS = 64
STAGE_WIDTHS = (64, 128, 256, 512)  # planes of each stage; the block's output is planes * expansion
# Eager training (ECA implementation "auto", on a GPU) runs each block's BatchNorm with ECA as the Triton tail
# kernels (EcaModule.bn_scale_add_relu), which pass over the activations fewer times than cuDNN's BatchNorm
# followed by the fused ECA kernels (docs/design/fused_eca.md).
EAGER_TAIL = "kernels"
# Builds a normalisation layer from its channel count: nn.BatchNorm2d for classification, torchvision's
# FrozenBatchNorm2d for detection backbones (same parameter and buffer names, so checkpoints load in both).
NormLayer = Callable[[int], nn.Module]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class _AttentionBlock(nn.Module):
    """Holds the block's attention under its kind's name (``self.eca`` / ``self.se``) for the official keys."""

    attention_name: str | None = None

    def _add_attention(self, kind: AttentionKind, channels: int, k_size: int | None) -> None:
        module = create_attention(kind, channels, k_size)
        self.attention_name = kind if module is not None else None
        if module is not None:
            self.add_module(kind, module)

    @property
    def attention(self) -> nn.Module | None:
        return self._modules[self.attention_name] if self.attention_name else None


class BasicBlock(_AttentionBlock):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 attention: AttentionKind = None, k_size: int | None = None,
                 norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self._add_attention(attention, planes, k_size)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return conv_bn_scale_add_relu(self.conv2, self.bn2, self.attention, out, identity, eager_tail=EAGER_TAIL)


class Bottleneck(_AttentionBlock):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 attention: AttentionKind = None, k_size: int | None = None,
                 norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = norm_layer(planes)
        self.conv2 = conv3x3(planes, planes, stride)  # stride on the 3x3, as torchvision and the official code
        self.bn2 = norm_layer(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self._add_attention(attention, planes * self.expansion, k_size)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return conv_bn_scale_add_relu(self.conv3, self.bn3, self.attention, out, identity, eager_tail=EAGER_TAIL)


Block = Union[Type[BasicBlock], Type[Bottleneck]]


class ResNet(nn.Module):
    """ResNet with a per-block channel attention.

    Args:
        block: BasicBlock or Bottleneck.
        layers: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
        num_classes: outputs of the classifier; 0 leaves it out (the pooled features, :mod:`.heads`).
        attention: ``'eca'``, ``'se'`` or None.
        k_size: ECA kernel sizes, anything :func:`parse_kernel_sizes` accepts (per stage; default adaptive).
        norm_layer: builds every normalisation layer from its channel count (default ``nn.BatchNorm2d``;
            detection backbones pass ``torchvision.ops.FrozenBatchNorm2d``). The state_dict keys do not
            depend on it.
    """

    def __init__(self, block: Block, layers: Sequence[int], num_classes: int = 1000,
                 attention: AttentionKind = None, k_size: object = None,
                 norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        self._norm_layer = norm_layer
        stage_k = parse_kernel_sizes(k_size, len(layers)) if attention == "eca" else [None] * len(layers)
        if attention != "eca" and k_size is not None:
            raise ValueError("k_size applies to ECA networks only")
        self.inplanes = STEM_CHANNELS
        self.conv1 = nn.Conv2d(IMAGE_CHANNELS, STEM_CHANNELS, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for i, (planes, blocks, k) in enumerate(zip(STAGE_WIDTHS, layers, stage_k)):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", self._make_layer(block, planes, blocks, stride, attention, k))
        # Adaptive pooling (the official builders also replace AvgPool2d(7) by it): any input size works.
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.global_pool = "avg"                                 # "" after reset_classifier(0, ""): no pooling
        self.num_features = STAGE_WIDTHS[-1] * block.expansion   # channels of the pooled features
        self.num_classes = check_num_classes(num_classes)        # 0: no classifier
        self.fc = classifier_layer(self.num_features, self.num_classes)
        self._init_weights()

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int, attention: AttentionKind,
                    k_size: int | None) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       self._norm_layer(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, attention, k_size, self._norm_layer)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, attention=attention, k_size=k_size, norm_layer=self._norm_layer)
                   for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # The official code's initialisation: He-normal with fan = k*k*out_channels for every Conv2d, BN
        # weight 1 and bias 0; Linear and ECA's Conv1d keep PyTorch's defaults.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)                                  # (B, 512 * expansion, H/32, W/32)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if not self.global_pool:
            return x                                           # (B, num_features, H/32, W/32)
        x = torch.flatten(self.avgpool(x), 1)                  # (B, num_features)
        return x if pre_logits else self.fc(x)                 # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:       # x: (B, 3, H, W)
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for ``num_classes`` (PyTorch's default Linear initialisation, as the official code),
        on the network's device and in its dtype; 0 leaves it out. ``global_pool`` ``"avg"`` or ``""`` (no
        pooling, with ``num_classes`` 0); None keeps the current one."""
        num_classes = check_num_classes(num_classes)
        self.global_pool = check_global_pool(global_pool, num_classes, self.global_pool)
        self.num_classes = num_classes
        self.fc = classifier_layer(self.num_features, self.num_classes).to(self.conv1.weight)


# depth -> (block, blocks per stage), He et al. 2016, Table 1.
RESNET_SPECS: dict[int, tuple[Block, tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def build_resnet(depth: int, attention: AttentionKind = None, num_classes: int = 1000,
                 k_size: object = None, norm_layer: NormLayer = nn.BatchNorm2d) -> ResNet:
    block, layers = RESNET_SPECS[depth]
    return ResNet(block, layers, num_classes=num_classes, attention=attention, k_size=k_size,
                  norm_layer=norm_layer)
