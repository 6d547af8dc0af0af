"""Consistency-model parameterisation, losses, CFG, scalar embeddings and the sampling timesteps
(the multistep sampler itself is :func:`t2vturbo.diffusion.samplers.multistep_consistency_sample`).

Boundary form (LCM, diffusers LCMScheduler with timestep_scaling s = 10, sigma_data = 0.5):
    c_skip(t) = sigma_d^2 / ((s t)^2 + sigma_d^2),   c_out(t) = s t / sqrt((s t)^2 + sigma_d^2)
    f(z_t, t) = c_skip(t) z_t + c_out(t) x0_pred(z_t, t)
so f(z, 0) = z exactly (c_skip(0) = 1, c_out(0) = 0).

Classifier-free guidance (configs use the LCM form):
    x_hat = cond + w (cond - uncond)
which is the Imagen/"uncond + w' (cond - uncond)" form with w' = w + 1.  At w = 0 it is the
conditional prediction; ``guidance_form="imagen"`` selects the other convention.
"""

from __future__ import annotations

import math

import torch

from .solvers import ddim_grid, sampling_points


def scalings_for_boundary_conditions(t, sigma_data: float = 0.5, timestep_scaling: float = 10.0):
    """``(c_skip, c_out)`` at integer timesteps ``t`` (tensor or number), float32."""
    t = torch.as_tensor(t, dtype=torch.float32) * timestep_scaling
    c_skip = sigma_data**2 / (t**2 + sigma_data**2)
    c_out = t / (t**2 + sigma_data**2) ** 0.5
    return c_skip, c_out


def boundary_form(z_t, x0_pred, t, sigma_data: float = 0.5, timestep_scaling: float = 10.0):
    """``f = c_skip(t) z_t + c_out(t) x0_pred`` broadcast over [B, ...]."""
    c_skip, c_out = scalings_for_boundary_conditions(t, sigma_data, timestep_scaling)
    shape = (-1,) + (1,) * (z_t.ndim - 1)
    c_skip = c_skip.to(z_t.device, z_t.dtype).reshape(shape)
    c_out = c_out.to(z_t.device, z_t.dtype).reshape(shape)
    return c_skip * z_t + c_out * x0_pred


def pseudo_huber_loss(a: torch.Tensor, b: torch.Tensor, c: float = 0.001) -> torch.Tensor:
    """``mean(sqrt((a - b)^2 + c^2) - c)`` computed in fp32 (elementwise, as the reference)."""
    d = a.float() - b.float()
    return (torch.sqrt(d * d + c * c) - c).mean()


def l2_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``mean((a - b)^2)`` in fp32."""
    return torch.mean((a.float() - b.float()) ** 2)


def consistency_loss(a, b, kind: str = "huber", huber_c: float = 0.001):
    if kind == "huber":
        return pseudo_huber_loss(a, b, huber_c)
    if kind == "l2":
        return l2_loss(a, b)
    raise ValueError(f"unknown loss kind {kind!r}; expected 'huber' or 'l2'")


def apply_cfg(cond: torch.Tensor, uncond: torch.Tensor, w, form: str = "lcm") -> torch.Tensor:
    """Classifier-free guidance. ``lcm``: cond + w (cond - uncond); ``imagen``: uncond + w (cond - uncond)."""
    w = torch.as_tensor(w, dtype=cond.dtype, device=cond.device)
    if w.ndim == 1:
        w = w.reshape(-1, *([1] * (cond.ndim - 1)))
    if form == "lcm":
        return cond + w * (cond - uncond)
    if form == "imagen":
        return uncond + w * (cond - uncond)
    raise ValueError(f"unknown guidance form {form!r}; expected 'lcm' or 'imagen'")


def scalar_embedding(value: torch.Tensor, dim: int = 256, scale: float = 1000.0) -> torch.Tensor:
    """Sinusoidal embedding of a per-sample scalar (guidance w or motion strength eta).

    ``x = value * scale``; ``freq_j = exp(-log(10000) j / (dim/2 - 1))`` for j < dim/2;
    ``emb = [sin(x freq), cos(x freq)]`` (zero-padded if dim is odd).  Same as diffusers'
    ``get_guidance_scale_embedding``.
    """
    value = torch.as_tensor(value, dtype=torch.float32).reshape(-1) * scale
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, dtype=torch.float32, device=value.device) * (-math.log(10000.0) / (half - 1))
    )
    args = value[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def lcm_sampling_timesteps(num_steps: int, num_ddim_timesteps: int = 200, num_train_timesteps: int = 1000):
    """Multistep consistency timesteps: evenly spaced on the N-grid, starting from the last
    grid point (N=200, S=4 -> 999, 749, 499, 249)."""
    return sampling_points(num_steps, ddim_grid(num_ddim_timesteps, num_train_timesteps))
