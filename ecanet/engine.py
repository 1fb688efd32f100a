"""The training step loop and evaluation, with explicit arguments (no global state).

Inside an epoch nothing waits for the GPU except every ``print_freq`` steps: losses and correct counts
are summed on the device, a non-finite loss is remembered on the device (the first step it happened),
and only at those sync points are they read, agreed on by all ranks and shown.

The optimisation step (:func:`backward_and_step`) and when progress bars show (:func:`use_tqdm`) are shared
with the detection loop (:mod:`ecanet.detection.engine`) and the benchmarks (:mod:`ecanet.bench`).
"""
from __future__ import annotations

import contextlib
import gc
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn
from tqdm import tqdm

from .data import MAX_BAD_IMAGE_FRACTION
from .distributed import DistInfo, all_reduce_sum, any_rank
from .errors import DataError
from .metrics import MetricsLogger, RunningTotals, format_duration

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss (or the weights and BatchNorm statistics about to be saved) became NaN or infinite; raised
    before anything from that step is saved. ``last_checkpoint`` is filled in by whoever knows the run
    directory, so that the message says only what is true about the files there."""

    def __init__(self, step: int, epoch: int, lr: float, what: str = "the loss") -> None:
        super().__init__(f"{what} became NaN/inf at global step {step} (epoch {epoch + 1}, learning rate "
                         f"{lr:.6g}). Training stopped before saving anything from that step.")
        self.step, self.epoch, self.lr = step, epoch, lr
        self.last_checkpoint: str | None = None

    def advice(self, remedies: str) -> str:
        """What to do next, given whether a checkpoint from before exists; ``remedies``: the options to change
        (the command line's own)."""
        if self.last_checkpoint:
            return (f"The last checkpoint, {self.last_checkpoint}, was written before this and is intact: resume "
                    f"from it with {remedies} (an explicit --lr on resume replaces the run's).")
        return f"No checkpoint of this run exists yet: start it again with {remedies}."


def first_non_finite(model: nn.Module) -> str | None:
    """The name of the first parameter or buffer (BatchNorm statistics) of ``model`` holding NaN or inf."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


@dataclass
class Precision:
    """How the step computes: autocast dtype (None = fp32), gradient scaler (fp16), memory format."""

    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    channels_last: bool = False

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.amp_dtype)

    def to_device(self, images: torch.Tensor, target: torch.Tensor, device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return (images.to(device, non_blocking=True, memory_format=fmt),
                target.to(device, non_blocking=True))


@dataclass
class EpochPosition:
    """Where training is: completed epochs, steps inside the current epoch, global step."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0

    def rebatched(self, old_global_batch: int, new_global_batch: int, steps_per_epoch: int) -> "EpochPosition":
        """The same point of training after the global batch or the epoch's length changed (a resumed run with
        --resume-override): as many of the epoch's samples seen (rounded down to whole new batches, so a few
        may be seen twice), and the global step counted in epochs of ``steps_per_epoch`` steps, which is what
        the learning-rate schedule reads."""
        step = min(self.step_in_epoch * old_global_batch // new_global_batch, steps_per_epoch)
        return EpochPosition(self.epoch, step, self.epoch * steps_per_epoch + step)


def continue_rebatched(state: Any, old_global_batch: int, new_global_batch: int, steps_per_epoch: int) -> None:
    """Where a resumed run continues when its global batch or epoch length changed (--resume-override): the
    same share of its epoch, and the learning-rate schedule (``state.scheduler``, stepped once a step) at the
    global step that epochs of ``steps_per_epoch`` steps give (:meth:`EpochPosition.rebatched`)."""
    position = state.position.rebatched(old_global_batch, new_global_batch, steps_per_epoch)
    if position != state.position:
        log.warning("resumed with a global batch of %d images (the run's: %d) in epochs of %d steps: continuing at "
                    "epoch %d, step %d (global step %d; the checkpoint was at step %d, global step %d)",
                    new_global_batch, old_global_batch, steps_per_epoch, position.epoch + 1, position.step_in_epoch,
                    position.global_step, state.position.step_in_epoch, state.position.global_step)
        state.position = position
        state.scheduler.last_epoch = position.global_step


@dataclass
class EpochResult:
    loss: float
    top1: float
    top5: float
    images: int
    seconds: float
    skipped_images: int
    preempted: bool = False

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else math.nan


@dataclass
class EvalResult:
    loss: float
    top1: float
    top5: float
    images: int
    seconds: float
    skipped_images: int = 0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else math.nan


def freeze_heap() -> None:
    """Take every object alive now out of Python's cyclic garbage collector (``gc.freeze``).

    Why: a process with a compiled network tracks about a million Python objects, and a full collection walks
    them all, stalling the training step for a large fraction of a second. With ``--decode gpu`` the decode
    threads create objects fast enough to trigger such collections during training; with the heap frozen a
    full collection walks only what the epoch created. In DDP such a pause on one rank holds up every rank at the next all-reduce. Reference counting still
    frees frozen objects; only cycles among them wait for :func:`release_heap`.
    """
    gc.freeze()


def release_heap() -> None:
    """Undo :func:`freeze_heap` and collect once, so that no cyclic garbage outlives the epoch: one full
    collection per epoch, a pause that an ImageNet epoch's minutes of training make negligible."""
    gc.unfreeze()
    gc.collect()


def use_tqdm(info: DistInfo) -> bool:
    """Whether this process shows progress bars: rank 0, writing to a terminal (else progress goes to the log)."""
    return info.is_main and sys.stderr.isatty()


@dataclass
class TrainState:
    """What a training run changes as it goes, and what its checkpoints save (``ecanet.checkpoint``).

    ``model`` is the network itself; ``forward_model`` is what the step calls (``model`` wrapped in DDP
    and/or compiled), the same object when nothing wraps it.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    totals: RunningTotals
    precision: Precision = field(default_factory=Precision)
    ema: torch.optim.swa_utils.AveragedModel | None = None
    position: EpochPosition = field(default_factory=EpochPosition)
    best_top1: float = -math.inf
    skipped_in_epoch: int = 0   # unreadable training images of the current epoch so far
    forward_model: nn.Module | None = None

    def __post_init__(self) -> None:
        if self.forward_model is None:
            self.forward_model = self.model


@dataclass(frozen=True)
class LoopOptions:
    """How the step loop runs: the epoch's length, clipping, and how often it syncs and checkpoints."""

    epochs: int
    steps_per_epoch: int
    clip_grad_norm: float = 0.0       # 0 = off
    print_freq: int = 50              # steps between host syncs (progress, non-finite check)
    save_every_steps: int = 0         # 0 = only at epoch ends


def train_one_epoch(state: TrainState, loader: Iterable, criterion: nn.Module, options: LoopOptions,
                    info: DistInfo, *, should_stop: Callable[[], bool] | None = None,
                    save_checkpoint: Callable[[], None] | None = None,
                    metrics: MetricsLogger | None = None) -> EpochResult:
    """Train from ``state.position`` to the end of the epoch (or until ``should_stop()``), updating ``state``.

    Args:
        state: model, optimizer, schedule, EMA, position and running totals; all advanced in place.
        loader: yields ``(images, targets, unreadable)`` for the steps still to do in this epoch.
        criterion: the training loss.
        options: epoch length, gradient clipping, sync and checkpoint intervals.
        info: this process's place in the process group.
        should_stop: polled after every step (preemption); all ranks get the same answer.
        save_checkpoint: called every ``options.save_every_steps`` global steps, after the non-finite check.
        metrics: per-sync-point scalars (loss, lr, images/s) go to TensorBoard.
    """
    model, optimizer, scheduler, precision = state.forward_model, state.optimizer, state.scheduler, state.precision
    position, totals, ema, device = state.position, state.totals, state.ema, info.device
    steps_per_epoch, epochs, print_freq = options.steps_per_epoch, options.epochs, options.print_freq
    skipped_before = state.skipped_in_epoch
    model.train()
    epoch, start_step = position.epoch, position.step_in_epoch
    first_bad_step = torch.full((), -1, dtype=torch.int64, device=device)  # on device: no sync per step
    step_counter = torch.full((), position.global_step, dtype=torch.int64, device=device)
    skipped, batch_size = 0, 0
    images_at_start, t_start = totals.count, time.perf_counter()
    t_last, images_last = t_start, totals.count
    bar = tqdm(total=steps_per_epoch, initial=start_step, desc=f"epoch {epoch + 1}/{epochs}",
               dynamic_ncols=True, leave=False) if use_tqdm(info) else None
    preempted = False

    def sync_point(final: bool) -> None:
        nonlocal t_last, images_last
        bad = int(first_bad_step.item())  # the host sync of this interval
        if any_rank(bad >= 0, info):
            step = bad if bad >= 0 else position.global_step
            raise NonFiniteLossError(step, epoch, _lr_at(scheduler, step))
        epoch_images = steps_per_epoch * batch_size  # this rank's share of the epoch
        if any_rank(skipped > MAX_BAD_IMAGE_FRACTION * epoch_images, info):
            raise DataError(f"more than {MAX_BAD_IMAGE_FRACTION:.0%} of epoch {epoch + 1}'s images are "
                            f"unreadable ({skipped} so far on rank {info.rank}; the warnings above name "
                            f"them). Fix the broken files, or remove them (resuming then needs "
                            f"--resume-override: the epochs change length), and rerun with --resume auto; "
                            f"checkpoints already saved are intact.")
        now = time.perf_counter()
        rate = (totals.count - images_last) / max(now - t_last, 1e-9) * info.world_size
        t_last, images_last = now, totals.count
        if not info.is_main:
            return
        s = totals.summary()
        lr = optimizer.param_groups[0]["lr"]
        if bar is not None:
            bar.set_postfix(loss=f"{s['loss']:.4f}", top1=f"{s['top1']:.2f}", lr=f"{lr:.4g}",
                            img_s=f"{rate:,.0f}", refresh=False)
        elif not final:
            done = position.step_in_epoch
            eta = (steps_per_epoch - done) * (now - t_start) / max(1, done - start_step)
            log.info("epoch %d/%d step %d/%d  loss %.4f  top1 %.2f  lr %.4g  %s img/s  eta %s", epoch + 1,
                     epochs, done, steps_per_epoch, s["loss"], s["top1"], lr, f"{rate:,.0f}",
                     format_duration(eta))
        if metrics is not None:
            metrics.scalar("train_step/loss", s["loss"], position.global_step)
            metrics.scalar("train_step/lr", lr, position.global_step)
            metrics.scalar("train_step/images_per_s", rate, position.global_step)

    heap_frozen = False
    try:
        for images, target, skipped_batch in loader:
            batch_size = images.shape[0]
            images, target = precision.to_device(images, target, device)
            with precision.autocast(device):
                logits = model(images)
                loss = criterion(logits, target)
            optimizer.zero_grad(set_to_none=True)
            backward_and_step(loss, model, optimizer, precision.scaler, options.clip_grad_norm)
            scheduler.step()
            if ema is not None:
                ema.update_parameters(state.model)
            totals.update(loss, logits, target)
            first_bad_step = torch.where((first_bad_step < 0) & ~torch.isfinite(loss.detach()), step_counter,
                                         first_bad_step)
            step_counter += 1
            skipped += int(skipped_batch.sum())  # a CPU tensor from the loader: no GPU sync
            state.skipped_in_epoch = skipped_before + skipped
            position.step_in_epoch += 1
            position.global_step += 1
            if not heap_frozen:  # after this call's first step: torch.compile has built its graphs
                freeze_heap()
                heap_frozen = True
            if bar is not None:
                bar.update(1)
            last = position.step_in_epoch >= steps_per_epoch
            if position.step_in_epoch % print_freq == 0 or last:
                sync_point(final=last)
            if should_stop is not None and should_stop():
                if position.step_in_epoch % print_freq != 0 and not last:
                    sync_point(final=True)  # never save a checkpoint after a non-finite loss
                preempted = not last
                break
            if (options.save_every_steps and save_checkpoint is not None and not last
                    and position.global_step % options.save_every_steps == 0):
                if position.step_in_epoch % print_freq != 0:
                    sync_point(final=False)
                save_checkpoint()
    finally:  # also on preemption and errors: the collector sees everything again
        if heap_frozen:
            release_heap()
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t_start
    s = totals.summary()
    return EpochResult(s["loss"], s["top1"], s["top5"], (totals.count - images_at_start) * info.world_size,
                       seconds, skipped, preempted)


def _lr_at(scheduler: torch.optim.lr_scheduler.LRScheduler, step: int) -> float:
    """The learning rate the scheduler gives (gave) at a global step."""
    lambdas = getattr(scheduler, "lr_lambdas", None)
    if lambdas:
        return scheduler.base_lrs[0] * lambdas[0](step)
    return scheduler.get_last_lr()[0]


def backward_and_step(loss: torch.Tensor, model: nn.Module, optimizer: torch.optim.Optimizer,
                      scaler: torch.amp.GradScaler | None, clip_grad_norm: float, *,
                      parameters: Iterable[torch.Tensor] | None = None) -> None:
    """Backward ``loss`` (scaled by ``scaler`` when given, for fp16), clip the gradients' total norm to
    ``clip_grad_norm`` (0: off) and step ``optimizer``. ``parameters``: those whose gradients the clipping
    measures and scales (default: all of ``model``'s)."""
    parameters = model.parameters() if parameters is None else parameters
    if scaler is not None:
        scaler.scale(loss).backward()
        if clip_grad_norm > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(parameters, clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        return
    loss.backward()
    if clip_grad_norm > 0:
        nn.utils.clip_grad_norm_(parameters, clip_grad_norm)
    optimizer.step()


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, info: DistInfo, precision: Precision, *,
             criterion: nn.Module | None = None, desc: str = "eval") -> EvalResult:
    """Loss, top-1 and top-5 over the whole loader, summed over all ranks (each image counted once).

    ``model`` should be the unwrapped network: evaluation runs no collective per batch, so ranks may
    hold different numbers of batches (the validation set need not divide by the world size).
    Rows flagged unreadable hold a stand-in image and are left out; more than
    :data:`~ecanet.data.MAX_BAD_IMAGE_FRACTION` of them is a :class:`~ecanet.errors.DataError`.
    """
    device = info.device
    criterion = criterion if criterion is not None else nn.CrossEntropyLoss()
    model.eval()
    totals = RunningTotals(device)
    skipped = 0
    t0 = time.perf_counter()
    batches = tqdm(loader, desc=desc, dynamic_ncols=True, leave=False) if use_tqdm(info) else loader
    for images, target, unreadable in batches:
        flagged = unreadable.bool()                                     # (B,) on the CPU: no device sync
        if bool(flagged.any()):  # the row of an unreadable image holds another image: leave it out
            skipped += int(flagged.sum())
            keep = (~flagged).nonzero().squeeze(1)                      # (B - skipped,)
            if len(keep) == 0:
                continue
            images, target = images[keep.to(images.device)], target[keep.to(target.device)]
        images, target = precision.to_device(images, target, device)
        with precision.autocast(device):
            logits = model(images)
        loss = criterion(logits.float(), target)
        totals.update(loss, logits, target)
    packed = torch.cat([totals.loss_sum.view(1), totals.correct.double(),
                        torch.tensor([totals.count, skipped], dtype=torch.float64, device=device)])
    loss_sum, correct1, correct5, count, skipped_all = all_reduce_sum(packed, info).tolist()
    seconds = time.perf_counter() - t0
    count, skipped_all = int(count), int(skipped_all)
    if skipped_all > MAX_BAD_IMAGE_FRACTION * (count + skipped_all):
        raise DataError(f"{skipped_all} of the {count + skipped_all} validation images are unreadable, more "
                        f"than {MAX_BAD_IMAGE_FRACTION:.0%} (the warnings above name them): the figures would "
                        f"not describe the validation set. Fix or remove the broken files and run again; "
                        f"checkpoints already saved are intact.")
    if count == 0:
        return EvalResult(math.nan, math.nan, math.nan, 0, seconds, skipped_all)
    return EvalResult(loss_sum / count, 100.0 * correct1 / count, 100.0 * correct5 / count, count, seconds,
                      skipped_all)
