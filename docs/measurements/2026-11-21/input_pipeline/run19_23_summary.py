"""The steady-state tables of runs 19-23 (issue 8) from their step files, beside this script.

    python docs/measurements/2026-11-21/input_pipeline/run19_23_summary.py

Each runNN_steps_TAG.json holds the interval of every optimizer step of one main.py run (run19_steps_main.py)
and, with TIME_WAIT=1, how long the training loop waited for each batch. Epochs have 39 training steps and
one validation batch. The figure per epoch is 256 images over the mean interval of its steps 11-39; epoch 1
is left out (the workers fill their queues while the model compiles). Ratios are against the synthetic-data
run of the same call, on the same machine (run 23 has none). The waits are those of the same steps."""
import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEADY_EPOCHS = ("2", "3", "4")
STEPS_PER_EPOCH, BATCHES_PER_EPOCH = 39, 40   # 39 training batches, then one validation batch
FIRST_STEP = 11                               # 1-based; the figures use steps 11-39 of each epoch
LATE_MS = 10.0                                # a batch that kept the training loop waiting longer than this


def steady_waits(wait_ms: list[float]) -> list[float]:
    """The waits before steps 12-39 of epochs 2-4: the steps whose intervals make the epoch figures."""
    return [wait_ms[epoch * BATCHES_PER_EPOCH + k] for epoch in (1, 2, 3) for k in range(FIRST_STEP, STEPS_PER_EPOCH)]


for run in (19, 20, 21, 22, 23):
    files = sorted(HERE.glob(f"run{run}_steps_*.json"))
    data = {f.stem.split("steps_", 1)[1]: json.loads(f.read_text()) for f in files}
    synthetic = data.pop("synthetic", None)
    if synthetic:
        rates = [synthetic["per_epoch"][e]["img_s"] for e in STEADY_EPOCHS]
        print(f"run {run}: synthetic {' / '.join(f'{r:,}' for r in rates)} img/s (epochs 2 / 3 / 4)")
    else:
        print(f"run {run}: no synthetic run in this call")
    for tag, record in data.items():
        rates = [record["per_epoch"][e]["img_s"] for e in STEADY_EPOCHS]
        line = f"  {tag:<22} {' / '.join(f'{r:,}' for r in rates):<24}"
        if synthetic:
            ratios = [r / synthetic["per_epoch"][e]["img_s"] for r, e in zip(rates, STEADY_EPOCHS)]
            base = statistics.mean(synthetic["per_epoch"][e]["img_s"] for e in STEADY_EPOCHS)
            line += f" {min(ratios):.2f}-{max(ratios):.2f}x (mean {statistics.mean(rates) / base:.3f}x)"
        if record.get("wait_ms"):
            waits = steady_waits(record["wait_ms"])
            late = [w for w in waits if w > LATE_MS]
            line += (f"  waits: median {statistics.median(waits):.2f} ms, mean {statistics.mean(waits):.1f} ms, "
                     f"{len(late)} of {len(waits)} over {LATE_MS:g} ms"
                     + (f" (mean {statistics.mean(late):.0f} ms)" if late else ""))
        print(line)
