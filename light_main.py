#!/usr/bin/env python
"""Train or evaluate ECA-MobileNetV2: main.py with the paper's MobileNetV2 recipe as its defaults.

    python light_main.py DATA                      # ECA-MobileNetV2, the official recipe
    python light_main.py DATA -e --resume eca_mobilenetv2_k13.pth.tar

The recipe (ECA-Net paper, Section 4.1, following Sandler et al. 2018; the official light_main.py):
SGD, momentum 0.9, weight decay 4e-5, lr 0.045 for a batch of 96, lr x0.98 every epoch, 400 epochs.
Every option of main.py works here; see --help.
"""
from __future__ import annotations

import sys

from main import main

MOBILENET_RECIPE = {
    "arch": "eca_mobilenet_v2",
    "epochs": 400,
    "batch_size": 96,
    "lr": 0.045,
    "lr_base_batch": 96,     # 0.045 is the lr of a batch of 96 (official light_main.py)
    "weight_decay": 4e-5,
    "sched": "step",
    "lr_decay_epochs": 1,    # x0.98 every epoch
    "lr_decay_rate": 0.98,
    "print_freq": 500,
}

if __name__ == "__main__":
    sys.exit(main(defaults=MOBILENET_RECIPE, prog="light_main.py",
                  description="Train or evaluate ECA-MobileNetV2 (the paper's MobileNetV2 recipe as defaults)."))
