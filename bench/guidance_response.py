"""Does the student follow its guidance scale w the way the teacher does?

    python bench/guidance_response.py [--student outputs/toy] [--prompts 20] [--steps 4]
                                      [--guidance 5 7.5 10 15] [--json OUT]

The student is trained on w ~ U[w_min, w_max] (fed to it as an embedding), so sampled at w it
should land near the teacher's guided ODE solution at that same w. For each held-out prompt and
a fixed z_T (the same for every w) this samples
  * the student's S-step video at each w in --guidance (latents), and
  * the teacher's 50-step DDIM + CFG solution at each w (latents),
and reports
  * ``mse[i][j]``: mean latent MSE between the student at w_i and the teacher at w_j. A faithful
    student has its row minimum on the diagonal; ``effective_guidance[i]`` is the teacher's w
    whose solution is nearest to the student at w_i;
  * ``response``: how much the student's samples change between the lowest and highest w,
    relative to how much the teacher's change, MSE(S(w_lo), S(w_hi)) / MSE(T(w_lo), T(w_hi)),
    with a 95 % percentile-bootstrap interval over prompts. 1 = moves as far as the teacher,
    0 = ignores w (a freshly made student, whose guidance embedding starts at zero, is exactly 0).
Side by side in one run; no timing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

Sampler = Callable[[list[str], float, int], torch.Tensor]  # (prompts, w, seed) -> latents [B, ...]


def response_table(sample: Sampler, reference: Sampler, prompts: Sequence[str], ws: Sequence[float],
                   batch: int = 20, resamples: int = 2000) -> dict:
    """The comparison above for any two samplers; batch ``b`` uses seed ``b`` for every w and both."""
    ws = [float(w) for w in ws]
    if len(ws) < 2:
        raise ValueError("guidance_response needs at least two guidance scales")
    prompts = list(prompts)
    s_lat: dict[float, list[torch.Tensor]] = {w: [] for w in ws}
    r_lat: dict[float, list[torch.Tensor]] = {w: [] for w in ws}
    with torch.no_grad():
        for b in range(0, len(prompts), batch):
            ps = prompts[b:b + batch]
            for w in ws:
                s_lat[w].append(sample(ps, w, b).float().flatten(1))
                r_lat[w].append(reference(ps, w, b).float().flatten(1))
    s = {w: torch.cat(v) for w, v in s_lat.items()}
    r = {w: torch.cat(v) for w, v in r_lat.items()}

    def per_prompt(a: torch.Tensor, c: torch.Tensor) -> np.ndarray:
        return (a - c).pow(2).mean(1).double().numpy()

    mse = [[float(per_prompt(s[wi], r[wj]).mean()) for wj in ws] for wi in ws]
    lo, hi = ws[0], ws[-1]
    s_move, r_move = per_prompt(s[lo], s[hi]), per_prompt(r[lo], r[hi])
    if r_move.mean() <= 0:
        raise ValueError(f"the reference gives the same samples at w={lo:g} and w={hi:g}: no response to compare with")
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


def student_samplers(student: str, steps: int, reference_steps: int = 50) -> tuple[Sampler, Sampler, dict, torch.nn.Module]:
    """(student S-step sampler, teacher DDIM + CFG sampler, export meta, student) of a student export, on latents."""
    from t2vturbo.sample import export_sampling_kwargs, load_student, sample_student, sample_teacher

    bb, net, meta = load_student(student)
    net.eval()
    size, cm = export_sampling_kwargs(meta)

    def sample(ps, w, seed):
        return sample_student(bb, net, ps, steps=steps, guidance=w, seed=seed, decode=False, **size, **cm)

    def reference(ps, w, seed):
        return sample_teacher(bb, ps, steps=reference_steps, guidance=w, seed=seed, decode=False, **size)

    return sample, reference, meta, net


def format_table(rep: dict, steps: int) -> str:
    ws = rep["guidance"]
    lines = [
        f"latent MSE, student {steps} steps at w (rows) vs teacher DDIM 50 + CFG at w (columns), "
        f"{rep['num_prompts']} prompts:",
        "| student w | " + " | ".join(f"teacher {w:g}" for w in ws) + " | nearest teacher w |",
        "| --- |" + " --- |" * (len(ws) + 1),
    ]
    for w, row, eff in zip(ws, rep["mse"], rep["effective_guidance"]):
        cells = [f"**{v:.4f}**" if v == min(row) else f"{v:.4f}" for v in row]
        lines.append(f"| {w:g} | " + " | ".join(cells) + f" | {eff:g} |")
    lo, hi = rep["response_ci95"]
    lines.append(f"response w={ws[0]:g} -> {ws[-1]:g}: student moves {rep['response']:.3f}x as far as the teacher "
                 f"[95 % {lo:.3f}, {hi:.3f}] (MSE {rep['student_move_mse']:.4f} vs {rep['reference_move_mse']:.4f})")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--student", default="outputs/toy", help="student export (or the run's output dir)")
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--guidance", type=float, nargs="+", default=None,
                    help="w values, low to high (default: the training range's ends and midpoints)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    from t2vturbo.eval.toybench import select_prompts

    sample, reference, meta, _ = student_samplers(a.student, a.steps)
    ws = a.guidance
    if ws is None:
        lo, hi = (float(x) for x in meta["w_range"])
        ws = [lo, lo + (hi - lo) / 4, (lo + hi) / 2, hi]
    rep = response_table(sample, reference, select_prompts(a.prompts, 0), sorted(ws))
    rep.update(student=str(a.student), steps=a.steps, w_range=meta.get("w_range"), train_step=meta.get("step"))
    print(format_table(rep, a.steps))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(rep, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
