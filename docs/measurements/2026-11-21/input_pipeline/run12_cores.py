"""How worker-side crop making scales with processes on this host (issue 8, run 12)."""
import multiprocessing as mp, os, sys, time
sys.path.insert(0, os.getcwd())
SECONDS = 4.0
def work(args):
    region, = args
    from ecanet.gpu_decode import EncodedImageFolder
    ds = EncodedImageFolder("/tmp/j/train", True, 224, 256, gpu_share=0.0, region_decode=region)
    n, i, t0 = 0, os.getpid() * 7919, time.perf_counter()
    ds[(i % len(ds), 1)]
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < SECONDS:
        ds[(i % len(ds), i)]; i += 1; n += 1
    return n / (time.perf_counter() - t0)
if __name__ == "__main__":
    mp.set_start_method("fork")
    for region in (False, True):
        for procs in (1, 4, 8, 12, 15):
            with mp.Pool(procs) as pool:
                rates = pool.map(work, [(region,)] * procs)
            print(f"#### region={region!s:<5} processes={procs:>2}: {sum(rates):7,.0f} crops/s in all, {sum(rates)/procs:5,.0f} per process", flush=True)
