"""Parameters and compute of the ECA-Net models, in SI units and in the paper's units.

The command line of :mod:`ecanet.flops`, which does the counting:

    python paras_flops.py -a eca_resnet50 --ksize 3557     # one model, in detail
    python paras_flops.py --all --markdown                 # the model table of docs/model_zoo.md
    python paras_flops.py --all --json costs.json          # every number, exact, as JSON
    python paras_flops.py -a eca_resnet50 --bench          # GPU latency and throughput (bf16)
    python paras_flops.py --detector mask_rcnn_eca_resnet50 # a COCO detector of the paper, beside its README row
    python paras_flops.py --all-detectors --markdown        # the paper's six COCO detectors (docs/detection.md)
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from ecanet.cli import report_user_errors
from ecanet.config import DEFAULT_ARCH, ArgumentParser
from ecanet.constants import IMAGENET_CLASSES, IMAGENET_IMG_SIZE, NETWORK_STRIDE
from ecanet.errors import EXIT_OK, ConfigError
from ecanet.lazy import lazy_import

# Imported on first use, so that `--help` answers before torch has loaded.
torch = lazy_import("torch")
flops = lazy_import("ecanet.flops")
detection_costs = lazy_import("ecanet.detection.costs")

PROG = "paras_flops.py"
log = logging.getLogger("paras_flops")

RELEASED = "released"
STDOUT = "-"
# --bench: latency at batch 1 and throughput at batch 256; ECA costs far more on a GPU than its FLOPs suggest.
LATENCY_BATCH = 1
THROUGHPUT_BATCH = 256
BENCH_HEADERS = ("model", "mode", "latency, batch 1 (ms)", "throughput, batch 256 (img/s)", "peak memory (GiB)")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Parameters and compute (thop MACs and torch FLOPs) of ecanet's networks for one image, "
                    "each figure in decimal SI units and in the paper's units (value / 1024^k, as the official "
                    "paras_flops.py printed it, e.g. ECA-ResNet-50: 25.56 M params = 24.37M in the paper).",
        epilog="MACs: thop multiply-accumulates of convolutions and linear layers plus its charges for BatchNorm "
               "and average pooling (the ECA/SE pooling charged as the official nn.AdaptiveAvgPool2d). "
               "FLOPs: torch.utils.flop_counter, 2 x MACs of convolutions and matrix multiplies only. "
               "See docs/flops.md.")
    parser.add_argument("-a", "--arch", metavar="ARCH", default=None,
                        help=f"network to count (default {DEFAULT_ARCH}; an unknown name lists them all); --all "
                             f"counts every one")
    parser.add_argument("--ksize", default=RELEASED, metavar="K",
                        help="ECA kernel sizes: 'released' (default: the released checkpoint's, e.g. 3557 for "
                             "eca_resnet50), 'adaptive' (the paper's psi(C)), one digit per stage ('3557') or "
                             "one odd int for every layer")
    parser.add_argument("--img-size", type=int, default=IMAGENET_IMG_SIZE, metavar="PX",
                        help="input height and width (default %(default)s)")
    parser.add_argument("--num-classes", type=int, default=IMAGENET_CLASSES, metavar="N",
                        help="classifier outputs (default %(default)s)")
    parser.add_argument("--all", action="store_true",
                        help="one table for every registered network, as released (ECA kernel sizes of the "
                             "released checkpoints)")
    parser.add_argument("--json", metavar="PATH", type=str, default=None,
                        help="also write every figure, exact, as JSON to PATH ('-': to stdout instead of the table)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table (docs/model_zoo.md's)")
    parser.add_argument("--bench", action="store_true",
                        help="also measure forward latency (batch 1) and throughput (batch 256), bf16, eager and "
                             "compiled; needs a CUDA GPU")
    parser.add_argument("--detector", metavar="ROW", default=None,
                        help="count one of the paper's COCO detectors at 1280x800, e.g. faster_rcnn_eca_resnet50 "
                             "(the names of configs/detection/), beside the official README's figures")
    parser.add_argument("--all-detectors", action="store_true",
                        help="count the paper's six COCO detectors (Faster/Mask R-CNN, RetinaNet with ECA-Net50/101)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks for input errors")
    return parser


def _selected(args: argparse.Namespace) -> list[tuple[str, object]]:
    """The (arch, k_size) pairs to count."""
    if args.all:
        return flops.released_models()
    arch = args.arch or DEFAULT_ARCH
    return [(arch, flops.released_k_size(arch) if args.ksize == RELEASED else args.ksize)]


def check_args(args: argparse.Namespace) -> None:
    """Reject options that cannot go together or cannot be counted (ConfigError), before anything is built."""
    if args.detector is not None or args.all_detectors:
        if args.detector is not None and args.all_detectors:
            raise ConfigError(f"--detector {args.detector} counts one of the paper's detectors and --all-detectors "
                              f"all six; give one of them.")
        if args.arch is not None or args.all or args.bench or args.ksize != RELEASED or \
                args.img_size != IMAGENET_IMG_SIZE or args.num_classes != IMAGENET_CLASSES:
            raise ConfigError("--detector/--all-detectors count the paper's detectors at their own input (1280x800) "
                              "and classes (COCO's); leave out -a/--arch, --all, --ksize, --bench, --img-size and "
                              "--num-classes.")
    if args.all and (args.arch is not None or args.ksize != RELEASED):
        raise ConfigError("--all counts every network as released; leave out -a/--arch and --ksize, or leave out "
                          "--all to count one network with them.")
    if args.json == STDOUT and (args.markdown or args.bench):
        raise ConfigError("--json - writes JSON alone to stdout; give --json a file to combine it with --markdown or "
                          "--bench.")
    if args.img_size < NETWORK_STRIDE:
        raise ConfigError(f"--img-size must be at least {NETWORK_STRIDE} (the networks downsample by "
                          f"{NETWORK_STRIDE}), got {args.img_size}. Pass --img-size {NETWORK_STRIDE} or more.")
    if args.num_classes < 1:
        raise ConfigError(f"--num-classes must be at least 1, got {args.num_classes}. Pass the classifier's number "
                          f"of outputs (ImageNet: {IMAGENET_CLASSES}).")


def _import_bench() -> Callable[..., Any]:
    """``ecanet.bench.measure_throughput``, checked before any counting so a bad --bench fails at once."""
    if not torch.cuda.is_available():
        raise ConfigError("--bench needs a CUDA GPU and torch.cuda.is_available() is False here; "
                          "leave out --bench to count parameters and FLOPs")
    try:
        from ecanet.bench import measure_throughput
    except ImportError as error:
        raise ConfigError(f"--bench needs ecanet.bench.measure_throughput, which could not be imported ({error})") \
            from None
    return measure_throughput


def _bench_rows(measure_throughput: Callable[..., Any], selected: Sequence[tuple[str, object]], img_size: int,
                num_classes: int) -> list[tuple[str, ...]]:
    rows = []
    for arch, k_size in selected:
        model = flops.build_model(arch, k_size, num_classes, device="cuda")
        for compiled in (False, True):
            log.info("benchmarking %s (%s)", arch, "compiled" if compiled else "eager")
            measure = functools.partial(measure_throughput, model, img_size=img_size, train=False,
                                        amp_dtype=torch.bfloat16, compile=compiled)
            latency = measure(batch_size=LATENCY_BATCH)
            throughput = measure(batch_size=THROUGHPUT_BATCH)
            rows.append((arch, "compiled" if compiled else "eager", f"{latency.step_ms_median:.2f}",
                         f"{throughput.images_per_s:,.0f}", f"{throughput.peak_memory_gib:.2f}"))
    return rows


def _write_json(text: str, path: str) -> None:
    try:
        Path(path).write_text(text + "\n")
    except OSError as error:
        raise ConfigError(f"cannot write --json {path}: {error.strerror or error}. Pass a path in a writable "
                          f"folder.") from None
    log.info("wrote %s", path)


def run_detectors(args: argparse.Namespace) -> int:
    """The paper's COCO detectors: ecanet's counts, the paper's convention and the README's figures."""
    names = list(detection_costs.PAPER_ROWS) if args.all_detectors else [args.detector]
    rows = [detection_costs.paper_row(name) for name in names]  # an unknown name fails before any counting
    costs = []
    for row in rows:
        log.info("counting %s", row.name)
        costs.append(detection_costs.ecanet_cost(row.name))
    if args.json is not None:
        text = json.dumps([{**dataclasses.asdict(c), "paper_params_m": c.paper_params_m,
                            "paper_gflops": c.paper_gflops} for c in costs], indent=2)
        if args.json == STDOUT:
            print(text)
            return EXIT_OK
        _write_json(text, args.json)
    print(detection_costs.format_detector_table(costs, markdown=args.markdown))
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    if args.detector is not None or args.all_detectors:
        return run_detectors(args)
    measure_throughput = _import_bench() if args.bench else None
    selected = _selected(args)
    costs = []
    from tqdm import tqdm
    # A progress bar on stderr for --all (a few seconds per network on a CPU); none for one network.
    for arch, k_size in tqdm(selected, desc="counting", unit="model", disable=len(selected) == 1 or None,
                             leave=False, file=sys.stderr):
        log.info("counting %s (k_size %s) at %dx%d", arch, "builder default" if k_size is None else k_size,
                 args.img_size, args.img_size)
        costs.append(flops.model_cost(arch, k_size, args.img_size, args.num_classes))
    if args.json is not None:
        text = json.dumps(flops.costs_to_json(costs), indent=2)
        if args.json == STDOUT:
            print(text)
        else:
            _write_json(text, args.json)
    if args.json != STDOUT:
        if args.markdown or args.all:
            print(flops.format_table(costs, markdown=args.markdown))
        else:
            print(flops.format_report(costs[0]))
    if measure_throughput is not None:
        rows = _bench_rows(measure_throughput, selected, args.img_size, args.num_classes)
        print()
        print(flops.render_table(BENCH_HEADERS, rows, markdown=args.markdown))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: the errors a user can fix become one paragraph and exit 2 (with --debug, a traceback
    too), as main.py's."""
    return report_user_errors(lambda: _parse_and_run(argv), argv)


def _parse_and_run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format=f"{PROG}: %(message)s")
    check_args(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
