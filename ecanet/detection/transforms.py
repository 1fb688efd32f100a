"""Detection transforms: torchvision's ``transforms.v2`` on ``(image, target)`` pairs.

The image is a ``tv_tensors.Image`` and the target holds ``tv_tensors.BoundingBoxes`` and ``tv_tensors.Mask``,
so one random flip moves the pixels, the boxes and the masks together. There is no resizing here: the
detectors resize inside the network (torchvision's ``GeneralizedRCNNTransform``, ``min_size`` / ``max_size``)
and map their boxes back to the original pixels.

The randomness comes from torch's global CPU generator, as in every torchvision transform;
:class:`ecanet.detection.data.CocoDetectionDataset` seeds it per sample when its key carries a seed, which
makes an epoch's flips a pure function of the seed (:class:`ecanet.detection.data.SeededDistributedSampler`).
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2

DEFAULT_FLIP_PROBABILITY = 0.5


def detection_transforms(train: bool, flip_probability: float = DEFAULT_FLIP_PROBABILITY) -> v2.Compose:
    """Training: a random horizontal flip (probability ``flip_probability``), then uint8 -> float in [0, 1].
    Evaluation: only the conversion to float."""
    if not 0.0 <= flip_probability <= 1.0:
        raise ValueError(f"flip_probability must lie in [0, 1], got {flip_probability}")
    steps: list[v2.Transform] = []
    if train and flip_probability > 0:
        steps.append(v2.RandomHorizontalFlip(p=flip_probability))
    steps.append(v2.ToDtype(torch.float32, scale=True))  # scales images only; boxes and masks keep their dtypes
    return v2.Compose(steps)
