"""Teacher families behind one interface (:class:`VideoBackbone`)."""

from .base import GuidedDenoiser, VideoBackbone
from .unet3d import UNet3DBackbone, check_model_dir, tiny_backbone, write_tiny_model_dir

__all__ = ["GuidedDenoiser", "UNet3DBackbone", "VideoBackbone", "check_model_dir", "tiny_backbone", "write_tiny_model_dir"]


def load_backbone(family: str, path: str, **kwargs) -> VideoBackbone:
    """Build a backbone of the named family from a local folder."""
    if family in ("unet3d", "modelscope", "zeroscope"):
        return UNet3DBackbone.from_pretrained(path, **kwargs)
    if family == "wan":
        from .wan import WanBackbone

        return WanBackbone.from_pretrained(path, **kwargs)
    if family == "videocrafter2":
        from .videocrafter2 import VideoCrafter2Backbone

        return VideoCrafter2Backbone.from_pretrained(path, **kwargs)
    raise ValueError(
        f"unknown backbone family {family!r}; available: unet3d (modelscope/zeroscope layout), wan, videocrafter2"
    )
