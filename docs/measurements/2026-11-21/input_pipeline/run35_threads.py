"""Issue 8, run 35: where the host's time goes, thread by thread, in steady state. run25_steps_cpu.py plus, over
steps 30-150 of epoch 2, each thread of the training process (from /proc/self/task/*/schedstat and status): CPU
time, time spent runnable but waiting for a core (the kernel's run-queue delay), and voluntary (blocked: a lock,
the GIL, a queue) and involuntary (preempted) context switches, all per step; the loader workers' summed CPU and
run-queue delay; and the machine's busy cores (/proc/stat).

python3 run35_threads.py TAG STEPS_PER_EPOCH main.py-args...
env: RESERVE_CORES=K  the DataLoader workers run on cores K..N-1 only (os.sched_setaffinity in each worker), so
                      K cores are left to the training process's threads
     WORKER_NICE=n    the workers run at os.nice(n)
     STEP_WINDOW=a,b  the steps of epoch 2 measured (default 30,150)
     OLD_TABLE=1      the GPU share's crop table built per image from cut views (as before run 40)
     NO_SLOTS=1       --decode gpu without the loader slots of ecanet.batch_slots (as before run 38)
     NO_PIN=1         --decode gpu's training loader without the DataLoader's pin-memory thread: each decode thread
                      pins its batch's JPEG bytes and CPU crops itself
     SAMPLE_TRIGGER=F set by run36_sampler.py: where to announce the threads at the window's start (and F.stop at its end)
     FUSED_SGD=1      torch.optim.SGD(..., fused=True): one kernel and one Python call for the optimizer step
"""
import os, re, sys, threading, time

sys.path.insert(0, os.getcwd())
here = os.path.dirname(os.path.abspath(__file__))
tag, per_epoch = sys.argv[1], int(sys.argv[2])
first, last = (int(x) for x in os.environ.get("STEP_WINDOW", "30,150").split(","))
FIRST, LAST = per_epoch + first, per_epoch + last      # optimizer steps (1-based count) of epoch 2

import torch
import torch.utils.data._utils.worker as worker_module
from torch.optim.optimizer import register_optimizer_step_post_hook

reserve, nice = int(os.environ.get("RESERVE_CORES", "0")), int(os.environ.get("WORKER_NICE", "0"))
if reserve or nice:
    cores = sorted(os.sched_getaffinity(0))
    worker_cores = set(cores[reserve:])
    _loop = worker_module._worker_loop

    def worker_loop(*args, **kwargs):   # runs first in each forked worker
        if reserve:
            os.sched_setaffinity(0, worker_cores)
        if nice:
            os.nice(nice)
        return _loop(*args, **kwargs)

    worker_module._worker_loop = worker_loop
    print(f"#### {tag}: workers on {len(worker_cores)} of {len(cores)} cores, nice {nice}", flush=True)
if os.environ.get("FUSED_SGD") == "1":
    import main as entry
    _build = entry.build_optimizer

    def build_fused(*args, **kwargs):
        optimizer = _build(*args, **kwargs)
        groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in optimizer.param_groups]
        return torch.optim.SGD(groups, lr=optimizer.defaults["lr"],
                               momentum=optimizer.defaults["momentum"], nesterov=optimizer.defaults["nesterov"],
                               fused=True)

    entry.build_optimizer = build_fused
    print(f"#### {tag}: fused SGD", flush=True)


if os.environ.get("OLD_TABLE") == "1":  # run 40: the crop table built per image from cut views, as before run 40
    import ecanet.gpu_crop as gpu_crop
    from ecanet.gpu_decode import cut_box

    def table_per_image(images, boxes, specs, size):
        views = [cut_box(image, tuple(box) if box[2] > 0 else None) for image, box in zip(images, boxes.tolist())]
        return gpu_crop.crop_table(views, [tuple(spec) for spec in specs.tolist()], size)

    gpu_crop.crop_table_boxes = table_per_image
    print(f"#### {tag}: crop table per image", flush=True)
if os.environ.get("NO_SLOTS") == "1":  # run 38: --decode gpu as before the loader slots (ecanet.batch_slots)
    import ecanet.data as data_module
    data_module._loader_slots = lambda *args: None
    print(f"#### {tag}: no loader slots", flush=True)
if os.environ.get("NO_PIN") == "1":
    import ecanet.data as data_module
    import ecanet.gpu_decode as gd
    _make_loader, _process = data_module.make_loader, gd.GpuDecodeLoader._process

    def make_loader(dataset, sampler, batch_size, workers, pin_memory, drop_last, collate_fn=None):
        if collate_fn is gd.collate_encoded:
            pin_memory = False
        return _make_loader(dataset, sampler, batch_size, workers, pin_memory, drop_last, collate_fn)

    def process(self, batch):
        jpeg_bytes, jpeg_sizes, ready, plans, targets, unreadable = batch
        return _process(self, (jpeg_bytes.pin_memory(), jpeg_sizes, ready.pin_memory(), plans, targets, unreadable))

    data_module.make_loader, gd.GpuDecodeLoader._process = make_loader, process
    print(f"#### {tag}: no pin-memory thread; the decode threads pin", flush=True)


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def task_stats(pid):
    """{tid: (comm, cpu_ns, wait_ns, voluntary, involuntary)} of one process."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        sched = read(f"/proc/{pid}/task/{tid}/schedstat").split()
        status = read(f"/proc/{pid}/task/{tid}/status")
        if len(sched) < 2 or not status:
            continue
        vol = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
        invol = int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
        out[int(tid)] = (read(f"/proc/{pid}/task/{tid}/comm").strip(), int(sched[0]), int(sched[1]), vol, invol)
    return out


def children():
    kids = set()
    for tid in os.listdir("/proc/self/task"):
        kids.update(int(k) for k in read(f"/proc/self/task/{tid}/children").split())
    return kids


def machine():
    fields = [int(x) for x in read("/proc/stat").splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def snapshot():
    names = {t.native_id: t.name for t in threading.enumerate()}
    workers = {}
    for kid in children():
        stats = task_stats(kid)
        workers[kid] = (sum(s[1] for s in stats.values()), sum(s[2] for s in stats.values()))
    return time.perf_counter(), task_stats(os.getpid()), names, workers, machine()


snaps = []
count = [0]


def hook(*_):
    count[0] += 1
    if count[0] in (FIRST, LAST):
        snaps.append(snapshot())
        trigger = os.environ.get("SAMPLE_TRIGGER")
        if trigger and count[0] == FIRST:
            import ctypes, json
            names = {t.native_id: t.name for t in threading.enumerate()}
            threads = {tid: ("main (training)" if tid == os.getpid() else names.get(tid, comm))
                       for tid, (comm, *_) in snaps[-1][1].items()}
            runtime = ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime"))
            with open(trigger + ".tmp", "w") as f:
                json.dump({"pid": os.getpid(), "threads": threads, "runtime": runtime}, f)
            os.replace(trigger + ".tmp", trigger)
        elif trigger and count[0] == LAST:
            open(trigger + ".stop", "w").close()
        if len(snaps) == 2:
            report()


def report():
    (t0, a, names0, w0, m0), (t1, b, names1, w1, m1) = snaps
    steps = LAST - FIRST
    names = {**names0, **names1}
    lines = [f"#### {tag}: threads over steps {FIRST - per_epoch}-{LAST - per_epoch} of epoch 2, "
             f"{1e3 * (t1 - t0) / steps:.1f} ms/step; per step: CPU ms, run-queue wait ms, voluntary / involuntary switches"]
    rows = []
    for tid, (comm, cpu, wait, vol, invol) in b.items():
        if tid not in a:
            continue
        _, cpu0, wait0, vol0, invol0 = a[tid]
        label = "main (training)" if tid == os.getpid() else names.get(tid, comm)
        rows.append(((cpu - cpu0) / 1e6 / steps, (wait - wait0) / 1e6 / steps, (vol - vol0) / steps,
                     (invol - invol0) / steps, f"{label} [{comm}]"))
    for cpu, wait, vol, invol, label in sorted(rows, reverse=True):
        if cpu > 0.05 or wait > 0.05:
            lines.append(f"####    {cpu:7.2f} {wait:7.2f} {vol:7.1f} {invol:6.1f}  {label}")
    both = [k for k in w1 if k in w0]
    wcpu = sum(w1[k][0] - w0[k][0] for k in both) / 1e6 / steps
    wwait = sum(w1[k][1] - w0[k][1] for k in both) / 1e6 / steps
    allowed = sorted({re.search(r"^Cpus_allowed_list:\s+(\S+)", read(f"/proc/{k}/status"), re.M).group(1)
                      for k in both if read(f"/proc/{k}/status")})
    busy = (m1[0] - m0[0]) / max(1, m1[1] - m0[1]) * os.cpu_count()
    lines.append(f"####    {len(both)} workers: CPU {wcpu:.2f} ms/step, run-queue wait {wwait:.2f} ms/step; "
                 f"cores allowed {allowed}; machine: {busy:.1f} of {os.cpu_count()} cores busy")
    print("\n".join(lines), flush=True)


register_optimizer_step_post_hook(hook)
sys.argv = [os.path.join(here, "run25_steps_cpu.py")] + sys.argv[1:]
import runpy
runpy.run_path(sys.argv[0], run_name="__main__")
