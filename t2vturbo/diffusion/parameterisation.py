"""One view of every teacher parameterisation: the forward process as ``(a_t, s_t)`` and a model
output as ``(x0, eps)`` (k-diffusion's idea: wrap the model once, write every solver once).

Every family this project distils noises a clean latent the same way,

    z_t = a_t x0 + s_t eps,

with a time variable ``t`` and coefficients that depend on the family:

=================================  =========================  ==================  ===================
prediction type                    t (solver time)            a_t                 s_t
=================================  =========================  ==================  ===================
epsilon / v_prediction / sample    integer timestep in [0,T)  sqrt(alpha_bar_t)   sqrt(1-alpha_bar_t)
flow (rectified flow, Wan2.1)      sigma in [0, 1]            1 - sigma           sigma
=================================  =========================  ==================  ===================

A model output at ``(z_t, t)`` converts to ``(x0, eps)`` (:func:`~.schedules.to_x0_eps`,
:func:`~.flow.flow_x0_eps`), and then *one* formula is the deterministic solver step of every family:

    z_{t'} = a_{t'} x0 + s_{t'} eps                                    (DDIM, eta = 0)

For flow this is exactly the Euler step ``z + (sigma' - sigma) v`` (diffusion/flow.py). The consistency
boundary form uses the LCM scalings at the network's timestep (``t`` itself, or ``sigma T`` for flow), so
``f(z, t_min) = z`` for every family. The network's timestep input is ``t`` (long) or ``sigma T`` (float).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .consistency import boundary_form
from .flow import flow_grid, flow_x0_eps, sigma_to_timestep
from .schedules import PREDICTION_TYPES, _bcast, alpha_sigma, make_alphas_cumprod, to_x0_eps
from .solvers import ddim_grid, ddim_sampling_timesteps, sampling_points

FLOW = "flow"


class Parameterisation:
    """``(a_t, s_t)``, ``(x0, eps)``, grids and the network's time input of one teacher family.

    Args:
        prediction_type: ``epsilon`` | ``v_prediction`` | ``sample`` (DDPM schedules) or ``flow``.
        alphas_cumprod: [T] float32 (DDPM types only).
        num_train_timesteps: T.
        flow_shift: the resolution shift of a flow schedule (Wan2.1: 3.0 at 480p).
    """

    def __init__(
        self,
        prediction_type: str,
        alphas_cumprod: torch.Tensor | None = None,
        num_train_timesteps: int = 1000,
        flow_shift: float = 1.0,
    ):
        if prediction_type not in (*PREDICTION_TYPES, FLOW):
            raise ValueError(
                f"unknown prediction_type {prediction_type!r}; expected one of {(*PREDICTION_TYPES, FLOW)}"
            )
        if prediction_type != FLOW and alphas_cumprod is None:
            raise ValueError(f"prediction_type={prediction_type!r} needs alphas_cumprod")
        self.prediction_type = prediction_type
        self.alphas_cumprod = alphas_cumprod
        self.num_train_timesteps = int(num_train_timesteps)
        self.flow_shift = float(flow_shift)

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def of(cls, backbone) -> Parameterisation:
        """From anything with ``prediction_type``, ``num_train_timesteps`` and ``alphas_cumprod`` (DDPM)
        or ``flow_shift`` (flow): a backbone, or another Parameterisation."""
        pt = backbone.prediction_type
        if pt == FLOW:
            return cls(pt, None, int(backbone.num_train_timesteps), float(backbone.flow_shift))
        return cls(pt, backbone.alphas_cumprod.detach().float(), int(backbone.num_train_timesteps))

    @classmethod
    def from_scheduler_config(cls, sc: dict) -> Parameterisation:
        """From a diffusers ``scheduler_config.json`` dict (DDPM schedules; no weights are read)."""
        t = int(sc.get("num_train_timesteps", 1000))
        ac = make_alphas_cumprod(
            sc.get("beta_schedule", "scaled_linear"),
            t,
            sc.get("beta_start", 0.00085),
            sc.get("beta_end", 0.012),
        )
        return cls(sc.get("prediction_type", "epsilon"), ac, t)

    @classmethod
    def from_model_dir(cls, path) -> Parameterisation:
        """From ``path/scheduler/scheduler_config.json`` of a diffusers-layout teacher folder."""
        return cls.from_scheduler_config(
            json.loads((Path(path) / "scheduler" / "scheduler_config.json").read_text())
        )

    def to(self, device) -> Parameterisation:
        ac = None if self.alphas_cumprod is None else self.alphas_cumprod.to(device)
        return Parameterisation(self.prediction_type, ac, self.num_train_timesteps, self.flow_shift)

    @property
    def is_flow(self) -> bool:
        return self.prediction_type == FLOW

    # ---- time -----------------------------------------------------------------------------------
    def grid(self, num_points: int) -> torch.Tensor:
        """The ``num_points`` ascending solver times: ``t_i = (i+1) T/N - 1`` (long), or diffusers'
        shifted flow sigmas (float32)."""
        if self.is_flow:
            return flow_grid(num_points, self.flow_shift, self.num_train_timesteps)
        return ddim_grid(num_points, self.num_train_timesteps)

    def consistency_times(self, num_steps: int, num_points: int) -> torch.Tensor:
        """The multistep consistency sampler's times: ``num_steps`` points evenly spaced on the
        ``num_points``-point solver grid from its top (N = 200, S = 4: 999, 749, 499, 249)."""
        return sampling_points(num_steps, self.grid(num_points))

    def teacher_times(self, num_steps: int) -> torch.Tensor:
        """Descending times of the teacher's ``num_steps``-step ODE sampler (the clean end excluded):
        diffusers' DDIM ``leading`` spacing + offset 1 (50 -> 981, 961, ..., 1), or the shifted sigmas of
        ``FlowMatchEulerDiscreteScheduler.set_timesteps(num_steps)``."""
        if self.is_flow:
            return flow_grid(num_steps, self.flow_shift, self.num_train_timesteps).flip(0)
        return ddim_sampling_timesteps(num_steps, self.num_train_timesteps)

    def net_time(self, t: torch.Tensor) -> torch.Tensor:
        """The network's timestep input at solver time ``t`` (``t``, or ``sigma T`` for flow)."""
        return sigma_to_timestep(t, self.num_train_timesteps) if self.is_flow else t

    # ---- the forward process and the model output ---------------------------------------------------
    def alpha_sigma(self, t, like: torch.Tensor):
        """``(a_t, s_t)`` broadcast against ``like`` [B, ...]."""
        if self.is_flow:
            s = _bcast(t, like)
            return 1 - s, s
        return alpha_sigma(self.alphas_cumprod, t, like)

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
        """``z_t = a_t x0 + s_t eps``."""
        a, s = self.alpha_sigma(t, x0)
        return a * x0 + s * eps

    def x0_eps(self, model_output: torch.Tensor, z_t: torch.Tensor, t):
        """``(x0, eps)`` of a model output at ``(z_t, t)``."""
        if self.is_flow:
            return flow_x0_eps(model_output, z_t, t)
        return to_x0_eps(model_output, z_t, t, self.alphas_cumprod, self.prediction_type)

    def step(self, x0: torch.Tensor, eps: torch.Tensor, t_to) -> torch.Tensor:
        """The deterministic solver step to ``t_to``: ``a_{t'} x0 + s_{t'} eps`` (DDIM; Euler for flow).
        The same map is DDIM inversion when ``t_to`` is noisier."""
        return self.add_noise(x0, eps, t_to)

    def boundary(
        self, z_t: torch.Tensor, x0: torch.Tensor, t, sigma_data: float = 0.5, timestep_scaling: float = 10.0
    ) -> torch.Tensor:
        """The consistency boundary form ``c_skip z + c_out x0`` with the LCM scalings at the network's
        timestep of ``t``."""
        return boundary_form(z_t, x0, self.net_time(t), sigma_data, timestep_scaling)
