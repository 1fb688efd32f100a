"""COCO-format detection data for torchvision's detectors: the dataset, its checks, collation, the samplers and
a run's loaders (:func:`build_data`).

A split is an image folder plus an annotation file in COCO's format (``annotations/instances_<split>.json``:
``images``, ``annotations``, ``categories``), read with pycocotools' ``COCO``. Labels are COCO's own
category ids (torchvision's COCO models use 91 ids with gaps), so a model needs ``num_classes = max id + 1``.

Everything a user can get wrong is checked when the dataset is built, before any training step, and
reported as a :class:`ecanet.errors.DataError` naming the file and the fix:

* a missing annotation file, a file that is not JSON or not COCO (missing keys, malformed entries), an
  empty category list, duplicate image or annotation ids, validation annotation ids below 1 (COCO's
  evaluation reads id 0 as "no match"), annotations naming unknown image or category ids;
* boxes: a box that crosses the image border by at most :data:`BORDER_TOLERANCE_PX` is clipped to it;
  a degenerate box (width or height <= 0) or one reaching further out is invalid. Invalid boxes are left
  out of training targets with a warning naming them, as long as they are at most
  :data:`MAX_INVALID_BOX_FRACTION` of the annotations (COCO's train2017 holds a couple of boxes of
  height 0, annotation 918 for one); more than that means the file is wrong (e.g. boxes written as
  x1, y1, x2, y2 instead of x, y, width, height) and is an error naming the first few annotation ids;
* image files: every listed image must exist and its header must open and give the size the annotation
  file records. PIL reads the header only, which costs a small fraction of a full decode.
  ``check_images="full"`` decodes every image instead, which also finds files cut short after an intact
  header; without it such a file stops the run with a DataError naming it when it is first read. A broken
  image is never replaced by another one.

Training (``for_training=True``) leaves crowd annotations out of the targets and drops images without a
usable annotation, as torchvision's detection references do; for evaluation every image stays and the
ground truth (``dataset.coco``) keeps everything, crowd regions included, for COCOeval.

A run's training order is a pure function of (seed, epoch) (:class:`SeededDistributedSampler`), every sample's
flip is seeded by (seed, epoch, index), and :class:`SkippingSampler` starts an epoch after the samples already
trained on, so that a resumed run sees the batches an uninterrupted one would.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler
from torchvision import tv_tensors
from torchvision.ops import box_convert
from torchvision.transforms.v2.functional import pil_to_tensor

from ..data.folders import UNREADABLE_ERRORS, sample_seed, seeded_cpu_rng, to_rgb
from ..data.loaders import ShardSampler, make_loader, shutdown_workers
from ..distributed import DistInfo
from ..errors import ConfigError, DataError
from .transforms import detection_transforms

log = logging.getLogger(__name__)

BORDER_TOLERANCE_PX = 2.0          # boxes crossing the border by at most this much are clipped, not reported
MAX_INVALID_BOX_FRACTION = 0.001   # above this share of invalid boxes the annotation file is refused
LISTED_EXAMPLES = 5                # how many offending ids or file names a message names
COCO_REQUIRED_KEYS = ("images", "annotations", "categories")
IMAGE_CHECKS = ("header", "full", "none")


@contextlib.contextmanager
def pycocotools_output_to_log(level: int = logging.DEBUG, logger: logging.Logger = log) -> Iterator[None]:
    """Run the block with stdout captured and sent to ``logger``: pycocotools prints its progress and
    summaries with ``print`` and offers no switch for it."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        text = buffer.getvalue().rstrip()
        if text:
            logger.log(level, "%s", text)


def _examples(items: Sequence[Any]) -> str:
    shown = ", ".join(str(item) for item in items[:LISTED_EXAMPLES])
    return shown + (", ..." if len(items) > LISTED_EXAMPLES else "")


# --------------------------------------------------------------------------------------- annotation file

def read_coco_json(annotation_file: Path) -> dict:
    """The annotation file's content, checked to be COCO's detection format at the level of its keys."""
    if not annotation_file.is_file():
        state = "is a folder, not a file" if annotation_file.is_dir() else "does not exist"
        raise DataError(f"annotation file {annotation_file} {state}. Pass the COCO-format file of this "
                        f"split (for COCO 2017: annotations/instances_train2017.json or instances_val2017.json "
                        f"from annotations_trainval2017.zip).")
    try:
        with open(annotation_file, "rb") as f:
            content = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"annotation file {annotation_file} is not valid JSON ({exc}). It is damaged or not an "
                        f"annotation file: download or generate it again.") from None
    except OSError as exc:
        raise DataError(f"cannot read annotation file {annotation_file} ({exc.strerror or exc}). Make it "
                        f"readable.") from None
    if not isinstance(content, dict) or any(not isinstance(content.get(key), list) for key in COCO_REQUIRED_KEYS):
        found = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise DataError(f"annotation file {annotation_file} is not in COCO's detection format: it needs the lists "
                        f"{', '.join(COCO_REQUIRED_KEYS)} (found: {found}). Convert the annotations to COCO's "
                        f"format (https://cocodataset.org/#format-data).")
    if not content["categories"]:
        raise DataError(f"annotation file {annotation_file} lists no categories. Add the categories "
                        f"({{\"id\": 1, \"name\": ...}}) that its annotations use.")
    _check_entries(content, annotation_file)
    return content


def _check_entries(content: dict, annotation_file: Path) -> None:
    """Every entry carries the fields that training and COCOeval read, with the right types."""
    def malformed(kind: str, entry: Any, needs: str) -> DataError:
        return DataError(f"annotation file {annotation_file} has a malformed {kind} entry ({str(entry)[:120]}); "
                         f"each needs {needs}. Fix or regenerate the file.")

    for category in content["categories"]:
        if not isinstance(category, dict) or not isinstance(category.get("id"), int) or category["id"] < 0:
            raise malformed("category", category, "an integer id >= 0 and a name")
    for image in content["images"]:
        if not isinstance(image, dict) or not isinstance(image.get("id"), int) or \
                not isinstance(image.get("file_name"), str) or \
                not all(isinstance(image.get(key), int) and image[key] > 0 for key in ("width", "height")):
            raise malformed("image", image, "an integer id, a file_name and positive integer width and height")
    for annotation in content["annotations"]:
        box = annotation.get("bbox") if isinstance(annotation, dict) else None
        if not isinstance(annotation, dict) or not all(isinstance(annotation.get(k), int)
                                                       for k in ("id", "image_id", "category_id")) or \
                not isinstance(box, list) or len(box) != 4 or \
                not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box):
            raise malformed("annotation", annotation, "integer id, image_id and category_id and a bbox "
                            "[x, y, width, height] of 4 finite numbers")
    duplicates = _duplicates(image["id"] for image in content["images"])
    if duplicates:
        raise DataError(f"annotation file {annotation_file} lists {len(duplicates)} image id(s) more than once "
                        f"({_examples(duplicates)}). Each image needs a unique id: fix or regenerate the file.")
    # pycocotools indexes annotations by id: a repeated one takes the other's place, in training too
    duplicates = _duplicates(annotation["id"] for annotation in content["annotations"])
    if duplicates:
        raise DataError(f"annotation file {annotation_file} lists {len(duplicates)} annotation id(s) more than once "
                        f"({_examples(duplicates)}); pycocotools, which reads it, keeps one annotation per id. "
                        f"Renumber the annotations 1, 2, 3, ... and run again.")
    image_ids = {image["id"] for image in content["images"]}
    category_ids = {category["id"] for category in content["categories"]}
    for field, known, what in (("image_id", image_ids, "images"), ("category_id", category_ids, "categories")):
        unknown = [a["id"] for a in content["annotations"] if a[field] not in known]
        if unknown:
            raise DataError(f"annotation file {annotation_file} has {len(unknown)} annotation(s) whose {field} is "
                            f"not among its {what} (annotation ids {_examples(unknown)}). Add the missing "
                            f"{what} entries or remove those annotations.")


def check_evaluation_fields(content: dict, annotation_file: Path) -> None:
    """COCO's evaluation reads every annotation's ``area`` (its size ranges) and ``iscrowd`` (crowd matching):
    a DataError names the first annotation without them, so that a run does not train an epoch and then fail
    to score it. Training does without them (the box's area, not a crowd). The evaluation also takes annotation
    id 0 for "no match", so a detection matched to annotation 0 would score as a false positive: ids start at
    1, as COCO's do."""
    zero = [annotation["id"] for annotation in content["annotations"] if annotation["id"] < 1]
    if zero:
        raise DataError(f"annotation file {annotation_file} has annotation ids below 1 ({_examples(zero)}), which "
                        f"COCO's evaluation reads as 'no match'. Renumber the annotations 1, 2, 3, ... and run "
                        f"again.")
    for annotation in content["annotations"]:
        if not _usable_area(annotation.get("area")) or annotation.get("iscrowd") not in (0, 1):
            raise DataError(f"annotation file {annotation_file} has an annotation without a usable 'area' (a number "
                            f">= 0: the mask's, or the box's, pixels) or 'iscrowd' (0 or 1), which COCO's "
                            f"evaluation reads ({str(annotation)[:120]}). Add them to every annotation of the "
                            f"validation file.")


def _is_number(value: Any) -> bool:
    """A finite int or float (JSON's numbers), not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _usable_area(area: Any) -> bool:
    return _is_number(area) and area >= 0


# Polygon coordinates further than this many image sizes out are no geometry (pycocotools' rasteriser
# allocates for them and can take the process down).
MAX_COORDINATE_IMAGE_SIZES = 4


def _coordinates_within_reach(polygon: Any, image: Mapping[str, Any]) -> bool:
    """Whether ``polygon`` is a list of finite numbers within :data:`MAX_COORDINATE_IMAGE_SIZES` image sizes."""
    bound = MAX_COORDINATE_IMAGE_SIZES * max(image["height"], image["width"])
    return isinstance(polygon, list) and all(_is_number(v) and abs(v) <= bound for v in polygon)


def usable_segmentation(segmentation: Any, image: Mapping[str, Any]) -> Any:
    """``segmentation`` as pycocotools can rasterise it, or None. Polygons of at least 3 points (6 finite numbers
    within :data:`MAX_COORDINATE_IMAGE_SIZES` image sizes, an even count) are kept and other polygons dropped,
    as detectron2's COCO loader does; an RLE must have the image's [height, width] as its size."""
    if isinstance(segmentation, list):
        polygons = [polygon for polygon in segmentation if _coordinates_within_reach(polygon, image)
                    and len(polygon) >= 6 and len(polygon) % 2 == 0]
        return polygons or None
    if isinstance(segmentation, dict):
        size = segmentation.get("size")
        fits = isinstance(size, (list, tuple)) and list(size) == [image["height"], image["width"]]
        return segmentation if fits and _rle_covers(segmentation.get("counts"), image) else None
    return None


def _rle_covers(counts: Any, image: Mapping[str, Any]) -> bool:
    """Whether RLE ``counts`` (a list, or COCO's compressed string) are runs >= 0 that cover the image's pixels
    exactly: pycocotools decodes others without a word, into garbage or past its buffer."""
    if isinstance(counts, (str, bytes)):
        try:
            counts = _compressed_rle_counts(counts.decode("ascii") if isinstance(counts, bytes) else counts)
        except (ValueError, UnicodeDecodeError):
            return False
    if not isinstance(counts, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        return False
    return all(c >= 0 for c in counts) and sum(counts) == image["height"] * image["width"]


def _compressed_rle_counts(text: str) -> list[int]:
    """The runs of COCO's compressed RLE string (pycocotools' ``rleFrString``: 5 bits a character from '0',
    a continuation bit, a sign bit on the last, each run from the third on stored as the difference to the run
    two before). Written out because pycocotools has no call that returns them without decoding the mask,
    which is what must not happen to a malformed string."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                raise ValueError("the RLE string ends inside a run")
            code = ord(text[position]) - 48
            if not 0 <= code < 64:
                raise ValueError(f"character {text[position]!r} is not of COCO's RLE alphabet")
            value |= (code & 0x1F) << (5 * shift)
            more = bool(code & 0x20)
            position, shift = position + 1, shift + 1
            if not more and code & 0x10:
                value |= -1 << (5 * shift)
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def _evaluation_rasterises(coco: COCO, annotation: Mapping[str, Any], image: Mapping[str, Any]) -> bool:
    """Whether COCO's evaluation can rasterise ``annotation``'s segmentation: an RLE of the image's size whose
    runs cover it (:func:`_rle_covers`), or polygons of finite coordinates within reach of the image (others
    can take pycocotools' rasteriser down) that its ``annToRLE`` converts."""
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, dict):
        return usable_segmentation(segmentation, image) is not None
    if not isinstance(segmentation, list) or not any(segmentation) or not all(
            _coordinates_within_reach(polygon, image) for polygon in segmentation):
        return False
    try:
        coco.annToRLE(annotation)
    except Exception:  # noqa: BLE001 - pycocotools raises plain Exceptions, TypeErrors, ValueErrors
        return False
    return True


def _duplicates(values: Iterator[int]) -> list[int]:
    seen: set[int] = set()
    duplicates = []
    for value in values:
        if value in seen:
            duplicates.append(value)
        seen.add(value)
    return duplicates


def coco_from_content(content: dict) -> COCO:
    """A pycocotools ``COCO`` index of already-loaded content (what ``COCO(path)`` builds, without re-reading
    the file), its progress lines sent to the log."""
    coco = COCO()
    coco.dataset = content
    with pycocotools_output_to_log():
        coco.createIndex()
    return coco


# ------------------------------------------------------------------------------------------------- boxes

def training_boxes(coco: COCO, annotation_file: Path) -> tuple[dict[int, int], torch.Tensor]:
    """The usable boxes: (annotation id -> row, rows (A, 4) float32 clipped x1, y1, x2, y2 in pixels).

    Boxes crossing the border by at most :data:`BORDER_TOLERANCE_PX` are clipped; degenerate ones and those
    reaching further out are left out (a warning names them), or refused when they are too many. One
    tensor, not one per annotation: COCO's training split has 860,001 annotations, in every loader worker.
    """
    annotations = list(coco.anns.values())
    if not annotations:
        return {}, torch.zeros((0, 4), dtype=torch.float32)
    xywh = torch.tensor([a["bbox"] for a in annotations], dtype=torch.float64)           # (A, 4)
    xyxy = box_convert(xywh, "xywh", "xyxy")                                              # (A, 4)
    sizes = torch.tensor([[coco.imgs[a["image_id"]]["width"], coco.imgs[a["image_id"]]["height"]]
                          for a in annotations], dtype=torch.float64)                     # (A, 2) width, height
    degenerate = (xywh[:, 2] <= 0) | (xywh[:, 3] <= 0)
    outside = ((xyxy[:, :2] < -BORDER_TOLERANCE_PX) | (xyxy[:, 2:] > sizes + BORDER_TOLERANCE_PX)).any(dim=1)
    clipped = torch.minimum(xyxy.clamp(min=0), sizes.repeat(1, 2))                        # (A, 4)
    emptied = ~degenerate & ~outside & ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
    invalid = degenerate | outside | emptied
    if invalid.any():
        ids = [annotations[i]["id"] for i in invalid.nonzero().flatten().tolist()]
        kinds = f"{int(degenerate.sum())} with width or height <= 0, " \
                f"{int((outside | emptied).sum())} outside the image by more than {BORDER_TOLERANCE_PX:g} px"
        if len(ids) > MAX_INVALID_BOX_FRACTION * len(annotations):
            raise DataError(f"annotation file {annotation_file} has {len(ids)} invalid boxes among "
                            f"{len(annotations)} annotations ({kinds}; annotation ids {_examples(ids)}). Boxes "
                            f"must be [x, y, width, height] in pixels inside their image: fix those "
                            f"annotations, or remove them.")
        log.warning("%s: %d invalid boxes (%s; annotation ids %s) are left out of training; evaluation keeps "
                    "them as ground truth", annotation_file, len(ids), kinds, _examples(ids))
    rows = {annotations[i]["id"]: i for i in (~invalid).nonzero().flatten().tolist()}
    return rows, clipped.to(torch.float32)


# ------------------------------------------------------------------------------------------------ images

def check_image_files(coco: COCO, image_dir: Path, mode: str) -> None:
    """Every image of the annotation file exists in ``image_dir`` and opens with the size the file records
    (``mode="header"``) or decodes completely (``"full"``); ``"none"`` checks nothing."""
    if mode not in IMAGE_CHECKS:
        raise ValueError(f"check_images must be one of {IMAGE_CHECKS}, got {mode!r}")
    if mode == "none":
        return
    if not image_dir.is_dir():
        state = "is a file, not a folder" if image_dir.exists() else "does not exist"
        raise DataError(f"image folder {image_dir} {state}. Pass the folder that holds this split's images "
                        f"(the file_name entries of the annotation file are relative to it).")
    missing, broken = [], []
    for image in coco.imgs.values():
        path = image_dir / image["file_name"]
        if not path.is_file():
            missing.append(image["file_name"])
            continue
        problem = _image_problem(path, image["width"], image["height"], full=mode == "full")
        if problem:
            broken.append(f"{image['file_name']} ({problem})")
    if missing:
        raise DataError(f"{len(missing)} of the {len(coco.imgs)} images listed in the annotation file are not in "
                        f"{image_dir} ({_examples(missing)}). Copy or extract the missing images there, or pass "
                        f"the image folder that belongs to this annotation file.")
    if broken:
        raise DataError(f"{len(broken)} images in {image_dir} cannot be read or do not have the size the annotation "
                        f"file records: {_examples(broken)}. Replace them with intact copies (re-extract the "
                        f"dataset), or remove them and their annotations from the annotation file.")


def _image_problem(path: Path, width: int, height: int, full: bool) -> str | None:
    """Why the image file is unusable, or None."""
    try:
        with Image.open(path) as image:  # reads the header only
            if full:
                image.load()
            size = image.size
    except UNREADABLE_ERRORS as exc:
        return f"unreadable: {str(exc).splitlines()[0][:80]}"
    if size != (width, height):
        return f"{size[0]}x{size[1]} pixels, the annotation file says {width}x{height}"
    return None


def read_image(path: Path) -> torch.Tensor:
    """The RGB pixels (3, H, W) uint8 of an image file; a DataError naming the file if it cannot be decoded.
    PIL decodes, as for classification (torchvision's own decoders are deprecated in favour of TorchCodec)."""
    try:
        with Image.open(path) as image:
            return pil_to_tensor(to_rgb(image))                                           # (3, H, W)
    except UNREADABLE_ERRORS as exc:
        raise DataError(f"image {path} cannot be decoded ({str(exc).splitlines()[0][:120]}); it is damaged, probably "
                        f"cut short. Replace it with an intact copy, or remove it and its annotations; build the "
                        f"dataset with check_images='full' to find every such file before training.") from None


# ----------------------------------------------------------------------------------------------- dataset

class CocoDetectionDataset(Dataset):
    """A COCO-format split for torchvision's detectors.

    Items are ``(image, target)``: the image a float tensor (3, H, W) in [0, 1], the target a dict with
    ``boxes`` (N, 4) float x1, y1, x2, y2 in pixels, ``labels`` (N,) int64 category ids, ``masks`` (N, H, W)
    uint8 when ``with_masks``, ``image_id`` (int), ``area`` (N,) and ``iscrowd`` (N,). The key may be an index
    or ``(index, seed)``: with a seed, the transforms' randomness is drawn from the CPU generator seeded with
    it (and its state restored afterwards), so a sample's flip does not depend on the worker that loads it.

    ``transforms`` takes and returns ``(image, target)`` with tv_tensors (:mod:`ecanet.detection.transforms`);
    by default the evaluation transform (conversion to float). The module docstring lists the checks.
    """

    def __init__(self, image_dir: str | Path, annotation_file: str | Path,
                 transforms: Callable[[Any, dict], tuple[Any, dict]] | None = None, with_masks: bool = False,
                 *, for_training: bool = False, check_images: str = "header") -> None:
        self.image_dir, self.annotation_file = Path(image_dir), Path(annotation_file)
        self.transforms = transforms if transforms is not None else detection_transforms(train=False)
        self.with_masks, self.for_training = with_masks, for_training
        self.coco = coco_from_content(read_coco_json(self.annotation_file))
        self.categories = {c["id"]: c.get("name", str(c["id"])) for c in self.coco.dataset["categories"]}
        self.num_classes = max(self.categories) + 1  # labels are category ids; 0 is the background
        self._box_rows, self._boxes = training_boxes(self.coco, self.annotation_file)
        self._segmentations: dict[int, Any] = {}   # annotation id -> its usable polygons, where some were not
        if not for_training:
            check_evaluation_fields(self.coco.dataset, self.annotation_file)
        if with_masks:
            self._check_segmentations()
        check_image_files(self.coco, self.image_dir, check_images)
        image_ids = sorted(self.coco.imgs)
        if for_training:
            image_ids = [i for i in image_ids if self._training_annotations(i)]
            if not image_ids:
                raise DataError(f"annotation file {self.annotation_file} has no image with a usable (non-crowd, "
                                f"valid) annotation, so there is nothing to train on. Check that it is the "
                                f"training split's file.")
            dropped = len(self.coco.imgs) - len(image_ids)
            if dropped:
                log.info("%s: %d of %d images have no usable annotation and are left out of training",
                         self.annotation_file, dropped, len(self.coco.imgs))
        self.ids = image_ids

    def _check_segmentations(self) -> None:
        """Masks from every annotation's segmentation (:func:`usable_segmentation`). Training leaves out, with a
        warning, annotations without a usable one, up to :data:`MAX_INVALID_BOX_FRACTION` of them (as for
        boxes; more is a DataError). COCO's evaluation rasterises every ground-truth segmentation, crowds
        too, so a validation file with one it cannot is a DataError before training, not a failure after an
        epoch."""
        unusable = []
        for annotation in self.coco.anns.values():
            image = self.coco.imgs[annotation["image_id"]]
            if not self.for_training:
                if not _evaluation_rasterises(self.coco, annotation, image):
                    unusable.append(annotation["id"])
                continue
            if annotation.get("iscrowd") or annotation["id"] not in self._box_rows:
                continue   # what training leaves out anyway
            segmentation = annotation.get("segmentation")
            usable = usable_segmentation(segmentation, image)
            if usable is None:
                unusable.append(annotation["id"])
            elif usable != segmentation:
                self._segmentations[annotation["id"]] = usable
        if not unusable:
            return
        if not self.for_training:
            raise DataError(f"annotation file {self.annotation_file} has {len(unusable)} annotation(s) whose "
                            f"segmentation COCO's mask evaluation cannot rasterise (annotation ids "
                            f"{_examples(unusable)}): polygons need finite coordinates within reach of the image, "
                            f"in a form pycocotools converts, and an RLE needs the image's [height, width] as its "
                            f"'size' and runs that cover it. Fix or regenerate the file; for a file without instance "
                            f"masks, use a box-only detector.")
        what = (f"{len(unusable)} annotation(s) without a segmentation pycocotools can rasterise (annotation ids "
                f"{_examples(unusable)}): a polygon needs at least 3 points within reach of the image, and an RLE "
                f"needs the image's [height, width] as its 'size' and runs that cover it")
        if len(unusable) > MAX_INVALID_BOX_FRACTION * len(self.coco.anns):
            raise DataError(f"annotation file {self.annotation_file} has {what}, more than "
                            f"{MAX_INVALID_BOX_FRACTION:.1%} of its annotations. Use a box-only detector for a file "
                            f"without instance masks, or fix or regenerate the file.")
        for annotation_id in unusable:
            del self._box_rows[annotation_id]
        log.warning("%s: %s are left out of training", self.annotation_file, what)

    def _training_annotations(self, image_id: int) -> list[dict]:
        """The image's annotations that become targets: not crowd regions, with a usable box."""
        return [a for a in self.coco.imgToAnns.get(image_id, [])
                if not a.get("iscrowd") and a["id"] in self._box_rows]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, Any]]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        path = self.image_dir / info["file_name"]
        pixels = read_image(path)                                                         # (3, H, W) uint8
        height, width = info["height"], info["width"]
        if pixels.shape[1:] != (height, width):
            raise DataError(f"image {path} has {pixels.shape[2]}x{pixels.shape[1]} pixels, the annotation file "
                            f"{self.annotation_file} says {width}x{height}. Fix the file's width and height, or "
                            f"replace the image.")
        image, target = tv_tensors.Image(pixels), self._target(image_id, height, width)
        with seeded_cpu_rng(seed) if seed is not None else contextlib.nullcontext():
            return self.transforms(image, target)

    def _target(self, image_id: int, height: int, width: int) -> dict[str, Any]:
        annotations = self._training_annotations(image_id)
        boxes = self._boxes[[self._box_rows[a["id"]] for a in annotations]]               # (N, 4)
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
            "labels": torch.tensor([a["category_id"] for a in annotations], dtype=torch.int64),  # (N,)
            "image_id": image_id,
            "area": torch.tensor([_area(a) for a in annotations], dtype=torch.float32),  # (N,)
            "iscrowd": torch.zeros(len(annotations), dtype=torch.int64),                  # (N,) crowds left out
        }
        if self.with_masks:
            masks = [torch.from_numpy(self.coco.annToMask(                              # each (H, W) uint8
                {**a, "segmentation": self._segmentations.get(a["id"], a["segmentation"])})) for a in annotations]
            target["masks"] = tv_tensors.Mask(torch.stack(masks) if masks
                                              else torch.zeros((0, height, width), dtype=torch.uint8))  # (N, H, W)
        return target


def _area(annotation: Mapping[str, Any]) -> float:
    """The annotation's ``area`` where it is a number >= 0, else its box's (training files may lack it)."""
    area = annotation.get("area")
    return float(area) if _usable_area(area) else float(annotation["bbox"][2] * annotation["bbox"][3])


def check_no_category_zero(dataset: CocoDetectionDataset, detector: str) -> None:
    """A DataError when ``dataset`` labels objects with category id 0, which ``detector`` keeps for the
    background: they would be trained as background and score no AP."""
    zero = [a["id"] for a in dataset.coco.anns.values() if a["category_id"] == 0 and not a.get("iscrowd")]
    if zero:
        raise DataError(f"annotation file {dataset.annotation_file} labels {len(zero)} object(s) with category id 0 "
                        f"(annotation ids {_examples(zero)}), which {detector} keeps for the background: they would "
                        f"be trained as background. Renumber the categories from 1 (as COCO's are).")


def collate_fn(batch: Sequence[tuple[Any, Any]]) -> tuple[tuple[Any, ...], ...]:
    """``((image, ...), (target, ...))``: detectors take lists of images of different sizes."""
    return tuple(zip(*batch))


# ---------------------------------------------------------------------------------------------- samplers

class SeededDistributedSampler(DistributedSampler):
    """torch's DistributedSampler (shuffled per epoch, padded so every rank gets as many samples) that yields
    ``(index, augmentation seed)``: each sample's flip is drawn from (seed, epoch, index) by
    :func:`ecanet.data.folders.sample_seed`, whichever worker loads it. Call ``set_epoch`` before each epoch."""

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in super().__iter__():
            yield index, sample_seed(self.seed, self.epoch, index)


def train_sampler(dataset: Dataset, info: DistInfo, seed: int) -> SeededDistributedSampler:
    """This rank's shuffled share of the training images."""
    return SeededDistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                    seed=seed)


def eval_sampler(dataset: Dataset, info: DistInfo) -> ShardSampler:
    """This rank's strided share of the evaluation images (r, r + W, ...) without padding: over all ranks
    every image is evaluated exactly once."""
    return ShardSampler(len(dataset), info.rank, info.world_size)


# --------------------------------------------------------------------------------------- a run's loaders

class FirstImages(Dataset):
    """The first ``count`` images of a dataset (``--limit-train``); keys pass through unchanged, so a
    ``(index, seed)`` key seeds the sample's flip as in the whole dataset."""

    def __init__(self, dataset: CocoDetectionDataset, count: int) -> None:
        self.dataset, self.count = dataset, min(count, len(dataset))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, key: Any) -> Any:
        return self.dataset[key]


class SkippingSampler(Sampler):
    """A per-epoch sampler that starts ``skip`` samples into the epoch: what a run resumed mid-epoch has not
    yet trained on, in the same order. ``set_epoch(epoch, skip)`` before each epoch."""

    def __init__(self, sampler: Any) -> None:
        self.sampler, self.skip = sampler, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.sampler.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return len(self.sampler) - self.skip


@dataclass
class DetectionData:
    """The splits and loaders of a run (``train_*`` None when only evaluating)."""

    val_set: CocoDetectionDataset
    val_loader: Iterable
    with_masks: bool
    train_set: Dataset | None = None
    train_loader: Iterable | None = None
    train_sampler: SkippingSampler | None = None
    batch_per_process: int = 0
    steps_per_epoch: int = 0

    @property
    def categories(self) -> dict[int, str]:
        """Category id -> name of both splits, as num_classes counts them (the training file's name where both
        list an id)."""
        train = _base(self.train_set).categories if self.train_set is not None else {}
        return {**self.val_set.categories, **train}

    def close(self) -> None:
        """Stop the loaders' worker processes (see :func:`ecanet.data.loaders.shutdown_workers`)."""
        shutdown_workers(self.train_loader)
        shutdown_workers(self.val_loader)

    @property
    def num_classes(self) -> int:
        """Class ids of both splits, background included: the largest category id + 1."""
        sets = [self.val_set] + ([_base(self.train_set)] if self.train_set is not None else [])
        return max(s.num_classes for s in sets)


def _base(dataset: Dataset) -> CocoDetectionDataset:
    return dataset.dataset if isinstance(dataset, FirstImages) else dataset


# torchvision's R-CNNs keep class 0 for the background and never predict it.
BACKGROUND_CLASS_DETECTORS = ("faster_rcnn", "mask_rcnn")


def build_data(cfg: Any, info: DistInfo, evaluate_only: bool = False) -> DetectionData:
    """The validation split and, unless ``evaluate_only``, the training split of ``cfg``, checked
    (:class:`~ecanet.errors.DataError` for every problem the data module finds) and wrapped in loaders."""
    with_masks = cfg.detector == "mask_rcnn"
    if cfg.batch_size % info.world_size:
        raise ConfigError(f"--batch-size {cfg.batch_size} is the total over all {info.world_size} processes and "
                          f"must divide evenly among them. Pass a multiple of {info.world_size}.")
    batch = cfg.batch_size // info.world_size
    pin = info.device.type == "cuda"
    train = None
    if not evaluate_only:
        train = CocoDetectionDataset(cfg.train_images, cfg.train_annotations,
                                     detection_transforms(train=True, flip_probability=cfg.hflip),
                                     with_masks=with_masks, for_training=True)
    val_set = CocoDetectionDataset(cfg.val_images, cfg.val_annotations, with_masks=with_masks)
    if cfg.detector in BACKGROUND_CLASS_DETECTORS:
        for dataset in (train, val_set):
            if dataset is not None:
                check_no_category_zero(dataset, cfg.detector)
    if not val_set.coco.anns:
        log.warning("%s has no annotations: COCO's AP of every epoch will be '-'. Pass a validation split with "
                    "annotations (a test split without them cannot be scored here).", cfg.val_annotations)
    val_loader = make_loader(val_set, eval_sampler(val_set, info), batch, cfg.workers, pin, drop_last=False,
                             collate_fn=collate_fn)
    data = DetectionData(val_set, val_loader, with_masks, batch_per_process=batch)
    if train is None:
        return data
    train_set = FirstImages(train, cfg.limit_train) if cfg.limit_train else train
    sampler = SkippingSampler(train_sampler(train_set, info, cfg.seed))
    steps = len(sampler.sampler) // batch
    if steps == 0:
        raise DataError(f"{len(train_set)} training images make no full step of {cfg.batch_size} images over "
                        f"{info.world_size} process(es). Pass a smaller --batch-size or more images.")
    data.train_set, data.train_sampler, data.steps_per_epoch = train_set, sampler, steps
    data.train_loader = make_loader(train_set, sampler, batch, cfg.workers, pin, drop_last=True, collate_fn=collate_fn)
    return data


def to_device(images: Sequence[torch.Tensor], targets: Sequence[dict[str, Any]], device: torch.device
              ) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """A batch of :func:`collate_fn` on ``device``: the images, and each target's tensors."""
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [{k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
               for t in targets]
    return images, targets
