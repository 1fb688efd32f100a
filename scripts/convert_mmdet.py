#!/usr/bin/env python
"""Convert a released ECA-Net COCO detector (an mmdetection v1 checkpoint) into ecanet's torchvision layout.

    python scripts/convert_mmdet.py mask_rcnn_ecanet50_k3377_bs8_lr0.01.pth mask_rcnn mask_rcnn_eca50.pth

The output is a plain state_dict (name -> tensor) that ``build_converted_detector(report)`` - or
``build_detector(DETECTOR, ARCH, k_size=K)`` followed by ``match_mmdet_v1(model)`` - loads with
``strict=True``; the command checks that it does before writing, and prints the backbone and ECA kernel
sizes, what it could not carry over, and how the converted detector still differs from mmdetection v1
(:mod:`ecanet.detection.convert`). Exit codes: 0 done, 2 bad input (nothing written).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ecanet.constants import DETECTOR_NAMES  # noqa: E402
from ecanet.errors import EXIT_OK, ConfigError, UserError, print_error  # noqa: E402
from ecanet.lazy import lazy_import  # noqa: E402

torch = lazy_import("torch")
ckpt = lazy_import("ecanet.checkpoint")
convert = lazy_import("ecanet.detection.convert")



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convert_mmdet.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="the mmdetection v1 file ({'meta', 'state_dict', "
                                                                 "'optimizer'}), read with weights_only")
    parser.add_argument("detector", choices=DETECTOR_NAMES, help="what the file holds")
    parser.add_argument("output", metavar="OUTPUT", help="the state_dict file to write")
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    return parser


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.is_dir():
        raise ConfigError(f"{out} is a directory; OUTPUT is the state_dict file to write. Pass a file path, e.g. "
                          f"{out / 'converted.pth'}.")
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists. Pass another output path, or --force to overwrite it.")
    state_dict, report = convert.convert_mmdet_checkpoint(args.checkpoint, args.detector)
    model = convert.build_converted_detector(report)
    model.load_state_dict(state_dict, strict=True)   # what a user will do with the file: must not fail
    ckpt.save_checkpoint(state_dict, out)
    print(f"wrote {out}")
    for line in report.summary():
        print(line)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UserError as error:
        print_error(str(error))
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
