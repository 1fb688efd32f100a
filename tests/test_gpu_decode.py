"""--decode gpu: the pieces run on the CPU here (plans, payloads, the augmentation on device='cpu');
the nvJPEG path and the prefetching loader run only where CUDA is (skipped elsewhere)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ecanet.data import (IMAGENET_MEAN, IMAGENET_STD, RobustImageFolder, build_train_transform,
                         build_val_transform, pil_rgb_loader, sample_seed)
from ecanet.gpu_decode import (EncodedImageFolder, GpuAugment, collate_encoded, read_payload, train_crop_plan,
                               val_crop_plan)

IMG = 64
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Smooth, photo-like JPEGs of several sizes and aspect ratios (and one PNG, one greyscale JPEG)."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, (w, h) in enumerate([(120, 90), (77, 131), (200, 160)]):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(4):
                yy, xx = np.mgrid[:h, :w]
                pixels = np.stack([128 + 100 * np.sin(xx / (7 + i) + c), 128 + 100 * np.cos(yy / (5 + c)),
                                   128 + 120 * np.sin((xx + 2 * yy) / 23)], -1) + rng.normal(0, 2, (h, w, 3))
                image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
                if i == 3 and c == 0:
                    image.save(folder / f"{i}.png")
                elif i == 3 and c == 1:
                    image.convert("L").save(folder / f"{i}.jpg", quality=92)
                else:
                    image.save(folder / f"{i}.jpg", quality=92)
    return root


def _gpu_path_on_cpu(folder, train: bool, seed: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    dataset = EncodedImageFolder(str(folder), train, IMG, 73, min_crop_scale=0.08, hflip=0.5)
    items = [dataset[(i, sample_seed(seed, 0, i))] for i in range(len(dataset))]
    payloads, targets, unreadable, plans = collate_encoded(items)
    assert unreadable.sum() == 0
    augment = GpuAugment(IMG, IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"))
    return augment(payloads, plans), targets


def _cpu_path(folder, train: bool, seed: int = 11) -> torch.Tensor:
    transform = (build_train_transform(IMG, "rrc", 0.08) if train else build_val_transform(IMG, 73))
    dataset = RobustImageFolder(str(folder), transform=transform, loader=pil_rgb_loader)
    return torch.stack([dataset[(i, sample_seed(seed, 0, i))][0] for i in range(len(dataset))])


@pytest.mark.parametrize("split", ["train", "val"])
def test_gpu_path_computes_what_the_cpu_path_computes(photo_folder, split):
    train = split == "train"
    gpu_style, _ = _gpu_path_on_cpu(photo_folder / split, train)
    cpu_style = _cpu_path(photo_folder / split, train)
    assert gpu_style.shape == cpu_style.shape == (12, 3, IMG, IMG)
    # Same crop boxes and flips; only JPEG decoders and resize kernels differ (PIL vs torch, antialiased
    # bilinear both): a mean difference of a few 1/255 steps. A wrong box or a missed flip is ~0.5.
    diff = (gpu_style - cpu_style).abs().mean(dim=(1, 2, 3))
    assert diff.max() < 0.06, diff


def test_crop_plans_follow_the_sample_seed(photo_folder):
    header = Image.open(next((photo_folder / "train" / "class2").glob("*.jpg")))
    a = train_crop_plan(header, 123, 0.08, 0.5)
    assert a == train_crop_plan(header, 123, 0.08, 0.5)
    plans = [train_crop_plan(header, s, 0.08, 0.5) for s in range(400)]
    flips = sum(p.flip for p in plans) / len(plans)
    areas = [p.height * p.width / (200 * 160) for p in plans]
    assert 0.4 < flips < 0.6
    assert 0.08 * 0.9 < min(areas) and max(areas) <= 1.0 and 0.4 < float(np.mean(areas)) < 0.65
    assert all(0 <= p.top and p.top + p.height <= 160 and 0 <= p.left and p.left + p.width <= 200 for p in plans)
    assert not any(train_crop_plan(header, s, 0.08, 0.0).flip for s in range(50))


def test_val_plan_is_resize_then_center_crop():
    plan = val_crop_plan(400, 300, 224, 256)  # 400x300 -> Resize(256) -> 341x256 -> CenterCrop(224)
    assert (plan.resize_w, plan.resize_h) == (341, 256)
    assert (plan.top, plan.left, plan.height, plan.width, plan.flip) == (16, 58, 224, 224, False)


def test_payloads(photo_folder):
    jpeg, header = read_payload(str(photo_folder / "train" / "class0" / "0.jpg"))
    assert jpeg.dim() == 1 and jpeg[:2].tolist() == [0xFF, 0xD8] and header.size == (120, 90)
    png, header = read_payload(str(photo_folder / "train" / "class0" / "3.png"))
    assert png.shape == (3, 90, 120) and png.dtype == torch.uint8


def test_unreadable_files_are_skipped_and_counted(photo_folder, tmp_path):
    import shutil
    root = tmp_path / "t"
    shutil.copytree(photo_folder / "train", root)
    (root / "class1" / "0.jpg").write_bytes(b"garbage")
    dataset = EncodedImageFolder(str(root), True, IMG, 73)
    flags = [dataset[(i, 0)][2] for i in range(len(dataset))]
    assert sum(flags) == 1


@needs_cuda
def test_nvjpeg_matches_cpu_decoding_within_jpeg_tolerance(photo_folder):
    from torchvision.io import ImageReadMode, decode_jpeg
    paths = sorted((photo_folder / "train").rglob("*.jpg"))
    data = [read_payload(str(p))[0] for p in paths]
    on_gpu = decode_jpeg(data, mode=ImageReadMode.RGB, device="cuda")
    for path, image in zip(paths, on_gpu):
        reference = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        assert image.shape == reference.shape
        # nvJPEG and libjpeg-turbo differ in IDCT rounding and in how they upsample the subsampled chroma
        # (libjpeg-turbo's "fancy" triangle filter); on these colourful test images that is a mean of about
        # 4/255 (measured on an H200, 2026-11-21). A wrong colour space, orientation or crop is tens.
        assert (image.cpu().float() - reference.float()).abs().mean() < 6.0


@needs_cuda
def test_gpu_loader_end_to_end(photo_folder):
    from ecanet.data import GpuDecodeOptions, build_data
    options = GpuDecodeOptions(IMG, 73, 0.08, 0.5, IMAGENET_MEAN, IMAGENET_STD, channels_last=True)
    data = build_data(photo_folder, batch_size=4, val_batch_size=5, workers=2, seed=11, rank=0, world_size=1,
                      device=torch.device("cuda"), train_transform=None, val_transform=None, gpu_decode=options)
    data.train_sampler.set_epoch(0)
    batches = list(data.train_loader)
    assert len(batches) == 3
    images, targets, unreadable = batches[0]
    assert images.is_cuda and images.shape == (4, 3, IMG, IMG) and images.is_contiguous(memory_format=torch.channels_last)
    assert targets.is_cuda and unreadable.sum() == 0
    reference = _cpu_path(photo_folder / "train", True)
    order = [i for i, _ in data.train_sampler]
    gpu_all = torch.cat([b[0] for b in batches]).cpu()
    assert (gpu_all - reference[order]).abs().mean(dim=(1, 2, 3)).max() < 0.08
    val = torch.cat([b[0] for b in data.val_loader]).cpu()
    assert (val - _cpu_path(photo_folder / "val", False)).abs().mean(dim=(1, 2, 3)).max() < 0.08
