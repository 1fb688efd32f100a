#!/usr/bin/env python3
"""GPU benchmarks: model throughput (eager and compiled), the ECA layer against its memory floor, the loader.

    python scripts/benchmark.py --released --official-code ../ECANet/models --json results/released.json
                                        # every released ECA network against its baseline: docs/performance.md
    python scripts/benchmark.py --summarize results/benchmark_h200*.json --page docs/performance.md
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
one (e.g. a data-loader benchmark) is a function and an entry there.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import datetime
import hashlib
import importlib.util
import json
import logging
import os
import platform
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ecanet import bench, models  # noqa: E402
from ecanet.config import HelpFormatter  # noqa: E402
from ecanet.metrics import markdown_table  # noqa: E402
from ecanet.models import fused_eca_available  # noqa: E402

log = logging.getLogger("benchmark")

CASES = ("train-eager", "train-compiled", "infer-eager", "infer-compiled")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
MICRO_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
RELEASED = "released"
ECA_PREFIX = "eca_"
# What ecanet aims for: eca_resnet50 (k3557, the default 'auto' implementation) over ecanet's resnet50, measured
# in the same run; and an absolute figure on an H200.
TARGET_RATIOS = {"train-compiled": 0.98, "train-eager": 0.94, "infer-eager": 0.98}
TARGET_H200_COMPILED_TRAIN_IMG_S = 6500
TARGET_LAYER_VS_FLOOR = 1.5
# --released: every ECA network at this fraction of its baseline's img/s in every case, and steady: its
# spread over the repeats ((max - min) / median) at most SPREAD_FACTOR times its baseline's, where spreads
# under SPREAD_NOISE_FLOOR (0.1%) count as timer noise and pass.
TARGET_RELEASED_RATIO = 0.95
SPREAD_FACTOR = 2.0
SPREAD_NOISE_FLOOR = 0.001
CLOCK_STEADY = 0.01   # repeats whose mean SM clocks differ by at most 1% show one clock on the page
SOURCES = ("ecanet", "official", "timm")
MICRO_VARIANTS = (("tail", "fused"), ("tail", "plain"), ("no-attention tail", "none"),
                  ("layer", "fused"), ("layer", "plain"))
MOBILENET_MICRO_VARIANTS = (("residual tail", "fused"), ("residual tail", "plain"), ("layer", "fused"),
                            ("layer", "plain"))
# The released ECA networks (the official repository's checkpoints) and the network each one extends.
RELEASED_PAIRS = (("eca_resnet18", "resnet18"), ("eca_resnet34", "resnet34"), ("eca_resnet50", "resnet50"),
                  ("eca_resnet101", "resnet101"), ("eca_resnet152", "resnet152"),
                  ("eca_mobilenet_v2", "mobilenet_v2"))
# timm's nearest networks, by baseline: its ECA-ResNets have the deep 'd' stem, so each is set against the
# timm ResNet with that stem; timm has no ECA-MobileNetV2, only the baseline.
TIMM_PAIRS: dict[str, tuple[str | None, str]] = {"resnet50": ("ecaresnet50d", "resnet50d"),
                                                  "resnet101": ("ecaresnet101d", "resnet101d"),
                                                  "mobilenet_v2": (None, "mobilenetv2_100")}
DEFAULT_ECA_IMPLS = {"archs": ["fused", "plain"], "released": ["auto"]}


# ----------------------------------------------------------------------------------------------------
# Report: markdown to stdout, JSON to a file
# ----------------------------------------------------------------------------------------------------
def environment() -> dict:
    """GPU, library versions, date and the command: what a number means nothing without."""
    env = {"date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
           "python": platform.python_version(), "command": " ".join(sys.argv),
           "eca_fused_available": fused_eca_available()}
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["gpu_count"] = torch.cuda.device_count()
    env["host"] = host_description()
    env["code"] = code_revision()
    env["code_tree"] = code_tree()
    return env


def host_description() -> dict:
    """The host that launched the kernels: a step bound by its launches runs at the host's pace."""
    cpu = None
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), None)
    return {"cpu": cpu or platform.processor() or None, "cpus": len(os.sched_getaffinity(0)),
            "kernel": platform.release()}


GIT_TIMEOUT_S = 60        # seconds a git command may take before the code is recorded as unknown
RESULTS_FOLDER = "results"  # the data this script writes: not part of the code a measurement names


def code_revision() -> str | None:
    """The checkout's revision, '-dirty' when it has uncommitted changes; None outside a git checkout."""
    try:
        done = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty", "--abbrev=12"],
                              capture_output=True, text=True, timeout=GIT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def code_tree(root: Path = ROOT) -> str | None:
    """The git tree id of the checkout's tracked files outside ``results/``, as they are now, uncommitted
    changes included; None outside a git checkout. Run in a checkout of a commit, it gives the same id for the
    same code, so it tells which commit a results file was measured with.

    '-dirty' says only that something differs from the last commit; this names the code itself, so two
    results files measured with different uncommitted changes never pass for one code, and a copy of the
    files whose git history is older than they are still names the commit they match. ``results/`` is left
    out so that a tracked results file can be continued (``--resume``), and untracked files are left out, as
    ``--dirty`` leaves them. Files are hashed as git stores them in a repository with no clean filters or
    end-of-line conversion (this one has none); modes follow git's (``core.fileMode``), and a submodule counts
    as the commit the index records. Nothing is written to the repository."""
    def git(*command: str) -> bytes:
        done = subprocess.run(["git", "-C", str(root), *command], capture_output=True, timeout=GIT_TIMEOUT_S)
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, command)
        return done.stdout

    try:
        index = git("ls-files", "--stage", "-z")
        file_mode = git("config", "--bool", "--default", "true", "core.fileMode").strip() != b"false"
        tree: dict = {}
        for entry in filter(None, index.split(b"\0")):
            meta, path = entry.split(b"\t", 1)
            mode, object_id, stage = meta.split(b" ")
            if stage != b"0":            # an unresolved merge: no tree to name
                return None
            if path.split(b"/", 1)[0] == RESULTS_FOLDER.encode():
                continue
            full = root / os.fsdecode(path)
            if mode == b"160000":        # a submodule: the commit the index records
                value = (mode, bytes.fromhex(object_id.decode()))
            elif full.is_symlink():      # git stores a link as a blob of its target's path
                value = (b"120000", _git_object("blob", os.readlink(os.fsencode(full))))
            elif full.is_file():
                executable = full.stat().st_mode & stat.S_IXUSR if file_mode else mode == b"100755"
                value = (b"100755" if executable else b"100644", _git_object("blob", full.read_bytes()))
            else:                        # deleted: a commit of the files as they are leaves it out
                continue
            *folders, name = path.split(b"/")
            node = tree
            for folder in folders:
                node = node.setdefault(folder, {})
            node[name] = value
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    return _git_tree(tree).hex()


def _git_object(kind: str, body: bytes) -> bytes:
    """The SHA-1 id git gives an object of this kind and content."""
    return hashlib.sha1(f"{kind} {len(body)}\0".encode() + body).digest()


def _git_tree(node: dict) -> bytes:
    """The id of the git tree object of ``node`` ({name: (mode, id)} for a file, {name: {...}} for a folder,
    names and modes as bytes), in git's order: names compared as bytes, a folder's as if it ended in '/'."""
    entries = []
    for name, value in node.items():
        if isinstance(value, dict):
            entries.append((name + b"/", b"40000 " + name + b"\0" + _git_tree(value)))
        else:
            mode, object_id = value
            entries.append((name, mode + b" " + name + b"\0" + object_id))
    return _git_object("tree", b"".join(entry for _, entry in sorted(entries)))


class Report:
    """Sections of results; the JSON file is rewritten whenever one changes."""

    def __init__(self, path: str | None, args: argparse.Namespace, previous: dict | None = None) -> None:
        """``previous``: the results file this run continues (``--resume``); its sections are kept and this
        run's date and command are added to its environment under ``continued``."""
        self.path = Path(path) if path else None
        if previous is None:
            self.data = {"environment": environment(), "args": vars(args)}
        else:
            env = environment()
            self.data = previous
            self.data["environment"].setdefault("continued", []).append(
                {"date_utc": env["date_utc"], "command": env["command"]})

    def set(self, key: str, value: object) -> None:
        self.data[key] = value
        if self.path is not None:   # written whole, then renamed: a run killed meanwhile leaves the last file
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(self.path.name + ".partial")
            partial.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
            os.replace(partial, self.path)


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


def _with_ratios(records: list[dict]) -> None:
    """Adds 'vs_baseline': an ECA row's img/s over its baseline's (eca_resnet50 -> resnet50), same case."""
    base = {(r["model"], r["case"]): r.get("images_per_s") for r in records if r["eca_impl"] is None}
    for r in records:
        if r["model"].startswith(ECA_PREFIX) and r.get("images_per_s"):
            reference = base.get((r["model"].removeprefix(ECA_PREFIX), r["case"]))
            r["vs_baseline"] = r["images_per_s"] / reference if reference else None


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
            _with_ratios(records)
            report.set("models", records)
    return _models_markdown(records, report.data["environment"].get("gpu", ""))


def _models_markdown(records: list[dict], gpu: str) -> str:
    rows = []
    for r in records:
        if "error" in r:
            rows.append((r["model"], r["eca_impl"] or "-", r["case"], "error", r["error"][:60], "", ""))
            continue
        ratio = r.get("vs_baseline")
        rows.append((r["model"], r["eca_impl"] or "-", r["case"], f"{r['images_per_s']:,.0f}",
                     f"{r['step_ms_median']:.1f}", f"{r['peak_memory_gib']:.2f}",
                     f"{ratio:.3f}x" if ratio else ""))
    table = markdown_table(("model", "ECA impl", "case", "img/s", "ms/step", "peak GiB", "vs baseline"), rows)
    return table + "\n\n" + _targets_markdown(records, gpu)


def _targets_markdown(records: list[dict], gpu: str) -> str:
    """The targets for eca_resnet50 against resnet50, where both were measured: the 'auto' rows (what
    ecanet runs by default: fused kernels in eager mode, the decomposed BN+ECA form under torch.compile),
    or the 'fused' rows where no 'auto' row was measured for that case."""
    lines = []
    auto_cases = {r["case"] for r in records if r["model"] == "eca_resnet50" and r["eca_impl"] == "auto"}
    for r in records:
        wanted = "auto" if r["case"] in auto_cases else "fused"
        if r["model"] == "eca_resnet50" and r["eca_impl"] == wanted and r.get("vs_baseline"):
            target = TARGET_RATIOS.get(r["case"])
            if target is not None:
                verdict = "met" if r["vs_baseline"] >= target else "NOT met"
                lines.append(f"- {r['case']} ({wanted}): {r['vs_baseline']:.3f}x (target >= {target:.2f}x): {verdict}")
            if r["case"] == "train-compiled" and "H200" in gpu:
                verdict = "met" if r["images_per_s"] >= TARGET_H200_COMPILED_TRAIN_IMG_S else "NOT met"
                lines.append(f"- train-compiled on {gpu}: {r['images_per_s']:,.0f} img/s "
                             f"(target >= {TARGET_H200_COMPILED_TRAIN_IMG_S:,}): {verdict}")
    return "Targets (eca_resnet50 vs resnet50):\n" + "\n".join(lines) if lines else ""


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


def _baseline_key(record: dict) -> tuple:
    """Which baseline a record compares with: the same pair, case and run (``run``: the results file's index
    when :func:`summarize` merges several), and the same code's, ecanet's for the official code's."""
    source = "ecanet" if record["source"] == "official" else record["source"]
    return record["pair"], source, record["case"], record.get("run")


def _released_ratios(records: list[dict]) -> None:
    """Adds 'vs_baseline' to every ECA row: its img/s over the same source's baseline in the same case
    (the official code has no baseline of its own: ecanet's, the same network as torchvision's)."""
    base = {_baseline_key(r): r.get("images_per_s") for r in records if r["role"] == "baseline"}
    for r in records:
        if r["role"] == "eca" and r.get("images_per_s"):
            reference = base.get(_baseline_key(r))
            r["vs_baseline"] = r["images_per_s"] / reference if reference else None


def _measure_released_row(args: argparse.Namespace, case: str, build: Callable) -> dict:
    """One row's measurement in this process: ``measure_throughput``'s numbers, or ``error`` if it failed."""
    try:
        return _throughput(args, build(), case).to_dict()
    except Exception as error:  # noqa: BLE001 -- one failed row must not lose the others
        log.exception("%s failed", case)
        return {"error": f"{type(error).__name__}: {error}"}
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


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
    if _row_key(record) != _row_key(expected):   # the child built its rows differently (e.g. an import failed)
        return {"error": f"the row's process measured {_row_key(record)}, not this row"}
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


# What a continued results file and the run continuing it must share (besides the machine and versions).
RESUME_SETTINGS = ("batch_size", "img_size", "amp", "channels_last", "repeats", "warmup_steps", "timed_steps",
                   "repeat_seconds", "freeze_heap", "inductor_option", "fresh_process")
RESUME_ENVIRONMENT = ("gpu", "torch", "cuda", "triton")
RESUME_DEFAULTS = {"fresh_process": "none"}   # files from before --fresh-process timed every row in one process


def usage_error(message: str) -> None:
    """Bad input found after parsing: argparse's form (the message on stderr, exit code 2)."""
    print(f"{Path(__file__).name}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _row_key(record: dict) -> tuple:
    """What identifies a row of --released across runs: pair, case, code, network, ECA implementation and the
    Inductor settings it was compiled with (:func:`_compile_settings`)."""
    return (record["pair"], record["case"], record["source"], record["model"], record.get("eca_impl"),
            record.get("compile_settings"))


def _compile_settings(run: dict, case: str) -> dict:
    """``{"compile_settings": "name=value, ..."}`` for a compiled row of a results file measured with
    ``--inductor-option``, else ``{}``: such rows (e.g. ``triton.cudagraphs=True``, the CUDA graphs of
    ``torch.compile(mode="reduce-overhead")``) are measurements of their own, beside the default compiler's."""
    options = run.get("args", {}).get("inductor_option") or []
    if not options or not case.endswith("-compiled"):
        return {}
    return {"compile_settings": ", ".join(f"{name}={value}" for name, value in options)}


def resumable_results(args: argparse.Namespace) -> tuple[dict | None, str | None]:
    """For ``--resume``: (the results file's contents, None), (None, None) when there is no file yet (a fresh
    start), or (None, why this run cannot continue it)."""
    path = Path(args.json)
    if not path.exists():
        return None, None
    try:
        previous = json.loads(path.read_text())
        env, settings, rows = previous["environment"], previous["args"], previous.get("released", [])
        if not (isinstance(env, dict) and isinstance(settings, dict) and isinstance(rows, list)
                and all(isinstance(r, dict) and {"pair", "case", "source", "model", "role"} <= r.keys() for r in rows)):
            raise TypeError("unexpected layout")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return None, (f"{path} is not a results file of this script ({type(error).__name__}: {error}); give "
                      f"--json a new path to start one.")
    now = environment()
    mine = json.loads(json.dumps(vars(args), default=str))
    differences = [f"{key} {env.get(key)!r} there, {now.get(key)!r} here" for key in RESUME_ENVIRONMENT
                   if env.get(key) != now.get(key)]
    if env.get("code_tree") and now.get("code_tree"):   # the files themselves (unknown outside a git checkout)
        if env["code_tree"] != now["code_tree"]:
            differences.append(f"code (git tree) {env['code_tree']} there, {now['code_tree']} here")
    elif env.get("code") and now.get("code") and env["code"] != now["code"]:   # files from before code_tree
        differences.append(f"code {env['code']} there, {now['code']} here")
    differences += [f"--{key.replace('_', '-')} {settings.get(key, RESUME_DEFAULTS.get(key))!r} there, "
                    f"{mine.get(key)!r} here" for key in RESUME_SETTINGS
                    if settings.get(key, RESUME_DEFAULTS.get(key)) != mine.get(key)]
    if differences:
        return None, (f"{path} was measured differently ({'; '.join(differences)}), so its rows and this run's "
                      f"would not compare. Continue it with its own settings on the same machine and versions, "
                      f"or write to another --json file.")
    return previous, None


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
    wanted = {row: _row_key(builders[row[1]][0] | {"case": row[0]}) for row in rows}
    retried = set(wanted.values())
    records = [r for r in report.data.get("released", []) if "error" not in r or _row_key(r) not in retried]
    measured = {_row_key(r) for r in records}
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
            _released_ratios(records)
            report.set("released", records)
    return released_report(records)


def _spread(record: dict) -> float:
    """A measurement's run-to-run spread: (max - min) / median of its repeats' img/s."""
    return (record["images_per_s_max"] - record["images_per_s_min"]) / record["images_per_s"]


def _gpu_clock(record: dict) -> tuple[str, str]:
    """(the repeats' mean SM clocks in MHz as the tables show them, the clock slowdowns NVML reported): one
    figure when the means agree within CLOCK_STEADY, else their range; empty strings for a row measured
    without NVML."""
    states = [state for state in record.get("gpu_all") or [] if state]
    if not states:
        return "", ""
    means = [state["sm_clock_mhz"] for state in states]
    low, high = min(means), max(means)
    clock = f"{high:,.0f}" if high - low <= CLOCK_STEADY * high else f"{low:,.0f}-{high:,.0f}"
    return clock, ", ".join(sorted({name for state in states for name in state["slowdowns"]}))


def _gpu_busy(record: dict) -> str:
    """The repeats' mean GPU busy percentages (NVML's utilisation), one figure or their range; empty for a row
    measured without NVML. Below 100% the GPU waited for the host."""
    busy = [state["busy_percent"] for state in record.get("gpu_all") or [] if state]
    if not busy:
        return ""
    low, high = round(min(busy)), round(max(busy))
    return f"{high}%" if low == high else f"{low}-{high}%"


def _network_name(record: dict) -> str:
    """The network as the tables show it: its name, then its ECA implementation and compile settings, if any."""
    details = [record[key] for key in ("eca_impl", "compile_settings") if record.get(key)]
    return record["model"] + (f" ({'; '.join(details)})" if details else "")


def _released_markdown(records: list[dict]) -> str:
    """One row per measurement, pair by pair: median img/s with the repeats' min-max and spread, the ECA
    rows' ratio to their baseline, and the GPU's SM clock where any row recorded it."""
    order = {base: i for i, (_, base) in enumerate(RELEASED_PAIRS)}
    cases = {case: i for i, case in enumerate(CASES)}
    rows = []
    for r in sorted(records, key=lambda r: (order.get(r["pair"], len(order)), cases.get(r["case"], len(cases)),
                                            SOURCES.index(r["source"]))):
        if "error" in r:
            rows.append((r["pair"], r["case"], _network_name(r), r["source"], "error", r["error"][:60], "", "", "", "",
                         ""))
            continue
        ratio = r.get("vs_baseline")
        clock, slowdowns = _gpu_clock(r)
        rows.append((r["pair"], r["case"], _network_name(r), r["source"], f"{r['images_per_s']:,.0f}",
                     f"{r['images_per_s_min']:,.0f}-{r['images_per_s_max']:,.0f}", f"{100 * _spread(r):.2f}%",
                     f"{len(r['images_per_s_all'])}x{r.get('timed_steps', '?')}", f"{ratio:.3f}x" if ratio else "",
                     clock + (f" ({slowdowns})" if slowdowns else ""), _gpu_busy(r)))
    header = ("pair", "case", "network", "code", "img/s (median)", "min-max", "spread", "repeats x steps",
              "vs baseline", "SM clock MHz", "GPU busy")
    if not any(row[-2] for row in rows):   # results files measured without NVML
        header, rows = header[:-2], [row[:-2] for row in rows]
    return markdown_table(header, rows)


def _released_ratio_table(records: list[dict]) -> str:
    """One row per ECA network and code, one column per case measured: its img/s over its baseline's."""
    cases = [case for case in CASES if any(r["case"] == case for r in records)]
    order = {base: i for i, (_, base) in enumerate(RELEASED_PAIRS)}
    ratios: dict[tuple, dict[str, float]] = {}
    for r in sorted(records, key=lambda r: (order.get(r["pair"], len(order)), SOURCES.index(r["source"]))):
        if r["role"] == "eca":
            ratios.setdefault((r["pair"], _network_name(r), r["source"]), {})[r["case"]] = r.get("vs_baseline")
    rows = [(pair, name, source, *(f"{by_case[c]:.3f}x" if by_case.get(c) else "-" for c in cases))
            for (pair, name, source), by_case in ratios.items()]
    return markdown_table(("pair", "ECA network", "code", *cases), rows)


def _released_targets(records: list[dict]) -> str:
    """The verdicts on ecanet's ECA networks (default implementation and compiler): at TARGET_RELEASED_RATIO of
    their baselines in all four cases, and their spreads within SPREAD_FACTOR of their baselines'. The official
    code's and timm's rows are references, judged by neither."""
    ours = {(r["pair"], r["case"]): r for r in records if r["role"] == "eca" and r["source"] == "ecanet"
            and r.get("eca_impl") in (None, "auto") and not r.get("compile_settings")}
    missing = [f"{base} {case}" for _, base in RELEASED_PAIRS for case in CASES if (base, case) not in ours]
    # a row without a ratio (it or its baseline failed) counts as not met
    below = [f"{r['model']} {r['case']} " + (f"{r['vs_baseline']:.3f}x" if r.get("vs_baseline") else "failed")
             for r in ours.values() if (r.get("vs_baseline") or 0) < TARGET_RELEASED_RATIO]
    ratio_line = (f"- ecanet's ECA networks (auto) at >= {TARGET_RELEASED_RATIO}x of their baselines: "
                  + (f"{len(ours) - len(below)} of {len(ours)} measurements "
                     + ("met" if not below else "met; NOT met: " + ", ".join(below)) if ours else "none measured")
                  + (f" (not measured: {', '.join(missing)})" if missing and ours else ""))
    baseline_spread = {_baseline_key(r): _spread(r) for r in records if r["role"] == "baseline" and "error" not in r}
    unsteady, compared = [], 0
    for r in ours.values():
        reference = baseline_spread.get(_baseline_key(r))
        if "error" in r or reference is None:
            continue
        compared += 1
        if _spread(r) > max(SPREAD_FACTOR * reference, SPREAD_NOISE_FLOOR):
            (clock, slowdowns), busy = _gpu_clock(r), _gpu_busy(r)
            gpu = ((f"; SM clock {clock} MHz" + (f" ({slowdowns})" if slowdowns else "") if clock else "")
                   + (f"; GPU busy {busy}" if busy else ""))
            unsteady.append(f"{_network_name(r)} [{r['source']}] {r['case']} {100 * _spread(r):.2f}% "
                            f"(baseline {100 * reference:.2f}%{gpu})")
    spread_line = (f"- spread of ecanet's ECA networks (auto) at most {SPREAD_FACTOR:g}x their baselines' (spreads under "
                   f"{100 * SPREAD_NOISE_FLOOR:g}% count as timer noise): {compared - len(unsteady)} of {compared} "
                   + ("met" if not unsteady else "met; NOT met: " + "; ".join(unsteady)))
    return "Targets:\n" + ratio_line + "\n" + spread_line


def released_report(records: list[dict]) -> str:
    """The --released section: ratios at a glance, the verdicts, then every measurement."""
    return (_released_ratio_table(records) + "\n\n" + _released_targets(records) + "\n\n### Every measurement\n\n"
            + _released_markdown(records))


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
# curves in the two memory layouts, whose only difference is the order of floating-point sums.
NOISE_REFERENCE = "plain, NCHW"
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
# --summarize: one report from the JSON files of several runs; --page: the docs page
# ----------------------------------------------------------------------------------------------------
def _latest_measurements(records: list[dict]) -> list[dict]:
    """The rows a summary of several results files shows: each ECA network's measurement of a case from the
    last file that gives it a ratio (all of its rows where none does), and the baselines those rows compare
    with. A baseline no kept ECA row compares with is left out when another file's rows of that pair and case
    are kept (an interrupted later run that measured the baseline only); one with no ECA rows of its pair and
    case anywhere stays."""
    latest: dict[tuple, int] = {}
    for r in records:
        if r["role"] == "eca" and r.get("vs_baseline"):
            latest[_row_key(r)] = max(latest.get(_row_key(r), -1), r["run"])
    kept_eca = [r for r in records if r["role"] == "eca" and latest.get(_row_key(r), r["run"]) == r["run"]]
    kept = {id(r) for r in kept_eca}
    compared = {_baseline_key(r) for r in kept_eca}
    groups_with_eca = {_baseline_key(r)[:3] for r in records if r["role"] == "eca"}
    return [r for r in records if id(r) in kept or r["role"] == "baseline" and (
        _baseline_key(r) in compared or _baseline_key(r)[:3] not in groups_with_eca)]


def read_results(path: str) -> dict:
    """A results file this script wrote (``--json``), or a usage error naming the file and what is wrong."""
    try:
        results = json.loads(Path(path).read_text())
    except OSError as error:
        usage_error(f"cannot read results file {path} ({error.strerror or error}); give files that --json wrote.")
    except ValueError as error:
        usage_error(f"{path} is not JSON ({error}); give files that --json wrote.")
    if not isinstance(results, dict) or "environment" not in results:
        usage_error(f"{path} is not a results file of this script (no 'environment'); give files that --json wrote.")
    return results


def _measured_at(run: dict) -> datetime.datetime:
    """When a results file's run began (``environment.date_utc``); the earliest time for a file without one."""
    try:
        when = datetime.datetime.fromisoformat(run["environment"]["date_utc"])
    except (KeyError, TypeError, ValueError):
        when = datetime.datetime.min
    return when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)


def summarize(paths: list[str]) -> str:
    """Merges the sections of several ``--json`` files into one short markdown summary, the files taken in
    the order they were measured (their ``environment.date_utc``; files without one first, as given)."""
    runs = sorted((read_results(path) for path in paths), key=_measured_at)
    env = runs[-1]["environment"] if runs else {}
    parts = [f"# Summary: {env.get('gpu', '?')}, torch {env.get('torch')}, triton {env.get('triton')}, "
             f"{env.get('date_utc')}"]
    for run in runs:
        if "loss_curve" in run:
            lc = run["loss_curve"]
            diffs = ", ".join(f"{name} {d:.2e}" for name, d in lc["max_relative_difference"].items())
            parts.append(f"Loss curves ({lc['arch']}, {len(lc['curves'][lc['reference']])} steps): max relative "
                         f"difference to {lc['reference']}: {diffs} (agreement: within {lc['noise_factor']:g}x "
                         f"the '{NOISE_REFERENCE}' difference)")
        if "eca_micro" in run:
            micro = run["eca_micro"]
            rows = [(r["shape"] if isinstance(r["shape"], str) else "x".join(map(str, r["shape"])), r["variant"],
                     r["impl"], f"{r['forward_backward_ms']:.3f}", f"{r['floor_forward_backward_ms']:.3f}",
                     f"{r['forward_backward_vs_floor']:.2f}x") for r in micro["results"] if r["impl"] != "none"]
            parts.append(f"ECA layer (copy bandwidth {micro['copy_bandwidth_gb_s'] / 1e3:.2f} TB/s):\n\n"
                         + markdown_table(("shape", "variant", "impl", "fwd+bwd ms", "floor ms", "vs floor"), rows))
            if micro.get("per_step"):
                parts.append("ECA cost per ResNet-50 step: " + "; ".join(
                    f"{impl} {v['train_ms']:.2f} ms train, {v['infer_ms']:.2f} ms infer"
                    for impl, v in micro["per_step"].items()))
    released = [record | {"run": index} | _compile_settings(run, record["case"])
                for index, run in enumerate(runs) for record in run.get("released", [])]
    if released:
        _released_ratios(released)
        released = _latest_measurements(released)
        parts.append("## Released networks against their baselines\n\n" + released_report(released))
    records = [record for run in runs for record in run.get("models", [])]
    if records:
        _with_ratios(records)
        parts.append("## Networks by ECA implementation (`--archs`)\n\n"
                     + _models_markdown(records, env.get("gpu", "")))
    return "\n\n".join(parts)


PAGE_HEADER = """# Performance

Generated by `python scripts/benchmark.py --summarize {files} --page docs/performance.md` from the results
files, which this command wrote:

{commands}

Synthetic data already on the device (the model alone, not the input pipeline), bf16 autocast,
channels_last, batch 256, 224x224; each figure is the median of timed repeats after warm-up
(`ecanet.bench.measure_throughput`); "heap frozen" means the timed steps ran with the objects alive after
warm-up out of Python's garbage collector's view, as in training (`ecanet.engine.freeze_heap`).
"vs baseline" is an ECA network's images/s over its baseline's (`eca_resnet50` over `resnet50`) in the
same run. ECA implementations: `auto` is ecanet's default (fused
Triton kernels in eager mode, for the ResNets' training each block's BatchNorm with its ECA as the tail's
kernels; under `torch.compile` the BatchNorm+ECA form that Inductor fuses, or for ECA-MobileNetV2's
training the tail's own Triton kernels); `fused` insists on the Triton ECA kernels and, in all eager
training, runs each block's BatchNorm with its ECA as the tail's kernels; `plain` is the official computation. Each results
file records the code it was measured with: `environment.code`, the commit, and `environment.code_tree`,
the git tree id of the tracked files outside `results/` as they were, uncommitted changes included.
How the fused ECA works: [design/fused_eca.md](design/fused_eca.md).
The released networks (`--released`) come first: each ECA network's images/s over its baseline's per case,
then the targets (every ECA network of ecanet at >= 0.95x of its baseline in all four cases, and timings as
steady as the baseline's), then every measurement with its median over the repeats, the repeats' min-max,
and the spread ((max - min) / median). "repeats x steps" is how many timed repeats of how many steps each
(`--repeat-seconds` sizes the repeats, so deep networks time fewer steps). Files that recorded them add the
GPU's SM clock (the repeats' mean clocks, a range where they differ by more than 1%), any reason NVML gave for
a lowered clock, such as the power cap, and how busy the GPU was (the share of time a kernel ran; below 100%
it waited for the host) (`ecanet.bench.GpuWatch`). The official code's networks
(the official repository's `models/`) compare with ecanet's baseline, which is the same network;
timm's ECA-ResNets, which have the deep 'd' stem, with timm's ResNet of that stem. A case not measured
shows "-" and is listed under the targets. `--released` times each compiled row in a fresh Python process
(`--fresh-process`), loading graphs that parallel processes compiled first (`--compile-jobs`): a process
that has compiled and timed other networks before slows the host side of later compiled ECA steps. The kernel
configurations those parallel processes autotuned are then deleted, so each timed process tunes its kernels
alone: tuned side by side on one GPU, they time the contention as much as the kernels.
Each results file above says how its rows were timed. Where several results files measure the same network
and case, the page shows the most recently measured file's measurement with the baseline of its own run; the
earlier rows stay in their files. Compiled rows of a file measured with Inductor settings (`--inductor-option`) are rows of
their own, the settings beside the network's name, and the targets count only the default compiler's rows:
`triton.cudagraphs=True` replays each compiled step as CUDA graphs, as `main.py --compile-mode
reduce-overhead` does, so the host no longer launches each kernel.
`scripts/gpu_bench.sh` (`STEPS=released`) runs all of it.

"""


def performance_page(paths: list[str], summary: str) -> str:
    """docs/performance.md: how the tables were made (each results file's command, machine and date), then
    the tables of :func:`summarize`."""
    commands = []
    for path in paths:
        run = read_results(path)
        env = run["environment"]
        command = env.get("command", "").replace(str(ROOT) + "/", "")
        # results files that predate --freeze-heap were timed with the heap unfrozen
        heap = "heap frozen" if run["args"].get("freeze_heap") else "heap not frozen"
        # results files that predate --fresh-process timed every row in the one process
        fresh = run["args"].get("fresh_process")
        if fresh == "compiled" and not any(r.get("case", "").endswith("-compiled") for r in run.get("released", [])):
            fresh = None   # nothing compiled: every row was timed in the one process
        processes = {"compiled": "compiled rows each in a fresh process", "all": "each row in a fresh process"}.get(
            fresh, "all rows in one process")
        # a file may keep only some of its run's rows (e.g. one source's networks) and say which, or carry a note
        # on how it was measured
        notes = "; ".join(env[key] for key in ("rows_kept", "note") if env.get(key))
        subset = f" ({notes})" if notes else ""
        # a run continued with --resume lists each continuation's date and command
        continued = "".join(f"; continued {c['date_utc'][:10]} by `python {c['command'].replace(str(ROOT) + '/', '')}`"
                            for c in env.get("continued", []))
        commands.append(f"- `{path}`{subset}: {env.get('gpu', '?')} ({env.get('gpu_count', 1)} visible), torch "
                        f"{env.get('torch')}, Triton {env.get('triton')}, {env.get('date_utc', '?')[:10]}, "
                        f"{heap}, {processes}; `python {command}`{continued}")
    return PAGE_HEADER.format(files=" ".join(paths), commands="\n".join(commands)) + summary.split("\n", 1)[1].lstrip() + "\n"


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
    from ecanet.data import (IMAGENET_MEAN, IMAGENET_STD, GpuDecodeOptions, build_data, build_train_transform,
                             build_val_transform, default_workers, region_decode_available)
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
        text = summarize(args.summarize)
        if args.page:
            Path(args.page).write_text(performance_page(args.summarize, text))
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
