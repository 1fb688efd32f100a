#!/usr/bin/env python
"""Train or evaluate ECA-Net and its baselines on ImageNet-layout data: one GPU, many GPUs, many nodes.

    python main.py DATA -a eca_resnet50 --ksize 3557                     # the official command
    python main.py DATA --config configs/eca_resnet50.yaml --amp bf16 --channels-last --compile
    torchrun --nproc_per_node 8 main.py DATA --config configs/eca_resnet50.yaml
    python main.py DATA -e --resume eca_resnet50_k3557.pth.tar          # evaluate a released file

This file wires the library's parts and loops over epochs. The options and their checks are
``ecanet.config``, data ``ecanet.data``, the step loop and evaluation ``ecanet.engine``, checkpoints
``ecanet.checkpoint``. ``light_main.py`` is this entry point with the MobileNetV2 recipe as defaults.
"""
from __future__ import annotations

import logging
import math
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

from ecanet import config
from ecanet.cli import run_command
from ecanet.constants import IMAGENET_MEAN, IMAGENET_STD
from ecanet.errors import EXIT_OK, EXIT_PREEMPTED, ConfigError, UserError
from ecanet.lazy import lazy_import

# Imported on first use, so that `--help` answers before torch has loaded.
torch = lazy_import("torch")
ckpt = lazy_import("ecanet.checkpoint")
data_lib = lazy_import("ecanet.data")
dist = lazy_import("ecanet.distributed")
engine = lazy_import("ecanet.engine")
metrics_lib = lazy_import("ecanet.metrics")
models = lazy_import("ecanet.models")
optim = lazy_import("ecanet.optim")
recipe_lib = lazy_import("ecanet.recipe")
rundir = lazy_import("ecanet.rundir")
runtime = lazy_import("ecanet.runtime")

log = logging.getLogger("ecanet")


def main(argv: Sequence[str] | None = None, defaults: Mapping[str, Any] | None = None,
         prog: str | None = None, description: str | None = None) -> int:
    """The command line: parse and run; the errors a user can fix become one paragraph and an exit code."""
    return run_command(lambda: run(config.parse_config(argv, defaults, prog, description)), argv,
                       remedies="a lower --lr, --warmup-epochs, --amp bf16 instead of fp16, or --clip-grad-norm")


def run(args: Any) -> int:
    config.validate(args)
    info = dist.init_distributed(args.device, args.dist_backend, args.gpu, args.world_size)
    try:
        runtime.setup_logging(info, args.debug)
        resume_path, resume_obj, recipe, checkpoints_seen = None, None, None, None
        model, path = None, None
        if args.evaluate:  # the file's recipe says how to preprocess its inputs
            path = checkpoint_to_evaluate(args)
            asked = args.arch if "arch" in args.explicit else None   # not light_main.py's default
            model = ckpt.load_model(path, arch=asked, strict_arch=asked is not None, eca_impl=args.eca_impl,
                                    use_ema=args.use_ema)
            recipe = model.recipe
        else:  # the run's seed and network come from the checkpoint it continues
            run_dir = config.training_run_dir(args)
            checkpoints_seen = rundir.checkpoint_stamps(run_dir)   # before reading: checked again once claimed
            resume_path = rundir.find_run_checkpoint(args.resume, run_dir)
            resume_obj = ckpt.read_checkpoint(resume_path) if resume_path is not None else None
            # --weights starts a new run; a resumed one has its weights in its checkpoint (and the file may be gone)
            recipe = ckpt.read_recipe(args.weights) if args.weights and resume_obj is None else None
            if resume_obj is not None:  # the run continues as it started: its network and preprocessing
                recipe = ckpt.training_recipe(resume_obj, str(resume_path))
                asked = args.arch if "arch" in args.explicit else None   # not light_main.py's default
                ckpt.check_resumable(resume_obj, resume_path, asked or recipe.arch, None, None)
                epochs = config.inherited_options(args, resume_obj.get("config")).get("epochs", args.epochs)
                if ckpt.is_complete(resume_obj, epochs):   # before resolving: a requeued finished run just stops
                    log.info("%s: the run is complete (%d of %d epochs); nothing to do. Pass a larger --epochs to "
                             "train on.", resume_path, resume_obj["epoch"], epochs)
                    return EXIT_OK
        cfg = config.resolve(args, default_workers=data_lib.default_workers(info.local_world_size),
                             fresh_seed=dist.broadcast_object(runtime.fresh_seed(), info),
                             timestamp=dist.broadcast_object(datetime.now().strftime("%Y%m%d-%H%M%S"), info),
                             resumed_seed=resume_obj.get("sampler_seed") if resume_obj else None, recipe=recipe,
                             recorded=resume_obj.get("config") if resume_obj else None, world_size=info.world_size)
        if recipe is not None:
            use = config.recipe_use(cfg, recipe, described=cfg.evaluate)   # -e: load_model has said what it holds
            if use:
                log.info("%s", use)
        if cfg.weights and not cfg.evaluate and resume_obj is None and cfg.ksize is not None:
            ckpt.check_kernel_sizes_agree(cfg.arch, cfg.ksize, recipe, cfg.weights)
        runtime.warn_about_cpu_habits(cfg, info.device)
        if cfg.dist_url is not None:
            log.warning("--dist-url is ignored: torchrun and srun pass the rendezvous in the environment")
        if info.device.type == "cuda" and torch.cuda.device_count() > 1 and not info.distributed:
            log.info("%d GPUs are visible but this is one process: use 'torchrun --nproc_per_node %d main.py "
                     "...' to train on all of them", torch.cuda.device_count(), torch.cuda.device_count())
        precision = runtime.precision_for(cfg.amp, cfg.channels_last)
        from tqdm.contrib.logging import logging_redirect_tqdm
        with logging_redirect_tqdm():
            if cfg.evaluate:
                runtime.seed_everything(cfg.seed, cfg.deterministic)
                return evaluate_checkpoint(cfg, info, precision, model, path)
            return train(cfg, info, precision, resume_path, resume_obj, recipe, checkpoints_seen)
    finally:
        dist.cleanup(info)


def checkpoint_to_evaluate(args: Any) -> Path:
    """``-e``'s file: ``--resume PATH`` (or the newest checkpoint in --output for 'auto'), else ``--weights``."""
    if args.resume == "auto":
        path = ckpt.find_resume_checkpoint(args.output)
        if path is None:
            raise ConfigError(f"no checkpoint in {args.output} to evaluate. Pass the checkpoint's path to "
                              f"--resume, or the --output of a run that has saved one.")
        return path
    return Path(args.resume or args.weights)


def evaluate_checkpoint(cfg: config.Config, info: Any, precision: Any, model: Any, path: Path) -> int:
    """``-e``: top-1/top-5/loss/images per second of the checkpoint at ``path`` (``model``, loaded) on
    DATA/val, preprocessed as its recipe says unless options override it."""
    if cfg.ksize is not None:
        log.info("-e: the ECA kernel sizes are read off the weights; --ksize %s is not used", cfg.ksize)
    data = data_lib.build_data_from_config(cfg, info, evaluate_only=True)
    spec = ckpt.infer_network(model.state_dict())
    if spec.num_classes == 0:
        raise UserError(f"{path} holds {spec.arch} without a classifier (headless weights), so there are no class "
                        f"scores to evaluate. Fine-tune a classifier on it first: --weights {path}.")
    if spec.num_classes != data.num_classes:
        raise UserError(f"{path} has {spec.num_classes} output classes but "
                        f"{'--synthetic has' if cfg.synthetic else f'{cfg.data}/val has'} {data.num_classes} "
                        f"classes. Evaluate it on the dataset it was trained for (--num-classes with --synthetic).")
    difference = ckpt.class_difference(model.recipe.classes, data.folder_classes)
    if difference:
        raise UserError(f"{path} was trained on other classes than {cfg.data}/val's class folders: {difference}. "
                        f"Its scores would be counted against the wrong labels; evaluate it on the dataset it was "
                        f"trained for.")
    model.to(info.device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    log.info("evaluating %s (%s, %s parameters) on %d images of %s", path, spec.arch,
             f"{models.count_parameters(model):,}", data.val_size,
             "synthetic images" if cfg.synthetic else Path(cfg.data) / "val")
    result = engine.evaluate(model, data.val_loader, info, precision, desc="eval")
    log.info(" * top-1 %.3f  top-5 %.3f  loss %.4f  (%d images, %s img/s)", result.top1, result.top5,
             result.loss, result.images, f"{result.images_per_s:,.0f}")
    if info.is_main and cfg.output:
        rundir.append_record(Path(cfg.output), "eval", {
            "checkpoint": str(path), "arch": spec.arch, "val_top1": result.top1, "val_top5": result.top5,
            "val_loss": result.loss, "images": result.images, "images_per_s": result.images_per_s})
    return EXIT_OK


def build_base_lr(cfg: config.Config) -> float:
    """``--lr`` for the global batch (linear scaling rule)."""
    return optim.scaled_lr(cfg.lr, cfg.global_batch_size, cfg.lr_base_batch)


def build_train_state(cfg: config.Config, info: Any, data: Any, precision: Any, recipe: Any,
                      resuming: bool = False) -> Any:
    """The network (from scratch, or from ``--weights`` with their kernel sizes, unless ``resuming``: the
    checkpoint then brings the weights), its optimizer, schedule and EMA, on this process's device."""
    model = models.create_model(cfg.arch, num_classes=data.num_classes, k_size=cfg.ksize, eca_impl=cfg.eca_impl)
    if cfg.weights and not resuming:   # recipe: the file's (run read it)
        if recipe.arch != cfg.arch:
            raise ConfigError(f"the network in --weights {cfg.weights} is {recipe.arch}, but -a asks for "
                              f"{cfg.arch}. Drop -a (the file's network is used) or pass -a {recipe.arch}.")
        models.set_eca_kernel_sizes(model, recipe.eca_kernel_sizes)  # every ECA layer as the file has it
        ckpt.load_weights_into(model, cfg.weights, data.folder_classes, use_ema=cfg.use_ema)
    elif recipe is not None and recipe.arch == cfg.arch and cfg.ksize is None:  # a resumed run's own kernel sizes
        models.set_eca_kernel_sizes(model, recipe.eca_kernel_sizes)
    model.to(info.device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    if cfg.sync_bn and info.distributed:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    base_lr = build_base_lr(cfg)
    if cfg.sched == "cosine" and cfg.min_lr >= base_lr:   # before the run directory is claimed: nothing written
        raise ConfigError(f"--min-lr {cfg.min_lr:g} is not below the learning rate {base_lr:.4g} (--lr {cfg.lr:g} "
                          f"scaled to the global batch of {cfg.global_batch_size}): the cosine schedule "
                          f"would rise to it instead of decaying. Pass a smaller --min-lr.")
    optimizer = optim.build_optimizer(model, base_lr, cfg.momentum, cfg.weight_decay, cfg.nesterov, cfg.no_wd_bn_bias)
    factor = optim.lr_factor_fn(cfg.sched, data.steps_per_epoch, cfg.epochs, cfg.lr_decay_epochs,
                                cfg.lr_decay_rate, cfg.warmup_epochs, cfg.min_lr / base_lr)
    scheduler = optim.build_scheduler(optimizer, factor)
    start = engine.EpochPosition(epoch=cfg.start_epoch, global_step=cfg.start_epoch * data.steps_per_epoch)
    if cfg.start_epoch:  # the official --start-epoch: the schedule starts where that epoch begins
        scheduler.last_epoch = start.global_step - 1
        scheduler.step()
    return engine.TrainState(model, optimizer, scheduler, metrics_lib.RunningTotals(info.device), precision,
                             ema=optim.build_ema(model, cfg.ema_decay) if cfg.ema else None, position=start,
                             forward_model=dist.wrap_model(model, info, cfg.compile, cfg.compile_mode))


def train(cfg: config.Config, info: Any, precision: Any, resume_path: Path | None, resume_obj: Any,
          recipe: Any, checkpoints_seen: rundir.CheckpointStamps | None = None) -> int:
    runtime.seed_everything(cfg.seed + info.rank, cfg.deterministic)
    data = data_lib.build_data_from_config(cfg, info)
    if cfg.num_classes is not None and cfg.num_classes != data.num_classes:
        raise ConfigError(f"--num-classes {cfg.num_classes} but DATA has {data.num_classes} class folders: the "
                          f"classifier needs one output per class. Leave --num-classes out (it is the number of "
                          f"class folders), or point DATA at the dataset with {cfg.num_classes} classes.")
    state = build_train_state(cfg, info, data, precision, recipe, resuming=resume_path is not None)
    rng_states = None
    if resume_path is not None:
        ckpt.check_resumable(resume_obj, resume_path, cfg.arch, models.eca_kernel_sizes(state.model),
                             data.num_classes, data.classes)
        config.check_resume(cfg, resume_obj, resume_path, info.world_size, data.train_size)
        rng_states = ckpt.restore_training_state(state, resume_obj, resume_path, info)
        # The optimizer's state_dict brought back the run's momentum and weight decay: these options may change.
        # A checkpoint without a recorded configuration keeps its optimizer's values unless options are given.
        recorded = resume_obj.get("config") or {}
        if recorded or {"momentum", "weight_decay", "nesterov"} & cfg.explicit:
            optim.set_sgd_options(state.optimizer, cfg.momentum, cfg.weight_decay, cfg.nesterov)
        engine.continue_rebatched(state, int(recorded.get("batch-size", cfg.batch_size)) *
                                  int(resume_obj.get("world_size", 1)), cfg.global_batch_size,
                                  data.steps_per_epoch)
        # The base learning rate of --lr and the global batch (linear scaling): the run's unless either changed.
        if recorded or {"lr", "lr_base_batch"} & cfg.explicit:
            old_lr, new_lr = optim.rebase_schedule(state.scheduler, build_base_lr(cfg))
            if new_lr != old_lr:
                log.info("the schedule continues from base learning rate %.6g (the run had %.6g)", new_lr, old_lr)
        log.info("resumed from %s: epoch %d, step %d of %d (global step %d), best top-1 %s", resume_path,
                 state.position.epoch + 1, state.position.step_in_epoch, data.steps_per_epoch,
                 state.position.global_step,
                 f"{state.best_top1:.3f}" if math.isfinite(state.best_top1) else "none yet (no epoch validated)")
    elapsed_before = float(resume_obj.get("elapsed_s", 0.0)) if resume_obj is not None else 0.0
    del resume_obj
    run_dir = Path(cfg.output)  # made only now: a run that fails its input checks leaves nothing behind
    with rundir.open_run_directory(run_dir, info, write_config=lambda path: config.write_config(cfg, path),
                                   steps_done=lambda: state.position.global_step,
                                   last_checkpoint=ckpt.LAST_CHECKPOINT, stop_workers=data.close,
                                   checkpoints_seen=checkpoints_seen) as (metrics, preemption):
        log.info("%s: %s parameters, ECA kernel sizes %s; %d train / %d val images, %d classes; %d process(es) "
                 "x batch %d = %d, lr %.4g; run directory %s", cfg.arch, f"{models.count_parameters(state.model):,}",
                 ckpt.NetworkSpec(cfg.arch, data.num_classes, models.eca_kernel_sizes(state.model)).kernel_string
                 or "-", data.train_size, data.val_size, data.num_classes, info.world_size, cfg.batch_size,
                 cfg.global_batch_size, state.scheduler.base_lrs[0], run_dir)
        if rng_states:
            ckpt.restore_rng_state(rng_states[info.rank])
        run = ckpt.RunRecord(recipe_lib.Recipe(cfg.arch, data.num_classes, models.eca_kernel_sizes(state.model),
                                               cfg.img_size, cfg.val_resize, mean=tuple(cfg.mean or IMAGENET_MEAN),
                                               std=tuple(cfg.std or IMAGENET_STD), classes=tuple(data.classes)),
                             cfg.seed, info.world_size, config.config_to_yaml_dict(cfg), data.train_size)
        preemption.install()
        return epoch_loop(cfg, info, state, data, run, run_dir, metrics, preemption, elapsed_before)


def epoch_loop(cfg: config.Config, info: Any, state: Any, data: Any, run: Any, run_dir: Path, metrics: Any,
               preemption: Any, elapsed_before: float = 0.0) -> int:
    """Train epoch by epoch until --epochs, evaluating and saving after each; a stop signal saves and exits 75.
    ``elapsed_before``: the seconds of training and evaluation the run spent before this start."""
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    options = engine.LoopOptions(cfg.epochs, data.steps_per_epoch, cfg.clip_grad_norm, cfg.print_freq,
                                 cfg.save_every_steps)

    t_run, last_eval = time.perf_counter(), None
    elapsed = lambda: elapsed_before + time.perf_counter() - t_run  # noqa: E731 - every start of the run

    def sync_buffers() -> None:
        """Every rank takes rank 0's BatchNorm statistics, the EMA's too (each rank's EMA averages its own):
        what a rank evaluates is what rank 0 saves."""
        dist.sync_buffers(state.model, info)
        if state.ema is not None:
            dist.sync_buffers(state.ema.module, info)

    def save(reason: str, is_best: bool = False) -> None:
        sync_buffers()
        ckpt.save_training_checkpoint(state, run, run_dir, info, reason, is_best, elapsed_s=elapsed())

    while state.position.epoch < cfg.epochs:
        pos = state.position
        (data.train_sampler or data.train_loader).set_epoch(pos.epoch, pos.step_in_epoch * cfg.batch_size)
        if pos.step_in_epoch == 0:
            state.totals, state.skipped_in_epoch = metrics_lib.RunningTotals(info.device), 0
        if info.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(info.device)
        result = engine.train_one_epoch(state, data.train_loader, criterion, options, info,
                                        should_stop=preemption.should_stop, save_checkpoint=lambda: save("step"),
                                        metrics=metrics)
        if result.preempted:
            log.warning("%s received: saving a checkpoint at epoch %d step %d and exiting (code %d); rerun the "
                        "same command with --resume auto --output %s to continue", preemption.signal_name or
                        "stop signal", pos.epoch + 1, pos.step_in_epoch, EXIT_PREEMPTED, run_dir)
            save("preempted")
            return EXIT_PREEMPTED
        sync_buffers()
        val = engine.evaluate(state.model, data.val_loader, info, state.precision, desc="val")
        ema_val = None if state.ema is None else engine.evaluate(state.ema.module, data.val_loader, info,
                                                                 state.precision, desc="val ema")
        pos.epoch, pos.step_in_epoch = pos.epoch + 1, 0
        is_best = val.top1 > state.best_top1
        state.best_top1, last_eval = max(state.best_top1, val.top1), val
        record = metrics_lib.epoch_record(pos, result, val, ema_val, state, info)
        log.info("%s", metrics_lib.epoch_line(record, cfg.epochs))
        save("epoch", is_best=is_best)
        metrics.record("epoch", record, step=pos.epoch)   # after the save: an epoch a resume redoes is recorded once
    summary = {"arch": cfg.arch, "epochs": state.position.epoch, "best_top1": state.best_top1,
               "final_top1": last_eval.top1 if last_eval else math.nan,
               "final_top5": last_eval.top5 if last_eval else math.nan,
               "final_loss": last_eval.loss if last_eval else math.nan, "wall_time_s": elapsed(),
               "parameters": models.count_parameters(state.model)}
    metrics.record("summary", summary)
    log.info("results\n%s\nrun directory: %s\nTensorBoard:   tensorboard --logdir %s",
             metrics_lib.results_table(summary), run_dir, run_dir / "tensorboard")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
