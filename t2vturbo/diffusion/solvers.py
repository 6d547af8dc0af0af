"""DDIM on an N-point grid: the teacher's ODE solver, its inversion, and plain DDIM sampling.

Grid (T = num_train_timesteps): ``t_i = (i + 1) * (T // N) - 1`` for i = 0..N-1,
e.g. N = 200 -> 4, 9, ..., 999.  One solver step goes from ``t_{n+k}`` to ``t_n`` (k grid points);
the end point ``t_{-1}`` is taken as timestep 0 (as diffusers' LCM distillation scripts do).

DDIM (eta = 0) step from s to t:  ``z_t = a_t * x0 + s_t * eps`` with (x0, eps) predicted at s.
Inversion is the same map from a *less* noisy t to a noisier s.
"""

from __future__ import annotations

import contextlib

import torch

from .schedules import alpha_sigma


def ddim_grid(num_ddim_timesteps: int, num_train_timesteps: int = 1000) -> torch.Tensor:
    """The N grid timesteps ``t_i = (i+1)*(T//N) - 1`` (ascending, int64)."""
    if num_train_timesteps % num_ddim_timesteps:
        raise ValueError(
            f"num_ddim_timesteps={num_ddim_timesteps} must divide num_train_timesteps={num_train_timesteps}"
        )
    step = num_train_timesteps // num_ddim_timesteps
    return (torch.arange(1, num_ddim_timesteps + 1, dtype=torch.long) * step) - 1


def sampling_points(num_steps: int, grid: torch.Tensor) -> torch.Tensor:
    """``num_steps`` points of an ascending N-point solver ``grid``, evenly spaced from its top (descending):
    indices ``N - 1 - i * (N // S)`` (N = 200, S = 4 -> 199, 149, 99, 49; on the DDIM grid 999, 749, 499, 249)."""
    n = len(grid)
    if not 1 <= num_steps <= n:
        raise ValueError(f"steps must be in [1, {n}], got {num_steps}")
    return grid[n - 1 - torch.arange(num_steps) * (n // num_steps)]


def solver_pair(index: torch.Tensor, grid: torch.Tensor, skip: int = 1):
    """Start and end timesteps of one solver step for grid indices ``index`` in [0, N).

    start = grid[index]; end = grid[index - skip], or 0 when ``index - skip < 0``.
    """
    index = torch.as_tensor(index, dtype=torch.long)
    start = grid[index]
    prev = index - skip
    end = torch.where(prev >= 0, grid[prev.clamp(min=0)], torch.zeros_like(start))
    return start, end


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, t_to, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM update: ``z_{t_to} = a_{t_to} x0 + s_{t_to} eps``.

    Given (x0, eps) predicted at the current timestep, this is both the denoising step (t_to less
    noisy) and the inversion step (t_to noisier).
    """
    a, s = alpha_sigma(alphas_cumprod, t_to, x0)
    return a * x0 + s * eps


def ddim_inversion_step(z_t, eps, t_from, t_to, alphas_cumprod):
    """One DDIM inversion step from ``t_from`` to a noisier ``t_to`` using the eps predicted at
    ``t_from``: x0 = (z - s_from eps)/a_from, then z_to = a_to x0 + s_to eps."""
    a, s = alpha_sigma(alphas_cumprod, t_from, z_t)
    x0 = (z_t - s * eps) / a
    return ddim_step(x0, eps, t_to, alphas_cumprod)


def grad_window(i: int, n: int, grad_last: int | None):
    """no_grad for step ``i`` of ``n`` unless it is one of the last ``grad_last`` (None: unchanged)."""
    if grad_last is None or i >= n - int(grad_last):
        return contextlib.nullcontext()
    return torch.no_grad()


def ddim_sampling_timesteps(num_steps: int, num_train_timesteps: int = 1000) -> torch.Tensor:
    """Descending DDIM sampling timesteps, ``leading`` spacing + steps_offset 1 as in SD/ModelScope
    (50 steps -> 981, 961, ..., 1)."""
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"steps must be in [1, {num_train_timesteps}], got {num_steps}")
    step = num_train_timesteps // num_steps
    return torch.arange(num_steps - 1, -1, -1, dtype=torch.long) * step + 1
