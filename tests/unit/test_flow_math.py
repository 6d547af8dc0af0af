"""Unit tests for ``t2vturbo.diffusion.flow`` (flow-matching schedule, Euler solver, CFG, boundary form,
samplers).

Every formula is checked against an independent computation: diffusers' FlowMatchEulerDiscreteScheduler
(its sigmas, timesteps, ``scale_noise`` and ``step``) where it has one, numpy float64 closed forms or the
exact (x0, eps) of a constructed interpolant otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from t2vturbo.diffusion import apply_cfg, lcm_sampling_timesteps, solver_pair
from t2vturbo.diffusion.flow import (
    add_noise_flow,
    flow_boundary_form,
    flow_boundary_scalings,
    flow_euler_step,
    flow_grid,
    flow_lcm_sigmas,
    flow_sampling_sigmas,
    flow_velocity,
    flow_x0_eps,
    sigma_to_timestep,
    time_shift,
)
from t2vturbo.diffusion.samplers import flow_consistency_sample, flow_euler_sample

SHAPE = (2, 4, 3, 4, 4)


def _pair(seed=0, shape=SHAPE):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(
        shape, generator=g, dtype=torch.float64
    )


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0, 8.0])
@pytest.mark.parametrize("n", [1, 4, 50, 200])
def test_grid_equals_flow_match_euler_scheduler(shift, n):
    sch = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    sch.set_timesteps(n)
    ours = flow_sampling_sigmas(n, shift, 1000)
    assert ours.shape == sch.sigmas.shape == (n + 1,)
    torch.testing.assert_close(ours, sch.sigmas.float(), atol=2e-6, rtol=0)
    grid = flow_grid(n, shift, 1000)
    assert torch.all(grid[1:] > grid[:-1])  # ascending
    torch.testing.assert_close(grid.flip(0), sch.sigmas[:-1].float(), atol=2e-6, rtol=0)
    torch.testing.assert_close(sigma_to_timestep(grid.flip(0)), sch.timesteps.float(), atol=2e-3, rtol=0)


def test_time_shift_closed_form_and_training_sigmas():
    s = np.linspace(0, 1, 11)
    np.testing.assert_allclose(time_shift(s, 3.0), 3 * s / (1 + 2 * s))
    assert time_shift(0.0, 3.0) == 0.0 and time_shift(1.0, 3.0) == 1.0
    sch = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)  # training sigmas (descending)
    u = torch.arange(1000, 0, -1, dtype=torch.float64) / 1000
    torch.testing.assert_close(time_shift(u, 3.0).float(), sch.sigmas.float(), atol=1e-6, rtol=0)


def test_add_noise_equals_scheduler_scale_noise():
    x0, eps = _pair(1)
    x0, eps = x0.float(), eps.float()
    sch = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    sch.set_timesteps(20)
    for i in (0, 7, 19):
        t = sch.timesteps[i].reshape(1).repeat(x0.shape[0])
        ref = sch.scale_noise(x0, t, eps)
        torch.testing.assert_close(add_noise_flow(x0, eps, sch.sigmas[i]), ref, atol=1e-6, rtol=0)
    s = torch.tensor([0.2, 0.9])
    ref = (1 - s.view(-1, 1, 1, 1, 1)) * x0 + s.view(-1, 1, 1, 1, 1) * eps
    torch.testing.assert_close(add_noise_flow(x0, eps, s), ref)


def test_x0_eps_from_exact_velocity():
    x0, eps = _pair(2)
    s = torch.tensor([0.05, 0.8], dtype=torch.float64)
    z = add_noise_flow(x0, eps, s)
    v = flow_velocity(x0, eps)
    assert torch.equal(v, eps - x0)
    x0_r, eps_r = flow_x0_eps(v, z, s)
    torch.testing.assert_close(x0_r, x0, atol=1e-12, rtol=0)
    torch.testing.assert_close(eps_r, eps, atol=1e-12, rtol=0)


@pytest.mark.parametrize("s_from,s_to", [(0.9, 0.6), (0.3, 0.0), (1.0, 0.99), (0.2, 0.7)])
def test_euler_step_with_exact_velocity_lands_on_the_interpolant(s_from, s_to):
    """The flow path is straight: Euler with v = eps - x0 is exact for any step (both directions)."""
    x0, eps = _pair(3)
    z = add_noise_flow(x0, eps, s_from)
    z_to = flow_euler_step(z, flow_velocity(x0, eps), s_from, s_to)
    torch.testing.assert_close(z_to, (1 - s_to) * x0 + s_to * eps, atol=1e-12, rtol=0)


def test_euler_step_equals_ddim_step_of_flow_parameterisation():
    """z + (s_to - s) v == (1 - s_to) x0_hat + s_to eps_hat with (x0_hat, eps_hat) read off any v."""
    z, v = _pair(4)
    s, s_to = torch.tensor([0.7, 0.4], dtype=torch.float64), torch.tensor([0.5, 0.0], dtype=torch.float64)
    x0_h, eps_h = flow_x0_eps(v, z, s)
    ref = (1 - s_to.view(-1, 1, 1, 1, 1)) * x0_h + s_to.view(-1, 1, 1, 1, 1) * eps_h
    torch.testing.assert_close(flow_euler_step(z, v, s, s_to), ref, atol=1e-12, rtol=0)


def test_euler_step_equals_scheduler_step():
    z, v = (t.float() for t in _pair(5))
    sch = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    sch.set_timesteps(10)
    ref = z
    ours = z
    for i, t in enumerate(sch.timesteps):
        ref = sch.step(v, t, ref, return_dict=False)[0]
        ours = flow_euler_step(ours, v, sch.sigmas[i], sch.sigmas[i + 1])
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("form", ["lcm", "imagen"])
def test_cfg_on_velocity_equals_cfg_on_x0_and_eps(form):
    """Guiding v is guiding (x0, eps) in the same form: x0 and eps are affine in v with unit weight on z."""
    z, v_c = _pair(6)
    v_u, _ = _pair(7)
    s = torch.tensor([0.3, 0.95], dtype=torch.float64)
    w = torch.tensor([5.0, 12.0], dtype=torch.float64)
    v_hat = apply_cfg(v_c, v_u, w, form)
    x0_h, eps_h = flow_x0_eps(v_hat, z, s)
    (x0_c, eps_c), (x0_u, eps_u) = flow_x0_eps(v_c, z, s), flow_x0_eps(v_u, z, s)
    torch.testing.assert_close(x0_h, apply_cfg(x0_c, x0_u, w, form), atol=1e-10, rtol=0)
    torch.testing.assert_close(eps_h, apply_cfg(eps_c, eps_u, w, form), atol=1e-10, rtol=0)
    wb = w.view(-1, 1, 1, 1, 1)
    ref = v_c + wb * (v_c - v_u) if form == "lcm" else v_u + wb * (v_c - v_u)
    torch.testing.assert_close(v_hat, ref)
    if form == "lcm":  # the pipeline's guidance_scale g = w + 1
        torch.testing.assert_close(v_hat, apply_cfg(v_c, v_u, w + 1, "imagen"), atol=1e-12, rtol=0)


def test_boundary_scalings_closed_form():
    sig = np.array([0.0, 0.00895, 0.1, 0.5, 1.0])
    c_skip, c_out = flow_boundary_scalings(torch.tensor(sig), 0.5, 10.0, 1000)
    t = sig * 1000 * 10
    np.testing.assert_allclose(c_skip.numpy(), 0.25 / (t**2 + 0.25), rtol=1e-6)
    np.testing.assert_allclose(c_out.numpy(), t / np.sqrt(t**2 + 0.25), rtol=1e-6)
    assert c_skip[0] == 1.0 and c_out[0] == 0.0


def test_boundary_form_is_identity_at_sigma_zero():
    z, x0 = (t.float() for t in _pair(8))
    assert torch.equal(flow_boundary_form(z, x0, torch.zeros(2)), z)
    s = torch.tensor([0.3, 0.0])
    out = flow_boundary_form(z, x0, s)
    c_skip, c_out = flow_boundary_scalings(0.3)
    torch.testing.assert_close(out[0], c_skip * z[0] + c_out * x0[0])
    assert torch.equal(out[1], z[1])


def test_lcm_sigmas_and_solver_pair_on_the_flow_grid():
    grid = flow_grid(200, 3.0)
    idx = 199 - torch.arange(4) * 50
    assert torch.equal(flow_lcm_sigmas(4, grid), grid[idx])
    assert flow_lcm_sigmas(4, grid)[0] == 1.0
    # same indices as the DDIM-grid sampler of the eps students (999, 749, 499, 249 on t = 5 i + 4)
    assert torch.equal((lcm_sampling_timesteps(4, 200) + 1) // 5 - 1, idx)
    start, end = solver_pair(torch.tensor([0, 1, 199]), grid, 1)
    assert torch.equal(start, grid[[0, 1, 199]])
    assert end[0] == 0.0 and end[1] == grid[0] and end[2] == grid[198]
    with pytest.raises(ValueError, match="steps"):
        flow_lcm_sigmas(0, grid)


def test_euler_sampler_equals_scheduler_loop():
    """flow_euler_sample with a nonlinear fake velocity == diffusers' FlowMatchEulerDiscreteScheduler loop."""
    g = torch.Generator().manual_seed(9)
    z0 = torch.randn(SHAPE, generator=g)
    a = torch.randn(SHAPE, generator=g)

    def vel(z, sigma):  # sigma [B]
        return torch.tanh(z) * sigma.view(-1, 1, 1, 1, 1) + a

    sch = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    sch.set_timesteps(12)
    ref = z0
    for i, t in enumerate(sch.timesteps):
        ref = sch.step(vel(ref, sch.sigmas[i].expand(ref.shape[0])), t, ref, return_dict=False)[0]
    ours = flow_euler_sample(vel, z0, flow_sampling_sigmas(12, 3.0))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_euler_sampler_with_exact_velocity_recovers_x0():
    """For a point-mass data distribution the exact velocity is (z - x0)/sigma; Euler lands on x0."""
    x0, eps = _pair(10)

    def vel(z, sigma):
        return (z - x0) / sigma.double().view(-1, 1, 1, 1, 1)

    out = flow_euler_sample(vel, eps.clone(), flow_sampling_sigmas(3, 3.0).double())
    torch.testing.assert_close(out, x0, atol=1e-10, rtol=0)


def test_consistency_sampler_written_out():
    """Two steps written out by hand: f = c_skip z + c_out (z - s v), then re-noise (1 - s') x0 + s' eps."""
    g = torch.Generator().manual_seed(11)
    noise = torch.randn(SHAPE, generator=g)
    ren = torch.randn((SHAPE[0], 1, *SHAPE[1:]), generator=g)
    a = torch.randn(SHAPE, generator=g)

    def model(z, sigma):
        return 0.5 * z + a * sigma.view(-1, 1, 1, 1, 1)

    sig = flow_lcm_sigmas(2, flow_grid(200, 3.0))
    out = flow_consistency_sample(model, SHAPE, sig, noise=noise, renoise=ren)
    z = noise
    for i, s in enumerate(sig.tolist()):
        v = 0.5 * z + a * s
        t = s * 1000 * 10
        c_skip, c_out = 0.25 / (t * t + 0.25), t / (t * t + 0.25) ** 0.5
        x0 = c_skip * z + c_out * (z - s * v)
        if i == 0:
            z = (1 - sig[1].item()) * x0 + sig[1].item() * ren[:, 0]
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


def test_consistency_sampler_generator_and_grad_window():
    sig = flow_lcm_sigmas(3, flow_grid(30, 3.0))
    p = torch.nn.Parameter(torch.tensor(0.5))

    def model(z, sigma):
        return p * z

    a = flow_consistency_sample(model, SHAPE, sig, generator=torch.Generator().manual_seed(0))
    b = flow_consistency_sample(model, SHAPE, sig, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.requires_grad
    # a DDPM-free check of the structure: a 1-step flow sample is the boundary form at sigma = 1
    n = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    one = flow_consistency_sample(model, SHAPE, sig[:1], noise=n)
    c_skip, c_out = flow_boundary_scalings(1.0)
    torch.testing.assert_close(one, c_skip * n + c_out * (n - 0.5 * n))
    with torch.no_grad():
        assert not flow_consistency_sample(model, SHAPE, sig, noise=n).requires_grad
    # grad_last=1: gradient flows through the last step only (the earlier ones ran under no_grad)
    out = flow_consistency_sample(model, SHAPE, sig, noise=n, grad_last=1)
    assert out.requires_grad
