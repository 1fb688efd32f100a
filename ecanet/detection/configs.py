"""Detection configs (``configs/detection/*.yaml``): a flat mapping of option to value, checked on load.

Keys are the detection entry point's long options without the leading dashes; ``batch_size`` and
``batch-size`` are the same key. :func:`load_detection_config` returns them with underscores (argparse
``dest`` names), typed, so a command line can take them as defaults::

    >>> config = load_detection_config("configs/detection/mask_rcnn_eca_resnet50.yaml")
    >>> model = detector_from_config(config)
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Callable

import yaml

from ..errors import ConfigError


def _number_list(value: Any) -> list[int]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError("expected a list of integers such as [8, 11]")
    return list(value)


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected an integer")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("expected a number")
    return float(value)


def _text(value: Any) -> str:
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ValueError("expected a string")
    return str(value)


# key -> (how to read its value, what it means)
DETECTION_CONFIG_KEYS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "detector": (_text, "faster_rcnn, mask_rcnn or retinanet"),
    "arch": (_text, "backbone ResNet, e.g. eca_resnet50"),
    "ksize": (_text, "ECA kernel sizes, one digit per stage ('3357') or one for all"),
    "num_classes": (_integer, "class ids including background (91: torchvision's COCO ids)"),
    "trainable_layers": (_integer, "backbone stages that train, 0-5 (3: stem and layer1 frozen)"),
    "epochs": (_integer, "training epochs"),
    "batch_size": (_integer, "images per step over all processes"),
    "lr": (_number, "learning rate for batch_size"),
    "lr_steps": (_number_list, "epochs after which the learning rate is divided by 10"),
    "warmup_iters": (_integer, "iterations of linear warm-up"),
    "warmup_factor": (_number, "learning-rate fraction the warm-up starts from"),
    "momentum": (_number, "SGD momentum"),
    "weight_decay": (_number, "SGD weight decay"),
    "min_size": (_integer, "shorter image side after resizing"),
    "max_size": (_integer, "longest image side after resizing"),
    "hflip": (_number, "probability of a horizontal flip in training"),
}


def load_detection_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a detection config; every key is checked and typed.

    Returns:
        ``{key: value}`` with underscore keys (``batch_size``), in the file's order.

    Raises:
        ConfigError: a missing or unreadable file, not a flat mapping, an unknown key (the message names it
            and lists the known ones) or a value of the wrong type.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"detection config {path} does not exist. Check the path; configs/detection/ holds "
                          f"the paper's six.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"detection config {path} cannot be read ({exc}). Give a YAML text file such as "
                          f"configs/detection/faster_rcnn_eca_resnet50.yaml.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"detection config {path} is not valid YAML ({exc}). Fix the file.") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"detection config {path} must be a flat mapping of option: value, got "
                          f"{type(raw).__name__}. See configs/detection/ for examples.")
    config: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in DETECTION_CONFIG_KEYS:
            close = difflib.get_close_matches(name, DETECTION_CONFIG_KEYS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"detection config {path}: unknown key '{key}'.{hint} Known keys: "
                              f"{', '.join(DETECTION_CONFIG_KEYS)}. Remove or rename it.")
        read, meaning = DETECTION_CONFIG_KEYS[name]
        try:
            config[name] = read(value)
        except ValueError as exc:
            raise ConfigError(f"detection config {path}: key '{key}' ({meaning}) has the value {value!r}: {exc}. "
                              f"Fix the value.") from None
    return config


def detector_from_config(config: dict[str, Any], **overrides: Any):
    """The detector a loaded config describes (:func:`~ecanet.detection.models.build_detector`); ``overrides``
    (e.g. ``backbone_weights``, ``eca_impl``) are passed on."""
    from .models import build_detector  # here, so that reading a config does not import torch
    missing = [k for k in ("detector", "arch") if k not in config]
    if missing:
        raise ConfigError(f"the detection config lacks {', '.join(missing)}; add them (e.g. detector: mask_rcnn, "
                          f"arch: eca_resnet50).")
    options = {"k_size": config.get("ksize"), "num_classes": config.get("num_classes"),
               "trainable_layers": config.get("trainable_layers"), "min_size": config.get("min_size"),
               "max_size": config.get("max_size")}
    options = {k: v for k, v in options.items() if v is not None}
    return build_detector(config["detector"], config["arch"], **{**options, **overrides})
