"""Fast inference: ``python -m t2vturbo.sample --steps 4 --prompt "a red circle moving left"``.

The student is sampled with the multistep consistency sampler (guidance enters as an embedding:
one network pass per step; the motion strength eta only at the steps with t >= T (1 - motion_percentage),
the embedding of 0 below, as the official T2V-Turbo pipelines); ``--teacher`` samples the teacher with DDIM and classifier-free
guidance in the LCM convention ``cond + w (cond - uncond)`` (two passes per step) for comparison.

Seeds: the CLI samples every prompt from its own noise, seeded by :func:`prompt_seeds` from ``--seed`` and
the prompt's text, so a prompt's video does not depend on the other prompts, their order or ``--batch-size``.
Videos are H.264 mp4, yuv420p at ``--crf`` (playable everywhere) or lossless yuv444p with ``--crf 0``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from .cli import prog
from .data.video_io import write_video
from .diffusion import Parameterisation, apply_cfg, multistep_consistency_sample, ode_sample
from .student_export import STUDENT_FILE, STUDENT_META, StudentExport, find_latest_export, load_teacher

__all__ = [
    "STUDENT_FILE",
    "STUDENT_META",
    "export_sampling_kwargs",
    "find_latest_export",
    "load_student",
    "check_device",
    "motion_eta",
    "prompt_seeds",
    "sample_student",
    "sample_teacher",
]


def motion_eta(eta, net_t: torch.Tensor, percentage: float = 0.5, num_train_timesteps: int = 1000):
    """The student's eta input at network time ``net_t`` [B]: ``eta`` where ``net_t >= T (1 - percentage)``,
    else 0 (the embedding of 0 is still passed, not left out). The official T2V-Turbo pipelines' rule
    (``ms_t_threshold = 1000 (1 - percentage)`` on the actual timestep); flow students use it on their
    network time ``sigma T``. percentage 0.5 on the 4-step 200-grid [999, 749, 499, 249]: [eta, eta, 0, 0]."""
    eta = torch.as_tensor(eta, dtype=torch.float32).reshape(-1).expand(net_t.shape[0])
    on = net_t.detach().float().cpu() >= num_train_timesteps * (1.0 - float(percentage))
    return torch.where(on, eta, torch.zeros_like(eta))


def prompt_seeds(prompts: Sequence[str], seed: int = 0) -> list[int]:
    """The seed of each prompt's noise: the first 63 bits of ``sha256(f"{seed}\\n{k}\\n{prompt}")`` with
    ``k`` the number of times the same text came earlier in ``prompts`` (a repeated prompt gets a new
    video each time). Stable across runs, machines and Python versions (no ``hash()``); independent of
    the other prompts, their order and the batch size."""
    seen: dict[str, int] = {}
    out = []
    for p in prompts:
        k = seen.get(p, 0)
        seen[p] = k + 1
        digest = hashlib.sha256(f"{int(seed)}\n{k}\n{p}".encode()).digest()
        out.append(int.from_bytes(digest[:8], "big") >> 1)
    return out


def _per_sample_seeds(seed, b: int) -> list[int] | None:
    """None for one int seed (one generator for the whole batch), else the ``b`` seeds of the samples."""
    if isinstance(seed, (list, tuple)) or (isinstance(seed, torch.Tensor) and seed.ndim == 1):
        seeds = [int(s) for s in seed]
        if len(seeds) != b:
            raise ValueError(f"seed: got {len(seeds)} seeds for {b} prompts (one per prompt, or one int)")
        return seeds
    return None


def _draw(seeds: list[int], latent_shape, n_draws: int) -> list[torch.Tensor]:
    """``n_draws`` tensors [B, *latent_shape]: sample i's are the first draws of its own CPU generator seeded
    ``seeds[i]``, each a [1, *latent_shape] draw, in order (the stream of a batch of one with that int seed)."""
    per = []
    for s in seeds:
        g = torch.Generator(device="cpu").manual_seed(s)
        per.append([torch.randn((1, *latent_shape), generator=g) for _ in range(n_draws)])
    return [torch.cat([p[k] for p in per]) for k in range(n_draws)]


def sample_student(
    bb,
    net,
    prompts,
    steps=4,
    num_ddim_timesteps=200,
    guidance=7.5,
    eta=0.0,
    motion_percentage=0.5,
    num_frames=8,
    height=32,
    width=32,
    seed=0,
    sigma_data=0.5,
    timestep_scaling=10.0,
    decode=True,
):
    """Videos [B, F, 3, H, W] in [-1, 1] from the student in ``steps`` consistency steps on the
    ``num_ddim_timesteps``-point grid it was distilled on (one network pass per step; every family).

    ``guidance`` is the w the student embeds (T2V-Turbo's convention: the coefficient of ``cond - uncond``,
    no -1); ``eta`` is given at the steps :func:`motion_eta` selects with ``motion_percentage``.

    ``seed``: an int seeds one CPU generator for the batch (z_T [B, ...] drawn first, then one [B, ...]
    draw per re-noising); a list of B ints gives each sample its own generator (its z_T, then its
    re-noising draws), so sample i equals ``sample_student([prompts[i]], seed=seed[i])[0]`` up to the
    network's own batch-size round-off."""
    param = Parameterisation.of(bb)
    with torch.no_grad():
        cond = bb.encode_text(list(prompts))
    b = cond.shape[0]
    w, e = torch.full((b,), float(guidance)), torch.full((b,), float(eta))
    lat = bb.latent_shape(num_frames, height, width)
    shape = (b, *lat)
    times = param.consistency_times(steps, num_ddim_timesteps)
    seeds = _per_sample_seeds(seed, b)
    g, renoise = None, None
    if seeds is None:
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        noise = torch.randn(shape, generator=g)  # drawn first; the sampler's re-noising continues the stream
    else:
        draws = _draw(seeds, lat, len(times))
        noise = draws[0]
        if len(draws) > 1:
            renoise = torch.stack(draws[1:], dim=1)  # [B, K - 1, ...]: the re-noising of each step
    dtype = next(net.parameters()).dtype

    def model(z, t):
        tn = param.net_time(t)
        e_t = motion_eta(e, tn, motion_percentage, param.num_train_timesteps)
        return net(z.to(dtype), tn, cond, w, e_t).float()

    z0 = multistep_consistency_sample(
        model,
        shape,
        times,
        param,
        generator=g,
        device=bb.device,
        sigma_data=sigma_data,
        timestep_scaling=timestep_scaling,
        noise=noise,
        renoise=renoise,
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
    classifier-free guidance on the model output (two passes per step, cond and uncond batched).

    ``seed``: an int draws z_T [B, ...] from one CPU generator; a list of B ints draws each sample's z_T from
    its own generator (as :func:`sample_student`)."""
    param = Parameterisation.of(bb)
    dev = bb.device
    cond = bb.encode_text(list(prompts))
    b = cond.shape[0]
    uncond = bb.null_cond(b)
    lat = bb.latent_shape(num_frames, height, width)
    seeds = _per_sample_seeds(seed, b)
    if seeds is None:
        z_T = torch.randn((b, *lat), generator=torch.Generator(device="cpu").manual_seed(int(seed)))
    else:
        z_T = _draw(seeds, lat, 1)[0]
    z_T = z_T.to(dev)
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


#: sampling settings of the released T2V-Turbo VideoCrafter2 students (their predict.py): the 200-point grid
#: (4 steps: t = 999, 749, 499, 249), w = 7.5, motion strength 0.05 for the first half of the steps, 16 frames
#: of 320 x 512 at the fps condition 8
OFFICIAL_SAMPLING = {
    "num_ddim_timesteps": 200,
    "guidance": 7.5,
    "eta": 0.05,
    "motion_percentage": 0.5,
    "num_frames": 16,
    "height": 320,
    "width": 512,
}


def load_official(student_file, teacher_dir, device="cpu", time_cond_proj_seed=None):
    """``(backbone, student, meta)`` of a released T2V-Turbo VideoCrafter2 student file (``unet_mg.pt`` /
    ``unet_no_mg.pt``, or a v1 ``unet_lora.pt`` merged into the teacher's ``model.ckpt`` over a base
    ``time_cond_proj`` drawn from ``time_cond_proj_seed``) with the VideoCrafter2 teacher folder
    ``teacher_dir`` for its VAE and text encoder. ``meta`` holds :data:`OFFICIAL_SAMPLING` (eta 0 for a
    student without motion conditioning)."""
    from .backbones import load_backbone
    from .backbones.official import load_official_student
    from .backbones.videocrafter2 import resolve_paths

    if not Path(student_file).is_file():
        raise FileNotFoundError(
            f"official student {str(student_file)!r} does not exist; expected unet_mg.pt / unet_no_mg.pt "
            "(T2V-Turbo v2) or unet_lora.pt (v1)"
        )
    ckpt, _, _ = resolve_paths(teacher_dir)
    bb = load_backbone("videocrafter2", str(teacher_dir)).to(device)
    cfg = {
        k: v
        for k, v in bb.teacher.unet.config.to_dict().items()
        if k not in ("time_cond_proj_dim", "motion_cond_proj_dim")
    }
    net = load_official_student(
        student_file, cfg, base=ckpt, time_cond_proj=time_cond_proj_seed, fps=bb.teacher.fps
    )
    meta = {**OFFICIAL_SAMPLING, "family": "videocrafter2", "teacher_path": str(teacher_dir)}
    if not net.motion:
        meta["eta"] = 0.0
    return bb, net.to(device).eval(), meta


def check_device(spec: str) -> str | None:
    """None when ``spec`` names a device this torch can use, else what is wrong (checked before any weights
    are read: a CPU-only torch would otherwise fail deep inside ``.to("cuda")``)."""
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError, TypeError):
        return f"--device {spec}: not a torch device string (use cpu, cuda or cuda:N)"
    if dev.type == "cpu":
        return None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = (
                f"built with CUDA {torch.version.cuda}, but no usable GPU / driver is visible"
                if torch.version.cuda
                else "built without CUDA"
            )
            return f"--device {spec}: torch.cuda.is_available() is False (this torch is {torch.__version__}, {build})"
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            return f"--device {spec}: CUDA device index {dev.index} out of range (visible: cuda:0 .. cuda:{n - 1})"
        return None
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            return f"--device {spec}: torch.backends.mps.is_available() is False (this torch is {torch.__version__})"
        return None
    return f"--device {spec}: device type {dev.type!r} is not supported here (use cpu, cuda, cuda:N or mps)"


def _batches(n: int, size: int):
    for i in range(0, n, size):
        yield range(i, min(i + size, n))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog=prog("t2vturbo.sample"),
        description=__doc__.split("\n")[0],
        epilog="Each prompt's noise comes from its own generator, seeded from --seed and the prompt's text (sha256; "
        "a repeated prompt also counts its repeats), so a prompt gives the same video alone, in any order and at "
        "any --batch-size (up to float round-off of the network across batch sizes). Videos are H.264 mp4: "
        "yuv420p at --crf (browser / QuickTime playable; an odd height or width is padded by one repeated "
        "row / column), or with --crf 0 lossless yuv444p at the exact size (exact pixels; most players "
        "cannot show it).",
    )
    ap.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    ap.add_argument("--prompts-file", help="text file, one prompt per line")
    ap.add_argument(
        "--checkpoint",
        help="export folder (or a run's output dir; with --teacher also a teacher folder); default: the "
        "export under outputs/ when there is exactly one (several: an error listing them)",
    )
    ap.add_argument("--steps", type=int, help="default: 4 for the student, 50 for --teacher")
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="base seed; each prompt's noise is seeded from it and the prompt's text (default: 0)",
    )
    ap.add_argument(
        "--batch-size",
        type=int,
        default=4,
        help="prompts sampled together (memory vs speed; the videos do not depend on it) (default: 4)",
    )
    ap.add_argument(
        "--crf",
        type=int,
        default=18,
        help="x264 constant rate factor in [0, 51], lower = better and bigger (default: 18, visually "
        "lossless yuv420p); 0 = mathematically lossless yuv444p (for analysis, not for players)",
    )
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
    ap.add_argument(
        "--motion-percentage",
        type=float,
        help="eta is given at the steps with t >= 1000 (1 - p), 0 below (the official pipelines' "
        "percentage); default: the export's (0.5 when it has none)",
    )
    ap.add_argument("--out", default="samples")
    ap.add_argument("--teacher", action="store_true", help="sample the teacher with DDIM + CFG instead")
    ap.add_argument(
        "--official",
        metavar="FILE",
        help="a released T2V-Turbo VideoCrafter2 student (unet_mg.pt / unet_no_mg.pt, or a v1 unet_lora.pt) "
        "with --checkpoint the VideoCrafter2 teacher folder (its VAE and text encoder; a v1 list is merged "
        "into its model.ckpt); defaults: the official predict.py's (16 x 320 x 512, w 7.5, eta 0.05 on the "
        "first half of the steps, 200-point grid)",
    )
    ap.add_argument(
        "--time-cond-proj-seed",
        type=int,
        help="--official with a v1 unet_lora.pt: the seed of the base time_cond_proj under the LoRA (the "
        "release stores none; the official app draws a new random one at every start)",
    )
    ap.add_argument("--fps", type=int, default=8)
    ap.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu, cuda, cuda:N or mps (default: cuda when available, else cpu)",
    )
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
    if args.batch_size < 1:
        ap.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0 <= args.crf <= 51:
        ap.error(f"--crf must be in [0, 51] (0: lossless yuv444p), got {args.crf}")
    if args.motion_percentage is not None and not 0.0 <= args.motion_percentage <= 1.0:
        ap.error(f"--motion-percentage must be in [0, 1], got {args.motion_percentage}")
    if args.official and (args.teacher or not args.checkpoint):
        ap.error("--official needs --checkpoint (the VideoCrafter2 teacher folder) and no --teacher")
    problem = check_device(args.device)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:  # everything is checked before any weights are read
        # no --checkpoint: the only export under outputs/ (several: FileNotFoundError listing them)
        if args.checkpoint is None:
            only = StudentExport.resolve(None)
            args.checkpoint = str(only.dir)
            print(
                f"--checkpoint not given: using the only student export under outputs/, {only.dir} "
                f"(step {only.meta.get('step', '?')})",
                file=sys.stderr,
            )
        if args.official:
            if args.steps > OFFICIAL_SAMPLING["num_ddim_timesteps"]:
                ap.error(
                    f"--steps must be in [1, {OFFICIAL_SAMPLING['num_ddim_timesteps']}], got {args.steps}"
                )
            bb, net, meta = load_official(
                args.official, args.checkpoint, args.device, args.time_cond_proj_seed
            )
        elif args.teacher:
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
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ex = StudentExport(meta=meta)
    size, cm = ex.sampling_kwargs()
    kw = dict(
        num_frames=args.num_frames or size["num_frames"],
        height=args.height or size["height"],
        width=args.width or size["width"],
    )
    guidance = float(ex.get("guidance", args.guidance))
    if args.crf > 0 and (kw["height"] % 2 or kw["width"] % 2):
        print(
            f"note: {kw['height']}x{kw['width']} is odd; yuv420p videos are padded to "
            f"{kw['height'] + kw['height'] % 2}x{kw['width'] + kw['width'] % 2} by repeating the last "
            "row / column (--crf 0 writes the exact size)",
            file=sys.stderr,
        )
    seeds = prompt_seeds(prompts, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    who = "teacher" if args.teacher else "official" if args.official else "student"
    bar = tqdm(total=len(prompts), desc=f"sampling ({who})", unit="prompt", file=sys.stderr)
    with bar, torch.no_grad():
        for idx in _batches(len(prompts), args.batch_size):
            ps, ss = [prompts[i] for i in idx], [seeds[i] for i in idx]
            if args.teacher:
                video = sample_teacher(bb, ps, steps=args.steps, guidance=guidance, seed=ss, **kw)
            else:
                video = sample_student(
                    bb,
                    net,
                    ps,
                    steps=args.steps,
                    guidance=guidance,
                    seed=ss,
                    **{
                        **cm,
                        "eta": float(ex.get("eta", args.eta)),
                        "motion_percentage": float(ex.get("motion_percentage", args.motion_percentage)),
                    },
                    **kw,
                )
            for i, p, v in zip(idx, ps, video):
                safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in p)[:80]
                name = f"{i:03d}_{who}_{args.steps}steps_{safe}.mp4"
                path = write_video(out / name, v.float().cpu(), fps=args.fps, crf=args.crf, pad_odd=True)
                bar.write(str(path), file=sys.stdout)
            bar.update(len(idx))
    return 0


def cli() -> None:
    """Console-script entry point (``t2vturbo-sample``)."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
