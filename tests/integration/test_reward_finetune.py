"""VADER mode (objective=reward_finetune): truncated backpropagation through the samplers, config
checks, and a short seeded run on the toy world that raises the reward it optimises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from t2vturbo.config import ConfigError, validate
from t2vturbo.diffusion import (
    consistency_sample,
    ddim_sample,
    ddim_sampling_timesteps,
    lcm_sampling_timesteps,
)
from t2vturbo.diffusion.consistency import boundary_form
from t2vturbo.diffusion.schedules import alpha_sigma, to_x0_eps
from t2vturbo.diffusion.solvers import ddim_step


def _schedule():
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    return torch.cumprod(1 - betas, 0)


@pytest.mark.parametrize("grad_last", [None, 1, 2, 4])
def test_consistency_sample_truncated_backprop_matches_a_hand_written_chain(grad_last):
    ac = _schedule()
    ts = lcm_sampling_timesteps(4, 200, 1000)
    g = torch.Generator().manual_seed(0)
    z_T = torch.randn(2, 3, 2, 4, 4, generator=g)
    renoise = torch.randn(2, 3, 3, 2, 4, 4, generator=g)
    p = torch.tensor(0.7, requires_grad=True)

    def model(z, t):  # an x0-prediction "network" with one parameter
        return p * torch.tanh(z)

    x0 = consistency_sample(
        model, tuple(z_T.shape), ts, ac, "sample", noise=z_T, renoise=renoise, grad_last=grad_last
    )
    (gp,) = torch.autograd.grad(x0.square().sum(), p)

    # independent: the chain written out, steps before the window detached
    q = torch.tensor(0.7, requires_grad=True)
    z, k = z_T, len(ts)
    first_grad = 0 if grad_last is None else k - grad_last
    for i, t in enumerate(ts.tolist()):
        if i == first_grad:
            z = z.detach()
        tt = torch.full((2,), t)
        x0_pred, _ = to_x0_eps(q * torch.tanh(z), z, tt, ac, "sample")
        x = boundary_form(z, x0_pred, tt, 0.5, 10.0)
        if i < first_grad:
            x = x.detach()
        if i + 1 < k:
            a, s = alpha_sigma(ac, torch.full((2,), int(ts[i + 1])), x)
            z = a * x + s * renoise[:, i]
    (gq,) = torch.autograd.grad(x.square().sum(), q)
    torch.testing.assert_close(x0.detach(), x.detach())
    torch.testing.assert_close(gp, gq)
    if grad_last is not None and grad_last < k:  # truncation really changes the gradient
        (g_full,) = torch.autograd.grad(
            consistency_sample(model, tuple(z_T.shape), ts, ac, "sample", noise=z_T, renoise=renoise)
            .square()
            .sum(),
            p,
        )
        assert not torch.allclose(g_full, gp)


def test_ddim_sample_truncated_backprop():
    ac = _schedule()
    ts = ddim_sampling_timesteps(3, 1000)
    z_T = torch.randn(1, 2, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    p = torch.tensor(0.5, requires_grad=True)

    def denoise(z, t):
        return to_x0_eps(p * z, z, t, ac, "epsilon")

    out = ddim_sample(denoise, z_T, ts, ac, grad_last=1)
    (gp,) = torch.autograd.grad(out.sum(), p)
    with torch.no_grad():  # the first two steps without a graph
        z = z_T
        for i in range(2):
            tt = torch.full((1,), int(ts[i]))
            x0, eps = to_x0_eps(0.5 * z, z, tt, ac, "epsilon")
            z = ddim_step(x0, eps, torch.full((1,), int(ts[i + 1])), ac)
    q = torch.tensor(0.5, requires_grad=True)
    x0, _ = to_x0_eps(q * z, z, torch.full((1,), int(ts[2])), ac, "epsilon")
    (gq,) = torch.autograd.grad(x0.sum(), q)
    torch.testing.assert_close(out.detach(), x0.detach())
    torch.testing.assert_close(gp, gq)


def test_reward_finetune_config_errors():
    base = {"objective": {"name": "reward_finetune"}, "reward": {"weights": {"toy_color": 1.0}}}
    assert validate(base).objective.finetune == "student"
    with pytest.raises(ConfigError, match="set reward weights"):
        validate({"objective": {"name": "reward_finetune"}})
    with pytest.raises(ConfigError, match="grad_steps"):
        validate({**base, "objective": {"name": "reward_finetune", "sample_steps": 2, "grad_steps": 3}})
    with pytest.raises(ConfigError, match="finetune"):
        validate({**base, "objective": {"name": "reward_finetune", "finetune": "both"}})
    with pytest.raises(ConfigError, match="init_from"):
        validate({**base, "objective": {"name": "reward_finetune", "finetune": "teacher", "init_from": "x"}})


def _rf_cfg(teacher_dir, out, **objective):
    return validate(
        {
            "output_dir": str(out),
            "seed": 0,
            "model": {
                "path": str(teacher_dir),
                "num_frames": 4,
                "height": 16,
                "width": 16,
                "lora": {"enabled": True, "rank": 8, "alpha": 8},
            },
            "objective": {
                "name": "reward_finetune",
                "sample_steps": 2,
                "w_min": 2.0,
                "w_max": 6.0,
                **objective,
            },
            "reward": {"weights": {"toy_color": 1.0}, "image_frames": 2},
            "train": {
                "log_every": 1,
                "progress": False,
                "micro_batch_size": 4,
                "lr": 5e-3,
                "eval_every": 0,
                "ckpt_every": 0,
            },
        }
    )


def test_vader_mode_raises_the_toy_colour_reward(tiny_teacher_dir, tmp_path):
    """30 seeded steps of reward fine-tuning of a (tiny, random-teacher) student on toy prompts: the
    colour reward it optimises rises on a fixed held-out batch (same prompts, noise and w before and
    after); the export is a loadable student."""
    from t2vturbo.data.toy import held_out_prompts
    from t2vturbo.sample import load_student
    from t2vturbo.train.trainer import Trainer

    out = tmp_path / "vader"
    cfg = _rf_cfg(tiny_teacher_dir, out)
    cfg.train.max_steps, cfg.train.lr, cfg.model.lora.enabled = 30, 3e-3, False
    t = Trainer(cfg)
    prompts = held_out_prompts()[:16]
    pos = list(range(10**6, 10**6 + 16))  # positions the training never draws

    @torch.no_grad()
    def held_out_reward():
        o = t.objective
        z_T, renoise, w = o.draws(pos, o.latent_shape)
        x0 = o.sample(t.engine.module, t.bb.encode_text(prompts), t.bb.null_cond(16), z_T, renoise, w)
        return float(o.reward_term(x0, prompts, pos)[1]["reward/toy_color"])

    before = held_out_reward()
    t.train()
    after = held_out_reward()
    assert after > before + 0.03, (before, after)  # measured: -0.620 -> -0.543
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in rows if "reward/toy_color" in r]) == 30
    _, _, meta = load_student(out / "export")
    assert meta["step"] == 30


def test_vader_mode_on_the_teacher_exports_a_merged_teacher(tiny_teacher_dir, tmp_path):
    from t2vturbo.backbones import load_backbone
    from t2vturbo.train.trainer import Trainer

    out = tmp_path / "vader_teacher"
    cfg = _rf_cfg(tiny_teacher_dir, out, finetune="teacher", sample_steps=3, grad_steps=1)
    cfg.train.max_steps = 3
    t = Trainer(cfg)
    before = {k: v.clone() for k, v in t.bb.teacher.state_dict().items()}
    t.train()
    # the frozen teacher the trainer holds is untouched; the export carries the merged fine-tune
    assert all(torch.equal(before[k], v) for k, v in t.bb.teacher.state_dict().items())
    ft = load_backbone("unet3d", str(out / "export"))
    changed = [k for k, v in ft.teacher.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all("attn" in k for k in changed), changed[:5]  # LoRA targets: attention projections
    assert not any("lora" in k for k in ft.teacher.state_dict())
    assert Path(out / "export" / "t2vturbo_teacher.json").is_file()
