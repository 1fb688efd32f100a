"""Parameters and FLOPs of the paper's COCO detectors: ecanet's, and mmdetection v1's convention = the README."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import paras_flops
from ecanet.detection import build_detector, costs
from ecanet.errors import EXIT_USAGE, ConfigError


def test_paper_convention_reproduces_every_readme_figure():
    # mmdetection v1: requires_grad parameters (stem and layer1 frozen, BN affine trained), 81 / 80 classes,
    # its counter's rules on forward_dummy at 1280x800; printed as round(x / 1e6, 2) M and round(x / 1e9, 2) G.
    for name, row in costs.PAPER_ROWS.items():
        params, flops = costs.paper_convention_cost(name)
        assert (round(params / 1e6, 2), round(flops / 1e9, 2)) == (row.params_m, row.gflops), name


def test_pinned_counts_faster_rcnn_eca_resnet50():
    params, flops = costs.paper_convention_cost("faster_rcnn_eca_resnet50")
    assert (params, flops) == (41_531_877, 207_181_949_620)
    b = costs.params_breakdown("faster_rcnn_eca_resnet50")
    assert b.ecanet == 41_755_366 and b.paper == params
    # 91 instead of 81 classes: cls_score 10 x (1024 + 1) and bbox_pred 40 x (1024 + 1) more
    assert b.extra_classes == 50 * 1025
    # conv1 9,408 + layer1 convolutions 212,992 + layer1 ECA k=5 (3 x 5); BN affine of layers 2-4
    assert b.frozen_counted == 9_408 + 212_992 + 15 and b.bn_affine == 50_176
    assert b.ecanet == b.paper + b.extra_classes + b.frozen_counted - b.bn_affine


def test_plain_resnet50_detectors_match_torchvision_builders():
    from torchvision.models.detection import fasterrcnn_resnet50_fpn, retinanet_resnet50_fpn_v2
    with torch.device("meta"):
        ours = build_detector("faster_rcnn", "resnet50")
        theirs = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
        retina = build_detector("retinanet", "resnet50")
        retina_v2 = retinanet_resnet50_fpn_v2(weights=None, weights_backbone=None)
    # torchvision without weights uses nn.BatchNorm2d: 53,120 BN affine parameters more than FrozenBatchNorm2d
    assert sum(p.numel() for p in ours.parameters()) == 41_755_286
    assert sum(p.numel() for p in theirs.parameters()) == 41_755_286 + 53_120
    # Same FPN as torchvision's RetinaNet v2 (P6 from C5); its head differs (GroupNorm): compare the backbones
    assert [(k, v.shape) for k, v in retina.backbone.fpn.state_dict().items()] == \
        [(k, v.shape) for k, v in retina_v2.backbone.fpn.state_dict().items()]


def test_mmdet_rules_hand_checked():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.ConvTranspose2d(4, 4, 2, stride=2), nn.Flatten(), nn.Linear(256, 2))
    total = costs.count_mmdet_v1(model, torch.zeros(1, 3, 8, 8))
    conv = 3 * 3 * 3 * 4 * 64 + 4 * 64      # MACs per output pixel + one bias add per output
    bn, relu, pool = 2 * 256, 256, 256      # 2 per element, 1 per element, 1 per *input* element
    deconv = 2 * 2 * 4 * 4 * 64 + 4 * 64    # charged per output pixel (8x8), as mmdetection's counter did
    linear = 256 * 2                        # no bias
    assert total == conv + bn + relu + pool + deconv + linear


def test_unknown_row():
    with pytest.raises(ConfigError, match="faster_rcnn_eca_resnet50"):
        costs.paper_row("faster_rcnn_resnet50")


def test_paras_flops_detector_table(capsys):
    assert paras_flops.main(["--detector", "mask_rcnn_eca_resnet50"]) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.startswith("mask_rcnn_eca_resnet50 "))
    assert line.split() == ["mask_rcnn_eca_resnet50", "44.40", "M", "44.18", "M", "44.18", "M", "275.01", "G",
                            "519.18", "G", "275.69", "G", "275.69", "G"]
    assert "paper convention = README" in out
    for other in (["-a", "resnet50"], ["--img-size", "512"], ["--num-classes", "81"]):   # the rows' own
        assert paras_flops.main(["--detector", "mask_rcnn_eca_resnet50", *other]) == EXIT_USAGE
