"""Does a teacher use its timestep input?  (issue #24, item 2)

    python bench/time_embedding_probe.py --teacher DIR [--num-prompts 8] [--timesteps 999 750 500 250] \
        [--shift 300] [--seed 0] [--json OUT]

For each prompt one clean clip of its world is rendered (:func:`clean_clip`: the first item of a seeded
``CrowdClipDataset`` / ``ToyClipDataset`` -- its direction restricted to the prompt's -- whose caption is the
prompt; a prompt that :func:`t2vturbo.data.crowd.parse_caption` accepts is a crowd prompt, any other must be a toy
caption) and encoded, ``x0 = bb.encode_video(clip)``.  One noise ``eps ~ N(0, I)`` per prompt (a
``torch.Generator`` seeded with ``--seed``, one draw ``[P, C, F, h, w]``, the same at every t) gives the real noisy
inputs ``z_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps`` (``a_t`` = the backbone's ``alphas_cumprod[t]``).  At every t the
teacher is called on the same ``z_t`` five times:

* ``ref``: the prompt at t (the reference);
* ``uncond``: the empty prompt at t -- the CFG gap is ``ref - uncond``, the scale a change must be compared with;
* ``zeroed``: the prompt at t with the time embedding zeroed (a forward hook on the UNet's ``time_embedding``
  returning zeros: every resnet then sees only its ``time_emb_proj`` bias);
* ``shift_plus`` / ``shift_minus``: the prompt with the network's timestep input ``t +/- shift`` clamped to
  ``[0, T - 1]`` (so at t = 999 ``t + 300`` is 999 itself and that change is 0 by construction).

Each output is converted to x0 in the latent space from the model's own prediction type (eps / v / sample) with
the backbone's ``alphas_cumprod`` at the TRUE t (:meth:`t2vturbo.diffusion.Parameterisation.x0_eps`), also for
the shifted calls.  Reported per t and overall (the mean over t of the per-t figures): the mean square (over
prompts and latent elements) of ``zeroed - ref``, ``shift_plus - ref``, ``shift_minus - ref`` and of the CFG gap,
and ``ratio = change / gap`` -- issue #24 asks for >= 0.5: a teacher whose prediction moves less when its time
input is destroyed than when its prompt is dropped hardly uses t.  The x0 space is the HEADLINE (it is what a
DDIM step and the distillation target are made of); the same figures in the model's own output space are
reported for completeness (identical for an x0-prediction teacher), and ``ref_error`` is the mean square of
``ref`` x0 minus the clean latent.  DDPM prediction types only (not flow).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from t2vturbo.data.worlds import get_world, world_of_prompt, world_of_vocabulary  # noqa: E402
from t2vturbo.diffusion import Parameterisation  # noqa: E402

VARIANTS = ("zeroed", "shift_plus", "shift_minus")
SPACES = ("x0", "output")
MAX_SCAN = 100_000  # dataset items searched for a caption


# ---- inputs --------------------------------------------------------------------------------------------
def world_of(prompt: str) -> str:
    """The name of the toy world whose caption grammar ``prompt`` follows (ValueError otherwise)."""
    return world_of_prompt(prompt).name


def infer_world(bb) -> str:
    """A teacher's world from its tokenizer (:func:`t2vturbo.data.worlds.world_of_vocabulary`)."""
    return world_of_vocabulary(bb.tokenizer.get_vocab()).name


def default_prompts(world: str, n: int) -> list[str]:
    """The first ``n`` of the world's held-out prompts."""
    return get_world(world).held_out_prompts()[:n]


def clean_clip(prompt: str, seed: int = 0, num_frames: int = 8, size: int = 32):
    """``(video [F, 3, H, W] in [-1, 1], item index, world)``: the first item of the prompt's world's dataset
    (``seed``, directions restricted to the prompt's) whose caption is the prompt."""
    w = world_of_prompt(prompt)
    target = " ".join(prompt.strip().lower().split())
    ds = w.dataset(MAX_SCAN, num_frames, size, seed=seed, directions=[w.parse_caption(target)["direction"]])
    for i in range(MAX_SCAN):
        if w.caption(ds.attributes(i)[0]) == target:
            return ds[i]["video"], i, w.name
    raise RuntimeError(f"no item captioned {prompt!r} in the first {MAX_SCAN} of the {w.name} dataset")


def clean_latents(bb, prompts, seed: int = 0, num_frames: int = 8, size: int = 32) -> torch.Tensor:
    """``bb.encode_video`` of :func:`clean_clip` of every prompt: [P, C, F, h, w] float32."""
    video = torch.stack([clean_clip(p, seed, num_frames, size)[0] for p in prompts])
    return bb.encode_video(video).float()


# ---- the model -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def time_embedding_hook(bb, fn):
    """While active, the teacher's time-embedding output ``o`` is replaced by ``fn(o)`` (a forward hook on
    ``bb.teacher.time_embedding``, diffusers' ``unet.time_embedding`` for UNet3D)."""
    handle = bb.teacher.time_embedding.register_forward_hook(lambda module, args, out: fn(out))
    try:
        yield
    finally:
        handle.remove()


def zero_time_embedding(bb):
    """:func:`time_embedding_hook` returning zeros."""
    return time_embedding_hook(bb, torch.zeros_like)


@torch.no_grad()
def predict(bb, z_t: torch.Tensor, t_net: int, t_true: int, cond: torch.Tensor):
    """``(model output, x0)`` float32: the teacher at network timestep ``t_net``, its output converted to x0
    (the backbone's prediction type and ``alphas_cumprod``) at ``t_true``."""
    param = Parameterisation.of(bb)
    if param.is_flow:
        raise ValueError(
            "the time-embedding probe takes DDPM teachers (epsilon / v_prediction / sample), not flow"
        )
    dt = next(bb.teacher.parameters()).dtype
    b = z_t.shape[0]
    out = bb.teacher(
        z_t.to(dt), torch.full((b,), int(t_net), dtype=torch.long, device=z_t.device), cond.to(dt)
    )
    out = out.float()
    x0, _ = param.x0_eps(out, z_t, torch.full((b,), int(t_true), dtype=torch.long, device=z_t.device))
    return out, x0


def _ms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).pow(2).mean())


def _ratios(row: dict) -> dict:
    gap = row["gap"]
    for v in VARIANTS:
        row[f"ratio_{v}"] = row[v] / gap if gap > 0 else float("nan")
    return row


# ---- the probe -----------------------------------------------------------------------------------------
@torch.no_grad()
def probe(
    bb, prompts, timesteps=(999, 750, 500, 250), shift: int = 300, seed: int = 0, num_frames=8, size=32
):
    """The measurements of the module docstring as a dict: ``per_t`` (one row per t: ``t``, ``t_plus``,
    ``t_minus``, ``alpha_bar``, ``ref_error`` and per space ``x0`` / ``output`` the mean squares ``gap``,
    ``zeroed``, ``shift_plus``, ``shift_minus`` and ``ratio_<variant>`` = variant / gap) and ``overall`` (per space
    the mean over t of each mean square, ratios of those means)."""
    prompts = list(prompts)
    top = int(bb.num_train_timesteps) - 1
    dev = bb.device
    x0 = clean_latents(bb, prompts, seed, num_frames, size).to(dev)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(int(seed))).to(dev)
    cond, uncond = bb.encode_text(prompts), bb.null_cond(len(prompts))
    param = Parameterisation.of(bb)
    rows = []
    for t in [int(t) for t in timesteps]:
        if not 0 <= t <= top:
            raise ValueError(f"timestep {t} outside [0, {top}]")
        t_plus, t_minus = min(t + shift, top), max(t - shift, 0)
        z_t = param.add_noise(x0, eps, torch.full((len(prompts),), t, dtype=torch.long, device=dev))
        ref = predict(bb, z_t, t, t, cond)
        preds = {"uncond": predict(bb, z_t, t, t, uncond)}
        with zero_time_embedding(bb):
            preds["zeroed"] = predict(bb, z_t, t, t, cond)
        preds["shift_plus"] = predict(bb, z_t, t_plus, t, cond)
        preds["shift_minus"] = predict(bb, z_t, t_minus, t, cond)
        row = {
            "t": t,
            "t_plus": t_plus,
            "t_minus": t_minus,
            "alpha_bar": float(bb.alphas_cumprod[t]),
            "ref_error": _ms(ref[1], x0),
        }
        for k, space in enumerate(("output", "x0")):
            m = {"gap": _ms(ref[k], preds["uncond"][k])}
            m.update({v: _ms(preds[v][k], ref[k]) for v in VARIANTS})
            row[space] = _ratios(m)
        rows.append(row)
    overall = {
        space: _ratios({k: sum(r[space][k] for r in rows) / len(rows) for k in ("gap", *VARIANTS)})
        for space in SPACES
    }
    overall["ref_error"] = sum(r["ref_error"] for r in rows) / len(rows)
    return {
        "prediction_type": bb.prediction_type,
        "headline": "x0 (latent space)",
        "prompts": prompts,
        "worlds": sorted({world_of(p) for p in prompts}),
        "timesteps": [int(t) for t in timesteps],
        "shift": int(shift),
        "seed": int(seed),
        "num_frames": int(num_frames),
        "size": int(size),
        "per_t": rows,
        "overall": overall,
    }


def format_table(res: dict) -> str:
    head = (
        f"{'t':>5} {'t-s':>4} {'t+s':>4}  {'CFG gap':>9}  {'zeroed':>9} {'ratio':>6}  "
        f"{'t+shift':>9} {'ratio':>6}  {'t-shift':>9} {'ratio':>6}"
    )

    def line(label, tm, tp, m):
        return (
            f"{label:>5} {tm:>4} {tp:>4}  {m['gap']:9.3e}  {m['zeroed']:9.3e} {m['ratio_zeroed']:6.3f}  "
            f"{m['shift_plus']:9.3e} {m['ratio_shift_plus']:6.3f}  {m['shift_minus']:9.3e} {m['ratio_shift_minus']:6.3f}"
        )

    out = []
    titles = {
        "x0": "x0 space (latent) -- the headline",
        "output": f"model output space ({res['prediction_type']}) -- for completeness",
    }
    for space in SPACES:
        out += [
            f"{titles[space]}: mean squares of the change vs ref; ratio = change / CFG gap (target >= 0.5)",
            head,
        ]
        out += [line(r["t"], r["t_minus"], r["t_plus"], r[space]) for r in res["per_t"]]
        out += [line("all", "", "", res["overall"][space]), ""]
    errs = ", ".join(f"t={r['t']} {r['ref_error']:.3e}" for r in res["per_t"])
    out.append(f"ref x0 error (mean square vs the clean latent): {errs}")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", required=True, help="a teacher folder (diffusers layout) or a student export")
    p.add_argument("--num-prompts", type=int, default=8)
    p.add_argument(
        "--prompts", nargs="+", default=None, help="default: the first N held-out prompts of --world"
    )
    p.add_argument(
        "--world", choices=("auto", "toy", "crowd"), default="auto", help="auto: from the tokenizer"
    )
    p.add_argument("--timesteps", type=int, nargs="+", default=[999, 750, 500, 250])
    p.add_argument("--shift", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads; 0 = torch's default")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from t2vturbo.student_export import load_teacher

    t0 = time.perf_counter()
    bb, _ = load_teacher(a.teacher, a.device)
    bb.eval()
    world = infer_world(bb) if a.world == "auto" else a.world
    prompts = a.prompts or default_prompts(world, a.num_prompts)
    res = probe(bb, prompts, a.timesteps, a.shift, a.seed, a.frames, a.size)
    res.update(
        command=" ".join(
            ["python", "bench/time_embedding_probe.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        date=datetime.date.today().isoformat(),
        teacher=str(a.teacher),
        device=a.device,
        seconds=time.perf_counter() - t0,
    )
    print(
        f"{a.teacher}: {res['prediction_type']} teacher, {len(prompts)} prompts ({', '.join(res['worlds'])})"
    )
    print(format_table(res), flush=True)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
