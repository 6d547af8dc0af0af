"""LoRA (peft) on a denoiser, and merging it back for export."""

from __future__ import annotations

from torch import nn


def add_lora(module: nn.Module, rank: int, alpha: int, target_modules) -> nn.Module:
    from peft import LoraConfig, inject_adapter_in_model

    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(target_modules), init_lora_weights=True)
    inject_adapter_in_model(cfg, module)
    return module


def mark_trainable(student: nn.Module, lora: bool):
    """LoRA: only adapters and the w/eta embedding projections train. Full: everything."""
    if not lora:
        student.requires_grad_(True)
        return
    for name, p in student.named_parameters():
        p.requires_grad_("lora_" in name or name.split(".")[0] in ("w_proj", "eta_proj", "fuse"))


def merge_lora(module: nn.Module) -> nn.Module:
    """Fold every LoRA layer into its base layer and put the base layer back (in place)."""
    from peft.tuners.lora import LoraLayer

    for name, child in list(module.named_modules()):
        if isinstance(child, LoraLayer):
            child.merge()
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, child.get_base_layer())
    return module
