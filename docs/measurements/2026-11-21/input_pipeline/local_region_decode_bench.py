# Region decoding vs PIL on the 2-core CPU machine (no GPU), one process. Run: python scripts/make_jpeg_folder.py /tmp/jl --classes 4 --train-per-class 50 --val-per-class 1, then PYTHONPATH=. python docs/measurements/2026-11-21/input_pipeline/local_region_decode_bench.py
import glob, time, io, sys
import numpy as np, torch
from PIL import Image
sys.path.insert(0, ".")
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms import functional as TF
from nvidia import nvimgcodec as n
files = sorted(glob.glob("/tmp/jl/train/*/*.jpg"))
raw = [open(f, "rb").read() for f in files]
torch.manual_seed(0)
boxes = []
for b in raw:
    im = Image.open(io.BytesIO(b))
    boxes.append(RandomResizedCrop.get_params(im, (0.08, 1.0), [3/4, 4/3]))
S = 224
def pil_path():
    out = []
    for b, (t, l, h, w) in zip(raw, boxes):
        im = Image.open(io.BytesIO(b)).convert("RGB")
        out.append(np.asarray(TF.resized_crop(im, t, l, h, w, [S, S])))
    return out
dec = n.Decoder(device_id=n.NVIMGCODEC_DEVICE_CPU_ONLY, max_num_cpu_threads=1, backends=[n.Backend(n.BackendKind.CPU_ONLY)])
params = n.DecodeParams(apply_exif_orientation=False, color_spec=n.ColorSpec.SRGB, allow_any_depth=False)
def roi_path(batch=False):
    out = []
    if batch:
        css = [n.CodeStream(np.frombuffer(b, np.uint8)).get_sub_code_stream(region=n.Region(t, l, t + h, l + w)) for b, (t, l, h, w) in zip(raw, boxes)]
        imgs = dec.decode(css, params=params)
    else:
        imgs = [dec.decode(n.CodeStream(np.frombuffer(b, np.uint8)).get_sub_code_stream(region=n.Region(t, l, t + h, l + w)), params=params) for b, (t, l, h, w) in zip(raw, boxes)]
    for img in imgs:
        crop = Image.fromarray(np.asarray(img))
        out.append(np.asarray(crop.resize((S, S), Image.BILINEAR)))
    return out
def whole_nvimg():
    return [np.asarray(dec.decode(n.CodeStream(np.frombuffer(b, np.uint8)), params=params)) for b in raw]
def pil_decode_only():
    return [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in raw]
a = pil_path(); b = roi_path()
print("identical crops:", sum(np.array_equal(x, y) for x, y in zip(a, b)), "/", len(a), "max diff", max(np.abs(x.astype(int) - y).max() for x, y in zip(a, b)))
for name, fn in [("PIL decode+RRC", pil_path), ("nvimgcodec-CPU ROI + PIL resize", roi_path), ("  same, batched", lambda: roi_path(True)), ("PIL decode only", pil_decode_only), ("nvimgcodec-CPU whole decode only", whole_nvimg)]:
    best = 1e9
    for _ in range(3):
        t0 = time.perf_counter(); fn(); best = min(best, time.perf_counter() - t0)
    print(f"{name:<36} {len(raw)/best:7.0f} img/s per core")
