"""COCO evaluation against hand-worked cases, result conversion, and the checks of the multi-rank gather."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

from ecanet.detection.coco_eval import (check_image_coverage, evaluate_coco, evaluate_distributed,
                                        gather_detections, predictions_to_coco)
from ecanet.detection.data import coco_from_content
from ecanet.distributed import DistInfo

# pycocotools' mask decoder trips a NumPy 2 deprecation inside its own code (its RLE list's __array__).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

CATEGORY = 3  # a COCO id with a gap below it; category 1 has no objects, which COCOeval leaves out of the means


def box_ground_truth():
    """Image 1: A = [10, 10, 40, 40] (area 1600, medium), B = [60, 60, 30, 30] (900, small);
    image 2: C = [20, 20, 50, 50] (2500, medium). No large objects. Boxes are [x, y, w, h]."""
    boxes = {1: [[10, 10, 40, 40], [60, 60, 30, 30]], 2: [[20, 20, 50, 50]]}
    annotations = [{"id": k + 1, "image_id": image_id, "category_id": CATEGORY, "bbox": box,
                    "area": box[2] * box[3], "iscrowd": 0}
                   for k, (image_id, box) in enumerate((i, b) for i, bs in boxes.items() for b in bs)]
    return coco_from_content({
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 100} for i in (1, 2)],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "empty"}, {"id": CATEGORY, "name": "thing"}]})


def box_detections():
    """As a detector returns them (x1, y1, x2, y2):
    d1 image 1, score 0.9: exactly A (IoU 1);
    d2 image 2, score 0.8: [20, 20, 60, 60], inside C: IoU = 40*40 / 50*50 = 0.64;
    d3 image 1, score 0.6: [0, 70, 20, 90], touching nothing: a false positive (area 400, small).
    B is missed."""
    outputs = [
        {"boxes": torch.tensor([[10., 10., 50., 50.], [0., 70., 20., 90.]]), "scores": torch.tensor([0.9, 0.6]),
         "labels": torch.tensor([CATEGORY, CATEGORY])},
        {"boxes": torch.tensor([[20., 20., 60., 60.]]), "scores": torch.tensor([0.8]),
         "labels": torch.tensor([CATEGORY])},
    ]
    return predictions_to_coco(outputs, [1, 2])


def test_predictions_become_coco_entries_with_xywh_boxes():
    entries = box_detections()
    assert [e["image_id"] for e in entries] == [1, 1, 2]
    assert [e["bbox"] for e in entries] == [[10, 10, 40, 40], [0, 70, 20, 20], [20, 20, 40, 40]]
    assert [e["category_id"] for e in entries] == [CATEGORY] * 3
    assert entries[0]["score"] == pytest.approx(0.9) and "segmentation" not in entries[0]


def test_box_ap_of_the_hand_worked_case(capsys, caplog):
    # 3 ground-truth boxes; detections by score: d1 (IoU 1 with A), d2 (IoU 0.64 with C), d3 (false positive).
    # COCO's AP at one IoU threshold t: precision made non-increasing in recall, read at the 101 recall
    # points 0, 0.01, ..., 1 (a point beyond the highest recall reached counts 0), averaged.
    # * t <= 0.64 (t = 0.50, 0.55, 0.60): TP, TP, FP -> recall 1/3, 2/3, 2/3; precision 1, 1, 2/3:
    #   precision 1 up to recall 2/3, i.e. at the 67 points 0.00..0.66 -> AP = 67/101 = 0.663366
    # * t > 0.64 (0.65, ..., 0.95: 7 thresholds): TP, FP, FP -> recall 1/3 throughout; precision 1, 1/2, 1/3:
    #   precision 1 at the 34 points 0.00..0.33 -> AP = 34/101 = 0.336634
    # AP50 = 67/101, AP75 = 34/101, AP = (3 * 67 + 7 * 34) / (10 * 101) = 439/1010 = 0.434653.
    # Small objects (area < 32^2): only B counts; d1 and d2 match ignored (medium) boxes and are ignored;
    #   d3 (small, unmatched) is a false positive: precision 0 at every recall point -> APs = 0.
    # Medium objects: A and C count; d3 (small, unmatched) is ignored.
    #   t <= 0.64: TP, TP -> precision 1 at all 101 points -> 1;
    #   t > 0.64: TP, FP -> recall 1/2, precision 1 at the 51 points 0.00..0.50 -> 51/101.
    #   APm = (3 * 101 + 7 * 51) / 1010 = 660/1010 = 0.653465.
    # Large objects: none -> COCOeval's -1 -> None.
    with caplog.at_level(logging.INFO, logger="ecanet.detection"):
        metrics = evaluate_coco(box_ground_truth(), box_detections())
    assert metrics["bbox_AP"] == pytest.approx(100 * 439 / 1010, abs=1e-4)
    assert metrics["bbox_AP50"] == pytest.approx(100 * 67 / 101, abs=1e-4)
    assert metrics["bbox_AP75"] == pytest.approx(100 * 34 / 101, abs=1e-4)
    assert metrics["bbox_APs"] == 0.0
    assert metrics["bbox_APm"] == pytest.approx(100 * 660 / 1010, abs=1e-4)
    assert metrics["bbox_APl"] is None
    assert capsys.readouterr().out == ""  # pycocotools' printing went to the log
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.435" in caplog.text


def test_restricting_the_images_changes_the_result():
    # Image 2 alone: C found by d2 at IoU 0.64: AP 1 for t <= 0.64 (3 thresholds), 0 above -> AP 0.3.
    metrics = evaluate_coco(box_ground_truth(), box_detections(), image_ids=[2])
    assert metrics["bbox_AP"] == pytest.approx(30.0, abs=1e-4)
    assert metrics["bbox_AP50"] == pytest.approx(100.0) and metrics["bbox_AP75"] == 0.0


def test_no_detections_give_zero_ap_not_a_crash():
    metrics = evaluate_coco(box_ground_truth(), [])
    assert metrics["bbox_AP"] == 0.0 and metrics["bbox_AP50"] == 0.0 and metrics["bbox_APs"] == 0.0
    assert metrics["bbox_APl"] is None


# ------------------------------------------------------------------------------------------------ masks

SIDE = 64


def mask_ground_truth():
    """One object: the 20x20 square of rows 10..29 and columns 10..29 (area 400, small), as an RLE."""
    square = np.zeros((SIDE, SIDE), dtype=np.uint8)
    square[10:30, 10:30] = 1
    rle = mask_util.encode(np.asfortranarray(square))
    rle["counts"] = rle["counts"].decode("ascii")
    return coco_from_content({
        "images": [{"id": 7, "file_name": "7.jpg", "width": SIDE, "height": SIDE}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": CATEGORY, "segmentation": rle, "area": 400.0,
                         "bbox": [10, 10, 20, 20], "iscrowd": 0}],
        "categories": [{"id": CATEGORY, "name": "thing"}]})


def mask_output():
    """Probabilities: 0.9 on the square, 0.7 on the 4 rows below it (80 px), exactly 0.5 on the 2 rows above
    it (not above the threshold) and 0.3 elsewhere. Thresholded: 480 px containing the 400 of the square."""
    probabilities = torch.full((1, 1, SIDE, SIDE), 0.3)
    probabilities[0, 0, 10:30, 10:30] = 0.9
    probabilities[0, 0, 30:34, 10:30] = 0.7
    probabilities[0, 0, 8:10, 10:30] = 0.5
    return {"boxes": torch.tensor([[10., 8., 30., 34.]]), "scores": torch.tensor([0.95]),
            "labels": torch.tensor([CATEGORY]), "masks": probabilities}


def test_masks_are_thresholded_and_rle_encoded():
    (entry,) = predictions_to_coco([mask_output()], [7], with_masks=True)
    decoded = mask_util.decode(entry["segmentation"])                                     # (H, W)
    expected = np.zeros((SIDE, SIDE), dtype=np.uint8)
    expected[10:34, 10:30] = 1
    np.testing.assert_array_equal(decoded, expected)
    assert isinstance(entry["segmentation"]["counts"], str)


def test_mask_ap_of_the_hand_worked_case():
    # Mask IoU = 400 / 480 = 0.833: a true positive for t = 0.50, ..., 0.80 (7 of 10 thresholds, AP 1 each:
    # precision 1 at every recall point) and a false positive for 0.85, 0.90, 0.95 (AP 0) -> AP = 0.7.
    # The object is small (400 < 32^2); the detection's area is its mask's (480), not its box's (520).
    metrics = evaluate_coco(mask_ground_truth(), predictions_to_coco([mask_output()], [7], with_masks=True),
                            iou_types=("segm",))
    assert metrics["segm_AP"] == pytest.approx(70.0, abs=1e-4)
    assert metrics["segm_AP50"] == pytest.approx(100.0) and metrics["segm_AP75"] == pytest.approx(100.0)
    assert metrics["segm_APs"] == pytest.approx(70.0, abs=1e-4)
    assert metrics["segm_APm"] is None and metrics["segm_APl"] is None


def test_box_and_mask_ap_together_and_without_detections():
    gt = mask_ground_truth()
    # The box [10, 8, 30, 34] against [10, 10, 20, 20]: IoU = 400 / 520 = 0.769: TP for t <= 0.75 (6 of 10).
    both = evaluate_coco(gt, predictions_to_coco([mask_output()], [7], with_masks=True), ("bbox", "segm"))
    assert both["bbox_AP"] == pytest.approx(60.0, abs=1e-4) and both["segm_AP"] == pytest.approx(70.0, abs=1e-4)
    empty = evaluate_coco(gt, [], ("bbox", "segm"))
    assert empty["segm_AP"] == 0.0 and empty["bbox_AP"] == 0.0 and empty["segm_APm"] is None


def test_segm_needs_masks():
    with pytest.raises(ValueError, match="with_masks=True"):
        evaluate_coco(mask_ground_truth(), predictions_to_coco([mask_output()], [7]), ("segm",))


# ------------------------------------------------------------------------------------------ several ranks

def test_disjoint_ranks_are_merged_and_checked_against_the_split():
    assert check_image_coverage([[1, 3, 5], [2, 4]], expected_image_ids=range(1, 6)) == [1, 2, 3, 4, 5]
    assert check_image_coverage([[2], []]) == [2]


def test_an_image_evaluated_twice_is_an_error():
    with pytest.raises(RuntimeError, match=r"1 images were evaluated more than once: 3 \(ranks 0 and 1\)"):
        check_image_coverage([[1, 3], [2, 3]])


def test_an_image_never_evaluated_is_an_error():
    with pytest.raises(RuntimeError, match=r"1 never evaluated \(e.g. \[4\]\)"):
        check_image_coverage([[1, 3], [2]], expected_image_ids=[1, 2, 3, 4])


def test_one_process_needs_no_process_group():
    info = DistInfo()
    detections = box_detections()
    assert gather_detections([1, 2], detections, info, expected_image_ids=[1, 2]) == ([1, 2], detections)
    metrics = evaluate_distributed(box_ground_truth(), [2, 1], detections, info, expected_image_ids=[1, 2])
    assert metrics == evaluate_coco(box_ground_truth(), detections)


def test_the_ground_truth_as_detections_scores_100(tmp_path):
    from detection_fixtures import make_tiny_toyset
    from ecanet.detection.data import CocoDetectionDataset
    make_tiny_toyset(tmp_path / "toy")
    dataset = CocoDetectionDataset(tmp_path / "toy" / "val", tmp_path / "toy" / "annotations" / "instances_val.json")
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0,
                "segmentation": a["segmentation"]} for a in dataset.coco.dataset["annotations"]]
    metrics = evaluate_coco(dataset.coco, perfect, ("bbox", "segm"))
    assert metrics["bbox_AP"] == pytest.approx(100.0) and metrics["segm_AP"] == pytest.approx(100.0)
    assert metrics["bbox_APl"] is None  # no object of the tiny set is larger than 96^2 px


def _evaluate_on_rank(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """One of two real processes: its strided share of the images and their detections, evaluated together."""
    import json
    import os
    import torch.distributed as dist
    torch.set_num_threads(1)  # a forked child, as DataLoader's workers do
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        info = DistInfo(rank=rank, world_size=world_size, backend="gloo", control_group=dist.group.WORLD)
        mine = [1, 2][rank::world_size]
        detections = [d for d in box_detections() if d["image_id"] in mine]
        metrics = evaluate_distributed(box_ground_truth(), mine, detections, info, expected_image_ids=[1, 2])
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(metrics, f)
    finally:
        dist.destroy_process_group()


def test_two_processes_evaluate_every_image_once_and_agree(tmp_path):
    import json
    import socket
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork, not spawn: the children inherit the imported modules instead of importing torch again (seconds)
    mp.start_processes(_evaluate_on_rank, args=(2, port, str(tmp_path)), nprocs=2, start_method="fork")
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert results[0] == results[1] == evaluate_coco(box_ground_truth(), box_detections())
