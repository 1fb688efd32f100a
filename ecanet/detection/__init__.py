"""COCO detection and instance segmentation with ECA-ResNet backbones, on torchvision's detectors.

    >>> from ecanet.detection import build_detector, ecanet_fpn_backbone
    >>> model = build_detector("mask_rcnn", "eca_resnet50", k_size="3377")          # torchvision MaskRCNN
    >>> backbone = ecanet_fpn_backbone("eca_resnet50", weights="eca_resnet50_k3557.pth.tar")

Submodules: :mod:`~ecanet.detection.backbone` (ResNet-FPN backbones), :mod:`~ecanet.detection.models`
(the detectors), :mod:`~ecanet.detection.configs` (``configs/detection/*.yaml``),
:mod:`~ecanet.detection.costs` (parameters and FLOPs beside the paper's), :mod:`~ecanet.detection.data`
and :mod:`~ecanet.detection.transforms` (COCO-format data, checked), :mod:`~ecanet.detection.coco_eval`
(COCO's AP with pycocotools, exact over several processes), :mod:`~ecanet.detection.toyset` (a small
detection set made of Fashion-MNIST pictures), :mod:`~ecanet.detection.convert` (the released mmdetection
files), and what ``det_main.py`` runs on: :mod:`~ecanet.detection.options`, :mod:`~ecanet.detection.engine`,
:mod:`~ecanet.detection.checkpoint`. The public names below are imported on first use, so
importing one submodule never needs the others.
"""
import importlib as _importlib

_PUBLIC = {
    "ecanet_fpn_backbone": "ecanet.detection.backbone",
    "backbone_archs": "ecanet.detection.backbone",
    "build_detector": "ecanet.detection.models",
    "list_detectors": "ecanet.detection.models",
    "detector_options": "ecanet.detection.models",
    "load_detection_config": "ecanet.detection.configs",
    "detector_from_config": "ecanet.detection.configs",
    "CocoDetectionDataset": "ecanet.detection.data",
    "evaluate_coco": "ecanet.detection.coco_eval",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> object:
    if name in _PUBLIC:
        value = getattr(_importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ecanet.detection' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
