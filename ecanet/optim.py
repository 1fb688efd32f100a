"""Optimiser, learning-rate schedule and weight EMA.

The paper's recipes (Section 4.1, following He et al. 2016 and Sandler et al. 2018):
  * ResNets: SGD, momentum 0.9, weight decay 1e-4, lr 0.1 for a batch of 256, divided by 10 every 30
    epochs, 100 epochs.
  * MobileNetV2: SGD, momentum 0.9, weight decay 4e-5, lr 0.045 for a batch of 96, x0.98 every epoch,
    400 epochs.
Both are the ``step`` schedule, lr * rate ** floor(epoch / period), evaluated per iteration (constant
within an epoch, as the official per-epoch ``adjust_learning_rate``). Modern options: cosine decay,
linear warm-up, no weight decay on BN and bias, an EMA of the weights.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def scaled_lr(lr: float, global_batch: int, lr_base_batch: int) -> float:
    """Linear scaling rule (Goyal et al. 2017): ``lr`` is given for ``lr_base_batch`` images."""
    return lr * global_batch / lr_base_batch


def parameter_groups(model: nn.Module, weight_decay: float, no_wd_bn_bias: bool) -> list[dict]:
    """One group, or two when BN parameters and biases (all 0-/1-D tensors) get no weight decay."""
    if not no_wd_bn_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def set_sgd_options(optimizer: torch.optim.SGD, momentum: float, weight_decay: float, nesterov: bool) -> None:
    """Give an SGD optimizer built by :func:`build_optimizer` (e.g. after ``load_state_dict`` of a resumed run
    brought back the run's values) these options; the first parameter group is the decayed one
    (:func:`parameter_groups`), a second one keeps no weight decay."""
    for index, group in enumerate(optimizer.param_groups):
        group["momentum"], group["nesterov"] = momentum, nesterov and momentum > 0
        if index == 0:
            group["weight_decay"] = weight_decay


def build_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float, nesterov: bool = False,
                    no_wd_bn_bias: bool = False) -> torch.optim.SGD:
    return torch.optim.SGD(parameter_groups(model, weight_decay, no_wd_bn_bias), lr=lr, momentum=momentum,
                           nesterov=nesterov and momentum > 0)


def lr_factor_fn(sched: str, steps_per_epoch: int, epochs: int, decay_epochs: float = 30,
                 decay_rate: float = 0.1, warmup_epochs: float = 0.0, min_lr_ratio: float = 0.0
                 ) -> Callable[[int], float]:
    """The multiplier of the base lr at a global step (0-based), as a plain function.

    A closure rather than an object on purpose: ``LambdaLR.state_dict`` then stores only the step count,
    so a resumed run follows the schedule of its *current* options (e.g. more --epochs).
    """
    warmup_steps = int(round(warmup_epochs * steps_per_epoch))
    total_steps = max(1, epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if sched == "step":
            return decay_rate ** math.floor(step / steps_per_epoch / decay_epochs)
        if sched == "cosine":
            progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
            return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        raise ValueError(f"unknown schedule {sched!r}")

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, factor: Callable[[int], float]) -> LambdaLR:
    """Per-iteration scheduler: call ``step()`` after every optimiser step."""
    return LambdaLR(optimizer, factor)


def build_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of parameters and buffers (torch.optim.swa_utils)."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def rebase_schedule(scheduler: LambdaLR, base_lr: float) -> tuple[float, float]:
    """Give a (resumed) schedule another base learning rate, keeping its position: the optimizer's lr
    becomes ``base_lr * factor(step)`` at once. Returns (old base, new base)."""
    old = scheduler.base_lrs[0]
    scheduler.base_lrs = [base_lr for _ in scheduler.base_lrs]
    step = scheduler.last_epoch
    for group, lmbda in zip(scheduler.optimizer.param_groups, scheduler.lr_lambdas):
        group["initial_lr"] = base_lr
        group["lr"] = base_lr * lmbda(step)
    return old, base_lr
