#!/usr/bin/env bash
# Create (or repair) the project's virtual environment: `bash scripts/setup_venv.sh [VENV]`.
#
# Called by `make test` and `make demo`; safe to re-run. It installs requirements.txt (the project itself,
# editable, with its extras), then proves that torch and torchvision are a matching pair.
#
# The trap it handles: PyPI's torchvision wheels only import next to the torch build they were compiled
# against (the CUDA one). When a CPU-only torch is already installed (e.g. from a local wheel folder that
# pip.conf's find-links points at), pip keeps it and picks an older torchvision whose `import` then
# fails with "operator torchvision::nms does not exist". We detect that and reinstall the exact torch
# version torchvision asks for from the package index, ignoring local wheel folders. The CUDA build
# runs fine on a machine without a GPU.
set -euo pipefail

VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}
MIN_PYTHON="3.10"

if ! "$PYTHON" -c "import sys; sys.exit(sys.version_info < (3, 10))" 2>/dev/null; then
    echo "error: ecanet needs Python >= $MIN_PYTHON; '$PYTHON' is $("$PYTHON" --version 2>&1)." >&2
    echo "       Set PYTHON=/path/to/python3.1x and run again." >&2
    exit 2
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
VPY="$VENV/bin/python"

echo "==> installing requirements.txt into $VENV (the first time downloads torch: a few GB, 1-2 minutes)"
"$VPY" -m pip install --disable-pip-version-check -q -r requirements.txt

check_pair() {
    "$VPY" - <<'EOF'
import torch, torchvision
torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)  # fails when the pair does not match
print(f"==> torch {torch.__version__}, torchvision {torchvision.__version__}: a matching pair")
EOF
}

if ! check_pair 2>/dev/null; then
    wanted=$("$VPY" - <<'EOF'
import re
from importlib.metadata import requires
for req in requires("torchvision") or []:
    name = re.split(r"[ =<>!~;\[]", req, maxsplit=1)[0]
    if name == "torch" and "extra" not in req:
        print(req.split(";")[0].replace(" ", ""))
EOF
)
    echo "==> torch and torchvision do not match; reinstalling '${wanted:-torch}' from the package index"
    # Ignore pip.conf and PIP_FIND_LINKS for this one install, so a local CPU-only wheel cannot win.
    env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null \
        "$VPY" -m pip install --disable-pip-version-check -q --force-reinstall "${wanted:-torch}"
    if ! check_pair; then
        echo "error: torch and torchvision in $VENV still do not import together." >&2
        echo "       Remove $VENV and run 'make test' again; if it persists, install a matching pair by hand:" >&2
        echo "       $VPY -m pip install 'torch==X' 'torchvision==Y' (see https://pytorch.org/get-started/previous-versions/)." >&2
        exit 2
    fi
fi
touch "$VENV/.ecanet-installed"
