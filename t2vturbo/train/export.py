"""The end of a run: the trained network written where sampling and evaluation read it.

A student goes to a :class:`~t2vturbo.student_export.StudentExport` (EMA weights when the target is an EMA
network, LoRA merged; the teacher folder is referenced relative to the export, or written beside it when it had
none; optionally a diffusers pipeline), ready for the hub: no absolute path of this machine, files with normal
modes, a model card (``README.md``, :mod:`t2vturbo.hub`; ``train.push_to_hub=REPO`` also uploads it), and for a
LoRA student its adapter alone (:mod:`t2vturbo.lora_formats`); a trained teacher (``objective=diffusion``, VADER on the teacher) is written in its
family's own layout with its LoRA merged.

A VideoCrafter2 student is also written as ``unet_official.pt``: the official T2V-Turbo-v2 layout (the
``unet_mg.pt`` of its release: ``torch.save`` of the bare UNet state dict with ``time_cond_proj`` /
``motion_cond_proj`` / ``combine_proj``, fp32; :func:`t2vturbo.backbones.official.save_official_v2`), so it
runs in the official demo in place of ``unet_mg.pt``, and ``objective.init_from`` takes it back.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch.distributed as dist
from omegaconf import OmegaConf

from ..backbones.official import save_official_v2
from ..backbones.videocrafter2 import VideoCrafter2Denoiser
from ..export_pipeline import export_pipeline
from ..student_export import StudentExport, normalize_modes, portable_config, scrub_loaded_from
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


def run_command() -> str | None:
    """The command line of this run (``python -m t2vturbo.distill`` + Hydra's task overrides, no absolute
    paths), or None outside a Hydra app."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        overrides = list(HydraConfig.get().overrides.task)
    except (ImportError, ValueError, AttributeError):
        return None
    from ..hub import command_line

    return command_line(overrides)


def _student_export(cfg, bb, objective, sd, out: Path, step: int) -> None:
    """Rank 0's part of a student export (module docstring), hub-ready: relative teacher reference, no
    absolute paths, normal file modes, a model card; a LoRA student also as its adapter alone."""
    lcfg = cfg.model.lora
    ema = objective.ema
    net = _load_merged(bb.make_student(), lambda n: n.base, sd, lcfg)
    teacher_path = getattr(bb, "model_dir", None)
    if teacher_path is None:  # a tiny random teacher: keep it with the student
        teacher_dir = out / "teacher"
        if not teacher_dir.exists():
            bb.save_pretrained(teacher_dir)
        teacher_path = str(teacher_dir.resolve())
    meta = StudentExport.meta_for(
        cfg, bb, step, "ema" if ema is not None else "student", teacher_path, out, run_command()
    )
    if any("lora_" in k for k in sd):
        from ..lora_formats import component_of, write_lora_files

        comp = component_of(cfg.model.family)
        teacher_sd = getattr(bb.teacher, comp).state_dict() if comp and hasattr(bb.teacher, comp) else None
        meta["lora"] = write_lora_files(out, cfg.model.family, sd, lcfg, teacher_sd)
        if "skipped" in meta["lora"]:
            log.info("no LoRA adapter files: %s", meta["lora"]["skipped"])
        else:
            log.info("LoRA adapter (diffusers layout): %s", out / meta["lora"]["files"]["diffusers"])
    StudentExport.write(out, net.state_dict(), meta)
    if isinstance(getattr(net, "base", None), VideoCrafter2Denoiser):
        save_official_v2(net, out / OFFICIAL_V2_FILE)
        log.info("official T2V-Turbo-v2 UNet (the demo's unet_mg.pt): %s", out / OFFICIAL_V2_FILE)
    if cfg.train.export_diffusers:
        problem = bb.diffusers_export_problem()
        if problem:
            log.info("no diffusers pipeline export: %s", problem)
        else:
            pipe_dir = export_pipeline(out, out / "diffusers")
            rec_file = pipe_dir / "t2vturbo_pipeline.json"
            if rec_file.is_file():  # its source: the export folder, relative (not this machine's path)
                rec = json.loads(rec_file.read_text())
                rec["source"] = os.path.relpath(out.resolve(), pipe_dir.resolve())
                rec_file.write_text(json.dumps(rec, indent=2))
            log.info(
                "diffusers pipeline: DiffusionPipeline.from_pretrained(%r, trust_remote_code=True), "
                "4 steps, guidance_scale = w",
                str(out / "diffusers"),
            )
    from ..hub import write_card

    log.info("model card: %s", write_card(out))
    scrub_loaded_from(
        out
    )  # diffusers / transformers config.json files record the absolute path they came from
    normalize_modes(out)
    if cfg.train.push_to_hub:
        from ..hub import HubError, push

        try:
            log.info("pushed to %s: %s", cfg.train.push_to_hub, push(out, cfg.train.push_to_hub))
        except HubError as e:  # the export is done: say how to push it later rather than fail the run
            log.error("%s; push it later: python -m t2vturbo.hub push %s %s", e, out, cfg.train.push_to_hub)


def export_run(cfg, bb, objective, engine, step: int, rank: int) -> Path:
    out = Path(cfg.train.export_dir or (Path(cfg.output_dir) / "export"))
    lcfg = cfg.model.lora
    if objective.trains_student:
        ema = objective.ema
        sd = gathered_state_dict(ema.model if ema is not None else engine.module)
        if rank == 0:
            _student_export(cfg, bb, objective, sd, out, step)
    else:
        sd = gathered_state_dict(engine.module)
        if rank == 0:
            teacher = _load_merged(bb.trainable_teacher(clone=True), lambda n: n.unet, sd, lcfg)
            bb.save_pretrained(out, unet=teacher.unet)
            (out / "t2vturbo_teacher.json").write_text(
                json.dumps(
                    {
                        "step": step,
                        "command": run_command(),
                        "config": portable_config(OmegaConf.to_container(cfg)),
                    },
                    indent=2,
                )
            )
            scrub_loaded_from(out)
            normalize_modes(out)
    if dist.is_initialized():
        dist.barrier()
    if rank == 0:
        log.info("exported to %s", out)
    return out
