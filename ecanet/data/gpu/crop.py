"""One Triton kernel that crops and resizes a whole batch of decoded images on the GPU (``--decode gpu``).

What it computes, for each image ``i`` of a batch, is what two or three small PyTorch calls per image compute
(:mod:`ecanet.data.gpu.decode` makes those calls where Triton is missing)::

    x = image[None].float()                                              # (1, 3, h, w) uint8 -> float
    x = F.interpolate(x, size=(out_h, out_w), mode="bilinear",            # antialiased bilinear (PyTorch's
                      align_corners=False, antialias=True)                # ``upsample_gen2d_aa``)
    crop = x[:, :, off_y:off_y + S, off_x:off_x + S]                      # (1, 3, S, S)

Training: ``image`` is the RandomResizedCrop box of the decoded image (a view), ``(out_h, out_w) = (S, S)``
and the offsets are 0. Evaluation: ``image`` is the whole picture, ``(out_h, out_w)`` is the Resize size
and the offsets cut the centre crop. Each output pixel needs only its own filter window, so the kernel
computes the S x S pixels of the crop straight from the source, with PyTorch's antialiasing weights
(triangle filter stretched by the shrink factor, normalised per axis; see :func:`_axis_span`).

Why a hand-written kernel: per image, PyTorch launches a conversion and a resize, and the decode thread runs
Python holding the interpreter lock that the training loop needs. For a 256-image batch that is 512 tiny
kernels that fill little of the GPU, and a Python loop over the images on the calling thread
(docs/design/input_pipeline.md). torchvision has no batched crop-resize for images of different sizes
(``roi_align`` takes one padded batch and averages instead of PyTorch's antialiasing filter). One launch per
batch replaces them all.

The images need not be contiguous or share a size: each is read through its own data pointer and strides
from a small int64 table (:func:`crop_table`), so the decoder's outputs and their box views are used as
they are, with no copy.

:func:`crop_resize_into` also finishes the batch in the same pass: each crop is normalised per channel
(``x * scale + shift``), mirrored where its plan says so, and written to its own row of the batch tensor in
whatever layout that has (channels_last included). Why: done afterwards, the merge of the two shares' rows,
the flip and the normalisation would be four more passes over the float32 batch (154 MB each at B = 256).
Fused, the GPU does less work and holds fewer temporary batches (docs/design/input_pipeline.md).

The kernel runs on CUDA tensors, and on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1`` set
before import), which is how the tests check it without a GPU.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
import triton
import triton.language as tl

# Kernels run on CPU tensors only in Triton's interpreter; it is chosen when the kernels are defined.
INTERPRETER = os.environ.get("TRITON_INTERPRET", "0") == "1"

# The int64 table, one row per image (crop_table): data pointer, channel / row / pixel strides, input
# height and width, resize height and width, window offsets y and x, the output row, mirror (0 or 1).
TABLE_COLUMNS = 12
BLOCK_PIXELS = 512   # output pixels per program: 4 per thread with 4 warps; each does its 3 channels
NUM_WARPS = 4
MAX_SIZE = 5792      # crops up to 5792 x 5792: cdiv(S * S, BLOCK_PIXELS) programs fit CUDA's grid limit of 65535
IDENTITY, IDENTITY_SHIFT = (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)  # x * 1 + 0 is x exactly: crops left in 0..255


@triton.jit
def _axis_span(index, offset, in_size, scale):
    """PyTorch's antialiased span along one axis for output positions ``index + offset``.

    As ``_compute_weights_span`` in ATen's UpSample code: the filter's centre in input pixels, its first
    input index and how many follow (clipped to the input), and the factor that maps a distance in input
    pixels to the filter's argument. Bilinear interpolation has support 1 (half its interp_size 2); when
    shrinking (scale > 1) the support and the triangle are stretched by the scale, which is the antialiasing.
    """
    stretch = tl.where(scale >= 1.0, scale, 1.0)
    inv_stretch = tl.math.div_rn(1.0, stretch)                          # exact, as ATen's float division
    center = scale * ((index + offset).to(tl.float32) + 0.5)
    first = tl.maximum((center - stretch + 0.5).to(tl.int32), 0)          # truncation, as C++'s cast
    count = tl.minimum((center + stretch + 0.5).to(tl.int32), in_size) - first
    return first, count, center, inv_stretch


@triton.jit
def _tap_weight(tap, first, count, center, inv_stretch):
    """The un-normalised triangle weight of input ``first + tap`` (0 beyond ``count``)."""
    distance = ((tap + first).to(tl.float32) - center + 0.5) * inv_stretch
    return tl.where(tap < count, tl.maximum(1.0 - tl.abs(distance), 0.0), 0.0)


@triton.jit
def _crop_resize_kernel(table_ptr, out_ptr, S, stride_n, stride_c, stride_y, stride_x,
                        scale_r, scale_g, scale_b, shift_r, shift_g, shift_b,
                        TABLE_COLUMNS: tl.constexpr, BLOCK: tl.constexpr):
    """out[row, c, y, x'] = crop[c, y, x] * scale_c + shift_c for a block of (y, x) of image i =
    program_id(0), where row is the table's output row and x' = S - 1 - x if it is mirrored, else x;
    float32, written through the output's element strides."""
    i = tl.program_id(0)
    row = table_ptr + i * TABLE_COLUMNS
    src = tl.load(row + 0).to(tl.pointer_type(tl.uint8))                 # the image's (0, 0, 0) element
    channel_stride = tl.load(row + 1)
    row_stride = tl.load(row + 2)
    pixel_stride = tl.load(row + 3)
    in_h = tl.load(row + 4).to(tl.int32)
    in_w = tl.load(row + 5).to(tl.int32)
    out_h = tl.load(row + 6).to(tl.int32)
    out_w = tl.load(row + 7).to(tl.int32)
    offset_y = tl.load(row + 8).to(tl.int32)
    offset_x = tl.load(row + 9).to(tl.int32)
    out_row = tl.load(row + 10)
    mirror = tl.load(row + 11) != 0
    # Input pixels per output pixel, rounded exactly as ATen's float division: a plain ``/`` compiles to
    # an approximate division on the GPU, and an error of one unit in the last place of the scale grows
    # with the output index (1.3e-2 of a grey level at the edge of a 224-pixel crop)
    scale_y = tl.math.div_rn(in_h.to(tl.float32), out_h.to(tl.float32))
    scale_x = tl.math.div_rn(in_w.to(tl.float32), out_w.to(tl.float32))
    # An upper bound on every span's count (count <= 2 * stretch + 1), the same for the whole image
    taps_y = (2.0 * tl.maximum(scale_y, 1.0)).to(tl.int32) + 2
    taps_x = (2.0 * tl.maximum(scale_x, 1.0)).to(tl.int32) + 2

    p = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)                   # (BLOCK,) pixel index in the crop
    in_crop = p < S * S
    y = p // S
    x = p % S
    first_y, count_y, center_y, inv_y = _axis_span(y, offset_y, in_h, scale_y)   # (BLOCK,) each
    first_x, count_x, center_x, inv_x = _axis_span(x, offset_x, in_w, scale_x)

    total_y = tl.zeros((BLOCK,), dtype=tl.float32)                        # the per-axis normalisers
    for t in range(0, taps_y):
        total_y += _tap_weight(t, first_y, count_y, center_y, inv_y)
    total_x = tl.zeros((BLOCK,), dtype=tl.float32)
    for t in range(0, taps_x):
        total_x += _tap_weight(t, first_x, count_x, center_x, inv_x)

    red = tl.zeros((BLOCK,), dtype=tl.float32)
    green = tl.zeros((BLOCK,), dtype=tl.float32)
    blue = tl.zeros((BLOCK,), dtype=tl.float32)
    for ty in range(0, taps_y):
        weight_y = tl.math.div_rn(_tap_weight(ty, first_y, count_y, center_y, inv_y), total_y)
        line = src + (first_y + ty).to(tl.int64) * row_stride                # (BLOCK,) pointers
        row_red = tl.zeros((BLOCK,), dtype=tl.float32)
        row_green = tl.zeros((BLOCK,), dtype=tl.float32)
        row_blue = tl.zeros((BLOCK,), dtype=tl.float32)
        for tx in range(0, taps_x):
            weight_x = tl.math.div_rn(_tap_weight(tx, first_x, count_x, center_x, inv_x), total_x)
            pixel = line + (first_x + tx).to(tl.int64) * pixel_stride
            valid = in_crop & (ty < count_y) & (tx < count_x)
            row_red += weight_x * tl.load(pixel, mask=valid, other=0).to(tl.float32)
            row_green += weight_x * tl.load(pixel + channel_stride, mask=valid, other=0).to(tl.float32)
            row_blue += weight_x * tl.load(pixel + 2 * channel_stride, mask=valid, other=0).to(tl.float32)
        red += weight_y * row_red
        green += weight_y * row_green
        blue += weight_y * row_blue

    out_x = tl.where(mirror, S - 1 - x, x)                                  # (BLOCK,) the horizontal flip
    out = out_ptr + out_row * stride_n + y.to(tl.int64) * stride_y + out_x.to(tl.int64) * stride_x
    tl.store(out, red * scale_r + shift_r, mask=in_crop)
    tl.store(out + stride_c, green * scale_g + shift_g, mask=in_crop)
    tl.store(out + 2 * stride_c, blue * scale_b + shift_b, mask=in_crop)


CropSpec = tuple[int, int, int, int]
"""``(out_h, out_w, offset_y, offset_x)``: resize the image to ``out_h x out_w``, keep the S x S window at
the offsets. Training crops: ``(S, S, 0, 0)``; evaluation: ``(resize_h, resize_w, top, left)``."""


def crop_table(images: Sequence[torch.Tensor], specs: Sequence[CropSpec], size: int) -> torch.Tensor:
    """The kernel's (N, TABLE_COLUMNS) int64 table on the CPU: each image's data pointer (bytes), its
    channel/row/pixel strides (elements), its size and its :data:`CropSpec`. Checks what the kernel, which
    reads raw pointers, cannot: one spec per image, uint8 (3, H, W) images all on one device, every window
    inside its resize (:func:`crop_table_boxes`, which builds the rows, with every image taken whole)."""
    if len(images) != len(specs):
        raise ValueError(f"{len(images)} images but {len(specs)} crop specs")
    for image in images:
        if image.dim() != 3 or image.shape[0] != 3 or image.dtype != torch.uint8 or min(image.shape) == 0:
            raise ValueError(f"expected a non-empty (3, H, W) uint8 image, got {tuple(image.shape)} {image.dtype}")
        if image.device != images[0].device:
            raise ValueError(f"images on {image.device} and {images[0].device}: one device per batch")
    whole = np.zeros((len(images), 4), dtype=np.int64)  # a box of height 0: the whole image
    return crop_table_boxes(images, whole, np.array(specs, dtype=np.int64).reshape(-1, 4), size)


def crop_table_boxes(images: Sequence[torch.Tensor], boxes: np.ndarray, specs: np.ndarray, size: int,
                     rows: np.ndarray | None = None, mirror: np.ndarray | None = None) -> torch.Tensor:
    """:func:`crop_table` for whole decoded images and the box to cut from each, computed per batch.

    ``images``: (3, H, W) uint8 images of any strides on one device, as a decoder returns them (dtype and
    device are not checked per image); ``boxes``: (N, 4) int (top, left, height, width), a height <= 0
    meaning the whole image; ``specs``: (N, 4) int :data:`CropSpec` rows; ``rows``: (N,) the output row of
    each crop (default: 0..N-1); ``mirror``: (N,) nonzero where a crop is flipped (default: none).

    Why per batch: cutting each box as a view and reading its pointer, strides and size image by image is
    Python on the decode thread, holding the interpreter lock the training threads wait for
    (docs/design/input_pipeline.md); here each image costs three attribute reads and the rest is NumPy."""
    n = len(images)
    if not (len(boxes) == len(specs) == n):
        raise ValueError(f"{n} images, {len(boxes)} boxes and {len(specs)} crop specs")
    pointers = np.fromiter((image.data_ptr() for image in images), dtype=np.int64, count=n)
    shapes = np.array([image.shape for image in images], dtype=np.int64).reshape(n, 3)       # (N, 3)
    strides = np.array([image.stride() for image in images], dtype=np.int64).reshape(n, 3)   # (N, 3) elements
    boxes, specs = np.asarray(boxes, dtype=np.int64), np.asarray(specs, dtype=np.int64)
    whole = boxes[:, 2] <= 0
    top, left = np.where(whole, 0, boxes[:, 0]), np.where(whole, 0, boxes[:, 1])
    height, width = np.where(whole, shapes[:, 1], boxes[:, 2]), np.where(whole, shapes[:, 2], boxes[:, 3])
    out_h, out_w, offset_y, offset_x = specs.T
    if not (shapes[:, 0] == 3).all():
        raise ValueError("expected (3, H, W) images")
    if not ((top >= 0) & (left >= 0) & (top + height <= shapes[:, 1]) & (left + width <= shapes[:, 2])
            & (height > 0) & (width > 0)).all():
        raise ValueError("a crop box is not inside its image")
    if not ((offset_y >= 0) & (offset_y <= out_h - size) & (offset_x >= 0) & (offset_x <= out_w - size)).all():
        raise ValueError(f"a {size}x{size} window is not inside its resize")
    table = np.empty((n, TABLE_COLUMNS), dtype=np.int64)
    table[:, 0] = pointers + top * strides[:, 1] + left * strides[:, 2]   # the box's (0, 0, 0) element (uint8: bytes)
    table[:, 1:4] = strides
    table[:, 4], table[:, 5] = height, width
    table[:, 6:10] = specs
    table[:, 10] = np.arange(n) if rows is None else rows
    table[:, 11] = 0 if mirror is None else np.asarray(mirror) != 0
    return torch.from_numpy(table)


def crop_resize(images: Sequence[torch.Tensor], specs: Sequence[CropSpec], size: int) -> torch.Tensor:
    """The (N, 3, size, size) float32 crops (0..255, not normalised, not flipped) of N uint8 (3, H, W)
    images of any sizes and strides on one device, in one launch. See the module docstring."""
    if not images:
        raise ValueError("crop_resize needs at least one image")
    out = torch.empty(len(images), 3, size, size, dtype=torch.float32, device=images[0].device)   # (N, 3, S, S)
    _launch(crop_table(images, specs, size), out, IDENTITY, IDENTITY_SHIFT)
    return out


def crop_resize_into(out: torch.Tensor, images: Sequence[torch.Tensor], boxes: np.ndarray, specs: np.ndarray,
                     rows: np.ndarray, mirror: np.ndarray, scale: Sequence[float], shift: Sequence[float]) -> None:
    """Write the crops of the boxes of N decoded images (:func:`crop_table_boxes`) into rows ``rows`` of the
    float32 (B, 3, S, S) batch ``out`` (any strides, channels_last included), flipped left-right where
    ``mirror`` is nonzero and normalised as ``x * scale[c] + shift[c]`` (x in 0..255), in one launch."""
    if not images:
        raise ValueError("crop_resize_into needs at least one image")
    if out.dtype != torch.float32 or out.dim() != 4 or out.shape[1] != 3 or out.shape[2] != out.shape[3]:
        raise ValueError(f"expected a float32 (B, 3, S, S) batch, got {tuple(out.shape)} {out.dtype}")
    if images[0].device != out.device:
        raise ValueError(f"images on {images[0].device} but the batch on {out.device}")
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and not ((rows >= 0) & (rows < out.shape[0])).all():
        raise ValueError(f"an output row is outside the batch of {out.shape[0]}")
    _launch(crop_table_boxes(images, boxes, specs, out.shape[-1], rows, mirror), out, scale, shift)


def _launch(table: torch.Tensor, out: torch.Tensor, scale: Sequence[float], shift: Sequence[float]) -> None:
    size = out.shape[-1]
    if size > MAX_SIZE:
        raise ValueError(f"crop size {size} is above {MAX_SIZE}: the kernel's grid would pass CUDA's limit")
    if out.device.type == "cuda":
        table = table.pin_memory().to(out.device, non_blocking=True)
    grid = (len(table), triton.cdiv(size * size, BLOCK_PIXELS))
    _crop_resize_kernel[grid](table, out, size, *out.stride(), *(float(v) for v in scale),
                              *(float(v) for v in shift), TABLE_COLUMNS=TABLE_COLUMNS, BLOCK=BLOCK_PIXELS,
                              num_warps=NUM_WARPS)
    # The images are read through raw pointers: keep them alive until the kernel has run. The decode
    # stream is the current one, and the caching allocator reuses freed blocks in that stream's order, so
    # dropping the references after the launch is safe (as it is for any kernel).
