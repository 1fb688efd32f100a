"""Data: ImageFolder datasets with the paper's transforms, resumable samplers, loaders, synthetic data.

Reproducibility: every training sample's augmentation is seeded by (run seed, epoch, sample index), not by
which worker happens to load it. Together with the index-order sampler this makes an epoch's batches a
pure function of (seed, epoch), so a run resumed in the middle of an epoch sees exactly the batches
it had not yet seen, in the same order, with the same crops, for any number of workers.

Unreadable images are skipped (the next image stands in, so batch shapes never change) with a warning
naming the file; the count is returned with every sample so the trainer can report it per epoch.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torchvision import transforms

from ..config import NO_DATASET_MESSAGE
from ..constants import IMAGENET_IMG_SIZE, IMAGENET_MEAN, IMAGENET_STD, IMAGENET_VAL_RESIZE
from ..errors import ConfigError
from .folders import (RegionCropImageFolder, RobustImageFolder, build_image_folder, check_same_classes,
                      region_decode_available, sample_seed)
from .loaders import (DataBundle, DeviceLoader, ResumableSampler, ShardSampler, SyntheticLoader, default_workers,
                      make_loader, steps_per_epoch)

log = logging.getLogger(__name__)

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "MAX_BAD_IMAGE_FRACTION", "DataBundle", "DeviceLoader", "RegionCropImageFolder",
    "ResumableSampler", "RobustImageFolder", "ShardSampler", "SyntheticLoader", "build_data", "build_data_from_config",
    "build_train_transform", "build_val_transform", "default_workers", "sample_seed", "synthetic_data",
]

MAX_BAD_IMAGE_FRACTION = 0.01     # stop the run when more than 1% of an epoch's images are unreadable


# ------------------------------------------------------------------------------------------- transforms

def build_train_transform(img_size: int = IMAGENET_IMG_SIZE, augment: str = "rrc", min_crop_scale: float = 0.08,
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


def build_val_transform(img_size: int = IMAGENET_IMG_SIZE, val_resize: int = IMAGENET_VAL_RESIZE,
                        mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                        uint8: bool = False) -> transforms.Compose:
    """The paper's evaluation transform: Resize(256) + CenterCrop(224) (single crop)."""
    tail = [transforms.PILToTensor()] if uint8 else [transforms.ToTensor(), transforms.Normalize(mean, std)]
    return transforms.Compose([transforms.Resize(val_resize), transforms.CenterCrop(img_size), *tail])



def build_data(root: str | os.PathLike | None, *, batch_size: int, val_batch_size: int, workers: int,
               seed: int, rank: int, world_size: int, device: torch.device, train_transform: Any,
               val_transform: Any, evaluate_only: bool = False, gpu_decode: Any = None,
               device_normalize: tuple[Sequence[float], Sequence[float], bool] | None = None,
               region_decode: bool = True) -> DataBundle:
    """ImageFolder loaders for ``root/train`` and ``root/val``, sharded over ``world_size`` ranks.

    With ``gpu_decode`` (an :class:`ecanet.data.gpu.GpuDecodeOptions`) the GPU pipeline builds them
    (:func:`ecanet.data.gpu.build_gpu_data`). Otherwise workers decode and augment with PIL; with
    ``device_normalize`` = (mean, std, channels_last) the transforms end in uint8 tensors and the loaders
    are wrapped in :class:`DeviceLoader`. ``region_decode`` (``--region-decode``; where nvImageCodec is
    installed): training JPEGs are decoded only inside their RandomResizedCrop box, with the same pixels
    (:class:`RegionCropImageFolder`).
    """
    if root is None:
        raise ConfigError(NO_DATASET_MESSAGE)
    root = Path(root)
    if gpu_decode is not None:
        from .gpu import build_gpu_data  # imports the GPU pipeline (and Triton) only when it is asked for
        return build_gpu_data(root, batch_size=batch_size, val_batch_size=val_batch_size, workers=workers,
                              seed=seed, rank=rank, world_size=world_size, device=device,
                              evaluate_only=evaluate_only, options=gpu_decode, region_decode=region_decode)
    val_set = build_image_folder(root, "val", val_transform)
    train_set = None
    if not evaluate_only:
        region = region_decode and RegionCropImageFolder.applies_to(train_transform) and region_decode_available()
        train_set = build_image_folder(root, "train", train_transform, make=(
            (lambda path: RegionCropImageFolder(path, train_transform)) if region else None))
        check_same_classes(train_set, val_set)
    pin = device.type == "cuda"
    val_loader: Any = make_loader(val_set, ShardSampler(len(val_set), rank, world_size), val_batch_size, workers,
                                  pin, drop_last=False)
    train_loader: Any = None
    train_sampler, steps = None, 0
    if train_set is not None:
        train_sampler = ResumableSampler(len(train_set), seed, rank, world_size)
        steps = steps_per_epoch(train_sampler, batch_size, len(train_set))
        train_loader = make_loader(train_set, train_sampler, batch_size, workers, pin, drop_last=True)
    if device_normalize is not None:
        mean, std, channels_last = device_normalize
        val_loader = DeviceLoader(val_loader, mean, std, device, channels_last)
        if train_loader is not None:
            train_loader = DeviceLoader(train_loader, mean, std, device, channels_last)
    return DataBundle(train_loader, val_loader, train_sampler, len(val_set.classes), list(val_set.classes),
                      len(train_set) if train_set is not None else 0, len(val_set), steps)


# ------------------------------------------------------------------------------------ from a configuration

SYNTHETIC_VAL_BATCHES = 4


def build_data_from_config(cfg: Any, info: Any, evaluate_only: bool = False) -> DataBundle:
    """The loaders a resolved configuration (``ecanet.config.Config``) asks for, for this process.

    ``info`` is the process's :class:`ecanet.distributed.DistInfo`. ``--synthetic`` gives random batches
    already on the device; ``--decode gpu`` the GPU pipeline; otherwise PIL in worker processes.
    """
    if cfg.synthetic:
        return synthetic_data(cfg, info)
    mean, std = cfg.mean or IMAGENET_MEAN, cfg.std or IMAGENET_STD
    gpu_decode = None
    if cfg.decode == "gpu":
        from .gpu import GpuDecodeOptions
        gpu_decode = GpuDecodeOptions(cfg.img_size, cfg.val_resize, cfg.min_crop_scale, cfg.hflip, mean, std,
                                      channels_last=cfg.channels_last, gpu_share=cfg.gpu_decode_share,
                                      decode_threads=cfg.gpu_decode_threads)
    train_transform = None if evaluate_only else build_train_transform(
        cfg.img_size, cfg.augment, cfg.min_crop_scale, cfg.crop_padding, cfg.hflip, cfg.random_erasing,
        mean, std, uint8=True)
    return build_data(cfg.data, batch_size=cfg.batch_size, val_batch_size=cfg.val_batch_size or cfg.batch_size,
                      workers=cfg.workers, seed=cfg.seed, rank=info.rank, world_size=info.world_size,
                      device=info.device, train_transform=train_transform,
                      val_transform=build_val_transform(cfg.img_size, cfg.val_resize, mean, std, uint8=True),
                      evaluate_only=evaluate_only, gpu_decode=gpu_decode,
                      device_normalize=(mean, std, cfg.channels_last), region_decode=cfg.region_decode)


def synthetic_data(cfg: Any, info: Any) -> DataBundle:
    """``--synthetic``: random images and labels on the device, ``--synthetic-size`` images per epoch."""
    num_classes = cfg.num_classes or 1000
    steps = max(1, cfg.synthetic_size // (cfg.batch_size * info.world_size))

    def make(num_steps: int) -> SyntheticLoader:
        return SyntheticLoader(cfg.batch_size, cfg.img_size, num_classes, num_steps, info.device, cfg.channels_last,
                               seed=cfg.seed + info.rank)

    return DataBundle(make(steps), make(SYNTHETIC_VAL_BATCHES), None, num_classes,
                      [str(i) for i in range(num_classes)], steps * cfg.batch_size * info.world_size,
                      SYNTHETIC_VAL_BATCHES * cfg.batch_size * info.world_size, steps, synthetic=True)
