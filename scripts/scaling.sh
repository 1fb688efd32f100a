#!/usr/bin/env bash
# Multi-GPU scaling of main.py: per-GPU training images/s of eca_resnet50 (k3557,
# bf16, channels_last, fused ECA where available) with 1, 2, 4, ... processes of torchrun on one host,
# on synthetic data and on a JPEG ImageFolder (CPU decoding and GPU decoding).
#
#   bash scripts/scaling.sh JPEG_DIR [OUT_DIR]          # JPEG_DIR from scripts/make_jpeg_folder.py
#
# Each configuration trains 2 epochs of STEPS steps per GPU; the figure is the second epoch's (the first
# includes cuDNN autotuning and worker start-up). Efficiency = per-GPU img/s at N / per-GPU img/s at N=1.
set -uo pipefail
JPEGS=${1:?usage: scaling.sh JPEG_DIR [OUT_DIR]}
OUT=${2:-runs/scaling}
PY=${PY:-python3}
STEPS=${STEPS:-60}
BATCH=${BATCH:-256}
NS=${NS:-"1 2 4"}
MODES=${MODES:-"synthetic gpu cpu"}
EXTRA=${EXTRA:-}
gpus=$("$PY" -c "import torch; print(torch.cuda.device_count())")
mkdir -p "$OUT"
port=29600
for mode in $MODES; do
    for n in $NS; do
        [ "$n" -le "$gpus" ] || continue
        workers=$(( $(nproc) / n - 1 )); [ "$workers" -gt 16 ] && workers=16
        case $mode in
            synthetic) data=(--synthetic --synthetic-size $(( STEPS * BATCH * n )) --num-classes 1000) ;;
            gpu) data=("$JPEGS" --decode gpu) ;;
            cpu) data=("$JPEGS" --decode cpu) ;;
        esac
        port=$(( port + 1 ))
        echo "==> $mode, $n GPU(s)"
        CUDA_VISIBLE_DEVICES=$(seq -s, 0 $(( n - 1 ))) timeout 300 "$PY" -m torch.distributed.run \
            --nproc_per_node "$n" --master_port "$port" main.py "${data[@]}" -a eca_resnet50 --ksize 3557 \
            -b "$BATCH" --amp bf16 --channels-last --epochs 2 --workers "$workers" -p 20 \
            --output "$OUT/$mode-n$n" $EXTRA > "$OUT/$mode-n$n.log" 2>&1 || echo "   failed: see $OUT/$mode-n$n.log"
    done
done
"$PY" - "$OUT" <<'PYEOF'
import sys
from pathlib import Path
from ecanet.metrics import read_metrics
out = Path(sys.argv[1])
rows = {}
for run in sorted(out.glob("*-n*")):
    if not (run / "metrics.jsonl").is_file():
        continue
    mode, n = run.name.rsplit("-n", 1)
    epochs = read_metrics(run / "metrics.jsonl")
    if epochs:
        rows.setdefault(mode, {})[int(n)] = epochs[-1]
print("| data | GPUs | img/s per GPU | img/s total | scaling efficiency | peak memory |")
print("|---|---|---|---|---|---|")
for mode, by_n in rows.items():
    base = by_n.get(1, {}).get("images_per_s_per_gpu")
    for n, e in sorted(by_n.items()):
        eff = f"{e['images_per_s_per_gpu'] / base:.3f}" if base else "-"
        print(f"| {mode} | {n} | {e['images_per_s_per_gpu']:,.0f} | {e['images_per_s']:,.0f} | {eff} | "
              f"{e.get('peak_memory_gib', 0):.1f} GiB |")
PYEOF
