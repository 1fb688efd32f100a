"""Checkpoints: loading what people actually have, and saving training state that survives crashes.

Loading (:func:`load_model`) accepts
  * the official ECA-Net container ``{'epoch', 'arch', 'state_dict', 'best_prec1', 'optimizer'}`` whose
    keys carry DataParallel's ``module.`` prefix (the released ``eca_resnet50_k3557.pth.tar``);
  * a bare state_dict, torchvision-reference files (``{'model': ...}``) and this project's checkpoints;
  * keys prefixed ``module.`` (DataParallel/DDP) or ``_orig_mod.`` (torch.compile), in any combination.
The network is read off the weights: family, depth and attention from the key structure, the number of
classes from the classifier, and every ECA layer's kernel size from its weight's shape. The ``arch``
a file claims is only a hint (one released file says ``se_resnet50`` while holding an ECA-ResNet-50).

Saving (:func:`save_checkpoint`) is atomic: temporary file, fsync, rename, fsync of the directory. A crash
or a full disk during a save never damages the previous checkpoint.

Finding (:func:`find_resume_checkpoint`): the newest training checkpoint of a run directory. The run directory
itself (its lock, its claim, the refusal to overwrite its checkpoints) is :mod:`ecanet.rundir`'s.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator, Mapping, Sequence

import torch
from torch import nn

from . import models
from .models.resnet import RESNET_SPECS, BasicBlock, Bottleneck

from .distributed import DistInfo, all_gather_objects, any_rank
from .constants import (DETECTION_FORMAT, DETECTOR_WEIGHTS, IMAGENET_IMG_SIZE, IMAGENET_MEAN, IMAGENET_STD,
                        IMAGENET_VAL_RESIZE, LAST_CHECKPOINT, METRICS_FILE, RUN_CONFIG)
from .errors import CheckpointError
from .outputs import blocking_file
from .recipe import Recipe

if TYPE_CHECKING:
    from .engine import TrainState

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "ecanet-checkpoint"
CHECKPOINT_VERSION = 2   # 2: checkpoints record a recipe; best.pth holds no training state
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP, torch.compile
SHOW_KEYS = 5  # how many offending keys an error message names
FILE_MODE = 0o666  # before the umask, as open() creates files
LOW_DISK_BYTES = 16 * 2**20   # below this much free space a failed save is put down to a full disk


class CheckpointSaveError(RuntimeError):
    """Writing a checkpoint failed (disk full, permissions); the previous checkpoint is untouched.
    ``resumable``: whether the run has a checkpoint from before to resume from."""

    def __init__(self, message: str, resumable: bool = True) -> None:
        super().__init__(message)
        self.resumable = resumable


# ----------------------------------------------------------------------------------------------- reading

def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load`` with errors a user can act on (missing, truncated, not a checkpoint).

    Loads with ``weights_only=True``: tensors and plain containers only, never arbitrary pickled code.
    ``mmap``: map the tensors of a zip-format file from it rather than read them (for what needs only their
    shapes); files of the pickle format before torch 1.6 are read whole.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist. Check the path given on the command line.")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, and not an export folder (no {EXPORT_CONFIG}). "
                              f"Give the checkpoint file inside it (e.g. {path / 'last.pth'}); to continue the "
                              f"training run it holds, pass '--resume auto --output {path}' to the command that "
                              f"trained it.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): it was probably cut off while "
                              f"being written. Use an earlier checkpoint.")
    if path.suffix == ".safetensors":
        raise CheckpointError(f"{path} is a safetensors file; ecanet reads it as part of an export folder, which "
                              f"holds its recipe too: give the folder ({path.parent}).")
    try:
        with open(path, "rb") as f:
            head = f.read(len(_ZIP_MAGIC))
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.strerror or exc}). Fix its permissions or "
                              f"give another checkpoint.") from None
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_PROTOCOL)):
        raise CheckpointError(f"{path} is not a PyTorch checkpoint: torch.save writes a zip archive (or, before "
                              f"torch 1.6, a pickle), and this file starts with {head!r}. Give a checkpoint file "
                              f"(.pth, .pth.tar) or an export folder.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True,
                          mmap=mmap and head.startswith(_ZIP_MAGIC))
    except pickle.UnpicklingError as exc:
        refused = _weights_only_refusal(exc)
        if refused is None:
            raise CheckpointError(_unreadable_message(path, exc)) from exc
        raise CheckpointError(
            f"{path} holds Python objects that torch.load(weights_only=True) refuses ({refused}). ecanet never "
            f"unpickles anything but tensors and plain containers, because unpickling can run code stored in the "
            f"file. If you trust the file and where it came from, convert it once: load it with "
            f"torch.load(PATH, weights_only=False) and save its state_dict with torch.save; then pass the new "
            f"file.") from None
    except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, RuntimeError, ValueError, OSError,
            AttributeError, KeyError, IndexError, TypeError) as exc:
        raise CheckpointError(_unreadable_message(path, exc)) from exc


# How the files torch.save writes begin: a zip archive (torch 1.6 and later) or a pickle of protocol 2 or more.
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL = b"\x80"
REASON_CHARS = 160   # how much of a loader's own error a message quotes

# torch's refusal starts with this, and names the refused callable or class as "GLOBAL module.name"
_WEIGHTS_ONLY_REFUSAL = "Weights only load failed"
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _weights_only_refusal(exc: BaseException) -> str | None:
    """What ``torch.load(weights_only=True)`` refused (``it refers to posix.system``), or None when ``exc``
    is another unpickling error."""
    text = str(exc)
    if _WEIGHTS_ONLY_REFUSAL not in text:
        return None
    found = _REFUSED_GLOBAL.search(text)
    return f"it refers to {found.group(1)}" if found else "an object that is neither a tensor nor a plain container"


def _loader_reason(exc: BaseException) -> str:
    """The first line of a loader's error, cut at a whole word after :data:`REASON_CHARS` characters."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if len(reason) > REASON_CHARS:   # whole words, and say that it is cut
        reason = reason[:REASON_CHARS].rsplit(" ", 1)[0].rstrip(" ,;:(") + " ..."
    return reason


def _unreadable_message(path: Path, exc: BaseException) -> str:
    return (f"{path} is not a readable PyTorch checkpoint (torch.load: {_loader_reason(exc)}). It may be truncated "
            f"(an interrupted copy or download) or damaged. Re-download or re-copy it, or give another checkpoint.")


def strip_wrapper_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ``module.`` and ``_orig_mod.`` prefixes (any order, any repetition) from every key."""
    out = {}
    for key, value in state_dict.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix):], True
        out[key] = value
    return out


def _tensor_mapping(obj: Any, keys: tuple[str, ...]) -> Mapping | None:
    """The first of ``keys`` in ``obj`` whose value is a non-empty mapping of tensors, or None."""
    for key in keys:
        inner = obj.get(key) if isinstance(obj, Mapping) else None
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner
    return None


def extract_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model weights inside a loaded checkpoint object, with wrapper prefixes removed."""
    inner = _tensor_mapping(obj, ("state_dict", "model", "model_state_dict"))
    if inner is not None:
        return strip_wrapper_prefixes(inner)
    if isinstance(obj, Mapping):
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return strip_wrapper_prefixes(obj)
    raise CheckpointError(
        f"{source} holds no model weights: expected a state_dict (name -> tensor) or a dict with a "
        f"'state_dict' entry (the official ECA-Net format); found {_describe(obj)}. Give a model checkpoint "
        f"instead.")


def ema_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The weights of the exponential moving average in a loaded checkpoint object (:data:`EMA_STATE_KEYS`)."""
    inner = _tensor_mapping(obj, EMA_STATE_KEYS)
    if inner is not None:
        return strip_wrapper_prefixes({k: v for k, v in inner.items() if k != AVERAGED_MODEL_COUNT})
    raise CheckpointError(f"{source} holds no EMA weights: its run was not trained with --ema (or the file is not "
                          f"a checkpoint of ecanet or timm). Leave out --use-ema to use the model's own weights.")


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj)[:8]
        return f"a dict with keys {keys}" + (" ..." if len(obj) > 8 else "")
    return f"a {type(obj).__name__}"


# ------------------------------------------------------------------------------------ reading the network

@dataclass(frozen=True)
class NetworkSpec:
    """What a state_dict says about its network."""

    arch: str
    num_classes: int
    eca_kernel_sizes: dict[str, int]

    @property
    def kernel_string(self) -> str:
        """Per-stage kernel sizes in the release's notation (``'3557'``), when each stage is uniform."""
        if not self.eca_kernel_sizes:
            return ""
        stages: dict[str, list[int]] = {}
        for name, k in self.eca_kernel_sizes.items():
            stage = name.split(".")[0] if name.startswith("layer") else "all"
            stages.setdefault(stage, []).append(k)
        if all(len(set(v)) == 1 for v in stages.values()) and "all" not in stages:
            return "".join(str(v[0]) if v[0] < 10 else f"({v[0]})" for v in stages.values())
        return "".join(sorted({str(k) for k in self.eca_kernel_sizes.values()}))


_LAYER_BLOCK = re.compile(r"^layer(\d+)\.(\d+)\.")


def infer_network(state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> NetworkSpec:
    """Read architecture, number of classes and ECA kernel sizes off a (prefix-free) state_dict."""
    keys = set(state_dict)
    eca = {k[: -len(".conv.weight")]: int(v.shape[-1]) for k, v in state_dict.items()
           if k.endswith(".conv.weight") and v.dim() == 3 and tuple(v.shape[:2]) == (1, 1)}
    has_se = any(k.endswith(".se.fc1.weight") for k in keys)
    prefix = "eca_" if eca else "se_" if has_se else ""

    if "layer1.0.conv1.weight" in keys and "conv1.weight" in keys:
        blocks: dict[int, set[int]] = {}
        for key in keys:
            match = _LAYER_BLOCK.match(key)
            if match:
                blocks.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
        layers = tuple(len(blocks.get(i, ())) for i in range(1, 5))
        block = Bottleneck if "layer1.0.conv3.weight" in keys else BasicBlock
        depth = next((d for d, (b, lay) in RESNET_SPECS.items() if b is block and lay == layers), None)
        if depth is None:
            raise CheckpointError(
                f"{source} holds a ResNet with {layers} {block.__name__}s per stage, which matches none of "
                f"ResNet-18/34/50/101/152. ecanet cannot build it.")
        arch, num_classes = f"{prefix}resnet{depth}", _classifier_outputs(state_dict, "fc.weight")
    elif "features.0.0.weight" in keys and "features.18.0.weight" in keys:   # MobileNetV2's 19 feature modules
        arch, num_classes = f"{prefix}mobilenet_v2", _classifier_outputs(state_dict, "classifier.1.weight")
    else:
        sample = sorted(keys)[:SHOW_KEYS]
        raise CheckpointError(
            f"{source} does not look like any network ecanet knows (no ResNet 'conv1.weight'/"
            f"'layer1.0.conv1.weight', no MobileNetV2 'features.0.0.weight'/'features.18.0.weight'; first keys: "
            f"{sample}). "
            f"Known architectures: {', '.join(models.list_models())}.")
    if not models.is_model(arch):
        raise CheckpointError(f"{source} holds {arch}, which ecanet does not register. "
                              f"Known architectures: {', '.join(models.list_models())}.")
    return NetworkSpec(arch, num_classes, eca)


def _classifier_outputs(state_dict: Mapping[str, torch.Tensor], classifier_key: str) -> int:
    """The classifier's outputs; 0 for weights without one (a network built with ``num_classes=0``, e.g.
    self-supervised weights), which then load into the headless network, as timm's ``num_classes=0`` builds."""
    weight = state_dict.get(classifier_key)
    return 0 if weight is None else int(weight.shape[0])


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise a :class:`CheckpointError` naming the first missing / unexpected / mismatched keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
                  for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", mismatched)):
        if items:
            more = f" (+{len(items) - SHOW_KEYS} more)" if len(items) > SHOW_KEYS else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:SHOW_KEYS])}{more}")
    raise CheckpointError(f"{source} does not fit the network: " + "; ".join(parts) +
                          ". Check -a/--ksize/--num-classes, or let ecanet infer them by leaving them out.")


def build_from_spec(spec: NetworkSpec, eca_impl: str = "auto") -> nn.Module:
    """The network a :class:`NetworkSpec` describes, with fresh weights and every ECA layer's kernel size."""
    model = models.create_model(spec.arch, num_classes=spec.num_classes, eca_impl=eca_impl)
    layers = models.eca_kernel_sizes(model)
    # Only the network's own ECA layers, at sizes ECA can have: any other weight of that shape is left for
    # check_state_dict to name as unexpected or mismatched.
    sizes = {name: k for name, k in spec.eca_kernel_sizes.items() if name in layers and k % 2 == 1}
    if sizes:
        models.set_eca_kernel_sizes(model, sizes)
    return model


def recipe_of(obj: Any, spec: NetworkSpec, source: str) -> Recipe:
    """The recipe a loaded checkpoint records, or, for a file with none (the official releases), the paper's
    ImageNet preprocessing with the network read off the weights."""
    stored = obj.get("recipe") if isinstance(obj, Mapping) else None
    if stored is None and isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT \
            and isinstance(obj.get("config"), Mapping):
        return _recipe_from_run_config(obj, spec)
    if stored is None:
        return Recipe.paper_defaults(spec.arch, spec.num_classes, spec.eca_kernel_sizes)
    recipe = Recipe.from_dict(stored, source)
    if (recipe.arch, recipe.num_classes, dict(recipe.eca_kernel_sizes)) != (spec.arch, spec.num_classes,
                                                                             spec.eca_kernel_sizes):
        raise CheckpointError(f"{source}: its recipe describes {recipe.arch} with {recipe.num_classes} classes "
                              f"but its weights are {spec.arch} with {spec.num_classes}. The file is damaged or "
                              f"was edited by hand; use another checkpoint.")
    return recipe


def _recipe_from_run_config(obj: Mapping[str, Any], spec: NetworkSpec) -> Recipe:
    """The recipe of an ecanet checkpoint written before recipes were recorded: its run's resolved options."""
    config = obj["config"]
    classes = obj.get("classes")
    recipe = Recipe(spec.arch, spec.num_classes, spec.eca_kernel_sizes,
                    img_size=int(config.get("img-size") or IMAGENET_IMG_SIZE),
                    val_resize=int(config.get("val-resize") or IMAGENET_VAL_RESIZE),
                    mean=tuple(config.get("mean") or IMAGENET_MEAN), std=tuple(config.get("std") or IMAGENET_STD),
                    classes=tuple(classes) if classes else None,
                    origin="the run's options (an older ecanet checkpoint)")
    return recipe


# Where a checkpoint keeps the exponential moving average's weights: best.pth's key, timm's, and last.pth's
# (the whole torch.optim.swa_utils.AveragedModel: the network under 'module.', and its 'n_averaged' count).
EMA_STATE_KEYS = ("ema_state_dict", "state_dict_ema", "ema")
AVERAGED_MODEL_COUNT = "n_averaged"


def read_weights(path: str | os.PathLike, map_location: Any = "cpu", use_ema: bool = False,
                 mmap: bool = False) -> tuple[dict[str, torch.Tensor], Recipe]:
    """The weights (prefix-free) and the recipe of any file ecanet reads: an official ECA-Net file, a bare
    state_dict, an ecanet checkpoint, or an export folder (``model.safetensors`` + ``config.json``).
    ``use_ema``: the weights of the model's exponential moving average (a checkpoint of a run trained with
    ``--ema``) instead of the model's own. ``mmap``: as for :func:`read_checkpoint`."""
    path = Path(path)
    source = str(path)
    if path.is_dir() and any((path / name).exists() for name in (EXPORT_CONFIG, EXPORT_WEIGHTS)):
        if use_ema:
            raise CheckpointError(f"{source} is an export folder, which holds one set of weights, not an EMA's "
                                  f"beside them. Leave out --use-ema, or export the EMA's weights: "
                                  f"python scripts/export.py CHECKPOINT FOLDER --use-ema.")
        return read_export(path)
    if path.is_dir():
        raise CheckpointError(_not_a_weights_folder(path))
    obj = read_checkpoint(path, map_location, mmap)
    check_format_version(obj, source)
    refuse_detection_checkpoint(obj, source)
    state_dict = ema_state_dict(obj, source) if use_ema else extract_state_dict(obj, source)
    spec = infer_network(state_dict, source)
    claimed = obj.get("arch") if isinstance(obj, Mapping) else None
    if isinstance(claimed, str) and claimed != spec.arch:
        log.warning("%s says arch '%s' but its weights are those of %s (k %s); loading it as %s", source, claimed,
                    spec.arch, spec.kernel_string or "-", spec.arch)
    return state_dict, recipe_of(obj, spec, source)


# What checkpoint files are named like, for naming the ones a folder holds.
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".tar")


def _not_a_weights_folder(folder: Path) -> str:
    """Why a folder given for weights (``--weights``, ``-e``, ``load_model``, ``export.py``) is not read: it is
    no export folder; the fix names the checkpoint files it holds, or says that it holds none."""
    try:
        held = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    except OSError:   # an unreadable folder: say what it is not, without listing it
        held = []
    problem = (f"{folder} is a folder but not an export folder (it has no {EXPORT_CONFIG} and no {EXPORT_WEIGHTS}); "
               f"weights are read from a checkpoint file or an export folder.")
    if held:
        example = BEST_CHECKPOINT if BEST_CHECKPOINT in held else held[0]
        more = f" (+{len(held) - SHOW_KEYS} more)" if len(held) > SHOW_KEYS else ""
        return (f"{problem} It holds {', '.join(held[:SHOW_KEYS])}{more}: give one of those files, e.g. "
                f"{folder / example}.")
    return (f"{problem} It holds no checkpoint file either. Give the path of a checkpoint file (.pth, .pth.tar), "
            f"or of a folder that python scripts/export.py CHECKPOINT FOLDER wrote.")


# Where torchvision's detectors (and so det_main.py's checkpoints) keep their backbone's weights.
DETECTOR_BACKBONE_PREFIX = "backbone.body."


def refuse_detection_checkpoint(obj: Any, source: str) -> None:
    """A :class:`CheckpointError` for a detector's weights given where a classification network's are read: a
    ``det_main.py`` checkpoint (``last.pth``, ``model.pth``) names the det_main.py command that takes it."""
    inner = _tensor_mapping(obj, ("model", "state_dict", "model_state_dict"))
    if inner is None:
        inner = obj if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()) \
            else {}
    if not any(isinstance(key, str) and DETECTOR_BACKBONE_PREFIX in key for key in inner):
        return
    if obj.get("format") != DETECTION_FORMAT:
        raise CheckpointError(
            f"{source} holds a detector's weights (torchvision's layout, '{DETECTOR_BACKBONE_PREFIX}*' keys), not a "
            f"classification network's, which this command reads. Give a classification checkpoint (a main.py "
            f"run's best.pth, an official ECA-Net file) or an export folder.")
    network = f" (a {obj['detector']} with a {obj['arch']} backbone)" if obj.get("detector") and obj.get("arch") \
        else ""
    training = "optimizer" in obj
    continue_it = f"; continue its training with 'python det_main.py --resume {source}'" if training else ""
    raise CheckpointError(
        f"{source} is a detection checkpoint of det_main.py{network}, not a "
        f"classification network's: main.py, scripts/export.py and ecanet.load_model read classification "
        f"checkpoints. det_main.py takes it: evaluate it with 'python det_main.py -e --resume {source}'"
        f"{continue_it}. (det_main.py's --weights takes a classification checkpoint, for the backbone.)")


def check_format_version(obj: Any, source: str) -> None:
    """Refuse an ecanet checkpoint written in a newer format than this ecanet reads."""
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        version = obj.get("format_version")
        if isinstance(version, int) and version > CHECKPOINT_VERSION:
            raise CheckpointError(f"{source} is an ecanet checkpoint in format version {version}, newer than this "
                                  f"ecanet reads (up to {CHECKPOINT_VERSION}). Upgrade ecanet to the version that "
                                  f"wrote it or newer.")


def training_recipe(obj: Mapping[str, Any], source: str) -> Recipe:
    """The recipe of a training checkpoint (``last.pth``) that a run resumes from."""
    refuse_detection_checkpoint(obj, source)
    state_dict = extract_state_dict(obj, source)
    return recipe_of(obj, infer_network(state_dict, source), source)


def read_recipe(path: str | os.PathLike) -> Recipe:
    """The recipe of a checkpoint file or export folder (see :func:`read_weights`). The network is read off the
    tensors' shapes, so a checkpoint's tensors are mapped from the file, not read."""
    return read_weights(path, mmap=True)[1]


def load_model(path: str | os.PathLike, arch: str | None = None, map_location: Any = "cpu",
               strict_arch: bool = False, eca_impl: str = "auto", use_ema: bool = False) -> nn.Module:
    """Build the network a checkpoint describes and load its weights strictly.

    Args:
        path: an official ECA-Net file, a bare state_dict, an ecanet checkpoint, or an export folder.
        arch: the architecture you expect (optional; a name :func:`ecanet.list_models` lists). The file
            decides: if it holds another network, a warning is logged and the file's network is built, or, with
            ``strict_arch``, a :class:`CheckpointError` is raised.
        map_location: passed to ``torch.load``.
        strict_arch: raise instead of warning when ``arch`` disagrees with the file.
        eca_impl: how the ECA layers compute (see :func:`ecanet.create_model`).
        use_ema: load the weights of the model's exponential moving average, which the checkpoints of a run
            trained with ``--ema`` (and timm's) hold beside the model's own.

    Returns:
        The model, in eval mode, with every ECA layer's kernel size as in the file, and the file's
        :class:`~ecanet.recipe.Recipe` (how to preprocess its inputs) as ``model.recipe``. Weights without a
        classifier (saved from a network built with ``num_classes=0``) give that headless network.
    """
    if arch is not None and not models.is_model(arch):
        raise models.UnknownModelError(models.unknown_model_message(arch))
    state_dict, recipe = read_weights(path, map_location, use_ema)
    source = str(path) + (" (EMA)" if use_ema else "")
    spec = NetworkSpec(recipe.arch, recipe.num_classes, dict(recipe.eca_kernel_sizes))
    if arch is not None and arch != spec.arch:
        message = (f"{source} holds {spec.arch} ({spec.num_classes} classes"
                   f"{', ECA kernel sizes ' + spec.kernel_string if spec.kernel_string else ''}), not {arch}.")
        if strict_arch:
            raise CheckpointError(message + f" Ask for arch={spec.arch!r} (main.py: -a {spec.arch}), or leave "
                                            f"it out to load whatever the file holds, or pick a checkpoint of {arch}.")
        log.warning("%s Loading it as %s.", message, spec.arch)
    model = build_from_spec(spec, eca_impl)
    check_state_dict(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True)
    model.recipe = recipe
    log.info("%s: %s", source, recipe.describe())
    return model.eval()


# ------------------------------------------------------------------------------------------ export folders

EXPORT_FORMAT = "ecanet-export"
EXPORT_VERSION = 1
EXPORT_WEIGHTS = "model.safetensors"
EXPORT_CONFIG = "config.json"


def check_export_folder(folder: str | os.PathLike, also: Sequence[str] = ()) -> None:
    """Refuse (:class:`CheckpointError`), before anything is written, an export folder that cannot be made or
    would mix with what is there: a file, a path under a file, a folder holding any file of an export
    (``model.safetensors``, ``config.json``, or one of ``also``: an export never overwrites one, nor joins one), or a
    training run's directory (checkpoints, ``config.yaml``, ``metrics.jsonl``: a run directory holding
    ``config.json`` reads as an export folder). Other files in the folder (a README, a git clone's) are left be."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{folder} is a file; an export is a folder (model.safetensors and config.json). "
                              f"Pick a folder name for the export.")
    parent = None if folder.exists() else blocking_file(folder)
    if parent is not None:
        raise CheckpointError(f"{parent} is a file, so the export folder {folder} cannot be made inside it. Pick an "
                              f"output folder outside {parent}.")
    if not folder.is_dir():
        return
    taken = [name for name in (EXPORT_WEIGHTS, EXPORT_CONFIG, *also) if (folder / name).exists()]
    if taken:
        raise CheckpointError(f"{folder} already holds {', '.join(taken)}; an export never overwrites one. "
                              f"Pick another output folder or delete the old export first.")
    run_files = _training_run_files(folder)
    if run_files:
        raise CheckpointError(f"{folder} holds a training run ({', '.join(run_files)}); an export into it would mix "
                              f"with the run's files, and the run directory would then read as an export folder. "
                              f"Pick an output folder of its own{_sibling_example(folder)}.")


def _training_run_files(folder: Path) -> list[str]:
    """The files by which ``folder`` is a training run's directory (main.py's or det_main.py's) that it holds:
    the checkpoints a run saves, its resolved options and its records."""
    run_files = (BEST_CHECKPOINT, LAST_CHECKPOINT, DETECTOR_WEIGHTS, RUN_CONFIG, METRICS_FILE)
    return [name for name in run_files if (folder / name).is_file()]


def _sibling_example(folder: Path) -> str:
    name = folder.resolve().name
    return f", e.g. {folder.resolve().with_name(name + '-export')}" if name else ""


def save_export(model: nn.Module, recipe: Recipe, folder: str | os.PathLike) -> Path:
    """Write ``folder/model.safetensors`` (the weights, no pickle) and ``folder/config.json`` (the recipe).

    ``folder`` must not hold an export already, nor a training run (:func:`check_export_folder`): nothing saved
    is overwritten (:class:`CheckpointError`).
    """
    from safetensors.torch import save

    folder = Path(folder)
    check_export_folder(folder)
    state = {name: t.detach().contiguous().cpu() for name, t in strip_wrapper_prefixes(model.state_dict()).items()}
    config = {"format": EXPORT_FORMAT, "format_version": EXPORT_VERSION, "recipe": recipe.to_dict()}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _atomic_file(folder / EXPORT_WEIGHTS) as f:
            f.write(save(state, metadata={"format": EXPORT_FORMAT}))
        with _atomic_file(folder / EXPORT_CONFIG) as f:
            f.write((json.dumps(config, indent=2) + "\n").encode())
    except OSError as exc:   # a read-only place, a full disk: _atomic_file leaves no partial file
        raise CheckpointError(f"cannot write the export folder {folder} ({exc.strerror or exc}). Pick an output "
                              f"folder in a writable place with room for the weights.") from None
    return folder


def read_export(folder: Path) -> tuple[dict[str, torch.Tensor], Recipe]:
    """The weights and recipe of an export folder, with no pickle involved."""
    config_path, weights_path = folder / EXPORT_CONFIG, folder / EXPORT_WEIGHTS
    again = "Export the checkpoint again: python scripts/export.py CHECKPOINT FOLDER."
    if not config_path.is_file():
        raise CheckpointError(f"{folder} holds no {EXPORT_CONFIG}, so the network it holds is unknown. {again}")
    try:
        config = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path} is not valid JSON ({exc}): the file is damaged. {again}") from None
    if not isinstance(config, Mapping) or config.get("format") != EXPORT_FORMAT or "recipe" not in config:
        raise CheckpointError(f"{config_path} is not an ecanet export's config (no format '{EXPORT_FORMAT}' with a "
                              f"recipe). {again}")
    version = config.get("format_version")
    if not isinstance(version, int) or version > EXPORT_VERSION:
        raise CheckpointError(f"{config_path} is an export in format version {version!r}, which this ecanet does not "
                              f"read (up to {EXPORT_VERSION}). Upgrade ecanet, or export the checkpoint again with "
                              f"this one: python scripts/export.py CHECKPOINT FOLDER.")
    recipe = Recipe.from_dict(config["recipe"], str(config_path))
    if not weights_path.is_file():
        raise CheckpointError(f"{folder} holds no {EXPORT_WEIGHTS}, only the recipe. {again}")
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        state_dict = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_path} is not readable safetensors ({exc}): the file is damaged or cut "
                              f"off. {again}") from None
    return state_dict, replace(recipe, origin=f"recorded in {config_path}")


# ----------------------------------------------------------------------------------------------- writing

# What a save that was killed mid-write leaves: _atomic_file's temporary file of a checkpoint.
UNFINISHED_SAVES = ".*.pth.*.tmp"


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A file to write ``path`` through: a temporary file in the same directory that is fsynced and renamed
    over ``path`` only if the block completes. On any error the temporary file is removed and ``path`` is
    untouched; I/O errors become :class:`CheckpointSaveError`."""
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), FILE_MODE & ~_umask())  # mkstemp makes 0600; a checkpoint is shared like any file
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
        _fsync_directory(path.parent)
    except BaseException as exc:
        # Why, before the temporary file goes: its removal frees what filled the disk.
        reason = _save_failure(exc, path.parent) if isinstance(exc, (OSError, RuntimeError)) else None
        if tmp_name is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
        if reason is not None:
            raise CheckpointSaveError(f"could not write checkpoint {path}: {reason}") from exc
        raise


# How torch's zip writer words a write that came up short (a full disk, a quota): its own "enforce fail".
_SHORT_WRITE_MARKERS = ("file write failed", "unexpected pos")


def _save_failure(exc: BaseException, directory: Path) -> str:
    """Why a save failed, in words. A full disk (or quota) is ENOSPC/EDQUOT from Python, or one of torch's
    writer errors of :data:`_SHORT_WRITE_MARKERS`, or any error with less than :data:`LOW_DISK_BYTES` left."""
    free = shutil.disk_usage(directory).free if directory.exists() else None
    full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or any(
        marker in str(exc) for marker in _SHORT_WRITE_MARKERS)
    if full or (free is not None and free < LOW_DISK_BYTES):
        return (f"the disk holding {directory} is full or over its quota ({(free or 0) / 2**20:,.0f} MiB free "
                f"while writing)")
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically: temporary file in the same directory, fsync, rename.

    Raises :class:`CheckpointSaveError` if anything fails; ``path`` then still holds the previous
    checkpoint (or nothing), never a partial file.
    """
    with _atomic_file(Path(path)) as f:
        torch.save(dict(state), f)


def _fsync_directory(directory: Path) -> None:
    # Make the rename itself durable (POSIX); not possible on every platform/filesystem.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------ training state

BEST_CHECKPOINT = "best.pth"


def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch CPU and current CUDA device), loadable weights-only."""
    import random

    import numpy as np
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype("int64")), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    import random

    import numpy as np
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype("uint32"), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def library_versions() -> dict[str, str]:
    import platform

    import torchvision

    from . import __version__
    return {"ecanet": __version__, "torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "python": platform.python_version()}


def is_training_checkpoint(obj: Any) -> bool:
    return isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT and "optimizer" in obj


def find_resume_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest training checkpoint (highest global step) in ``run_dir``, or None.

    Unreadable ``*.pth`` files are skipped with a warning; when they are all the directory holds, a
    :class:`CheckpointError` says so, naming the first and why it cannot be read (a run is never started
    afresh over them)."""
    run_dir = Path(run_dir)
    best: tuple[int, bool, float, Path] | None = None
    unreadable: list[tuple[Path, Exception]] = []
    for path in sorted(run_dir.glob("*.pth")):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # noqa: BLE001 - an unreadable file is skipped, loudly
            log.warning("ignoring unreadable file %s while looking for a checkpoint (%s)", path, exc)
            unreadable.append((path, exc))
            continue
        if is_training_checkpoint(obj):
            # newest = highest global step; on a tie prefer last.pth, then the most recently written
            key = (int(obj.get("global_step", 0)), path.name == LAST_CHECKPOINT, path.stat().st_mtime, path)
            best = key if best is None or key[:3] > best[:3] else best
    if best is None and unreadable:
        path, exc = unreadable[0]
        raise CheckpointError(f"--resume auto: {run_dir} holds no training checkpoint that can be read: {path} "
                              f"fails to load (torch.load: {_loader_reason(exc)}); it may be truncated by a copy or "
                              f"a full disk. Restore it from a copy and rerun, or move it away to start the run "
                              f"afresh.")
    return best[3] if best else None


def check_resumable(obj: Any, path: str | os.PathLike, arch: str, eca_kernel_sizes: Mapping[str, int] | None,
                    num_classes: int | None, classes: Sequence[str] | None = None) -> None:
    """Refuse to continue training from a checkpoint of another network, or on another dataset's classes (a
    clear, early error).

    ``eca_kernel_sizes`` / ``num_classes`` / ``classes`` None: not checked (yet).
    """
    if not is_training_checkpoint(obj):
        raise CheckpointError(
            f"{path} holds no ecanet training state (the optimizer, schedule, position and random states a "
            f"resumed run continues from), so training cannot continue from it. To start a new run from these "
            f"weights use --weights {path}; to evaluate them use -e --resume {path}.")
    if obj.get("arch") != arch:
        raise CheckpointError(f"{path} is a checkpoint of {obj.get('arch')}, but this run trains {arch}. "
                              f"Pass -a {obj.get('arch')} (and its --ksize) or another --output/--resume.")
    saved_k = dict(obj.get("eca_kernel_sizes") or {})
    if eca_kernel_sizes is not None and saved_k != dict(eca_kernel_sizes):
        saved = NetworkSpec(arch, num_classes, saved_k).kernel_string
        raise CheckpointError(f"{path} was trained with ECA kernel sizes {saved or saved_k}, not the ones "
                              f"this run builds. Pass --ksize {saved} to resume it.")
    if num_classes is not None and int(obj.get("num_classes", num_classes)) != num_classes:
        raise CheckpointError(f"{path} has {obj.get('num_classes')} classes; the dataset has {num_classes}. "
                              f"Resume on the dataset it was trained on.")
    difference = class_difference(obj.get("classes"), classes)
    if difference:
        raise CheckpointError(f"{path} was trained on other classes than the dataset's: {difference}. The labels "
                              f"would mean other classes. Resume on the dataset it was trained on.")


def class_difference(recorded: Sequence[str] | None, found: Sequence[str] | None) -> str | None:
    """Where two class lists (index -> class folder name) differ, in words ('class 0 is c0 there, z0 here'), or
    None when they agree or either is unknown (a released file records none)."""
    if recorded is None or found is None or list(recorded) == list(found):
        return None
    if len(recorded) != len(found):
        return f"{len(recorded)} classes there, {len(found)} here"
    index = next(i for i, (a, b) in enumerate(zip(recorded, found)) if a != b)
    return f"class {index} is {recorded[index]!r} there, {found[index]!r} here"


# ------------------------------------------------------------------------------- a run's checkpoints

@dataclass(frozen=True)
class RunRecord:
    """What a run's checkpoints record about it, beside the training state itself."""

    recipe: Recipe            # how to rebuild the network and preprocess its inputs
    seed: int
    world_size: int
    config: dict[str, Any]    # the resolved options, as config.yaml holds them
    train_size: int | None = None   # training images: with the batch, they decide each epoch's steps


def _network_fields(state: "TrainState", run: RunRecord) -> dict[str, Any]:
    recipe = run.recipe
    return {"arch": recipe.arch, "num_classes": recipe.num_classes,
            "classes": list(recipe.classes) if recipe.classes is not None else None,
            "eca_kernel_sizes": models.eca_kernel_sizes(state.model), "recipe": recipe.to_dict(),
            "state_dict": state.model.state_dict(), "versions": library_versions()}


def training_checkpoint(state: "TrainState", run: RunRecord, reason: str, rng_states: list[Any],
                        elapsed_s: float = 0.0) -> dict[str, Any]:
    """The contents of ``last.pth``: the weights and everything needed to continue bit-identically.

    ``reason`` says why it was written (``'epoch'``, ``'step'``, ``'preempted'``); ``rng_states`` holds every
    rank's RNG states (:func:`capture_rng_state`, gathered); ``elapsed_s`` the run's seconds so far.
    """
    position = state.position
    return {
        "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "reason": reason,
        **_network_fields(state, run),
        "optimizer": state.optimizer.state_dict(), "lr_scheduler": state.scheduler.state_dict(),
        "scaler": state.precision.scaler.state_dict() if state.precision.scaler else None,
        "ema": state.ema.state_dict() if state.ema is not None else None,
        "epoch": position.epoch, "step_in_epoch": position.step_in_epoch, "global_step": position.global_step,
        "epoch_totals": state.totals.state_dict() if position.step_in_epoch else None,
        "epoch_skipped_images": state.skipped_in_epoch,
        "best_prec1": state.best_top1, "sampler_seed": run.seed, "rng": rng_states,
        "world_size": run.world_size, "train_size": run.train_size, "config": run.config,
        "elapsed_s": float(elapsed_s),
    }


def weights_checkpoint(state: "TrainState", run: RunRecord) -> dict[str, Any]:
    """The contents of ``best.pth``: the weights (and the EMA's, when there is one) with the recipe, and no
    training state: what evaluating, fine-tuning and sharing need, at about half of ``last.pth``'s size (two
    thirds with an EMA)."""
    return {
        "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "reason": "best",
        **_network_fields(state, run),
        "ema_state_dict": state.ema.module.state_dict() if state.ema is not None else None,
        "epoch": state.position.epoch, "best_prec1": state.best_top1,
    }


def save_training_checkpoint(state: "TrainState", run: RunRecord, run_dir: Path, info: DistInfo, reason: str,
                             is_best: bool = False, elapsed_s: float = 0.0) -> None:
    """Write ``run_dir/last.pth`` (and, first, ``best.pth``) on rank 0; every rank learns whether it worked.

    ``elapsed_s``: the run's seconds of training and evaluation so far, over all its starts (summary.wall_time_s
    of a resumed run counts them all). Raises :class:`CheckpointSaveError` on every rank when rank 0 could not
    write; the previous files are then intact.
    """
    from .engine import NonFiniteLossError, first_non_finite
    bad = first_non_finite(state.model)
    if any_rank(bad is not None, info):  # never save what cannot be trained on from
        lr = state.optimizer.param_groups[0]["lr"]
        raise NonFiniteLossError(state.position.global_step, state.position.epoch, lr,
                                 what=f"the model's {bad}" if bad else "another rank's model")
    rng_states = all_gather_objects(capture_rng_state(), info)
    error = None
    if info.is_main:
        path, best = run_dir / LAST_CHECKPOINT, run_dir / BEST_CHECKPOINT
        first_save = not path.exists()
        try:
            # best.pth first: last.pth records the best top-1, and a resumed run writes best.pth again only
            # when it beats that, so last.pth must not claim a best.pth that failed to be written.
            if is_best:
                save_checkpoint(weights_checkpoint(state, run), best)
            save_checkpoint(training_checkpoint(state, run, reason, rng_states, elapsed_s), path)
            log.info("saved %s (%s; global step %d)", path, reason, state.position.global_step)
        except CheckpointSaveError as exc:
            error = str(exc)
            if first_save and is_best:   # no training checkpoint to resume from: the run starts over, cleanly
                best.unlink(missing_ok=True)
    if any_rank(error is not None, info):
        raise CheckpointSaveError(error or "rank 0 could not write the checkpoint",
                                  resumable=(run_dir / LAST_CHECKPOINT).is_file())


def restore_training_state(state: "TrainState", obj: Mapping[str, Any], path: Path, info: DistInfo
                           ) -> list[Any] | None:
    """Load a training checkpoint into ``state``; returns every rank's RNG states to restore last, or None
    when the checkpoint was written by another number of processes (training then continues, not
    bit-identically)."""
    from .engine import EpochPosition  # not at the top: the engine is not needed to read checkpoints

    state.model.load_state_dict(obj["state_dict"])
    state.optimizer.load_state_dict(obj["optimizer"])
    state.scheduler.load_state_dict(obj["lr_scheduler"])
    if state.precision.scaler is not None and obj.get("scaler"):
        state.precision.scaler.load_state_dict(obj["scaler"])
    if state.ema is not None and obj.get("ema") is not None:
        state.ema.load_state_dict(obj["ema"])
    state.position = EpochPosition(int(obj["epoch"]), int(obj["step_in_epoch"]), int(obj["global_step"]))
    if obj.get("epoch_totals") is not None:
        state.totals.load_state_dict(obj["epoch_totals"])
    state.skipped_in_epoch = int(obj.get("epoch_skipped_images", 0))
    state.best_top1 = float(obj.get("best_prec1", -math.inf))
    saved_world = int(obj.get("world_size", 1))
    if saved_world != info.world_size:
        log.warning("the checkpoint was written by %d processes, this run has %d: training continues, "
                    "but not bit-identically (data shards and random streams differ)", saved_world, info.world_size)
        return None
    return obj.get("rng") or []


def load_weights_into(model: nn.Module, path: str | os.PathLike,
                      classes: Sequence[str] | None = None, use_ema: bool = False) -> list[str]:
    """``--weights``: initialise ``model`` from any file :func:`read_weights` reads.

    Only the classifier may differ (another number of classes, or none in the file: it keeps its fresh
    values); any other difference is a :class:`CheckpointError`. ``classes``: the class folder names the model
    will learn; where the file records other ones (:func:`class_difference`), its classifier scores other
    classes and is not loaded either. ``use_ema``: start from the weights of the file's exponential moving
    average (:func:`read_weights`). Returns the names of the tensors not loaded, and logs them with the reason.
    """
    state, recipe = read_weights(path, use_ema=use_ema)
    own = model.state_dict()
    classifier = _classifier_keys(own)
    other_classes = class_difference(recipe.classes, classes)
    if classifier and not any(k in state for k in classifier):   # headless weights (num_classes=0)
        skipped = classifier
        log.warning("--weights: %s holds no classifier: this model's %d-class classifier starts fresh (%s)",
                    path, _num_outputs(own, classifier), ", ".join(skipped))
    elif classifier and other_classes is not None and len(recipe.classes) == len(classes):   # same count, others
        skipped = classifier
        log.warning("--weights: not loading %s: the file's classifier scores other classes (%s); a new "
                    "classifier is trained", ", ".join(skipped), other_classes)
    else:
        # Another number of classes changes the classifier's outputs only; other differences are other networks.
        same_inputs = all(k in state and state[k].shape[1:] == own[k].shape[1:] for k in classifier)
        skipped = [k for k in classifier if same_inputs and state[k].shape != own[k].shape]
        if skipped:
            log.warning("--weights: not loading %s: the file's classifier has %d classes, this model's %d (a new "
                        "classifier is trained)", ", ".join(skipped), recipe.num_classes,
                        _num_outputs(own, classifier))
    check_state_dict(model, {**state, **{k: own[k] for k in skipped}}, str(path))
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=not skipped)
    log.info("initialised from %s (%d of %d tensors)", path, len(own) - len(skipped), len(own))
    return skipped


def _classifier_keys(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """The last linear layer's weight and bias (``fc.*`` in ResNets, ``classifier.1.*`` in MobileNetV2)."""
    weights = [k for k, v in state_dict.items() if k.endswith(".weight") and v.dim() == 2]
    if not weights:
        return []
    prefix = weights[-1][: -len("weight")]
    return [k for k in state_dict if k.startswith(prefix)]


def _num_outputs(state_dict: Mapping[str, torch.Tensor], classifier: list[str]) -> int:
    return int(state_dict[classifier[0]].shape[0]) if classifier else 0


def is_complete(obj: Mapping[str, Any], epochs: int) -> bool:
    """Whether a training checkpoint has finished ``epochs`` epochs (``--resume auto`` then has nothing to do)."""
    return int(obj.get("epoch", 0)) >= epochs and int(obj.get("step_in_epoch", 0)) == 0


def check_kernel_sizes_agree(arch: str, k_size: object, recipe: Recipe, source: str | os.PathLike) -> None:
    """``--weights`` with an explicit ``--ksize``: a :class:`CheckpointError` (naming both) when the kernel
    sizes it builds differ from the file's, whose ECA weights would then not fit."""
    if arch != recipe.arch:
        return  # another network: check_state_dict names what does not fit
    with torch.device("meta"):  # shapes only: nothing is allocated
        wanted = models.eca_kernel_sizes(models.create_model(arch, num_classes=recipe.num_classes, k_size=k_size))
    if wanted != dict(recipe.eca_kernel_sizes):
        differ = [f"{name} k={wanted[name]} vs {recipe.eca_kernel_sizes.get(name)}" for name in wanted
                  if wanted[name] != recipe.eca_kernel_sizes.get(name)]
        file_k = NetworkSpec(arch, recipe.num_classes, dict(recipe.eca_kernel_sizes)).kernel_string
        raise CheckpointError(f"--ksize {k_size} builds other ECA kernel sizes than {source} holds ({file_k}): "
                              f"{', '.join(differ[:SHOW_KEYS])}{' and more' if len(differ) > SHOW_KEYS else ''}. "
                              f"Drop --ksize to use the file's kernel sizes, or pass --ksize {file_k}.")
