"""Issue 8, run 24: why the training stream idles with --decode gpu. CPU and CUDA activity together.

    python3 run24_profile_cpu.py TAG FIRST_STEP ACTIVE main.py-args...

Profiles ACTIVE optimizer steps from FIRST_STEP, exports the trace and reads it back:
* every idle gap of the training stream (the stream with most kernels) over 50 us, split by the kernel
  that ends it: launched after the gap began (the CPU was late: "launch-late") or before (the GPU held it
  back, e.g. waiting for a batch's event: "held");
* for launch-late gaps, what the launching thread was doing during the gap (its longest overlapping events);
* CUDA runtime/driver calls over 1 ms on any thread, by name and thread.
"""
import collections, gzip, json, os, shutil, sys, time
sys.path.insert(0, os.getcwd())
import torch
from torch.profiler import profile, schedule, ProfilerActivity

tag, first, active = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
argv = sys.argv[4:]
GAP_US, SLOW_CALL_US = 50.0, 1000.0


def merge(iv):
    out = []
    for s, e in sorted(iv):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out


def analyse(path):
    events = json.load(open(path))["traceEvents"]
    gpu = [e for e in events if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    api = [e for e in events if e.get("ph") == "X" and e.get("cat") in ("cuda_runtime", "cuda_driver")]
    cpu = [e for e in events if e.get("ph") == "X" and e.get("cat") in ("cpu_op", "user_annotation", "python_function")
           and not str(e.get("name", "")).startswith("ProfilerStep")]
    launch_of = {e["args"].get("correlation"): e for e in api if "correlation" in e.get("args", {})}
    by_stream = collections.defaultdict(list)
    for e in gpu:
        by_stream[e["args"].get("stream")].append(e)
    train_sid = max(by_stream, key=lambda s: sum(1 for e in by_stream[s] if e["cat"] == "kernel"))
    train = sorted(by_stream[train_sid], key=lambda e: e["ts"])
    t0, t1 = train[0]["ts"], train[-1]["ts"] + train[-1]["dur"]
    busy = merge([[e["ts"], e["ts"] + e["dur"]] for e in train])
    starts = {round(e["ts"], 3): e for e in train}
    kinds = collections.Counter(); kind_us = collections.Counter(); doing = collections.Counter()
    lags = []
    for a, b in zip(busy, busy[1:]):
        gap = b[0] - a[1]
        if gap < GAP_US:
            continue
        nxt = starts.get(round(b[0], 3))
        launch = launch_of.get(nxt["args"].get("correlation")) if nxt else None
        if launch is None:
            kinds["unmatched"] += 1; kind_us["unmatched"] += gap
            continue
        launch_end = launch["ts"] + launch["dur"]
        if launch_end > a[1]:
            kinds["launch-late"] += 1; kind_us["launch-late"] += gap
            lags.append((gap, launch["name"]))
            tid = launch["tid"]
            for e in cpu + api:
                if e.get("tid") != tid:
                    continue
                lo, hi = max(e["ts"], a[1]), min(e["ts"] + e["dur"], b[0])
                if hi > lo and e["dur"] > 0.5 * gap:   # events that cover most of the gap: the outer ones
                    doing[e["name"][:70]] += hi - lo
        else:
            kinds["held"] += 1; kind_us["held"] += gap
            lags.append((gap, "held: " + launch["name"]))
    steps = max(1, active)
    print(f"#### {tag}: training stream {train_sid}, span {(t1 - t0) / 1e3 / steps:.2f} ms/step, busy "
          f"{sum(e - s for s, e in busy) / 1e3 / steps:.2f} ms/step", flush=True)
    for k in kinds:
        print(f"####   gaps {k}: {kinds[k] / steps:.1f}/step, {kind_us[k] / 1e3 / steps:.2f} ms/step", flush=True)
    print("####   largest gaps (us, what ended them): " +
          "; ".join(f"{g:.0f} {n}" for g, n in sorted(lags, reverse=True)[:8]), flush=True)
    print("####   launching thread during launch-late gaps (ms/step): " +
          "; ".join(f"{n} {t / 1e3 / steps:.2f}" for n, t in doing.most_common(8)), flush=True)
    slow = collections.defaultdict(list)
    for e in api:
        if e["dur"] >= SLOW_CALL_US and t0 <= e["ts"] <= t1:
            slow[(e["name"], e["tid"])].append(e["dur"])
    train_tid = collections.Counter(launch_of[e["args"]["correlation"]]["tid"] for e in train
                                    if e["args"].get("correlation") in launch_of).most_common(1)[0][0]
    for (name, tid), durs in sorted(slow.items(), key=lambda r: -sum(r[1]))[:12]:
        who = "training thread" if tid == train_tid else f"thread {tid}"
        print(f"####   calls over 1 ms: {name} on {who}: {len(durs)} calls, {sum(durs) / 1e3:.1f} ms in all, "
              f"max {max(durs) / 1e3:.1f} ms", flush=True)


def handler(prof):
    path = f"/tmp/trace_{tag}.json"
    prof.export_chrome_trace(path)
    try:
        analyse(path)
    except Exception as exc:  # the trace is kept whatever happens
        print(f"#### {tag}: analysis failed: {exc!r}", flush=True)
    out = os.environ.get("OUT")
    if out:
        with open(path, "rb") as src, gzip.open(os.path.join(out, f"trace_{tag}.json.gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)


prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
               schedule=schedule(wait=first - 2, warmup=2, active=active, repeat=1), on_trace_ready=handler)
from torch.optim.optimizer import register_optimizer_step_post_hook
register_optimizer_step_post_hook(lambda *a: prof.step())
import main as entry
prof.start()
rc = entry.main(argv)
prof.stop()
sys.exit(rc)
