#!/usr/bin/env python3
"""Turn the original Fashion-MNIST idx files into an ImageFolder that ``main.py`` reads like ImageNet.

    sudo apt-get install dataset-fashion-mnist          # once: the four files under /usr/share/datasets
    .venv/bin/python scripts/prepare_fashion_mnist.py   # data/fashion-mnist/{train,val}/<class>/<index>.png

Input: the four idx files published by Zalando Research (60,000 training and 10,000 test images, 28x28
grayscale, 10 classes), gzip-compressed or plain, in ``--source`` (default: where Debian's package
``dataset-fashion-mnist`` installs them). Every file is checked before anything is written: the idx header
(magic number, dimensions, exact size), the image counts, the label range, and the SHA-256 of its
decompressed content against the values pinned in :data:`FASHION_MNIST`.

Output: one grayscale PNG per image, ``<output>/train/<class>/<index>.png`` from the training files and
``<output>/val/<class>/<index>.png`` from the test files; ``<index>`` is the image's position in its idx
file. torchvision's ImageFolder loader converts them to 3-channel RGB. ImageFolder numbers the classes in
alphabetical order of the folder names, so its class indices differ from the Fashion-MNIST label ids; the
marker file records the original ids.

Idempotent and crash-safe: everything is written into a temporary sibling folder that is renamed into place
only when complete, with a marker ``<output>/.prepared.json`` (source checksums, limits, counts). A second
run finds the marker, checks it against the request and the files on disk, and exits at once; ``--force``
rebuilds. An interrupted run leaves no folder that looks prepared.

Exit codes: 0 done (or already prepared), 2 bad input (missing, corrupt or unexpected files; an output
folder that is not ours), 1 an unexpected error (traceback).
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

try:
    from tqdm import tqdm
except ImportError:  # progress bars are a nicety; the project's requirements include tqdm
    tqdm = None

log = logging.getLogger("prepare_fashion_mnist")

EXIT_OK = 0
EXIT_USAGE = 2  # bad input the user can fix; the same code as ecanet.errors.EXIT_USAGE and argparse

DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_OUTPUT = Path("data/fashion-mnist")
MARKER_NAME = ".prepared.json"
MARKER_FORMAT = 1
GZIP_MAGIC = b"\x1f\x8b"
UPSTREAM_URL = "https://github.com/zalandoresearch/fashion-mnist"  # files under data/fashion/

# idx format (http://yann.lecun.com/exdb/mnist/): a big-endian uint32 magic number 0x000008NN, where
# 0x08 says "unsigned byte" and NN is the number of dimensions, then NN big-endian uint32 sizes, then the
# data, row-major. Labels are idx1 (one dimension), images idx3 (count, rows, columns).
IDX_UBYTE_TYPE = 0x08
IDX_HEADER_BYTES_PER_FIELD = 4
LABELS_NDIM = 1
IMAGES_NDIM = 3

# zlib level of the PNGs. For 28x28 images it is irrelevant: levels 1, 6 and 9 all took 160-330 us per
# image and gave 507-527 bytes (measured 2026-11-21 on a 2-core machine); the time goes to
# PIL's per-file overhead and the file system, hence the process pool. 6 is PIL's own default.
PNG_COMPRESS_LEVEL = 6
IMAGES_PER_TASK = 1000     # images one worker writes per task: big enough to amortise pickling


@dataclass(frozen=True)
class Split:
    """One output folder and the pair of idx files it comes from."""

    name: str           # output folder name: "train" or "val"
    images_file: str    # idx file name without ".gz"
    labels_file: str
    count: int          # images (= labels) the files must hold


@dataclass(frozen=True)
class DatasetSpec:
    """What the input must be. Tests build their own small spec; the real one is :data:`FASHION_MNIST`."""

    splits: tuple[Split, ...]
    classes: tuple[str, ...]            # folder name of each label id, in label-id order
    image_shape: tuple[int, int]        # (rows, columns)
    sha256: dict[str, str]              # idx file name -> SHA-256 of its decompressed bytes
    publisher_gzip_md5: dict[str, str] = dataclasses.field(default_factory=dict)  # informational

    def file_names(self) -> list[str]:
        return [name for split in self.splits for name in (split.images_file, split.labels_file)]


# SHA-256 of the *decompressed* idx files. Pinned on 2026-11-21 from Debian's dataset-fashion-mnist
# 0.0~git20200523.55506a9-1 (upstream commit 55506a9); hashing the decompressed bytes makes the check
# independent of the gzip wrapper, so plain files, Debian's files and the publisher's downloads all pass.
# Debian's .gz files are not byte-identical to the publisher's: debhelper's strip-nondeterminism removed
# the stored file name and replaced the time stamp in each gzip header, leaving the compressed stream
# untouched. Putting the name and the original 2017-08-31 time stamp back gives files with exactly the
# publisher's MD5s (README of the upstream repository), which is how these SHA-256s were tied to the
# publisher's release.
FASHION_MNIST = DatasetSpec(
    splits=(
        Split("train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
        Split("val", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
    ),
    # Label ids 0..9 of the upstream README, made filesystem-safe ("T-shirt/top" holds a slash).
    classes=("T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"),
    image_shape=(28, 28),
    sha256={
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    # MD5 of the four .gz downloads, as published in the upstream README.
    publisher_gzip_md5={
        "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
    },
)


class PrepareError(Exception):
    """Bad input the user can fix; ``str(error)`` is the whole message. Exit code :data:`EXIT_USAGE`."""


@dataclass
class SourceFile:
    """One verified idx file."""

    name: str
    path: Path
    sha256: str
    gzip_md5: str | None    # MD5 of the .gz as stored, None for a plain file
    array: np.ndarray


# ------------------------------------------------------------------------------------------ reading idx
# The idx files are parsed here with numpy rather than through torchvision.datasets.FashionMNIST: that
# class reads only uncompressed files in its own <root>/FashionMNIST/raw folder and otherwise downloads
# them (checking the MD5s of the publisher's .gz files, which Debian's re-wrapped files do not match), so it
# can use neither /usr/share/datasets/fashion-mnist nor a machine without internet access. The format
# needs no library: a header of big-endian uint32s before a raw uint8 array.

def find_source_file(source: Path, name: str) -> Path | None:
    """``source/name.gz`` or ``source/name``, whichever exists (the compressed one first)."""
    for candidate in (source / f"{name}.gz", source / name):
        if candidate.is_file():
            return candidate
    return None


def missing_input_message(source: Path, missing: Sequence[str]) -> str:
    """One paragraph: what is missing and the two ways to get it."""
    files = ", ".join(f"{name}.gz" for name in missing)
    return (
        f"Fashion-MNIST was not found in {source} (missing: {files}). On Debian or Ubuntu, install the "
        f"package that puts the files there: `sudo apt-get install dataset-fashion-mnist`. Elsewhere, "
        f"download the four files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        f"t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from {UPSTREAM_URL} (folder data/fashion) "
        f"into one folder and pass it with `--source FOLDER`."
    )


def read_payload(path: Path) -> tuple[bytes, str | None]:
    """The file's idx bytes (decompressed if it starts with the gzip magic) and the MD5 of a .gz as stored."""
    raw = path.read_bytes()
    if not raw.startswith(GZIP_MAGIC):
        return raw, None
    try:
        payload = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise PrepareError(f"{path} is not a valid gzip file ({exc}); the download or installation is "
                           f"damaged: reinstall it (`sudo apt-get install --reinstall "
                           f"dataset-fashion-mnist`) or download it again.") from None
    return payload, hashlib.md5(raw, usedforsecurity=False).hexdigest()


def parse_idx(payload: bytes, ndim: int, path: Path) -> np.ndarray:
    """The uint8 array of an idx file with ``ndim`` dimensions; a clear error for anything else."""
    header_bytes = IDX_HEADER_BYTES_PER_FIELD * (1 + ndim)
    if len(payload) < header_bytes:
        raise PrepareError(f"{path} is too short to be an idx file ({len(payload)} bytes); it is truncated "
                           f"or not a Fashion-MNIST file.")
    fields = np.frombuffer(payload, dtype=">u4", count=1 + ndim)
    magic, dims = int(fields[0]), tuple(int(d) for d in fields[1:])
    expected_magic = (IDX_UBYTE_TYPE << 8) | ndim
    if magic != expected_magic:
        raise PrepareError(f"{path} has idx magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
                           f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''}); it is not the "
                           f"{'image' if ndim == IMAGES_NDIM else 'label'} file it is named after.")
    data_bytes = int(np.prod(dims, dtype=np.int64))
    if len(payload) != header_bytes + data_bytes:
        raise PrepareError(f"{path} should hold {header_bytes + data_bytes} bytes for dimensions {dims} but "
                           f"holds {len(payload)}; it is truncated or damaged.")
    return np.frombuffer(payload, dtype=np.uint8, offset=header_bytes).reshape(dims)


def load_source_file(source: Path, name: str, ndim: int, spec: DatasetSpec) -> SourceFile:
    """Read, parse and checksum one idx file of the spec."""
    path = find_source_file(source, name)
    if path is None:  # checked before; kept for callers that skip the check
        raise PrepareError(missing_input_message(source, [name]))
    payload, gzip_md5 = read_payload(path)
    array = parse_idx(payload, ndim, path)
    digest = hashlib.sha256(payload).hexdigest()
    expected = spec.sha256[name]
    if digest != expected:
        raise PrepareError(f"{path} has the right format but not the published content: the SHA-256 of its "
                           f"decompressed bytes is {digest}, expected {expected}. Reinstall the files "
                           f"(`sudo apt-get install --reinstall dataset-fashion-mnist`) or download them "
                           f"again from {UPSTREAM_URL}.")
    publisher_md5 = spec.publisher_gzip_md5.get(name)
    if gzip_md5 is not None and publisher_md5 is not None and gzip_md5 != publisher_md5:
        log.debug("%s: gzip wrapper differs from the publisher's download (MD5 %s, published %s); the "
                  "content matches the pinned SHA-256", path, gzip_md5, publisher_md5)
    return SourceFile(name, path, digest, gzip_md5, array)


def load_split(source: Path, split: Split, spec: DatasetSpec) -> tuple[SourceFile, SourceFile]:
    """The verified (images, labels) of one split: counts, image shape and label range checked."""
    images = load_source_file(source, split.images_file, IMAGES_NDIM, spec)
    labels = load_source_file(source, split.labels_file, LABELS_NDIM, spec)
    if images.array.shape[1:] != spec.image_shape:
        raise PrepareError(f"{images.path} holds {images.array.shape[1]}x{images.array.shape[2]} images, "
                           f"expected {spec.image_shape[0]}x{spec.image_shape[1]}.")
    for source_file in (images, labels):
        if len(source_file.array) != split.count:
            raise PrepareError(f"{source_file.path} holds {len(source_file.array)} items, expected "
                               f"{split.count}; it is not the complete Fashion-MNIST file.")
    if labels.array.size and int(labels.array.max()) >= len(spec.classes):
        raise PrepareError(f"{labels.path} holds label {int(labels.array.max())}; labels must be below "
                           f"{len(spec.classes)}.")
    return images, labels


def load_source(source: Path, spec: DatasetSpec) -> dict[str, tuple[SourceFile, SourceFile]]:
    """All splits, verified; one message naming every missing file."""
    missing = [name for name in spec.file_names() if find_source_file(source, name) is None]
    if missing:
        raise PrepareError(missing_input_message(source, missing))
    return {split.name: load_split(source, split, spec) for split in spec.splits}


# ------------------------------------------------------------------------------------- writing the PNGs

def png_name(index: int, file_count: int) -> str:
    """``<index>.png``, zero-padded to the idx file's size so that name order is file order (ImageFolder
    sorts by name) and a limited run names its images as a full run does."""
    return f"{index:0{len(str(max(file_count - 1, 0)))}d}.png"


def write_pngs(task: tuple[list[str], np.ndarray]) -> int:
    """Write ``images[i]`` to ``paths[i]`` as grayscale PNGs; returns how many. Runs in pool workers."""
    paths, images = task
    for path, image in zip(paths, images):
        Image.fromarray(image, mode="L").save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return len(paths)


def split_tasks(split_dir: Path, images: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                file_count: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """Batches of (destination paths, images) of :data:`IMAGES_PER_TASK` images each."""
    count = len(images)
    for start in range(0, count, IMAGES_PER_TASK):
        stop = min(start + IMAGES_PER_TASK, count)
        paths = [str(split_dir / classes[labels[i]] / png_name(i, file_count)) for i in range(start, stop)]
        yield paths, images[start:stop]


def progress(total: int, description: str):
    """A tqdm bar (shown on terminals only), or a stand-in with ``update`` and ``close``."""
    if tqdm is not None:
        return tqdm(total=total, desc=description, unit="img", disable=None, leave=False)

    class _Silent:
        def update(self, n: int) -> None: ...
        def close(self) -> None: ...
    return _Silent()


def write_split(split_dir: Path, images: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                file_count: int, pool: multiprocessing.pool.Pool | None) -> None:
    """One folder per class, then every image of the split as a PNG, in parallel when a pool is given."""
    for name in classes:
        (split_dir / name).mkdir(parents=True, exist_ok=True)
    tasks = split_tasks(split_dir, images, labels, classes, file_count)
    bar = progress(len(images), split_dir.name)
    try:
        results = pool.imap_unordered(write_pngs, tasks) if pool is not None else map(write_pngs, tasks)
        for written in results:
            bar.update(written)
    finally:
        bar.close()


def class_counts(labels: np.ndarray, classes: Sequence[str]) -> dict[str, int]:
    """Images per class folder name."""
    counts = np.bincount(labels, minlength=len(classes))
    return {name: int(counts[i]) for i, name in enumerate(classes)}


# --------------------------------------------------------------------------------- marker, idempotence

def build_marker(spec: DatasetSpec, source: Path, loaded: dict[str, tuple[SourceFile, SourceFile]],
                 limits: dict[str, int | None], counts: dict[str, dict[str, int]], seconds: float) -> dict:
    """What was prepared, from what: enough to decide later whether a run has anything to do."""
    files = {}
    for images, labels in loaded.values():
        for f in (images, labels):
            files[f.name] = {"path": str(f.path), "sha256": f.sha256, "gzip_md5": f.gzip_md5}
    return {
        "format": MARKER_FORMAT,
        "dataset": "Fashion-MNIST",
        "prepared_by": "scripts/prepare_fashion_mnist.py",
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": str(source),
        "source_files": files,
        "classes": {name: label for label, name in enumerate(spec.classes)},
        "limits": limits,
        "counts": counts,
        "seconds": round(seconds, 1),
    }


def read_marker(output: Path) -> dict | None:
    """The marker of a prepared folder, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((output / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def on_disk_counts(output: Path, spec: DatasetSpec) -> dict[str, dict[str, int]]:
    """PNG files per split and class folder as they are now (0 for a missing folder)."""
    counts: dict[str, dict[str, int]] = {}
    for split in spec.splits:
        counts[split.name] = {}
        for name in spec.classes:
            folder = output / split.name / name
            counts[split.name][name] = (sum(1 for e in os.scandir(folder) if e.name.endswith(".png"))
                                        if folder.is_dir() else 0)
    return counts


def stale_reason(marker: dict, output: Path, spec: DatasetSpec, limits: dict[str, int | None]) -> str | None:
    """Why the prepared folder does not match this request, or None when it does."""
    if marker.get("format") != MARKER_FORMAT:
        return f"its marker has format {marker.get('format')!r}, this script writes {MARKER_FORMAT}"
    recorded = {name: entry.get("sha256") for name, entry in marker.get("source_files", {}).items()}
    if recorded != spec.sha256:
        return "it was made from files with other checksums"
    if marker.get("classes") != {name: label for label, name in enumerate(spec.classes)}:
        return "it uses other class folders"
    if marker.get("limits") != limits:
        return f"it was made with limits {marker.get('limits')}, this run asks for {limits}"
    if marker.get("counts") != on_disk_counts(output, spec):
        return "its image files do not match the counts its marker records (files were added or removed)"
    return None


# ------------------------------------------------------------------------------------- atomic replace

def leftover_dirs(output: Path) -> list[Path]:
    """Folders of runs next to ``output``: ``.<name>.partial-<pid>`` (being written) and ``.<name>.old-<pid>``
    (a replaced folder being deleted)."""
    return [path for kind in ("partial", "old") for path in output.parent.glob(f".{output.name}.{kind}-*")]


def remove_stale_partials(output: Path) -> None:
    """Delete the folders that interrupted runs (whose process is gone) left next to ``output``."""
    for path in leftover_dirs(output):
        try:
            pid = int(path.name.rsplit("-", 1)[1])
            os.kill(pid, 0)  # raises when no such process exists
            continue         # a live run owns it
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        log.info("removing %s, left by an interrupted run", path)
        shutil.rmtree(path, ignore_errors=True)


def replace_dir(tmp: Path, output: Path) -> None:
    """Move the finished ``tmp`` to ``output``, replacing a previous ``output``; each step is a rename."""
    if output.exists():
        old = output.parent / f".{output.name}.old-{os.getpid()}"
        output.rename(old)
        tmp.rename(output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(output)


def check_output_is_ours(output: Path, force: bool) -> None:
    """Refuse to replace a non-empty folder that this script did not make, unless ``--force``."""
    if force or not output.exists() or (output / MARKER_NAME).exists():
        return
    if not output.is_dir():
        raise PrepareError(f"{output} exists and is not a folder; choose another --output.")
    if any(output.iterdir()):
        raise PrepareError(f"{output} exists, is not empty and was not made by this script (no "
                           f"{MARKER_NAME}); it would be replaced. Choose another --output, or pass --force "
                           f"to replace it.")


# ------------------------------------------------------------------------------------------------ main

def prepare(source: Path, output: Path, spec: DatasetSpec, limits: dict[str, int | None], workers: int,
            ) -> dict:
    """Verify the source, write every split into a temporary folder, then rename it to ``output``."""
    started = time.perf_counter()
    loaded = load_source(source, spec)
    log.info("verified %d idx files in %s (idx headers, counts, SHA-256)", len(spec.file_names()), source)

    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(output)
    tmp = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    counts: dict[str, dict[str, int]] = {}
    pool = multiprocessing.Pool(workers) if workers > 1 else None
    try:
        for split in spec.splits:
            images, labels = loaded[split.name]
            limit = limits[split.name]
            n = split.count if limit is None else min(limit, split.count)
            write_split(tmp / split.name, images.array[:n], labels.array[:n], spec.classes, split.count, pool)
            counts[split.name] = class_counts(labels.array[:n], spec.classes)
            log.info("%s: %d images in %d class folders", split.name, n, len(spec.classes))
        marker = build_marker(spec, source, loaded, limits, counts, time.perf_counter() - started)
        (tmp / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")
        replace_dir(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return marker


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prepare_fashion_mnist.py",
        description="Verify the Fashion-MNIST idx files (Debian package dataset-fashion-mnist, or the four "
                    "upstream .gz downloads) and write them as an ImageFolder of PNGs: "
                    "OUTPUT/{train,val}/<class>/<index>.png. Safe to re-run: a prepared folder is left "
                    "alone.",
        epilog="Missing files? `sudo apt-get install dataset-fashion-mnist`, or download the four files "
               f"from {UPSTREAM_URL} into a folder and pass --source. Exit codes: 0 done, 2 bad input.")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help="folder with the four idx files, .gz or plain (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="ImageFolder to create (default: %(default)s)")
    parser.add_argument("--limit-train", type=positive_int, metavar="N",
                        help="write only the first N training images (quick tests; recorded in the marker)")
    parser.add_argument("--limit-val", type=positive_int, metavar="N",
                        help="write only the first N validation (test-set) images")
    parser.add_argument("--force", action="store_true",
                        help="rebuild even if OUTPUT is already prepared, and replace a folder that this "
                             "script did not make")
    parser.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1,
                        help="processes writing PNGs (default: the number of CPUs, %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug messages")
    return parser


def main(argv: Sequence[str] | None = None, spec: DatasetSpec = FASHION_MNIST) -> int:
    """Command line entry point; returns the exit code. ``spec`` lets tests describe their own small files."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s: %(message)s")
    limits = {"train": args.limit_train, "val": args.limit_val}
    limits = {split.name: limits.get(split.name) for split in spec.splits}
    output = args.output
    try:
        marker = read_marker(output)
        if marker is not None and not args.force:
            reason = stale_reason(marker, output, spec, limits)
            if reason is None:
                total = sum(sum(c.values()) for c in marker["counts"].values())
                log.info("%s is already prepared (%d images, %s); nothing to do. --force rebuilds it.",
                         output, total, marker.get("created_utc", "?"))
                return EXIT_OK
            log.info("rebuilding %s: %s", output, reason)
        check_output_is_ours(output, args.force)
        marker = prepare(args.source, output, spec, limits, args.workers)
    except PrepareError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    summary = ", ".join(f"{name} {sum(c.values())}" for name, c in marker["counts"].items())
    log.info("prepared %s (%s images) in %.1f s", output, summary, marker["seconds"])
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
