"""Parameters and FLOPs of the paper's six COCO detectors, ecanet's and as the paper counted them.

The official README's Param/FLOPs come from mmdetection v1's ``tools/get_flops.py``: one (1, 3, 1280, 800)
image (height 1280, width 800) through ``forward_dummy`` (backbone, neck, RPN head, then the box head on
1000 random proposals and the mask head on the first 100; RetinaNet: backbone, neck, head), counted by
mmdetection's ``flops_counter`` (a copy of ptflops) and printed in decimal units (``41.53 M``, ``207.18 GMac``).
Two things make its numbers differ from a plain count of torchvision's models:

* **Parameters**: it counts those with ``requires_grad`` only. mmdetection freezes the stem and ``layer1``
  (``frozen_stages=1``) and trains the BatchNorm affine parameters of layers 2-4; torchvision's detectors
  hold every BatchNorm as a ``FrozenBatchNorm2d`` (buffers, no parameters). Its heads have 81 classes
  (80 + background) for the R-CNNs and 80 for RetinaNet (sigmoid, no background); torchvision's COCO
  models have 91 ids. mmdetection v1's RetinaNet takes P6 from C5 (a 2048 -> 256 3x3 convolution, as ecanet
  does); torchvision's v1 ``retinanet_resnet50_fpn`` from P5.
* **FLOPs**: "FLOPs" are multiply-accumulates with these rules per ``nn.Module`` call: convolutions
  (transposed ones included) ``k*k*C_in*C_out/groups`` per output pixel plus one add per output for a
  bias; linear layers ``C_in*C_out`` per row (bias free); BatchNorm 2 per element (1 without affine);
  ReLU 1 per element; pooling layers 1 per *input* element; everything else 0 (RoIAlign, interpolation,
  sigmoid, additions, functional calls). The box head sees 1000 RoIs and the mask head 100, whatever the
  image holds.

:func:`paper_convention_cost` reproduces that count on torchvision's modules (with the paper's class
counts, trainable BatchNorm, and the ReLUs / poolings that mmdetection's modules run as ``nn.Module``s but
torchvision's and ecanet's as functions charged explicitly), and :func:`ecanet_cost` counts ecanet's
detectors as built (91 classes, FrozenBatchNorm2d) with thop and torch's counter on the same dummy forward.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.ops import FrozenBatchNorm2d

from ..errors import ConfigError
from ..models import EcaModule
from ..models.resnet import BasicBlock, Bottleneck
from .backbone import FPN_CHANNELS
from .models import COCO_NUM_CLASSES, build_detector

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # thop 0.1.1 imports distutils
    import thop

PAPER_IMAGE_HW = (1280, 800)   # get_flops.py --shape 1280 800: input (1, 3, 1280, 800), height 1280
PAPER_BOX_ROIS = 1000          # forward_dummy's random proposals through the box head
PAPER_MASK_ROIS = 100          # ... and the first 100 of them through the mask head
MASK_ROI_SIZE = 14             # MultiScaleRoIAlign output of the mask branch (7 for boxes: read off the model)
# mmdetection v1's class counts: softmax heads have 80 COCO classes + background, RetinaNet's sigmoid 80.
PAPER_NUM_CLASSES = {"faster_rcnn": 81, "mask_rcnn": 81, "retinanet": 80}
MMDET_PARAM_UNIT = 10**6       # mmdetection printed round(params / 1e6, 2) " M"
MMDET_FLOP_UNIT = 10**9        # and round(flops / 1e9, 2) " GMac"
COUNT_DEVICE = "meta"          # shapes only: nothing is allocated or computed


@dataclass(frozen=True)
class PaperRow:
    """One COCO row of the official README: the detector, its backbone and the published figures."""

    name: str
    title: str
    detector: str
    arch: str
    k_size: str
    params_m: float
    gflops: float
    box_ap: tuple[float, float, float]   # AP, AP50, AP75
    mask_ap: float | None = None


PAPER_ROWS: dict[str, PaperRow] = {row.name: row for row in (
    PaperRow("faster_rcnn_eca_resnet50", "Faster R-CNN ECA-Net50 (k 5)", "faster_rcnn", "eca_resnet50", "5",
             41.53, 207.18, (38.0, 60.6, 40.9)),
    PaperRow("faster_rcnn_eca_resnet101", "Faster R-CNN ECA-Net101 (k 3357)", "faster_rcnn", "eca_resnet101", "3357",
             60.52, 283.32, (40.3, 62.9, 44.0)),
    PaperRow("mask_rcnn_eca_resnet50", "Mask R-CNN ECA-Net50 (k 3377)", "mask_rcnn", "eca_resnet50", "3377",
             44.18, 275.69, (39.0, 61.3, 42.1), 35.6),
    PaperRow("mask_rcnn_eca_resnet101", "Mask R-CNN ECA-Net101 (k 3357)", "mask_rcnn", "eca_resnet101", "3357",
             63.17, 351.83, (41.3, 63.1, 44.8), 37.4),
    PaperRow("retinanet_eca_resnet50", "RetinaNet ECA-Net50 (k 3377)", "retinanet", "eca_resnet50", "3377",
             37.74, 239.43, (37.3, 57.7, 39.6)),
    PaperRow("retinanet_eca_resnet101", "RetinaNet ECA-Net101 (k 3357)", "retinanet", "eca_resnet101", "3357",
             56.74, 315.57, (39.1, 59.9, 41.8)),
)}


def paper_row(name: str) -> PaperRow:
    if name not in PAPER_ROWS:
        raise ConfigError(f"unknown detection row {name!r}; the paper's rows are {', '.join(PAPER_ROWS)}. "
                          f"Pass one of them (--detector).")
    return PAPER_ROWS[name]


# ------------------------------------------------------------------------------------ the dummy forward
class DummyForward(nn.Module):
    """mmdetection's ``forward_dummy`` on a torchvision detector: the networks without the resizing
    transform, proposal selection or post-processing. The RoI heads run on fixed numbers of RoIs (RoIAlign's
    output shape is fixed by the model; neither counter charges RoIAlign itself)."""

    def __init__(self, detector: nn.Module, box_rois: int = PAPER_BOX_ROIS, mask_rois: int = PAPER_MASK_ROIS) -> None:
        super().__init__()
        self.detector, self.box_rois, self.mask_rois = detector, box_rois, mask_rois

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:       # image: (1, 3, H, W)
        d = self.detector
        features = list(d.backbone(image).values())                      # [(1, 256, H/s, W/s)]
        if isinstance(d, RetinaNet):
            return list(d.head(features).values())
        outputs = [*d.rpn.head(features)[0]]
        heads = d.roi_heads
        rois = image.new_empty(self.box_rois, FPN_CHANNELS, *heads.box_roi_pool.output_size)  # (1000, 256, 7, 7)
        outputs += heads.box_predictor(heads.box_head(rois))
        if heads.has_mask():
            rois = image.new_empty(self.mask_rois, FPN_CHANNELS, MASK_ROI_SIZE, MASK_ROI_SIZE)  # (100, 256, 14, 14)
            outputs.append(heads.mask_predictor(heads.mask_head(rois)))
        return outputs


# ------------------------------------------------------------------------- mmdetection v1's counting rules
def _conv_macs(m: nn.modules.conv._ConvNd, inputs: tuple, output: torch.Tensor) -> int:
    # Transposed convolutions get the same rule, as in mmdetection (ConvTranspose is a _ConvNd, which the
    # counter tests first): per *output* pixel, so a 2x2 stride-2 deconvolution is charged 4x its MACs.
    per_pixel = math.prod(m.kernel_size) * m.in_channels * (m.out_channels // m.groups)
    pixels = output.shape[0] * math.prod(output.shape[2:])
    return per_pixel * pixels + (m.out_channels * pixels if m.bias is not None else 0)


def _bn_ops(m: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    # FrozenBatchNorm2d stands for mmdetection's nn.BatchNorm2d (affine): 2 per element.
    return inputs[0].numel() * (2 if getattr(m, "affine", True) else 1)


MMDET_RULES: tuple[tuple[type | tuple[type, ...], Callable[[nn.Module, tuple, torch.Tensor], int]], ...] = (
    ((nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d), _conv_macs),
    (nn.Linear, lambda m, i, o: i[0].shape[0] * m.in_features * m.out_features),
    ((nn.BatchNorm2d, FrozenBatchNorm2d), _bn_ops),
    (nn.ReLU, lambda m, i, o: o.numel()),
    ((nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d), lambda m, i, o: i[0].numel()),
    (nn.Upsample, lambda m, i, o: o.numel()),
    # Where mmdetection's (and the official ECA code's) module runs an nn.Module that ecanet / torchvision
    # run as a function: the residual block's last ReLU, ECA's nn.AdaptiveAvgPool2d(1), the box head's ReLUs.
    ((BasicBlock, Bottleneck), lambda m, i, o: o.numel()),
    (EcaModule, lambda m, i, o: i[0].numel()),
    (TwoMLPHead, lambda m, i, o: 2 * o.numel()),
)


def _charged(name: str, module: nn.Module) -> Callable | None:
    # torchvision's RPNHead runs its ReLU as a module, mmdetection's RPNHead as F.relu: not charged.
    if isinstance(module, nn.ReLU) and ".rpn." in f".{name}.":
        return None
    return next((rule for kinds, rule in MMDET_RULES if isinstance(module, kinds)), None)


def count_mmdet_v1(model: nn.Module, image: torch.Tensor) -> int:
    """``model(image)``'s cost under mmdetection v1's counter rules (see the module docstring)."""
    total = [0]
    handles = []
    for name, module in model.named_modules():
        rule = _charged(name, module)
        if rule is not None:
            handles.append(module.register_forward_hook(
                lambda m, i, o, rule=rule: total.__setitem__(0, total[0] + int(rule(m, i, o)))))
    try:
        with torch.no_grad():
            model(image)
    finally:
        for handle in handles:
            handle.remove()
    return total[0]


# ------------------------------------------------------------------------------------------ counting
@dataclass(frozen=True)
class DetectorCost:
    """One row's figures.

    Attributes:
        row: the paper's row.
        params: ecanet's detector as built (91 classes, FrozenBatchNorm2d): every parameter.
        trainable_params: of which ``requires_grad`` (stem and layer1 frozen).
        macs_thop: thop's count of ecanet's detector on the dummy forward (convolutions and linear layers;
            thop has no rule for FrozenBatchNorm2d).
        flops_torch: ``torch.utils.flop_counter`` on the same (2 x MACs of convolutions and matmuls).
        paper_params: parameters under mmdetection's convention (paper classes, trainable BN, requires_grad).
        paper_flops: mmdetection v1's counter rules on the paper-convention model.
    """

    row: PaperRow
    img_hw: tuple[int, int]
    params: int
    trainable_params: int
    macs_thop: int
    flops_torch: int
    paper_params: int
    paper_flops: int

    @property
    def paper_params_m(self) -> float:
        return round(self.paper_params / MMDET_PARAM_UNIT, 2)

    @property
    def paper_gflops(self) -> float:
        return round(self.paper_flops / MMDET_FLOP_UNIT, 2)


def _build(row: PaperRow, num_classes: int, norm_layer: Callable[[int], nn.Module]) -> nn.Module:
    with torch.device(COUNT_DEVICE):
        model = build_detector(row.detector, row.arch, num_classes=num_classes, k_size=row.k_size,
                               eca_impl="plain", norm_layer=norm_layer)
    return model.eval()


def _image(img_hw: tuple[int, int]) -> torch.Tensor:
    return torch.empty(1, 3, *img_hw, device=COUNT_DEVICE)


def paper_convention_model(name: str) -> nn.Module:
    """The row's detector as mmdetection v1 counted it: the paper's class count and trainable BatchNorm
    (``nn.BatchNorm2d``; the stem and layer1 frozen), on the meta device."""
    row = paper_row(name)
    return _build(row, PAPER_NUM_CLASSES[row.detector], nn.BatchNorm2d)


def paper_convention_cost(name: str, img_hw: tuple[int, int] = PAPER_IMAGE_HW) -> tuple[int, int]:
    """``(params, flops)`` of the row as the paper's tool counted them: trainable parameters and
    mmdetection v1's counter rules on the dummy forward."""
    model = paper_convention_model(name)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return params, count_mmdet_v1(DummyForward(model), _image(img_hw))


def detector_params(name: str, num_classes: int | None = None) -> tuple[int, int]:
    """``(all, trainable)`` parameters of ecanet's detector for the row (91 classes unless given); fast."""
    row = paper_row(name)
    model = _build(row, num_classes or COCO_NUM_CLASSES, FrozenBatchNorm2d)
    return sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.parameters() if p.requires_grad)


def ecanet_cost(name: str, img_hw: tuple[int, int] = PAPER_IMAGE_HW) -> DetectorCost:
    """Every figure of the row: ecanet's detector (counted by thop and torch) and the paper's convention."""
    row = paper_row(name)
    params, trainable = detector_params(name)
    thop_model = DummyForward(_build(row, COCO_NUM_CLASSES, FrozenBatchNorm2d))  # thop leaves buffers behind: its own copy
    macs, _ = thop.profile(thop_model, inputs=(_image(img_hw),), verbose=False)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        DummyForward(_build(row, COCO_NUM_CLASSES, FrozenBatchNorm2d))(_image(img_hw))
    paper_params, paper_flops = paper_convention_cost(name, img_hw)
    return DetectorCost(row, img_hw, params, trainable, int(macs), counter.get_total_flops(), paper_params,
                        paper_flops)


# ------------------------------------------------------------------------------------------ reports
@dataclass(frozen=True)
class ParamsBreakdown:
    """Why ecanet's parameter count (``ecanet``) differs from the paper's (``paper``):
    ``ecanet = paper + extra_classes + frozen_counted - bn_affine``."""

    ecanet: int
    paper: int
    extra_classes: int    # 91 instead of 81 (80 for RetinaNet) outputs in the class-dependent layers
    frozen_counted: int   # the stem and layer1, frozen: ecanet counts them, mmdetection did not
    bn_affine: int        # BatchNorm weight and bias of layers 2-4: parameters in mmdetection, buffers here


def params_breakdown(name: str) -> ParamsBreakdown:
    row = paper_row(name)
    ecanet, trainable = detector_params(name)
    paper_classes, _ = detector_params(name, PAPER_NUM_CLASSES[row.detector])
    paper_model = paper_convention_model(name)
    bn_affine = sum(p.numel() for m in paper_model.modules() if isinstance(m, nn.BatchNorm2d)
                    for p in m.parameters() if p.requires_grad)
    paper = sum(p.numel() for p in paper_model.parameters() if p.requires_grad)
    return ParamsBreakdown(ecanet, paper, ecanet - paper_classes, ecanet - trainable, bn_affine)


DETECTOR_TABLE_HEADERS = ("row", "params", "params, paper conv.", "README params", "MACs (thop)", "FLOPs (torch)",
                          "FLOPs, paper conv.", "README FLOPs")


def row_notes(cost: DetectorCost) -> str:
    """One line: whether the paper's convention gives the README's figures, and the parameter differences."""
    b = params_breakdown(cost.row.name)
    same = (cost.paper_params_m, cost.paper_gflops) == (cost.row.params_m, cost.row.gflops)
    return (f"{cost.row.name}: {'paper convention = README' if same else 'paper convention differs from README'}; "
            f"ecanet's params = paper's "
            f"+{b.extra_classes:,} for 91 classes, +{b.frozen_counted:,} frozen stem/layer1, "
            f"-{b.bn_affine:,} BN affine (buffers)")


def detector_table_rows(costs: list[DetectorCost]) -> list[tuple[str, ...]]:
    return [(c.row.name, f"{c.params / 1e6:.2f} M", f"{c.paper_params_m:.2f} M", f"{c.row.params_m:.2f} M",
             f"{c.macs_thop / 1e9:.2f} G", f"{c.flops_torch / 1e9:.2f} G", f"{c.paper_gflops:.2f} G",
             f"{c.row.gflops:.2f} G") for c in costs]


def detector_table_legend(img_hw: tuple[int, int] = PAPER_IMAGE_HW) -> list[str]:
    h, w = img_hw
    return [
        f"One {h}x{w} image (height x width, batch 1) through the networks as mmdetection's forward_dummy: "
        f"backbone, FPN, RPN head, box head on {PAPER_BOX_ROIS} RoIs, mask head on {PAPER_MASK_ROIS} "
        f"(RetinaNet: backbone, FPN, head); decimal units (M = 1e6, G = 1e9).",
        "params: ecanet's detector as built (91 COCO ids, FrozenBatchNorm2d), every parameter. MACs (thop): "
        "convolutions and linear layers (thop has no rule for FrozenBatchNorm2d). FLOPs (torch): 2 x MACs of "
        "convolutions and matrix multiplies.",
        "paper conv.: mmdetection v1's get_flops on the same networks with the paper's classes (81; RetinaNet 80), "
        "trainable BatchNorm, requires_grad parameters only (stem and layer1 frozen), and its counter's rules "
        "(bias adds, BatchNorm 2/element, ReLU 1/element, pooling 1/input element, deconvolution per output "
        "pixel).",
        "The R-CNN FLOPs cover fixed RoI counts; a real image costs what its proposals cost (torchvision keeps "
        "up to 1000 per image at test time, as mmdetection).",
    ]


def format_detector_table(costs: list[DetectorCost], markdown: bool = False) -> str:
    from ..flops import render_table
    bullet = "- " if markdown else ""
    legend = detector_table_legend(costs[0].img_hw if costs else PAPER_IMAGE_HW)
    return "\n".join([render_table(DETECTOR_TABLE_HEADERS, detector_table_rows(costs), markdown, left_columns=1),
                      "", *(bullet + row_notes(c) for c in costs), *(bullet + line for line in legend)])
