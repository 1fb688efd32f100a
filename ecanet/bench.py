"""Timing on synthetic data: model throughput, and the ECA layer against its memory floor.

:func:`measure_throughput` times whole training or inference steps of a model; :func:`measure_eca_layer`
times one ECA layer (fused or plain) and compares it with the time its unavoidable memory traffic takes at
the copy bandwidth :func:`measure_copy_bandwidth` measures. ``scripts/benchmark.py`` is the command line.

Every figure is a median of ``repeats`` timed runs after a warm-up, taken with CUDA events (wall clock
with ``time.perf_counter`` on a CPU), on data already on the device, so no input pipeline is timed.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import gc
import logging
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple, Sequence

import torch
from torch import nn

from .constants import BYTES_PER_GIB, IMAGE_CHANNELS, IMAGENET_CLASSES
from .engine import backward_and_step, freeze_heap, release_heap
from .metrics import peak_memory_gib
from .models.attention import scale_add_relu
from .models.eca_module import EcaModule, adaptive_kernel_size, compile_model, parse_kernel_sizes, set_eca_impl
from .models.mobilenetv2 import INVERTED_RESIDUAL_SETTING, block_kernel_sizes
from .models.resnet import RESNET_SPECS, STAGE_WIDTHS

logger = logging.getLogger(__name__)

# The training step's optimiser: SGD with the ImageNet recipe's momentum and weight decay. The learning rate
# is small so that random labels do not drive the loss to inf/NaN during a benchmark.
SGD_MOMENTUM = 0.9
SGD_WEIGHT_DECAY = 1e-4
BENCH_LR = 1e-3
# ResNet's stem divides the input side by 4 (stride-2 conv, stride-2 max-pool); stages 2-4 halve it again.
STEM_REDUCTION = 4
COPY_BENCH_BYTES = BYTES_PER_GIB  # buffer size of the bandwidth measurement: far beyond any L2 cache
MICRO_WARMUP_ITERS = 5
MICRO_TIMED_ITERS = 20
MOBILENET_STEM_STRIDE = 2        # MobileNetV2's first convolution halves the input side
MIN_TIMED_STEPS = 3              # a repeat of measure_throughput(repeat_seconds=...) times at least this many steps
SIZING_STEPS = 3                 # steps timed one by one to size those repeats (the fastest counts)
MAX_SETTLING_STEPS = 20          # warm-up steps measure_throughput adds at most while the allocator still grows
# measure_host_time: a step on this tiny input runs each kernel in microseconds, so it takes as long as the host
# takes to issue it (Python, autograd, kernel launches), which the input's size hardly changes.
HOST_TIME_BATCH = 2
HOST_TIME_IMG_SIZE = 64          # px
HOST_TIME_STEPS = 20             # steps per repeat

# Tensor-sized passes over HBM (N elements each way) that the ECA variants cannot avoid, (forward, backward),
# for an implementation that cannot keep a sample's activation on chip (see measure_eca_layer):
FLOOR_PASSES: dict[str, tuple[int, int]] = {
    # relu(x * s + identity): fwd reads x (mean), x and identity, writes out; bwd reads grad, out, x and
    # writes d identity (pass A), reads it again and writes dx (pass C).
    "tail": (4, 6),
    # x * s (the ECA module alone): fwd reads x twice, writes out; bwd reads grad and x, then grad, writes dx.
    "layer": (3, 4),
    # relu(x + identity), the tail of a block without attention (ResNet-50): fwd reads x and identity,
    # writes out; bwd reads grad and out, writes the gradient shared by x and identity.
    "no-attention tail": (3, 3),
    # x * s + identity, MobileNetV2's residual tail (no ReLU): fwd reads x twice and identity, writes out;
    # bwd reads grad and x (the gate's gradient), then grad again, writes dx (d identity is grad itself).
    "residual tail": (4, 4),
}


# ----------------------------------------------------------------------------------------------------
# Timing helpers
# ----------------------------------------------------------------------------------------------------
def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_ms(fn: Callable[[], object], iters: int, device: torch.device) -> float:
    """Mean milliseconds per call of ``fn`` over ``iters`` back-to-back calls."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / iters
    _synchronize(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    _synchronize(device)
    return (time.perf_counter() - t0) * 1e3 / iters


def _median_ms(fn: Callable[[], object], *, warmup: int, iters: int, repeats: int,
               device: torch.device) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    _synchronize(device)
    runs = [_time_ms(fn, iters, device) for _ in range(repeats)]
    return statistics.median(runs), runs


class GcWatch:
    """Python's garbage collections while the block runs, and the host time they took.

    A collection of the oldest generation walks every live object (torch and its imports hold millions), so
    it stalls the host for milliseconds; a step that is bound by kernel launches loses that time, a step
    that is bound by GPU work does not. Recording the collections of each timed repeat tells the two
    apart when repeats disagree."""

    OLDEST_GENERATION = 2

    def __init__(self) -> None:
        self.collections = 0           # of any generation
        self.full_collections = 0      # of the oldest generation
        self.pause_ms = 0.0
        self._started: float | None = None

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.collections += 1
            self.full_collections += info["generation"] == self.OLDEST_GENERATION
            self.pause_ms += (time.perf_counter() - self._started) * 1e3
            self._started = None

    def __enter__(self) -> "GcWatch":
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self._callback)


# NVML's clock-event reasons (``nvmlClocksEventReason*``, also called throttle reasons): why the GPU runs
# below its top clock. Idle (0x1) is left out: it lowers the clock of a GPU with nothing to run.
CLOCK_SLOWDOWN_REASONS = {
    0x2: "applications clocks",   # the clocks an administrator set (nvidia-smi -ac) cap the GPU's
    0x4: "power cap",             # software power capping: the board draws its power limit
    0x8: "hardware slowdown",     # hardware brake (power supply, over-temperature)
    0x10: "sync boost",           # held to the clock of other GPUs in its sync-boost group
    0x20: "thermal",              # software thermal slowdown: GPU or memory temperature above target
    0x40: "hardware thermal",
    0x80: "power brake",          # external power-brake signal
    0x100: "display clocks",      # held to the clock a display needs
}
# How often GpuWatch reads the GPU while a repeat runs, the first read one interval in. Each read takes the
# interpreter lock from the thread launching the kernels for a moment; a few reads a second describe a repeat
# of half a second or more.
GPU_SAMPLE_INTERVAL_S = 0.25
GPU_READ_TIMEOUT_S = 5.0


class GpuReading(NamedTuple):
    """One NVML read of a GPU."""

    sm_clock_mhz: float
    temperature_c: float
    power_w: float
    busy_percent: float    # of NVML's last sample period (1/6 s to 1 s, by GPU) during which a kernel ran
    slowdown_bits: int     # clock-event reasons, CLOCK_SLOWDOWN_REASONS' bits among them


@functools.lru_cache(maxsize=None)
def _nvml_reader(device: torch.device) -> Callable[[], GpuReading] | None:
    """A function reading the GPU's clock, temperature, power, busy time and clock slowdowns through NVML
    (the ``bench`` extra, ``nvidia-ml-py``), or None where NVML cannot be read: a CPU device (silently), or
    no ``pynvml``, no driver library or an old driver (with a warning, once per device)."""
    if device.type != "cuda":
        return None
    try:
        import pynvml
        pynvml.nvmlInit()
        # the UUID names the same GPU to CUDA and NVML, whatever CUDA_VISIBLE_DEVICES renumbers
        uuid = str(torch.cuda.get_device_properties(device).uuid)
        if not uuid.startswith(("GPU-", "MIG-")):
            uuid = f"GPU-{uuid}"
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid.encode())
        reasons = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            pynvml.nvmlDeviceGetCurrentClocksThrottleReasons
        reasons(handle)
    except Exception as error:  # noqa: BLE001 -- whatever stops NVML, the timing goes on without its reads
        logger.warning("the GPU's clock, power and busy time are not recorded: NVML cannot be read (%s: %s); "
                       "install the bench extra (pip install nvidia-ml-py)", type(error).__name__, error)
        return None

    def read() -> GpuReading:
        return GpuReading(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
                          pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
                          pynvml.nvmlDeviceGetPowerUsage(handle) / 1e3,
                          pynvml.nvmlDeviceGetUtilizationRates(handle).gpu, reasons(handle))
    return read


class GpuWatch:
    """The GPU's SM clock, temperature, power, busy time and clock slowdowns while the block runs: read
    every ``interval_s`` by a background thread, the first read one interval in, and once more as the block
    ends (NVML, through ``read``; nothing is recorded when it is None). Each busy figure covers NVML's last
    sample period, so for a block shorter than that period it includes time before the block.

    A GPU that reaches its power or temperature limit lowers its clock, and a repeat timed meanwhile is
    slower for a reason that is not the network's; a GPU busy for less than all of a repeat waited for the
    host. Recording each repeat's reads tells such repeats apart from the ones the network's own kernels
    made slow. The NVML calls release the interpreter
    lock; only the few Python lines around them take it from the thread launching the kernels."""

    def __init__(self, read: Callable[[], GpuReading] | None, interval_s: float = GPU_SAMPLE_INTERVAL_S) -> None:
        self._read, self._interval_s = read, interval_s
        self._samples: list[GpuReading] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._samples.append(self._read())
            except Exception:  # noqa: BLE001 -- a failed read ends the record, never the timing
                return

    def __enter__(self) -> "GpuWatch":
        if self._read is not None:
            self._thread = threading.Thread(target=self._sample, name="gpu-watch", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=GPU_READ_TIMEOUT_S)   # a hung NVML call must not hang the benchmark
            with contextlib.suppress(Exception):   # the GPU as the block ends, however short it was
                self._samples.append(self._read())

    def summary(self) -> dict | None:
        """Mean and lowest SM clock (MHz), highest temperature (°C), mean power (W), mean busy percentage
        and the slowdown reasons seen in any read; None when nothing was read."""
        samples = list(self._samples)   # a copy: a reader thread that timed out may still append
        if not samples:
            return None
        reads = GpuReading(*zip(*samples))
        seen = functools.reduce(lambda a, b: a | b, reads.slowdown_bits, 0)
        return {"sm_clock_mhz": statistics.fmean(reads.sm_clock_mhz), "sm_clock_min_mhz": min(reads.sm_clock_mhz),
                "temperature_max_c": max(reads.temperature_c), "power_w": statistics.fmean(reads.power_w),
                "busy_percent": statistics.fmean(reads.busy_percent),
                "slowdowns": [name for bit, name in CLOCK_SLOWDOWN_REASONS.items() if seen & bit]}


def _autocast(device: torch.device, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if amp_dtype is None or amp_dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def _device_allocations(device: torch.device) -> int:
    """How many times the caching allocator has asked the driver for memory on ``device`` (0 on a CPU)."""
    if device.type != "cuda":
        return 0
    stats = torch.cuda.memory_stats(device)
    return stats.get("num_device_alloc", stats.get("segment.all.allocated", 0))


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


@contextlib.contextmanager
def _heap_frozen(enabled: bool) -> Iterator[None]:
    """With ``enabled``, the block runs with the heap out of the garbage collector's view, as the training loop
    runs its steps (:func:`ecanet.engine.freeze_heap`); released afterwards."""
    if enabled:
        freeze_heap()
    try:
        yield
    finally:
        if enabled:
            release_heap()


@contextlib.contextmanager
def _cudnn_flags(benchmark: bool, deterministic: bool | None = None) -> Iterator[None]:
    """Set cuDNN's ``benchmark`` (and ``deterministic``, unless None) for the block, then restore them."""
    previous = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    torch.backends.cudnn.benchmark = benchmark
    if deterministic is not None:
        torch.backends.cudnn.deterministic = deterministic
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = previous


def _fresh_compile(model: nn.Module, compile: bool,
                   options: dict | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile(model, options=options)``, through :func:`~ecanet.models.eca_module.compile_model` as
    training compiles, after ``torch._dynamo.reset()`` (so earlier compilations neither count against the
    recompile limit nor leak into this one), or the model itself. ``options`` are Inductor
    settings (``torch._inductor.config`` names, e.g. ``{"combo_kernels": True}``); None keeps the defaults."""
    if not compile:
        return model
    torch._dynamo.reset()
    return compile_model(model, options=options or None)


def dtype_name(dtype: torch.dtype | None) -> str:
    """'bfloat16', 'float32', ... ('none' for None)."""
    return "none" if dtype is None else str(dtype).removeprefix("torch.")


# ----------------------------------------------------------------------------------------------------
# Model throughput
# ----------------------------------------------------------------------------------------------------
@dataclass
class ThroughputResult:
    """Images per second of training or inference steps; medians over ``repeats`` timed runs."""

    images_per_s: float                 # batch_size / step_ms_median
    step_ms_median: float
    peak_memory_gib: float              # torch.cuda.max_memory_allocated over warm-up and timing
    batch_size: int
    img_size: int
    train: bool
    compiled: bool
    amp_dtype: str
    channels_last: bool
    warmup_s: float                     # wall clock of the warm-up steps, torch.compile included
    step_ms_all: list[float] = field(default_factory=list)      # one mean step time per repeat
    images_per_s_all: list[float] = field(default_factory=list)
    timed_steps: int = 0                # steps per repeat
    frozen_heap: bool = False           # timed with the heap out of the garbage collector's view
    gc_pause_ms_all: list[float] = field(default_factory=list)  # host time in garbage collection, per repeat
    gc_full_collections_all: list[int] = field(default_factory=list)  # oldest-generation collections, per repeat
    gpu_all: list[dict | None] = field(default_factory=list)   # GpuWatch.summary(), per repeat
    warmup_steps: int = 0               # warm-up steps run, settling ones included
    device_allocations_all: list[int] = field(default_factory=list)  # the allocator's cudaMalloc calls, per repeat

    @property
    def images_per_s_min(self) -> float:
        return min(self.images_per_s_all, default=self.images_per_s)

    @property
    def images_per_s_max(self) -> float:
        return max(self.images_per_s_all, default=self.images_per_s)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"images_per_s_min": self.images_per_s_min,
                                           "images_per_s_max": self.images_per_s_max}


def _num_classes(model: nn.Module) -> int:
    """Outputs of the model's last nn.Linear (the classifier), else ImageNet's 1000."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else IMAGENET_CLASSES


def _train_step(forward: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, images: torch.Tensor,
                targets: torch.Tensor, amp_dtype: torch.dtype | None) -> Callable[[], None]:
    """forward, cross-entropy, backward, SGD step (momentum 0.9); fp16 adds a GradScaler, as training would."""
    optimizer = torch.optim.SGD(model.parameters(), lr=BENCH_LR, momentum=SGD_MOMENTUM,
                                weight_decay=SGD_WEIGHT_DECAY)
    criterion = nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler(images.device.type) if amp_dtype == torch.float16 else None

    def step() -> None:
        with _autocast(images.device, amp_dtype):
            loss = criterion(forward(images), targets)
        optimizer.zero_grad(set_to_none=True)
        backward_and_step(loss, model, optimizer, scaler, clip_grad_norm=0.0)  # what main.py's steps do
    return step


def _infer_step(forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                amp_dtype: torch.dtype | None) -> Callable[[], None]:
    def step() -> None:
        with torch.inference_mode(), _autocast(images.device, amp_dtype):
            forward(images)
    return step


@contextlib.contextmanager
def _prepared_step(model: nn.Module, *, batch_size: int, img_size: int, train: bool,
                   amp_dtype: torch.dtype | None, channels_last: bool, compile: bool,
                   device: torch.device, compile_options: dict | None = None) -> Iterator[Callable[[], None]]:
    """A training or inference step of ``model`` on synthetic data; restores the model's mode afterwards."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    was_training = model.training
    model.to(device=device, memory_format=memory_format).train(train)
    images = torch.randn(batch_size, IMAGE_CHANNELS, img_size, img_size, device=device)
    images = images.contiguous(memory_format=memory_format)
    forward = _fresh_compile(model, compile, compile_options)
    if train:
        targets = torch.randint(0, _num_classes(model), (batch_size,), device=device)
        step = _train_step(forward, model, images, targets, amp_dtype)
    else:
        step = _infer_step(forward, images, amp_dtype)
    try:
        yield step
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)


def measure_throughput(model: nn.Module, *, batch_size: int, img_size: int = 224, train: bool,
                       amp_dtype: torch.dtype | None = torch.bfloat16, channels_last: bool = True,
                       compile: bool = False, warmup_steps: int = 10, timed_steps: int = 30, repeats: int = 3,
                       device: str | torch.device = "cuda", cudnn_benchmark: bool = True,
                       repeat_seconds: float | None = None, frozen_heap: bool = True,
                       compile_options: dict | None = None) -> ThroughputResult:
    """Images/s of training (forward, cross-entropy, backward, SGD step) or inference steps.

    Each of ``repeats`` repeats times ``timed_steps`` steps back to back; with ``repeat_seconds`` a repeat
    times instead as many steps as fill about that many seconds at the fastest of ``SIZING_STEPS`` steps timed
    after the warm-up (at least ``MIN_TIMED_STEPS``, at most ``timed_steps``), so deep and shallow networks
    take similar time.

    The model is moved to ``device`` (and to channels_last) in place and put in train/eval mode for the
    measurement (its previous mode is restored); the optimiser state lives only inside this call, so one
    model can be measured repeatedly. Inputs are random images and labels made once, on the device.
    ``compile`` wraps the model in ``torch.compile`` (default mode, or the Inductor settings
    ``compile_options``) after ``torch._dynamo.reset()``, so earlier compilations neither count against the
    recompile limit nor leak into this one; the optimiser step stays eager. Peak memory counts from the start
    of the warm-up. After ``warmup_steps`` steps (none when it is 0) the warm-up goes on, up to
    ``MAX_SETTLING_STEPS`` more, while a step still grows the caching allocator's pool; each repeat records
    how often it still did (``device_allocations_all``).

    ``frozen_heap`` times the steps as the training loop runs them: with every object alive after the
    warm-up taken out of the garbage collector's view (:func:`ecanet.engine.freeze_heap`), released
    afterwards. Each repeat's collections and their host time are recorded either way (:class:`GcWatch`),
    and on a GPU that NVML can read, its clock, temperature, power, busy time and clock slowdowns
    (:class:`GpuWatch`).
    """
    device = torch.device(device)
    with _prepared_step(model, batch_size=batch_size, img_size=img_size, train=train, amp_dtype=amp_dtype,
                        channels_last=channels_last, compile=compile, device=device,
                        compile_options=compile_options) as step, \
            _cudnn_flags(cudnn_benchmark):
        _reset_peak_memory(device)
        t0 = time.perf_counter()
        # A step that still grows the caching allocator's pool asks the driver for memory (cudaMalloc), which
        # costs milliseconds and can wait for the GPU: past warmup_steps, warm up until a step asks for none,
        # so that no repeat times the pool's growth (each repeat records whether it still grew).
        warmup_run, grew, allocations = 0, False, _device_allocations(device)
        while warmup_run < warmup_steps or (grew and warmup_run < warmup_steps + MAX_SETTLING_STEPS):
            step()
            warmup_run += 1
            now = _device_allocations(device)
            grew, allocations = now > allocations, now
        if grew:
            logger.warning("%s: the step still asked the driver for memory after %d warm-up steps; the repeats "
                           "record how often it still did", type(model).__name__, warmup_run)
        _synchronize(device)
        warmup_s = time.perf_counter() - t0
        runs, watches, gpu_states, device_allocations = [], [], [], []
        read_gpu = _nvml_reader(device)
        with _heap_frozen(frozen_heap):
            if repeat_seconds is not None:
                # The fastest of a few steps, with the heap as the repeats have it: one step alone can meet a
                # full garbage collection or another host stall. Sized by one step taken before the freeze,
                # compiled eca_resnet152 (83 ms a step) timed MIN_TIMED_STEPS steps a repeat in
                # results/benchmark_h200_released_compiled.json: that step had taken at least 0.29 s.
                step_s = min(_time_ms(step, 1, device) for _ in range(SIZING_STEPS)) / 1e3
                timed_steps = max(MIN_TIMED_STEPS, min(timed_steps, round(repeat_seconds / step_s)))
            for _ in range(repeats):
                allocations = _device_allocations(device)
                with GcWatch() as watch, GpuWatch(read_gpu) as gpu:
                    runs.append(_time_ms(step, timed_steps, device))
                watches.append(watch)
                gpu_states.append(gpu.summary())
                device_allocations.append(_device_allocations(device) - allocations)
        step_ms = statistics.median(runs)
        peak = peak_memory_gib(device)
    logger.info("%s %s%s: %.1f img/s (%.2f ms/step, peak %.2f GiB, %.1f ms in garbage collection)",
                type(model).__name__, "train" if train else "infer", " compiled" if compile else "",
                batch_size * 1e3 / step_ms, step_ms, peak, sum(w.pause_ms for w in watches))
    return ThroughputResult(
        images_per_s=batch_size * 1e3 / step_ms, step_ms_median=step_ms, peak_memory_gib=peak,
        batch_size=batch_size, img_size=img_size, train=train, compiled=compile, amp_dtype=dtype_name(amp_dtype),
        channels_last=channels_last, warmup_s=warmup_s, step_ms_all=runs,
        images_per_s_all=[batch_size * 1e3 / ms for ms in runs], timed_steps=timed_steps, frozen_heap=frozen_heap,
        gc_pause_ms_all=[w.pause_ms for w in watches], gc_full_collections_all=[w.full_collections for w in watches],
        gpu_all=gpu_states, warmup_steps=warmup_run, device_allocations_all=device_allocations)


def measure_host_time(model: nn.Module, *, train: bool, amp_dtype: torch.dtype | None = torch.bfloat16,
                      channels_last: bool = True, warmup_steps: int = 5, steps: int = HOST_TIME_STEPS,
                      repeats: int = 3, device: str | torch.device = "cuda", cudnn_benchmark: bool = True,
                      frozen_heap: bool = True) -> list[float]:
    """Milliseconds per eager step, one figure per repeat, on HOST_TIME_BATCH images of HOST_TIME_IMG_SIZE px:
    the host's time to issue the step (Python, autograd and the kernel launches), since on such an input each
    kernel takes the GPU microseconds; an upper bound, where such small kernels still keep the GPU busy. A
    network whose host time per step nears its GPU time per step at the real batch runs at the host's pace
    there, and its timings vary with the host's. Same step, cuDNN setting and heap handling (``frozen_heap``)
    as :func:`measure_throughput`; the model's mode is restored afterwards."""
    device = torch.device(device)
    with _prepared_step(model, batch_size=HOST_TIME_BATCH, img_size=HOST_TIME_IMG_SIZE, train=train,
                        amp_dtype=amp_dtype, channels_last=channels_last, compile=False, device=device) as step, \
            _cudnn_flags(cudnn_benchmark):
        for _ in range(warmup_steps):
            step()
        _synchronize(device)
        with _heap_frozen(frozen_heap):
            return [_time_ms(step, steps, device) for _ in range(repeats)]


# ----------------------------------------------------------------------------------------------------
# Where a step's GPU time goes
# ----------------------------------------------------------------------------------------------------
# Kernel families, matched in this order against the lower-cased kernel name (first match wins).
KERNEL_FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ecanet Triton (fused ECA)", ("_channel_sum_kernel", "_backward_reduce_kernel", "_channel_affine_kernel",
                                   "_gate_forward_kernel", "_gate_backward_kernel")),
    ("Inductor reduction", ("triton_red_", "triton_per_")),
    ("Inductor pointwise", ("triton_poi_",)),
    ("Inductor template/other", ("triton_",)),
    ("batch norm (eager)", ("batch_norm", "batchnorm", "bn_fw", "bn_bw")),   # before cuDNN's convolutions
    ("convolution / GEMM (cuDNN, cuBLAS, CUTLASS)", ("conv", "xmma", "cutlass", "cudnn", "gemm", "nvjet", "sm90_",
                                                    "sm80_", "dgrad", "wgrad", "fprop", "implicit", "splitkreduce")),
    ("optimizer (foreach)", ("multi_tensor_apply", "foreach")),
    ("memcpy / memset", ("memcpy", "memset")),
)
OTHER_FAMILY = "other (eager elementwise, reductions)"


def kernel_family(name: str) -> str:
    """The family of a CUDA kernel, by its name (``KERNEL_FAMILIES``)."""
    lowered = name.lower()
    for family, patterns in KERNEL_FAMILIES:
        if any(pattern in lowered for pattern in patterns):
            return family
    return OTHER_FAMILY


@dataclass
class KernelStat:
    name: str
    family: str
    calls_per_step: float
    ms_per_step: float


@dataclass
class StepProfile:
    """GPU kernel time of one step, from torch.profiler over ``steps`` steps after warm-up."""

    step_ms: float                       # wall clock per step (CUDA events), without the profiler
    kernel_ms: float                     # sum of kernel durations per step, all streams (CPU: operators' self time)
    kernels_per_step: float              # kernels, copies and memsets (CPU: operators, nested ones included)
    kernels: list[KernelStat]            # by time, largest first

    def families(self) -> dict[str, tuple[float, float]]:
        """family -> (kernel launches per step, ms per step), largest time first."""
        totals: dict[str, list[float]] = {}
        for k in self.kernels:
            entry = totals.setdefault(k.family, [0.0, 0.0])
            entry[0] += k.calls_per_step
            entry[1] += k.ms_per_step
        return dict(sorted(((f, (c, t)) for f, (c, t) in totals.items()), key=lambda item: -item[1][1]))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"families": self.families()}


def profile_step(model: nn.Module, *, batch_size: int, img_size: int = 224, train: bool,
                 amp_dtype: torch.dtype | None = torch.bfloat16, channels_last: bool = True,
                 compile: bool = False, warmup_steps: int = 10, steps: int = 5, timed_steps: int = 30,
                 repeats: int = 3, device: str | torch.device = "cuda",
                 compile_options: dict | None = None) -> StepProfile:
    """Which CUDA kernels one training or inference step runs and how long each takes (torch.profiler).

    Same step as :func:`measure_throughput`. The step is also timed without the profiler (median of
    ``repeats`` runs of ``timed_steps`` steps), so the gap between wall clock and summed kernel time shows
    too; on one stream that gap is time the GPU waits (launches, the CPU). On a CPU the "kernels" are
    PyTorch's operators and their times are self CPU times. ``compile`` and ``compile_options`` as for
    :func:`measure_throughput`.
    """
    from torch.profiler import ProfilerActivity, profile

    device = torch.device(device)
    on_gpu = device.type == "cuda"
    with _prepared_step(model, batch_size=batch_size, img_size=img_size, train=train, amp_dtype=amp_dtype,
                        channels_last=channels_last, compile=compile, device=device,
                        compile_options=compile_options) as step, \
            _cudnn_flags(True):
        step_ms, _ = _median_ms(step, warmup=warmup_steps, iters=timed_steps, repeats=repeats, device=device)
        with profile(activities=[ProfilerActivity.CUDA if on_gpu else ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
            _synchronize(device)
    wanted = torch.autograd.DeviceType.CUDA if on_gpu else torch.autograd.DeviceType.CPU
    totals: dict[str, list[float]] = {}
    for event in prof.events():
        if event.device_type != wanted:
            continue
        entry = totals.setdefault(event.name, [0.0, 0.0])
        entry[0] += 1
        # A kernel event spans its run on the GPU; an operator's own time excludes the operators it calls.
        entry[1] += (event.time_range.elapsed_us() if on_gpu else event.self_cpu_time_total) / 1e3  # us -> ms
    kernels = sorted((KernelStat(name, kernel_family(name), calls / steps, ms / steps)
                      for name, (calls, ms) in totals.items()), key=lambda k: -k.ms_per_step)
    return StepProfile(step_ms=step_ms, kernel_ms=sum(k.ms_per_step for k in kernels),
                       kernels_per_step=sum(k.calls_per_step for k in kernels), kernels=kernels)


# ----------------------------------------------------------------------------------------------------
# The ECA layer against its memory floor
# ----------------------------------------------------------------------------------------------------
def measure_copy_bandwidth(device: str | torch.device = "cuda", nbytes: int = COPY_BENCH_BYTES,
                           iters: int = MICRO_TIMED_ITERS, repeats: int = 3) -> float:
    """Device-to-device copy bandwidth in bytes/s: (bytes read + bytes written) / time of ``b.copy_(a)``."""
    device = torch.device(device)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms, _ = _median_ms(lambda: dst.copy_(src), warmup=MICRO_WARMUP_ITERS, iters=iters, repeats=repeats,
                       device=device)
    return 2 * nbytes / (ms * 1e-3)


@dataclass(frozen=True)
class EcaShape:
    """One ECA layer's input in a network: shape (B, C, H, W), kernel size, and how many layers have it."""

    shape: tuple[int, int, int, int]
    k_size: int
    count: int = 1


def resnet_eca_shapes(depth: int = 50, batch_size: int = 256, img_size: int = 224,
                      k_size: object = "3557") -> list[EcaShape]:
    """The ECA inputs of ECA-ResNet-``depth``, one entry per stage (56x56 ... 7x7 at 224 px)."""
    block, layers = RESNET_SPECS[depth]
    shapes = []
    for stage, (planes, blocks, k) in enumerate(zip(STAGE_WIDTHS, layers, parse_kernel_sizes(k_size, len(layers)))):
        side = -(-img_size // (STEM_REDUCTION << stage))          # ceil: every stride-2 layer pads
        channels = planes * block.expansion
        shapes.append(EcaShape((batch_size, channels, side, side), k or adaptive_kernel_size(channels), blocks))
    return shapes


def mobilenet_v2_eca_shapes(batch_size: int = 256, img_size: int = 224, k_size: object = None) -> list[EcaShape]:
    """The ECA inputs of ECA-MobileNetV2, one entry per stage of Table 2 (112x112 ... 7x7 at 224 px);
    ``k_size`` as :func:`ecanet.models.mobilenetv2.block_kernel_sizes` takes it (None: the release's k13)."""
    block_k = iter(block_kernel_sizes(k_size))
    side = -(-img_size // MOBILENET_STEM_STRIDE)
    shapes = []
    for _, channels, repeats, stride in INVERTED_RESIDUAL_SETTING:
        side = -(-side // stride)
        ks = [next(block_k) for _ in range(repeats)]
        shapes.append(EcaShape((batch_size, channels, side, side), ks[0] or adaptive_kernel_size(channels), repeats))
    return shapes


@dataclass
class EcaLayerResult:
    """Times of one ECA variant against the time its unavoidable traffic takes at copy bandwidth."""

    shape: tuple[int, int, int, int]
    k_size: int
    dtype: str
    channels_last: bool
    variant: str                        # a key of FLOOR_PASSES
    impl: str                           # 'fused', 'plain' or 'none' (the no-attention tail)
    forward_ms: float
    forward_backward_ms: float
    floor_forward_ms: float
    floor_forward_backward_ms: float
    floor_bytes_forward: int
    floor_bytes_backward: int
    copy_bandwidth_gb_s: float

    @property
    def forward_vs_floor(self) -> float:
        return self.forward_ms / self.floor_forward_ms

    @property
    def forward_backward_vs_floor(self) -> float:
        return self.forward_backward_ms / self.floor_forward_backward_ms

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "forward_vs_floor": self.forward_vs_floor,
                "forward_backward_vs_floor": self.forward_backward_vs_floor}


def eca_floor_bytes(shape: Sequence[int], dtype: torch.dtype, variant: str) -> tuple[int, int]:
    """(forward, backward) bytes that ``variant`` must move through HBM: FLOOR_PASSES x N x element size.

    The global mean couples every pixel of a (sample, channel) to every output, so an implementation that
    cannot keep a sample's activation on chip reads x once for the mean and again to scale it; the
    backward likewise needs sum_hw(grad * x) before it can write dx. The (B, C) vectors and the conv weight
    are negligible and not counted.
    """
    forward_passes, backward_passes = FLOOR_PASSES[variant]
    nbytes = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
    return forward_passes * nbytes, backward_passes * nbytes


def _eca_call(variant: str, module: EcaModule | None) -> Callable[..., torch.Tensor]:
    if variant == "layer":
        return lambda x, identity: module(x)
    if variant == "residual tail":
        return functools.partial(scale_add_relu, module, relu=False)
    # ResNet's block tail, with ("tail") or without ("no-attention tail") the ECA module
    return functools.partial(scale_add_relu, module if variant == "tail" else None)


def measure_eca_layer(shape: Sequence[int], *, k_size: int = 3, dtype: torch.dtype = torch.bfloat16,
                      channels_last: bool = True, variant: str = "tail", impl: str = "fused",
                      device: str | torch.device = "cuda", copy_bandwidth: float | None = None,
                      warmup: int = MICRO_WARMUP_ITERS, iters: int = MICRO_TIMED_ITERS,
                      repeats: int = 3) -> EcaLayerResult:
    """Forward and forward+backward milliseconds of one ECA layer (or a block tail) on random data.

    Variants (see FLOOR_PASSES): ``'tail'`` is ``EcaModule.scale_add_relu(x, identity)`` =
    relu(x * s + identity), what every ECA-ResNet block ends with; ``'layer'`` is ``EcaModule(x)`` = x * s;
    ``'residual tail'`` is x * s + identity, ECA-MobileNetV2's residual blocks' end (no ReLU);
    ``'no-attention tail'`` is relu(x + identity), ResNet's own tail, the cost ECA adds to (``impl`` is
    ignored for it). ``impl`` is the layer's implementation, ``'fused'``, ``'plain'`` or ``'auto'`` (see
    :class:`ecanet.models.eca_module.EcaModule`).
    Low-precision dtypes run under autocast, as in mixed-precision training (the plain path's conv1d needs it).
    The backward is ``torch.autograd.grad`` of x, identity and the conv weight, which allocates fresh
    gradients each call instead of accumulating into ``.grad``.

    The floor is :func:`eca_floor_bytes` over ``copy_bandwidth`` (bytes/s; measured with
    :func:`measure_copy_bandwidth` when None).
    """
    device = torch.device(device)
    copy_bandwidth = copy_bandwidth or measure_copy_bandwidth(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    B, C, H, W = shape
    make = lambda: torch.randn(B, C, H, W, device=device, dtype=dtype).contiguous(memory_format=memory_format)  # noqa: E731
    x, identity, grad = make(), make(), make()
    module = EcaModule(C, k_size, impl=impl).to(device) if variant != "no-attention tail" else None
    call = _eca_call(variant, module)
    amp = dtype if dtype != torch.float32 else None
    x_req, identity_req = x.detach().requires_grad_(), identity.detach().requires_grad_()
    inputs = [x_req, identity_req] if variant != "layer" else [x_req]
    params = list(module.parameters()) if module is not None else []

    def forward() -> None:
        with torch.no_grad(), _autocast(device, amp):
            call(x, identity)

    def forward_backward() -> None:
        with _autocast(device, amp):
            out = call(x_req, identity_req)
        torch.autograd.grad(out, inputs + params, grad)

    impl_used = impl if module is not None else "none"
    forward_ms, _ = _median_ms(forward, warmup=warmup, iters=iters, repeats=repeats, device=device)
    fwd_bwd_ms, _ = _median_ms(forward_backward, warmup=warmup, iters=iters, repeats=repeats, device=device)
    floor_fwd, floor_bwd = eca_floor_bytes(shape, dtype, variant)
    return EcaLayerResult(
        shape=tuple(shape), k_size=k_size, dtype=dtype_name(dtype), channels_last=channels_last, variant=variant,
        impl=impl_used, forward_ms=forward_ms, forward_backward_ms=fwd_bwd_ms,
        floor_forward_ms=floor_fwd / copy_bandwidth * 1e3,
        floor_forward_backward_ms=(floor_fwd + floor_bwd) / copy_bandwidth * 1e3,
        floor_bytes_forward=floor_fwd, floor_bytes_backward=floor_bwd, copy_bandwidth_gb_s=copy_bandwidth / 1e9)


# ----------------------------------------------------------------------------------------------------
# Same training run, two implementations: the loss curves must agree to within low-precision noise
# ----------------------------------------------------------------------------------------------------
LOSS_CURVE_LR = 0.02
LOSS_CURVE_DISTINCT_BATCHES = 4   # a small fixed set of random batches, cycled, so the loss must fall


def loss_curves(model: nn.Module, impls: Sequence[str] = ("fused", "plain"), *, steps: int = 30,
                batch_size: int = 32, img_size: int = 224, amp_dtype: torch.dtype | None = torch.bfloat16,
                channels_last: bool = True, device: str | torch.device = "cuda", seed: int = 0,
                compile: bool = False, compile_options: dict | None = None) -> dict[str, list[float]]:
    """The training loss per step of copies of ``model``, one per ECA implementation, on the same data.

    Every run starts from the same weights and sees the same fixed batches (random images and labels,
    cycled) under SGD (lr 0.02, momentum 0.9); cuDNN runs deterministic algorithms, so the curves differ
    only through the ECA implementation (and, with ``compile``, through torch.compile's code, built with the
    Inductor settings ``compile_options``).
    """
    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    generator = torch.Generator(device="cpu").manual_seed(seed)
    num_classes = _num_classes(model)
    batches = [(torch.randn(batch_size, IMAGE_CHANNELS, img_size, img_size, generator=generator),
                torch.randint(0, num_classes, (batch_size,), generator=generator))
               for _ in range(LOSS_CURVE_DISTINCT_BATCHES)]
    batches = [(x.to(device).contiguous(memory_format=memory_format), y.to(device)) for x, y in batches]
    curves = {}
    with _cudnn_flags(benchmark=False, deterministic=True):
        for impl in impls:
            replica = set_eca_impl(copy.deepcopy(model), impl).to(device=device, memory_format=memory_format).train()
            optimizer = torch.optim.SGD(replica.parameters(), lr=LOSS_CURVE_LR, momentum=SGD_MOMENTUM)
            forward = _fresh_compile(replica, compile, compile_options)
            losses = []
            for step in range(steps):
                images, targets = batches[step % len(batches)]
                with _autocast(device, amp_dtype):
                    loss = nn.functional.cross_entropy(forward(images), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            curves[impl] = losses
            del replica, optimizer
    return curves


def max_relative_difference(curve: Sequence[float], reference: Sequence[float]) -> float:
    """max over steps of |curve - reference| / |reference|."""
    return max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(curve, reference))
