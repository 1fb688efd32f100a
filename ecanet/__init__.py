"""ecanet: ECA-Net (Wang et al., CVPR 2020) in PyTorch: the official networks, their training and their costs.

The public API::

    import ecanet
    ecanet.list_models("eca_*")                                  # registered architectures
    model = ecanet.create_model("eca_resnet50", k_size="3557")   # the released ECA-Net50, untrained
    model = ecanet.load_model("eca_resnet50_k3557.pth.tar")      # a network with its weights, from a file
    layer = ecanet.EcaModule(256)                                # ECA for your own network

Submodules: :mod:`ecanet.models` (the networks), :mod:`ecanet.checkpoint` (checkpoint and export-folder
formats), :mod:`ecanet.recipe` (what a checkpoint records about its network and preprocessing),
:mod:`ecanet.export` (ONNX), :mod:`ecanet.config`, :mod:`ecanet.data`, :mod:`ecanet.engine`,
:mod:`ecanet.distributed`, :mod:`ecanet.optim`, :mod:`ecanet.metrics`, :mod:`ecanet.flops`,
:mod:`ecanet.detection` (the COCO detectors), :mod:`ecanet.bench` (the timing harness).
"""
import importlib as _importlib

__version__ = "0.2.0"

# The public names and the submodule that defines each. They are imported on first use, so that
# `import ecanet.config` (what the command lines parse their options with) does not import torch.
_PUBLIC = {
    "create_model": "ecanet.models",
    "list_models": "ecanet.models",
    "EcaModule": "ecanet.models",
    "load_model": "ecanet.checkpoint",
}
__all__ = ["EcaModule", "__version__", "create_model", "list_models", "load_model"]


# The submodules the docstring names: ``ecanet.models.compile_model`` works after a plain ``import ecanet``.
_SUBMODULES = ("bench", "checkpoint", "config", "data", "detection", "distributed", "engine", "export", "flops",
               "metrics", "models", "optim", "recipe")


def __getattr__(name: str) -> object:
    if name in _PUBLIC:
        value = getattr(_importlib.import_module(_PUBLIC[name]), name)
    elif name in _SUBMODULES:
        value = _importlib.import_module(f"ecanet.{name}")
    else:
        raise AttributeError(f"module 'ecanet' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # tab completion and dir() show the submodules too, though they are imported on first use
    return sorted((*__all__, *_SUBMODULES))
