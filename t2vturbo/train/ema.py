"""Exponential moving average of parameters: theta_ema <- mu theta_ema + (1 - mu) theta."""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn


def gathered(params):
    """Gather ZeRO-3 partitioned parameters (no-op otherwise)."""
    if any(hasattr(p, "ds_id") for p in params):
        # lazy: only ZeRO-3 partitioned params (deepspeed already running) need it; objectives, precompute
        # and export import this module without deepspeed (~0.4 s more and an accelerator warning on stderr)
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
    return contextlib.nullcontext()


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        params = list(model.parameters())
        with gathered(params):
            self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)
        self.model.eval()

    @torch.no_grad()
    def update(self, model: nn.Module):
        src = dict(model.named_parameters())
        params = list(src.values())
        with gathered(params):
            for name, p_ema in self.model.named_parameters():
                p = src[name]
                p_ema.copy_(torch.lerp(p.detach().to(p_ema.dtype), p_ema, self.decay))

    def state_dict(self):
        return self.model.state_dict()

    def load_state_dict(self, sd):
        self.model.load_state_dict(sd)
