"""Converting mmdetection v1 detector checkpoints (the ECA paper's COCO release) into ecanet's detectors.

The files themselves are not reachable here; each test writes an mmdetection v1 state_dict with the key names
and shapes of mmdetection v1's code (tables below, written independently of the converter) and known values.
"""
from __future__ import annotations

import functools
import re
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F
from torchvision.models import _meta
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import _default_anchorgen as torchvision_retinanet_anchors
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from ecanet.detection.convert import (COCO_CATEGORY_IDS, UNUSED_CLASS_LOGIT, MmdetConversion, MmdetV1AnchorGenerator,
                                      MmdetV1LastLevelP6P7, build_converted_detector, convert_mmdet_checkpoint,
                                      convert_mmdet_state_dict, match_mmdet_v1, mmdet_v1_cell_anchors, remap_classes)
from ecanet.detection.models import build_detector
from ecanet.errors import EXIT_USAGE, CheckpointError
from ecanet.models import eca_kernel_sizes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import convert_mmdet  # noqa: E402

ARCH, K_SIZE = "eca_resnet50", "3377"          # the paper's Mask R-CNN / RetinaNet ECA-Net50 rows
R50_BATCHNORMS = 1 + 16 * 3 + 4                # stem, three per bottleneck, one per downsample
TINY = {"faster_rcnn": dict(min_size=128, max_size=160, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
                        box_score_thresh=0.0, box_detections_per_img=5),
        "retinanet": dict(min_size=128, max_size=160, topk_candidates=20, score_thresh=0.0)}
# torchvision key -> mmdetection v1 key, as mmdetection v1's modules name their tensors.
TO_MMDET = [
    (r"^backbone\.body\.", "backbone."),
    (r"^backbone\.fpn\.inner_blocks\.(\d)\.0\.", r"neck.lateral_convs.\1.conv."),
    (r"^backbone\.fpn\.layer_blocks\.(\d)\.0\.", r"neck.fpn_convs.\1.conv."),
    (r"^backbone\.fpn\.extra_blocks\.p6\.", "neck.fpn_convs.3.conv."),
    (r"^backbone\.fpn\.extra_blocks\.p7\.", "neck.fpn_convs.4.conv."),
    (r"^rpn\.head\.conv\.0\.0\.", "rpn_head.rpn_conv."),
    (r"^rpn\.head\.cls_logits\.", "rpn_head.rpn_cls."),
    (r"^rpn\.head\.bbox_pred\.", "rpn_head.rpn_reg."),
    (r"^roi_heads\.box_head\.fc6\.", "bbox_head.shared_fcs.0."),
    (r"^roi_heads\.box_head\.fc7\.", "bbox_head.shared_fcs.1."),
    (r"^roi_heads\.box_predictor\.cls_score\.", "bbox_head.fc_cls."),
    (r"^roi_heads\.box_predictor\.bbox_pred\.", "bbox_head.fc_reg."),
    (r"^roi_heads\.mask_head\.(\d)\.0\.", r"mask_head.convs.\1.conv."),
    (r"^roi_heads\.mask_predictor\.conv5_mask\.", "mask_head.upsample."),
    (r"^roi_heads\.mask_predictor\.mask_fcn_logits\.", "mask_head.conv_logits."),
    (r"^head\.classification_head\.conv\.(\d)\.0\.", r"bbox_head.cls_convs.\1.conv."),
    (r"^head\.regression_head\.conv\.(\d)\.0\.", r"bbox_head.reg_convs.\1.conv."),
    (r"^head\.classification_head\.cls_logits\.", "bbox_head.retina_cls."),
    (r"^head\.regression_head\.bbox_reg\.", "bbox_head.retina_reg."),
]
# mmdetection v1's class-indexed outputs for COCO: 81 softmax classes (background 0), RetinaNet 9 anchors x 80
MMDET_CLASS_ROWS = {"bbox_head.fc_cls": 81, "bbox_head.fc_reg": 81 * 4, "mask_head.conv_logits": 81,
                    "bbox_head.retina_cls": 9 * 80}


def mmdet_key(key: str) -> str:
    return next(re.sub(pattern, target, key) for pattern, target in TO_MMDET if re.search(pattern, key))


def mmdet_state_dict(model: torch.nn.Module, dtype=torch.float32) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``model``'s layers in mmdetection v1's layout, with values that say where they come from: tensor n is
    all n / 8 (a different value each), and row r of a class-indexed layer is all r (fc_cls row 80 is 80).
    Also the torchvision -> v1 name table of the other tensors. ``model`` may live on the meta device."""
    state, names = {}, {}
    for n, (key, value) in enumerate(model.state_dict().items()):
        name = mmdet_key(key)
        layer = name.rpartition(".")[0]
        if layer in MMDET_CLASS_ROWS:
            rows = MMDET_CLASS_ROWS[layer]
            index = torch.arange(rows, dtype=dtype).reshape(rows, *[1] * (value.dim() - 1))
            state[name] = index.expand(rows, *value.shape[1:]).clone()
        else:
            state[name] = torch.full(value.shape, n / 8, dtype=dtype)
            names[key] = name
        if name.endswith("running_var"):   # mmdetection's nn.BatchNorm2d counts its steps
            state[name.replace("running_var", "num_batches_tracked")] = torch.tensor(7330)
    return state, names


@functools.cache
def converted(detector: str):
    """ecanet's detector (ECA-ResNet-50, kernels 3377) loaded strictly from a converted v1 state_dict."""
    with torch.device("meta"):                      # no weights drawn: the converted ones are assigned
        model = build_detector(detector, ARCH, k_size=K_SIZE)
    source, names = mmdet_state_dict(model)
    state, report = convert_mmdet_state_dict(source, detector)
    model.load_state_dict(state, strict=True, assign=True)
    return model, source, names, state, report


@functools.cache
def small_retinanet() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A v1 RetinaNet on ECA-ResNet-18 (kernels 3557) in half precision: small enough to write to a file."""
    with torch.device("meta"):
        model = build_detector("retinanet", "eca_resnet18", k_size="3557")
    return mmdet_state_dict(model, dtype=torch.float16)


# ------------------------------------------------------------------------------------------- layout
@pytest.mark.parametrize("detector", ["faster_rcnn", "mask_rcnn", "retinanet"])
def test_every_tensor_lands_under_its_torchvision_name(detector):
    model, source, names, state, report = converted(detector)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[key], source[name]) for key, name in names.items())
    assert loaded["backbone.body.layer3.5.eca.conv.weight"].shape == (1, 1, 7)
    assert report.arch == ARCH and report.kernel_string == K_SIZE and report.k_size == K_SIZE
    assert len(report.dropped) == R50_BATCHNORMS and all(k.endswith("num_batches_tracked") for k in report.dropped)
    assert report.converted == len(state) == len(loaded)


def test_coco_category_ids_are_torchvisions_named_ids():
    named = [i for i, name in enumerate(_meta._COCO_CATEGORIES) if name not in ("__background__", "N/A")]
    assert list(COCO_CATEGORY_IDS) == named and len(named) == 80 and named[-1] == 90


@pytest.mark.parametrize("detector", ["faster_rcnn", "mask_rcnn"])
def test_two_stage_class_rows_move_to_coco_ids(detector):
    model, source, names, state, report = converted(detector)
    cls_w, cls_b = state["roi_heads.box_predictor.cls_score.weight"], state["roi_heads.box_predictor.cls_score.bias"]
    assert cls_w.shape == (91, 1024)
    assert (cls_w[0] == 0).all() and cls_b[0] == 0               # background stays at 0
    assert (cls_w[1] == 1).all() and (cls_w[13] == 12).all()     # label 12 (stop sign) is COCO id 13
    assert (cls_w[90] == 80).all() and cls_b[90] == 80           # label 80 (toothbrush) is COCO id 90
    assert (cls_w[12] == 0).all() and cls_b[12] == UNUSED_CLASS_LOGIT   # id 12 has no category
    reg = state["roi_heads.box_predictor.bbox_pred.weight"]      # (364, 1024): 4 rows per id
    assert torch.equal(reg[360:364, 0], torch.tensor([320., 321., 322., 323.]))   # v1 rows of label 80
    assert torch.equal(reg[0:4, 0], torch.tensor([0., 1., 2., 3.]))
    assert (reg[48:52] == 0).all() and (state["roi_heads.box_predictor.bbox_pred.bias"][48:52] == 0).all()
    if detector == "mask_rcnn":
        logits = state["roi_heads.mask_predictor.mask_fcn_logits.weight"]  # (91, 256, 1, 1)
        assert (logits[90] == 80).all() and (logits[45] == 0).all() and (logits[46] == 41).all()
    assert any("12, 26, 29, 30, 45, 66, 68, 69, 71, 83" in line for line in report.filled)


def test_retinanet_channels_move_to_coco_ids():
    model, source, names, state, report = converted("retinanet")
    weight = state["head.classification_head.cls_logits.weight"]
    bias = state["head.classification_head.cls_logits.bias"]
    assert weight.shape == (9 * 91, 256, 3, 3)
    for anchor in (0, 8):   # anchor-major: v1 channel a*80 + i -> torchvision a*91 + id
        assert (weight[anchor * 91 + 90] == anchor * 80 + 79).all() and bias[anchor * 91 + 1] == anchor * 80
        assert bias[anchor * 91] == UNUSED_CLASS_LOGIT and (weight[anchor * 91] == 0).all()     # id 0
        assert bias[anchor * 91 + 83] == UNUSED_CLASS_LOGIT                                     # no category
    assert torch.equal(state["head.regression_head.bbox_reg.weight"], source["bbox_head.retina_reg.weight"])


def test_scores_of_the_released_classes_are_unchanged():
    torch.manual_seed(0)
    w, b = torch.randn(81, 16), torch.randn(81)
    features = torch.randn(5, 16)
    new_w = remap_classes(w, 1, sigmoid=False, fill=0.0)
    new_b = remap_classes(b, 1, sigmoid=False, fill=UNUSED_CLASS_LOGIT)
    old, new = F.softmax(features @ w.T + b, dim=1), F.softmax(features @ new_w.T + new_b, dim=1)
    assert torch.allclose(new[:, [0, *COCO_CATEGORY_IDS]], old, rtol=1e-6, atol=0)
    assert (new[:, [12, 26, 83]] == 0).all()
    # RetinaNet: v1 reads channel a*80 + i as anchor a, class i (permute(0, 2, 3, 1).reshape(-1, 80));
    # torchvision views channels as (anchor, 91 ids).
    x = torch.randn(1, 8, 3, 4)
    w3, b3 = torch.randn(9 * 80, 8, 3, 3), torch.randn(9 * 80)
    v1 = F.conv2d(x, w3, b3, padding=1).permute(0, 2, 3, 1).reshape(-1, 80).sigmoid()      # (H*W*A, 80)
    new3 = F.conv2d(x, remap_classes(w3, 1, True, 0.0), remap_classes(b3, 1, True, UNUSED_CLASS_LOGIT), padding=1)
    tv = new3.view(1, 9, 91, 3, 4).permute(0, 3, 4, 1, 2).reshape(-1, 91).sigmoid()        # (H*W*A, 91)
    assert torch.allclose(tv[:, list(COCO_CATEGORY_IDS)], v1) and (tv[:, 0] == 0).all()


# -------------------------------------------------------------------------------------- anchors, boxes
def test_v1_cell_anchors_pinned():
    rpn_p2 = mmdet_v1_cell_anchors(4, [8.0])             # v1 inclusive (-14, -14, 17, 17) for ratio 1
    assert rpn_p2.tolist() == [[-21., -9., 25., 13.], [-14., -14., 18., 18.], [-9., -21., 13., 25.]]
    retina_p3 = mmdet_v1_cell_anchors(8, [4 * 2 ** (i / 3) for i in range(3)])
    assert retina_p3[3:6].tolist() == [[-12., -12., 20., 20.], [-16., -16., 24., 24.], [-21., -21., 29., 29.]]
    assert (retina_p3[:, :2] + retina_p3[:, 2:] == 8).all()     # centred on the cell's middle (4, 4)


@pytest.mark.parametrize("strides, scales, default", [
    ((4, 8, 16, 32, 64), (8.0,), AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)),
    ((8, 16, 32, 64, 128), tuple(4 * 2 ** (i / 3) for i in range(3)), torchvision_retinanet_anchors()),
])
def test_v1_anchor_order_is_torchvisions(strides, scales, default):
    ours = MmdetV1AnchorGenerator(strides, scales)
    assert ours.num_anchors_per_location() == default.num_anchors_per_location()
    for stride, v1, tv in zip(strides, ours.cell_anchors, default.cell_anchors):
        centred = v1 - stride / 2                         # v1 centres the cell at stride/2, torchvision at 0
        assert (centred - tv).abs().max() <= 1.0          # same anchors in the same order, up to rounding


def test_v1_anchors_follow_the_configured_strides():
    generator = MmdetV1AnchorGenerator((4, 8, 16, 32, 64), (8.0,))
    images = ImageList(torch.zeros(1, 3, 800, 800), [(800, 800)])
    features = [torch.zeros(1, 1, n, n) for n in (200, 100, 50, 25, 13)]    # P6 of 800 px: 13 = ceil(25 / 2)
    anchors = generator(images, features)[0]
    assert anchors.shape == (3 * sum(n * n for n in (200, 100, 50, 25, 13)), 4)
    p6 = anchors[-3 * 13 * 13:].reshape(13, 13, 3, 4)
    assert p6[0, 0, 1].tolist() == [-224.0, -224.0, 288.0, 288.0]      # v1: inclusive (-224, -224, 287, 287)
    assert p6[0, 1, 1].tolist() == [-160.0, -224.0, 352.0, 288.0]      # next cell: +64 (not 800 // 13 = 61)


def test_v1_box_decoding_equals_torchvisions_on_continuous_boxes():
    """mmdetection v1's delta2bbox (core/bbox/transforms.py) on its inclusive boxes is torchvision's BoxCoder
    on the continuous boxes [x1, y1, x2 + 1, y2 + 1]."""
    rois = torch.tensor([[10., 20., 49., 99.], [0., 0., 31., 15.]])        # inclusive corners
    deltas = torch.tensor([[0.5, -1.0, 1.2, -0.7], [-2.0, 3.0, -0.4, 0.9]])
    stds = torch.tensor([0.1, 0.1, 0.2, 0.2])
    d = deltas * stds
    pw, ph = rois[:, 2] - rois[:, 0] + 1, rois[:, 3] - rois[:, 1] + 1
    gx, gy = (rois[:, 0] + rois[:, 2]) / 2 + pw * d[:, 0], (rois[:, 1] + rois[:, 3]) / 2 + ph * d[:, 1]
    gw, gh = pw * d[:, 2].exp(), ph * d[:, 3].exp()
    v1 = torch.stack([gx - gw / 2 + 0.5, gy - gh / 2 + 0.5, gx + gw / 2 - 0.5, gy + gh / 2 - 0.5], dim=1)
    plus_one = torch.tensor([0., 0., 1., 1.])
    tv = BoxCoder((10., 10., 5., 5.)).decode_single(deltas, rois + plus_one)
    assert torch.allclose(tv, v1 + plus_one, atol=1e-4)


def test_v1_p7_has_no_relu():
    torch.manual_seed(0)
    extra = LastLevelP6P7(16, 8)
    c5 = torch.randn(1, 16, 8, 8)
    p6 = extra.p6(c5)
    features, names = MmdetV1LastLevelP6P7(extra.p6, extra.p7)([torch.zeros(1, 8, 8, 8)], [c5], ["p5"])
    assert names == ["p5", "p6", "p7"] and torch.equal(features[2], extra.p7(p6))
    assert not torch.allclose(features[2], extra([torch.zeros(1, 8, 8, 8)], [c5], ["p5"])[0][2])


@pytest.mark.parametrize("detector", ["faster_rcnn", "retinanet"])
def test_matched_detector_runs_with_v1_anchors(detector):
    torch.manual_seed(0)
    model = match_mmdet_v1(build_detector(detector, "resnet18", **TINY[detector])).eval()
    generator = model.anchor_generator if detector == "retinanet" else model.rpn.anchor_generator
    assert isinstance(generator, MmdetV1AnchorGenerator)
    if detector == "retinanet":
        assert isinstance(model.backbone.fpn.extra_blocks, MmdetV1LastLevelP6P7) and model.detections_per_img == 100
    with torch.no_grad():
        detections = model([torch.rand(3, 128, 160)])[0]
    assert detections["boxes"].shape[0] > 0 and detections["boxes"].shape[1] == 4


def test_build_converted_detector_sets_every_kernel_size():
    sizes = {f"layer{s}.{b}.eca": 3 for s in (1, 2, 3, 4) for b in (0, 1)} | {"layer3.1.eca": 5}
    report = MmdetConversion("faster_rcnn", "eca_resnet18", sizes, 0, (), ())
    assert report.k_size is None and report.kernel_string     # no per-stage string describes layer3
    model = build_converted_detector(report, min_size=128, max_size=160)
    assert eca_kernel_sizes(model.backbone.body) == sizes
    assert isinstance(model.rpn.anchor_generator, MmdetV1AnchorGenerator)


# --------------------------------------------------------------------------------------- bad input
def test_wrong_files_are_refused_with_the_fix():
    source, _ = small_retinanet()
    with pytest.raises(CheckpointError, match="holds a retinanet, not a mask_rcnn.*--detector retinanet"):
        convert_mmdet_state_dict(source, "mask_rcnn")
    v2 = {("roi_head." + k if k.startswith("bbox_head.") else k): v for k, v in source.items()}
    v2["roi_head.mask_head.conv_logits.weight"] = torch.zeros(80, 256, 1, 1)
    with pytest.raises(CheckpointError, match="mmdetection v2 checkpoint"):
        convert_mmdet_state_dict(v2, "mask_rcnn")
    voc = dict(source, **{"bbox_head.retina_cls.weight": torch.zeros(9 * 20, 256, 3, 3)})
    with pytest.raises(CheckpointError, match="720|multiple of 80"):
        convert_mmdet_state_dict(voc, "retinanet")
    extra = dict(source, **{"neck.fpn_convs.0.bn.weight": torch.zeros(256)})
    with pytest.raises(CheckpointError, match="1 tensors belong to no layer.*neck.fpn_convs.0.bn.weight"):
        convert_mmdet_state_dict(extra, "retinanet")
    missing = {k: v for k, v in source.items() if not k.startswith("neck.fpn_convs.4.")}
    with pytest.raises(CheckpointError, match="missing: backbone.fpn.extra_blocks.p7"):
        convert_mmdet_state_dict(missing, "retinanet")


def test_checkpoint_file_and_command_line(tmp_path, capsys):
    source, names = small_retinanet()
    optimizer = {"state": {}, "param_groups": [{"lr": 0.01, "momentum": 0.9, "params": [0, 1]}]}
    meta = {"mmdet_version": "1.0rc0", "config": "model = dict(type='RetinaNet')",
            "CLASSES": tuple(f"class{i}" for i in range(80)), "mmcv_version": "0.2.14", "epoch": 12, "iter": 87960}
    path = tmp_path / "retinanet_ecanet18.pth"
    torch.save({"meta": meta, "state_dict": source, "optimizer": optimizer}, path,
               _use_new_zipfile_serialization=False)            # PyTorch 1.x wrote this format
    state, report = convert_mmdet_checkpoint(path, "retinanet")
    assert report.mmdet_version == "1.0rc0" and report.k_size == "3557"

    out = tmp_path / "converted.pth"
    assert convert_mmdet.main([str(path), "retinanet", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "eca_resnet18, ECA kernel sizes 3557" in printed and "P7" in printed and "candidates" in printed
    written = torch.load(out, weights_only=True)
    target = build_converted_detector(report)
    target.load_state_dict(written, strict=True)
    key = "backbone.fpn.layer_blocks.0.0.weight"
    assert torch.equal(target.state_dict()[key], source[names[key]].float())

    assert convert_mmdet.main([str(path), "retinanet", str(out)]) == EXIT_USAGE          # exists: no --force
    assert "--force" in capsys.readouterr().err
    assert convert_mmdet.main([str(path), "retinanet", str(tmp_path), "--force"]) == EXIT_USAGE   # a directory
    assert "is a directory; OUTPUT is the state_dict file to write" in capsys.readouterr().err
    torch.save({"meta": dict(meta, CLASSES=("cat", "dog")), "state_dict": {"backbone.conv1.weight": torch.zeros(1)}},
               path)
    assert convert_mmdet.main([str(path), "retinanet", str(tmp_path / "o.pth")]) == EXIT_USAGE
    assert "2 classes" in capsys.readouterr().err
    assert convert_mmdet.main([str(tmp_path / "none.pth"), "retinanet", str(tmp_path / "o.pth")]) == EXIT_USAGE
