"""Does the student follow its guidance scale w the way the teacher does?

The student is trained on w ~ U[w_min, w_max] (fed to it as an embedding), so sampled at w it
should land near the teacher's guided ODE solution at that same w. For each held-out prompt and
a fixed z_T (the same for every w) :func:`guidance_response` samples

  * the student's S-step video at each w (latents), and
  * the teacher's 50-step DDIM + CFG solution at each w (latents),

and reports

  * ``mse[i][j]``: mean latent MSE between the student at w_i and the teacher at w_j. A faithful
    student has its row minimum on the diagonal; ``effective_guidance[i]`` is the teacher's w
    whose solution is nearest to the student at w_i;
  * ``response``: how much the student's samples change between the lowest and highest w,
    relative to how much the teacher's change, MSE(S(w_lo), S(w_hi)) / MSE(T(w_lo), T(w_hi)),
    with a 95 % percentile-bootstrap interval over prompts. 1 = moves as far as the teacher,
    0 = ignores w (a student whose w projection is zeroed is exactly 0; T2V-Turbo's random init is not).

Side by side in one run; no timing. ``python bench/guidance_response.py`` is its command line;
``python -m t2vturbo.eval.report`` runs it at the end of a run's report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..data.worlds import world_of_teacher
from ..sample import export_sampling_kwargs, sample_student, sample_teacher
from .toybench import select_prompts

__all__ = [
    "REFERENCE_STEPS",
    "Sampler",
    "default_guidance_scales",
    "format_table",
    "guidance_response",
    "response_table",
    "samplers",
]

Sampler = Callable[[list[str], float, int], torch.Tensor]  # (prompts, w, seed) -> latents [B, ...]
REFERENCE_STEPS = 50


def response_table(
    sample: Sampler,
    reference: Sampler,
    prompts: Sequence[str],
    ws: Sequence[float],
    batch: int = 20,
    resamples: int = 2000,
) -> dict:
    """The comparison above for any two samplers; batch ``b`` uses seed ``b`` for every w and both."""
    ws = [float(w) for w in ws]
    if len(ws) < 2:
        raise ValueError("guidance_response needs at least two guidance scales")
    prompts = list(prompts)
    s_lat: dict[float, list[torch.Tensor]] = {w: [] for w in ws}
    r_lat: dict[float, list[torch.Tensor]] = {w: [] for w in ws}
    with torch.no_grad():
        for b in range(0, len(prompts), batch):
            ps = prompts[b : b + batch]
            for w in ws:
                s_lat[w].append(sample(ps, w, b).float().flatten(1))
                r_lat[w].append(reference(ps, w, b).float().flatten(1))
    s = {w: torch.cat(v) for w, v in s_lat.items()}
    r = {w: torch.cat(v) for w, v in r_lat.items()}

    def per_prompt(a: torch.Tensor, c: torch.Tensor) -> np.ndarray:
        return (a - c).pow(2).mean(1).double().cpu().numpy()

    mse = [[float(per_prompt(s[wi], r[wj]).mean()) for wj in ws] for wi in ws]
    lo, hi = ws[0], ws[-1]
    s_move, r_move = per_prompt(s[lo], s[hi]), per_prompt(r[lo], r[hi])
    if r_move.mean() <= 0:
        raise ValueError(
            f"the reference gives the same samples at w={lo:g} and w={hi:g}: no response to compare with"
        )
    idx = np.random.default_rng(0).integers(0, len(prompts), size=(resamples, len(prompts)))
    boot = s_move[idx].mean(1) / r_move[idx].mean(1)
    return {
        "guidance": ws,
        "num_prompts": len(prompts),
        "mse": mse,
        "effective_guidance": [ws[int(np.argmin(row))] for row in mse],
        "response": float(s_move.mean() / r_move.mean()),
        "response_ci95": [float(q) for q in np.quantile(boot, [0.025, 0.975])],
        "student_move_mse": float(s_move.mean()),
        "reference_move_mse": float(r_move.mean()),
    }


def samplers(
    bb, net, meta: dict, steps: int, reference_steps: int = REFERENCE_STEPS, reference_bb=None
) -> tuple[Sampler, Sampler]:
    """(student S-step sampler, teacher DDIM + CFG sampler) on latents, at the clip size and consistency-sampler
    settings of the export ``meta``. The teacher is ``reference_bb``'s (default: the student's own backbone ``bb``).
    Puts ``net`` in eval mode."""
    net.eval()
    size, cm = export_sampling_kwargs(meta)
    ref = bb if reference_bb is None else reference_bb

    def sample(ps, w, seed):
        return sample_student(bb, net, ps, steps=steps, guidance=w, seed=seed, decode=False, **size, **cm)

    def reference(ps, w, seed):
        return sample_teacher(ref, ps, steps=reference_steps, guidance=w, seed=seed, decode=False, **size)

    return sample, reference


def default_guidance_scales(w_range: Sequence[float]) -> list[float]:
    """The training range's ends, its quarter point and its midpoint, low to high."""
    lo, hi = (float(x) for x in w_range)
    return [lo, lo + (hi - lo) / 4, (lo + hi) / 2, hi]


def guidance_response(
    bb,
    net,
    meta: dict,
    *,
    num_prompts: int = 20,
    steps: int = 4,
    guidance: Sequence[float] | None = None,
    reference_steps: int = REFERENCE_STEPS,
    reference_bb=None,
    world: str | None = None,
) -> dict[str, Any]:
    """:func:`response_table` of a loaded student export (``bb, net, meta``) against its teacher (or
    ``reference_bb``) on the first ``num_prompts`` held-out prompts of ToyBench's seed-0 shuffle of the toy world
    ``world`` (default: the export's, :func:`~t2vturbo.data.worlds.world_of_teacher`: its training config's
    ``data.world``, else its teacher's MANIFEST.json, else ``toy``), at the w values ``guidance`` (default:
    :func:`default_guidance_scales` of the export's ``w_range``), sorted low to high."""
    world = world or world_of_teacher(meta.get("teacher_path"), meta).name
    prompts = select_prompts(num_prompts, 0, world)
    sample, reference = samplers(bb, net, meta, steps, reference_steps, reference_bb)
    ws = default_guidance_scales(meta["w_range"]) if guidance is None else guidance
    rep = response_table(sample, reference, prompts, sorted(float(w) for w in ws))
    rep.update(
        world=world,
        steps=int(steps),
        reference_steps=int(reference_steps),
        w_range=meta.get("w_range"),
        train_step=meta.get("step"),
    )
    return rep


def format_table(rep: dict, steps: int | None = None) -> str:
    """The latent-MSE table (Markdown) and the response line."""
    steps = rep.get("steps") if steps is None else steps
    ws = rep["guidance"]
    lines = [
        f"latent MSE, student {steps} steps at w (rows) vs teacher DDIM {rep.get('reference_steps', REFERENCE_STEPS)}"
        f" + CFG at w (columns), {rep['num_prompts']} prompts:",
        "| student w | " + " | ".join(f"teacher {w:g}" for w in ws) + " | nearest teacher w |",
        "| --- |" + " --- |" * (len(ws) + 1),
    ]
    for w, row, eff in zip(ws, rep["mse"], rep["effective_guidance"]):
        cells = [f"**{v:.4f}**" if v == min(row) else f"{v:.4f}" for v in row]
        lines.append(f"| {w:g} | " + " | ".join(cells) + f" | {eff:g} |")
    lo, hi = rep["response_ci95"]
    lines.append(
        f"response w={ws[0]:g} -> {ws[-1]:g}: student moves {rep['response']:.3f}x as far as the teacher "
        f"[95 % {lo:.3f}, {hi:.3f}] (MSE {rep['student_move_mse']:.4f} vs {rep['reference_move_mse']:.4f})"
    )
    return "\n".join(lines)
