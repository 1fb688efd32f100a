"""Multi-scale features of the classification networks: the input of detection and segmentation heads.

:class:`FeatureExtractor` wraps a ResNet (plain, SE or ECA, any depth) or a MobileNetV2 and returns the
outputs of its stages instead of class scores, as timm's ``features_only=True`` and torchvision's
``IntermediateLayerGetter`` do::

    >>> from ecanet.models import create_model
    >>> features = create_model("eca_resnet50", k_size="3557", features_only=True)
    >>> [(f.module, f.channels, f.stride) for f in features.feature_info]
    [('layer1', 256, 4), ('layer2', 512, 8), ('layer3', 1024, 16), ('layer4', 2048, 32)]
    >>> features.feature_info.channels(), features.feature_info.reduction()   # timm's accessors
    ([256, 512, 1024, 2048], [4, 8, 16, 32])

A network has five stages, one per stride 2, 4, 8, 16 and 32; each stage's output is that of the last
module running at its stride. ResNet: 0 the stem's ReLU (64 channels, before the max-pool), 1-4
``layer1``-``layer4`` (BasicBlock 64/128/256/512 channels, Bottleneck 256/512/1024/2048). MobileNetV2:
``features.1``, ``.3``, ``.6``, ``.13`` and ``.18`` (16, 24, 32, 96 and 1280 channels).

The extractor holds the network's own modules under their own names (``layer1.0.eca.conv.weight``), so a
classification state_dict loads into it with only the classifier left over.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .mobilenetv2 import MobileNetV2
from .resnet import ResNet

DEFAULT_OUT_INDICES = (1, 2, 3, 4)  # strides 4-32: what an FPN takes (torchvision's returned_layers [1, 2, 3, 4])
HEAD_MODULES = {ResNet: ("avgpool", "fc"), MobileNetV2: ("classifier",)}  # what feature extraction drops


@dataclass(frozen=True)
class FeatureInfo:
    """One stage output: the module that produces it, its channels and its stride (input pixels per pixel)."""

    module: str
    channels: int
    stride: int


class FeatureInfoList(list):
    """The :class:`FeatureInfo` of each returned stage, in order, with timm's ``FeatureInfo`` accessors:
    ``channels()``, ``reduction()`` (the strides) and ``module_name()``, each for every stage or, given
    ``idx`` (an int or a list of ints), for those positions."""

    def _get(self, field: str, idx: int | Sequence[int] | None) -> int | str | list:
        if idx is None:
            return [getattr(info, field) for info in self]
        if isinstance(idx, (list, tuple)):
            return [getattr(self[i], field) for i in idx]
        return getattr(self[idx], field)

    def channels(self, idx: int | Sequence[int] | None = None) -> int | list[int]:
        return self._get("channels", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> int | list[int]:
        return self._get("stride", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> str | list[str]:
        return self._get("module", idx)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def stage_indices(out_indices: int | Sequence[int], num_stages: int) -> list[int]:
    """``out_indices`` as a rising list of stage indices, as timm reads it: an int n is the last n stages, and
    a negative index counts from the end (-1 the last stage). Anything else is a ValueError."""
    if _is_int(out_indices):
        indices: list[object] = list(range(num_stages - out_indices, num_stages)) if out_indices > 0 else []
    elif isinstance(out_indices, (list, tuple, range)):
        indices = [i + num_stages if _is_int(i) and i < 0 else i for i in out_indices]
    else:
        indices = [out_indices]   # refused below
    valid = all(_is_int(i) and 0 <= i < num_stages for i in indices)
    if not indices or not valid or sorted(set(indices)) != indices:
        raise ValueError(f"out_indices {out_indices!r} is not a rising list of stage indices 0-{num_stages - 1} "
                         f"(negative ones count from the end) or a number of last stages 1-{num_stages}. "
                         f"Pass e.g. {DEFAULT_OUT_INDICES}.")
    return indices


def _run_order(model: nn.Module) -> list[str]:
    """The dotted names of the modules the network's trunk runs one after the other, in order."""
    if isinstance(model, ResNet):
        return [name for name, _ in model.named_children() if name not in HEAD_MODULES[ResNet]]
    if isinstance(model, MobileNetV2):
        return [f"features.{name}" for name, _ in model.features.named_children()]
    raise ValueError(f"feature extraction supports ecanet's ResNets and MobileNetV2, not {type(model).__name__}. "
                     f"Build one with ecanet.models.create_model (list_models() names them).")


def _own_stride(module: nn.Module) -> int:
    """How much ``module`` downsamples: the largest stride of its convolutions and pools (a residual block's
    shortcut has the same stride as its main path, so the largest, not the product, is the block's)."""
    strides = [m.stride if isinstance(m.stride, int) else m.stride[0] for m in module.modules()
               if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d))]
    return max(strides, default=1)


def stage_info(model: nn.Module) -> list[FeatureInfo]:
    """Every stage of ``model`` (index 0-4: strides 2, 4, 8, 16, 32), read off its modules without running it."""
    stages: dict[int, FeatureInfo] = {}
    stride, channels = 1, 3
    for name in _run_order(model):
        module = model.get_submodule(name)
        stride *= _own_stride(module)
        convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
        channels = convs[-1].out_channels if convs else channels
        stages[stride] = FeatureInfo(name, channels, stride)  # a later module at the same stride replaces it
    return [stages[s] for s in sorted(stages)]


class FeatureExtractor(nn.Module):
    """The trunk of a classification network, returning the outputs of the stages ``out_indices``.

    Args:
        model: an ecanet ResNet or MobileNetV2; its modules are shared, not copied. The classifier (and
            any module after the last stage asked for) is left out.
        out_indices: stage indices, 0-4 (see the module docstring; negative ones count from the end), or an
            int n for the last n stages, as timm; default (1, 2, 3, 4), strides 4-32.

    Attributes:
        feature_info: one :class:`FeatureInfo` per returned stage, in order (a :class:`FeatureInfoList`).
        out_channels: the channels of each returned stage.

    ``forward(x)`` takes ``(B, 3, H, W)`` and returns a list of ``(B, channels_i, ~H/stride_i, ~W/stride_i)``.
    """

    def __init__(self, model: nn.Module, out_indices: int | Sequence[int] = DEFAULT_OUT_INDICES) -> None:
        super().__init__()
        stages = stage_info(model)
        self.feature_info = FeatureInfoList(stages[i] for i in stage_indices(out_indices, len(stages)))
        self.out_channels = [info.channels for info in self.feature_info]
        order = _run_order(model)
        self._run = order[: order.index(self.feature_info[-1].module) + 1]
        self._taps = {info.module for info in self.feature_info}
        if isinstance(model, MobileNetV2):
            # nn.Sequential slicing keeps the children's names, hence the state_dict keys.
            self.features = model.features[: len(self._run)]
        else:
            for name in self._run:
                self.add_module(name, model.get_submodule(name))
        self.eca_impl = getattr(model, "eca_impl", None)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # x: (B, 3, H, W)
        outputs = []
        for name in self._run:
            x = self.get_submodule(name)(x)
            if name in self._taps:
                outputs.append(x)                                # (B, C_i, H / stride_i, W / stride_i)
        return outputs
