#!/usr/bin/env python
"""Train or evaluate ECA-MobileNetV2: main.py with the paper's MobileNetV2 recipe as its defaults.

    python light_main.py DATA                      # ECA-MobileNetV2, the official recipe
    python light_main.py DATA -e --resume eca_mobilenetv2_k13.pth.tar

The recipe is ``configs/eca_mobilenet_v2.yaml`` (the ECA-Net paper, Section 4.1, following Sandler et al.
2018; the official light_main.py): SGD, momentum 0.9, weight decay 4e-5, lr 0.045 for a batch of 96,
lr x0.98 every epoch, 400 epochs. Every option of main.py works here, and overrides it; see --help. Training
a ResNet with this recipe (-a eca_resnet50) is refused: main.py's defaults are the ResNet recipe.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ecanet.config import build_parser, load_config_file
from main import main

RECIPE = Path(__file__).resolve().parent / "configs" / "eca_mobilenet_v2.yaml"


def mobilenet_recipe() -> dict:
    """The recipe's options, ``{dest: value}``, as light_main.py's defaults."""
    return load_config_file(RECIPE, build_parser())


if __name__ == "__main__":
    sys.exit(main(defaults=mobilenet_recipe(), prog="light_main.py",
                  description="Train or evaluate ECA-MobileNetV2 (the paper's MobileNetV2 recipe as defaults)."))
