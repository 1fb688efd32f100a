#!/usr/bin/env bash
# Detection demo: Mask R-CNN with an ECA-ResNet-50 and with a ResNet-50 backbone on the Fashion-MNIST detection
# toy set, both from scratch (no ImageNet weights), same seed, schedule and data; then a CSV of their COCO AP.
#
#   bash scripts/det_demo.sh
# On one GPU both runs take about 6 minutes (an H200, 2026-12-03, docs/detection.md); without a GPU it is a smoke
# run of about a minute (8 images, 1 epoch, 128 px).
#
#   1. scripts/make_fashion_detection.py -> $DET_DEMO_DATA (skipped when it exists): IMAGES training canvases
#      of SIZE x SIZE pixels, IMAGES / 6 validation canvases (Debian's dataset-fashion-mnist package)
#   2. det_main.py with configs/detection/mask_rcnn_eca_resnet50.yaml (the paper's Mask R-CNN row: ECA k 3377),
#      for both backbones: BatchNorm trained with the network and every stage trainable, as training from
#      scratch needs (--norm bn --trainable-layers 5); images resized to SIZE; the 1x schedule's shape
#      (x0.1 after 2/3 and 11/12 of the epochs), warm-up 100 steps, lr 0.01 per 8 images scaled to the batch
#   3. $DET_DEMO_CSV: backbone, seed, epochs, images, box AP, AP50, AP75, mask AP and the seconds each run
#      trained and evaluated on its device; by default results/fashion_detection.csv on a GPU, and on the CPU
#      fashion_detection.csv in the runs directory (results/ keeps the GPU table)
# Each run is resumable: rerunning the script continues an interrupted run and skips finished ones.
# Settings (environment): DET_DEMO_IMAGES, DET_DEMO_EPOCHS, DET_DEMO_SIZE, DET_DEMO_BATCH, DET_DEMO_SEED,
# DET_DEMO_DATA, DET_DEMO_RUNS, DET_DEMO_CSV, PY.
set -euo pipefail
PY=${PY:-.venv/bin/python}

if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    DEVICE=cuda; AMP=bf16
    # 2.5-3.3 minutes per backbone on one H200: 4 epochs of 3,000 canvases at 256 px, 2 evaluations.
    IMAGES=${DET_DEMO_IMAGES:-3000}; EPOCHS=${DET_DEMO_EPOCHS:-4}; SIZE=${DET_DEMO_SIZE:-256}
    BATCH=${DET_DEMO_BATCH:-16}; EVAL_EVERY=2
    RESULTS=results/fashion_detection.csv   # the table of docs/detection.md
else
    DEVICE=cpu; AMP=off  # bf16 is emulated, and slow, on most CPUs
    IMAGES=${DET_DEMO_IMAGES:-8}; EPOCHS=${DET_DEMO_EPOCHS:-1}; SIZE=${DET_DEMO_SIZE:-128}
    BATCH=${DET_DEMO_BATCH:-4}; EVAL_EVERY=1
    RESULTS=""   # a smoke run's table stays in its runs directory, beside the runs
fi
SEED=${DET_DEMO_SEED:-0}
CLIP=${DET_DEMO_CLIP:-10}  # gradient-norm clipping: from scratch, lr 0.02 can blow the mask loss up without it
VAL_IMAGES=$(( IMAGES / 6 > 4 ? IMAGES / 6 : 4 ))
DATA=${DET_DEMO_DATA:-data/fashion-detection-${IMAGES}-${SIZE}px}
RUNS=${DET_DEMO_RUNS:-runs/det-demo/${IMAGES}img-${SIZE}px-${EPOCHS}ep}
CSV=${DET_DEMO_CSV:-${RESULTS:-$RUNS/fashion_detection.csv}}
# The 1x schedule's milestones (epochs 8 and 11 of 12) scaled to EPOCHS; a milestone past the end never applies.
STEP1=$(( EPOCHS * 2 / 3 > 1 ? EPOCHS * 2 / 3 : 1 ))
STEP2=$(( EPOCHS * 11 / 12 > STEP1 ? EPOCHS * 11 / 12 : STEP1 + 1 ))

if [ ! -f "$DATA/annotations/instances_val.json" ]; then
    echo "==> building the toy set: $IMAGES + $VAL_IMAGES canvases of ${SIZE}px in $DATA"
    # items 40-120 px on 256 px canvases, scaled with the canvas
    "$PY" scripts/make_fashion_detection.py --output "$DATA" --train-images "$IMAGES" --val-images "$VAL_IMAGES" \
        --canvas-size "$SIZE" --min-item-px $(( SIZE * 40 / 256 )) --max-item-px $(( SIZE * 120 / 256 )) --force
fi

for arch in eca_resnet50 resnet50; do
    echo "==> Mask R-CNN, $arch backbone from scratch, seed $SEED, $EPOCHS epochs on $DEVICE: $RUNS/$arch-s$SEED"
    "$PY" det_main.py "$DATA" --config configs/detection/mask_rcnn_eca_resnet50.yaml --arch "$arch" \
        --num-classes 11 --norm bn --trainable-layers 5 --min-size "$SIZE" --max-size "$SIZE" \
        --epochs "$EPOCHS" --lr-steps "$STEP1" "$STEP2" --warmup-iters 100 --clip-grad-norm "$CLIP" -b "$BATCH" --eval-every "$EVAL_EVERY" \
        --seed "$SEED" --device "$DEVICE" --amp "$AMP" --output "$RUNS/$arch-s$SEED" --resume auto
done

mkdir -p "$(dirname "$CSV")"
"$PY" - "$CSV" "$DEVICE" "$RUNS/eca_resnet50-s$SEED" "$RUNS/resnet50-s$SEED" <<'EOF'
import csv, sys
from pathlib import Path

import yaml

from ecanet.metrics import read_metrics

csv_path, device, run_dirs = sys.argv[1], sys.argv[2], sys.argv[3:]
columns = ["backbone", "seed", "epochs", "images", "box_AP", "box_AP50", "box_AP75", "mask_AP", "wall_seconds", "device"]
with open(csv_path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    for run_dir in map(Path, run_dirs):
        summary = read_metrics(run_dir / "metrics.jsonl", "summary")[-1]
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        number = lambda key: "" if summary.get(key) is None else f"{summary[key]:.2f}"
        writer.writerow([summary["arch"], config["seed"], summary["epochs"], summary["images"], number("box_AP"),
                         number("box_AP50"), number("box_AP75"), number("mask_AP"), f"{summary['wall_time_s']:.0f}",
                         device])
print(Path(csv_path).read_text(), end="")
EOF
echo "==> wrote $CSV"
