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


PHOTO_SIZES = ((120, 90), (77, 131), (200, 160))  # (width, height) per class: landscape, portrait, larger


def make_photo_folder(root: Path, per_class: int = 4) -> Path:
    """Smooth, photo-like JPEGs of several sizes and aspect ratios in root/{train,val}/class<c>/; in each
    split the last image of class 0 is a PNG and that of class 1 a greyscale JPEG. Returns root."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, (w, h) in enumerate(PHOTO_SIZES):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                yy, xx = np.mgrid[:h, :w]
                pixels = np.stack([128 + 100 * np.sin(xx / (7 + i) + c), 128 + 100 * np.cos(yy / (5 + c)),
                                   128 + 120 * np.sin((xx + 2 * yy) / 23)], -1) + rng.normal(0, 2, (h, w, 3))
                image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
                last = i == per_class - 1
                if last and c == 0:
                    image.save(folder / f"{i}.png")
                elif last and c == 1:
                    image.convert("L").save(folder / f"{i}.jpg", quality=92)
                else:
                    image.save(folder / f"{i}.jpg", quality=92)
    return root
