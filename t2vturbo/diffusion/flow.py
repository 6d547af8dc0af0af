"""Flow-matching math (rectified flow, Wan2.1 / SD3 convention): pure tensor functions.

Forward process (sigma in [0, 1], sigma = 1 is pure noise):
    z_sigma = (1 - sigma) x0 + sigma eps
The denoiser predicts the velocity of this path, dz/dsigma:
    v = eps - x0                     (diffusers: FlowMatchEulerDiscreteScheduler.step adds (sigma_next - sigma) v,
                                      its stochastic branch reads x0 = z - sigma v; Wan trains on this target)
so at any (z, sigma):   x0 = z - sigma v,   eps = z + (1 - sigma) v.
The network's timestep input is t = sigma * T (T = num_train_timesteps = 1000), a float.

Shifted schedule (resolution shift, Wan / SD3):  sigma = shift(s) = k s / (1 + (k - 1) s), k = shift.

Grid (diffusers' ``FlowMatchEulerDiscreteScheduler.set_timesteps(N)``, reproduced exactly): the unshifted
points are N evenly spaced values from 1 down to the scheduler's smallest *training* sigma shift(1/T), and
each is shifted, i.e. sigma_i = shift(u_i), u = linspace(shift(1/T), 1, N). (The lowest point is thereby
shift(shift(1/T)) - diffusers' behaviour, kept so our Euler sampler equals diffusers' Euler sampler.)
The same function gives the distillation grid (N = 200 points, ascending) and the teacher's sampling grid.

One solver step of the (CFG-guided) teacher is an Euler step of the ODE dz/dsigma = v:
    z_{sigma_to} = z + (sigma_to - sigma_from) v
which is exactly the DDIM step of this parameterisation, (1 - sigma_to) x0 + sigma_to eps with the
(x0, eps) read off v at sigma_from; with the exact v = eps - x0 it lands on the interpolant at sigma_to.

Classifier-free guidance acts on the velocity in the same form as on eps models (``apply_cfg``): the LCM
form v_hat = v_c + w (v_c - v_u) (configs), equal to the Imagen / diffusers-pipeline form
v_u + w' (v_c - v_u) with w' = w + 1. Because x0 and eps are affine in v with unit weight on z, guiding v
is identical to guiding x0 and eps (what ``t2vturbo.train.teacher.augmented_teacher_step`` does) in the same form.

Consistency boundary form in sigma: the LCM scalings of ``consistency.py`` at the timestep t = sigma T,
    c_skip(sigma) = sigma_d^2 / ((s T sigma)^2 + sigma_d^2),  c_out(sigma) = s T sigma / sqrt((s T sigma)^2 + sigma_d^2)
    f(z, sigma)   = c_skip(sigma) z + c_out(sigma) (z - sigma v(z, sigma))
(sigma_d = 0.5, s = 10), so f(z, 0) = z exactly and the student's scalings at a given network timestep
are the same numbers as for the eps-model students.
"""

from __future__ import annotations

import torch

from .consistency import scalings_for_boundary_conditions
from .schedules import _bcast
from .solvers import sampling_points


def time_shift(s, shift: float):
    """``shift * s / (1 + (shift - 1) * s)`` (tensor or number): maps [0, 1] onto [0, 1], 0 -> 0, 1 -> 1."""
    return shift * s / (1 + (shift - 1) * s)


def flow_grid(num_points: int, shift: float = 1.0, num_train_timesteps: int = 1000) -> torch.Tensor:
    """The ``num_points`` shifted sigmas of diffusers' FlowMatchEulerDiscreteScheduler (ascending, float32):
    ``sigma_i = shift(u_i)``, ``u = linspace(shift(1 / T), 1, N)``. Computed in float64."""
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    u_min = time_shift(1.0 / num_train_timesteps, float(shift))  # the scheduler's smallest training sigma
    u = torch.linspace(1.0, u_min, num_points, dtype=torch.float64).flip(0)
    return time_shift(u, float(shift)).float()


def sigma_to_timestep(sigma, num_train_timesteps: int = 1000) -> torch.Tensor:
    """The network's timestep input ``t = sigma * T`` (float32)."""
    return torch.as_tensor(sigma, dtype=torch.float32) * num_train_timesteps


def flow_sampling_sigmas(num_steps: int, shift: float = 1.0, num_train_timesteps: int = 1000) -> torch.Tensor:
    """Descending sigmas of an ``num_steps``-step Euler sampler with the terminal 0 appended (``N + 1``
    values), as ``FlowMatchEulerDiscreteScheduler.set_timesteps(N).sigmas``."""
    grid = flow_grid(num_steps, shift, num_train_timesteps).flip(0)
    return torch.cat([grid, torch.zeros(1)])


def flow_lcm_sigmas(num_steps: int, grid: torch.Tensor) -> torch.Tensor:
    """Multistep consistency sigmas: ``num_steps`` points evenly spaced on the ascending ``grid`` (N points),
    starting from its top (N = 200, S = 4 -> grid indices 199, 149, 99, 49), like ``lcm_sampling_timesteps``."""
    return sampling_points(num_steps, grid)


def add_noise_flow(x0: torch.Tensor, eps: torch.Tensor, sigma) -> torch.Tensor:
    """Forward process ``z_sigma = (1 - sigma) x0 + sigma eps`` (sigma: number or per-sample [B])."""
    s = _bcast(sigma, x0)
    return (1 - s) * x0 + s * eps


def flow_velocity(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Regression target of flow-matching training, ``v = eps - x0``."""
    return eps - x0


def flow_x0_eps(v: torch.Tensor, z: torch.Tensor, sigma):
    """``(x0, eps) = (z - sigma v, z + (1 - sigma) v)`` from a velocity at ``(z, sigma)``."""
    s = _bcast(sigma, z)
    return z - s * v, z + (1 - s) * v


def flow_euler_step(z: torch.Tensor, v: torch.Tensor, sigma_from, sigma_to) -> torch.Tensor:
    """One Euler step of ``dz/dsigma = v``: ``z + (sigma_to - sigma_from) v`` (= the DDIM step)."""
    return z + (_bcast(sigma_to, z) - _bcast(sigma_from, z)) * v


def flow_boundary_scalings(
    sigma, sigma_data: float = 0.5, timestep_scaling: float = 10.0, num_train_timesteps: int = 1000
):
    """``(c_skip, c_out)`` at ``sigma`` (the LCM scalings at the timestep ``t = sigma T``), float32."""
    return scalings_for_boundary_conditions(
        sigma_to_timestep(sigma, num_train_timesteps), sigma_data, timestep_scaling
    )


def flow_boundary_form(
    z: torch.Tensor,
    x0_pred: torch.Tensor,
    sigma,
    sigma_data: float = 0.5,
    timestep_scaling: float = 10.0,
    num_train_timesteps: int = 1000,
) -> torch.Tensor:
    """``f = c_skip(sigma) z + c_out(sigma) x0_pred`` broadcast over [B, ...]; ``f(z, 0) = z``."""
    c_skip, c_out = flow_boundary_scalings(sigma, sigma_data, timestep_scaling, num_train_timesteps)
    return _bcast(c_skip, z) * z + _bcast(c_out, z) * x0_pred
