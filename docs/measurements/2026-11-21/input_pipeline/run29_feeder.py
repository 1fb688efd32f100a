"""Issue 8, run 29: where does the training loop wait for --decode gpu batches, and does a feeder thread help?

GpuDecodeLoader.__iter__ (as committed) tops up its queue of decode futures from the DataLoader in the
training thread, before each yield: when the DataLoader has no batch ready, the training thread blocks in
next() even while decoded batches are waiting. This wrapper times, per batch, the training thread's wait in
the DataLoader's next() and in the decode future's result(). With FEEDER=1 a background thread takes
batches from the DataLoader and submits them instead (the iterator is still created in the main thread), so
the training thread only waits for a decode future. python3 run29_feeder.py TAG STEPS_PER_EPOCH main.py-args..."""
import atexit, collections, concurrent.futures, os, queue, runpy, sys, threading, time
import torch

sys.path.insert(0, os.getcwd())
import ecanet.gpu_decode as gd  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
tag = sys.argv[1]
waits = collections.defaultdict(list)   # "loader" / "decode": ms per batch, in order


def _consume(future, device):
    t = time.perf_counter()
    images, targets, unreadable, event = future.result()
    waits["decode"].append(1e3 * (time.perf_counter() - t))
    current = torch.cuda.current_stream(device)
    current.wait_event(event)
    images.record_stream(current)
    targets.record_stream(current)
    return images, targets, unreadable


def iter_timed(self):  # the committed __iter__, with the two waits timed
    device = self.augment.device
    in_flight = collections.deque()
    batches = iter(self.loader)
    with concurrent.futures.ThreadPoolExecutor(self.decode_threads, thread_name_prefix="gpu-decode") as pool:
        try:
            while True:
                t = time.perf_counter()
                while len(in_flight) < self.decode_threads + gd.PREFETCH_BATCHES:
                    batch = next(batches, None)
                    if batch is None:
                        break
                    in_flight.append(pool.submit(self._process, batch))
                waits["loader"].append(1e3 * (time.perf_counter() - t))
                if not in_flight:
                    return
                yield _consume(in_flight.popleft(), device)
        finally:
            for future in in_flight:
                future.cancel()


DONE = object()


def iter_feeder(self):
    device = self.augment.device
    ready = queue.Queue(self.decode_threads + gd.PREFETCH_BATCHES)
    stop = threading.Event()
    batches = iter(self.loader)   # created here, in the main thread (the DataLoader's signal handlers)
    with concurrent.futures.ThreadPoolExecutor(self.decode_threads, thread_name_prefix="gpu-decode") as pool:
        def feed():
            try:
                for batch in batches:
                    future = pool.submit(self._process, batch)
                    while not stop.is_set():
                        try:
                            ready.put(future, timeout=0.1)
                            break
                        except queue.Full:
                            pass
                    if stop.is_set():
                        future.cancel()
                        return
            except BaseException as exc:  # handed to the training thread
                ready.put(exc)
            ready.put(DONE)

        feeder = threading.Thread(target=feed, name="gpu-decode-feeder", daemon=True)
        feeder.start()
        try:
            while True:
                item = ready.get()
                if item is DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield _consume(item, device)
        finally:
            stop.set()
            while feeder.is_alive():  # drain so that a blocked put returns; then the thread ends
                try:
                    item = ready.get(timeout=0.1)
                    if isinstance(item, concurrent.futures.Future):
                        item.cancel()
                except queue.Empty:
                    pass
            feeder.join()


gd.GpuDecodeLoader.__iter__ = iter_feeder if os.environ.get("FEEDER") == "1" else iter_timed


@atexit.register
def report():
    parts = []
    for name, v in waits.items():
        tail = v[len(v) // 3:]
        if tail:
            parts.append(f"{name}: mean {sum(tail) / len(tail):.2f} ms/batch, over 10 ms in {sum(x > 10 for x in tail)} "
                         f"of {len(tail)} batches")
    print(f"#### {tag}: {'feeder thread' if os.environ.get('FEEDER') == '1' else 'as committed'}: training thread's "
          f"waits, last two thirds of the batches: " + "; ".join(parts), flush=True)


sys.argv = [os.path.join(here, "run25_steps_cpu.py")] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
