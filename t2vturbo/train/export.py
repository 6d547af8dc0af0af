"""The end of a run: the trained network written where sampling and evaluation read it.

A student goes to a :class:`~t2vturbo.student_export.StudentExport` (EMA weights when the target is an EMA
network, LoRA merged; the teacher folder is referenced, or written beside it when it had none; optionally
a diffusers pipeline); a trained teacher (``objective=diffusion``, VADER on the teacher) is written in its
family's own layout with its LoRA merged.

A VideoCrafter2 student is also written as ``unet_official.pt``: the official T2V-Turbo-v2 layout (the
``unet_mg.pt`` of its release: ``torch.save`` of the bare UNet state dict with ``time_cond_proj`` /
``motion_cond_proj`` / ``combine_proj``, fp32; :func:`t2vturbo.backbones.official.save_official_v2`), so it
runs in the official demo in place of ``unet_mg.pt``, and ``objective.init_from`` takes it back.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch.distributed as dist
from omegaconf import OmegaConf

from ..backbones.official import save_official_v2
from ..backbones.videocrafter2 import VideoCrafter2Denoiser
from ..export_pipeline import export_pipeline
from ..student_export import StudentExport
from .ema import gathered
from .lora import add_lora, merge_lora

log = logging.getLogger("t2vturbo")

OFFICIAL_V2_FILE = "unet_official.pt"  # a VideoCrafter2 student in the official v2 layout (unet_mg.pt)


def gathered_state_dict(module) -> dict:
    with gathered(list(module.parameters())):  # full tensors under ZeRO-3
        return {k: v.detach().clone().cpu() for k, v in module.state_dict().items()}


def _load_merged(net, lora_root, sd: dict, lcfg):
    """``net`` with the trained state ``sd`` loaded (LoRA adapters added first when ``sd`` has them, then
    merged into the base layers)."""
    lora = any("lora_" in k for k in sd)
    if lora:
        add_lora(lora_root(net), lcfg.rank, lcfg.alpha, lcfg.target_modules)
    net.load_state_dict(sd)
    if lora:
        merge_lora(lora_root(net))
    return net


def export_run(cfg, bb, objective, engine, step: int, rank: int) -> Path:
    out = Path(cfg.train.export_dir or (Path(cfg.output_dir) / "export"))
    lcfg = cfg.model.lora
    if objective.trains_student:
        ema = objective.ema
        sd = gathered_state_dict(ema.model if ema is not None else engine.module)
        if rank == 0:
            net = _load_merged(bb.make_student(), lambda n: n.base, sd, lcfg)
            teacher_path = getattr(bb, "model_dir", None)
            if teacher_path is None:  # a tiny random teacher: keep it with the student
                teacher_dir = out / "teacher"
                if not teacher_dir.exists():
                    bb.save_pretrained(teacher_dir)
                teacher_path = str(teacher_dir.resolve())
            meta = StudentExport.meta_for(
                cfg, bb, step, "ema" if ema is not None else "student", teacher_path
            )
            StudentExport.write(out, net.state_dict(), meta)
            if isinstance(getattr(net, "base", None), VideoCrafter2Denoiser):
                save_official_v2(net, out / OFFICIAL_V2_FILE)
                log.info("official T2V-Turbo-v2 UNet (the demo's unet_mg.pt): %s", out / OFFICIAL_V2_FILE)
            if cfg.train.export_diffusers:
                problem = bb.diffusers_export_problem()
                if problem:
                    log.info("no diffusers pipeline export: %s", problem)
                else:
                    export_pipeline(out, out / "diffusers")
                    log.info(
                        "diffusers pipeline: DiffusionPipeline.from_pretrained(%r, trust_remote_code=True), "
                        "4 steps, guidance_scale = w",
                        str(out / "diffusers"),
                    )
    else:
        sd = gathered_state_dict(engine.module)
        if rank == 0:
            teacher = _load_merged(bb.trainable_teacher(clone=True), lambda n: n.unet, sd, lcfg)
            bb.save_pretrained(out, unet=teacher.unet)
            (out / "t2vturbo_teacher.json").write_text(
                json.dumps({"step": step, "config": OmegaConf.to_container(cfg)}, indent=2)
            )
    if dist.is_initialized():
        dist.barrier()
    if rank == 0:
        log.info("exported to %s", out)
    return out
