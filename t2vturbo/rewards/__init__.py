"""Differentiable rewards: ``reward(frames [B,F,3,H,W] in [-1,1], prompts) -> [B]``.

``build(name, pretrained=PATH | tiny=True, **kw)`` instantiates a registered reward;
``available()`` lists them (``python -m t2vturbo.rewards list`` prints name, kind and
the weights each expects).  See :mod:`t2vturbo.rewards.base` for the protocol.
"""

from .base import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Reward,
    frame_indices,
    normalize,
    require_files,
    resize_center_crop,
    select_frames,
    to_unit_range,
)
from .registry import UnknownRewardError, available, build, import_errors, register

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Reward",
    "UnknownRewardError",
    "available",
    "build",
    "frame_indices",
    "import_errors",
    "normalize",
    "register",
    "require_files",
    "resize_center_crop",
    "select_frames",
    "to_unit_range",
]
