"""A network's recipe: what rebuilds it and what its inputs must look like.

Weights alone do not say how to use them: a network trained on 64x64 crops with its own mean and std gives
wrong answers when evaluated the ImageNet way, and an ECA layer built with another kernel size cannot take
its weight. Every file ecanet writes (``last.pth``, ``best.pth``, an export folder's ``config.json``)
records a :class:`Recipe` beside the weights, and every reader (``-e``, ``--weights``,
:func:`ecanet.load_model`) uses it unless an option overrides it.

Files without one (the official releases) get :func:`Recipe.paper_defaults`: the kernel sizes read off the
weights and the paper's ImageNet preprocessing (Resize 256, CenterCrop 224, bilinear, ImageNet mean/std).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from . import __version__
from .constants import IMAGE_CHANNELS, IMAGENET_IMG_SIZE, IMAGENET_MEAN, IMAGENET_STD, IMAGENET_VAL_RESIZE
from .errors import CheckpointError

RECIPE_FORMAT_VERSION = 1   # raise when a field changes meaning; readers refuse newer versions
# torchvision's Resize and RandomResizedCrop default, what ecanet trains and evaluates with.
INTERPOLATION = "bilinear"
# How single-channel images enter the 3-channel networks: PIL's convert("RGB") repeats the grey channel.
GRAYSCALE_TO_RGB = "repeat"
RECORDED, PAPER_DEFAULTS = "recorded", "the paper's ImageNet defaults"


@dataclass(frozen=True)
class Recipe:
    """Everything needed to rebuild a network and preprocess its inputs.

    ``eca_kernel_sizes`` maps each ECA layer (``'layer1.0.eca'``) to its kernel size. Evaluation resizes the
    shorter side to ``val_resize`` pixels and takes the centre ``img_size`` crop (``crop_ratio`` =
    img_size / val_resize, 0.875 in the paper), then normalises with ``mean`` and ``std``.
    """

    arch: str
    num_classes: int
    eca_kernel_sizes: Mapping[str, int] = field(default_factory=dict)
    img_size: int = IMAGENET_IMG_SIZE
    val_resize: int = IMAGENET_VAL_RESIZE
    interpolation: str = INTERPOLATION
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    grayscale: str = GRAYSCALE_TO_RGB
    classes: tuple[str, ...] | None = None
    ecanet_version: str = __version__
    format_version: int = RECIPE_FORMAT_VERSION
    origin: str = field(default=RECORDED, compare=False)  # not saved: where this recipe came from

    @property
    def crop_ratio(self) -> float:
        return self.img_size / self.val_resize

    @classmethod
    def paper_defaults(cls, arch: str, num_classes: int, eca_kernel_sizes: Mapping[str, int]) -> "Recipe":
        """The recipe of a file that records none: its network, the paper's ImageNet preprocessing."""
        return cls(arch, num_classes, dict(eca_kernel_sizes), origin=PAPER_DEFAULTS)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (lists for tuples), as checkpoints and ``config.json`` store them."""
        out = asdict(self)
        out.pop("origin")
        out["eca_kernel_sizes"] = dict(self.eca_kernel_sizes)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        out["classes"] = list(self.classes) if self.classes is not None else None
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str) -> "Recipe":
        """Read a stored recipe; a :class:`CheckpointError` naming ``source`` when it is newer or damaged."""
        if not isinstance(values, Mapping):
            raise CheckpointError(f"{source}: its recipe is not a mapping of names to values. The file is damaged; "
                                  f"write it again (or export it again) with ecanet.")
        version = values.get("format_version")
        if not isinstance(version, int):
            raise CheckpointError(f"{source}: its recipe has no format version ({version!r}). The file is damaged; "
                                  f"write it again (or export it again) with ecanet.")
        if version > RECIPE_FORMAT_VERSION:
            raise CheckpointError(f"{source} records a recipe in format version {version!r}, newer than this ecanet "
                                  f"{__version__} reads (up to {RECIPE_FORMAT_VERSION}). Upgrade ecanet to the "
                                  f"version that wrote it ({values.get('ecanet_version', 'unknown')}) or newer.")
        try:
            classes = values.get("classes")
            recipe = cls(arch=str(values["arch"]), num_classes=int(values["num_classes"]),
                       eca_kernel_sizes={str(k): int(v) for k, v in dict(values.get("eca_kernel_sizes") or {}).items()},
                       img_size=int(values["img_size"]), val_resize=int(values["val_resize"]),
                       interpolation=str(values.get("interpolation", INTERPOLATION)),
                       mean=tuple(float(v) for v in values["mean"]), std=tuple(float(v) for v in values["std"]),
                       grayscale=str(values.get("grayscale", GRAYSCALE_TO_RGB)),
                       classes=tuple(str(c) for c in classes) if classes is not None else None,
                       ecanet_version=str(values.get("ecanet_version", "unknown")), format_version=version)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: its recipe lacks or garbles a field ({type(exc).__name__}: {exc}). "
                                  f"The file is damaged; write it again (or export it again) with ecanet.") from None
        problem = recipe.problem()
        if problem:
            raise CheckpointError(f"{source}: its recipe's {problem}. The file is damaged or was edited; correct "
                                  f"that field, or write the file again (or export it again) with ecanet.")
        return recipe

    def problem(self) -> str | None:
        """What makes this recipe unusable, in words (``'std is [0.0, ...]: ...'``), or None."""
        if self.num_classes < 0:
            return f"num_classes is {self.num_classes}: it counts the classifier's outputs, 0 or more"
        for name, size in (("img_size", self.img_size), ("val_resize", self.val_resize)):
            if size < 1:
                return f"{name} is {size}: evaluation's crop and resize need positive pixel counts"
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != IMAGE_CHANNELS or not all(math.isfinite(v) for v in values):
                return f"{name} is {list(values)}: it needs {IMAGE_CHANNELS} finite numbers, one per colour channel"
        if min(self.std) <= 0:
            return f"std is {list(self.std)}: it divides the pixels, so every value must be positive"
        if self.interpolation != INTERPOLATION:
            return (f"interpolation is {self.interpolation!r}: ecanet resizes with {INTERPOLATION!r} only, so "
                    f"these weights would be evaluated otherwise than recorded")
        if self.grayscale != GRAYSCALE_TO_RGB:
            return f"grayscale is {self.grayscale!r}: ecanet converts grey images with {GRAYSCALE_TO_RGB!r} only"
        return None

    def describe(self) -> str:
        """One line for the log: the network and the preprocessing, and where they came from."""
        mean = ", ".join(f"{v:.3g}" for v in self.mean)
        std = ", ".join(f"{v:.3g}" for v in self.std)
        return (f"{self.arch}, {self.num_classes} classes; evaluation: Resize({self.val_resize}) + "
                f"CenterCrop({self.img_size}), {self.interpolation}, mean ({mean}), std ({std}) [{self.origin}]")
