"""ToyBench of a toy-world student at 1, 2, 4 and 8 steps against the teacher's DDIM at the same steps and
the same w, and against the teacher's DDIM 50 at that w (paired over prompts, 95 % bootstrap intervals).

    .venv/bin/python bench/fewer_steps.py outputs/toy [--steps 1 2 4 8] [--num-prompts 60] \
        [--samples-per-prompt 4] [--json outputs/toy/fewer_steps.json]

Every line uses the same held-out prompts and seed (:func:`t2vturbo.eval.toybench.select_prompts`), so a
student line and a teacher line are paired prompt by prompt (:func:`~t2vturbo.eval.toybench.paired_difference`).
The w is the export's (the middle of its training range) unless ``--guidance``. The prompts and metrics are
those of the export's toy world (:func:`t2vturbo.eval.report.report_world`: a crowd student gets crowd prompts).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from t2vturbo.eval import toybench as tb
from t2vturbo.eval.report import _find_export, _load, report_world, training_config


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", help="a toy-world run's output dir (holding export/) or an export folder")
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--reference-steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument(
        "--num-prompts",
        type=int,
        default=None,
        help="default: all of the world's held-out prompts (toy 60, crowd 108)",
    )
    ap.add_argument("--samples-per-prompt", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="default: RUN_DIR/fewer_steps.json")
    a = ap.parse_args(argv)

    export_dir, _ = _find_export(a.run_dir)
    bb, net, meta, teacher_bb, _ = _load(export_dir, None, "cpu")
    w = tb.student_guidance(meta) if a.guidance is None else float(a.guidance)
    world = report_world({**meta, "config": training_config(export_dir, meta)}).name  # as the run report's
    common = dict(prompts=tb.select_prompts(a.num_prompts, a.seed, world), seed=a.seed, meta=meta)
    t0 = time.perf_counter()
    ref = tb.run_toybench(teacher_bb, None, a.reference_steps, w, samples_per_prompt=1, **common)
    print(tb.format_summary(ref, f"teacher DDIM {a.reference_steps}, w={w:g}"), flush=True)
    rows, out = [], {"world": world, "guidance": w, "reference": ref, "steps": {}}
    for n in a.steps:
        teacher = tb.run_toybench(teacher_bb, None, n, w, samples_per_prompt=a.samples_per_prompt, **common)
        student = tb.run_toybench(bb, net, n, w, samples_per_prompt=a.samples_per_prompt, **common)
        vs_teacher = tb.paired_difference(student, teacher, seed=a.seed)
        vs_ref = tb.paired_difference(student, ref, seed=a.seed)
        out["steps"][n] = {
            "teacher": teacher,
            "student": student,
            "vs_teacher": vs_teacher,
            "vs_reference": vs_ref,
        }
        rows.append(
            f"| {n} | {teacher['score']:.3f} | {student['score']:.3f} | "
            f"{vs_teacher['score']['diff']:+.3f} [{vs_teacher['score']['ci95'][0]:+.3f}, {vs_teacher['score']['ci95'][1]:+.3f}] | "
            f"{vs_ref['score']['diff']:+.3f} [{vs_ref['score']['ci95'][0]:+.3f}, {vs_ref['score']['ci95'][1]:+.3f}] |"
        )
        print(rows[-1], flush=True)
    head = (
        f"ToyBench score ({world} world), w = {w:g}, {len(common['prompts'])} prompts x {a.samples_per_prompt} samples "
        f"(teacher DDIM {a.reference_steps}: {ref['score']:.3f}, 1 sample); differences paired over prompts\n\n"
        "| steps | teacher DDIM | student | student − teacher DDIM (95 % CI) | student − DDIM "
        f"{a.reference_steps} (95 % CI) |\n|---|---|---|---|---|"
    )
    print("\n" + head + "\n" + "\n".join(rows))
    print(f"\n{time.perf_counter() - t0:.0f} s")
    path = Path(a.json) if a.json else Path(a.run_dir) / "fewer_steps.json"
    path.write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
