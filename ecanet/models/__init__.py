"""The ecanet model zoo: ECA-ResNet-18/34/50/101/152, ECA-MobileNetV2 and their baselines.

>>> from ecanet import models
>>> model = models.create_model("eca_resnet50", k_size="3557")   # the released ECA-Net50
>>> models.list_models("eca_*")
"""
from __future__ import annotations

from torch import nn

from .attention import ATTENTION_KINDS, SqueezeExcitation, create_attention, scale_add_relu
from .eca_module import (EcaModule, adaptive_kernel_size, check_eca_impl, compile_model, eca_kernel_sizes,
                         fused_eca_available, parse_kernel_sizes, set_eca_impl, set_eca_kernel_sizes)
from .features import FeatureExtractor, FeatureInfo, FeatureInfoList, stage_info
from .mobilenetv2 import OFFICIAL_ECA_DROPOUT, MobileNetV2, block_kernel_sizes
from .registry import UnknownModelError, create_model, is_model, list_models, register_model, unknown_model_message
from .resnet import RESNET_SPECS, ResNet, build_resnet

# The kernel sizes of the released checkpoints (official README and file names, e.g.
# eca_resnet50_k3557.pth.tar); MobileNetV2's "13" is k=1 below 96 output channels, k=3 from there on.
RELEASED_KERNEL_SIZES: dict[str, str] = {
    "eca_resnet18": "3577",
    "eca_resnet34": "3357",
    "eca_resnet50": "3557",
    "eca_resnet101": "3357",
    "eca_resnet152": "3357",
    "eca_mobilenet_v2": "13",
}


# Thin builders, registered under the names the paper and the official code use.
@register_model
def resnet18(num_classes: int = 1000) -> ResNet:
    """ResNet-18 (torchvision's layout)."""
    return build_resnet(18, None, num_classes)


@register_model
def resnet34(num_classes: int = 1000) -> ResNet:
    """ResNet-34 (torchvision's layout)."""
    return build_resnet(34, None, num_classes)


@register_model
def resnet50(num_classes: int = 1000) -> ResNet:
    """ResNet-50 (torchvision's layout)."""
    return build_resnet(50, None, num_classes)


@register_model
def resnet101(num_classes: int = 1000) -> ResNet:
    """ResNet-101 (torchvision's layout)."""
    return build_resnet(101, None, num_classes)


@register_model
def resnet152(num_classes: int = 1000) -> ResNet:
    """ResNet-152 (torchvision's layout)."""
    return build_resnet(152, None, num_classes)


@register_model
def eca_resnet18(num_classes: int = 1000, k_size: object = None) -> ResNet:
    """ECA-ResNet-18 (released with k_size "3577")."""
    return build_resnet(18, "eca", num_classes, k_size)


@register_model
def eca_resnet34(num_classes: int = 1000, k_size: object = None) -> ResNet:
    """ECA-ResNet-34 (released with k_size "3357")."""
    return build_resnet(34, "eca", num_classes, k_size)


@register_model
def eca_resnet50(num_classes: int = 1000, k_size: object = None) -> ResNet:
    """ECA-ResNet-50 (released with k_size "3557")."""
    return build_resnet(50, "eca", num_classes, k_size)


@register_model
def eca_resnet101(num_classes: int = 1000, k_size: object = None) -> ResNet:
    """ECA-ResNet-101 (released with k_size "3357")."""
    return build_resnet(101, "eca", num_classes, k_size)


@register_model
def eca_resnet152(num_classes: int = 1000, k_size: object = None) -> ResNet:
    """ECA-ResNet-152 (released with k_size "3357")."""
    return build_resnet(152, "eca", num_classes, k_size)


@register_model
def se_resnet18(num_classes: int = 1000) -> ResNet:
    """SE-ResNet-18, reduction 16."""
    return build_resnet(18, 'se', num_classes)


@register_model
def se_resnet34(num_classes: int = 1000) -> ResNet:
    """SE-ResNet-34, reduction 16."""
    return build_resnet(34, 'se', num_classes)


@register_model
def se_resnet50(num_classes: int = 1000) -> ResNet:
    """SE-ResNet-50, reduction 16."""
    return build_resnet(50, 'se', num_classes)


@register_model
def se_resnet101(num_classes: int = 1000) -> ResNet:
    """SE-ResNet-101, reduction 16."""
    return build_resnet(101, 'se', num_classes)


@register_model
def se_resnet152(num_classes: int = 1000) -> ResNet:
    """SE-ResNet-152, reduction 16."""
    return build_resnet(152, 'se', num_classes)


@register_model
def mobilenet_v2(num_classes: int = 1000, **kwargs) -> MobileNetV2:
    """MobileNetV2 (torchvision's layout and classifier dropout 0.2)."""
    return MobileNetV2(num_classes=num_classes, **kwargs)


@register_model
def eca_mobilenet_v2(num_classes: int = 1000, k_size: object = None, **kwargs) -> MobileNetV2:
    """ECA-MobileNetV2 as released (k=1 below 96 channels, else 3; classifier dropout 0.25)."""
    kwargs.setdefault("dropout", OFFICIAL_ECA_DROPOUT)
    return MobileNetV2(num_classes=num_classes, attention="eca", k_size=k_size, **kwargs)


RESNET_STAGES = 4


def count_parameters(model: nn.Module) -> int:
    """All parameters of ``model``, trainable or not."""
    return sum(p.numel() for p in model.parameters())


def check_kernel_sizes(arch: str, k_size: object) -> None:
    """Raise a ValueError when ``k_size`` does not fit ``arch``'s ECA layers (cheap: builds nothing)."""
    if arch.startswith("eca_mobilenet"):
        block_kernel_sizes(k_size)
    elif arch.startswith("eca_"):
        parse_kernel_sizes(k_size, RESNET_STAGES)
    elif k_size is not None:
        raise ValueError(f"k_size applies to ECA networks only; {arch!r} has no ECA layers")


__all__ = [
    "ATTENTION_KINDS", "EcaModule", "MobileNetV2", "RELEASED_KERNEL_SIZES", "RESNET_SPECS", "ResNet",
    "SqueezeExcitation", "UnknownModelError", "adaptive_kernel_size", "build_resnet", "check_eca_impl",
    "check_kernel_sizes", "compile_model", "count_parameters", "create_attention", "create_model",
    "eca_kernel_sizes", "fused_eca_available", "is_model", "list_models", "parse_kernel_sizes", "register_model",
    "scale_add_relu", "set_eca_impl", "set_eca_kernel_sizes", "unknown_model_message"
]
# the multi-scale feature API (features.py)
__all__ += ["FeatureExtractor", "FeatureInfo", "FeatureInfoList", "stage_info"]
