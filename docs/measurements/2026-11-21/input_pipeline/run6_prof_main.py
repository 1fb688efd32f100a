# One-off profiling wrapper of 2026-11-21 (issue 8), run as .exp/prof_main.py by run6_command.sh on one H200
# over commit cb2b282. Kept so run6_profile_training.log can be traced; not maintained.
"""Profile steps of main.py (issue 8): python3 .exp/prof_main.py TAG WAIT ACTIVE main.py-args..."""
import collections, json, os, sys, time
sys.path.insert(0, os.getcwd())
import torch
from torch.profiler import profile, schedule, ProfilerActivity

tag, wait, active = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
argv = sys.argv[4:]
OUT = os.environ.get("OUT", "/tmp")

def merged_busy(intervals):
    intervals.sort(); busy = 0.0; cur_s = cur_e = None
    for s, e in intervals:
        if cur_e is None or s > cur_e:
            if cur_e is not None: busy += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None: busy += cur_e - cur_s
    return busy

def handler(prof):
    ev = [e for e in prof.events()]
    k = [e for e in ev if e.device_type == torch.autograd.DeviceType.CUDA]
    if not k:
        print("no kernels"); return
    t0 = min(e.time_range.start for e in k); t1 = max(e.time_range.end for e in k)
    span = (t1 - t0) / 1e3
    streams = collections.defaultdict(lambda: [0, 0.0])
    names = collections.defaultdict(lambda: collections.defaultdict(lambda: [0, 0.0]))
    for e in k:
        sid = getattr(e, "device_resource_id", None)
        streams[sid][0] += 1; streams[sid][1] += e.time_range.elapsed_us() / 1e3
        n = names[sid][e.name]; n[0] += 1; n[1] += e.time_range.elapsed_us() / 1e3
    busy = merged_busy([(e.time_range.start, e.time_range.end) for e in k]) / 1e3
    print(f"\n#### {tag}: {active} profiled steps, GPU span {span:.1f} ms ({span/active:.2f} ms/step), "
          f"GPU busy (any stream) {busy:.1f} ms = {busy/span:.1%}")
    for sid, (n, ms) in sorted(streams.items(), key=lambda r: -r[1][1]):
        print(f"  stream {sid}: {n} kernels, {ms:.1f} ms ({ms/active:.2f} ms/step)")
        for name, (c, t) in sorted(names[sid].items(), key=lambda r: -r[1][1])[:8]:
            print(f"      {t/active:7.3f} ms/step {c/active:7.1f}/step  {name[:110]}")
    # CPU side: threads and their top-level op time
    threads = collections.defaultdict(float)
    cpu_ops = collections.defaultdict(lambda: [0, 0.0])
    for e in ev:
        if e.device_type == torch.autograd.DeviceType.CPU:
            threads[e.thread] += e.self_cpu_time_total / 1e3
            o = cpu_ops[e.name]; o[0] += 1; o[1] += e.self_cpu_time_total / 1e3
    print("  CPU self time per thread (ms/step):", {t: round(v / active, 2) for t, v in threads.items()})
    for name, (c, t) in sorted(cpu_ops.items(), key=lambda r: -r[1][1])[:15]:
        print(f"      cpu {t/active:7.3f} ms/step {c/active:7.1f}/step  {name[:100]}")
    sys.stdout.flush()

prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
               schedule=schedule(wait=wait, warmup=2, active=active, repeat=1), on_trace_ready=handler)
step_times = []
def hook(opt, args, kwargs):
    step_times.append(time.perf_counter())
    prof.step()
from torch.optim.optimizer import register_optimizer_step_post_hook
register_optimizer_step_post_hook(hook)
import main as entry
prof.start()
rc = entry.main(argv)
prof.stop()
d = [1e3 * (b - a) for a, b in zip(step_times, step_times[1:])]
print(f"#### {tag}: CPU-side step intervals (ms), steps 10-{len(d)}: median {sorted(d[10:])[len(d[10:])//2]:.2f}" if len(d) > 12 else "")
json.dump(d, open(os.path.join(OUT, f"steps_{tag}.json"), "w"))
sys.exit(rc)
