"""Issue 8, run 20: where a step's time goes with --decode gpu beside training (CUDA activity only, so the
profiler costs the CPU little). python3 .exp/prof2.py TAG FIRST_STEP ACTIVE main.py-args...
Per step: the GPU span, the training stream's busy time (merged kernel intervals) and its idle gaps, the
side streams' busy time, and how much of the side streams' time overlaps the training stream's."""
import collections, json, os, sys, time
sys.path.insert(0, os.getcwd())
import torch
from torch.profiler import profile, schedule, ProfilerActivity

tag, first, active = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
argv = sys.argv[4:]

def merge(iv):
    iv = sorted(iv); out = []
    for s, e in iv:
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out

def total(iv):
    return sum(e - s for s, e in iv)

def intersect(a, b):
    i = j = 0; t = 0.0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if hi > lo: t += hi - lo
        if a[i][1] < b[j][1]: i += 1
        else: j += 1
    return t

def handler(prof):
    k = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA and not e.name.startswith("ProfilerStep")]
    per = collections.defaultdict(list); names = collections.defaultdict(lambda: collections.defaultdict(float))
    for e in k:
        sid = getattr(e, "device_resource_id", None)
        per[sid].append((e.time_range.start, e.time_range.end)); names[sid][e.name] += e.time_range.elapsed_us()
    train_sid = max(per, key=lambda s: len(per[s]))
    t0 = min(s for s, _ in per[train_sid]); t1 = max(e for _, e in per[train_sid])
    span = (t1 - t0) / 1e3 / active
    train = merge(per[train_sid])
    side = merge([iv for sid, ivs in per.items() if sid != train_sid for iv in ivs])
    side = [[max(s, t0), min(e, t1)] for s, e in side if e > t0 and s < t1]
    gaps = sorted((b[0] - a[1]) / 1e3 for a, b in zip(train, train[1:]))
    big = [g for g in gaps if g > 0.05]
    print(f"#### {tag}: {active} steps from step {first}: training stream {train_sid}, span {span:.2f} ms/step; "
          f"training busy {total(train) / 1e3 / active:.2f}; its idle gaps {sum(gaps) / active:.2f} ms/step "
          f"({len(big) / active:.1f}/step over 50 us, summing {sum(big) / active:.2f} ms/step, largest {max(gaps, default=0):.2f} ms); "
          f"side streams busy {total(side) / 1e3 / active:.2f} ms/step, of which overlapping training "
          f"{intersect(train, side) / 1e3 / active:.2f}", flush=True)
    for sid in per:
        if sid == train_sid: continue
        top = sorted(names[sid].items(), key=lambda r: -r[1])[:4]
        print(f"####   side stream {sid}: " + "; ".join(f"{n[:60]} {t / 1e3 / active:.2f}" for n, t in top), flush=True)
    kt = sorted(names[train_sid].items(), key=lambda r: -r[1])[:3]
    print(f"####   training stream kernel time {sum(names[train_sid].values()) / 1e3 / active:.2f} ms/step (sum of kernels)", flush=True)

prof = profile(activities=[ProfilerActivity.CUDA], schedule=schedule(wait=first - 2, warmup=2, active=active, repeat=1),
               on_trace_ready=handler)
cpu = []
def hook(opt, args, kwargs):
    cpu.append((time.perf_counter(), time.thread_time())); prof.step()
from torch.optim.optimizer import register_optimizer_step_post_hook
register_optimizer_step_post_hook(hook)
import main as entry
prof.start()
rc = entry.main(argv)
prof.stop()
w = [1e3 * (b[0] - a[0]) for a, b in zip(cpu, cpu[1:])]; c = [1e3 * (b[1] - a[1]) for a, b in zip(cpu, cpu[1:])]
seg = slice(first + 12, None)
if len(w) > first + 14:
    print(f"#### {tag}: after the profiled steps: wall {sum(w[seg]) / len(w[seg]):.2f} ms/step, main thread CPU "
          f"{sum(c[seg]) / len(c[seg]):.2f} ms/step", flush=True)
sys.exit(rc)
