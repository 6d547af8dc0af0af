"""Noise schedules and prediction-type conversions (pure tensor math).

Notation follows DDPM/DDIM: ``alpha_bar[t] = prod_{s<=t} (1 - beta_s)``, a noisy latent is
``z_t = sqrt(alpha_bar_t) * x0 + sqrt(1 - alpha_bar_t) * eps``.  We write ``a_t = sqrt(alpha_bar_t)``
and ``s_t = sqrt(1 - alpha_bar_t)``.
"""

from __future__ import annotations

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def make_betas(
    schedule: str = "scaled_linear",
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
) -> torch.Tensor:
    """Per-step noise variances ``beta_t`` (float64) for the named schedule.

    ``linear``: betas evenly spaced in [beta_start, beta_end].
    ``scaled_linear`` (Stable Diffusion, VideoCrafter2, ModelScope): evenly spaced in sqrt(beta)
    and squared.
    """
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    if schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    raise ValueError(f"unknown beta schedule {schedule!r}; expected 'linear' or 'scaled_linear'")


def alphas_cumprod_from_betas(betas: torch.Tensor) -> torch.Tensor:
    """``alpha_bar_t = prod_{s<=t} (1 - beta_s)`` (same dtype as betas)."""
    return torch.cumprod(1.0 - betas, dim=0)


def make_alphas_cumprod(
    schedule: str = "scaled_linear",
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
) -> torch.Tensor:
    """``alpha_bar`` as float32 (the dtype the solvers index into)."""
    betas = make_betas(schedule, num_train_timesteps, beta_start, beta_end)
    return alphas_cumprod_from_betas(betas).float()


def _bcast(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample vector [B] (or scalar) to broadcast against ``like`` [B, ...]."""
    x = torch.as_tensor(x, device=like.device, dtype=like.dtype)
    if x.ndim == 0:
        return x
    return x.reshape(x.shape[0], *([1] * (like.ndim - 1)))


def alpha_sigma(alphas_cumprod: torch.Tensor, t: torch.Tensor, like: torch.Tensor):
    """``(a_t, s_t) = (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t))`` broadcast against ``like``."""
    t = torch.as_tensor(t, device=alphas_cumprod.device).long()
    ab = alphas_cumprod.to(like.device)[t.to(alphas_cumprod.device)].to(like.device)
    return _bcast(ab.sqrt(), like), _bcast((1 - ab).sqrt(), like)


def add_noise(alphas_cumprod, x0, noise, t):
    """Forward process ``z_t = a_t x0 + s_t eps``."""
    a, s = alpha_sigma(alphas_cumprod, t, x0)
    return a * x0 + s * noise


def to_x0_eps(model_output, z_t, t, alphas_cumprod, prediction_type: str):
    """Convert a model output to ``(x0_pred, eps_pred)``.

    - ``epsilon``:      x0 = (z - s*eps)/a
    - ``v_prediction``: v = a*eps - s*x0  =>  x0 = a*z - s*v,  eps = s*z + a*v
    - ``sample``:       eps = (z - a*x0)/s
    """
    a, s = alpha_sigma(alphas_cumprod, t, z_t)
    if prediction_type == "epsilon":
        eps = model_output
        x0 = (z_t - s * eps) / a
    elif prediction_type == "v_prediction":
        x0 = a * z_t - s * model_output
        eps = s * z_t + a * model_output
    elif prediction_type == "sample":
        x0 = model_output
        eps = (z_t - a * x0) / s
    else:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}")
    return x0, eps


def training_target(x0, noise, t, alphas_cumprod, prediction_type: str):
    """Regression target of plain diffusion training for the given prediction type."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        a, s = alpha_sigma(alphas_cumprod, t, x0)
        return a * noise - s * x0
    if prediction_type == "sample":
        return x0
    raise ValueError(f"unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}")
