"""The student's w pathway learns (issue "official student", deliverable 5).

A Gaussian-mixture "video" (d = 8, three prompts of two components each) with an analytic teacher E[x0 | z_t, c]
under the project's VP schedule, CFG in the LCM form; a small MLP with diffusers' ``Timesteps`` +
``TimestepEmbedding`` time path fitted to it (the "teacher model"); the student is a copy of it with our w
conditioning (``DiffusersTimeCondition.add_guidance_conditioning(256, motion=False)`` in a ``GuidedDenoiser``: w is
projected onto the timestep sinusoid before the time MLP, random init); it is distilled by
``ConsistencyDistillation.loss`` itself (online augmented DDIM step on a 50-point grid, w ~ U[1, 8], EMA target,
pseudo-Huber) and measured with ``t2vturbo.eval.guidance_response.response_table`` (4-step multistep consistency
sampler vs the teacher's DDIM-50 + CFG at w = 1, 2.75, 4.5, 8). The experiment lives in bench/w_pathway.py,
which runs it longer and over seeds (docs/log/w-pathway.md).
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
from conftest import REPO

_spec = importlib.util.spec_from_file_location("w_pathway", REPO / "bench" / "w_pathway.py")
wp = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("w_pathway", wp)  # its dataclass looks its module up
_spec.loader.exec_module(wp)

SEED = 0
CD_STEPS = 800


@pytest.fixture(scope="module")
def fitted():
    """(problem, the fitted teacher network) shared by the students below."""
    problem = wp.make_problem(SEED)
    net, mse = wp.fit_teacher_net(problem, SEED, steps=800)
    assert mse < 2e-3  # the network does fit the analytic teacher at w = 0
    return problem, net


def test_teacher_depends_on_t_and_w(fitted):
    problem, _ = fitted
    import torch

    teacher = wp.AnalyticTeacher(problem)
    labels = torch.arange(problem.classes).repeat_interleave(64)
    g = torch.Generator().manual_seed(0)
    x0 = problem.sample(labels, g)
    eps = torch.randn(x0.shape, generator=g)
    gaps = []
    for t in (999, 500, 100):
        tt = torch.full((len(labels),), t)
        ab = problem.alphas_cumprod[t]
        z = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        cond, uncond = teacher(z, tt, problem.onehot(labels)), teacher(z, tt, problem.null(len(labels)))
        gaps.append(float((cond - uncond).pow(2).mean()))  # what CFG scales by w at this t
    assert gaps[0] > 10 * gaps[2] > 0  # the guidance direction depends strongly on t


def test_w_pathway_learns_and_a_frozen_one_does_not(fitted):
    problem, net = fitted
    r = wp.run("random", SEED, cd_steps=CD_STEPS, teacher_net=net, problem=problem)
    # before distillation the random projection moves the samples a little, not like the teacher
    assert r["response_before"] < 0.2
    assert r["loss_last100"] < 0.8 * r["loss_first100"]
    assert r["response"] >= 0.5, r
    assert r["response_ci95"][0] >= 0.4, r

    # negative control: the same distillation with the w projection zeroed and frozen (w ignored)
    frozen = wp.run("frozen", SEED, cd_steps=CD_STEPS, teacher_net=net, problem=problem)
    assert frozen["cond_proj_norm"] == 0.0
    assert frozen["response"] == 0.0  # the same sample at every w, bit for bit
    assert len(set(frozen["effective_guidance"])) == 1 and len(set(frozen["mse_diag"])) > 1
    assert frozen["response"] < r["response"] - 0.4
