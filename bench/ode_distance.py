"""How close do few-step samplers get to the teacher's ODE solution?

    python bench/ode_distance.py [--student outputs/toy] [--prompts 60] [--steps 1 2 4] [--json OUT]
    python bench/ode_distance.py --student outputs/crowd   # a crowd student: the crowd world's prompts

Consistency distillation trains the student to jump to the solution of the teacher's guided
probability-flow ODE. For each held-out prompt and a fixed noise z_T, this measures the latent MSE
between that solution (teacher, DDIM 50 steps + CFG at the student's guidance) and
  * the student's S-step sample (its multistep consistency sampler), and
  * the teacher's own S-step DDIM sample (the naive way to sample in S steps),
from the same z_T, prompt and guidance. It is a finer view than ToyBench's attribute accuracies,
which an x0-predicting toy teacher already saturates at 4 DDIM steps. Side by side in one run.
The ratio (teacher DDIM MSE / student MSE) comes with a 95 % percentile-bootstrap interval over
prompts (each prompt's two MSEs resampled together). The prompts are the held-out prompts of the student's
toy world (:func:`t2vturbo.eval.report.report_world`: toy or crowd).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def ode_distances(student: str, num_prompts: int | None, steps: list[int], batch: int = 20) -> dict:
    from t2vturbo.eval.report import report_world, training_config
    from t2vturbo.eval.toybench import select_prompts
    from t2vturbo.sample import export_sampling_kwargs, load_student, sample_student, sample_teacher
    from t2vturbo.student_export import StudentExport

    bb, net, meta = load_student(student)
    w = float(meta["guidance"])
    size, cm = export_sampling_kwargs(meta)
    # the run report's world: its shards', else its training config's data.world, else its teacher's
    world = report_world({**meta, "config": training_config(StudentExport.resolve(student).dir, meta)}).name
    prompts = select_prompts(num_prompts, 0, world)
    per: dict[str, list[float]] = {f"student_{s}": [] for s in steps} | {
        f"teacher_ddim_{s}": [] for s in steps
    }
    with torch.no_grad():
        for b in range(0, len(prompts), batch):
            ps, seed = prompts[b : b + batch], b
            ode = sample_teacher(bb, ps, steps=50, guidance=w, seed=seed, decode=False, **size)
            for s in steps:
                st = sample_student(bb, net, ps, steps=s, guidance=w, seed=seed, decode=False, **size, **cm)
                te = sample_teacher(bb, ps, steps=s, guidance=w, seed=seed, decode=False, **size)
                per[f"student_{s}"] += (st - ode).pow(2).flatten(1).mean(1).tolist()
                per[f"teacher_ddim_{s}"] += (te - ode).pow(2).flatten(1).mean(1).tolist()
    idx = np.random.default_rng(0).integers(0, len(prompts), size=(2000, len(prompts)))
    ratio_ci = {}
    for s in steps:
        st, te = np.asarray(per[f"student_{s}"]), np.asarray(per[f"teacher_ddim_{s}"])
        ratio_ci[str(s)] = [float(q) for q in np.quantile(te[idx].mean(1) / st[idx].mean(1), [0.025, 0.975])]
    return {
        "student": str(student),
        "world": world,
        "guidance": w,
        "num_prompts": len(prompts),
        "reference": "teacher DDIM 50",
        "mse": {k: float(np.mean(v)) for k, v in per.items()},
        "ratio_ci95": ratio_ci,
        "per_prompt_mse": per,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--student", default="outputs/toy", help="student export (or the run's output dir)")
    ap.add_argument(
        "--prompts",
        type=int,
        default=None,
        help="default: all of the world's held-out prompts (toy 60, crowd 108)",
    )
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    rep = ode_distances(a.student, a.prompts, a.steps)
    print(
        f"latent MSE to the teacher's 50-step DDIM + CFG {rep['guidance']:g} solution, "
        f"{rep['num_prompts']} {rep['world']}-world prompts:"
    )
    print("| steps | student | teacher DDIM | ratio (teacher / student) | 95 % interval |")
    print("| --- | --- | --- | --- | --- |")
    for s in a.steps:
        st, te = rep["mse"][f"student_{s}"], rep["mse"][f"teacher_ddim_{s}"]
        lo, hi = rep["ratio_ci95"][str(s)]
        print(f"| {s} | {st:.4f} | {te:.4f} | {te / st:.2f}x | {lo:.2f}x - {hi:.2f}x |")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(rep, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
