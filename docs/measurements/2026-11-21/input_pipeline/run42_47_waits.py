"""Issue 8, runs 42-47: how long the training loop waited for each batch in the middle of the epochs, against
how much slower each step was than on synthetic data. python run42_47_waits.py [FIRST LAST] (default 42 47)

Reads runNN_steps_TAG.json (TIME_WAIT=1: one wait per batch the training loop took, training and validation
batches in order, 158 per epoch here) and prints, over steps 11-155 of each epoch: the mean wait per step, how
many waits passed 10 ms, and the mean step interval next to that call's synthetic run."""
import glob, json, os, statistics, sys

STEPS_PER_EPOCH, FIRST_STEP, LAST_STEP = 156, 10, 155
here = os.path.dirname(os.path.abspath(__file__))
first, last = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) == 3 else (42, 47)
for run in range(first, last + 1):
    files = sorted(glob.glob(os.path.join(here, f"run{run}_steps_*.json")))
    steps = {}
    for path in files:
        data = json.load(open(path))
        d = data["intervals_ms"]
        steps[path] = [x for e in range(3) for x in d[e * STEPS_PER_EPOCH + FIRST_STEP:(e + 1) * STEPS_PER_EPOCH - 1]]
    synthetic = [statistics.mean(v) for p, v in steps.items() if p.endswith("_synthetic.json")]
    for path in files:
        waits = json.load(open(path))["wait_ms"]
        if not waits:
            continue
        per_epoch = len(waits) // 3
        mid = [w for e in range(3) for w in waits[e * per_epoch + FIRST_STEP:e * per_epoch + LAST_STEP]]
        step = statistics.mean(steps[path])
        extra = f", {step - synthetic[0]:+.2f} ms against synthetic" if synthetic else ""
        print(f"run {run} {os.path.basename(path)[len(f'run{run}_steps_'):-5]:<22} mid-epoch wait for a batch: "
              f"mean {statistics.mean(mid):5.2f} ms/step, {sum(w > 10 for w in mid):3d} over 10 ms; "
              f"step {step:.2f} ms{extra}")
