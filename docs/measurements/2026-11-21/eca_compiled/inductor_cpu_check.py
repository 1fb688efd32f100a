"""One check of the compiled BN+ECA tail with Inductor on a CPU (2026-11-21, after the review changes of
commit b38495a): a Bottleneck compiled with fullgraph=True against the plain modules, float32.

    python docs/measurements/2026-11-21/eca_compiled/inductor_cpu_check.py

Printed on the 2-core development machine (torch 2.15.0+cu132 CPU build): out 9.5e-07, dx 9.5e-07,
dw 8.6e-07, dgamma 4.3e-06, running_var 6.0e-08 (largest absolute differences).
"""
import copy, sys, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[4]))
import models
from models.eca_module import eca_implementation
torch.manual_seed(0)
block = models.resnet.Bottleneck(32, 8, attention="eca", k_size=3).train().to(memory_format=torch.channels_last)
ref = copy.deepcopy(block)
x = torch.randn(4, 32, 7, 9).to(memory_format=torch.channels_last).requires_grad_()
xr = x.detach().clone().requires_grad_()
with eca_implementation("auto"):
    out = torch.compile(block, fullgraph=True)(x)
with eca_implementation("plain"):
    r = ref(xr)
g = torch.randn_like(r)
out.backward(g); r.backward(g)
print("out", (out - r).abs().max().item(), "dx", (x.grad - xr.grad).abs().max().item(),
      "dw", (block.eca.conv.weight.grad - ref.eca.conv.weight.grad).abs().max().item(),
      "dgamma", (block.bn3.weight.grad - ref.bn3.weight.grad).abs().max().item(),
      "rv", (block.bn3.running_var - ref.bn3.running_var).abs().max().item())
