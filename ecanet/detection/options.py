"""The command line of det_main.py: options, config files, their checks (resuming included), and the resolved
configuration.

Precedence: built-in defaults (the paper's Mask R-CNN 1x recipe, ``configs/detection/mask_rcnn_eca_resnet50.yaml``)
< the checkpoint a run resumes or ``-e`` evaluates (its recorded options) < ``--config FILE`` < options on the
command line. Config files are flat YAML whose keys are the long options (``batch_size`` and ``batch-size`` are
the same key): the six paper configs and every run's own ``config.yaml`` both load. Checks raise
:class:`~ecanet.errors.ConfigError` (exit 2) before anything is loaded or written; :func:`resolve` then fills
in what is left open, once, into a read-only :class:`ecanet.config.Config`. A resumed or evaluated checkpoint
is checked against that configuration (:func:`check_changes`; the training images and the number of processes
by :func:`check_data_unchanged`): what cannot change raises :class:`~ecanet.errors.CheckpointError`.

Importable without torch, so that ``det_main.py --help`` answers at once.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

from .. import config as cls_config
from ..config import AMP_CHOICES, DEVICES, ArgumentParser, Config
from ..constants import DETECTOR_NAMES, ECA_IMPLEMENTATIONS, MAX_TRAINABLE_LAYERS, NETWORK_STRIDE
from ..errors import CheckpointError, ConfigError, DataError

log = logging.getLogger(__name__)

DETECTION_CONFIG_EXAMPLE = "configs/detection/mask_rcnn_eca_resnet50.yaml"
NORMS = ("auto", "frozen", "bn")
PAPER_BATCH = 8               # the paper configs' total batch (mmdetection's 2 images x 8 GPUs / 2)
PAPER_BOX_BATCH_PER_IMAGE = 512   # RoIs per image in the R-CNN heads' loss (torchvision's and mmdetection's)
CONFIG_HISTORY = cls_config.CONFIG_HISTORY
# The smallest --min-size and --max-size: twice the backbone's stride, so that a side resized to it (rounded down,
# then padded to a multiple of the stride) spans at least two cells of the last stage's map. At the stride or
# less that map can be 1x1, one value per channel, which BatchNorm cannot normalise in training.
MIN_IMAGE_SIZE = 2 * NETWORK_STRIDE

# The help keeps these lines as written (RawDescriptionHelpFormatter): each at most HELP_COLUMNS wide.
HELP_COLUMNS = 100
DESCRIPTION = """\
Train or evaluate Faster R-CNN, Mask R-CNN and RetinaNet with ECA-ResNet (or ResNet, SE-ResNet)
backbones on COCO-format detection data."""
EPILOG = """\
DATA layouts (the first that exists is used; --train-images, --train-annotations, --val-images
and --val-annotations override either):
  DATA/annotations/instances_train.json, DATA/train/
  DATA/annotations/instances_val.json, DATA/val/
  DATA/annotations/instances_train2017.json, DATA/train2017/   (COCO 2017, likewise val2017)
Labels are the files' category ids; --num-classes defaults to the largest id + 1 (COCO: 91).

Learning rate: --lr is for a total batch of --lr-base-batch images (default: the --config file's
batch-size, else 8) and is scaled linearly to --batch-size, the total over all processes.
Schedule: linear warm-up from --warmup-factor x lr over --warmup-iters steps, then x0.1 after each
epoch of --lr-steps.

Config files: flat YAML, keys = long options (configs/detection/*.yaml, or a run's config.yaml);
the command line overrides them. --resume continues a run with its recorded options unless
options say otherwise.
Exit codes: 0 ok, 1 unexpected error, 2 bad input, 3 loss became NaN/inf, 4 checkpoint could not
be written, 75 stopped by a signal (during training a checkpoint was saved, before it nothing was;
rerun the same command with --resume auto).

Examples:
  python det_main.py data/coco --config configs/detection/mask_rcnn_eca_resnet50.yaml \\
      --weights ECA_R50.pth.tar
  torchrun --nproc_per_node 8 det_main.py data/coco \\
      --config configs/detection/retinanet_eca_resnet50.yaml ...
  python det_main.py data/coco -e --resume runs/det-mask_rcnn-eca_resnet50-.../model.pth
"""


def _add_data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("data", metavar="DATA", nargs="?", default=None,
                   help="dataset root in one of the layouts below (optional with the four path options, or when "
                        "resuming: the run's recorded paths are used)")
    g.add_argument("--train-images", default=None, metavar="DIR", help="training image folder")
    g.add_argument("--train-annotations", default=None, metavar="FILE", help="training COCO annotation file")
    g.add_argument("--val-images", default=None, metavar="DIR", help="validation image folder")
    g.add_argument("--val-annotations", default=None, metavar="FILE", help="validation COCO annotation file")
    g.add_argument("--limit-train", type=int, default=0, metavar="N",
                   help="train on the first N images (by image id) only, for demos and tests (0 = all)")
    g.add_argument("-j", "--workers", type=int, default=None, metavar="N",
                   help="data-loading processes per GPU (default: CPU cores / processes - 1, at most "
                        f"{cls_config.MAX_AUTO_WORKERS})")
    g.add_argument("--hflip", type=float, default=0.5, metavar="P", help="horizontal-flip probability in training")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--detector", choices=DETECTOR_NAMES, default="mask_rcnn", help="detection architecture")
    g.add_argument("--arch", default="eca_resnet50", metavar="ARCH",
                   help="backbone ResNet: resnet18-152, se_resnet*, eca_resnet*")
    g.add_argument("--ksize", default=None, metavar="K",
                   help="ECA kernel sizes, one digit per stage ('3377') or one for all (default: those of "
                        "--weights, else the paper's adaptive psi(C)); a config file's value is dropped for a "
                        "backbone without ECA")
    g.add_argument("--num-classes", type=int, default=None, metavar="N",
                   help="class ids including background 0 (default: the largest category id + 1)")
    g.add_argument("--trainable-layers", type=int, default=3, metavar="N",
                   help="backbone stages that train, of layer4, layer3, layer2, layer1, conv1 (3: stem and "
                        "layer1 frozen, as the paper's mmdetection runs)")
    g.add_argument("--norm", choices=NORMS, default="auto",
                   help="backbone normalisation: 'frozen' (FrozenBatchNorm2d, for ImageNet-trained --weights, as "
                        "torchvision and mmdetection), 'bn' (BatchNorm2d trained with the network, SyncBatchNorm over "
                        "GPU processes; for training from scratch); 'auto': frozen with --weights, else bn")
    g.add_argument("--weights", default=None, metavar="PATH",
                   help="the backbone's classification checkpoint (any file ecanet.load_model reads, the "
                        "official eca_resnet50_k3557.pth.tar included); without it the backbone starts from "
                        "random weights")
    g.add_argument("--eca-impl", choices=ECA_IMPLEMENTATIONS, default="auto",
                   help="ECA implementation: fused Triton kernels on CUDA ('auto'/'fused') or plain PyTorch")
    g.add_argument("--min-size", type=int, default=800, metavar="PX",
                   help=f"shorter image side after resizing, {MIN_IMAGE_SIZE} or more")
    g.add_argument("--max-size", type=int, default=1333, metavar="PX",
                   help=f"longest image side after resizing, {MIN_IMAGE_SIZE} or more")
    g.add_argument("--box-batch-per-image", type=int, default=PAPER_BOX_BATCH_PER_IMAGE, metavar="N",
                   help="R-CNNs: proposals sampled per image for the box and mask heads' losses (torchvision's "
                        "box_batch_size_per_image, mmdetection's rcnn sampler num)")


def _add_optim_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optimisation (defaults: the paper's 1x schedule)")
    g.add_argument("--epochs", type=int, default=12, metavar="N", help="total epochs")
    g.add_argument("-b", "--batch-size", type=int, default=PAPER_BATCH, metavar="N",
                   help="images per step, in total over all processes (a multiple of their number)")
    g.add_argument("--lr", "--learning-rate", type=float, default=0.01, metavar="LR",
                   help="learning rate for a total batch of --lr-base-batch images")
    g.add_argument("--lr-base-batch", type=int, default=PAPER_BATCH, metavar="N",
                   help="the total batch --lr is given for (default: the --config file's batch-size, else 8)")
    g.add_argument("--lr-steps", type=int, nargs="+", default=[8, 11], metavar="E",
                   help="epochs after which the learning rate is multiplied by 0.1, increasing")
    g.add_argument("--warmup-iters", type=int, default=500, metavar="N", help="steps of linear warm-up (0 = off)")
    g.add_argument("--warmup-factor", type=float, default=1 / 3, metavar="F",
                   help="fraction of the learning rate the warm-up starts from")
    g.add_argument("--momentum", type=float, default=0.9, metavar="M", help="SGD momentum")
    g.add_argument("--weight-decay", "--wd", type=float, default=1e-4, metavar="W",
                   help="SGD weight decay, on every trainable parameter (as mmdetection)")
    g.add_argument("--clip-grad-norm", type=float, default=0.0, metavar="N",
                   help="clip the gradients' total norm to N (0 = off; mmdetection v1's configs use 35)")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run, speed, checkpoints and logging")
    g.add_argument("--config", default=None, metavar="YAML", help="flat YAML file of options (see below)")
    g.add_argument("--output", default=None, metavar="DIR",
                   help="run directory (default: DIR for --resume DIR/last.pth, else "
                        "runs/det-<detector>-<arch>-<timestamp>)")
    g.add_argument("--resume", default=None, metavar="PATH|auto",
                   help="continue training from a checkpoint (a run's DIR/last.pth continues in DIR unless "
                        "--output names another; 'auto': DIR/last.pth of --output, or a new run when there is none); "
                        "with -e: the detection checkpoint to evaluate")
    g.add_argument("--resume-override", action="store_true",
                   help="resume although options that decide the batches changed (batch size, image sizes, flip, "
                        "training set, processes): the run continues, not bit-identically")
    g.add_argument("-e", "--evaluate", action="store_true",
                   help="only evaluate the checkpoint of --resume (last.pth or model.pth) on the validation split")
    g.add_argument("--eval-every", type=int, default=1, metavar="N",
                   help="evaluate every N epochs and after the last (0: only after the last)")
    g.add_argument("--save-every-steps", type=int, default=0, metavar="N",
                   help="also write last.pth every N steps (0: at epoch ends only)")
    g.add_argument("-p", "--print-freq", type=int, default=20, metavar="N",
                   help="log every N steps (the only host syncs inside an epoch)")
    g.add_argument("--device", choices=DEVICES, default="auto", help="'auto': CUDA when available")
    g.add_argument("--amp", choices=AMP_CHOICES, default="off",
                   help="mixed precision: bf16 autocast, fp16 autocast with a gradient scaler (CUDA), or off")
    g.add_argument("--seed", type=int, default=None, metavar="N",
                   help="random seed, 0 to 4294967295 (default: drawn at random and recorded in config.yaml)")
    g.add_argument("--dist-backend", choices=cls_config.DIST_BACKENDS, default="auto",
                   help="'auto': NCCL on CUDA, gloo on CPU")
    g.add_argument("--debug", action="store_true",
                   help="show Python tracebacks for input errors (a config file may set it too: debug: true)")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="det_main.py", description=DESCRIPTION, epilog=EPILOG, formatter_class=_HelpFormatter)
    _add_data_options(parser)
    _add_model_options(parser)
    _add_optim_options(parser)
    _add_run_options(parser)
    return parser


class _HelpFormatter(cls_config.HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown where they say something (as main.py's help), the epilog's layout kept."""


# ------------------------------------------------------------------------------------------------ parsing

def parse_options(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` over an optional ``--config`` file. ``explicit`` holds the dests the file or the command
    line set: a resumed or evaluated checkpoint's recorded options fill in the others (:func:`resolve`)."""
    parser = build_parser()
    _, from_file = cls_config.config_file_options(argv, parser, DETECTION_CONFIG_EXAMPLE)
    if "batch_size" in from_file and "lr_base_batch" not in from_file:
        from_file["lr_base_batch"] = from_file["batch_size"]  # a config's lr is for its own batch
    parser.set_defaults(**from_file)
    args = parser.parse_args(argv)
    args.command_line = cls_config.given_on_the_command_line(argv, build_parser)
    args.explicit = frozenset(from_file) | args.command_line
    return args


def config_to_yaml_dict(cfg: argparse.Namespace, num_classes: int | None = None) -> dict[str, Any]:
    """The configuration keyed by long option names, as ``config.yaml`` and the checkpoints record it;
    ``num_classes``, the number the run found in its annotations, records what ``--num-classes`` left open,
    so that the file builds the same detector."""
    return cls_config.config_to_yaml_dict(_recorded(cfg, num_classes), build_parser())


def write_run_config(cfg: Config, path: Path, num_classes: int | None = None) -> None:
    """Write ``config.yaml`` (and the change to ``config_history.yaml`` when a resumed run changed options);
    ``num_classes`` as for :func:`config_to_yaml_dict`."""
    cls_config.write_config(_recorded(cfg, num_classes), path, build_parser())


def _recorded(cfg: argparse.Namespace, num_classes: int | None) -> argparse.Namespace:
    if num_classes is None or cfg.num_classes is not None:
        return cfg
    return argparse.Namespace(**{**vars(cfg), "num_classes": num_classes})


# ------------------------------------------------------------------------------------------ option checks

INF = float("inf")
# Each numeric option's domain: (low, low included, high, high included).
OPTION_DOMAINS = {
    "--batch-size": (1, True, INF, False), "--lr-base-batch": (1, True, INF, False),
    "--epochs": (1, True, INF, False), "--lr": (0, False, INF, False), "--warmup-iters": (0, True, INF, False),
    "--warmup-factor": (0, False, 1, True), "--momentum": (0, True, 1, True), "--weight-decay": (0, True, INF, False),
    "--min-size": (1, True, INF, False), "--max-size": (1, True, INF, False), "--hflip": (0, True, 1, True),
    "--trainable-layers": (0, True, MAX_TRAINABLE_LAYERS, True), "--num-classes": (2, True, INF, False),
    "--limit-train": (0, True, INF, False), "--workers": (0, True, INF, False), "--print-freq": (1, True, INF, False),
    "--save-every-steps": (0, True, INF, False), "--eval-every": (0, True, INF, False),
    "--box-batch-per-image": (1, True, INF, False), "--clip-grad-norm": (0, True, INF, False),
    "--seed": (0, True, cls_config.MAX_SEED, True),
}
OPTIONAL_NUMBERS = {"--num-classes", "--workers", "--seed"}   # None: decided later


def _check_domain(option: str, value: Any, low: float, low_inclusive: bool, high: float, high_inclusive: bool) -> None:
    above = value is not None and (value >= low if low_inclusive else value > low)
    below = value is not None and (value <= high if high_inclusive else value < high)
    if not (above and below):
        raise ConfigError(f"{option} must be {cls_config.domain_text(low, low_inclusive, high, high_inclusive)}, got "
                          f"{value}. Pass a value in that range.")


def check_image_sizes(min_size: int, max_size: int) -> None:
    """--min-size and --max-size at least :data:`MIN_IMAGE_SIZE`, and in order (ConfigError)."""
    for option, value in (("--min-size", min_size), ("--max-size", max_size)):
        if value < MIN_IMAGE_SIZE:
            raise ConfigError(f"{option} {value} is below {MIN_IMAGE_SIZE} pixels: the backbone downsamples by "
                              f"{NETWORK_STRIDE}, so an image that small can leave the last stage's BatchNorm one "
                              f"value per channel (a 1x1 map of one image), which it cannot normalise in training, "
                              f"and too few cells to find objects in. Pass --min-size and --max-size "
                              f"{MIN_IMAGE_SIZE} or more.")
    if min_size > max_size:
        raise ConfigError(f"--min-size {min_size} is larger than --max-size {max_size}: the shorter side cannot "
                          f"exceed the longer one's cap. Raise --max-size or lower --min-size.")


def check_lr_steps(lr_steps: Sequence[int]) -> None:
    """--lr-steps: increasing epochs from 1 on (ConfigError). Steps at or past the run's last epoch are allowed:
    a shorter run of a schedule (the default's, a config file's) simply does not reach them, and
    :func:`resolve` logs which."""
    steps = list(lr_steps)
    given = " ".join(str(step) for step in steps)
    if any(step < 1 for step in steps):
        raise ConfigError(f"--lr-steps {given}: the steps are epochs after which the learning rate drops, from 1 on. "
                          f"Pass epochs of 1 or more, e.g. --lr-steps 8 11 for 12 epochs.")
    if steps != sorted(set(steps)):
        raise ConfigError(f"--lr-steps {given} are not increasing: each is the epoch after which the learning rate "
                          f"drops once more (x0.1). Pass each epoch once, in increasing order, e.g. --lr-steps "
                          f"{' '.join(str(step) for step in sorted(set(steps)))}.")


PYCOCOTOOLS_MISSING = ("det_main.py reads COCO annotations and scores COCO's AP with pycocotools, which is not "
                       "installed. Install it with 'pip install pycocotools', or 'pip install \".[detection]\"' from "
                       "the checkout.")


def validate(args: argparse.Namespace) -> None:
    """Reject impossible or conflicting options before anything is loaded or written (ConfigError)."""
    import torch  # here: `--help` answers without torch

    from .backbone import backbone_archs

    if importlib.util.find_spec("pycocotools") is None:
        raise ConfigError(PYCOCOTOOLS_MISSING)

    for option, domain in OPTION_DOMAINS.items():
        value = getattr(args, option.lstrip("-").replace("-", "_"))
        if value is None and option in OPTIONAL_NUMBERS:
            continue
        _check_domain(option, value, *domain)
    check_image_sizes(args.min_size, args.max_size)
    check_lr_steps(args.lr_steps)
    if args.arch not in backbone_archs():
        raise ConfigError(f"unknown detection backbone '{args.arch}'. Known: {', '.join(backbone_archs())}.")
    if args.ksize is not None and "ksize" in args.command_line and not args.arch.startswith("eca_"):
        raise ConfigError(f"--ksize sets ECA kernel sizes, but '{args.arch}' has no ECA layers. Drop --ksize or "
                          f"pick an eca_* backbone.")
    # A run's own config.yaml records the default; only another value asks for something RetinaNet lacks.
    if args.detector == "retinanet" and "box_batch_per_image" in args.explicit and \
            args.box_batch_per_image != PAPER_BOX_BATCH_PER_IMAGE:
        raise ConfigError("--box-batch-per-image applies to the R-CNN heads; RetinaNet has none (it scores every "
                          "anchor). Drop the option.")
    wants_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if args.amp == "fp16" and not wants_cuda:
        raise ConfigError("--amp fp16 needs a CUDA GPU (fp16 autocast with a gradient scaler), and none is in use. "
                          "On the CPU use --amp bf16 or --amp off.")
    cls_config.check_eca_impl_runs(args.eca_impl, wants_cuda)
    if args.evaluate and not args.resume:
        raise ConfigError("-e/--evaluate needs the detection checkpoint to evaluate: -e --resume PATH (a run's "
                          "last.pth or model.pth), or -e --resume auto --output DIR.")
    if args.resume == "auto" and not args.output:
        raise ConfigError("--resume auto takes DIR/last.pth of the run in --output DIR; pass the --output the run "
                          "was started with (one command then serves the first start and every requeue).")
    if args.resume and args.resume != "auto" and args.weights and not args.evaluate:
        raise ConfigError("--resume PATH continues a run with its own weights; --weights starts a new run from a "
                          "backbone checkpoint. Give one of them (--resume auto may go with --weights: the first "
                          "start reads them, a resumed run its own checkpoint).")
    cls_config.check_output_is_a_directory(args.output)
    paths = (args.train_images, args.train_annotations, args.val_images, args.val_annotations)
    if not (args.data or args.resume or all(paths)):  # a resumed or evaluated run has its recorded paths
        raise ConfigError("no dataset given. Pass DATA (a folder with annotations/instances_{train,val}.json and "
                          "train/, val/ image folders, or COCO 2017's names), or all of --train-images, "
                          "--train-annotations, --val-images and --val-annotations.")


# ------------------------------------------------------------------------------------------- data paths

LAYOUTS = (("annotations/instances_{split}.json", "{split}"),            # this project's toy sets
           ("annotations/instances_{split}2017.json", "{split}2017"))    # COCO 2017 as downloaded
SPLITS = ("train", "val")


def data_paths(data: str | None, given: Mapping[str, str | None], splits: Sequence[str] = SPLITS
               ) -> dict[str, str]:
    """``{'<split>_images', '<split>_annotations'}`` for each of ``splits``: the options' paths where given,
    else those of the first layout of :data:`LAYOUTS` whose annotation file exists under ``data``."""
    paths: dict[str, str] = {}
    for split in splits:
        images, annotations = given.get(f"{split}_images"), given.get(f"{split}_annotations")
        if not (images and annotations):
            if data is None:
                raise ConfigError(f"no {split} split given: pass DATA or --{split}-images and --{split}-annotations.")
            root = Path(data)
            tried = [(root / a.format(split=split), root / i.format(split=split)) for a, i in LAYOUTS]
            found = next(((a, i) for a, i in tried if a.is_file()), None)
            if found is None:
                raise DataError(f"no {split} annotation file in {root}: looked for "
                                f"{' and '.join(str(a) for a, _ in tried)}. Pass the dataset root holding "
                                f"annotations/ (see --help for the layouts), or --{split}-annotations FILE and "
                                f"--{split}-images DIR.")
            annotations, images = annotations or str(found[0]), images or str(found[1])
        paths[f"{split}_images"], paths[f"{split}_annotations"] = str(images), str(annotations)
    return paths


# ------------------------------------------------------------------------------------------ resuming

# Options that say how to run, not what: never taken from a checkpoint, never compared on resume.
RUN_OPTIONS = ("resume", "resume-override", "output", "config", "debug", "evaluate", "workers", "device",
               "dist-backend", "data")
# How a start computes: each start's own, as RUN_OPTIONS, but a change on resume is logged (it is no longer the
# same computation), and a value recorded on another machine (fp16, the fused kernels) is not imposed on this one.
COMPUTE_OPTIONS = ("amp", "eca-impl")
# Where the images and annotations are: a DATA given on the command line replaces the recorded ones.
DATA_PATH_OPTIONS = ("train-images", "train-annotations", "val-images", "val-annotations")
# Options that build the network: a checkpoint's weights only fit the network it was trained with.
NETWORK_OPTIONS = ("detector", "arch", "ksize", "num-classes", "norm")
# What trains: a resumed optimizer's state belongs to these parameters, so it cannot change on resume (evaluation
# does not read it).
TRAINING_FIXED_OPTIONS = ("trainable-layers",)
# Options that decide which images each step sees and how: changing them on resume needs --resume-override.
RESUME_LOCKED_OPTIONS = ("batch-size", "min-size", "max-size", "hflip", "seed", "limit-train",
                         "box-batch-per-image")


def resume_changes(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> tuple[dict, dict, dict]:
    """(network, locked, free): the options whose values differ between a checkpoint's recorded configuration
    and this run's, as ``{key: (old, new)}``. Keys the checkpoint does not record are left out."""
    network, locked, free = {}, {}, {}
    for key, new in current.items():
        old = recorded.get(key, new)
        if old == new or key in RUN_OPTIONS:
            continue
        table = network if key in NETWORK_OPTIONS else locked if key in RESUME_LOCKED_OPTIONS else free
        table[key] = (old, new)
    return network, locked, free


def check_changes(cfg: Config, recorded: Mapping[str, Any], path: Path) -> None:
    """What this run changes against a checkpoint's ``recorded`` configuration: options that change the network
    are an error; those that change the batches (for a resumed run) are an error unless --resume-override; the
    others are logged (:func:`ecanet.config.check_resume_changes`)."""
    network, locked, free = resume_changes(recorded, config_to_yaml_dict(cfg))
    if network:
        raise CheckpointError(f"{path} holds another network than these options build "
                              f"({cls_config.describe_changes(network)}). Leave those options out: the checkpoint's "
                              f"own are used.")
    if not cfg.evaluate:
        fixed = {key: free.pop(key) for key in TRAINING_FIXED_OPTIONS if key in free}
        if fixed:
            raise CheckpointError(f"{path} trained other parameters than these options would "
                                  f"({cls_config.describe_changes(fixed)}): its optimizer's state belongs to those, "
                                  f"so this cannot change on resume. Leave the option out, or start a new run from "
                                  f"the weights.")
        cls_config.check_resume_changes(locked, free, path, cfg.resume_override)


def check_data_unchanged(cfg: Config, checkpoint: Mapping[str, Any], path: Path, train_set: str,
                         world_size: int) -> None:
    """The training images (``train_set``, their fingerprint) and the number of processes decide the batches,
    as the locked options do: a change from what ``checkpoint`` records is an error unless --resume-override."""
    locked = {}
    if checkpoint.get("train_set") not in (None, train_set):
        locked["training set"] = (checkpoint["train_set"], train_set)
    if int(checkpoint.get("world_size", 1)) != world_size:
        locked["processes"] = (int(checkpoint.get("world_size", 1)), world_size)
    cls_config.check_resume_changes(locked, {}, path, cfg.resume_override)


# ------------------------------------------------------------------------------------ the resolved config

def resolve(args: argparse.Namespace, *, default_workers: int, fresh_seed: int, timestamp: str,
            recorded: Mapping[str, Any] | None = None) -> Config:
    """Fill in what the options leave open, once, and freeze the result.

    Args:
        args: parsed and :func:`validate`-d options; not modified.
        default_workers: loader workers per process when ``--workers`` is not given.
        fresh_seed: the seed when neither ``--seed`` nor the checkpoint gives one (the same on every rank).
        timestamp: names the default run directory.
        recorded: the configuration a resumed or evaluated checkpoint records (``config.yaml``'s keys): it
            supplies every option that the command line and ``--config`` leave unset.

    Raises:
        DataError: no annotation file where DATA says (naming the paths tried).
    """
    parser = build_parser()
    values = dict(vars(args))
    explicit = args.explicit
    if recorded:
        # the dataset given again somewhere else (moved, or another): its own paths, not the recorded ones
        moved = "data" in explicit and values["data"] is not None and (
            recorded.get("data") is None or os.path.realpath(recorded["data"]) != os.path.realpath(values["data"]))
        for key, action in cls_config._option_table(parser).items():
            if key in recorded and key not in RUN_OPTIONS + COMPUTE_OPTIONS and action.dest not in explicit \
                    and not (moved and key in DATA_PATH_OPTIONS):
                values[action.dest] = recorded[key]
    if values["ksize"] is not None and not values["arch"].startswith("eca_"):
        if "ksize" in args.command_line:   # the backbone came from the checkpoint, after validate's check
            raise ConfigError(f"--ksize sets ECA kernel sizes, but the checkpoint's {values['arch']} backbone has no "
                              f"ECA layers. Drop --ksize.")
        values["ksize"] = None  # a config file's kernel sizes for an ECA backbone
    if values["ksize"] is not None and values["weights"] and "ksize" not in args.command_line:
        # The paper's rows name kernel sizes (3377) whose ImageNet backbones were not released; a --weights
        # file's own kernel sizes are the ones its ECA weights fit. Only --ksize on the command line insists.
        log.info("--weights %s: its ECA kernel sizes are used, not the config file's ksize %s",
                 values["weights"], values["ksize"])
        values["ksize"] = None
    if not args.evaluate:   # the epochs a resumed run's checkpoint gave are known only here
        past_the_end = [step for step in values["lr_steps"] if step >= values["epochs"]]
        if past_the_end:   # a warning where the steps were given for this run, else a shorter run of a schedule
            log.log(logging.WARNING if "lr_steps" in args.command_line else logging.INFO,
                    "--lr-steps %s: no learning-rate drop after epoch %s, which a run of --epochs %d does not "
                    "finish before it ends", " ".join(map(str, values["lr_steps"])),
                    " and ".join(map(str, past_the_end)), values["epochs"])
    values["norm"] = resolved_norm(values["norm"], values["weights"])
    values["workers"] = default_workers if args.workers is None else args.workers
    values["seed"] = fresh_seed if values["seed"] is None else values["seed"]  # a resumed run's: recorded
    given = {k: values[k] for k in ("train_images", "train_annotations", "val_images", "val_annotations")}
    values.update(data_paths(values["data"], given, ("val",) if args.evaluate else SPLITS))  # -e reads val only
    if not args.evaluate:
        run_dir = cls_config.training_run_dir(args)   # --output, or DIR of --resume DIR/last.pth
        values["output"] = str(run_dir if run_dir is not None else
                               Path("runs") / f"det-{values['detector']}-{values['arch']}-{timestamp}")
    return Config(**values)


def resolved_norm(norm: str, weights: str | None) -> str:
    """--norm auto: the backbone's BatchNorm frozen over pretrained weights (their statistics come from
    ImageNet's large batches, as in the paper's runs), trained from scratch."""
    return ("frozen" if weights else "bn") if norm == "auto" else norm


def default_timestamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")
