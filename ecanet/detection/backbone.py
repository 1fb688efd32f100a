"""ResNet / SE-ResNet / ECA-ResNet + FPN backbones for torchvision's detectors.

:func:`ecanet_fpn_backbone` is torchvision's ``resnet_fpn_backbone`` with an ecanet ResNet as the body:
frozen BatchNorm, the stem and the first ``5 - trainable_layers`` stages frozen, an FPN over the stages
``returned_layers``. For a plain ``resnet50`` the result is the same network as torchvision's, key for key.
The ECA paper's detectors (trained with mmdetection) freeze the stem and ``layer1`` (``frozen_stages=1``),
which is ``trainable_layers=3``, the default here and in torchvision.

Weights come from any classification file :func:`ecanet.checkpoint.read_weights` reads, the official
``eca_resnet50_k3557.pth.tar`` included; the ECA kernel sizes are those of the file.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock

from .. import models
from ..checkpoint import NetworkSpec, check_kernel_sizes_agree, check_state_dict, read_weights
from ..constants import MAX_TRAINABLE_LAYERS
from ..errors import CheckpointError, ConfigError
from ..models.resnet import RESNET_SPECS, ResNet, build_resnet

log = logging.getLogger(__name__)

FPN_CHANNELS = 256              # torchvision's and mmdetection's FPN width
PAPER_TRAINABLE_LAYERS = 3      # mmdetection's frozen_stages=1: stem and layer1 frozen
CLASSIFIER_PREFIX = "fc."       # the only weights of a classification file a backbone has no use for
BN_STEP_COUNTER = "num_batches_tracked"  # a BatchNorm step counter; FrozenBatchNorm2d keeps none
_RESNET_ARCH = re.compile(r"^(?:(?P<attention>eca|se)_)?resnet(?P<depth>\d+)$")


def backbone_archs() -> list[str]:
    """The architectures :func:`ecanet_fpn_backbone` builds: every registered ResNet (plain, SE, ECA)."""
    return [arch for arch in models.list_models() if _parse_arch(arch) is not None]


def _parse_arch(arch: str) -> tuple[str | None, int] | None:
    match = _RESNET_ARCH.match(arch)
    if match is None or int(match["depth"]) not in RESNET_SPECS or not models.is_model(arch):
        return None
    return match["attention"], int(match["depth"])


def _check_arch(arch: str) -> tuple[str | None, int]:
    parsed = _parse_arch(arch)
    if parsed is None:
        raise ConfigError(f"{arch!r} cannot be a detection backbone; the backbones are the ResNets: "
                          f"{', '.join(backbone_archs())}. Pass one of them as the arch.")
    return parsed


@dataclass(frozen=True)
class BackboneWeights:
    """What loading a classification file into a backbone did.

    Attributes:
        path: the file.
        loaded: names of the tensors loaded (the body's state_dict keys).
        dropped: names of the file's tensors the backbone has no use for: the classifier, ``fc.*``.
        eca_kernel_sizes: the file's ECA kernel size per layer (``'layer1.0.eca'`` -> 3); empty for others.
    """

    path: str
    loaded: tuple[str, ...]
    dropped: tuple[str, ...]
    eca_kernel_sizes: dict[str, int]

    @property
    def kernel_string(self) -> str:
        """The kernel sizes in the release's notation (``'3557'``); empty without ECA layers."""
        return NetworkSpec("", 0, self.eca_kernel_sizes).kernel_string


def build_body(arch: str, k_size: object = None, norm_layer: Callable[[int], nn.Module] = FrozenBatchNorm2d,
               weights: str | os.PathLike | None = None, eca_impl: str = "auto"
               ) -> tuple[ResNet, BackboneWeights | None]:
    """The ResNet ``arch`` with ``norm_layer`` normalisation, initialised from ``weights`` when given.

    Raises:
        ConfigError: ``arch`` is not a ResNet, or ``k_size`` does not fit it.
        CheckpointError: ``weights`` holds another network, or other ECA kernel sizes than ``k_size``.
    """
    attention, depth = _check_arch(arch)
    if k_size is not None and attention != "eca":
        raise ConfigError(f"k_size applies to ECA networks only and {arch} has no ECA layers; leave k_size out "
                          f"or pick eca_{arch.split('_')[-1]}.")
    if weights is None:
        try:
            body = build_resnet(depth, attention, k_size=k_size, norm_layer=norm_layer)
        except ValueError as error:  # a k_size that does not fit
            raise ConfigError(f"{arch}: {error}. Pass k_size as one odd int or one per stage ('3557').") from None
        return models.set_eca_impl(body, eca_impl), None

    state_dict, recipe = read_weights(weights)
    if recipe.arch != arch:
        if recipe.arch not in backbone_archs():
            raise CheckpointError(f"{weights} holds {recipe.arch}, which is not a detection backbone (the "
                                  f"backbones are ResNets: {', '.join(backbone_archs())}). Give weights of {arch}.")
        raise CheckpointError(f"{weights} holds {recipe.arch}, not {arch}. Pass arch={recipe.arch!r} "
                              f"(--arch {recipe.arch}) to use it, or give weights of {arch}.")
    if k_size is not None and recipe.eca_kernel_sizes:
        check_kernel_sizes_agree(arch, k_size, recipe, weights)
    # Built with the file's classifier size so that the whole file is checked; the FPN drops fc afterwards.
    body = build_resnet(depth, attention, num_classes=recipe.num_classes, norm_layer=norm_layer)
    if recipe.eca_kernel_sizes:
        models.set_eca_kernel_sizes(body, dict(recipe.eca_kernel_sizes))
    body_keys = body.state_dict().keys()
    file_keys = [k for k in state_dict if not k.endswith(BN_STEP_COUNTER) or k in body_keys]
    check_state_dict(body, {k: state_dict[k] for k in file_keys}, str(weights))
    body.load_state_dict(state_dict, strict=True)  # FrozenBatchNorm2d ignores the step counters itself
    models.set_eca_impl(body, eca_impl)
    report = BackboneWeights(
        path=str(weights),
        loaded=tuple(k for k in body_keys if not k.startswith(CLASSIFIER_PREFIX)),
        dropped=tuple(k for k in file_keys if k.startswith(CLASSIFIER_PREFIX)),
        eca_kernel_sizes=dict(recipe.eca_kernel_sizes))
    log.info("backbone %s from %s: %d tensors loaded%s; not used: %s", arch, weights, len(report.loaded),
             f", ECA kernel sizes {report.kernel_string}" if report.eca_kernel_sizes else "",
             ", ".join(report.dropped) or "nothing")
    return body, report


def ecanet_fpn_backbone(arch: str, k_size: object = None, trainable_layers: int = PAPER_TRAINABLE_LAYERS,
                        norm_layer: Callable[[int], nn.Module] = FrozenBatchNorm2d,
                        weights: str | os.PathLike | None = None, returned_layers: Sequence[int] | None = None,
                        extra_blocks: ExtraFPNBlock | None = None, eca_impl: str = "auto") -> BackboneWithFPN:
    """An ecanet ResNet with a feature pyramid network: torchvision's ``BackboneWithFPN``.

    >>> backbone = ecanet_fpn_backbone("eca_resnet50", k_size="3377")
    >>> backbone.out_channels
    256

    Args:
        arch: a ResNet of :func:`backbone_archs` (``'resnet50'``, ``'se_resnet101'``, ``'eca_resnet50'``...).
        k_size: ECA kernel sizes (one odd int, or one per stage: ``'3357'``); None: the file's with
            ``weights``, else the paper's adaptive psi(C). With ``weights``, a value that disagrees with the
            file is a :class:`~ecanet.errors.CheckpointError`.
        trainable_layers: how many of layer4, layer3, layer2, layer1, conv1 (in that order) train; the others
            are frozen (``requires_grad=False``). 3: the stem and layer1 frozen, as torchvision's default and
            mmdetection's ``frozen_stages=1``.
        norm_layer: the body's normalisation; ``FrozenBatchNorm2d`` (fixed statistics and affine, as
            torchvision's detectors and mmdetection's ``norm_eval=True``) or ``nn.BatchNorm2d`` (statistics
            updated from each training batch, in every stage, frozen ones included, and affine parameters
            trained in the unfrozen stages: for training from scratch, as ``--norm bn``).
        weights: a classification checkpoint (official ECA-Net file, torchvision file, ecanet checkpoint or
            export folder) of ``arch``; its ``fc.*`` is dropped. The report is ``backbone.weights_report``.
        returned_layers: the stages the FPN takes, from 1-4 (strides 4-32); default [1, 2, 3, 4].
        extra_blocks: the FPN's extra levels; default ``LastLevelMaxPool`` (P6 by max-pooling P5, Faster and
            Mask R-CNN); RetinaNet passes ``LastLevelP6P7``.
        eca_impl: how the ECA layers compute (see :func:`ecanet.models.create_model`).

    Returns:
        ``BackboneWithFPN``: ``body`` (the ResNet without avgpool and fc, keys as in the classification
        network), ``fpn``, ``out_channels`` = 256; forward returns an OrderedDict of (B, 256, H/s, W/s).
    """
    if not isinstance(trainable_layers, int) or not 0 <= trainable_layers <= MAX_TRAINABLE_LAYERS:
        raise ConfigError(f"trainable_layers must be an integer from 0 to {MAX_TRAINABLE_LAYERS} (how many of "
                          f"layer4, layer3, layer2, layer1, conv1 train), got {trainable_layers!r}. The paper's "
                          f"detectors use {PAPER_TRAINABLE_LAYERS}.")
    if returned_layers is not None and (not returned_layers or not set(returned_layers) <= {1, 2, 3, 4}):
        raise ConfigError(f"returned_layers must be stage numbers from 1 to 4 (strides 4, 8, 16, 32), got "
                          f"{list(returned_layers)!r}. Pass e.g. [1, 2, 3, 4] (Faster R-CNN) or [2, 3, 4] (RetinaNet).")
    body, report = build_body(arch, k_size, norm_layer, weights, eca_impl)
    # torchvision's own helper behind resnet_fpn_backbone: the same freezing rule, IntermediateLayerGetter and
    # FPN, so a plain resnet50 gives torchvision's network exactly. It takes any module with ResNet's names.
    backbone = _resnet_fpn_extractor(body, trainable_layers, list(returned_layers) if returned_layers else None,
                                     extra_blocks)
    backbone.weights_report = report
    backbone.eca_impl = getattr(body, "eca_impl", eca_impl)
    return backbone
