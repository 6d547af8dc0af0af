"""Fast inference: ``python -m t2vturbo.sample --steps 4 --prompt "a red circle moving left"``.

The student is sampled with the multistep consistency sampler (guidance enters as an embedding:
one network pass per step); ``--teacher`` samples the teacher with DDIM and classifier-free
guidance in the LCM convention ``cond + w (cond - uncond)`` (two passes per step) for comparison.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .data.video_io import write_video
from .diffusion import Parameterisation, apply_cfg, multistep_consistency_sample, ode_sample
from .student_export import STUDENT_FILE, STUDENT_META, StudentExport, find_latest_export, load_teacher

__all__ = [
    "STUDENT_FILE",
    "STUDENT_META",
    "export_sampling_kwargs",
    "find_latest_export",
    "load_student",
    "sample_student",
    "sample_teacher",
]


def sample_student(
    bb,
    net,
    prompts,
    steps=4,
    num_ddim_timesteps=200,
    guidance=7.5,
    eta=0.0,
    num_frames=8,
    height=32,
    width=32,
    seed=0,
    sigma_data=0.5,
    timestep_scaling=10.0,
    decode=True,
):
    """Videos [B, F, 3, H, W] in [-1, 1] from the student in ``steps`` consistency steps on the
    ``num_ddim_timesteps``-point grid it was distilled on (one network pass per step; every family)."""
    param = Parameterisation.of(bb)
    with torch.no_grad():
        cond = bb.encode_text(list(prompts))
    b = cond.shape[0]
    w, e = torch.full((b,), float(guidance)), torch.full((b,), float(eta))
    shape = (b, *bb.latent_shape(num_frames, height, width))
    g = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(shape, generator=g)  # drawn first; the sampler's re-noising continues the stream
    dtype = next(net.parameters()).dtype

    def model(z, t):
        return net(z.to(dtype), param.net_time(t), cond, w, e).float()

    z0 = multistep_consistency_sample(
        model,
        shape,
        param.consistency_times(steps, num_ddim_timesteps),
        param,
        generator=g,
        device=bb.device,
        sigma_data=sigma_data,
        timestep_scaling=timestep_scaling,
        noise=noise,
    )
    return bb.decode_latents(z0) if decode else z0


@torch.no_grad()
def sample_teacher(
    bb,
    prompts,
    steps=50,
    guidance=7.5,
    num_frames=8,
    height=32,
    width=32,
    seed=0,
    guidance_form="lcm",
    decode=True,
):
    """Videos from the teacher with its ODE solver (DDIM eta = 0, or Euler for flow teachers) and
    classifier-free guidance on the model output (two passes per step, cond and uncond batched)."""
    param = Parameterisation.of(bb)
    dev = bb.device
    cond = bb.encode_text(list(prompts))
    b = cond.shape[0]
    uncond = bb.null_cond(b)
    shape = (b, *bb.latent_shape(num_frames, height, width))
    g = torch.Generator(device="cpu").manual_seed(seed)
    z_T = torch.randn(shape, generator=g).to(dev)
    dtype = next(bb.teacher.parameters()).dtype

    def denoise(z, t):
        tn = param.net_time(t)
        out = bb.teacher(torch.cat([z, z]).to(dtype), torch.cat([tn, tn]), torch.cat([cond, uncond])).float()
        out_c, out_u = out.chunk(2)
        return param.x0_eps(apply_cfg(out_c, out_u, guidance, guidance_form), z, t)

    z0 = ode_sample(denoise, z_T, param.teacher_times(steps), param)
    return bb.decode_latents(z0) if decode else z0


def export_sampling_kwargs(meta: dict) -> tuple[dict, dict]:
    """(clip size, consistency-sampler settings) of a student export's meta (:meth:`StudentExport.sampling_kwargs`)."""
    return StudentExport(meta=meta).sampling_kwargs()


def load_student(export_dir, device="cpu"):
    """(backbone, student, meta) from an export folder or a run dir (:meth:`StudentExport.load`)."""
    ex = StudentExport.resolve(export_dir)
    bb, net = ex.load(device)
    return bb, net, ex.meta


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m t2vturbo.sample", description=__doc__.split("\n")[0])
    ap.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    ap.add_argument("--prompts-file", help="text file, one prompt per line")
    ap.add_argument(
        "--checkpoint",
        help="export folder (or a run's output dir; with --teacher also a teacher "
        "folder); default: newest under outputs/",
    )
    ap.add_argument("--steps", type=int, help="default: 4 for the student, 50 for --teacher")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--guidance",
        type=float,
        help="w (LCM form: cond + w (cond - uncond)); default: the middle "
        "of the student's training range (7.5 for a teacher folder)",
    )
    ap.add_argument(
        "--eta",
        type=float,
        help="motion-guidance strength embedding (student); default: the "
        "value it was trained with on guided samples (0 without motion guidance)",
    )
    ap.add_argument("--out", default="samples")
    ap.add_argument("--teacher", action="store_true", help="sample the teacher with DDIM + CFG instead")
    ap.add_argument("--fps", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--num-frames", type=int, help="default: the training run's")
    ap.add_argument("--height", type=int, help="default: the training run's")
    ap.add_argument("--width", type=int, help="default: the training run's")
    args = ap.parse_args(argv)

    if any(not p.strip() for p in args.prompt):
        ap.error("--prompt must not be empty (an empty prompt is the unconditional input, not a request)")
    prompts = list(args.prompt)
    if args.prompts_file:
        prompts += [ln.strip() for ln in Path(args.prompts_file).read_text().splitlines() if ln.strip()]
    if not prompts:
        ap.error("give at least one --prompt or a --prompts-file")
    if args.steps is None:
        args.steps = 50 if args.teacher else 4
    if args.steps < 1:
        ap.error(f"--steps must be >= 1, got {args.steps}")
    try:  # everything is checked before any weights are read
        if args.teacher:
            bb, meta = load_teacher(args.checkpoint, args.device)
            net = None
        else:
            ex = StudentExport.resolve(args.checkpoint)
            n = int(ex.get("num_ddim_timesteps"))
            if args.steps > n:
                ap.error(
                    f"--steps must be in [1, {n}] for this student (distilled on a {n}-point grid), "
                    f"got {args.steps}"
                )
            (bb, net), meta = ex.load(args.device), ex.meta
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ex = StudentExport(meta=meta)
    size, cm = ex.sampling_kwargs()
    kw = dict(
        num_frames=args.num_frames or size["num_frames"],
        height=args.height or size["height"],
        width=args.width or size["width"],
        seed=args.seed,
    )
    guidance = float(ex.get("guidance", args.guidance))
    if args.teacher:
        video = sample_teacher(bb, prompts, steps=args.steps, guidance=guidance, **kw)
    else:
        video = sample_student(
            bb,
            net,
            prompts,
            steps=args.steps,
            guidance=guidance,
            **{**cm, "eta": float(ex.get("eta", args.eta))},
            **kw,
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    who = "teacher" if args.teacher else "student"
    for i, (p, v) in enumerate(zip(prompts, video)):
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in p)[:80]
        path = write_video(out / f"{i:03d}_{who}_{args.steps}steps_{safe}.mp4", v.float().cpu(), fps=args.fps)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
