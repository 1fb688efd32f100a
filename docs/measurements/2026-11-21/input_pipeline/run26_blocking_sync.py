"""Issue 8, run 26: run25_steps_cpu.py with CUDA's blocking synchronisation (env BLOCKING_SYNC=1).

By default CUDA spin-waits in cudaStreamSynchronize/cudaEventSynchronize while it has fewer active contexts
than cores; torchvision's nvJPEG call ends in such a wait, so a decode thread burns a core while the GPU
decodes. CU_CTX_SCHED_BLOCKING_SYNC makes those waits sleep. Set on the primary context before torch
creates it. python3 run26_blocking_sync.py TAG STEPS_PER_EPOCH main.py-args..."""
import ctypes, os, runpy, sys

here = os.path.dirname(os.path.abspath(__file__))
CU_CTX_SCHED_BLOCKING_SYNC = 0x04
if os.environ.get("BLOCKING_SYNC") == "1":
    cuda = ctypes.CDLL("libcuda.so.1")
    dev = ctypes.c_int()
    assert cuda.cuInit(0) == 0 and cuda.cuDeviceGet(ctypes.byref(dev), 0) == 0
    rc = cuda.cuDevicePrimaryCtxSetFlags_v2(dev, CU_CTX_SCHED_BLOCKING_SYNC)
    flags, active = ctypes.c_uint(), ctypes.c_int()
    cuda.cuDevicePrimaryCtxGetState(dev, ctypes.byref(flags), ctypes.byref(active))
    print(f"#### {sys.argv[1]}: cuDevicePrimaryCtxSetFlags_v2 -> {rc}; primary context flags {flags.value:#x}, "
          f"active {active.value}", flush=True)
sys.argv = [os.path.join(here, "run25_steps_cpu.py")] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
