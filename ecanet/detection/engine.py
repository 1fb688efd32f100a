"""Detection training and evaluation: the schedule, one training epoch, COCO evaluation.

The loop follows torchvision's detection references (the detector returns its losses in training and its
detections in evaluation) with the classification loop's guarantees (:mod:`ecanet.engine`):

* Exact resume: the data (:mod:`ecanet.detection.data`) gives a training order that is a pure function of
  (seed, epoch), seeds every sample's flip by (seed, epoch, index), and its
  :class:`~ecanet.detection.data.SkippingSampler` starts an epoch after the samples already trained on; the
  schedule is a per-step ``LambdaLR``. A run stopped after step k and resumed gives the same weights as one
  that never stopped.
* Inside an epoch nothing waits for the device except every ``print_freq`` steps: the losses are summed on
  the device, a non-finite loss is remembered there (the first step it happened) and read at those sync
  points, before every checkpoint and at the end of the epoch.
* Evaluation runs each image on exactly one rank and COCOeval once, on rank 0
  (:func:`ecanet.detection.coco_eval.evaluate_distributed`).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from ..distributed import DistInfo, all_gather_objects, any_rank
from ..engine import EpochPosition, LoopOptions, NonFiniteLossError, Precision, backward_and_step, use_tqdm
from ..metrics import MetricsLogger, format_duration
from .coco_eval import evaluate_distributed, predictions_to_coco
from .data import CocoDetectionDataset, to_device

log = logging.getLogger(__name__)

LR_STEP_FACTOR = 0.1            # the learning rate after each epoch of --lr-steps (mmdetection's and the paper's)
# COCOeval's names (coco_eval.METRIC_NAMES prefixed by its iou type) as the run's records name them.
METRIC_PREFIXES = {"bbox": "box", "segm": "mask"}


# ------------------------------------------------------------------------------------------------- schedule

def lr_factor_fn(steps_per_epoch: int, lr_steps: Sequence[int], warmup_iters: int, warmup_factor: float
                 ) -> Callable[[int], float]:
    """The multiplier of the base learning rate at a global step (0-based): linear warm-up from
    ``warmup_factor`` to 1 over the first ``warmup_iters`` steps (torchvision's references and mmdetection's
    'linear' warm-up), times :data:`LR_STEP_FACTOR` for every epoch of ``lr_steps`` already finished.

    A closure, so that ``LambdaLR.state_dict`` stores only the step count: a resumed run follows the schedule
    of its current options (e.g. more epochs).
    """
    milestones = sorted(lr_steps)

    def factor(step: int) -> float:
        epoch = step // steps_per_epoch
        decay = LR_STEP_FACTOR ** sum(1 for milestone in milestones if epoch >= milestone)
        if step < warmup_iters:
            progress = step / warmup_iters
            return decay * (warmup_factor * (1 - progress) + progress)
        return decay

    return factor


# ------------------------------------------------------------------------------------------------ training

class LossTotals:
    """Sums of the detector's named losses over an epoch's steps, on the device (read at sync points).

    Each process sums its own steps; :meth:`across_ranks` adds every process's, which is what the logs, the
    epoch's record and ``last.pth`` hold. A resumed run loads those into rank 0 alone, so that adding the ranks
    again counts each step once."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.names: list[str] = []
        self.sums = torch.zeros(0, dtype=torch.float64, device=device)  # (len(names),)
        self.steps = 0

    def update(self, losses: dict[str, torch.Tensor]) -> None:
        if not self.names:
            self.names = list(losses)
            self.sums = torch.zeros(len(self.names), dtype=torch.float64, device=self.device)
        self.sums += torch.stack([losses[name].detach().double() for name in self.names])
        self.steps += 1

    def summary(self) -> dict[str, float]:
        """Mean of each loss per step, and their sum as ``loss``; NaN before the first step."""
        if not self.steps:
            return {"loss": math.nan}
        means = (self.sums / self.steps).tolist()
        return {"loss": sum(means), **dict(zip(self.names, means))}

    def state_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "sums": self.sums.cpu(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.names, self.steps = list(state["names"]), int(state["steps"])
        self.sums = state["sums"].to(self.device, torch.float64, copy=True)   # updated in place from here on

    def across_ranks(self, info: DistInfo) -> LossTotals:
        """The sums and steps of every process added up, on every process (a collective: every rank calls it).
        Gathered as small objects rather than all-reduced as one tensor: a rank that has not stepped yet has no
        loss names, and tensors of different sizes would hang the reduction."""
        if not info.distributed:
            return self
        total = LossTotals(self.device)
        for state in all_gather_objects(self.state_dict(), info):
            if not state["steps"]:
                continue
            if not total.names:
                total.load_state_dict(state)
            else:
                total.sums += state["sums"].to(self.device, torch.float64)
                total.steps += int(state["steps"])
        return total


@dataclass
class DetectionTrainState:
    """What training changes as it goes, and what ``last.pth`` saves (:mod:`ecanet.detection.checkpoint`).
    ``forward_model`` is what the step calls (``model`` in DDP), ``model`` the network itself."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    losses: LossTotals
    precision: Precision = field(default_factory=Precision)
    position: EpochPosition = field(default_factory=EpochPosition)
    forward_model: nn.Module | None = None

    def __post_init__(self) -> None:
        if self.forward_model is None:
            self.forward_model = self.model


@dataclass
class EpochResult:
    losses: dict[str, float]     # mean of each named loss per step of every process, and 'loss' (their sum)
    images: int                  # trained on in this call, all ranks
    seconds: float
    preempted: bool = False

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else math.nan


def train_one_epoch(state: DetectionTrainState, loader: Iterable, options: LoopOptions, info: DistInfo, *,
                    should_stop: Callable[[], bool] | None = None,
                    save_checkpoint: Callable[[], None] | None = None,
                    metrics: MetricsLogger | None = None) -> EpochResult:
    """Train from ``state.position`` to the end of the epoch (or until ``should_stop()``), updating ``state``.

    Args:
        state: model, optimizer, schedule, position and this process's loss sums (on rank 0 of a resumed
            run, every process's sums saved before); advanced in place.
        loader: yields ``(images, targets)`` (tuples, :func:`~ecanet.detection.data.collate_fn`) for the steps
            still to do in this epoch.
        options: epoch length and the sync and checkpoint intervals (``clip_grad_norm`` > 0 clips).
        info: this process's place in the process group.
        should_stop: polled after every step (preemption); every rank gets the same answer.
        save_checkpoint: called every ``options.save_every_steps`` global steps, after the non-finite check.
        metrics: the sync points' losses, learning rate and images/s go to TensorBoard.

    Raises:
        NonFiniteLossError: the loss was NaN/inf at some step (found at the next sync point, before any save).
    """
    model, optimizer, scheduler, precision = state.forward_model, state.optimizer, state.scheduler, state.precision
    position, totals, device = state.position, state.losses, info.device
    epoch, start_step, steps = position.epoch, position.step_in_epoch, options.steps_per_epoch
    trainable = [p for p in state.model.parameters() if p.requires_grad]   # what clipping measures
    model.train()
    first_bad_step = torch.full((), -1, dtype=torch.int64, device=device)  # on the device: no sync per step
    step_counter = torch.full((), position.global_step, dtype=torch.int64, device=device)
    images_done, t_start = 0, time.perf_counter()
    t_last, images_last = t_start, 0
    bar = tqdm(total=steps, initial=start_step, desc=f"epoch {epoch + 1}/{options.epochs}", dynamic_ncols=True,
               leave=False) if use_tqdm(info) else None

    def sync_point(final: bool) -> None:
        nonlocal t_last, images_last
        bad = int(first_bad_step.item())  # the host sync of this interval
        if any_rank(bad >= 0, info):
            step = bad if bad >= 0 else position.global_step
            lambdas = getattr(scheduler, "lr_lambdas", None)
            lr = scheduler.base_lrs[0] * lambdas[0](step) if lambdas else optimizer.param_groups[0]["lr"]
            raise NonFiniteLossError(step, epoch, lr)
        now = time.perf_counter()
        rate = (images_done - images_last) * info.world_size / max(now - t_last, 1e-9)
        t_last, images_last = now, images_done
        summary = totals.across_ranks(info).summary()
        if not info.is_main:
            return
        lr = optimizer.param_groups[0]["lr"]
        if bar is not None:
            bar.set_postfix(loss=f"{summary['loss']:.4f}", lr=f"{lr:.4g}", img_s=f"{rate:,.1f}", refresh=False)
        elif not final:
            done = position.step_in_epoch
            eta = (steps - done) * (now - t_start) / max(1, done - start_step)
            parts = "  ".join(f"{name} {value:.4f}" for name, value in summary.items())
            log.info("epoch %d/%d step %d/%d  %s  lr %.4g  %.1f img/s  eta %s", epoch + 1, options.epochs, done,
                     steps, parts, lr, rate, format_duration(eta))
        if metrics is not None:
            metrics.scalar("train_step/loss", summary["loss"], position.global_step)
            metrics.scalar("train_step/lr", lr, position.global_step)
            metrics.scalar("train_step/images_per_s", rate, position.global_step)

    preempted = False
    for images, targets in loader:
        images, targets = to_device(images, targets, device)
        with precision.autocast(device):
            losses = model(images, targets)                 # {name: scalar}, e.g. loss_classifier, loss_mask
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        backward_and_step(loss, state.model, optimizer, precision.scaler, options.clip_grad_norm,
                          parameters=trainable)
        scheduler.step()
        totals.update(losses)
        first_bad_step = torch.where((first_bad_step < 0) & ~torch.isfinite(loss.detach()), step_counter,
                                     first_bad_step)
        step_counter += 1
        images_done += len(images)
        position.step_in_epoch += 1
        position.global_step += 1
        if bar is not None:
            bar.update(1)
        last = position.step_in_epoch >= steps
        synced = position.step_in_epoch % options.print_freq == 0 or last
        if synced:
            sync_point(final=last)
        if should_stop is not None and should_stop():
            if not synced:
                sync_point(final=True)  # never save a checkpoint after a non-finite loss
            preempted = not last
            break
        if options.save_every_steps and save_checkpoint is not None and not last \
                and position.global_step % options.save_every_steps == 0:
            if not synced:
                sync_point(final=False)
            save_checkpoint()
    if bar is not None:
        bar.close()
    return EpochResult(totals.across_ranks(info).summary(), images_done * info.world_size,
                       time.perf_counter() - t_start, preempted)


# ---------------------------------------------------------------------------------------------- evaluation

@dataclass
class EvalResult:
    metrics: dict[str, float | None]   # box_AP, box_AP50, ..., mask_AP... in percent; None: no such objects
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else math.nan


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, dataset: CocoDetectionDataset, info: DistInfo,
             precision: Precision, with_masks: bool, desc: str = "eval") -> EvalResult:
    """COCO AP (boxes, and masks with ``with_masks``) of ``model`` (unwrapped: no collective per batch) on
    ``dataset``, every image on exactly one rank, COCOeval run once on rank 0; every rank returns the numbers.
    Keys: ``box_AP``, ``box_AP50``, ``box_AP75``, ``box_APs``, ``box_APm``, ``box_APl`` and ``mask_*``."""
    device = info.device
    model.eval()
    image_ids: list[int] = []
    detections: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    batches = tqdm(loader, desc=desc, dynamic_ncols=True, leave=False) if use_tqdm(info) else loader
    for images, targets in batches:
        images = [image.to(device, non_blocking=True) for image in images]
        with precision.autocast(device):
            outputs = model(images)                         # per image: boxes (N, 4), scores, labels[, masks]
        ids = [int(t["image_id"]) for t in targets]
        detections += predictions_to_coco(outputs, ids, with_masks)
        image_ids += ids
    iou_types = ("bbox", "segm") if with_masks else ("bbox",)
    coco_metrics = evaluate_distributed(dataset.coco, image_ids, detections, info, iou_types,
                                        expected_image_ids=dataset.ids)
    metrics = {f"{METRIC_PREFIXES[key.split('_', 1)[0]]}_{key.split('_', 1)[1]}": value
               for key, value in coco_metrics.items()}
    return EvalResult(metrics, len(dataset), time.perf_counter() - t0)
