#!/usr/bin/env bash
# `make demo`: ECA-ResNet-18 trained on real images (Fashion-MNIST) on the CPU, in a few minutes.
#   1. the data: Debian's dataset-fashion-mnist package (installed here if we can, else we say how), or the
#      four original *-ubyte.gz files in FASHION_MNIST_SOURCE=FOLDER
#   2. scripts/prepare_fashion_mnist.py -> data/fashion-mnist-demo/{train,val}/<class>/*.png (idempotent):
#      the first DEMO_TRAIN_IMAGES of the 60,000 training images, all 10,000 test images
#   3. main.py with configs/fashion_mnist_cpu.yaml: one epoch on those images, evaluation on the 10,000
# Sized for the slowest 2-core machines: the full training set took 16 min on an AVX2-only one (docs/results.md).
set -euo pipefail
PY=${PY:-.venv/bin/python}
SOURCE=${FASHION_MNIST_SOURCE:-/usr/share/datasets/fashion-mnist}
PACKAGE=dataset-fashion-mnist
DEMO_TRAIN_IMAGES=${DEMO_TRAIN_IMAGES:-20000}
DATA=data/fashion-mnist-demo

no_data() {   # what to do without the files; exit 2, as for any input the user can fix
    if [ -n "${FASHION_MNIST_SOURCE:-}" ]; then
        echo "error: FASHION_MNIST_SOURCE=$SOURCE is not a folder. Put the four *-ubyte.gz files of" >&2
        echo "       https://github.com/zalandoresearch/fashion-mnist in a folder and name it there." >&2
        exit 2
    fi
    echo "error: the Fashion-MNIST files are not installed ($SOURCE is missing)." >&2
    echo "       Run: sudo apt-get install $PACKAGE   (Debian/Ubuntu), then 'make demo' again;" >&2
    echo "       or download the four *-ubyte.gz files from https://github.com/zalandoresearch/fashion-mnist" >&2
    echo "       into a folder and run: FASHION_MNIST_SOURCE=FOLDER make demo" >&2
    exit 2
}

install_package() {   # apt-get (with sudo when given) install, once more after an update; apt's words if it fails
    local said
    said=$("$@" apt-get install -y -q "$PACKAGE" 2>&1) && return 0
    said=$("$@" apt-get update -q 2>&1 && "$@" apt-get install -y -q "$PACKAGE" 2>&1) && return 0
    echo "$said" | tail -n 3 >&2
    return 1
}

if [ ! -d "$SOURCE" ]; then
    [ -z "${FASHION_MNIST_SOURCE:-}" ] || no_data   # a folder the user named: nothing to install
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "==> installing Debian's $PACKAGE (the original Fashion-MNIST files)"
        install_package || { echo "error: apt-get could not install $PACKAGE." >&2; no_data; }
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null && command -v apt-get >/dev/null; then
        echo "==> installing Debian's $PACKAGE with sudo"
        install_package sudo || { echo "error: apt-get could not install $PACKAGE." >&2; no_data; }
    else
        no_data
    fi
fi

"$PY" scripts/prepare_fashion_mnist.py --source "$SOURCE" --limit-train "$DEMO_TRAIN_IMAGES" --output "$DATA"
RUN_DIR=runs/demo-$(date +%Y%m%d-%H%M%S)
echo "==> training ECA-ResNet-18 on the CPU (configs/fashion_mnist_cpu.yaml), run directory $RUN_DIR"
start=$(date +%s)
"$PY" main.py "$DATA" --config configs/fashion_mnist_cpu.yaml --output "$RUN_DIR"
echo "==> demo finished in $(( $(date +%s) - start )) s of training and evaluation"
