# One-off step-timing wrapper of 2026-11-21 (issue 8), run as .exp/steps_main.py by run7_command.sh on one H200
# over commit cb2b282 plus run7_stream_priority.diff (reverted afterwards). Kept for traceability; not maintained.
"""Step intervals of main.py (issue 8): python3 .exp/steps_main.py TAG STEPS_PER_EPOCH [--no-priority] main.py-args..."""
import json, os, sys, time, contextlib
sys.path.insert(0, os.getcwd())
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
tag, per_epoch = sys.argv[1], int(sys.argv[2])
argv = sys.argv[3:]
import main as entry
if argv and argv[0] == "--no-priority":
    argv = argv[1:]
    entry.training_stream = lambda device: contextlib.nullcontext()
times = []
register_optimizer_step_post_hook(lambda *a: times.append(time.perf_counter()))
rc = entry.main(argv)
d = [1e3 * (b - a) for a, b in zip(times, times[1:])]   # d[i]: step i+1 -> i+2 (0-based steps)
out = {}
for epoch in range(len(times) // per_epoch):
    lo, hi = epoch * per_epoch + 10, (epoch + 1) * per_epoch - 1   # steps 11.. last of the epoch
    seg = d[lo:hi]
    if seg:
        mean = sum(seg) / len(seg)
        out[epoch + 1] = {"steps": f"{lo + 2}-{hi + 1}", "mean_ms": round(mean, 2), "img_s": round(256e3 / mean)}
print(f"#### {tag}: mid-epoch (steps 11-{per_epoch} of each epoch, every step's interval) {json.dumps(out)}", flush=True)
json.dump({"intervals_ms": d, "per_epoch": out}, open(os.path.join(os.environ.get("OUT", "/tmp"), f"steps_{tag}.json"), "w"))
sys.exit(rc)
