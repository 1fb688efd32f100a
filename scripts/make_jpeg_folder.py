#!/usr/bin/env python
"""Write a synthetic ImageFolder of photo-like JPEGs with ImageNet-like sizes, for pipeline benchmarks.

    python scripts/make_jpeg_folder.py /tmp/jpegs --classes 100 --train-per-class 200 --val-per-class 20

ImageNet's training images average about 400x350 pixels and ~110 kB; random noise would compress far worse
than photos and smooth gradients far better, so each image here is a sum of random low-frequency waves plus
mild noise, at a random size around ImageNet's, saved at JPEG quality 90. The script prints the mean file
size it produced so benchmark reports can state it. Images carry no class signal: this is for timing.

The folder is written under a temporary name next to OUTPUT and renamed into place when complete, so an
interrupted run leaves no half-written set. An existing OUTPUT that is not empty (an earlier set, a run
directory, anything) is refused unless --force, which replaces it.

Exit codes: 0 done, 2 bad input (impossible options, an output path that cannot be a folder, an output folder
that would be replaced without --force; nothing is written), 1 an unexpected error (traceback).
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ecanet.cli import report_user_errors  # noqa: E402
from ecanet.config import ArgumentParser  # noqa: E402
from ecanet.errors import EXIT_OK, ConfigError  # noqa: E402
from ecanet.outputs import blocking_file, folder_written_whole  # noqa: E402

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


def check_output(output: Path, force: bool) -> None:
    """Refuse (:class:`ConfigError`), before anything is written, an OUTPUT that cannot become the folder: a file,
    a path under a file, a non-empty folder without ``force`` (as make_fashion_detection.py), or, with ``force``,
    the current folder or one above it (replacing it would delete the folder this command runs in)."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"{output} is a file, not a folder; choose another output folder.")
    blocker = blocking_file(output)
    if blocker is not None:
        raise ConfigError(f"{output} cannot be created: {blocker} is a file, not a folder. Choose another "
                          f"output folder.")
    if not output.is_dir() or not any(output.iterdir()):
        return
    if not force:
        raise ConfigError(f"{output} exists and is not empty; choose another output folder, or allow replacing "
                          f"it (--force).")
    here, target = Path.cwd().resolve(), output.resolve()
    if target == here or target in here.parents:
        raise ConfigError(f"{output} holds the current folder ({here}); --force would delete it. Choose another "
                          f"output folder.")


def write_folder(args: argparse.Namespace) -> list[int]:
    """Write the JPEGs into a temporary sibling of OUTPUT, then put it in OUTPUT's place (an empty OUTPUT
    receives its train/ and val/; a non-empty one, which :func:`check_output` let through with --force, is
    replaced: :func:`ecanet.outputs.folder_written_whole`); the file sizes."""
    output = args.output.resolve()   # '.', 'a/..' or a link: the folder they name
    if output.is_dir() and any(output.iterdir()):
        log.info("replacing %s (--force)", args.output)
    try:
        with folder_written_whole(output) as partial:
            tasks = []
            for split, per_class in (("train", args.train_per_class), ("val", args.val_per_class)):
                for c in range(args.classes):
                    folder = partial / split / f"class{c:04d}"
                    folder.mkdir(parents=True)
                    offset = 0 if split == "train" else 10_000_000
                    tasks += [(str(folder / f"{i:05d}.jpg"), offset + c * 100_003 + i, args.size_scale)
                              for i in range(per_class)]
            with multiprocessing.Pool(args.workers) as pool:
                sizes = pool.map(_write, tasks, chunksize=64)
    except OSError as error:   # a read-only place, a full disk: nothing is left half-written
        raise ConfigError(f"cannot create {output}: {error.strerror or error}. Choose an output folder in a "
                          f"writable place.") from None
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="make_jpeg_folder.py", description=__doc__.splitlines()[0],
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("output", type=Path, help="folder to create (train/ and val/ inside)")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--val-per-class", type=int, default=20)
    parser.add_argument("--size-scale", type=float, default=1.0, help="multiply the image sizes")
    parser.add_argument("--workers", type=int, default=multiprocessing.cpu_count())
    parser.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks for input errors")
    return parser


def run(args: argparse.Namespace) -> int:
    check_output(args.output, args.force)
    sizes = write_folder(args)
    log.info("wrote %d JPEGs to %s, mean %.1f kB", len(sizes), args.output, np.mean(sizes) / 1e3)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for option, value in (("--classes", args.classes), ("--train-per-class", args.train_per_class),
                          ("--val-per-class", args.val_per_class), ("--workers", args.workers)):
        if value < 1:
            parser.error(f"{option} takes a whole number of at least 1, got {value}.")
    if not args.size_scale > 0:
        parser.error(f"--size-scale takes a positive factor, got {args.size_scale}.")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return report_user_errors(lambda: run(args), argv)


if __name__ == "__main__":
    sys.exit(main())
