#!/usr/bin/env bash
# main.py on a CUDA machine in a few minutes: the GPU-decode tests, short runs with --decode gpu and cpu on
# a generated JPEG folder, and the first epochs of the Fashion-MNIST recipe (a timing and recipe check).
#
#   OUT=/some/dir bash scripts/gpu_smoke.sh [FASHION_MNIST_SOURCE_DIR]
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-gpu_smoke_out}
PY=${PYTHON:-python3}
FMNIST=${1:-/usr/share/datasets/fashion-mnist}
EPOCHS=${FMNIST_EPOCHS:-3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

echo "=== GPU decode tests"
"$PY" -m pytest -q -p no:cacheprovider tests/test_gpu_decode.py 2>&1 | tail -n 3
echo "=== JPEG folder"
[ -d /tmp/jpegs ] || "$PY" scripts/make_jpeg_folder.py /tmp/jpegs --classes 20 --train-per-class 100 --val-per-class 10
for decode in gpu cpu; do
    echo "=== main.py --decode $decode"
    "$PY" main.py /tmp/jpegs -a eca_resnet50 --ksize 3557 -b 128 --amp bf16 --channels-last --epochs 2 \
        --decode "$decode" -p 5 --output "$OUT/jpeg-$decode" 2>&1 | grep -E "epoch [0-9]+/[0-9]+:|error|Error" || true
done
echo "=== Fashion-MNIST, ECA-ResNet-18, $EPOCHS epochs of configs/fashion_mnist.yaml"
"$PY" scripts/prepare_fashion_mnist.py --source "$FMNIST" --output data/fashion-mnist 2>&1 | tail -n 1
"$PY" main.py data/fashion-mnist --config configs/fashion_mnist.yaml --epochs "$EPOCHS" --seed 0 \
    --workers $(( $(nproc) - 1 )) --output "$OUT/fmnist" 2>&1 | grep -E "epoch [0-9]+/[0-9]+:|error|Error|\|"
