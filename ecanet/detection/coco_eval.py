"""COCO evaluation (box AP and mask AP) with pycocotools' COCOeval, exact over any number of processes.

Each rank turns its model outputs into COCO result entries (:func:`predictions_to_coco`) for the images
its evaluation sampler gave it (:func:`ecanet.detection.data.eval_sampler`: every image on exactly one
rank). :func:`evaluate_distributed` collects them on rank 0, checks that every image of the split was seen
exactly once, runs COCOeval there and hands the numbers to every rank; with one process it needs no
torch.distributed at all. pycocotools prints its progress and its summary table; both go to the log
(the summary at INFO level), not to stdout.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.ops import box_convert

from ..distributed import DistInfo, all_gather_objects, broadcast_object, gather_objects
from ..metrics import markdown_table
from .data import pycocotools_output_to_log

log = logging.getLogger(__name__)

IOU_TYPES = ("bbox", "segm")
# The first six numbers of COCOeval.stats, in its order: AP over IoU 0.50:0.05:0.95, AP at IoU 0.50 and
# 0.75, then AP of small (< 32^2 px), medium and large (> 96^2 px) objects; all at 100 detections per image.
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
MASK_THRESHOLD = 0.5  # mask probability above which a pixel belongs to the object (torchvision's references)


def predictions_to_coco(outputs: Sequence[dict[str, torch.Tensor]], image_ids: Sequence[int],
                        with_masks: bool = False) -> list[dict[str, Any]]:
    """COCO result entries for a batch of detector outputs.

    ``outputs[i]`` (torchvision's detector output for image ``image_ids[i]``, in the image's own pixels)
    holds ``boxes`` (N, 4) x1, y1, x2, y2, ``scores`` (N,), ``labels`` (N,) category ids and, with
    ``with_masks``, ``masks`` (N, 1, H, W) probabilities. Each entry has ``image_id``, ``category_id``,
    ``bbox`` [x, y, width, height], ``score`` and, with masks, ``segmentation``: the mask above
    :data:`MASK_THRESHOLD` as a compressed RLE whose ``counts`` is a str (so the list is JSON-ready).
    """
    if len(outputs) != len(image_ids):
        raise ValueError(f"{len(outputs)} outputs for {len(image_ids)} image ids")
    results: list[dict[str, Any]] = []
    for output, image_id in zip(outputs, image_ids):
        boxes = box_convert(output["boxes"].detach().float().cpu(), "xyxy", "xywh").tolist()  # (N, 4)
        scores = output["scores"].detach().float().cpu().tolist()
        labels = output["labels"].detach().cpu().tolist()
        segmentations: list[dict[str, Any]] = []
        if with_masks and boxes:
            masks = output["masks"].detach().cpu()[:, 0] > MASK_THRESHOLD                  # (N, H, W)
            # pycocotools encodes a column-major (H, W, N) uint8 array
            columns = np.asfortranarray(masks.permute(1, 2, 0).numpy().astype(np.uint8))  # (H, W, N)
            segmentations = mask_util.encode(columns)
            for rle in segmentations:
                rle["counts"] = rle["counts"].decode("ascii")
        for k, (box, score, label) in enumerate(zip(boxes, scores, labels)):
            entry = {"image_id": int(image_id), "category_id": int(label), "bbox": box, "score": score}
            if with_masks:
                entry["segmentation"] = segmentations[k]
            results.append(entry)
    return results


def _results_for(iou_type: str, detections: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of the entries with only the geometry ``iou_type`` evaluates: ``COCO.loadRes`` takes an entry's
    area (which sorts objects into small, medium and large) from its box when it has one, and it annotates
    the entries it is given in place."""
    drop = "segmentation" if iou_type == "bbox" else "bbox"
    results = []
    for entry in detections:
        if iou_type == "segm" and "segmentation" not in entry:
            raise ValueError("segm evaluation needs detections with masks (predictions_to_coco(..., with_masks=True))")
        results.append({key: copy.copy(value) for key, value in entry.items() if key != drop})
    return results


def _load_results(coco_gt: COCO, results: list[dict[str, Any]]) -> COCO:
    """The detections as a COCO object; ``COCO.loadRes`` cannot take an empty list, so none gives an empty one."""
    with pycocotools_output_to_log(logger=log):
        if results:
            return coco_gt.loadRes(results)
        empty = COCO()
        empty.dataset = {"images": list(coco_gt.dataset["images"]), "annotations": [],
                         "categories": copy.deepcopy(coco_gt.dataset["categories"])}
        empty.createIndex()
        return empty


def evaluate_coco(coco_gt: COCO, detections: Sequence[dict[str, Any]], iou_types: Sequence[str] = ("bbox",),
                  image_ids: Iterable[int] | None = None) -> dict[str, float | None]:
    """COCO's AP numbers of ``detections`` (entries of :func:`predictions_to_coco`) against ``coco_gt``.

    Returns ``<iou_type>_<name>`` for each iou type ("bbox", "segm") and each of :data:`METRIC_NAMES`, in
    percent (0..100); None where the ground truth has no object of that kind (COCOeval's -1, e.g. APl
    without large objects). Images default to all of ``coco_gt``'s; ``image_ids`` restricts them.
    No detections at all give AP 0.
    """
    metrics: dict[str, float | None] = {}
    for iou_type in iou_types:
        if iou_type not in IOU_TYPES:
            raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
        evaluator = COCOeval(coco_gt, _load_results(coco_gt, _results_for(iou_type, detections)), iouType=iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = sorted(image_ids)
        with pycocotools_output_to_log(logger=log):
            evaluator.evaluate()
            evaluator.accumulate()
        log.info("COCO %s evaluation of %d images:", iou_type, len(evaluator.params.imgIds))
        with pycocotools_output_to_log(logging.INFO, log):
            evaluator.summarize()
        for name, value in zip(METRIC_NAMES, evaluator.stats):
            metrics[f"{iou_type}_{name}"] = None if value < 0 else 100.0 * float(value)
    return metrics


# ------------------------------------------------------------------------------------------ several ranks

def check_image_coverage(per_rank_image_ids: Sequence[Sequence[int]],
                         expected_image_ids: Iterable[int] | None = None) -> list[int]:
    """All ranks' evaluated image ids, sorted, after checking that no image was evaluated twice and, given
    ``expected_image_ids``, that every expected image was evaluated (and no other). Raises RuntimeError:
    a mismatch means the evaluation sampler is wrong, and the AP would silently be that of another set."""
    seen: dict[int, int] = {}
    duplicates = []
    for rank, image_ids in enumerate(per_rank_image_ids):
        for image_id in image_ids:
            if image_id in seen:
                duplicates.append(f"{image_id} (ranks {seen[image_id]} and {rank})")
            seen[image_id] = rank
    if duplicates:
        raise RuntimeError(f"{len(duplicates)} images were evaluated more than once: {', '.join(duplicates[:5])}"
                           f"{', ...' if len(duplicates) > 5 else ''}. The evaluation sampler must give each image "
                           f"to exactly one rank, without padding (ecanet.detection.data.eval_sampler).")
    if expected_image_ids is not None:
        expected = set(expected_image_ids)
        missing, extra = sorted(expected - seen.keys()), sorted(seen.keys() - expected)
        if missing or extra:
            raise RuntimeError(f"evaluation covered {len(seen)} images but the split has {len(expected)}: "
                               f"{len(missing)} never evaluated (e.g. {missing[:5]}), {len(extra)} not in the "
                               f"split (e.g. {extra[:5]}). Every image of the split must be evaluated once.")
    return sorted(seen)


def gather_detections(image_ids: Sequence[int], detections: list[dict[str, Any]], info: DistInfo,
                      expected_image_ids: Iterable[int] | None = None) -> tuple[list[int], list[dict]] | None:
    """Every rank's (evaluated image ids, detections) on rank 0, checked by :func:`check_image_coverage` on
    every rank (so all of them raise together); None on the other ranks. The image ids travel to all ranks
    (they are small), the detections only to rank 0, over the CPU control group."""
    all_image_ids = all_gather_objects(list(image_ids), info)
    evaluated = check_image_coverage(all_image_ids, expected_image_ids)
    gathered = gather_objects(detections, info, dst=0)
    if gathered is None:
        return None
    return evaluated, [entry for rank_detections in gathered for entry in rank_detections]


def evaluate_distributed(coco_gt: COCO, image_ids: Sequence[int], detections: list[dict[str, Any]],
                         info: DistInfo, iou_types: Sequence[str] = ("bbox",),
                         expected_image_ids: Iterable[int] | None = None) -> dict[str, float | None]:
    """:func:`evaluate_coco` over the images and detections of all ranks, run once on rank 0; every rank
    returns its numbers. ``image_ids``: the images this rank evaluated (with or without detections);
    ``expected_image_ids``: the whole split's, to check that each was evaluated exactly once."""
    gathered = gather_detections(image_ids, detections, info, expected_image_ids)
    metrics = None
    if gathered is not None:
        evaluated, all_detections = gathered
        metrics = evaluate_coco(coco_gt, all_detections, iou_types, image_ids=evaluated)
    return broadcast_object(metrics, info)


def coco_table(metrics: Mapping[str, Any]) -> str:
    """The COCO numbers (``box_AP``, ``mask_AP50``, ...) as a markdown table: one row per kind present (box,
    mask), one column per metric; "-" for COCO's "no such objects"."""
    kinds = [kind for kind in ("box", "mask") if f"{kind}_AP" in metrics]
    cell = lambda value: "-" if value is None else f"{value:.2f}"  # noqa: E731
    return markdown_table(["", *METRIC_NAMES],
                          [[kind, *(cell(metrics[f"{kind}_{name}"]) for name in METRIC_NAMES)] for kind in kinds])
