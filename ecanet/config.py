"""The command line of main.py / light_main.py, and flat YAML configs whose keys are its long options.

Precedence: built-in defaults < the entry point's recipe defaults (light_main.py) < ``--config FILE`` <
options on the command line. An unknown key or a value of the wrong type in a config file is an error
that names the key. The resolved configuration is written to the run directory as ``config.yaml``.
"""
from __future__ import annotations

import argparse
import difflib
import logging
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, NoReturn, Sequence

import yaml

from .constants import (ECA_IMPLEMENTATIONS, IMAGENET_IMG_SIZE, IMAGENET_MEAN, IMAGENET_STD, IMAGENET_VAL_RESIZE,
                        LAST_CHECKPOINT, NETWORK_STRIDE, RUN_CONFIG)
from .errors import EXIT_USAGE, ConfigError, one_paragraph

log = logging.getLogger(__name__)

AMP_CHOICES = ("off", "bf16", "fp16")
SCHEDULES = ("step", "cosine")
AUGMENTATIONS = ("rrc", "crop")
DECODERS = ("cpu", "gpu")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's
CUDA_GRAPH_COMPILE_MODES = ("reduce-overhead", "max-autotune")  # the modes that replay CUDA graphs
DEVICES = ("auto", "cuda", "cpu")
DIST_BACKENDS = ("auto", "nccl", "gloo")   # torch.distributed backends: NCCL needs CUDA GPUs
MAX_SEED = 2**32 - 1   # NumPy's seeds end here; the epoch and sample seeds derived from it stay in 64 bits
DEFAULT_ARCH = "eca_resnet50"     # what main.py trains without -a, --weights or a checkpoint
MAX_AUTO_WORKERS = 16  # the official scripts' -j default
AUTO = "auto"
DEFAULT_GPU_DECODE_SHARE = AUTO   # --decode gpu: fraction of images nvJPEG decodes, the rest by CPU workers
# What 'auto' picks (resolve_gpu_share): the GPU decodes most images and the CPU workers the rest, a share that
# a host of 8 or more cores can crop at the GPU's pace (docs/design/input_pipeline.md, the share table).
AUTO_GPU_DECODE_SHARE = 0.7
MIN_WORKERS_FOR_CPU_SHARE = 8     # fewer workers: 'auto' sends every image to the GPU
DEFAULT_GPU_DECODE_THREADS = 4    # --decode gpu: batches in flight in the main process's decode threads

# Options that are written to / read from config files under another name than their dest.
_POSITIONAL_DATA = "data"


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose own errors (an unknown option, a missing or invalid value, a bad choice) are one
    paragraph on stderr, ``<prog>: error: <message>. See '<prog> --help' for the options.``, and exit 2,
    without the usage block that argparse prints first: the options' list is one ``--help`` away."""

    def error(self, message: str) -> NoReturn:
        text = one_paragraph(message).rstrip(".")
        self.exit(EXIT_USAGE, f"{self.prog}: error: {text}. See '{self.prog} --help' for the options.\n")


def fraction_or_auto(text: str | float) -> float | str:
    """``--gpu-decode-share``'s type: a number, or 'auto'."""
    if isinstance(text, str) and text.strip().lower() == AUTO:
        return AUTO
    return float(text)


fraction_or_auto.__name__ = "number or 'auto'"  # how argparse and config errors name the expected value


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("data", metavar="DATA", nargs="?", default=None,
                   help="dataset root holding train/ and val/ class folders (ImageNet layout)")
    g.add_argument("-j", "--workers", type=int, default=None, metavar="N",
                   help=f"data-loading processes per GPU (default: CPU cores / processes - 1, leaving a core to "
                        f"the training process; at most {MAX_AUTO_WORKERS})")
    g.add_argument("--img-size", type=int, default=IMAGENET_IMG_SIZE, metavar="PX",
                   help="training and validation crop size (paper: 224; with -e, --weights or --resume, the "
                        "checkpoint's recipe decides unless this is given)")
    g.add_argument("--val-resize", type=int, default=IMAGENET_VAL_RESIZE, metavar="PX",
                   help="validation images are resized to this, then center-cropped to --img-size "
                        "(paper: 256; a checkpoint's recipe decides as for --img-size; where --img-size is given "
                        "and this is not, by the command line or a config file: --img-size over the crop ratio, "
                        "224/256 or the recipe's)")
    g.add_argument("--augment", choices=AUGMENTATIONS, default="rrc",
                   help="training crop: 'rrc' = RandomResizedCrop (paper); 'crop' = resize to --img-size "
                        "then RandomCrop with --crop-padding (small images)")
    g.add_argument("--min-crop-scale", type=float, default=0.08, metavar="S",
                   help="smallest area fraction of RandomResizedCrop (default 0.08, torchvision's)")
    g.add_argument("--crop-padding", type=int, default=4, metavar="PX", help="padding of --augment crop")
    g.add_argument("--hflip", type=float, default=0.5, metavar="P", help="horizontal-flip probability")
    g.add_argument("--random-erasing", type=float, default=0.0, metavar="P",
                   help="RandomErasing probability (Zhong et al. 2020); 0 = off (paper)")
    g.add_argument("--mean", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                   help="normalisation mean (default: ImageNet's)")
    g.add_argument("--std", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                   help="normalisation std (default: ImageNet's)")
    g.add_argument("--decode", choices=DECODERS, default="cpu",
                   help="where JPEGs are decoded and augmented: 'cpu' (default: PIL in workers, the official "
                        "pipeline's exact pixels, on any machine) or 'gpu' (nvJPEG + augmentation on the GPU, "
                        "pixels differ slightly; faster where the host has few cores per GPU: "
                        "docs/design/input_pipeline.md)")
    g.add_argument("--gpu-decode-share", type=fraction_or_auto, default=DEFAULT_GPU_DECODE_SHARE, metavar="F",
                   help=f"with --decode gpu: the fraction of images nvJPEG decodes; CPU workers decode and crop "
                        f"the rest, both at once. 'auto' (default): {AUTO_GPU_DECODE_SHARE} with at least "
                        f"{MIN_WORKERS_FOR_CPU_SHARE} workers, else 1; the run's config.yaml records the number used")
    g.add_argument("--region-decode", action=argparse.BooleanOptionalAction, default=True,
                   help="CPU workers decode a training JPEG only inside its RandomResizedCrop box (--decode cpu "
                        "with --augment rrc, and --decode gpu's CPU share): the same pixels as decoding it whole "
                        "with PIL, in less CPU time, since only the crop's region is decoded. Needs NVIDIA "
                        "nvImageCodec (pip install nvidia-nvimgcodec-cu13, in requirements.txt; its CPU backend "
                        "needs no GPU); without it PIL decodes whole images")
    g.add_argument("--gpu-decode-threads", type=int, default=DEFAULT_GPU_DECODE_THREADS, metavar="N",
                   help="with --decode gpu: batches prepared at once by the main process's decode threads "
                        "(default 4)")
    g.add_argument("--synthetic", action=argparse.BooleanOptionalAction, default=False,
                   help="random images on the device instead of DATA (throughput measurements)")
    g.add_argument("--synthetic-size", type=int, default=12_800, metavar="N",
                   help="images per epoch with --synthetic")


def _arch_help(default_arch: str) -> str:
    return (f"architecture (an unknown name lists them all; ecanet.list_models() in Python); without -a: the "
            f"network of --weights or of the checkpoint resumed or evaluated, else {default_arch} (the default)")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("-a", "--arch", default=None, metavar="ARCH", help=_arch_help(DEFAULT_ARCH))
    g.add_argument("--ksize", default=None, metavar="K",
                   help="ECA kernel sizes: one digit per stage as in the official code ('3557'), "
                        "'3,5,5,7', one value, or 'adaptive' (default: the paper's psi(C) for ECA-ResNets; "
                        "the official '13' for eca_mobilenet_v2); a config file's ksize is left out, and logged, "
                        "for a network without ECA layers")
    g.add_argument("--num-classes", type=int, default=None, metavar="N",
                   help="classifier outputs (default: the number of class folders)")
    g.add_argument("--weights", default=None, metavar="PATH",
                   help="initialise from these weights (any format load_model reads); with -e, "
                        "evaluate them")
    g.add_argument("--use-ema", action="store_true",
                   help="with -e or --weights: the weights of the model's exponential moving average, which "
                        "checkpoints of a run trained with --ema hold beside the model's own")
    g.add_argument("--pretrained", action="store_true",
                   help="(official flag) not supported: ecanet downloads nothing; use --weights PATH")
    g.add_argument("--eca-impl", choices=ECA_IMPLEMENTATIONS, default="auto",
                   help="ECA implementation: fused Triton kernels on CUDA ('auto', which also fuses each "
                        "block's BatchNorm with ECA where that trains the network faster; 'fused' insists on "
                        "the kernels and fuses BatchNorm with ECA in all eager training) or plain PyTorch")


# The paper's ResNet batch: 256 images a step (Section 4.1, after He et al. 2016), whatever the GPU count.
PAPER_GLOBAL_BATCH = 256


def _add_optim_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=100, metavar="N", help="total epochs")
    g.add_argument("--start-epoch", type=int, default=0, metavar="N",
                   help="(official flag) first epoch of a fresh run; --resume sets it from the checkpoint")
    g.add_argument("--global-batch-size", type=int, default=PAPER_GLOBAL_BATCH, metavar="N",
                   help="images per step over all processes, divided evenly among them, so that a recipe is "
                        "the same on any number of GPUs")
    g.add_argument("-b", "--batch-size", type=int, default=PAPER_GLOBAL_BATCH, metavar="N",
                   help="images per GPU/process; given, it replaces --global-batch-size and the global batch "
                        "is this x processes (default: --global-batch-size / processes)")
    g.add_argument("--val-batch-size", type=int, default=None, metavar="N",
                   help="validation images per process (default: --batch-size)")
    g.add_argument("--lr", "--learning-rate", type=float, default=0.1, metavar="LR",
                   help="learning rate for a global batch of --lr-base-batch images; scaled linearly "
                        "to the actual global batch (batch size x processes)")
    g.add_argument("--lr-base-batch", type=int, default=256, metavar="N",
                   help="global batch the --lr refers to (linear scaling rule, Goyal et al. 2017)")
    g.add_argument("--momentum", type=float, default=0.9, metavar="M", help="SGD momentum")
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=False, help="Nesterov momentum")
    g.add_argument("--weight-decay", "--wd", type=float, default=1e-4, metavar="W", help="L2 weight decay")
    g.add_argument("--no-wd-bn-bias", action="store_true",
                   help="no weight decay on BatchNorm parameters and biases")
    g.add_argument("--sched", choices=SCHEDULES, default="step",
                   help="'step': lr x --lr-decay-rate every --lr-decay-epochs (paper); 'cosine' to 0 "
                        "(or --min-lr)")
    g.add_argument("--lr-decay-epochs", type=float, default=30, metavar="E",
                   help="step schedule period in epochs (paper ResNets: 30)")
    g.add_argument("--lr-decay-rate", type=float, default=0.1, metavar="G",
                   help="step schedule factor (paper ResNets: 0.1)")
    g.add_argument("--min-lr", type=float, default=0.0, metavar="LR",
                   help="floor of the cosine schedule, below the learning rate after scaling")
    g.add_argument("--warmup-epochs", type=float, default=0.0, metavar="E",
                   help="linear warm-up from 0 over this many epochs (0 = off, paper)")
    g.add_argument("--label-smoothing", type=float, default=0.0, metavar="EPS", help="0 = off (paper)")
    g.add_argument("--ema", action=argparse.BooleanOptionalAction, default=False,
                   help="keep an exponential moving average of the weights, evaluated alongside")
    g.add_argument("--ema-decay", type=float, default=0.9999, metavar="D", help="EMA decay per step")
    g.add_argument("--clip-grad-norm", type=float, default=0.0, metavar="N", help="0 = off")


def _add_speed_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("speed and distribution")
    g.add_argument("--device", choices=DEVICES, default="auto", help="'auto': CUDA when available")
    g.add_argument("--amp", choices=AMP_CHOICES, default="off",
                   help="mixed precision: bf16 autocast, fp16 autocast + gradient scaler, or off (paper)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False,
                   help="NHWC memory format (faster on GPUs)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False, help="torch.compile the model")
    g.add_argument("--compile-mode", choices=COMPILE_MODES, default="default",
                   help="with --compile: torch.compile's mode. 'reduce-overhead' and 'max-autotune' replay the "
                        "model's forward and backward as CUDA graphs (single-process runs only). They cut the "
                        "host's work per step, which is not what limits --decode gpu: docs/design/input_pipeline.md)")
    g.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=False,
                   help="SyncBatchNorm across processes")
    g.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=False,
                   help="deterministic algorithms (bit-identical resume on CPU; slower on GPU)")
    g.add_argument("--seed", type=int, default=None, metavar="N",
                   help="random seed, 0 to 4294967295 (default: drawn at random and recorded in config.yaml)")
    g.add_argument("--dist-backend", choices=DIST_BACKENDS, default="auto",
                   help="'auto': NCCL on CUDA, gloo on CPU")
    g.add_argument("--dist-url", default=None, metavar="URL",
                   help="(official flag) ignored: torchrun and srun set the rendezvous in the environment")
    g.add_argument("--world-size", type=int, default=None, metavar="N",
                   help="(official flag) processes in all; launch with torchrun/srun instead")
    g.add_argument("--gpu", type=int, default=None, metavar="I",
                   help="(official flag) GPU index for a single-process run")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run, checkpoints and logging")
    g.add_argument("--config", default=None, metavar="YAML",
                   help="flat YAML file whose keys are these long options; the command line overrides it")
    g.add_argument("--output", default=None, metavar="DIR",
                   help="run directory (default: DIR for --resume DIR/last.pth, else runs/<arch>-<timestamp>)")
    g.add_argument("--action", default="", metavar="TEXT",
                   help="(official flag) suffix of the default run directory name")
    g.add_argument("--resume", default=None, metavar="PATH|auto",
                   help="continue training from a checkpoint (a run's DIR/last.pth continues in DIR unless "
                        "--output names another); 'auto' = the newest one in --output (starts fresh if there is "
                        "none); with -e: the weights to evaluate")
    g.add_argument("--resume-override", action="store_true",
                   help="accept options that change the data order or the step count (batch size, image sizes, "
                        "augmentation, seed, number of processes, training images) when resuming; the run then "
                        "continues, but not bit-identically")
    g.add_argument("-e", "--evaluate", action="store_true",
                   help="only evaluate (--resume/--weights PATH) on DATA/val")
    g.add_argument("--save-every-steps", type=int, default=0, metavar="N",
                   help="also checkpoint every N training steps (0 = only at epoch ends)")
    g.add_argument("-p", "--print-freq", type=int, default=50, metavar="N",
                   help="log/progress update every N steps (the only host syncs inside an epoch)")
    g.add_argument("--debug", action="store_true",
                   help="show Python tracebacks for input errors (a config file may set it too: debug: true)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show a default only where it says something (not None, False, '' or an empty list) and the help text
    has none yet. A default of 0 is shown ('0 in (None, False)' would be true: 0 == False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default in ("", [], ())
        if unset or "default" in text or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


def build_parser(prog: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=prog, description=description or ("Train or evaluate ECA-Net and baselines on ImageNet-layout data "
                                                "(defaults: the paper's ResNet recipe)."),
        formatter_class=HelpFormatter,
        epilog="Config files: flat YAML, keys = long option names (e.g. 'batch-size: 256'); command-line "
               "options override them. Exit codes: 0 ok, 1 unexpected error, 2 bad input, 3 loss became "
               "NaN/inf, 4 checkpoint could not be written, 75 preempted (checkpoint saved; rerun with "
               "--resume auto).")
    _add_data_options(parser)
    _add_model_options(parser)
    _add_optim_options(parser)
    _add_speed_options(parser)
    _add_run_options(parser)
    return parser


def _option_table(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Config key (long option name without dashes, or 'data') -> argparse action."""
    table: dict[str, argparse.Action] = {}
    for action in parser._actions:  # argparse has no public API for this
        if not action.option_strings:
            if action.dest == _POSITIONAL_DATA:
                table[_POSITIONAL_DATA] = action
            continue
        for opt in action.option_strings:
            if opt.startswith("--no-") and isinstance(action, argparse.BooleanOptionalAction):
                continue  # the config key is the positive name, set to true or false
            if opt.startswith("--"):
                table[opt[2:]] = action
    table.pop("help", None)
    table.pop("config", None)
    return table


def _coerce(key: str, value: Any, action: argparse.Action) -> Any:
    """Check and convert one config value to what the option would produce."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)):
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' is a switch and takes true or false, got {value!r}.")
        return value
    if value is None:
        if action.default is not None:
            raise ConfigError(f"config key '{key}' is empty (null); give it a value, or delete the line to use the "
                              f"default ({action.default}).")
        return None
    convert = action.type or str
    if action.nargs not in (None, "?"):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' takes a list, got {value!r}.")
        items = list(value)
        if isinstance(action.nargs, int) and len(items) != action.nargs:
            raise ConfigError(f"config key '{key}' takes {action.nargs} values, got {len(items)}.")
        return [_coerce_scalar(key, v, convert, action) for v in items]
    return _coerce_scalar(key, value, convert, action)


# How a config error names the type a key takes.
_TYPE_WORDS = {"int": "a whole number", "float": "a number", "str": "text"}


def _coerce_scalar(key: str, value: Any, convert: Any, action: argparse.Action) -> Any:
    type_name = getattr(convert, "__name__", str(convert))
    type_name = _TYPE_WORDS.get(type_name, f"a {type_name}")
    if isinstance(value, (dict, list, bool)) or (convert is int and isinstance(value, float)
                                                  and not value.is_integer()):
        # e.g. ksize: [3, 5, 5, 7], where the option takes the text the command line would: ksize: '3557'
        hint = (f" Write it as the command line would, quoted: {key}: '{''.join(map(str, value))}'."
                if isinstance(value, list) and convert is str else "")
        raise ConfigError(f"config key '{key}' must be {type_name}, got {value!r}.{hint}")
    try:
        out = convert(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key '{key}' must be {type_name}, got {value!r}.") from None
    if action.choices is not None and out not in action.choices:
        raise ConfigError(f"config key '{key}' must be one of {', '.join(map(str, action.choices))}; "
                          f"got {value!r}.")
    return out


def load_config_file(path: str | os.PathLike, parser: argparse.ArgumentParser,
                     example: str = "configs/eca_resnet50.yaml") -> dict[str, Any]:
    """Read a flat YAML config and return ``{dest: value}``, checking every key and type against ``parser``'s
    options; ``example`` is the config file the error messages point to."""
    path = Path(path)
    if not path.is_file():
        problem = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ConfigError(f"config file {path} {problem}. Check the path; {Path(example).parent}/ holds "
                          f"the recipes (e.g. {example}).")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}. Fix the file.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not text (not UTF-8): it is probably another kind of file. "
                          f"Give a YAML file such as {example}.") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read ({exc.strerror or exc}). Fix its permissions or "
                          f"pass another --config.") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config file {path} must be a flat mapping of option: value, "
                          f"got a {type(raw).__name__}.")
    table = _option_table(parser)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = str(key).replace("_", "-")
        action = table.get(name) or table.get(str(key))
        if action is None:
            close = difflib.get_close_matches(name, table, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"config file {path}: unknown key '{key}'.{hint} Keys are the long options "
                              f"of --help without the dashes.")
        try:
            values[action.dest] = _coerce(str(key), value, action)
        except ConfigError as exc:
            raise ConfigError(f"config file {path}: {exc} Fix that line.") from None
    return values


def parse_config(argv: Sequence[str] | None = None, defaults: Mapping[str, Any] | None = None,
                 prog: str | None = None, description: str | None = None) -> argparse.Namespace:
    """Parse ``argv`` over ``defaults`` and an optional ``--config`` file.

    The result's ``explicit`` holds the dests that the command line or the config file set: a checkpoint's
    recipe fills in the others (:func:`resolve`).
    """
    parser = build_parser(prog, description)
    if defaults:
        parser.set_defaults(**dict(defaults))
    recipe_arch = (defaults or {}).get("arch")
    if recipe_arch:
        next(a for a in parser._actions if a.dest == "arch").help = _arch_help(recipe_arch)
    config_path, from_file = config_file_options(argv, parser)
    parser.set_defaults(**from_file)
    args = parser.parse_args(argv)
    command_line = given_on_the_command_line(argv, lambda: build_parser(prog, description))
    # What parsing decided that the run's log should say, logged by resolve (logging is set up in between).
    args.parse_notes = ()
    if "ksize" in from_file and "ksize" not in command_line and args.arch and not args.arch.startswith("eca_"):
        # An ECA network's config file used for its baseline (-a resnet50 with configs/eca_resnet50.yaml): the
        # recipe applies, its kernel sizes have no layers to go to. Only --ksize on the command line insists.
        args.parse_notes = (f"{config_path}'s ksize {from_file['ksize']} is left out: {args.arch} has no ECA "
                            f"layers",)
        args.ksize = None
        from_file = {dest: value for dest, value in from_file.items() if dest != "ksize"}
    args.explicit = frozenset(from_file) | command_line
    args.command_line = command_line
    # The network whose training recipe the defaults are, and where they come from: the config file's when it
    # names one (each file of configs/ is its network's recipe), else the program's (light_main.py's).
    args.recipe_arch, args.recipe_source = ((from_file["arch"], f"config file {config_path}") if "arch" in from_file
                                            else (recipe_arch, f"{prog or 'this program'}'s defaults"))
    if not args.evaluate and "arch" in args.explicit:   # evaluation takes its recipe from the checkpoint
        check_recipe_fits(args.arch, args, "-a")
    return args


def check_recipe_fits(arch: str, args: argparse.Namespace, source: str) -> None:
    """A ConfigError where ``arch`` (named by ``source``: -a, or the file of --weights) would train with the
    recipe of another family of networks (``args.recipe_arch``, from :func:`parse_config`): a MobileNetV2
    with a ResNet recipe, or the other way round."""
    recipe_arch = getattr(args, "recipe_arch", None)
    if recipe_arch and _family(arch) != _family(recipe_arch):
        from . import models   # here, on the error path only: parsing the options does not import torch

        if not models.is_model(arch):   # an unknown name has no family: say it is unknown
            raise ConfigError(f"{source}: {models.unknown_model_message(arch)}. Pass one of the known names.")
        advice = " or main.py, whose defaults are the paper's ResNet recipe," if _family(arch) == "ResNet" else ""
        raise ConfigError(f"the training options come from {args.recipe_source}, the recipe of {recipe_arch}, and "
                          f"{source} is {arch}, not a {_family(recipe_arch)}: it would train with that recipe. Give "
                          f"{arch} its own recipe (--config configs/<network>.yaml,{advice} or every option on "
                          f"the command line).")


def _family(arch: str) -> str:
    """The recipe family of a network: ``'MobileNetV2'`` or ``'ResNet'`` (plain, SE or ECA)."""
    return "MobileNetV2" if "mobilenet" in arch else "ResNet"


def config_file_options(argv: Sequence[str] | None, parser: argparse.ArgumentParser,
                        example: str = "configs/eca_resnet50.yaml") -> tuple[str | None, dict[str, Any]]:
    """``(path, {dest: value})`` of the ``--config FILE`` that ``argv`` names ((None, {}) without one), read
    before the command line is parsed, so that the file's values become defaults the command line overrides;
    ``parser`` checks the file's keys and ``example`` is the file its errors point to (:func:`load_config_file`)."""
    path = config_file_path(argv)
    return path, (load_config_file(path, parser, example) if path else {})


def config_file_path(argv: Sequence[str] | None, *, exit_on_error: bool = True) -> str | None:
    """The file ``argv``'s ``--config`` names, found as the full parser finds it (``--config PATH``,
    ``--config=PATH``, an unambiguous abbreviation); None without one. ``--config`` with no value is a usage error
    (exit 2), or None with ``exit_on_error=False``."""
    pre = ArgumentParser(add_help=False, exit_on_error=exit_on_error)
    pre.add_argument("--config", default=None)
    try:
        return pre.parse_known_args(argv)[0].config
    except argparse.ArgumentError:   # raised only without exit_on_error
        return None


def given_on_the_command_line(argv: Sequence[str] | None,
                              build: Callable[[], argparse.ArgumentParser]) -> frozenset[str]:
    """The dests that ``argv`` itself sets: parsed again by a fresh parser from ``build`` with every default
    suppressed."""
    parser = build()
    for action in parser._actions:  # argparse has no public API for this
        action.default = argparse.SUPPRESS
    return frozenset(vars(parser.parse_args(argv)))


def config_to_yaml_dict(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> dict[str, Any]:
    """The resolved configuration keyed by long option names, as written to ``config.yaml``."""
    parser = parser or build_parser()
    out: dict[str, Any] = {}
    for key, action in _option_table(parser).items():
        if action.dest in vars(args) and key not in out and not _is_alias(key, action):
            out[key] = getattr(args, action.dest)
    return out


def _is_alias(key: str, action: argparse.Action) -> bool:
    longs = [o[2:] for o in action.option_strings if o.startswith("--")]
    return bool(longs) and key != longs[0]


def write_config(args: argparse.Namespace, path: str | os.PathLike,
                 parser: argparse.ArgumentParser | None = None) -> None:
    """Write the resolved configuration to ``path`` (``config.yaml``). When the file holds another one (a run
    resumed with changed options), the change is appended to ``config_history.yaml`` beside it first, so the
    run's directory tells every configuration it trained with. ``parser``: the command line's (default:
    ``main.py``'s)."""
    path = Path(path)
    data = config_to_yaml_dict(args, parser)
    if path.is_file():
        previous = yaml.safe_load(path.read_text()) or {}
        changed = {key: [previous.get(key), value] for key, value in data.items()
                   if not _same_setting(key, previous.get(key), value)}
        if changed:
            history = path.with_name(CONFIG_HISTORY)
            entry = [{"time": datetime.now().isoformat(timespec="seconds"), "changed": changed}]
            with open(history, "a") as f:
                f.write(yaml.safe_dump(entry, sort_keys=False))
    path.write_text(yaml.safe_dump(data, sort_keys=False))


# Options that fix which images each step sees and how many steps an epoch has: changing them on resume
# breaks the bit-identical continuation, so it needs --resume-override. Others (lr, epochs, workers, ...)
# may change freely; the change is logged and kept in config_history.yaml.
RESUME_LOCKED_OPTIONS = ("batch-size", "global-batch-size", "img-size", "val-resize", "augment", "min-crop-scale",
                         "hflip", "crop-padding", "random-erasing", "seed")
CONFIG_HISTORY = "config_history.yaml"
RESUME_META_OPTIONS = ("resume", "resume-override", "output", "config", "debug")   # say how to run, not what
NORMALISATION_DEFAULTS = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}


def _same_setting(key: str, old: Any, new: Any) -> bool:
    """Whether an option's recorded value ``old`` and ``new`` mean the same setting: equal, or ``mean``/``std``
    recorded as None (the default) and given now as the default's numbers (from the checkpoint's recipe)."""
    if old is None and key in NORMALISATION_DEFAULTS:
        return new is None or list(new) == list(NORMALISATION_DEFAULTS[key])
    return old == new


def resume_changes(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> tuple[dict, dict]:
    """(locked, free): the options whose values differ between a checkpoint's recorded configuration and
    this run's, as ``{key: (old, new)}``, split by :data:`RESUME_LOCKED_OPTIONS`. Keys the checkpoint does
    not record are left out."""
    locked, free = {}, {}
    for key, new in current.items():
        old = recorded.get(key, new)
        if not _same_setting(key, old, new) and key not in RESUME_META_OPTIONS:
            (locked if key in RESUME_LOCKED_OPTIONS else free)[key] = (old, new)
    return locked, free


def describe_changes(changes: Mapping[str, tuple[Any, Any]]) -> str:
    """``{key: (old, new)}`` as 'key old -> new, ...'."""
    return ", ".join(f"{key} {old} -> {new}" for key, (old, new) in changes.items())


def check_resume_changes(locked: Mapping[str, tuple[Any, Any]], free: Mapping[str, tuple[Any, Any]],
                         path: str | os.PathLike, resume_override: bool) -> None:
    """What a resumed run changes, ``{what: (old, new)}``. ``locked`` changes decide which images each step
    sees (batch size, seed, the number of processes, the training set): an error unless ``resume_override``
    (--resume-override), then a warning, since the run is no longer bit-identical. ``free`` changes are
    logged."""
    if locked and not resume_override:
        raise ConfigError(f"{path} was trained with another {', '.join(locked)} than this run asks for "
                          f"({describe_changes(locked)}): resuming would change which images each step sees. "
                          f"Repeat the run's options (its config.yaml), data and number of processes, or pass "
                          f"--resume-override to continue anyway, not bit-identically.")
    if locked:
        log.warning("--resume-override: continuing with %s; the run is no longer bit-identical",
                    describe_changes(locked))
    if free:
        log.info("resumed with changed options: %s", describe_changes(free))


def check_resume(cfg: Config, checkpoint: Mapping[str, Any], path: str | os.PathLike, world_size: int,
                 train_size: int) -> None:
    """A resumed run against its ``checkpoint``: options that would change the data order or the step count are
    an error (unless --resume-override), and so are another number of processes or of training images; other
    changed options are logged (:func:`check_resume_changes`)."""
    locked, free = resume_changes(checkpoint.get("config") or {}, config_to_yaml_dict(cfg))
    if "no-wd-bn-bias" in free:   # the optimizer's state is kept per parameter group, and this regroups them
        old, new = free["no-wd-bn-bias"]
        raise ConfigError(f"{path} was trained with{'' if old else 'out'} --no-wd-bn-bias, which changes how the "
                          f"optimizer groups the parameters and cannot change on resume. Leave the option "
                          f"{'in' if old else 'out'}, or start a new run from these weights with --weights {path}.")
    saved_world = int(checkpoint.get("world_size", 1))
    if saved_world != world_size:
        locked["processes"] = (saved_world, world_size)
    saved_size = checkpoint.get("train_size")   # a checkpoint without it is not checked
    if saved_size is not None and int(saved_size) != train_size:
        locked["training images"] = (int(saved_size), train_size)
    check_resume_changes(locked, free, path, cfg.resume_override)


def _same_as_recipe(option: Any, recorded: Any) -> bool:
    """Whether an option's value is the recipe's (a list given, a tuple recorded; None: the default)."""
    return option is None or (list(option) if isinstance(option, (list, tuple)) else option) == \
        (list(recorded) if isinstance(recorded, (list, tuple)) else recorded)


def recipe_use(cfg: Config, recipe: Any, described: bool) -> str:
    """One line on which preprocessing a checkpoint's ``recipe`` (:class:`ecanet.recipe.Recipe`) decided, unless
    ``described`` (``load_model`` has logged it), and which options overrode it, with the preprocessing that
    runs then; empty when there is nothing to say."""
    overridden = [f"--{dest.replace('_', '-')}" for dest in RECIPE_PREPROCESSING
                  if dest in cfg.explicit and not _same_as_recipe(getattr(cfg, dest), getattr(recipe, dest))]
    parts = [] if described else [f"recipe: {recipe.describe()}"]
    if overridden:
        parts.append(f"preprocessing overridden by {', '.join(overridden)}: Resize({cfg.val_resize}) + "
                     f"CenterCrop({cfg.img_size}), mean {cfg.mean}, std {cfg.std}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------------------- option checks

NO_DATASET_MESSAGE = ("no dataset given. Pass DATA (a folder with train/ and val/ class folders), e.g. "
                      "'python main.py /data/imagenet -a eca_resnet50', or use --synthetic.")


INF = float("inf")
# Each numeric option's domain: (low, low included, high, high included). Checked before anything is loaded.
OPTION_DOMAINS = {
    "--batch-size": (1, True, INF, False), "--val-batch-size": (1, True, INF, False),
    "--epochs": (1, True, INF, False), "--start-epoch": (0, True, INF, False),
    "--img-size": (1, True, INF, False), "--val-resize": (1, True, INF, False),
    "--print-freq": (1, True, INF, False), "--lr-base-batch": (1, True, INF, False),
    "--workers": (0, True, INF, False), "--synthetic-size": (1, True, INF, False),
    "--num-classes": (1, True, INF, False), "--save-every-steps": (0, True, INF, False),
    "--lr": (0, False, INF, False), "--min-lr": (0, True, INF, False), "--weight-decay": (0, True, INF, False),
    "--momentum": (0, True, 1, True), "--lr-decay-epochs": (0, False, INF, False),
    "--lr-decay-rate": (0, False, 1, True), "--warmup-epochs": (0, True, INF, False),
    "--label-smoothing": (0, True, 1, False), "--clip-grad-norm": (0, True, INF, False),
    "--ema-decay": (0, False, 1, False), "--hflip": (0, True, 1, True), "--random-erasing": (0, True, 1, False),
    "--min-crop-scale": (0, False, 1, True), "--crop-padding": (0, True, INF, False),
    "--gpu-decode-threads": (1, True, INF, False), "--seed": (0, True, MAX_SEED, True),
    "--world-size": (1, True, INF, False), "--global-batch-size": (1, True, INF, False),
}
OPTIONAL_NUMBERS = {"--val-batch-size", "--workers", "--num-classes", "--seed", "--world-size"}   # None: decided later


def _inside(value: float, low: float, low_inclusive: bool, high: float, high_inclusive: bool) -> bool:
    above = value >= low if low_inclusive else value > low
    below = value <= high if high_inclusive else value < high
    return above and below


def _number(value: float) -> str:
    """A bound as a person reads it: whole numbers in full (a seed's 4294967295), others as ``%g``."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def domain_text(low: float, low_inclusive: bool, high: float, high_inclusive: bool) -> str:
    """An option's domain in words: ``at least 1``, ``in (0, 1]``."""
    if high == INF:
        return f"at least {_number(low)}" if low_inclusive else f"greater than {_number(low)}"
    return f"in {'[' if low_inclusive else '('}{_number(low)}, {_number(high)}{']' if high_inclusive else ')'}"


def check_eca_impl_runs(eca_impl: str, wants_cuda: bool) -> None:
    """``--eca-impl fused`` insists on the Triton kernels: where they cannot run (no Triton, or the CPU) the run is
    refused before anything is loaded or written, not stopped by the first ECA layer (ConfigError)."""
    if eca_impl != "fused":
        return
    from .models.eca_module import fused_eca_unavailable
    reason = fused_eca_unavailable(wants_cuda)
    if reason is not None:
        raise ConfigError(f"--eca-impl fused insists on the fused ECA kernels, but {reason}. Use --eca-impl auto "
                          f"(the default: the kernels on GPUs, the plain code elsewhere) or --eca-impl plain.")


def check_output_is_a_directory(output: str | None) -> None:
    """``--output`` names the run's directory: an existing file there is refused (ConfigError), and left alone."""
    if output and Path(output).exists() and not Path(output).is_dir():
        raise ConfigError(f"--output {output} is a file, not a directory. Pass a directory for the run's "
                          f"checkpoints and logs (it is created if missing).")


def check_combinations(args: argparse.Namespace, sizes_final: bool = True) -> None:
    """Reject options that cannot go together (ConfigError): what needs a GPU without one, and what the GPU
    decoder or torch.compile's modes do not take. :func:`validate` asks it of the options, :func:`resolve` of
    the resolved configuration again, since a resumed run's own options fill in what was not given.
    ``sizes_final``: whether the crop and resize sizes are final (no checkpoint's recipe to come)."""
    import torch  # not at the top: `--help` answers without importing torch

    from .distributed import launcher_world_size

    wants_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if args.sync_bn and not wants_cuda:
        raise ConfigError("--sync-bn synchronises BatchNorm across GPUs (torch's SyncBatchNorm runs on CUDA only); "
                          "leave it out on the CPU (--no-sync-bn).")
    if args.amp == "fp16" and not wants_cuda:
        raise ConfigError("--amp fp16 needs a CUDA GPU (fp16 autocast with a gradient scaler), and none is "
                          "in use. On the CPU use --amp bf16 or --amp off.")
    check_eca_impl_runs(args.eca_impl, wants_cuda)
    if args.decode == "gpu" and not wants_cuda:
        raise ConfigError("--decode gpu decodes JPEGs with nvJPEG and needs a CUDA GPU. Use --decode cpu.")
    if args.compile_mode != "default" and not args.compile:
        raise ConfigError(f"--compile-mode {args.compile_mode} applies to torch.compile; add --compile or drop "
                          f"--compile-mode.")
    if args.compile and args.compile_mode in CUDA_GRAPH_COMPILE_MODES and launcher_world_size() > 1:
        raise ConfigError(f"--compile-mode {args.compile_mode} (CUDA graphs) is not supported with several "
                          f"processes: DDP's hooks run between the graphs, and this is untested. Use "
                          f"--compile-mode default for multi-GPU runs.")
    if args.decode == "gpu" and (args.augment != "rrc" or args.random_erasing > 0):
        raise ConfigError("--decode gpu implements the paper's augmentation (RandomResizedCrop + flip) only; "
                          "use --decode cpu for --augment crop or --random-erasing (a resumed run keeps its "
                          "own augmentation).")
    if not args.synthetic and sizes_final:
        check_crop_fits(args.img_size, args.val_resize, getattr(args, "explicit", frozenset()))
    if (sizes_final and not args.evaluate and args.batch_size == 1 and args.img_size <= NETWORK_STRIDE
            and not args.sync_bn):
        # the last stage's map is 1x1: BatchNorm in training has one value per channel and refuses it
        raise ConfigError(f"--batch-size 1 with --img-size {args.img_size} leaves the last stage's BatchNorm one "
                          f"value per channel (a 1x1 map of one image), which it cannot normalise in training. "
                          f"Pass -b 2 or more, or --img-size {NETWORK_STRIDE + 1} or more.")


def validate(args: argparse.Namespace) -> None:
    """Reject impossible or conflicting options before anything is loaded or written (raises ConfigError)."""
    from . import models

    for option, (low, low_inclusive, high, high_inclusive) in OPTION_DOMAINS.items():
        value = getattr(args, option.lstrip("-").replace("-", "_"))
        if value is None and option in OPTIONAL_NUMBERS:
            continue
        if value is None or not _inside(value, low, low_inclusive, high, high_inclusive):
            raise ConfigError(f"{option} must be {domain_text(low, low_inclusive, high, high_inclusive)}, got "
                              f"{value}. Pass a value in that range.")
    for option, values in (("--mean", args.mean), ("--std", args.std)):
        if values is not None and not all(math.isfinite(v) for v in values):
            raise ConfigError(f"{option} must be finite numbers, got {values}: the pixels would become NaN or "
                              f"infinite. Pass the dataset's per-channel {option.lstrip('-')}.")
    if args.std is not None and min(args.std) <= 0:
        raise ConfigError(f"--std divides the pixels, so every value must be positive, got {args.std}.")
    if args.start_epoch >= args.epochs:
        raise ConfigError(f"--start-epoch {args.start_epoch} leaves nothing to train with --epochs {args.epochs}; "
                          f"pass a smaller --start-epoch or a larger --epochs.")
    if args.pretrained:
        raise ConfigError("--pretrained is not supported: ecanet downloads nothing. Download the released "
                          "checkpoint yourself and pass --weights PATH (to start from it) or "
                          "-e --resume PATH (to evaluate it).")
    if args.arch is not None and not models.is_model(args.arch):
        source = "-a" if "arch" in getattr(args, "command_line", {"arch"}) else "the config file's arch"
        raise ConfigError(f"{source}: {models.unknown_model_message(args.arch)}. Pass one of the known names.")
    if args.gpu is not None and args.device == "cpu":
        raise ConfigError(f"--gpu {args.gpu} picks a CUDA GPU, and --device cpu runs on the CPU. Leave --gpu out, or "
                          f"pass --device cuda.")
    if args.gpu_decode_share != AUTO and not 0.0 <= args.gpu_decode_share <= 1.0:
        raise ConfigError(f"--gpu-decode-share must be a fraction between 0 and 1, got {args.gpu_decode_share}.")
    # With a checkpoint (-e, --resume, --weights) its recipe may still give the sizes: resolve checks them then.
    check_combinations(args, sizes_final=not (args.evaluate or args.resume or args.weights))
    if args.use_ema and not (args.evaluate or args.weights):
        raise ConfigError("--use-ema picks the EMA's weights of the file that -e evaluates or --weights starts "
                          "from; a resumed run continues both the model and its EMA. Leave it out, or add -e.")
    if args.evaluate and not (args.resume or args.weights):
        raise ConfigError("-e/--evaluate needs the weights to evaluate: -e --resume PATH (or --weights PATH).")
    check_output_is_a_directory(args.output)
    if args.resume == "auto" and not args.output:
        raise ConfigError("--resume auto takes the newest checkpoint of the run in --output DIR; pass the same "
                          "--output the run was started with (e.g. --output runs/my-run --resume auto: a job "
                          "scheduler can use one command for the first start and every requeue).")
    if args.resume and args.resume != "auto" and args.weights and not args.evaluate:
        raise ConfigError("--resume continues a run with its own weights; --weights starts a new run from "
                          "weights. Give one of them.")
    if not (args.data or args.synthetic):
        raise ConfigError(NO_DATASET_MESSAGE)
    explicit, command_line = getattr(args, "explicit", frozenset()), getattr(args, "command_line", frozenset())
    check_batch_options(command_line)
    # -e reads the kernel sizes off the file's weights; the official command passes --ksize anyway, which is
    # checked where -a says the network, and otherwise only for being kernel sizes at all
    if args.ksize is not None and "arch" in explicit:
        check_kernel_sizes(args.arch, args.ksize, "-a" if "arch" in command_line else "the config file")
    elif args.ksize is not None:
        # the sizes check well formed here; against the network once resolve knows it (a checkpoint's, or the
        # program's default)
        check_kernel_size_values(args.ksize)


# Options that only act together with another: (dest, whether it acts given the options, what it needs).
DEPENDENT_OPTIONS = (
    ("ema_decay", lambda v: v["ema"], "--ema"),
    ("min_lr", lambda v: v["sched"] == "cosine", "--sched cosine"),
    ("lr_decay_epochs", lambda v: v["sched"] == "step", "--sched step"),
    ("lr_decay_rate", lambda v: v["sched"] == "step", "--sched step"),
    ("min_crop_scale", lambda v: v["augment"] == "rrc", "--augment rrc"),
    ("crop_padding", lambda v: v["augment"] == "crop", "--augment crop"),
    ("gpu_decode_share", lambda v: v["decode"] == "gpu", "--decode gpu"),
    ("gpu_decode_threads", lambda v: v["decode"] == "gpu", "--decode gpu"),
)


def unused_options(values: Mapping[str, Any], command_line: frozenset[str]) -> list[str]:
    """What the command line sets that the other options leave without an effect, one sentence each. A
    warning, not an error; and not for a config file's settings, since a recipe (or a run's config.yaml, which
    records every option) carries settings that another option then switches off (``--sched cosine`` over a
    step recipe)."""
    return [f"--{dest.replace('_', '-')} {values[dest]} has no effect without {needs}; it is ignored"
            for dest, acts, needs in DEPENDENT_OPTIONS if dest in command_line and not acts(values)]


BATCH_OPTIONS = frozenset({"batch_size", "global_batch_size"})


def check_batch_options(command_line: frozenset[str]) -> None:
    """``-b`` (images per process) and ``--global-batch-size`` (images per step over all processes) both set
    the batch: both on the command line is a ConfigError. (A config file may hold both, as a run's config.yaml
    does: :func:`batch_per_process` says which decides.)"""
    if BATCH_OPTIONS <= command_line:
        raise ConfigError("the command line gives both --batch-size (images per process) and --global-batch-size "
                          "(images per step over all processes), which both set the batch. Give one of them.")


def batch_per_process(values: Mapping[str, Any], explicit: frozenset[str], command_line: frozenset[str],
                      world_size: int) -> tuple[int, int]:
    """(``--batch-size``, ``--global-batch-size``) as the run uses them on ``world_size`` processes.

    ``--global-batch-size`` decides unless ``-b`` comes from a stronger source (the command line over a config
    file, either over a resumed run's config.yaml); the global batch is then ``-b`` x processes. Either way
    config.yaml records both, so that a resumed run, or a run given that file as ``--config``, keeps the global
    batch. A global batch must divide evenly among the processes: the learning rate is scaled to the global
    batch (main.py), and the paper's recipe is 256 images a step however many GPUs share them.
    """
    batch, global_batch = values["batch_size"], values["global_batch_size"]
    if global_batch is None or ("batch_size" in command_line and "global_batch_size" not in command_line) or \
            ("batch_size" in explicit and "global_batch_size" not in explicit):
        if global_batch is not None and "global_batch_size" in explicit:
            log.info("-b %d on the command line overrides the config file's global-batch-size %d", batch,
                     global_batch)
        return batch, batch * world_size
    if global_batch % world_size:
        multiple = -(-global_batch // world_size) * world_size
        raise ConfigError(f"--global-batch-size {global_batch} does not divide evenly among {world_size} processes. "
                          f"Pass a multiple of {world_size} (e.g. --global-batch-size {multiple}), or -b N for the "
                          f"images per process.")
    return global_batch // world_size, global_batch


def check_kernel_size_values(ksize: Any) -> None:
    """A ConfigError where ``--ksize`` is no kernel sizes at all (even, zero, not numbers), whatever the network."""
    from .models.eca_module import kernel_size_values

    try:
        kernel_size_values(ksize)
    except ValueError as exc:
        raise ConfigError(f"--ksize {ksize!r}: {exc}. Pass odd kernel sizes, one digit per stage (e.g. 3557).") \
            from None


def check_kernel_sizes(arch: str, ksize: Any, source: str) -> None:
    """A ConfigError where ``--ksize`` does not fit ``arch`` (named by ``source``: -a, a checkpoint, ...)."""
    from . import models

    if not arch.startswith("eca_"):
        raise ConfigError(f"--ksize sets ECA kernel sizes, but {source} gives '{arch}', which has no ECA layers. "
                          f"Drop --ksize or pick an eca_* architecture.")
    try:
        models.check_kernel_sizes(arch, ksize)
    except ValueError as exc:
        raise ConfigError(f"--ksize {ksize!r} does not fit {arch} ({source}): {exc}. Pass kernel sizes for "
                          f"{arch}, or leave --ksize out.") from None


# ------------------------------------------------------------------------------------ the resolved configuration

def resolve_gpu_share(share: float | str, workers: int) -> float:
    """``--gpu-decode-share`` as a number: 'auto' is :data:`AUTO_GPU_DECODE_SHARE` where there are at least
    :data:`MIN_WORKERS_FOR_CPU_SHARE` loader workers to decode the CPU share, else 1 (every image on the GPU).
    The validation loader uses the same share; GPU and CPU crops differ slightly in their pixels, so evaluation
    figures can differ by a hair between shares."""
    if share != AUTO:
        return float(share)
    return AUTO_GPU_DECODE_SHARE if workers >= MIN_WORKERS_FOR_CPU_SHARE else 1.0


class Config(argparse.Namespace):
    """The run's configuration once :func:`resolve` has filled in every 'auto' and default: read-only.

    Attribute names are the options' dests (``cfg.batch_size``). Assigning to one raises, so no part of a
    run can change what the others see; :func:`write_config` records exactly this in ``config.yaml``.
    """

    def __init__(self, **values: Any) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"the configuration is read-only once resolved (tried to set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"the configuration is read-only once resolved (tried to delete {name!r})")


# What a checkpoint's recipe decides unless an option says otherwise: how its inputs are preprocessed.
RECIPE_PREPROCESSING = ("img_size", "val_resize", "mean", "std")
# What a resumed run takes from its own config.yaml unless an option says otherwise: what it trains and how
# (the data, the network, the weights it started from, the optimisation). Where the data is, and how fast and
# where the run computes (workers, device, precision, compile, decoding), are this start's own.
RESUME_INHERITED_OPTIONS = ("weights", "use-ema", "img-size", "val-resize", "augment", "min-crop-scale",
                            "crop-padding", "hflip", "random-erasing", "mean", "std", "synthetic", "synthetic-size",
                            "ksize", "num-classes", "epochs", "batch-size", "global-batch-size", "val-batch-size",
                            "lr", "lr-base-batch",
                            "momentum", "nesterov", "weight-decay", "no-wd-bn-bias", "sched", "lr-decay-epochs",
                            "lr-decay-rate", "min-lr", "warmup-epochs", "label-smoothing", "ema", "ema-decay",
                            "clip-grad-norm", "sync-bn", "deterministic")


def training_run_dir(args: argparse.Namespace) -> Path | None:
    """The run directory a training run writes to, where the options say it before :func:`resolve`: ``--output``,
    or for ``--resume DIR/last.pth`` of a run directory (its ``config.yaml`` beside it) that DIR, so that the run
    goes on saving beside its checkpoint (a requeued job repeating the command then continues from the newest
    one). Any other file (a copy under another name, a last.pth in a downloads folder) starts a directory of its
    own rather than write into its folder. None: a new directory."""
    if args.output:
        return Path(args.output)
    resumed = Path(args.resume) if args.resume and args.resume != "auto" and not args.evaluate else None
    if resumed is not None and resumed.name == LAST_CHECKPOINT and (resumed.parent / RUN_CONFIG).is_file():
        return resumed.parent
    return None


def inherited_options(args: argparse.Namespace, recorded: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{dest: value}``: the options of :data:`RESUME_INHERITED_OPTIONS` that a resumed run's ``config.yaml``
    (``recorded``) gives and no option (the command line or ``--config``) sets; :func:`resolve` applies them."""
    if not recorded:
        return {}
    explicit = getattr(args, "explicit", frozenset())
    table = _option_table(build_parser())
    return {table[key].dest: recorded[key] for key in RESUME_INHERITED_OPTIONS
            if key in recorded and table[key].dest not in explicit}


def resolve(args: argparse.Namespace, *, default_workers: int, fresh_seed: int, timestamp: str,
            resumed_seed: int | None = None, recipe: Any = None,
            recorded: Mapping[str, Any] | None = None, world_size: int = 1) -> Config:
    """Fill in what the options leave open, once, and freeze the result.

    Args:
        args: parsed (and :func:`validate`-d) options; not modified.
        default_workers: loader workers per process when ``--workers`` is not given.
        fresh_seed: the seed when neither ``--seed`` nor a resumed run gives one (the same on every rank).
        timestamp: names the default run directory, ``runs/<arch>-<timestamp>``.
        resumed_seed: the seed of the run being resumed: its data order and augmentations continue (unless
            ``--seed`` names another, which the resume check then refuses without ``--resume-override``).
        recipe: the :class:`~ecanet.recipe.Recipe` of the checkpoint that ``-e`` evaluates, a resumed run
            continues or ``--weights`` starts from: its preprocessing, and when training its architecture,
            apply unless an option sets them.
        recorded: the configuration of the run being resumed (its ``config.yaml`` keys): the options of
            :data:`RESUME_INHERITED_OPTIONS` that neither the command line nor ``--config`` sets are its, so that
            the run continues as it started, and an option left out is not reported as changed.
        world_size: the number of processes, among which ``--global-batch-size`` is divided.
    """
    values = dict(vars(args))
    explicit = getattr(args, "explicit", frozenset())
    for note in getattr(args, "parse_notes", ()):
        log.info("%s", note)
    values.update(inherited_options(args, recorded))
    if recipe is not None:
        for dest in RECIPE_PREPROCESSING:
            if dest not in explicit:
                value = getattr(recipe, dest)
                values[dest] = list(value) if isinstance(value, tuple) else value
        if not args.evaluate and "arch" not in explicit:
            values["arch"] = recipe.arch
            if not recorded:   # --weights: the file's network would train with the program's recipe
                check_recipe_fits(recipe.arch, args, "the network of --weights")
    if "img_size" in explicit and "val_resize" not in explicit:
        # A crop size alone keeps the crop ratio (the resumed run's, the checkpoint recipe's or the paper's), rather
        # than center-cropping a small patch out of the other size's resize.
        run = recorded if recorded and {"img-size", "val-resize"} <= recorded.keys() else None
        if run is None or run["img-size"] != values["img_size"]:
            ratio = (run["img-size"] / run["val-resize"] if run else
                     recipe.crop_ratio if recipe is not None else EVAL_CROP_RATIO)
            values["val_resize"] = resize_for_crop(values["img_size"], ratio)
    values["workers"] = default_workers if args.workers is None else args.workers
    if recorded and "global-batch-size" not in recorded and "global_batch_size" not in explicit:
        values["global_batch_size"] = None   # a config.yaml without the option: its -b was the batch
    if not args.evaluate:   # evaluation keeps -b: it has no optimizer step whose batch the recipe fixes
        command_line = getattr(args, "command_line", frozenset())
        values["batch_size"], values["global_batch_size"] = batch_per_process(values, explicit, command_line,
                                                                              world_size)
        for warning in unused_options(values, command_line):
            log.warning("%s", warning)
    if values["synthetic"] and values["data"]:
        log.warning("DATA %s is not read: --synthetic trains and evaluates on random images. Drop one of the "
                    "two.", values["data"])
    # An explicit --seed that differs from a resumed run's is kept, so that the resume check refuses it (it is
    # a locked option) rather than the run ignoring it.
    values["seed"] = next(s for s in (args.seed, resumed_seed, fresh_seed) if s is not None)
    if not args.evaluate:
        values["arch"] = values["arch"] or DEFAULT_ARCH
        if values["ksize"] is not None and "arch" not in explicit:   # -a given: validate checked it
            check_kernel_sizes(values["arch"], values["ksize"],
                               "the checkpoint" if recipe is not None or recorded else "the default network")
    if args.decode == "gpu":
        values["gpu_decode_share"] = resolve_gpu_share(args.gpu_decode_share, values["workers"])
    if not args.evaluate:
        run_dir = training_run_dir(args)
        name = f"{values['arch']}-{timestamp}" + (f"-{args.action}" if args.action else "")
        values["output"] = str(run_dir if run_dir is not None else Path("runs") / name)
    if (recipe is not None or recorded or args.resume or args.evaluate or args.weights
            or values["batch_size"] != args.batch_size):
        # validate left the sizes to this point, and a checkpoint or the global batch may have filled in options:
        # together, again
        check_combinations(argparse.Namespace(**values))
    return Config(**values)


# The paper's ratio of crop to resize for evaluation: 224 / 256.
EVAL_CROP_RATIO = IMAGENET_IMG_SIZE / IMAGENET_VAL_RESIZE


def resize_for_crop(img_size: int, crop_ratio: float = EVAL_CROP_RATIO) -> int:
    """The resize whose centre ``img_size`` crop keeps ``crop_ratio`` of it: ``floor(img_size / crop_ratio)``,
    as timm derives its resize from ``crop_pct`` (256 for 224 at the paper's ratio)."""
    return max(img_size, math.floor(img_size / crop_ratio + 1e-9))


def check_crop_fits(img_size: int, val_resize: int, explicit: frozenset[str] = frozenset()) -> None:
    """Validation center-crops ``img_size`` pixels out of images resized to ``val_resize``: a crop larger than
    that would be padded with black borders (torchvision's CenterCrop), so it is a ConfigError where an option
    (``explicit``: the command line or a config file) asks for it. Sizes a checkpoint or the defaults give
    alone are left as they are, so that a run is never refused what it was started with."""
    if img_size <= val_resize or "val_resize" not in explicit:
        return  # without --val-resize, resolve derives it from --img-size (resize_for_crop)
    raise ConfigError(f"--img-size {img_size} is larger than --val-resize {val_resize}: validation would center-crop "
                      f"{img_size} pixels out of {val_resize} and pad the rest with black. Set --val-resize "
                      f"{resize_for_crop(img_size)} (the paper's 224/256 ratio) or more, on the command line or in "
                      f"the config file, or set neither: --img-size alone keeps the crop ratio.")
