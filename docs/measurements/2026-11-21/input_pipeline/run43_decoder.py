"""Issue 8, run 43: the GPU share's decoder in training. torchvision decodes one nvJPEG call at a time per
process (a global mutex, one decoder), and each call waits on the GPU once per image; nvImageCodec allows one
decoder per decode thread, so four batches can be in decode at once. Never measured in training before (run 9's
training used region decoding, which leaves the JPEG engines; run 10 timed the decoders alone beside large matmuls).

python3 run43_decoder.py TAG STEPS_PER_EPOCH main.py-args...   (then as run35_threads.py)
env: DECODER=nvimg (default: torchvision, unchanged), NVIMG_CPU_THREADS (default 2).
Both decoders: every decode_whole call's wall time in the decode thread, printed at exit (median and mean over the
last two thirds of the calls), and how many calls ran at once (sampled at each call's start)."""
import atexit, os, runpy, statistics, sys, threading, time
sys.path.insert(0, os.getcwd())
import torch
import ecanet.gpu_decode as gd

here = os.path.dirname(os.path.abspath(__file__))
tag = sys.argv[1]
calls_ms, concurrent = [], []
active = [0]
lock = threading.Lock()
original = gd.GpuAugment.decode_whole

if os.environ.get("DECODER") == "nvimg":
    from nvidia import nvimgcodec as nv
    params = nv.DecodeParams(apply_exif_orientation=False, color_spec=nv.ColorSpec.SRGB, allow_any_depth=False)
    local = threading.local()
    cpu_threads = int(os.environ.get("NVIMG_CPU_THREADS", "2"))
    fallbacks = [0]

    def decoder(device):
        d = getattr(local, "decoder", None)
        if d is None:
            index = device.index if device.index is not None else torch.cuda.current_device()
            d = local.decoder = nv.Decoder(device_id=index, max_num_cpu_threads=cpu_threads,
                                           backends=[nv.Backend(nv.BackendKind.HW_GPU_ONLY),
                                                     nv.Backend(nv.BackendKind.HYBRID_CPU_GPU)])
        return d

    def decode_images(self, jpegs, boxes):
        streams = [nv.CodeStream(j.numpy()) for j in jpegs]
        stream = torch.cuda.current_stream(self.device)
        images = decoder(self.device).decode(streams, params=params, cuda_stream=stream.cuda_stream)
        if any(image is None for image in images):
            fallbacks[0] += 1
            return original(self, jpegs, boxes)
        out = [torch.from_dlpack(image).permute(2, 0, 1) for image in images]   # (3, H, W) views of HWC
        # the bitstreams live in a loader slot that is handed back after this call: wait for the decoder to be
        # done with them, as torchvision's decoder does (cudaStreamSynchronize at the end of each call)
        stream.synchronize()
        return out, boxes
    print(f"#### {tag}: decoder nvImageCodec {nv.__version__}, JPEG engines then hybrid, one decoder per decode "
          f"thread, {cpu_threads} CPU threads each", flush=True)
else:
    decode_images = original
    print(f"#### {tag}: decoder torchvision (unchanged)", flush=True)


def timed(self, jpegs, boxes):
    with lock:
        active[0] += 1
        concurrent.append(active[0])
    t = time.perf_counter()
    try:
        return decode_images(self, jpegs, boxes)
    finally:
        calls_ms.append(1e3 * (time.perf_counter() - t))
        with lock:
            active[0] -= 1


gd.GpuAugment.decode_whole = timed


@atexit.register
def report():
    tail = calls_ms[len(calls_ms) // 3:]
    if tail:
        extra = f", {fallbacks[0]} calls fell back to torchvision" if os.environ.get("DECODER") == "nvimg" else ""
        print(f"#### {tag}: decode_whole wall time per call (last two thirds of {len(calls_ms)} calls): median "
              f"{statistics.median(tail):.1f} ms, mean {statistics.mean(tail):.1f} ms; calls running at once at "
              f"each start: mean {statistics.mean(concurrent):.2f}{extra}", flush=True)


sys.argv = [os.path.join(here, "run35_threads.py")] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
