"""Does the student follow its guidance scale w the way the teacher does?

    python bench/guidance_response.py [--student outputs/toy] [--prompts 20] [--steps 4]
                                      [--guidance 5 7.5 10 15] [--json OUT]

The command line of :mod:`t2vturbo.eval.guidance_response` (what it measures is described there):
latent MSE of the student's S-step samples at each w to the teacher's 50-step DDIM + CFG solution
at each w, and how far the student's samples move between the lowest and highest w relative to
the teacher's (1 = as far, 0 = ignores w). ``python -m t2vturbo.eval.report RUN_DIR`` runs the same
check at the end of a run's report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from t2vturbo.eval.guidance_response import (  # noqa: E402
    REFERENCE_STEPS,
    Sampler,
    format_table,
    guidance_response,
    response_table,
    samplers,
)
from t2vturbo.sample import load_student  # noqa: E402

__all__ = ["Sampler", "format_table", "main", "response_table", "student_samplers"]


def student_samplers(
    student: str, steps: int, reference_steps: int = REFERENCE_STEPS
) -> tuple[Sampler, Sampler, dict, torch.nn.Module]:
    """(student S-step sampler, teacher DDIM + CFG sampler, export meta, student) of a student export, on latents."""
    bb, net, meta = load_student(student)
    return (*samplers(bb, net, meta, steps, reference_steps), meta, net)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--student", default="outputs/toy", help="student export (or the run's output dir)")
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument(
        "--guidance",
        type=float,
        nargs="+",
        default=None,
        help="w values, low to high (default: the training range's ends and midpoints)",
    )
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)

    bb, net, meta = load_student(a.student)
    rep = guidance_response(bb, net, meta, num_prompts=a.prompts, steps=a.steps, guidance=a.guidance)
    rep["student"] = str(a.student)
    print(format_table(rep))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(rep, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
