"""Issue 8, run 24: more from the CPU+CUDA trace of --decode gpu (run24_trace_gpu_auto.json.gz, 25 steps from
optimizer step 200). python docs/measurements/2026-11-21/input_pipeline/run24_trace_analysis.py

1. For each side stream: how much of its kernel and copy time overlaps a training-stream kernel.
2. The CPU time of two pure-Python calls of the training thread that launch almost nothing
   (Optimizer.zero_grad, set_to_none: a loop over the model's 177 parameter tensors): spread = time the thread did not run."""
import bisect, collections, gzip, json, os, statistics

HERE = os.path.dirname(os.path.abspath(__file__))
events = [e for e in json.load(gzip.open(os.path.join(HERE, "run24_trace_gpu_auto.json.gz")))["traceEvents"]
          if e.get("ph") == "X"]
gpu = collections.defaultdict(list)
for e in events:
    if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset"):
        gpu[e["args"].get("stream")].append(e)
train_id = max(gpu, key=lambda s: sum(1 for e in gpu[s] if e["cat"] == "kernel"))
merged = []
for s, t in sorted((e["ts"], e["ts"] + e["dur"]) for e in gpu[train_id] if e["cat"] == "kernel"):
    if merged and s <= merged[-1][1]:
        merged[-1][1] = max(merged[-1][1], t)
    else:
        merged.append([s, t])
starts = [s for s, _ in merged]


def overlap(s, t):
    i = bisect.bisect_right(starts, t)
    return sum(max(0.0, min(b, t) - max(a, s)) for a, b in merged[max(0, i - 3):i + 1])


print(f"training stream {train_id}")
for sid in sorted(gpu, key=str):
    if sid == train_id:
        continue
    kernels = [e for e in gpu[sid] if e["cat"] == "kernel"]
    copies = [e for e in gpu[sid] if e["cat"] != "kernel"]
    kt, ct = sum(e["dur"] for e in kernels), sum(e["dur"] for e in copies)
    top = collections.Counter(e["name"][:32] for e in kernels).most_common(1)
    print(f"stream {sid}: kernels {kt / 1e3:.1f} ms, {sum(overlap(e['ts'], e['ts'] + e['dur']) for e in kernels) / max(kt, 1):.0%}"
          f" beside training kernels; copies {ct / 1e3:.1f} ms, "
          f"{sum(overlap(e['ts'], e['ts'] + e['dur']) for e in copies) / max(ct, 1):.0%} beside; most kernels: {top}")
for name in ("Optimizer.zero_grad#SGD.zero_grad", "Optimizer.step#SGD.step"):
    d = sorted(e["dur"] / 1e3 for e in events if e.get("name") == name)
    print(f"{name}: {len(d)} calls, median {statistics.median(d):.2f} ms, max {d[-1]:.2f} ms, all: "
          + " ".join(f"{x:.1f}" for x in d))
