"""Pure diffusion math: schedules, the parameterisation adapter, the DDIM/Euler solver, consistency
parameterisation, samplers."""

from .consistency import (
    apply_cfg,
    boundary_form,
    consistency_loss,
    l2_loss,
    lcm_sampling_timesteps,
    pseudo_huber_loss,
    scalar_embedding,
    scalings_for_boundary_conditions,
)
from .parameterisation import Parameterisation
from .samplers import consistency_sample, ddim_sample, multistep_consistency_sample, ode_sample
from .schedules import (
    PREDICTION_TYPES,
    add_noise,
    alpha_sigma,
    make_alphas_cumprod,
    make_betas,
    to_x0_eps,
    training_target,
)
from .solvers import (
    ddim_grid,
    ddim_inversion_step,
    ddim_sampling_timesteps,
    ddim_step,
    sampling_points,
    solver_pair,
)

__all__ = [
    "PREDICTION_TYPES",
    "Parameterisation",
    "add_noise",
    "alpha_sigma",
    "apply_cfg",
    "boundary_form",
    "consistency_loss",
    "consistency_sample",
    "ddim_grid",
    "ddim_inversion_step",
    "ddim_sample",
    "ddim_sampling_timesteps",
    "ddim_step",
    "l2_loss",
    "lcm_sampling_timesteps",
    "make_alphas_cumprod",
    "make_betas",
    "multistep_consistency_sample",
    "ode_sample",
    "pseudo_huber_loss",
    "sampling_points",
    "scalar_embedding",
    "scalings_for_boundary_conditions",
    "solver_pair",
    "to_x0_eps",
    "training_target",
]
