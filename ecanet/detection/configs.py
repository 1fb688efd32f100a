"""Detection configs (``configs/detection/*.yaml``): a flat mapping of option to value, checked on load.

Keys are ``det_main.py``'s long options without the leading dashes; ``batch_size`` and ``batch-size`` are
the same key. :func:`load_detection_config` returns them with underscores (argparse ``dest`` names), typed::

    >>> config = load_detection_config("configs/detection/mask_rcnn_eca_resnet50.yaml")
    >>> model = detector_from_config(config)
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from .. import config as cls_config
from ..errors import ConfigError


def load_detection_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a detection config, checked and typed as ``det_main.py --config`` reads it.

    Returns:
        ``{dest: value}`` with underscore keys (``batch_size``), in the file's order.

    Raises:
        ConfigError: a missing or unreadable file, not a flat mapping, an unknown key (the message names it
            and the closest known ones) or a value of the wrong type.
    """
    from .options import DETECTION_CONFIG_EXAMPLE, build_parser   # det_main's options are the keys
    return cls_config.load_config_file(path, build_parser(), DETECTION_CONFIG_EXAMPLE)


def detector_from_config(config: Mapping[str, Any], **overrides: Any):
    """The detector a config describes, built as ``det_main.py`` builds it, on the CPU.

    ``config`` maps option dests to values: a loaded config file, or ``vars()`` of det_main's resolved
    options. It must name ``detector`` and ``arch``; the model's other options (``ksize``, ``num_classes``,
    ``trainable_layers``, ``norm``, ``eca_impl``, ``weights``, ``min_size``, ``max_size``,
    ``box_batch_per_image``) take det_main's defaults when absent, and training options are not used.
    ``overrides`` are :func:`~ecanet.detection.models.build_detector`'s arguments (``backbone_weights``,
    ``num_classes``, ...) and win over the config.
    """
    import torch  # here, so that reading a config does not import torch
    from torchvision.ops import FrozenBatchNorm2d

    from .models import build_detector
    from .options import build_parser, resolved_norm
    missing = [k for k in ("detector", "arch") if not config.get(k)]
    if missing:
        raise ConfigError(f"the detection config lacks {', '.join(missing)}; add them (e.g. detector: mask_rcnn, "
                          f"arch: eca_resnet50).")
    parser = build_parser()
    value = lambda dest: config[dest] if dest in config else parser.get_default(dest)  # noqa: E731
    norm = resolved_norm(value("norm"), value("weights"))
    options = {"k_size": value("ksize"), "trainable_layers": value("trainable_layers"),
               "backbone_weights": value("weights"), "eca_impl": value("eca_impl"), "min_size": value("min_size"),
               "max_size": value("max_size"),
               "norm_layer": FrozenBatchNorm2d if norm == "frozen" else torch.nn.BatchNorm2d}
    if value("num_classes") is not None:      # det_main's default: from the annotations; here COCO's
        options["num_classes"] = value("num_classes")
    if config["detector"] != "retinanet":     # RetinaNet has no box sampler
        options["box_batch_size_per_image"] = value("box_batch_per_image")
    return build_detector(config["detector"], config["arch"], **{**options, **overrides})
