"""Issue 8, runs 24-30 (and 31-34): every run's steady-state training speed against the synthetic run of the same call.

    python docs/measurements/2026-11-21/input_pipeline/run24_30_summary.py            # runs 24-30
    python docs/measurements/2026-11-21/input_pipeline/run24_30_summary.py 31 34      # runs 31-34

Reads the step files (runNN_steps_TAG.json, written by run19_steps_main.py): per epoch, the mean interval
between optimizer steps 11-156 of the 156-step epochs (40,000 images, batch 256), as img/s, and its ratio to
the mean of the same call's 'synthetic' run. Also the late part of each epoch (steps 81-156) alone."""
import glob, json, os, re, statistics, sys

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS_PER_EPOCH, BATCH = 156, 256


def epochs(intervals, first, last):
    return [BATCH * 1e3 / statistics.mean(intervals[e * STEPS_PER_EPOCH + first:(e + 1) * STEPS_PER_EPOCH - last])
            for e in range(len(intervals) // STEPS_PER_EPOCH + 1)
            if len(intervals[e * STEPS_PER_EPOCH + first:(e + 1) * STEPS_PER_EPOCH - last]) > 10]


FIRST, LAST = map(int, sys.argv[1:3]) if len(sys.argv) > 2 else (24, 30)
for run in range(FIRST, LAST + 1):
    files = sorted(glob.glob(os.path.join(HERE, f"run{run}_steps_*.json")))
    if not files:
        print(f"run {run}: no step files (no run finished)")
        continue
    runs = {re.sub(rf"^run{run}_steps_|\.json$", "", os.path.basename(f)): json.load(open(f))["intervals_ms"] for f in files}
    base = statistics.mean(epochs(runs["synthetic"], 10, 1))
    print(f"run {run} (synthetic mean {base:,.0f} img/s)")
    for tag, intervals in runs.items():
        whole, late = epochs(intervals, 10, 1), epochs(intervals, 80, 1)
        print(f"  {tag:24s} steps 11-156: {' / '.join(f'{v:,.0f}' for v in whole):24s} "
              f"{min(whole) / base:.2f}-{max(whole) / base:.2f}x (mean {statistics.mean(whole) / base:.3f}x); "
              f"steps 81-156: {min(late) / base:.2f}-{max(late) / base:.2f}x")
