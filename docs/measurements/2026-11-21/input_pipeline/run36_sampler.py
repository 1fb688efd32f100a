"""Issue 8, run 36: what each thread of the training process is doing, sampled from outside the process.

python3 run36_sampler.py TAG -- python3 run35_threads.py TAG STEPS_PER_EPOCH main.py-args...
env PYSPY=path/to/py-spy (run 37): instead of reading /proc, run ``py-spy record --gil --threads`` over the window
(samples only the thread that holds the GIL) and print each thread's share of the GIL and its busiest stacks.

The command runs as this script's child (reading another process's /proc/<pid>/task/<tid>/syscall needs ptrace
rights, which a parent has). run35_threads.py, told by SAMPLE_TRIGGER, writes the training process's threads
and the address of the interpreter's _PyRuntime into that file at step 30 of epoch 2, and SAMPLE_TRIGGER.stop at
step 150. In between this script reads, for every thread, its state (/proc/.../stat) and its current system call
with arguments (/proc/.../syscall) about 2,000 times a second. A thread asleep in futex(2) waits for a lock or
condition at the futex's address; addresses inside _PyRuntime (the interpreter's own state, where the GIL lives)
are reported as offsets into it, other addresses by the mapping they lie in (/proc/<pid>/maps).
"""
import collections, json, os, subprocess, sys, time

SAMPLE_INTERVAL_S = 0.0005
RUNTIME_SPAN_BYTES = 1 << 20       # _PyRuntime is a few hundred kB; futexes this far past its start are in it
SYSCALLS = {0: "read", 1: "write", 7: "poll", 16: "ioctl", 23: "select", 24: "sched_yield", 35: "nanosleep",
            45: "recvfrom", 47: "recvmsg", 202: "futex", 230: "clock_nanosleep", 232: "epoll_wait",
            270: "pselect6", 271: "ppoll", 281: "epoll_pwait"}

tag = sys.argv[1]
command = sys.argv[sys.argv.index("--") + 1:]
trigger = f"/tmp/sample_trigger_{tag}"
for path in (trigger, trigger + ".stop"):
    if os.path.exists(path):
        os.remove(path)
child = subprocess.Popen(command, env={**os.environ, "SAMPLE_TRIGGER": trigger})


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


while not os.path.exists(trigger) and child.poll() is None:
    time.sleep(0.05)
if child.poll() is None:
    time.sleep(0.05)  # the file is complete
    info = json.loads(read(trigger))
    pid, names, runtime = info["pid"], {int(k): v for k, v in info["threads"].items()}, info["runtime"]
    if os.environ.get("PYSPY"):
        out = os.path.join(os.environ.get("OUT", "/tmp"), f"pyspy_{tag}.txt")
        spy_rate, spy_seconds = 250, 5
        subprocess.run([os.environ["PYSPY"], "record", "--gil", "--threads", "--nonblocking", "-r", str(spy_rate),
                        "-d", str(spy_seconds), "-f", "raw", "-o", out, "-p", str(pid)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        per_thread, stacks = collections.Counter(), collections.Counter()
        for line in read(out).splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            per_thread[frames[0]] += int(count)
            stacks[(frames[0], ";".join(f.split(" (")[0] for f in frames[-4:]))] += int(count)
        total = sum(per_thread.values())
        print(f"#### {tag} py-spy: GIL held in {total} of about {spy_rate * spy_seconds} samples; by thread:", flush=True)
        for thread, count in per_thread.most_common(10):
            print(f"####   {count / (spy_rate * spy_seconds):6.1%}  {thread}", flush=True)
            for (t, frames), n in stacks.most_common():
                if t == thread and n >= 0.1 * count:
                    print(f"####            {n / (spy_rate * spy_seconds):6.1%}  {frames}", flush=True)
        child.wait()
        sys.exit(child.returncode)
    tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    samples = collections.defaultdict(collections.Counter)
    rounds, t0 = 0, time.perf_counter()
    while not os.path.exists(trigger + ".stop") and child.poll() is None:
        for tid in tids:
            stat = read(f"/proc/{pid}/task/{tid}/stat")
            if not stat:
                continue
            state = stat[stat.rindex(")") + 2]
            call = read(f"/proc/{pid}/task/{tid}/syscall").split()
            if state == "R" or not call or call[0] == "running":
                samples[tid]["running"] += 1
            elif call[0] == "202":
                samples[tid][("futex", int(call[1], 16))] += 1
            else:
                samples[tid][SYSCALLS.get(int(call[0]), f"syscall {call[0]}") if call[0].isdigit() else call[0]] += 1
        rounds += 1
        time.sleep(SAMPLE_INTERVAL_S)
    seconds = time.perf_counter() - t0
    maps = []
    for line in read(f"/proc/{pid}/maps").splitlines():
        parts = line.split(maxsplit=5)
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        maps.append((lo, hi, parts[5] if len(parts) > 5 else "[anonymous]"))

    def where(address):
        if 0 <= address - runtime < RUNTIME_SPAN_BYTES:
            return f"_PyRuntime+{address - runtime:#x}"
        for lo, hi, name in maps:
            if lo <= address < hi:
                return f"{os.path.basename(name)}+{address - lo:#x}"
        return f"{address:#x}"

    print(f"#### {tag} sampler: {rounds} rounds in {seconds:.1f} s ({rounds / seconds:,.0f}/s); share of samples per "
          f"thread (running = on a core or runnable)", flush=True)
    for tid in sorted(samples, key=lambda t: -sum(samples[t].values())):
        counts = samples[tid]
        total = sum(counts.values())
        name = names.get(tid, str(tid))
        if not (name.startswith(("main", "pt_autograd", "gpu-decode", "Thread")) or counts["running"] > 0.05 * total):
            continue
        top = counts.most_common(6)
        text = ", ".join(f"{(k if isinstance(k, str) else 'futex ' + where(k[1]))} {v / total:.0%}" for k, v in top)
        print(f"####   {name}: {text}", flush=True)
child.wait()
sys.exit(child.returncode)
