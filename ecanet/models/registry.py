"""The model registry: ``@register_model`` builders, ``create_model(arch, ...)`` and ``list_models()``."""
from __future__ import annotations

import difflib
import fnmatch
import inspect
from typing import Callable, Sequence

from torch import nn

from .eca_module import set_eca_impl
from .features import DEFAULT_OUT_INDICES, FeatureExtractor

ModelBuilder = Callable[..., nn.Module]
_BUILDERS: dict[str, ModelBuilder] = {}


class UnknownModelError(ValueError):
    """Raised for an arch name that is not registered; the message lists the registered ones."""


def register_model(builder: ModelBuilder) -> ModelBuilder:
    """Register ``builder`` under its function name (``eca_resnet50``)."""
    name = builder.__name__
    if name in _BUILDERS:
        raise ValueError(f"model {name!r} is registered twice")
    _BUILDERS[name] = builder
    return builder


def list_models(pattern: str | Sequence[str] | None = None) -> list[str]:
    """Registered architecture names, sorted; ``pattern`` is a shell glob such as ``'eca_*'``, or a list of
    them (a name matching any)."""
    names = sorted(_BUILDERS)
    if not pattern:
        return names
    patterns = [pattern] if isinstance(pattern, str) else list(pattern) if isinstance(pattern, (list, tuple)) else None
    if patterns is None or not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"list_models takes a shell pattern such as 'eca_*' or a list of them, got {pattern!r}")
    return [n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)]


def unknown_model_message(arch: object) -> str:
    """'unknown architecture ...', naming the registered name closest to ``arch`` (case aside), and every one."""
    lowered = {name.lower(): name for name in _BUILDERS}
    close = difflib.get_close_matches(str(arch).lower(), list(lowered), n=1, cutoff=0.6)
    hint = f"did you mean {lowered[close[0]]}? " if close else ""
    return f"unknown architecture {arch!r}; {hint}known: {', '.join(list_models())}"


def is_model(arch: str) -> bool:
    return arch in _BUILDERS


PRETRAINED_MESSAGE = ("ecanet downloads nothing, so pretrained=True has nothing to load. Download the released "
                      "file yourself (links in docs/model_zoo.md) and load it with ecanet.load_model(PATH), or "
                      "torch.hub.load(REPO_DIR, '{arch}', source='local', weights=PATH).")


def create_model(arch: str, num_classes: int = 1000, k_size: object = None, eca_impl: str = "auto",
                 pretrained: bool = False, features_only: bool = False,
                 out_indices: int | Sequence[int] | None = None, **kwargs) -> nn.Module:
    """Build a registered network.

    >>> model = create_model("eca_resnet50", k_size="3557")   # the released ECA-Net50

    Args:
        arch: a name from :func:`list_models`, e.g. ``'eca_resnet50'``.
        num_classes: classifier outputs.
        k_size: ECA kernel sizes (ECA networks only): None / ``'adaptive'`` (the paper's psi(C)), an int,
            one value per stage (``[3, 5, 5, 7]`` or the official CLI string ``"3557"``).
        eca_impl: how the ECA layers compute: ``'auto'`` (fused Triton kernels on CUDA where available),
            ``'fused'`` or ``'plain'``; recorded on the model as ``model.eca_impl`` (see
            :class:`~ecanet.models.EcaModule`). Networks without ECA layers record it too and ignore it.
        pretrained: accepted for the common signature; True raises a ValueError that says where the released
            weights are and how to load them (ecanet downloads nothing).
        features_only: return a :class:`~ecanet.models.features.FeatureExtractor`: the network without its
            classifier, whose forward returns the stage outputs ``out_indices`` as a list (their channels and
            strides in its ``feature_info``).
        out_indices: the stages ``features_only`` returns (0-4: strides 2, 4, 8, 16, 32; negative ones count from
            the end; an int n, the last n stages); default (1, 2, 3, 4). Only with ``features_only``.
        **kwargs: passed to the builder (e.g. ``dropout`` for MobileNetV2).
    """
    if pretrained:
        raise ValueError(PRETRAINED_MESSAGE.format(arch=arch))
    if out_indices is not None and not features_only:
        raise ValueError(f"out_indices={out_indices!r} chooses the stages of a feature extractor; pass "
                         f"features_only=True with it (the classification network returns class scores)")
    if arch not in _BUILDERS:
        raise UnknownModelError(unknown_model_message(arch))
    builder = _BUILDERS[arch]
    if k_size is not None:
        if "k_size" not in inspect.signature(builder).parameters:
            raise ValueError(f"k_size (--ksize) applies to ECA networks only; {arch!r} has no ECA layers")
        kwargs["k_size"] = k_size
    model = set_eca_impl(builder(num_classes=num_classes, **kwargs), eca_impl)
    if not features_only:
        return model
    return FeatureExtractor(model, DEFAULT_OUT_INDICES if out_indices is None else out_indices)
