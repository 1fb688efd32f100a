#!/usr/bin/env python3
"""GPU benchmarks: model throughput (eager and compiled), the ECA layer against its memory floor, the loader.

    python scripts/benchmark.py --released --official-code ../ECANet/models --json results/released.json
                                        # every released ECA network against its baseline: docs/performance.md
    python scripts/benchmark.py --summarize RESULTS.json ... --page docs/performance.md   # the files the page names
    python scripts/benchmark.py --released mobilenet_v2 resnet50 --cases train-compiled   # some pairs, one case
    python scripts/benchmark.py --released --cases train-compiled --inductor-option combo_kernels=True
                                        # compiled with an Inductor setting (ecanet and baselines alike)
    python scripts/benchmark.py --released --cases train-compiled infer-compiled --compile-jobs 12 \
        --resume --json results/compiled.json  # compile in parallel first; run again to finish a cut-short run

    python scripts/benchmark.py --archs eca_resnet50 resnet50 --torchvision resnet50        # train + infer
    python scripts/benchmark.py --archs eca_resnet50 resnet50 --cases train-compiled        # one case
    python scripts/benchmark.py --eca-micro                                                 # the ECA layer
    python scripts/benchmark.py --loss-curve 30                                             # fused vs plain
    python scripts/benchmark.py --archs eca_resnet50 resnet50 --eca-impl auto --cases train-compiled \
        --profile 5                                                # where the GPU time goes, by kernel

Synthetic data already on the device; medians of ``--repeats`` timed runs after warm-up (ecanet.bench).
Each ECA network is measured with every ``--eca-impl`` so the kernels' effect is visible, and its row is
compared with its baseline (``eca_resnet50`` with ``resnet50``). ``--released`` measures the six released
ECA networks (ECA-ResNet-18/34/50/101/152, ECA-MobileNetV2) against their baselines in every case, with the
spread (min, median, max) over the repeats; with ``--official-code`` the official implementation of each
ECA network too, and where timm is installed its nearest ECA networks and baselines. Its compiled rows are
each timed in a fresh Python process, as a training run holds one network (``--fresh-process``). Tables go
to stdout as markdown; ``--json`` collects every number with the GPU, versions and date, rewritten after
each measurement so an interrupted run keeps what it measured, and ``--resume`` continues it.

Suites (``SUITES``) are independent: each reads its own options and adds a section to the report; a new
one (e.g. a data-loader benchmark) is a function and an entry there. The results file, what it records and
``--resume``'s checks, the tables and targets, and ``--summarize``'s report and page are ecanet.bench_report's.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, NoReturn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ecanet import bench, models  # noqa: E402
from ecanet.bench_report import (CASES, ECA_PREFIX, NOISE_REFERENCE, RELEASED_PAIRS, SOURCES,  # noqa: E402
                                 TARGET_LAYER_VS_FLOOR, Report, models_markdown, performance_page,
                                 released_ratios, released_report, resumable_results, row_key, summarize,
                                 with_ratios)
from ecanet import config  # noqa: E402
from ecanet.config import HelpFormatter  # noqa: E402
from ecanet.errors import UserError  # noqa: E402
from ecanet.metrics import markdown_table  # noqa: E402
from ecanet.outputs import check_output_file  # noqa: E402
from ecanet.models import fused_eca_available  # noqa: E402

log = logging.getLogger("benchmark")

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
MICRO_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
RELEASED = "released"
MICRO_VARIANTS = (("tail", "fused"), ("tail", "plain"), ("no-attention tail", "none"),
                  ("layer", "fused"), ("layer", "plain"))
MOBILENET_MICRO_VARIANTS = (("residual tail", "fused"), ("residual tail", "plain"), ("layer", "fused"),
                            ("layer", "plain"))
# timm's nearest networks, by baseline: its ECA-ResNets have the deep 'd' stem, so each is set against the
# timm ResNet with that stem; timm has no ECA-MobileNetV2, only the baseline.
TIMM_PAIRS: dict[str, tuple[str | None, str]] = {"resnet50": ("ecaresnet50d", "resnet50d"),
                                                  "resnet101": ("ecaresnet101d", "resnet101d"),
                                                  "mobilenet_v2": (None, "mobilenetv2_100")}
DEFAULT_ECA_IMPLS = {"archs": ["fused", "plain"], "released": ["auto"]}


# ----------------------------------------------------------------------------------------------------
# Suite: model throughput
# ----------------------------------------------------------------------------------------------------
def _cases(args: argparse.Namespace) -> list[str]:
    if args.cases:
        return args.cases
    compiled = {"off": ("eager",), "on": ("compiled",), "both": ("eager", "compiled")}[args.compile]
    return [f"{mode}-{how}" for how in compiled for mode in args.modes]


def _model_builders(args: argparse.Namespace) -> list[tuple[str, str | None, Callable]]:
    """(label, ECA implementation or None, builder) for every network row of one case."""
    builders = []
    for arch in args.archs:
        if arch.startswith(ECA_PREFIX):
            k_size = models.RELEASED_KERNEL_SIZES.get(arch) if args.ksize == RELEASED else args.ksize
            for impl in args.eca_impl or DEFAULT_ECA_IMPLS["archs"]:
                builders.append((arch, impl, lambda arch=arch, k=k_size, impl=impl:
                                 models.create_model(arch, k_size=k, eca_impl=impl)))
        else:
            builders.append((arch, None, lambda arch=arch: models.create_model(arch)))
    for name in args.torchvision:
        import torchvision
        builders.append((f"torchvision {name}", None, lambda name=name: torchvision.models.get_model(name)))
    return builders


def _throughput(args: argparse.Namespace, model: torch.nn.Module, case: str) -> bench.ThroughputResult:
    """``bench.measure_throughput`` of ``model`` in ``case`` ('train-eager', ...) with this run's settings."""
    mode, how = case.split("-")
    return bench.measure_throughput(
        model, batch_size=args.batch_size, img_size=args.img_size, train=mode == "train",
        amp_dtype=AMP_DTYPES[args.amp], channels_last=args.channels_last, compile=how == "compiled",
        warmup_steps=args.warmup_steps, timed_steps=args.timed_steps, repeats=args.repeats, device=args.device,
        repeat_seconds=args.repeat_seconds, frozen_heap=args.freeze_heap,
        compile_options=dict(args.inductor_option))


def run_models(args: argparse.Namespace, report: Report) -> str | None:
    if not args.archs and not args.torchvision:
        return None
    records: list[dict] = []
    for case in _cases(args):
        for label, impl, build in _model_builders(args):
            if impl == "fused" and not fused_eca_available():
                log.warning("skipping %s fused: Triton is not available", label)
                continue
            log.info("%s %s%s", case, label, f" ({impl})" if impl else "")
            record = {"model": label, "eca_impl": impl, "case": case}
            try:
                record.update(_throughput(args, build(), case).to_dict())
            except Exception as error:  # noqa: BLE001 -- one failed row must not lose the others
                log.exception("%s %s failed", case, label)
                record["error"] = f"{type(error).__name__}: {error}"
            finally:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            records.append(record)
            with_ratios(records)
            report.set("models", records)
    return models_markdown(records, report.data["environment"].get("gpu", ""))


# ----------------------------------------------------------------------------------------------------
# Suite: every released ECA network against its baseline
# ----------------------------------------------------------------------------------------------------
def load_official_models(directory: str | None):
    """The official repository's ``models`` package (``eca_resnet50``, ``eca_mobilenet_v2``, ...) imported
    from ``directory``, or None (logged) when it is not given or not importable there."""
    if not directory:
        return None
    init = Path(directory) / "__init__.py"
    if not init.is_file():
        log.warning("--official-code %s: no models package there (%s missing); official rows skipped", directory, init)
        return None
    spec = importlib.util.spec_from_file_location("official_eca_models", init,
                                                  submodule_search_locations=[str(init.parent)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = package
    try:
        spec.loader.exec_module(package)
    except Exception:  # noqa: BLE001 -- someone else's code: report it, measure the rest
        log.exception("--official-code %s did not import; official rows skipped", directory)
        sys.modules.pop(spec.name, None)
        return None
    return package


def _timm():
    try:
        import timm
    except ImportError:
        return None
    return timm


def _released_builders(args: argparse.Namespace) -> list[tuple[dict, Callable]]:
    """(row labels, builder) for every network of the --released suite, pair by pair."""
    official = load_official_models(args.official_code) if "official" in args.sources else None
    timm = _timm() if "timm" in args.sources else None
    timm_names = set(timm.list_models()) if timm is not None else set()
    pairs = [pair for pair in RELEASED_PAIRS if not args.released or pair[1] in args.released]
    rows: list[tuple[dict, Callable]] = []
    for eca_arch, base_arch in pairs:
        k_size = models.RELEASED_KERNEL_SIZES.get(eca_arch)
        if "ecanet" in args.sources:
            rows.append(({"pair": base_arch, "model": base_arch, "source": "ecanet", "role": "baseline",
                          "eca_impl": None}, lambda arch=base_arch: models.create_model(arch)))
            for impl in args.eca_impl or DEFAULT_ECA_IMPLS["released"]:
                rows.append(({"pair": base_arch, "model": eca_arch, "source": "ecanet", "role": "eca",
                              "eca_impl": impl}, lambda arch=eca_arch, k=k_size, impl=impl:
                             models.create_model(arch, k_size=k, eca_impl=impl)))
        if official is not None and hasattr(official, eca_arch):
            # the official constructors take one kernel size per stage as a list; MobileNetV2's has its rule built in
            kwargs = {} if eca_arch == "eca_mobilenet_v2" else {"k_size": list(k_size)}
            rows.append(({"pair": base_arch, "model": eca_arch, "source": "official", "role": "eca", "eca_impl": None},
                         lambda arch=eca_arch, kwargs=kwargs: getattr(official, arch)(**kwargs)))
        timm_eca, timm_base = TIMM_PAIRS.get(base_arch, (None, None))
        for name, role in ((timm_base, "baseline"), (timm_eca, "eca")):
            if name in timm_names:
                rows.append(({"pair": base_arch, "model": name, "source": "timm", "role": role, "eca_impl": None},
                             lambda name=name: timm.create_model(name)))
    return rows


def _measure_released_row(args: argparse.Namespace, case: str, build: Callable) -> dict:
    """One row's measurement in this process: ``measure_throughput``'s numbers, or ``error`` if it failed."""
    try:
        model = build()
        record = _throughput(args, model, case).to_dict()
    except Exception as error:  # noqa: BLE001 -- one failed row must not lose the others
        log.exception("%s failed", case)
        return {"error": f"{type(error).__name__}: {error}"}
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if args.host_time and case.endswith("-eager"):
        try:
            record["host_ms_all"] = bench.measure_host_time(
                model, train=case.startswith("train"), amp_dtype=AMP_DTYPES[args.amp],
                channels_last=args.channels_last, warmup_steps=args.warmup_steps, repeats=args.repeats,
                device=args.device, frozen_heap=args.freeze_heap)
        except Exception as error:  # noqa: BLE001 -- the row's throughput stands without it
            log.exception("%s: timing the host failed", case)
            record["host_time_error"] = f"{type(error).__name__}: {error}"
    return record


def _row_command(args: argparse.Namespace, case: str, index: int, json_path: Path, *extra: str) -> list[str]:
    """This script's command line for one row of --released, measured alone (``--row``) into ``json_path``."""
    if getattr(args, "argv", None) is None:
        raise ValueError("measuring rows in fresh processes needs args.argv, the command line main() parsed")
    return [sys.executable, str(Path(__file__).resolve()), *args.argv, *extra, "--fresh-process", "none",
            "--row", case, str(index), "--json", str(json_path)]


def _row_from_child(json_path: Path, returncode: int, expected: dict) -> dict:
    """The record a --row process wrote for the row ``expected`` labels, or an ``error`` saying what went wrong."""
    try:
        (record,) = json.loads(json_path.read_text())["released"]
    except (OSError, ValueError, KeyError, TypeError):
        return {"error": f"the row's process exited with code {returncode} and wrote no record"}
    if row_key(record) != row_key(expected):   # the child built its rows differently (e.g. an import failed)
        return {"error": f"the row's process measured {row_key(record)}, not this row"}
    return {key: value for key, value in record.items() if key != "vs_baseline"}


def _fill_compile_cache(args: argparse.Namespace, rows: list[tuple[str, int]], tmp: Path) -> None:
    """Compile the compiled rows in up to ``--compile-jobs`` processes at once, one step each, so that the timed
    processes load their graphs from Inductor's on-disk cache instead of compiling one network after another
    (30-130 s a network on an H200 host). Nothing they measure is kept, nor the kernel configurations they
    autotuned (:func:`forget_autotuning`)."""
    compiled = [(case, index) for case, index in rows if case.endswith("-compiled")]
    if args.compile_jobs < 2 or not compiled:
        return
    log.info("compiling %d networks, %d processes at a time", len(compiled), args.compile_jobs)
    started = time.time()
    running: list[tuple[subprocess.Popen, Path, str]] = []

    def finish(process: subprocess.Popen, log_path: Path, what: str) -> None:
        if process.wait() != 0:   # the timed process then compiles the network itself, or records the error
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            log.warning("compiling %s failed (exit code %s): %s", what, process.returncode, " | ".join(tail))

    for number, (case, index) in enumerate(compiled):
        if len(running) >= args.compile_jobs:
            finish(*running.pop(0))
        command = _row_command(args, case, index, tmp / f"compile-{number}.json", "--repeats", "1",
                               "--warmup-steps", "1", "--timed-steps", "1")
        log_path = tmp / f"compile-{number}.log"
        with log_path.open("w") as stderr:
            running.append((subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr), log_path,
                            f"{case} row {index}"))
    for entry in running:
        finish(*entry)
    from torch._inductor.runtime.cache_dir_utils import cache_dir   # torch's rule for it; no public name
    forgotten = forget_autotuning(Path(cache_dir()), since=started)
    log.info("compiled; %d kernel configurations autotuned side by side discarded, to be tuned by each timed "
             "process alone", forgotten)


def forget_autotuning(cache: Path, *, since: float) -> int:
    """Delete the Triton kernel configurations Inductor's autotuner chose and saved (``*.best_config``, beside each
    kernel in ``cache``) at or after ``since`` (a ``time.time()``); returns how many.

    A compiled kernel with several candidate configurations times them all on its first call and saves the
    fastest, which later processes then reuse without timing. Chosen while several compiling processes run
    kernels on the same GPU, those timings measure the contention as much as the kernels; deleted, each timed
    process tunes its kernels alone. Choices saved earlier stay."""
    forgotten = 0
    for path in cache.rglob("*.best_config"):
        try:
            if path.stat().st_mtime >= since:
                path.unlink()
                forgotten += 1
        except FileNotFoundError:   # another process removed it meanwhile
            pass
    return forgotten


def usage_error(message: str) -> NoReturn:
    """Bad input found after parsing: argparse's form (the message on stderr, exit code 2)."""
    print(f"{Path(__file__).name}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run_released(args: argparse.Namespace, report: Report) -> str | None:
    if args.released is None:
        return None
    unknown = set(args.released) - {base for _, base in RELEASED_PAIRS}
    if unknown:
        usage_error(f"--released takes baselines of released pairs ({', '.join(b for _, b in RELEASED_PAIRS)}); "
                    f"got {', '.join(sorted(unknown))}.")
    builders = _released_builders(args)
    rows = [(case, index) for case in _cases(args) for index in range(len(builders))]
    if args.row is not None:
        if args.row not in rows:
            usage_error(f"--row {' '.join(map(str, args.row))} is not a row of this --released run "
                        f"(cases {', '.join(_cases(args))}, rows 0-{len(builders) - 1}).")
        rows = [args.row]
    # --resume: the results file's measured rows stay; this run measures the others (and retries failed ones)
    wanted = {row: row_key(builders[row[1]][0] | {"case": row[0]}) for row in rows}
    retried = set(wanted.values())
    records = [r for r in report.data.get("released", []) if "error" not in r or row_key(r) not in retried]
    measured = {row_key(r) for r in records}
    rows = [row for row in rows if wanted[row] not in measured]
    if len(rows) < len(wanted):
        log.info("%d of this run's %d rows are in %s already", len(wanted) - len(rows), len(wanted), args.json)
    with tempfile.TemporaryDirectory(prefix="benchmark-rows-") as tmp:
        if args.row is None and args.fresh_process != "none":
            _fill_compile_cache(args, rows, Path(tmp))
        for case, index in rows:
            labels, build = builders[index]
            log.info("%s %s %s%s", case, labels["source"], labels["model"],
                     f" ({labels['eca_impl']})" if labels["eca_impl"] else "")
            record = labels | {"case": case}
            fresh = args.row is None and (args.fresh_process == "all" or
                                          (args.fresh_process == "compiled" and case.endswith("-compiled")))
            if fresh:
                json_path = Path(tmp) / f"row-{len(records)}.json"
                done = subprocess.run(_row_command(args, case, index, json_path), stdout=subprocess.DEVNULL)
                record.update(_row_from_child(json_path, done.returncode, record))
            else:
                record.update(_measure_released_row(args, case, build))
            records.append(record)
            released_ratios(records)
            report.set("released", records)
    return released_report(records)


# ----------------------------------------------------------------------------------------------------
# Suite: the ECA layer against its memory floor
# ----------------------------------------------------------------------------------------------------
def run_eca_micro(args: argparse.Namespace, report: Report) -> str | None:
    if not args.eca_micro:
        return None
    mobilenet = args.eca_micro == "mobilenet_v2"
    if mobilenet:
        k_size = None if args.ksize == RELEASED else args.ksize
        shapes = bench.mobilenet_v2_eca_shapes(args.batch_size, args.img_size, k_size)
    else:
        k_size = models.RELEASED_KERNEL_SIZES["eca_resnet50"] if args.ksize == RELEASED else args.ksize
        shapes = bench.resnet_eca_shapes(50, args.batch_size, args.img_size, k_size)
    bandwidth = bench.measure_copy_bandwidth(args.device)
    dtype = MICRO_DTYPES[args.amp]
    results: list[bench.EcaLayerResult] = []
    for eca_shape in shapes:
        for variant, impl in MOBILENET_MICRO_VARIANTS if mobilenet else MICRO_VARIANTS:
            if impl == "fused" and not fused_eca_available():
                continue
            try:
                results.append(bench.measure_eca_layer(
                    eca_shape.shape, k_size=eca_shape.k_size, dtype=dtype, channels_last=args.channels_last,
                    variant=variant, impl=impl, device=args.device, copy_bandwidth=bandwidth,
                    repeats=args.repeats))
            except Exception:  # noqa: BLE001
                log.exception("ECA microbenchmark %s %s %s failed", eca_shape.shape, variant, impl)
            report.set("eca_micro", {"network": args.eca_micro, "copy_bandwidth_gb_s": bandwidth / 1e9,
                                     "results": [r.to_dict() for r in results],
                                     "per_step": {} if mobilenet else _eca_cost_per_step(results, shapes)})
    rows = [("x".join(map(str, r.shape)), r.k_size, r.variant, r.impl, f"{r.forward_ms:.3f}",
             f"{r.forward_backward_ms:.3f}", f"{r.floor_forward_ms:.3f}", f"{r.floor_forward_backward_ms:.3f}",
             f"{r.forward_backward_vs_floor:.2f}x") for r in results]
    table = markdown_table(("shape", "k", "variant", "impl", "fwd ms", "fwd+bwd ms", "floor fwd ms",
                            "floor fwd+bwd ms", "fwd+bwd / floor"), rows)
    summary = [f"Copy bandwidth (read + write): {bandwidth / 1e12:.2f} TB/s. Target: fused tail fwd+bwd "
               f"<= {TARGET_LAYER_VS_FLOOR}x floor."]
    if mobilenet:
        return table + "\n\n" + summary[0]
    per_step = _eca_cost_per_step(results, shapes)
    summary += ["ECA's cost in one ResNet-50 step (sum over its 16 layers of tail minus no-attention tail):"]
    summary += [f"- {impl}: {v['train_ms']:.2f} ms train (fwd+bwd), {v['infer_ms']:.2f} ms inference (fwd)"
                for impl, v in per_step.items()]
    return table + "\n\n" + "\n".join(summary)


def _eca_cost_per_step(results: list[bench.EcaLayerResult], shapes: list[bench.EcaShape]) -> dict:
    """Per implementation: sum over the network's ECA layers of (tail - no-attention tail) times."""
    by_key = {(r.shape, r.variant, r.impl): r for r in results}
    costs = {}
    for impl in ("fused", "plain"):
        train = infer = 0.0
        for s in shapes:
            tail, base = by_key.get((s.shape, "tail", impl)), by_key.get((s.shape, "no-attention tail", "none"))
            if tail is None or base is None:
                break
            train += s.count * (tail.forward_backward_ms - base.forward_backward_ms)
            infer += s.count * (tail.forward_ms - base.forward_ms)
        else:
            costs[impl] = {"train_ms": train, "infer_ms": infer}
    return costs


# ----------------------------------------------------------------------------------------------------
# Suite: the same short training run with each implementation
# ----------------------------------------------------------------------------------------------------
# The ECA implementations agree when their curves are no further apart than the same (plain) model's
# curves in the two memory layouts (NOISE_REFERENCE), whose only difference is the order of floating-point sums.
COMPILED_CURVE = "auto, torch.compile"
LOSS_CURVE_NOISE_FACTOR = 2.0
LOSS_CURVE_MIN_LIMIT = 1e-4    # relative; should the two layouts happen to give identical curves


def run_loss_curve(args: argparse.Namespace, report: Report) -> str | None:
    if not args.loss_curve:
        return None
    impls = [impl for impl in args.eca_impl or DEFAULT_ECA_IMPLS["archs"]
             if impl != "fused" or fused_eca_available()]
    if len(impls) < 2:
        log.warning("--loss-curve compares implementations; only %s available", impls)
        return None
    torch.manual_seed(args.seed)
    model = models.create_model(args.loss_arch, k_size=models.RELEASED_KERNEL_SIZES.get(args.loss_arch))
    options = dict(steps=args.loss_curve, batch_size=args.loss_batch_size, img_size=args.img_size,
                   amp_dtype=AMP_DTYPES[args.amp], device=args.device, seed=args.seed)
    curves = bench.loss_curves(model, impls, channels_last=args.channels_last, **options)
    if args.compile != "off":   # ecanet's default under torch.compile: the written-out BN+ECA tail
        curves[COMPILED_CURVE] = bench.loss_curves(model, ["auto"], channels_last=args.channels_last,
                                                   compile=True, compile_options=dict(args.inductor_option),
                                                   **options)["auto"]
    reference = impls[-1]
    curves[NOISE_REFERENCE] = bench.loss_curves(model, [reference], channels_last=False, **options)[reference]
    diffs = {name: bench.max_relative_difference(curve, curves[reference])
             for name, curve in curves.items() if name != reference}
    noise = diffs[NOISE_REFERENCE]
    limit = max(LOSS_CURVE_NOISE_FACTOR * noise, LOSS_CURVE_MIN_LIMIT)
    report.set("loss_curve", {"arch": args.loss_arch, "curves": curves, "reference": reference,
                              "max_relative_difference": diffs, "noise_factor": LOSS_CURVE_NOISE_FACTOR})
    names = list(curves)
    rows = [(step, *(f"{curves[name][step]:.4f}" for name in names)) for step in range(args.loss_curve)]
    verdicts = [f"- {name} vs {reference}: max relative difference {d:.2e} "
                f"({'OK' if d <= limit else 'CHECK'}: noise ({NOISE_REFERENCE} vs {reference}) is {noise:.2e}; "
                f"limit {limit:.2e})"
                for name, d in diffs.items() if name != NOISE_REFERENCE]
    return markdown_table(("step", *names), rows) + "\n\n" + "\n".join(verdicts)


# ----------------------------------------------------------------------------------------------------
# Suite: the input pipeline alone
# ----------------------------------------------------------------------------------------------------
def run_loader(args: argparse.Namespace, report: Report) -> str | None:
    """Images/s the training loader delivers to the GPU, ready for the model, with no model running.

    'cpu': PIL decoding and the paper's RandomResizedCrop + flip in worker processes, uint8 batches copied
    to the GPU and normalised there (what main.py does with --decode cpu). 'gpu' (--decode gpu), once per
    --gpu-decode-share F: for that fraction of the images workers read bytes and draw crop boxes and the GPU
    decodes (nvJPEG), crops and resizes; workers decode and crop the rest; flip and normalise on the GPU.
    """
    if not args.loader:
        return None
    from ecanet.data import IMAGENET_MEAN, IMAGENET_STD, build_data, build_train_transform, build_val_transform
    from ecanet.data.folders import region_decode_available
    from ecanet.data.gpu import GpuDecodeOptions
    from ecanet.data.loaders import default_workers
    device = torch.device(args.device)
    workers = args.workers if args.workers is not None else default_workers(1)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    records = []
    cases = [(decoder, share, region) for decoder in args.loader
             for share in (args.gpu_decode_share if decoder == "gpu" else [None])
             for region in (args.region_decode if decoder == "cpu" or share < 1 else [None])]
    for decoder, share, region in cases:
        # the paper's evaluation resize and main.py's defaults for the crop scale and flip
        gpu = None if share is None else GpuDecodeOptions(
            args.img_size, val_resize=256, min_crop_scale=0.08, hflip=0.5, mean=IMAGENET_MEAN, std=IMAGENET_STD,
            channels_last=args.channels_last, gpu_share=share)
        data = build_data(args.data, batch_size=args.batch_size, val_batch_size=args.batch_size, workers=workers,
                          seed=args.seed, rank=0, world_size=1, device=device,
                          train_transform=build_train_transform(args.img_size, uint8=True),
                          val_transform=build_val_transform(args.img_size, uint8=True),
                          gpu_decode=gpu, region_decode=region == "on",
                          device_normalize=(IMAGENET_MEAN, IMAGENET_STD, args.channels_last))
        rates = []
        for repeat in range(args.repeats + 1):  # the first pass starts the workers: not timed
            data.train_sampler.set_epoch(repeat)
            batches, t0 = 0, time.perf_counter()
            for images, _, _ in data.train_loader:
                batches += 1
                if batches == 1:
                    sync()
                    t0 = time.perf_counter()  # time from the first ready batch on: steady state only
                if batches > args.loader_batches:
                    break
            sync()
            if repeat:
                rates.append((batches - 1) * args.batch_size / (time.perf_counter() - t0))
        rates.sort()
        if region == "on" and not region_decode_available():
            region = "off (nvImageCodec missing)"
        record = {"decode": decoder, "gpu_decode_share": share, "region_decode": region, "workers": workers,
                  "batch_size": args.batch_size, "img_size": args.img_size, "images_per_s": rates[len(rates) // 2],
                  "all_images_per_s": rates}
        records.append(record)
        report.set("loader", records)
        log.info("loader %s (gpu share %s, region decode %s): %.0f img/s", decoder, share, region,
                 record["images_per_s"])
        del data
    rows = [(r["decode"], "-" if r["gpu_decode_share"] is None else f"{r['gpu_decode_share']:g}",
             r["region_decode"] or "-", r["workers"], r["batch_size"], f"{r['images_per_s']:,.0f}") for r in records]
    return markdown_table(("decode", "share to nvJPEG", "CPU region decode", "workers", "batch", "img/s (median)"),
                          rows)


# ----------------------------------------------------------------------------------------------------
# Suite: where a step's GPU time goes (torch.profiler)
# ----------------------------------------------------------------------------------------------------
def run_profile(args: argparse.Namespace, report: Report) -> str | None:
    """Kernel time per step by family for every network and case, then each network's largest kernels."""
    if not args.profile or not (args.archs or args.torchvision):
        return None
    records: list[dict] = []
    sections = []
    for case in _cases(args):
        mode, how = case.split("-")
        for label, impl, build in _model_builders(args):
            name = f"{label}{f' ({impl})' if impl else ''}, {case}"
            log.info("profiling %s", name)
            try:
                result = bench.profile_step(
                    build(), batch_size=args.batch_size, img_size=args.img_size, train=mode == "train",
                    amp_dtype=AMP_DTYPES[args.amp], channels_last=args.channels_last,
                    compile=how == "compiled", warmup_steps=args.warmup_steps, steps=args.profile,
                    timed_steps=args.timed_steps, repeats=args.repeats, device=args.device,
                    compile_options=dict(args.inductor_option))
            except Exception as error:  # noqa: BLE001 -- one failed row must not lose the others
                log.exception("profiling %s failed", name)
                records.append({"model": label, "eca_impl": impl, "case": case, "error": str(error)})
                continue
            finally:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            records.append({"model": label, "eca_impl": impl, "case": case} | result.to_dict())
            report.set("profile", records)
            sections.append(f"### {name}: {result.step_ms:.2f} ms/step wall, {result.kernel_ms:.2f} ms in "
                            f"{result.kernels_per_step:.0f} kernels\n\n" + markdown_table(
                                ("family", "kernels/step", "ms/step"),
                                [(f, f"{c:.0f}", f"{t:.3f}") for f, (c, t) in result.families().items()])
                            + "\n\n" + markdown_table(
                                ("kernel", "family", "calls/step", "ms/step"),
                                [(k.name[:90], k.family, f"{k.calls_per_step:.0f}", f"{k.ms_per_step:.3f}")
                                 for k in result.kernels[:args.profile_top]]))
    return "\n\n".join(sections) if sections else None


SUITES: tuple[tuple[str, Callable[[argparse.Namespace, Report], str | None]], ...] = (
    ("Loss curves, same data and weights", run_loss_curve),
    ("ECA layer against its memory floor", run_eca_micro),
    ("Throughput", run_models),
    ("Released networks against their baselines", run_released),
    ("Kernel time per step", run_profile),
    ("Input pipeline alone", run_loader),
)


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------
def inductor_option(pair: str) -> tuple[str, object]:
    """One ``--inductor-option`` NAME=VALUE as (name, value): NAME a setting of ``torch._inductor.config``
    ('-' read as '_'), VALUE a Python literal (``True``, ``64``) or else a string, of the setting's type."""
    from torch._inductor import config as inductor_config

    name, sep, text = (part.strip() for part in pair.partition("="))
    name = name.replace("-", "_")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"takes NAME=VALUE, e.g. combo_kernels=True; got {pair!r}")
    settings = inductor_config.get_config_copy()
    if name not in settings:
        raise argparse.ArgumentTypeError(f"torch {torch.__version__}'s Inductor has no setting {name!r} (the names "
                                         f"are those of torch._inductor.config, e.g. combo_kernels)")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    # torch.compile checks the type only when it compiles, after every network's eager rows; check it now.
    expected = inductor_config.get_type(name) if hasattr(inductor_config, "get_type") else None
    if isinstance(expected, type) and not isinstance(value, expected):
        raise argparse.ArgumentTypeError(f"{name} takes a {expected.__name__}, e.g. {name}="
                                         f"{settings[name]!r}; got {text!r}")
    return name, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    what = parser.add_argument_group("what to measure")
    what.add_argument("--archs", nargs="*", default=[], metavar="ARCH",
                      help=f"ecanet networks, e.g. eca_resnet50 resnet50 ({', '.join(models.list_models())})")
    what.add_argument("--torchvision", nargs="*", default=[], metavar="NAME",
                      help="torchvision networks as outside references, e.g. resnet50")
    what.add_argument("--released", nargs="*", default=None, metavar="BASELINE",
                      help="every released ECA network against its baseline, in every case (--cases; default "
                           "all four), with min/median/max over --repeats; or only the pairs of these baselines "
                           f"({', '.join(base for _, base in RELEASED_PAIRS)})")
    what.add_argument("--official-code", default=None, metavar="DIR",
                      help="with --released: also the official implementation, imported from DIR, the official "
                           "repository's models/ folder (skipped when absent)")
    what.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES),
                      help="with --released: whose networks to measure: ecanet's, the official code's (needs "
                           "--official-code) and timm's nearest ones (where timm is installed); default all")
    what.add_argument("--eca-micro", nargs="?", const="resnet50", default=None, choices=("resnet50", "mobilenet_v2"),
                      help="the ECA layer alone, on the ECA shapes of ResNet-50 (default) or MobileNetV2, "
                           "against its memory floor")
    what.add_argument("--loss-curve", type=int, default=0, metavar="STEPS",
                      help="train --loss-arch for STEPS steps with each --eca-impl and compare the losses "
                           "(with --compile on/both, also 'auto' under torch.compile)")
    what.add_argument("--loss-arch", default="eca_resnet50", metavar="ARCH", help="the network --loss-curve trains")
    what.add_argument("--loader", nargs="+", choices=("cpu", "gpu"), default=[],
                      help="time the training input pipeline alone on --data (JPEG ImageFolder)")
    what.add_argument("--data", default=None, metavar="DIR", help="ImageFolder root for --loader")
    what.add_argument("--gpu-decode-share", nargs="+", type=float, default=[1.0, 0.6, 0.45, 0.3], metavar="F",
                      help="for --loader gpu: the fractions of images nvJPEG decodes (the rest by CPU workers)")
    what.add_argument("--region-decode", nargs="+", choices=("on", "off"), default=["on"],
                      help="for --loader cpu, and gpu with a share below 1: CPU workers decode only each crop's "
                           "region (main.py's --region-decode; needs nvImageCodec), or whole images with PIL")
    what.add_argument("--loader-batches", type=int, default=50, metavar="N", help="timed batches per repeat")
    what.add_argument("--workers", type=int, default=None, metavar="N", help="loader workers (default: auto)")
    what.add_argument("--loss-batch-size", type=int, default=32, metavar="N", help="the batch --loss-curve trains on")
    what.add_argument("--profile", type=int, default=0, metavar="STEPS",
                      help="also profile STEPS steps of every network and case with torch.profiler: GPU time "
                           "by kernel family and the largest kernels")
    what.add_argument("--profile-top", type=int, default=25, metavar="N", help="kernels listed per profile")

    how = parser.add_argument_group("how")
    how.add_argument("--modes", nargs="+", choices=("train", "infer"), default=["train", "infer"],
                     help="what --archs and --torchvision time: a training step, inference, or both")
    how.add_argument("--compile", choices=("off", "on", "both"), default="off",
                     help="eager, torch.compile'd or both, for every mode (default %(default)s)")
    how.add_argument("--cases", nargs="+", choices=CASES, default=None,
                     help="explicit cases in this order, instead of --modes x --compile")
    how.add_argument("--eca-impl", nargs="+", choices=("auto", "fused", "plain"), default=None,
                     help="ECA implementations to measure each ECA network with (default: fused and plain for "
                          "--archs, auto for --released)")
    how.add_argument("--ksize", default=RELEASED, metavar="K",
                     help="ECA kernel sizes (main.py's --ksize forms; 'released': each network's released ones, "
                          "3557 for eca_resnet50)")
    how.add_argument("--batch-size", type=int, default=256, metavar="N", help="images per step")
    how.add_argument("--img-size", type=int, default=224, metavar="PX", help="side of the square synthetic images")
    how.add_argument("--amp", choices=tuple(AMP_DTYPES), default="bf16",
                     help="autocast dtype (fp32: no autocast); the microbenchmark's tensors' dtype")
    how.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                     help="networks and images in channels_last memory format")
    how.add_argument("--repeats", type=int, default=3, metavar="N", help="timed repeats; the median is reported")
    how.add_argument("--warmup-steps", type=int, default=10, metavar="N", help="untimed steps before the repeats")
    how.add_argument("--timed-steps", type=int, default=30, metavar="N",
                     help="steps per timed repeat (at most, with --repeat-seconds)")
    how.add_argument("--repeat-seconds", type=float, default=None, metavar="S",
                     help="time as many steps per repeat as fill about S seconds (at least 3, at most "
                          "--timed-steps), so deep networks take no longer than shallow ones")
    how.add_argument("--host-time", action="store_true",
                     help=f"--released: also time each eager row's step on {bench.HOST_TIME_BATCH} images of "
                          f"{bench.HOST_TIME_IMG_SIZE} px, where the GPU's kernels take microseconds: an upper bound "
                          "on the host's time to issue a step (the page's 'host ms/step')")
    how.add_argument("--freeze-heap", action=argparse.BooleanOptionalAction, default=True,
                     help="time with the objects alive after warm-up out of the garbage collector's view, as "
                          "the training loop does (ecanet.engine.freeze_heap); each repeat's collections and "
                          "their host time go to the JSON either way")
    how.add_argument("--inductor-option", action="append", type=inductor_option, default=[],
                     metavar="NAME=VALUE",
                     help="an Inductor setting for the compiled cases (a torch._inductor.config name, a Python "
                          "literal value), e.g. combo_kernels=True; repeat for several; default none")
    how.add_argument("--fresh-process", choices=("compiled", "all", "none"), default="compiled",
                     help="with --released: measure each row of these cases in a fresh Python process, as a "
                          "training run holds one network (default %(default)s: a process that compiled other "
                          "networks before slows the host side of later compiled steps); 'none': all in this one")
    how.add_argument("--compile-jobs", type=int, default=1, metavar="N",
                     help="with --released and fresh processes: first compile every compiled row in N processes "
                          "at once into Inductor's on-disk cache (TORCHINDUCTOR_CACHE_DIR), then time them one "
                          "at a time, each tuning its kernels alone (default %(default)s: each compiles as it is "
                          "timed)")
    how.add_argument("--resume", action="store_true",
                     help="with --released and --json: keep the rows the results file holds and measure only the "
                          "others, e.g. after a run was cut short (the file must come from the same GPU, versions "
                          "and settings; without a file, start one)")
    how.add_argument("--row", nargs=2, type=str, default=None, metavar=("CASE", "INDEX"),
                     help=argparse.SUPPRESS)  # the one row of --released a fresh process measures
    how.add_argument("--device", default="cuda", help="where to measure (torch device string)")
    how.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the weights and synthetic images")

    parser.add_argument("--json", metavar="PATH", default=None, help="write every number here")
    parser.add_argument("--summarize", nargs="+", metavar="JSON", default=None,
                        help="measure nothing: print one summary of these --json files")
    parser.add_argument("--page", metavar="PATH", default=None,
                        help="with --summarize: write the summary as a docs page (docs/performance.md) instead")
    return parser


def check_output_path(option: str, path: str | None, makes_folders: bool) -> None:
    """A usage error, before anything is measured, where ``path`` cannot be written as a file: a folder, a path
    under a file, or (unless the writer ``makes_folders``) under a missing folder. An existing file is replaced:
    that is what a rerun is for."""
    if path is None:
        return
    target = Path(path)
    try:
        check_output_file(target, option, "results.json")
    except UserError as error:
        usage_error(str(error))
    if not makes_folders and not target.parent.is_dir():
        usage_error(f"{option} {path}: its folder {target.parent} is missing. Create it or pass another path.")


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, before measuring or writing anything, options that could only produce error rows."""
    if args.page is not None and not args.summarize:
        parser.error("--page writes the page of --summarize's files; add --summarize RESULTS.json ... or drop --page.")
    check_output_path("--json", args.json, makes_folders=True)   # the results file's writer makes its folder
    check_output_path("--page", args.page, makes_folders=False)
    if args.summarize:
        return
    for option in ("batch_size", "img_size", "repeats", "timed_steps", "loader_batches", "loss_batch_size"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} takes a positive number, got {getattr(args, option)}.")
    if args.warmup_steps < 0 or (args.repeat_seconds is not None and args.repeat_seconds <= 0):
        parser.error("--warmup-steps takes 0 or more steps and --repeat-seconds a positive number of seconds.")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device {args.device} is not a torch device; pass cuda, cuda:N or cpu.")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda (the default) needs a CUDA GPU, and torch sees none. Pass --device cpu to "
                     "measure on the CPU.")
    unknown = [arch for arch in [*args.archs, args.loss_arch] if not models.is_model(arch)]
    if unknown:
        usage_error(f"{models.unknown_model_message(unknown[0])}. Pass known names to --archs and --loss-arch.")
    if args.ksize != RELEASED:
        for arch in [a for a in args.archs if a.startswith(ECA_PREFIX)]:
            try:
                config.check_kernel_sizes(arch, args.ksize, "--archs")
            except UserError as error:
                usage_error(str(error))
    if args.torchvision:
        import torchvision
        unknown = sorted(set(args.torchvision) - set(torchvision.models.list_models()))
        if unknown:
            parser.error(f"--torchvision {' '.join(unknown)}: not a torchvision network. Pass names that "
                         f"torchvision.models.list_models() gives, e.g. resnet50.")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)   # what a --fresh-process row process re-parses
    if args.row is not None:
        case, index = args.row
        if case not in CASES or not index.isdigit():
            parser.error(f"--row takes a case ({', '.join(CASES)}) and a row number, got {case} {index}.")
        args.row = (case, int(index))
    if args.compile_jobs < 1:
        parser.error(f"--compile-jobs takes a positive number of processes, got {args.compile_jobs}.")
    check_args(parser, args)
    previous = None
    if args.resume:
        if args.released is None or args.json is None:
            parser.error("--resume continues the --released run whose results file --json names; give both.")
        previous, problem = resumable_results(args)
        if problem:
            parser.error(problem)
    if any(not 0.0 <= share <= 1.0 for share in args.gpu_decode_share):
        parser.error(f"--gpu-decode-share takes fractions between 0 and 1, got {args.gpu_decode_share}.")
    if args.summarize:
        try:
            text = summarize(args.summarize)
            page = performance_page(args.summarize, text) if args.page else None
        except UserError as error:   # a file that is not a results file
            usage_error(str(error))
        if page is not None:
            Path(args.page).write_text(page)
            log.info("wrote %s", args.page)
        else:
            print(text)
        return 0
    report = Report(args.json, args, previous)
    env = report.data["environment"]
    print(f"# {env.get('gpu', args.device)}, torch {env['torch']}, triton {env['triton']}, {env['date_utc']}",
          flush=True)
    for title, suite in SUITES:
        if args.row is not None and suite is not run_released:   # a row process measures that row alone
            continue
        t0 = time.perf_counter()
        section = suite(args, report)
        if section is not None:
            print(f"\n## {title} ({time.perf_counter() - t0:.0f} s)\n\n{section}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
