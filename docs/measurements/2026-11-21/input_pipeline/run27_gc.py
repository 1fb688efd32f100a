"""Issue 8, run 27: are the rare ~0.7 s stalls of runs 24-26 Python's garbage collector? Records every
collection (generation, duration) from the 20th optimizer step on; env GC_FREEZE=1 calls gc.freeze() at
that step (everything alive then, torch.compile's graphs included, leaves the collector's generations).
python3 run27_gc.py TAG STEPS_PER_EPOCH main.py-args...   (runs run25_steps_cpu.py -> run19_steps_main.py)"""
import atexit, collections, gc, os, runpy, sys, time
from torch.optim.optimizer import register_optimizer_step_post_hook

here = os.path.dirname(os.path.abspath(__file__))
tag = sys.argv[1]
FROM_STEP = 20
state = {"steps": 0, "t": None, "on": False}
durations = collections.defaultdict(list)


def on_gc(phase, info):
    if not state["on"]:
        return
    if phase == "start":
        state["t"] = time.perf_counter()
    elif state["t"] is not None:
        durations[info["generation"]].append(1e3 * (time.perf_counter() - state["t"]))


def on_step(*args):
    state["steps"] += 1
    if state["steps"] == FROM_STEP:
        tracked = len(gc.get_objects())
        if os.environ.get("GC_FREEZE") == "1":
            gc.freeze()
        print(f"#### {tag}: step {FROM_STEP}: {tracked:,} objects tracked by the collector; "
              f"frozen: {gc.get_freeze_count():,}", flush=True)
        state["on"] = True


gc.callbacks.append(on_gc)
register_optimizer_step_post_hook(on_step)


@atexit.register
def report():
    parts = [f"gen{g}: {len(d)} collections, {sum(d):.0f} ms in all, max {max(d):.1f} ms"
             for g, d in sorted(durations.items())]
    print(f"#### {tag}: collections after step {FROM_STEP}: " + ("; ".join(parts) or "none"), flush=True)


sys.argv = [os.path.join(here, "run25_steps_cpu.py")] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
