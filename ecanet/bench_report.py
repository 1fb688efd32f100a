"""The results of ``scripts/benchmark.py``: its results files, what they record, and the reports made of them.

- The results file (``--json``): :class:`Report` holds a run's sections and rewrites the file whenever one
  changes; :func:`environment` is what every file records beside its numbers: the GPU, the versions, the
  command, the host, and the code, named by the checkout's revision (:func:`code_revision`) and by the git
  tree id of its tracked files as they are (:func:`code_tree`).
- Continuing a results file (``--resume``): :func:`resumable_results` says whether this run may add to it,
  and :func:`row_key` which of its rows it holds already.
- The reports: each suite's tables and its verdicts on the targets (:func:`models_markdown`,
  :func:`released_report`), the summary of several results files (:func:`summarize`, ``--summarize``) and
  the page docs/performance.md (:func:`performance_page`, ``--page``).

The measurements are :mod:`ecanet.bench`'s; the command line that runs them is ``scripts/benchmark.py``.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import stat
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from ecanet.bench import HOST_TIME_BATCH, HOST_TIME_IMG_SIZE
from ecanet.errors import UserError
from ecanet.metrics import markdown_table
from ecanet.models import fused_eca_available

# The checkout this package is in (scripts/benchmark.py runs from it): the code a measurement names.
ROOT = Path(__file__).resolve().parents[1]

CASES = ("train-eager", "train-compiled", "infer-eager", "infer-compiled")
ECA_PREFIX = "eca_"
SOURCES = ("ecanet", "official", "timm")
# The released ECA networks (the official repository's checkpoints) and the network each one extends.
RELEASED_PAIRS = (("eca_resnet18", "resnet18"), ("eca_resnet34", "resnet34"), ("eca_resnet50", "resnet50"),
                  ("eca_resnet101", "resnet101"), ("eca_resnet152", "resnet152"),
                  ("eca_mobilenet_v2", "mobilenet_v2"))
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
# The --loss-curve curve that measures the noise: the reference implementation's, in the NCHW memory layout.
NOISE_REFERENCE = "plain, NCHW"


# ----------------------------------------------------------------------------------------------------
# The results file: the run's environment, and its sections as JSON
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
RESULTS_FOLDER = "results"  # the data scripts/benchmark.py writes: not part of the code a measurement names


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
# Continuing a results file (--resume)
# ----------------------------------------------------------------------------------------------------
# What a continued results file and the run continuing it must share (besides the machine and versions).
RESUME_SETTINGS = ("batch_size", "img_size", "amp", "channels_last", "repeats", "warmup_steps", "timed_steps",
                   "repeat_seconds", "freeze_heap", "inductor_option", "fresh_process", "host_time")
RESUME_ENVIRONMENT = ("gpu", "torch", "cuda", "triton")
# Files from before --fresh-process timed every row in one process, and from before --host-time no host.
RESUME_DEFAULTS = {"fresh_process": "none", "host_time": False}


def row_key(record: dict) -> tuple:
    """What identifies a row of --released across runs: pair, case, code, network, ECA implementation and the
    Inductor settings it was compiled with (:func:`_compile_settings`)."""
    return (record["pair"], record["case"], record["source"], record["model"], record.get("eca_impl"),
            record.get("compile_settings"))


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


# ----------------------------------------------------------------------------------------------------
# Each suite's tables and its targets
# ----------------------------------------------------------------------------------------------------
def with_ratios(records: list[dict]) -> None:
    """Adds 'vs_baseline': an ECA row's img/s over its baseline's (eca_resnet50 -> resnet50), same case."""
    base = {(r["model"], r["case"]): r.get("images_per_s") for r in records if r["eca_impl"] is None}
    for r in records:
        if r["model"].startswith(ECA_PREFIX) and r.get("images_per_s"):
            reference = base.get((r["model"].removeprefix(ECA_PREFIX), r["case"]))
            r["vs_baseline"] = r["images_per_s"] / reference if reference else None


def models_markdown(records: list[dict], gpu: str) -> str:
    """The --archs section: one row per measurement, then the targets where they were measured."""
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


def _baseline_key(record: dict) -> tuple:
    """Which baseline a record compares with: the same pair, case and run (``run``: the results file's index
    when :func:`summarize` merges several), and the same code's, ecanet's for the official code's."""
    source = "ecanet" if record["source"] == "official" else record["source"]
    return record["pair"], source, record["case"], record.get("run")


def released_ratios(records: list[dict]) -> None:
    """Adds 'vs_baseline' to every ECA row: its img/s over the same source's baseline in the same case
    (the official code has no baseline of its own: ecanet's, the same network as torchvision's)."""
    base = {_baseline_key(r): r.get("images_per_s") for r in records if r["role"] == "baseline"}
    for r in records:
        if r["role"] == "eca" and r.get("images_per_s"):
            reference = base.get(_baseline_key(r))
            r["vs_baseline"] = r["images_per_s"] / reference if reference else None


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


def _host_ms(record: dict) -> str:
    """The median of the row's host times per step (``--host-time``), empty for a row measured without."""
    host = record.get("host_ms_all")
    return f"{statistics.median(host):.1f}" if host else ""


def _released_markdown(records: list[dict]) -> str:
    """One row per measurement, pair by pair: median img/s with the repeats' min-max and spread, the ECA
    rows' ratio to their baseline, and where any row recorded them, the GPU's SM clock and busy time and the
    host's time per step."""
    order = {base: i for i, (_, base) in enumerate(RELEASED_PAIRS)}
    cases = {case: i for i, case in enumerate(CASES)}
    rows = []
    for r in sorted(records, key=lambda r: (order.get(r["pair"], len(order)), cases.get(r["case"], len(cases)),
                                            SOURCES.index(r["source"]))):
        measured = r.get("measured", "")
        if "error" in r:
            rows.append((r["pair"], r["case"], _network_name(r), r["source"], measured, "error", r["error"][:60], "",
                         "", "", "", "", ""))
            continue
        ratio = r.get("vs_baseline")
        clock, slowdowns = _gpu_clock(r)
        rows.append((r["pair"], r["case"], _network_name(r), r["source"], measured, f"{r['images_per_s']:,.0f}",
                     f"{r['images_per_s_min']:,.0f}-{r['images_per_s_max']:,.0f}", f"{100 * _spread(r):.2f}%",
                     f"{len(r['images_per_s_all'])}x{r.get('timed_steps', '?')}", f"{ratio:.3f}x" if ratio else "",
                     clock + (f" ({slowdowns})" if slowdowns else ""), _gpu_busy(r), _host_ms(r)))
    header = ("pair", "case", "network", "code", "measured", "img/s (median)", "min-max", "spread",
              "repeats x steps", "vs baseline", "SM clock MHz", "GPU busy", "host ms/step")
    # Columns no row has are left out: "measured" (the results file's date) where the rows come from one file,
    # the GPU's reads and the host time where the files were measured without NVML or without --host-time.
    optional = {"measured", "SM clock MHz", "GPU busy", "host ms/step"}
    shown = [i for i, name in enumerate(header) if name not in optional or any(row[i] for row in rows)]
    return markdown_table([header[i] for i in shown], [[row[i] for i in shown] for row in rows])


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
# --summarize: one report from the results files of several runs; --page: the docs page
# ----------------------------------------------------------------------------------------------------
def _compile_settings(run: dict, case: str) -> dict:
    """``{"compile_settings": "name=value, ..."}`` for a compiled row of a results file measured with
    ``--inductor-option``, else ``{}``: such rows (e.g. ``triton.cudagraphs=True``, the CUDA graphs of
    ``torch.compile(mode="reduce-overhead")``) are measurements of their own, beside the default compiler's."""
    options = run.get("args", {}).get("inductor_option") or []
    if not options or not case.endswith("-compiled"):
        return {}
    return {"compile_settings": ", ".join(f"{name}={value}" for name, value in options)}


def _latest_measurements(records: list[dict]) -> list[dict]:
    """The rows a summary of several results files shows: each ECA network's measurement of a case from the
    last file that gives it a ratio (all of its rows where none does), and the baselines those rows compare
    with. A baseline no kept ECA row compares with is left out when another file's rows of that pair and case
    are kept (an interrupted later run that measured the baseline only); one with no ECA rows of its pair and
    case anywhere stays."""
    latest: dict[tuple, int] = {}
    for r in records:
        if r["role"] == "eca" and r.get("vs_baseline"):
            latest[row_key(r)] = max(latest.get(row_key(r), -1), r["run"])
    kept_eca = [r for r in records if r["role"] == "eca" and latest.get(row_key(r), r["run"]) == r["run"]]
    kept = {id(r) for r in kept_eca}
    compared = {_baseline_key(r) for r in kept_eca}
    groups_with_eca = {_baseline_key(r)[:3] for r in records if r["role"] == "eca"}
    return [r for r in records if id(r) in kept or r["role"] == "baseline" and (
        _baseline_key(r) in compared or _baseline_key(r)[:3] not in groups_with_eca)]


def read_results(path: str) -> dict:
    """A results file of ``scripts/benchmark.py`` (its ``--json``); a :class:`~ecanet.errors.UserError` naming the
    file and what is wrong when it is not one."""
    try:
        results = json.loads(Path(path).read_text())
    except OSError as error:
        raise UserError(f"cannot read results file {path} ({error.strerror or error}); give files that --json "
                        f"wrote.") from error
    except ValueError as error:
        raise UserError(f"{path} is not JSON ({error}); give files that --json wrote.") from error
    if not isinstance(results, dict) or "environment" not in results:
        raise UserError(f"{path} is not a results file of this script (no 'environment'); give files that --json "
                        f"wrote.")
    return results


def _measured_at(run: dict) -> datetime.datetime:
    """When a results file's run began (``environment.date_utc``); the earliest time for a file without one."""
    try:
        when = datetime.datetime.fromisoformat(run["environment"]["date_utc"])
    except (KeyError, TypeError, ValueError):
        when = datetime.datetime.min
    return when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)


def _file_label(environment: dict, with_gpu: bool) -> str:
    """A results file's date (UTC), and its GPU's name without the vendor's where ``with_gpu``:
    "2026-12-05, H100 80GB HBM3"."""
    date = str(environment.get("date_utc", "?"))[:10]
    if not with_gpu:
        return date
    return f"{date}, {str(environment.get('gpu', '?')).removeprefix('NVIDIA ')}"


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
    # Rows from several files carry their file's date, and its GPU where the files name different GPUs: the
    # same pair's baseline may appear once per file.
    released_runs = [run for run in runs if run.get("released")]
    dated = len(released_runs) > 1
    several_gpus = len({run["environment"].get("gpu") for run in released_runs}) > 1
    released = [record | {"run": index} | _compile_settings(run, record["case"])
                | ({"measured": _file_label(run["environment"], several_gpus)} if dated else {})
                for index, run in enumerate(runs) for record in run.get("released", [])]
    if released:
        released_ratios(released)
        released = _latest_measurements(released)
        parts.append("## Released networks against their baselines\n\n" + released_report(released))
    records = [record for run in runs for record in run.get("models", [])]
    if records:
        with_ratios(records)
        parts.append("## Networks by ECA implementation (`--archs`)\n\n"
                     + models_markdown(records, env.get("gpu", "")))
    return "\n\n".join(parts)


PAGE_HEADER = """# Performance

Generated by `python scripts/benchmark.py --summarize {files} --page docs/performance.md` from these results
files, each written by the command beside it:

{commands}

Synthetic data already on the device (the model alone, not the input pipeline), bf16 autocast,
channels_last, batch 256, 224x224; each figure is the median of timed repeats after warm-up
(`ecanet.bench.measure_throughput`); "heap frozen" means the timed steps ran with the objects alive after
warm-up out of Python's garbage collector's view, as in training (`ecanet.engine.freeze_heap`).
"vs baseline" is an ECA network's images/s over its baseline's (`eca_resnet50` over `resnet50`) in the
same run. ECA implementations: `auto` is ecanet's default (fused Triton kernels in eager mode, for the
ResNets' training each block's BatchNorm with its ECA as the tail's kernels, and in inference the eval-mode
BatchNorm before each ECA folded into ECA's passes; under `torch.compile` the BatchNorm+ECA form that Inductor
fuses, or for ECA-MobileNetV2's training the tail's own Triton kernels); `fused` insists on the Triton ECA
kernels and runs every network's eager training tail as those kernels, ECA-MobileNetV2's too; `plain` is the
official computation. A row's implementation is what that name runs in the tree its file was measured with,
which the file records as `environment.code_tree` (the git tree id of the tracked files outside `results/`,
uncommitted changes included). How the fused ECA works: [design/fused_eca.md](design/fused_eca.md). The released networks
(`--released`) come first: each ECA network's images/s over its baseline's per case, then the targets (every
ECA network of ecanet at >= 0.95x of its baseline in all four cases, and timings as steady as the baseline's),
then every measurement with its median over the repeats, the repeats' min-max, and the spread ((max - min) /
median); where the rows come from several files, "measured" is the date of each row's file, and its GPU where
the files name different GPUs, which tells a pair's baselines apart. "repeats x steps" is how many timed
repeats of how many steps each (`--repeat-seconds` sizes the repeats, so deep networks time fewer steps).
Files that recorded them add the GPU's SM clock (the repeats' mean clocks, a range where they differ by more
than 1%), any reason NVML gave for a lowered clock, such as the power cap, and how busy the GPU was (the share
of time a kernel ran; below 100% it waited for the host) (`ecanet.bench.GpuWatch`), and, measured with
`--host-time`, the eager step's "host ms/step": the median time of the same step on {host_batch} images of
{host_img_size} px, where each kernel takes the GPU microseconds, so the step takes what the host needs to
issue it, or more where such small kernels still keep the GPU busy: an upper bound on the host's time
(`ecanet.bench.measure_host_time`); where it nears the step's time at the real batch, the GPU waits for the
host. The official code's networks (the official repository's `models/`) compare with ecanet's baseline,
which is the same network;
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
`scripts/gpu_bench.sh` (`STEPS=released`) runs steps of these kinds in one go.

"""


def command_writing(command: str, path: str) -> str:
    """``command`` (a benchmark command line as a results file records it) with its ``--json`` output replaced by
    ``path``, where the file is kept: a results file is written on the GPU machine and copied into the
    repository, and the command that reproduces it there writes to the kept path."""
    words = command.split(" ")
    for index, word in enumerate(words[:-1]):
        if word == "--json":
            words[index + 1] = path
    return " ".join(words)


def performance_page(paths: list[str], summary: str) -> str:
    """docs/performance.md: how the tables were made (each results file's command, machine and date), then
    the tables of :func:`summarize`."""
    commands = []
    for path in paths:
        run = read_results(path)
        env = run["environment"]
        command = command_writing(env.get("command", "").replace(str(ROOT) + "/", ""), path)
        # a results file without freeze_heap in its args was timed with the heap unfrozen
        heap = "heap frozen" if run["args"].get("freeze_heap") else "heap not frozen"
        # one without fresh_process timed every row in the one process
        fresh = run["args"].get("fresh_process")
        if fresh == "compiled" and not any(r.get("case", "").endswith("-compiled") for r in run.get("released", [])):
            fresh = None   # nothing compiled: every row was timed in the one process
        processes = {"compiled": "compiled rows each in a fresh process", "all": "each row in a fresh process"}.get(
            fresh, "all rows in one process")
        # a run continued with --resume lists each continuation's date and command
        continued = "".join(f"; continued {c['date_utc'][:10]} by "
                            f"`python {command_writing(c['command'].replace(str(ROOT) + '/', ''), path)}`"
                            for c in env.get("continued", []))
        commands.append(f"- `{path}`: {env.get('gpu', '?')} ({env.get('gpu_count', 1)} visible), torch "
                        f"{env.get('torch')}, Triton {env.get('triton')}, {env.get('date_utc', '?')[:10]}, "
                        f"{heap}, {processes}; `python {command}`{continued}")
    return PAGE_HEADER.format(files=" ".join(paths), commands="\n".join(commands), host_batch=HOST_TIME_BATCH,
                              host_img_size=HOST_TIME_IMG_SIZE) + summary.split("\n", 1)[1].lstrip() + "\n"

