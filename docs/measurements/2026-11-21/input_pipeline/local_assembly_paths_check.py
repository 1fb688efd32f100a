"""Tidy-up of 2026-11-22 (the commit after 0e042f9 and 7ccbaeb): the kernel path of GpuAugment against the per-image PyTorch path, under
Triton's interpreter on the CPU, at GPU shares 0, 0.5 and 1 and in both layouts: max |difference|, equal strides,
and (share 0, every crop made on the CPU) bit-identical. TRITON_INTERPRET=1 python local_assembly_paths_check.py"""
import os, sys, tempfile
sys.path.insert(0, os.getcwd()); sys.path.insert(0, "tests")
from pathlib import Path
import torch
from imagefolder import make_photo_folder
from ecanet.data import IMAGENET_MEAN, IMAGENET_STD, sample_seed
import ecanet.gpu_decode as gd
tmp = Path(tempfile.mkdtemp()); make_photo_folder(tmp)
for share in (0.0, 0.5, 1.0):
    for cl in (False, True):
        ds = gd.EncodedImageFolder(str(tmp / "train"), True, 48, 55, gpu_share=share)
        b = gd.collate_encoded([ds[(i, sample_seed(5, 0, i))] for i in range(len(ds))])
        k = gd.GpuAugment(48, IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"), channels_last=cl)
        r = gd.GpuAugment(48, IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"), channels_last=cl, batched_crop=False)
        g, e = k(*b[:4]), r(*b[:4])
        print(f"share {share} channels_last {cl} kernel {k.batched_crop}: max |diff| {(g - e).abs().max().item():.3g}, "
              f"same strides {g.stride() == e.stride()}" + (f", identical {torch.equal(g, e)}" if share == 0 else ""))
