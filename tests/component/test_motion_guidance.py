"""Component tests for t2vturbo.guidance: temporal-attention capture (exactness, shapes,
recomputation from the layer's weights), top-k masks, the motion energy, its autograd score (finite
differences in fp64), the MotionGuidance hook (which samples, by how much), reference latents by DDIM
inversion, and the hook inside ConsistencyDistillation.teacher_step.

Tiny real UNet3DConditionModel (blocks 16/32, 4 frames of 4x4 latents with 48 channels), CPU.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from t2vturbo.backbones.unet3d import tiny_backbone
from t2vturbo.diffusion import (
    alpha_sigma,
    ddim_grid,
    ddim_step,
    make_alphas_cumprod,
    to_x0_eps,
)
from t2vturbo.guidance import (
    ENERGY_SCALE,
    LAMBDA,
    LAYER_SCALE,
    PAPER_LAMBDA,
    MotionGuidance,
    attention_maps,
    capture_temporal_attention,
    ddim_invert,
    guidance_coefficient,
    list_temporal_attention_layers,
    motion_energy,
    motion_score,
    reference_maps,
    select_layers,
    topk_mask,
)

B, NF, HW = 2, 4, 4  # batch, frames, latent side (16x16 pixels, pixel-unshuffle x4)
C = 48
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bb():
    return tiny_backbone(vae="pixel_unshuffle", block_out_channels=(16, 32))


@pytest.fixture(scope="module")
def inputs(bb):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(B, C, NF, HW, HW, generator=g)
    z0 = torch.randn(B, C, NF, HW, HW, generator=g)
    t = torch.tensor([499, 899])
    cond = bb.encode_text(["a red circle moving left", "a blue square moving up"])
    return z, z0, t, cond


# ---------------------------------------------------------------------------------------------
# Capture
# ---------------------------------------------------------------------------------------------
def test_layer_listing_and_selection(bb):
    all_layers = list_temporal_attention_layers(bb.teacher)
    assert all(n.endswith("attn1") for n in all_layers)
    assert "transformer_in.transformer_blocks.0.attn1" in all_layers
    dec = select_layers(bb.teacher)  # default: the decoder's temporal self-attentions
    assert dec == [
        "up_blocks.1.temp_attentions.0.transformer_blocks.0.attn1",
        "up_blocks.1.temp_attentions.1.transformer_blocks.0.attn1",
    ]
    assert select_layers(bb.teacher, "all") == all_layers
    assert select_layers(bb.teacher, ["mid_block.*"]) == [
        "mid_block.temp_attentions.0.transformer_blocks.0.attn1"
    ]
    with pytest.raises(ValueError, match="no temporal self-attention layer matches"):
        select_layers(bb.teacher, ["up_blocks.9.*"])


@pytest.mark.parametrize("layers", [None, "all"])
def test_capture_is_bit_exact_and_restores_processors(bb, inputs, layers):
    z, _, t, cond = inputs
    unet = bb.teacher.unet
    before = {n: m.processor for n, m in unet.named_modules() if hasattr(m, "processor")}
    with torch.no_grad():
        ref = bb.teacher(z, t, cond)
    zg = z.clone().requires_grad_(True)
    ref_grad = bb.teacher(zg, t, cond)
    with capture_temporal_attention(bb.teacher, layers) as store:
        with torch.no_grad():
            out = bb.teacher(z, t, cond)
        maps = store.pop()
        out_grad = bb.teacher(zg, t, cond)
    assert torch.equal(out, ref)  # bit for bit
    assert torch.equal(out_grad, ref_grad)
    assert len(maps) == len(select_layers(bb.teacher, layers))
    after = {n: m.processor for n, m in unet.named_modules() if hasattr(m, "processor")}
    assert all(after[n] is before[n] for n in before)
    # restored on exceptions too
    with pytest.raises(RuntimeError, match="boom"):
        with capture_temporal_attention(bb.teacher):
            raise RuntimeError("boom")
    assert all(m.processor is before[n] for n, m in unet.named_modules() if hasattr(m, "processor"))


def test_captured_probs_shape_rows_and_recomputation(bb, inputs):
    z, _, t, cond = inputs
    unet = bb.teacher.unet
    name = select_layers(bb.teacher)[0]
    attn = dict(unet.named_modules())[name]
    seen = {}

    def pre_hook(module, args, kwargs):
        seen["x"] = kwargs.get("hidden_states", args[0] if args else None).detach().clone()

    h = attn.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        with capture_temporal_attention(bb.teacher) as store, torch.no_grad():
            bb.teacher(z, t, cond)
            maps = store.pop()
    finally:
        h.remove()
    a = maps[name]
    heads = attn.heads
    assert a.shape == (B * HW * HW, heads, NF, NF)  # [B*h*w, heads, F, F]
    torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]), rtol=0, atol=1e-6)
    # independent recomputation from the layer's q/k weights on the captured input [B*h*w, F, C]
    x = seen["x"]
    assert x.shape[:2] == (B * HW * HW, NF)
    q = F.linear(x, attn.to_q.weight, attn.to_q.bias)
    k = F.linear(x, attn.to_k.weight, attn.to_k.bias)
    d = q.shape[-1] // heads
    q = q.reshape(x.shape[0], NF, heads, d).transpose(1, 2)
    k = k.reshape(x.shape[0], NF, heads, d).transpose(1, 2)
    expect = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)
    torch.testing.assert_close(a, expect, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Mask and energy (pure)
# ---------------------------------------------------------------------------------------------
def test_topk_mask_picks_argmax_per_row():
    a = torch.rand(6, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    m = topk_mask(a, 1)
    assert m.dtype == torch.bool and m.shape == a.shape
    assert torch.equal(m.sum(-1), torch.ones(6, 2, 5, dtype=torch.long))
    assert torch.equal(m.float().argmax(-1), a.argmax(-1))
    m2 = topk_mask(a, 2)
    top2 = a.sort(-1, descending=True).indices[..., :2]
    assert torch.equal(m2, torch.zeros_like(m2).scatter_(-1, top2, True))
    with pytest.raises(ValueError):
        topk_mask(a, 6)


def test_energy_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    bsz, hw, heads, f = 2, 3, 2, 4
    maps = [torch.rand(bsz * hw, heads, f, f, generator=g) for _ in range(3)]
    refs = [torch.rand(bsz * hw, heads, f, f, generator=g) for _ in range(3)]
    masks = [topk_mask(r, 1) for r in refs]
    # reference form: 100 * mean_l(100 * F.mse_loss(ref[mask], map[mask]))
    expect = (
        100.0 * torch.stack([100.0 * F.mse_loss(r[m], a[m]) for a, r, m in zip(maps, refs, masks)]).mean()
    )
    e = motion_energy(maps, refs, masks)
    torch.testing.assert_close(e, expect, rtol=1e-6, atol=0)
    # by explicit loops
    tot = 0.0
    for a, r, m in zip(maps, refs, masks):
        vals = [float(a[idx] - r[idx]) ** 2 for idx in m.nonzero().tolist() for idx in [tuple(idx)]]
        tot += LAYER_SCALE * sum(vals) / len(vals)
    assert abs(float(e) - ENERGY_SCALE * tot / 3) < 1e-4 * abs(float(e))
    # per sample: split the B*h*w rows batch-major; with k=1 the batch energy is their mean
    per = motion_energy(maps, refs, masks, batch_size=bsz)
    assert per.shape == (bsz,)
    for b in range(bsz):
        rows = slice(b * hw, (b + 1) * hw)
        eb = motion_energy([a[rows] for a in maps], [r[rows] for r in refs], [m[rows] for m in masks])
        torch.testing.assert_close(per[b], eb, rtol=1e-6, atol=0)
    torch.testing.assert_close(per.mean(), e, rtol=1e-6, atol=0)
    # dicts are matched by key; other scales
    dm = {f"l{i}": a for i, a in enumerate(maps)}
    dr = {f"l{i}": r for i, r in reversed(list(enumerate(refs)))}
    dk = {f"l{i}": m for i, m in enumerate(masks)}
    torch.testing.assert_close(motion_energy(dm, dr, dk), e)
    torch.testing.assert_close(motion_energy(maps, refs, masks, scale=1.0, layer_scale=1.0), e / 1e4)


def test_constants_match_reference():
    assert (LAMBDA, ENERGY_SCALE, LAYER_SCALE) == (0.05, 100.0, 100.0)
    assert PAPER_LAMBDA == pytest.approx(500.0)
    ac = make_alphas_cumprod()
    t = torch.tensor([4, 999])
    c = guidance_coefficient(ac, t, torch.zeros(2, 1))
    torch.testing.assert_close(c.reshape(-1), (1 - ac[t].sqrt()).sqrt())


# ---------------------------------------------------------------------------------------------
# Score
# ---------------------------------------------------------------------------------------------
def test_score_matches_finite_differences_fp64(bb, inputs):
    z, z0, t, cond = inputs
    teacher = copy.deepcopy(bb.teacher).double()
    cond = cond.double()
    grid = ddim_grid(10)
    index = torch.tensor([4, 8])
    tt = grid[index]
    ref = reference_maps(
        teacher,
        z0.double(),
        index,
        grid,
        cond,
        bb.alphas_cumprod,
        "epsilon",
        reference="noise",
        noise=torch.randn(z0.shape, generator=torch.Generator().manual_seed(3)),
    )
    zt = z.double()
    score, energy = motion_score(teacher, zt, tt, cond, ref)
    assert score.dtype == torch.float64
    assert score.shape == zt.shape and energy.shape == (B,) and bool((energy > 0).all())

    def total_energy(x):
        maps = attention_maps(teacher, x, tt, cond, ref.layers)
        return float(motion_energy(maps, ref.maps, ref.masks, batch_size=B).sum())

    assert total_energy(zt) == pytest.approx(float(energy.sum()), rel=1e-12)
    g = torch.Generator().manual_seed(7)
    h = 1e-4
    for _ in range(3):
        v = torch.randn(zt.shape, generator=g, dtype=torch.float64)
        fd = (total_energy(zt + h * v) - total_energy(zt - h * v)) / (2 * h)
        an = float((score.double() * v).sum())
        assert fd == pytest.approx(an, rel=1e-5, abs=1e-9)
    # per-sample energy -> per-sample score: moving sample 1 only does not change sample 0's score
    v = torch.zeros_like(zt)
    v[1] = torch.randn(zt[1].shape, generator=g, dtype=torch.float64)
    s2, _ = motion_score(teacher, zt + 0.5 * v, tt, cond, ref)
    torch.testing.assert_close(s2[0], score[0], rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# MotionGuidance hook
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reference", ["noise", "invert"])
def test_guidance_applies_only_to_noisy_fraction_exactly(bb, reference):
    grid = ddim_grid(10)  # N = 10: guided where n >= 5
    mg = MotionGuidance(bb, grid, lam=0.05, tau=0.5, reference=reference, seed=3)
    g = torch.Generator().manual_seed(5)
    z0 = torch.randn(3, C, NF, HW, HW, generator=g)
    z_t = torch.randn(3, C, NF, HW, HW, generator=g)
    eps = torch.randn(3, C, NF, HW, HW, generator=g)
    index = torch.tensor([4, 5, 9])
    t = grid[index]
    cond = bb.encode_text(["a red circle", "a green square moving left", "a blue triangle moving up"])
    batch = {"latents": z0, "positions": [10, 11, 12], "caption": ["", "", ""]}
    assert mg.guided(t).tolist() == [False, True, True]
    out = mg(z_t, t, cond, eps, batch)
    assert torch.equal(out[0], eps[0])  # n = 4 < (1 - tau) N: untouched, bit for bit
    # independent: reference + score of the guided samples, then eps - lam sqrt(1 - sqrt(ab)) score
    ref = mg.reference_for(z0[1:], t[1:], cond[1:], [11, 12])
    score, energy = motion_score(bb.teacher, z_t[1:], t[1:], cond[1:], ref)
    ab = bb.alphas_cumprod[t[1:]].reshape(-1, 1, 1, 1, 1)
    expect = eps[1:] - 0.05 * (1 - ab.sqrt()).sqrt() * score
    torch.testing.assert_close(out[1:], expect, rtol=1e-6, atol=1e-7)
    assert not torch.equal(out[1:], eps[1:])
    assert mg.stats["mg_fraction"] == pytest.approx(2 / 3)
    assert mg.stats["mg_score_abs"] == pytest.approx(float(score.abs().mean()), rel=1e-5)
    assert mg.stats["mg_energy"] == pytest.approx(float(energy.mean()), rel=1e-5)
    # the student's eta follows the same per-sample condition
    assert mg.student_eta(t, torch.full((3,), 0.05)).tolist() == pytest.approx([0.0, 0.05, 0.05])
    # nothing guided: eps returned as is, no latents needed
    out0 = mg(z_t[:1], t[:1], cond[:1], eps[:1], None)
    assert out0 is eps[:1] or torch.equal(out0, eps[:1])
    assert mg.stats["mg_fraction"] == 0.0
    with pytest.raises(ValueError, match="latents"):
        mg(z_t, t, cond, eps, {"positions": [0, 1, 2]})


@pytest.mark.parametrize("reference", ["noise", "invert"])
def test_zero_energy_and_score_at_the_reference(bb, reference):
    grid = ddim_grid(10)
    mg = MotionGuidance(bb, grid, reference=reference, seed=1)
    g = torch.Generator().manual_seed(9)
    z0 = torch.randn(B, C, NF, HW, HW, generator=g)
    eps = torch.randn(B, C, NF, HW, HW, generator=g)
    t = grid[torch.tensor([6, 9])]
    cond = bb.encode_text(["a red circle moving left", "a blue square moving up"])
    ref = mg.reference_for(z0, t, cond, [0, 1])
    score, energy = motion_score(bb.teacher, ref.latents, t, cond, ref)
    assert float(energy.abs().max()) < 1e-10
    assert float(score.abs().max()) < 1e-8
    out = mg(ref.latents, t, cond, eps, {"latents": z0, "positions": [0, 1]})
    torch.testing.assert_close(out, eps, rtol=0, atol=1e-9)


def test_teacher_parameters_get_no_grad(bb, inputs):
    z, z0, t, cond = inputs
    grid = ddim_grid(10)
    mg = MotionGuidance(bb, grid, reference="noise")
    params = list(bb.teacher.parameters())
    assert all(p.grad is None for p in params)
    try:
        for p in params:  # even a teacher whose weights require grad gets no .grad
            p.requires_grad_(True)
        tt = grid[torch.tensor([7, 9])]
        with torch.no_grad():  # as inside ConsistencyDistillation.teacher_step
            out = mg(z, tt, cond, torch.zeros_like(z), {"latents": z0, "positions": [0, 1]})
        assert mg.stats["mg_fraction"] == 1.0 and float(out.abs().max()) > 0
    finally:
        for p in params:
            p.requires_grad_(False)
    assert all(p.grad is None for p in params)


def test_score_through_an_activation_checkpointed_teacher(bb, inputs):
    from t2vturbo.backbones.unet3d import enable_block_checkpointing

    z, z0, t, cond = inputs
    grid = ddim_grid(10)
    index = torch.tensor([6, 9])
    ref = reference_maps(
        bb.teacher, z0, index, grid, cond, bb.alphas_cumprod, reference="noise", noise=torch.randn_like(z0)
    )
    plain, e_plain = motion_score(bb.teacher, z, grid[index], cond, ref)
    ckpt_teacher = copy.deepcopy(bb.teacher)
    enable_block_checkpointing(ckpt_teacher.unet)  # blocks recomputed in backward, through our processors
    score, energy = motion_score(ckpt_teacher, z, grid[index], cond, ref)
    torch.testing.assert_close(energy, e_plain, rtol=0, atol=0)
    torch.testing.assert_close(score, plain, rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------------------------------------
# DDIM inversion reference
# ---------------------------------------------------------------------------------------------
class GaussianEps(nn.Module):
    """The exact eps-predictor for data ~ N(mu, sd^2 I): eps(z, t) = s (z - a mu) / (a^2 sd^2 + s^2)."""

    def __init__(self, ac, mu=0.3, sd=0.5):
        super().__init__()
        self.ac, self.mu, self.sd = ac, mu, sd

    def forward(self, z, t, cond):
        a, s = alpha_sigma(self.ac, t, z)
        return s * (z - a * self.mu) / (a * a * self.sd**2 + s * s)


def _ddim_back(model, z, index, grid, ac):
    for i in range(int(index), -1, -1):
        ti = grid[i].reshape(1)
        x0, eps = to_x0_eps(model(z, ti, None), z, ti, ac, "epsilon")
        z = ddim_step(x0, eps, grid[i - 1].reshape(1) if i > 0 else torch.zeros(1, dtype=torch.long), ac)
    return z


def test_inversion_then_ddim_recovers_z0_for_known_eps():
    ac = make_alphas_cumprod()
    model = GaussianEps(ac)
    g = torch.Generator().manual_seed(0)
    z0 = 0.3 + 0.5 * torch.randn(3, 2, 2, 2, 2, generator=g)
    errs = {}
    for n_grid in (50, 200):
        grid = ddim_grid(n_grid)
        index = torch.tensor([n_grid - 1, n_grid // 2, n_grid // 5])  # per-sample targets, batched
        zr = ddim_invert(model, z0, index, grid, torch.zeros(3, 1, 1), ac, "epsilon")
        err = 0.0
        for b in range(3):
            t = grid[index[b]]
            # the probability-flow ODE of Gaussian data keeps (z_t - a_t mu) / sqrt(a_t^2 sd^2 + s_t^2)
            a, s = alpha_sigma(ac, t, z0)
            a0, s0 = alpha_sigma(ac, torch.tensor(0), z0)
            exact = (
                a * 0.3
                + (a * a * 0.25 + s * s).sqrt() * (z0[b] - a0 * 0.3) / (a0 * a0 * 0.25 + s0 * s0).sqrt()
            )
            torch.testing.assert_close(zr[b], exact, rtol=0, atol=0.06)
            back = _ddim_back(model, zr[b : b + 1], index[b], grid, ac)[0]
            err = max(err, float((back - z0[b]).abs().max()))
        errs[n_grid] = err
    assert errs[200] < 0.02  # DDIM inversion -> DDIM sampling round trip recovers z0
    assert errs[200] < errs[50] / 2  # and converges with the grid (first order)


def test_inversion_batches_per_sample_targets_and_strides(bb, inputs):
    _, z0, _, cond = inputs
    grid = ddim_grid(10)
    index = torch.tensor([2, 5])
    both = ddim_invert(bb.teacher, z0, index, grid, cond, bb.alphas_cumprod, "epsilon")
    for b in range(B):
        one = ddim_invert(
            bb.teacher, z0[b : b + 1], index[b : b + 1], grid, cond[b : b + 1], bb.alphas_cumprod, "epsilon"
        )
        torch.testing.assert_close(both[b : b + 1], one, rtol=1e-5, atol=1e-5)
    # stride: coarser sub-grid that still ends exactly at the target; stride >= index+1 is one step
    one_step = ddim_invert(bb.teacher, z0, index, grid, cond, bb.alphas_cumprod, "epsilon", stride=100)
    tt = grid[index]
    with torch.no_grad():
        eps = bb.teacher(z0, tt, cond)
    a, s = alpha_sigma(bb.alphas_cumprod, tt, z0)
    a0, s0 = alpha_sigma(bb.alphas_cumprod, torch.zeros(B, dtype=torch.long), z0)
    torch.testing.assert_close(one_step, a * (z0 - s0 * eps) / a0 + s * eps, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Config and the objective's hook
# ---------------------------------------------------------------------------------------------
def test_motion_yaml_builds_guidance(bb):
    from t2vturbo.config import validate  # the yaml holds only what differs from GuidanceConfig's defaults

    cfg = validate(
        {"guidance": OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "guidance" / "motion.yaml"))}
    ).guidance
    assert cfg.motion is True
    mg = MotionGuidance.from_config(cfg, bb, ddim_grid(200), seed=0)
    assert (mg.lam, mg.tau, mg.reference, mg.topk) == (LAMBDA, 0.5, "invert", 1)
    assert (mg.energy_scale, mg.layer_scale) == (ENERGY_SCALE, LAYER_SCALE)
    assert mg.layers == select_layers(bb.teacher)


def test_hook_inside_consistency_distillation_teacher_step(bb, inputs):
    from t2vturbo.train.objectives import ConsistencyDistillation

    z, z0, _, cond = inputs
    ocfg = SimpleNamespace(num_ddim_timesteps=10, skip=1, w_min=5.0, w_max=15.0, guidance_form="lcm")
    obj = ConsistencyDistillation(ocfg, bb, seed=0)
    uncond = bb.null_cond(B)
    w = torch.tensor([6.0, 8.0])
    t_start, t_end = obj.grid[torch.tensor([3, 8])], obj.grid[torch.tensor([2, 7])]
    plain = obj.teacher_step(z, t_start, t_end, cond, uncond, w)
    obj.motion_guidance = MotionGuidance(bb, obj.grid, reference="noise")
    guided = obj.teacher_step(z, t_start, t_end, cond, uncond, w, {"latents": z0, "positions": [0, 1]})
    assert torch.equal(guided[0], plain[0])  # n = 3 < 5: not guided
    assert not torch.allclose(guided[1], plain[1])
    # the DDIM step moves z by s_{t_end} * (change of eps) = -s_{t_end} lam c(t) score
    mg = obj.motion_guidance
    ref = mg.reference_for(z0[1:], t_start[1:], cond[1:], [1])
    score, _ = motion_score(bb.teacher, z[1:], t_start[1:], cond[1:], ref)
    _, s_end = alpha_sigma(bb.alphas_cumprod, t_end[1:], score)
    c = guidance_coefficient(bb.alphas_cumprod, t_start[1:], score)
    torch.testing.assert_close(guided[1:] - plain[1:], -s_end * mg.lam * c * score, rtol=1e-4, atol=1e-6)
    assert mg.stats["mg_fraction"] == 0.5
    assert all(p.grad is None for p in bb.teacher.parameters())
