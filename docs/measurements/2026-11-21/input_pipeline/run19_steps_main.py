"""Step intervals of main.py (issue 8): python3 .exp/steps_main.py TAG STEPS_PER_EPOCH [--no-priority] main.py-args..."""
import json, os, sys, time, contextlib
sys.path.insert(0, os.getcwd())
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
tag, per_epoch = sys.argv[1], int(sys.argv[2])
argv = sys.argv[3:]
import main as entry
if argv and argv[0] == "--per-image-crop":  # A/B: the GPU share cropped with PyTorch calls per image
    argv = argv[1:]
    import ecanet.gpu_decode as gd
    gd.batched_crop_available = lambda device: False
if argv and argv[0] == "--no-nice":  # A/B: workers at the training process's priority
    argv = argv[1:]
    import ecanet.data as dm
    dm.WORKER_NICENESS = 0
if argv and argv[0] == "--switch-ms":  # the interpreter's GIL switch interval (default 5 ms)
    sys.setswitchinterval(float(argv[1]) / 1e3)
    argv = argv[2:]
decode_ms, process_ms = [], []
if os.environ.get("TIME_DECODE") == "1":
    import ecanet.gpu_decode as gd
    _decode, _process = gd.GpuAugment.decode, gd.GpuDecodeLoader._process
    def decode(self, *a, **k):
        t = time.perf_counter(); r = _decode(self, *a, **k); decode_ms.append(1e3 * (time.perf_counter() - t)); return r
    def process(self, *a, **k):
        t = time.perf_counter(); r = _process(self, *a, **k); process_ms.append(1e3 * (time.perf_counter() - t)); return r
    gd.GpuAugment.decode, gd.GpuDecodeLoader._process = decode, process
if argv and argv[0] == "--raise-priority":  # A/B: PyTorch's stream pool (torchvision's nvJPEG stream) at top priority
    argv = argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from run18_pool_priority import raise_pool_stream_priority
    print("#### raised pool streams:", raise_pool_stream_priority(torch.device("cuda")), flush=True)
if os.environ.get("PREFETCH"):  # run 23: batches prepared ahead beyond one per decode thread (default 2)
    import ecanet.gpu_decode as gd
    gd.PREFETCH_BATCHES = int(os.environ["PREFETCH"])
    print("#### PREFETCH_BATCHES =", gd.PREFETCH_BATCHES, flush=True)
wait_ms = []
if os.environ.get("TIME_WAIT") == "1":  # how long the training loop waits for each batch of --decode gpu
    import ecanet.gpu_decode as gd
    _iter = gd.GpuDecodeLoader.__iter__
    def timed_iter(self):
        it = _iter(self)
        while True:
            t = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            wait_ms.append(1e3 * (time.perf_counter() - t))
            yield item
    gd.GpuDecodeLoader.__iter__ = timed_iter
if argv and argv[0] == "--no-priority":
    argv = argv[1:]
    entry.training_stream = lambda device: contextlib.nullcontext()
times = []
register_optimizer_step_post_hook(lambda *a: times.append(time.perf_counter()))
rc = entry.main(argv)
d = [1e3 * (b - a) for a, b in zip(times, times[1:])]   # d[i]: step i+1 -> i+2 (0-based steps)
out = {}
for epoch in range(len(times) // per_epoch):
    lo, hi = epoch * per_epoch + 10, (epoch + 1) * per_epoch - 1   # steps 11.. last of the epoch
    seg = d[lo:hi]
    if seg:
        mean = sum(seg) / len(seg)
        out[epoch + 1] = {"steps": f"{lo + 2}-{hi + 1}", "mean_ms": round(mean, 2), "img_s": round(256e3 / mean)}
print(f"#### {tag}: mid-epoch (steps 11-{per_epoch} of each epoch, every step's interval) {json.dumps(out)}", flush=True)
if decode_ms:
    import statistics as st
    tail = lambda v: v[len(v) // 3:]   # roughly epochs 2-3 (training and evaluation batches both)
    print(f"#### {tag}: per-batch wall time in the decode threads, last two thirds of the calls: "
          f"nvJPEG decode median {st.median(tail(decode_ms)):.1f} ms (mean {st.mean(tail(decode_ms)):.1f}), "
          f"whole batch (decode+crop+normalise) median {st.median(tail(process_ms)):.1f} ms", flush=True)
if wait_ms:
    import statistics as st
    tail = wait_ms[len(wait_ms) // 3:]
    print(f"#### {tag}: training loop's wait for a batch, last two thirds of the batches: median "
          f"{st.median(tail):.2f} ms, mean {st.mean(tail):.2f} ms, max {max(tail):.1f} ms", flush=True)
json.dump({"wait_ms": wait_ms, "intervals_ms": d, "per_epoch": out}, open(os.path.join(os.environ.get("OUT", "/tmp"), f"steps_{tag}.json"), "w"))
sys.exit(rc)
