"""The consistency-distillation step against a hand computation with analytic networks."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from t2vturbo.config import ConsistencyDistillationConfig, DiffusionConfig
from t2vturbo.train.objectives import ConsistencyDistillation, DiffusionTraining, draw


class Teacher(torch.nn.Module):
    """eps(z, t, c) = 0.3 z + 0.01 t/1000 + mean(c)  (cond and uncond differ through c)."""

    def forward(self, z, t, c):
        return (
            0.3 * z
            + 0.01 * t.float().reshape(-1, 1, 1, 1, 1) / 1000
            + c.mean(dim=(1, 2)).reshape(-1, 1, 1, 1, 1)
        )


class Student(torch.nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(scale))

    def forward(self, z, t, c, w, eta):
        return self.scale * z + 0.001 * w.reshape(-1, 1, 1, 1, 1)


class FakeBackbone(SimpleNamespace):
    """The backbone interface the objectives use, with identity "encoders": the batch's video *is* z0 and
    the prompt embeddings are rows of ``cond``."""

    device = torch.device("cpu")

    def encode_video(self, video):
        return video

    def encode_text(self, prompts):
        return self.cond[: len(prompts)]

    def null_cond(self, b):
        return torch.zeros(b, *self.cond.shape[1:])


def make_bb(prediction_type="epsilon", cond=None):
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    ac = torch.tensor(np.cumprod(1 - betas), dtype=torch.float32)
    return FakeBackbone(
        alphas_cumprod=ac,
        prediction_type=prediction_type,
        num_train_timesteps=1000,
        teacher=Teacher(),
        cond=cond if cond is not None else torch.zeros(2, 1, 1),
    )


def batch_of(z0, positions):
    return {"video": z0, "caption": [f"p{i}" for i in range(len(positions))], "positions": positions}


def reference_loss(bb, z0, cond, uncond, d, student, target, skip=1, c=0.001):
    """Written out in float64 from the paper's equations, element by element."""
    ac = bb.alphas_cumprod.double()
    losses = []
    for i in range(z0.shape[0]):
        n = int(d.index[i])
        t_s = (n + 1) * 5 - 1
        t_e = (n - skip + 1) * 5 - 1 if n - skip >= 0 else 0
        a_s, s_s = math.sqrt(ac[t_s]), math.sqrt(1 - ac[t_s])
        a_e, s_e = math.sqrt(ac[t_e]), math.sqrt(1 - ac[t_e])
        w = float(d.w[i])
        z = a_s * z0[i].double() + s_s * d.noise[i].double()
        ts = torch.tensor([t_s])
        eps_c = bb.teacher(z[None].float(), ts, cond[i : i + 1]).double()[0]
        eps_u = bb.teacher(z[None].float(), ts, uncond[i : i + 1]).double()[0]
        x0_c, x0_u = (z - s_s * eps_c) / a_s, (z - s_s * eps_u) / a_s
        x0_hat, eps_hat = x0_c + w * (x0_c - x0_u), eps_c + w * (eps_c - eps_u)
        z_prev = a_e * x0_hat + s_e * eps_hat

        def f(net, zz, t, a, s, i=i, w=w):
            out = net(
                zz[None].float(), torch.tensor([t]), cond[i : i + 1], torch.tensor([w]), torch.zeros(1)
            ).double()[0]
            x0 = (zz - s * out) / a
            c_skip = 0.25 / ((10 * t) ** 2 + 0.25)
            c_out = 10 * t / math.sqrt((10 * t) ** 2 + 0.25)
            return c_skip * zz + c_out * x0

        pred = f(student, z, t_s, a_s, s_s)
        tgt = f(target, z_prev, t_e, a_e, s_e)
        losses.append(torch.sqrt((pred - tgt) ** 2 + c * c) - c)
    return torch.stack(losses).mean().item()


def test_cd_loss_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(3, 2, 2, 2, 2, generator=g)
    cond = torch.randn(3, 4, 5, generator=g)
    uncond = torch.zeros(3, 4, 5)
    bb = make_bb(cond=cond)
    cfg = ConsistencyDistillationConfig()
    obj = ConsistencyDistillation(cfg, bb, seed=3)
    draws = obj.draws

    def with_boundary(*args):  # include the boundary case t_end = 0
        d = draws(*args)
        d.index[0] = 0
        return d

    obj.draws = with_boundary
    d = with_boundary([10, 11, 12], z0.shape[1:])
    student, target = Student(0.5), Student(0.45)
    obj.target = target
    loss, logs = obj.loss(student, batch_of(z0, [10, 11, 12]))
    ref = reference_loss(bb, z0, cond, uncond, d, student, target)
    assert abs(loss.item() - ref) < 1e-6 * max(1.0, abs(ref)), (loss.item(), ref)
    loss.backward()
    assert student.scale.grad is not None and target.scale.grad is None


def test_teacher_step_w0_is_conditional_ddim_and_lcm_vs_imagen():
    bb = make_bb()
    obj = ConsistencyDistillation(ConsistencyDistillationConfig(), bb, seed=0)
    z = torch.randn(2, 2, 2, 2, 2)
    cond, uncond = torch.randn(2, 3, 4), torch.zeros(2, 3, 4)
    ts, te = torch.tensor([999, 504]), torch.tensor([994, 499])
    w0 = obj.teacher_step(z, ts, te, cond, uncond, torch.zeros(2))
    ac = bb.alphas_cumprod
    eps = bb.teacher(z, ts, cond)
    a_s, s_s = ac[ts].sqrt().reshape(-1, 1, 1, 1, 1), (1 - ac[ts]).sqrt().reshape(-1, 1, 1, 1, 1)
    a_e, s_e = ac[te].sqrt().reshape(-1, 1, 1, 1, 1), (1 - ac[te]).sqrt().reshape(-1, 1, 1, 1, 1)
    expected = a_e * (z - s_s * eps) / a_s + s_e * eps
    assert torch.allclose(w0, expected, atol=1e-5)
    obj_im = ConsistencyDistillation(ConsistencyDistillationConfig(guidance_form="imagen"), bb, seed=0)
    w = torch.tensor([3.0, 6.0])
    assert torch.allclose(
        obj.teacher_step(z, ts, te, cond, uncond, w),
        obj_im.teacher_step(z, ts, te, cond, uncond, w + 1),
        atol=1e-5,
    )


def test_motion_guidance_score_is_applied():
    """The online teacher subtracts lam sqrt(1 - sqrt(ab_t)) score from eps_hat on the guided samples only."""
    bb = make_bb()
    obj = ConsistencyDistillation(ConsistencyDistillationConfig(), bb, seed=0)
    z = torch.randn(2, 2, 2, 2, 2)
    cond, uncond = torch.randn(2, 3, 4), torch.zeros(2, 3, 4)
    ts, te = torch.tensor([504, 504]), torch.tensor([499, 499])
    base = obj.teacher_step(z, ts, te, cond, uncond, torch.ones(2))
    obj.motion_guidance = SimpleNamespace(
        lam=2.0, score=lambda z_t, t, c, batch: (torch.ones_like(z_t), torch.tensor([True, False]))
    )
    shifted = obj.teacher_step(z, ts, te, cond, uncond, torch.ones(2))
    s_e = (1 - bb.alphas_cumprod[499]).sqrt()
    c_t = (1 - bb.alphas_cumprod[504].sqrt()).sqrt()
    assert torch.allclose(shifted[0] - base[0], -s_e * 2.0 * c_t * torch.ones_like(base[0]), atol=1e-5)
    assert torch.equal(shifted[1], base[1])


def test_diffusion_objective_targets():
    for pt in ("epsilon", "v_prediction", "sample"):
        bb = make_bb(pt)
        obj = DiffusionTraining(DiffusionConfig(), bb, seed=0, caption_dropout=0.0)
        z0 = torch.randn(2, 2, 2, 2, 2)
        d = draw([0, 1], z0.shape[1:], 0, 1000, 0, 0, 0.0)
        a = bb.alphas_cumprod[d.index].sqrt().reshape(-1, 1, 1, 1, 1)
        s = (1 - bb.alphas_cumprod[d.index]).sqrt().reshape(-1, 1, 1, 1, 1)
        target = {"epsilon": d.noise, "v_prediction": a * d.noise - s * z0, "sample": z0}[pt]
        perfect = lambda z, t, c, target=target: target  # noqa: E731
        loss, _ = obj.loss(perfect, batch_of(z0, [0, 1]))
        assert loss.item() < 1e-10
        zero = lambda z, t, c: torch.zeros_like(z)  # noqa: E731
        loss0, _ = obj.loss(zero, batch_of(z0, [0, 1]))
        assert abs(loss0.item() - (target**2).mean().item()) < 1e-5


def test_diffusion_min_timestep_draws_the_noisy_end_only_and_keeps_the_default_stream():
    bb = make_bb("sample")
    base = DiffusionTraining(DiffusionConfig(), bb, seed=3, caption_dropout=0.1)
    hi = DiffusionTraining(DiffusionConfig(min_timestep=800), bb, seed=3, caption_dropout=0.1)
    positions = list(range(400))
    d0, d1 = base.draws(positions, (2, 2, 2, 2)), hi.draws(positions, (2, 2, 2, 2))
    # default: the historical stream, t over the whole range
    ref = draw(positions, (2, 2, 2, 2), 3, 1000, 0.0, 0.0, 0.1)
    assert torch.equal(d0.index, ref.index) and torch.equal(d0.noise, ref.noise)
    assert int(d0.index.min()) < 100 and int(d0.index.max()) > 900
    # min_timestep: t in [800, 999], covering that range; noise and caption dropout unchanged
    assert int(d1.index.min()) >= 800 and int(d1.index.max()) == 999 and int(d1.index.min()) < 805
    assert torch.equal(d1.noise, d0.noise) and torch.equal(d1.drop, d0.drop)
    with pytest.raises(ValueError, match="min_timestep=1000"):
        DiffusionTraining(DiffusionConfig(min_timestep=1000), bb, seed=0, caption_dropout=0.0)
