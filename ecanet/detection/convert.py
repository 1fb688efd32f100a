"""The paper's released COCO detectors (mmdetection v1 checkpoints) as ecanet's torchvision detectors.

The official README publishes six detectors trained with mmdetection v1 (Faster R-CNN, Mask R-CNN and
RetinaNet on ECA-ResNet-50/101). Their files are mmcv checkpoints, ``{'meta', 'state_dict', 'optimizer'}``,
with plain contents (``meta`` holds strings, ints and the class-name tuple), so
``torch.load(weights_only=True)`` reads them. :func:`convert_mmdet_checkpoint` turns one into a state_dict
that ``build_detector(name, arch, k_size=...)`` loads with ``strict=True``; :func:`build_converted_detector`
builds that detector and gives it mmdetection v1's anchors (:func:`match_mmdet_v1`).

    >>> state_dict, report = convert_mmdet_checkpoint("mask_rcnn_ecanet50_k3377_bs8_lr0.01.pth", "mask_rcnn")
    >>> model = build_converted_detector(report)       # eca_resnet50, ECA kernels 3377, v1 anchors
    >>> model.load_state_dict(state_dict)

The layout was read from mmdetection's own code at its v1 releases (v1.0rc0 to v1.2 agree on every name
and shape below): ``mmdet/models/backbones/resnet.py``, ``necks/fpn.py``, ``anchor_heads/{anchor_head,
rpn_head,retina_head}.py``, ``bbox_heads/{bbox_head,convfc_bbox_head}.py``, ``mask_heads/fcn_mask_head.py``,
``core/anchor/anchor_generator.py``, ``core/bbox/transforms.py``, ``datasets/coco.py`` and the
``configs/{faster_rcnn,mask_rcnn,retinanet}_r50_fpn_1x.py`` the paper's rows follow. In v1 the R-CNN heads
are top-level (``bbox_head.*``, ``mask_head.*``; v2 moved them under ``roi_head.`` and reordered the
classes, which this module refuses). Key by key (``i`` an FPN level or head layer):

==========================================  ===============================================  ==========
mmdetection v1                              ecanet / torchvision                             shape
==========================================  ===============================================  ==========
``backbone.<resnet key>``                   ``backbone.body.<same key>``                     same
``backbone.layerS.B.<*>.weight`` (1, 1, k)  ``backbone.body.layerS.B.eca.conv.weight``       (1, 1, k)
``neck.lateral_convs.i.conv.*``             ``backbone.fpn.inner_blocks.i.0.*``              (256, C, 1, 1)
``neck.fpn_convs.i.conv.*`` (i < levels)    ``backbone.fpn.layer_blocks.i.0.*``              (256, 256, 3, 3)
``neck.fpn_convs.3/4.conv.*`` (RetinaNet)   ``backbone.fpn.extra_blocks.p6/p7.*``            P6 from C5
``rpn_head.rpn_conv.*``                     ``rpn.head.conv.0.0.*``                          (256, 256, 3, 3)
``rpn_head.rpn_cls.*``                      ``rpn.head.cls_logits.*``                        (3, 256, 1, 1)
``rpn_head.rpn_reg.*``                      ``rpn.head.bbox_pred.*``                         (12, 256, 1, 1)
``bbox_head.shared_fcs.0/1.*``              ``roi_heads.box_head.fc6/fc7.*``                 in 12544/1024
``bbox_head.fc_cls.*``  81 rows             ``roi_heads.box_predictor.cls_score.*`` 91 rows  class map
``bbox_head.fc_reg.*``  81 x 4 rows         ``roi_heads.box_predictor.bbox_pred.*`` 91 x 4   class map
``mask_head.convs.i.conv.*``                ``roi_heads.mask_head.i.0.*``                    (256, 256, 3, 3)
``mask_head.upsample.*``                    ``roi_heads.mask_predictor.conv5_mask.*``        deconv 2x2
``mask_head.conv_logits.*`` 81 channels     ``roi_heads.mask_predictor.mask_fcn_logits.*``   class map
``bbox_head.cls_convs.i.conv.*``            ``head.classification_head.conv.i.0.*``          (256, 256, 3, 3)
``bbox_head.reg_convs.i.conv.*``            ``head.regression_head.conv.i.0.*``              (256, 256, 3, 3)
``bbox_head.retina_cls.*`` 9 x 80           ``head.classification_head.cls_logits.*`` 9 x 91 class map
``bbox_head.retina_reg.*``                  ``head.regression_head.bbox_reg.*``              (36, 256, 3, 3)
==========================================  ===============================================  ==========

BatchNorm step counters (``num_batches_tracked``) are dropped: the detectors' ``FrozenBatchNorm2d`` keeps
none, and mmdetection v1 ran its BatchNorm on the stored statistics (``norm_eval=True``), which is what
``FrozenBatchNorm2d`` computes. The ECA kernel sizes are read off the ``(1, 1, k)`` weights; the ECA layer's
name inside the authors' mmdetection ResNet is not published, so any single such weight in a block is taken.

**Classes.** mmdetection v1 numbers COCO's 80 categories 1-80 in the order of their ids (``cat2label``),
background 0; torchvision's COCO models use the category ids themselves (1-90 with ten gaps, background
0). Softmax rows (``fc_cls``), box-regression row groups (``fc_reg``, 4 per class, background included in
both) and mask channels are moved from index ``i`` to ``COCO_CATEGORY_IDS[i - 1]``, background staying at
0. RetinaNet's sigmoid classifier has 80 channels per anchor without background (channel ``i`` is category
``COCO_CATEGORY_IDS[i]``, laid out anchor-major, ``a * 80 + i``, as torchvision's ``a * 91 + id``). The
ids no category has (and RetinaNet's id 0) get weight 0 and bias :data:`UNUSED_CLASS_LOGIT`: their softmax
and sigmoid probabilities are exactly 0, so the other classes' scores are those of the released model.

**Exactly the same.** Anchor order within a location (ratio-major, scales inner, in both libraries), the
head's channel layouts (anchor-major, then class or box coordinate), box coding (v1's ``target_stds``
(1, 1, 1, 1) for the RPN and RetinaNet and (0.1, 0.1, 0.2, 0.2) for the R-CNN head are the reciprocals of
torchvision's ``BoxCoder`` weights (1, 1, 1, 1) and (10, 10, 5, 5); both clip log-sizes at log(1000/16)),
the RPN's sigmoid objectness, the image normalisation (ImageNet mean and std) and the RoI features
(7x7 and 14x14, two samples per bin, no half-pixel alignment, levels P2-P5 by box size).

**What weights cannot carry.** :func:`match_mmdet_v1` (which :func:`build_converted_detector` applies)
makes the model do as v1 where the difference lies outside the weights (:data:`MATCHED`):

* The "+1" pixel convention and the anchors. v1 measures a box [x1, x2] as ``x2 - x1 + 1`` pixels
  (anchors, box coding, RoIAlign's roi end, NMS overlaps, mask pasting), torchvision as ``x2 - x1``: a v1
  box is the continuous box [x1, x2 + 1]. v1 centres its anchors in the middle of each stride cell and
  shifts them by the configured strides; torchvision's ``AnchorGenerator`` centres them on the cell's
  corner (half a stride away: 32 pixels on P6) and shifts them by image size // feature size (61 instead
  of 64 on P6 of an 800-pixel image). Given v1's anchors as continuous boxes
  (:class:`MmdetV1AnchorGenerator`), torchvision decodes, clips, suppresses and pools the boxes v1 does,
  and writes them in COCO's continuous convention, as v1 wrote its results. RPN sizes (32-512) and the
  aspect ratios (0.5, 1, 2) are the same in both libraries.
* RetinaNet's anchor sizes: v1's are ``4 * 2**(i/3) * stride`` (32, 40.3, 50.8 on P3); torchvision's are
  truncated to integers (32, 40, 50).
* RetinaNet's P7: v1's FPN computes it from P6 without a ReLU (``relu_before_extra_convs=False``),
  torchvision's ``LastLevelP6P7`` with one (:class:`MmdetV1LastLevelP6P7` computes it as v1).
* RetinaNet's detections per image: v1 keeps 100, torchvision 300.

What differs even so (:data:`REMAINING`):

* RoIAlign sizes a RoI at least one feature pixel in torchvision, at least zero in v1 (RoIs under one
  feature pixel, 4 image pixels on P2, are pooled differently). Masks are pasted differently: v1 resizes
  the 28x28 mask to the integer box with OpenCV, torchvision interpolates a padded mask.
* RetinaNet's candidates: v1 keeps, per level, the 1000 anchors whose best class scores highest, then
  applies the 0.05 threshold; torchvision the 1000 best (anchor, class) pairs above 0.05.
* Resizing: mmcv rounds the resized size and resizes the 8-bit image with OpenCV; torchvision floors the
  size and interpolates the float image (and scales boxes back per axis, v1 with one factor).
* Where the authors put ECA inside mmdetection's ResNet block is not published; ecanet's place (after the
  block's last BatchNorm, before the residual addition) is the classification code's.

mmdetection's own v1-to-v2 upgrade, with its legacy anchors, box coder and RoIAlign, reports AP 0.3-0.5
below v1 for its models; converted files should be evaluated, not assumed to reproduce the README's AP.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock

from ..checkpoint import NetworkSpec, read_checkpoint, strip_wrapper_prefixes
from ..errors import CheckpointError, ConfigError
from ..models import set_eca_kernel_sizes
from ..models.resnet import RESNET_SPECS, STAGE_WIDTHS, BasicBlock, Bottleneck
from .backbone import BN_STEP_COUNTER
from .models import COCO_NUM_CLASSES, DETECTORS, build_detector

# COCO's 80 category ids in mmdetection v1's label order (labels 1-80; torchvision uses the ids themselves).
COCO_CATEGORY_IDS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33,
    34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
    62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90)
UNUSED_COCO_IDS: tuple[int, ...] = tuple(sorted(set(range(1, COCO_NUM_CLASSES)) - set(COCO_CATEGORY_IDS)))
BACKGROUND = 0
MMDET_SOFTMAX_CLASSES = len(COCO_CATEGORY_IDS) + 1   # 81: fc_cls, fc_reg and conv_logits, background at 0
MMDET_SIGMOID_CLASSES = len(COCO_CATEGORY_IDS)       # 80: RetinaNet's retina_cls, per anchor
BOX_CODING = 4                                       # dx, dy, dw, dh per class (fc_reg) or anchor
# The logit of a class no COCO category has: exp(-1000) and sigmoid(-1000) are exactly 0 in float32 (and
# float16), so softmax over the 91 ids gives the 81 released classes their released probabilities.
UNUSED_CLASS_LOGIT = -1000.0

# mmdetection v1's anchors (configs/*_r50_fpn_1x.py): RPN one scale per level, RetinaNet three per octave.
ANCHOR_RATIOS = (0.5, 1.0, 2.0)                      # height / width, in both libraries
RPN_STRIDES = (4, 8, 16, 32, 64)                     # P2-P6
RPN_SCALES = (8.0,)                                  # anchor side = scale * stride: 32-512
RETINANET_STRIDES = (8, 16, 32, 64, 128)             # P3-P7
RETINANET_OCTAVE_BASE_SCALE = 4
RETINANET_SCALES_PER_OCTAVE = 3
RETINANET_SCALES = tuple(RETINANET_OCTAVE_BASE_SCALE * 2 ** (i / RETINANET_SCALES_PER_OCTAVE)
                         for i in range(RETINANET_SCALES_PER_OCTAVE))   # 4, 5.04, 6.35
RETINANET_MAX_DETECTIONS = 100                       # test_cfg max_per_img
# v1 box [x1, y1, x2, y2] (x2 the last pixel inside) -> continuous box [x1, y1, x2 + 1, y2 + 1]
INCLUSIVE_TO_CONTINUOUS = (0.0, 0.0, 1.0, 1.0)

V2_HEAD_PREFIX = "roi_head."
SHOW_KEYS = 5

_CONV = r"\.conv\.(weight|bias)$"
_PARAM = r"\.(weight|bias)$"
# (mmdetection v1 key pattern, torchvision key): neck and heads; _backbone maps the backbone.
_TWO_STAGE_FPN = [
    (r"^neck\.lateral_convs\.([0-3])" + _CONV, r"backbone.fpn.inner_blocks.\1.0.\2"),
    (r"^neck\.fpn_convs\.([0-3])" + _CONV, r"backbone.fpn.layer_blocks.\1.0.\2"),
]
_RPN = [
    (r"^rpn_head\.rpn_conv" + _PARAM, r"rpn.head.conv.0.0.\1"),
    (r"^rpn_head\.rpn_cls" + _PARAM, r"rpn.head.cls_logits.\1"),
    (r"^rpn_head\.rpn_reg" + _PARAM, r"rpn.head.bbox_pred.\1"),
]
_BOX_HEAD = [
    (r"^bbox_head\.shared_fcs\.0" + _PARAM, r"roi_heads.box_head.fc6.\1"),
    (r"^bbox_head\.shared_fcs\.1" + _PARAM, r"roi_heads.box_head.fc7.\1"),
    (r"^bbox_head\.fc_cls" + _PARAM, r"roi_heads.box_predictor.cls_score.\1"),
    (r"^bbox_head\.fc_reg" + _PARAM, r"roi_heads.box_predictor.bbox_pred.\1"),
]
_MASK_HEAD = [
    (r"^mask_head\.convs\.(\d+)" + _CONV, r"roi_heads.mask_head.\1.0.\2"),
    (r"^mask_head\.upsample" + _PARAM, r"roi_heads.mask_predictor.conv5_mask.\1"),
    (r"^mask_head\.conv_logits" + _PARAM, r"roi_heads.mask_predictor.mask_fcn_logits.\1"),
]
_RETINANET = [
    (r"^neck\.lateral_convs\.([0-2])" + _CONV, r"backbone.fpn.inner_blocks.\1.0.\2"),
    (r"^neck\.fpn_convs\.([0-2])" + _CONV, r"backbone.fpn.layer_blocks.\1.0.\2"),
    (r"^neck\.fpn_convs\.3" + _CONV, r"backbone.fpn.extra_blocks.p6.\1"),   # from C5 (extra_convs_on_inputs)
    (r"^neck\.fpn_convs\.4" + _CONV, r"backbone.fpn.extra_blocks.p7.\1"),
    (r"^bbox_head\.cls_convs\.(\d+)" + _CONV, r"head.classification_head.conv.\1.0.\2"),
    (r"^bbox_head\.reg_convs\.(\d+)" + _CONV, r"head.regression_head.conv.\1.0.\2"),
    (r"^bbox_head\.retina_cls" + _PARAM, r"head.classification_head.cls_logits.\1"),
    (r"^bbox_head\.retina_reg" + _PARAM, r"head.regression_head.bbox_reg.\1"),
]
KEY_RULES: dict[str, list[tuple[str, str]]] = {
    "faster_rcnn": _TWO_STAGE_FPN + _RPN + _BOX_HEAD,
    "mask_rcnn": _TWO_STAGE_FPN + _RPN + _BOX_HEAD + _MASK_HEAD,
    "retinanet": _RETINANET,
}

# The class-indexed layers: torchvision key prefix -> (rows per class, sigmoid layout, fill bias of unused ids)
_CLASS_LAYERS: dict[str, tuple[int, bool, float]] = {
    "roi_heads.box_predictor.cls_score": (1, False, UNUSED_CLASS_LOGIT),
    "roi_heads.box_predictor.bbox_pred": (BOX_CODING, False, 0.0),
    "roi_heads.mask_predictor.mask_fcn_logits": (1, False, 0.0),
    "head.classification_head.cls_logits": (1, True, UNUSED_CLASS_LOGIT),
}

# What converting weights cannot carry over. MATCHED: what match_mmdet_v1 (build_converted_detector) then
# makes the model do as mmdetection v1; REMAINING: what differs even so.
_ANCHORS = ("anchors: v1 centres them in the middle of each stride cell, measures them with the +1 pixel "
            "convention and shifts them by the configured strides; torchvision's AnchorGenerator centres them on "
            "the cell corner and shifts them by image size // feature size. match_mmdet_v1 gives torchvision v1's "
            "anchors as continuous boxes, under which box decoding, clipping, NMS overlaps and RoI sampling "
            "agree with v1's +1 arithmetic")
MATCHED: dict[str, tuple[str, ...]] = {
    "faster_rcnn": (_ANCHORS,),
    "mask_rcnn": (_ANCHORS,),
    "retinanet": (_ANCHORS,
                  "anchor sizes: v1's are 4 * 2**(i/3) * stride (40.3 and 50.8 pixels on P3); torchvision's "
                  "RetinaNet truncates them to integers (40, 50)",
                  "P7: v1 computes it from P6 without a ReLU, torchvision's LastLevelP6P7 with one",
                  "detections per image: v1 keeps 100, torchvision's RetinaNet 300"),
}
_COMMON = (
    "resizing: mmcv rounds the resized size and resizes the 8-bit image with OpenCV, torchvision floors it and "
    "interpolates the float image; boxes are scaled back with one factor (v1) or per axis (torchvision)",
    "ECA's place inside the authors' mmdetection ResNet block is not published; ecanet's is the "
    "classification code's (after the block's last BatchNorm, before the residual addition)",
)
_ROI_ALIGN = ("RoIAlign: torchvision sizes a RoI at least one feature pixel, v1 at least zero: RoIs under one "
              "feature pixel (4 image pixels on P2) are pooled differently",)
REMAINING: dict[str, tuple[str, ...]] = {
    "faster_rcnn": _ROI_ALIGN + _COMMON,
    "mask_rcnn": _ROI_ALIGN + (
        "mask pasting: v1 resizes the 28x28 mask to the integer box (x2 - x1 + 1 pixels) with OpenCV, "
        "torchvision interpolates a padded mask into the continuous box: masks differ along their borders",) + _COMMON,
    "retinanet": (
        "candidates: v1 keeps per level the 1000 anchors whose best class scores highest, then applies the 0.05 "
        "threshold; torchvision keeps the 1000 best (anchor, class) pairs above 0.05",) + _COMMON,
}


# ---------------------------------------------------------------------------------------------- report
@dataclass(frozen=True)
class MmdetConversion:
    """What :func:`convert_mmdet_state_dict` did.

    Attributes:
        detector: ``'faster_rcnn'``, ``'mask_rcnn'`` or ``'retinanet'``.
        arch: the backbone read off the weights (``'eca_resnet50'``).
        eca_kernel_sizes: the file's ECA kernel size per layer (``'layer1.0.eca'`` -> 3); empty without ECA.
        converted: number of tensors written.
        dropped: the file's tensors left out (BatchNorm step counters, which FrozenBatchNorm2d has no use for).
        filled: the target rows no file tensor provides, and what they were set to.
        mmdet_version: the file's ``meta['mmdet_version']`` when it records one.
    """

    detector: str
    arch: str
    eca_kernel_sizes: dict[str, int]
    converted: int
    dropped: tuple[str, ...]
    filled: tuple[str, ...]
    mmdet_version: str | None = None

    @property
    def matched(self) -> tuple[str, ...]:
        """What :func:`match_mmdet_v1` makes the detector do as mmdetection v1 (:data:`MATCHED`)."""
        return MATCHED[self.detector]

    @property
    def remaining(self) -> tuple[str, ...]:
        """What differs from mmdetection v1 even with :func:`match_mmdet_v1` (:data:`REMAINING`)."""
        return REMAINING[self.detector]

    @property
    def kernel_string(self) -> str:
        """The ECA kernel sizes in the release's notation (``'3377'``); empty without ECA layers."""
        return NetworkSpec("", 0, self.eca_kernel_sizes).kernel_string

    @property
    def k_size(self) -> str | None:
        """The ``k_size`` for ``build_detector`` (one size per stage, ``'3377'``); None without ECA layers or
        when the sizes vary within a stage (:func:`build_converted_detector` then sets every layer's)."""
        stages: dict[str, set[int]] = {}
        for name, k in self.eca_kernel_sizes.items():
            stages.setdefault(name.split(".")[0], set()).add(k)
        uniform = len(stages) == len(STAGE_WIDTHS) and all(len(ks) == 1 for ks in stages.values())
        return "".join(str(next(iter(stages[f"layer{i}"]))) for i in range(1, len(STAGE_WIDTHS) + 1)) \
            if uniform and all(k < 10 for k in self.eca_kernel_sizes.values()) else None

    def summary(self) -> list[str]:
        """Lines for a person: what was converted, how to build the detector, what was not carried over."""
        kernels = f", ECA kernel sizes {self.kernel_string}" if self.eca_kernel_sizes else ""
        version = f" (mmdetection {self.mmdet_version})" if self.mmdet_version else ""
        build = f"build_detector({self.detector!r}, {self.arch!r}, k_size={self.k_size!r})"
        lines = [f"{self.detector} with {self.arch}{kernels}{version}: {self.converted} tensors converted",
                 "load it into build_converted_detector(report)" +
                 (f", or into match_mmdet_v1({build})" if self.k_size or not self.eca_kernel_sizes
                  else " (its ECA kernel sizes differ within a stage: no k_size string describes them)")]
        if self.dropped:
            lines.append(f"not carried over: {len(self.dropped)} BatchNorm step counters "
                         f"({BN_STEP_COUNTER}; FrozenBatchNorm2d keeps none)")
        lines += [f"no source: {text}" for text in self.filled]
        lines += [f"not in the weights, set by match_mmdet_v1: {text}" for text in self.matched]
        lines += [f"differs from mmdetection v1 even so: {text}" for text in self.remaining]
        return lines


# --------------------------------------------------------------------------------------------- backbone
_BLOCK_KEY = re.compile(r"^layer(\d)\.(\d+)\.(.+)$")


def _backbone(state_dict: Mapping[str, torch.Tensor], source: str
              ) -> tuple[dict[str, torch.Tensor], dict[str, int], list[str], str]:
    """The ``backbone.`` tensors as ``backbone.body.`` keys, the ECA kernel sizes, the dropped counters, and
    the architecture (``'eca_resnet50'``) read off the block structure."""
    out: dict[str, torch.Tensor] = {}
    eca: dict[str, int] = {}
    dropped: list[str] = []
    blocks: dict[int, set[int]] = {}
    for key, value in state_dict.items():
        rest = key[len("backbone."):]
        if rest.endswith(BN_STEP_COUNTER):
            dropped.append(key)
            continue
        match = _BLOCK_KEY.match(rest)
        if match:
            stage, block, inner = int(match[1]), int(match[2]), match[3]
            blocks.setdefault(stage, set()).add(block)
            if value.dim() == 3 and tuple(value.shape[:2]) == (1, 1) and inner.endswith("weight"):
                layer = f"layer{stage}.{block}.eca"       # a (1, 1, k) weight: the block's ECA convolution
                if layer in eca:
                    raise CheckpointError(f"{source}: block backbone.layer{stage}.{block} holds two (1, 1, k) "
                                          f"weights; an ECA-ResNet block has one. The file is not an ECA-ResNet "
                                          f"detector ecanet can convert.")
                eca[layer] = int(value.shape[-1])
                rest = f"{layer}.conv.weight"
        out[f"backbone.body.{rest}"] = value
    layers = tuple(len(blocks.get(stage, ())) for stage in range(1, 5))
    block_type = Bottleneck if "backbone.body.layer1.0.conv3.weight" in out else BasicBlock
    depth = next((d for d, (b, lay) in RESNET_SPECS.items() if b is block_type and lay == layers), None)
    if depth is None:
        raise CheckpointError(f"{source}: its backbone has {layers} {block_type.__name__}s per stage, which is "
                              f"none of ResNet-18/34/50/101/152. Only the ResNet-FPN detectors can be converted.")
    return out, eca, dropped, f"{'eca_' if eca else ''}resnet{depth}"


# ---------------------------------------------------------------------------------------------- classes
def _class_targets(sigmoid: bool) -> tuple[list[int], list[int]]:
    """(source indices, torchvision ids): v1's softmax index i -> id (background 0 -> 0), sigmoid index
    i -> COCO_CATEGORY_IDS[i]."""
    if sigmoid:
        return list(range(MMDET_SIGMOID_CLASSES)), list(COCO_CATEGORY_IDS)
    return list(range(MMDET_SOFTMAX_CLASSES)), [BACKGROUND, *COCO_CATEGORY_IDS]


def remap_classes(value: torch.Tensor, rows_per_class: int, sigmoid: bool, fill: float) -> torch.Tensor:
    """A class-indexed weight or bias in v1's class order -> torchvision's 91 COCO ids.

    ``value`` has ``groups * classes * rows_per_class`` rows (dim 0): groups are anchors (RetinaNet, 9) or one,
    classes 81 (softmax, background first) or 80 (sigmoid), rows 4 for box regression. Rows of ids without
    a source get 0, and ``fill`` for a bias.
    """
    sources, ids = _class_targets(sigmoid)
    per_group = len(sources) * rows_per_class
    groups = value.shape[0] // per_group
    rest = tuple(value.shape[1:])
    grouped = value.reshape(groups, len(sources), rows_per_class, *rest)          # (G, C_v1, R, ...)
    out = value.new_zeros(groups, COCO_NUM_CLASSES, rows_per_class, *rest)         # (G, 91, R, ...)
    if value.dim() == 1:
        out.fill_(fill)
    out[:, ids] = grouped[:, sources]
    return out.reshape(groups * COCO_NUM_CLASSES * rows_per_class, *rest)


def _check_class_rows(key: str, value: torch.Tensor, rows_per_class: int, sigmoid: bool, source: str) -> None:
    classes = MMDET_SIGMOID_CLASSES if sigmoid else MMDET_SOFTMAX_CLASSES
    if value.shape[0] % (classes * rows_per_class):
        raise CheckpointError(
            f"{source}: {key} has {value.shape[0]} outputs, not a multiple of {classes * rows_per_class} "
            f"({classes} COCO classes{'' if sigmoid else ' with background'} x {rows_per_class}). The converter "
            f"maps mmdetection v1's COCO models only; a model of another dataset or a class-agnostic head cannot "
            f"become a torchvision COCO detector.")


def _filled(detector: str) -> tuple[str, ...]:
    gaps = ", ".join(map(str, UNUSED_COCO_IDS))
    if detector == "retinanet":
        return (f"head.classification_head.cls_logits: ids 0 (background) and {gaps} (no COCO category) of "
                f"every anchor: weight 0, bias {UNUSED_CLASS_LOGIT:g} (sigmoid 0)",)
    filled = (f"roi_heads.box_predictor.cls_score: ids {gaps} (no COCO category): weight 0, bias "
              f"{UNUSED_CLASS_LOGIT:g} (softmax probability 0)",
              f"roi_heads.box_predictor.bbox_pred: the box rows of ids {gaps}: 0")
    if detector == "mask_rcnn":
        filled += (f"roi_heads.mask_predictor.mask_fcn_logits: the channels of ids {gaps}: 0",)
    return filled


# ---------------------------------------------------------------------------------------------- convert
def _file_detector(keys: set[str]) -> str | None:
    if any(k.startswith("mask_head.") for k in keys):
        return "mask_rcnn"
    if any(k.startswith("rpn_head.") for k in keys):
        return "faster_rcnn"
    if any(k.startswith("bbox_head.retina_cls") for k in keys):
        return "retinanet"
    return None


def _check_layout(state_dict: Mapping[str, Any], detector: str, source: str) -> None:
    if detector not in DETECTORS:
        raise CheckpointError(f"unknown detector {detector!r}; the converter handles "
                              f"{', '.join(sorted(DETECTORS))}. Pass the detector the file holds.")
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: {bad[0]!r} is a {type(state_dict[bad[0]]).__name__}, not a tensor. "
                              f"Pass the checkpoint's 'state_dict' (name -> tensor).")
    keys = set(state_dict)
    if any(k.startswith(V2_HEAD_PREFIX) for k in keys):
        raise CheckpointError(f"{source} is an mmdetection v2 checkpoint ('{V2_HEAD_PREFIX}...' keys): v2 moved "
                              f"background to the last class and out of the box and mask heads. The converter "
                              f"reads mmdetection v1 files, the format of the ECA-Net release.")
    held = _file_detector(keys)
    if held is None or not any(k.startswith("backbone.layer1.") for k in keys):
        raise CheckpointError(f"{source} is not an mmdetection v1 ResNet-FPN detector: no 'backbone.layer1.*' "
                              f"with 'rpn_head.*', 'mask_head.*' or 'bbox_head.retina_cls.*' (first keys: "
                              f"{sorted(keys)[:SHOW_KEYS]}). Pass one of the released detector files.")
    if held != detector:
        raise CheckpointError(f"{source} holds a {held}, not a {detector}. Pass detector {held!r} "
                              f"(--detector {held}).")


def convert_mmdet_state_dict(state_dict: Mapping[str, torch.Tensor], detector: str, source: str = "checkpoint",
                             mmdet_version: str | None = None) -> tuple[dict[str, torch.Tensor], MmdetConversion]:
    """An mmdetection v1 detector's state_dict as the state_dict of ecanet's ``build_detector(detector, ...)``.

    Args:
        state_dict: the checkpoint's ``'state_dict'`` (a ``module.`` prefix is removed).
        detector: ``'faster_rcnn'``, ``'mask_rcnn'`` or ``'retinanet'``: what the file holds.
        source: the file's name, for messages.

    Returns:
        ``(tensors, report)``: ``tensors`` loads with ``strict=True`` into
        ``build_detector(detector, report.arch, k_size=report.kernel_string)`` (91 COCO ids, FrozenBatchNorm2d);
        ``report`` is a :class:`MmdetConversion`.

    Raises:
        CheckpointError: the file is not an mmdetection v1 COCO ResNet-FPN detector of that kind (v2 layout,
            another detector, another dataset's classes, missing or unknown layers).
    """
    state_dict = strip_wrapper_prefixes(state_dict)
    _check_layout(state_dict, detector, source)
    backbone_keys = {k: v for k, v in state_dict.items() if k.startswith("backbone.")}
    out, eca, dropped, arch = _backbone(backbone_keys, source)
    rules = [(re.compile(pattern), target) for pattern, target in KEY_RULES[detector]]
    unknown = []
    for key, value in state_dict.items():
        if key in backbone_keys:
            continue
        if key.endswith(BN_STEP_COUNTER):
            dropped.append(key)
            continue
        target = next((pattern.sub(replacement, key) for pattern, replacement in rules if pattern.search(key)), None)
        if target is None:
            unknown.append(key)
            continue
        layer = target.rpartition(".")[0]
        if layer in _CLASS_LAYERS:
            rows_per_class, sigmoid, fill = _CLASS_LAYERS[layer]
            _check_class_rows(key, value, rows_per_class, sigmoid, source)
            value = remap_classes(value, rows_per_class, sigmoid, fill if target.endswith("bias") else 0.0)
        out[target] = value
    if unknown:
        more = f" (+{len(unknown) - SHOW_KEYS} more)" if len(unknown) > SHOW_KEYS else ""
        raise CheckpointError(f"{source}: {len(unknown)} tensors belong to no layer of ecanet's {detector}: "
                              f"{', '.join(unknown[:SHOW_KEYS])}{more}. The file holds a variant (other heads, "
                              f"normalisation in the FPN or heads) that the converter does not map.")
    _check_fits(out, detector, arch, eca, source)
    report = MmdetConversion(detector=detector, arch=arch, eca_kernel_sizes=eca, converted=len(out),
                             dropped=tuple(dropped), filled=_filled(detector), mmdet_version=mmdet_version)
    return out, report


def _check_fits(state_dict: Mapping[str, torch.Tensor], detector: str, arch: str, eca: Mapping[str, int],
                source: str) -> None:
    """Every key and shape of ecanet's detector, checked on a model of the meta device (nothing allocated)."""
    with torch.device("meta"):
        expected = _build(detector, arch, eca).state_dict()
    problems = {
        "missing": [k for k in expected if k not in state_dict],
        "left over": [k for k in state_dict if k not in expected],
        "shape-mismatched": [f"{k}: file {tuple(state_dict[k].shape)} vs detector {tuple(expected[k].shape)}"
                             for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape],
    }
    parts = [f"{len(items)} {label}: {', '.join(items[:SHOW_KEYS])}" + (" ..." if len(items) > SHOW_KEYS else "")
             for label, items in problems.items() if items]
    if parts:
        raise CheckpointError(f"{source} does not convert into ecanet's {detector} with {arch}: {'; '.join(parts)}. "
                              f"The file holds a variant of the detector (other layers or sizes than mmdetection "
                              f"v1's ResNet-FPN config) that the converter does not map.")


def convert_mmdet_checkpoint(path: str | os.PathLike, detector: str) -> tuple[dict[str, torch.Tensor],
                                                                           MmdetConversion]:
    """:func:`convert_mmdet_state_dict` on a checkpoint file (read with ``weights_only=True``).

    mmcv's checkpoints hold ``{'meta': {'mmdet_version', 'config', 'CLASSES', 'mmcv_version', 'time', 'epoch',
    'iter'}, 'state_dict', 'optimizer'}``: strings, numbers, tuples and tensors, which ``weights_only`` reads
    (PyTorch 1.x's pre-zip format included). ``meta['CLASSES']``, when present, must name 80 classes.
    """
    source = str(path)
    if not os.path.exists(path):
        raise CheckpointError(f"mmdetection checkpoint {source} does not exist. Check the path (the released "
                              f"files are on Google Drive and Baidu; download one first).")
    obj = read_checkpoint(path)
    inner = obj.get("state_dict") if isinstance(obj, Mapping) else None
    state_dict = inner if isinstance(inner, Mapping) else obj
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{source} holds a {type(obj).__name__}, not an mmdetection checkpoint "
                              f"({{'meta', 'state_dict', 'optimizer'}}). Pass a released detector file.")
    meta = obj.get("meta") if isinstance(obj, Mapping) and isinstance(obj.get("meta"), Mapping) else {}
    classes = meta.get("CLASSES")
    if isinstance(classes, (list, tuple)) and len(classes) != len(COCO_CATEGORY_IDS):
        raise CheckpointError(f"{source} was trained on {len(classes)} classes ({', '.join(map(str, classes[:3]))}"
                              f"...), not COCO's {len(COCO_CATEGORY_IDS)}. Only COCO detectors map onto "
                              f"torchvision's COCO ids.")
    version = meta.get("mmdet_version")
    return convert_mmdet_state_dict(state_dict, detector, source, version if isinstance(version, str) else None)


# ------------------------------------------------------------------------------------------- the model
def _build(detector: str, arch: str, eca_kernel_sizes: Mapping[str, int], **kwargs: Any) -> nn.Module:
    model = build_detector(detector, arch, **kwargs)
    if eca_kernel_sizes:
        set_eca_kernel_sizes(model.backbone.body, dict(eca_kernel_sizes))
    return model


def build_converted_detector(report: MmdetConversion, match_mmdet: bool = True, **kwargs: Any) -> nn.Module:
    """The ecanet detector a converted file loads into: ``report``'s backbone and ECA kernel sizes, and with
    ``match_mmdet`` mmdetection v1's anchors (and RetinaNet's P7 and detection count; :func:`match_mmdet_v1`).
    ``kwargs`` go to :func:`~ecanet.detection.models.build_detector`."""
    model = _build(report.detector, report.arch, report.eca_kernel_sizes, **kwargs)
    return match_mmdet_v1(model) if match_mmdet else model


class MmdetV1AnchorGenerator(AnchorGenerator):
    """mmdetection v1's anchors for torchvision's detectors, as continuous boxes.

    Per level, v1 builds its cell's anchors around the cell's middle pixel, ``(stride - 1) / 2``, with inclusive
    corners ``centre -+ (side - 1) / 2`` rounded (``AnchorGenerator.gen_base_anchors``), and shifts them by
    ``stride`` per feature pixel. This module holds those anchors as continuous boxes (x2 + 1, y2 + 1), in
    v1's order (ratio-major, scales inner, as torchvision's), and shifts them by the configured strides
    rather than by image size // feature size.
    """

    def __init__(self, strides: Sequence[int], scales: Sequence[float],
                 ratios: Sequence[float] = ANCHOR_RATIOS) -> None:
        sizes = tuple(tuple(scale * stride for scale in scales) for stride in strides)
        super().__init__(sizes, (tuple(ratios),) * len(strides))
        self.strides = tuple(int(s) for s in strides)
        self.cell_anchors = [mmdet_v1_cell_anchors(stride, scales, ratios) for stride in self.strides]

    def forward(self, image_list: ImageList, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(feature_maps) != len(self.strides):
            raise ValueError(f"{len(feature_maps)} feature maps for anchors of {len(self.strides)} strides "
                             f"{self.strides}")
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        grid_sizes = [list(feature.shape[-2:]) for feature in feature_maps]
        strides = [[torch.tensor(stride, dtype=torch.int64, device=device)] * 2 for stride in self.strides]
        self.set_cell_anchors(dtype, device)
        anchors = torch.cat(self.grid_anchors(grid_sizes, strides))           # (sum of H*W*A, 4)
        return [anchors for _ in image_list.image_sizes]


def mmdet_v1_cell_anchors(stride: int, scales: Sequence[float], ratios: Sequence[float] = ANCHOR_RATIOS
                          ) -> torch.Tensor:
    """(len(ratios) * len(scales), 4): one cell's anchors as mmdetection v1 computes them (float32, rounded
    inclusive corners), returned as continuous boxes."""
    base = float(stride)
    centre = 0.5 * (base - 1)                                   # v1: the cell's middle pixel
    h_ratios = torch.tensor(ratios, dtype=torch.float32).sqrt()
    w_ratios = 1 / h_ratios
    scale = torch.tensor(scales, dtype=torch.float32)
    widths = (base * w_ratios[:, None] * scale[None, :]).reshape(-1)     # ratio-major: (R * S,)
    heights = (base * h_ratios[:, None] * scale[None, :]).reshape(-1)
    inclusive = torch.stack([centre - 0.5 * (widths - 1), centre - 0.5 * (heights - 1),
                             centre + 0.5 * (widths - 1), centre + 0.5 * (heights - 1)], dim=1).round()
    return inclusive + torch.tensor(INCLUSIVE_TO_CONTINUOUS)


class MmdetV1LastLevelP6P7(ExtraFPNBlock):
    """RetinaNet's P6 and P7 as mmdetection v1's FPN computes them: P6 from C5, P7 from P6 without a ReLU
    (``relu_before_extra_convs=False``). The convolutions keep ``LastLevelP6P7``'s names (``p6``, ``p7``)."""

    def __init__(self, p6: nn.Conv2d, p7: nn.Conv2d) -> None:
        super().__init__()
        self.p6, self.p7 = p6, p7

    def forward(self, p: list[torch.Tensor], c: list[torch.Tensor], names: list[str]
                ) -> tuple[list[torch.Tensor], list[str]]:
        p6 = self.p6(c[-1])                                     # (B, 256, H/64, W/64) from C5
        p7 = self.p7(p6)                                        # (B, 256, H/128, W/128)
        return [*p, p6, p7], [*names, "p6", "p7"]


def match_mmdet_v1(model: nn.Module) -> nn.Module:
    """Give a torchvision detector mmdetection v1's anchors (:class:`MmdetV1AnchorGenerator`); for RetinaNet
    also v1's P7 (:class:`MmdetV1LastLevelP6P7`) and 100 detections per image. Weights and keys are
    unchanged; returns ``model``."""
    if isinstance(model, RetinaNet):
        extra = model.backbone.fpn.extra_blocks
        model.backbone.fpn.extra_blocks = MmdetV1LastLevelP6P7(extra.p6, extra.p7)
        generator = MmdetV1AnchorGenerator(RETINANET_STRIDES, RETINANET_SCALES)
        anchors_in_head = model.head.classification_head.num_anchors
        model.anchor_generator = generator
        model.detections_per_img = RETINANET_MAX_DETECTIONS
    else:
        generator = MmdetV1AnchorGenerator(RPN_STRIDES, RPN_SCALES)
        anchors_in_head = model.rpn.head.cls_logits.out_channels
        model.rpn.anchor_generator = generator
    per_location = generator.num_anchors_per_location()[0]
    if per_location != anchors_in_head:
        raise ConfigError(f"the detector's head predicts {anchors_in_head} anchors per location, mmdetection "
                          f"v1's anchors are {per_location}. match_mmdet_v1 applies to build_detector's models "
                          f"with torchvision's default anchors.")
    return model
