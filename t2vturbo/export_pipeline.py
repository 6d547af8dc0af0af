"""Write a distilled UNet3D student as a plain diffusers pipeline that samples it in 4 steps.

    python -m t2vturbo.export_pipeline outputs/run/export OUT_DIR [--guidance W] [--eta ETA]

then, with diffusers alone::

    pipe = DiffusionPipeline.from_pretrained(OUT_DIR)              # TextToVideoSDPipeline + LCMScheduler
    frames = pipe(prompt, num_inference_steps=4, guidance_scale=1.0).frames

The student is the teacher's UNet plus the w / eta embeddings, which add one vector to the timestep
embedding: ``temb' = temb + fuse([w_proj(emb(w)), eta_proj(emb(eta))])``. For a fixed (w, eta)
that vector is a constant, so it is folded into the bias of ``time_embedding.linear_2`` (the last
layer of the embedding MLP): the result is a plain ``UNet3DConditionModel`` whose output equals the
student's at that (w, eta) (tested). Guidance is therefore inside the network: sample with
``guidance_scale=1.0`` (the pipeline's own CFG would double it and cost a second UNet call).

The scheduler is diffusers' ``LCMScheduler`` with the teacher's noise schedule, ``prediction_type``
of the teacher, ``original_inference_steps`` = the distillation grid N (so 4 steps are the grid
points 999, 749, 499, 249 of our multistep sampler), ``timestep_scaling`` and the boundary
condition of our consistency function (sigma_data 0.5 is LCMScheduler's constant). The VAE, text
encoder and tokenizer are the teacher's. Only backbones whose VAE is a diffusers class can be loaded
by ``DiffusionPipeline`` (the toy world's pixel-unshuffle VAE is ours: export it and load the
pipeline class directly, passing the VAE).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
from diffusers import LCMScheduler, TextToVideoSDPipeline

from .student_export import StudentExport

__all__ = ["export_pipeline", "fold_guidance"]


@torch.no_grad()
def fold_guidance(net, w: float, eta: float = 0.0):
    """The student's UNet with the (w, eta) embedding folded into ``time_embedding.linear_2.bias``
    (a new module; ``net`` is unchanged)."""
    unet = copy.deepcopy(net.base.unet)
    extra = net.guidance_embedding(torch.tensor([float(w)]), torch.tensor([float(eta)]))[0]
    lin = unet.time_embedding.linear_2
    if lin.bias is None:
        raise ValueError("time_embedding.linear_2 has no bias to fold the guidance embedding into")
    lin.bias.add_(extra.to(lin.bias.dtype))
    return unet


def lcm_scheduler(bb, meta: dict):
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


def export_pipeline(export_dir, out_dir, guidance: float | None = None, eta: float | None = None) -> Path:
    """Write ``out_dir`` (a diffusers ``TextToVideoSDPipeline`` folder); returns it."""
    ex = StudentExport.resolve(export_dir)
    (bb, net), meta = ex.load(), ex.meta
    problem = bb.diffusers_export_problem()
    if problem:
        raise ValueError(f"no diffusers pipeline for the student {str(ex.dir)!r}: {problem}")
    w, e = float(ex.get("guidance", guidance)), float(ex.get("eta", eta))
    pipe = TextToVideoSDPipeline(
        vae=bb.vae,
        text_encoder=bb.text_encoder,
        tokenizer=bb.tokenizer,
        unet=fold_guidance(net, w, e),
        scheduler=lcm_scheduler(bb, meta),
    )
    out = Path(out_dir)
    pipe.save_pretrained(out)
    (out / "t2vturbo_pipeline.json").write_text(
        json.dumps(
            {
                "source": str(Path(export_dir).resolve()),
                "guidance_folded": w,
                "eta_folded": e,
                "num_inference_steps": 4,
                "guidance_scale": 1.0,
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
        "--guidance", type=float, help="w to fold in (default: the student's, the middle of its range)"
    )
    ap.add_argument("--eta", type=float, help="motion-strength eta to fold in (default: the student's)")
    a = ap.parse_args(argv)
    out = export_pipeline(a.export_dir, a.out_dir, a.guidance, a.eta)
    print(
        f"wrote {out}: DiffusionPipeline.from_pretrained({str(out)!r})(prompt, num_inference_steps=4, guidance_scale=1.0)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
