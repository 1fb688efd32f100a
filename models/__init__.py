"""The networks under the official repository's name: ``import models`` from a checkout's root.

Kept for scripts written against the official ECA-Net layout (``models.eca_resnet50(k_size=...)``); the
networks live in :mod:`ecanet.models`, which is what ``pip install`` provides (this folder is not installed).
"""
import ecanet.models as _networks

globals().update({name: value for name, value in vars(_networks).items() if not name.startswith("_")})
__all__ = [name for name in vars(_networks) if not name.startswith("_")]
