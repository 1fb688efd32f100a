"""The training step loop (ecanet.engine.train_one_epoch): what one step does, and the garbage collector."""
import gc
import weakref

import pytest
import torch
from torch import nn

from ecanet import engine
from ecanet.distributed import DistInfo
from ecanet.engine import LoopOptions, Precision, TrainState, train_one_epoch
from ecanet.metrics import RunningTotals
from ecanet.optim import build_ema

CLASSES, FEATURES, BATCH, STEPS = 10, 4, 8, 3


def _batches(steps: int):
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        yield (torch.randn(BATCH, FEATURES, generator=generator),
               torch.randint(0, CLASSES, (BATCH,), generator=generator), torch.zeros(BATCH, dtype=torch.bool))


def _state(model=None, lr_factor=lambda step: 1.0, precision=None, ema_decay=None, optimizer_class=None):
    model = model or nn.Linear(FEATURES, CLASSES)
    optimizer = (optimizer_class or torch.optim.SGD)(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    return TrainState(model, optimizer, scheduler, RunningTotals(torch.device("cpu")), precision or Precision(),
                      ema=build_ema(model, ema_decay) if ema_decay else None)


def _train(loader, should_stop=None, state=None, criterion=None, steps=STEPS):
    state = state or _state()
    return train_one_epoch(state, loader, criterion or nn.CrossEntropyLoss(), LoopOptions(1, steps, print_freq=steps),
                           DistInfo(), should_stop=should_stop)


def _record_heap_calls(monkeypatch):
    """freeze_heap / release_heap replaced by recorders (the real ones are checked by the cycle test below).
    The process-wide freeze count is not asserted: Python 3.12.3 leaves 375 objects frozen after
    gc.freeze(), gc.unfreeze() and gc.collect() in a bare interpreter."""
    calls, steps = [], []
    monkeypatch.setattr(engine, "freeze_heap", lambda: calls.append(("freeze", len(steps))))
    monkeypatch.setattr(engine, "release_heap", lambda: calls.append(("release", len(steps))))
    return calls, steps


def test_heap_frozen_after_the_first_step_and_released_at_the_end(monkeypatch):
    calls, steps = _record_heap_calls(monkeypatch)
    result = _train(_batches(STEPS), lambda: steps.append(1) and False)  # should_stop: polled after every step
    assert result.images == STEPS * BATCH
    assert calls == [("freeze", 0), ("release", STEPS)]  # frozen once, before the first step's should_stop


def test_heap_released_when_the_epoch_fails(monkeypatch):
    calls, steps = _record_heap_calls(monkeypatch)

    def failing():
        yield from _batches(1)
        raise RuntimeError("a worker died")

    with pytest.raises(RuntimeError, match="a worker died"):
        _train(failing(), lambda: steps.append(1) and False)
    assert calls == [("freeze", 0), ("release", 1)]


def test_heap_released_when_preempted(monkeypatch):
    calls, steps = _record_heap_calls(monkeypatch)
    result = _train(_batches(STEPS), lambda: steps.append(1) or len(steps) == 2)  # stop after step 2
    assert result.preempted and result.images == 2 * BATCH
    assert calls == [("freeze", 0), ("release", 2)]


def test_an_epoch_that_fails_before_its_first_step_freezes_nothing(monkeypatch):
    calls, _ = _record_heap_calls(monkeypatch)

    def failing():
        raise RuntimeError("no batch")
        yield

    with pytest.raises(RuntimeError, match="no batch"):
        _train(failing())
    assert calls == []


def test_a_cycle_frozen_during_the_epoch_is_collected_by_its_end():
    class Node:
        pass

    node = Node()
    node.self = node  # a reference cycle: only the collector can free it
    alive = weakref.ref(node)
    box = {"node": node}
    del node
    survived_collect = []

    def drop_it_and_collect():
        if "node" in box:  # after the first step: the heap, the cycle included, is frozen
            del box["node"]
            gc.collect()
            survived_collect.append(alive() is not None)
        return False

    _train(_batches(STEPS), drop_it_and_collect)
    assert survived_collect == [True]  # frozen: a full collection does not see it
    assert alive() is None             # release_heap collected it


# ---------------------------------------------------------------------------------------- the step itself

class _RecordingLoss(nn.CrossEntropyLoss):
    """Cross-entropy that remembers every loss it returned (before that step's update)."""

    def __init__(self) -> None:
        super().__init__()
        self.losses: list[float] = []

    def forward(self, logits, target):
        loss = super().forward(logits, target)
        self.losses.append(float(loss.detach()))
        return loss


class _RecordingSGD(torch.optim.SGD):
    """SGD that remembers the learning rate of every step it takes."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.step_lrs: list[float] = []

    def step(self, closure=None):
        self.step_lrs.append(self.param_groups[0]["lr"])
        return super().step(closure)


def test_the_epoch_loss_is_the_mean_of_the_step_losses_and_the_position_advances():
    criterion, state = _RecordingLoss(), _state()
    result = _train(_batches(STEPS), state=state, criterion=criterion)
    assert len(criterion.losses) == STEPS
    assert result.loss == pytest.approx(sum(criterion.losses) / STEPS, rel=1e-6)
    assert result.images == STEPS * BATCH and not result.preempted
    assert (state.position.step_in_epoch, state.position.global_step) == (STEPS, STEPS)
    assert 0.0 <= result.top1 <= 100.0 and result.top5 >= result.top1


def test_the_learning_rate_follows_the_schedule_step_by_step():
    state = _state(lr_factor=lambda step: 1.0 / (step + 1), optimizer_class=_RecordingSGD)
    _train(_batches(STEPS), state=state)
    assert state.optimizer.step_lrs == pytest.approx([0.1 / (step + 1) for step in range(STEPS)])
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 / (STEPS + 1))  # ready for the next step


def test_the_ema_follows_the_weights_after_every_step():
    decay = 0.5
    state = _state(ema_decay=decay)
    snapshots = []
    state.optimizer.register_step_post_hook(lambda *_: snapshots.append(state.model.weight.detach().clone()))
    _train(_batches(STEPS), state=state)
    expected = snapshots[0]                      # the first update copies the weights
    for weights in snapshots[1:]:
        expected = decay * expected + (1 - decay) * weights
    assert torch.allclose(state.ema.module.weight, expected, atol=1e-6)
    assert not torch.allclose(state.ema.module.weight, state.model.weight)


def test_the_fp16_scaler_scales_the_loss_and_skips_steps_with_infinite_gradients():
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 4, growth_interval=1000)
    state = _state(precision=Precision(None, scaler))
    before = state.model.weight.detach().clone()
    _train(_batches(1), state=state, steps=1)
    assert not torch.equal(state.model.weight, before) and scaler.get_scale() == 2.0 ** 4   # a finite step

    class InfLoss(nn.Module):  # a finite loss with infinite gradients: the scaler must skip the step
        def forward(self, logits, target):
            return nn.functional.cross_entropy(logits * _InfGrad.apply(logits), target)

    before = state.model.weight.detach().clone()
    state.position.step_in_epoch = 0
    train_one_epoch(state, _batches(1), InfLoss(), LoopOptions(1, 1, print_freq=1), DistInfo())
    assert torch.equal(state.model.weight, before)      # skipped
    assert scaler.get_scale() == 2.0 ** 3                 # and the scale halved


class _InfGrad(torch.autograd.Function):
    """Multiplies by one going forward; sends infinite gradients back."""

    @staticmethod
    def forward(ctx, x):
        return torch.ones_like(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("inf"))
