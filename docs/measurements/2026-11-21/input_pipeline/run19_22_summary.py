"""The steady-state table of runs 19-22 (issue 8) from their step files, beside this script.

    python docs/measurements/2026-11-21/input_pipeline/run19_22_summary.py

Each runNN_steps_TAG.json holds the interval of every optimizer step of one main.py run (run19_steps_main.py);
epochs have 39 steps, and the figure per epoch is 256 images over the mean interval of its steps 11-39.
Epoch 1 is left out: the workers fill their queues while the model compiles. Ratios are against the
synthetic-data run of the same call, on the same machine."""
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEADY_EPOCHS = ("2", "3", "4")

for run in (19, 20, 21, 22):
    files = sorted(HERE.glob(f"run{run}_steps_*.json"))
    per_epoch = {f.stem.split("steps_", 1)[1]: json.loads(f.read_text())["per_epoch"] for f in files}
    synthetic = per_epoch.pop("synthetic")
    base = sum(synthetic[e]["img_s"] for e in STEADY_EPOCHS) / len(STEADY_EPOCHS)
    synthetic_rates = [synthetic[e]["img_s"] for e in STEADY_EPOCHS]
    print(f"run {run}: synthetic {' / '.join(f'{r:,}' for r in synthetic_rates)} img/s (epochs 2 / 3 / 4)")
    for tag, epochs in per_epoch.items():
        rates = [epochs[e]["img_s"] for e in STEADY_EPOCHS if e in epochs]
        ratios = [r / synthetic[e]["img_s"] for r, e in zip(rates, STEADY_EPOCHS)]
        print(f"  {tag:<16} {' / '.join(f'{r:,}' for r in rates):<24} {min(ratios):.2f}-{max(ratios):.2f}x "
              f"(mean {sum(rates) / len(rates) / base:.3f}x)")
