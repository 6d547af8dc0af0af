"""Fast inference: ``python -m t2vturbo.sample --steps 4 --prompt "a red circle moving left"``.

The student is sampled with the multistep consistency sampler (guidance enters as an embedding:
one network pass per step); ``--teacher`` samples the teacher with DDIM and classifier-free
guidance in the LCM convention ``cond + w (cond - uncond)`` (two passes per step) for comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from .diffusion import (
    apply_cfg,
    consistency_sample,
    ddim_sample,
    ddim_sampling_timesteps,
    lcm_sampling_timesteps,
    to_x0_eps,
)

STUDENT_META = "t2vturbo_student.json"
STUDENT_FILE = "student.safetensors"


@torch.no_grad()
def student_inputs(bb, net, prompts, guidance, eta, num_frames, height, width, seed):
    """What every student sampler starts from: (cond, w [B], eta [B], latent shape, the seeded CPU
    generator, initial noise drawn from it first, the network's dtype)."""
    cond = bb.encode_text(list(prompts))
    b = cond.shape[0]
    w = torch.full((b,), float(guidance))
    e = torch.full((b,), float(eta))
    shape = (b, *bb.latent_shape(num_frames, height, width))
    g = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(shape, generator=g)
    return cond, w, e, shape, g, noise, next(net.parameters()).dtype


def sample_student(bb, net, prompts, steps=4, num_ddim_timesteps=200, guidance=7.5, eta=0.0, num_frames=8,
                   height=32, width=32, seed=0, sigma_data=0.5, timestep_scaling=10.0, decode=True):
    """Videos [B, F, 3, H, W] in [-1, 1] from the student in ``steps`` consistency steps."""
    if bb.prediction_type == "flow":  # flow-matching teachers (Wan): flow consistency sampler
        from .train.flow_objective import sample_student_flow

        return sample_student_flow(bb, net, prompts, steps, num_ddim_timesteps, guidance, eta, num_frames, height,
                                   width, seed, sigma_data, timestep_scaling, decode)
    dev = bb.device
    cond, w, e, shape, g, noise, dtype = student_inputs(bb, net, prompts, guidance, eta, num_frames, height, width,
                                                        seed)

    def model(z, t):
        return net(z.to(dtype), t, cond, w, e).float()

    ts = lcm_sampling_timesteps(steps, num_ddim_timesteps, bb.num_train_timesteps)
    z0 = consistency_sample(model, shape, ts, bb.alphas_cumprod, bb.prediction_type, generator=g, device=dev,
                            sigma_data=sigma_data, timestep_scaling=timestep_scaling, noise=noise)
    return bb.decode_latents(z0.to(dtype)) if decode else z0


@torch.no_grad()
def sample_teacher(bb, prompts, steps=50, guidance=7.5, num_frames=8, height=32, width=32, seed=0,
                   guidance_form="lcm", decode=True):
    """Videos from the teacher with DDIM (eta=0) and classifier-free guidance."""
    if bb.prediction_type == "flow":  # flow-matching teachers (Wan): Euler with CFG on the velocity
        from .train.flow_objective import sample_teacher_flow

        return sample_teacher_flow(bb, prompts, steps, guidance, num_frames, height, width, seed, guidance_form, decode)
    dev = bb.alphas_cumprod.device
    cond = bb.encode_text(list(prompts))
    b = cond.shape[0]
    uncond = bb.null_cond(b)
    shape = (b, *bb.latent_shape(num_frames, height, width))
    g = torch.Generator(device="cpu").manual_seed(seed)
    z_T = torch.randn(shape, generator=g).to(dev)
    dtype = next(bb.teacher.parameters()).dtype

    def denoise(z, t):
        out = bb.teacher(torch.cat([z, z]).to(dtype), torch.cat([t, t]), torch.cat([cond, uncond])).float()
        out_c, out_u = out.chunk(2)
        out = apply_cfg(out_c, out_u, guidance, guidance_form)
        return to_x0_eps(out, z, t, bb.alphas_cumprod, bb.prediction_type)

    ts = ddim_sampling_timesteps(steps, bb.num_train_timesteps)
    z0 = ddim_sample(denoise, z_T, ts, bb.alphas_cumprod)
    return bb.decode_latents(z0.to(dtype)) if decode else z0


def find_latest_export(root="outputs") -> Path | None:
    metas = sorted(Path(root).glob(f"**/{STUDENT_META}"), key=lambda p: p.stat().st_mtime)
    return metas[-1].parent if metas else None


def export_sampling_kwargs(meta: dict) -> tuple[dict, dict]:
    """(clip size, consistency-sampler settings) of a student export's meta, as keyword arguments of
    :func:`sample_teacher` / :func:`sample_student`: ``num_frames, height, width`` and
    ``num_ddim_timesteps, sigma_data, timestep_scaling, eta``."""
    size = dict(num_frames=int(meta["num_frames"]), height=int(meta["height"]), width=int(meta["width"]))
    cm = dict(num_ddim_timesteps=int(meta["num_ddim_timesteps"]), sigma_data=float(meta["sigma_data"]),
              timestep_scaling=float(meta["timestep_scaling"]), eta=float(meta.get("eta", 0.0)))
    return size, cm


def load_student(export_dir, device="cpu"):
    """(backbone, student, meta) from an export folder written by the trainer."""
    from .backbones import load_backbone

    d = Path(export_dir)
    meta_f = d / STUDENT_META
    if not meta_f.exists():
        if (d / "export" / STUDENT_META).exists():
            d = d / "export"
            meta_f = d / STUDENT_META
        else:
            raise FileNotFoundError(
                f"{str(d)!r} is not a t2vturbo student: expected {STUDENT_META} and {STUDENT_FILE} "
                f"(written to OUTPUT_DIR/export by `python -m t2vturbo.distill`)"
            )
    meta = json.loads(meta_f.read_text())
    bb = load_backbone(meta["family"], meta["teacher_path"], **meta.get("backbone_kwargs", {})).to(device)
    net = bb.make_student()
    net.load_state_dict(load_file(str(d / STUDENT_FILE)))
    net.to(device).eval()
    return bb, net, meta


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m t2vturbo.sample", description=__doc__.split("\n")[0])
    ap.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    ap.add_argument("--prompts-file", help="text file, one prompt per line")
    ap.add_argument("--checkpoint", help="export folder (or a run's output dir; with --teacher also a teacher "
                    "folder); default: newest under outputs/")
    ap.add_argument("--steps", type=int, help="default: 4 for the student, 50 for --teacher")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--guidance", type=float, help="w (LCM form: cond + w (cond - uncond)); default: the middle "
                    "of the student's training range (7.5 for a teacher folder)")
    ap.add_argument("--eta", type=float, help="motion-guidance strength embedding (student); default: the "
                    "value it was trained with on guided samples (0 without motion guidance)")
    ap.add_argument("--out", default="samples")
    ap.add_argument("--teacher", action="store_true", help="sample the teacher with DDIM + CFG instead")
    ap.add_argument("--fps", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--num-frames", type=int, help="default: the training run's")
    ap.add_argument("--height", type=int, help="default: the training run's")
    ap.add_argument("--width", type=int, help="default: the training run's")
    args = ap.parse_args(argv)

    prompts = list(args.prompt)
    if args.prompts_file:
        prompts += [ln.strip() for ln in Path(args.prompts_file).read_text().splitlines() if ln.strip()]
    if not prompts:
        ap.error("give at least one --prompt or a --prompts-file")
    ckpt = Path(args.checkpoint) if args.checkpoint else find_latest_export()
    if ckpt is None:
        print("no distilled student found under outputs/: run `make distill` (or pass --checkpoint DIR)", file=sys.stderr)
        return 2
    if args.teacher and (ckpt / "unet" / "config.json").exists():  # a teacher folder itself
        from .backbones import load_backbone

        bb, net = load_backbone("unet3d", str(ckpt)).to(args.device), None
        meta = {"num_frames": 8, "height": 32, "width": 32}
    else:
        try:
            bb, net, meta = load_student(ckpt, args.device)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.steps is None:
        args.steps = 50 if args.teacher else 4
    if args.guidance is None:
        args.guidance = float(meta.get("guidance", 7.5))
    if args.eta is None:
        args.eta = float(meta.get("eta", 0.0))
    kw = dict(
        num_frames=args.num_frames or meta["num_frames"],
        height=args.height or meta["height"],
        width=args.width or meta["width"],
        seed=args.seed,
    )
    if args.teacher:
        video = sample_teacher(bb, prompts, steps=args.steps, guidance=args.guidance, **kw)
    else:
        video = sample_student(bb, net, prompts, steps=args.steps, num_ddim_timesteps=meta["num_ddim_timesteps"],
                               guidance=args.guidance, eta=args.eta, sigma_data=meta["sigma_data"],
                               timestep_scaling=meta["timestep_scaling"], **kw)
    from .data.video_io import write_video

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
