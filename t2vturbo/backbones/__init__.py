"""Teacher families behind one interface (:class:`VideoBackbone`)."""

from .base import GuidedDenoiser, VideoBackbone
from .unet3d import UNet3DBackbone, check_model_dir, tiny_backbone, write_tiny_model_dir

__all__ = ["GuidedDenoiser", "UNet3DBackbone", "VideoBackbone", "check_model_dir", "tiny_backbone", "write_tiny_model_dir"]


def load_backbone(family: str, path: str, **kwargs) -> VideoBackbone:
    """Build a backbone of the named family from a local folder."""
    if family in ("unet3d", "modelscope", "zeroscope"):
        return UNet3DBackbone.from_pretrained(path, **kwargs)
    raise ValueError(f"unknown backbone family {family!r}; available: unet3d (modelscope/zeroscope layout)")
