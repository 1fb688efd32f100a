"""--decode gpu: the pieces run on the CPU here (plans, payloads, the augmentation on device='cpu');
the nvJPEG path and the prefetching loader run only where CUDA is (skipped elsewhere)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ecanet.data import IMAGENET_MEAN, IMAGENET_STD, build_train_transform, build_val_transform
from ecanet.data.folders import (RegionCropImageFolder, RegionDecoder, RobustImageFolder, pil_rgb_loader,
                                 region_decode_available, sample_seed)
from ecanet.config import resolve_gpu_share
from imagefolder import make_photo_folder
from ecanet.data.gpu.decode import (READY_COLUMN, EncodedImageFolder, GpuAugment, collate_encoded, decoded_on_gpu,
                                    read_payload, train_crop_plan, val_crop_plan)

IMG = 64
def needs_cuda(test):
    """A GPU test: selected by ``-m gpu``, skipped without CUDA."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(test))
needs_nvimgcodec = pytest.mark.skipif(not region_decode_available(), reason="needs nvImageCodec (nvidia-nvimgcodec-cu13)")
REGION_DECODE = [False, pytest.param(True, marks=needs_nvimgcodec)]


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    return make_photo_folder(tmp_path_factory.mktemp("photos"))


def _gpu_path_on_cpu(folder, train: bool, seed: int = 11, gpu_share: float = 1.0,
                     region_decode: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    dataset = EncodedImageFolder(str(folder), train, IMG, 73, min_crop_scale=0.08, hflip=0.5, gpu_share=gpu_share,
                                 region_decode=region_decode)
    items = [dataset[(i, sample_seed(seed, 0, i))] for i in range(len(dataset))]
    jpeg_bytes, jpeg_sizes, ready, plans, targets, unreadable = collate_encoded(items)
    assert unreadable.sum() == 0
    augment = GpuAugment(IMG, IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"))
    return augment(jpeg_bytes, jpeg_sizes, ready, plans), targets


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


@pytest.mark.parametrize("region_decode", REGION_DECODE)
@pytest.mark.parametrize("split", ["train", "val"])
def test_cpu_share_makes_the_cpu_paths_crops_exactly(photo_folder, split, region_decode):
    """With gpu_share 0 every crop is made in the worker: the --decode cpu pipeline's pixels, exactly, also
    when training JPEGs (greyscale included; the PNG goes to PIL) are decoded only inside their boxes."""
    train = split == "train"
    all_cpu, _ = _gpu_path_on_cpu(photo_folder / split, train, gpu_share=0.0, region_decode=region_decode)
    assert torch.allclose(all_cpu, _cpu_path(photo_folder / split, train), atol=1e-5)


def test_split_batches_merge_in_order(photo_folder):
    """Half the images from each side: each row equals the same row made entirely on one side."""
    mixed, targets = _gpu_path_on_cpu(photo_folder / "train", True, gpu_share=0.5)
    all_gpu, targets_gpu = _gpu_path_on_cpu(photo_folder / "train", True, gpu_share=1.0)
    all_cpu, _ = _gpu_path_on_cpu(photo_folder / "train", True, gpu_share=0.0)
    on_gpu = torch.tensor([decoded_on_gpu(i, 0.5) for i in range(len(mixed))])
    assert 0 < int(on_gpu.sum()) < len(mixed)
    assert torch.equal(mixed[on_gpu], all_gpu[on_gpu]) and torch.equal(mixed[~on_gpu], all_cpu[~on_gpu])
    assert torch.equal(targets, targets_gpu)


def test_auto_share_leaves_part_to_the_workers_only_where_there_are_enough():
    assert resolve_gpu_share("auto", 15) == 0.7    # the measured choice on 16-core H200 hosts (2026-11-21)
    assert resolve_gpu_share("auto", 8) == 0.7
    assert resolve_gpu_share("auto", 7) == 1.0     # too few workers to decode 30 % of the images
    assert resolve_gpu_share("auto", 0) == 1.0
    assert resolve_gpu_share(0.25, 15) == 0.25 and resolve_gpu_share(1.0, 0) == 1.0


def test_gpu_share_is_the_fraction_of_indices_sent_to_nvjpeg():
    for share in (0.0, 0.3, 0.5, 0.65, 1.0):
        for start in (0, 12_345):
            sent = sum(decoded_on_gpu(i, share) for i in range(start, start + 1000))
            assert abs(sent - 1000 * share) <= 3, (share, sent)


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


def test_payloads(photo_folder, tmp_path):
    """JPEGs nvJPEG decodes travel as bytes; PNGs and CMYK JPEGs are decoded in the worker, as on the CPU path."""
    jpeg, header = read_payload(str(photo_folder / "train" / "class0" / "0.jpg"))
    assert jpeg.dim() == 1 and jpeg[:2].tolist() == [0xFF, 0xD8] and header.size == (120, 90)
    grey, header = read_payload(str(photo_folder / "train" / "class1" / "3.jpg"))
    assert isinstance(grey, torch.Tensor) and grey.dim() == 1 and header.mode == "L"
    cmyk_path = tmp_path / "cmyk.jpg"
    Image.open(photo_folder / "train" / "class0" / "0.jpg").convert("CMYK").save(cmyk_path, quality=92)
    for path in (photo_folder / "train" / "class0" / "3.png", cmyk_path):
        image, header = read_payload(str(path))
        assert isinstance(image, Image.Image) and image.mode == "RGB" and header is image
        assert np.array_equal(np.array(image), np.array(pil_rgb_loader(str(path))))


def test_collate_sends_six_tensors_and_the_files_bytes(photo_folder):
    """A batch crosses process boundaries as six tensors, whatever its size; the JPEG rows' bytes split
    back into the files, and a PNG in the GPU share arrives as the CPU path's crop."""
    folder = photo_folder / "train"
    seed = 11
    dataset = EncodedImageFolder(str(folder), True, IMG, 73, gpu_share=1.0)
    batch = collate_encoded([dataset[(i, sample_seed(seed, 0, i))] for i in range(len(dataset))])
    assert len(batch) == 6 and all(isinstance(t, torch.Tensor) for t in batch)
    jpeg_bytes, jpeg_sizes, ready, plans, targets, unreadable = batch
    assert jpeg_bytes.dtype == torch.uint8 and jpeg_bytes.dim() == 1 and jpeg_sizes.dtype == torch.int64
    assert plans.shape == (12, 8) and targets.shape == unreadable.shape == (12,)
    paths = [path for path, _ in dataset.samples]
    ready_rows = [i for i in range(len(paths)) if plans[i, READY_COLUMN]]
    assert [paths[i] for i in ready_rows] == [str(folder / "class0" / "3.png")]
    jpeg_paths = [path for i, path in enumerate(paths) if i not in ready_rows]
    files = torch.split(jpeg_bytes, jpeg_sizes.tolist())
    assert [bytes(f.numpy()) for f in files] == [open(path, "rb").read() for path in jpeg_paths]
    assert ready.shape == (1, 3, IMG, IMG) and ready.dtype == torch.uint8
    png_row = ready_rows[0]
    cpu_crop = RobustImageFolder(str(folder), transform=build_train_transform(IMG, "rrc", 0.08, uint8=True),
                                 loader=pil_rgb_loader)[(png_row, sample_seed(seed, 0, png_row))][0]
    assert torch.equal(ready[0], cpu_crop)
    assert plans[png_row, 4] == 0  # flipped already in the worker

    nothing_ready = collate_encoded([dataset[i] for i in range(3)])
    assert nothing_ready[2].shape == (0, 3, 0, 0) and len(nothing_ready[1]) == 3
    all_ready = collate_encoded([EncodedImageFolder(str(folder), True, IMG, 73, gpu_share=0.0)[i] for i in range(3)])
    assert all_ready[0].shape == (0,) and all_ready[1].shape == (0,) and all_ready[2].shape == (3, 3, IMG, IMG)


def test_batches_without_ready_crops_match_the_mixed_batch(photo_folder):
    """Only JPEG rows (nothing made on the CPU) go through the same crops as in a batch with ready rows."""
    dataset = EncodedImageFolder(str(photo_folder / "val"), False, IMG, 73, gpu_share=1.0)
    items = [dataset[i] for i in range(len(dataset))]
    augment = GpuAugment(IMG, IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"))
    mixed = augment(*collate_encoded(items)[:4])
    jpeg_rows = [i for i, item in enumerate(items) if not item[3][READY_COLUMN]]
    assert len(jpeg_rows) == len(items) - 1
    only_jpegs = augment(*collate_encoded([items[i] for i in jpeg_rows])[:4])
    assert torch.equal(only_jpegs, mixed[jpeg_rows])


def test_unreadable_files_are_skipped_and_counted(photo_folder, tmp_path):
    import shutil
    root = tmp_path / "t"
    shutil.copytree(photo_folder / "train", root)
    (root / "class1" / "0.jpg").write_bytes(b"garbage")
    png = root / "class0" / "3.png"
    png.write_bytes(png.read_bytes()[:200])  # its header still opens; decoding it fails
    sides = [(0.0, False), (1.0, False)] + ([(0.0, True)] if region_decode_available() else [])
    for share, region_decode in sides:  # a broken file is skipped on both sides of the split
        dataset = EncodedImageFolder(str(root), True, IMG, 73, gpu_share=share, region_decode=region_decode)
        items = [dataset[(i, 0)] for i in range(len(dataset))]
        # the truncated PNG (index 3) is skipped to the garbage JPEG (index 4), then to the next file
        assert [item[2] for item in items] == [0, 0, 0, 1, 1] + [0] * 7
        assert collate_encoded(items)[5].sum() == 2


@needs_nvimgcodec
@pytest.mark.parametrize("kind", ["gpu_share_0", "decode_cpu"])
def test_a_truncated_jpeg_is_skipped_whatever_crop_is_drawn(photo_folder, tmp_path, kind):
    """PIL rejects a truncated JPEG; a crop box inside its intact part would decode as a region. Such a file
    goes to PIL, so it counts as unreadable under every seed, as with --no-region-decode."""
    import shutil
    root = tmp_path / "t"
    shutil.copytree(photo_folder / "train", root)
    broken = root / "class2" / "0.jpg"
    broken.write_bytes(broken.read_bytes()[:-400])
    if kind == "gpu_share_0":
        dataset = EncodedImageFolder(str(root), True, IMG, 73, gpu_share=0.0, region_decode=True)
    else:
        dataset = RegionCropImageFolder(str(root), build_train_transform(IMG, "rrc", 0.08, uint8=True))
    index = [path for path, _ in dataset.samples].index(str(broken))
    assert all(dataset[(index, sample_seed(seed, 0, index))][2] == 1 for seed in range(12))


@needs_nvimgcodec
def test_region_decoding_is_what_makes_the_cpu_share(photo_folder, monkeypatch):
    """The CPU share's training JPEGs go through RegionDecoder (and it succeeds); the PNG, the GPU share,
    evaluation and --no-region-decode do not use it."""
    from ecanet.data.gpu import GpuDecodeOptions, _gpu_image_folder
    calls = []
    decode = RegionDecoder.__call__
    def counting(self, data, box):
        out = decode(self, data, box)
        calls.append(out is not None)
        return out
    monkeypatch.setattr(RegionDecoder, "__call__", counting)
    options = lambda share: GpuDecodeOptions(IMG, 73, 0.08, 0.5, IMAGENET_MEAN, IMAGENET_STD,  # noqa: E731
                                             channels_last=False, gpu_share=share)
    train = _gpu_image_folder(photo_folder, "train", True, options(0.0), True)
    for i in range(len(train)):
        train[(i, sample_seed(5, 0, i))]
    jpegs = sum(1 for path, _ in train.samples if path.endswith(".jpg"))
    assert calls == [True] * jpegs
    assert _gpu_image_folder(photo_folder, "train", True, options(1.0), True).region_decoder is None
    assert _gpu_image_folder(photo_folder, "val", False, options(0.0), True).region_decoder is None
    assert _gpu_image_folder(photo_folder, "train", True, options(0.0), False).region_decoder is None


def _jpeg_payloads(folder) -> list[torch.Tensor]:
    return [read_payload(str(p))[0] for p in sorted(folder.rglob("*.jpg"))]


@needs_nvimgcodec
def test_region_decoder_cuts_pils_decode_exactly_and_survives_pickling(photo_folder):
    import pickle
    decoder = pickle.loads(pickle.dumps(RegionDecoder()))  # DataLoader workers receive it pickled
    for path in sorted((photo_folder / "train").rglob("*.jpg")):
        whole = np.array(Image.open(path).convert("RGB"))
        h, w = whole.shape[:2]
        box = (h // 5, w // 3, h // 2, w // 2)
        region = decoder(path.read_bytes(), box)
        assert np.array_equal(np.array(region), whole[box[0]:box[0] + box[2], box[1]:box[1] + box[3]])
    assert decoder(path.read_bytes()[:300] + bytes(200), box) is None


@needs_nvimgcodec
@pytest.mark.parametrize(("uint8", "random_erasing"), [(True, 0.0), (False, 0.0), (True, 0.5), (False, 0.5)])
def test_decode_cpu_region_dataset_gives_the_transforms_items_exactly(photo_folder, uint8, random_erasing):
    """--decode cpu with --region-decode: same tensors as RandomResizedCrop + flip + the rest of the transform
    on the whole decoded image, random erasing's draws included, for every file kind in the folder."""
    transform = build_train_transform(IMG, "rrc", 0.08, random_erasing=random_erasing, uint8=uint8)
    plain = RobustImageFolder(str(photo_folder / "train"), transform=transform, loader=pil_rgb_loader)
    region = RegionCropImageFolder(str(photo_folder / "train"), transform)
    calls = []
    decode = region.region_decoder.__call__
    region.region_decoder = lambda data, box: calls.append(box) or decode(data, box)
    for seed in (3, 11):
        for i in range(len(plain)):
            a, b = plain[(i, sample_seed(seed, 0, i))], region[(i, sample_seed(seed, 0, i))]
            assert torch.equal(a[0], b[0]) and a[1:] == b[1:], (seed, i)
    jpegs = sum(1 for path, _ in plain.samples if path.endswith(".jpg"))
    assert len(calls) == 2 * jpegs  # every JPEG went through the region decoder, the PNG did not


@needs_nvimgcodec
def test_build_data_picks_the_region_dataset_only_where_it_applies(photo_folder):
    from ecanet.data import build_data
    kwargs = dict(batch_size=4, val_batch_size=4, workers=0, seed=1, rank=0, world_size=1,
                  device=torch.device("cpu"), val_transform=build_val_transform(IMG, 73))
    kinds = {}
    for augment, region_decode in (("rrc", True), ("rrc", False), ("crop", True)):
        data = build_data(photo_folder, train_transform=build_train_transform(IMG, augment, 0.08),
                          region_decode=region_decode, **kwargs)
        kinds[augment, region_decode] = type(data.train_loader.dataset)
    assert kinds == {("rrc", True): RegionCropImageFolder, ("rrc", False): RobustImageFolder,
                     ("crop", True): RobustImageFolder}


def test_a_jpeg_nvjpeg_cannot_decode_becomes_grey_of_the_box_size(photo_folder, caplog):
    jpegs = [read_payload(str(p))[0] for p in sorted((photo_folder / "train").rglob("*.jpg"))[:2]]
    broken = torch.cat([jpegs[1][:300], torch.zeros(200, dtype=torch.uint8)])  # header intact, data not
    augment = GpuAugment(IMG, IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"))
    images = augment.decode([jpegs[0], broken], [(1, 2, 30, 40), (3, 4, 20, 25)])
    assert images[0].shape == (3, 30, 40) and images[1].shape == (3, 20, 25)
    assert bool((images[1] == 128).all()) and not bool((images[0] == 128).all())
    assert "grey image stands in" in caplog.text


@needs_cuda
def test_nvjpeg_matches_cpu_decoding_within_jpeg_tolerance(photo_folder):
    paths = sorted((photo_folder / "train").rglob("*.jpg"))
    data = [read_payload(str(p))[0] for p in paths]
    augment = GpuAugment(IMG, IMAGENET_MEAN, IMAGENET_STD, torch.device("cuda"))
    on_gpu = augment.decode(data, [None] * len(data))
    for path, image in zip(paths, on_gpu):
        reference = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        assert image.shape == reference.shape
        # nvJPEG and libjpeg-turbo differ in IDCT rounding and in how they upsample the subsampled chroma
        # (libjpeg-turbo's "fancy" triangle filter); on these colourful test images that is a mean of about
        # 4/255 (measured on an H200, 2026-11-21). A wrong colour space, orientation or crop is tens.
        assert (image.cpu().float() - reference.float()).abs().mean() < 6.0


@needs_cuda
@pytest.mark.parametrize("gpu_share", [1.0, 0.5, 0.0])
def test_gpu_loader_end_to_end(photo_folder, gpu_share):
    from ecanet.data import build_data
    from ecanet.data.gpu import GpuDecodeOptions
    options = GpuDecodeOptions(IMG, 73, 0.08, 0.5, IMAGENET_MEAN, IMAGENET_STD, channels_last=True, gpu_share=gpu_share)
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


@needs_cuda
def test_batches_from_loader_slots_equal_the_ordinary_ones(photo_folder, monkeypatch):
    """The training loader writes its batches into pinned shared-memory slots (ecanet.data.gpu.slots); the
    images, targets and flags must be exactly those of the ordinary path, over two epochs, with every slot
    handed back."""
    import ecanet.data.gpu as gpu_data_module
    from ecanet.data import build_data
    from ecanet.data.gpu import GpuDecodeOptions
    options = GpuDecodeOptions(IMG, 73, 0.08, 0.5, IMAGENET_MEAN, IMAGENET_STD, channels_last=True, gpu_share=0.5)

    def epochs(slots: bool):
        if not slots:
            monkeypatch.setattr(gpu_data_module, "_loader_slots", lambda *args: None)
        data = build_data(photo_folder, batch_size=4, val_batch_size=5, workers=2, seed=11, rank=0, world_size=1,
                          device=torch.device("cuda"), train_transform=None, val_transform=None, gpu_decode=options)
        out = []
        for epoch in range(2):
            data.train_sampler.set_epoch(epoch)
            out += [tuple(t.cpu() for t in batch) for batch in data.train_loader]
        return out, data.train_loader

    with_slots, loader = epochs(True)
    assert loader.slots is not None and loader.slots.pinned and loader.ordinary_batches == 0
    ordinary, _ = epochs(False)
    assert len(with_slots) == len(ordinary) == 6
    for a, b in zip(with_slots, ordinary):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert loader.slots.free_slots() == loader.slots.count
