"""Issue 8, run 45: the compiled step's host cost. On synthetic data the two training threads use 38.5 ms of CPU per
38.7 ms step (run 44: one whole core), so the step has no host slack, and anything else in the process that delays
them delays the GPU. Inductor's C++ wrapper (torch._inductor.config.cpp_wrapper) launches the compiled graphs'
kernels from generated C++ instead of Python. Does it give the step host slack, and does real-JPEG training then
come closer to synthetic speed?

python3 run45_cpp_wrapper.py TAG STEPS_PER_EPOCH main.py-args...   (then as run43_decoder.py)
env CPP_WRAPPER=1: turn the C++ wrapper on (otherwise unchanged)."""
import os, runpy, sys
import torch._inductor.config as inductor_config

if os.environ.get("CPP_WRAPPER") == "1":
    inductor_config.cpp_wrapper = True
print(f"#### {sys.argv[1]}: inductor cpp_wrapper = {inductor_config.cpp_wrapper}", flush=True)
sys.argv = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "run43_decoder.py")] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
