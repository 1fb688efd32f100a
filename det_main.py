#!/usr/bin/env python
"""Train or evaluate the ECA paper's COCO detectors (Faster R-CNN, Mask R-CNN, RetinaNet) on COCO-format data.

    python det_main.py data/coco --config configs/detection/mask_rcnn_eca_resnet50.yaml \
        --weights eca_resnet50_k3557.pth.tar                               # the paper's row, ImageNet backbone
    torchrun --nproc_per_node 8 det_main.py data/coco --config configs/detection/faster_rcnn_eca_resnet50.yaml ...
    python det_main.py data/coco --output runs/my-run --resume auto ...      # the same command for every requeue
    python det_main.py data/coco -e --resume runs/my-run/model.pth           # COCO AP of a trained detector

This file wires the library's parts and loops over epochs: options and their checks are
``ecanet.detection.options``, data and its loaders ``ecanet.detection.data``, the step loop and evaluation
``ecanet.detection.engine``, the detectors ``ecanet.detection.models``, checkpoints ``ecanet.detection.checkpoint``,
the epochs' records ``ecanet.metrics``.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from ecanet.cli import run_command
from ecanet.config import training_run_dir
from ecanet.detection import options
from ecanet.errors import EXIT_OK, EXIT_PREEMPTED, ConfigError, DataError
from ecanet.lazy import lazy_import

# Imported on first use, so that `--help` answers before torch has loaded.
torch = lazy_import("torch")
ckpt = lazy_import("ecanet.checkpoint")
coco_eval = lazy_import("ecanet.detection.coco_eval")
det_ckpt = lazy_import("ecanet.detection.checkpoint")
det_data = lazy_import("ecanet.detection.data")
det_engine = lazy_import("ecanet.detection.engine")
det_configs = lazy_import("ecanet.detection.configs")
dist = lazy_import("ecanet.distributed")
engine = lazy_import("ecanet.engine")
loaders = lazy_import("ecanet.data.loaders")
metrics_lib = lazy_import("ecanet.metrics")
models = lazy_import("ecanet.models")
optim = lazy_import("ecanet.optim")
rundir = lazy_import("ecanet.rundir")
runtime = lazy_import("ecanet.runtime")

log = logging.getLogger("ecanet")


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: parse and run; the errors a user can fix become one paragraph and an exit code."""
    return run_command(lambda: run(options.parse_options(argv)), argv,
                       remedies="a lower --lr, more --warmup-iters, --clip-grad-norm, or --amp bf16 instead of fp16")


def run(args: Any) -> int:
    options.validate(args)
    info = dist.init_distributed(args.device, args.dist_backend)
    try:
        runtime.setup_logging(info, args.debug)
        # the run directory's checkpoints before one is read, checked again once training claims the directory
        checkpoints_seen = None if args.evaluate else rundir.checkpoint_stamps(training_run_dir(args))
        checkpoint_path, checkpoint = det_ckpt.checkpoint_to_use(args.resume, training_run_dir(args), args.evaluate)
        recorded = det_ckpt.recorded_config(checkpoint) if checkpoint else None
        cfg = options.resolve(args, default_workers=loaders.default_workers(info.local_world_size),
                              fresh_seed=dist.broadcast_object(runtime.fresh_seed(), info),
                              timestamp=dist.broadcast_object(options.default_timestamp(), info), recorded=recorded)
        if checkpoint is not None:
            options.check_changes(cfg, recorded, checkpoint_path)
            if not cfg.evaluate and det_ckpt.is_complete(checkpoint, cfg.epochs) and \
                    det_ckpt.final_weights_current(checkpoint_path.parent, checkpoint):
                log.info("%s: the run is complete (%d of %d epochs); nothing to do. Pass a larger --epochs to train "
                         "on.", checkpoint_path, checkpoint["epoch"], cfg.epochs)
                return EXIT_OK
        precision = runtime.precision_for(cfg.amp, channels_last=False)
        from tqdm.contrib.logging import logging_redirect_tqdm
        with logging_redirect_tqdm():
            if cfg.evaluate:
                return evaluate_checkpoint(cfg, info, precision, checkpoint, checkpoint_path)
            return train(cfg, info, precision, checkpoint_path, checkpoint, checkpoints_seen)
    finally:
        dist.cleanup(info)


def build_model(cfg: Any, num_classes: int, backbone_weights: str | None) -> Any:
    """The detector the options describe, on the CPU; its backbone from ``backbone_weights`` when given."""
    return det_configs.detector_from_config(vars(cfg), num_classes=num_classes, backbone_weights=backbone_weights)


def evaluate_checkpoint(cfg: Any, info: Any, precision: Any, checkpoint: dict, path: Path) -> int:
    """``-e``: the COCO AP of the detector in ``checkpoint`` on the validation split, printed as a table."""
    data = det_data.build_data(cfg, info, evaluate_only=True)
    if data.num_classes > checkpoint["num_classes"]:
        raise DataError(f"{cfg.val_annotations} uses category ids up to {data.num_classes - 1}, but {path} predicts "
                        f"{checkpoint['num_classes']} classes. Evaluate it on the dataset it was trained for.")
    model = build_model(cfg, checkpoint["num_classes"], backbone_weights=None)
    det_ckpt.load_detector_weights(model, checkpoint, str(path))
    model.to(info.device)
    log.info("evaluating %s (%s with %s backbone, epoch %d) on %d images of %s", path, cfg.detector, cfg.arch,
             checkpoint.get("epoch", 0), len(data.val_set), cfg.val_images)
    result = det_engine.evaluate(model, data.val_loader, data.val_set, info, precision, data.with_masks)
    if info.is_main:
        print(coco_eval.coco_table(result.metrics), flush=True)
        if cfg.output:
            rundir.append_record(Path(cfg.output), "eval", {"checkpoint": str(path), "images": result.images,
                                                            "eval_time_s": result.seconds, **result.metrics})
    return EXIT_OK


def train(cfg: Any, info: Any, precision: Any, resume_path: Path | None, checkpoint: dict | None,
          checkpoints_seen: rundir.CheckpointStamps | None = None) -> int:
    runtime.seed_everything(cfg.seed + info.rank, deterministic=False)
    torch.backends.cudnn.benchmark = False  # image sizes vary from batch to batch: tuning per size costs more
    data = det_data.build_data(cfg, info)
    num_classes = cfg.num_classes or data.num_classes
    if num_classes < data.num_classes:
        raise ConfigError(f"--num-classes {cfg.num_classes} but the annotations use category ids up to "
                          f"{data.num_classes - 1}: pass at least --num-classes {data.num_classes}.")
    train_set = det_ckpt.training_set_fingerprint(data.train_set)
    if checkpoint is not None:
        options.check_data_unchanged(cfg, checkpoint, resume_path, train_set, info.world_size)
    if not cfg.weights and checkpoint is None and cfg.trainable_layers < options.MAX_TRAINABLE_LAYERS:
        log.warning("no --weights: the backbone starts from random weights, and --trainable-layers %d keeps its "
                    "first stages random and frozen; pass --trainable-layers 5 to train them",
                    cfg.trainable_layers)
    state = build_train_state(cfg, info, data, precision, num_classes, checkpoint, resume_path)
    rng_states = None
    if checkpoint is not None:
        rng_states = det_ckpt.restore_training_state(state, checkpoint, info)
        recorded_batch = int((checkpoint.get("config") or {}).get("batch-size", cfg.batch_size))   # in total, as -b
        engine.continue_rebatched(state, recorded_batch, cfg.batch_size, data.steps_per_epoch)
        # a changed --lr or batch on resume replaces the run's base learning rate; the lr is set for the position
        old, new = optim.rebase_schedule(state.scheduler, optim.scaled_lr(cfg.lr, cfg.batch_size, cfg.lr_base_batch))
        if new != old:
            log.info("the schedule continues from base learning rate %.6g (the run had %.6g)", new, old)
        log.info("resumed from %s: epoch %d, step %d of %d (global step %d)", resume_path, state.position.epoch + 1,
                 state.position.step_in_epoch, data.steps_per_epoch, state.position.global_step)
    record = det_ckpt.DetectorRecord(cfg.detector, cfg.arch, num_classes, dict(data.categories), cfg.seed,
                                     info.world_size, options.config_to_yaml_dict(cfg, num_classes), train_set)
    elapsed_before = float(checkpoint.get("elapsed_s", 0.0)) if checkpoint else 0.0
    # An epoch's record kept in last.pth, whose evaluation and metrics row may not have happened: in its own run
    # directory only (a run continued elsewhere starts its records with its own epochs).
    unrecorded_epoch = checkpoint.get("epoch_record") if (
        checkpoint and not checkpoint["step_in_epoch"]
        and resume_path.parent.resolve() == Path(cfg.output).resolve()) else None
    del checkpoint
    run_dir = Path(cfg.output)  # made only now: a run that fails its input checks leaves nothing behind
    with rundir.open_run_directory(run_dir, info,
                                   write_config=lambda path: options.write_run_config(cfg, path, num_classes),
                                   steps_done=lambda: state.position.global_step,
                                   last_checkpoint=det_ckpt.LAST_CHECKPOINT, stop_workers=data.close,
                                   checkpoints_seen=checkpoints_seen) as (metrics, preemption):
        trainable = sum(p.numel() for p in state.model.parameters() if p.requires_grad)
        log.info("%s with %s backbone (ECA kernel sizes %s, %s norm): %s parameters, %s trainable; %d train / %d val "
                 "images, %d classes; %d process(es), batch %d in total, lr %.4g; %d steps per epoch; run directory "
                 "%s", cfg.detector, cfg.arch,
                 ckpt.NetworkSpec(cfg.arch, 0, models.eca_kernel_sizes(state.model.backbone.body)).kernel_string
                 or "-", cfg.norm, f"{models.count_parameters(state.model):,}", f"{trainable:,}", len(data.train_set),
                 len(data.val_set), num_classes, info.world_size, cfg.batch_size, state.scheduler.base_lrs[0],
                 data.steps_per_epoch, run_dir)
        if rng_states:
            ckpt.restore_rng_state(rng_states[info.rank])
        preemption.install()
        return epoch_loop(cfg, info, state, data, record, run_dir, metrics, preemption, elapsed_before,
                          unrecorded_epoch)


def build_train_state(cfg: Any, info: Any, data: Any, precision: Any, num_classes: int, checkpoint: dict | None,
                      resume_path: Path | None) -> Any:
    """The detector (from --weights, or a resumed run's weights), SGD and the per-step schedule, on the device."""
    model = build_model(cfg, num_classes, backbone_weights=None if checkpoint is not None else cfg.weights)
    if checkpoint is not None:
        det_ckpt.load_detector_weights(model, checkpoint, str(resume_path))
    model.to(info.device)
    if cfg.norm == "bn" and info.distributed and info.device.type == "cuda":  # SyncBatchNorm runs on GPUs only
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    base_lr = optim.scaled_lr(cfg.lr, cfg.batch_size, cfg.lr_base_batch)
    optimizer = optim.build_optimizer(model, base_lr, cfg.momentum, cfg.weight_decay)
    scheduler = optim.build_scheduler(optimizer, det_engine.lr_factor_fn(data.steps_per_epoch, cfg.lr_steps,
                                                                         cfg.warmup_iters, cfg.warmup_factor))
    return det_engine.DetectionTrainState(model, optimizer, scheduler, det_engine.LossTotals(info.device), precision,
                                          forward_model=dist.wrap_model(model, info))


def epoch_loop(cfg: Any, info: Any, state: Any, data: Any, record: Any, run_dir: Path, metrics: Any,
               preemption: Any, elapsed_before: float, unrecorded_epoch: dict | None = None) -> int:
    """Train epoch by epoch until --epochs, saving each epoch before evaluating it; a stop signal saves and exits
    75. ``unrecorded_epoch``: the record that the checkpoint resumed from kept of its last epoch, whose
    evaluation and ``metrics.jsonl`` row are done first where the run stopped before them."""
    loop = engine.LoopOptions(cfg.epochs, data.steps_per_epoch, cfg.clip_grad_norm, cfg.print_freq,
                              cfg.save_every_steps)
    t_run = time.perf_counter()
    elapsed = lambda: elapsed_before + time.perf_counter() - t_run  # noqa: E731 - training and evaluation, all segments

    def save(reason: str, epoch_record: dict | None = None) -> None:
        dist.sync_buffers(state.model, info)
        det_ckpt.save_training_checkpoint(state, record, run_dir, info, reason, elapsed_s=elapsed(),
                                          epoch_record=epoch_record)

    last_eval: dict[str, Any] = {}

    def evaluate_and_record(epoch_record: dict) -> None:
        """An epoch's evaluation, where --eval-every or the last epoch asks for one, and its metrics row."""
        nonlocal last_eval
        epoch = epoch_record["epoch"]
        if epoch == cfg.epochs or (cfg.eval_every and epoch % cfg.eval_every == 0):
            val = det_engine.evaluate(state.model, data.val_loader, data.val_set, info, state.precision,
                                      data.with_masks, desc="val")
            last_eval = val.metrics
            epoch_record.update(val.metrics, val_images=val.images, eval_time_s=val.seconds)
        metrics.record("epoch", epoch_record, step=epoch)
        log.info("epoch %d/%d: train loss %.4f | %s | lr %.4g | %.1f img/s | %s", epoch, cfg.epochs,
                 epoch_record["train_loss"], "  ".join(f"{k} {v:.2f}" for k, v in epoch_record.items()
                                                       if k in last_eval and v is not None and k.endswith("AP"))
                 or "not evaluated", epoch_record["lr"], epoch_record["images_per_s"],
                 metrics_lib.format_duration(epoch_record["epoch_time_s"]))

    if unrecorded_epoch is not None and dist.broadcast_object(
            not metrics_lib.has_epoch_record(run_dir, unrecorded_epoch["epoch"]) if info.is_main else None, info):
        log.info("epoch %d was saved but not recorded (its evaluation did not finish): evaluating it now",
                 unrecorded_epoch["epoch"])
        evaluate_and_record(dict(unrecorded_epoch))
    while state.position.epoch < cfg.epochs:
        pos = state.position
        data.train_sampler.set_epoch(pos.epoch, pos.step_in_epoch * data.batch_per_process)
        if pos.step_in_epoch == 0:
            state.losses = det_engine.LossTotals(info.device)
        if info.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(info.device)
        result = det_engine.train_one_epoch(state, data.train_loader, loop, info, should_stop=preemption.should_stop,
                                            save_checkpoint=lambda: save("step"), metrics=metrics)
        if result.preempted:
            log.warning("%s received: saving a checkpoint at epoch %d step %d and exiting (code %d); rerun the same "
                        "command with --resume auto --output %s to continue", preemption.signal_name or "stop signal",
                        pos.epoch + 1, pos.step_in_epoch, EXIT_PREEMPTED, run_dir)
            save("preempted")
            return EXIT_PREEMPTED
        pos.epoch, pos.step_in_epoch = pos.epoch + 1, 0
        epoch_record = metrics_lib.detection_epoch_record(pos, result, state, info)
        # Saved before evaluating, with its record: a failure there (memory, a kill, the annotations) keeps the
        # epoch, and the resumed run evaluates and records it.
        save("epoch", epoch_record)
        evaluate_and_record(epoch_record)
        if preemption.should_stop() and pos.epoch < cfg.epochs:
            log.warning("%s received: exiting after epoch %d's checkpoint (code %d)", preemption.signal_name or
                        "stop signal", pos.epoch, EXIT_PREEMPTED)
            return EXIT_PREEMPTED
    if not last_eval:   # a finished run whose model.pth was not written (its save failed, or the job ended)
        last_eval = det_engine.evaluate(state.model, data.val_loader, data.val_set, info, state.precision,
                                        data.with_masks, desc="val").metrics
    det_ckpt.save_final_weights(state, record, run_dir, info, last_eval)
    summary = {"detector": cfg.detector, "arch": cfg.arch, "epochs": state.position.epoch,
               "steps": state.position.global_step, "images": len(data.train_set), "wall_time_s": elapsed(),
               "parameters": models.count_parameters(state.model), **last_eval}
    metrics.record("summary", summary)
    log.info("results (%s, %s backbone, %d epochs)\n%s\nrun directory: %s\nTensorBoard:   tensorboard --logdir %s",
             cfg.detector, cfg.arch, state.position.epoch, coco_eval.coco_table(last_eval) if last_eval else "-", run_dir,
             run_dir / "tensorboard")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
