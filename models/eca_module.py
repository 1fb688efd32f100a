"""Efficient Channel Attention (ECA), Wang et al., CVPR 2020, Section 3.

The module is parameter-for-parameter the official ``eca_layer``: its only parameter is
``conv.weight`` of shape (1, 1, k), so the released checkpoints load into it unchanged.

Two implementations compute the same function (issue 7): ``"plain"``, the PyTorch code below, and
``"fused"``, Triton kernels in :mod:`models.eca_fused` that fuse the rescale with the residual add and ReLU.
:func:`set_eca_implementation` (or the environment variable ``ECANET_ECA_IMPL``) picks one; the default
``"auto"`` runs the fused kernels on CUDA tensors when Triton imports, and the plain code everywhere else.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
from typing import Iterator

import torch
from torch import nn

logger = logging.getLogger(__name__)

ECA_IMPLEMENTATIONS: tuple[str, ...] = ("auto", "fused", "plain")
ECA_IMPL_ENV_VAR = "ECANET_ECA_IMPL"

try:  # Triton ships with CUDA builds of PyTorch; without it (CPU builds) only the plain code runs.
    from . import eca_fused
    _FUSED_IMPORT_ERROR: str | None = None
except ImportError as exc:
    eca_fused = None
    _FUSED_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
    logger.debug("fused ECA unavailable (%s); the plain implementation runs", _FUSED_IMPORT_ERROR)
except Exception as exc:  # noqa: BLE001 -- a broken Triton install must not break `import models`
    eca_fused = None
    _FUSED_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
    logger.warning("fused ECA failed to load (%s); the plain implementation runs", _FUSED_IMPORT_ERROR)


def _checked_implementation(name: str) -> str:
    impl = str(name).strip().lower()
    if impl not in ECA_IMPLEMENTATIONS:
        raise ValueError(f"unknown ECA implementation {name!r}; choose one of {', '.join(ECA_IMPLEMENTATIONS)}")
    return impl


_implementation = _checked_implementation(os.environ.get(ECA_IMPL_ENV_VAR, "auto"))


def set_eca_implementation(impl: str) -> None:
    """Select the ECA implementation for every :class:`EcaModule`: ``"auto"``, ``"fused"`` or ``"plain"``.

    ``"auto"`` (the default, or ``$ECANET_ECA_IMPL``): fused on CUDA tensors when Triton imports, else plain.
    ``"fused"``: the Triton kernels, an error where they cannot run (no Triton; a CPU tensor outside
    Triton's interpreter). ``"plain"``: the PyTorch code. Under both ``"auto"`` and ``"fused"``, inputs the
    kernels do not take (float64, mismatched shapes, empty tensors) run the plain code.
    """
    global _implementation
    _implementation = _checked_implementation(impl)


def get_eca_implementation() -> str:
    """The current choice of :func:`set_eca_implementation`."""
    return _implementation


@contextlib.contextmanager
def eca_implementation(impl: str) -> Iterator[None]:
    """``with eca_implementation("plain"): ...`` runs the block under that implementation, then restores."""
    previous = get_eca_implementation()
    set_eca_implementation(impl)
    try:
        yield
    finally:
        set_eca_implementation(previous)


def fused_eca_available() -> bool:
    """Whether the fused kernels imported (Triton present); CUDA is still needed to run them."""
    return eca_fused is not None


def _use_fused(x: torch.Tensor, identity: torch.Tensor | None = None) -> bool:
    """Whether this call runs the fused kernels under the current implementation choice."""
    if _implementation == "plain" or not isinstance(x, torch.Tensor):  # e.g. a torch.fx Proxy
        return False
    if eca_fused is None:
        if _implementation == "fused":
            raise RuntimeError(f"ECA implementation 'fused' needs Triton, which failed to import: "
                               f"{_FUSED_IMPORT_ERROR}")
        return False
    if not x.is_cuda:
        if _implementation == "auto":
            return False
        if not eca_fused.INTERPRETER:
            raise RuntimeError("ECA implementation 'fused' needs a CUDA tensor (or TRITON_INTERPRET=1 set "
                               "before models is imported); use 'auto' to fall back to the plain code")
    return eca_fused.supports(x, identity)


# The paper's constants for the adaptive kernel size psi(C) (Eq. 12/13): gamma = 2, b = 1.
DEFAULT_GAMMA = 2
DEFAULT_B = 1


def adaptive_kernel_size(channels: int, gamma: int = DEFAULT_GAMMA, b: int = DEFAULT_B) -> int:
    """The paper's psi(C), Eq. (12): k = |log2(C)/gamma + b/gamma|_odd.

    ``t = int(abs((log2(C) + b) / gamma))``; ``k = t`` if ``t`` is odd, else ``t + 1``. ``C`` is the
    number of channels the ECA module sees (its input's channel count).
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 == 1 else t + 1


class EcaModule(nn.Module):
    """ECA: global average pooling -> 1-D convolution across channels -> sigmoid -> rescale.

    Implements Eq. (9)-(11) of the paper: ``y = GAP(x)``, ``w = sigmoid(C1D_k(y))``, ``out = x * w``.

    Args:
        channels: channels of the input; only used to pick ``k`` when ``k_size`` is None.
        k_size: kernel size of the 1-D convolution; None picks ``adaptive_kernel_size(channels)``.
        gamma, b: constants of psi(C) (paper: 2 and 1).
    """

    def __init__(self, channels: int, k_size: int | None = None, gamma: int = DEFAULT_GAMMA,
                 b: int = DEFAULT_B) -> None:
        super().__init__()
        if k_size is None:
            k_size = adaptive_kernel_size(channels, gamma, b)
        if k_size < 1 or k_size % 2 == 0:
            raise ValueError(f"ECA kernel size must be a positive odd integer, got {k_size}")
        self.channels = channels
        self.k_size = int(k_size)
        self.conv = nn.Conv1d(1, 1, kernel_size=self.k_size, padding=(self.k_size - 1) // 2, bias=False)

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The per-(sample, channel) gate ``sigmoid(conv1d(mean_hw(x)))`` of shape (B, C, 1, 1)."""
        y = x.mean(dim=(2, 3), keepdim=True)                  # (B, C, 1, 1)
        y = self.conv(y.squeeze(-1).transpose(-1, -2))         # (B, 1, C)
        return torch.sigmoid(y.transpose(-1, -2).unsqueeze(-1))  # (B, C, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        if _use_fused(x):
            return eca_fused.eca_scale(x, self.conv.weight)
        return x * self.attention_weights(x)

    def scale_add_relu(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """``relu(x * w + identity)``: ECA followed by a residual block's add and ReLU (fused on GPUs)."""
        if _use_fused(x, identity):
            return eca_fused.eca_scale_add_relu(x, self.conv.weight, identity)
        out = self(x)
        out += identity
        return torch.relu_(out)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, k_size={self.k_size}"


def parse_kernel_sizes(k_size: object, num_stages: int) -> list[int | None]:
    """Turn a user's ``k_size`` into one entry per stage (None = the adaptive psi(C) of each layer).

    Accepted forms: None or ``'adaptive'``; an int (every stage); the official CLI string, one digit per
    stage (``"3557"``, what ``--ksize 3557`` gives); a separated string (``"3,5,5,7"``) or a list/tuple
    (``[3, 5, 5, 7]``). A single value applies to every stage.
    """
    if k_size is None or (isinstance(k_size, str) and k_size.strip().lower() == "adaptive"):
        return [None] * num_stages
    if isinstance(k_size, bool):
        raise ValueError(f"invalid ECA kernel size {k_size!r}")
    if isinstance(k_size, int):
        values: list[object] = [k_size]
    elif isinstance(k_size, str):
        text = k_size.strip().strip("[]()")
        if any(sep in text for sep in ", "):
            values = [v for v in text.replace(",", " ").split() if v]
        else:
            values = list(text)
    elif isinstance(k_size, (list, tuple)):
        values = list(k_size)
    else:
        raise ValueError(f"invalid ECA kernel size {k_size!r}")
    try:
        sizes = [None if str(v).lower() == "adaptive" else int(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"invalid ECA kernel size {k_size!r}: expected digits such as '3557', "
                         f"a list such as [3, 5, 5, 7], an int or 'adaptive'") from None
    if len(sizes) == 1:
        sizes = sizes * num_stages
    if len(sizes) != num_stages:
        raise ValueError(f"ECA kernel size {k_size!r} gives {len(sizes)} values; this network has "
                         f"{num_stages} stages, so give 1 or {num_stages} values")
    for k in sizes:
        if k is not None and (k < 1 or k % 2 == 0):
            raise ValueError(f"ECA kernel sizes must be positive odd integers, got {k_size!r}")
    return sizes


def eca_kernel_sizes(model: nn.Module) -> dict[str, int]:
    """The kernel size of every ECA layer of ``model``, keyed by module name (``'layer1.0.eca'``)."""
    return {name: m.k_size for name, m in model.named_modules() if isinstance(m, EcaModule)}


def set_eca_kernel_sizes(model: nn.Module, sizes: dict[str, int]) -> None:
    """Rebuild the ECA layers named in ``sizes`` with the given kernel sizes (fresh weights).

    Used to build a network whose layers were trained with kernel sizes no per-stage rule describes,
    e.g. when loading a checkpoint: ``load_model`` reads every layer's size off its weight shape.
    """
    modules = dict(model.named_modules())
    for name, k in sizes.items():
        old = modules.get(name)
        if not isinstance(old, EcaModule):
            raise KeyError(f"{name!r} is not an ECA layer of this model")
        if old.k_size != k:
            parent_name, _, attr = name.rpartition(".")
            parent = modules[parent_name] if parent_name else model
            setattr(parent, attr, EcaModule(old.channels, k))
