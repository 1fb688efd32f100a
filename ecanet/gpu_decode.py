"""The GPU half of the input pipeline (``--decode gpu``): workers read bytes, the GPU decodes and augments.

CPU workers do only what is cheap: read the file, read its size from the header, and draw the sample's
crop box and flip (seeded per sample exactly like the CPU path, see :func:`ecanet.data.sample_seed`). The
GPU decodes the whole batch with nvJPEG (``torchvision.io.decode_jpeg(..., device="cuda")``), cuts each
crop, resizes it (bilinear, antialiased), flips, normalises and stacks: the training step receives a
ready ``(B, 3, S, S)`` tensor. Decoding runs on a side CUDA stream in a background thread, one batch
ahead, so it overlaps the previous training step.

Non-JPEG files (PNG, ...) and JPEGs nvJPEG refuses (e.g. CMYK) are decoded on the CPU in the worker
instead and travel as raw pixels; the rest of the path is the same.
"""
from __future__ import annotations

import collections
import concurrent.futures
import io
import logging
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import datasets
from torchvision.transforms import RandomResizedCrop

from .data import UNREADABLE_ERRORS, load_readable

log = logging.getLogger(__name__)

JPEG_MAGIC = b"\xff\xd8"
RRC_RATIO = [3 / 4, 4 / 3]   # RandomResizedCrop's default aspect-ratio range (torchvision)
PREFETCH_BATCHES = 2         # batches decoded ahead of the training step, beyond one per decode thread
DECODE_THREADS = 4           # batches decoded at once (nvJPEG's Huffman stage runs on the CPU)


@dataclass
class CropPlan:
    """What to do with one image: optionally resize the whole image to (resize_h, resize_w) first (0 = no),
    then cut (top, left, height, width), resize that to the output size, and flip if asked."""

    top: int
    left: int
    height: int
    width: int
    flip: bool
    resize_h: int = 0
    resize_w: int = 0

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor([self.top, self.left, self.height, self.width, int(self.flip), self.resize_h,
                             self.resize_w], dtype=torch.int32)


def train_crop_plan(image: Image.Image, seed: int, min_scale: float, hflip: float) -> CropPlan:
    """The crop box and flip the CPU path (RandomResizedCrop + RandomHorizontalFlip) draws for this seed.

    The same torchvision code, drawing from the global RNG seeded with the sample's seed in the same
    order, so ``--decode gpu`` and ``--decode cpu`` cut the same boxes. Only the header of ``image`` is
    read (its size).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        top, left, h, w = RandomResizedCrop.get_params(image, (min_scale, 1.0), RRC_RATIO)
        flip = hflip > 0 and bool(torch.rand(1) < hflip)
    return CropPlan(top, left, h, w, flip)


def val_crop_plan(width: int, height: int, img_size: int, val_resize: int) -> CropPlan:
    """Resize(val_resize) + CenterCrop(img_size) with torchvision's sizes and rounding."""
    short, long = min(width, height), max(width, height)
    new_short, new_long = val_resize, int(val_resize * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    top, left = int(round((new_h - img_size) / 2.0)), int(round((new_w - img_size) / 2.0))
    return CropPlan(top, left, img_size, img_size, False, new_h, new_w)


class EncodedImageFolder(datasets.ImageFolder):
    """Items are ``(payload, target, unreadable, plan)``: the file's JPEG bytes (or, for other formats,
    decoded RGB pixels) as a uint8 tensor, and the (5,) crop plan drawn from the sample's seed."""

    def __init__(self, root: str, train: bool, img_size: int, val_resize: int, min_crop_scale: float = 0.08,
                 hflip: float = 0.5) -> None:
        super().__init__(root)
        self.train, self.img_size, self.val_resize = train, img_size, val_resize
        self.min_crop_scale, self.hflip = min_crop_scale, hflip

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int, torch.Tensor]:
        index, seed = key if isinstance(key, tuple) else (key, 0)
        (payload, header), target, unreadable = load_readable(self, index, read_payload)
        if self.train:
            plan = train_crop_plan(header, seed, self.min_crop_scale, self.hflip)
        else:
            plan = val_crop_plan(*header.size, self.img_size, self.val_resize)
        return payload, target, unreadable, plan.as_tensor()


def read_payload(path: str) -> tuple[torch.Tensor, Image.Image]:
    """A baseline RGB/greyscale JPEG as its bytes (decoded later on the GPU), anything else as decoded
    RGB pixels (3, H, W); plus the PIL image of its header (size and mode; pixels not decoded)."""
    with open(path, "rb") as f:
        data = f.read()
    image = Image.open(io.BytesIO(data))  # parses the header only
    if data[:2] == JPEG_MAGIC and image.mode in ("RGB", "L"):
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), image
    rgb = np.array(image.convert("RGB"))                                     # (H, W, 3)
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous(), image        # (3, H, W)


def collate_encoded(batch: Sequence[tuple[torch.Tensor, int, int, torch.Tensor]]) -> tuple[list[torch.Tensor],
                                                                                              torch.Tensor,
                                                                                              torch.Tensor,
                                                                                              torch.Tensor]:
    payloads = [item[0] for item in batch]
    targets = torch.tensor([item[1] for item in batch], dtype=torch.int64)
    unreadable = torch.tensor([item[2] for item in batch], dtype=torch.int64)
    plans = torch.stack([item[3] for item in batch])  # (B, 5)
    return payloads, targets, unreadable, plans


class GpuAugment:
    """Decode a batch on the GPU and turn it into a normalised ``(B, 3, S, S)`` tensor."""

    def __init__(self, img_size: int, mean: Sequence[float], std: Sequence[float], device: torch.device,
                 channels_last: bool = False) -> None:
        from torchvision.io import ImageReadMode, decode_jpeg
        self._decode_jpeg, self._rgb = decode_jpeg, ImageReadMode.RGB
        self.img_size, self.device, self.channels_last = img_size, device, channels_last
        self.scale = (1.0 / (255.0 * torch.tensor(std, device=device))).view(1, 3, 1, 1)      # (1, 3, 1, 1)
        self.shift = (-torch.tensor(mean, device=device) / torch.tensor(std, device=device)).view(1, 3, 1, 1)

    def decode(self, payloads: list[torch.Tensor]) -> list[torch.Tensor]:
        """uint8 (3, H, W) images on the device: JPEG bytes through nvJPEG (one batched call), pixels copied."""
        jpeg_idx = [i for i, p in enumerate(payloads) if p.dim() == 1]
        images: list[torch.Tensor | None] = [None] * len(payloads)
        if jpeg_idx:
            try:
                decoded = self._decode_jpeg([payloads[i] for i in jpeg_idx], mode=self._rgb, device=self.device)
            except RuntimeError:  # one bad file fails the batched call: decode one by one
                decoded = [self._decode_one(payloads[i]) for i in jpeg_idx]
            for i, image in zip(jpeg_idx, decoded):
                images[i] = image
        for i, p in enumerate(payloads):
            if images[i] is None:
                images[i] = p.to(self.device, non_blocking=True)
        return images  # type: ignore[return-value]

    def _decode_one(self, payload: torch.Tensor) -> torch.Tensor:
        """nvJPEG, else PIL on the CPU, else a grey image (logged): a broken file never stops the batch."""
        try:
            return self._decode_jpeg(payload, mode=self._rgb, device=self.device)
        except RuntimeError:
            pass
        try:
            with Image.open(io.BytesIO(payload.numpy().tobytes())) as image:
                rgb = np.array(image.convert("RGB"))
            return torch.from_numpy(rgb).permute(2, 0, 1).to(self.device)
        except UNREADABLE_ERRORS as exc:
            log.warning("a JPEG in this batch cannot be decoded (%s); a grey image stands in for it", exc)
            return torch.full((3, self.img_size, self.img_size), 128, dtype=torch.uint8, device=self.device)

    def __call__(self, payloads: list[torch.Tensor], plans: torch.Tensor) -> torch.Tensor:
        images = self.decode(payloads)
        size = (self.img_size, self.img_size)
        plan_rows = plans.tolist()  # a CPU tensor: no device sync
        crops = []
        for image, (top, left, h, w, _, resize_h, resize_w) in zip(images, plan_rows):
            if resize_h:  # evaluation: resize the whole image, then cut the centre
                x = F.interpolate(image[None].float(), size=(resize_h, resize_w), mode="bilinear",
                                  antialias=True)                                      # (1, 3, rh, rw)
            else:         # training: cut first, convert only the crop
                x = image[None]                                                        # (1, 3, H, W) uint8
            crop = x[:, :, top:top + h, left:left + w]                                 # (1, 3, h, w)
            if crop.numel() == 0:  # a stand-in image smaller than the planned box
                crop = x
            crop = crop.float()
            if tuple(crop.shape[-2:]) != size:
                crop = F.interpolate(crop, size=size, mode="bilinear", align_corners=False, antialias=True)
            crops.append(crop)
        out = torch.cat(crops)                                                          # (B, 3, S, S), 0..255
        flip = plans[:, 4].bool()
        if bool(flip.any()):
            flip_dev = flip.to(self.device, non_blocking=True)
            out = torch.where(flip_dev.view(-1, 1, 1, 1), out.flip(-1), out)
        out = torch.addcmul(self.shift, out, self.scale)                               # (x/255 - mean)/std
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out


class GpuDecodeLoader:
    """Wraps a DataLoader of :class:`EncodedImageFolder` batches; yields ``(images, targets, unreadable)``
    with images decoded and augmented on the GPU.

    ``decode_threads`` batches are decoded at once, each by a thread with its own CUDA stream: nvJPEG's
    Huffman decoding of baseline JPEGs runs on the CPU (in C++, without the GIL), so one thread would cap
    the pipeline at one core's decoding speed. Batches come out in order; the consumer's stream waits for
    each batch's event, so decoding overlaps the training steps.
    """

    def __init__(self, loader: Any, augment: GpuAugment, decode_threads: int = DECODE_THREADS) -> None:
        self.loader, self.augment, self.decode_threads = loader, augment, max(1, decode_threads)
        self.batch_size = loader.batch_size
        self.sampler = loader.sampler
        self._local = threading.local()

    def __len__(self) -> int:
        return len(self.loader)

    def _process(self, batch: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.cuda.Event]:
        payloads, targets, unreadable, plans = batch
        device = self.augment.device
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = torch.cuda.Stream(device)
        with torch.cuda.device(device), torch.cuda.stream(stream):
            images = self.augment(payloads, plans)
            targets = targets.to(device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(stream)
        return images, targets, unreadable, event

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        device = self.augment.device
        in_flight: collections.deque = collections.deque()
        batches = iter(self.loader)
        with concurrent.futures.ThreadPoolExecutor(self.decode_threads, thread_name_prefix="gpu-decode") as pool:
            try:
                while True:
                    while len(in_flight) < self.decode_threads + PREFETCH_BATCHES:
                        batch = next(batches, None)
                        if batch is None:
                            break
                        in_flight.append(pool.submit(self._process, batch))
                    if not in_flight:
                        return
                    images, targets, unreadable, event = in_flight.popleft().result()
                    current = torch.cuda.current_stream(device)
                    current.wait_event(event)
                    images.record_stream(current)  # the allocator must not reuse them before the step is done
                    targets.record_stream(current)
                    yield images, targets, unreadable
            finally:
                for future in in_flight:
                    future.cancel()
