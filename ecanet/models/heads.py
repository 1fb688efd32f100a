"""The classifier at the end of a network, and timm's convention for leaving it out.

``num_classes=0`` builds ``nn.Identity`` in place of the final ``nn.Linear``: the network then returns its
pooled features, ``(B, num_features)``, as timm's ``create_model(..., num_classes=0)`` does. Both ResNet and
MobileNetV2 expose the same small head API: ``num_classes``, ``num_features``, ``forward_features`` (the last
feature map), ``forward_head(x, pre_logits=False)``, ``get_classifier()`` and
``reset_classifier(num_classes, global_pool)``; ``reset_classifier(0, "")`` leaves the pooling out too, so the
network returns its last feature map.
"""
from __future__ import annotations

from torch import nn

from ..errors import whole_number


def check_num_classes(num_classes: object) -> int:
    """``num_classes`` as an int: any integer type (a NumPy integer too) >= 0, not a bool; else a ValueError."""
    return whole_number(num_classes, "num_classes", minimum=0, note=" (0: no classifier, the pooled features)")


def classifier_layer(num_features: int, num_classes: int) -> nn.Module:
    """``nn.Linear(num_features, num_classes)``, or ``nn.Identity`` for ``num_classes`` 0 (pooled features)."""
    count = check_num_classes(num_classes)
    return nn.Linear(num_features, count) if count > 0 else nn.Identity()


GLOBAL_POOLS = ("avg", "")   # global average pooling, or none (the feature map itself)


def check_global_pool(global_pool: str | None, num_classes: int, current: str) -> str:
    """The pooling ``reset_classifier(num_classes, global_pool)`` leaves: ``current`` for None, else
    ``global_pool`` if it is one of :data:`GLOBAL_POOLS` and goes with ``num_classes``, else a ValueError."""
    global_pool = current if global_pool is None else global_pool
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {global_pool!r}")
    if global_pool == "" and num_classes:
        raise ValueError(f"global_pool='' returns the unpooled feature map, which takes no classifier; pass "
                         f"num_classes=0 with it, not {num_classes}")
    return global_pool
