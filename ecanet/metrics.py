"""Metrics: top-k counts that stay on the device, and the run's records (JSON lines + TensorBoard): among them
the epoch records of classification (:func:`epoch_record`) and detection (:func:`detection_epoch_record`) runs.

Every record goes to ``metrics.jsonl`` (one JSON object per line, with an ``event`` field: ``"epoch"``,
``"eval"``, ``"summary"``, ...) and its numbers to TensorBoard under ``<group>/<name>``. Only rank 0
writes; other ranks get a logger that does nothing.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
import yaml

from .constants import BYTES_PER_GIB, METRICS_FILE, RUN_CONFIG
from .errors import DataError

log = logging.getLogger(__name__)


@torch.no_grad()
def topk_correct(logits: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1, 5)) -> torch.Tensor:
    """Number of samples whose target is among the top-k logits, for each k: a (len(topk),) tensor.

    Counts, not percentages, so they can be summed over batches and ranks exactly; no host sync.
    """
    maxk = min(max(topk), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices               # (B, maxk)
    hit = pred.eq(target[:, None])                         # (B, maxk)
    return torch.stack([hit[:, : min(k, maxk)].sum() for k in topk])  # (len(topk),)


class RunningTotals:
    """Sums of loss, correct counts and images, kept on the device; read (one host sync) when needed."""

    def __init__(self, device: torch.device) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros(2, dtype=torch.int64, device=device)  # top-1, top-5
        self.count = 0                                                     # host-side: no sync needed

    def update(self, loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> None:
        n = target.shape[0]
        self.loss_sum += loss.detach().double() * n
        self.correct += topk_correct(logits.detach(), target)
        self.count += n

    def state_dict(self) -> dict[str, Any]:
        return {"loss_sum": self.loss_sum.cpu(), "correct": self.correct.cpu(), "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.loss_sum.copy_(state["loss_sum"])
        self.correct.copy_(state["correct"])
        self.count = int(state["count"])

    def summary(self) -> dict[str, float]:
        if self.count == 0:
            return {"loss": math.nan, "top1": math.nan, "top5": math.nan}
        correct = self.correct.tolist()
        return {"loss": self.loss_sum.item() / self.count, "top1": 100.0 * correct[0] / self.count,
                "top5": 100.0 * correct[1] / self.count}


TENSORBOARD_DIR = "tensorboard"   # the run directory's folder of TensorBoard events


class MetricsLogger:
    """Rank 0's records: ``metrics.jsonl`` and TensorBoard events in the run directory."""

    def __init__(self, run_dir: Path | None, enabled: bool = True, tensorboard: bool = True) -> None:
        self.enabled = enabled and run_dir is not None
        self.path = run_dir / METRICS_FILE if self.enabled else None
        self.writer = None
        if self.enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR))
            except ImportError:  # tensorboard is a requirement, but keep training without it
                log.warning("tensorboard is not installed; curves go to metrics.jsonl only")

    def record(self, event: str, values: Mapping[str, Any], step: int | None = None) -> None:
        """Append one JSON line and add its numbers to TensorBoard (group = ``event``)."""
        if not self.enabled:
            return
        line = strict_json_record({"event": event, "time": round(time.time(), 3), **values})
        with open(self.path, "a") as f:
            f.write(json.dumps(line, default=_jsonable, allow_nan=False) + "\n")
        if self.writer is not None and step is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self.writer.add_scalar(f"{event}/{key}", value, step)

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


NULL_REASON_SUFFIX = "_null_because"


def strict_json_record(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with every NaN or infinite number replaced by null, and a ``<key>_null_because`` field
    saying which it was: JSON has no NaN, and strict parsers reject a file that writes one."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            out[key] = None
            out[key + NULL_REASON_SUFFIX] = "not a number" if math.isnan(value) else (
                "infinite" if value > 0 else "negative infinite")
        else:
            out[key] = value
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def has_epoch_record(run_dir: Path, epoch: int) -> bool:
    """Whether the run directory's ``metrics.jsonl`` holds the record of ``epoch``."""
    path = Path(run_dir) / METRICS_FILE
    return path.is_file() and any(row.get("epoch") == epoch for row in read_metrics(path))


def _yaml_problem(exc: Exception) -> str:
    """A YAML error in a few words and its line, not PyYAML's multi-line excerpt of the file."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}" if mark is not None else problem


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.yaml as a mapping with an ``arch``; a :class:`DataError` naming the file and the fix when
    it is missing, unreadable, not YAML, not a mapping or without ``arch``: scripts/summarize_runs.py and plot_runs.py read runs' networks here."""
    path = run_dir / RUN_CONFIG
    fix = ("main.py writes it when the run starts, with the run's options; restore it from a copy, or leave the "
           "run out")
    if not path.is_file():
        raise DataError(f"{run_dir} has {METRICS_FILE} but no {RUN_CONFIG}, which names the run's network; give "
                        f"the run directory main.py wrote, with both files.")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror or exc}); make it readable, or leave the run "
                        f"out.") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a text file, so not the config.yaml of a run ({fix}).") from None
    except yaml.YAMLError as exc:
        raise DataError(f"{path} is not valid YAML ({_yaml_problem(exc)}); {fix}.") from None
    if not isinstance(config, dict) or not config.get("arch"):
        raise DataError(f"{path} names no network (no 'arch' key), so it is not the config.yaml of a run; {fix}.")
    return config


def read_metrics(path: str | Path, event: str | None = "epoch") -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (only those of ``event``, unless None). A line that is not a JSON
    record (a run killed while writing it) is skipped with a warning."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            log.warning("%s:%d is not JSON (or not a record); skipped", path, number)
            continue
        rows.append(record)
    return [r for r in rows if event is None or r.get("event") == event]


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table: one header line, a ``|---|`` rule, one line per row (cells as ``str``)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rem = divmod(seconds, 3600)
    minutes, secs = divmod(rem, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def peak_memory_gib(device: torch.device) -> float:
    """The most memory PyTorch's allocator held on ``device`` since its peak was last reset, in GiB (0 off CUDA)."""
    return torch.cuda.max_memory_allocated(device) / BYTES_PER_GIB if device.type == "cuda" else 0.0


def _epoch_position(position: Any, state: Any) -> dict[str, Any]:
    return {"epoch": position.epoch, "step": position.global_step, "lr": state.optimizer.param_groups[0]["lr"]}


def _training_speed(train: Any, info: Any) -> dict[str, float]:
    return {"epoch_time_s": train.seconds, "images_per_s": train.images_per_s,
            "images_per_s_per_gpu": train.images_per_s / info.world_size}


def epoch_record(position: Any, train: Any, val: Any, ema_val: Any, state: Any, info: Any) -> dict[str, Any]:
    """The ``metrics.jsonl`` record of a finished epoch, from the step loop's and evaluation's results."""
    record = {
        **_epoch_position(position, state),
        "train_loss": train.loss, "train_top1": train.top1, "val_loss": val.loss, "val_top1": val.top1,
        "val_top5": val.top5, "best_top1": state.best_top1, **_training_speed(train, info),
        "val_images": val.images, "val_images_per_s": val.images_per_s,
        "skipped_images": state.skipped_in_epoch + val.skipped_images, "peak_memory_gib": peak_memory_gib(info.device),
    }
    if ema_val is not None:
        record.update(ema_val_top1=ema_val.top1, ema_val_top5=ema_val.top5, ema_val_loss=ema_val.loss)
    return record


def detection_epoch_record(position: Any, train: Any, state: Any, info: Any) -> dict[str, Any]:
    """The ``metrics.jsonl`` record of a finished detection epoch, from the step loop's result (its mean
    losses as ``train_<name>``); det_main.py adds the evaluation's numbers to it when it evaluates the epoch."""
    return {**_epoch_position(position, state), **{f"train_{name}": value for name, value in train.losses.items()},
            **_training_speed(train, info), "peak_memory_gib": peak_memory_gib(info.device)}


def epoch_line(record: Mapping[str, Any], epochs: int) -> str:
    """One log line for an :func:`epoch_record`."""
    ema = f" | EMA top-1 {record['ema_val_top1']:.3f}" if "ema_val_top1" in record else ""
    skipped = f" | {record['skipped_images']} unreadable images skipped" if record["skipped_images"] else ""
    return (f"epoch {record['epoch']}/{epochs}: train loss {record['train_loss']:.4f} top-1 "
            f"{record['train_top1']:.2f} | val loss {record['val_loss']:.4f} top-1 {record['val_top1']:.3f} top-5 "
            f"{record['val_top5']:.3f}{ema} | lr {record['lr']:.4g} | {record['images_per_s']:,.0f} img/s "
            f"({record['images_per_s_per_gpu']:,.0f} per GPU) | {format_duration(record['epoch_time_s'])}{skipped}")


def results_table(summary: Mapping[str, Any]) -> str:
    """A small markdown table of a finished run's ``summary`` record."""
    header = "| arch | parameters | epochs | val top-1 | val top-5 | best top-1 | val loss | time |"
    def number(key: str, digits: int) -> str:
        value = summary.get(key)
        return f"{value:.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"

    row = (f"| {summary['arch']} | {summary['parameters']:,} | {summary['epochs']} | {number('final_top1', 2)} | "
           f"{number('final_top5', 2)} | {number('best_top1', 2)} | {number('final_loss', 4)} | "
           f"{format_duration(summary['wall_time_s'])} |")
    return "\n".join([header, "|" + "---|" * 8, row])
