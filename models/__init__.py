"""The networks under the official repository's names and signatures: ``import models`` from a checkout's root.

Scripts written against the official ECA-Net code build networks as its ``models`` package does:
``models.eca_resnet50(k_size=[3, 5, 5, 7], num_classes=1000, pretrained=False)``, or
``models.__dict__[arch](k_size=...)`` as its ``main.py`` does. The ECA networks here take those arguments, in
that order and with the official defaults (``k_size`` [3, 3, 3, 3] for the ECA-ResNets, not ecanet's adaptive
sizes), and build ecanet's networks, whose state_dicts have the official keys. Everything else is
:mod:`ecanet.models` as it is. This folder is not installed by ``pip install``; new code imports ``ecanet``.
"""
from typing import Any, Callable

import ecanet.models as _networks
from torch import nn

globals().update({name: value for name, value in vars(_networks).items() if not name.startswith("_")})

OFFICIAL_K_SIZE = [3, 3, 3, 3]   # the official ECA-ResNets' default kernel sizes, one per stage
OFFICIAL_RESNETS = ("eca_resnet18", "eca_resnet34", "eca_resnet50", "eca_resnet101", "eca_resnet152")


def _refuse_pretrained(arch: str, pretrained: bool) -> None:
    if pretrained:   # the official functions ignore it: the network would be untrained without a word
        raise ValueError(f"{arch}(pretrained=True): the official code ignores the flag and returns an untrained "
                         f"network, and ecanet downloads nothing. Download the released file and load it with "
                         f"ecanet.load_model(PATH).")


def _official_resnet(arch: str) -> Callable[..., nn.Module]:
    def build(k_size: Any = OFFICIAL_K_SIZE, num_classes: int = 1000, pretrained: bool = False,
              **kwargs: Any) -> nn.Module:
        _refuse_pretrained(arch, pretrained)
        k_size = OFFICIAL_K_SIZE if k_size is None else k_size
        return _networks.create_model(arch, num_classes=num_classes, k_size=k_size, **kwargs)

    build.__name__ = build.__qualname__ = arch
    build.__doc__ = (f"The official ``models.{arch}(k_size, num_classes, pretrained)``: ecanet's {arch} with one "
                     f"ECA kernel size per stage (official default {OFFICIAL_K_SIZE}; None too). ``k_size`` also "
                     f"takes what :func:`ecanet.create_model` does ('3557', 5, 'adaptive'), and other keywords "
                     f"go to it (``eca_impl``).")
    return build


for _arch in OFFICIAL_RESNETS:
    globals()[_arch] = _official_resnet(_arch)


def eca_mobilenet_v2(pretrained: bool = False, progress: bool = True, **kwargs: Any) -> nn.Module:
    """The official ``models.eca_mobilenet_v2(pretrained, progress, num_classes=..., width_mult=...)``: ecanet's
    eca_mobilenet_v2, with the official kernel sizes (1 below 96 channels, 3 from 96 on)."""
    _refuse_pretrained("eca_mobilenet_v2", pretrained)
    return _networks.create_model("eca_mobilenet_v2", **kwargs)


__all__ = sorted({name for name in vars(_networks) if not name.startswith("_")} | set(OFFICIAL_RESNETS)
                 | {"eca_mobilenet_v2"})
