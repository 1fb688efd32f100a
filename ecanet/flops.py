"""Parameters and compute of the ecanet models, in SI units and in the ECA-Net paper's units.

Two counters, both run on one image (batch 1, ``3 x img_size x img_size``) of a copy of the model that
lives on the ``meta`` device: the counts depend on tensor shapes only, so no arithmetic is done, no memory
is used, and the numbers are the same on every machine.

* **thop** (``thop.profile``, the counter behind the official ``paras_flops.py`` and the paper's tables).
  It charges each leaf ``nn.Module`` of a known type with a rule, and nothing else. Under the pinned
  thop 0.1.1.post2209072238: ``Conv1d/2d`` and ``Linear`` are charged their multiply-accumulates (MACs,
  bias not counted), ``BatchNorm`` 2 per element (affine) and ``AdaptiveAvgPool2d`` ``H*W + 1`` per
  output element (``H*W`` adds and one division); ``ReLU``, ``MaxPool`` and ``Dropout`` are 0. Functional
  calls (``x.mean``, ``torch.sigmoid``, ``x * w``, the residual add) are invisible to it. The paper calls
  thop's total "FLOPs"; it is a MAC count plus those extra charges.
* **torch's counter** (``torch.utils.flop_counter.FlopCounterMode``): FLOPs of the ATen ops it has a
  formula for, i.e. ``2 x MACs`` of convolutions and matrix multiplies (here ``aten.convolution`` and
  ``aten.addmm``); normalisation, pooling, activations and elementwise ops are 0.

The one deliberate change to thop's count: ecanet's ECA and SE modules pool with ``x.mean(dim=(2, 3))``,
which thop does not see, while the official ``eca_layer`` (and PyTorch SE layers such as torchvision's
``ops.SqueezeExcitation``) use ``nn.AdaptiveAvgPool2d(1)``, which thop charges ``C * (H*W + 1)`` per layer. :func:`count_thop` adds that
charge (``ThopCount.attention_pool_macs``) by default, so that its total is what thop gives for the
official modules: ECA-ResNet-50 k3557 at 224x224 is 4,139,363,328 MACs with the charge (the paper's 3.86G)
and 4,133,828,864 without it (``tests/test_flops.py`` checks the official layer gives the former). The
official README's figures for ECA-ResNet-101, -152 and ECA-MobileNetV2 are 0.1-2.2% higher than this count
(docs/flops.md).

Units: :func:`format_si` writes decimal prefixes (``25.56 M``); :func:`format_paper_units` writes what
the official tool printed (``24.37M``): the value divided by ``1024**k``, with the suffix chosen by
*decimal* thresholds (``G`` above 1e9, ``M`` above 1e6). That is how the paper's "24.37M params,
3.86G FLOPs" for ECA-Net50 are 25,557,112 parameters and 4,139,363,328 thop MACs.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import math
import re
import warnings
from dataclasses import asdict, dataclass
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from . import models
from .constants import IMAGE_CHANNELS, IMAGENET_CLASSES, IMAGENET_IMG_SIZE, NETWORK_STRIDE
from .errors import ConfigError
from .models import EcaModule, SqueezeExcitation, set_eca_impl

with warnings.catch_warnings():
    # thop 0.1.1 imports distutils.version.LooseVersion, deprecated since Python 3.10.
    warnings.simplefilter("ignore", DeprecationWarning)
    import thop

# thop.__version__ says "0.1.1"; its metadata says "0.1.1-2209072238", which PEP 440 reads as the
# post-release "0.1.1.post2209072238" that pyproject.toml pins.
THOP_VERSION = re.sub(r"-(\d+)$", r".post\1", importlib.metadata.version("thop"))
DEFAULT_IMG_SIZE = IMAGENET_IMG_SIZE
DEFAULT_NUM_CLASSES = IMAGENET_CLASSES
MIN_IMG_SIZE = NETWORK_STRIDE  # the smallest input whose last feature map is 1x1
COUNT_DEVICE = "meta"  # shapes only: counting allocates nothing and computes nothing

# Decimal (SI) prefixes, largest first.
SI_UNIT_BASE = 1000
SI_PREFIXES = ((4, "T"), (3, "G"), (2, "M"), (1, "k"))
# The official tool's units (old thop's ``clever_format``): the suffix is picked by a decimal threshold,
# the value is divided by a power of 1024, two decimals, no space; below 1e3 the suffix is "B".
PAPER_UNIT_BASE = 1024
PAPER_UNITS = ((1e12, 4, "T"), (1e9, 3, "G"), (1e6, 2, "M"), (1e3, 1, "K"))
PAPER_SMALL_SUFFIX = "B"

# The attention modules this module knows, with the names used in reports.
ATTENTION_NAMES: dict[type[nn.Module], str] = {EcaModule: "ECA", SqueezeExcitation: "SE"}
# ECA-MobileNetV2's builder default (k_size=None) *is* the release's rule ("13": k=1 below 96 output
# channels, k=3 from there on), so its released configuration is built with k_size=None.
RELEASE_IS_BUILDER_DEFAULT = frozenset({"eca_mobilenet_v2"})
NO_ECA_LABEL = "-"
TABLE_KIND_ORDER = ("", "se", "eca")  # rows of one backbone: plain, SE, ECA, as the paper's tables
ADAPTIVE_LABEL = "adaptive"

THOP_DESCRIPTION = (
    "thop {version}: multiply-accumulates of convolutions and linear layers, plus its charges for "
    "BatchNorm (2 per element) and average pooling (H*W+1 per output), the ECA/SE global pooling charged "
    "as the official nn.AdaptiveAvgPool2d")
TORCH_DESCRIPTION = ("torch.utils.flop_counter (torch {version}): FLOPs = 2 x MACs of convolutions and "
                     "matrix multiplies only")
PAPER_UNITS_DESCRIPTION = ("the official paras_flops.py format, used in the paper's tables: value / 1024^k, "
                           "'G' above 1e9, 'M' above 1e6")


# --------------------------------------------------------------------------------------------- units
def format_si(value: float) -> str:
    """``value`` with a decimal prefix and two decimals: ``format_si(25_557_112) == '25.56 M'``.

    Values below 1000 are written as they are (``'80'``).
    """
    for power, prefix in SI_PREFIXES:
        scale = SI_UNIT_BASE ** power
        if abs(value) >= scale:
            return f"{value / scale:.2f} {prefix}"
    return f"{value:g}"


def format_paper_units(value: float, decimals: int = 2) -> str:
    """``value`` in the official ``paras_flops.py``'s units: ``format_paper_units(25_557_112) == '24.37M'``.

    The suffix is chosen by a decimal threshold (``> 1e9`` is "G", ``> 1e6`` is "M") and the value divided
    by the matching power of 1024, so 1.0e9 prints as ``'953.67M'`` and 1.05e9 as ``'0.98G'``. The
    official tool printed 3 decimals; the paper's tables have 2, the default.
    """
    for threshold, power, suffix in PAPER_UNITS:
        if value > threshold:
            return f"{value / PAPER_UNIT_BASE ** power:.{decimals}f}{suffix}"
    return f"{value:.{decimals}f}{PAPER_SMALL_SUFFIX}"


# --------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class ThopCount:
    """What thop charges for one image.

    Attributes:
        macs: thop's total, with the attention pooling charged (``attention_pool_macs``); the figure the
            official tool prints for the official modules.
        attention_pool_macs: thop's charge for the ECA/SE global average pooling had it been an
            ``nn.AdaptiveAvgPool2d(1)``: ``C * (H*W + 1)`` per attention layer (0 when not charged).
        attention_macs: what thop charges the attention modules' own layers (ECA's 1-D convolution, SE's
            two 1x1 convolutions); the pooling is not included.
        macs_by_layer_type: thop's charge summed per leaf module class (``'Conv2d'``, ``'BatchNorm2d'``,
            ...), without the attention pooling; the values add up to ``macs_as_written``.
        attention_inputs: the input shape of every attention layer call, ``(B, C, H, W)``.
    """

    macs: int
    attention_pool_macs: int
    attention_macs: int
    macs_by_layer_type: dict[str, int]
    attention_inputs: tuple[tuple[int, ...], ...]

    @property
    def macs_as_written(self) -> int:
        """thop's total for ecanet's modules as they are written (their ``x.mean`` pooling is free)."""
        return self.macs - self.attention_pool_macs


@dataclass(frozen=True)
class TorchFlopCount:
    """What ``torch.utils.flop_counter`` counts for one image.

    Attributes:
        flops: the total; 2 x MACs of every convolution and matrix multiply.
        attention_flops: the part spent inside the ECA/SE modules (their convolutions; pooling is 0).
        flops_by_op: the total per ATen op (``'aten.convolution'``, ``'aten.addmm'``).
    """

    flops: int
    attention_flops: int
    flops_by_op: dict[str, int]


@dataclass(frozen=True)
class AttentionCost:
    """The channel-attention layers alone (all zero for a network without them).

    Attributes:
        kind: ``'ECA'``, ``'SE'`` or None.
        layers: number of attention layers.
        params: their parameters (ECA: the 1-D kernels, k each; SE: both 1x1 convolutions with biases).
        macs: thop's charge for their convolutions (ECA: ``C * k`` per layer).
        flops: torch's counter for the same convolutions (``2 * macs``).
        pool_macs: thop's charge for their global average pooling as ``nn.AdaptiveAvgPool2d`` (the
            official modules): ``C * (H*W + 1)`` per layer. torch's counter charges pooling 0.
        rescaled_elements: elements of the ``x * w`` rescale, ``C*H*W`` per layer; neither counter charges
            this multiply, though it reads and writes the whole activation.
    """

    kind: str | None
    layers: int
    params: int
    macs: int
    flops: int
    pool_macs: int
    rescaled_elements: int


@dataclass(frozen=True)
class ModelCost:
    """Parameters and compute of one network for one ``img_size x img_size`` image.

    ``k_size`` is a label: the kernel sizes asked for (``'3557'``), ``'adaptive'`` (the paper's psi(C)),
    ``'13'`` for ECA-MobileNetV2's released rule, or ``'-'`` for a network without ECA layers.
    """

    arch: str
    k_size: str
    img_size: int
    num_classes: int
    params: int
    macs: int
    flops: int
    attention: AttentionCost
    macs_by_layer_type: dict[str, int]
    flops_by_op: dict[str, int]

    @property
    def macs_as_written(self) -> int:
        """thop's MACs without the attention pooling charge (ecanet's ``x.mean`` as thop sees it)."""
        return self.macs - self.attention.pool_macs

    def to_dict(self) -> dict[str, object]:
        """Every field (exact integers) plus the formatted strings of the tables."""
        out = asdict(self)
        out["macs_as_written"] = self.macs_as_written
        out["formatted"] = {
            "params_si": format_si(self.params), "params_paper": format_paper_units(self.params),
            "macs_si": format_si(self.macs), "macs_paper": format_paper_units(self.macs),
            "flops_si": format_si(self.flops), "flops_paper": format_paper_units(self.flops),
        }
        return out


# --------------------------------------------------------------------------------------------- counting
def _counting_copy(model: nn.Module, img_size: int) -> tuple[nn.Module, torch.Tensor]:
    """A copy of ``model`` on the meta device in eval mode, and one meta input image.

    Counting runs hooks that leave state behind (thop registers ``total_ops``/``total_params`` buffers
    and does not remove those of modules it has no rule for), so it never touches the caller's model.
    The copy's ECA layers run the plain code: the fused kernels compute the same function but skip the
    module calls (``self.conv``, ``self(x)``) that thop's hooks and torch's module tracker see.
    """
    if img_size < MIN_IMG_SIZE:
        raise ConfigError(f"image size {img_size} is too small; use at least {MIN_IMG_SIZE} pixels")
    work = set_eca_impl(copy.deepcopy(model), "plain").to(device=COUNT_DEVICE).eval()
    dtype = next(work.parameters(), torch.empty(0)).dtype
    image = torch.empty(1, IMAGE_CHANNELS, img_size, img_size, device=COUNT_DEVICE, dtype=dtype)
    return work, image


def attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The ECA/SE layers of ``model``, keyed by module name (``'layer1.0.eca'``)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, tuple(ATTENTION_NAMES))}


@contextlib.contextmanager
def _recording_attention_inputs(model: nn.Module) -> Iterator[list[tuple[int, ...]]]:
    """Within the block, record the input shape of every call of an attention layer of ``model``."""
    shapes: list[tuple[int, ...]] = []
    handles = [m.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
               for m in attention_modules(model).values()]
    try:
        yield shapes
    finally:
        for handle in handles:
            handle.remove()


def official_pool_macs(shape: Sequence[int]) -> int:
    """thop's charge for ``nn.AdaptiveAvgPool2d(1)`` on an input of ``shape`` ``(B, C, H, W)``.

    Written out because ecanet's modules pool with ``x.mean``, a call thop never sees; the rule is thop
    0.1.1's ``count_adap_avgpool`` (``H*W`` adds and one division per output element), which
    ``tests/test_flops.py`` checks against thop itself.
    """
    batch, channels, height, width = shape
    return batch * channels * (height * width + 1)


def _flatten_layer_info(info: dict, prefix: str = "") -> dict[str, int]:
    """thop's nested ``{child: (ops, params, {grandchild: ...})}`` as ``{'layer1.0.conv1': ops, ...}``."""
    flat: dict[str, int] = {}
    for name, (ops, _params, children) in info.items():
        flat[prefix + name] = int(ops)
        flat.update(_flatten_layer_info(children, f"{prefix}{name}."))
    return flat


def count_thop(model: nn.Module, img_size: int = DEFAULT_IMG_SIZE, *,
               charge_attention_pooling: bool = True) -> ThopCount:
    """thop's count for one ``img_size x img_size`` image (see the module docstring for its rules).

    Args:
        model: any network; it is not modified (a meta-device copy is counted).
        img_size: input height and width.
        charge_attention_pooling: add thop's ``nn.AdaptiveAvgPool2d`` charge for the ECA/SE global
            pooling, as the official modules get (True, the paper's figure), or count ecanet's
            ``x.mean`` as thop sees it, for free (False).
    """
    work, image = _counting_copy(model, img_size)
    with _recording_attention_inputs(work) as attention_inputs:
        total, _params, layer_info = thop.profile(work, inputs=(image,), verbose=False, ret_layer_info=True)
    module_macs = _flatten_layer_info(layer_info)
    by_type: dict[str, int] = {}
    for name, module in work.named_modules():
        if name and next(module.children(), None) is None:  # leaves: where thop's rules apply
            key = type(module).__name__
            by_type[key] = by_type.get(key, 0) + module_macs.get(name, 0)
    pool = sum(official_pool_macs(s) for s in attention_inputs) if charge_attention_pooling else 0
    return ThopCount(
        macs=int(total) + pool,
        attention_pool_macs=pool,
        attention_macs=sum(module_macs[name] for name in attention_modules(work)),
        macs_by_layer_type={k: v for k, v in sorted(by_type.items()) if v},
        attention_inputs=tuple(attention_inputs),
    )


def count_torch_flops(model: nn.Module, img_size: int = DEFAULT_IMG_SIZE) -> TorchFlopCount:
    """``torch.utils.flop_counter.FlopCounterMode``'s count for one ``img_size x img_size`` image.

    FLOPs = 2 x MACs of the ops in torch's formula registry (convolutions, matrix multiplies, attention
    kernels); normalisation, pooling, activations and elementwise arithmetic count 0. ``model`` is not
    modified.
    """
    work, image = _counting_copy(model, img_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        work(image)
    counts = counter.get_flop_counts()
    # The counter names modules "<RootClass>.<module name>" and the whole run "Global".
    root = type(work).__name__
    attention = sum(sum(counts.get(f"{root}.{name}", {}).values()) for name in attention_modules(work))
    return TorchFlopCount(
        flops=counter.get_total_flops(),
        attention_flops=attention,
        flops_by_op={str(op): n for op, n in sorted(counts.get("Global", {}).items(), key=str)},
    )


def _attention_cost(model: nn.Module, thop_count: ThopCount, torch_count: TorchFlopCount) -> AttentionCost:
    layers = attention_modules(model)
    kinds = sorted({ATTENTION_NAMES[type(m)] for m in layers.values()})
    return AttentionCost(
        kind="+".join(kinds) or None,
        layers=len(layers),
        params=sum(models.count_parameters(m) for m in layers.values()),
        macs=thop_count.attention_macs,
        flops=torch_count.attention_flops,
        pool_macs=sum(official_pool_macs(s) for s in thop_count.attention_inputs),
        rescaled_elements=sum(math.prod(s) for s in thop_count.attention_inputs),
    )


def attention_overhead(model: nn.Module, img_size: int = DEFAULT_IMG_SIZE) -> AttentionCost:
    """Parameters and compute of ``model``'s ECA/SE layers alone, under both counters."""
    return _attention_cost(model, count_thop(model, img_size), count_torch_flops(model, img_size))


def cost_of(model: nn.Module, arch: str, k_label: str, img_size: int = DEFAULT_IMG_SIZE,
            num_classes: int = DEFAULT_NUM_CLASSES) -> ModelCost:
    """:class:`ModelCost` of an already built ``model`` (``arch``, ``k_label`` and ``num_classes`` are labels)."""
    thop_count = count_thop(model, img_size)
    torch_count = count_torch_flops(model, img_size)
    return ModelCost(
        arch=arch, k_size=k_label, img_size=img_size, num_classes=num_classes,
        params=models.count_parameters(model),
        macs=thop_count.macs,
        flops=torch_count.flops,
        attention=_attention_cost(model, thop_count, torch_count),
        macs_by_layer_type=thop_count.macs_by_layer_type,
        flops_by_op=torch_count.flops_by_op,
    )


# --------------------------------------------------------------------------------------------- models
def released_k_size(arch: str) -> str | None:
    """The ``k_size`` that builds ``arch`` as released: ``'3557'`` for eca_resnet50, None otherwise.

    None for networks without ECA layers, and for ECA-MobileNetV2, whose builder default is the
    release's rule.
    """
    if arch in RELEASE_IS_BUILDER_DEFAULT:
        return None
    return models.RELEASED_KERNEL_SIZES.get(arch)


def _k_label(arch: str, k_size: object, model: nn.Module) -> str:
    if not models.eca_kernel_sizes(model):
        return NO_ECA_LABEL
    if k_size is None:
        return models.RELEASED_KERNEL_SIZES[arch] if arch in RELEASE_IS_BUILDER_DEFAULT else ADAPTIVE_LABEL
    if isinstance(k_size, (list, tuple)):
        return "".join(str(k) for k in k_size)
    return str(k_size)


def build_model(arch: str, k_size: object = None, num_classes: int = DEFAULT_NUM_CLASSES,
                device: str | torch.device = COUNT_DEVICE) -> nn.Module:
    """``models.create_model`` on ``device`` (meta by default: no memory, no initialisation cost).

    Raises:
        ConfigError: unknown ``arch`` (the message lists the registered ones), or a ``k_size`` the
            network does not accept.
    """
    if num_classes < 1:
        raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
    try:
        with torch.device(device):
            return models.create_model(arch, num_classes=num_classes, k_size=k_size)
    except ValueError as error:  # UnknownModelError is a ValueError; so are bad kernel sizes
        raise ConfigError(str(error)) from None


def model_cost(arch: str, k_size: object = None, img_size: int = DEFAULT_IMG_SIZE,
               num_classes: int = DEFAULT_NUM_CLASSES) -> ModelCost:
    """Build ``arch`` (``k_size`` as ``models.create_model`` takes it) and count it."""
    model = build_model(arch, k_size, num_classes)
    return cost_of(model, arch, _k_label(arch, k_size, model), img_size, num_classes)


def table_order(arch: str) -> tuple:
    """Sort key that groups networks as the paper's tables do: by backbone and depth, then plain, SE, ECA."""
    prefix, _, rest = arch.partition("_")
    kind, backbone = (prefix, rest) if prefix in models.ATTENTION_KINDS else ("", arch)
    natural = tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", backbone))
    return natural, TABLE_KIND_ORDER.index(kind) if kind in TABLE_KIND_ORDER else len(TABLE_KIND_ORDER)


def released_models() -> list[tuple[str, str | None]]:
    """``(arch, k_size)`` of every registered network as released, in :func:`table_order`."""
    return [(arch, released_k_size(arch)) for arch in sorted(models.list_models(), key=table_order)]


# --------------------------------------------------------------------------------------------- reports
def _attention_cells(a: AttentionCost) -> tuple[str, str, str]:
    if a.kind is None:
        return NO_ECA_LABEL, NO_ECA_LABEL, NO_ECA_LABEL
    return format_si(a.params), format_si(a.macs), format_si(a.pool_macs)


TABLE_HEADERS = ("model", "ECA k", "params", "params, paper units", "MACs (thop)", "MACs, paper units",
                 "FLOPs (torch)", "attention params", "attention MACs", "attention GAP (thop)")


def _table_row(c: ModelCost) -> tuple[str, ...]:
    return (c.arch, c.k_size, format_si(c.params), format_paper_units(c.params), format_si(c.macs),
            format_paper_units(c.macs), format_si(c.flops), *_attention_cells(c.attention))


def table_legend(costs: Sequence[ModelCost]) -> list[str]:
    """The sentences that say what the table's columns are."""
    sizes = sorted({(c.img_size, c.num_classes) for c in costs})
    where = "; ".join(f"{s}x{s} image, {n} classes" for s, n in sizes)
    return [
        f"Per {where} (batch 1); counts depend on shapes only.",
        f"MACs (thop): {THOP_DESCRIPTION.format(version=THOP_VERSION)}.",
        f"FLOPs (torch): {TORCH_DESCRIPTION.format(version=torch.__version__)}.",
        f"paper units: {PAPER_UNITS_DESCRIPTION}; SI columns are decimal (k = 1e3, M = 1e6, G = 1e9).",
        "ECA k: kernel sizes of the released checkpoints, one digit per stage (ECA-MobileNetV2 '13': "
        "k=1 below 96 channels, 3 from 96 on).",
        "attention: the ECA/SE layers alone: parameters, thop MACs of their convolutions, and thop's "
        "charge for their global average pooling (torch's counter charges pooling 0).",
    ]


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False,
                 left_columns: int = 2) -> str:
    """Aligned plain-text columns, or a GitHub markdown table; the first ``left_columns`` are text
    (left-aligned), the others numbers (right-aligned)."""
    table = [tuple(headers), *(tuple(r) for r in rows)]
    if markdown:
        rule = ["---" if i < left_columns else "---:" for i in range(len(headers))]
        return "\n".join(f"| {' | '.join(r)} |" for r in [table[0], rule, *table[1:]])
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) if i < left_columns else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in table)


def format_table(costs: Sequence[ModelCost], markdown: bool = False) -> str:
    """One row per model followed by the legend; ``markdown`` gives a GitHub table (the README's)."""
    table = render_table(TABLE_HEADERS, [_table_row(c) for c in costs], markdown)
    bullet = "- " if markdown else ""
    return "\n".join([table, "", *(bullet + line for line in table_legend(costs))])


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.4f}% of the model" if whole else "-"


def format_report(c: ModelCost) -> str:
    """A detailed report of one model: both counters, both unit systems, what each counts."""
    a = c.attention

    def figure(label: str, value: int) -> str:
        return f"  {label:<22}{value:>16,}  = {format_si(value):>9}  ({format_paper_units(value)} in the paper's units)"

    lines = [
        f"{c.arch}  (ECA k: {c.k_size}; {c.img_size}x{c.img_size} image, batch 1; {c.num_classes} classes)",
        figure("parameters", c.params),
        figure("MACs (thop)", c.macs),
        f"      {THOP_DESCRIPTION.format(version=THOP_VERSION)}",
        "      by layer type: " + ", ".join(f"{k} {v:,}" for k, v in c.macs_by_layer_type.items())
        + (f", attention pooling {a.pool_macs:,}" if a.pool_macs else ""),
        figure("FLOPs (torch)", c.flops),
        f"      {TORCH_DESCRIPTION.format(version=torch.__version__)}",
        "      by op: " + ", ".join(f"{k} {v:,}" for k, v in c.flops_by_op.items()),
    ]
    if a.kind is None:
        return "\n".join([*lines, "  attention: none"])
    return "\n".join([
        *lines,
        f"  attention: {a.layers} {a.kind} layers",
        f"      parameters {a.params:,} ({_share(a.params, c.params)})",
        f"      convolutions {a.macs:,} MACs (thop), {a.flops:,} FLOPs (torch) ({_share(a.macs, c.macs)})",
        f"      global average pooling: {a.pool_macs:,} MACs under thop as the official nn.AdaptiveAvgPool2d "
        f"(included above; 0 for ecanet's x.mean as written, thop total {c.macs_as_written:,}); 0 under torch",
        f"      x * w rescale: {a.rescaled_elements:,} multiplies, charged by neither counter",
    ])


def costs_to_json(costs: Sequence[ModelCost]) -> dict[str, object]:
    """The table as a JSON-ready dict: versions, what each counter counts, one entry per model."""
    return {
        "thop_version": THOP_VERSION,
        "torch_version": torch.__version__,
        "counters": {
            "macs": THOP_DESCRIPTION.format(version=THOP_VERSION),
            "flops": TORCH_DESCRIPTION.format(version=torch.__version__),
            "paper_units": PAPER_UNITS_DESCRIPTION,
        },
        "models": [c.to_dict() for c in costs],
    }
