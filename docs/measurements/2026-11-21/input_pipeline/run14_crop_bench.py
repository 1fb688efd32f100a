"""Batched Triton crop-resize vs PyTorch per image, on 256 decoded JPEGs (issue 8, run 14).
python3 .exp/crop_bench.py DIR: GPU time per batch and the decode thread's CPU time, idle and beside matmuls."""
import glob, os, sys, threading, time
sys.path.insert(0, os.getcwd())
import torch
from PIL import Image
from ecanet.gpu_decode import train_crop_plan, crop_resize_one, gpu_crop_module
from torchvision.io import decode_jpeg, ImageReadMode
S, N, REPS = 224, 256, 20
files = sorted(glob.glob(os.path.join(sys.argv[1], "train", "*", "*.jpg")))[:N]
data = [torch.frombuffer(bytearray(open(f, "rb").read()), dtype=torch.uint8) for f in files]
plans = [train_crop_plan(Image.open(f), i, 0.08, 0.5) for i, f in enumerate(files)]
images = decode_jpeg(data, mode=ImageReadMode.RGB, device="cuda")
views = [im[:, p.top:p.top + p.height, p.left:p.left + p.width] for im, p in zip(images, plans)]
specs = [(S, S, 0, 0)] * N
crop = gpu_crop_module().crop_resize
out_k = crop(views, specs, S)
out_r = torch.cat([crop_resize_one(v, s, S) for v, s in zip(views, specs)])
print(f"#### max |kernel - per image| over {N} real crops: {(out_k - out_r).abs().max().item():.2e} (0..255 units)")
stop = threading.Event()
def burn():
    with torch.cuda.stream(torch.cuda.Stream()):
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16); b = torch.empty_like(a)
        while not stop.is_set():
            for _ in range(8):
                torch.matmul(a, a, out=b)
            torch.cuda.current_stream().synchronize()
def timed(fn):
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        fn(); stream.synchronize()
        w0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(REPS):
            fn()
        c1 = time.thread_time(); stream.synchronize(); w1 = time.perf_counter()
    return 1e3 * (w1 - w0) / REPS, 1e3 * (c1 - c0) / REPS
kernel = lambda: crop(views, specs, S)
per_image = lambda: torch.cat([crop_resize_one(v, s, S) for v, s in zip(views, specs)])
for load in ("idle", "busy"):
    if load == "busy":
        t = threading.Thread(target=burn, daemon=True); t.start(); time.sleep(1)
    for name, fn in (("kernel", kernel), ("per image", per_image)):
        wall, cpu = timed(fn)
        print(f"#### {load:<4} {name:<9}: {wall:7.2f} ms per 256-image batch (wall, synchronised), {cpu:6.2f} ms CPU in the calling thread")
stop.set()
