"""A LoRA student's adapter alone, in the layouts other tools load.

A LoRA student (``model.lora.enabled=true``) is the teacher plus three kinds of change: the LoRA adapters
(peft, ``t2vturbo.train.lora``), the w / eta projections every student adds (:data:`GUIDANCE_PROJECTIONS`:
``time_embedding.cond_proj``, ``motion_cond_proj``, ``combine_proj``; trained with the adapters), and nothing
else (the base weights stay the teacher's). Beside the merged ``student.safetensors`` the export then holds:

    pytorch_lora_weights.safetensors   the adapters, diffusers' LoRA layout: ``unet.<module>.lora_A.weight`` /
                                       ``.lora_B.weight`` (UNet3D students; ``transformer.<module>...`` for Wan),
                                       the LoRA scale alpha / r folded into ``lora_B`` (so alpha = r, scale 1,
                                       which diffusers assumes for a file without alphas)
    guidance_layers.safetensors        the w / eta projections (``unet.time_embedding.cond_proj.weight``, ...):
                                       not LoRA layers, so ``load_lora_weights`` cannot create them (diffusers
                                       refuses a LoRA file with keys that are not LoRA); load them into the
                                       teacher's denoiser first (:func:`teacher_pipeline` does)
    comfyui_lora.safetensors           Wan students: the same adapters under the original Wan checkpoint names
                                       that ComfyUI reads (``diffusion_model.blocks.0.self_attn.q.lora_A.weight``);
                                       diffusers' ``WanPipeline.lora_state_dict`` reads it back to the same tensors

UNet3D students load in diffusers as::

    from t2vturbo.lora_formats import teacher_pipeline
    pipe = teacher_pipeline(EXPORT)        # the teacher + the w / eta layers (T2VTurboPipeline, LoRA-loadable)
    pipe.load_lora_weights(EXPORT)         # pytorch_lora_weights.safetensors
    video = pipe(prompt, num_inference_steps=4).frames

which samples as the merged student (tested). The adapters alone are written only when the student's base
weights are the teacher's (not after ``objective.init_from`` another student, say).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from diffusers.loaders import PeftAdapterMixin, StableDiffusionLoraLoaderMixin, WanLoraLoaderMixin
from safetensors.torch import save_file

from .export_pipeline import T2VTurboPipeline, T2VTurboUNet3DConditionModel, lcm_scheduler
from .train.lora import GUIDANCE_PROJECTIONS

log = logging.getLogger("t2vturbo")

LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' default LoRA weight name
GUIDANCE_FILE = "guidance_layers.safetensors"
COMFYUI_FILE = "comfyui_lora.safetensors"

#: model.family -> the diffusers pipeline component the student's denoiser is (``base.<component>`` in its state dict)
COMPONENTS = {"unet3d": "unet", "modelscope": "unet", "zeroscope": "unet", "wan": "transformer"}

#: diffusers' names of a WanTransformer3DModel's layers -> the original Wan checkpoint's (ComfyUI's) names:
#: within a block (``blocks.{i}.``), and at the top level
WAN_BLOCK_NAMES = {
    **{f"attn1.{d}": f"self_attn.{o}" for d, o in zip(("to_q", "to_k", "to_v", "to_out.0"), "qkvo")},
    **{f"attn2.{d}": f"cross_attn.{o}" for d, o in zip(("to_q", "to_k", "to_v", "to_out.0"), "qkvo")},
    "attn2.add_k_proj": "cross_attn.k_img",
    "attn2.add_v_proj": "cross_attn.v_img",
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
}
WAN_TOP_NAMES = {
    "proj_out": "head.head",
    "condition_embedder.time_proj": "time_projection.1",
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
}
_LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<ab>lora_A|lora_B)\.(?P<adapter>[^.]+)\.(?P<param>weight|bias)$")


def component_of(family: str) -> str | None:
    """The diffusers component (``unet`` / ``transformer``) of a family's student, None for families without a
    diffusers LoRA layout (videocrafter2)."""
    return COMPONENTS.get(family)


def lora_adapter(
    student_sd: dict[str, torch.Tensor], component: str, scaling: float
) -> dict[str, torch.Tensor]:
    """The adapters of a student state dict (peft keys ``base.<component>.<module>.lora_A.default.weight``) as
    ``<module>.lora_A.weight`` / ``<module>.lora_B.weight``, float32, ``lora_B`` times ``scaling`` (alpha / r)."""
    prefix = f"base.{component}."
    out = {}
    for k, v in student_sd.items():
        m = _LORA_KEY.match(k)
        if m is None:
            continue
        if not k.startswith(prefix):
            raise ValueError(f"LoRA key {k!r} is not under {prefix!r}: not a {component} student's")
        if m["adapter"] != "default":
            raise ValueError(f"LoRA key {k!r}: only the adapter 'default' is exported")
        t = v.detach().float().cpu()
        if m["ab"] == "lora_B":
            t = t * float(scaling)
        out[f"{m['module'][len(prefix) :]}.{m['ab']}.{m['param']}"] = t.contiguous()
    if not out:
        raise ValueError("the student state dict has no LoRA adapters (keys *.lora_A.default.weight)")
    return out


def guidance_layers(student_sd: dict[str, torch.Tensor], component: str) -> dict[str, torch.Tensor]:
    """The student's w / eta projections as ``<component>.<name>`` (diffusers' naming of the denoiser)."""
    prefix = f"base.{component}."
    out = {
        f"{component}.{k[len(prefix) :]}": v.detach().float().cpu().contiguous()
        for k, v in student_sd.items()
        if k.startswith(prefix) and k.rsplit(".", 2)[-2] in GUIDANCE_PROJECTIONS
    }
    if not out:
        raise ValueError(f"the student state dict has no w / eta projections under {prefix!r}")
    return out


def base_mismatch(student_sd: dict[str, torch.Tensor], component: str, teacher_sd: dict[str, torch.Tensor]):
    """None when every base weight of the student (LoRA-wrapped layers: their ``base_layer``) equals the
    teacher's, else the first key that differs or is missing (the adapter alone would not give the student)."""
    prefix = f"base.{component}."
    for k, v in student_sd.items():
        if not k.startswith(prefix) or _LORA_KEY.match(k) or k.rsplit(".", 2)[-2] in GUIDANCE_PROJECTIONS:
            continue
        name = k[len(prefix) :].replace(".base_layer.", ".")
        ref = teacher_sd.get(name)
        if ref is None or ref.shape != v.shape or not torch.equal(ref.to(v.device, v.dtype), v):
            return name
    return None


def wan_original_names(adapter: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Wan adapter (diffusers names, ``<module>.lora_A.weight``) under the original Wan checkpoint's names
    with ComfyUI's prefix: ``diffusion_model.blocks.0.self_attn.q.lora_A.weight``. Raises ValueError naming the
    layers the original layout has no name for."""
    out, unknown = {}, []
    for k, v in adapter.items():
        module, suffix = k.rsplit(".", 2)[0], ".".join(k.rsplit(".", 2)[1:])
        m = re.match(r"^blocks\.(\d+)\.(.+)$", module)
        if m and m[2] in WAN_BLOCK_NAMES:
            name = f"blocks.{m[1]}.{WAN_BLOCK_NAMES[m[2]]}"
        elif module in WAN_TOP_NAMES:
            name = WAN_TOP_NAMES[module]
        else:
            unknown.append(module)
            continue
        out[f"diffusion_model.{name}.{suffix}"] = v
    if unknown:
        raise ValueError(
            f"no original Wan (ComfyUI) name for the LoRA layers {sorted(set(unknown))[:5]}: the layout names "
            f"{sorted(WAN_BLOCK_NAMES)} in a block and {sorted(WAN_TOP_NAMES)}"
        )
    return out


def write_lora_files(
    out, family: str, student_sd: dict[str, torch.Tensor], lora_cfg, teacher_sd=None
) -> dict:
    """Write the adapter files of a LoRA student into ``out`` (module docstring). ``teacher_sd``: the teacher
    denoiser's state dict, to check that the student's base weights are the teacher's. Returns what was written,
    for the export's meta (``{"skipped": why}`` when nothing was)."""
    out = Path(out)
    component = component_of(family)
    if component is None:
        return {
            "skipped": f"model.family={family} has no diffusers LoRA layout (the merged student is exported)"
        }
    if teacher_sd is not None:
        bad = base_mismatch(student_sd, component, teacher_sd)
        if bad is not None:
            return {
                "skipped": f"the student's base weights are not the teacher's (first: {bad}), so the adapters "
                "alone do not give the student (the merged student is exported)"
            }
    scaling = float(lora_cfg.alpha) / float(lora_cfg.rank)
    adapter = lora_adapter(student_sd, component, scaling)
    out.mkdir(parents=True, exist_ok=True)
    if component == "unet":
        StableDiffusionLoraLoaderMixin.save_lora_weights(out, unet_lora_layers=adapter, weight_name=LORA_FILE)
    else:
        WanLoraLoaderMixin.save_lora_weights(out, transformer_lora_layers=adapter, weight_name=LORA_FILE)
    save_file(guidance_layers(student_sd, component), str(out / GUIDANCE_FILE), metadata={"format": "pt"})
    files = {"diffusers": LORA_FILE, "guidance_layers": GUIDANCE_FILE}
    info = {
        "component": component,
        "rank": int(lora_cfg.rank),
        "alpha": float(lora_cfg.alpha),
        "scale_folded_into_lora_B": scaling,
        "layers": len({k.rsplit(".", 2)[0] for k in adapter}),
        "files": files,
    }
    if family == "wan":
        try:
            save_file(wan_original_names(adapter), str(out / COMFYUI_FILE), metadata={"format": "pt"})
            files["comfyui"] = COMFYUI_FILE
        except ValueError as e:
            info["comfyui_skipped"] = str(e)
            log.info("no ComfyUI LoRA file: %s", e)
    return info


# ---- loading the adapter with diffusers ----------------------------------------------------------------------


class T2VTurboLoraPipeline(T2VTurboPipeline, StableDiffusionLoraLoaderMixin):
    """:class:`~t2vturbo.export_pipeline.T2VTurboPipeline` with diffusers' ``load_lora_weights`` (into its UNet)."""


class T2VTurboLoraUNet3DConditionModel(T2VTurboUNet3DConditionModel, PeftAdapterMixin):
    """:class:`~t2vturbo.export_pipeline.T2VTurboUNet3DConditionModel` that takes LoRA adapters: diffusers 0.42's
    ``UNet3DConditionModel`` lacks the ``PeftAdapterMixin`` its ``UNet2DConditionModel`` / ``UNetMotionModel``
    have (``load_lora_adapter``, which ``load_lora_weights`` calls)."""


def teacher_unet(ex, bb) -> T2VTurboLoraUNet3DConditionModel:
    """The teacher's UNet (of backbone ``bb``) with the w / eta layers of the LoRA student export ``ex``
    (``guidance_layers.safetensors``), without the adapters."""
    from safetensors.torch import load_file

    gfile = ex.dir / GUIDANCE_FILE
    if not gfile.is_file():
        raise FileNotFoundError(
            f"{str(gfile)!r} is missing: {str(ex.dir)!r} is not the export of a LoRA student"
        )
    base = bb.teacher.unet
    unet = T2VTurboLoraUNet3DConditionModel.from_config({**dict(base.config), "time_cond_proj_dim": 256})
    extra = {k.removeprefix("unet."): v for k, v in load_file(str(gfile)).items()}
    unet.load_state_dict({**base.state_dict(), **extra}, strict=True)
    return unet.to(base.dtype).eval()


def teacher_pipeline(export, teacher=None) -> T2VTurboLoraPipeline:
    """A UNet3D LoRA student's teacher as a :class:`T2VTurboLoraPipeline` with the student's w / eta layers, its
    sampling defaults (w, eta, percentage) and LCM scheduler, ready for ``load_lora_weights(EXPORT)``."""
    from .student_export import SAMPLING_DEFAULTS, StudentExport

    ex = StudentExport.resolve(export)
    bb = ex.load_teacher(teacher=teacher)
    problem = bb.diffusers_export_problem()
    if problem:
        raise ValueError(f"no diffusers pipeline for the student {str(ex.dir)!r}: {problem}")
    return T2VTurboLoraPipeline(
        vae=bb.vae,
        text_encoder=bb.text_encoder,
        tokenizer=bb.tokenizer,
        unet=teacher_unet(ex, bb),
        scheduler=lcm_scheduler(bb, {**SAMPLING_DEFAULTS, **ex.meta}),
        guidance_scale=float(ex.get("guidance")),
        motion_gs=float(ex.get("eta")),
        percentage=float(ex.get("motion_percentage")),
    )
