"""Consistency distillation of a flow-matching teacher (Wan2.1), and flow sampling with a backbone.

Same algorithm as :class:`~t2vturbo.train.objectives.ConsistencyDistillation`, written in the flow
parameterisation of diffusion/flow.py (z_sigma = (1 - sigma) x0 + sigma eps, the networks predict
v = eps - x0 at t = sigma * 1000). For clip latents z0 and prompt embedding c:
  1. n ~ U{0..N-1} on the shifted grid sigma_0 < ... < sigma_{N-1} (N = objective.num_ddim_timesteps),
     eps ~ N(0, I), w ~ U[w_min, w_max];  z = (1 - sigma_{n+k}) z0 + sigma_{n+k} eps
  2. teacher (no grad): v_c, v_u; CFG v_hat = v_c + w (v_c - v_u) (objective.guidance_form=lcm; the
     pipeline/Imagen form with w' = w + 1); one Euler step z_hat = z + (sigma_n - sigma_{n+k}) v_hat
     (sigma_{-1} = 0)
  3. student: f_theta(z, sigma_{n+k}) = c_skip z + c_out (z - sigma v_theta(z, t, c, w, eta))
  4. target (no grad): f_theta^-(z_hat, sigma_n) with theta^- = EMA or theta
  5. loss = pseudo-Huber(f_theta, target) - sum_i beta_i R_i(decode(f_theta), prompts)
Motion guidance (a temporal-attention energy of UNet teachers) is not available for flow teachers.
"""

from __future__ import annotations

import torch

from ..config import ConfigError
from ..diffusion import apply_cfg, consistency_loss, solver_pair
from ..diffusion.flow import (
    add_noise_flow,
    flow_boundary_form,
    flow_consistency_sample,
    flow_euler_sample,
    flow_euler_step,
    flow_grid,
    flow_lcm_sigmas,
    flow_sampling_sigmas,
    flow_x0_eps,
    sigma_to_timestep,
)
from .objectives import Draws, draw


class FlowConsistencyDistillation:
    """Latent consistency distillation with a CFG-augmented Euler teacher (flow matching)."""

    def __init__(self, cfg, backbone, seed: int, motion: bool = False):
        if motion:
            raise ConfigError(
                "guidance.motion=true is not supported with a flow-matching teacher (model.family=wan, "
                "prediction_type='flow'): use guidance=cfg (guidance.motion=false)"
            )
        self.cfg = cfg
        self.bb = backbone
        self.seed = seed
        self.T = int(backbone.num_train_timesteps)
        self.grid = flow_grid(cfg.num_ddim_timesteps, backbone.flow_shift, self.T)  # ascending sigmas
        self.motion_guidance = None  # interface parity with ConsistencyDistillation (always None here)
        self._reward_term = None

    @property
    def reward_term(self):
        """RewardTerm: (x0, prompts, positions, flags) -> (loss, logs), or None."""
        return self._reward_term

    @reward_term.setter
    def reward_term(self, term):
        # The reward term decodes a subset of *latent* frames as a clip; with a temporally compressing causal
        # VAE (Wan: 4 frames per latent frame) that is not a subset of the clip's frames.
        if term is not None and getattr(self.bb, "temporal_factor", 1) > 1 and term.active:
            kinds = {r.kind for r in term.rewards.values()}
            if "image" in kinds or ("video" in kinds and term.cfg.video_frames is not None):
                raise ConfigError(
                    f"rewards with a temporally compressed VAE (factor {self.bb.temporal_factor}, model.family=wan) "
                    "need the whole clip decoded: use video rewards with reward.video_frames=null; image rewards "
                    "and strided reward.video_frames would decode a subset of latent frames, not of the clip's frames"
                )
        self._reward_term = term

    def draws(self, positions, latent_shape) -> Draws:
        c = self.cfg
        return draw(positions, latent_shape, self.seed, len(self.grid), c.w_min, c.w_max, 0.0)

    @torch.no_grad()
    def teacher_step(self, z, s_start, s_end, cond, uncond, w):
        """Augmented solver: one CFG-guided Euler step of the teacher from ``s_start`` to ``s_end``."""
        t = sigma_to_timestep(s_start, self.T).to(z.device)
        v = self.bb.teacher(torch.cat([z, z]), torch.cat([t, t]), torch.cat([cond, uncond])).float()
        v_c, v_u = v.chunk(2)
        v_hat = apply_cfg(v_c, v_u, w, self.cfg.guidance_form)
        return flow_euler_step(z.float(), v_hat, s_start, s_end)

    def consistency_fn(self, net, z, sigma, cond, w, eta):
        v = net(z, sigma_to_timestep(sigma, self.T).to(z.device), cond, w, eta).float()
        x0, _ = flow_x0_eps(v, z.float(), sigma)
        return flow_boundary_form(z.float(), x0, sigma, self.cfg.sigma_data, self.cfg.timestep_scaling, self.T)

    def loss(self, student, target_net, z0, cond, uncond, d: Draws, eta, batch=None):
        dev, dtype = z0.device, z0.dtype
        s_start, s_end = solver_pair(d.index, self.grid, self.cfg.skip)
        s_start, s_end = s_start.to(dev), s_end.to(dev)
        w = d.w.to(dev)
        z = add_noise_flow(z0.float(), d.noise.to(dev), s_start)
        z_prev = self.teacher_step(z.to(dtype), s_start, s_end, cond, uncond, w)
        pred = self.consistency_fn(student, z.to(dtype), s_start, cond, w, eta)
        with torch.no_grad():
            target = self.consistency_fn(target_net, z_prev.to(dtype), s_end, cond, w, eta)
        loss = consistency_loss(pred, target, self.cfg.loss, self.cfg.huber_c)
        logs = {"loss_cd": loss.detach(), "w_mean": w.mean(), "t_mean": (s_start * self.T).mean(),
                "sigma_mean": s_start.mean()}
        if self.reward_term is not None and self.reward_term.active and batch is not None:
            r_loss, r_logs = self.reward_term(
                pred, batch.get("reward_caption") or batch["caption"], batch["positions"], batch.get("use_reward")
            )
            loss = loss + r_loss
            logs.update(r_logs)
        return loss, logs, pred


# ---- sampling with a flow backbone (t2vturbo.sample dispatches here for prediction_type == "flow") ----
@torch.no_grad()
def sample_student_flow(bb, net, prompts, steps=4, num_ddim_timesteps=200, guidance=7.5, eta=0.0, num_frames=81,
                        height=480, width=832, seed=0, sigma_data=0.5, timestep_scaling=10.0, decode=True):
    """Videos [B, F, 3, H, W] in [-1, 1] from a flow student in ``steps`` consistency steps on the
    ``num_ddim_timesteps``-point shifted grid it was distilled on (one network pass per step)."""
    from ..sample import student_inputs

    dev = bb.device
    cond, w, e, shape, g, noise, dtype = student_inputs(bb, net, prompts, guidance, eta, num_frames, height, width,
                                                        seed)
    T = bb.num_train_timesteps

    def model(z, sigma):
        return net(z.to(dtype), sigma_to_timestep(sigma, T).to(z.device), cond, w, e).float()

    sigmas = flow_lcm_sigmas(steps, flow_grid(num_ddim_timesteps, bb.flow_shift, T))
    z0 = flow_consistency_sample(model, shape, sigmas, generator=g, device=dev, sigma_data=sigma_data,
                                 timestep_scaling=timestep_scaling, num_train_timesteps=T, noise=noise)
    return bb.decode_latents(z0) if decode else z0


@torch.no_grad()
def sample_teacher_flow(bb, prompts, steps=50, guidance=7.5, num_frames=81, height=480, width=832, seed=0,
                        guidance_form="lcm", decode=True):
    """Videos from a flow teacher: Euler on the shifted grid (diffusers' FlowMatchEulerDiscreteScheduler)
    with classifier-free guidance on the velocity (two passes per step)."""
    dev = bb.device
    cond = bb.encode_text(list(prompts))
    b = cond.shape[0]
    uncond = bb.null_cond(b)
    shape = (b, *bb.latent_shape(num_frames, height, width))
    g = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(shape, generator=g).to(dev)
    dtype = next(bb.teacher.parameters()).dtype
    T = bb.num_train_timesteps

    def velocity(z, sigma):
        t = sigma_to_timestep(sigma, T).to(z.device)
        v = bb.teacher(torch.cat([z, z]).to(dtype), torch.cat([t, t]), torch.cat([cond, uncond])).float()
        v_c, v_u = v.chunk(2)
        return apply_cfg(v_c, v_u, guidance, guidance_form)

    z0 = flow_euler_sample(velocity, z, flow_sampling_sigmas(steps, bb.flow_shift, T))
    return bb.decode_latents(z0) if decode else z0


__all__ = ["FlowConsistencyDistillation", "sample_student_flow", "sample_teacher_flow"]
