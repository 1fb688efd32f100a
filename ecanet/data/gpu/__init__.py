"""``--decode gpu``: JPEGs decoded by nvJPEG and augmented on the GPU, with a CPU share decoded by workers.

:func:`build_gpu_data` is the one entry point (``ecanet.data.build_data`` calls it). The parts:
:mod:`.decode` (datasets of encoded images, the decode threads and the augmentation), :mod:`.crop` (the Triton
kernel that crops, resizes, flips and normalises the GPU share into the batch) and :mod:`.slots` (pinned
shared-memory slots in which training batches cross from the worker processes).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from ...config import DEFAULT_GPU_DECODE_THREADS
from ..folders import build_image_folder, check_same_classes, region_decode_available
from ..loaders import DataBundle, ResumableSampler, ShardSampler, make_loader, steps_per_epoch
from .decode import (PREFETCH_BATCHES, EncodedImageFolder, GpuAugment, GpuDecodeLoader, SlotCollate,
                     collate_encoded)
from .slots import BatchSlots, mean_file_bytes, slot_bytes_for

log = logging.getLogger(__name__)

# Each finished batch a worker holds takes a slot of about 40 MB (256 images, share 0.7, ~106 kB JPEGs), so
# fewer are held than for the other loaders.
SLOT_PREFETCH_BATCHES_PER_WORKER = 2


@dataclass
class GpuDecodeOptions:
    """``--decode gpu``: what the GPU side needs (see :mod:`.decode`)."""

    img_size: int
    val_resize: int
    min_crop_scale: float
    hflip: float
    mean: Sequence[float]
    std: Sequence[float]
    channels_last: bool
    gpu_share: float = 1.0
    decode_threads: int = DEFAULT_GPU_DECODE_THREADS


def _gpu_image_folder(root: Path, split: str, train: bool, options: GpuDecodeOptions,
                      region_decode: bool) -> Dataset:
    region_decode = region_decode and train and options.gpu_share < 1 and region_decode_available()
    return build_image_folder(root, split, make=lambda path: EncodedImageFolder(
        path, train, options.img_size, options.val_resize, options.min_crop_scale, options.hflip,
        options.gpu_share, region_decode))


def _loader_slots(train_set: Dataset, batch_size: int, workers: int, options: GpuDecodeOptions) -> Any:
    """The :class:`~.slots.BatchSlots` of ``--decode gpu``'s training loader: one per batch the
    workers may hold finished (:data:`SLOT_PREFETCH_BATCHES_PER_WORKER` each) and per batch decoded ahead,
    pinned. None, with a warning, where shared memory is short: batches then travel the ordinary way."""
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




def build_gpu_data(root: Path, *, batch_size: int, val_batch_size: int, workers: int, seed: int, rank: int,
                   world_size: int, device: torch.device, evaluate_only: bool, options: GpuDecodeOptions,
                   region_decode: bool) -> DataBundle:
    """``--decode gpu``'s loaders: workers read the bytes and draw crop boxes for the images the GPU decodes
    and augments (``options.gpu_share`` of them), and decode and crop the others themselves; the main
    process's decode threads finish each batch on the device (:class:`.decode.GpuDecodeLoader`)."""
    val_set = _gpu_image_folder(root, "val", False, options, region_decode)
    train_set = None if evaluate_only else _gpu_image_folder(root, "train", True, options, region_decode)
    if train_set is not None:
        check_same_classes(train_set, val_set)
    pin = device.type == "cuda"
    val_loader = make_loader(val_set, ShardSampler(len(val_set), rank, world_size), val_batch_size, workers,
                             pin, drop_last=False, collate_fn=collate_encoded)
    augment = GpuAugment(options.img_size, options.mean, options.std, device, options.channels_last)
    train_loader, train_sampler, steps = None, None, 0
    if train_set is not None:
        train_sampler = ResumableSampler(len(train_set), seed, rank, world_size)
        steps = steps_per_epoch(train_sampler, batch_size, len(train_set))
        slots = _loader_slots(train_set, batch_size, workers, options) if workers > 0 and pin else None
        if slots is not None:  # batches come in pinned slots: no pin-memory thread
            loader = make_loader(train_set, train_sampler, batch_size, workers, False, drop_last=True,
                                 collate_fn=SlotCollate(slots, options.img_size),
                                 prefetch=SLOT_PREFETCH_BATCHES_PER_WORKER)
        else:
            loader = make_loader(train_set, train_sampler, batch_size, workers, pin, drop_last=True,
                                 collate_fn=collate_encoded)
        train_loader = GpuDecodeLoader(loader, augment, options.decode_threads, slots)
    return DataBundle(train_loader, GpuDecodeLoader(val_loader, augment, options.decode_threads), train_sampler,
                      len(val_set.classes), list(val_set.classes), len(train_set) if train_set is not None else 0,
                      len(val_set), steps)
