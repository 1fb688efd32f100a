"""Data: ImageFolder datasets with the paper's transforms, resumable samplers, loaders, synthetic data.

Reproducibility: every training sample's augmentation is seeded by (run seed, epoch, sample index), not by
which worker happens to load it. Together with the index-order sampler this makes an epoch's batches a
pure function of (seed, epoch), so a run resumed in the middle of an epoch sees exactly the batches
it had not yet seen, in the same order, with the same crops, for any number of workers.

Unreadable images are skipped (the next image stands in, so batch shapes never change) with a warning
naming the file; the count is returned with every sample so the trainer can report it per epoch.
"""
from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import datasets, transforms
from torchvision.transforms import functional as TF

from .config import (AUTO, AUTO_GPU_DECODE_SHARE, DEFAULT_GPU_DECODE_THREADS, MAX_AUTO_WORKERS,
                     MIN_WORKERS_FOR_CPU_SHARE)
from .errors import ConfigError, DataError

log = logging.getLogger(__name__)

# ImageNet statistics (torchvision's, used by the official ECA-Net scripts).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_SKIPPED_PER_SAMPLE = 64       # give up after this many unreadable files in a row
MAX_BAD_IMAGE_FRACTION = 0.01     # stop the run when more than 1% of an epoch's images are unreadable
PREFETCH_BATCHES_PER_WORKER = 4
# --decode gpu's training loader with slots (ecanet.batch_slots): each finished batch a worker holds takes a
# slot of about 40 MB (256 images, share 0.7, ~106 kB JPEGs), so fewer are held than for the other loaders
SLOT_PREFETCH_BATCHES_PER_WORKER = 2
NO_DATASET_MESSAGE = ("no dataset given. Pass DATA (a folder with train/ and val/ class folders), e.g. "
                      "'python main.py /data/imagenet -a eca_resnet50', or use --synthetic.")
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
    a seed for every accelerator, which costs far more, once per sample in every worker (166 us vs 1.1 us
    per call with torch 2.15 on the 2-core CPU machine, ``scripts/cpu_costs.py``, 2026-11-21).
    """
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(seed)
    try:
        yield
    finally:
        generator.set_state(state)


# ------------------------------------------------------------------------------------------- transforms

def build_train_transform(img_size: int = 224, augment: str = "rrc", min_crop_scale: float = 0.08,
                          crop_padding: int = 4, hflip: float = 0.5, random_erasing: float = 0.0,
                          mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                          uint8: bool = False) -> transforms.Compose:
    """The paper's training transform (RandomResizedCrop(224) + flip, Section 4.1) or a pad-and-crop one.

    ``uint8``: stop at a uint8 tensor (no ToTensor/Normalize): :class:`DeviceLoader` converts and normalises
    on the device, so workers do less and a quarter of the bytes cross to the main process and the GPU.
    Random erasing then fills with the mean colour, which normalises to (almost exactly) 0 as before.
    """
    if augment == "rrc":
        crop: list[Any] = [transforms.RandomResizedCrop(img_size, scale=(min_crop_scale, 1.0))]
    elif augment == "crop":
        crop = [transforms.Resize(img_size), transforms.RandomCrop(img_size, padding=crop_padding)]
    else:
        raise ConfigError(f"unknown --augment {augment!r}; use 'rrc' or 'crop'.")
    steps = crop + ([transforms.RandomHorizontalFlip(hflip)] if hflip > 0 else [])
    steps += [transforms.PILToTensor()] if uint8 else [transforms.ToTensor(), transforms.Normalize(mean, std)]
    if random_erasing > 0:
        fill: Any = [round(255 * m) for m in mean] if uint8 else 0
        steps.append(transforms.RandomErasing(p=random_erasing, value=fill))
    return transforms.Compose(steps)


def build_val_transform(img_size: int = 224, val_resize: int = 256, mean: Sequence[float] = IMAGENET_MEAN,
                        std: Sequence[float] = IMAGENET_STD, uint8: bool = False) -> transforms.Compose:
    """The paper's evaluation transform: Resize(256) + CenterCrop(224) (single crop)."""
    tail = [transforms.PILToTensor()] if uint8 else [transforms.ToTensor(), transforms.Normalize(mean, std)]
    return transforms.Compose([transforms.Resize(val_resize), transforms.CenterCrop(img_size), *tail])


class DeviceLoader:
    """Wraps a loader of uint8 batches: copies them to the device (non-blocking from pinned memory) and
    converts and normalises there, exactly as ToTensor + Normalize would (``x / 255``, ``- mean``, ``/ std``).
    Yields ``(images, targets, unreadable)``; forwards ``__len__`` and ``set_epoch``-free iteration."""

    def __init__(self, loader: DataLoader, mean: Sequence[float], std: Sequence[float], device: torch.device,
                 channels_last: bool = False) -> None:
        self.loader, self.device = loader, device
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)  # (1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)    # (1, 3, 1, 1)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for images, targets, unreadable in self.loader:  # images: (B, 3, H, W) uint8
            images = images.to(self.device, non_blocking=True).to(torch.float32, memory_format=self.memory_format)
            images = images.div_(255).sub_(self.mean).div_(self.std)
            yield images, targets.to(self.device, non_blocking=True), unreadable


# ------------------------------------------------------------------------------------------------ datasets

UNREADABLE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError)  # what PIL raises for broken files


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
                log.warning("skipping unreadable image %s (%s)", path, exc)
    raise DataError(f"{MAX_SKIPPED_PER_SAMPLE} unreadable images in a row in {dataset.root} (from "
                    f"{dataset.samples[index][0]}). The dataset looks damaged; check or re-extract it.")


class RobustImageFolder(datasets.ImageFolder):
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
    half the area on average (scale U(0.08, 1)): a worker process made 1.2-1.4x as many training crops per
    second (about 105 kB JPEGs; H200 host and 2-core CPU host, 2026-11-21, docs/benchmarks.md). Each worker
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
    return TF.crop(header.convert("RGB"), top, left, h, w)


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
        return image.convert("RGB")


def check_split_dir(root: Path, split: str) -> Path:
    path = root / split
    if not root.is_dir():
        raise DataError(f"dataset directory {root} does not exist. Pass the folder that holds train/ and "
                        f"val/ (ImageNet layout: DATA/train/<class>/*.JPEG, DATA/val/<class>/*.JPEG).")
    if not path.is_dir():
        raise DataError(f"{path} does not exist. DATA must hold train/ and val/ with one folder per class "
                        f"(for ImageNet, sort the validation images into class folders first, e.g. with "
                        f"the valprep.sh script of the ImageNet community).")
    if not any(p.is_dir() for p in path.iterdir()):
        raise DataError(f"{path} holds no class folders. Put each class's images in its own sub-folder "
                        f"({path}/<class>/<image>).")
    return path


def build_image_folder(root: Path, split: str, transform: Any = None,
                       make: Callable[[str], datasets.ImageFolder] | None = None) -> datasets.ImageFolder:
    """``root/split`` as a :class:`RobustImageFolder` with ``transform`` (or as ``make(path)``), with the
    errors a user can act on when the folder is missing, has no class folders or no images."""
    path = check_split_dir(root, split)
    try:
        if make is not None:
            return make(str(path))
        return RobustImageFolder(str(path), transform=transform, loader=pil_rgb_loader)
    except (FileNotFoundError, RuntimeError) as exc:  # torchvision: "Found no valid file for the classes"
        raise DataError(f"{path} holds no images ({str(exc).splitlines()[0]}). Put images with a usual "
                        f"extension (.jpg, .jpeg, .png, ...) into its class folders.") from None


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


# ------------------------------------------------------------------------------------------------ samplers

class ResumableSampler(Sampler):
    """Yields ``(index, augmentation seed)`` for one rank's share of an epoch, from any position.

    The order is a permutation drawn from (seed, epoch); like DistributedSampler it is padded to a
    multiple of the world size and rank r takes every world_size-th index starting at r. Call
    :meth:`set_epoch` before each epoch, with ``start_sample`` > 0 to skip what was already trained on.
    """

    def __init__(self, num_samples: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.num_samples, self.seed, self.rank, self.world_size = num_samples, seed, rank, world_size
        self.per_rank = math.ceil(num_samples / world_size)
        self.epoch, self.start_sample = 0, 0

    def set_epoch(self, epoch: int, start_sample: int = 0) -> None:
        self.epoch, self.start_sample = epoch, start_sample

    def _rank_indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 10_007 + self.epoch)
        order = torch.randperm(self.num_samples, generator=g).tolist()
        order += order[: self.per_rank * self.world_size - len(order)]  # pad, as DistributedSampler
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self._rank_indices()[self.start_sample:]:
            yield index, sample_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return self.per_rank - self.start_sample


class ShardSampler(Sampler):
    """Evaluation: rank r takes indices r, r + W, r + 2W, ... with no padding, so every image counts once."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, num_samples, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# ------------------------------------------------------------------------------------------------- loaders

def default_workers(local_world_size: int) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(MAX_AUTO_WORKERS, cpus // max(1, local_world_size) - 1))


def make_loader(dataset: Dataset, sampler: Sampler, batch_size: int, workers: int, pin_memory: bool,
                drop_last: bool, collate_fn: Any = None, prefetch: int = PREFETCH_BATCHES_PER_WORKER) -> DataLoader:
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=prefetch)
    # The loader gets a generator of its own so that creating an iterator never draws from the global
    # RNG (which would shift dropout's random numbers between a fresh and a resumed run).
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=pin_memory, drop_last=drop_last, collate_fn=collate_fn, generator=torch.Generator(),
                      **kwargs)


@dataclass
class DataBundle:
    """Everything the trainer needs from the data side."""

    train_loader: Any
    val_loader: Any
    train_sampler: ResumableSampler | None
    num_classes: int
    classes: list[str]
    train_size: int
    val_size: int
    steps_per_epoch: int


class SyntheticLoader:
    """Random images and labels already on the device: measures the model, not the input pipeline."""

    def __init__(self, batch_size: int, img_size: int, num_classes: int, steps: int, device: torch.device,
                 channels_last: bool, seed: int = 0) -> None:
        g = torch.Generator(device="cpu").manual_seed(seed)
        images = torch.randn(batch_size, 3, img_size, img_size, generator=g)
        self.images = images.to(device, memory_format=torch.channels_last if channels_last else
                                torch.contiguous_format)
        self.targets = torch.randint(0, num_classes, (batch_size,), generator=g).to(device)
        self.skipped = torch.zeros(batch_size, dtype=torch.int64)
        self.steps = steps
        self.start_step = 0

    def set_epoch(self, epoch: int, start_sample: int = 0) -> None:
        self.start_step = start_sample // self.images.shape[0]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for _ in range(self.start_step, self.steps):
            yield self.images, self.targets, self.skipped

    def __len__(self) -> int:
        return self.steps - self.start_step


@dataclass
class GpuDecodeOptions:
    """``--decode gpu``: what the GPU side needs (see ecanet.gpu_decode)."""

    img_size: int
    val_resize: int
    min_crop_scale: float
    hflip: float
    mean: Sequence[float]
    std: Sequence[float]
    channels_last: bool
    gpu_share: float = 1.0
    decode_threads: int = DEFAULT_GPU_DECODE_THREADS


def resolve_gpu_share(share: float | str, workers: int) -> float:
    """``--gpu-decode-share`` as a number: 'auto' is :data:`AUTO_GPU_DECODE_SHARE` where there are at least
    :data:`MIN_WORKERS_FOR_CPU_SHARE` loader workers to decode the CPU share, else 1 (every image on the GPU).
    The validation loader uses the same share; GPU and CPU crops differ slightly in their pixels, so evaluation
    figures can differ by a hair between shares."""
    if share != AUTO:
        return float(share)
    return AUTO_GPU_DECODE_SHARE if workers >= MIN_WORKERS_FOR_CPU_SHARE else 1.0


def _gpu_image_folder(root: Path, split: str, train: bool, options: GpuDecodeOptions,
                      region_decode: bool) -> Dataset:
    from .gpu_decode import EncodedImageFolder
    region_decode = region_decode and train and options.gpu_share < 1 and region_decode_available()
    return build_image_folder(root, split, make=lambda path: EncodedImageFolder(
        path, train, options.img_size, options.val_resize, options.min_crop_scale, options.hflip,
        options.gpu_share, region_decode))


def _loader_slots(train_set: Dataset, batch_size: int, workers: int, options: GpuDecodeOptions) -> Any:
    """The :class:`~ecanet.batch_slots.BatchSlots` of ``--decode gpu``'s training loader: one per batch the
    workers may hold finished (:data:`SLOT_PREFETCH_BATCHES_PER_WORKER` each) and per batch decoded ahead,
    pinned. None, with a warning, where shared memory is short: batches then travel the ordinary way."""
    from .batch_slots import BatchSlots, mean_file_bytes, slot_bytes_for
    from .gpu_decode import PREFETCH_BATCHES
    count = workers * SLOT_PREFETCH_BATCHES_PER_WORKER + options.decode_threads + PREFETCH_BATCHES + 2
    slot_bytes = slot_bytes_for(batch_size, options.img_size, options.gpu_share,
                                mean_file_bytes([path for path, _ in train_set.samples]))
    try:
        slots = BatchSlots(count, slot_bytes)
    except RuntimeError as exc:  # e.g. a container's small /dev/shm
        log.warning("no shared memory for %d loader slots of %.0f MB (%s); batches travel the ordinary way, "
                    "which is slower. Give the job more shared memory (e.g. docker --shm-size).", count,
                    slot_bytes / 1e6, exc)
        return None
    slots.pin()
    log.info("--decode gpu: %d loader slots of %.0f MB in pinned shared memory (%.1f GB)", count, slot_bytes / 1e6,
             count * slot_bytes / 1e9)
    return slots


def build_data(root: str | os.PathLike | None, *, batch_size: int, val_batch_size: int, workers: int,
               seed: int, rank: int, world_size: int, device: torch.device, train_transform: Any,
               val_transform: Any, evaluate_only: bool = False,
               gpu_decode: GpuDecodeOptions | None = None,
               device_normalize: tuple[Sequence[float], Sequence[float], bool] | None = None,
               region_decode: bool = True) -> DataBundle:
    """ImageFolder loaders for ``root/train`` and ``root/val``, sharded over ``world_size`` ranks.

    With ``gpu_decode``, workers read bytes and draw crop boxes for the images the GPU decodes and augments
    (``gpu_decode.gpu_share`` of them), and decode and crop the others themselves. With
    ``device_normalize`` = (mean, std, channels_last) the transforms end in uint8 tensors and the loaders
    are wrapped in :class:`DeviceLoader`. ``region_decode`` (``--region-decode``; where nvImageCodec is
    installed): training JPEGs decoded in workers are decoded only inside their RandomResizedCrop box, with
    the same items (:class:`RegionCropImageFolder`, and the CPU share of ``gpu_decode``).
    """
    if root is None:
        raise ConfigError(NO_DATASET_MESSAGE)
    root = Path(root)
    if gpu_decode is None:
        val_set = build_image_folder(root, "val", val_transform)
        train_set = None
        if not evaluate_only:
            region = region_decode and RegionCropImageFolder.applies_to(train_transform) and region_decode_available()
            train_set = build_image_folder(root, "train", train_transform, make=(
                (lambda path: RegionCropImageFolder(path, train_transform)) if region else None))
        collate = None
    else:
        from .gpu_decode import collate_encoded
        val_set = _gpu_image_folder(root, "val", False, gpu_decode, region_decode)
        train_set = None if evaluate_only else _gpu_image_folder(root, "train", True, gpu_decode, region_decode)
        collate = collate_encoded
    if train_set is not None:
        check_same_classes(train_set, val_set)
    pin = device.type == "cuda"
    val_loader = make_loader(val_set, ShardSampler(len(val_set), rank, world_size), val_batch_size, workers,
                             pin, drop_last=False, collate_fn=collate)
    train_loader, train_sampler, steps = None, None, 0
    if train_set is not None:
        train_sampler = ResumableSampler(len(train_set), seed, rank, world_size)
        steps = train_sampler.per_rank // batch_size
        if steps == 0:
            raise ConfigError(f"--batch-size {batch_size} is larger than each process's share of the "
                              f"{len(train_set)} training images ({train_sampler.per_rank}); use a smaller "
                              f"batch size or fewer processes.")
        slots = None
        if gpu_decode is not None and workers > 0 and device.type == "cuda":
            slots = _loader_slots(train_set, batch_size, workers, gpu_decode)
        if slots is not None:  # batches come in pinned slots: no pin-memory thread
            from .gpu_decode import SlotCollate
            train_loader = make_loader(train_set, train_sampler, batch_size, workers, False, drop_last=True,
                                       collate_fn=SlotCollate(slots, gpu_decode.img_size),
                                       prefetch=SLOT_PREFETCH_BATCHES_PER_WORKER)
        else:
            train_loader = make_loader(train_set, train_sampler, batch_size, workers, pin, drop_last=True,
                                       collate_fn=collate)
    if gpu_decode is None and device_normalize is not None:
        mean, std, channels_last = device_normalize
        val_loader = DeviceLoader(val_loader, mean, std, device, channels_last)
        if train_loader is not None:
            train_loader = DeviceLoader(train_loader, mean, std, device, channels_last)
    if gpu_decode is not None:
        from .gpu_decode import GpuAugment, GpuDecodeLoader
        augment = GpuAugment(gpu_decode.img_size, gpu_decode.mean, gpu_decode.std, device, gpu_decode.channels_last)
        val_loader = GpuDecodeLoader(val_loader, augment, gpu_decode.decode_threads)
        if train_loader is not None:
            train_loader = GpuDecodeLoader(train_loader, augment, gpu_decode.decode_threads, slots)
    return DataBundle(train_loader, val_loader, train_sampler, len(val_set.classes), list(val_set.classes),
                      len(train_set) if train_set is not None else 0, len(val_set), steps)
