"""scripts/prepare_fashion_mnist.py on small idx files made here: counts, pixels, idempotence, errors.

The script runs in-process through ``main(argv, spec)`` with a :class:`DatasetSpec` that describes the small
files (their counts and SHA-256s), so the checksum check runs as it does on the real data. One test starts
it as a process, for the message a user without the data sees. The last tests check the pinned checksums
against the real files and are skipped where Debian's package is not installed.
"""
from __future__ import annotations

import gzip
import hashlib
import logging
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, load_script

SCRIPT = ROOT / "scripts" / "prepare_fashion_mnist.py"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

TRAIN_COUNT = 37   # small, and not a multiple of anything the script batches by
VAL_COUNT = 13
ROWS, COLS = 28, 28




prep = load_script("prepare_fashion_mnist")
CLASSES = prep.FASHION_MNIST.classes


def idx_bytes(array: np.ndarray) -> bytes:
    """An idx file: magic 0x000008NN (unsigned bytes, NN dimensions), the sizes, the data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(folder: Path, name: str, array: np.ndarray, compress: bool) -> bytes:
    """Write ``name.gz`` or ``name``; returns the idx payload (what the SHA-256 covers)."""
    payload = idx_bytes(array)
    if compress:
        (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
    else:
        (folder / name).write_bytes(payload)
    return payload


class Source:
    """Small Fashion-MNIST-shaped files: train gzipped, val plain; known pixels and labels."""

    def __init__(self, folder: Path):
        rng = np.random.default_rng(0)
        self.folder = folder
        self.images, self.labels, sha = {}, {}, {}
        layout = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", TRAIN_COUNT, True),
                  "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", VAL_COUNT, False)}
        splits = []
        for split, (images_name, labels_name, count, compress) in layout.items():
            images = rng.integers(0, 256, size=(count, ROWS, COLS), dtype=np.uint8)
            labels = (np.arange(count) * 7 + 3) % len(CLASSES)  # every class, uneven counts
            self.images[split], self.labels[split] = images, labels.astype(np.uint8)
            sha[images_name] = hashlib.sha256(write_idx(folder, images_name, images, compress)).hexdigest()
            sha[labels_name] = hashlib.sha256(write_idx(folder, labels_name, self.labels[split],
                                                        compress)).hexdigest()
            splits.append(prep.Split(split, images_name, labels_name, count))
        self.spec = prep.DatasetSpec(splits=tuple(splits), classes=CLASSES, image_shape=(ROWS, COLS),
                                     sha256=sha)


@pytest.fixture
def source(tmp_path: Path) -> Source:
    folder = tmp_path / "src"
    folder.mkdir()
    return Source(folder)


def run(source: Source, output: Path, *extra: str) -> int:
    return prep.main(["--source", str(source.folder), "--output", str(output), "--workers", "1", *extra],
                     spec=source.spec)


def png_files(output: Path) -> dict[Path, int]:
    """Every PNG under output with its mtime in nanoseconds."""
    return {p: p.stat().st_mtime_ns for p in sorted(output.rglob("*.png"))}


def check_imagefolder(source: Source, output: Path, limits: dict[str, int] | None = None) -> None:
    """Per-class counts as the labels say, and every image's pixels exactly those of the idx file."""
    limits = limits or {}
    for split in ("train", "val"):
        n = limits.get(split, len(source.labels[split]))
        labels, images = source.labels[split][:n], source.images[split][:n]
        expected = np.bincount(labels, minlength=len(CLASSES))
        for label, name in enumerate(CLASSES):
            files = sorted((output / split / name).glob("*.png"))
            assert len(files) == expected[label], (split, name)
            for path in files:
                index = int(path.stem)
                assert labels[index] == label
                with Image.open(path) as image:
                    assert image.mode == "L"
                    np.testing.assert_array_equal(np.asarray(image), images[index])


# ------------------------------------------------------------------------------------------- the output

def test_writes_an_imagefolder_with_exact_pixels_and_a_marker(source: Source, tmp_path: Path):
    output = tmp_path / "out"
    assert run(source, output) == 0
    check_imagefolder(source, output)
    marker = prep.read_marker(output)
    assert marker["counts"]["train"] == {name: int(c) for name, c in
                                         zip(CLASSES, np.bincount(source.labels["train"], minlength=10))}
    assert marker["limits"] == {"train": None, "val": None}
    assert {k: v["sha256"] for k, v in marker["source_files"].items()} == source.spec.sha256
    assert marker["classes"]["T-shirt_top"] == 0 and marker["classes"]["Ankle_boot"] == 9
    assert not list(tmp_path.glob(".out.*")), "temporary folders left behind"


def test_png_names_are_zero_padded_indices(source: Source, tmp_path: Path):
    assert run(source, tmp_path / "out") == 0
    names = {p.name for p in (tmp_path / "out" / "train").rglob("*.png")}
    assert names == {f"{i:02d}.png" for i in range(TRAIN_COUNT)}


def test_a_pool_of_workers_writes_the_same_images(source: Source, tmp_path: Path):
    output = tmp_path / "out"
    assert prep.main(["--source", str(source.folder), "--output", str(output), "--workers", "2"],
                     spec=source.spec) == 0
    check_imagefolder(source, output)


def test_torchvision_imagefolder_reads_it_as_rgb(source: Source, tmp_path: Path):
    datasets = pytest.importorskip("torchvision.datasets")
    assert run(source, tmp_path / "out") == 0
    folder = datasets.ImageFolder(str(tmp_path / "out" / "val"))
    assert len(folder) == VAL_COUNT and sorted(folder.classes) == sorted(CLASSES)
    image, target = folder[0]
    assert image.mode == "RGB" and image.size == (COLS, ROWS)
    index = int(Path(folder.samples[0][0]).stem)
    assert folder.classes[target] == CLASSES[source.labels["val"][index]]
    np.testing.assert_array_equal(np.asarray(image)[..., 1], source.images["val"][index])


# -------------------------------------------------------------------------------------- idempotence

def test_second_run_rewrites_nothing_and_needs_no_source(source: Source, tmp_path: Path, caplog):
    caplog.set_level(logging.INFO, logger="prepare_fashion_mnist")
    output = tmp_path / "out"
    assert run(source, output) == 0
    before = png_files(output)
    marker_mtime = (output / prep.MARKER_NAME).stat().st_mtime_ns
    for path in list(source.folder.iterdir()):  # the fast path must not even read the source
        path.unlink()
    caplog.clear()
    assert run(source, output) == 0
    assert "already prepared" in caplog.text
    assert png_files(output) == before
    assert (output / prep.MARKER_NAME).stat().st_mtime_ns == marker_mtime


def test_force_rebuilds(source: Source, tmp_path: Path):
    output = tmp_path / "out"
    assert run(source, output) == 0
    inodes = {p: p.stat().st_ino for p in png_files(output)}
    assert run(source, output, "--force") == 0
    assert {p: p.stat().st_ino for p in png_files(output)}.keys() == inodes.keys()
    assert all(p.stat().st_ino != ino for p, ino in inodes.items()), "--force must write new files"
    check_imagefolder(source, output)


def test_limits_are_recorded_and_a_different_request_rebuilds(source: Source, tmp_path: Path):
    output = tmp_path / "out"
    assert run(source, output, "--limit-train", "10", "--limit-val", "4") == 0
    check_imagefolder(source, output, {"train": 10, "val": 4})
    assert prep.read_marker(output)["limits"] == {"train": 10, "val": 4}
    assert run(source, output) == 0  # no limits now: the limited folder is ours and out of date
    check_imagefolder(source, output)
    assert prep.read_marker(output)["limits"] == {"train": None, "val": None}


def test_missing_images_in_a_prepared_folder_trigger_a_rebuild(source: Source, tmp_path: Path):
    output = tmp_path / "out"
    assert run(source, output) == 0
    next(output.rglob("*.png")).unlink()
    assert run(source, output) == 0
    check_imagefolder(source, output)


# ----------------------------------------------------------------------------------- crash safety

def test_an_interrupted_run_leaves_no_folder_that_looks_prepared(source: Source, tmp_path: Path,
                                                                monkeypatch):
    output = tmp_path / "out"

    def crash(task):
        raise KeyboardInterrupt

    monkeypatch.setattr(prep, "write_pngs", crash)
    with pytest.raises(KeyboardInterrupt):
        run(source, output)
    assert not output.exists()
    assert not list(tmp_path.glob(".out.*"))


def test_temporary_folders_of_dead_runs_are_removed(source: Source, tmp_path: Path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = [tmp_path / f".out.{kind}-{int(dead.stdout)}" for kind in ("partial", "old")]
    for folder in stale:
        (folder / "train").mkdir(parents=True)
    assert run(source, tmp_path / "out") == 0
    assert not any(folder.exists() for folder in stale)


def test_a_folder_it_did_not_make_is_not_replaced_without_force(source: Source, tmp_path: Path, caplog):
    output = tmp_path / "out"
    output.mkdir()
    (output / "precious.txt").write_text("keep me")
    assert run(source, output) == 2
    assert "--force" in caplog.text and (output / "precious.txt").exists()
    assert run(source, output, "--force") == 0
    check_imagefolder(source, output)


# ----------------------------------------------------------------------------------------- bad input

def flip_a_pixel(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def break_gzip(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:20] + bytes(len(data) - 20))


def swap_in_labels(path: Path) -> None:
    path.write_bytes((path.parent / "t10k-labels-idx1-ubyte").read_bytes())


@pytest.mark.parametrize("damage, file_name, words", [
    (flip_a_pixel, "t10k-images-idx3-ubyte", "SHA-256"),
    (truncate, "t10k-images-idx3-ubyte", "truncated"),
    (break_gzip, "train-images-idx3-ubyte.gz", "not a valid gzip file"),
    (swap_in_labels, "t10k-images-idx3-ubyte", "magic number"),
], ids=["changed-pixel", "truncated", "bad-gzip", "wrong-magic"])
def test_damaged_files_exit_2_with_a_message(source: Source, tmp_path: Path, caplog, damage, file_name,
                                             words):
    damage(source.folder / file_name)
    output = tmp_path / "out"
    assert run(source, output) == 2
    assert words in caplog.text and file_name in caplog.text
    assert not output.exists()


def test_wrong_counts_exit_2(source: Source, tmp_path: Path, caplog):
    train, val = source.spec.splits
    source.spec = prep.DatasetSpec(splits=(train, prep.Split("val", val.images_file, val.labels_file,
                                                             VAL_COUNT + 1)),
                                   classes=CLASSES, image_shape=(ROWS, COLS), sha256=source.spec.sha256)
    assert run(source, tmp_path / "out") == 2
    assert f"holds {VAL_COUNT} items, expected {VAL_COUNT + 1}" in caplog.text


def test_missing_data_says_how_to_install_it_without_a_traceback(tmp_path: Path):
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    result = subprocess.run([sys.executable, str(SCRIPT), "--source", str(empty), "--output",
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "apt-get install dataset-fashion-mnist" in result.stderr
    assert "--source" in result.stderr and "train-images-idx3-ubyte.gz" in result.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------- the pinned checksums, for real

def restore_publisher_gzip_header(data: bytes, name: str, mtime: int) -> bytes:
    """Debian's strip-nondeterminism dropped the file name and replaced the time stamp in each gzip header
    (it leaves the compressed stream alone); put the publisher's back."""
    assert data[:4] == b"\x1f\x8b\x08\x00", "expected a gzip header without a file name"
    return data[:3] + b"\x08" + struct.pack("<I", mtime) + data[8:10] + name.encode() + b"\0" + data[10:]


# The gzip time stamps of the publisher's files (2017-08-31 10:50:06 and 10:50:27 UTC), found by search:
# with them, Debian's files have exactly the MD5s the upstream README publishes.
PUBLISHER_GZIP_MTIME = {"train-images-idx3-ubyte": 1504176606, "train-labels-idx1-ubyte": 1504176606,
                        "t10k-images-idx3-ubyte": 1504176627, "t10k-labels-idx1-ubyte": 1504176627}


@pytest.mark.skipif(not DEBIAN_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
@pytest.mark.parametrize("name", sorted(prep.FASHION_MNIST.sha256))
def test_installed_files_match_the_pinned_and_the_published_checksums(name: str):
    gz = DEBIAN_DIR / f"{name}.gz"
    if not gz.is_file():
        pytest.skip(f"{gz} is not there (a plain file?)")
    data = gz.read_bytes()
    assert hashlib.sha256(gzip.decompress(data)).hexdigest() == prep.FASHION_MNIST.sha256[name]
    if hashlib.md5(data).hexdigest() != prep.FASHION_MNIST.publisher_gzip_md5[name]:
        data = restore_publisher_gzip_header(data, name, PUBLISHER_GZIP_MTIME[name])
    assert hashlib.md5(data).hexdigest() == prep.FASHION_MNIST.publisher_gzip_md5[name]
