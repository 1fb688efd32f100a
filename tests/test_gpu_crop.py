"""The batched crop-resize kernel of --decode gpu (ecanet/data/gpu/crop.py) computes what PyTorch computes per image.

CPU, in CI: the kernel under Triton's interpreter (tests named ``interpreter``, run in a subprocess because
``TRITON_INTERPRET`` must be set before Triton is imported) against ``crop_resize_one`` (F.interpolate,
antialiased bilinear) on shrinking, enlarging, identity and evaluation crops, strided views and big images;
GpuAugment with and without it on decoded JPEGs; the kernel compiling for sm_90; the table it reads.
GPU: the same comparison on CUDA, and that GpuAugment picks the kernel there.
"""
from __future__ import annotations

import re


import pytest
import torch

from conftest import compile_triton_for_sm90, INTERPRETED, interpreter_parent, run_interpreter_tests
from imagefolder import make_photo_folder
from ecanet.data import IMAGENET_MEAN, IMAGENET_STD, sample_seed
from ecanet.data.gpu.decode import (EncodedImageFolder, GpuAugment, batched_crop_available, collate_encoded,
                                    crop_resize_one, gpu_crop_module)

HAS_TRITON = gpu_crop_module() is not None
HAS_CUDA = torch.cuda.is_available()
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed")
interpreter_only = pytest.mark.skipif(not (INTERPRETED and HAS_TRITON),
                                      reason="runs in test_triton_interpreter's subprocess")
needs_cuda = pytest.mark.skipif(not (HAS_CUDA and HAS_TRITON), reason="needs a CUDA GPU and Triton")

# max |kernel - F.interpolate| in 0..255 units. Both sum float32 products, in another order: PyTorch's own
# sums are 2.6e-3 off the float64 filter at S = 224, and one ulp of the scale is 1.3e-2 there
# (docs/design/input_pipeline.md). A window one pixel off is wrong by tens.
TOLERANCE = 1e-2


def crop_cases(device: str, size: int) -> tuple[list[torch.Tensor], list[tuple[int, int, int, int]]]:
    """Images (views with the strides the decoders produce, and odd ones) and their crop specs."""
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 171, 229), dtype=torch.uint8, generator=gen).to(device)  # (3, H, W)
    hwc = torch.randint(0, 256, (83, 97, 3), dtype=torch.uint8, generator=gen).to(device).permute(2, 0, 1)
    square = torch.randint(0, 256, (3, size + 9, size + 11), dtype=torch.uint8, generator=gen).to(device)
    big = torch.randint(0, 256, (3, 5 * size + 10, 8 * size + 8), dtype=torch.uint8, generator=gen).to(device)
    s = (size, size, 0, 0)  # a training crop: the box, resized to S x S
    cases = [
        (image[:, 10:150, 3:220], s),          # non-square box (shrink at S = 32, enlarge at S = 224)
        (image[:, 40:75, 100:133], s),         # nearly 1:1
        (square[:, 5:5 + size, 7:7 + size], s),  # exactly S x S: a copy
        (square[:, 0:size + 1, 2:size + 2], s),  # one pixel more than S: a scale just above 1
        (image[:, 100:117, 9:21], s),          # enlarge (no antialiasing)
        (image[:, 0:1, 0:1], s),               # one pixel
        (image[:, 60:160, 50:70], s),          # enlarge one axis, shrink the other
        (hwc[:, 3:80, 1:96], s),               # channels-last strides, as PIL arrays moved to the GPU
        (big[:, 20:5 * size + 2, 5:8 * size + 1], s),  # a big box: scales about 4.4 and 7.8
        (image, (size + 13, size + 40, 6, 20)),  # evaluation: resize the whole image, keep a window
        (hwc, (size, size + 5, 0, 5)),
    ]
    return [c[0] for c in cases], [c[1] for c in cases]


def assert_matches_per_image_pytorch(device: str, size: int) -> None:
    images, specs = crop_cases(device, size)
    out = gpu_crop_module().crop_resize(images, specs, size)
    assert out.shape == (len(images), 3, size, size) and out.dtype == torch.float32 and out.device == images[0].device
    for i, (image, spec) in enumerate(zip(images, specs)):
        reference = crop_resize_one(image, spec, size)[0]
        error = (out[i] - reference).abs().max().item()
        assert error < TOLERANCE, f"case {i} ({tuple(image.shape)}, {spec}): max error {error}"
        assert float(reference.std()) > 1.0  # the cases are not flat, so a wrong window would show


# ----------------------------------------------------------------------------------------------------
# CPU: the table, the fallback choice, the interpreter (subprocess), the compiler for sm_90
# ----------------------------------------------------------------------------------------------------
@needs_triton
def test_table_holds_pointers_strides_sizes_and_specs():
    from ecanet.data.gpu.crop import TABLE_COLUMNS, crop_table
    image = torch.zeros(3, 50, 60, dtype=torch.uint8)
    view = image[:, 5:25, 7:47]
    table = crop_table([view, image], [(32, 32, 0, 0), (40, 48, 4, 8)], 32)
    assert table.shape == (2, TABLE_COLUMNS) and table.dtype == torch.int64
    assert table[0].tolist() == [view.data_ptr(), 3000, 60, 1, 20, 40, 32, 32, 0, 0, 0, 0]  # row 0, not mirrored
    assert table[0, 0] - table[1, 0] == 5 * 60 + 7
    assert table[1].tolist()[1:] == [3000, 60, 1, 50, 60, 40, 48, 4, 8, 1, 0]
    with pytest.raises(ValueError, match="uint8"):
        crop_table([image.float()], [(32, 32, 0, 0)], 32)
    with pytest.raises(ValueError, match="2 images but 1 crop specs"):
        crop_table([view, image], [(32, 32, 0, 0)], 32)
    with pytest.raises(ValueError, match="not inside"):
        crop_table([image], [(40, 48, 9, 8)], 32)


@needs_triton
def test_per_batch_table_equals_the_table_of_cut_views():
    """crop_table_boxes (whole images + boxes, NumPy) gives crop_table's rows for the boxes cut as views,
    also for images whose strides are not contiguous (torchvision's CPU decoder returns HWC permuted)."""
    import numpy as np
    from ecanet.data.gpu.crop import crop_table, crop_table_boxes
    planar = torch.zeros(3, 50, 60, dtype=torch.uint8)
    interleaved = torch.zeros(40, 70, 3, dtype=torch.uint8).permute(2, 0, 1)            # (3, 40, 70), HWC
    images = [planar, interleaved, planar]
    boxes = np.array([(5, 7, 20, 40), (3, 9, 30, 50), (0, 0, -1, -1)])                  # the last: whole
    specs = np.array([(32, 32, 0, 0), (32, 32, 0, 0), (40, 48, 4, 8)])
    views = [planar[:, 5:25, 7:47], interleaved[:, 3:33, 9:59], planar]
    expected = crop_table(views, [tuple(spec) for spec in specs.tolist()], 32)
    assert torch.equal(crop_table_boxes(images, boxes, specs, 32), expected)
    with pytest.raises(ValueError, match="box is not inside"):
        crop_table_boxes([planar], np.array([(45, 0, 10, 10)]), specs[:1], 32)
    with pytest.raises(ValueError, match="window is not inside"):
        crop_table_boxes([planar], boxes[2:], np.array([(40, 48, 9, 8)]), 32)
    with pytest.raises(ValueError, match="1 images, 2 boxes"):
        crop_table_boxes([planar], boxes[:2], specs[:2], 32)
    placed = crop_table_boxes(images, boxes, specs, 32, rows=np.array([7, 2, 5]), mirror=np.array([0, 1, 3]))
    assert placed[:, 10].tolist() == [7, 2, 5] and placed[:, 11].tolist() == [0, 1, 1]
    assert torch.equal(placed[:, :10], expected[:, :10])


@pytest.mark.skipif(INTERPRETED, reason="under the interpreter the kernel runs on the CPU")
def test_cpu_without_interpreter_uses_pytorch_per_image():
    assert not batched_crop_available(torch.device("cpu"))
    assert GpuAugment(32, IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu")).batched_crop is False


@needs_triton
@interpreter_parent
def test_triton_interpreter():
    output = run_interpreter_tests(__file__)
    assert re.search(r"\b4 passed\b", output) and "failed" not in output, output[-2000:]


@interpreter_only
def test_interpreter_kernel_matches_per_image_pytorch():
    assert_matches_per_image_pytorch("cpu", 32)  # the GPU test takes 224 too; the interpreter is slow


@interpreter_only
def test_interpreter_gpu_augment_same_batches_with_and_without_kernel(tmp_path):
    """The whole GPU-share pipeline (decode, crop, resize, flip, normalise) on decoded JPEGs, training
    and evaluation plans: the kernel gives the per-image path's batches."""
    make_photo_folder(tmp_path, per_class=2)
    for train in (True, False):
        dataset = EncodedImageFolder(str(tmp_path / ("train" if train else "val")), train, 32, 36)
        batch = collate_encoded([dataset[(i, sample_seed(3, 0, i))] for i in range(len(dataset))])
        kernel = GpuAugment(32, IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"))
        per_image = GpuAugment(32, IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"), batched_crop=False)
        assert kernel.batched_crop and not per_image.batched_crop
        got, expected = kernel(*batch[:4]), per_image(*batch[:4])
        assert got.shape == expected.shape == (6, 3, 32, 32)
        assert (got - expected).abs().max() < TOLERANCE / 255 / min(IMAGENET_STD)


@interpreter_only
@pytest.mark.parametrize("channels_last", [False, True])
def test_interpreter_gpu_augment_mixed_batches_in_the_models_layout(tmp_path, channels_last):
    """A batch split between the two shares, written by the kernel straight into the model's layout
    (normalised, flipped, each crop in its row): the per-image path's batch, in the same layout."""
    make_photo_folder(tmp_path, per_class=2)
    dataset = EncodedImageFolder(str(tmp_path / "train"), True, 32, 36, gpu_share=0.5)
    batch = collate_encoded([dataset[(i, sample_seed(5, 0, i))] for i in range(len(dataset))])
    plans = batch[3]
    assert 0 < int(plans[:, 7].sum()) < len(plans) and int(plans[:, 4].sum()) > 0  # both shares, some flips
    kernel = GpuAugment(32, IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"), channels_last=channels_last)
    per_image = GpuAugment(32, IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"), channels_last=channels_last,
                           batched_crop=False)
    got, expected = kernel(*batch[:4]), per_image(*batch[:4])
    assert got.shape == expected.shape == (6, 3, 32, 32) and got.stride() == expected.stride()
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert (got - expected).abs().max() < TOLERANCE / 255 / min(IMAGENET_STD)


@needs_triton
def test_crop_resize_into_refuses_what_the_kernel_cannot_check():
    import numpy as np
    from ecanet.data.gpu.crop import crop_resize_into
    image = torch.zeros(3, 50, 60, dtype=torch.uint8)
    boxes, specs = np.array([(0, 0, -1, -1)]), np.array([(32, 32, 0, 0)])
    args = ([image], boxes, specs, [0], [0], (1.0,) * 3, (0.0,) * 3)
    with pytest.raises(ValueError, match="float32"):
        crop_resize_into(torch.empty(2, 3, 32, 32, dtype=torch.float16), *args)
    with pytest.raises(ValueError, match="outside the batch"):
        crop_resize_into(torch.empty(2, 3, 32, 32), [image], boxes, specs, [2], [0], (1.0,) * 3, (0.0,) * 3)
    with pytest.raises(ValueError, match="at least one image"):
        crop_resize_into(torch.empty(2, 3, 32, 32), [], boxes[:0], specs[:0], [], [], (1.0,) * 3, (0.0,) * 3)


@needs_triton
@pytest.mark.skipif(INTERPRETED, reason="compiles for the GPU")
def test_kernel_compiles_for_sm90():
    """Triton's real compiler (ptxas included) accepts the kernel for Hopper, without a GPU."""
    from ecanet.data.gpu import crop as gpu_crop
    compile_triton_for_sm90(gpu_crop._crop_resize_kernel,
                            {"table_ptr": "*i64", "out_ptr": "*fp32", "S": "i32", "stride_n": "i64", "stride_c": "i64",
                             "stride_y": "i64", "stride_x": "i64", "scale_r": "fp32", "scale_g": "fp32",
                             "scale_b": "fp32", "shift_r": "fp32", "shift_g": "fp32", "shift_b": "fp32"},
                            {"TABLE_COLUMNS": gpu_crop.TABLE_COLUMNS, "BLOCK": gpu_crop.BLOCK_PIXELS})


# ----------------------------------------------------------------------------------------------------
# GPU
# ----------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("size", [224, 32])
def test_cuda_kernel_matches_per_image_pytorch(size):
    assert_matches_per_image_pytorch("cuda", size)


@pytest.mark.gpu
@needs_cuda
def test_gpu_augment_uses_the_kernel_on_cuda():
    assert GpuAugment(32, IMAGENET_MEAN, IMAGENET_STD, torch.device("cuda")).batched_crop is True
