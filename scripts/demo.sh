#!/usr/bin/env bash
# `make demo`: ECA-ResNet-18 trained on real images (Fashion-MNIST) on the CPU, in a few minutes.
#   1. the data: Debian's dataset-fashion-mnist package (installed here if we can, else we say how)
#   2. scripts/prepare_fashion_mnist.py -> data/fashion-mnist-demo/{train,val}/<class>/*.png (idempotent):
#      the first DEMO_TRAIN_IMAGES of the 60,000 training images, all 10,000 test images
#   3. main.py with configs/fashion_mnist_cpu.yaml: one epoch on those images, evaluation on the 10,000
# Sized for the slowest 2-core machines: the full training set took 16 min on an AVX2-only one (docs/results.md).
set -euo pipefail
PY=${PY:-.venv/bin/python}
SOURCE=/usr/share/datasets/fashion-mnist
PACKAGE=dataset-fashion-mnist
DEMO_TRAIN_IMAGES=${DEMO_TRAIN_IMAGES:-20000}
DATA=data/fashion-mnist-demo

if [ ! -d "$SOURCE" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "==> installing Debian's $PACKAGE (the original Fashion-MNIST files)"
        apt-get install -y -q "$PACKAGE" >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q "$PACKAGE" >/dev/null; }
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null && command -v apt-get >/dev/null; then
        echo "==> installing Debian's $PACKAGE with sudo"
        sudo apt-get install -y -q "$PACKAGE" >/dev/null
    else
        echo "error: the Fashion-MNIST files are not installed ($SOURCE is missing)." >&2
        echo "       Run: sudo apt-get install $PACKAGE   (Debian/Ubuntu), then 'make demo' again;" >&2
        echo "       or download the four *-ubyte.gz files from https://github.com/zalandoresearch/fashion-mnist" >&2
        echo "       into a folder and run: $PY scripts/prepare_fashion_mnist.py --source FOLDER" >&2
        exit 2
    fi
fi

"$PY" scripts/prepare_fashion_mnist.py --limit-train "$DEMO_TRAIN_IMAGES" --output "$DATA"
RUN_DIR=runs/demo-$(date +%Y%m%d-%H%M%S)
echo "==> training ECA-ResNet-18 on the CPU (configs/fashion_mnist_cpu.yaml), run directory $RUN_DIR"
start=$(date +%s)
"$PY" main.py "$DATA" --config configs/fashion_mnist_cpu.yaml --output "$RUN_DIR"
echo "==> demo finished in $(( $(date +%s) - start )) s of training and evaluation"
