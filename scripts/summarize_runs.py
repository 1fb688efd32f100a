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

It summarises classification runs (main.py, light_main.py); a detection run (det_main.py) records box and mask
AP instead of top-1 and is refused, as is any run it cannot read (an unfinished run, a damaged config.yaml):
a table that silently left out a seed would misreport the mean. ``plot_runs.py --metric box_AP`` draws a
detection run's AP per epoch.

Exit codes: 0 done, 2 bad input (a run that cannot be summarised, an output path that cannot be written;
checked before anything is written), 1 an unexpected error (traceback).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ecanet.cli import report_user_errors  # noqa: E402
from ecanet.config import ArgumentParser  # noqa: E402
from ecanet.errors import EXIT_OK, ConfigError, DataError  # noqa: E402
from ecanet.constants import METRICS_FILE, RUN_CONFIG as CONFIG_FILE  # noqa: E402
from ecanet.metrics import format_duration, markdown_table, read_metrics, read_run_config  # noqa: E402
from ecanet.outputs import check_output_file  # noqa: E402

RUN_FILES = (METRICS_FILE, CONFIG_FILE)
# What the table reads of a classification run's last epoch line and summary line (main.py writes them all).
EPOCH_KEYS = ("epoch", "val_top1", "val_top5", "epoch_time_s", "images_per_s", "val_images_per_s")
SUMMARY_KEYS = ("parameters",)


def run_dirs(paths: Sequence[Path]) -> list[Path]:
    """Run directories; a folder without metrics.jsonl stands for the runs inside it. A path that is no
    folder, or a folder with no run in or under it, is a :class:`DataError` (a mistyped run is not dropped)."""
    out = []
    for path in paths:
        if not path.is_dir():
            what = "is a file, not a run directory" if path.exists() else "does not exist"
            raise DataError(f"{path} {what}. Give run directories main.py wrote (each with {METRICS_FILE} and "
                            f"{CONFIG_FILE}), or folders of them.")
        if (path / METRICS_FILE).is_file():
            out.append(path)
            continue
        try:
            children = sorted(p for p in path.iterdir() if (p / METRICS_FILE).is_file())
        except OSError as exc:
            raise DataError(f"cannot list {path} ({exc.strerror or exc}); make it readable, or leave it "
                            f"out.") from None
        if not children:
            raise DataError(f"no run directories with {METRICS_FILE} under {path} (neither it nor its sub-folders "
                            f"hold one); give run directories main.py wrote, or folders of them.")
        out += children
    return out


def _epoch_seconds(epoch: dict[str, Any], val_images: int | None) -> float:
    """Training plus validation time of one epoch record."""
    images = epoch.get("val_images", val_images)
    if images is None:
        raise DataError("epoch records without 'val_images' (runs from older versions of ecanet): pass "
                        "--val-images N, the number of validation images per epoch.")
    return epoch["epoch_time_s"] + images / epoch["val_images_per_s"]


def load_run(path: Path, val_images: int | None = None) -> dict[str, Any]:
    try:
        records = read_metrics(path / METRICS_FILE, event=None)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path / METRICS_FILE} ({getattr(exc, 'strerror', None) or exc}); make it "
                        f"readable, or leave the run out.") from None
    epochs = [r for r in records if r.get("event") == "epoch"]
    summaries = [r for r in records if r.get("event") == "summary"]
    if not epochs or not summaries:
        raise DataError(f"{path} holds no finished run (its metrics.jsonl lacks epoch or summary lines); leave it "
                        f"out, or summarize it once the run has ended.")
    config = read_run_config(path)
    last, summary = epochs[-1], summaries[-1]
    detector = summary.get("detector") or config.get("detector")
    if detector:
        raise DataError(f"{path} is a detection run ({detector}, det_main.py): it records box and mask AP, not the "
                        f"top-1 and top-5 accuracy this table summarises. Leave it out (plot_runs.py --metric "
                        f"box_AP draws its AP per epoch).")
    missing = [f"'{key}'" for key in EPOCH_KEYS if any(key not in e for e in epochs)] + \
              [f"'{key}'" for key in SUMMARY_KEYS if key not in summary]
    if missing:
        raise DataError(f"{path / METRICS_FILE} lacks {', '.join(missing)} in its epoch or summary lines, so it is "
                        f"not a classification run of main.py; leave it out.")
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


def csv_text(runs: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(runs))
    return out.getvalue()


def write_csv(path: Path, runs: list[dict[str, Any]]) -> None:
    _write(path, "--csv", csv_text(runs))


def _write(path: Path, option: str, text: str) -> None:
    """Write ``text`` to ``path``, making its folder; an OSError (permissions, a full disk) as a ConfigError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot write {option} {path}: {error.strerror or error}. Pass a path in a writable "
                          f"folder.") from None


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="summarize_runs.py", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories, or folders of them")
    parser.add_argument("--json", type=Path, help="also write the per-run figures as JSON")
    parser.add_argument("--csv", type=Path, help="also write the table as CSV (one row per network)")
    parser.add_argument("--val-images", type=int, default=None, metavar="N",
                        help="validation images per epoch, for runs whose records do not say")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks for input errors")
    return parser


def run(args: argparse.Namespace) -> int:
    """Check the options and every output path, read every run, then print and write: bad input of any kind
    stops before a file is written."""
    if args.val_images is not None and args.val_images < 1:
        raise ConfigError(f"--val-images must be at least 1, got {args.val_images}. Pass the number of validation "
                          f"images each epoch of the runs evaluated, or leave it out when their records say.")
    if args.json is not None and args.csv is not None and args.json.resolve() == args.csv.resolve():
        raise ConfigError(f"--json and --csv both name {args.json}; pass two different files.")
    dirs = run_dirs(args.runs)
    inputs = [d / name for d in dirs for name in RUN_FILES]
    if args.json is not None:
        check_output_file(args.json, "--json", "runs.json", inputs)
    if args.csv is not None:
        check_output_file(args.csv, "--csv", "runs.csv", inputs)
    runs = [load_run(p, args.val_images) for p in dirs]
    print(table(runs))
    if args.json is not None:
        _write(args.json, "--json", json.dumps(runs, indent=2))
    if args.csv is not None:
        write_csv(args.csv, runs)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return report_user_errors(lambda: run(args), argv)


if __name__ == "__main__":
    sys.exit(main())
