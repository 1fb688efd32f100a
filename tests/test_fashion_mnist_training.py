"""The demo's path end to end: prepare Fashion-MNIST (a subset), train a short run, beat chance clearly.

Uses Debian's dataset-fashion-mnist when it is installed; otherwise small idx files made here whose classes
differ by a visible pattern, so the test runs (and can fail) on every machine.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from ecanet.metrics import read_metrics
from conftest import ROOT, run_main
from test_prepare_fashion_mnist import prep, write_idx

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
TRAIN_SUBSET, VAL_SUBSET = 1500, 500
CHANCE_TOP1 = 10.0
REQUIRED_TOP1 = 40.0  # four times chance after two short epochs


def _patterned_source(folder: Path):
    """Idx files shaped like Fashion-MNIST: class c is a bright horizontal band at row 2c, plus noise."""
    rng = np.random.default_rng(0)
    splits, sha = [], {}
    for name, images_file, labels_file, count in (("train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                   TRAIN_SUBSET), ("val", "t10k-images-idx3-ubyte",
                                                                   "t10k-labels-idx1-ubyte", VAL_SUBSET)):
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = rng.integers(0, 90, (count, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 * c + 4: 2 * c + 7, 3:25] = 255
        for file, array in ((images_file, images), (labels_file, labels)):
            sha[file] = hashlib.sha256(write_idx(folder, file, array, compress=True)).hexdigest()
        splits.append(prep.Split(name, images_file, labels_file, count))
    spec = prep.DatasetSpec(splits=tuple(splits), classes=prep.FASHION_MNIST.classes, image_shape=(28, 28),
                            sha256=sha)
    return folder, spec


@pytest.mark.slow
def test_short_training_on_prepared_data_beats_chance(tmp_path):
    data = tmp_path / "fashion-mnist"
    if DEBIAN_DIR.is_dir():
        argv = ["--source", str(DEBIAN_DIR), "--limit-train", str(TRAIN_SUBSET), "--limit-val", str(VAL_SUBSET)]
        assert prep.main([*argv, "--output", str(data), "--workers", "1"]) == 0
    else:
        source, spec = _patterned_source(tmp_path)
        assert prep.main(["--source", str(source), "--output", str(data), "--workers", "1"], spec=spec) == 0
    out = tmp_path / "run"
    assert run_main([data, "--config", ROOT / "configs" / "fashion_mnist_cpu.yaml", "--epochs", "2", "-b", "64",
                     "-j", "0", "--warmup-epochs", "0.5", "--output", out]) == 0
    epochs = read_metrics(out / "metrics.jsonl")
    assert len(epochs) == 2
    assert epochs[-1]["val_top1"] > REQUIRED_TOP1 > CHANCE_TOP1
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
