# One-off experiment of 2026-11-21 (issue 7), kept so the numbers in variants_run*.log can be traced.
# It ran on one H200 as `python3 .exp/exp7.py resnet50,eca_v0,eca_v3` (run 1) and
# `python3 .exp/exp7.py resnet50,eca_v3,eca_v3m` (run 2), with this file as .exp/exp7.py and
# variants_v3.py as .exp/v3.py, over commit ffd9865 plus the profile helpers of ecanet/bench.py.
# eca_v0 is the decomposed BN+ECA form of ffd9865 (autograd derives its backward); eca_v3 is the
# written-out backward (run 1: G' kept in float32; run 2: in the activations' dtype, what
# models/eca_module.py now does, without its per-channel shift); eca_v3m adds a Triton custom op for the
# forward sums (slower: 5,384 img/s). Not part of the library and not maintained.
"""Issue 7 experiment: compiled training of resnet50 vs eca_resnet50 (variants), throughput + kernel profile."""
import collections, os, sys, time, json
sys.path[:0] = [os.getcwd(), os.path.join(os.getcwd(), ".exp")]
import torch
import models
from ecanet import bench
import models.eca_module as em

V0 = em.bn_eca_add_relu_decomposed
import v3
variants = sys.argv[1].split(",") if len(sys.argv) > 1 else ["resnet50", "eca_v0", "eca_v3"]
out_dir = os.environ.get("OUT", "/tmp")
results = {}
for name in variants:
    em.bn_eca_add_relu_decomposed = V0
    if name.startswith("eca_v3"):
        v3.install(moments=name == "eca_v3m")
    arch = "resnet50" if name == "resnet50" else "eca_resnet50"
    model = models.create_model(arch, **({} if arch == "resnet50" else {"k_size": "3557"}))
    dev = torch.device("cuda")
    t0 = time.time()
    with bench._prepared_step(model, batch_size=256, img_size=224, train=True, amp_dtype=torch.bfloat16,
                              channels_last=True, compile=True, device=dev) as step, bench._cudnn_benchmark(True):
        torch.cuda.reset_peak_memory_stats()
        for _ in range(10):
            step()
        torch.cuda.synchronize()
        warm = time.time() - t0
        ms, runs = bench._median_ms(step, warmup=0, iters=30, repeats=3, device=dev)
        peak = torch.cuda.max_memory_allocated() / 2**30
        saved = collections.Counter()
        def pack(t):
            saved[str(t.dtype)] += t.numel() * t.element_size()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            step()
        from torch.profiler import profile, ProfilerActivity
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                step()
            torch.cuda.synchronize()
    tot = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            t = tot.setdefault(e.name, [0, 0.0]); t[0] += 1; t[1] += e.time_range.elapsed_us() / 1e3
    ks = sorted(((n, c / 5, m / 5) for n, (c, m) in tot.items()), key=lambda r: -r[2])
    fam = collections.defaultdict(lambda: [0.0, 0.0])
    for n, c, m in ks:
        f = bench.kernel_family(n); fam[f][0] += c; fam[f][1] += m
    print(f"\n##### {name}: {256e3/ms:,.0f} img/s, {ms:.2f} ms/step (runs {['%.2f' % r for r in runs]}), peak {peak:.2f} GiB, "
          f"warmup {warm:.0f}s; saved GiB { {k: round(v/2**30, 3) for k, v in saved.items()} }; kernel ms {sum(m for _,_,m in ks):.2f} in {sum(c for _,c,_ in ks):.0f}")
    for f, (c, m) in sorted(fam.items(), key=lambda r: -r[1][1]):
        print(f"  {f:50s} {c:6.0f} {m:8.3f}")
    for n, c, m in ks[:60]:
        print(f"  {m:8.3f} {c:4.0f}  {n[:150]}")
    results[name] = {"img_s": 256e3 / ms, "ms": ms, "runs": runs, "peak": peak, "kernels": ks}
    json.dump(results, open(os.path.join(out_dir, "exp7.json"), "w"))
    model = None; torch.cuda.empty_cache()
