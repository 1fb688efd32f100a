#!/usr/bin/env python
"""A markdown table of finished runs, grouped by network (mean +- std over seeds).

    python scripts/summarize_runs.py runs/fmnist/*            # prints the table
    python scripts/summarize_runs.py runs/fmnist/* --json out.json
    python scripts/summarize_runs.py runs/fmnist --csv results/fashion_mnist.csv

Reads each run directory's ``metrics.jsonl`` (epoch lines and the final summary line) and ``config.yaml``.
Columns: final validation top-1 and top-5 (last epoch), the EMA's top-1 when the run kept one, parameters,
the run's time in training and evaluation (the sum over epochs of training time and validation time; a run
resumed after a preemption counts each epoch once, and start-up is excluded), mean training images/s over
the epochs after the first (the first includes warm-up and compilation), and peak GPU memory.

``--csv PATH`` writes the same table as CSV, one row per network, with unrounded figures (mean and sample
standard deviation over the seeds) and each seed's top-1, so that documents can quote a file a script wrote.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ecanet.errors import EXIT_OK, DataError, UserError, print_error, user_message  # noqa: E402
from ecanet.metrics import format_duration, markdown_table, read_metrics  # noqa: E402


def run_dirs(paths: Sequence[Path]) -> list[Path]:
    """Run directories; a folder without metrics.jsonl stands for the runs inside it."""
    out = []
    for path in paths:
        if (path / "metrics.jsonl").is_file():
            out.append(path)
        elif path.is_dir():
            out += sorted(p for p in path.iterdir() if (p / "metrics.jsonl").is_file())
    return out


def _epoch_seconds(epoch: dict[str, Any], val_images: int | None) -> float:
    """Training plus validation time of one epoch record."""
    images = epoch.get("val_images", val_images)
    if images is None:
        raise DataError("epoch records without 'val_images' (runs from older versions of ecanet): pass "
                        "--val-images N, the number of validation images per epoch.")
    return epoch["epoch_time_s"] + images / epoch["val_images_per_s"]


def load_run(path: Path, val_images: int | None = None) -> dict[str, Any]:
    records = read_metrics(path / "metrics.jsonl", event=None)
    epochs = [r for r in records if r.get("event") == "epoch"]
    summaries = [r for r in records if r.get("event") == "summary"]
    if not epochs or not summaries:
        raise DataError(f"{path} holds no finished run (its metrics.jsonl lacks epoch or summary lines); leave it "
                        f"out, or summarize it once the run has ended.")
    if not (path / "config.yaml").is_file():
        raise DataError(f"{path} has metrics.jsonl but no config.yaml, which names the run's network; give the run "
                        f"directory main.py wrote, with both files.")
    config = yaml.safe_load((path / "config.yaml").read_text())
    last, summary = epochs[-1], summaries[-1]
    steady = epochs[1:] or epochs
    return {"arch": config["arch"], "seed": config.get("seed"), "top1": last["val_top1"], "top5": last["val_top5"],
            "ema_top1": last.get("ema_val_top1"), "params": summary["parameters"],
            "wall_s": sum(_epoch_seconds(e, val_images) for e in epochs), "img_s": statistics.mean(e["images_per_s"] for e in steady),
            "peak_gib": max(e.get("peak_memory_gib", 0.0) for e in epochs), "epochs": last["epoch"]}


def _gib(peak_gib: float) -> str:
    """Peak GPU memory for the table; runs on the CPU record none ("-")."""
    return f"{peak_gib:.1f} GiB" if peak_gib > 0 else "-"


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}"


def table(runs: list[dict[str, Any]]) -> str:
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(run["arch"], []).append(run)
    headers = ("network", "runs (seeds)", "epochs", "val top-1 (%)", "val top-5 (%)", "EMA top-1 (%)", "parameters",
               "train + eval time / run", "train img/s", "peak GPU memory")
    rows = []
    for arch, group in groups.items():
        ema = [r["ema_top1"] for r in group if r["ema_top1"] is not None]
        rows.append((arch, f"{len(group)} ({', '.join(str(r['seed']) for r in group)})", group[0]["epochs"],
                     _mean_std([r["top1"] for r in group]), _mean_std([r["top5"] for r in group]),
                     _mean_std(ema) if ema else "-", f"{group[0]['params']:,}",
                     format_duration(statistics.mean(r["wall_s"] for r in group)),
                     f"{statistics.mean(r['img_s'] for r in group):,.0f}",
                     _gib(max(r["peak_gib"] for r in group))))
    return markdown_table(headers, rows)


CSV_FIELDS = ("network", "runs", "seeds", "epochs", "top1_mean", "top1_std", "top5_mean", "top5_std",
              "ema_top1_mean", "top1_per_seed", "parameters", "train_eval_s_per_run", "train_img_per_s",
              "peak_gpu_memory_gib")


def _std(values: list[float]) -> float | str:
    return statistics.stdev(values) if len(values) > 1 else ""


def csv_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per network (in the order the runs were given), figures unrounded except to 4 decimals."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(run["arch"], []).append(run)
    rows = []
    for arch, group in groups.items():
        top1 = [r["top1"] for r in group]
        top5 = [r["top5"] for r in group]
        ema = [r["ema_top1"] for r in group if r["ema_top1"] is not None]
        row = {"network": arch, "runs": len(group), "seeds": " ".join(str(r["seed"]) for r in group),
               "epochs": group[0]["epochs"], "top1_mean": statistics.mean(top1), "top1_std": _std(top1),
               "top5_mean": statistics.mean(top5), "top5_std": _std(top5),
               "ema_top1_mean": statistics.mean(ema) if ema else "",
               "top1_per_seed": " ".join(f"{v:.2f}" for v in top1), "parameters": group[0]["params"],
               "train_eval_s_per_run": statistics.mean(r["wall_s"] for r in group),
               "train_img_per_s": statistics.mean(r["img_s"] for r in group),
               "peak_gpu_memory_gib": max(r["peak_gib"] for r in group)}
        rows.append({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
    return rows


def write_csv(path: Path, runs: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(csv_rows(runs))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories, or folders of them")
    parser.add_argument("--json", type=Path, help="also write the per-run figures as JSON")
    parser.add_argument("--csv", type=Path, help="also write the table as CSV (one row per network)")
    parser.add_argument("--val-images", type=int, default=None,
                        help="validation images per epoch, for runs whose records do not say")
    args = parser.parse_args(argv)
    try:
        runs = [load_run(p, args.val_images) for p in run_dirs(args.runs)]
        if not runs:
            raise DataError(f"no run directories with metrics.jsonl under {', '.join(map(str, args.runs))}; give "
                            f"run directories main.py wrote, or folders of them.")
    except UserError as exc:
        print_error(user_message(exc))
        return exc.exit_code
    print(table(runs))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(runs, indent=2))
    if args.csv:
        write_csv(args.csv, runs)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
