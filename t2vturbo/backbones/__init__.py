"""Teacher families behind one interface (:class:`VideoBackbone`), and the one registry of families."""

from __future__ import annotations

from pathlib import Path

import torch

from .attention import set_attention
from .base import GuidedDenoiser, VideoBackbone
from .unet3d import UNet3DBackbone, check_model_dir, tiny_backbone, write_tiny_model_dir
from .videocrafter2 import VideoCrafter2Backbone
from .wan import WanBackbone

#: ``model.family`` -> backbone class (modelscope / zeroscope: the diffusers UNet3D layout)
FAMILIES: dict[str, type[VideoBackbone]] = {
    "unet3d": UNet3DBackbone,
    "modelscope": UNet3DBackbone,
    "zeroscope": UNet3DBackbone,
    "videocrafter2": VideoCrafter2Backbone,
    "wan": WanBackbone,
}

__all__ = [
    "FAMILIES",
    "GuidedDenoiser",
    "UNet3DBackbone",
    "VideoBackbone",
    "build_backbone",
    "check_model_dir",
    "check_paths",
    "family_class",
    "load_backbone",
    "tiny_backbone",
    "write_tiny_model_dir",
]


def family_class(family: str) -> type[VideoBackbone]:
    try:
        return FAMILIES[family]
    except KeyError:
        raise ValueError(
            f"unknown backbone family {family!r}; available: unet3d (modelscope/zeroscope layout), "
            "wan, videocrafter2"
        ) from None


def check_paths(cfg) -> None:
    """Fail before any heavy work if ``model.path`` is unusable (the message names the key and the path)."""
    if cfg.model.path is None:
        return
    try:
        family_class(cfg.model.family).check_path(cfg.model)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"model.path: {e}") from None


def build_backbone(
    model_cfg, gradient_checkpointing: bool = False, device="cpu", dtype=torch.float32
) -> VideoBackbone:
    """The teacher of ``cfg.model`` on ``device``, networks in ``dtype`` (path null: a tiny random one), its
    attention kernel set by ``model.attention`` (the student and target are copies of it)."""
    bb = family_class(model_cfg.family).from_model_config(model_cfg, gradient_checkpointing, dtype).to(device)
    set_attention(bb.teacher, getattr(model_cfg, "attention", "sdpa"))
    return bb


def load_backbone(family: str, path: str | Path, **kwargs) -> VideoBackbone:
    """A backbone of the named family from a local folder."""
    return family_class(family).from_pretrained(path, **kwargs)
