"""Consistency-model parameterisation, losses, CFG, scalar embeddings and the multistep sampler.

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
from collections.abc import Callable

import torch

from .schedules import alpha_sigma, to_x0_eps
from .solvers import grad_window


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
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=value.device) * (-math.log(10000.0) / (half - 1)))
    args = value[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def lcm_sampling_timesteps(num_steps: int, num_ddim_timesteps: int = 200, num_train_timesteps: int = 1000):
    """Multistep consistency timesteps: evenly spaced on the N-grid, starting from the last
    grid point (N=200, S=4 -> 999, 749, 499, 249)."""
    if not 1 <= num_steps <= num_ddim_timesteps:
        raise ValueError(f"steps must be in [1, {num_ddim_timesteps}], got {num_steps}")
    if num_train_timesteps % num_ddim_timesteps:
        raise ValueError(f"num_ddim_timesteps={num_ddim_timesteps} must divide num_train_timesteps={num_train_timesteps}")
    step = num_train_timesteps // num_ddim_timesteps
    grid = torch.arange(1, num_ddim_timesteps + 1, dtype=torch.long) * step - 1  # ascending
    stride = num_ddim_timesteps // num_steps
    idx = num_ddim_timesteps - 1 - torch.arange(num_steps) * stride
    return grid[idx]


def consistency_sample(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    prediction_type: str,
    generator: torch.Generator | None = None,
    device="cpu",
    dtype=torch.float32,
    sigma_data: float = 0.5,
    timestep_scaling: float = 10.0,
    noise: torch.Tensor | None = None,
    grad_last: int | None = None,
    renoise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multistep consistency sampling (LCM): at each t, x0 = f(z_t, t) by the boundary form,
    then re-noise to the next timestep with fresh noise; returns the final x0.

    ``model(z_t, t) -> model output`` of ``prediction_type`` (guidance enters as an embedding).
    ``grad_last=K`` runs all but the last K steps under ``torch.no_grad()`` (truncated
    backpropagation through the sampling chain, VADER); None leaves autograd as it is.
    ``renoise`` [B, K-1, ...]: the re-noising noise of each step (instead of the generator's).
    """
    gen_dev = generator.device if generator is not None else torch.device(device)

    def randn(shp):  # drawn on the generator's device, then moved: same numbers on CPU and GPU
        return torch.randn(shp, generator=generator, device=gen_dev, dtype=dtype).to(device)

    z = noise.to(device, dtype) if noise is not None else randn(shape)
    ts = [int(t) for t in timesteps]
    x0 = z
    for i, t in enumerate(ts):
        with grad_window(i, len(ts), grad_last):
            tt = torch.full((z.shape[0],), t, dtype=torch.long, device=z.device)
            out = model(z, tt)
            x0_pred, _ = to_x0_eps(out, z, tt, alphas_cumprod, prediction_type)
            x0 = boundary_form(z, x0_pred, tt, sigma_data, timestep_scaling)
            if i + 1 < len(ts):
                nxt = torch.full_like(tt, ts[i + 1])
                a, s = alpha_sigma(alphas_cumprod, nxt, x0)
                eps = renoise[:, i].to(device, dtype) if renoise is not None else randn(x0.shape)
                z = a * x0 + s * eps
    return x0
