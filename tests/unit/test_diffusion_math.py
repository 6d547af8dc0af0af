"""Unit tests for ``t2vturbo.diffusion`` (schedules, DDIM solver, consistency parameterisation).

Every formula is checked against an *independent* computation: diffusers' own schedulers where they
exist (DDPMScheduler, DDIMScheduler, DDIMInverseScheduler, LCMScheduler, the LCM pipeline's guidance
embedding) and numpy float64 closed forms otherwise.  No test checks a function against itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, DDPMScheduler, LCMScheduler

from t2vturbo.diffusion import (
    PREDICTION_TYPES,
    add_noise,
    alpha_sigma,
    apply_cfg,
    boundary_form,
    consistency_loss,
    consistency_sample,
    ddim_grid,
    ddim_inversion_step,
    ddim_sample,
    ddim_sampling_timesteps,
    ddim_step,
    l2_loss,
    lcm_sampling_timesteps,
    make_alphas_cumprod,
    make_betas,
    pseudo_huber_loss,
    scalar_embedding,
    scalings_for_boundary_conditions,
    solver_pair,
    to_x0_eps,
    training_target,
)
from t2vturbo.diffusion.schedules import alphas_cumprod_from_betas

SD_BETA_START, SD_BETA_END, T = 0.00085, 0.012, 1000
SHAPE = (3, 4, 2, 5, 6)  # [B, C, F, H, W]


# ----------------------------------------------------------------------------------------------
# independent references (numpy float64)
# ----------------------------------------------------------------------------------------------


def np_betas(schedule, beta_start=SD_BETA_START, beta_end=SD_BETA_END, n=T):
    if schedule == "linear":
        return np.linspace(beta_start, beta_end, n, dtype=np.float64)
    assert schedule == "scaled_linear"
    return np.linspace(math.sqrt(beta_start), math.sqrt(beta_end), n, dtype=np.float64) ** 2


def np_alphas_cumprod(schedule="scaled_linear", **kw):
    return np.cumprod(1.0 - np_betas(schedule, **kw))


AB64 = np_alphas_cumprod()  # float64 reference alpha_bar for the SD schedule


def np_bcast(v, ndim):
    v = np.asarray(v, dtype=np.float64)
    return v.reshape(v.shape[0], *([1] * (ndim - 1))) if v.ndim else v


def np_a_s(ab, t, ndim):
    ab_t = np.asarray(ab, dtype=np.float64)[np.asarray(t)]
    return np_bcast(np.sqrt(ab_t), ndim), np_bcast(np.sqrt(1.0 - ab_t), ndim)


def np_scalings(t, sigma_data=0.5, timestep_scaling=10.0):
    x = np.asarray(t, dtype=np.float64) * timestep_scaling
    return sigma_data**2 / (x**2 + sigma_data**2), x / np.sqrt(x**2 + sigma_data**2)


def np_guidance_embedding(w, dim):
    """VDM / diffusers ``get_guidance_scale_embedding`` in float64."""
    x = np.asarray(w, dtype=np.float64).reshape(-1) * 1000.0
    half = dim // 2
    freqs = np.exp(-np.log(10000.0) * np.arange(half) / (half - 1))
    args = x[:, None] * freqs[None, :]
    emb = np.concatenate([np.sin(args), np.cos(args)], axis=1)
    if dim % 2:
        emb = np.pad(emb, ((0, 0), (0, 1)))
    return emb


def randn(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def ddim_ref_scheduler(cls=DDIMScheduler, **kw):
    cfg = dict(
        num_train_timesteps=T,
        beta_start=SD_BETA_START,
        beta_end=SD_BETA_END,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        prediction_type="epsilon",
        timestep_spacing="leading",
    )
    cfg.update(kw)
    return cls(**cfg)


@pytest.fixture(scope="module")
def ab64() -> torch.Tensor:
    return torch.from_numpy(AB64.copy())


# ----------------------------------------------------------------------------------------------
# 1. beta schedules / alpha_bar
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schedule,beta_start,beta_end",
    [
        ("scaled_linear", SD_BETA_START, SD_BETA_END),
        ("linear", SD_BETA_START, SD_BETA_END),
        ("linear", 1e-4, 0.02),
    ],
)
def test_schedule_matches_diffusers_and_numpy(schedule, beta_start, beta_end):
    kw = dict(beta_start=beta_start, beta_end=beta_end)
    betas = make_betas(schedule, T, **kw)
    assert betas.dtype == torch.float64 and betas.shape == (T,)
    np.testing.assert_allclose(betas.numpy(), np_betas(schedule, **kw), rtol=1e-12, atol=0)

    ab = make_alphas_cumprod(schedule, T, **kw)
    assert ab.dtype == torch.float32 and ab.shape == (T,)
    ref64 = np_alphas_cumprod(schedule, **kw)
    np.testing.assert_allclose(ab.numpy().astype(np.float64), ref64, rtol=1e-6, atol=0)
    np.testing.assert_allclose(alphas_cumprod_from_betas(betas).numpy(), ref64, rtol=1e-12, atol=0)

    # diffusers builds the schedule in float32 (linspace + cumprod), hence ~1 ulp-per-step drift
    ref = DDPMScheduler(num_train_timesteps=T, beta_schedule=schedule, **kw)
    np.testing.assert_allclose(betas.numpy(), ref.betas.double().numpy(), rtol=1e-6, atol=0)
    np.testing.assert_allclose(ab.numpy(), ref.alphas_cumprod.numpy(), rtol=2e-6, atol=1e-7)


def test_schedule_known_values():
    betas = make_betas()  # defaults: scaled_linear 0.00085 -> 0.012 over 1000
    assert betas.shape == (1000,)
    assert betas[0].item() == pytest.approx(0.00085, rel=1e-13)
    assert betas[-1].item() == pytest.approx(0.012, rel=1e-13)
    ab = alphas_cumprod_from_betas(betas)
    assert ab[0].item() == pytest.approx(1 - 0.00085, rel=1e-14)
    assert ab[1].item() == pytest.approx((1 - 0.00085) * (1 - np_betas("scaled_linear")[1]), rel=1e-14)
    # well-known SD value: alpha_bar_999 ~= 0.00466
    assert make_alphas_cumprod()[-1].item() == pytest.approx(0.0046600, abs=5e-7)
    assert bool((ab[1:] < ab[:-1]).all())


def test_unknown_beta_schedule_raises():
    with pytest.raises(ValueError):
        make_betas("cosine")
    with pytest.raises(ValueError):
        make_alphas_cumprod("squaredcos_cap_v2")


# ----------------------------------------------------------------------------------------------
# 2. forward process and prediction-type conversions
# ----------------------------------------------------------------------------------------------


def test_alpha_sigma_broadcast_and_values(ab64):
    like = torch.zeros(SHAPE, dtype=torch.float32)
    t = torch.tensor([0, 499, 999])
    a, s = alpha_sigma(ab64, t, like)
    assert a.shape == (3, 1, 1, 1, 1) and s.shape == (3, 1, 1, 1, 1)
    assert a.dtype == torch.float32
    ra, rs = np_a_s(AB64, t.numpy(), 5)
    np.testing.assert_allclose(a.double().numpy(), ra, rtol=1e-7)
    np.testing.assert_allclose(s.double().numpy(), rs, rtol=1e-7)
    # scalar t stays 0-d and broadcasts
    a0, s0 = alpha_sigma(ab64, 250, like)
    assert a0.ndim == 0 and a0.item() == pytest.approx(math.sqrt(AB64[250]), rel=1e-7)
    assert s0.item() == pytest.approx(math.sqrt(1 - AB64[250]), rel=1e-7)
    # dtype follows ``like`` (bf16 model tensors)
    ab16, _ = alpha_sigma(ab64, t, like.bfloat16())
    assert ab16.dtype == torch.bfloat16


def test_add_noise_closed_form(ab64):
    x0, eps = randn(*SHAPE, seed=1, dtype=torch.float64), randn(*SHAPE, seed=2, dtype=torch.float64)
    t = torch.tensor([3, 500, 998])
    z = add_noise(ab64, x0, eps, t)
    a, s = np_a_s(AB64, t.numpy(), 5)
    np.testing.assert_allclose(z.numpy(), a * x0.numpy() + s * eps.numpy(), rtol=0, atol=1e-12)


def _model_output(kind, x0, eps, a, s):
    return {"epsilon": eps, "v_prediction": a * eps - s * x0, "sample": x0}[kind]


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_to_x0_eps_round_trip_float64(prediction_type, ab64):
    x0, eps = randn(*SHAPE, seed=3, dtype=torch.float64), randn(*SHAPE, seed=4, dtype=torch.float64)
    t = torch.tensor([0, 421, 999])  # includes both ends of the schedule
    z = add_noise(ab64, x0, eps, t)
    a, s = np_a_s(AB64, t.numpy(), 5)
    out = torch.from_numpy(_model_output(prediction_type, x0.numpy(), eps.numpy(), a, s))
    x0_hat, eps_hat = to_x0_eps(out, z, t, ab64, prediction_type)
    np.testing.assert_allclose(x0_hat.numpy(), x0.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(eps_hat.numpy(), eps.numpy(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_to_x0_eps_round_trip_float32(prediction_type):
    ab = make_alphas_cumprod()
    x0, eps = randn(*SHAPE, seed=5), randn(*SHAPE, seed=6)
    t = torch.tensor([120, 500, 880])
    z = add_noise(ab, x0, eps, t)
    a, s = alpha_sigma(ab, t, x0)
    out = _model_output(prediction_type, x0, eps, a, s)
    x0_hat, eps_hat = to_x0_eps(out, z, t, ab, prediction_type)
    torch.testing.assert_close(x0_hat, x0, rtol=0, atol=1e-5)
    torch.testing.assert_close(eps_hat, eps, rtol=0, atol=1e-5)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_training_target_matches_model_output(prediction_type, ab64):
    x0, eps = randn(*SHAPE, seed=7, dtype=torch.float64), randn(*SHAPE, seed=8, dtype=torch.float64)
    t = torch.tensor([10, 600, 990])
    a, s = np_a_s(AB64, t.numpy(), 5)
    expected = _model_output(prediction_type, x0.numpy(), eps.numpy(), a, s)
    target = training_target(x0, eps, t, ab64, prediction_type)
    np.testing.assert_allclose(target.numpy(), expected, rtol=0, atol=1e-12)
    # and the target is what to_x0_eps inverts
    x0_hat, eps_hat = to_x0_eps(target, add_noise(ab64, x0, eps, t), t, ab64, prediction_type)
    np.testing.assert_allclose(x0_hat.numpy(), x0.numpy(), atol=1e-10)
    np.testing.assert_allclose(eps_hat.numpy(), eps.numpy(), atol=1e-10)


def test_v_prediction_matches_diffusers_get_velocity():
    sched = DDPMScheduler(beta_start=SD_BETA_START, beta_end=SD_BETA_END, beta_schedule="scaled_linear")
    ab = sched.alphas_cumprod
    x0, eps = randn(*SHAPE, seed=9), randn(*SHAPE, seed=10)
    t = torch.tensor([1, 333, 999])
    torch.testing.assert_close(
        training_target(x0, eps, t, ab, "v_prediction"), sched.get_velocity(x0, eps, t), rtol=0, atol=1e-6
    )
    torch.testing.assert_close(add_noise(ab, x0, eps, t), sched.add_noise(x0, eps, t), rtol=0, atol=1e-6)


def test_unknown_prediction_type_raises(ab64):
    z = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError):
        to_x0_eps(z, z, torch.tensor([1, 2]), ab64, "x0")
    with pytest.raises(ValueError):
        training_target(z, z, torch.tensor([1, 2]), ab64, "flow")


# ----------------------------------------------------------------------------------------------
# 3. DDIM grid and solver pairs
# ----------------------------------------------------------------------------------------------


def test_ddim_grid_values():
    g200 = ddim_grid(200)
    assert g200.dtype == torch.long and g200.shape == (200,)
    assert g200.tolist() == list(range(4, 1000, 5))
    assert g200[0].item() == 4 and g200[1].item() == 9 and g200[-1].item() == 999
    assert ddim_grid(50).tolist() == list(range(19, 1000, 20))
    assert ddim_grid(1000).tolist() == list(range(1000))
    assert ddim_grid(1).tolist() == [999]
    assert ddim_grid(10, num_train_timesteps=100).tolist() == list(range(9, 100, 10))


@pytest.mark.parametrize("n", [3, 7, 300, 999])
def test_ddim_grid_non_divisor_raises(n):
    with pytest.raises(ValueError):
        ddim_grid(n)


def test_solver_pair_skip1():
    grid = ddim_grid(200)
    start, end = solver_pair(torch.tensor([0, 1, 100, 199]), grid, skip=1)
    assert start.tolist() == [4, 9, 504, 999]
    assert end.tolist() == [0, 4, 499, 994]
    s0, e0 = solver_pair(0, grid)
    assert (s0.item(), e0.item()) == (4, 0)
    s1, e1 = solver_pair(199, grid)
    assert (s1.item(), e1.item()) == (999, 994)


def test_solver_pair_skip2():
    grid = ddim_grid(200)
    start, end = solver_pair(torch.tensor([0, 1, 2, 3, 199]), grid, skip=2)
    assert start.tolist() == [4, 9, 14, 19, 999]
    assert end.tolist() == [0, 0, 4, 9, 989]
    # general skip: end = grid[i - k] or 0, independent list formula
    idx = torch.arange(200)
    for k in (1, 5, 20):
        st, en = solver_pair(idx, grid, skip=k)
        assert st.tolist() == [5 * (i + 1) - 1 for i in range(200)]
        assert en.tolist() == [5 * (i - k + 1) - 1 if i - k >= 0 else 0 for i in range(200)]


# ----------------------------------------------------------------------------------------------
# 4. DDIM step / inversion
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [980, 500, 20])
def test_ddim_step_matches_diffusers(t):
    sched = ddim_ref_scheduler()
    sched.set_timesteps(50)  # leading, offset 0: 980, 960, ..., 0 -> prev of t is t - 20
    assert t in sched.timesteps.tolist()
    ab = sched.alphas_cumprod
    z, eps = randn(*SHAPE, seed=11), randn(*SHAPE, seed=12)
    ref = sched.step(eps, t, z, eta=0.0).prev_sample

    tt = torch.full((SHAPE[0],), t)
    x0, eps_out = to_x0_eps(eps, z, tt, ab, "epsilon")
    ours = ddim_step(x0, eps_out, tt - 20, ab)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    # the "inversion" helper is the same (x0, eps) -> z map and must agree too
    torch.testing.assert_close(ddim_inversion_step(z, eps, tt, tt - 20, ab), ref, rtol=0, atol=1e-5)


def test_ddim_step_closed_form_numpy(ab64):
    z, eps = randn(*SHAPE, seed=13, dtype=torch.float64), randn(*SHAPE, seed=14, dtype=torch.float64)
    t_from, t_to = np.array([999, 504, 9]), np.array([994, 0, 4])
    a_f, s_f = np_a_s(AB64, t_from, 5)
    a_t, s_t = np_a_s(AB64, t_to, 5)
    x0_ref = (z.numpy() - s_f * eps.numpy()) / a_f
    expected = a_t * x0_ref + s_t * eps.numpy()

    x0, _ = to_x0_eps(eps, z, torch.from_numpy(t_from), ab64, "epsilon")
    np.testing.assert_allclose(ddim_step(x0, eps, torch.from_numpy(t_to), ab64).numpy(), expected, atol=1e-10)
    got = ddim_inversion_step(z, eps, torch.from_numpy(t_from), torch.from_numpy(t_to), ab64)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-10)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_ddim_inversion_then_step_is_identity(dtype, atol, ab64):
    ab = ab64 if dtype == torch.float64 else make_alphas_cumprod()
    z, eps = randn(*SHAPE, seed=15, dtype=dtype), randn(*SHAPE, seed=16, dtype=dtype)
    t_lo, t_hi = torch.tensor([4, 499, 900]), torch.tensor([9, 519, 999])
    z_hi = ddim_inversion_step(z, eps, t_lo, t_hi, ab)
    assert not torch.allclose(z_hi, z)
    x0, _ = to_x0_eps(eps, z_hi, t_hi, ab, "epsilon")
    back = ddim_step(x0, eps, t_lo, ab)
    torch.testing.assert_close(back, z, rtol=0, atol=atol)


@pytest.mark.parametrize("t_to", [980, 500, 20])
def test_ddim_inversion_matches_diffusers_inverse_scheduler(t_to):
    sched = ddim_ref_scheduler(DDIMInverseScheduler)
    sched.set_timesteps(50)  # step(eps, t, z) goes from t - 20 to t
    ab = sched.alphas_cumprod
    z, eps = randn(*SHAPE, seed=17), randn(*SHAPE, seed=18)
    ref = sched.step(eps, t_to, z).prev_sample
    tt = torch.full((SHAPE[0],), t_to)
    torch.testing.assert_close(ddim_inversion_step(z, eps, tt - 20, tt, ab), ref, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# 5. DDIM sampling
# ----------------------------------------------------------------------------------------------


def test_ddim_sample_oracle_recovers_x0_and_follows_ode(ab64):
    x0_true = randn(*SHAPE, seed=19, dtype=torch.float64)
    z_T = randn(*SHAPE, seed=20, dtype=torch.float64)
    ts = ddim_sampling_timesteps(10)
    seen = []

    def oracle(z, t):
        seen.append((z.clone(), t.clone()))
        a, s = np_a_s(AB64, t.numpy(), z.ndim)
        return x0_true, (z - torch.from_numpy(a) * x0_true) / torch.from_numpy(s)

    out = ddim_sample(oracle, z_T, ts, ab64)
    np.testing.assert_allclose(out.numpy(), x0_true.numpy(), rtol=0, atol=1e-12)
    # the trajectory is the straight DDIM line z_t = a_t x0 + s_t eps_T
    assert [int(t[0]) for _, t in seen] == ts.tolist()
    assert all(t.shape == (SHAPE[0],) and t.dtype == torch.long for _, t in seen)
    a0, s0 = np_a_s(AB64, ts[0].item(), 5)
    eps_T = (z_T.numpy() - a0 * x0_true.numpy()) / s0
    for z, t in seen:
        a, s = np_a_s(AB64, int(t[0]), 5)
        np.testing.assert_allclose(z.numpy(), a * x0_true.numpy() + s * eps_T, rtol=0, atol=1e-10)


def test_ddim_sample_matches_diffusers_loop():
    sched = ddim_ref_scheduler(steps_offset=1)
    sched.set_timesteps(10)
    ab = sched.alphas_cumprod

    def eps_fn(z, t):  # a nonlinear, timestep-dependent "network"
        tf = torch.as_tensor(t, dtype=z.dtype).reshape(-1, *([1] * (z.ndim - 1))) / 1000.0
        return 0.6 * z * torch.cos(tf) + 0.2 * torch.sin(3 * z) * tf

    z_T = randn(*SHAPE, seed=21, dtype=torch.float64)
    z = z_T
    for t in sched.timesteps:
        step = sched.step(eps_fn(z, t.reshape(1)), int(t), z, eta=0.0)
        z = step.prev_sample
    ref = step.pred_original_sample  # last step's x0 prediction

    def denoise(z, t):
        return to_x0_eps(eps_fn(z, t), z, t, ab, "epsilon")

    out = ddim_sample(denoise, z_T, ddim_sampling_timesteps(10), ab)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=0, atol=1e-8)


@pytest.mark.parametrize("n", [50, 25, 10, 4, 1, 30, 7])
def test_ddim_sampling_timesteps_match_diffusers(n):
    sched = DDIMScheduler(steps_offset=1, timestep_spacing="leading")
    sched.set_timesteps(n)
    ours = ddim_sampling_timesteps(n)
    assert ours.dtype == torch.long
    assert ours.tolist() == sched.timesteps.tolist()


def test_ddim_sampling_timesteps_50_values():
    assert ddim_sampling_timesteps(50).tolist() == list(range(981, 0, -20))


# ----------------------------------------------------------------------------------------------
# 6. consistency boundary conditions
# ----------------------------------------------------------------------------------------------


def test_boundary_scalings_endpoints():
    c_skip, c_out = scalings_for_boundary_conditions(0)
    assert c_skip.item() == 1.0 and c_out.item() == 0.0
    c_skip, c_out = scalings_for_boundary_conditions(999)
    assert 0 < c_skip.item() < 1e-8
    assert c_out.item() == pytest.approx(1.0, abs=1e-7)
    assert c_skip.dtype == torch.float32 and c_out.dtype == torch.float32


def test_boundary_scalings_match_diffusers_lcm():
    sched = LCMScheduler()
    assert sched.config.timestep_scaling == 10.0
    ts = [0, 1, 4, 19, 100, 249, 499, 749, 999]
    c_skip, c_out = scalings_for_boundary_conditions(torch.tensor(ts))
    assert c_skip.shape == (len(ts),)
    for i, t in enumerate(ts):
        ref_skip, ref_out = sched.get_scalings_for_boundary_condition_discrete(t)
        assert c_skip[i].item() == pytest.approx(ref_skip, rel=1e-6, abs=1e-12)
        assert c_out[i].item() == pytest.approx(ref_out, rel=1e-6, abs=1e-12)
    # non-default timestep_scaling (diffusers' sigma_data is hard-coded 0.5)
    sched1 = LCMScheduler(timestep_scaling=1.0)
    c_skip1, c_out1 = scalings_for_boundary_conditions(torch.tensor(ts), timestep_scaling=1.0)
    for i, t in enumerate(ts):
        ref_skip, ref_out = sched1.get_scalings_for_boundary_condition_discrete(t)
        assert c_skip1[i].item() == pytest.approx(ref_skip, rel=1e-6, abs=1e-12)
        assert c_out1[i].item() == pytest.approx(ref_out, rel=1e-6, abs=1e-12)


def test_boundary_scalings_numpy_custom_sigma():
    ts = np.array([0, 1, 2, 5, 50, 999])
    c_skip, c_out = scalings_for_boundary_conditions(
        torch.from_numpy(ts), sigma_data=0.7, timestep_scaling=3.0
    )
    ref_skip, ref_out = np_scalings(ts, 0.7, 3.0)
    np.testing.assert_allclose(c_skip.double().numpy(), ref_skip, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(c_out.double().numpy(), ref_out, rtol=1e-6, atol=1e-12)


def test_boundary_form_identity_at_t0_and_closed_form():
    z, x0 = randn(*SHAPE, seed=22), randn(*SHAPE, seed=23)
    assert torch.equal(boundary_form(z, x0, 0), z)
    assert torch.equal(boundary_form(z, x0, torch.zeros(SHAPE[0], dtype=torch.long)), z)
    t = np.array([0, 1, 999])
    got = boundary_form(z, x0, torch.from_numpy(t))
    cs, co = np_scalings(t)
    expected = np_bcast(cs, 5) * z.double().numpy() + np_bcast(co, 5) * x0.double().numpy()
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=0, atol=1e-6)
    # bf16 input keeps its dtype
    assert boundary_form(z.bfloat16(), x0.bfloat16(), torch.from_numpy(t)).dtype == torch.bfloat16


# ----------------------------------------------------------------------------------------------
# 7. losses
# ----------------------------------------------------------------------------------------------


def np_pseudo_huber(a, b, c):
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(np.mean(np.sqrt(d * d + c * c) - c))


@pytest.mark.parametrize("c", [0.001, 0.03, 1.0])
def test_pseudo_huber_numpy_reference(c):
    a, b = randn(*SHAPE, seed=24), randn(*SHAPE, seed=25)
    loss = pseudo_huber_loss(a, b, c)
    assert loss.ndim == 0 and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(np_pseudo_huber(a.numpy(), b.numpy(), c), rel=1e-6)


def test_pseudo_huber_asymptotics():
    c = 0.001
    b = torch.zeros(SHAPE)
    big = randn(*SHAPE, seed=26) * 10 + 5  # |d| >> c
    assert pseudo_huber_loss(big, b, c).item() == pytest.approx(
        big.abs().double().mean().item() - c, rel=1e-6
    )
    tiny = randn(*SHAPE, seed=27) * 1e-4  # |d| << c: ~ d^2 / (2c)
    ref = float((tiny.double() ** 2 / (2 * c)).mean())
    assert pseudo_huber_loss(tiny, b, c).item() == pytest.approx(ref, rel=1e-2)
    assert pseudo_huber_loss(tiny, b, c).item() == pytest.approx(
        np_pseudo_huber(tiny.numpy(), 0.0, c), rel=1e-4
    )
    assert pseudo_huber_loss(b, b, c).item() == 0.0


def test_pseudo_huber_bf16_computed_in_fp32():
    a, b = randn(*SHAPE, seed=28).bfloat16(), randn(*SHAPE, seed=29).bfloat16()
    loss = pseudo_huber_loss(a, b, 0.001)
    assert loss.dtype == torch.float32
    ref = np_pseudo_huber(a.float().numpy(), b.float().numpy(), 0.001)
    assert loss.item() == pytest.approx(ref, rel=1e-6)  # a bf16 computation would miss by ~1e-3


def test_l2_loss_numpy_reference():
    a, b = randn(*SHAPE, seed=30), randn(*SHAPE, seed=31)
    ref = float(np.mean((a.double().numpy() - b.double().numpy()) ** 2))
    assert l2_loss(a, b).item() == pytest.approx(ref, rel=1e-6)
    l16 = l2_loss(a.bfloat16(), b.bfloat16())
    assert l16.dtype == torch.float32
    ref16 = float(np.mean((a.bfloat16().double().numpy() - b.bfloat16().double().numpy()) ** 2))
    assert l16.item() == pytest.approx(ref16, rel=1e-6)


def test_consistency_loss_dispatch():
    a, b = randn(*SHAPE, seed=32), randn(*SHAPE, seed=33)
    assert consistency_loss(a, b).item() == pytest.approx(
        np_pseudo_huber(a.numpy(), b.numpy(), 0.001), rel=1e-6
    )
    assert consistency_loss(a, b, "huber", huber_c=0.05).item() == pytest.approx(
        np_pseudo_huber(a.numpy(), b.numpy(), 0.05), rel=1e-6
    )
    ref_l2 = float(np.mean((a.double().numpy() - b.double().numpy()) ** 2))
    assert consistency_loss(a, b, "l2").item() == pytest.approx(ref_l2, rel=1e-6)
    with pytest.raises(ValueError):
        consistency_loss(a, b, "l1")


# ----------------------------------------------------------------------------------------------
# 8. classifier-free guidance
# ----------------------------------------------------------------------------------------------


def test_apply_cfg_forms():
    cond, uncond = randn(*SHAPE, seed=34), randn(*SHAPE, seed=35)
    assert torch.equal(apply_cfg(cond, uncond, 0.0, "lcm"), cond)
    torch.testing.assert_close(apply_cfg(cond, uncond, 1.0, "imagen"), cond, rtol=0, atol=1e-6)
    torch.testing.assert_close(apply_cfg(cond, uncond, 0.0, "imagen"), uncond, rtol=0, atol=0)
    c, u = cond.double().numpy(), uncond.double().numpy()
    for w in (0.5, 3.0, 7.5):
        lcm = apply_cfg(cond, uncond, w, "lcm")
        np.testing.assert_allclose(lcm.double().numpy(), c + w * (c - u), rtol=0, atol=1e-5)
        np.testing.assert_allclose(
            apply_cfg(cond, uncond, w, "imagen").double().numpy(), u + w * (c - u), atol=1e-5
        )
        torch.testing.assert_close(lcm, apply_cfg(cond, uncond, w + 1.0, "imagen"), rtol=0, atol=1e-5)
    assert torch.equal(apply_cfg(cond, uncond, 2.0), apply_cfg(cond, uncond, 2.0, "lcm"))  # default = lcm
    with pytest.raises(ValueError):
        apply_cfg(cond, uncond, 1.0, "cfg++")


def test_apply_cfg_per_sample_w_broadcast():
    cond, uncond = randn(*SHAPE, seed=36), randn(*SHAPE, seed=37)
    w = torch.tensor([0.0, 2.5, 8.0])
    for form in ("lcm", "imagen"):
        out = apply_cfg(cond, uncond, w, form)
        assert out.shape == SHAPE
        for i in range(SHAPE[0]):
            base = cond[i] if form == "lcm" else uncond[i]
            expected = base + w[i].item() * (cond[i] - uncond[i])
            torch.testing.assert_close(out[i], expected, rtol=0, atol=1e-6)
    out16 = apply_cfg(cond.bfloat16(), uncond.bfloat16(), w)
    assert out16.dtype == torch.bfloat16 and out16.shape == SHAPE


# ----------------------------------------------------------------------------------------------
# 9. scalar (guidance / motion) embedding
# ----------------------------------------------------------------------------------------------


def _diffusers_guidance_embedding():
    """diffusers' ``LatentConsistencyModelPipeline.get_guidance_scale_embedding``, verbatim.

    Importing the pipeline pulls in transformers (~3 s), so the method's source is lifted from the
    installed diffusers file with ``ast`` and compiled on its own (it does not use ``self``)."""
    import ast
    import importlib.util
    import pathlib

    root = pathlib.Path(importlib.util.find_spec("diffusers").origin).parent
    path = root / "pipelines" / "latent_consistency_models" / "pipeline_latent_consistency_text2img.py"
    tree = ast.parse(path.read_text())
    cls = next(
        n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "LatentConsistencyModelPipeline"
    )
    fn = next(
        n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "get_guidance_scale_embedding"
    )
    ns = {"torch": torch}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(path), "exec"), ns)
    return ns["get_guidance_scale_embedding"]


def test_scalar_embedding_matches_diffusers_pipeline():
    ref_fn = _diffusers_guidance_embedding()
    w = torch.tensor([0.0, 0.3, 1.0, 2.0, 7.5, 15.0])
    for dim in (256, 512, 257):
        ref = ref_fn(None, w, embedding_dim=dim)
        torch.testing.assert_close(scalar_embedding(w, dim=dim), ref, rtol=0, atol=1e-6)


def test_scalar_embedding_numpy_reference_and_shape():
    w = torch.tensor([0.0, 0.01, 0.2, 1.0, 7.5])
    emb = scalar_embedding(w)
    assert emb.shape == (5, 256) and emb.dtype == torch.float32
    assert emb[0].tolist() == [0.0] * 128 + [1.0] * 128
    # fp32 argument rounding grows with |w*1000| (ulp(7500) ~ 5e-4), so compare loosely there
    ref = np_guidance_embedding(w.numpy(), 256)
    np.testing.assert_allclose(emb[:3].double().numpy(), ref[:3], rtol=0, atol=2e-5)
    np.testing.assert_allclose(emb.double().numpy(), ref, rtol=0, atol=2e-3)
    # odd dim -> zero pad; 0-d input -> batch of 1; custom scale
    e257 = scalar_embedding(torch.tensor([0.4]), dim=257)
    assert e257.shape == (1, 257) and e257[0, -1].item() == 0.0
    np.testing.assert_allclose(e257.double().numpy(), np_guidance_embedding([0.4], 257), atol=1e-4)
    assert scalar_embedding(torch.tensor(0.5), dim=64).shape == (1, 64)
    np.testing.assert_allclose(
        scalar_embedding(torch.tensor([0.5]), dim=64, scale=10.0).double().numpy(),
        np_guidance_embedding([0.005], 64),
        atol=1e-6,
    )


# ----------------------------------------------------------------------------------------------
# 10. LCM sampling timesteps
# ----------------------------------------------------------------------------------------------


def test_lcm_sampling_timesteps_values():
    assert lcm_sampling_timesteps(4, 200).tolist() == [999, 749, 499, 249]
    assert lcm_sampling_timesteps(1, 200).tolist() == [999]
    assert lcm_sampling_timesteps(2, 200).tolist() == [999, 499]
    assert lcm_sampling_timesteps(8, 200).tolist() == [999, 874, 749, 624, 499, 374, 249, 124]
    assert lcm_sampling_timesteps(200, 200).tolist() == list(range(999, 0, -5))
    assert lcm_sampling_timesteps(4, 50).tolist() == [999, 759, 519, 279]
    assert lcm_sampling_timesteps(4).dtype == torch.long


@pytest.mark.parametrize("steps", [1, 2, 4, 5, 8, 10, 20, 25, 40, 50, 100, 200])
def test_lcm_sampling_timesteps_match_diffusers_when_steps_divide_grid(steps):
    sched = LCMScheduler(original_inference_steps=200)
    sched.set_timesteps(steps)
    assert lcm_sampling_timesteps(steps, 200).tolist() == sched.timesteps.tolist()


def test_lcm_sampling_timesteps_non_divisor_convention():
    """When S does not divide N the conventions differ, by design:

    ours (= diffusers <= 0.24 LCMScheduler / the T2V-Turbo & LCM repos):
        origin[::-1][:: N // S][:S]                    -> integer stride N // S
    diffusers 0.42 LCMScheduler:
        origin[::-1][floor(linspace(0, N, S, endpoint=False))]  -> fractional stride N / S
    Both start at 999 and lie on the N-grid; only later steps differ (e.g. S=3: 339 vs 334).
    """
    for n in (200, 50):
        origin = np.arange(1, n + 1) * (T // n) - 1
        for steps in range(1, n + 1):
            ref = origin[::-1][:: n // steps][:steps]
            assert lcm_sampling_timesteps(steps, n).tolist() == ref.tolist(), (n, steps)
    sched = LCMScheduler(original_inference_steps=200)
    sched.set_timesteps(3)
    assert sched.timesteps.tolist() == [999, 669, 334]
    assert lcm_sampling_timesteps(3, 200).tolist() == [999, 669, 339]


@pytest.mark.parametrize("steps", [0, -1, 201])
def test_lcm_sampling_timesteps_invalid(steps):
    with pytest.raises(ValueError):
        lcm_sampling_timesteps(steps, 200)


# ----------------------------------------------------------------------------------------------
# 11. multistep consistency sampler
# ----------------------------------------------------------------------------------------------


def _expected_consistency_sample(x_fixed, seed, timesteps, shape, dtype=torch.float32):
    """Independent float64 replay of LCM multistep sampling with an oracle x0 = x_fixed.

    Draw order matches the sampler: the initial latent, then one fresh noise per re-noising
    (drawn in the sampler's ``dtype`` from a CPU generator)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g, dtype=dtype).double().numpy()
    X = x_fixed.double().numpy()
    ts = list(timesteps)
    zs = []
    for i, t in enumerate(ts):
        zs.append(z)
        cs, co = np_scalings(t)
        x = cs * z + co * X
        if i + 1 < len(ts):
            fresh = torch.randn(shape, generator=g, dtype=dtype).double().numpy()
            ab = AB64[ts[i + 1]]
            z = math.sqrt(ab) * x + math.sqrt(1 - ab) * fresh
    return x, zs


@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_consistency_sample_oracle(steps, prediction_type):
    ab = make_alphas_cumprod()
    X = randn(*SHAPE, seed=38)
    ts = lcm_sampling_timesteps(steps, 200)
    seen = []

    def model(z, t):
        seen.append((z.clone(), t.clone()))
        a, s = alpha_sigma(ab, t, z)
        eps = (z - a * X) / s  # the eps that makes z consistent with x0 = X
        return {"sample": X, "epsilon": eps, "v_prediction": a * eps - s * X}[prediction_type]

    out = consistency_sample(
        model, SHAPE, ts, ab, prediction_type, generator=torch.Generator().manual_seed(7)
    )
    expected, zs = _expected_consistency_sample(X, 7, ts.tolist(), SHAPE)
    assert out.shape == SHAPE and out.dtype == torch.float32
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=0, atol=2e-5)
    # at t >= 249, c_skip < 1e-6 so the output is X up to that (and fp32 conversion) error
    np.testing.assert_allclose(out.numpy(), X.numpy(), rtol=0, atol=5e-5)
    assert [int(t[0]) for _, t in seen] == ts.tolist()
    assert all(t.dtype == torch.long and t.shape == (SHAPE[0],) for _, t in seen)
    for (z, _), z_ref in zip(seen, zs):
        np.testing.assert_allclose(z.double().numpy(), z_ref, rtol=0, atol=2e-5)


def test_consistency_sample_float64(ab64):
    X = randn(*SHAPE, seed=41, dtype=torch.float64)
    ts = lcm_sampling_timesteps(4, 200)

    def model(z, t):  # epsilon oracle: its dtype follows the sampler's latents
        assert z.dtype == torch.float64  # initial and re-noised latents are drawn in ``dtype``
        a, s = alpha_sigma(ab64, t, z)
        return (z - a * X) / s

    out = consistency_sample(
        model, SHAPE, ts, ab64, "epsilon", generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    assert out.dtype == torch.float64
    expected, _ = _expected_consistency_sample(X, 3, ts.tolist(), SHAPE, dtype=torch.float64)
    # c_skip / c_out are float32 by design (scalings_for_boundary_conditions), hence ~1e-7, not 1e-12
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=5e-7)


def test_consistency_sample_boundary_scaling_visible_at_small_t():
    """With a low final timestep c_skip is not negligible: output = c_skip z + c_out X exactly."""
    ab = make_alphas_cumprod()
    X = randn(*SHAPE, seed=39)
    noise = randn(*SHAPE, seed=40)
    t = torch.tensor([4])  # c_skip(4) = 0.25 / 1600.25
    out = consistency_sample(lambda z, tt: X, SHAPE, t, ab, "sample", noise=noise)
    cs, co = np_scalings(4)
    np.testing.assert_allclose(
        out.double().numpy(), cs * noise.double().numpy() + co * X.double().numpy(), atol=1e-6
    )
    assert torch.equal(
        consistency_sample(lambda z, tt: X, SHAPE, torch.tensor([0]), ab, "sample", noise=noise), noise
    )


def test_consistency_sample_seeding():
    ab = make_alphas_cumprod()
    ts = lcm_sampling_timesteps(4, 200)

    def model(z, t):  # a model that depends on its input, so noise differences propagate
        return 0.5 * z

    def run(seed):
        return consistency_sample(
            model, SHAPE, ts, ab, "epsilon", generator=torch.Generator().manual_seed(seed)
        )

    assert torch.equal(run(0), run(0))
    assert not torch.allclose(run(0), run(1))
    assert torch.isfinite(run(2)).all()
