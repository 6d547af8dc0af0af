"""The two samplers, written once over a :class:`~.parameterisation.Parameterisation`:

* :func:`ode_sample` -- the teacher's deterministic solver (DDIM for eps/v/x0 models, Euler for flow):
  at each time, ``(x0, eps) = denoise(z, t)`` and ``z <- a_{t'} x0 + s_{t'} eps``;
* :func:`multistep_consistency_sample` -- the student's multistep consistency sampler (LCM): at each
  time ``x0 = c_skip z + c_out x0_pred``, then re-noise to the next time with fresh noise.

The historical entry points keep their signatures and are these two functions with a fixed
parameterisation: :func:`consistency_sample` / :func:`flow_consistency_sample` and :func:`ddim_sample` /
:func:`flow_euler_sample`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .parameterisation import FLOW, Parameterisation
from .solvers import grad_window


def ode_sample(
    denoise: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    z: torch.Tensor,
    times,
    param: Parameterisation,
    grad_last: int | None = None,
) -> torch.Tensor:
    """Deterministic sampling over the descending ``times``; ``denoise(z, t [B]) -> (x0, eps)``.

    Each step maps to the next time with ``param.step``; the last one maps to the clean ``x0``.
    ``grad_last=K`` runs all but the last K steps under ``torch.no_grad()`` (truncated
    backpropagation, VADER); None leaves autograd as it is.
    """
    ts = torch.as_tensor(times).tolist()
    dtype = torch.float32 if param.is_flow else torch.long
    n = len(ts)
    for i in range(n):
        with grad_window(i, n, grad_last):
            tt = torch.full((z.shape[0],), ts[i], dtype=dtype, device=z.device)
            x0, eps = denoise(z, tt)
            z = param.step(x0, eps, torch.full_like(tt, ts[i + 1])) if i + 1 < len(ts) else x0
    return z


def multistep_consistency_sample(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape,
    times,
    param: Parameterisation,
    generator: torch.Generator | None = None,
    device="cpu",
    dtype=torch.float32,
    sigma_data: float = 0.5,
    timestep_scaling: float = 10.0,
    noise: torch.Tensor | None = None,
    grad_last: int | None = None,
    renoise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multistep consistency sampling: at each (descending) time t, ``x0 = f(z_t, t)`` by the boundary
    form, then ``z = a_{t'} x0 + s_{t'} eps`` with fresh noise at the next time; returns the last x0.

    ``model(z, t [B]) -> model output`` (solver time t: a long timestep, or sigma for flow; guidance
    enters the student as an embedding). ``grad_last=K``: all but the last K steps under no_grad.
    ``renoise`` [B, K-1, ...]: the re-noising noise of each step (instead of the generator's).
    """
    gen_dev = generator.device if generator is not None else torch.device(device)

    def randn(shp):  # drawn on the generator's device, then moved: same numbers on CPU and GPU
        return torch.randn(shp, generator=generator, device=gen_dev, dtype=dtype).to(device)

    z = noise.to(device, dtype) if noise is not None else randn(shape)
    ts = torch.as_tensor(times).tolist()
    tdtype = torch.float32 if param.is_flow else torch.long
    x0 = z
    for i, t in enumerate(ts):
        with grad_window(i, len(ts), grad_last):
            tt = torch.full((z.shape[0],), t, dtype=tdtype, device=z.device)
            x0_pred, _ = param.x0_eps(model(z, tt), z, tt)
            x0 = param.boundary(z, x0_pred, tt, sigma_data, timestep_scaling)
            if i + 1 < len(ts):
                eps = renoise[:, i].to(device, dtype) if renoise is not None else randn(x0.shape)
                z = param.step(x0, eps, torch.full_like(tt, ts[i + 1]))
    return x0


# ---- the historical entry points (fixed parameterisation) --------------------------------------------
def consistency_sample(
    model,
    shape,
    timesteps,
    alphas_cumprod,
    prediction_type: str,
    generator=None,
    device="cpu",
    dtype=torch.float32,
    sigma_data: float = 0.5,
    timestep_scaling: float = 10.0,
    noise=None,
    grad_last: int | None = None,
    renoise=None,
) -> torch.Tensor:
    """:func:`multistep_consistency_sample` of a DDPM-schedule model (``model(z_t, t) -> output`` of
    ``prediction_type``) over integer ``timesteps``."""
    param = Parameterisation(prediction_type, alphas_cumprod, len(alphas_cumprod))
    return multistep_consistency_sample(
        model,
        shape,
        timesteps,
        param,
        generator,
        device,
        dtype,
        sigma_data,
        timestep_scaling,
        noise,
        grad_last,
        renoise,
    )


def flow_consistency_sample(
    model,
    shape,
    sigmas,
    generator=None,
    device="cpu",
    dtype=torch.float32,
    sigma_data: float = 0.5,
    timestep_scaling: float = 10.0,
    num_train_timesteps: int = 1000,
    noise=None,
    grad_last: int | None = None,
    renoise=None,
) -> torch.Tensor:
    """:func:`multistep_consistency_sample` in the flow parameterisation (``model(z, sigma [B]) -> v``):
    ``x0 = c_skip z + c_out (z - sigma v)``, re-noised as ``(1 - sigma') x0 + sigma' eps``."""
    param = Parameterisation(FLOW, None, num_train_timesteps)
    return multistep_consistency_sample(
        model,
        shape,
        sigmas,
        param,
        generator,
        device,
        dtype,
        sigma_data,
        timestep_scaling,
        noise,
        grad_last,
        renoise,
    )


def ddim_sample(denoise, z_T, timesteps, alphas_cumprod, grad_last: int | None = None) -> torch.Tensor:
    """Plain DDIM sampling over descending ``timesteps`` (:func:`ode_sample`); ``denoise(z, t) -> (x0, eps)``;
    the last step maps to x0 directly."""
    return ode_sample(
        denoise, z_T, timesteps, Parameterisation("epsilon", alphas_cumprod, len(alphas_cumprod)), grad_last
    )


def flow_euler_sample(velocity, z, sigmas, grad_last: int | None = None) -> torch.Tensor:
    """Euler sampling of the flow ODE over descending ``sigmas`` with the terminal 0 included
    (:func:`~.flow.flow_sampling_sigmas`); ``velocity(z, sigma [B]) -> v``. Each step is
    ``z + (sigma' - sigma) v``, written as the DDIM step of the flow parameterisation (:func:`ode_sample`)."""
    param = Parameterisation(FLOW)
    sigmas = torch.as_tensor(sigmas)
    if float(sigmas[-1]) != 0.0:
        raise ValueError(f"flow_euler_sample: sigmas must end with the terminal 0, got {float(sigmas[-1])}")

    def denoise(z, s):
        return param.x0_eps(velocity(z, s), z, s)

    return ode_sample(denoise, z, sigmas[:-1], param, grad_last)
