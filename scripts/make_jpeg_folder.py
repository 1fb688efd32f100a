#!/usr/bin/env python
"""Write a synthetic ImageFolder of photo-like JPEGs with ImageNet-like sizes, for pipeline benchmarks.

    python scripts/make_jpeg_folder.py /tmp/jpegs --classes 100 --train-per-class 200 --val-per-class 20

ImageNet's training images average about 400x350 pixels and ~110 kB; random noise would compress far worse
than photos and smooth gradients far better, so each image here is a sum of random low-frequency waves plus
mild noise, at a random size around ImageNet's, saved at JPEG quality 90. The script prints the mean file
size it produced so benchmark reports can state it. Images carry no class signal: this is for timing.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger("make_jpeg_folder")

MEAN_WIDTH_PX, MEAN_HEIGHT_PX = 500, 400   # about ImageNet's typical training image (500x375)
SIZE_JITTER = 0.3                          # +-30 % in each dimension
JPEG_QUALITY = 90
NOISE_STD = 20.0                           # in 0..255 units: makes files photo-sized (~110 kB)
WAVES = 6


def _image(seed: int, size_scale: float) -> Image.Image:
    rng = np.random.default_rng(seed)
    w = int(MEAN_WIDTH_PX * size_scale * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER))
    h = int(MEAN_HEIGHT_PX * size_scale * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER))
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    pixels = np.full((h, w, 3), 128.0, dtype=np.float32)
    for _ in range(WAVES):
        fx, fy = rng.uniform(-0.08, 0.08, 2)
        phase, amplitude = rng.uniform(0, 2 * np.pi), rng.uniform(10, 40, 3)
        pixels += np.sin(fx * xx + fy * yy + phase)[..., None] * amplitude
    pixels += rng.normal(0.0, NOISE_STD, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _write(task: tuple[str, int, float]) -> int:
    path, seed, size_scale = task
    _image(seed, size_scale).save(path, quality=JPEG_QUALITY)
    return Path(path).stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("output", type=Path, help="folder to create (train/ and val/ inside)")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--val-per-class", type=int, default=20)
    parser.add_argument("--size-scale", type=float, default=1.0, help="multiply the image sizes")
    parser.add_argument("--workers", type=int, default=multiprocessing.cpu_count())
    args = parser.parse_args(argv)
    for option, value in (("--classes", args.classes), ("--train-per-class", args.train_per_class),
                          ("--val-per-class", args.val_per_class), ("--workers", args.workers)):
        if value < 1:
            parser.error(f"{option} takes a whole number of at least 1, got {value}.")
    if not args.size_scale > 0:
        parser.error(f"--size-scale takes a positive factor, got {args.size_scale}.")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tasks = []
    for split, per_class in (("train", args.train_per_class), ("val", args.val_per_class)):
        for c in range(args.classes):
            folder = args.output / split / f"class{c:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            offset = 0 if split == "train" else 10_000_000
            tasks += [(str(folder / f"{i:05d}.jpg"), offset + c * 100_003 + i, args.size_scale)
                      for i in range(per_class)]
    with multiprocessing.Pool(args.workers) as pool:
        sizes = pool.map(_write, tasks, chunksize=64)
    log.info("wrote %d JPEGs to %s, mean %.1f kB", len(sizes), args.output, np.mean(sizes) / 1e3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
