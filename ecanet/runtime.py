"""A process's set-up for a run: logging, random seeds, numeric precision, and warnings about CPU habits."""
from __future__ import annotations

import collections
import logging
import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .distributed import DistInfo
from .engine import Precision

log = logging.getLogger("ecanet")
CONFIG_LOGGER = "ecanet.config"   # the logger of ecanet/config.py

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Measured on a 2-core CPU machine with oneDNN held to AVX2 (no native bf16), 2026-12-02:
#   ONEDNN_MAX_CPU_ISA=AVX2 python main.py --synthetic --synthetic-size 1024 --num-classes 10 -a eca_resnet18 \
#       --img-size 64 -b 64 --epochs 1 --device cpu --amp off|bf16
# one epoch took 16 s in fp32 and 6m09s with --amp bf16.
CPU_BF16_SLOWDOWN_NOTE = "an epoch of 16 s in fp32 took 6m09s with it on a 2-core CPU"
# Records kept from a run's start until its train.log opens (the weights and recipe it starts from, a resume).
EARLY_LOG_RECORDS = 1000


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (tqdm and test harnesses swap it)."""

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _EarlyRecords(logging.Handler):
    """Keeps the last :data:`EARLY_LOG_RECORDS` records logged before the run directory exists, for
    :func:`add_run_log` to put at the head of ``train.log``: what a run starts from (weights, recipe, the
    checkpoint it resumes) is decided before the directory is claimed, and belongs in the run's log. Once
    taken it keeps nothing more, even where a context that saved the root's handlers (tqdm's
    ``logging_redirect_tqdm``) puts it back."""

    def __init__(self) -> None:
        super().__init__()
        self.records: collections.deque[logging.LogRecord] = collections.deque(maxlen=EARLY_LOG_RECORDS)
        self.taken = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.taken:
            self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        records, self.taken = list(self.records), True
        self.records.clear()
        return records


def setup_logging(info: DistInfo, debug: bool = False) -> None:
    """Rank 0 logs INFO to stderr, and keeps what it logs until :func:`add_run_log` opens ``train.log``; other
    ranks only warnings and errors, except the configuration's warnings: every rank resolves the same options, so
    rank 0 says them once rather than once per GPU."""
    root = logging.getLogger()
    if not getattr(root, "_ecanet_configured", False):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname).1s %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root._ecanet_configured = True  # type: ignore[attr-defined]
    root.setLevel((logging.DEBUG if debug else logging.INFO) if info.is_main else logging.WARNING)
    logging.getLogger(CONFIG_LOGGER).setLevel(logging.NOTSET if info.is_main else logging.ERROR)
    _remove_early_records(root)   # an earlier run's in this process
    if info.is_main:
        root.addHandler(_EarlyRecords())


def _remove_early_records(root: logging.Logger) -> list[logging.LogRecord]:
    """Remove the :class:`_EarlyRecords` handlers from ``root``; returns their records."""
    early = [handler for handler in root.handlers if isinstance(handler, _EarlyRecords)]
    for handler in early:
        root.removeHandler(handler)
    return [record for handler in early for record in handler.take()]


def add_run_log(run_dir: Path, info: DistInfo) -> logging.Handler | None:
    """Also log to ``run_dir/train.log`` (rank 0), starting with what was logged since :func:`setup_logging`;
    returns the handler to remove at the end."""
    if not info.is_main:
        return None
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for record in _remove_early_records(root):
        handler.handle(record)
    root.addHandler(handler)
    return handler


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch; ``deterministic`` also asks torch and cuDNN for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels


def fresh_seed() -> int:
    """A seed for a run that names none (recorded in its config.yaml)."""
    return random.SystemRandom().randrange(2**31)


def precision_for(amp: str, channels_last: bool) -> Precision:
    """``--amp off|bf16|fp16`` as the step's :class:`~ecanet.engine.Precision` (fp16 gets a gradient scaler)."""
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    return Precision(AMP_DTYPES[amp], scaler, channels_last)


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively here (AVX512-BF16 or AMX); elsewhere bf16 is emulated."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def warn_about_cpu_habits(cfg: Any, device: torch.device) -> None:
    """One warning for options that make a CPU run much slower than the user likely expects."""
    if device.type != "cpu":
        return
    if cfg.amp == "bf16" and not cpu_has_native_bf16():
        log.warning("--amp bf16 on a CPU without native bf16 instructions is emulated and slow (%s); "
                    "use --amp off on this machine", CPU_BF16_SLOWDOWN_NOTE)
    if cfg.compile:
        log.warning("--compile on a CPU spends minutes compiling before the first step; it pays off only on "
                    "long runs. Drop --compile for short CPU runs")
