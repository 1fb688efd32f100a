"""Issue 8, runs 18-19 (tried and dropped): give PyTorch's default-priority stream pool, where torchvision's
nvJPEG decoder takes its stream, the GPU's highest priority. Imported by run18_priority_bench.py and
run19_steps_main.py (--raise-priority). It changed nothing measurable (docs/benchmarks.md), so it is not in
ecanet."""
import ctypes

import torch

_CU_LAUNCH_ATTRIBUTE_PRIORITY = 8   # CUlaunchAttributeID: "valid for streams, graph nodes, launches"
_CU_LAUNCH_ATTRIBUTE_VALUE_BYTES = 64  # sizeof(CUlaunchAttributeValue), a union
_STREAMS_PER_POOL = 32              # PyTorch's kStreamsPerPool: streams per priority level and device


def raise_pool_stream_priority(device: torch.device, priority: int | None = None) -> int:
    """Give every stream of PyTorch's default-priority stream pool on ``device`` the GPU's highest priority
    (or ``priority``: 0 sets the default back); return how many streams changed (0 where this cannot be
    done: no CUDA, no driver library, an old driver).

    Why: torchvision's nvJPEG decoder runs on a stream it takes from this pool
    (``at::cuda::getStreamFromPool(false)``, decode_jpegs_cuda.cpp) and waits on it once per image. Beside
    training, each of those waits lasts until the decoder's small kernels get SMs from the training kernels,
    which have the same (default) priority: decoding fell from 15,159 to 1,490 img/s on a busy H200
    (docs/benchmarks.md, run 8). Raising our own streams' priority did not help, because the waits are on
    torchvision's stream, and PyTorch offers no way to pick it. CUDA 12 can change an existing stream's
    priority (``cuStreamSetAttribute`` with ``CU_LAUNCH_ATTRIBUTE_PRIORITY``); the pool has
    :data:`_STREAMS_PER_POOL` streams handed out in turn, so asking for that many reaches all of them.
    Other users of the pool (DataLoader side streams, NCCL's streams) get the higher priority too; the
    training step runs on the default stream and keeps the default priority.
    """
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return 0
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
        set_attribute = libcuda.cuStreamSetAttribute
    except (OSError, AttributeError):
        return 0
    set_attribute.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    if priority is None:
        _, priority = torch.cuda.Stream.priority_range()    # (least, greatest); lower numbers run first
    value = ctypes.create_string_buffer(_CU_LAUNCH_ATTRIBUTE_VALUE_BYTES)
    ctypes.memmove(value, ctypes.byref(ctypes.c_int(priority)), ctypes.sizeof(ctypes.c_int))
    changed = set()
    with torch.cuda.device(device):
        for _ in range(_STREAMS_PER_POOL):
            handle = torch.cuda.Stream(device, priority=0).cuda_stream
            if handle not in changed and set_attribute(ctypes.c_void_p(handle), _CU_LAUNCH_ATTRIBUTE_PRIORITY,
                                                       value) == 0:
                changed.add(handle)
    return len(changed)


