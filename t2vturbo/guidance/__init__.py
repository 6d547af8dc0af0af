"""Guidance for the teacher's augmented solver: temporal-attention capture and motion guidance.

(Classifier-free guidance itself is pure math: ``t2vturbo.diffusion.apply_cfg``.)
See docs/MOTION_GUIDANCE.md.
"""

from .attention_capture import (
    DEFAULT_LAYERS,
    AttentionStore,
    CapturingAttnProcessor,
    attention_probabilities,
    capture_temporal_attention,
    list_temporal_attention_layers,
    select_layers,
)
from .motion import (
    ENERGY_SCALE,
    LAMBDA,
    LAYER_SCALE,
    PAPER_LAMBDA,
    TAU,
    TOPK,
    MotionGuidance,
    MotionReference,
    attention_maps,
    ddim_invert,
    guidance_coefficient,
    inversion_schedule,
    motion_energy,
    motion_score,
    reference_maps,
    topk_mask,
)

__all__ = [
    "DEFAULT_LAYERS",
    "ENERGY_SCALE",
    "LAMBDA",
    "LAYER_SCALE",
    "PAPER_LAMBDA",
    "TAU",
    "TOPK",
    "AttentionStore",
    "CapturingAttnProcessor",
    "MotionGuidance",
    "MotionReference",
    "attention_maps",
    "attention_probabilities",
    "capture_temporal_attention",
    "ddim_invert",
    "guidance_coefficient",
    "inversion_schedule",
    "list_temporal_attention_layers",
    "motion_energy",
    "motion_score",
    "reference_maps",
    "select_layers",
    "topk_mask",
]
