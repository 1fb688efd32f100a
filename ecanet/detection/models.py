"""The ECA paper's COCO detectors as torchvision models: Faster R-CNN, Mask R-CNN and RetinaNet.

:func:`build_detector` puts an :func:`~ecanet.detection.backbone.ecanet_fpn_backbone` into torchvision's
``FasterRCNN`` / ``MaskRCNN`` / ``RetinaNet``; heads, anchors, box coding, losses and post-processing are
torchvision's. The FPNs follow mmdetection, which the paper's authors trained with:

* Faster / Mask R-CNN: P2-P5 from C2-C5, P6 by max-pooling P5 (``LastLevelMaxPool``), torchvision's default.
* RetinaNet: P3-P5 from C3-C5, P6 by a stride-2 3x3 convolution of **C5** and P7 from P6
  (``LastLevelP6P7(C5 channels, 256)``), as mmdetection v1's RetinaNet (``extra_convs_on_inputs=True``) and
  torchvision's ``retinanet_resnet50_fpn_v2``; torchvision's v1 ``retinanet_resnet50_fpn`` takes P6 from P5.
  The head is the original (no GroupNorm), as mmdetection's ``RetinaHead``.

``num_classes`` counts torchvision's COCO ids (91, background 0 included for the R-CNNs); see
:mod:`ecanet.detection.costs` for how this changes parameter counts against the paper's.
"""
from __future__ import annotations

import inspect
import os
from typing import Any, Callable

from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from ..constants import DETECTOR_NAMES
from ..errors import ConfigError
from ..models.resnet import RESNET_SPECS, STAGE_WIDTHS
from .backbone import FPN_CHANNELS, PAPER_TRAINABLE_LAYERS, backbone_archs, ecanet_fpn_backbone

COCO_NUM_CLASSES = 91          # torchvision's COCO category ids 1-90 plus background 0
DEFAULT_MIN_SIZE = 800         # shorter image side after resizing (mmdetection's img_scale (1333, 800))
DEFAULT_MAX_SIZE = 1333        # longer side cap
RETINANET_LAYERS = [2, 3, 4]   # C3-C5: P3-P5, then P6 and P7 from the extra block
# What GeneralizedRCNNTransform reads from its **kwargs, not its signature (torchvision's references pass
# _skip_resize for large-scale jitter, which resizes in the data pipeline).
TRANSFORM_KWARGS = {"_skip_resize"}

DETECTORS: dict[str, type[nn.Module]] = dict(zip(DETECTOR_NAMES, (FasterRCNN, MaskRCNN, RetinaNet)))


def list_detectors() -> list[str]:
    """The detector names :func:`build_detector` takes."""
    return sorted(DETECTORS)


def _check_detector_name(name: str) -> None:
    if name not in DETECTORS:
        raise ConfigError(f"unknown detector {name!r}; known: {', '.join(list_detectors())}. "
                          f"Pass one of them (--detector).")


def detector_options(name: str) -> list[str]:
    """The keyword arguments torchvision's detector ``name`` uses, besides what :func:`build_detector` sets: its
    constructor's and those of the classes it passes the rest on to (``MaskRCNN`` to ``FasterRCNN``, both
    R-CNNs and ``RetinaNet`` to ``GeneralizedRCNNTransform``). An unknown ``name`` is a ConfigError."""
    _check_detector_name(name)
    classes = [cls for cls in DETECTORS[name].__mro__[:DETECTORS[name].__mro__.index(nn.Module)]
               if cls is not GeneralizedRCNN] + [GeneralizedRCNNTransform]
    names = {parameter.name for cls in classes for parameter in inspect.signature(cls.__init__).parameters.values()
             if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)}
    return sorted((names | TRANSFORM_KWARGS) - {"self", "backbone", "num_classes", "min_size", "max_size"})


def _check_detector_options(name: str, options: dict) -> None:
    """torchvision's detectors hand keyword arguments they do not know to ``GeneralizedRCNNTransform``, which
    ignores them: a misspelt or misplaced option would be dropped without a word. Refuse it instead."""
    unknown = sorted(set(options) - set(detector_options(name)))
    if unknown:
        hint = (" A classification checkpoint for the backbone is backbone_weights=PATH."
                if {"weights", "weights_backbone", "pretrained"} & set(unknown) else "")
        raise ConfigError(f"build_detector({name!r}, ...) got keyword arguments that neither it nor torchvision's "
                          f"{DETECTORS[name].__name__} takes: {', '.join(unknown)}.{hint} The detector's own options "
                          f"are {', '.join(detector_options(name))}.")


def _check_num_classes(num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes must be an integer of at least 2 (the class ids, background included), "
                          f"got {num_classes!r}. COCO with torchvision's ids is {COCO_NUM_CLASSES}.")
    return num_classes


def build_detector(name: str, arch: str, num_classes: int = COCO_NUM_CLASSES, k_size: object = None,
                   trainable_layers: int = PAPER_TRAINABLE_LAYERS,
                   backbone_weights: str | os.PathLike | None = None, eca_impl: str = "auto",
                   min_size: int = DEFAULT_MIN_SIZE, max_size: int = DEFAULT_MAX_SIZE,
                   norm_layer: Callable[[int], nn.Module] = FrozenBatchNorm2d, **kwargs: Any) -> nn.Module:
    """A torchvision detector with an ecanet ResNet-FPN backbone.

    >>> model = build_detector("mask_rcnn", "eca_resnet50", k_size="3377")   # the paper's Mask R-CNN row

    Args:
        name: ``'faster_rcnn'``, ``'mask_rcnn'`` or ``'retinanet'`` (:func:`list_detectors`).
        arch: the backbone, a ResNet (``'eca_resnet50'``; :func:`~ecanet.detection.backbone.backbone_archs`).
        num_classes: class ids including background (91: torchvision's COCO ids).
        k_size, trainable_layers, eca_impl, norm_layer: see :func:`ecanet_fpn_backbone`.
        backbone_weights: a classification checkpoint for the backbone (its ECA kernel sizes are used).
        min_size, max_size: the resizing of torchvision's ``GeneralizedRCNNTransform`` (shorter side to
            ``min_size``, longer side at most ``max_size``).
        **kwargs: passed to the torchvision detector (e.g. ``box_detections_per_img``, ``rpn_post_nms_top_n_test``;
            :func:`detector_options` lists them).

    Raises:
        ConfigError: unknown ``name`` or ``arch`` (the message lists the known ones), bad ``num_classes``, a keyword
            argument the detector does not take.
    """
    _check_detector_name(name)
    if arch not in backbone_archs():
        raise ConfigError(f"unknown detection backbone {arch!r}; known: {', '.join(backbone_archs())}. "
                          f"Pass one of them (--arch).")
    num_classes = _check_num_classes(num_classes)
    _check_detector_options(name, kwargs)
    backbone_options = dict(arch=arch, k_size=k_size, trainable_layers=trainable_layers, norm_layer=norm_layer,
                            weights=backbone_weights, eca_impl=eca_impl)
    if name == "retinanet":
        c5_channels = _c5_channels(arch)
        backbone = ecanet_fpn_backbone(**backbone_options, returned_layers=RETINANET_LAYERS,
                                       extra_blocks=LastLevelP6P7(c5_channels, FPN_CHANNELS))
    else:
        backbone = ecanet_fpn_backbone(**backbone_options)
    model = DETECTORS[name](backbone, num_classes=num_classes, min_size=min_size, max_size=max_size, **kwargs)
    model.eca_impl = backbone.eca_impl
    return model


def _c5_channels(arch: str) -> int:
    """Channels of layer4's output: 512 for ResNet-18/34, 2048 for ResNet-50 and deeper."""
    block, _ = RESNET_SPECS[int(arch.rpartition("resnet")[2])]
    return STAGE_WIDTHS[-1] * block.expansion
