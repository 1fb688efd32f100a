#!/usr/bin/env python
"""CPU-side costs of the input pipeline (no GPU needed); docs/results.md quotes the seed and worker lines.

    python scripts/cpu_costs.py [--data data/fashion-mnist]

Prints one line per measurement:
  seed       torch.manual_seed against seeding only the CPU generator (what each worker does per sample)
  worker     images/s one worker process makes with configs/fashion_mnist.yaml's training transform, seeded
             per sample with fork_rng + torch.manual_seed and with seeded_cpu_rng (what ecanet does)
  gil        whether torchvision's decode_jpeg lets another Python thread run (counts per second of a
             counting thread while decode_jpeg runs, against while the main thread sleeps)
  crop-loop  the per-image Python cost of GpuAugment's crop/resize loop, on tiny CPU tensors (so mostly
             interpreter overhead, the part that holds the GIL)

The worker line needs the prepared Fashion-MNIST folder: without --data it is skipped when the default folder
is missing; a --data that is given must hold train/ with class folders of images (else exit 2, before any
measurement).
"""
from __future__ import annotations

import argparse
import io
import sys
import threading
import time
import timeit
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ecanet.cli import report_user_errors  # noqa: E402
from ecanet.config import ArgumentParser  # noqa: E402
from ecanet.data import RobustImageFolder, build_train_transform, sample_seed  # noqa: E402
from ecanet.data.folders import build_image_folder, load_readable  # noqa: E402
from ecanet.errors import EXIT_OK, ConfigError  # noqa: E402

DEFAULT_DATA = Path("data/fashion-mnist")
FASHION_MNIST_MEAN, FASHION_MNIST_STD = [0.286] * 3, [0.353] * 3   # configs/fashion_mnist.yaml
WORKER_SAMPLES = 2000
CROP_LOOP_IMAGES = 256        # one batch
CROP_LOOP_REPEATS = 20
GIL_DECODES = 20
GIL_IMAGE_PX = 2000


def seed_cost() -> str:
    calls = 2000
    full = timeit.timeit(lambda: torch.manual_seed(5), number=calls) / calls
    cpu_only = timeit.timeit(lambda: torch.default_generator.manual_seed(5), number=calls) / calls
    return f"seed: torch.manual_seed {full * 1e6:.0f} us/call, CPU generator only {cpu_only * 1e6:.1f} us/call"


class _ForkRngSeeding(RobustImageFolder):
    """Per-sample seeding with fork_rng + torch.manual_seed, the alternative to seeded_cpu_rng, for comparison."""

    def __getitem__(self, key):
        index, seed = key
        image, target, unreadable = load_readable(self, index, self.loader)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), target, unreadable


def worker_datasets(data: Path) -> dict[str, RobustImageFolder]:
    """``data/train`` with configs/fashion_mnist.yaml's training transform, once per way of seeding; a
    :class:`~ecanet.errors.UserError` when ``data`` is no such folder (a file, missing, without train/ or
    without images)."""
    if data.exists() and not data.is_dir():
        raise ConfigError(f"--data {data} is a file, not a folder. Pass the Fashion-MNIST folder that "
                          f"scripts/prepare_fashion_mnist.py writes (with train/), or leave out --data.")
    transform = build_train_transform(112, "crop", crop_padding=8, hflip=0.5, random_erasing=0.5,
                                      mean=FASHION_MNIST_MEAN, std=FASHION_MNIST_STD, uint8=True)
    return {name: build_image_folder(data, "train", make=lambda path, cls=cls: cls(path, transform=transform))
            for name, cls in (("fork_rng + torch.manual_seed", _ForkRngSeeding),
                              ("seeded_cpu_rng", RobustImageFolder))}


def worker_rate(datasets: dict[str, RobustImageFolder]) -> str:
    rates = {}
    for name, dataset in datasets.items():
        keys = [((i * 29) % len(dataset), sample_seed(0, 0, i)) for i in range(WORKER_SAMPLES)]
        t0 = time.perf_counter()
        for key in keys:
            dataset[key]
        rates[name] = WORKER_SAMPLES / (time.perf_counter() - t0)
    return "worker: " + ", ".join(f"{name} {rate:,.0f} img/s" for name, rate in rates.items())


def gil_release() -> str:
    from torchvision.io import decode_jpeg
    pixels = (np.random.default_rng(0).random((GIL_IMAGE_PX, GIL_IMAGE_PX, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    jpeg = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)

    def counts_per_s(work) -> float:
        stop, result = threading.Event(), []

        def count() -> None:
            n = 0
            while not stop.is_set():
                n += 1
            result.append(n)
        thread = threading.Thread(target=count)
        t0 = time.perf_counter()
        thread.start()
        work()
        elapsed = time.perf_counter() - t0
        stop.set()
        thread.join()
        return result[0] / elapsed

    idle = counts_per_s(lambda: time.sleep(1.0))
    decoding = counts_per_s(lambda: [decode_jpeg(jpeg) for _ in range(GIL_DECODES)])
    return (f"gil: counting thread {decoding / 1e6:.1f} M/s while decode_jpeg runs, {idle / 1e6:.1f} M/s while "
            f"the main thread sleeps ({decoding / idle:.2f}x)")


def crop_loop_cost() -> str:
    images = [torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8) for _ in range(CROP_LOOP_IMAGES)]

    def loop() -> torch.Tensor:  # the shape of GpuAugment._assemble_per_image's work
        crops = []
        for image in images:
            crop = image[None][:, :, 1:7, 1:7].float()
            crops.append(F.interpolate(crop, size=(4, 4), mode="bilinear", align_corners=False, antialias=True))
        return torch.cat(crops)

    loop()
    t0 = time.perf_counter()
    for _ in range(CROP_LOOP_REPEATS):
        loop()
    per_image = (time.perf_counter() - t0) / CROP_LOOP_REPEATS / CROP_LOOP_IMAGES
    return (f"crop-loop: {per_image * 1e6:.1f} us per image, {per_image * CROP_LOOP_IMAGES * 1e3:.1f} ms per "
            f"batch of {CROP_LOOP_IMAGES}")


def run(args: argparse.Namespace) -> int:
    # A --data that is given must be the dataset; the default one is optional: its measurement is skipped.
    data = DEFAULT_DATA if args.data is None else args.data
    datasets = worker_datasets(data) if args.data is not None or (data / "train").is_dir() else None
    torch.set_num_threads(1)  # as in a DataLoader worker
    print(f"# torch {torch.__version__}, {time.strftime('%Y-%m-%d')}", flush=True)
    print(seed_cost(), flush=True)
    if datasets is not None:
        print(worker_rate(datasets), flush=True)
    else:
        print(f"worker: skipped, no {data}/train (run scripts/prepare_fashion_mnist.py, or pass --data)", flush=True)
    print(gil_release(), flush=True)
    print(crop_loop_cost(), flush=True)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="cpu_costs.py", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help=f"prepared Fashion-MNIST ImageFolder (scripts/prepare_fashion_mnist.py; default "
                             f"{DEFAULT_DATA}, whose measurement is skipped when it is missing)")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks for input errors")
    args = parser.parse_args(argv)
    return report_user_errors(lambda: run(args), argv)


if __name__ == "__main__":
    sys.exit(main())
