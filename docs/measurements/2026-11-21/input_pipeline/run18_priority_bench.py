"""Issue 8, run 18: does raising the priority of PyTorch's stream pool (torchvision's nvJPEG stream) keep
GPU decoding fast beside a busy GPU? 256 real JPEGs; busy = a thread running bf16 matmuls on the default
stream (where main.py trains); img/s over 3 batches after one warm-up."""
import ctypes, glob, os, sys, threading, time
sys.path.insert(0, os.getcwd())
import torch
from torchvision.io import ImageReadMode, decode_jpeg
from ecanet.gpu_decode import GpuAugment, train_crop_plan
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run18_pool_priority import raise_pool_stream_priority
from PIL import Image

files = sorted(glob.glob("/tmp/j/train/*/*.jpg"))[:256]
raw = [open(f, "rb").read() for f in files]
tens = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in raw]
print(f"#### files {len(raw)} mean kB {sum(map(len, raw)) / len(raw) / 1e3:.1f}", flush=True)
dev = torch.device("cuda")
plans = []
for i, f in enumerate(files):
    with Image.open(f) as im:
        plans.append(train_crop_plan(im, i, 0.08, 0.5).as_tensor())
plans = torch.stack(plans)
jpeg_bytes = torch.cat(tens); sizes = torch.tensor([len(t) for t in tens])
ready = torch.empty(0, 3, 0, 0, dtype=torch.uint8)
augment = GpuAugment(224, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], dev, True)
print("#### batched crop kernel:", augment.batched_crop, flush=True)

stop = threading.Event(); busy_steps = [0]
def burn():
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16); b = torch.empty_like(a)
    while not stop.is_set():
        for _ in range(8): torch.matmul(a, a, out=b)
        torch.cuda.current_stream().synchronize(); busy_steps[0] += 8

side = torch.cuda.Stream(dev)
def tv():
    with torch.cuda.stream(side):
        decode_jpeg(tens, mode=ImageReadMode.RGB, device=dev)
    side.synchronize()
def full():
    with torch.cuda.stream(side):
        augment(jpeg_bytes, sizes, ready, plans)
    side.synchronize()

def measure(tag, fn, reps=3):
    fn()
    t0 = time.perf_counter(); s0 = busy_steps[0]
    for _ in range(reps): fn()
    dt = time.perf_counter() - t0
    mm = (busy_steps[0] - s0) / dt
    print(f"#### {tag:<52} {reps * len(raw) / dt:8,.0f} img/s   busy matmuls/s {mm:6.0f}", flush=True)

def pool_priorities():
    return sorted({torch.cuda.Stream(dev, priority=0).priority for _ in range(32)})

def burner_alone():
    t0 = time.perf_counter(); s0 = busy_steps[0]; time.sleep(2.0)
    print(f"#### busy matmuls/s with nothing else                       {(busy_steps[0] - s0) / (time.perf_counter() - t0):6.0f}", flush=True)

print("#### priority range", torch.cuda.Stream.priority_range(), "pool priorities", pool_priorities(), flush=True)
measure("idle, torchvision decode", tv); measure("idle, decode + crop (GpuAugment)", full)
th = threading.Thread(target=burn, daemon=True); th.start(); time.sleep(1.0)
burner_alone()
for rnd in range(2):
    raise_pool_stream_priority(dev, 0)
    print("#### pool priorities", pool_priorities(), flush=True)
    measure(f"busy, default priority, decode [{rnd}]", tv); measure(f"busy, default priority, decode + crop [{rnd}]", full)
    n = raise_pool_stream_priority(dev)
    print("#### raised", n, "streams; pool priorities", pool_priorities(), flush=True)
    measure(f"busy, pool raised, decode [{rnd}]", tv); measure(f"busy, pool raised, decode + crop [{rnd}]", full)
burner_alone()
stop.set(); th.join()
measure("idle again, pool raised, decode + crop", full)
try:
    from nvidia import nvimgcodec as n
    params = n.DecodeParams(apply_exif_orientation=False, color_spec=n.ColorSpec.SRGB, allow_any_depth=False)
    for prio in (0, -5):
        s = torch.cuda.Stream(dev, priority=prio)
        dec = n.Decoder(device_id=0, max_num_cpu_threads=2, backends=[n.Backend(n.BackendKind.HW_GPU_ONLY)])
        def nv():
            with torch.cuda.stream(s):
                imgs = dec.decode([n.CodeStream(b) for b in raw], params=params, cuda_stream=s.cuda_stream)
            s.synchronize()
        stop.clear(); th = threading.Thread(target=burn, daemon=True); th.start(); time.sleep(0.5)
        measure(f"busy, nvImageCodec HW, user stream priority {s.priority}", nv)
        stop.set(); th.join()
except Exception as e:
    print("#### nvimgcodec error", type(e).__name__, str(e)[:200], flush=True)
