#!/usr/bin/env python3
"""Build the Fashion-MNIST detection toy set: COCO-format boxes and instance masks on real pictures.

    sudo apt-get install dataset-fashion-mnist          # once: the idx files under /usr/share/datasets
    .venv/bin/python scripts/make_fashion_detection.py  # data/fashion-detection/

Output (``--output``): ``annotations/instances_train.json`` and ``instances_val.json`` in COCO's format,
and the JPEG canvases in ``train/`` (items from Fashion-MNIST's training pictures) and ``val/`` (from its
test pictures). How canvases are composed: :mod:`ecanet.detection.toyset`. The idx files are read and
verified (idx headers, counts, SHA-256) by ``scripts/prepare_fashion_mnist.py``'s reader.

Exit codes: 0 done, 2 bad input (missing or damaged Fashion-MNIST files, impossible options, an output
folder that would be replaced without --force), 1 an unexpected error (traceback).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

SCRIPTS = Path(__file__).resolve().parent
for folder in (SCRIPTS.parent, SCRIPTS):  # the ecanet package, and prepare_fashion_mnist.py next to this script
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import prepare_fashion_mnist as fashion  # noqa: E402
from ecanet.detection.toyset import ToySetConfig, make_toy_set  # noqa: E402
from ecanet.errors import EXIT_OK, EXIT_USAGE, UserError  # noqa: E402

log = logging.getLogger("make_fashion_detection")

DEFAULT_OUTPUT = Path("data/fashion-detection")
DEFAULT_TRAIN_IMAGES = 2000  # sized for a short GPU demo; tests make a handful
DEFAULT_VAL_IMAGES = 500


def build_parser() -> argparse.ArgumentParser:
    defaults = ToySetConfig()
    parser = argparse.ArgumentParser(
        prog="make_fashion_detection.py",
        description="Compose Fashion-MNIST pictures into canvases with COCO-format boxes and instance masks: "
                    "OUTPUT/annotations/instances_{train,val}.json and OUTPUT/{train,val}/*.jpg. The same seed "
                    "gives the same files.",
        epilog="Missing files? `sudo apt-get install dataset-fashion-mnist`, or download the four files from "
               f"{fashion.UPSTREAM_URL} into a folder and pass --source. Exit codes: 0 done, 2 bad input.")
    parser.add_argument("--source", type=Path, default=fashion.DEFAULT_SOURCE,
                        help="folder with Fashion-MNIST's four idx files, .gz or plain (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="folder to create (default: %(default)s)")
    parser.add_argument("--train-images", type=fashion.positive_int, default=DEFAULT_TRAIN_IMAGES, metavar="N",
                        help="training canvases (default: %(default)s)")
    parser.add_argument("--val-images", type=fashion.positive_int, default=DEFAULT_VAL_IMAGES, metavar="M",
                        help="validation canvases (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--canvas-size", type=fashion.positive_int, default=defaults.canvas_size, metavar="PX",
                        help="side of the square canvases in pixels (default: %(default)s)")
    parser.add_argument("--min-items", type=fashion.positive_int, default=defaults.min_items,
                        help="fewest items per canvas (default: %(default)s)")
    parser.add_argument("--max-items", type=fashion.positive_int, default=defaults.max_items,
                        help="most items per canvas (default: %(default)s)")
    parser.add_argument("--min-item-px", type=fashion.positive_int, default=defaults.min_item_px, metavar="PX",
                        help="smallest side of a resized 28x28 picture (default: %(default)s)")
    parser.add_argument("--max-item-px", type=fashion.positive_int, default=defaults.max_item_px, metavar="PX",
                        help="largest side of a resized picture (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug messages")
    return parser


def main(argv: Sequence[str] | None = None, spec: fashion.DatasetSpec = fashion.FASHION_MNIST) -> int:
    """Command line entry point; returns the exit code. ``spec`` lets tests describe their own small files."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s: %(message)s")
    config = ToySetConfig(canvas_size=args.canvas_size, min_items=args.min_items, max_items=args.max_items,
                          min_item_px=args.min_item_px, max_item_px=args.max_item_px)
    started = time.perf_counter()
    try:
        config.check()
        loaded = fashion.load_source(args.source, spec)
        sources = {split: (images.array, labels.array) for split, (images, labels) in loaded.items()}
        statistics = make_toy_set(args.output, sources, {"train": args.train_images, "val": args.val_images},
                                  args.seed, config, overwrite=args.force)
    except (fashion.PrepareError, UserError) as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    for split, stats in statistics.items():
        log.info("%s: %d images, %d objects (%.2f per image, %d..%d), box sides %.0f..%.0f px (median %.0f), "
                 "COCO sizes %s", split, stats["images"], stats["annotations"], stats["items_per_image"]["mean"],
                 stats["items_per_image"]["min"], stats["items_per_image"]["max"], stats["box_side_px"]["min"],
                 stats["box_side_px"]["max"], stats["box_side_px"]["median"], stats["areas"])
    log.info("wrote %s in %.1f s", args.output, time.perf_counter() - started)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
