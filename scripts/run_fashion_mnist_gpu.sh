#!/usr/bin/env bash
# Reproduce docs/results.md: ECA-ResNet-18, ResNet-18 and SE-ResNet-18 on Fashion-MNIST with
# configs/fashion_mnist.yaml, 3 seeds each, one run per GPU at a time, then the table and the plot.
#
#   bash scripts/run_fashion_mnist_gpu.sh [RUNS_DIR] [SOURCE_DIR]
#
# RUNS_DIR (default runs/fmnist) receives one run directory per (network, seed); SOURCE_DIR holds the four
# Fashion-MNIST idx files (default: Debian's /usr/share/datasets/fashion-mnist). Runs are spread over the
# visible GPUs (CUDA_VISIBLE_DEVICES), RUNS_PER_GPU at a time on each (default 1: each run has a GPU to
# itself), with the CPU cores shared out as data-loading workers.
set -euo pipefail
RUNS=${1:-runs/fmnist}
SOURCE=${2:-/usr/share/datasets/fashion-mnist}
PY=${PY:-python3}
ARCHS=${ARCHS:-"eca_resnet18 resnet18 se_resnet18"}
SEEDS=${SEEDS:-"0 1 2"}
EXTRA=${EXTRA:-}

"$PY" scripts/prepare_fashion_mnist.py --source "$SOURCE" --output data/fashion-mnist
gpus=$("$PY" -c "import torch; print(torch.cuda.device_count())")
[ "$gpus" -ge 1 ] || { echo "error: no CUDA GPU visible" >&2; exit 2; }
RUNS_PER_GPU=${RUNS_PER_GPU:-1}
mkdir -p "$RUNS"

jobs=()
for seed in $SEEDS; do for arch in $ARCHS; do jobs+=("$arch:$seed"); done; done
slots=$(( gpus * RUNS_PER_GPU ))
concurrent=$(( ${#jobs[@]} < slots ? ${#jobs[@]} : slots ))
workers=$(( $(nproc) / concurrent - 1 ))
slot=0
status=0
declare -a pids=()
for job in "${jobs[@]}"; do
    arch=${job%%:*}; seed=${job##*:}
    gpu=$(( slot % gpus ))
    # the oldest running job is on the GPU this one gets (round robin): wait for it
    if [ ${#pids[@]} -ge "$slots" ]; then wait "${pids[0]}" || status=1; pids=("${pids[@]:1}"); fi
    echo "==> $arch seed $seed on GPU $gpu"
    CUDA_VISIBLE_DEVICES=$gpu "$PY" main.py data/fashion-mnist --config configs/fashion_mnist.yaml \
        -a "$arch" --seed "$seed" --workers "$workers" --output "$RUNS/$arch-s$seed" $EXTRA \
        > "$RUNS/$arch-s$seed.log" 2>&1 &
    pids+=($!)
    slot=$(( slot + 1 ))
done
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
"$PY" scripts/summarize_runs.py "$RUNS"/*-s*/ --json "$RUNS/summary.json" | tee "$RUNS/results.md"
"$PY" scripts/plot_runs.py "$RUNS"/*-s*/ --output "$RUNS/val_top1.png" --title "Fashion-MNIST test top-1" || true
exit $status
