"""Distributed set-up (torchrun or SLURM's srun), rank helpers, the library's collectives (Python objects over
the CPU control group, tensor sums, buffer broadcasts), and preemption that all ranks agree on.

Launch one process per GPU:
  * one node:   ``torchrun --nproc_per_node 8 main.py DATA ...``
  * many nodes: ``torchrun --nnodes 4 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 ...``
  * SLURM:      ``srun python main.py DATA ...`` (one task per GPU): SLURM_PROCID / SLURM_NTASKS /
                SLURM_LOCALID are read when torchrun's variables are absent (scripts/slurm_train.sh).
NCCL carries the gradients on CUDA, gloo on CPU. A second, gloo group carries small control messages
(stop flags), so agreeing on a preemption never needs a GPU synchronisation.
"""
from __future__ import annotations

import datetime
import inspect
import logging
import os
import re
import signal
import subprocess
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .errors import ConfigError
from .models.eca_module import compile_model
from .signals import PREEMPTION_SIGNALS, mark_training_began, raise_if_stopped_before_training

log = logging.getLogger(__name__)

DEFAULT_MASTER_PORT = 29500
PROCESS_GROUP_TIMEOUT = datetime.timedelta(minutes=30)  # long enough for a checkpoint save by rank 0


@dataclass
class DistInfo:
    """Where this process stands: its rank, the world and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    control_group: Any = None  # gloo group for CPU-side flags (None in a single process)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def _slurm_master_addr() -> str:
    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST", "")
    try:
        hosts = subprocess.run(["scontrol", "show", "hostnames", nodelist], check=True, capture_output=True,
                               text=True).stdout.split()
        if hosts:
            return hosts[0]
    except (OSError, subprocess.CalledProcessError):
        pass
    return _first_host(nodelist) or "127.0.0.1"


def _first_host(nodelist: str) -> str:
    """The first host of a SLURM node list without scontrol: 'gpu[03-04,07],cpu1' -> 'gpu03'."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        return ""
    prefix, ranges = match.group(1), match.group(2)
    return prefix + ranges.split(",")[0].split("-")[0] if ranges else prefix


def launcher_world_size() -> int:
    """How many processes torchrun or srun started (1 without a launcher), before any process group exists."""
    return _read_launcher_env()[1]


def _read_launcher_env() -> tuple[int, int, int, int]:
    """(rank, world size, local rank, local world size) from torchrun's or SLURM's variables."""
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    if rank is not None and world is not None:  # torchrun (or any env:// launcher)
        local = _env_int("LOCAL_RANK") or 0
        return rank, world, local, _env_int("LOCAL_WORLD_SIZE") or 1
    ntasks = _env_int("SLURM_NTASKS")
    if ntasks and ntasks > 1 and _env_int("SLURM_PROCID") is not None:  # srun, one task per GPU
        os.environ.setdefault("MASTER_ADDR", _slurm_master_addr())
        os.environ.setdefault("MASTER_PORT", str(DEFAULT_MASTER_PORT))
        tasks_per_node = os.environ.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0]
        local_world = int(tasks_per_node) if tasks_per_node.isdigit() else 1
        return _env_int("SLURM_PROCID"), ntasks, _env_int("SLURM_LOCALID") or 0, local_world
    return 0, 1, 0, 1


def resolve_device(requested: str, local_rank: int = 0, gpu: int | None = None) -> torch.device:
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible. Use --device cpu, or "
                          "check CUDA_VISIBLE_DEVICES and the driver (nvidia-smi).")
    index = local_rank if gpu is None else gpu
    if index >= torch.cuda.device_count():
        raise ConfigError(f"GPU {index} was asked for but only {torch.cuda.device_count()} are visible. "
                          f"Use fewer processes per node or another --gpu.")
    return torch.device("cuda", index)


def init_distributed(device: str = "auto", backend: str = "auto", gpu: int | None = None,
                     world_size_flag: int | None = None) -> DistInfo:
    """Join the process group the launcher set up (or stay single-process) and pick this rank's device."""
    rank, world, local_rank, local_world = _read_launcher_env()
    if world_size_flag not in (None, 1, world) and world == 1:
        raise ConfigError(f"--world-size {world_size_flag} needs one process per GPU: launch with "
                          f"'torchrun --nproc_per_node {world_size_flag} main.py ...' (or srun) instead.")
    dev = resolve_device(device, local_rank, gpu if world == 1 else None)
    info = DistInfo(rank, world, local_rank, local_world, dev)
    if world == 1:
        return info
    if backend == "nccl" and dev.type != "cuda":
        raise ConfigError("--dist-backend nccl runs on CUDA GPUs, and this run is on the CPU. Pass --dist-backend "
                          "gloo, or auto (NCCL on GPUs, gloo on the CPU).")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    info.backend = ("nccl" if dev.type == "cuda" else "gloo") if backend == "auto" else backend
    kwargs: dict[str, Any] = {"backend": info.backend, "init_method": "env://", "rank": rank,
                              "world_size": world, "timeout": PROCESS_GROUP_TIMEOUT}
    dist.init_process_group(**kwargs)
    info.control_group = dist.new_group(backend="gloo") if info.backend != "gloo" else dist.group.WORLD
    return info


def cleanup(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (over the control group: no GPU involved)."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=info.control_group)
    return box[0]


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (over the control group: no GPU involved)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj, group=info.control_group)
    return out


def gather_objects(obj: Any, info: DistInfo, dst: int = 0) -> list[Any] | None:
    """Every rank's ``obj``, in rank order, on rank ``dst``; None on the other ranks (over the control group:
    no GPU involved)."""
    if not info.distributed:
        return [obj]
    out: list[Any] | None = [None] * info.world_size if info.rank == dst else None
    dist.gather_object(obj, out, dst=dst, group=info.control_group)
    return out


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank if ``flag`` is True on any rank (a CPU all-reduce over the control group)."""
    if not info.distributed:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=info.control_group)
    return bool(t.item())


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over ranks (on its own device: NCCL for CUDA tensors)."""
    if info.distributed:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier(group=info.control_group)


class PreemptionHandler:
    """Turns SIGTERM/SIGUSR1 into a flag that the training loop polls after every step.

    ``should_stop()`` is called once per step on every rank; under DDP the ranks agree through one tiny
    all-reduce on the CPU control group, so all of them stop after the same step, save one checkpoint
    and exit with ``EXIT_PREEMPTED``. A second signal while stopping is ignored (the save is under way).
    """

    def __init__(self, info: DistInfo) -> None:
        self.info = info
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> "PreemptionHandler":
        """Take over the stop signals from the start-up handlers, as training starts (a stop received during
        start-up whose exception was lost ends the run here, before its first step)."""
        raise_if_stopped_before_training()
        for sig in PREEMPTION_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        mark_training_began()
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if not self.requested:
            self.signal_name = signal.Signals(signum).name
            self.requested = True

    def should_stop(self) -> bool:
        return any_rank(self.requested, self.info)


def wrap_model(model: torch.nn.Module, info: DistInfo, compile: bool = False,
               compile_mode: str = "default") -> torch.nn.Module:
    """What the training step calls: ``model`` in DistributedDataParallel (several processes) and/or compiled.

    Buffers (BatchNorm's running statistics) are not broadcast before every forward, which would be one
    more collective per step; :func:`sync_buffers` gives every rank rank 0's before each evaluation and
    checkpoint instead.
    """
    if info.distributed:
        # The ECA weight (1, 1, k) gets gradients whose strides differ from the parameter's only on its
        # size-1 dimensions (the same memory layout); DDP warns about it once. Nothing to fix.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        device_ids = [info.device.index] if info.device.type == "cuda" else None
        ddp = torch.nn.parallel.DistributedDataParallel
        # Newer torch names the switch forward_sync_buffers and warns, once per rank, on broadcast_buffers.
        no_forward_sync = ({"forward_sync_buffers": False}
                           if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
                           else {"broadcast_buffers": False})
        model = ddp(model, device_ids=device_ids, gradient_as_bucket_view=True, **no_forward_sync)
    if compile:
        model = compile_model(model, mode=compile_mode)
    return model


def sync_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics); nothing on one process."""
    if info.distributed:
        for buf in model.buffers():
            dist.broadcast(buf, src=0)
