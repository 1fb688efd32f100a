"""The GPU half of the input pipeline (``--decode gpu``): the GPU decodes and augments what workers read.

For its share of the images (``gpu_share``, ``--gpu-decode-share``) a CPU worker does only
what is cheap: read the file, read its size from the header, and draw the sample's crop box and flip
(seeded per sample exactly like the CPU path, see :func:`ecanet.data.sample_seed`). The GPU decodes those
with nvJPEG (``torchvision.io.decode_jpeg(..., device="cuda")``, batched; on A100/H100/H200 the JPEG
hardware engines), then cuts and resizes (bilinear, antialiased) every crop of the batch in one Triton
launch (:mod:`ecanet.data.gpu.crop`; PyTorch calls per image where Triton is missing) and flips. The rest of
the images are decoded and cropped by the worker with PIL, exactly as ``--decode cpu`` does, and travel as ready
``S x S`` crops. The two halves are merged, normalised and stacked on the GPU: the training step receives
a ready ``(B, 3, S, S)`` tensor. Decoding runs on side CUDA streams in background threads, ahead of the
training step.

Why a split exists: nvJPEG's work beside training takes GPU time from the training step, and where the
GPU's JPEG decoding is the slower side (GPUs without JPEG engines), the CPU workers can take part of the
work, as DALI's ``hw_decoder_load`` does. Even where the JPEG engines alone outpace the cores, sending every
image to them costs the training step more GPU time than sharing the work, so the default share ('auto',
:func:`ecanet.data.resolve_gpu_share`) is 0.7 where there are enough workers (the measured shares are in
``docs/design/input_pipeline.md``). Which images go where depends on the sample index only.

Broken files: one whose header cannot be read is skipped and counted by the worker on either side. A JPEG
whose header reads but whose data nvJPEG and PIL both reject only surfaces on the GPU side; it is replaced
by a grey image with a logged warning and is not in the per-epoch count of unreadable images.

Non-JPEG files (PNG, ...) and JPEGs in modes nvJPEG cannot decode (e.g. CMYK) in the GPU share are
decoded and cropped by the worker instead, exactly like the CPU share, and travel as ready crops too.

Training batches cross from the workers in reusable pinned shared-memory slots (:class:`SlotCollate`,
:mod:`ecanet.data.gpu.slots`), which spares the training process a pin-memory thread that holds the interpreter
lock the training threads need. Otherwise (evaluation, a batch that does not fit a slot, no CUDA, no workers) each
batch crosses from a worker to the main process as six tensors (:data:`EncodedBatch`): all its JPEG
files concatenated into one byte tensor, their sizes, the stacked ready crops, the plans, the targets and
the unreadable flags. Every tensor sent costs a shared-memory segment and a file descriptor, and the
pin-memory thread pins each one separately, so one tensor per image would make the transfer the loader's limit.
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
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms import functional as TF

from ...config import DEFAULT_GPU_DECODE_THREADS
from ..folders import (UNREADABLE_ERRORS, RegionDecoder, SafeScanImageFolder, decode_box, is_decodable_jpeg,
                       load_readable, pil_rgb_loader, read_file_and_header, seeded_cpu_rng, to_rgb)
from .slots import BatchSlots, SlotBatch

log = logging.getLogger(__name__)

FLIP_COLUMN = 4              # the plan column that is 1 when the GPU is to flip the row's crop
READY_COLUMN = 7             # the plan column that is 1 when the row's image is a crop made on the CPU
RRC_RATIO = [3 / 4, 4 / 3]   # RandomResizedCrop's default aspect-ratio range (torchvision)
# Batches decoded ahead of the training step, beyond one per decode thread. Beside training, GPU decoding comes
# in bursts (it waits behind the training kernels), so a deeper queue keeps a slow burst from delaying the step.
# Each ready batch holds its (B, 3, S, S) float32 images on the GPU: 154 MB at B = 256, S = 224, so up to about
# 2 GB in all.
PREFETCH_BATCHES = 10
_GOLDEN_FRACTION = 0.6180339887498949  # Weyl sequence: any run of indices is split close to the share


Box = tuple[int, int, int, int]
"""``(top, left, height, width)`` of a crop in the full image."""
WHOLE_IMAGE = (0, 0, -1, -1)  # a box row that means "the whole image" (a height <= 0)


def as_box(row: Sequence[int]) -> Box | None:
    """A (top, left, height, width) box row as a :data:`Box`, or None for :data:`WHOLE_IMAGE` (height <= 0)."""
    return (int(row[0]), int(row[1]), int(row[2]), int(row[3])) if row[2] > 0 else None


def cut_box(image: torch.Tensor, box: Box | None) -> torch.Tensor:
    """The ``(3, h, w)`` view of ``image`` (3, H, W) inside ``box``; the whole image when there is none."""
    if box is None:
        return image
    top, left, h, w = box
    return image[:, top:top + h, left:left + w]


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

    def as_tensor(self, ready: bool = False) -> torch.Tensor:
        """(8,): the fields in order, then 1 when the payload is already the final crop (made on the CPU,
        flipped already: its flip field is then 0 so that the GPU does not flip it again)."""
        return torch.tensor([self.top, self.left, self.height, self.width, int(self.flip and not ready),
                             self.resize_h, self.resize_w, int(ready)], dtype=torch.int32)

    def apply(self, image: Image.Image, img_size: int, cropped: bool = False) -> Image.Image:
        """The crop on the CPU with torchvision's PIL functions: what ``RandomResizedCrop`` + flip (training)
        or ``Resize`` + ``CenterCrop`` (evaluation) of the ``--decode cpu`` path compute, pixel for pixel.
        ``cropped``: ``image`` is the training box already (:func:`ecanet.data.decode_box`), so it is only
        resized."""
        if self.resize_h:
            image = TF.resize(image, [self.resize_h, self.resize_w])
            return TF.crop(image, self.top, self.left, self.height, self.width)
        if cropped:  # resized_crop is crop, then this resize
            image = TF.resize(image, [img_size, img_size])
        else:
            image = TF.resized_crop(image, self.top, self.left, self.height, self.width, [img_size, img_size])
        return TF.hflip(image) if self.flip else image

    @property
    def box(self) -> Box:
        return self.top, self.left, self.height, self.width


def decoded_on_gpu(index: int, gpu_share: float) -> bool:
    """Whether sample ``index`` goes to nvJPEG (else a CPU worker decodes it): a fixed, well-spread
    ``gpu_share`` of the indices."""
    return (index * _GOLDEN_FRACTION) % 1.0 < gpu_share


def train_crop_plan(image: Image.Image, seed: int, min_scale: float, hflip: float) -> CropPlan:
    """The crop box and flip the CPU path (RandomResizedCrop + RandomHorizontalFlip) draws for this seed.

    The same torchvision code, drawing from the global RNG seeded with the sample's seed in the same
    order, so ``--decode gpu`` and ``--decode cpu`` cut the same boxes. Only the header of ``image`` is
    read (its size).
    """
    with seeded_cpu_rng(seed):
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


class EncodedImageFolder(SafeScanImageFolder):
    """Items are ``(payload, target, unreadable, plan)`` with the (8,) crop plan drawn from the sample's seed
    (:meth:`CropPlan.as_tensor`). For the ``gpu_share`` of the samples whose file is a JPEG nvJPEG decodes,
    the payload is the file's bytes (1-D uint8), to be decoded and cropped on the GPU; for all others it is
    the final (3, S, S) uint8 crop, made here (the plan's ready column says which). With ``region_decode``
    a training JPEG made here is decoded only inside its crop box (:class:`RegionDecoder`)."""

    def __init__(self, root: str, train: bool, img_size: int, val_resize: int, min_crop_scale: float = 0.08,
                 hflip: float = 0.5, gpu_share: float = 1.0, region_decode: bool = False) -> None:
        super().__init__(root)
        self.train, self.img_size, self.val_resize = train, img_size, val_resize
        self.min_crop_scale, self.hflip, self.gpu_share = min_crop_scale, hflip, gpu_share
        self.region_decoder = RegionDecoder() if region_decode and train else None

    def plan(self, header: Image.Image, seed: int) -> CropPlan:
        """The sample's crop plan, from its image header (size) and seed."""
        if self.train:
            return train_crop_plan(header, seed, self.min_crop_scale, self.hflip)
        return val_crop_plan(*header.size, self.img_size, self.val_resize)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int, torch.Tensor]:
        index, seed = key if isinstance(key, tuple) else (key, 0)
        if not decoded_on_gpu(index, self.gpu_share):
            (crop, plan), target, unreadable = load_readable(self, index, lambda path: self.crop_here(path, seed))
            return TF.pil_to_tensor(crop), target, unreadable, plan.as_tensor(ready=True)    # (3, S, S) uint8
        (payload, header), target, unreadable = load_readable(self, index, read_payload)
        plan = self.plan(header, seed)
        if isinstance(payload, torch.Tensor):  # JPEG bytes, for nvJPEG
            return payload, target, unreadable, plan.as_tensor()
        crop = TF.pil_to_tensor(plan.apply(payload, self.img_size))                   # (3, S, S) uint8
        return crop, target, unreadable, plan.as_tensor(ready=True)

    def crop_here(self, path: str, seed: int) -> tuple[Image.Image, CropPlan]:
        """The final crop of one image of the CPU share, and its plan. A training JPEG is decoded only inside
        its box where a :class:`RegionDecoder` is in use; anything else is decoded whole with PIL."""
        if self.region_decoder is None:
            image = pil_rgb_loader(path)
            plan = self.plan(image, seed)
            return plan.apply(image, self.img_size), plan
        data, header = read_file_and_header(path)
        plan = self.plan(header, seed)
        return plan.apply(decode_box(data, header, plan.box, self.region_decoder), self.img_size, cropped=True), plan


def read_payload(path: str) -> tuple[torch.Tensor | Image.Image, Image.Image]:
    """A baseline RGB/greyscale JPEG as its bytes (1-D uint8, decoded later on the GPU) and the PIL image
    of its header (size and mode; pixels not decoded). Anything else (PNG, CMYK JPEG, ...) is decoded here
    to RGB and returned twice: the worker crops it like the CPU share. Decoding here, inside
    :func:`load_readable`, means a broken file is skipped like any unreadable one."""
    data, image = read_file_and_header(path)
    if is_decodable_jpeg(data, image):
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), image
    rgb = to_rgb(image)
    return rgb, rgb


EncodedBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""``(jpeg_bytes, jpeg_sizes, ready, plans, targets, unreadable)``, one batch of B images as six tensors:

- ``jpeg_bytes`` (N,) uint8: the JPEG files of the G rows decoded on the GPU (plan column
  :data:`READY_COLUMN` is 0), concatenated in batch order; empty when G is 0.
- ``jpeg_sizes`` (G,) int64: their lengths in bytes, to split ``jpeg_bytes`` back into files.
- ``ready`` (R, 3, S, S) uint8: the crops made on the CPU, rows in batch order; (0, 3, 0, 0) when R is 0.
- ``plans`` (B, 8) int32 (:meth:`CropPlan.as_tensor`), ``targets`` (B,) int64, ``unreadable`` (B,) int64.
"""


Item = tuple[torch.Tensor, int, int, torch.Tensor]
"""An :class:`EncodedImageFolder` item: (JPEG bytes or ready crop, target, unreadable count, plan)."""


def split_items(batch: Sequence[Item]) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """The (B, 8) int32 plans of a list of items, the JPEG files of its GPU rows and the crops of its CPU rows."""
    plans = torch.stack([item[3] for item in batch])                                   # (B, 8) int32
    is_ready = plans[:, READY_COLUMN].tolist()
    jpegs = [item[0] for item, done in zip(batch, is_ready) if not done]
    crops = [item[0] for item, done in zip(batch, is_ready) if done]
    return plans, jpegs, crops


def collate_encoded(batch: Sequence[Item]) -> EncodedBatch:
    """The :data:`EncodedBatch` of a list of :class:`EncodedImageFolder` items: a fixed six tensors however
    large the batch, so that crossing to the main process and pinning cost the same few operations."""
    plans, jpegs, crops = split_items(batch)
    jpeg_bytes = torch.cat(jpegs) if jpegs else torch.empty(0, dtype=torch.uint8)     # (N,) uint8
    jpeg_sizes = torch.tensor([len(jpeg) for jpeg in jpegs], dtype=torch.int64)       # (G,)
    ready = torch.stack(crops) if crops else torch.empty(0, 3, 0, 0, dtype=torch.uint8)  # (R, 3, S, S)
    targets = torch.tensor([item[1] for item in batch], dtype=torch.int64)            # (B,)
    unreadable = torch.tensor([item[2] for item in batch], dtype=torch.int64)         # (B,)
    return jpeg_bytes, jpeg_sizes, ready, plans, targets, unreadable


class SlotCollate:
    """:func:`collate_encoded` that writes the batch into a slot of ``slots`` (:mod:`ecanet.data.gpu.slots`) and
    returns its :class:`~ecanet.data.gpu.slots.SlotBatch`; the ordinary :data:`EncodedBatch` where it does not fit
    or no slot is free. ``crop``: the side of the CPU rows' crops (``--img-size``)."""

    def __init__(self, slots: BatchSlots, crop: int) -> None:
        self.slots, self.crop = slots, crop

    def __call__(self, batch: Sequence[Item]) -> SlotBatch | EncodedBatch:
        plans, jpegs, crops = split_items(batch)
        written = self.slots.write(plans, jpegs, crops, [item[1] for item in batch], [item[2] for item in batch],
                                   self.crop)
        return written if written is not None else collate_encoded(batch)


class GpuAugment:
    """Decode a batch on the GPU and turn it into a normalised ``(B, 3, S, S)`` tensor."""

    def __init__(self, img_size: int, mean: Sequence[float], std: Sequence[float], device: torch.device,
                 channels_last: bool = False, batched_crop: bool | None = None) -> None:
        """``batched_crop``: crop and resize the GPU share in one Triton launch per batch
        (:mod:`ecanet.data.gpu.crop`) rather than with PyTorch calls per image; None: where available."""
        from torchvision.io import ImageReadMode, decode_jpeg
        self._decode_jpeg, self._rgb = decode_jpeg, ImageReadMode.RGB
        self.img_size, self.device, self.channels_last = img_size, device, channels_last
        self.batched_crop = batched_crop_available(device) if batched_crop is None else batched_crop
        self._crop_resize_into = gpu_crop_module().crop_resize_into if self.batched_crop else None  # looked up once
        scale = 1.0 / (255.0 * torch.tensor(std))                                              # (3,) float32
        shift = -torch.tensor(mean) / torch.tensor(std)
        self._scale_values, self._shift_values = scale.tolist(), shift.tolist()  # the same float32 values: kernel
        self.scale, self.shift = scale.view(1, 3, 1, 1).to(device), shift.view(1, 3, 1, 1).to(device)  # (1, 3, 1, 1)

    def decode(self, jpegs: Sequence[torch.Tensor], boxes: Sequence[Box | None]) -> list[torch.Tensor]:
        """uint8 (3, h, w) images on the device from 1-D JPEG byte tensors, each cut to its box where one is
        given (a view). See :meth:`decode_whole`."""
        box_array = np.array([box if box is not None else WHOLE_IMAGE for box in boxes], dtype=np.int64)
        images, box_array = self.decode_whole(jpegs, box_array.reshape(-1, 4))
        return [cut_box(image, as_box(box)) for image, box in zip(images, box_array.tolist())]

    def decode_whole(self, jpegs: Sequence[torch.Tensor], boxes: np.ndarray) -> tuple[list[torch.Tensor], np.ndarray]:
        """uint8 (3, H, W) images on the device from 1-D JPEG byte tensors, and the (N, 4) boxes
        (top, left, height, width; :data:`WHOLE_IMAGE` = the whole image) to cut from them: nvJPEG, one
        batched call; a file it cannot decode goes to :meth:`_decode_fallback`, whose image is its box already.

        torchvision's nvJPEG waits on the GPU (``cudaEventSynchronize``) about once per image: on a busy GPU
        each wait stalls. nvImageCodec's batched decoder, the JPEG engines included,
        waits the same way (docs/design/input_pipeline.md), so this uses torchvision's.
        """
        try:
            images = self._decode_jpeg(list(jpegs), mode=self._rgb, device=self.device)
        except RuntimeError:  # one bad file fails the batched call: decode one by one
            images = [self._decode_one(jpeg) for jpeg in jpegs]
        if any(image is None for image in images):
            boxes = boxes.copy()
            for i, image in enumerate(images):
                if image is None:
                    images[i] = self._decode_fallback(jpegs[i], as_box(boxes[i].tolist()))
                    boxes[i] = WHOLE_IMAGE
        return images, boxes

    def _decode_one(self, jpeg: torch.Tensor) -> torch.Tensor | None:
        try:
            return self._decode_jpeg(jpeg, mode=self._rgb, device=self.device)
        except RuntimeError:
            return None

    def _decode_fallback(self, jpeg: torch.Tensor, box: Box | None) -> torch.Tensor:
        """PIL on the CPU, else a grey image (logged): a broken file never stops the batch."""
        try:
            with Image.open(io.BytesIO(jpeg.numpy().tobytes())) as image:
                rgb = np.array(to_rgb(image))                                           # (H, W, 3)
            return cut_box(torch.from_numpy(rgb).permute(2, 0, 1), box).to(self.device)
        except UNREADABLE_ERRORS as exc:
            log.warning("a JPEG in this batch cannot be decoded (%s); a grey image stands in for it", exc)
            size = (box[2], box[3]) if box is not None else (self.img_size, self.img_size)
            return torch.full((3, *size), 128, dtype=torch.uint8, device=self.device)

    def __call__(self, jpeg_bytes: torch.Tensor, jpeg_sizes: torch.Tensor, ready: torch.Tensor,
                 plans: torch.Tensor) -> torch.Tensor:
        """The normalised (B, 3, S, S) batch from the first four tensors of an :data:`EncodedBatch`:
        ``jpeg_bytes`` (N,) and ``jpeg_sizes`` (G,) for the rows decoded here, ``ready`` (R, 3, S, S) uint8
        for the crops already made on the CPU, ``plans`` (B, 8) from :meth:`CropPlan.as_tensor`.

        Per batch, not per image, where it can be (NumPy on the plans): this runs in a decode thread and holds
        the interpreter lock the training threads need (docs/design/input_pipeline.md)."""
        plan_array = plans.numpy()  # a CPU tensor: no device sync                   # (B, 8) int32
        is_ready = plan_array[:, READY_COLUMN] != 0
        gpu_rows, ready_rows = np.flatnonzero(~is_ready), np.flatnonzero(is_ready)
        assert len(gpu_rows) == len(jpeg_sizes) and len(ready_rows) == len(ready)
        jpegs = torch.split(jpeg_bytes, jpeg_sizes.tolist()) if len(gpu_rows) else ()  # G views of (n_i,)
        if self._crop_resize_into is not None:
            return self._assemble_in_kernel(jpegs, ready, plan_array, gpu_rows, ready_rows)
        return self._assemble_per_image(jpegs, ready, plan_array, gpu_rows, ready_rows)

    def _layout(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def _assemble_in_kernel(self, jpegs: Sequence[torch.Tensor], ready: torch.Tensor, plan_array: np.ndarray,
                            gpu_rows: np.ndarray, ready_rows: np.ndarray) -> torch.Tensor:
        """The batch straight in the model's layout: the crop kernel writes the GPU share's rows normalised
        and flipped (:func:`ecanet.data.gpu.crop.crop_resize_into`); the CPU share's crops, flipped in the worker
        already, are normalised into theirs."""
        size = self.img_size
        out = torch.empty(len(plan_array), 3, size, size, device=self.device,
                          memory_format=self._layout())                                  # (B, 3, S, S)
        if len(ready_rows) == len(out):  # every crop made on the CPU: normalise straight into the batch
            torch.addcmul(self.shift, ready.to(self.device, non_blocking=True).float(), self.scale, out=out)
        elif len(ready_rows):
            normalised = torch.addcmul(self.shift, ready.to(self.device, non_blocking=True).float(), self.scale)
            out.index_copy_(0, torch.from_numpy(ready_rows).to(self.device, non_blocking=True), normalised)
        if len(gpu_rows):
            images, boxes, specs = self._decode_gpu_share(jpegs, plan_array[gpu_rows])
            self._crop_resize_into(out, images, boxes, specs, gpu_rows, plan_array[gpu_rows, FLIP_COLUMN],
                                   self._scale_values, self._shift_values)
        return out

    def _assemble_per_image(self, jpegs: Sequence[torch.Tensor], ready: torch.Tensor, plan_array: np.ndarray,
                            gpu_rows: np.ndarray, ready_rows: np.ndarray) -> torch.Tensor:
        """Where Triton is missing: each GPU-share crop with PyTorch calls (:func:`crop_resize_one`), then the
        two shares' rows merged, flipped and normalised over the whole batch."""
        size = (self.img_size, self.img_size)
        parts = []  # (batch rows, their (n, 3, S, S) float images in 0..255)
        if len(ready_rows):
            parts.append((ready_rows, ready.to(self.device, non_blocking=True).float()))
        if len(gpu_rows):
            images, boxes, specs = self._decode_gpu_share(jpegs, plan_array[gpu_rows])
            parts.append((gpu_rows, torch.cat([crop_resize_one(cut_box(image, as_box(box)), tuple(spec), size[0])
                                               for image, box, spec in zip(images, boxes.tolist(), specs.tolist())])))
        if len(parts) == 1:
            out = parts[0][1]                                                           # (B, 3, S, S)
        else:  # a split batch: put each part's rows back in batch order
            out = torch.empty(len(plan_array), 3, *size, device=self.device)           # (B, 3, S, S)
            for rows, images in parts:
                out.index_copy_(0, torch.from_numpy(rows).to(self.device, non_blocking=True), images)
        flip = torch.from_numpy(plan_array[:, FLIP_COLUMN] != 0)  # CPU-made crops are flipped already: no flip
        if bool(flip.any()):
            flip_dev = flip.to(self.device, non_blocking=True)
            out = torch.where(flip_dev.view(-1, 1, 1, 1), out.flip(-1), out)
        # (x/255 - mean)/std, written straight into the layout the model wants
        return torch.addcmul(self.shift, out, self.scale, out=torch.empty_like(out, memory_format=self._layout()))

    def _decode_gpu_share(self, jpegs: Sequence[torch.Tensor], plans: np.ndarray
                          ) -> tuple[list[torch.Tensor], np.ndarray, np.ndarray]:
        """The GPU share's decoded whole images (:meth:`decode_whole`), the (G, 4) boxes to cut from them and
        the (G, 4) :data:`ecanet.data.gpu.crop.CropSpec` rows, for its (G, 8) plan rows. Training: each image is cut
        to its plan's box and resized to S x S; evaluation (resize_h > 0): whole, resized to (resize_h,
        resize_w), and the S x S window at (top, left) kept."""
        top, left, height, width, _, resize_h, resize_w, _ = plans.astype(np.int64).T
        evaluation = resize_h > 0
        boxes = np.stack([top, left, np.where(evaluation, -1, height), np.where(evaluation, -1, width)], axis=1)
        specs = np.stack([np.where(evaluation, resize_h, self.img_size), np.where(evaluation, resize_w, self.img_size),
                          np.where(evaluation, top, 0), np.where(evaluation, left, 0)], axis=1)
        images, boxes = self.decode_whole(jpegs, boxes)
        return images, boxes, specs


def gpu_crop_module() -> Any:
    """:mod:`ecanet.data.gpu.crop` (the batched Triton crop-resize), or None where Triton does not import."""
    try:
        from . import crop as gpu_crop
    except ImportError:
        return None
    return gpu_crop


def batched_crop_available(device: torch.device) -> bool:
    """Whether :func:`ecanet.data.gpu.crop.crop_resize` can run on ``device``: CUDA with Triton, or the CPU under
    Triton's interpreter (tests)."""
    gpu_crop = gpu_crop_module()
    return gpu_crop is not None and (torch.device(device).type == "cuda" or gpu_crop.INTERPRETER)


def crop_resize_one(image: torch.Tensor, spec: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """What :func:`ecanet.data.gpu.crop.crop_resize` computes, for one image with plain PyTorch calls (the path
    where Triton is missing, and the tests' reference): (1, 3, S, S) float in 0..255."""
    out_h, out_w, offset_y, offset_x = spec
    x = image[None].float()                                                         # (1, 3, h, w)
    if tuple(x.shape[-2:]) != (out_h, out_w):
        x = F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=True)
    return x[:, :, offset_y:offset_y + size, offset_x:offset_x + size]               # (1, 3, S, S)


class GpuDecodeLoader:
    """Wraps a DataLoader of :class:`EncodedImageFolder` batches; yields ``(images, targets, unreadable)``
    with images decoded and augmented on the GPU.

    ``decode_threads`` batches are prepared at once, each by a thread with its own CUDA stream (torchvision
    runs one nvJPEG call at a time per process, but the threads overlap one batch's decoding with another's
    cropping and copying). Batches come out in order; the consumer's stream waits for each batch's event,
    so decoding overlaps the training steps.
    """

    def __init__(self, loader: Any, augment: GpuAugment, decode_threads: int = DEFAULT_GPU_DECODE_THREADS,
                 slots: BatchSlots | None = None) -> None:
        """``slots``: the :class:`~ecanet.data.gpu.slots.BatchSlots` the loader's :class:`SlotCollate` writes into."""
        self.loader, self.augment, self.decode_threads = loader, augment, max(1, decode_threads)
        self.slots = slots
        self.ordinary_batches = 0  # batches of this iteration that did not come in a slot (slots only)
        self._local = threading.local()

    def __len__(self) -> int:
        return len(self.loader)

    def _process(self, batch: EncodedBatch | SlotBatch
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.cuda.Event]:
        in_slot = isinstance(batch, SlotBatch)
        jpeg_bytes, jpeg_sizes, ready, plans, targets, unreadable = self.slots.read(batch) if in_slot else batch
        device = self.augment.device
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = torch.cuda.Stream(device)
        with torch.cuda.device(device), torch.cuda.stream(stream):
            # the slot's arrays go to the GPU first; everything else reads them on the CPU, synchronously
            ready = ready.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(stream)
            unreadable = unreadable.clone() if in_slot else unreadable
            images = self.augment(jpeg_bytes, jpeg_sizes, ready, plans)
            event = torch.cuda.Event()
            event.record(stream)
        if in_slot:  # the copies out of the slot must be done before a worker writes into it again
            copied.synchronize()
            batch.release()
        return images, targets, unreadable, event

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        device = self.augment.device
        self.ordinary_batches = 0
        in_flight: collections.deque = collections.deque()
        batches = iter(self.loader)
        with concurrent.futures.ThreadPoolExecutor(self.decode_threads, thread_name_prefix="gpu-decode") as pool:
            try:
                while True:
                    while len(in_flight) < self.decode_threads + PREFETCH_BATCHES:
                        batch = next(batches, None)
                        if batch is None:
                            break
                        if self.slots is not None and not isinstance(batch, SlotBatch):
                            self.ordinary_batches += 1
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
                if self.ordinary_batches:
                    log.info("%d batches this epoch did not fit a loader slot (or found none free) and were sent "
                             "the ordinary way, which costs the training threads more time", self.ordinary_batches)
