"""Data pipelines: procedural toy world and video I/O."""

from t2vturbo.data.toy import (
    COLORS,
    DIRECTIONS,
    SHAPES,
    ToyAttributes,
    ToyClipDataset,
    caption,
    held_out_prompts,
    parse_caption,
    render_clip,
    sample_attributes,
)
from t2vturbo.data.video_io import frames_to_uint8, read_video, write_video

__all__ = [
    "COLORS",
    "DIRECTIONS",
    "SHAPES",
    "ToyAttributes",
    "ToyClipDataset",
    "caption",
    "frames_to_uint8",
    "held_out_prompts",
    "parse_caption",
    "read_video",
    "render_clip",
    "sample_attributes",
    "write_video",
]
