"""train_one_epoch's handling of Python's garbage collector (ecanet.engine.freeze_heap / release_heap)."""
import gc
import weakref

import pytest
import torch
from torch import nn

from ecanet import engine
from ecanet.distributed import DistInfo
from ecanet.engine import EpochPosition, Precision, train_one_epoch
from ecanet.metrics import RunningTotals

CLASSES, FEATURES, BATCH, STEPS = 10, 4, 8, 3


def _batches(steps: int):
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        yield (torch.randn(BATCH, FEATURES, generator=generator),
               torch.randint(0, CLASSES, (BATCH,), generator=generator), torch.zeros(BATCH, dtype=torch.bool))


def _train(loader, should_stop=None):
    model = nn.Linear(FEATURES, CLASSES)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return train_one_epoch(model, nn.CrossEntropyLoss(), optimizer, scheduler, loader, device=torch.device("cpu"),
                           info=DistInfo(), position=EpochPosition(), steps_per_epoch=STEPS, epochs=1,
                           precision=Precision(), totals=RunningTotals(torch.device("cpu")), print_freq=STEPS,
                           should_stop=should_stop)


def _record_heap_calls(monkeypatch):
    """freeze_heap / release_heap replaced by recorders (the real ones are checked by the cycle test below).
    The process-wide freeze count is not asserted: Python 3.12.3 leaves 375 objects frozen after
    gc.freeze(), gc.unfreeze() and gc.collect() in a bare interpreter (run 32, docs/benchmarks.md)."""
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
