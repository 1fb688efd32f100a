"""Loader slots (ecanet.data.gpu.slots): batches written by DataLoader workers into reusable shared memory come
back exactly as the ordinary collate sends them, slots are handed back however a batch ends, and a batch that
does not fit or finds no free slot takes the ordinary way. CPU only; pinning needs CUDA."""
from __future__ import annotations

import gc
import pickle

import pytest
import torch
from torch.utils.data import DataLoader

from ecanet.data.gpu import slots as batch_slots
from ecanet.data.gpu.slots import BatchSlots, SlotBatch, mean_file_bytes, slot_bytes_for, slot_layout
from ecanet.data import ResumableSampler, sample_seed
from ecanet.data.gpu.decode import EncodedImageFolder, SlotCollate, collate_encoded, split_items
from imagefolder import make_photo_folder

IMG = 32


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    return make_photo_folder(tmp_path_factory.mktemp("slot_photos"))


def _dataset(folder, share: float = 0.5) -> EncodedImageFolder:
    return EncodedImageFolder(str(folder / "train"), True, IMG, 37, gpu_share=share)


def _items(dataset, seed: int = 5):
    return [dataset[(i, sample_seed(seed, 0, i))] for i in range(len(dataset))]


def _split(items):
    plans, jpegs, crops = split_items(items)
    return plans, jpegs, crops, [item[1] for item in items], [item[2] for item in items]


def _assert_same_batch(got, expected) -> None:
    names = ("jpeg_bytes", "jpeg_sizes", "ready", "plans", "targets", "unreadable")
    for name, a, b in zip(names, got, expected):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), name


def test_layout_keeps_every_array_aligned_and_apart():
    layout = slot_layout(batch=5, gpu_rows=3, ready_rows=2, jpeg_bytes=1001, crop=7)
    spans = sorted(layout.values())
    assert all(offset % 8 == 0 for offset, _ in spans)
    assert all(a_off + a_len <= b_off for (a_off, a_len), (b_off, _) in zip(spans, spans[1:]))
    assert layout["ready"][1] == 2 * 3 * 7 * 7 and layout["plans"][1] == 5 * 8 * 4
    # a slot sized for the expected batch holds it with the headroom to spare
    assert slot_bytes_for(256, 224, 0.7, 106_000) >= 256 * (0.7 * 106_000 + 0.3 * 3 * 224 * 224)


def test_a_batch_read_back_from_its_slot_is_the_ordinary_batch(photo_folder):
    dataset = _dataset(photo_folder)
    items = _items(dataset)
    slots = BatchSlots(2, slot_bytes_for(len(items), IMG, 0.5, mean_file_bytes([p for p, _ in dataset.samples])))
    received = SlotCollate(slots, IMG)(items)          # written in the pool's own process: owned at once
    assert isinstance(received, SlotBatch) and 0 < received.gpu_rows < len(items)
    _assert_same_batch(slots.read(received), collate_encoded(items))
    assert slots.free_slots() == 1
    received.release()
    assert slots.free_slots() == 2
    received.release()                                 # idempotent
    assert slots.free_slots() == 2


def test_the_sender_never_releases_and_a_dropped_batch_hands_its_slot_back():
    slots = BatchSlots(1, 4 << 20)
    slot = slots.acquire()
    sent = SlotBatch(slots.pool_id, slot, 4, 2, 2, 1000, IMG)   # as a worker makes it
    sent.release()                                     # a worker's copy owns nothing
    assert slots.free_slots() == 0
    received = pickle.loads(pickle.dumps(sent))       # what the main process gets from the worker
    del received                                       # e.g. the DataLoader discarding an abandoned epoch
    gc.collect()
    assert slots.free_slots() == 1


def test_too_large_or_no_free_slot_takes_the_ordinary_way(photo_folder, monkeypatch):
    items = _items(_dataset(photo_folder, share=1.0))
    too_small = SlotCollate(BatchSlots(1, 1024), IMG)(items)
    assert isinstance(too_small, tuple)
    _assert_same_batch(too_small, collate_encoded(items))
    slots = BatchSlots(1, 4 << 20)
    assert slots.acquire() == 0
    monkeypatch.setattr(batch_slots, "ACQUIRE_TIMEOUT_S", 0.01)
    assert slots.acquire() is None
    ordinary = SlotCollate(slots, IMG)(items)
    assert isinstance(ordinary, tuple)
    _assert_same_batch(ordinary, collate_encoded(items))


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_workers_fill_slots_that_come_back_in_order(photo_folder, workers):
    """Through a real DataLoader (forked workers, persistent, as in main.py), over two epochs and one
    abandoned mid-way: every batch equals the ordinary collate's, and no slot is lost."""
    dataset = _dataset(photo_folder)
    batch_size = 4
    slots = BatchSlots(5, 4 << 20)
    sampler = ResumableSampler(len(dataset), 3, 0, 1)
    kwargs = dict(persistent_workers=True, prefetch_factor=1) if workers else {}
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        collate_fn=SlotCollate(slots, IMG), drop_last=True, **kwargs)
    for epoch, stop_after in ((0, None), (1, 1), (2, None)):
        sampler.set_epoch(epoch)
        keys = list(iter(sampler))
        for step, batch in enumerate(loader):
            assert isinstance(batch, SlotBatch)
            expected = collate_encoded([dataset[key] for key in keys[step * batch_size:(step + 1) * batch_size]])
            _assert_same_batch(slots.read(batch), expected)
            batch.release()
            if stop_after is not None and step + 1 == stop_after:
                break
        del batch
    del loader
    gc.collect()
    assert slots.free_slots() == slots.count


def test_a_failed_write_hands_its_slot_back(photo_folder, monkeypatch):
    items = _items(_dataset(photo_folder, share=0.0))          # every row a ready IMG x IMG crop
    slots = BatchSlots(1, 4 << 20)
    with pytest.raises(ValueError, match=r"\(3, 33, 33\)"):
        SlotCollate(slots, IMG + 1)(items)                     # told the wrong crop size: refused, not resized
    assert slots.free_slots() == 1

    def broken_stack(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(torch, "stack", broken_stack)
    with pytest.raises(RuntimeError, match="disk full"):
        slots.write(*_split(items), IMG)
    assert slots.free_slots() == 1                             # taken, then handed back
