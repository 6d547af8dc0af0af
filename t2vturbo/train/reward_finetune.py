"""VADER mode (``objective=reward_finetune``): fine-tune by backpropagating rewards through sampling.

One step, for the micro-batch's prompts (the data's captions; the clips themselves are unused):

1. per sample (keyed by its global position, like every draw in the trainer): the initial noise
   z_T, the re-noising noise of the sampler, and w ~ U[w_min, w_max];
2. sample K = ``sample_steps`` steps with the model being trained:

   * ``finetune: student`` -- the multistep consistency sampler of a distilled student
     (:func:`t2vturbo.diffusion.consistency_sample`, w and eta as embeddings; eta = 0);
   * ``finetune: teacher`` -- DDIM with classifier-free guidance (cond and uncond in one batch);

   the first K - K_grad steps run under ``torch.no_grad()``, the last K_grad = ``grad_steps``
   (null: all K) with autograd: truncated backpropagation through the chain (VADER). With a
   4-step student the whole chain fits (K_grad = K = 4);
3. loss = - sum_i beta_i mean_b R_i(decode(x0), prompts), through :class:`RewardTerm` (frame
   selection, decoding of only the frames a reward needs under activation checkpointing,
   ``use_reward`` flags, image / video rewards on different ranks), logged as ``reward/NAME``.

LoRA on the fine-tuned network is the default (``conf/objective/reward_finetune.yaml`` turns on
``model.lora``); the export merges it. A student starts from ``objective.init_from`` (a student
export folder) or, when null, from the teacher's weights (``make_student()``).
"""

from __future__ import annotations

import torch

from ..diffusion import (
    Parameterisation,
    apply_cfg,
    ddim_sampling_timesteps,
    lcm_sampling_timesteps,
    multistep_consistency_sample,
    ode_sample,
)
from .draws import sample_generator

__all__ = ["RewardFinetune"]


class RewardFinetune:
    trains_student = True  # the builder sets it from objective.finetune
    ema = None

    def __init__(self, cfg, backbone, seed: int, latent_shape):
        self.cfg = cfg
        self.latent_shape = tuple(latent_shape)  # (C, F, h, w) of the sampled latents
        self.bb = backbone
        self.param = Parameterisation.of(backbone)
        self.seed = int(seed)
        self.reward_term = None  # RewardTerm, set by the builder (required)
        self.module = None
        k = int(cfg.sample_steps)  # 1 <= grad_steps <= sample_steps: checked by config.validate
        self.grad_last = None if cfg.grad_steps is None else int(cfg.grad_steps)
        if cfg.finetune == "student":
            self.timesteps = lcm_sampling_timesteps(k, cfg.num_ddim_timesteps, backbone.num_train_timesteps)
        else:
            self.timesteps = ddim_sampling_timesteps(k, backbone.num_train_timesteps)

    def draws(self, positions, latent_shape):
        """Per sample: initial noise, re-noising noise for each later step, and w."""
        z_T, renoise, w = [], [], []
        k = len(self.timesteps)
        for p in positions:
            gen = sample_generator(self.seed, p)
            w.append(self.cfg.w_min + (self.cfg.w_max - self.cfg.w_min) * torch.rand(1, generator=gen))
            z_T.append(torch.randn(latent_shape, generator=gen))
            renoise.append(torch.randn((max(k - 1, 1), *latent_shape), generator=gen))
        return torch.stack(z_T), torch.stack(renoise), torch.cat(w)

    def sample(self, net, cond, uncond, z_T, renoise, w):
        """x0 [B, C, F, h, w] sampled with ``net`` (autograd through the last ``grad_steps``)."""
        param, dev = self.param, cond.device
        dtype = next(net.parameters()).dtype
        z_T, renoise, w = z_T.to(dev), renoise.to(dev), w.to(dev)
        if self.cfg.finetune == "student":
            eta = torch.zeros_like(w)

            def model(z, t):
                return net(z.to(dtype), param.net_time(t), cond, w, eta).float()

            return multistep_consistency_sample(
                model,
                tuple(z_T.shape),
                self.timesteps,
                param,
                device=dev,
                sigma_data=self.cfg.sigma_data,
                timestep_scaling=self.cfg.timestep_scaling,
                noise=z_T,
                grad_last=self.grad_last,
                renoise=renoise,
            )

        def denoise(z, t):
            out = net(torch.cat([z, z]).to(dtype), torch.cat([t, t]), torch.cat([cond, uncond])).float()
            out_c, out_u = out.chunk(2)
            return param.x0_eps(apply_cfg(out_c, out_u, w, self.cfg.guidance_form), z, t)

        return ode_sample(denoise, z_T, self.timesteps.to(dev), param, grad_last=self.grad_last)

    def loss(self, net, batch):
        bb = self.bb
        prompts = batch["caption"]
        cond = bb.encode_text(prompts)
        uncond = bb.null_cond(len(prompts))
        z_T, renoise, w = self.draws(batch["positions"], self.latent_shape)
        x0 = self.sample(net, cond, uncond, z_T, renoise, w)
        r_loss, logs = self.reward_term(
            x0, batch.get("reward_caption") or prompts, batch["positions"], batch.get("use_reward")
        )
        return r_loss, {**logs, "w_mean": w.mean()}
