"""Derives the figures docs/benchmarks.md quotes from run 6 (issue 8), from the files beside this script.

    python docs/measurements/2026-11-21/input_pipeline/run6_derive.py

run6_profile_training.log lists, per CUDA stream, the kernel time per profiled step and its largest kernels.
Its "GPU busy" percentages are wrong: the profiler's step annotation ("ProfilerStep*") is listed as a CUDA
event on stream 7 and spans each whole step. Here it is subtracted. Stream 7 is the training stream.
"""
import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRAINING_STREAM = "7"

sections, tag, stream = {}, None, None
for line in (HERE / "run6_profile_training.log").read_text().splitlines():
    if m := re.match(r"#### (\w+): 8 profiled steps, GPU span [\d.]+ ms \(([\d.]+) ms/step\)", line):
        tag, stream = m.group(1), None
        sections[tag] = {"span": float(m.group(2)), "streams": {}, "kernels": []}
    elif line.startswith("  CPU self time"):  # end of a section's GPU part
        tag = None
    elif tag is None:
        continue
    elif m := re.match(r"\s+stream (\d+): \d+ kernels, [\d.]+ ms \(([\d.]+) ms/step\)", line):
        stream = m.group(1)
        sections[tag]["streams"][stream] = float(m.group(2))
    elif stream and (m := re.match(r"\s+([\d.]+) ms/step\s+[\d.]+/step\s+(.*)", line)):
        sections[tag]["kernels"].append((stream, float(m.group(1)), m.group(2)))

print("| data | GPU span per step | training-stream kernels | side-stream kernels | training stream waiting |")
for tag, s in sections.items():
    annotation = sum(ms for st, ms, name in s["kernels"] if name.startswith("ProfilerStep"))
    training = s["streams"][TRAINING_STREAM] - annotation
    side = sum(ms for st, ms in s["streams"].items() if st != TRAINING_STREAM)
    print(f"| {tag} | {s['span']:.1f} ms | {training:.1f} ms | {side:.1f} ms | {s['span'] - training:.1f} ms |")

families = {"antialiased resize": "upsample", "uint8-to-float copy": "direct_copy",
            "nvJPEG colour conversion": "rgba2rgb", "host-to-device copies": "Memcpy"}
side_kernels = [(ms, name) for st, ms, name in sections["gpu"]["kernels"] if st != TRAINING_STREAM]
for label, key in families.items():  # the log lists each stream's 8 largest kernels
    print(f"GPU decode, side streams, {label}: {sum(ms for ms, n in side_kernels if key in n):.2f} ms/step")

intervals = json.loads((HERE / "run6_step_intervals.json").read_text())["intervals_ms"]
for tag, d in intervals.items():  # d[i]: optimizer step i+1 -> i+2; steps 11-40, before the profiler started
    mean = sum(d[9:39]) / 30
    print(f"{tag}: steps 11-40 mean {mean:.2f} ms = {256e3 / mean:,.0f} img/s")
