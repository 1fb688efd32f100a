# Checks of ecanet/gpu_crop.py on the 2-core CPU machine (no GPU), 2026-11-21. Run from the repo root:
#   PYTHONPATH=. TRITON_INTERPRET=1 .venv/bin/python docs/measurements/2026-11-21/input_pipeline/local_crop_kernel_checks.py
# 1. The kernel under Triton's interpreter against F.interpolate (crop_resize_one) on random boxes, strides
#    and evaluation windows: the largest difference.
# 2. How much an error of one or two units in the last place (ulp) of the float32 scale moves the output at
#    S = 224: ATen's antialiased bilinear weights written out in float64 NumPy (separable: Wy @ image @ Wx^T),
#    with the exact float32 scale and with the scale moved by 1 and 2 ulp, on tests/test_gpu_crop.py's cases.
import os, sys
assert os.environ.get("TRITON_INTERPRET") == "1", "set TRITON_INTERPRET=1"
sys.path.insert(0, "tests")
import numpy as np, torch
from ecanet.gpu_crop import crop_resize
from ecanet.gpu_decode import crop_resize_one
import test_gpu_crop

gen = torch.Generator().manual_seed(1)
rand = lambda lo, hi: int(torch.randint(lo, hi, (1,), generator=gen))
images, specs, size = [], [], 32
for case in range(16):
    h, w = rand(1, 300), rand(1, 300)
    base = torch.randint(0, 256, (h, w, 3) if case % 2 else (3, h, w), dtype=torch.uint8, generator=gen)
    image = base.permute(2, 0, 1) if case % 2 else base
    if case % 4 == 3 and min(h, w) > 1:   # evaluation: whole image resized, a window kept
        out_h, out_w = rand(size, 3 * size), rand(size, 3 * size)
        images.append(image); specs.append((out_h, out_w, rand(0, out_h - size + 1), rand(0, out_w - size + 1)))
    else:                                  # training: a random box
        top, left = rand(0, h), rand(0, w)
        images.append(image[:, top:top + rand(1, h - top + 1), left:left + rand(1, w - left + 1)])
        specs.append((size, size, 0, 0))
out = crop_resize(images, specs, size)
errors = [(out[i] - crop_resize_one(im, sp, size)[0]).abs().max().item() for i, (im, sp) in enumerate(zip(images, specs))]
print(f"1. {len(images)} random cases at S = {size}: max |kernel - F.interpolate| = {max(errors):.2e} (0..255 units)")

def weights(in_size, out_size, offset, scale):
    """ATen's antialiased bilinear weights (out_size x in_size) for the given (float) scale."""
    stretch = max(scale, 1.0)
    m = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = scale * (i + offset + 0.5)
        first = max(int(center - stretch + 0.5), 0)
        last = min(int(center + stretch + 0.5), in_size)
        w = np.maximum(0.0, 1.0 - np.abs((np.arange(first, last) - center + 0.5) / stretch))
        m[i, first:last] = w / w.sum()
    return m

def resize(image, spec, size, ulps=0):
    out_h, out_w, oy, ox = spec
    _, h, w = image.shape
    sy, sx = (np.float32(h) / np.float32(out_h), np.float32(w) / np.float32(out_w))
    for _ in range(ulps):
        sy, sx = np.nextafter(sy, np.float32(np.inf)), np.nextafter(sx, np.float32(np.inf))
    wy, wx = weights(h, size, oy, float(sy)), weights(w, size, ox, float(sx))
    return np.stack([wy @ c @ wx.T for c in image.double().numpy()])

images, specs = test_gpu_crop.crop_cases("cpu", 224)
exact = [resize(im, sp, 224) for im, sp in zip(images, specs)]
torch_ref = max(np.abs(e - crop_resize_one(im, sp, 224)[0].double().numpy()).max() for e, im, sp in zip(exact, images, specs))
print(f"2. S = 224, test cases: max |NumPy formula - F.interpolate| = {torch_ref:.2e}")
for ulps in (1, 2):
    moved = max(np.abs(resize(im, sp, 224, ulps) - e).max() for e, im, sp in zip(exact, images, specs))
    print(f"   scale moved by {ulps} ulp: max change {moved:.2e} (0..255 units)")
