"""Small generated ImageFolders for tests: a few classes of small, learnable JPEG/PNG images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASS_NAMES = ("circle", "square", "stripes", "noise")


def _image(class_index: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """A size x size RGB image whose class is visible (a distinct colour and pattern per class)."""
    base = np.zeros((size, size, 3), dtype=np.float32)
    yy, xx = np.mgrid[:size, :size] / size
    if class_index % 4 == 0:
        base[..., 0] = ((yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.1)
    elif class_index % 4 == 1:
        base[..., 1] = (abs(yy - 0.5) < 0.3) & (abs(xx - 0.5) < 0.3)
    elif class_index % 4 == 2:
        base[..., 2] = (np.floor(xx * 8) % 2)
    else:
        base[...] = 0.5
    base += rng.normal(0, 0.15, base.shape)
    return (np.clip(base, 0, 1) * 255).astype(np.uint8)


def make_image_folder(root: Path, classes: int = 3, train_per_class: int = 16, val_per_class: int = 5,
                      size: int = 32, seed: int = 0, ext: str = "jpg") -> Path:
    """Write root/train/<class>/*.ext and root/val/<class>/*.ext; returns root."""
    rng = np.random.default_rng(seed)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = root / split / f"{CLASS_NAMES[c % len(CLASS_NAMES)]}{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(_image(c, rng, size)).save(folder / f"{i:04d}.{ext}")
    return root
