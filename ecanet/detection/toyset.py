"""A small detection and instance-segmentation set made of real pictures: Fashion-MNIST items on canvases.

Each canvas (``canvas_size`` square, RGB) starts as dark noise (every pixel and channel uniform in
0..``background_max``, in 0..255 units) and receives ``min_items``..``max_items`` Fashion-MNIST pictures,
one after the other:

* each item is a random picture of the split, resized from 28x28 to a random side of ``min_item_px`` ..
  ``max_item_px`` pixels (bilinear), at a random position inside the canvas;
* its mask is its own pixels brighter than ``mask_threshold`` after resizing; pictures whose mask is
  smaller than ``min_item_pixels`` (faint ones) are redrawn;
* the grayscale picture is rendered in colour: its intensity times a random RGB tint (each channel in
  ``min_tint``..1), painted over the canvas inside its mask, so the mask is exactly the item's visible
  pixels;
* later items occlude earlier ones: an earlier item's mask loses the pixels a later item covers. A
  placement is redrawn (up to ``placement_attempts`` times, then the canvas keeps fewer items) when its box
  overlaps an earlier item's box with IoU above ``max_box_iou``, or when it would leave an earlier item
  with less than ``min_visible_fraction`` of its pixels: so no annotated item is mostly hidden and no
  unannotated fragment stays on a canvas.

Annotations are COCO's format: boxes are the tight boxes of the final masks ``[x, y, width, height]``,
masks compressed RLE (pycocotools), ``area`` the mask's pixel count, ``iscrowd`` 0, and the categories the
10 Fashion-MNIST classes with ids 1..10 (label + 1). Canvas ``i`` of a split is drawn from its own generator
seeded by (seed, split, i), so a smaller set is a prefix of a larger one with the same seed, and the
output is identical for a given seed.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

from ..errors import ConfigError
from ..outputs import folder_written_whole

# The label names of Fashion-MNIST's README, for label ids 0..9.
FASHION_MNIST_CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SPLIT_SEED_CODES = {"train": 0, "val": 1}  # mixed into each canvas's seed so the splits differ
SOURCE_SIDE_PX = 28                        # Fashion-MNIST pictures are 28x28


@dataclass(frozen=True)
class ToySetConfig:
    """How canvases are composed; lengths in pixels, intensities in 0..255."""

    canvas_size: int = 256
    min_items: int = 1
    max_items: int = 4
    min_item_px: int = 40
    max_item_px: int = 120
    max_box_iou: float = 0.3
    min_visible_fraction: float = 0.5
    mask_threshold: int = 48
    min_item_pixels: int = 100
    placement_attempts: int = 30
    background_max: int = 40
    min_tint: float = 0.4
    jpeg_quality: int = 95

    def check(self) -> None:
        """A ConfigError for settings that cannot make a canvas."""
        problems = []
        if not 1 <= self.min_items <= self.max_items:
            problems.append(f"items per canvas must satisfy 1 <= min ({self.min_items}) <= max ({self.max_items})")
        if not 1 <= self.min_item_px <= self.max_item_px <= self.canvas_size:
            problems.append(f"item sizes must satisfy 1 <= min ({self.min_item_px}) <= max ({self.max_item_px}) "
                            f"<= canvas size ({self.canvas_size})")
        if not 0.0 <= self.min_visible_fraction <= 1.0 or not 0.0 <= self.max_box_iou <= 1.0:
            problems.append("min_visible_fraction and max_box_iou must lie in [0, 1]")
        if problems:
            raise ConfigError(f"impossible toy-set settings: {'; '.join(problems)}. Change the options.")


@dataclass
class PlacedItem:
    """One item on a canvas: its category and its masks over the whole canvas."""

    category_id: int
    full_mask: np.ndarray      # (H, W) bool: the item's pixels as placed
    visible_mask: np.ndarray   # (H, W) bool: those not covered by later items
    box: list[float] = field(default_factory=list)  # [x, y, w, h] tight box of full_mask


def mask_rle(mask: np.ndarray) -> dict[str, Any]:
    """Compressed RLE of an (H, W) bool mask (pycocotools wants column-major uint8)."""
    return mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))


def compose_canvas(pictures: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                   config: ToySetConfig) -> tuple[np.ndarray, list[PlacedItem]]:
    """One canvas (H, W, 3) uint8 and its items in painting order, drawn from ``pictures`` (N, 28, 28) uint8
    with ``labels`` (N,) 0..9 (module docstring: the rules)."""
    side = config.canvas_size
    canvas = rng.integers(0, config.background_max + 1, size=(side, side, 3), dtype=np.uint8)  # (H, W, 3)
    items: list[PlacedItem] = []
    for _ in range(int(rng.integers(config.min_items, config.max_items + 1))):
        for _attempt in range(config.placement_attempts):
            source = int(rng.integers(len(pictures)))
            size = int(rng.integers(config.min_item_px, config.max_item_px + 1))
            x0, y0 = (int(v) for v in rng.integers(0, side - size + 1, size=2))
            tint = rng.uniform(config.min_tint, 1.0, size=3)                                  # (3,) RGB
            resized = Image.fromarray(pictures[source]).resize((size, size), Image.BILINEAR)
            intensity = np.asarray(resized, dtype=np.float64)                                 # (size, size)
            local_mask = intensity > config.mask_threshold
            if local_mask.sum() < config.min_item_pixels:
                continue
            full_mask = np.zeros((side, side), dtype=bool)
            full_mask[y0:y0 + size, x0:x0 + size] = local_mask
            box = mask_util.toBbox(mask_rle(full_mask)).tolist()
            if items:  # box IoU with every earlier item: (1, len(items))
                if mask_util.iou([box], [item.box for item in items], [0] * len(items)).max() > config.max_box_iou:
                    continue
            if any((item.visible_mask & ~full_mask).sum() < config.min_visible_fraction * item.full_mask.sum()
                   for item in items):
                continue
            for item in items:
                item.visible_mask &= ~full_mask
            region = canvas[y0:y0 + size, x0:x0 + size]                                       # (size, size, 3) view
            region[local_mask] = np.rint(intensity[local_mask][:, None] * tint).astype(np.uint8)
            items.append(PlacedItem(int(labels[source]) + 1, full_mask, full_mask.copy(), box))
            break
    return canvas, items


def canvas_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_SEED_CODES[split], index])


def write_split(output: Path, split: str, pictures: np.ndarray, labels: np.ndarray, count: int, seed: int,
                config: ToySetConfig, class_names: Sequence[str] = FASHION_MNIST_CLASS_NAMES) -> dict[str, Any]:
    """Write ``count`` canvases as ``output/<split>/<id>.jpg`` and return the split's COCO annotations."""
    image_dir = output / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        canvas, items = compose_canvas(pictures, labels, canvas_rng(seed, split, index), config)
        image_id = index + 1
        file_name = f"{image_id:06d}.jpg"
        Image.fromarray(canvas).save(image_dir / file_name, quality=config.jpeg_quality)
        images.append({"id": image_id, "file_name": file_name, "width": config.canvas_size,
                       "height": config.canvas_size})
        for item in items:
            rle = mask_rle(item.visible_mask)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": item.category_id,
                "bbox": mask_util.toBbox(rle).tolist(), "area": float(mask_util.area(rle)), "iscrowd": 0,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
            })
    return {
        "info": {"description": f"Fashion-MNIST detection toy set, {split} split (Fashion-MNIST's "
                                f"{'training' if split == 'train' else 'test'} pictures)",
                 "seed": seed, "config": asdict(config)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": label + 1, "name": name, "supercategory": "clothing"}
                       for label, name in enumerate(class_names)],
    }


def split_statistics(coco: dict[str, Any]) -> dict[str, Any]:
    """Counts and sizes of one split's annotations, for logs and documentation."""
    if not coco["annotations"]:
        return {"images": len(coco["images"]), "annotations": 0}
    boxes = np.array([a["bbox"] for a in coco["annotations"]], dtype=np.float64).reshape(-1, 4)  # (A, 4) xywh
    per_image = np.bincount([a["image_id"] for a in coco["annotations"]], minlength=len(coco["images"]) + 1)[1:]
    names = {c["id"]: c["name"] for c in coco["categories"]}
    per_class = np.bincount([a["category_id"] for a in coco["annotations"]], minlength=max(names) + 1)
    sides = np.sqrt(boxes[:, 2] * boxes[:, 3])
    return {
        "images": len(coco["images"]),
        "annotations": len(coco["annotations"]),
        "items_per_image": {"mean": float(per_image.mean()), "min": int(per_image.min()),
                            "max": int(per_image.max())},
        "per_class": {names[i]: int(per_class[i]) for i in sorted(names)},
        "box_side_px": {"min": float(sides.min()), "median": float(np.median(sides)), "max": float(sides.max())},
        # COCO's size classes: small < 32^2 px, medium < 96^2 px, large otherwise (by mask area)
        "areas": {"small": sum(a["area"] < 32 ** 2 for a in coco["annotations"]),
                  "medium": sum(32 ** 2 <= a["area"] < 96 ** 2 for a in coco["annotations"]),
                  "large": sum(a["area"] >= 96 ** 2 for a in coco["annotations"])},
    }


def make_toy_set(output: Path, sources: dict[str, tuple[np.ndarray, np.ndarray]], counts: dict[str, int],
                 seed: int, config: ToySetConfig = ToySetConfig(), overwrite: bool = False) -> dict[str, Any]:
    """Write the toy set to ``output``: ``annotations/instances_<split>.json`` and ``<split>/*.jpg`` for each
    split of ``counts`` ("train", "val"), drawing from ``sources[split]`` = (pictures (N, 28, 28) uint8,
    labels (N,)). Returns each split's :func:`split_statistics`.

    Written into a temporary sibling folder that is renamed into place when complete, so an interrupted
    run leaves no half-written set. An existing non-empty ``output`` is replaced only with ``overwrite``.
    """
    config.check()
    for split, (pictures, labels) in sources.items():
        if pictures.ndim != 3 or pictures.shape[1:] != (SOURCE_SIDE_PX, SOURCE_SIDE_PX) or len(pictures) != len(labels):
            raise ValueError(f"{split}: expected pictures (N, 28, 28) and N labels, got {pictures.shape} and "
                             f"{len(labels)}")
    if output.exists() and not overwrite and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(f"{output} exists and is not empty; choose another output folder, or allow replacing "
                          f"it (--force).")
    with folder_written_whole(output) as partial:
        (partial / "annotations").mkdir()
        statistics = {}
        for split, count in counts.items():
            pictures, labels = sources[split]
            coco = write_split(partial, split, pictures, labels, count, seed, config)
            (partial / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
            statistics[split] = split_statistics(coco)
    return statistics
