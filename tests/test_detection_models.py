"""Multi-scale features, ResNet-FPN backbones, torchvision detectors and the detection configs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

from ecanet.detection import (build_detector, detector_from_config, detector_options, ecanet_fpn_backbone,
                              list_detectors, load_detection_config)
from ecanet.detection.costs import PAPER_ROWS
from ecanet.errors import CheckpointError, ConfigError
from ecanet.models import create_model, eca_kernel_sizes

ROOT = Path(__file__).resolve().parents[1]
DETECTION_CONFIGS = sorted((ROOT / "configs" / "detection").glob("*.yaml"))
# Small enough for a CPU: 128x160 images, few proposals, every detection kept (random weights score low).
TINY = dict(min_size=128, max_size=160)
TINY_RCNN = dict(TINY, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20, box_score_thresh=0.0,
                 box_detections_per_img=5)
TINY_RETINANET = dict(TINY, score_thresh=0.0, detections_per_img=5, topk_candidates=20)
RESNET50_FPN_PARAMS = 26_799_296        # torchvision's resnet_fpn_backbone('resnet50'), FrozenBatchNorm2d
ECA_K3557_PARAMS = 3 * 3 + 4 * 5 + 6 * 5 + 3 * 7  # one k-tap kernel per block: 80


def meta(fn, *args, **kwargs):
    with torch.device("meta"):
        return fn(*args, **kwargs)


# ------------------------------------------------------------------------------------------ features
@pytest.mark.parametrize("arch, channels", [("resnet18", [64, 64, 128, 256, 512]),
                                            ("eca_resnet50", [64, 256, 512, 1024, 2048]),
                                            ("mobilenet_v2", [16, 24, 32, 96, 1280])])
def test_features_only_shapes_strides_channels(arch, channels):
    features = create_model(arch, features_only=True, out_indices=(0, 1, 2, 3, 4))
    assert [f.stride for f in features.feature_info] == [2, 4, 8, 16, 32]
    assert [f.channels for f in features.feature_info] == features.out_channels == channels
    outputs = features(torch.zeros(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outputs] == [(1, c, 64 // s, 96 // s) for c, s in zip(channels, [2, 4, 8, 16, 32])]


def test_features_keep_the_classification_keys():
    model = create_model("eca_resnet18", k_size="3577")
    features = create_model("eca_resnet18", k_size="3577", features_only=True)
    assert [f.module for f in features.feature_info] == ["layer1", "layer2", "layer3", "layer4"]
    missing, unexpected = features.load_state_dict(model.state_dict(), strict=False)
    assert missing == [] and unexpected == ["fc.weight", "fc.bias"]
    first = create_model("resnet18", features_only=True, out_indices=(1, 2))
    assert not hasattr(first, "layer3")  # nothing after the last stage asked for


@pytest.mark.parametrize("indices", [(), (2, 1), (5,), (1, 1), (-6,), 0, 6, True, "1", (1.0,)])
def test_features_bad_out_indices(indices):
    with pytest.raises(ValueError, match="out_indices"):
        create_model("resnet18", features_only=True, out_indices=indices)


@pytest.mark.parametrize("indices, stages", [(2, ["layer3", "layer4"]), ((-2, -1), ["layer3", "layer4"]),
                                             (5, ["relu", "layer1", "layer2", "layer3", "layer4"]),
                                             ((0, -1), ["relu", "layer4"])])
def test_features_out_indices_as_timm_reads_them(indices, stages):
    """An int n is the last n stages and a negative index counts from the end; feature_info answers timm's
    channels(), reduction() and module_name()."""
    features = create_model("resnet18", features_only=True, out_indices=indices)
    assert features.feature_info.module_name() == stages
    assert features.feature_info.channels() == features.out_channels == [f.channels for f in features.feature_info]
    info = features.feature_info
    assert info.reduction(-1) == 32 and info.channels([0]) == [features.out_channels[0]]


def test_out_indices_without_features_only_is_refused():
    with pytest.raises(ValueError, match="pass features_only=True with it"):
        create_model("resnet18", out_indices=(1, 2))


# ------------------------------------------------------------------------------------------ backbones
def test_plain_resnet50_backbone_is_torchvisions():
    ours = meta(ecanet_fpn_backbone, "resnet50")
    theirs = meta(resnet_fpn_backbone, backbone_name="resnet50", weights=None, trainable_layers=3)
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters()) \
        == RESNET50_FPN_PARAMS
    assert [n for n, p in ours.named_parameters() if p.requires_grad] == \
        [n for n, p in theirs.named_parameters() if p.requires_grad]
    image = torch.empty(1, 3, 800, 1280, device="meta")
    assert {k: v.shape for k, v in ours(image).items()} == {k: v.shape for k, v in theirs(image).items()} == {
        "0": (1, 256, 200, 320), "1": (1, 256, 100, 160), "2": (1, 256, 50, 80), "3": (1, 256, 25, 40),
        "pool": (1, 256, 13, 20)}


def test_eca_resnet50_backbone_params_and_frozen_stages():
    backbone = meta(ecanet_fpn_backbone, "eca_resnet50", k_size="3557")
    assert sum(p.numel() for p in backbone.parameters()) == RESNET50_FPN_PARAMS + ECA_K3557_PARAMS
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    # trainable_layers=3: the stem and layer1 (its ECA layers too) are frozen, layer2-4 and the FPN train.
    assert not any(n.startswith(("body.conv1", "body.layer1")) for n in trainable)
    assert "body.layer2.0.eca.conv.weight" in trainable and "fpn.layer_blocks.0.0.weight" in trainable
    # conv1 9,408 + layer1 convolutions 212,992 + layer1 ECA 3 x 3 frozen; FrozenBatchNorm2d has no parameters
    assert sum(p.numel() for p in backbone.parameters() if p.requires_grad) == \
        RESNET50_FPN_PARAMS + ECA_K3557_PARAMS - 9_408 - 212_992 - 9


@pytest.mark.parametrize("layers, first_trainable", [(0, None), (1, "layer4"), (4, "layer1"), (5, "conv1")])
def test_trainable_layers(layers, first_trainable):
    backbone = meta(ecanet_fpn_backbone, "eca_resnet18", trainable_layers=layers, norm_layer=nn.BatchNorm2d)
    body = [n for n, p in backbone.body.named_parameters() if p.requires_grad]
    if first_trainable is None:
        assert body == []
    else:
        assert body[0].startswith(first_trainable)
        assert ("bn1.weight" in body) == (layers == 5)  # torchvision trains the stem's BN only with all 5


def test_bad_backbone_options():
    with pytest.raises(ConfigError, match="trainable_layers"):
        ecanet_fpn_backbone("resnet18", trainable_layers=6)
    with pytest.raises(ConfigError, match="resnet101"):  # lists the known backbones
        ecanet_fpn_backbone("mobilenet_v2")
    with pytest.raises(ConfigError, match="ECA networks only"):
        ecanet_fpn_backbone("resnet18", k_size=3)


@pytest.fixture(scope="module")
def official_file(tmp_path_factory):
    """An official-layout ECA-ResNet-50 k3557 file: DataParallel 'module.' keys inside {'state_dict', 'arch'}."""
    torch.manual_seed(0)
    model = create_model("eca_resnet50", k_size="3557")
    path = tmp_path_factory.mktemp("weights") / "eca_resnet50_k3557.pth.tar"
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 100, "arch": "eca_resnet50", "state_dict": state, "best_prec1": 77.48}, path)
    return path, model.state_dict()


def test_official_file_keeps_every_eca_weight_and_its_kernel_sizes(official_file):
    path, weights = official_file
    backbone = ecanet_fpn_backbone("eca_resnet50", weights=path)
    report = backbone.weights_report
    assert report.dropped == ("fc.weight", "fc.bias") and report.kernel_string == "3557"
    body = backbone.body.state_dict()
    eca_keys = [k for k in weights if k.endswith("eca.conv.weight")]
    assert len(eca_keys) == 16 and all(torch.equal(body[k], weights[k]) for k in eca_keys)
    assert all(torch.equal(body[k], weights[k]) for k in body)  # every tensor of the body came from the file
    assert set(eca_kernel_sizes(backbone.body).values()) == {3, 5, 7}
    assert eca_kernel_sizes(backbone.body)["layer4.2.eca"] == 7


def test_official_file_with_other_kernel_sizes_or_arch(official_file):
    path, _ = official_file
    ecanet_fpn_backbone("eca_resnet50", k_size="3557", weights=path)  # agrees: fine
    with pytest.raises(CheckpointError, match="3557"):
        ecanet_fpn_backbone("eca_resnet50", k_size="3377", weights=path)
    with pytest.raises(CheckpointError, match="holds eca_resnet50"):
        ecanet_fpn_backbone("resnet50", weights=path)


def test_weights_of_a_network_that_is_no_backbone_are_named_so(tmp_path):
    from ecanet.models import create_model
    path = tmp_path / "mobilenet.pth"
    torch.save(create_model("eca_mobilenet_v2", num_classes=10).state_dict(), path)
    with pytest.raises(CheckpointError, match="holds eca_mobilenet_v2, which is not a detection backbone") as refused:
        ecanet_fpn_backbone("eca_resnet50", weights=path)
    assert "Pass arch" not in str(refused.value)   # no advice that the next call would refuse


# ------------------------------------------------------------------------------------------ detectors
def test_list_detectors_and_unknown_names():
    assert list_detectors() == ["faster_rcnn", "mask_rcnn", "retinanet"]
    with pytest.raises(ConfigError, match="faster_rcnn, mask_rcnn, retinanet"):
        build_detector("yolo", "resnet50")
    with pytest.raises(ConfigError, match="eca_resnet50"):
        build_detector("faster_rcnn", "vgg16")


@pytest.mark.parametrize("name, option", [("mask_rcnn", "weights"), ("faster_rcnn", "box_detection_per_img"),
                                          ("retinanet", "rpn_post_nms_top_n_test")])
def test_options_torchvision_would_ignore_are_refused(name, option):
    """torchvision's detectors pass keyword arguments they do not know on to their image transform, which drops
    them: a classification checkpoint given as ``weights=``, a misspelt option, or an R-CNN option given to
    RetinaNet would leave an untrained backbone or a default setting without a word."""
    with pytest.raises(ConfigError, match=f"takes: {option}\\.") as refused:
        build_detector(name, "resnet18", **{option: 1})
    assert ("backbone_weights=PATH" in str(refused.value)) == (option == "weights")


def test_the_detectors_own_options_reach_them():
    assert meta(build_detector, "mask_rcnn", "resnet18", box_detections_per_img=7).roi_heads.detections_per_img == 7
    assert meta(build_detector, "retinanet", "resnet18", detections_per_img=7).detections_per_img == 7
    assert "mask_roi_pool" in detector_options("mask_rcnn") and "mask_roi_pool" not in detector_options("faster_rcnn")
    with pytest.raises(ConfigError, match="unknown detector 'mask_rnn'; known: faster_rcnn"):
        detector_options("mask_rnn")
    # read from the transform's **kwargs (torchvision's references pass it for large-scale jitter)
    assert meta(build_detector, "faster_rcnn", "resnet18", _skip_resize=True).transform._skip_resize is True


@pytest.mark.parametrize("name, kind, options", [("faster_rcnn", FasterRCNN, TINY_RCNN),
                                                  ("mask_rcnn", MaskRCNN, TINY_RCNN),
                                                  ("retinanet", RetinaNet, TINY_RETINANET)])
def test_detector_eval_forward(name, kind, options):
    torch.manual_seed(0)
    model = build_detector(name, "eca_resnet18", k_size="3577", **options).eval()
    assert type(model) is kind
    with torch.no_grad():
        detections = model(list(torch.rand(2, 3, 128, 160)))
    assert len(detections) == 2
    shapes = {k: tuple(v.shape) for k, v in detections[0].items()}
    expected = {"boxes": (5, 4), "labels": (5,), "scores": (5,)}
    if name == "mask_rcnn":
        expected["masks"] = (5, 1, 128, 160)
    assert shapes == expected


def test_retinanet_levels_p3_to_p7_with_p6_from_c5():
    model = meta(build_detector, "retinanet", "resnet50")
    assert model.backbone.fpn.extra_blocks.use_P5 is False  # P6 from C5 (2048 channels), as mmdetection v1
    assert model.backbone.fpn.extra_blocks.p6.in_channels == 2048
    levels = model.backbone(torch.empty(1, 3, 800, 1280, device="meta"))
    assert [v.shape[-2:] for v in levels.values()] == [(100, 160), (50, 80), (25, 40), (13, 20), (7, 10)]


def test_mask_rcnn_training_losses():
    torch.manual_seed(0)
    model = build_detector("mask_rcnn", "resnet18", rpn_pre_nms_top_n_train=50, rpn_post_nms_top_n_train=20,
                           box_batch_size_per_image=16, **TINY).train()
    mask = torch.zeros(1, 128, 160, dtype=torch.uint8)
    mask[0, 20:80, 30:100] = 1
    target = {"boxes": torch.tensor([[30.0, 20.0, 100.0, 80.0]]), "labels": torch.tensor([1]), "masks": mask}
    losses = model([torch.rand(3, 128, 160)], [target])
    assert sorted(losses) == ["loss_box_reg", "loss_classifier", "loss_mask", "loss_objectness", "loss_rpn_box_reg"]
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.backbone.body.layer1[0].conv1.weight.grad is None  # frozen
    assert model.backbone.body.layer4[0].conv1.weight.grad is not None


# ------------------------------------------------------------------------------------------ configs
def test_shipped_configs_are_the_papers_rows_and_build():
    assert [p.stem for p in DETECTION_CONFIGS] == sorted(PAPER_ROWS)
    for path in DETECTION_CONFIGS:
        config = load_detection_config(path)
        row = PAPER_ROWS[path.stem]
        assert (config["detector"], config["arch"], config["ksize"]) == (row.detector, row.arch, row.k_size)
        assert (config["epochs"], config["lr_steps"], config["batch_size"], config["lr"]) == (12, [8, 11], 8, 0.01)
        assert (config["min_size"], config["max_size"], config["num_classes"]) == (800, 1333, 91)
        assert f"{row.params_m}M" in path.read_text().splitlines()[0]
        model = meta(detector_from_config, config)
        ks = set(eca_kernel_sizes(model.backbone.body).values())
        assert ks == {int(k) for k in row.k_size}


def test_a_config_builds_the_model_det_main_would(tmp_path):
    """detector_from_config reads every model option of det_main's (norm, eca-impl, box sampler, classes)
    and refuses a config that names no detector."""
    from torchvision.ops import FrozenBatchNorm2d
    path = tmp_path / "model.yaml"
    path.write_text("arch: eca_resnet18\n")
    with pytest.raises(ConfigError, match="lacks detector"):
        detector_from_config(load_detection_config(path))
    path.write_text("detector: faster_rcnn\narch: eca_resnet18\neca-impl: plain\nnorm: bn\nnum-classes: 5\n"
                    "box-batch-per-image: 64\nepochs: 3\n")
    model = meta(detector_from_config, load_detection_config(path))
    body = model.backbone.body
    assert model.roi_heads.box_predictor.cls_score.out_features == 5
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 64
    assert {layer.impl for layer in body.modules() if hasattr(layer, "impl")} == {"plain"}
    assert any(isinstance(m, nn.BatchNorm2d) for m in body.modules())
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in body.modules())
    path.write_text("detector: retinanet\narch: resnet18\n")     # no weights: norm 'auto' trains BatchNorm
    model = meta(detector_from_config, load_detection_config(path), num_classes=3)
    assert model.head.classification_head.num_classes == 3
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.body.modules())


def test_config_unknown_key_and_bad_value(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("detector: faster_rcnn\nbatch-size: 8\nlearning_rat: 0.01\n")
    with pytest.raises(ConfigError, match="unknown key 'learning_rat'. Did you mean 'learning-rate'"):
        load_detection_config(path)
    path.write_text("detector: faster_rcnn\nepochs: twelve\n")
    with pytest.raises(ConfigError, match="'epochs'"):
        load_detection_config(path)
    path.write_text("batch-size: 8\n")
    assert load_detection_config(path) == {"batch_size": 8}
    with pytest.raises(ConfigError, match="does not exist"):
        load_detection_config(tmp_path / "missing.yaml")
