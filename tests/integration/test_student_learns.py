"""The learning test of the toy world: a short, seeded distillation from the shipped toy teacher
makes the 4-step student better than its starting point.

"Better" is measured against what consistency distillation aims at: the teacher's own probability-
flow ODE solution. For held-out prompts and fixed noise z_T, the student's 1-step and 4-step samples
are compared with the teacher's 50-step DDIM + CFG sample from the same z_T and guidance (latent
MSE). At step 0 the student is the teacher evaluated as a consistency model (one x0 prediction
from pure noise, a blurry average); training must bring it closer.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from t2vturbo.config import validate
from t2vturbo.eval.toybench import select_prompts
from t2vturbo.sample import sample_student, sample_teacher
from t2vturbo.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
TEACHER = Path(os.environ.get("T2V_TOY_TEACHER", REPO / "t2vturbo" / "assets" / "toy_teacher"))
W = 10.0  # the middle of experiment=toy's w range (the guidance `make distill` compares at)


def test_student_gets_closer_to_the_teachers_ode_solution(tmp_path):
    if not (TEACHER / "unet" / "config.json").is_file():
        pytest.fail(f"the shipped toy teacher is missing at {TEACHER}")
    cfg = validate(
        {
            "output_dir": str(tmp_path / "run"),
            "seed": 0,
            "model": {"path": str(TEACHER)},
            "data": {"kind": "toy"},
            "objective": {"w_min": 5.0, "w_max": 15.0, "num_ddim_timesteps": 50},  # as experiment=toy
            "train": {
                "max_steps": 60,
                "micro_batch_size": 8,
                "lr": 1e-4,
                "log_every": 10,
                "progress": False,
                "eval_every": 0,
                "ckpt_every": 0,
                "export_diffusers": False,
            },
        }
    )
    t = Trainer(cfg)
    prompts = select_prompts(8, 0)
    with torch.no_grad():
        ode = sample_teacher(t.bb, prompts, steps=50, guidance=W, seed=0, decode=False)

    def distances():
        net = t.student_for_inference()
        was = net.training
        net.eval()
        with torch.no_grad():
            out = {
                s: float(
                    (sample_student(t.bb, net, prompts, steps=s, guidance=W, seed=0, decode=False) - ode)
                    .pow(2)
                    .mean()
                )
                for s in (1, 4)
            }
        net.train(was)
        return out

    before = distances()
    t.train()
    after = distances()
    # measured with the shipped three-stage teacher (EMA student, 60 steps, 1 thread, 50-point grid, w in [5, 15],
    # distances at w = 10): lr 1e-4 (experiment=toy): 1 step 0.1075 -> 0.1056, 4 steps 0.1187 -> 0.1079 (0.91x);
    # lr 2e-4: 0.1075 -> 0.1052, 0.1187 -> 0.1041. (w in [2, 6] at w = 4, lr 2e-4: 0.0598 -> 0.0498 at 4 steps.)
    assert after[4] < 0.95 * before[4], (before, after)
    assert after[1] < 0.99 * before[1], (before, after)
