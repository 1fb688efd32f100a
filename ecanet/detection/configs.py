"""Detection configs (``configs/detection/*.yaml``): a flat mapping of option to value, checked on load.

Keys are ``det_main.py``'s long options without the leading dashes; ``batch_size`` and ``batch-size`` are
the same key. :func:`load_detection_config` returns them with underscores (argparse ``dest`` names), typed::

    >>> config = load_detection_config("configs/detection/mask_rcnn_eca_resnet50.yaml")
    >>> model = detector_from_config(config)
"""
from __future__ import annotations

import os
from typing import Any

from .. import config as cls_config


def load_detection_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a detection config, checked and typed as ``det_main.py --config`` reads it.

    Returns:
        ``{dest: value}`` with underscore keys (``batch_size``), in the file's order.

    Raises:
        ConfigError: a missing or unreadable file, not a flat mapping, an unknown key (the message names it
            and the closest known ones) or a value of the wrong type.
    """
    from .options import build_parser   # the command line's options are the keys: one reader for both
    return cls_config.load_config_file(path, build_parser())


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
