#!/usr/bin/env python
"""Train or evaluate ECA-Net and its baselines on ImageNet-layout data: one GPU, many GPUs, many nodes.

    python main.py DATA -a eca_resnet50 --ksize 3557                     # the official command
    python main.py DATA --config configs/eca_resnet50.yaml --amp bf16 --channels-last --compile
    torchrun --nproc_per_node 8 main.py DATA --config configs/eca_resnet50.yaml
    python main.py DATA -e --resume eca_resnet50_k3557.pth.tar          # evaluate a released file

This file wires the library's parts together and loops over epochs; the step loop and evaluation are
``ecanet.engine``, checkpoints ``ecanet.checkpoint``, data ``ecanet.data``. ``light_main.py`` is this
entry point with the MobileNetV2 recipe as defaults.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import random
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.contrib.logging import logging_redirect_tqdm

import models
from ecanet import checkpoint as ckpt
from ecanet.config import AUTO, CUDA_GRAPH_COMPILE_MODES, config_to_yaml_dict, parse_config, write_config
from ecanet.data import (IMAGENET_MEAN, IMAGENET_STD, NO_DATASET_MESSAGE, DataBundle, GpuDecodeOptions,
                         SyntheticLoader, build_data, build_train_transform, build_val_transform, default_workers,
                         resolve_gpu_share)
from ecanet.distributed import (DistInfo, PreemptionHandler, all_gather_objects, any_rank, barrier,
                                broadcast_object, cleanup, init_distributed, launcher_world_size)
from ecanet.engine import EpochPosition, NonFiniteLossError, Precision, evaluate, train_one_epoch
from ecanet.errors import (EXIT_DIVERGED, EXIT_OK, EXIT_PREEMPTED, EXIT_SAVE_FAILED, ConfigError,
                           UserError)
from ecanet.metrics import MetricsLogger, RunningTotals, format_duration
from ecanet.optim import build_ema, build_optimizer, build_scheduler, lr_factor_fn, scaled_lr

log = logging.getLogger("ecanet")

DEFAULT_ARCH = "eca_resnet50"
SYNTHETIC_VAL_BATCHES = 4
AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# ------------------------------------------------------------------------------------------- set-up

class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (tqdm and test harnesses swap it)."""

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup_logging(info: DistInfo, debug: bool = False) -> None:
    """Rank 0 logs INFO to stderr; other ranks only warnings and errors."""
    root = logging.getLogger()
    if not getattr(root, "_ecanet_configured", False):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname).1s %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root._ecanet_configured = True  # type: ignore[attr-defined]
    root.setLevel((logging.DEBUG if debug else logging.INFO) if info.is_main else logging.WARNING)


def add_run_log(run_dir: Path, info: DistInfo) -> logging.Handler | None:
    """Also log to ``run_dir/train.log`` (rank 0); returns the handler to remove at the end."""
    if not info.is_main:
        return None
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def validate_options(args: argparse.Namespace) -> None:
    """Reject impossible or conflicting options before anything is loaded or written."""
    positive = {"--batch-size": args.batch_size, "--epochs": args.epochs, "--img-size": args.img_size,
                "--val-resize": args.val_resize, "--print-freq": args.print_freq, "--lr-base-batch": args.lr_base_batch}
    for name, value in positive.items():
        if value is None or value <= 0:
            raise ConfigError(f"{name} must be a positive number, got {value}.")
    if args.val_batch_size is not None and args.val_batch_size <= 0:
        raise ConfigError(f"--val-batch-size must be positive, got {args.val_batch_size}.")
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}.")
    if args.lr <= 0 or args.weight_decay < 0 or args.save_every_steps < 0:
        raise ConfigError("--lr must be > 0, --weight-decay and --save-every-steps >= 0.")
    if args.pretrained:
        raise ConfigError("--pretrained is not supported: ecanet downloads nothing. Download the released "
                          "checkpoint yourself and pass --weights PATH (to start from it) or "
                          "-e --resume PATH (to evaluate it).")
    if args.arch is not None and not models.is_model(args.arch):
        raise ConfigError(f"unknown architecture '{args.arch}'. Known: {', '.join(models.list_models())}.")
    if args.ksize is not None and args.arch is not None and not args.arch.startswith("eca_"):
        raise ConfigError(f"--ksize sets ECA kernel sizes, but '{args.arch}' has no ECA layers. Drop --ksize "
                          f"or pick an eca_* architecture.")
    wants_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if args.amp == "fp16" and not wants_cuda:
        raise ConfigError("--amp fp16 needs a CUDA GPU (fp16 autocast with a gradient scaler), and none is "
                          "in use. On the CPU use --amp bf16 or --amp off.")
    if args.decode == "gpu" and not wants_cuda:
        raise ConfigError("--decode gpu decodes JPEGs with nvJPEG and needs a CUDA GPU. Use --decode cpu.")
    if args.gpu_decode_threads < 1:
        raise ConfigError(f"--gpu-decode-threads must be at least 1, got {args.gpu_decode_threads}.")
    if args.gpu_decode_share != AUTO and not 0.0 <= args.gpu_decode_share <= 1.0:
        raise ConfigError(f"--gpu-decode-share must be a fraction between 0 and 1, got {args.gpu_decode_share}.")
    if args.compile_mode != "default" and not args.compile:
        raise ConfigError(f"--compile-mode {args.compile_mode} applies to torch.compile; add --compile or drop "
                          f"--compile-mode.")
    if args.compile and args.compile_mode in CUDA_GRAPH_COMPILE_MODES and launcher_world_size() > 1:
        raise ConfigError(f"--compile-mode {args.compile_mode} (CUDA graphs) is not supported with several "
                          f"processes: DDP's hooks run between the graphs, and this is untested. Use "
                          f"--compile-mode default for multi-GPU runs.")
    if args.decode == "gpu" and (args.augment != "rrc" or args.random_erasing > 0):
        raise ConfigError("--decode gpu implements the paper's augmentation (RandomResizedCrop + flip) only; "
                          "use --decode cpu for --augment crop or --random-erasing.")
    if args.evaluate and not (args.resume or args.weights):
        raise ConfigError("-e/--evaluate needs the weights to evaluate: -e --resume PATH (or --weights PATH).")
    if args.resume == "auto" and not args.output:
        raise ConfigError("--resume auto takes the newest checkpoint of the run in --output DIR; pass the same "
                          "--output the run was started with (e.g. --output runs/my-run --resume auto: a job "
                          "scheduler can use one command for the first start and every requeue).")
    if args.resume and args.resume != "auto" and args.weights and not args.evaluate:
        raise ConfigError("--resume continues a run with its own weights; --weights starts a new run from "
                          "weights. Give one of them.")
    if not (args.data or args.synthetic):
        raise ConfigError(NO_DATASET_MESSAGE)
    if args.ema and not 0 < args.ema_decay < 1:
        raise ConfigError(f"--ema-decay must be between 0 and 1, got {args.ema_decay}.")
    if args.ksize is not None:
        try:
            models.create_model(args.arch or DEFAULT_ARCH, num_classes=1, k_size=args.ksize)
        except ValueError as exc:
            raise ConfigError(f"--ksize {args.ksize!r}: {exc}.") from None


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels


def resolve_run_dir(args: argparse.Namespace, info: DistInfo) -> Path:
    if args.output:
        return Path(args.output)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{args.arch}-{stamp}" + (f"-{args.action}" if args.action else "")
    return Path(broadcast_object(str(Path("runs") / name), info))


def set_eca_implementation(name: str) -> None:
    setter = getattr(models.eca_module, "set_eca_implementation", None)
    if setter is not None:
        setter(name)
    elif name == "fused":
        raise ConfigError("--eca-impl fused is not available in this build (models/eca_fused.py missing).")


# ------------------------------------------------------------------------------------------ evaluation

def evaluate_only(args: argparse.Namespace, info: DistInfo, precision: Precision) -> int:
    """``-e``: load any checkpoint through load_model and report top-1/top-5/loss/images/s on DATA/val."""
    path = args.resume or args.weights
    if path == "auto":
        path = ckpt.find_resume_checkpoint(args.output)
        if path is None:
            raise ConfigError(f"no checkpoint in {args.output} to evaluate.")
    model = ckpt.load_model(path, arch=args.arch, strict_arch=args.arch is not None)
    if args.ksize is not None:
        log.info("-e: the ECA kernel sizes are read off the weights; --ksize %s is not used", args.ksize)
    data = build_data(args.data, batch_size=args.batch_size, val_batch_size=args.val_batch_size or args.batch_size,
                      workers=args.workers, seed=args.seed, rank=info.rank, world_size=info.world_size,
                      device=info.device, train_transform=None, val_transform=_val_transform(args),
                      evaluate_only=True, gpu_decode=_gpu_decode_options(args),
                      device_normalize=_device_normalize(args))
    spec = ckpt.infer_network(model.state_dict())
    if spec.num_classes != data.num_classes:
        raise UserError(f"{path} has {spec.num_classes} output classes but {args.data}/val has {data.num_classes} "
                        f"class folders. Evaluate it on the dataset it was trained for.")
    model.to(info.device, memory_format=torch.channels_last if args.channels_last else torch.contiguous_format)
    arch_name = spec.arch
    log.info("evaluating %s (%s, %s parameters) on %d images of %s", path, arch_name,
             f"{models.count_parameters(model):,}", data.val_size, Path(args.data) / "val")
    result = evaluate(model, nn.CrossEntropyLoss(), data.val_loader, device=info.device, info=info,
                      precision=precision, desc="eval")
    log.info(" * top-1 %.3f  top-5 %.3f  loss %.4f  (%d images, %s img/s)", result.top1, result.top5,
             result.loss, result.images, f"{result.images_per_s:,.0f}")
    if info.is_main and args.output:
        Path(args.output).mkdir(parents=True, exist_ok=True)
        logger = MetricsLogger(Path(args.output), tensorboard=False)
        logger.record("eval", {"checkpoint": str(path), "arch": arch_name, "val_top1": result.top1,
                               "val_top5": result.top5, "val_loss": result.loss, "images": result.images,
                               "images_per_s": result.images_per_s})
        logger.close()
    return EXIT_OK


def _normalisation(args: argparse.Namespace) -> dict[str, Sequence[float]]:
    return {"mean": args.mean or IMAGENET_MEAN, "std": args.std or IMAGENET_STD}


def _val_transform(args: argparse.Namespace) -> Any:
    return build_val_transform(args.img_size, args.val_resize, **_normalisation(args), uint8=True)


def _device_normalize(args: argparse.Namespace) -> tuple[Sequence[float], Sequence[float], bool]:
    norm = _normalisation(args)
    return norm["mean"], norm["std"], args.channels_last


def resolve_auto_share(args: argparse.Namespace) -> None:
    """With --decode gpu, replace --gpu-decode-share auto by the number it means here (once the worker count
    is known), so that the run's config.yaml records it and a resumed run keeps it."""
    if args.decode == "gpu" and args.gpu_decode_share == AUTO:
        args.gpu_decode_share = resolve_gpu_share(AUTO, args.workers)
        log.info("--gpu-decode-share auto: nvJPEG decodes %g of the images with %d workers",
                 args.gpu_decode_share, args.workers)


def _gpu_decode_options(args: argparse.Namespace) -> GpuDecodeOptions | None:
    if args.decode != "gpu":
        return None
    # run() has replaced 'auto' by its number (resolve_auto_share)
    return GpuDecodeOptions(args.img_size, args.val_resize, args.min_crop_scale, args.hflip, **_normalisation(args),
                            channels_last=args.channels_last, gpu_share=args.gpu_decode_share,
                            decode_threads=args.gpu_decode_threads)


def _train_transform(args: argparse.Namespace) -> Any:
    return build_train_transform(args.img_size, args.augment, args.min_crop_scale, args.crop_padding,
                                 args.hflip, args.random_erasing, **_normalisation(args), uint8=True)


# --------------------------------------------------------------------------------------------- training

def build_model(args: argparse.Namespace, num_classes: int) -> nn.Module:
    model = models.create_model(args.arch, num_classes=num_classes, k_size=args.ksize)
    if args.weights:
        source = ckpt.load_model(args.weights)
        state = source.state_dict()
        own = model.state_dict()
        dropped = [k for k in state if k in own and state[k].shape != own[k].shape]
        if dropped:
            log.warning("--weights: not loading %s (shapes differ: a new classifier for %d classes)",
                        ", ".join(dropped), num_classes)
        ckpt.check_state_dict(model, {k: (own[k] if k in dropped else v) for k, v in state.items()},
                              args.weights)
        model.load_state_dict({k: v for k, v in state.items() if k not in dropped}, strict=False)
        log.info("initialised from %s", args.weights)
    return model


class Trainer:
    """Holds the objects of one training run and saves/restores them."""

    def __init__(self, args: argparse.Namespace, info: DistInfo, run_dir: Path, data: Any,
                 precision: Precision) -> None:
        self.args, self.info, self.run_dir, self.data, self.precision = args, info, run_dir, data, precision
        device = info.device
        self.model = build_model(args, data.num_classes).to(device)
        if args.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if args.sync_bn and info.distributed:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.eca_kernel_sizes = models.eca_kernel_sizes(self.model)
        global_batch = args.batch_size * info.world_size
        self.base_lr = scaled_lr(args.lr, global_batch, args.lr_base_batch)
        self.optimizer = build_optimizer(self.model, self.base_lr, args.momentum, args.weight_decay,
                                         args.nesterov, args.no_wd_bn_bias)
        factor = lr_factor_fn(args.sched, data.steps_per_epoch, args.epochs, args.lr_decay_epochs,
                              args.lr_decay_rate, args.warmup_epochs, args.min_lr / self.base_lr)
        self.scheduler = build_scheduler(self.optimizer, factor)
        self.ema = build_ema(self.model, args.ema_decay) if args.ema else None
        self.position = EpochPosition(epoch=args.start_epoch, global_step=args.start_epoch * data.steps_per_epoch)
        if args.start_epoch:
            self.scheduler.last_epoch = self.position.global_step - 1
            self.scheduler.step()
        self.best_top1 = -math.inf
        self.totals = RunningTotals(device)
        self.skipped_in_epoch = 0
        self.train_model = self._wrap(self.model)

    def _wrap(self, model: nn.Module) -> nn.Module:
        if self.info.distributed:
            # The ECA weight (1, 1, k) gets gradients whose strides differ from the parameter's only on its
            # size-1 dimensions (the same memory layout); DDP warns about it once. Nothing to fix.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            device_ids = [self.info.device.index] if self.info.device.type == "cuda" else None
            # broadcast_buffers=False: no extra collective per step; rank 0's BN statistics are sent to
            # every rank before each evaluation and checkpoint (sync_buffers) instead.
            model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False,
                                                        gradient_as_bucket_view=True)
        if self.args.compile:
            model = torch.compile(model, mode=self.args.compile_mode)
        return model

    def sync_buffers(self) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics)."""
        if self.info.distributed:
            for buf in self.model.buffers():
                torch.distributed.broadcast(buf, src=0)

    # ----------------------------------------------------------------------------------- checkpoints
    def state(self, reason: str, rng_states: list[Any]) -> dict[str, Any]:
        return {
            "format": ckpt.CHECKPOINT_FORMAT, "format_version": ckpt.CHECKPOINT_VERSION, "reason": reason,
            "arch": self.args.arch, "num_classes": self.data.num_classes, "classes": self.data.classes,
            "eca_kernel_sizes": self.eca_kernel_sizes,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "lr_scheduler": self.scheduler.state_dict(),
            "scaler": self.precision.scaler.state_dict() if self.precision.scaler else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "epoch": self.position.epoch, "step_in_epoch": self.position.step_in_epoch,
            "global_step": self.position.global_step,
            "epoch_totals": self.totals.state_dict() if self.position.step_in_epoch else None,
            "epoch_skipped_images": self.skipped_in_epoch,
            "best_prec1": self.best_top1, "sampler_seed": self.args.seed, "rng": rng_states,
            "world_size": self.info.world_size, "config": config_to_yaml_dict(self.args),
            "versions": ckpt.library_versions(),
        }

    def save(self, reason: str, is_best: bool = False) -> None:
        """Write last.pth (and best.pth) on rank 0; every rank learns whether it worked."""
        self.sync_buffers()
        rng_states = all_gather_objects(ckpt.capture_rng_state(), self.info)
        error = None
        if self.info.is_main:
            try:
                path = self.run_dir / ckpt.LAST_CHECKPOINT
                ckpt.save_checkpoint(self.state(reason, rng_states), path)
                if is_best:
                    ckpt.copy_checkpoint(path, self.run_dir / ckpt.BEST_CHECKPOINT)
                log.info("saved %s (%s; global step %d)", path, reason, self.position.global_step)
            except ckpt.CheckpointSaveError as exc:
                error = str(exc)
        if any_rank(error is not None, self.info):
            raise ckpt.CheckpointSaveError(error or "rank 0 could not write the checkpoint")

    def resume(self, obj: Mapping[str, Any], path: Path) -> list[Any] | None:
        """Restore everything from a training checkpoint; returns the RNG states to restore last."""
        ckpt.check_resumable(obj, path, self.args.arch, self.eca_kernel_sizes, self.data.num_classes)
        self.model.load_state_dict(obj["state_dict"])
        self.optimizer.load_state_dict(obj["optimizer"])
        self.scheduler.load_state_dict(obj["lr_scheduler"])
        if self.precision.scaler is not None and obj.get("scaler"):
            self.precision.scaler.load_state_dict(obj["scaler"])
        if self.ema is not None and obj.get("ema") is not None:
            self.ema.load_state_dict(obj["ema"])
        self.position = EpochPosition(int(obj["epoch"]), int(obj["step_in_epoch"]), int(obj["global_step"]))
        if obj.get("epoch_totals") is not None:
            self.totals.load_state_dict(obj["epoch_totals"])
        self.skipped_in_epoch = int(obj.get("epoch_skipped_images", 0))
        self.best_top1 = float(obj.get("best_prec1", -math.inf))
        if obj.get("sampler_seed") != self.args.seed:
            log.info("resuming with the run's seed %s", obj.get("sampler_seed"))
        saved_world = int(obj.get("world_size", 1))
        rng = obj.get("rng") or []
        if saved_world != self.info.world_size:
            log.warning("the checkpoint was written by %d processes, this run has %d: training continues, "
                        "but not bit-identically (data shards and random streams differ)", saved_world,
                        self.info.world_size)
            return None
        log.info("resumed from %s: epoch %d, step %d of %d (global step %d), best top-1 %.3f", path,
                 self.position.epoch + 1, self.position.step_in_epoch, self.data.steps_per_epoch,
                 self.position.global_step, self.best_top1)
        return rng


def train(args: argparse.Namespace, info: DistInfo, precision: Precision) -> int:
    run_dir = resolve_run_dir(args, info)
    resume_path = None
    if args.resume == "auto":
        resume_path = ckpt.find_resume_checkpoint(run_dir) if run_dir.is_dir() else None
        if resume_path is None:
            log.info("--resume auto: no checkpoint in %s yet, starting a new run", run_dir)
    elif args.resume:
        resume_path = Path(args.resume)
    if resume_path is None and run_dir.is_dir() and any(run_dir.glob("*.pth")):
        raise ConfigError(f"run directory {run_dir} already holds checkpoints; starting a new run there would "
                          f"overwrite them. Continue it with --resume auto, or pick another --output.")
    resume_obj = ckpt.read_checkpoint(resume_path) if resume_path is not None else None
    if resume_obj is not None:  # refuse another network's checkpoint before loading any data
        ckpt.check_resumable(resume_obj, resume_path, args.arch, None, None)
    if isinstance(resume_obj, Mapping) and resume_obj.get("sampler_seed") is not None:
        args.seed = int(resume_obj["sampler_seed"])  # the data order and augmentations follow the run's seed
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier(info)
    run_log = add_run_log(run_dir, info)
    try:
        return _train_in(run_dir, resume_path, resume_obj, args, info, precision)
    finally:
        if run_log is not None:
            logging.getLogger().removeHandler(run_log)
            run_log.close()


def _train_in(run_dir: Path, resume_path: Path | None, resume_obj: Any, args: argparse.Namespace,
              info: DistInfo, precision: Precision) -> int:
    seed_everything(args.seed + info.rank, args.deterministic)
    if args.synthetic:
        data = synthetic_data(args, info)
    else:
        data = build_data(args.data, batch_size=args.batch_size, val_batch_size=args.val_batch_size or args.batch_size,
                          workers=args.workers, seed=args.seed, rank=info.rank, world_size=info.world_size,
                          device=info.device, train_transform=_train_transform(args),
                          val_transform=_val_transform(args), gpu_decode=_gpu_decode_options(args),
                          device_normalize=_device_normalize(args), region_decode=args.region_decode)
    if args.num_classes is not None and args.num_classes != data.num_classes:
        raise ConfigError(f"--num-classes {args.num_classes} but DATA has {data.num_classes} class folders.")
    trainer = Trainer(args, info, run_dir, data, precision)
    rng_states = trainer.resume(resume_obj, resume_path) if resume_path is not None else None
    del resume_obj
    if info.is_main:
        write_config(args, run_dir / "config.yaml")
    metrics = MetricsLogger(run_dir, enabled=info.is_main)
    log.info("%s: %s parameters, ECA kernel sizes %s; %d train / %d val images, %d classes; %d process(es) "
             "x batch %d = %d, lr %.4g; run directory %s", args.arch, f"{models.count_parameters(trainer.model):,}",
             ckpt.NetworkSpec(args.arch, data.num_classes, trainer.eca_kernel_sizes).kernel_string or "-",
             data.train_size, data.val_size, data.num_classes, info.world_size, args.batch_size,
             args.batch_size * info.world_size, trainer.base_lr, run_dir)
    if rng_states:
        ckpt.restore_rng_state(rng_states[info.rank])
    preemption = PreemptionHandler(info).install()
    try:
        return _epoch_loop(args, info, trainer, metrics, preemption)
    finally:
        preemption.uninstall()
        metrics.close()


def synthetic_data(args: argparse.Namespace, info: DistInfo) -> DataBundle:
    num_classes = args.num_classes or 1000
    steps = max(1, args.synthetic_size // (args.batch_size * info.world_size))

    def make(num_steps: int) -> SyntheticLoader:
        return SyntheticLoader(args.batch_size, args.img_size, num_classes, num_steps, info.device, args.channels_last,
                               seed=args.seed + info.rank)

    return DataBundle(make(steps), make(SYNTHETIC_VAL_BATCHES), None, num_classes,
                      [str(i) for i in range(num_classes)], steps * args.batch_size * info.world_size,
                      SYNTHETIC_VAL_BATCHES * args.batch_size * info.world_size, steps)


def _epoch_loop(args: argparse.Namespace, info: DistInfo, trainer: Trainer, metrics: MetricsLogger,
                preemption: PreemptionHandler) -> int:
    data, precision, device = trainer.data, trainer.precision, info.device
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    eval_criterion = nn.CrossEntropyLoss()
    t_run = time.perf_counter()
    last_eval = None

    def save_step(skipped: int) -> None:
        trainer.skipped_in_epoch = skipped
        trainer.save("step")

    while trainer.position.epoch < args.epochs:
        pos = trainer.position
        sampler = data.train_sampler if data.train_sampler is not None else data.train_loader
        sampler.set_epoch(pos.epoch, pos.step_in_epoch * args.batch_size)
        if pos.step_in_epoch == 0:
            trainer.totals = RunningTotals(device)
            trainer.skipped_in_epoch = 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        result = train_one_epoch(
            trainer.train_model, criterion, trainer.optimizer, trainer.scheduler, data.train_loader,
            device=device, info=info, position=pos, steps_per_epoch=data.steps_per_epoch, epochs=args.epochs,
            precision=precision, totals=trainer.totals, ema=trainer.ema, ema_source=trainer.model,
            clip_grad_norm=args.clip_grad_norm, print_freq=args.print_freq, should_stop=preemption.should_stop,
            save_every_steps=args.save_every_steps, save_step_checkpoint=save_step, metrics=metrics)
        trainer.skipped_in_epoch += result.skipped_images
        if result.preempted:
            log.warning("%s received: saving a checkpoint at epoch %d step %d and exiting (code %d); "
                        "rerun the same command with --resume auto --output %s to continue",
                        preemption.signal_name or "stop signal", pos.epoch + 1, pos.step_in_epoch, EXIT_PREEMPTED,
                        trainer.run_dir)
            trainer.save("preempted")
            return EXIT_PREEMPTED
        trainer.sync_buffers()
        val = evaluate(trainer.model, eval_criterion, data.val_loader, device=device, info=info,
                       precision=precision, desc="val")
        ema_val = None
        if trainer.ema is not None:
            ema_val = evaluate(trainer.ema.module, eval_criterion, data.val_loader, device=device, info=info,
                               precision=precision, desc="val ema")
        pos.epoch += 1
        pos.step_in_epoch = 0
        is_best = val.top1 > trainer.best_top1
        trainer.best_top1 = max(trainer.best_top1, val.top1)
        last_eval = val
        peak_gib = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
        record = {
            "epoch": pos.epoch, "step": pos.global_step, "lr": trainer.optimizer.param_groups[0]["lr"],
            "train_loss": result.loss, "train_top1": result.top1, "val_loss": val.loss, "val_top1": val.top1,
            "val_top5": val.top5, "best_top1": trainer.best_top1, "epoch_time_s": result.seconds,
            "images_per_s": result.images_per_s, "images_per_s_per_gpu": result.images_per_s / info.world_size,
            "val_images": val.images, "val_images_per_s": val.images_per_s, "skipped_images": trainer.skipped_in_epoch + val.skipped_images,
            "peak_memory_gib": peak_gib,
        }
        if ema_val is not None:
            record.update(ema_val_top1=ema_val.top1, ema_val_top5=ema_val.top5, ema_val_loss=ema_val.loss)
        metrics.record("epoch", record, step=pos.epoch)
        ema_text = f" | EMA top-1 {ema_val.top1:.3f}" if ema_val is not None else ""
        skip_text = f" | {record['skipped_images']} unreadable images skipped" if record["skipped_images"] else ""
        log.info("epoch %d/%d: train loss %.4f top-1 %.2f | val loss %.4f top-1 %.3f top-5 %.3f%s | lr %.4g | "
                 "%s img/s (%s per GPU) | %s%s", pos.epoch, args.epochs, result.loss, result.top1, val.loss,
                 val.top1, val.top5, ema_text, record["lr"], f"{result.images_per_s:,.0f}",
                 f"{record['images_per_s_per_gpu']:,.0f}", format_duration(result.seconds), skip_text)
        trainer.save("epoch", is_best=is_best)
    total = time.perf_counter() - t_run
    summary = {"arch": args.arch, "epochs": trainer.position.epoch, "best_top1": trainer.best_top1,
               "final_top1": last_eval.top1 if last_eval else math.nan,
               "final_top5": last_eval.top5 if last_eval else math.nan,
               "final_loss": last_eval.loss if last_eval else math.nan, "wall_time_s": total,
               "parameters": models.count_parameters(trainer.model)}
    metrics.record("summary", summary)
    log.info("results\n%s\nrun directory: %s\nTensorBoard:   tensorboard --logdir %s", results_table(summary),
             trainer.run_dir, trainer.run_dir / "tensorboard")
    return EXIT_OK


def results_table(summary: Mapping[str, Any]) -> str:
    """A small markdown table of a finished run."""
    header = "| arch | parameters | epochs | val top-1 | val top-5 | best top-1 | val loss | time |"
    row = (f"| {summary['arch']} | {summary['parameters']:,} | {summary['epochs']} | {summary['final_top1']:.2f} | "
           f"{summary['final_top5']:.2f} | {summary['best_top1']:.2f} | {summary['final_loss']:.4f} | "
           f"{format_duration(summary['wall_time_s'])} |")
    return "\n".join([header, "|" + "---|" * 8, row])


# ------------------------------------------------------------------------------------------------ main

def run(args: argparse.Namespace) -> int:
    validate_options(args)
    info = init_distributed(args.device, args.dist_backend, args.gpu, args.world_size)
    try:
        setup_logging(info, args.debug)
        if args.workers is None:
            args.workers = default_workers(info.local_world_size)
        resolve_auto_share(args)
        if args.seed is None:
            args.seed = broadcast_object(random.SystemRandom().randrange(2**31), info)
        if not args.evaluate:
            args.arch = args.arch or DEFAULT_ARCH
        set_eca_implementation(args.eca_impl)
        amp_dtype = AMP_DTYPES[args.amp]
        scaler = torch.amp.GradScaler("cuda") if args.amp == "fp16" else None
        precision = Precision(amp_dtype, scaler, args.channels_last)
        if info.device.type == "cuda" and torch.cuda.device_count() > 1 and not info.distributed:
            log.info("%d GPUs are visible but this is one process: use 'torchrun --nproc_per_node %d main.py "
                     "...' to train on all of them", torch.cuda.device_count(), torch.cuda.device_count())
        with logging_redirect_tqdm():
            if args.evaluate:
                seed_everything(args.seed, args.deterministic)
                return evaluate_only(args, info, precision)
            return train(args, info, precision)
    finally:
        cleanup(info)


def main(argv: Sequence[str] | None = None, defaults: Mapping[str, Any] | None = None,
         prog: str | None = None, description: str | None = None) -> int:
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        args = parse_config(argv, defaults, prog, description)
        return run(args)
    except UserError as exc:
        return _report(exc, debug, exc.exit_code)
    except NonFiniteLossError as exc:
        return _report(exc, debug, EXIT_DIVERGED)
    except ckpt.CheckpointSaveError as exc:
        return _report(exc, debug, EXIT_SAVE_FAILED,
                       "Free disk space or fix permissions, then rerun with --resume auto: the previous "
                       "checkpoint is intact.")
    except KeyboardInterrupt:
        log.warning("interrupted")
        return 130


def _report(exc: BaseException, debug: bool, code: int, fix: str = "") -> int:
    if debug:
        log.exception("error (exit code %d)", code)
    message = f"error: {exc}" + (f" {fix}" if fix else "")
    print(message, file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
