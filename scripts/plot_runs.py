#!/usr/bin/env python3
"""Plot a metric per epoch (validation top-1 by default) for training runs, one colour per network.

    .venv/bin/python scripts/plot_runs.py runs/fmnist/* --output docs/val_top1.png

Each run directory holds the trainer's ``metrics.jsonl`` (one JSON object per line; the lines with
``"event": "epoch"`` carry ``epoch``, ``val_top1``, ``val_top5``, ``val_loss``, ``train_loss``, ...; other
events are ignored) and ``config.yaml`` (its ``arch`` names the network). Runs of the same network (several
seeds) are drawn as their mean with a band over the seeds: min-max by default, or mean +- one standard
deviation. ``--label`` names the runs instead of ``arch``, one label per run in the order given. A directory
without ``metrics.jsonl`` stands for the run directories directly inside it.

``--output`` is the image file to write, in any format matplotlib writes (its extension decides: .png, .svg,
.pdf, ...); a name without an extension gets ``.png``. Every input and the output path are checked before
anything is written.

Exit codes: 0 plot written, 2 bad input (no such run, a run whose config.yaml cannot be read, no data for
the metric, an output path that cannot be written or a format matplotlib does not write, matplotlib missing).
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ecanet.config import ArgumentParser  # noqa: E402
from ecanet.errors import EXIT_OK, EXIT_USAGE, UserError, one_paragraph  # noqa: E402
from ecanet.constants import METRICS_FILE, RUN_CONFIG as CONFIG_FILE  # noqa: E402
from ecanet.metrics import read_metrics, read_run_config  # noqa: E402
from ecanet.outputs import check_output_file  # noqa: E402

log = logging.getLogger("plot_runs")

EPOCH_EVENT = "epoch"
GROUP_KEY = "arch"
FIGURE_SIZE_IN = (7.0, 4.5)   # width, height in inches
FIGURE_DPI = 120              # 840 x 540 pixels
BAND_ALPHA = 0.2              # opacity of the band around each mean line
BANDS = ("minmax", "std", "none")
DEFAULT_FORMAT = "png"        # of an --output without an extension, as matplotlib's savefig.format


class PlotError(UserError):
    """Bad input the user can fix; ``str(error)`` is the whole message. Exit code :data:`EXIT_USAGE`."""


@dataclass
class Run:
    """One run's metric per completed epoch."""

    label: str
    values: dict[int, float]  # epoch (1-based) -> metric


@dataclass
class Curve:
    """The runs of one label, summarised per epoch."""

    label: str
    runs: int
    epochs: list[int]
    mean: list[float]
    low: list[float]   # lower edge of the band
    high: list[float]  # upper edge of the band


# ------------------------------------------------------------------------------------------- reading

def expand_run_dirs(paths: Sequence[Path]) -> list[Path]:
    """The run directories: each path that holds metrics.jsonl, else its sub-directories that do."""
    runs: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise PlotError(f"{path} is not a directory; pass run directories (each with {METRICS_FILE}).")
        if (path / METRICS_FILE).is_file():
            runs.append(path)
            continue
        children = sorted(p for p in path.iterdir() if (p / METRICS_FILE).is_file())
        if not children:
            raise PlotError(f"{path} holds no {METRICS_FILE}, nor do its sub-directories; is it a run "
                            f"directory of main.py?")
        runs.extend(children)
    return runs


def read_metric(path: Path, metric: str) -> dict[int, float]:
    """``{epoch: value}`` from the epoch lines of a metrics.jsonl. A resumed run may repeat an epoch: the
    last line wins. A line that is not JSON (a run killed while writing) is skipped with a warning."""
    values: dict[int, float] = {}
    for record in read_metrics(path, EPOCH_EVENT):
        value = record.get(metric)
        if isinstance(record.get("epoch"), int) and isinstance(value, (int, float)):
            values[record["epoch"]] = float(value)
    return values


def run_label(run_dir: Path) -> str:
    """The run's network, ``arch`` of its config.yaml. A config.yaml that is missing, damaged or names no network
    is a :class:`PlotError`, as for summarize_runs.py (the same reader): a run labelled by its directory name
    would sit apart from its seeds unnoticed."""
    try:
        return str(read_run_config(run_dir)[GROUP_KEY])
    except UserError as exc:
        raise PlotError(f"{exc} Or pass --label once per run to name the runs without reading their "
                        f"{CONFIG_FILE}.") from None


def load_runs(run_dirs: Sequence[Path], metric: str, labels: Sequence[str] | None) -> list[Run]:
    """Every run with at least one epoch of ``metric``; an error if none has any."""
    if labels and len(labels) != len(run_dirs):
        raise PlotError(f"--label was given {len(labels)} times for {len(run_dirs)} runs; give it once per "
                        f"run, in the order of the runs, or not at all.")
    runs = []
    for i, run_dir in enumerate(run_dirs):
        values = read_metric(run_dir / METRICS_FILE, metric)
        if not values:
            log.warning("%s has no epoch with '%s' yet; left out", run_dir, metric)
            continue
        runs.append(Run(labels[i] if labels else run_label(run_dir), values))
    if not runs:
        raise PlotError(f"none of the runs has an epoch line with '{metric}' in its {METRICS_FILE}; check "
                        f"--metric (e.g. val_top1, val_top5, val_loss, train_loss).")
    return runs


# ------------------------------------------------------------------------------------------ grouping

def summarise(label: str, runs: Sequence[Run], band: str) -> Curve:
    """Mean and band per epoch over the runs that reached that epoch."""
    epochs = sorted({epoch for run in runs for epoch in run.values})
    mean, low, high = [], [], []
    for epoch in epochs:
        values = [run.values[epoch] for run in runs if epoch in run.values]
        m = statistics.fmean(values)
        if band == "minmax":
            lo, hi = min(values), max(values)
        elif band == "std":
            sd = statistics.stdev(values) if len(values) > 1 else 0.0  # sample standard deviation
            lo, hi = m - sd, m + sd
        else:
            lo = hi = m
        mean.append(m)
        low.append(lo)
        high.append(hi)
    return Curve(label, len(runs), epochs, mean, low, high)


def group_runs(runs: Sequence[Run], band: str) -> list[Curve]:
    """One curve per label, in the order the labels first appear."""
    by_label: dict[str, list[Run]] = {}
    for run in runs:
        by_label.setdefault(run.label, []).append(run)
    return [summarise(label, members, band) for label, members in by_label.items()]


# ------------------------------------------------------------------------------------------- drawing

def import_pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or a :class:`PlotError` saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise PlotError("plot_runs.py needs matplotlib, which is not installed in this Python "
                        f"({sys.executable}). Install it with `{sys.executable} -m pip install "
                        "'matplotlib>=3.6'` (or re-run `make venv` once requirements.txt lists "
                        "it).") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def output_file(output: Path, metric: str, run_dirs: Sequence[Path]) -> Path:
    """The file to write for ``--output``: ``output``, or ``output.png`` without an extension (matplotlib's own
    rule, made explicit so that the log names the real file). A :class:`UserError`, before anything is drawn,
    when it is a folder, lies under a file, is a file of a run being read, or has an extension matplotlib does
    not write (or matplotlib is missing)."""
    inputs = [d / name for d in run_dirs for name in (METRICS_FILE, CONFIG_FILE)]
    example = f"{metric}.{DEFAULT_FORMAT}"
    check_output_file(output, "--output", example, inputs)
    if not output.suffix:
        output = output.with_name(f"{output.name}.{DEFAULT_FORMAT}")
        check_output_file(output, "--output", example, inputs)
    import_pyplot()
    from matplotlib.backend_bases import FigureCanvasBase
    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    extension = output.suffix[1:].lower()
    if extension not in formats:
        raise PlotError(f"--output {output}: matplotlib does not write '.{extension}' files. Give the file one of "
                        f"the extensions {', '.join(formats)}, e.g. {output.with_suffix('.' + DEFAULT_FORMAT)}.")
    return output


BAND_NAMES = {"minmax": "band: min-max over runs", "std": "band: mean +- 1 std over runs", "none": ""}


def draw(curves: Sequence[Curve], metric: str, title: str | None, band: str, output: Path) -> None:
    """Write the image: one colour per curve, its band, a legend with the number of runs and last value."""
    plt = import_pyplot()
    fig, ax = plt.subplots(figsize=FIGURE_SIZE_IN)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, curve in enumerate(curves):
        colour = colours[i % len(colours)]
        runs = f"{curve.runs} run{'s' if curve.runs > 1 else ''}"
        ax.plot(curve.epochs, curve.mean, color=colour, marker="o", markersize=3,
                label=f"{curve.label} ({runs}; last {curve.mean[-1]:.4g})")
        if band != "none" and curve.runs > 1:
            ax.fill_between(curve.epochs, curve.low, curve.high, color=colour, alpha=BAND_ALPHA, linewidth=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} per epoch")
    ax.grid(True, alpha=0.3)
    legend_title = BAND_NAMES[band] if any(c.runs > 1 for c in curves) else None
    ax.legend(title=legend_title, fontsize="small", title_fontsize="small")
    ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
    fig.tight_layout()
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(output, dpi=FIGURE_DPI)
    except OSError as error:
        raise PlotError(f"cannot write --output {output}: {error.strerror or error}. Pass a path in a writable "
                        f"folder.") from None
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="plot_runs.py",
        description="Plot a metric per epoch from runs' metrics.jsonl: one colour per network (config.yaml's "
                    "'arch'), mean over the runs (seeds) with a band.",
        epilog="Example: plot_runs.py runs/fmnist/* --output docs/val_top1.png --title 'Fashion-MNIST'. "
               "Exit codes: 0 written, 2 bad input.")
    parser.add_argument("runs", nargs="+", type=Path,
                        help="run directories (each with metrics.jsonl and config.yaml), or folders of them")
    parser.add_argument("--output", "-o", type=Path, required=True,
                        help="image file to write: .png, or another extension matplotlib writes (.svg, .pdf, ...)")
    parser.add_argument("--metric", default="val_top1",
                        help="key of the epoch lines to plot (default: %(default)s)")
    parser.add_argument("--title", help="plot title (default: '<metric> per epoch')")
    parser.add_argument("--label", action="append", metavar="LABEL",
                        help="legend label of a run instead of its arch; give it once per run, in order")
    parser.add_argument("--band", choices=BANDS, default="minmax",
                        help="spread drawn around the mean of runs with the same label "
                             "(default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        run_dirs = expand_run_dirs(args.runs)
        output = output_file(args.output, args.metric, run_dirs)
        runs = load_runs(run_dirs, args.metric, args.label)
        curves = group_runs(runs, args.band)
        draw(curves, args.metric, args.title, args.band, output)
    except UserError as exc:
        log.error("%s", one_paragraph(str(exc)))
        return EXIT_USAGE
    for curve in curves:
        log.info("%s: %d run(s), %d epochs, last %s %.4g (band %.4g..%.4g)", curve.label, curve.runs,
                 len(curve.epochs), args.metric, curve.mean[-1], curve.low[-1], curve.high[-1])
    log.info("wrote %s", output)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
