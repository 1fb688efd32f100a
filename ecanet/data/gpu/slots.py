"""Reusable shared-memory slots that carry ``--decode gpu``'s training batches from the loader workers.

A DataLoader worker normally returns each batch as fresh tensors in shared memory. The main process then
receives one file descriptor per tensor (a socket handshake in Python), maps the memory, copies it into
pinned memory (the DataLoader's pin-memory thread) and unmaps it when the batch is dropped. All of that runs
in threads of the training process, and the unmapping runs while holding the interpreter lock (GIL): with
``--decode gpu`` (about 30 MB per 256-image batch) the pin-memory thread holds the GIL longer than the
decode threads, and the training threads, which launch the compiled step's kernels from Python, wait for it
(docs/design/input_pipeline.md).

Here the main process allocates ``count`` slots of ``slot_bytes`` once, in shared memory registered with CUDA
as pinned memory (``cudaHostRegister``). A worker writes its batch into a free slot and returns only a
:class:`SlotBatch` of a few integers; the GPU copies straight from the slot, and the slot is handed back when
the batch has been used. No descriptor passing, mapping, unmapping or pinning copy per batch, and no
pin-memory thread. A batch that does not fit, or finds no free slot within :data:`ACQUIRE_TIMEOUT_S`, travels
the ordinary way (:func:`ecanet.data.gpu.decode.collate_encoded`), so nothing depends on the slots' size.

Slot layout (byte offsets rounded up to 8 so that every array can be viewed in its own dtype)::

    sizes (G,) int64 | targets (B,) int64 | unreadable (B,) int64 | plans (B, 8) int32 |
    ready (R, 3, S, S) uint8 | jpeg_bytes (N,) uint8
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import torch

log = logging.getLogger(__name__)

ACQUIRE_TIMEOUT_S = 1.0    # a worker that finds every slot taken this long sends its batch the ordinary way
ACQUIRE_POLL_S = 0.001
PLAN_COLUMNS = 8           # ecanet.data.gpu.decode.CropPlan.as_tensor's row length
ALIGN_BYTES = 8
SLOT_HEADROOM = 1.3        # a slot holds 1.3x the expected batch; larger batches take the ordinary way
_POOLS: dict[str, "weakref.ref[BatchSlots]"] = {}   # the pools of this process, for SlotBatch's unpickling


def _aligned(n: int) -> int:
    return (n + ALIGN_BYTES - 1) // ALIGN_BYTES * ALIGN_BYTES


def slot_layout(batch: int, gpu_rows: int, ready_rows: int, jpeg_bytes: int, crop: int
                ) -> dict[str, tuple[int, int]]:
    """``{name: (offset, bytes)}`` of each array of a batch in a slot (see the module docstring)."""
    sizes = [("sizes", 8 * gpu_rows), ("targets", 8 * batch), ("unreadable", 8 * batch),
             ("plans", 4 * PLAN_COLUMNS * batch), ("ready", ready_rows * 3 * crop * crop), ("jpeg_bytes", jpeg_bytes)]
    layout, offset = {}, 0
    for name, nbytes in sizes:
        layout[name] = (offset, nbytes)
        offset = _aligned(offset + nbytes)
    return layout


def slot_bytes_for(batch: int, crop: int, gpu_share: float, mean_jpeg_bytes: float) -> int:
    """The slot size for batches of ``batch`` images: the expected batch (``gpu_share`` of them as JPEG files of
    ``mean_jpeg_bytes``, the rest as ``3 x crop x crop`` crops) times :data:`SLOT_HEADROOM`, plus the small arrays."""
    expected = batch * (gpu_share * mean_jpeg_bytes + (1 - gpu_share) * 3 * crop * crop)
    small = sum(nbytes for _, nbytes in slot_layout(batch, batch, 0, 0, crop).values()) + 6 * ALIGN_BYTES
    return _aligned(int(SLOT_HEADROOM * expected) + small)


def mean_file_bytes(paths: Sequence[str], sample: int = 256) -> float:
    """The mean size of the files ``paths``, from up to ``sample`` of them spread over the list."""
    if not paths:
        return 0.0
    step = max(1, len(paths) // sample)
    sizes = [os.path.getsize(path) for path in paths[::step][:sample]]
    return sum(sizes) / len(sizes)


@dataclass(frozen=True)
class SlotBatch:
    """What a worker sends for a batch it wrote into slot ``slot`` of pool ``pool_id``: the array sizes.

    Unpickled in the main process, it owns the slot: :meth:`release` (or dropping the object, e.g. when the
    DataLoader discards the batches of an abandoned epoch) hands the slot back."""

    pool_id: str
    slot: int
    batch: int
    gpu_rows: int
    ready_rows: int
    jpeg_bytes: int
    crop: int

    def __reduce__(self) -> tuple[Any, tuple]:
        return _receive_slot_batch, (self.pool_id, self.slot, self.batch, self.gpu_rows, self.ready_rows,
                                     self.jpeg_bytes, self.crop)

    def release(self) -> None:
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()


def _receive_slot_batch(*fields: Any) -> SlotBatch:
    batch = SlotBatch(*fields)
    pool_ref = _POOLS.get(batch.pool_id)
    pool = pool_ref() if pool_ref is not None else None
    if pool is not None:
        object.__setattr__(batch, "_finalizer", weakref.finalize(batch, pool.release, batch.slot))
    return batch


class BatchSlots:
    """``count`` slots of ``slot_bytes`` in shared memory, a taken-flag per slot and a lock (see the module
    docstring). Build it in the main process before the DataLoader starts its workers; the workers get it
    with the collate function (inherited when forked, sent through the process arguments when spawned)."""

    def __init__(self, count: int, slot_bytes: int) -> None:
        self.count, self.slot_bytes = count, slot_bytes
        self.pool_id = uuid.uuid4().hex
        self.arena = torch.empty(count, slot_bytes, dtype=torch.uint8).share_memory_()   # (count, slot_bytes)
        self.taken = torch.zeros(count, dtype=torch.uint8).share_memory_()                # (count,)
        self.lock = multiprocessing.get_context().Lock()  # the DataLoader's default start method
        self.pinned = False
        self._creator_pid = os.getpid()
        _POOLS[self.pool_id] = weakref.ref(self)

    def pin(self) -> bool:
        """Register the slots with CUDA as pinned memory, so that copies to the GPU run asynchronously
        straight from them. False (copies still work, synchronously) where CUDA refuses."""
        if not self.pinned and torch.cuda.is_available():
            nbytes, cudart = self.arena.numel(), torch.cuda.cudart()
            self.pinned = cudart.cudaHostRegister(self.arena.data_ptr(), nbytes, 0) == cudart.cudaError.success
            if self.pinned:
                weakref.finalize(self, _unregister, self.arena.data_ptr())
            else:
                log.warning("could not register %.1f GB of loader slots as pinned memory; batches are copied "
                            "to the GPU synchronously", nbytes / 1e9)
        return self.pinned

    def acquire(self) -> int | None:
        """A free slot, now taken; None when none frees up within :data:`ACQUIRE_TIMEOUT_S`."""
        deadline = time.monotonic() + ACQUIRE_TIMEOUT_S
        while True:
            with self.lock:
                free = (self.taken == 0).nonzero()
                if len(free):
                    slot = int(free[0])
                    self.taken[slot] = 1
                    return slot
            if time.monotonic() >= deadline:
                return None
            time.sleep(ACQUIRE_POLL_S)

    def release(self, slot: int) -> None:
        with self.lock:
            self.taken[slot] = 0

    def free_slots(self) -> int:
        with self.lock:
            return int((self.taken == 0).sum())

    def write(self, plans: torch.Tensor, jpegs: Sequence[torch.Tensor], crops: Sequence[torch.Tensor],
              targets: Sequence[int], unreadable: Sequence[int], crop: int) -> SlotBatch | None:
        """Write one batch into a free slot (in a worker): its (B, 8) int32 plans, the JPEG files of its GPU
        rows and the (3, S, S) uint8 crops of its CPU rows, in batch order. None when it does not fit or no
        slot is free; the caller then sends the batch the ordinary way."""
        if any(tuple(c.shape) != (3, crop, crop) for c in crops):  # stack(out=) would resize rather than fail
            raise ValueError(f"the CPU crops must be (3, {crop}, {crop}) uint8 images")
        batch, jpeg_bytes = len(plans), sum(len(jpeg) for jpeg in jpegs)
        layout = slot_layout(batch, len(jpegs), len(crops), jpeg_bytes, crop)
        offset, nbytes = layout["jpeg_bytes"]
        if offset + nbytes > self.slot_bytes:
            return None
        slot = self.acquire()
        if slot is None:
            return None
        try:
            views = self._views(slot, layout, batch, len(crops), crop)
            views["sizes"].copy_(torch.tensor([len(jpeg) for jpeg in jpegs], dtype=torch.int64))
            views["targets"].copy_(torch.tensor(targets, dtype=torch.int64))
            views["unreadable"].copy_(torch.tensor(unreadable, dtype=torch.int64))
            views["plans"].copy_(plans)
            if crops:
                torch.stack(list(crops), out=views["ready"])
            if jpegs:
                torch.cat(list(jpegs), out=views["jpeg_bytes"])
        except BaseException:  # the slot must not stay taken
            self.release(slot)
            raise
        fields = (self.pool_id, slot, batch, len(jpegs), len(crops), jpeg_bytes, crop)
        # written in a worker: the main process owns the slot once it receives the batch; written here (a
        # loader without workers): owned at once
        return _receive_slot_batch(*fields) if os.getpid() == self._creator_pid else SlotBatch(*fields)

    def read(self, batch: SlotBatch) -> tuple[torch.Tensor, ...]:
        """The :data:`ecanet.data.gpu.decode.EncodedBatch` of a received :class:`SlotBatch`, as views of its slot:
        valid until the slot is released."""
        layout = slot_layout(batch.batch, batch.gpu_rows, batch.ready_rows, batch.jpeg_bytes, batch.crop)
        views = self._views(batch.slot, layout, batch.batch, batch.ready_rows, batch.crop)
        return (views["jpeg_bytes"], views["sizes"], views["ready"], views["plans"], views["targets"],
                views["unreadable"])

    def _views(self, slot: int, layout: dict[str, tuple[int, int]], batch: int, ready_rows: int, crop: int
               ) -> dict[str, torch.Tensor]:
        row = self.arena[slot]                                                         # (slot_bytes,) uint8

        def part(name: str, dtype: torch.dtype) -> torch.Tensor:
            offset, nbytes = layout[name]
            return row.narrow(0, offset, nbytes).view(dtype)

        ready = part("ready", torch.uint8)
        return {"sizes": part("sizes", torch.int64), "targets": part("targets", torch.int64),
                "unreadable": part("unreadable", torch.int64),
                "plans": part("plans", torch.int32).view(batch, PLAN_COLUMNS),              # (B, 8)
                "ready": ready.view(ready_rows, 3, crop, crop) if ready_rows else ready.view(0, 3, 0, 0),
                "jpeg_bytes": part("jpeg_bytes", torch.uint8)}


def _unregister(pointer: int) -> None:
    try:
        torch.cuda.cudart().cudaHostUnregister(pointer)
    except Exception:  # at interpreter exit CUDA may be gone already; the memory goes with the process
        pass
