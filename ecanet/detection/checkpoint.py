"""Detection checkpoints: ``last.pth`` (everything a run needs to continue bit-identically) and ``model.pth``
(the trained detector's weights and how to rebuild it), on :mod:`ecanet.checkpoint`'s atomic save and
weights-only read.

Both are dicts with ``format`` :data:`DETECTION_FORMAT`; the weights are under ``model`` (as in torchvision's
references), keys without DDP's ``module.`` prefix. The network is rebuilt from ``detector``, ``arch``,
``num_classes`` and ``eca_kernel_sizes`` (every ECA layer of the backbone, by module name), the run's options
from ``config`` (``config.yaml``'s keys). ``last.pth`` adds optimizer, schedule, gradient scaler, position
(epoch, step in the epoch, global step), the epoch's loss sums so far, every rank's RNG states, the sampler
seed, the number of processes and the training set's fingerprint; at an epoch's end, that epoch's
``metrics.jsonl`` record before its evaluation (``epoch_record``), which a run resumed after the evaluation
failed evaluates and records.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from .. import models
from ..checkpoint import (CheckpointSaveError, capture_rng_state, check_state_dict, library_versions,
                          read_checkpoint, save_checkpoint, strip_wrapper_prefixes)
from ..constants import DETECTION_FORMAT, DETECTOR_WEIGHTS, LAST_CHECKPOINT
from ..distributed import DistInfo, all_gather_objects, any_rank
from ..engine import EpochPosition, NonFiniteLossError, first_non_finite
from ..errors import CheckpointError
from ..rundir import check_run_dir_is_free

log = logging.getLogger(__name__)

DETECTION_FORMAT_VERSION = 1
FINAL_WEIGHTS = DETECTOR_WEIGHTS  # the finished run's detector, no training state


@dataclass(frozen=True)
class DetectorRecord:
    """What a run's checkpoints record beside the weights and training state."""

    detector: str
    arch: str
    num_classes: int
    categories: dict[int, str]     # category id -> name, of the training and validation annotations
    seed: int
    world_size: int
    config: dict[str, Any]         # the resolved options, as config.yaml holds them
    train_set: str                 # training_set_fingerprint()


def training_set_fingerprint(dataset: Any) -> str:
    """Which images a run trains on, in a line: their number and a hash of their file names in sampler order.
    Two runs whose fingerprints differ see other images at the same step."""
    base = getattr(dataset, "dataset", dataset)
    names = [base.coco.imgs[base.ids[i]]["file_name"] for i in range(len(dataset))]
    digest = hashlib.sha256(json.dumps(names).encode()).hexdigest()[:16]
    return f"{len(names)} images, sha256 {digest}"


def _network_fields(model: nn.Module, record: DetectorRecord) -> dict[str, Any]:
    return {"format": DETECTION_FORMAT, "format_version": DETECTION_FORMAT_VERSION, "detector": record.detector,
            "arch": record.arch, "num_classes": record.num_classes,
            "categories": {int(k): v for k, v in record.categories.items()},
            "eca_kernel_sizes": models.eca_kernel_sizes(model.backbone.body),
            "model": strip_wrapper_prefixes(model.state_dict()), "config": record.config,
            "versions": library_versions()}


def training_checkpoint(state: Any, record: DetectorRecord, reason: str, rng_states: list[Any],
                        elapsed_s: float = 0.0, epoch_record: Mapping[str, Any] | None = None,
                        epoch_losses: Any = None) -> dict[str, Any]:
    """The contents of ``last.pth``; ``reason`` says why it was written ('epoch', 'step', 'preempted'),
    ``elapsed_s`` the seconds of training and evaluation so far (every segment of a resumed run).
    ``epoch_record``: at an epoch's end, the epoch's ``metrics.jsonl`` record before its evaluation, which a run
    resumed after that evaluation failed or was killed evaluates and records. ``epoch_losses``: the epoch's loss
    sums over every process (:meth:`~ecanet.detection.engine.LossTotals.across_ranks`); None: this process's."""
    position = state.position
    epoch_losses = state.losses if epoch_losses is None else epoch_losses
    return {
        **_network_fields(state.model, record), "reason": reason,
        "optimizer": state.optimizer.state_dict(), "lr_scheduler": state.scheduler.state_dict(),
        "scaler": state.precision.scaler.state_dict() if state.precision.scaler is not None else None,
        "epoch": position.epoch, "step_in_epoch": position.step_in_epoch, "global_step": position.global_step,
        "epoch_losses": epoch_losses.state_dict() if position.step_in_epoch else None,
        "rng": rng_states, "sampler_seed": record.seed, "world_size": record.world_size,
        "train_set": record.train_set, "elapsed_s": float(elapsed_s),
        "epoch_record": dict(epoch_record) if epoch_record is not None else None,
    }


def _refuse_non_finite(state: Any, info: DistInfo) -> None:
    bad = first_non_finite(state.model)
    if any_rank(bad is not None, info):  # never save what cannot be trained on from
        raise NonFiniteLossError(state.position.global_step, state.position.epoch,
                                 state.optimizer.param_groups[0]["lr"],
                                 what=f"the model's {bad}" if bad else "another rank's model")


def _save_on_rank0(contents: Any, path: Path, info: DistInfo) -> None:
    """Rank 0 writes ``contents()`` to ``path`` atomically; every rank raises CheckpointSaveError if it failed."""
    error = None
    if info.is_main:
        try:
            save_checkpoint(contents(), path)
        except CheckpointSaveError as exc:
            error = str(exc)
    if any_rank(error is not None, info):
        raise CheckpointSaveError(error or f"rank 0 could not write {path}",
                                  resumable=(path.parent / LAST_CHECKPOINT).is_file())


def save_training_checkpoint(state: Any, record: DetectorRecord, run_dir: Path, info: DistInfo, reason: str,
                             elapsed_s: float = 0.0, epoch_record: Mapping[str, Any] | None = None) -> Path:
    """Write ``run_dir/last.pth`` (rank 0) after checking that the weights are finite; returns its path.

    Raises:
        NonFiniteLossError: a weight or buffer is NaN/inf (nothing written).
        CheckpointSaveError: on every rank when rank 0 could not write; the previous file is intact.
    """
    _refuse_non_finite(state, info)
    rng_states = all_gather_objects(capture_rng_state(), info)
    # every rank agrees on the position; at an epoch's end no sums are saved
    epoch_losses = state.losses.across_ranks(info) if state.position.step_in_epoch else state.losses
    path = run_dir / LAST_CHECKPOINT
    _save_on_rank0(lambda: training_checkpoint(state, record, reason, rng_states, elapsed_s, epoch_record,
                                               epoch_losses), path, info)
    log.info("saved %s (%s; global step %d)", path, reason, state.position.global_step)
    return path


def save_final_weights(state: Any, record: DetectorRecord, run_dir: Path, info: DistInfo,
                       metrics: Mapping[str, Any] | None) -> Path:
    """Write ``run_dir/model.pth``: the detector and its last evaluation, no training state."""
    _refuse_non_finite(state, info)
    path = run_dir / FINAL_WEIGHTS
    _save_on_rank0(lambda: {**_network_fields(state.model, record), "reason": "final",
                            "epoch": state.position.epoch, "global_step": state.position.global_step,
                            "metrics": dict(metrics or {})}, path, info)
    log.info("saved %s (the trained detector)", path)
    return path


# ----------------------------------------------------------------------------------------------- reading

def read_detection_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A detection checkpoint (weights-only load, errors a user can act on); a CheckpointError for any other file."""
    obj = read_checkpoint(path)
    if not isinstance(obj, Mapping) or obj.get("format") != DETECTION_FORMAT:
        raise CheckpointError(f"{path} is not a detection checkpoint of det_main.py (no format "
                              f"'{DETECTION_FORMAT}'). A classification checkpoint initialises the backbone: pass it "
                              f"as --weights; --resume and -e take a detection run's last.pth or model.pth.")
    version = obj.get("format_version")
    if not isinstance(version, int) or version > DETECTION_FORMAT_VERSION:
        raise CheckpointError(f"{path} is a detection checkpoint in format version {version!r}, which this ecanet "
                              f"does not read (up to {DETECTION_FORMAT_VERSION}). Upgrade ecanet.")
    return dict(obj)


def is_training_checkpoint(obj: Mapping[str, Any]) -> bool:
    return "optimizer" in obj


def find_checkpoint(resume: str | None, run_dir: Path | None, training: bool = True) -> Path | None:
    """The checkpoint ``--resume`` names: a path, ``run_dir/last.pth`` for 'auto' (None when it does not exist:
    a new run), or None. When ``training``, refuses (CheckpointError) to start a new run over a run directory's
    checkpoints, or to continue another directory's run in it (:func:`ecanet.rundir.check_run_dir_is_free`)."""
    path = None
    if resume == "auto":
        last = run_dir / LAST_CHECKPOINT if run_dir is not None else None
        if last is not None and last.is_file():
            return last
        log.info("--resume auto: no %s in %s yet, starting a new run", LAST_CHECKPOINT, run_dir)
    elif resume:
        path = Path(resume)
    if training:
        check_run_dir_is_free(run_dir, resume, path)
    return path


def checkpoint_to_use(resume: str | None, run_dir: Path | None, evaluate: bool) -> tuple[Path | None, dict | None]:
    """The checkpoint ``--resume`` names, as (path, its contents), or (None, None) for a new run; ``run_dir`` is
    the run's directory (--output, or the folder of --resume DIR/last.pth). ``-e --resume auto`` takes the run's
    model.pth, or its last.pth while the run is unfinished. Training refuses a checkpoint without a training
    state."""
    if evaluate and resume == "auto":
        last = run_dir / LAST_CHECKPOINT
        # model.pth unless the run has trained on since it was written (extended with a larger --epochs)
        final = None if last.is_file() and not final_weights_current(run_dir, last) else run_dir / FINAL_WEIGHTS
        found = [path for path in (final, last) if path is not None and path.is_file()]
        if not found:
            raise CheckpointError(f"-e --resume auto: {run_dir} holds neither {FINAL_WEIGHTS} nor "
                                  f"{LAST_CHECKPOINT}. Pass the checkpoint's path to --resume.")
        path = found[0]
    else:
        path = find_checkpoint(resume, run_dir, training=not evaluate)
    if path is None:
        return None, None
    checkpoint = read_detection_checkpoint(path)
    if not evaluate and not is_training_checkpoint(checkpoint):
        raise CheckpointError(f"{path} holds a trained detector but no training state, so training cannot continue "
                              f"from it. Evaluate it with -e --resume {path}, or resume the run's "
                              f"{LAST_CHECKPOINT}.")
    return path, checkpoint


def recorded_config(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The options a detection checkpoint records (``config.yaml``'s keys), with the number of classes its
    detector has where they left ``num-classes`` open (checkpoints that recorded it as null)."""
    config = dict(obj.get("config") or {})
    if config.get("num-classes") is None and obj.get("num_classes") is not None:
        config["num-classes"] = int(obj["num_classes"])
    return config


def load_detector_weights(model: nn.Module, obj: Mapping[str, Any], source: str) -> None:
    """Load a detection checkpoint's weights into ``model`` (built from the same options), after giving its
    backbone the checkpoint's ECA kernel sizes; a CheckpointError names the keys that do not fit."""
    kernel_sizes = dict(obj.get("eca_kernel_sizes") or {})
    if kernel_sizes:
        body = model.backbone.body
        frozen = {name for name, p in body.named_parameters() if not p.requires_grad}
        try:
            models.set_eca_kernel_sizes(body, kernel_sizes)  # new layers where sizes differ: trainable by default
        except KeyError as exc:
            raise CheckpointError(f"{source} has ECA layers this backbone lacks ({exc}). Evaluate or resume it with "
                                  f"its own --arch ({obj.get('arch')}).") from None
        for name, parameter in body.named_parameters():
            if name in frozen:  # the frozen stages stay frozen: the optimizer holds the same parameters as before
                parameter.requires_grad_(False)
    state_dict = obj["model"]
    check_state_dict(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True)


def restore_training_state(state: Any, obj: Mapping[str, Any], info: DistInfo) -> list[Any] | None:
    """Load optimizer, schedule, scaler, position and, on rank 0, the epoch's loss sums into ``state`` (the
    weights are loaded by :func:`load_detector_weights`); returns every rank's RNG states to restore last, or None
    when the checkpoint was written by another number of processes. The sums are every process's, so the other
    ranks start the epoch's from zero."""
    state.optimizer.load_state_dict(obj["optimizer"])
    state.scheduler.load_state_dict(obj["lr_scheduler"])
    if state.precision.scaler is not None and obj.get("scaler"):
        state.precision.scaler.load_state_dict(obj["scaler"])
    state.position = EpochPosition(int(obj["epoch"]), int(obj["step_in_epoch"]), int(obj["global_step"]))
    if obj.get("epoch_losses") is not None and info.is_main:   # every process's sums: counted once, on rank 0
        state.losses.load_state_dict(obj["epoch_losses"])
    if int(obj.get("world_size", 1)) != info.world_size:
        return None
    return obj.get("rng") or None


def _global_step(path: Path) -> int | None:
    """A detection checkpoint's global step, read without loading its tensors (memory-mapped); None where the
    file cannot be read."""
    try:
        obj = read_checkpoint(path, mmap=True)
    except CheckpointError:
        return None
    return int(obj["global_step"]) if isinstance(obj, Mapping) and "global_step" in obj else None


def final_weights_current(run_dir: Path, last: Mapping[str, Any] | Path) -> bool:
    """Whether ``run_dir/model.pth`` is the trained detector of the run's ``last`` training checkpoint (read, or
    its path): written at the same global step. A run extended with a larger --epochs trains on past it, and
    a final evaluation that failed or was killed leaves the older file behind."""
    final = run_dir / FINAL_WEIGHTS
    if not final.is_file():
        return False
    step = last.get("global_step") if isinstance(last, Mapping) else _global_step(last)
    return step is not None and _global_step(final) == int(step)


def is_complete(obj: Mapping[str, Any], epochs: int) -> bool:
    """Whether a training checkpoint has finished ``epochs`` epochs."""
    return int(obj.get("epoch", 0)) >= epochs and int(obj.get("step_in_epoch", 0)) == 0
