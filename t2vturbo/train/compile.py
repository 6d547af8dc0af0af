"""``train.compile``: ``torch.compile`` (inductor) the networks of the training step, once, in place.

:func:`compile_networks` calls ``nn.Module.compile()`` on

* the trained module (``objective.module``: the student; the teacher for ``objective=diffusion`` and
  ``reward_finetune`` of the teacher),
* the consistency target network (``objective.target``: the EMA copy; ``target=student`` is the student),
* the frozen teacher denoiser (``backbone.teacher``).

``nn.Module.compile()`` compiles the module's ``__call__`` and changes nothing else: the parameters, buffers,
hooks and ``state_dict`` keys are the module's own, so the DeepSpeed engine that wraps the student, its
ZeRO partitioning, checkpoints, the EMA update and the export see the uncompiled module (tested in
tests/component/test_faster_step.py). Activation checkpointing (``train.gradient_checkpointing``) and
LoRA adapters (peft) are traced through. Compilation happens at each network's first call (the first
training step takes that much longer); a later call with new shapes or grad mode compiles once more.

What stays eager:

* the text encoder, the VAE and the reward models (outside these networks);
* the teacher's motion-guidance passes when ``guidance.motion=true``: they install capturing attention
  processors around each call (t2vturbo/guidance/attention_capture.py) and invert with batches of varying
  size, so the teacher then stays eager altogether (the student and target are still compiled).

Call it after the objective is built (the EMA target is a ``deepcopy`` of the student, and a deepcopy of a
compiled module would call the original's compiled ``__call__``) and before the first step.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..config import ConfigError

log = logging.getLogger("t2vturbo")


def networks(objective, backbone) -> dict[str, nn.Module]:
    """``{name: module}`` of what :func:`compile_networks` compiles (each module once)."""
    found = {
        "trained": getattr(objective, "module", None),
        "target": getattr(objective, "target", None),
        "teacher": getattr(backbone, "teacher", None),
    }
    if getattr(objective, "motion_guidance", None) is not None:
        found.pop("teacher")
    out, seen = {}, set()
    for name, m in found.items():
        if isinstance(m, nn.Module) and id(m) not in seen:
            seen.add(id(m))
            out[name] = m
    return out


def compile_networks(objective, backbone, enabled: bool, **options) -> list[str]:
    """``module.compile(**options)`` (default: inductor) on the step's networks when ``enabled``
    (``train.compile``); returns the names compiled (``trained``, ``target``, ``teacher``)."""
    if not enabled:
        return []
    if not hasattr(nn.Module, "compile"):
        raise ConfigError(
            f"train.compile=true needs torch >= 2.2 (nn.Module.compile); this is {torch.__version__}"
        )
    nets = networks(objective, backbone)
    for m in nets.values():
        m.compile(**options)
    log.info(
        "train.compile: %s compiled at their first call%s",
        ", ".join(nets),
        "" if "teacher" in nets else " (the teacher stays eager: motion guidance)",
    )
    return list(nets)
