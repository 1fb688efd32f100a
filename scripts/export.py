#!/usr/bin/env python
"""Export a checkpoint for sharing and deployment: a self-contained folder with its recipe.

    python scripts/export.py runs/r18/best.pth exports/r18                      # model.safetensors + config.json
    python scripts/export.py eca_resnet50_k3557.pth.tar exports/r50 --format onnx              # + model.onnx

The folder holds ``model.safetensors`` (the weights: no pickle) and ``config.json`` (the recipe: network,
kernel sizes, preprocessing, classes); ``ecanet.load_model(FOLDER)`` and ``main.py -e --weights FOLDER``
read it back. ``--format onnx`` adds ``model.onnx`` (checked: onnxruntime's logits against PyTorch's).
Exit codes: 0 done, 2 bad input (nothing written).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ecanet.config import HelpFormatter  # noqa: E402
from ecanet.constants import DEFAULT_ONNX_OPSET  # noqa: E402
from ecanet.errors import EXIT_OK, UserError, print_error  # noqa: E402
from ecanet.lazy import lazy_import  # noqa: E402

torch = lazy_import("torch")
ckpt = lazy_import("ecanet.checkpoint")
export = lazy_import("ecanet.export")

FORMATS = ("safetensors", "onnx")
log = logging.getLogger("export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="export.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="any file ecanet.load_model reads: an ecanet checkpoint, an official ECA-Net file, "
                             "an export folder")
    parser.add_argument("output", metavar="FOLDER",
                        help="the export folder to write (must not hold an export, nor be a training run's "
                             "directory)")
    # One value per --format (repeatable), so that it may come before the two paths.
    parser.add_argument("--format", action="append", choices=FORMATS, default=None,
                        help="what to write: model.safetensors and config.json always; 'onnx' adds model.onnx "
                             "(repeat --format for several)")
    parser.add_argument("--opset", type=int, default=DEFAULT_ONNX_OPSET, help="ONNX opset (with --format onnx)")
    parser.add_argument("--img-size", type=int, default=None, metavar="PX",
                        help="ONNX input size; default: the recipe's crop size")
    parser.add_argument("--use-ema", action="store_true",
                        help="export the weights of the model's exponential moving average (a checkpoint of a run "
                             "trained with --ema)")
    return parser


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    formats = args.format or ["safetensors"]
    # Every check before anything is written: the options, the folder (before reading a large checkpoint), then
    # the checkpoint. model.onnx too without --format onnx: a stale one beside new weights would describe another
    # network.
    ckpt.check_export_folder(out, also=(export.ONNX_FILE,))
    if args.img_size is not None:
        export.check_img_size(args.img_size)
    if "onnx" in formats:
        export.check_onnx_options(args.opset, args.img_size)
    elif args.img_size is not None:
        log.warning("--img-size %d has no effect without --format onnx; it is ignored", args.img_size)
    model = ckpt.load_model(args.checkpoint, eca_impl="plain", use_ema=args.use_ema)
    recipe = model.recipe
    img_size = recipe.img_size if args.img_size is None else args.img_size
    if "onnx" in formats and img_size != recipe.img_size:
        log.warning("model.onnx takes %dx%d inputs, but the recipe in %s evaluates %dx%d crops: feed it what "
                    "it takes, or export without --img-size", img_size, img_size, ckpt.EXPORT_CONFIG,
                    recipe.img_size, recipe.img_size)
    ckpt.save_export(model, recipe, out)  # every export folder is self-contained: weights and recipe
    written = [ckpt.EXPORT_WEIGHTS, ckpt.EXPORT_CONFIG]
    if "onnx" in formats:
        path = export.export_onnx(model, recipe, out, args.opset, img_size)
        difference = export.verify_onnx(model, path, torch.randn(2, 3, img_size, img_size))
        log.info("onnxruntime matches PyTorch: largest logit difference %.2e", difference)
        written.append(path.name)
    log.info("exported %s to %s (%s): %s", args.checkpoint, out, ", ".join(written), recipe.describe())
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UserError as error:
        print_error(str(error))
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
