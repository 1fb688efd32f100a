"""Issue 8, run 40's change on the CPU: Python time per batch to build the crop kernel's table for the GPU share,
per image (cut each box as a view, read its pointer, strides and size: the code as of 6f3c0d6, copied below)
against per batch (ecanet.gpu_crop.crop_table_boxes). 180 images (share 0.7 of 256) of 300-500 px a side,
uint8 (3, H, W) on the CPU (the table only reads metadata, so the device does not matter); median of 7 repeats
of 200 batches.  python docs/measurements/2026-11-21/input_pipeline/local_crop_table_cost.py"""
import os, platform, random, statistics, sys, time
sys.path.insert(0, os.getcwd())
import numpy as np
import torch
from ecanet.gpu_crop import TABLE_COLUMNS, crop_table_boxes
from ecanet.gpu_decode import cut_box

IMAGES, SIZE, REPEATS, BATCHES = 180, 224, 7, 200
rng = random.Random(0)
images = [torch.empty(3, rng.randint(300, 500), rng.randint(300, 500), dtype=torch.uint8) for _ in range(IMAGES)]
boxes = np.array([(rng.randint(0, 50), rng.randint(0, 50), rng.randint(100, 250), rng.randint(100, 250))
                  for _ in range(IMAGES)])
specs = np.array([(SIZE, SIZE, 0, 0)] * IMAGES)


def per_image():  # as of 6f3c0d6: cut_box per image, then crop_table's per-image loop
    views = [cut_box(image, tuple(box)) for image, box in zip(images, boxes.tolist())]
    rows = []
    for image, (out_h, out_w, offset_y, offset_x) in zip(views, specs.tolist()):
        if image.dim() != 3 or image.shape[0] != 3 or image.dtype != torch.uint8 or min(image.shape) == 0:
            raise ValueError("bad image")
        if image.device != views[0].device:
            raise ValueError("two devices")
        if not (0 <= offset_y <= out_h - SIZE and 0 <= offset_x <= out_w - SIZE):
            raise ValueError("window")
        rows.append([image.data_ptr(), *image.stride(), image.shape[1], image.shape[2], out_h, out_w, offset_y, offset_x])
    return torch.tensor(rows, dtype=torch.int64).view(-1, TABLE_COLUMNS)


def per_batch():
    return crop_table_boxes(images, boxes, specs, SIZE)


assert torch.equal(per_image(), per_batch())
print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
      f"Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}")
for name, fn in (("per image (as of 6f3c0d6)", per_image), ("per batch (crop_table_boxes)", per_batch)):
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for _ in range(BATCHES):
            fn()
        times.append((time.perf_counter() - t0) / BATCHES * 1e3)
    print(f"{name}: {statistics.median(times):.3f} ms per {IMAGES}-image batch (repeats {min(times):.3f}-{max(times):.3f})")
