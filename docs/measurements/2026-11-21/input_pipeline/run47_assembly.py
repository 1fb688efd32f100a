"""Issue 8, run 47: the crop kernel writes the batch in its final form (ecanet.gpu_crop.crop_resize_into:
normalised, flipped, each crop in its row, in the model's layout), against the assembly before (as of 477ffeb: the
kernel's plain crops, then index_copy_ of the two shares' rows, torch.where(flip), addcmul into the layout).

python3 run47_assembly.py TAG STEPS_PER_EPOCH main.py-args...   (then as run43_decoder.py)
env OLD_ASSEMBLY=1: GpuAugment assembles the batch as before (same kernel arithmetic for the crops).
Ran against 0e042f9; the tidy-up after it folded GpuAugment._boxes_and_specs into _decode_gpu_share."""
import os, runpy, sys
sys.path.insert(0, os.getcwd())
import numpy as np
import torch
import ecanet.gpu_decode as gd
from ecanet import gpu_crop

if os.environ.get("OLD_ASSEMBLY") == "1":
    def assemble_as_before(self, jpegs, ready, plan_array, gpu_rows, ready_rows):
        size = (self.img_size, self.img_size)
        parts = []
        if len(ready_rows):
            parts.append((ready_rows, ready.to(self.device, non_blocking=True).float()))
        if len(gpu_rows):
            boxes, specs = self._boxes_and_specs(plan_array[gpu_rows])
            images, boxes = self.decode_whole(jpegs, boxes)
            crops = torch.empty(len(gpu_rows), 3, *size, device=self.device)              # (G, 3, S, S)
            gpu_crop.crop_resize_into(crops, images, boxes, specs, np.arange(len(gpu_rows)), np.zeros(len(gpu_rows)),
                                      gpu_crop.IDENTITY, gpu_crop.IDENTITY_SHIFT)
            parts.append((gpu_rows, crops))
        if len(parts) == 1:
            out = parts[0][1]
        else:
            out = torch.empty(len(plan_array), 3, *size, device=self.device)
            for rows, images in parts:
                out.index_copy_(0, torch.from_numpy(rows).to(self.device, non_blocking=True), images)
        flip = torch.from_numpy(plan_array[:, gd.FLIP_COLUMN]).bool()
        if bool(flip.any()):
            out = torch.where(flip.to(self.device, non_blocking=True).view(-1, 1, 1, 1), out.flip(-1), out)
        return torch.addcmul(self.shift, out, self.scale, out=torch.empty_like(out, memory_format=self._layout()))
    gd.GpuAugment._assemble_in_kernel = assemble_as_before
print(f"#### {sys.argv[1]}: batch assembly {'as before (477ffeb)' if os.environ.get('OLD_ASSEMBLY') == '1' else 'in the crop kernel'}", flush=True)
sys.argv = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "run43_decoder.py")] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
