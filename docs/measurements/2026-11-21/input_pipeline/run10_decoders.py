"""Decoders alone on 256 real JPEGs (issue 8, run 10): img/s idle and with a GPU-busy thread."""
import glob, os, sys, threading, time
sys.path.insert(0, os.getcwd())
import torch
from nvidia import nvimgcodec as n
from torchvision.io import ImageReadMode, decode_jpeg
files = sorted(glob.glob("/tmp/j/train/*/*.jpg")); files = files[::max(1, len(files) // 256)][:256]
raw = [open(f, "rb").read() for f in files]
tens = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in raw]
print("#### files", len(raw), "mean kB", sum(map(len, raw)) / len(raw) / 1e3, flush=True)
stop = threading.Event()
def burn():
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16); b = torch.empty_like(a)
        while not stop.is_set():
            for _ in range(8): torch.matmul(a, a, out=b)
            s.synchronize()
K = {"hw": n.BackendKind.HW_GPU_ONLY, "gpu": n.BackendKind.GPU_ONLY, "hybrid": n.BackendKind.HYBRID_CPU_GPU}
params = n.DecodeParams(apply_exif_orientation=False, color_spec=n.ColorSpec.SRGB, allow_any_depth=False)
import random; rnd = random.Random(0)
def boxes():
    out = []
    for b in raw:
        cs = n.CodeStream(b); H, W = cs.height, cs.width
        h, w = rnd.randint(H // 3, H), rnd.randint(W // 3, W); t, l = rnd.randint(0, H - h), rnd.randint(0, W - w)
        out.append((t, l, h, w))
    return out
BOX = boxes()
def nvimg(kinds, threads, roi, options=""):
    dec = n.Decoder(device_id=0, max_num_cpu_threads=threads, backends=[n.Backend(K[k]) for k in kinds], options=options)
    stream = torch.cuda.Stream()
    def run():
        css = []
        for b, (t, l, h, w) in zip(raw, BOX):
            cs = n.CodeStream(b)
            css.append(cs.get_sub_code_stream(region=n.Region(t, l, t + h, l + w)) if roi else cs)
        with torch.cuda.stream(stream):
            imgs = dec.decode(css, params=params, cuda_stream=stream.cuda_stream)
            ts = [torch.from_dlpack(i) for i in imgs if i is not None]
        stream.synchronize()
        return len(imgs) - len(ts)
    return run
def tv():
    stream = torch.cuda.Stream()
    def run():
        with torch.cuda.stream(stream):
            decode_jpeg(tens, mode=ImageReadMode.RGB, device="cuda")
        stream.synchronize(); return 0
    return run
def measure(tag, make):
    try:
        run = make(); failed = run()  # warm-up
        t0 = time.perf_counter(); reps = 3
        for _ in range(reps): failed = run()
        rate = reps * len(raw) / (time.perf_counter() - t0)
        print(f"#### {tag:<40} {rate:8,.0f} img/s  (None outputs: {failed})", flush=True)
    except Exception as e:
        print(f"#### {tag:<40} error {type(e).__name__}: {str(e)[:200]}", flush=True)
cases = [("torchvision", tv)]
for roi in (False, True):
    for kinds, threads in [(("hw",), 2), (("gpu",), 2), (("gpu",), 8), (("hybrid",), 8), (("hw", "gpu", "hybrid"), 2), (("hw", "gpu", "hybrid"), 8)]:
        cases.append((f"nvimg {'+'.join(kinds)} t{threads} {'roi' if roi else 'whole'}", lambda k=kinds, th=threads, r=roi: nvimg(k, th, r)))
cases.append(("nvimg hw t2 roi fancy-roi", lambda: nvimg(("hw",), 2, True, ":enable_roi_fancy_upsampling=1")))
cases.append(("nvimg all t8 roi fancy-roi", lambda: nvimg(("hw", "gpu", "hybrid"), 8, True, ":enable_roi_fancy_upsampling=1")))
load = os.environ.get("GPU_LOAD") == "1"
if load:
    threading.Thread(target=burn, daemon=True).start(); time.sleep(1)
print("#### GPU_LOAD", load, flush=True)
for tag, make in cases:
    measure(tag, make)
print("#### nvjpeg libraries mapped:", sorted({l.split()[-1] for l in open("/proc/self/maps") if "nvjpeg" in l}), flush=True)
stop.set()
