"""Small detection data for the tests: Fashion-MNIST-shaped pictures and hand-made COCO files."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ecanet.detection.toyset import ToySetConfig, make_toy_set

# Tiny canvases with large items: overlaps and occlusion are frequent, generation takes milliseconds.
TINY_TOYSET = ToySetConfig(canvas_size=64, min_items=1, max_items=4, min_item_px=20, max_item_px=40,
                           min_item_pixels=40)
TINY_COUNTS = {"train": 6, "val": 3}


def fake_pictures(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(count, 28, 28) uint8 pictures like Fashion-MNIST's (a bright object on black) and labels 0..9: each
    object a filled rectangle of random size and position with a vertical intensity ramp."""
    rng = np.random.default_rng(seed)
    pictures = np.zeros((count, 28, 28), dtype=np.uint8)
    for picture in pictures:
        top, left = rng.integers(0, 10, size=2)
        height, width = rng.integers(10, 28 - top + 1), rng.integers(10, 28 - left + 1)
        ramp = np.linspace(120, 250, height).round().astype(np.uint8)[:, None]            # (height, 1)
        picture[top:top + height, left:left + width] = ramp
    return pictures, np.arange(count, dtype=np.uint8) % 10


def make_tiny_toyset(output: Path, seed: int = 0, counts: dict[str, int] | None = None) -> dict[str, Any]:
    """The toy set at ``output`` from fake pictures (train and val draw from different ones)."""
    sources = {"train": fake_pictures(40, seed=1), "val": fake_pictures(20, seed=2)}
    return make_toy_set(output, sources, counts or TINY_COUNTS, seed, TINY_TOYSET)


# ------------------------------------------------------------------------------ hand-made COCO splits

IMAGE_SIZE = (40, 30)  # (width, height) of every hand-made image


def coco_content(boxes: dict[int, list[list[float]]], crowd: dict[int, list[list[float]]] | None = None,
                 size: tuple[int, int] = IMAGE_SIZE) -> dict[str, Any]:
    """COCO content with images 1..n (``<id>.png``) holding ``boxes[id]`` ([x, y, w, h], category 3) and
    crowd regions ``crowd[id]`` (category 1); categories 1 and 3 (ids with a gap, as COCO's)."""
    width, height = size
    content: dict[str, Any] = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": width, "height": height} for i in sorted(boxes)],
        "annotations": [],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
    }
    for iscrowd, table, category in ((0, boxes, 3), (1, crowd or {}, 1)):
        for image_id, image_boxes in table.items():
            for box in image_boxes:
                x, y, w, h = box
                content["annotations"].append({
                    "id": len(content["annotations"]) + 1, "image_id": image_id, "category_id": category,
                    "bbox": box, "area": w * h, "iscrowd": iscrowd,
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
    return content


def write_split(root: Path, content: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``content`` as ``root/annotations.json`` and its images (gray PNGs of the recorded size) into
    ``root/images``; returns (image folder, annotation file)."""
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    for image in content["images"]:
        pixels = np.full((image["height"], image["width"]), 40 * (image["id"] % 5), dtype=np.uint8)
        Image.fromarray(pixels).save(image_dir / image["file_name"])
    annotation_file = root / "annotations.json"
    annotation_file.write_text(json.dumps(content))
    return image_dir, annotation_file
