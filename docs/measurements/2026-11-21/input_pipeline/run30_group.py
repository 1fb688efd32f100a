"""Issue 8, run 30: several batches per nvJPEG call (ecanet.gpu_decode.BATCHES_PER_DECODE_CALL from env
PER_CALL), then run25_steps_cpu.py -> run19_steps_main.py. python3 run30_group.py TAG STEPS_PER_EPOCH main.py-args...

The change it measured was not kept (no gain, docs/benchmarks.md): it is run30_batches_per_call.patch beside this
file, a diff against commit c8deaf2 (`git apply` it there to run this again)."""
import os, runpy, sys

sys.path.insert(0, os.getcwd())
import ecanet.gpu_decode as gd  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
if os.environ.get("PER_CALL"):
    gd.BATCHES_PER_DECODE_CALL = int(os.environ["PER_CALL"])
print(f"#### {sys.argv[1]}: BATCHES_PER_DECODE_CALL = {gd.BATCHES_PER_DECODE_CALL}", flush=True)
sys.argv = [os.path.join(here, "run25_steps_cpu.py")] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
