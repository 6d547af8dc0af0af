"""Component tests for t2vturbo.backbones (UNet3D adapter, PixelUnshuffleVAE, word tokenizer,
GuidedDenoiser student, loading from a diffusers-layout folder) and backbones.build_backbone.

Everything uses the tiny random configs (4 frames of 16x16 pixels, batch 2) and runs on a CPU.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from t2vturbo.backbones import (
    GuidedDenoiser,
    UNet3DBackbone,
    check_model_dir,
    load_backbone,
    tiny_backbone,
    write_tiny_model_dir,
)
from t2vturbo.backbones.pixel_vae import PixelUnshuffleVAE
from t2vturbo.backbones.unet3d import TOY_WORDS, build_word_tokenizer

B, NF, S = 2, 4, 16
PIX = dict(vae="pixel_unshuffle", block_out_channels=(16, 32))  # 48 x 4 x 4 x 4 latents


@pytest.fixture(scope="module")
def bb_kl():
    return tiny_backbone()


@pytest.fixture(scope="module")
def bb_pix():
    return tiny_backbone(**PIX)


def _video(seed: int = 0, b: int = B, f: int = NF, s: int = S) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, f, 3, s, s, generator=g) * 2 - 1


def _inputs(bb, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c, f, h, w = bb.latent_shape(NF, S, S)
    z = torch.randn(B, c, f, h, w, generator=g)
    t = torch.tensor([17, 801])
    cond = bb.encode_text(["a red circle moving left", "a blue square moving up fast"])
    return z, t, cond


def _ref_unshuffle(x: torch.Tensor, f: int) -> torch.Tensor:
    """Pixel-unshuffle written with view/permute: out[n, c*f*f + i*f + j, y, x] = in[n, c, y*f+i, x*f+j]."""
    n, c, h, w = x.shape
    return (
        x.reshape(n, c, h // f, f, w // f, f).permute(0, 1, 3, 5, 2, 4).reshape(n, c * f * f, h // f, w // f)
    )


def _ref_guidance_scale_embedding(w: torch.Tensor, dim: int = 256) -> torch.Tensor:
    """diffusers' ``get_guidance_scale_embedding`` (LCM pipeline), written out."""
    w = w.reshape(-1).float() * 1000.0
    half = dim // 2
    e = torch.log(torch.tensor(10000.0)) / (half - 1)
    e = torch.exp(torch.arange(half, dtype=torch.float32) * -e)
    e = w[:, None] * e[None, :]
    e = torch.cat([torch.sin(e), torch.cos(e)], dim=1)
    if dim % 2 == 1:
        e = F.pad(e, (0, 1))
    return e


def _perturb(*modules, seed: int = 1, std: float = 0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in modules:
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)


# ============================================================================ text encoder / tokenizer


def test_encode_text_shape_and_null_cond(bb_kl):
    cond = bb_kl.encode_text(["a red circle moving left", "zzz qqq"])
    assert cond.shape == (2, 16, 32) and cond.dtype == torch.float32
    assert not cond.requires_grad
    assert not torch.equal(cond[0], cond[1])
    assert torch.equal(cond, bb_kl.encode_text(["a red circle moving left", "zzz qqq"]))
    # Case-insensitive all the way to the embedding.
    assert torch.equal(bb_kl.encode_text(["A RED Circle"]), bb_kl.encode_text(["a red circle"]))
    null = bb_kl.null_cond(3)
    assert null.shape == (3, 16, 32)
    assert torch.equal(null, bb_kl.encode_text([""] * 3))


def test_word_tokenizer_ids_padding_case():
    tok = build_word_tokenizer()
    assert tok.model_max_length == 16
    assert len(tok) == 4 + len(set(TOY_WORDS))
    ids = {w: tok.convert_tokens_to_ids(w) for w in TOY_WORDS}
    # Documented layout: [PAD]=0, [UNK]=1, [BOS]=2, [EOS]=3, then the words in order.
    assert [ids[w] for w in TOY_WORDS] == list(range(4, 4 + len(TOY_WORDS)))
    assert len(set(ids.values())) == len(TOY_WORDS)
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2, 3)

    enc = tok(
        ["a red circle", "A RED Circle", "a zzz circle", ""],
        padding="max_length",
        max_length=16,
        truncation=True,
        return_tensors="pt",
    )
    x = enc.input_ids
    assert x.shape == (4, 16) and x.dtype == torch.long
    expect = [2, ids["a"], ids["red"], ids["circle"], 3] + [0] * 11
    assert x[0].tolist() == expect
    assert x[1].tolist() == expect  # lower-cased
    assert x[2].tolist() == [2, ids["a"], 1, ids["circle"], 3] + [0] * 11  # unknown -> [UNK]=1
    assert x[3].tolist() == [2, 3] + [0] * 14
    assert enc.attention_mask[0].tolist() == [1] * 5 + [0] * 11

    # Longer than max_length: truncated to 16 with BOS first and EOS kept last.
    long = " ".join(["red"] * 30)
    y = tok([long], padding="max_length", max_length=16, truncation=True).input_ids[0]
    assert y == [2] + [ids["red"]] * 14 + [3]


def test_backbone_tokenizer_is_the_word_tokenizer(bb_kl):
    a = bb_kl.tokenizer(["the big yellow triangle standing still"]).input_ids
    b = build_word_tokenizer()(["the big yellow triangle standing still"]).input_ids
    assert a == b and 1 not in a[0]


# ============================================================================ VAEs


def test_autoencoder_kl_encode_decode_shapes_and_layout(bb_kl):
    v = _video(0)
    assert bb_kl.latent_shape(NF, S, S) == (4, NF, S // 2, S // 2)
    assert bb_kl.latent_shape(NF, 32, 32) == (4, NF, 16, 16)
    z = bb_kl.encode_video(v)
    assert z.shape == (B, *bb_kl.latent_shape(NF, S, S))
    assert torch.equal(z, bb_kl.encode_video(v))  # posterior mean: deterministic
    # Frame f of the latent is the per-frame VAE encoding of frame f (layout [B, C, F, h, w]).
    scale = bb_kl.vae.config.scaling_factor
    assert bb_kl.vae_scale == scale
    with torch.no_grad():
        for f in (0, NF - 1):
            zf = bb_kl.vae.encode(v[:, f]).latent_dist.mode() * scale
            torch.testing.assert_close(z[:, :, f], zf, rtol=1e-5, atol=1e-6)

    x = bb_kl.decode_latents(z * 50)  # large latents -> decoder output needs the clamp
    assert x.shape == (B, NF, 3, S, S)
    assert x.min() >= -1 and x.max() <= 1
    with torch.no_grad():
        ref = bb_kl.vae.decode(z[:, :, 1] * 50 / scale).sample.clamp(-1, 1)
    torch.testing.assert_close(x[:, 1].detach(), ref, rtol=1e-5, atol=1e-5)

    # decode_latents is differentiable w.r.t. the latent.
    zz = z.clone().requires_grad_(True)
    bb_kl.decode_latents(zz).sum().backward()
    assert zz.grad is not None and zz.grad.abs().sum() > 0


def test_pixel_unshuffle_backbone_exact_roundtrip(bb_pix):
    v = _video(1)
    assert isinstance(bb_pix.vae, PixelUnshuffleVAE)
    assert bb_pix.latent_channels == 48
    assert bb_pix.latent_shape(NF, S, S) == (48, NF, 4, 4)
    assert bb_pix.latent_shape(NF, 32, 32) == (48, NF, 8, 8)
    z = bb_pix.encode_video(v)
    assert z.shape == (B, *bb_pix.latent_shape(NF, S, S))
    # Independent computation: per frame, reshape-based unshuffle; frames moved to dim 2.
    ref = _ref_unshuffle(v.reshape(B * NF, 3, S, S), 4).reshape(B, NF, 48, 4, 4).permute(0, 2, 1, 3, 4)
    assert torch.equal(z, ref)
    assert torch.equal(_ref_unshuffle(v[:, 0], 4), F.pixel_unshuffle(v[:, 0], 4))
    # Exact inverse (max abs error 0).
    x = bb_pix.decode_latents(z)
    assert x.shape == v.shape
    assert (x - v).abs().max().item() == 0.0


def test_pixel_unshuffle_vae_scaling_factor_and_save_load(tmp_path):
    bb = tiny_backbone(**PIX)
    bb.vae = PixelUnshuffleVAE(factor=4, scaling_factor=0.5)
    v = _video(2)
    z = bb.encode_video(v)
    ref = _ref_unshuffle(v.reshape(B * NF, 3, S, S), 4).reshape(B, NF, 48, 4, 4).permute(0, 2, 1, 3, 4)
    assert torch.equal(z, ref * 0.5)
    assert torch.equal(bb.decode_latents(z), v)

    vae = PixelUnshuffleVAE(factor=2, scaling_factor=0.25)
    vae.save_pretrained(tmp_path / "vae")
    cfg = json.loads((tmp_path / "vae" / "config.json").read_text())
    assert cfg["_class_name"] == "PixelUnshuffleVAE"
    back = PixelUnshuffleVAE.from_pretrained(tmp_path / "vae")
    assert back.factor == 2 and back.config.scaling_factor == 0.25 and back.config.latent_channels == 12
    x = v[:, 0]
    assert torch.equal(back.encode(x).latent_dist.mode(), F.pixel_unshuffle(x, 2))
    assert torch.equal(back.decode(back.encode(x).latent_dist.sample()).sample, x)


def test_tiny_vae_unknown_raises():
    with pytest.raises(ValueError, match="autoencoder_kl"):
        tiny_backbone(vae="nope")


# ============================================================================ loading from a folder


def _alphas_cumprod_ref(schedule, n, b0, b1):
    if schedule == "scaled_linear":
        betas = torch.linspace(math.sqrt(b0), math.sqrt(b1), n, dtype=torch.float64) ** 2
    else:
        betas = torch.linspace(b0, b1, n, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


@pytest.fixture(scope="module")
def kl_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_kl")
    write_tiny_model_dir(d)
    return d


def test_from_pretrained_bit_identical_teacher(kl_dir, bb_kl):
    loaded = UNet3DBackbone.from_pretrained(kl_dir)
    assert loaded.model_dir == str(kl_dir)
    assert loaded.prediction_type == "epsilon"
    assert loaded.num_train_timesteps == 1000
    assert loaded.latent_channels == bb_kl.latent_channels == 4
    assert loaded.alphas_cumprod.dtype == torch.float32 and loaded.alphas_cumprod.shape == (1000,)
    assert torch.equal(loaded.alphas_cumprod, bb_kl.alphas_cumprod)
    torch.testing.assert_close(
        loaded.alphas_cumprod.double(),
        _alphas_cumprod_ref("scaled_linear", 1000, 0.00085, 0.012),
        rtol=1e-6,
        atol=0,
    )
    # Frozen and in eval mode after loading too.
    assert not loaded.teacher.training and not any(p.requires_grad for p in loaded.teacher.parameters())

    sd0, sd1 = bb_kl.teacher.state_dict(), loaded.teacher.state_dict()
    assert sd0.keys() == sd1.keys()
    assert all(torch.equal(sd0[k], sd1[k]) for k in sd0)

    z, t, cond = _inputs(bb_kl)
    assert torch.equal(loaded.encode_text(["a red circle moving left", "a blue square moving up fast"]), cond)
    with torch.no_grad():
        assert torch.equal(loaded.teacher(z, t, cond), bb_kl.teacher(z, t, cond))
    v = _video(3)
    assert torch.equal(loaded.encode_video(v), bb_kl.encode_video(v))
    with torch.no_grad():
        assert torch.equal(loaded.decode_latents(z[:, :4]), bb_kl.decode_latents(z[:, :4]))


def test_from_pretrained_v_prediction_pixel_vae_and_schedule(tmp_path):
    d = tmp_path / "vpred"
    write_tiny_model_dir(d, prediction_type="v_prediction", **PIX)
    ref = tiny_backbone(prediction_type="v_prediction", **PIX)
    loaded = UNet3DBackbone.from_pretrained(d)
    assert ref.prediction_type == loaded.prediction_type == "v_prediction"
    assert isinstance(loaded.vae, PixelUnshuffleVAE) and loaded.latent_channels == 48
    z, t, cond = _inputs(ref, seed=4)
    with torch.no_grad():
        assert torch.equal(loaded.teacher(z, t, cond), ref.teacher(z, t, cond))

    # The schedule comes from scheduler/scheduler_config.json.
    p = d / "scheduler" / "scheduler_config.json"
    cfg = json.loads(p.read_text())
    cfg.update(
        beta_schedule="linear",
        beta_start=0.0001,
        beta_end=0.02,
        num_train_timesteps=500,
        prediction_type="sample",
    )
    p.write_text(json.dumps(cfg))
    re = UNet3DBackbone.from_pretrained(d)
    assert re.prediction_type == "sample" and re.num_train_timesteps == 500
    torch.testing.assert_close(
        re.alphas_cumprod.double(), _alphas_cumprod_ref("linear", 500, 0.0001, 0.02), rtol=1e-6, atol=0
    )


def test_load_backbone_families(kl_dir):
    for fam in ("unet3d", "modelscope", "zeroscope"):
        assert isinstance(load_backbone(fam, str(kl_dir)), UNet3DBackbone)
    with pytest.raises(ValueError) as ei:
        load_backbone("nope", str(kl_dir))
    msg = str(ei.value)
    assert "nope" in msg and "unet3d" in msg and "available" in msg


def test_missing_folder_error_names_path_and_layout(tmp_path):
    missing = tmp_path / "no_such_teacher"
    for fn in (check_model_dir, UNet3DBackbone.from_pretrained):
        with pytest.raises(FileNotFoundError) as ei:
            fn(missing)
        msg = str(ei.value)
        assert str(missing) in msg
        for part in ("unet/", "vae/", "text_encoder/", "tokenizer/", "scheduler/scheduler_config.json"):
            assert part in msg
    # A file is not a folder.
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_model_dir(f)


def test_incomplete_folder_names_missing_file(kl_dir, tmp_path):
    d = tmp_path / "partial"
    shutil.copytree(kl_dir, d)
    assert check_model_dir(d) == d
    (d / "unet" / "config.json").unlink()
    for fn in (check_model_dir, UNet3DBackbone.from_pretrained):
        with pytest.raises(FileNotFoundError) as ei:
            fn(d)
        msg = str(ei.value)
        assert str(d) in msg
        assert "is missing unet/config.json;" in msg  # and nothing else is reported missing
    shutil.rmtree(d / "tokenizer")
    with pytest.raises(FileNotFoundError, match=r"is missing unet/config.json, tokenizer;"):
        check_model_dir(d)


# ============================================================================ student (GuidedDenoiser)


def _student(bb) -> GuidedDenoiser:
    s = bb.make_student()
    s.eval()  # temporal convs have dropout 0.1: eval for exact comparisons
    return s


def _projections(s):
    u = s.base.unet
    return u.time_embedding.cond_proj, u.motion_cond_proj, u.combine_proj


def _ref_condition(s, w, eta):
    """T2V-Turbo's conditioning written out: c = cond_proj(e_w), or combine_proj([cond_proj(e_w),
    motion_cond_proj(e_eta)]) when eta is given; [B, C0] (C0 = the sinusoid width)."""
    wp, mp, cp = (m.weight for m in _projections(s))
    c = F.linear(_ref_guidance_scale_embedding(torch.as_tensor(w, dtype=torch.float32).expand(2)), wp)
    if eta is None:
        return c
    e = _ref_guidance_scale_embedding(torch.as_tensor(eta, dtype=torch.float32).expand(2))
    return F.linear(torch.cat([c, F.linear(e, mp)], 1), cp)


def _ref_student(bb, s, z, t, cond, w, eta):
    """The teacher's UNet (a copy) with the student's weights, and _ref_condition added to the input of its
    time MLP (the timestep sinusoid) by a pre-hook: the official placement, computed independently."""
    unet = copy.deepcopy(bb.teacher.unet)
    own = {k: v for k, v in s.base.unet.state_dict().items() if k in unet.state_dict()}
    unet.load_state_dict(own, strict=True)
    extra = _ref_condition(s, w, eta)
    unet.time_embedding.register_forward_pre_hook(lambda m, args: (args[0] + extra, *args[1:]))
    return unet(z, t, encoder_hidden_states=cond, return_dict=False)[0]


def test_student_conditioning_is_official_and_random_initialised(bb_pix):
    """w (and eta) are projected onto the timestep sinusoid before the time MLP, with diffusers' own
    ``time_embedding.cond_proj`` (``time_cond_proj_dim`` = 256 in the UNet's config) for w and
    ``motion_cond_proj`` / ``combine_proj`` for eta; no bias, PyTorch's default (random) init as the official
    T2V-Turbo code."""
    s = _student(bb_pix)
    assert isinstance(s, GuidedDenoiser)
    c0 = 16  # block_out_channels[0]: the sinusoid width, linear_1's input
    wp, mp, cp = _projections(s)
    assert wp.weight.shape == (c0, 256) and mp.weight.shape == (c0, 256) and cp.weight.shape == (c0, 2 * c0)
    assert all(m.bias is None and m.weight.abs().min() > 0 for m in (wp, mp, cp))
    assert s.base.unet.config.time_cond_proj_dim == 256
    # registered where diffusers' TimestepEmbedding(cond_proj_dim=...) registers it
    assert list(s.base.unet.time_embedding._modules)[:3] == ["linear_1", "cond_proj", "act"]
    assert bb_pix.teacher.unet.time_embedding.cond_proj is None  # the teacher is untouched
    z, t, cond = _inputs(bb_pix)
    with torch.no_grad():
        for w, eta in [(3.0, 0.0), (7.0, 0.5), (12.0, None)]:
            torch.testing.assert_close(
                s(z, t, cond, w=w, eta=eta), _ref_student(bb_pix, s, z, t, cond, w, eta), rtol=1e-4, atol=1e-5
            )
    # The student is a copy: its UNet parameters equal the teacher's and are not shared.
    sp = dict(s.base.unet.named_parameters())
    for n, p in bb_pix.teacher.unet.named_parameters():
        assert torch.equal(p, sp[n]) and p.data_ptr() != sp[n].data_ptr()


def test_student_output_depends_on_w_and_eta(bb_pix):
    s = _student(bb_pix)
    z, t, cond = _inputs(bb_pix)
    with torch.no_grad():
        o3 = s(z, t, cond, w=3.0, eta=0.0)
        o7 = s(z, t, cond, w=7.0, eta=0.0)
        o7e = s(z, t, cond, w=7.0, eta=0.5)
        o7_absent = s(z, t, cond, w=7.0)
        o_none = s(z, t, cond)
        o_zero = s(z, t, cond, w=0.0)
        mixed = s(z, t, cond, w=torch.tensor([3.0, 7.0]), eta=torch.tensor([0.0, 0.5]))
    for a, b in [(o3, o7), (o7, o7e), (o7, o7_absent)]:  # eta absent skips combine_proj: not eta = 0
        assert (a - b).abs().max() > 1e-4
    assert torch.equal(o_none, o_zero)  # w None means w = 0
    # Per-sample w/eta: each sample gets its own embedding.
    torch.testing.assert_close(mixed[0], o3[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed[1], o7e[1], rtol=1e-5, atol=1e-5)
    # The base called directly without a condition is the teacher's function of the student's weights.
    with torch.no_grad():
        plain = s.base(z, t, cond)
        assert torch.equal(plain, bb_pix.teacher(z, t, cond))


def test_diffusers_timestep_cond_is_the_w_path(bb_pix):
    """With eta absent, the student is diffusers' own ``UNet3DConditionModel(timestep_cond=emb(w))``."""
    s = _student(bb_pix)
    z, t, cond = _inputs(bb_pix)
    with torch.no_grad():
        ref = s.base.unet(
            z,
            t,
            encoder_hidden_states=cond,
            timestep_cond=_ref_guidance_scale_embedding(torch.tensor([6.0, 6.0])),
        ).sample
        torch.testing.assert_close(s(z, t, cond, w=6.0), ref, rtol=1e-5, atol=1e-6)


def test_student_gradients(bb_pix):
    s = _student(bb_pix)
    z, t, cond = _inputs(bb_pix)
    s(z, t, cond, w=5.0, eta=0.5).square().mean().backward()
    for m in (*_projections(s), s.base.unet.conv_in, s.base.unet.time_embedding.linear_1):
        assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0
    # The teacher stays untouched.
    assert all(p.grad is None and not p.requires_grad for p in bb_pix.teacher.parameters())


def test_student_deepcopy_uses_its_own_projections(bb_pix):
    s = _student(bb_pix)
    c = copy.deepcopy(s)
    z, t, cond = _inputs(bb_pix)
    with torch.no_grad():
        o = s(z, t, cond, w=6.0, eta=0.2)
        assert torch.equal(c(z, t, cond, w=6.0, eta=0.2), o)
        _perturb(*_projections(c), seed=7)
        oc = c(z, t, cond, w=6.0, eta=0.2)
        assert torch.equal(s(z, t, cond, w=6.0, eta=0.2), o)
        assert (oc - o).abs().max() > 1e-4
        # Exactly one hook on the copy's cond_proj, bound to the copy's denoiser.
        hooks = list(c.base.unet.time_embedding.cond_proj._forward_hooks.values())
        assert len(hooks) == 1 and getattr(hooks[0], "__self__", None) is c.base
        # Perturbing the original does not change the copy.
        _perturb(*_projections(s), seed=8)
        assert torch.equal(c(z, t, cond, w=6.0, eta=0.2), oc)
        assert (s(z, t, cond, w=6.0, eta=0.2) - oc).abs().max() > 1e-4


def test_student_hook_leaves_no_state(bb_pix):
    s = _student(bb_pix)
    z, t, cond = _inputs(bb_pix)
    with torch.no_grad():
        s(z, t, cond, w=5.0, eta=0.5)
        assert s.base._motion_cond is None
        with pytest.raises(RuntimeError):
            s(z, t, cond[..., :7], w=5.0, eta=0.5)  # wrong text width: the UNet raises
        assert s.base._motion_cond is None
        # No leftover eta reaches a later call without one.
        assert torch.equal(s(z, t, cond, w=5.0), s(z, t, cond, w=5.0, eta=None))
        with pytest.raises(ValueError, match="no cond_proj"):
            bb_pix.teacher(z, t, cond, timestep_cond=torch.zeros(2, 256))


def test_student_gradient_checkpointing_same_output_and_grads():
    bb = tiny_backbone(gradient_checkpointing=True, **PIX)
    s_gc = bb.make_student()
    bb.gradient_checkpointing = False
    s = bb.make_student()
    # Train mode (checkpointing active) with dropout off so that outputs are deterministic.
    for m in (s, s_gc):
        m.train()
        for mod in m.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.0
    _perturb(*_projections(s), seed=9)
    _perturb(*_projections(s_gc), seed=9)
    z, t, cond = _inputs(bb)

    def count_calls(model):
        n = [0]
        hs = [
            m.register_forward_hook(lambda *a: n.__setitem__(0, n[0] + 1)) for m in model.base.unet.modules()
        ]
        return n, hs

    outs, counts = [], []
    for m in (s, s_gc):
        n, hs = count_calls(m)
        o = m(z, t, cond, w=5.0, eta=0.3)
        n_fwd = n[0]
        o.square().mean().backward()
        for h in hs:
            h.remove()
        outs.append(o.detach())
        counts.append((n_fwd, n[0]))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    assert counts[0][0] == counts[0][1]  # no recomputation without checkpointing
    assert counts[1][1] > counts[1][0]  # checkpointed blocks run again in backward
    pairs = [(_projections(s)[0], _projections(s_gc)[0]), (s.base.unet.conv_in, s_gc.base.unet.conv_in)]
    for a, b in pairs:
        torch.testing.assert_close(b.weight.grad, a.weight.grad, rtol=1e-4, atol=1e-6)
    # The plain-diffusion path with checkpointing works too.
    bb.gradient_checkpointing = True
    teacher = bb.trainable_teacher()
    teacher(z, t, cond).square().mean().backward()


# ============================================================================ teacher trainability


def test_teacher_frozen_then_trainable_teacher():
    bb = tiny_backbone(**PIX)
    for m in (bb.teacher, bb.vae, bb.text_encoder):
        assert not m.training
        assert not any(p.requires_grad for p in m.parameters())
    s = bb.make_student()
    assert s.training and all(p.requires_grad for p in s.parameters())
    assert not bb.teacher.training and not any(p.requires_grad for p in bb.teacher.parameters())

    t = bb.trainable_teacher()
    assert t is bb.teacher
    assert t.training and all(p.requires_grad for p in t.parameters())
    # The text encoder stays frozen.
    assert not any(p.requires_grad for p in bb.text_encoder.parameters())
    z, tt, cond = _inputs(bb)
    t(z, tt, cond).square().mean().backward()
    assert bb.teacher.unet.conv_out.weight.grad.abs().sum() > 0


# ============================================================================ backbones.build_backbone


def test_build_backbone_tiny_and_missing_path(tmp_path):
    from t2vturbo.backbones import build_backbone, check_paths
    from t2vturbo.config import ModelConfig, TinyModelConfig

    cfg = ModelConfig(tiny=TinyModelConfig(block_out_channels=[16, 32]))
    bb = build_backbone(cfg)
    assert isinstance(bb, UNet3DBackbone)
    assert isinstance(bb.vae, PixelUnshuffleVAE) and bb.latent_channels == 48
    ref = tiny_backbone(**PIX)
    sd, rsd = bb.teacher.state_dict(), ref.teacher.state_dict()
    assert sd.keys() == rsd.keys() and all(torch.equal(sd[k], rsd[k]) for k in sd)

    cfg2 = ModelConfig(
        tiny=TinyModelConfig(
            vae="autoencoder_kl",
            latent_channels=4,
            block_out_channels=[16, 32],
            prediction_type="v_prediction",
        )
    )
    bb2 = build_backbone(cfg2, gradient_checkpointing=True)
    assert bb2.latent_channels == 4 and bb2.prediction_type == "v_prediction" and bb2.gradient_checkpointing
    assert bb2.latent_shape(4, 16, 16) == (4, 4, 8, 8)

    missing = tmp_path / "not_here"
    with pytest.raises(FileNotFoundError) as ei:
        build_backbone(ModelConfig(path=str(missing)))
    assert str(missing) in str(ei.value)
    with pytest.raises(FileNotFoundError) as ei:
        check_paths(SimpleNamespace(model=ModelConfig(path=str(missing))))
    assert str(ei.value).startswith("model.path:") and str(missing) in str(ei.value)

    with pytest.raises(ValueError, match="unet3d"):
        build_backbone(ModelConfig(family="nope"))


def test_build_backbone_from_path(tmp_path):
    from t2vturbo.backbones import build_backbone
    from t2vturbo.config import ModelConfig

    d = tmp_path / "teacher"
    write_tiny_model_dir(d, **PIX)
    bb = build_backbone(ModelConfig(path=str(d)))
    assert bb.model_dir == str(d.resolve())
    ref = tiny_backbone(**PIX)
    z, t, cond = _inputs(ref, seed=3)
    with torch.no_grad():
        assert torch.equal(bb.teacher(z, t, cond), ref.teacher(z, t, cond))


def test_build_backbone_bf16_keeps_schedule_float32():
    from t2vturbo.backbones import build_backbone
    from t2vturbo.config import ModelConfig, TinyModelConfig

    bb = build_backbone(ModelConfig(tiny=TinyModelConfig(block_out_channels=[16, 32])), dtype=torch.bfloat16)
    assert next(bb.teacher.parameters()).dtype == torch.bfloat16
    assert next(bb.text_encoder.parameters()).dtype == torch.bfloat16
    ref = tiny_backbone(**PIX).alphas_cumprod
    assert bb.alphas_cumprod.dtype == torch.float32
    assert torch.equal(bb.alphas_cumprod, ref)


def test_text_token_std_makes_one_word_prompts_distinct():
    """With CLIP's init the frozen random encoder maps "moving left" / "moving right" to nearly the same
    states (the toy teacher could not learn direction on it); text_token_std=1 separates them. The
    redraw is seeded and touches only the token embeddings."""
    from t2vturbo.backbones.unet3d import tiny_components

    caps = ["a red circle moving left", "a red circle moving right"]

    def gap(te, tok):
        ids = tok(caps, padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
        with torch.no_grad():
            h = te(ids)[0]
        k = int((ids[0] != ids[1]).nonzero()[0])  # the direction word
        return float((h[0, k] - h[1, k]).pow(2).mean() / h.var())

    _, _, te0, tok, _ = tiny_components(seed=3)
    _, _, te1, _, _ = tiny_components(seed=3, text_token_std=1.0)
    _, _, te2, _, _ = tiny_components(seed=3, text_token_std=1.0)
    emb = "embeddings.token_embedding.weight"
    w = te1.state_dict()[emb]
    assert abs(float(w.std()) - 1.0) < 0.1 and float(te0.state_dict()[emb].std()) < 0.05
    assert torch.equal(w, te2.state_dict()[emb])  # seeded
    for k, v in te0.state_dict().items():  # everything else is CLIP's init, unchanged
        if k != emb:
            assert torch.equal(v, te1.state_dict()[k]), k
    assert gap(te1, tok) > 1.0 and gap(te1, tok) > 4 * gap(te0, tok)
