"""The Fashion-MNIST detection toy set, the COCO-format dataset (targets, flips, samplers) and its checks."""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

from conftest import load_script
from detection_fixtures import (IMAGE_SIZE, TINY_COUNTS, TINY_TOYSET, coco_content, fake_pictures,
                                make_tiny_toyset, write_split)
from ecanet.detection import data as detection_data
from ecanet.detection.data import (CocoDetectionDataset, collate_fn, eval_sampler, train_sampler)
from ecanet.detection.toyset import FASHION_MNIST_CLASS_NAMES, ToySetConfig, compose_canvas
from ecanet.detection.transforms import detection_transforms
from ecanet.distributed import DistInfo
from ecanet.errors import ConfigError, DataError

# pycocotools' mask decoder trips a NumPy 2 deprecation inside its own code (its RLE list's __array__).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def tight_box(mask: np.ndarray) -> list[float]:
    """[x, y, w, h] of the pixels set in an (H, W) mask, worked out here without pycocotools."""
    rows, cols = np.nonzero(mask)
    x, y = cols.min(), rows.min()
    return [float(x), float(y), float(cols.max() + 1 - x), float(rows.max() + 1 - y)]


@pytest.fixture(scope="module")
def toyset(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("toyset") / "fashion-detection"
    make_tiny_toyset(output)
    return output


def load_annotations(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


# -------------------------------------------------------------------------------------------- the toy set

def test_toyset_layout_counts_and_categories(toyset: Path):
    for split, count in TINY_COUNTS.items():
        coco = load_annotations(toyset, split)
        assert [image["file_name"] for image in coco["images"]] == [f"{i:06d}.jpg" for i in range(1, count + 1)]
        assert sorted(p.name for p in (toyset / split).iterdir()) == [i["file_name"] for i in coco["images"]]
        assert [(c["id"], c["name"]) for c in coco["categories"]] == list(enumerate(FASHION_MNIST_CLASS_NAMES, 1))
        per_image = np.bincount([a["image_id"] for a in coco["annotations"]], minlength=count + 1)[1:]
        assert per_image.min() >= TINY_TOYSET.min_items and per_image.max() <= TINY_TOYSET.max_items
        assert {a["iscrowd"] for a in coco["annotations"]} == {0}


def test_toyset_boxes_are_the_tight_boxes_of_the_masks_inside_the_canvas(toyset: Path):
    coco = load_annotations(toyset, "train")
    side = TINY_TOYSET.canvas_size
    for annotation in coco["annotations"]:
        mask = mask_util.decode(annotation["segmentation"])                               # (H, W)
        assert mask.shape == (side, side)
        assert annotation["bbox"] == tight_box(mask)
        assert annotation["area"] == mask.sum() >= TINY_TOYSET.min_visible_fraction * TINY_TOYSET.min_item_pixels
        x, y, w, h = annotation["bbox"]
        assert x >= 0 and y >= 0 and x + w <= side and y + h <= side


def test_one_known_item_has_the_box_and_colours_worked_out_by_hand():
    # A 28x28 picture whose object fills rows 4..23 and columns 8..19 with 200, placed unscaled (28 px):
    # its box is 12 wide and 20 high, its area 240, and every pixel of it is round(200 * tint).
    picture = np.zeros((1, 28, 28), dtype=np.uint8)
    picture[0, 4:24, 8:20] = 200
    config = ToySetConfig(canvas_size=64, min_items=1, max_items=1, min_item_px=28, max_item_px=28)
    canvas, (item,) = compose_canvas(picture, np.array([7]), np.random.default_rng(5), config)
    x, y, w, h = tight_box(item.visible_mask)
    assert (w, h, item.visible_mask.sum(), item.category_id) == (12, 20, 240, 8)
    colours = canvas[item.visible_mask]                                                   # (240, 3)
    assert (colours == colours[0]).all() and colours.max() <= 200
    assert (canvas[~item.visible_mask] <= config.background_max).all()


def test_later_items_occlude_earlier_ones_and_every_painted_pixel_is_annotated():
    pictures, labels = fake_pictures(30)
    config = ToySetConfig(canvas_size=48, min_items=4, max_items=4, min_item_px=24, max_item_px=40,
                          max_box_iou=0.6, min_item_pixels=40)
    occluded = 0
    for seed in range(10):
        canvas, items = compose_canvas(pictures, labels, np.random.default_rng(seed), config)
        painted = np.zeros((48, 48), dtype=bool)
        for k, item in enumerate(items):
            later = np.zeros_like(painted)
            for other in items[k + 1:]:
                later |= other.full_mask
            np.testing.assert_array_equal(item.visible_mask, item.full_mask & ~later)
            assert item.visible_mask.sum() >= config.min_visible_fraction * item.full_mask.sum()
            occluded += int((item.full_mask & later).any())
            painted |= item.full_mask
        visible = np.stack([item.visible_mask for item in items])                         # (N, H, W)
        assert (visible.sum(axis=0) <= 1).all()                                           # disjoint
        np.testing.assert_array_equal(visible.any(axis=0), painted)                       # nothing unannotated
    assert occluded >= 5  # the settings make overlaps common: the rule above was exercised


def test_toyset_is_a_function_of_the_seed(tmp_path: Path, toyset: Path):
    def digest(root: Path) -> str:
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())).hexdigest()

    again, other, shorter = tmp_path / "again", tmp_path / "other", tmp_path / "shorter"
    make_tiny_toyset(again)
    make_tiny_toyset(other, seed=1)
    make_tiny_toyset(shorter, counts={"train": 2, "val": 1})
    assert digest(again) == digest(toyset)
    assert digest(other) != digest(toyset)
    # canvas i depends only on (seed, split, i): a smaller set is the start of a larger one
    assert (shorter / "train" / "000002.jpg").read_bytes() == (toyset / "train" / "000002.jpg").read_bytes()
    first = load_annotations(toyset, "train")["annotations"]
    assert load_annotations(shorter, "train")["annotations"] == [a for a in first if a["image_id"] <= 2]


def test_toyset_refuses_to_replace_a_folder_and_impossible_settings(tmp_path: Path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="exists and is not empty"):
        make_tiny_toyset(tmp_path / "taken")
    assert (tmp_path / "taken" / "keep.txt").exists()
    with pytest.raises(ConfigError, match="min_item_px|item sizes"):
        ToySetConfig(canvas_size=32, max_item_px=40).check()


# --------------------------------------------------------------------------------------- the command line

def write_fake_fashion_mnist(folder: Path, reader):
    """Fashion-MNIST-shaped idx files (gzip) of fake pictures, and the ``reader.DatasetSpec`` (the reader is
    scripts/prepare_fashion_mnist.py) that describes them."""
    folder.mkdir()
    sha, splits = {}, []
    for split, images_name, labels_name, count, seed in (
            ("train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte", 30, 1),
            ("val", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 20, 2)):
        pictures, labels = fake_pictures(count, seed)
        for name, array in ((images_name, pictures), (labels_name, labels)):
            payload = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) \
                + array.tobytes()
            (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
            sha[name] = hashlib.sha256(payload).hexdigest()
        splits.append(reader.Split(split, images_name, labels_name, count))
    return reader.DatasetSpec(splits=tuple(splits), classes=reader.FASHION_MNIST.classes, image_shape=(28, 28),
                              sha256=sha)


def test_command_line_writes_a_set_the_dataset_reads(tmp_path: Path):
    script = load_script("make_fashion_detection")
    spec = write_fake_fashion_mnist(tmp_path / "idx", script.fashion)
    output = tmp_path / "out"
    argv = ["--source", str(tmp_path / "idx"), "--output", str(output), "--train-images", "3", "--val-images", "2",
            "--canvas-size", "64", "--min-item-px", "20", "--max-item-px", "40"]
    assert script.main(argv, spec=spec) == 0
    dataset = CocoDetectionDataset(output / "val", output / "annotations" / "instances_val.json", with_masks=True)
    assert len(dataset) == 2 and dataset.num_classes == 11
    assert script.main(argv, spec=spec) == 2           # the folder exists: --force replaces it
    assert script.main(argv + ["--force"], spec=spec) == 0


def test_command_line_without_fashion_mnist_says_how_to_install_it(tmp_path: Path, caplog):
    script = load_script("make_fashion_detection")
    (tmp_path / "empty").mkdir()
    assert script.main(["--source", str(tmp_path / "empty"), "--output", str(tmp_path / "out")]) == 2
    assert "apt-get install dataset-fashion-mnist" in caplog.text and str(tmp_path / "empty") in caplog.text
    assert not (tmp_path / "out").exists()


# -------------------------------------------------------------------------------------------- the dataset

def test_items_have_the_documented_types_and_shapes(toyset: Path):
    dataset = CocoDetectionDataset(toyset / "train", toyset / "annotations" / "instances_train.json",
                                   with_masks=True, for_training=True)
    assert len(dataset) == TINY_COUNTS["train"] and dataset.num_classes == 11
    coco = load_annotations(toyset, "train")
    image, target = dataset[0]
    assert image.dtype == torch.float32 and image.shape == (3, 64, 64) and 0 <= image.min() <= image.max() <= 1
    n = sum(a["image_id"] == target["image_id"] for a in coco["annotations"])
    assert target["image_id"] == 1 and target["boxes"].shape == (n, 4) and target["masks"].shape == (n, 64, 64)
    assert target["labels"].dtype == torch.int64 and target["masks"].dtype == torch.uint8
    assert target["iscrowd"].tolist() == [0] * n
    for box, mask, area in zip(target["boxes"], target["masks"], target["area"]):
        x, y, w, h = tight_box(mask.numpy())
        assert box.tolist() == [x, y, x + w, y + h] and area == mask.sum()
    images, targets = collate_fn([dataset[0], dataset[1]])
    assert len(images) == 2 and targets[1]["image_id"] == 2


def test_flips_move_boxes_and_masks_with_the_pixels(toyset: Path):
    files = (toyset / "train", toyset / "annotations" / "instances_train.json")
    plain = CocoDetectionDataset(*files, with_masks=True)
    flipped = CocoDetectionDataset(*files, detection_transforms(train=True, flip_probability=1.0), with_masks=True)
    (image, target), (image_f, target_f) = plain[0], flipped[0]
    width = image.shape[-1]
    torch.testing.assert_close(image_f, image.flip(-1), rtol=0, atol=0)
    torch.testing.assert_close(target_f["masks"], target["masks"].flip(-1), rtol=0, atol=0)
    x1, y1, x2, y2 = target["boxes"].unbind(1)
    torch.testing.assert_close(target_f["boxes"], torch.stack([width - x2, y1, width - x1, y2], 1), rtol=0, atol=0)
    for box, mask in zip(target_f["boxes"], target_f["masks"]):
        x, y, w, h = tight_box(mask.numpy())
        assert box.tolist() == [x, y, x + w, y + h]
    assert target_f["labels"].tolist() == target["labels"].tolist()


def test_seeded_flips_are_reproducible(toyset: Path):
    files = (toyset / "train", toyset / "annotations" / "instances_train.json")
    unflipped = CocoDetectionDataset(*files)[0][0]
    dataset = CocoDetectionDataset(*files, detection_transforms(train=True))
    flipped = []
    for seed in range(8):
        (image, target), (again, target_again) = dataset[(0, seed)], dataset[(0, seed)]
        assert torch.equal(image, again) and torch.equal(target["boxes"], target_again["boxes"])
        flipped.append(not torch.equal(image, unflipped))
    assert 0 < sum(flipped) < len(flipped)  # p = 0.5: both outcomes among 8 seeds


def test_samplers_cover_the_split(toyset: Path):
    dataset = CocoDetectionDataset(toyset / "train", toyset / "annotations" / "instances_train.json")
    shards = [list(eval_sampler(dataset, DistInfo(rank=r, world_size=4))) for r in range(4)]
    assert shards == [[0, 4], [1, 5], [2], [3]]  # 6 images over 4 ranks: strided, no padding
    sampler = train_sampler(dataset, DistInfo(rank=1, world_size=4), seed=3)
    sampler.set_epoch(0)
    epoch0 = list(sampler)
    assert len(epoch0) == 2 and all(isinstance(seed, int) for _, seed in epoch0)  # padded to 8 = 4 x 2
    assert epoch0 == list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != epoch0


# ------------------------------------------------------------------------------- crowds, empty images, boxes

def test_crowds_and_images_without_objects_stay_out_of_training_only(tmp_path: Path):
    content = coco_content({1: [[2, 3, 10, 8]], 2: [], 3: []}, crowd={1: [[20, 5, 10, 10]], 3: [[0, 0, 5, 5]]})
    image_dir, annotation_file = write_split(tmp_path, content)
    train = CocoDetectionDataset(image_dir, annotation_file, with_masks=True, for_training=True)
    assert train.ids == [1] and train.num_classes == 4
    image, target = train[0]
    assert target["boxes"].tolist() == [[2, 3, 12, 11]] and target["labels"].tolist() == [3]
    assert target["masks"].shape == (1, IMAGE_SIZE[1], IMAGE_SIZE[0])
    evaluation = CocoDetectionDataset(image_dir, annotation_file)
    assert evaluation.ids == [1, 2, 3] and len(evaluation.coco.getAnnIds(iscrowd=True)) == 2
    _, empty = evaluation[1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)


def test_boxes_just_over_the_border_are_clipped(tmp_path: Path):
    # 40x30 image: [-1.5, 2, 10, 5] reaches 1.5 px left of it and [35, 26, 6.5, 5] 1.5 px right and 1 px below;
    # both within the 2 px tolerance, so they are clipped to [0, 2, 8.5, 7] and [35, 26, 40, 30].
    image_dir, annotation_file = write_split(tmp_path, coco_content({1: [[-1.5, 2, 10, 5], [35, 26, 6.5, 5]]}))
    _, target = CocoDetectionDataset(image_dir, annotation_file, for_training=True)[0]
    assert target["boxes"].tolist() == [[0, 2, 8.5, 7], [35, 26, 40, 30]]


def test_rare_invalid_boxes_are_left_out_of_training_with_a_warning(tmp_path: Path, monkeypatch, caplog):
    monkeypatch.setattr(detection_data, "MAX_INVALID_BOX_FRACTION", 0.5)  # 1 invalid of 3 is "rare" here
    image_dir, annotation_file = write_split(tmp_path, coco_content({1: [[2, 3, 10, 8], [5, 5, 0, 4]],
                                                                     2: [[1, 1, 5, 5]]}))
    with caplog.at_level(logging.WARNING):
        dataset = CocoDetectionDataset(image_dir, annotation_file, for_training=True)
    assert "1 invalid boxes (1 with width or height <= 0, 0 outside" in caplog.text and "ids 2" in caplog.text
    assert dataset[0][1]["boxes"].tolist() == [[2, 3, 12, 11]]
    assert len(dataset.coco.anns) == 3  # the evaluation ground truth keeps it


def test_rare_unusable_masks_are_left_out_of_training(tmp_path: Path, monkeypatch, caplog):
    """An annotation whose polygons are all under 3 points is left out with a warning; of one with a good and an
    unusable polygon (odd length: pycocotools would still draw a triangle of it) the good one alone makes the
    mask, as detectron2's COCO loader does. More than the allowed share is refused."""
    monkeypatch.setattr(detection_data, "MAX_INVALID_BOX_FRACTION", 0.5)  # 1 unusable of 3 is "rare" here
    content = coco_content({1: [[2, 3, 10, 8], [5, 5, 10, 10]], 2: [[1, 1, 5, 5]]})
    content["annotations"][1]["segmentation"] = [[5.0, 5.0, 15.0, 5.0]]                  # 2 points
    content["annotations"][0]["segmentation"].append([20.0, 20.0, 30.0, 20.0, 30.0, 28.0, 20.0])
    image_dir, annotation_file = write_split(tmp_path, content)
    with caplog.at_level(logging.WARNING):
        dataset = CocoDetectionDataset(image_dir, annotation_file, with_masks=True, for_training=True)
    assert "1 annotation(s) without a segmentation pycocotools can rasterise (annotation ids 2)" in caplog.text
    target = dataset[0][1]
    assert target["boxes"].tolist() == [[2, 3, 12, 11]] and target["masks"].shape[0] == 1
    assert target["masks"][0].sum() == 10 * 8    # the good polygon's pixels alone, not the triangle's too
    monkeypatch.setattr(detection_data, "MAX_INVALID_BOX_FRACTION", 0.001)
    with pytest.raises(DataError, match="more than 0.1% of its annotations. Use a box-only detector"):
        CocoDetectionDataset(image_dir, annotation_file, with_masks=True, for_training=True)


@pytest.mark.parametrize("damage", [{"size": [5, 7], "counts": "abc"}, {"size": [30, 40], "counts": [0, 100, 5]},
                                    {"size": [30, 40], "counts": "zzzz"}, {"size": [30, 40], "counts": [0, -5, 1205]},
                                    [[1.0, 1.0, float("nan"), 2.0, 3.0, 3.0]], [[1.0, 1.0, 1e9, 2.0, 3.0, 3.0]], [],
                                    [[]]],
                         ids=["rle-size", "rle-short-runs", "rle-string", "rle-negative-run", "nan", "far-off",
                              "no-polygon", "empty-polygon"])
def test_evaluation_refuses_masks_pycocotools_cannot_read(tmp_path: Path, damage):
    """COCO's mask evaluation rasterises every ground-truth segmentation: what it cannot (or would turn into
    garbage, or take its rasteriser down with) is refused when the file is read, naming the annotation."""
    content = coco_content({1: [[2, 3, 10, 8]], 2: [[1, 1, 5, 5], [5, 5, 10, 10]]}, size=(40, 30))
    content["annotations"][2]["segmentation"] = damage
    image_dir, annotation_file = write_split(tmp_path, content)
    with pytest.raises(DataError, match=r"COCO's mask evaluation cannot rasterise \(annotation ids 3\)"):
        CocoDetectionDataset(image_dir, annotation_file, with_masks=True)
    content["annotations"][2]["segmentation"] = mask_util.encode(np.asfortranarray(np.ones((30, 40), np.uint8)))
    content["annotations"][2]["segmentation"]["counts"] = content["annotations"][2]["segmentation"]["counts"].decode()
    rewrite(annotation_file, content)
    CocoDetectionDataset(image_dir, annotation_file, with_masks=True)   # a good RLE passes


def test_compressed_rle_runs_are_read_as_pycocotools_writes_them():
    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = (rng.random(tuple(rng.integers(1, 30, size=2))) > rng.random()).astype(np.uint8)
        flat = mask.flatten(order="F")                            # COCO's runs go down the columns
        edges = np.flatnonzero(np.diff(flat)) + 1
        runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
        runs = runs if flat[0] == 0 else [0, *runs]               # the first run counts zeros
        text = mask_util.encode(np.asfortranarray(mask))["counts"].decode()
        assert detection_data._compressed_rle_counts(text) == runs


def test_training_annotations_may_leave_area_and_iscrowd_out(tmp_path: Path):
    """Training does without them (the box's area, not a crowd); COCO's evaluation reads both."""
    content = coco_content({1: [[2, 3, 10, 8], [5, 5, 10, 10]]})
    content["annotations"][0]["area"] = None
    del content["annotations"][1]["area"], content["annotations"][1]["iscrowd"]
    image_dir, annotation_file = write_split(tmp_path, content)
    target = CocoDetectionDataset(image_dir, annotation_file, for_training=True)[0][1]
    assert target["area"].tolist() == [80.0, 100.0] and target["iscrowd"].tolist() == [0, 0]
    with pytest.raises(DataError, match="without a usable 'area'"):
        CocoDetectionDataset(image_dir, annotation_file)


# ---------------------------------------------------------------------------------------------- bad input

def good_split(tmp_path: Path) -> tuple[Path, Path, dict]:
    content = coco_content({1: [[2, 3, 10, 8]], 2: [[5, 5, 20, 20], [1, 1, 4, 4]], 3: [[0, 0, 40, 30]]})
    image_dir, annotation_file = write_split(tmp_path, content)
    return image_dir, annotation_file, content


def rewrite(annotation_file: Path, content: dict) -> None:
    annotation_file.write_text(json.dumps(content))


def test_a_good_split_passes(tmp_path: Path):
    image_dir, annotation_file, _ = good_split(tmp_path)
    assert len(CocoDetectionDataset(image_dir, annotation_file, check_images="full", for_training=True)) == 3


def break_missing_file(image_dir: Path, annotation_file: Path, content: dict) -> Path:
    annotation_file.unlink()
    return annotation_file


def break_json(image_dir: Path, annotation_file: Path, content: dict) -> Path:
    annotation_file.write_text('{"images": [')
    return annotation_file


def break_format(image_dir: Path, annotation_file: Path, content: dict) -> Path:
    del content["annotations"]
    rewrite(annotation_file, content)
    return annotation_file


def break_categories(image_dir: Path, annotation_file: Path, content: dict) -> Path:
    content["categories"] = []
    rewrite(annotation_file, content)
    return annotation_file


def break_box_outside(image_dir: Path, annotation_file: Path, content: dict) -> Path:
    content["annotations"][0]["bbox"] = [30, 3, 20, 8]  # reaches x = 50 in a 40 px wide image
    rewrite(annotation_file, content)
    return annotation_file


def break_box_degenerate(image_dir: Path, annotation_file: Path, content: dict) -> Path:
    content["annotations"][2]["bbox"] = [1, 1, 4, 0]
    rewrite(annotation_file, content)
    return annotation_file


def break_missing_image(image_dir: Path, annotation_file: Path, content: dict) -> Path:
    (image_dir / "2.png").unlink()
    return image_dir


def break_corrupt_image(image_dir: Path, annotation_file: Path, content: dict) -> Path:
    (image_dir / "3.png").write_bytes(b"this is not a picture" * 4)
    return image_dir


def break_image_size(image_dir: Path, annotation_file: Path, content: dict) -> Path:
    content["images"][0]["width"] = 41
    rewrite(annotation_file, content)
    return image_dir


def break_category_id(image_dir: Path, annotation_file: Path, content: dict) -> Path:
    content["annotations"][1]["category_id"] = 2  # categories are 1 and 3
    rewrite(annotation_file, content)
    return annotation_file


def break_image_id(image_dir: Path, annotation_file: Path, content: dict) -> Path:
    content["annotations"][3]["image_id"] = 9
    rewrite(annotation_file, content)
    return annotation_file


@pytest.mark.parametrize("damage, words", [
    (break_missing_file, "does not exist"),
    (break_json, "is not valid JSON"),
    (break_format, "needs the lists images, annotations, categories"),
    (break_categories, "lists no categories"),
    (break_box_outside, r"1 invalid boxes among 4 annotations \(0 with width or height <= 0, 1 outside the image "
                        r"by more than 2 px; annotation ids 1\)"),
    (break_box_degenerate, r"1 with width or height <= 0, 0 outside the image by more than 2 px; annotation ids 3"),
    (break_missing_image, r"1 of the 3 images listed in the annotation file are not in .* \(2.png\)"),
    (break_corrupt_image, r"1 images in .* cannot be read .*: 3.png \(unreadable"),
    (break_image_size, r"1.png \(40x30 pixels, the annotation file says 41x30\)"),
    (break_category_id, r"1 annotation\(s\) whose category_id is not among its categories \(annotation ids 2\)"),
    (break_image_id, r"1 annotation\(s\) whose image_id is not among its images \(annotation ids 4\)"),
], ids=lambda value: value.__name__ if callable(value) else None)
def test_bad_input_is_a_data_error_naming_the_file_and_the_problem(tmp_path: Path, damage, words):
    image_dir, annotation_file, content = good_split(tmp_path)
    named = damage(image_dir, annotation_file, content)
    with pytest.raises(DataError, match=words) as error:
        CocoDetectionDataset(image_dir, annotation_file, with_masks=True, for_training=True)
    message = str(error.value)
    assert str(named) in message and "\n" not in message


def test_an_image_cut_short_is_named_when_read_or_by_the_full_check(tmp_path: Path):
    image_dir, annotation_file, _ = good_split(tmp_path)
    path = image_dir / "2.png"
    path.write_bytes(path.read_bytes()[:-30])  # the header is intact, the pixel data is not
    dataset = CocoDetectionDataset(image_dir, annotation_file)  # the header check passes
    with pytest.raises(DataError, match=f"image {path} cannot be decoded"):
        dataset[1]
    with pytest.raises(DataError, match=r"2.png \(unreadable"):
        CocoDetectionDataset(image_dir, annotation_file, check_images="full")
