"""Image folders that survive broken files, and the JPEG decoding they share with the GPU pipeline.

Every training sample's augmentation is seeded by (run seed, epoch, sample index) (:func:`sample_seed`),
not by which worker happens to load it, so an epoch's crops are a pure function of (seed, epoch).
What counts as a sample: files with an image extension that are regular files, found below each class
folder (:func:`scan_class_folder`), none hidden and in no hidden folder; hidden folders are not classes
(:func:`find_class_folders`). 16-bit greyscale keeps its high byte (:func:`to_rgb`). Links are followed,
except a link back to a folder above it (a loop, which would repeat the folder's images under one label
without end): that is reported and not followed.
Special files (FIFOs, sockets, devices; reading a FIFO would block forever) and dangling links are
skipped with a warning.

An image that cannot be decoded, whatever the decoder raises, is unreadable: a warning names the file,
the next readable image stands in for it (so batch shapes never change) and the sample is flagged. The
flag travels with every sample: training counts it against the 1% limit, and evaluation leaves the
flagged row out of its metrics, so a stand-in is never counted twice.
"""
from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import stat
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torchvision import datasets, transforms
from torchvision.transforms import functional as TF

from ..errors import DataError

log = logging.getLogger(__name__)

MAX_SKIPPED_PER_SAMPLE = 64       # give up after this many unreadable files in a row
JPEG_MAGIC = b"\xff\xd8"
JPEG_END = b"\xff\xd9"
DECODABLE_JPEG_MODES = ("RGB", "L")  # JPEG colour modes nvJPEG and RegionDecoder take; others go to PIL
_SEED_MIX = 0x9E3779B97F4A7C15    # 2^64 / golden ratio: spreads (seed, epoch) over 64-bit seeds
_SEED_MASK = (1 << 63) - 1


def sample_seed(base_seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of one sample in one epoch (independent of workers and batch position)."""
    return ((base_seed * _SEED_MIX + epoch) * _SEED_MIX + index) & _SEED_MASK


@contextlib.contextmanager
def seeded_cpu_rng(seed: int) -> Iterator[None]:
    """Run the block with the global CPU generator (the one torchvision's transforms draw from) seeded
    with ``seed``, and restore its state afterwards.

    Written out instead of ``fork_rng`` + ``torch.manual_seed`` because ``torch.manual_seed`` also queues
    a seed for every accelerator, which costs far more, once per sample in every worker (``scripts/cpu_costs.py``
    times both).
    """
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(seed)
    try:
        yield
    finally:
        generator.set_state(state)

# ------------------------------------------------------------------------------------------------ datasets

# Any exception raised while turning a file into pixels means the file is unreadable. PIL raises far more
# than OSError for broken or hostile files (SyntaxError, ValueError, struct.error, IndexError, TypeError,
# DecompressionBombError, ...), and which ones depends on the format plug-in, so no list of types is kept.
UNREADABLE_ERRORS = (Exception,)


def load_readable(dataset: datasets.DatasetFolder, index: int, read: Callable[[str], Any]) -> tuple[Any, int, int]:
    """``(read(path), target, unreadable)`` for sample ``index``, or, when its file cannot be read, for the
    next readable sample (so batch shapes never change). ``unreadable`` is 1 in that case and the file is
    named in a warning: each broken file is counted once per epoch."""
    for offset in range(MAX_SKIPPED_PER_SAMPLE):
        path, target = dataset.samples[(index + offset) % len(dataset.samples)]
        try:
            return read(path), target, int(offset > 0)
        except UNREADABLE_ERRORS as exc:
            if offset == 0:
                log.warning("skipping unreadable image %s (%s: %s)", path, type(exc).__name__, exc)
    raise DataError(f"{MAX_SKIPPED_PER_SAMPLE} unreadable images in a row in {dataset.root} (from "
                    f"{dataset.samples[index][0]}). The dataset looks damaged; check or re-extract it.")


def _image_extension(name: str) -> bool:
    return name.lower().endswith(datasets.folder.IMG_EXTENSIONS)


def _walk_following_links(top: str) -> Iterator[tuple[str, list[str]]]:
    """``(folder, regular file names)`` for ``top`` and every folder below it, links followed except links
    to a folder above the one they are in (up to the filesystem root): loops. Hidden entries (a name starting
    with a dot: macOS's "._x.png" metadata, .AppleDouble, editors' backups) are neither listed nor entered.

    Written out instead of ``os.walk(followlinks=True)`` (what torchvision uses), which follows a link to a
    folder above it again and again, and lists FIFOs and dangling links as files.
    """
    pending = [(top, frozenset(_folder_id(folder) for folder in _folders_above(top)))]
    while pending:
        folder, above = pending.pop()
        try:
            entries = sorted((e for e in os.scandir(folder) if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as exc:
            raise DataError(f"cannot list the folder {folder} ({exc.strerror or exc}). Make the dataset readable "
                            f"(e.g. chmod -R u+rX on it) or remove that folder.") from None
        files = []
        for entry in entries:
            try:
                mode = os.stat(entry.path).st_mode  # follows links
            except OSError as exc:
                if _image_extension(entry.name):
                    log.warning("skipping %s: %s (a link to nothing?)", entry.path, exc.strerror or exc)
                continue
            if stat.S_ISDIR(mode):
                folder_id = _folder_id(entry.path)
                if folder_id in above:
                    log.warning("not following %s: it links back to %s, a folder above it (a link loop)",
                                entry.path, os.path.realpath(entry.path))
                    continue
                pending.append((entry.path, above | {folder_id}))
            elif stat.S_ISREG(mode):
                files.append(entry.name)
            elif _image_extension(entry.name):
                log.warning("skipping %s: not a regular file (a FIFO, socket or device)", entry.path)
        yield folder, files


def _folders_above(path: str) -> Iterator[str]:
    """``path`` and every folder above it, up to the filesystem root (links resolved)."""
    folder = os.path.realpath(path)
    while True:
        yield folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return
        folder = parent


def _folder_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def scan_class_folder(directory: str, class_to_idx: dict[str, int], extensions: Any = None,
                      is_valid_file: Any = None, allow_empty: bool = False) -> list[tuple[str, int]]:
    """``(path, class index)`` of every image below ``directory/<class>``, in torchvision's order.

    A drop-in for ``DatasetFolder.make_dataset`` (same arguments and order: folders sorted by path, files by
    name) that walks with :func:`_walk_following_links`. Raises ``FileNotFoundError`` for a class without
    images, as torchvision does.
    """
    def keep(path: str) -> bool:
        return is_valid_file(path) if is_valid_file is not None else \
            path.lower().endswith(extensions or datasets.folder.IMG_EXTENSIONS)

    samples, empty = [], []
    for name in sorted(class_to_idx):
        found = [os.path.join(folder, f) for folder, files in sorted(_walk_following_links(
            os.path.join(directory, name))) for f in sorted(files)]
        found = [path for path in found if keep(path)]
        if not found:
            empty.append(name)
        samples += [(path, class_to_idx[name]) for path in found]
    if empty and not allow_empty:
        raise EmptyClassFolders(directory, empty)
    return samples


class EmptyClassFolders(FileNotFoundError):
    """Class folders without a single image (a ``FileNotFoundError``, as torchvision raises for them)."""

    def __init__(self, directory: str, classes: list[str]) -> None:
        super().__init__(f"Found no valid file for the classes {', '.join(classes)}.")
        self.directory, self.classes = directory, classes


def find_class_folders(directory: str) -> tuple[list[str], dict[str, int]]:
    """torchvision's ``find_classes`` without hidden folders (``.ipynb_checkpoints``, ``.git``): a class is a
    visible sub-folder. A hidden folder counted as a class would shift every label after it."""
    classes = sorted(entry.name for entry in os.scandir(directory)
                     if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
    return classes, {name: index for index, name in enumerate(classes)}


class SafeScanImageFolder(datasets.ImageFolder):
    """``ImageFolder`` that lists its samples with :func:`scan_class_folder`: no link loops, no special files,
    no hidden folders or files."""

    make_dataset = staticmethod(scan_class_folder)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return find_class_folders(directory)


class RobustImageFolder(SafeScanImageFolder):
    """``ImageFolder`` whose items are ``(image, target, unreadable)``; unreadable files are skipped
    (:func:`load_readable`).

    The key may be an index or ``(index, seed)``; with a seed, the transform's randomness is drawn from
    the global CPU generator seeded with it and restored afterwards (:func:`seeded_cpu_rng`; torchvision's
    transforms draw from that generator).
    """

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, int, int]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image, target, unreadable = load_readable(self, index, self.loader)
        if self.transform is not None:
            if seed is None:
                image = self.transform(image)
            else:
                with seeded_cpu_rng(seed):
                    image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target, unreadable


class RegionDecoder:
    """Decodes only a crop box of a JPEG on the CPU (libjpeg-turbo through NVIDIA nvImageCodec's CPU backend):
    rows above the box are entropy-decoded and skipped, columns beside it and rows below are not decoded.

    The pixels are PIL's decode cut to the box, exactly: both are libjpeg-turbo with the same integer IDCT
    and chroma upsampling (tests/test_gpu_decode.py checks equality crop for crop). RandomResizedCrop keeps
    half the area on average (scale U(0.08, 1)), so decoding only the box decodes fewer bytes and a worker makes
    more crops a second (docs/design/input_pipeline.md has the loader and training speeds). Each worker
    process builds its own decoder on first use (nvImageCodec objects do not cross process boundaries).
    """

    def __init__(self) -> None:
        self._codec: Any = None
        self._decoder: Any = None
        self._params: Any = None
        self._pid = -1

    def __getstate__(self) -> dict:
        return {"_pid": -1}  # the decoder is rebuilt in each worker

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def __call__(self, data: bytes, box: tuple[int, int, int, int]) -> Image.Image | None:
        """The RGB box ``(top, left, height, width)`` of JPEG ``data``; None if nvImageCodec cannot decode it."""
        if self._pid != os.getpid():
            self._pid, self._decoder = os.getpid(), None
            nvimgcodec = self._codec = import_nvimgcodec()
            if nvimgcodec is None:
                return None
            try:
                self._decoder = nvimgcodec.Decoder(
                    device_id=nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY, max_num_cpu_threads=1,
                    backends=[nvimgcodec.Backend(nvimgcodec.BackendKind.CPU_ONLY)])
            except RuntimeError as exc:  # PIL decodes whole images instead: slower, same pixels
                log.warning("nvImageCodec's CPU decoder cannot start here (%s); PIL decodes whole images", exc)
                self._decoder = None
            self._params = nvimgcodec.DecodeParams(apply_exif_orientation=False,  # PIL ignores EXIF orientation too
                                                   color_spec=nvimgcodec.ColorSpec.SRGB, allow_any_depth=False)
        if self._decoder is None or not ends_like_a_jpeg(data):
            return None
        nvimgcodec = self._codec
        top, left, h, w = box
        stream = nvimgcodec.CodeStream(np.frombuffer(data, dtype=np.uint8))
        region = stream.get_sub_code_stream(region=nvimgcodec.Region(top, left, top + h, left + w))
        image = self._decoder.decode(region, params=self._params)
        if image is None or image.shape[:2] != (h, w):
            return None
        return Image.fromarray(np.asarray(image))                                        # (h, w, 3)


_NVIMGCODEC_IMPORT_LOCK = threading.Lock()


@functools.lru_cache(maxsize=None)
def _import_nvimgcodec_quietly() -> Any:
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no stderr to silence
        saved = None
    try:
        if saved is not None:
            with open(os.devnull, "wb") as devnull:
                os.dup2(devnull.fileno(), 2)
        from nvidia import nvimgcodec
        return nvimgcodec
    except Exception:  # not installed, or a broken install: PIL decodes instead  # noqa: BLE001
        return None
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)


def import_nvimgcodec() -> Any:
    """``nvidia.nvimgcodec``, or None where it is not installed (or does not import).

    On import nvImageCodec loads all its codec extensions and prints eight lines to stderr for each GPU
    library it does not find (nvJPEG, nvJPEG2000, nvTIFF), in every worker process, though only the CPU
    JPEG backend is used here. It offers no switch for that, so stderr's file descriptor points at
    /dev/null for the import alone: once per process (the result is cached), under a lock so that
    concurrent first calls cannot leave stderr redirected.
    """
    with _NVIMGCODEC_IMPORT_LOCK:
        return _import_nvimgcodec_quietly()


@functools.lru_cache(maxsize=None)
def _log_region_decode_missing() -> None:
    log.info("--region-decode: NVIDIA nvImageCodec is not installed (pip install nvidia-nvimgcodec-cu13); "
             "PIL decodes whole images")


def region_decode_available() -> bool:
    """Whether :class:`RegionDecoder` can run: NVIDIA nvImageCodec is installed (pip install
    nvidia-nvimgcodec-cu13; its CPU backend needs no GPU). Logged once per process when it is not."""
    available = import_nvimgcodec() is not None
    if not available:
        _log_region_decode_missing()
    return available


def read_file_and_header(path: str) -> tuple[bytes, Image.Image]:
    """The file's bytes and the PIL image of its header (size and mode; pixels not decoded)."""
    with open(path, "rb") as f:
        data = f.read()
    return data, Image.open(io.BytesIO(data))


def is_decodable_jpeg(data: bytes, header: Image.Image) -> bool:
    """A JPEG in RGB or greyscale (not PNG, not CMYK, ...): what nvJPEG and :class:`RegionDecoder` take."""
    return data[:2] == JPEG_MAGIC and header.mode in DECODABLE_JPEG_MODES


def ends_like_a_jpeg(data: bytes) -> bool:
    """Whether the file ends with JPEG's end-of-image marker (trailing zero padding allowed). A truncated
    JPEG whose crop box lies in its intact part would decode as a region, while PIL rejects the whole file
    and the sample is skipped: such files go to PIL, so that which files count as unreadable does not
    depend on the crop drawn. (Corruption inside a complete file can still pass a region decode.)"""
    return data.rstrip(b"\0")[-2:] == JPEG_END


def decode_box(data: bytes, header: Image.Image, box: tuple[int, int, int, int],
               region_decoder: RegionDecoder | None) -> Image.Image:
    """The RGB pixels inside ``box`` = (top, left, height, width) of an image file (its bytes and PIL header):
    decoded as a region where ``region_decoder`` takes the file, else decoded whole by PIL and cut, the crop
    step of torchvision's ``resized_crop``. Either way the same pixels."""
    if region_decoder is not None and is_decodable_jpeg(data, header):
        region = region_decoder(data, box)
        if region is not None:
            return region
    top, left, h, w = box
    return TF.crop(to_rgb(header), top, left, h, w)


class RegionCropImageFolder(RobustImageFolder):
    """A :class:`RobustImageFolder` for a training transform that starts with RandomResizedCrop: each JPEG is
    decoded only inside its crop box (:class:`RegionDecoder`), and the items are the transform's, exactly.

    The crop box and flip are drawn from the image's header with the transform's own objects, in the order
    their ``forward`` methods draw them, inside the same seeded generator; the rest of the transform (to
    tensor, normalisation, random erasing) then runs in that generator too. Files the region decoder does
    not take (PNG, CMYK, broken) are decoded whole with PIL, as the plain dataset does.
    """

    def __init__(self, root: str, transform: transforms.Compose) -> None:
        super().__init__(root, transform=transform, loader=pil_rgb_loader)
        if not self.applies_to(transform):
            raise ValueError("RegionCropImageFolder needs a Compose that starts with RandomResizedCrop")
        steps = transform.transforms
        self.crop = steps[0]
        self.flip = steps[1] if len(steps) > 1 and isinstance(steps[1], transforms.RandomHorizontalFlip) else None
        self.tail = transforms.Compose(steps[1 + (self.flip is not None):])
        self.region_decoder = RegionDecoder()

    @staticmethod
    def applies_to(transform: Any) -> bool:
        return isinstance(transform, transforms.Compose) and bool(transform.transforms) and \
            isinstance(transform.transforms[0], transforms.RandomResizedCrop)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, int, int]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        sample, target, unreadable = load_readable(self, index, lambda path: self._load(path, seed))
        if self.target_transform is not None:
            target = self.target_transform(target)
        return sample, target, unreadable

    def _load(self, path: str, seed: int | None) -> Any:
        data, header = read_file_and_header(path)
        crop = self.crop
        with seeded_cpu_rng(seed) if seed is not None else contextlib.nullcontext():
            top, left, h, w = crop.get_params(header, crop.scale, crop.ratio)   # RandomResizedCrop.forward
            flip = self.flip is not None and bool(torch.rand(1) < self.flip.p)  # RandomHorizontalFlip.forward
            box = decode_box(data, header, (top, left, h, w), self.region_decoder)
            image = TF.resize(box, crop.size, crop.interpolation, antialias=crop.antialias)  # resized_crop's resize
            return self.tail(TF.hflip(image) if flip else image)


def pil_rgb_loader(path: str) -> Image.Image:
    """Open an image and decode it fully now (so truncated files fail here, not in a transform)."""
    with open(path, "rb") as f:
        image = Image.open(f)
        return to_rgb(image)


# PIL modes of 16-bit greyscale (a 16-bit PNG opens as one of them), whose values reach 65535
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
EIGHT_BIT_SHIFT = 8   # 16-bit values to 8-bit ones: the high byte, as torchvision's to_dtype(uint8, scale=True)


def to_rgb(image: Image.Image) -> Image.Image:
    """The image as 8-bit RGB, as the networks take it: PIL's ``convert("RGB")``, except for 16-bit greyscale,
    whose every image keeps its high byte (``convert`` clips every value above 255 to white), so that one scale
    holds across a dataset. Mode ``"I"`` (32-bit integers, which some Pillow versions give 16-bit PNGs) is
    ambiguous: it is read as 16-bit where its values go above 255, else as 8-bit."""
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "I":
        values = np.asarray(image, dtype=np.int64)
        if image.mode != "I" or values.max(initial=0) > 255:
            values = values >> EIGHT_BIT_SHIFT
        image = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L")
    return image.convert("RGB")


def check_split_dir(root: Path, split: str) -> Path:
    path = root / split
    if not root.is_dir():
        state = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(f"dataset directory {root} {state}. Pass the folder that holds train/ and "
                        f"val/ (ImageNet layout: DATA/train/<class>/*.JPEG, DATA/val/<class>/*.JPEG).")
    if not path.is_dir():
        state = "is a file, not a folder" if path.exists() else "does not exist"
        raise DataError(f"{path} {state}. DATA must hold train/ and val/ with one folder per class "
                        f"(for ImageNet, sort the validation images into class folders first, e.g. with "
                        f"the valprep.sh script of the ImageNet community).")
    if not any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir()):
        raise DataError(f"{path} holds no class folders. Put each class's images in its own sub-folder "
                        f"({path}/<class>/<image>).")
    return path


def build_image_folder(root: Path, split: str, transform: Any = None,
                       make: Callable[[str], datasets.ImageFolder] | None = None) -> datasets.ImageFolder:
    """``root/split`` as a :class:`RobustImageFolder` with ``transform`` (or as ``make(path)``), with the
    errors a user can act on when the folder is missing, has no class folders or no images."""
    path = root / split
    try:
        path = check_split_dir(root, split)
        if make is not None:
            return make(str(path))
        return RobustImageFolder(str(path), transform=transform, loader=pil_rgb_loader)
    except EmptyClassFolders as exc:
        raise DataError(f"{path}: the class folder(s) {', '.join(exc.classes[:5])}"
                        f"{' ...' if len(exc.classes) > 5 else ''} hold no images. Put images with a usual extension "
                        f"(.jpg, .jpeg, .png, ...) into them, or remove them from both train/ and val/.") from None
    except (FileNotFoundError, RuntimeError) as exc:  # torchvision: "Found no valid file for the classes"
        raise DataError(f"{path} holds no images ({str(exc).splitlines()[0]}). Put images with a usual "
                        f"extension (.jpg, .jpeg, .png, ...) into its class folders.") from None
    except OSError as exc:  # permissions, a class "folder" that is a file, ...: the dataset, not ecanet
        raise DataError(f"cannot read the dataset folder {exc.filename or path} ({exc.strerror or exc}). Make "
                        f"it readable (e.g. chmod -R u+rX {root}) and check that it is the dataset.") from None


def check_same_classes(train: datasets.ImageFolder, val: datasets.ImageFolder) -> None:
    if train.classes == val.classes:
        return
    only_train = sorted(set(train.classes) - set(val.classes))
    only_val = sorted(set(val.classes) - set(train.classes))
    raise DataError(
        f"train/ and val/ have different class folders ({len(train.classes)} vs {len(val.classes)}; only in "
        f"train: {only_train[:5]}{' ...' if len(only_train) > 5 else ''}; only in val: {only_val[:5]}"
        f"{' ...' if len(only_val) > 5 else ''}). Labels are folder indices, so both splits need the same "
        f"class folders: add the missing ones (an empty folder is not enough) or remove the extras.")


