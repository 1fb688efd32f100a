"""Issue 8, run 25: run19_steps_main.py plus the main process's CPU time per step (all its threads: the
training and autograd threads, decode threads, pin-memory thread), mid-epoch, and an optional GIL switch
interval. python3 run25_steps_cpu.py TAG STEPS_PER_EPOCH main.py-args...   env: SWITCH_MS=0.1"""
import atexit, os, runpy, sys, time
from torch.optim.optimizer import register_optimizer_step_post_hook

here = os.path.dirname(os.path.abspath(__file__))
tag, per_epoch = sys.argv[1], int(sys.argv[2])
if os.environ.get("SWITCH_MS"):
    sys.setswitchinterval(float(os.environ["SWITCH_MS"]) / 1e3)
    print(f"#### {tag}: GIL switch interval {sys.getswitchinterval() * 1e3:.2f} ms", flush=True)
marks = []
register_optimizer_step_post_hook(lambda *a: marks.append((time.perf_counter(), time.process_time())))


@atexit.register
def report():
    rows = []
    for epoch in range(len(marks) // per_epoch):
        lo, hi = epoch * per_epoch + 10, (epoch + 1) * per_epoch - 1
        if hi - lo > 1:
            wall = marks[hi][0] - marks[lo][0]
            cpu = marks[hi][1] - marks[lo][1]
            rows.append(f"epoch {epoch + 1}: wall {1e3 * wall / (hi - lo):.1f} ms/step, main-process CPU "
                        f"{1e3 * cpu / (hi - lo):.1f} ms/step ({cpu / wall:.2f} cores)")
    print(f"#### {tag}: " + "; ".join(rows), flush=True)


sys.argv = [os.path.join(here, "run19_steps_main.py")] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
