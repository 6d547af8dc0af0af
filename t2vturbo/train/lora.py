"""LoRA (peft) on a denoiser, and merging it back for export."""

from __future__ import annotations

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

#: Named target sets (``model.lora.target_modules=[NAME]``), as suffixes of module names across the
#: backbones: diffusers UNet3D / Wan (``to_q``, ``ff.net.*`` / ``ffn.net.*``, resnet ``conv1``...) and
#: VideoCrafter2's native names (``in_layers.2``, ``out_layers.3``, ``emb_layers.1``, ...).
LORA_PRESETS: dict[str, tuple[str, ...]] = {
    "attention": ("to_q", "to_k", "to_v", "to_out.0"),
    # LCM-LoRA's choice: attention + feed-forward + the resnets' convolutions and time projections
    "attention_ff_conv": (
        "to_q",
        "to_k",
        "to_v",
        "to_out.0",
        "proj_in",
        "proj_out",
        "ff.net.0.proj",
        "ff.net.2",
        "ffn.net.0.proj",
        "ffn.net.2",
        "conv1",
        "conv2",
        "conv_shortcut",
        "time_emb_proj",
        "in_layers.2",
        "out_layers.3",
        "emb_layers.1",
        "skip_connection",
    ),
}
# (no Conv1d: VideoCrafter2 applies its 1x1 Conv1d projections as a matmul on the weight, not by calling them)
_LORA_TYPES = (nn.Linear, nn.Conv2d, nn.Conv3d)


def resolve_targets(module: nn.Module, target_modules) -> list[str]:
    """Full names of the Linear / Conv layers of ``module`` that LoRA wraps: ``target_modules`` is a
    list of name suffixes, or one preset name of :data:`LORA_PRESETS`. Raises if nothing matches."""
    tm = list(target_modules)
    suffixes = LORA_PRESETS[tm[0]] if len(tm) == 1 and tm[0] in LORA_PRESETS else tuple(tm)
    hits = [
        n
        for n, m in module.named_modules()
        if isinstance(m, _LORA_TYPES) and any(n == s or n.endswith("." + s) for s in suffixes)
    ]
    if not hits:
        raise ValueError(
            f"LoRA target_modules {tm} match no Linear/Conv layer of {type(module).__name__} "
            f"(presets: {sorted(LORA_PRESETS)})"
        )
    return hits


def add_lora(module: nn.Module, rank: int, alpha: int, target_modules) -> nn.Module:
    """Inject LoRA adapters (peft) into the layers :func:`resolve_targets` selects."""
    names = resolve_targets(module, target_modules)
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=names, init_lora_weights=True)
    inject_adapter_in_model(cfg, module)
    return module


#: the student's w / eta projections (backbones.base): they train with the adapters
GUIDANCE_PROJECTIONS = ("time_cond_proj", "motion_cond_proj", "combine_proj", "cond_proj")


def mark_trainable(student: nn.Module, lora: bool):
    """LoRA: only adapters and the w/eta embedding projections train. Full: everything."""
    if not lora:
        student.requires_grad_(True)
        return
    for name, p in student.named_parameters():
        p.requires_grad_("lora_" in name or name.rsplit(".", 2)[-2] in GUIDANCE_PROJECTIONS)


def merge_lora(module: nn.Module) -> nn.Module:
    """Fold every LoRA layer into its base layer and put the base layer back (in place)."""
    for name, child in list(module.named_modules()):
        if isinstance(child, LoraLayer):
            child.merge()
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, child.get_base_layer())
    return module
