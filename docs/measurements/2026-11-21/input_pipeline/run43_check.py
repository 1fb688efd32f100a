"""Issue 8, run 43: nvImageCodec's JPEG-engine decoder against torchvision's nvJPEG on the same 256 JPEGs: pixel
difference, and img/s with the GPU idle (torchvision: one call at a time; nvImageCodec: 1 and 4 threads, one
decoder each, as in run43_decoder.py)."""
import concurrent.futures, glob, sys, threading, time
import torch
from nvidia import nvimgcodec as nv
from torchvision.io import ImageReadMode, decode_jpeg

files = sorted(glob.glob(sys.argv[1] + "/train/*/*.jpg"))[::37][:256]
jpegs = [torch.frombuffer(bytearray(open(f, "rb").read()), dtype=torch.uint8) for f in files]
params = nv.DecodeParams(apply_exif_orientation=False, color_spec=nv.ColorSpec.SRGB, allow_any_depth=False)
local = threading.local()


def nvimg(batch):
    d = getattr(local, "d", None)
    if d is None:
        d = local.d = nv.Decoder(device_id=0, max_num_cpu_threads=2, backends=[nv.Backend(nv.BackendKind.HW_GPU_ONLY)])
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out = [torch.from_dlpack(i).permute(2, 0, 1) for i in
               d.decode([nv.CodeStream(j.numpy()) for j in batch], params=params, cuda_stream=stream.cuda_stream)]
    stream.synchronize()
    return out


def tv(batch):
    return decode_jpeg(batch, mode=ImageReadMode.RGB, device="cuda")


a, b = tv(jpegs), nvimg(jpegs)
diff = [(x.int() - y.int()).abs() for x, y in zip(a, b)]
print(f"#### {len(jpegs)} JPEGs: shapes equal {all(x.shape == y.shape for x, y in zip(a, b))}; max |diff| "
      f"{max(int(d.max()) for d in diff)}, mean |diff| {sum(float(d.float().mean()) for d in diff) / len(diff):.4f}")
for name, fn, threads in [("torchvision", tv, 1), ("torchvision, 4 threads", tv, 4), ("nvImageCodec", nvimg, 1),
                          ("nvImageCodec, 4 threads", nvimg, 4)]:
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(fn, [jpegs] * threads))
        torch.cuda.synchronize()
        t = time.perf_counter()
        list(pool.map(fn, [jpegs] * (4 * threads)))
        torch.cuda.synchronize()
        print(f"#### GPU idle, {name}: {4 * threads * len(jpegs) / (time.perf_counter() - t):,.0f} img/s", flush=True)
