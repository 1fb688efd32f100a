"""Deployment formats beside the export folder: ONNX, checked against PyTorch with onnxruntime.

The self-contained folder (``model.safetensors`` + ``config.json``) is :func:`ecanet.checkpoint.save_export`;
this module adds ``model.onnx`` to it. ECA layers are exported with the plain PyTorch implementation: the
fused Triton kernels are a CUDA custom op that ONNX cannot express, and both compute the same function.
"""
from __future__ import annotations

import copy
import importlib.util
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from .constants import DEFAULT_ONNX_OPSET, MIN_ONNX_OPSET
from .errors import ConfigError
from .models import set_eca_impl
from .recipe import Recipe

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
ONNX_TOLERANCE = 1e-4     # largest |onnxruntime - PyTorch| logit difference accepted by verify_onnx


def newest_onnx_opset() -> int:
    """The newest opset torch's TorchScript-based ONNX exporter writes (:func:`export_onnx` uses that exporter)."""
    from torch.onnx import _constants   # torch names this limit nowhere public
    return getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", _constants.ONNX_MAX_OPSET)


def check_img_size(img_size: int) -> None:
    """Refuse an ``--img-size`` that is no image size (0, negative): a :class:`ConfigError` naming the fix."""
    if img_size < 1:
        raise ConfigError(f"--img-size {img_size} is no image size; pass the input size to export, e.g. 224, or "
                          f"leave it out for the recipe's crop size.")


def check_onnx_options(opset: int, img_size: int | None) -> None:
    """Refuse what an ONNX export cannot do, before anything is written: missing packages, an opset too old
    for these networks or too new for torch's exporter, an input size that is no size (a :class:`ConfigError`
    naming the fix). ``img_size`` None: the recipe's, not checked here."""
    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"--format onnx needs {' and '.join(missing)}, which is not installed. Install it with "
                          f"pip install 'ecanet[export]' (or pip install onnx onnxruntime).")
    if opset < MIN_ONNX_OPSET:
        raise ConfigError(f"--opset {opset} is too old for these networks; use {MIN_ONNX_OPSET} or newer "
                          f"(default {DEFAULT_ONNX_OPSET}).")
    if opset > newest_onnx_opset():
        raise ConfigError(f"--opset {opset} is newer than this torch's ONNX exporter writes; use "
                          f"{MIN_ONNX_OPSET} to {newest_onnx_opset()} (default {DEFAULT_ONNX_OPSET}).")
    if img_size is not None:
        check_img_size(img_size)


def export_onnx(model: nn.Module, recipe: Recipe, folder: str | Path, opset: int = DEFAULT_ONNX_OPSET,
                img_size: int | None = None) -> Path:
    """Write ``folder/model.onnx``: input ``images`` (N, 3, H, W) float32 normalised as the recipe says, output
    ``logits`` (N, classes); the batch dimension is dynamic. Returns the file's path."""
    img_size = recipe.img_size if img_size is None else img_size   # 0 is a size given, and refused
    check_onnx_options(opset, img_size)
    path = Path(folder) / ONNX_FILE
    if path.exists():
        raise ConfigError(f"{path} exists; an export never overwrites one. Pick another output folder.")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = set_eca_impl(copy.deepcopy(model), "plain").eval()  # the caller's model keeps its implementation
    example = torch.zeros(1, 3, img_size, img_size)
    with warnings.catch_warnings():
        # The TorchScript-based exporter: it needs no extra package (the newer one needs onnxscript).
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    log.info("wrote %s (opset %d, %dx%d input)", path, opset, img_size, img_size)
    return path


def verify_onnx(model: nn.Module, path: str | Path, images: torch.Tensor) -> float:
    """The largest difference between onnxruntime's and PyTorch's logits on ``images``; raises when it is
    above :data:`ONNX_TOLERANCE`."""
    import onnxruntime

    runner = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_logits = torch.from_numpy(runner.run(["logits"], {"images": images.numpy()})[0])
    with torch.no_grad():
        torch_logits = set_eca_impl(copy.deepcopy(model), "plain").eval()(images)
    difference = float((onnx_logits - torch_logits).abs().max())
    if difference > ONNX_TOLERANCE:
        raise RuntimeError(f"{path}: onnxruntime's logits differ from PyTorch's by {difference:.3g} "
                           f"(> {ONNX_TOLERANCE}); the export is wrong, please report it.")
    return difference
