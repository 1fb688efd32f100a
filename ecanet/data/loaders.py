"""Samplers and loaders: resumable index-order sampling, sharding over ranks, synthetic batches.

The training sampler's order is a pure function of (seed, epoch), so a run resumed in the middle of an
epoch sees exactly the batches it had not yet seen, in the same order, for any number of workers.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..config import MAX_AUTO_WORKERS
from ..signals import ignore_stop_signals
from ..errors import ConfigError
from .folders import sample_seed

# The shuffle of epoch e under seed s is seeded with s * EPOCH_SEED_STRIDE + e: a prime above any run's
# epoch count, so no two (seed, epoch) pairs of such runs share a shuffle. Fixed: resumed runs rely on it.
EPOCH_SEED_STRIDE = 10_007

PREFETCH_BATCHES_PER_WORKER = 4


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
        g = torch.Generator().manual_seed(self.seed * EPOCH_SEED_STRIDE + self.epoch)
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
                      worker_init_fn=ignore_stop_signals if workers > 0 else None, **kwargs)


def steps_per_epoch(sampler: "ResumableSampler", batch_size: int, dataset_size: int) -> int:
    """Full batches per epoch on each rank; an error when a rank's share holds not even one."""
    steps = sampler.per_rank // batch_size
    if steps == 0:
        raise ConfigError(f"--batch-size {batch_size} is larger than each process's share of the "
                          f"{dataset_size} training images ({sampler.per_rank}); use a smaller "
                          f"batch size or fewer processes.")
    return steps


def shutdown_workers(loader: Any) -> None:
    """Stop the worker processes of ``loader`` (a DataLoader, or a wrapper holding one as ``.loader``) now.

    Persistent workers otherwise run until the loader is garbage-collected, and go on loading (and logging
    into the run's ``train.log``, which they share) the batches they had prefetched. DataLoader offers no
    public way to stop them; this does what its iterator's ``__del__`` does.
    """
    while loader is not None and not isinstance(loader, DataLoader):
        loader = getattr(loader, "loader", None)
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
        loader._iterator = None


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
    synthetic: bool = False   # random images: ``classes`` are made-up names, "0" to "N-1"

    @property
    def folder_classes(self) -> list[str] | None:
        """The dataset's class names, None for synthetic data, whose names say nothing about a checkpoint's."""
        return None if self.synthetic else self.classes

    def close(self) -> None:
        """Stop the loaders' worker processes (see :func:`shutdown_workers`)."""
        shutdown_workers(self.train_loader)
        shutdown_workers(self.val_loader)


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


