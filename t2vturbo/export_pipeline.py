"""Write a distilled UNet3D student as a diffusers pipeline whose ``guidance_scale`` is the student's w.

    python -m t2vturbo.export_pipeline outputs/run/export OUT_DIR [--guidance W] [--eta ETA] [--motion-percentage P]

then, with diffusers alone (no t2vturbo needed)::

    pipe = DiffusionPipeline.from_pretrained(OUT_DIR, trust_remote_code=True)
    frames = pipe(prompt, num_inference_steps=4, guidance_scale=7.5).frames

**Guidance convention.** ``guidance_scale`` is the student's w exactly, T2V-Turbo's convention (its pipelines
and training embed ``guidance_scale`` itself): the coefficient of ``cond - uncond`` in the LCM-paper form
``cond + w (cond - uncond)`` the student was distilled with. diffusers' LCM pipelines embed ``guidance_scale - 1``
(they read guidance_scale in the Imagen form ``uncond + s (cond - uncond)``, s = w + 1): a diffusers-LCM
``guidance_scale=8.5`` is ``guidance_scale=7.5`` here. Guidance is inside the network (one UNet call per step,
no classifier-free guidance in the pipeline): on every call ``timestep_cond = emb(w)`` (diffusers'
``get_guidance_scale_embedding``: sinusoid of w*1000, 256 wide), which diffusers' own
``time_embedding.cond_proj`` (``time_cond_proj_dim=256`` in the UNet's config) adds to the timestep sinusoid.

**Motion (eta).** The student also embeds the motion strength eta: ``c = combine_proj([cond_proj(emb(w)),
motion_cond_proj(emb(eta))])`` replaces ``cond_proj(emb(w))`` before the time MLP. diffusers'
``UNet3DConditionModel`` has no ``motion_cond_proj`` / ``combine_proj``, so the folder holds the smallest
faithful extension, :class:`T2VTurboUNet3DConditionModel`: the diffusers class plus those two bias-free
``Linear`` layers and a ``motion_cond`` argument (the student's UNet weights and config unchanged; the stock
``UNet3DConditionModel.from_pretrained(OUT_DIR/unet)`` also loads it, dropping the two layers, i.e. the student
without eta). The pipeline gives ``motion_cond = emb(eta)`` at the steps with ``t >= 1000 (1 - percentage)``
and ``emb(0)`` (not nothing) below, as the official T2V-Turbo pipelines and ``t2vturbo.sample.sample_student``.
``motion_gs`` (eta) and ``percentage`` are call arguments; their defaults, and that of ``guidance_scale``, are
the export's (``model_index.json``).

This module is self-contained (torch and diffusers): its file is copied into the folder as
``pipeline_t2vturbo.py`` and ``unet/unet_t2vturbo.py``, which ``model_index.json`` names. diffusers 0.42.1
runs code from a folder only with ``trust_remote_code=True``.

The scheduler is diffusers' ``LCMScheduler`` with the teacher's noise schedule and ``prediction_type``,
``original_inference_steps`` = the distillation grid N (4 steps are the grid points 999, 749, 499, 249 of our
multistep sampler) and ``timestep_scaling``. With ``generator=torch.Generator().manual_seed(s)`` the pipeline
draws the same noise as ``sample_student(seed=s)`` (the initial latents, then one [B, C, F, h, w] draw per
re-noising), so the two give the same latents (tested). The VAE, text encoder and tokenizer are the
teacher's; ``DiffusionPipeline`` loads only a diffusers VAE (the toy world's pixel-unshuffle VAE is ours).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline, LCMScheduler, UNet3DConditionModel
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor
from torch import nn

__all__ = [
    "T2VTurboPipeline",
    "T2VTurboUNet3DConditionModel",
    "diffusers_unet",
    "export_pipeline",
    "guidance_embedding",
    "lcm_scheduler",
]

PIPELINE_MODULE = "pipeline_t2vturbo"  # <folder>/pipeline_t2vturbo.py
UNET_MODULE = "unet_t2vturbo"  # <folder>/unet/unet_t2vturbo.py


def consistency_timesteps(num_steps: int, num_grid: int, num_train_timesteps: int = 1000) -> list[int]:
    """The student's ``num_steps`` sampling timesteps on its N-point distillation grid (``k c - 1``,
    ``c = T // N``): grid indices ``N - 1 - i (N // S)`` from the top, as ``t2vturbo.sample``. LCMScheduler's
    own ``set_timesteps(S)`` rounds differently where S does not divide N (N = 50: 999, 759, 499, 259 instead of
    999, 759, 519, 279), so the pipeline passes these."""
    c = num_train_timesteps // num_grid
    if not 1 <= num_steps <= num_grid:
        raise ValueError(
            f"num_inference_steps must be in [1, {num_grid}] (the distillation grid), got {num_steps}"
        )
    return [(num_grid - i * (num_grid // num_steps)) * c - 1 for i in range(num_steps)]


def guidance_embedding(value: torch.Tensor, dim: int = 256) -> torch.Tensor:
    """[B, dim] float32 ``[sin(1000 v f), cos(1000 v f)]``, ``f_j = exp(-ln(1e4) j / (dim/2 - 1))``: diffusers'
    ``get_guidance_scale_embedding`` and T2V-Turbo's (``t2vturbo.diffusion.scalar_embedding``)."""
    v = torch.as_tensor(value, dtype=torch.float32).reshape(-1) * 1000.0
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * (-math.log(10000.0) / (half - 1)))
    args = v[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return nn.functional.pad(emb, (0, 1)) if dim % 2 else emb


class T2VTurboUNet3DConditionModel(UNet3DConditionModel):
    """diffusers' ``UNet3DConditionModel`` (needs ``time_cond_proj_dim``) plus T2V-Turbo's motion conditioning:
    ``forward(..., timestep_cond=emb(w), motion_cond=emb(eta))`` computes ``combine_proj([cond_proj(emb(w)),
    motion_cond_proj(emb(eta))])`` in place of ``cond_proj(emb(w))``; ``motion_cond=None`` is the plain class."""

    @functools.wraps(UNet3DConditionModel.__init__)  # the config signature stays the diffusers class's
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        d = self.config.time_cond_proj_dim
        if d is None:
            raise ValueError(
                "T2VTurboUNet3DConditionModel needs time_cond_proj_dim (the w embedding's width)"
            )
        c = self.time_embedding.linear_1.in_features
        self.motion_cond_proj = nn.Linear(d, c, bias=False)
        self.combine_proj = nn.Linear(2 * c, c, bias=False)
        self._motion_cond: torch.Tensor | None = None
        self.time_embedding.cond_proj.register_forward_hook(self._combine)

    def _combine(self, module, inputs, output):
        if self._motion_cond is None:
            return output
        e = self._motion_cond.to(output.device, self.motion_cond_proj.weight.dtype)
        return self.combine_proj(torch.cat([output, self.motion_cond_proj(e)], dim=1))

    def forward(self, sample, timestep, encoder_hidden_states, *args, motion_cond=None, **kwargs):
        if motion_cond is not None and kwargs.get("timestep_cond") is None:
            raise ValueError("motion_cond needs timestep_cond")
        self._motion_cond = motion_cond
        try:
            return super().forward(sample, timestep, encoder_hidden_states, *args, **kwargs)
        finally:
            self._motion_cond = None


@dataclass
class T2VTurboPipelineOutput(BaseOutput):
    frames: Any  # decoded videos (output_type "np" / "pt" / "pil") or latents [B, C, F, h, w] ("latent")


class T2VTurboPipeline(DiffusionPipeline):
    """T2V-Turbo student sampling: LCM multistep consistency steps, one UNet call per step with
    ``timestep_cond = emb(guidance_scale)`` (w as is, no -1: see the module docstring) and
    ``motion_cond = emb(motion_gs if t >= T (1 - percentage) else 0)``.

    ``guidance_scale``, ``motion_gs`` and ``percentage`` (init / config) are the call's defaults."""

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(
        self,
        vae,
        text_encoder,
        tokenizer,
        unet,
        scheduler,
        guidance_scale: float = 7.5,
        motion_gs: float = 0.0,
        percentage: float = 0.5,
    ):
        super().__init__()
        self.register_modules(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler
        )
        self.register_to_config(
            guidance_scale=float(guidance_scale), motion_gs=float(motion_gs), percentage=float(percentage)
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.video_processor = VideoProcessor(do_resize=False, vae_scale_factor=self.vae_scale_factor)

    def encode_prompt(self, prompt: str | list[str], device) -> torch.Tensor:
        """[B, L, D] text states (padded to the tokenizer's max length, as the student was trained)."""
        ids = self.tokenizer(
            [prompt] if isinstance(prompt, str) else list(prompt),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return self.text_encoder(ids.to(device))[0].to(self.text_encoder.dtype)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Per-frame VAE decode: [B, C, F, h, w] -> [B, 3, F, H, W] float32."""
        b, c, f = latents.shape[:3]
        x = (
            latents.permute(0, 2, 1, 3, 4).reshape(b * f, c, *latents.shape[3:])
            / self.vae.config.scaling_factor
        )
        image = self.vae.decode(x.to(self.vae.dtype)).sample
        return image.reshape(b, f, *image.shape[1:]).permute(0, 2, 1, 3, 4).float()

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        num_inference_steps: int = 4,
        guidance_scale: float | None = None,
        motion_gs: float | None = None,
        percentage: float | None = None,
        num_frames: int = 16,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
    ):
        """``output_type``: "np" | "pt" | "pil" (decoded frames) or "latent" ([B, C, F, h, w])."""
        w = float(self.config.guidance_scale if guidance_scale is None else guidance_scale)
        eta = float(self.config.motion_gs if motion_gs is None else motion_gs)
        pct = float(self.config.percentage if percentage is None else percentage)
        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor
        device = self._execution_device
        if prompt_embeds is None:
            prompt_embeds = self.encode_prompt(prompt, device)
        b = prompt_embeds.shape[0]
        sc = self.scheduler.config
        ts = consistency_timesteps(num_inference_steps, sc.original_inference_steps, sc.num_train_timesteps)
        self.scheduler.set_timesteps(timesteps=ts, device=device)
        f = self.vae_scale_factor
        shape = (b, self.unet.config.in_channels, num_frames, height // f, width // f)
        if latents is None:  # drawn first, as sample_student's initial noise (then one draw per re-noising)
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        latents = latents.to(device, torch.float32) * self.scheduler.init_noise_sigma
        dim, dtype = self.unet.config.time_cond_proj_dim, self.unet.dtype
        w_emb = guidance_embedding(torch.full((b,), w), dim).to(device, dtype)
        motion = getattr(self.unet, "motion_cond_proj", None) is not None
        threshold = self.scheduler.config.num_train_timesteps * (1.0 - pct)
        denoised = latents
        with self.progress_bar(total=num_inference_steps) as bar:
            for t in self.scheduler.timesteps:
                kw = {}
                if motion:
                    eta_t = eta if float(t) >= threshold else 0.0
                    kw["motion_cond"] = guidance_embedding(torch.full((b,), eta_t), dim).to(device, dtype)
                out = self.unet(
                    latents.to(dtype),
                    t,
                    encoder_hidden_states=prompt_embeds,
                    timestep_cond=w_emb,
                    return_dict=False,
                    **kw,
                )[0].float()
                latents, denoised = self.scheduler.step(
                    out, t, latents, generator=generator, return_dict=False
                )
                bar.update()
        if output_type == "latent":
            video = denoised
        else:
            video = self.video_processor.postprocess_video(
                video=self.decode_latents(denoised), output_type=output_type
            )
        self.maybe_free_model_hooks()
        return T2VTurboPipelineOutput(frames=video) if return_dict else (video,)


# ---- the export (needs t2vturbo; imported lazily so that the copies in a pipeline folder need diffusers only)
def lcm_scheduler(bb, meta: dict) -> LCMScheduler:
    cfg = dict(bb.scheduler_config)
    cfg.update(
        prediction_type=bb.prediction_type,
        original_inference_steps=int(meta["num_ddim_timesteps"]),
        timestep_scaling=float(meta["timestep_scaling"]),
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=0,
    )
    for k in ("_class_name", "_diffusers_version"):
        cfg.pop(k, None)
    if float(meta.get("sigma_data", 0.5)) != 0.5:
        raise ValueError(
            f"LCMScheduler's boundary condition uses sigma_data=0.5; this student used {meta['sigma_data']}"
        )
    return LCMScheduler.from_config(cfg)


def diffusers_unet(net) -> T2VTurboUNet3DConditionModel:
    """The student's UNet (``net.base.unet``: time_cond_proj_dim, motion_cond_proj, combine_proj) as a
    :class:`T2VTurboUNet3DConditionModel` with the same weights (a new module)."""
    unet = net.base.unet
    if type(unet) is not UNet3DConditionModel:
        raise ValueError(
            f"a diffusers pipeline needs a UNet3DConditionModel student (have {type(unet).__name__})"
        )
    if getattr(unet, "motion_cond_proj", None) is None:
        raise ValueError("the student has no motion_cond_proj / combine_proj")
    out = T2VTurboUNet3DConditionModel.from_config(unet.config)
    out.load_state_dict(unet.state_dict())
    return out.to(unet.dtype).eval()


def export_pipeline(
    export_dir,
    out_dir,
    guidance: float | None = None,
    eta: float | None = None,
    motion_percentage: float | None = None,
) -> Path:
    """Write ``out_dir`` (a :class:`T2VTurboPipeline` folder, defaults w / eta / percentage from the export
    unless given); returns it."""
    from t2vturbo.student_export import StudentExport

    ex = StudentExport.resolve(export_dir)
    (bb, net), meta = ex.load(), ex.meta
    problem = bb.diffusers_export_problem()
    if problem:
        raise ValueError(f"no diffusers pipeline for the student {str(ex.dir)!r}: {problem}")
    w, e = float(ex.get("guidance", guidance)), float(ex.get("eta", eta))
    p = float(ex.get("motion_percentage", motion_percentage))
    pipe = T2VTurboPipeline(
        vae=bb.vae,
        text_encoder=bb.text_encoder,
        tokenizer=bb.tokenizer,
        unet=diffusers_unet(net),
        scheduler=lcm_scheduler(bb, meta),
        guidance_scale=w,
        motion_gs=e,
        percentage=p,
    )
    out = Path(out_dir)
    pipe.save_pretrained(out)
    shutil.copyfile(__file__, out / f"{PIPELINE_MODULE}.py")
    shutil.copyfile(__file__, out / "unet" / f"{UNET_MODULE}.py")
    index = json.loads((out / "model_index.json").read_text())
    index["_class_name"] = [PIPELINE_MODULE, T2VTurboPipeline.__name__]
    index["unet"] = [UNET_MODULE, T2VTurboUNet3DConditionModel.__name__]
    (out / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    (out / "t2vturbo_pipeline.json").write_text(
        json.dumps(
            {
                "source": str(Path(export_dir).resolve()),
                "guidance_scale": w,
                "guidance_convention": "T2V-Turbo: the embedded w is guidance_scale itself (diffusers LCM: - 1)",
                "motion_gs": e,
                "percentage": p,
                "num_inference_steps": 4,
                "student_step": meta.get("step"),
            },
            indent=2,
        )
    )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m t2vturbo.export_pipeline", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("export_dir", help="a student export (OUTPUT_DIR/export)")
    ap.add_argument("out_dir", help="where the diffusers pipeline folder goes")
    ap.add_argument(
        "--guidance",
        type=float,
        help="the pipeline's default guidance_scale = w (default: the student's, the middle of its range)",
    )
    ap.add_argument("--eta", type=float, help="the pipeline's default motion_gs (default: the student's eta)")
    ap.add_argument(
        "--motion-percentage",
        type=float,
        help="the pipeline's default percentage: eta at t >= 1000 (1 - p) (default: the student's, else 0.5)",
    )
    a = ap.parse_args(argv)
    out = export_pipeline(a.export_dir, a.out_dir, a.guidance, a.eta, a.motion_percentage)
    w = json.loads((out / "t2vturbo_pipeline.json").read_text())["guidance_scale"]
    print(
        f"wrote {out}: DiffusionPipeline.from_pretrained({str(out)!r}, trust_remote_code=True)"
        f"(prompt, num_inference_steps=4, guidance_scale={w:g})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
