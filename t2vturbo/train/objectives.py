"""Training objectives. The whole consistency-distillation step (T2V-Turbo-v2, Alg. 1) is
:meth:`ConsistencyDistillation.loss`; plain diffusion training (used to train toy teachers) is
:class:`DiffusionTraining`.

Randomness is drawn *per sample* from a generator seeded by ``(seed, global sample position)``, so
a run's numbers do not depend on how the global batch is split over ranks and micro-batches, and
a resumed run draws exactly what the uninterrupted run would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..diffusion import (
    add_noise,
    apply_cfg,
    boundary_form,
    consistency_loss,
    ddim_grid,
    ddim_step,
    solver_pair,
    to_x0_eps,
    training_target,
)


def cfg_x0_eps(out_c, out_u, z_t, t, w, alphas_cumprod, prediction_type: str, form: str = "lcm"):
    """Classifier-free guidance on both x0 and eps from the teacher's cond/uncond outputs at (z_t, t)."""
    x0_c, eps_c = to_x0_eps(out_c, z_t, t, alphas_cumprod, prediction_type)
    x0_u, eps_u = to_x0_eps(out_u, z_t, t, alphas_cumprod, prediction_type)
    return apply_cfg(x0_c, x0_u, w, form), apply_cfg(eps_c, eps_u, w, form)


def sample_generator(seed: int, position: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(position) * 7_919 + 12_345) % (2**63 - 1))
    return g


@dataclass
class Draws:
    """Per-sample random draws of one micro-batch (all on CPU)."""

    index: torch.Tensor  # [B] long: grid index n (CD) or timestep (diffusion)
    noise: torch.Tensor  # [B, C, F, h, w]
    w: torch.Tensor  # [B] guidance scale
    drop: torch.Tensor  # [B] bool: caption dropped (diffusion CFG training)


def draw(positions, latent_shape, seed: int, n_index: int, w_min: float, w_max: float, drop_p: float) -> Draws:
    idx, noise, w, drop = [], [], [], []
    for p in positions:
        g = sample_generator(seed, p)
        idx.append(torch.randint(0, n_index, (1,), generator=g))
        w.append(w_min + (w_max - w_min) * torch.rand(1, generator=g))
        drop.append(torch.rand(1, generator=g) < drop_p)
        noise.append(torch.randn(latent_shape, generator=g))
    return Draws(torch.cat(idx), torch.stack(noise), torch.cat(w), torch.cat(drop))


class ConsistencyDistillation:
    """Latent consistency distillation with an augmented (CFG, later motion-guided) DDIM teacher.

    One step, for clip latents z0 and prompt embedding c:
      1. n ~ U{0..N-1}, eps ~ N(0, I), w ~ U[w_min, w_max];  z_{t_{n+k}} = a z0 + s eps
      2. teacher (no grad): cond/uncond outputs -> (x0, eps) each; CFG in the LCM form
         x_hat = cond + w (cond - uncond) on x0 and eps; [motion guidance hook]; one DDIM step to
         z_hat_{t_n} = a_{t_n} x0_hat + s_{t_n} eps_hat
      3. student: f_theta(z_{t_{n+k}}) = c_skip z + c_out x0_theta(z, t, c, w, eta)
      4. target (no grad): f_theta^-(z_hat_{t_n}, t_n, c, w, eta) with theta^- = EMA or theta
      5. loss = pseudo-Huber(f_theta, target) - sum_i beta_i R_i(decode(f_theta), prompts)
         (rewards on the student's one-step prediction; see reward_term.py)
    """

    def __init__(self, cfg, backbone, seed: int):
        self.cfg = cfg
        self.bb = backbone
        self.seed = seed
        self.grid = ddim_grid(cfg.num_ddim_timesteps, backbone.num_train_timesteps)
        self.motion_guidance = None  # callable(z_t, t, cond, eps_hat, batch) -> eps_hat, set by guidance/
        self.reward_term = None  # RewardTerm: (x0, prompts, positions, flags) -> (loss, logs)

    def draws(self, positions, latent_shape) -> Draws:
        c = self.cfg
        return draw(positions, latent_shape, self.seed, len(self.grid), c.w_min, c.w_max, 0.0)

    @torch.no_grad()
    def teacher_step(self, z_t, t_start, t_end, cond, uncond, w, batch=None):
        """Augmented solver: one CFG (+ motion-guided) DDIM step of the teacher."""
        ac, pt = self.bb.alphas_cumprod, self.bb.prediction_type
        two_t = torch.cat([t_start, t_start])
        out = self.bb.teacher(torch.cat([z_t, z_t]), two_t, torch.cat([cond, uncond])).float()
        out_c, out_u = out.chunk(2)
        x0_hat, eps_hat = cfg_x0_eps(out_c, out_u, z_t.float(), t_start, w, ac, pt, self.cfg.guidance_form)
        if self.motion_guidance is not None:
            eps_hat = self.motion_guidance(z_t, t_start, cond, eps_hat, batch)
        return ddim_step(x0_hat, eps_hat, t_end, ac)

    def consistency_fn(self, net, z, t, cond, w, eta):
        out = net(z, t, cond, w, eta).float()
        x0, _ = to_x0_eps(out, z.float(), t, self.bb.alphas_cumprod, self.bb.prediction_type)
        return boundary_form(z.float(), x0, t, self.cfg.sigma_data, self.cfg.timestep_scaling)

    def loss(self, student, target_net, z0, cond, uncond, d: Draws, eta, batch=None):
        dev, dtype = z0.device, z0.dtype
        t_start, t_end = solver_pair(d.index, self.grid, self.cfg.skip)
        t_start, t_end = t_start.to(dev), t_end.to(dev)
        w = d.w.to(dev)
        z_t = add_noise(self.bb.alphas_cumprod, z0.float(), d.noise.to(dev), t_start)
        mg = self.motion_guidance
        if mg is not None:  # the reference maps need the clean latents; eta only on guided samples
            batch = {**(batch or {}), "latents": z0}
            eta = mg.student_eta(t_start, eta, batch.get("use_motion_guide"))
        z_prev = self.teacher_step(z_t.to(dtype), t_start, t_end, cond, uncond, w, batch)
        pred = self.consistency_fn(student, z_t.to(dtype), t_start, cond, w, eta)
        with torch.no_grad():
            target = self.consistency_fn(target_net, z_prev.to(dtype), t_end, cond, w, eta)
        loss = consistency_loss(pred, target, self.cfg.loss, self.cfg.huber_c)
        logs = {"loss_cd": loss.detach(), "w_mean": w.mean(), "t_mean": t_start.float().mean()}
        if mg is not None:
            logs.update(mg.stats)
        if self.reward_term is not None and self.reward_term.active and batch is not None:
            r_loss, r_logs = self.reward_term(
                pred, batch.get("reward_caption") or batch["caption"], batch["positions"], batch.get("use_reward")
            )
            loss = loss + r_loss
            logs.update(r_logs)
        return loss, logs, pred


class DiffusionTraining:
    """Plain denoising training of the teacher: t ~ U{t_min..T-1} (t_min = objective.min_timestep,
    default 0), regress the prediction-type target, captions dropped with probability p (replaced by
    the empty prompt) for CFG."""

    def __init__(self, cfg, backbone, seed: int, caption_dropout: float):
        self.cfg = cfg
        self.bb = backbone
        self.seed = seed
        self.caption_dropout = caption_dropout
        self.t_min = int(cfg.min_timestep)
        if not 0 <= self.t_min < backbone.num_train_timesteps:
            raise ValueError(f"objective.min_timestep={self.t_min} must be in [0, {backbone.num_train_timesteps - 1}]")

    def draws(self, positions, latent_shape) -> Draws:
        d = draw(positions, latent_shape, self.seed, self.bb.num_train_timesteps - self.t_min, 0.0, 0.0,
                 self.caption_dropout)
        d.index += self.t_min
        return d

    def loss(self, model, z0, cond, uncond, d: Draws):
        dev = z0.device
        t = d.index.to(dev)
        noise = d.noise.to(dev)
        drop = d.drop.to(dev).reshape(-1, 1, 1)
        c = torch.where(drop, uncond, cond)
        z_t = add_noise(self.bb.alphas_cumprod, z0.float(), noise, t)
        out = model(z_t.to(z0.dtype), t, c).float()
        target = training_target(z0.float(), noise, t, self.bb.alphas_cumprod, self.bb.prediction_type)
        loss = torch.mean((out - target) ** 2)
        return loss, {"loss_diffusion": loss.detach(), "t_mean": t.float().mean()}, None
