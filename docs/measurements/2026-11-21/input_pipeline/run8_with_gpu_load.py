# One-off wrapper of 2026-11-21 (issue 8), run as .exp/with_gpu_load.py by run8_command.sh on one H200 over commit 1203a3f;
# it runs scripts/benchmark.py while a thread keeps the GPU busy with large bf16 matmuls. Not maintained.
"""Run scripts/benchmark.py while a background thread keeps the GPU busy with large bf16 matmuls (issue 8)."""
import os, sys, threading
sys.path.insert(0, os.getcwd()); sys.path.insert(0, os.path.join(os.getcwd(), "scripts"))
import torch
stop = threading.Event()
MATMULS_PER_SYNC = 8  # 8192^3 bf16 matmuls, a few ms each: the queue stays a few big kernels deep, like training
def burn():
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        b = torch.empty_like(a)
        while not stop.is_set():
            for _ in range(MATMULS_PER_SYNC):
                torch.matmul(a, a, out=b)
            stream.synchronize()
if os.environ.get("GPU_LOAD", "1") == "1":
    t = threading.Thread(target=burn, daemon=True); t.start()
if os.environ.get("DECODE_PRIORITY") == "high":
    from ecanet.gpu_decode import GpuDecodeLoader
    original = GpuDecodeLoader._process
    def _process(self, batch):
        if getattr(self._local, "stream", None) is None:
            self._local.stream = torch.cuda.Stream(self.augment.device, priority=-100)
        return original(self, batch)
    GpuDecodeLoader._process = _process
import benchmark
rc = benchmark.main(sys.argv[1:])
stop.set()
sys.exit(rc)
