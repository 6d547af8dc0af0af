"""Component tests for the native VideoCrafter2 backbone (t2vturbo/backbones/videocrafter2.py,
vc2_unet.py, vc2_convert.py).

- the full-size modules, built on the meta device, have exactly the official checkpoint's tensor
  names and shapes (manifests/videocrafter2_512_v2.json), UNet 1,413,284,420 parameters;
- a tiny random configuration of the same classes: shapes, the student's official w / eta projections (the
  teacher bit for bit when they are zero), fps conditioning, the VAE / text-encoder converters against plain-torch references
  written from the LDM / open_clip layouts, loading a tiny ``model.ckpt`` in the official key
  layout, clear errors, and a 10-step distillation through the real Trainer followed by teacher
  DDIM and student 4-step sampling.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from t2vturbo.backbones import GuidedDenoiser, load_backbone
from t2vturbo.backbones.vc2_convert import (
    SCHEDULE_BUFFERS,
    TEXT_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    autoencoder_kl_config,
    clip_text_config,
    clip_text_to_open_clip,
    diffusers_vae_to_ldm,
    ldm_vae_to_diffusers,
    match_text_prefix,
    open_clip_text_to_clip,
    read_state_dict,
    split_checkpoint,
)
from t2vturbo.backbones.vc2_unet import VC2UNet, VC2UNetConfig
from t2vturbo.backbones.videocrafter2 import (
    MANIFEST,
    TINY_MERGES,
    VideoCrafter2Backbone,
    build_tiny_clip_tokenizer,
    tiny_backbone,
)

B, NF, S = 2, 4, 16  # 4 frames of 16x16 pixels -> latents 4 x 4 x 8 x 8
PROMPTS = ["a red circle moving left", "a blue square moving up"]
OFFICIAL_UNET_PARAMS = 1_413_284_420


@pytest.fixture(scope="module")
def bb():
    return tiny_backbone(seed=0)


@pytest.fixture(scope="module")
def manifest():
    return json.loads(MANIFEST.read_text())


def _shapes(sd) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


def _part(manifest, prefix) -> dict[str, tuple[int, ...]]:
    return {k[len(prefix) :]: tuple(s) for k, s in manifest["keys"].items() if k.startswith(prefix)}


def _meta(shapes) -> dict[str, torch.Tensor]:
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


# ============================================================================ full-size manifest
def test_full_size_modules_match_the_official_manifest(manifest):
    """UNet / VAE / text encoder built at full size on the meta device (no memory): exactly the
    official keys and shapes (0 missing, 0 unexpected, all shapes equal), after the converters."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = VC2UNet()  # defaults = inference_t2v_512_v2.0.yaml
        vae = AutoencoderKL(**autoencoder_kl_config())
        text = CLIPTextModel(CLIPTextConfig(**clip_text_config()))

    want = _part(manifest, UNET_PREFIX)
    got = _shapes(unet.state_dict())
    assert sorted(set(want) - set(got)) == [] and sorted(set(got) - set(want)) == []
    assert {k: s for k, s in got.items() if want[k] != s} == {}
    n_unet = sum(p.numel() for p in unet.parameters())
    print(
        f"\nVideoCrafter2 UNet: {n_unet:,} parameters in {len(got)} tensors (official count {OFFICIAL_UNET_PARAMS:,})"
    )
    assert n_unet == OFFICIAL_UNET_PARAMS == manifest["parameter_counts"]["model.diffusion_model"]
    assert len(got) == manifest["tensor_counts"]["model.diffusion_model"] == 1484

    ldm = _part(manifest, VAE_PREFIX)
    conv = _shapes(ldm_vae_to_diffusers(_meta(ldm)))
    assert conv == _shapes(vae.state_dict())  # same key set, same shapes
    assert len(conv) == len(ldm) == 248  # a bijection
    assert _shapes(diffusers_vae_to_ldm(_meta(conv))) == ldm
    assert sum(math.prod(s) for s in ldm.values()) == 83_653_863

    oc = _part(manifest, TEXT_PREFIX)
    text_sd, unused = open_clip_text_to_clip(_meta(oc))
    want_text = {k: s for k, s in _shapes(text.state_dict()).items() if not k.endswith("position_ids")}
    assert _shapes(match_text_prefix(text_sd, text)) == want_text
    assert sorted(unused) == ["logit_scale", "text_projection"]
    assert _shapes(clip_text_to_open_clip(_meta(_shapes(text_sd)))) == {
        k: s for k, s in oc.items() if k not in unused
    }

    # the checkpoint splitter accepts the whole official layout (+ schedule buffers) without leftovers
    full = _meta({k: tuple(s) for k, s in manifest["keys"].items()})
    full.update(_meta({k: tuple(s) for k, s in manifest["schedule_buffers"].items()}))
    parts = split_checkpoint(full)
    assert [len(parts[k]) for k in ("unet", "vae", "text", "schedule")] == [1484, 248, 294, 13]
    assert set(manifest["schedule_buffers"]) <= set(SCHEDULE_BUFFERS)


# ============================================================================ tiny: shapes, student, fps
def _inputs(bb, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, *bb.latent_shape(NF, S, S), generator=g)
    return z, torch.tensor([17, 801]), bb.encode_text(PROMPTS)


def test_tiny_shapes_and_tokens(bb):
    assert bb.latent_shape(NF, S, S) == (4, NF, S // 2, S // 2)
    assert bb.prediction_type == "epsilon" and bb.num_train_timesteps == 1000 and bb.fps == 8
    assert bb.vae_scale == pytest.approx(0.18215)
    video = torch.rand(B, NF, 3, S, S, generator=torch.Generator().manual_seed(1)) * 2 - 1
    z = bb.encode_video(video)
    assert z.shape == (B, 4, NF, S // 2, S // 2)
    z, t, cond = _inputs(bb)
    assert cond.shape == (B, 77, 32) and bb.null_cond(3).shape == (3, 77, 32)
    out = bb.teacher(z, t, cond)
    assert out.shape == z.shape and torch.isfinite(out).all()
    x = bb.decode_latents(z)
    assert x.shape == (B, NF, 3, S, S) and x.abs().max() <= 1
    # open_clip.tokenize layout: <start> tokens <end>, zero padded to 77 ("red</w>" is one merge)
    ids = bb.token_ids(["red", ""])
    sot, eot = len(bb.tokenizer) - 2, len(bb.tokenizer) - 1
    red = bb.tokenizer.convert_tokens_to_ids("red</w>")
    assert (
        ids.shape == (2, 77) and ids[0, :3].tolist() == [sot, red, eot] and ids[1, :2].tolist() == [sot, eot]
    )
    assert not ids[0, 3:].any() and not ids[1, 2:].any()
    long_ids = bb.token_ids(["a " * 200])
    assert long_ids[0, 0] == sot and long_ids[0, -1] == eot  # truncated to 77 with <end> kept


def test_student_has_the_official_projections_on_the_sinusoid(bb):
    """The student is the teacher's UNet plus T2V-Turbo-v2's ``time_cond_proj`` / ``motion_cond_proj`` /
    ``combine_proj`` (random init, no bias) right after ``fps_embedding``; with them zeroed it is the teacher
    bit for bit (they add to the sinusoid, nothing else changed). The official forward, computed
    independently, is checked in test_official_student.py."""
    z, t, cond = _inputs(bb)
    student = bb.make_student()
    assert isinstance(student, GuidedDenoiser) and student.training
    assert all(m.p == 0 for m in student.modules() if isinstance(m, torch.nn.Dropout))
    unet = student.base.unet
    mc = unet.config.model_channels
    extra = set(unet.state_dict()) - set(bb.teacher.unet.state_dict())
    assert extra == {"time_cond_proj.weight", "motion_cond_proj.weight", "combine_proj.weight"}
    assert unet.time_cond_proj.weight.shape == (mc, 256) and unet.combine_proj.weight.shape == (mc, 2 * mc)
    assert list(unet._modules)[:5] == [
        "time_embed",
        "fps_embedding",
        "time_cond_proj",
        "motion_cond_proj",
        "combine_proj",
    ]
    w, eta = torch.tensor([5.0, 14.0]), torch.tensor([0.0, 0.7])
    with torch.no_grad():
        ref = bb.teacher(z, t, cond)
        out = student(z, t, cond, w, eta)
        assert (out - ref).abs().max() > 1e-4  # random init: w and eta act from the start
        assert (student(z, t, cond, w, None) - out).abs().max() > 1e-4  # eta absent: combine_proj skipped
        assert (student(z, t, cond, torch.tensor([9.0, 9.0]), eta) - out).abs().max() > 1e-4
        for m in (unet.time_cond_proj, unet.motion_cond_proj, unet.combine_proj):
            m.weight.zero_()
        assert torch.equal(student(z, t, cond, w, eta), ref)
    assert not any(p.requires_grad for p in bb.teacher.parameters())


def test_fps_conditioning_changes_the_output(bb):
    z, t, cond = _inputs(bb)
    unet = bb.teacher.unet
    with torch.no_grad():
        a = unet(z, t, cond, fps=torch.tensor([8, 8]))
        b = unet(z, t, cond, fps=torch.tensor([24, 24]))
        mixed = unet(z, t, cond, fps=torch.tensor([8, 24]))
    assert torch.equal(a, bb.teacher(z, t, cond))  # the denoiser passes its fps (8)
    assert (a - b).abs().amax(dim=(1, 2, 3, 4)).min() > 1e-4
    torch.testing.assert_close(mixed[0], a[0], rtol=1e-5, atol=1e-6)  # per-sample condition
    torch.testing.assert_close(mixed[1], b[1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="fps"):
        unet(z, t, cond)


# ============================================================================ VAE converter
G = 8  # tiny group norm groups


def _gn(sd, p, x):
    return F.group_norm(x, G, sd[p + ".weight"], sd[p + ".bias"], eps=1e-6)


def _conv(sd, p, x, **kw):
    return F.conv2d(x, sd[p + ".weight"], sd[p + ".bias"], **kw)


def _ldm_resnet(sd, p, x):
    h = _conv(sd, p + ".conv1", F.silu(_gn(sd, p + ".norm1", x)), padding=1)
    h = _conv(sd, p + ".conv2", F.silu(_gn(sd, p + ".norm2", h)), padding=1)
    if p + ".nin_shortcut.weight" in sd:
        x = _conv(sd, p + ".nin_shortcut", x)
    return x + h


def _ldm_attn(sd, p, x):
    b, c, h, w = x.shape
    n = _gn(sd, p + ".norm", x)
    q, k, v = (_conv(sd, f"{p}.{a}", n).reshape(b, c, h * w) for a in "qkv")
    att = torch.softmax(q.transpose(1, 2) @ k * c**-0.5, dim=-1)  # [b, query, key]
    out = (v @ att.transpose(1, 2)).reshape(b, c, h, w)
    return x + _conv(sd, p + ".proj_out", out)


def _ldm_mid(sd, p, h):
    return _ldm_resnet(
        sd, p + ".mid.block_2", _ldm_attn(sd, p + ".mid.attn_1", _ldm_resnet(sd, p + ".mid.block_1", h))
    )


def _ldm_encode_mean(sd, x, levels, blocks):
    """LDM Encoder + quant_conv, written from the layout (down.i.block.j, asymmetric-pad downsample)."""
    h = _conv(sd, "encoder.conv_in", x, padding=1)
    for i in range(levels):
        for j in range(blocks):
            h = _ldm_resnet(sd, f"encoder.down.{i}.block.{j}", h)
        if i != levels - 1:
            h = _conv(sd, f"encoder.down.{i}.downsample.conv", F.pad(h, (0, 1, 0, 1)), stride=2)
    h = _ldm_mid(sd, "encoder", h)
    h = _conv(sd, "encoder.conv_out", F.silu(_gn(sd, "encoder.norm_out", h)), padding=1)
    return _conv(sd, "quant_conv", h).chunk(2, dim=1)[0]


def _ldm_decode(sd, z, levels, blocks):
    """LDM post_quant_conv + Decoder: up.i is resolution level i, run from the deepest (i = n-1)."""
    h = _conv(sd, "decoder.conv_in", _conv(sd, "post_quant_conv", z), padding=1)
    h = _ldm_mid(sd, "decoder", h)
    for i in reversed(range(levels)):
        for j in range(blocks + 1):
            h = _ldm_resnet(sd, f"decoder.up.{i}.block.{j}", h)
        if i != 0:
            h = _conv(
                sd,
                f"decoder.up.{i}.upsample.conv",
                F.interpolate(h, scale_factor=2.0, mode="nearest"),
                padding=1,
            )
    return _conv(sd, "decoder.conv_out", F.silu(_gn(sd, "decoder.norm_out", h)), padding=1)


def test_vae_converter_matches_an_ldm_reference():
    """A random LDM-layout VAE state dict (3 levels, 2 res blocks): converted to diffusers'
    AutoencoderKL, its encode (posterior mean) and decode equal a functional reference that reads
    the LDM keys directly; the inverse conversion gives the original dict back."""
    from diffusers import AutoencoderKL

    cfg = autoencoder_kl_config(ch=16, ch_mult=(1, 2, 2), num_res_blocks=2, resolution=32, norm_groups=G)
    with torch.device("meta"):
        layout = diffusers_vae_to_ldm(AutoencoderKL(**cfg).state_dict())  # LDM key names and shapes
    g = torch.Generator().manual_seed(0)
    ldm = {}
    for k, t in sorted(layout.items()):
        norm_w = ("norm" in k) and k.endswith("weight")
        ldm[k] = torch.randn(t.shape, generator=g) * 0.15 + (1.0 if norm_w else 0.0)
    assert any(k.startswith("decoder.up.2.upsample") for k in ldm) and "encoder.mid.attn_1.q.weight" in ldm
    assert ldm["encoder.mid.attn_1.q.weight"].shape == (32, 32, 1, 1)

    vae = AutoencoderKL(**cfg).eval()
    missing, unexpected = vae.load_state_dict(ldm_vae_to_diffusers(ldm), strict=True)
    assert missing == [] and unexpected == []
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    z = torch.randn(2, 4, 8, 8, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(vae.decode(z).sample, _ldm_decode(ldm, z, 3, 2), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(
            vae.encode(x).latent_dist.mode(), _ldm_encode_mean(ldm, x, 3, 2), rtol=1e-4, atol=1e-4
        )
    back = diffusers_vae_to_ldm(ldm_vae_to_diffusers(ldm))
    assert back.keys() == ldm.keys() and all(torch.equal(back[k], ldm[k]) for k in ldm)
    with pytest.raises(KeyError, match="encoder.down.0.attn.0"):
        ldm_vae_to_diffusers({**ldm, "encoder.down.0.attn.0.q.weight": torch.zeros(1)})


# ============================================================================ text converter
def _open_clip_text_sd(vocab, width=32, layers=3, ctx=77, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*s, base=0.0):
        return torch.randn(*s, generator=g) * 0.2 + base

    sd = {
        "token_embedding.weight": r(vocab, width),
        "positional_embedding": r(ctx, width),
        "ln_final.weight": r(width, base=1.0),
        "ln_final.bias": r(width),
        "text_projection": r(width, width),
        "logit_scale": torch.tensor(math.log(1 / 0.07)),
    }
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        sd.update(
            {
                p + "ln_1.weight": r(width, base=1.0),
                p + "ln_1.bias": r(width),
                p + "attn.in_proj_weight": r(3 * width, width),
                p + "attn.in_proj_bias": r(3 * width),
                p + "attn.out_proj.weight": r(width, width),
                p + "attn.out_proj.bias": r(width),
                p + "ln_2.weight": r(width, base=1.0),
                p + "ln_2.bias": r(width),
                p + "mlp.c_fc.weight": r(4 * width, width),
                p + "mlp.c_fc.bias": r(4 * width),
                p + "mlp.c_proj.weight": r(width, 4 * width),
                p + "mlp.c_proj.bias": r(width),
            }
        )
    return sd


def _open_clip_penultimate(sd, ids, heads):
    """open_clip text tower, FrozenOpenCLIPEmbedder(layer='penultimate'): token + positional
    embedding, causal pre-LN blocks (in_proj rows q|k|v, GELU MLP) except the last, ln_final."""
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"]
    n, length, w = x.shape
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("transformer.resblocks."))
    causal = torch.full((length, length), float("-inf")).triu(1)
    for i in range(layers - 1):
        p = f"transformer.resblocks.{i}."
        h = F.layer_norm(x, (w,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], 1e-5)
        q, k, v = F.linear(h, sd[p + "attn.in_proj_weight"], sd[p + "attn.in_proj_bias"]).chunk(3, dim=-1)
        q, k, v = (y.reshape(n, length, heads, w // heads).transpose(1, 2) for y in (q, k, v))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(w // heads) + causal, dim=-1)
        a = (att @ v).transpose(1, 2).reshape(n, length, w)
        x = x + F.linear(a, sd[p + "attn.out_proj.weight"], sd[p + "attn.out_proj.bias"])
        h = F.layer_norm(x, (w,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], 1e-5)
        h = F.linear(
            F.gelu(F.linear(h, sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"])),
            sd[p + "mlp.c_proj.weight"],
            sd[p + "mlp.c_proj.bias"],
        )
        x = x + h
    return F.layer_norm(x, (w,), sd["ln_final.weight"], sd["ln_final.bias"], 1e-5)


def test_text_converter_matches_the_open_clip_text_tower(bb):
    """A random open_clip-layout text tower converted to CLIPTextModel: the backbone's
    encode_text equals a plain-torch forward of the open_clip tower at the penultimate layer."""
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab = len(bb.tokenizer)
    oc = _open_clip_text_sd(vocab=vocab)
    sd, unused = open_clip_text_to_clip(oc)
    assert sorted(unused) == ["logit_scale", "text_projection"]
    te = CLIPTextModel(
        CLIPTextConfig(**clip_text_config(width=32, layers=3, heads=2, vocab_size=vocab))
    ).eval()
    missing, unexpected = te.load_state_dict(match_text_prefix(sd, te), strict=False)
    assert [k for k in missing if not k.endswith("position_ids")] == [] and unexpected == []
    model = VideoCrafter2Backbone(bb.teacher.unet, bb.vae, te, bb.tokenizer, bb.config)
    prompts = ["a red circle moving left", "", "Moving LEFT!!"]
    got = model.encode_text(prompts)
    want = _open_clip_penultimate(oc, model.token_ids(prompts), heads=2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    back = clip_text_to_open_clip(sd)
    assert back.keys() == {k for k in oc if k not in unused} and all(
        torch.equal(back[k], oc[k]) for k in back
    )
    with pytest.raises(KeyError, match="ls_1"):
        open_clip_text_to_clip({**oc, "transformer.resblocks.0.ls_1.gamma": torch.zeros(32)})


# ============================================================================ loading
def _official_ckpt(bb, path, extra=None):
    """A tiny model.ckpt in the official layout: UNet, LDM VAE, open_clip text tower with its
    (unused) text_projection / logit_scale, and the DDPM schedule buffers incl. scale_arr."""
    sd = bb.official_state_dict()
    sd[TEXT_PREFIX + "text_projection"] = torch.randn(32, 32)
    sd[TEXT_PREFIX + "logit_scale"] = torch.tensor(4.6052)
    ac = sd["alphas_cumprod"].double()
    prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    sd.update(
        {
            "alphas_cumprod_prev": prev.float(),
            "sqrt_alphas_cumprod": ac.sqrt().float(),
            "sqrt_one_minus_alphas_cumprod": (1 - ac).sqrt().float(),
            "scale_arr": torch.cat([torch.linspace(1.0, 0.7, 400), torch.full((1000,), 0.7)]),
        }
    )
    sd.update(extra or {})
    path.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": sd, "epoch": 3}, path / "model.ckpt")
    bb.tokenizer.save_pretrained(str(path / "tokenizer"))
    (path / "videocrafter2_config.json").write_text(json.dumps(bb.config))
    return path


def test_from_pretrained_tiny_official_checkpoint(bb, tmp_path):
    d = _official_ckpt(bb, tmp_path / "vc2")
    parts = split_checkpoint(read_state_dict(d / "model.ckpt"))
    assert (
        len(parts["schedule"]) == 6
        and len(parts["text"]) == len(clip_text_to_open_clip(bb.text_encoder.state_dict())) + 2
    )
    # 0 missing / 0 unexpected for every part after the prefix handling
    for module, sd in (
        (VC2UNet(VC2UNetConfig(**bb.config["unet"])), parts["unet"]),
        (type(bb.vae)(**bb.config["vae"]), ldm_vae_to_diffusers(parts["vae"])),
    ):
        assert module.load_state_dict(sd, strict=False) == ([], [])
    loaded = load_backbone("videocrafter2", str(d))
    assert isinstance(loaded, VideoCrafter2Backbone) and loaded.model_dir == str(d.resolve())
    z, t, _ = _inputs(bb)
    cond = bb.encode_text(PROMPTS)
    assert torch.equal(loaded.encode_text(PROMPTS), cond)
    with torch.no_grad():
        assert torch.equal(loaded.teacher(z, t, cond), bb.teacher(z, t, cond))
        assert torch.equal(loaded.decode_latents(z), bb.decode_latents(z))
    # the model file itself (tokenizer beside it) and the safetensors form load the same weights
    by_file = VideoCrafter2Backbone.from_pretrained(d / "model.ckpt", fps=24)
    assert by_file.fps == 24 and torch.equal(
        by_file.teacher.unet.out[2].weight, bb.teacher.unet.out[2].weight
    )
    bb.save_pretrained(tmp_path / "st")
    st = VideoCrafter2Backbone.from_pretrained(tmp_path / "st")
    with torch.no_grad():
        assert torch.equal(st.teacher(z, t, cond), bb.teacher(z, t, cond))


def test_loading_errors_are_clear(bb, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as ei:
        VideoCrafter2Backbone.from_pretrained(missing)
    assert str(missing) in str(ei.value) and "model.ckpt" in str(ei.value) and "tokenizer" in str(ei.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no model.ckpt or model.safetensors"):
        load_backbone("videocrafter2", str(tmp_path / "empty"))
    d = _official_ckpt(bb, tmp_path / "no_tok")
    shutil.rmtree(d / "tokenizer")
    with pytest.raises(FileNotFoundError) as ei:
        VideoCrafter2Backbone.from_pretrained(d)
    assert str(d / "tokenizer") in str(ei.value) and "tokenizer_path" in str(ei.value)
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        VideoCrafter2Backbone.from_pretrained(d, tokenizer_path=tmp_path / "empty")
    # model.tokenizer_path: bare vocab.json + merges.txt, or open_clip's bpe_simple_vocab_16e6.txt.gz
    build_tiny_clip_tokenizer(tmp_path / "bare")
    (tmp_path / "oc").mkdir()
    with gzip.open(tmp_path / "oc" / "bpe_simple_vocab_16e6.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(['"bpe_simple_vocab_16e6.txt#version: 0.2', *TINY_MERGES, ""]))
    for tok in ("bare", "oc"):
        other = VideoCrafter2Backbone.from_pretrained(d, tokenizer_path=tmp_path / tok)
        assert torch.equal(other.token_ids(PROMPTS + [""]), bb.token_ids(PROMPTS + [""]))
    # a checkpoint that needs unpickling of classes: refused, naming the file
    bad = tmp_path / "pickled"
    bad.mkdir()
    torch.save(
        {"state_dict": bb.official_state_dict(), "hparams": argparse.Namespace(lr=1)}, bad / "model.ckpt"
    )
    with pytest.raises(RuntimeError) as ei:
        read_state_dict(bad / "model.ckpt")
    assert str(bad / "model.ckpt") in str(ei.value) and "weights_only=True" in str(ei.value)
    # unknown keys and a different schedule are errors, not silently dropped
    d2 = _official_ckpt(bb, tmp_path / "extra", {"model_ema.decay": torch.tensor(0.9999)})
    with pytest.raises(KeyError, match="model_ema.decay"):
        VideoCrafter2Backbone.from_pretrained(d2)
    d3 = _official_ckpt(bb, tmp_path / "sched", {"alphas_cumprod": torch.linspace(0.99, 0.01, 1000)})
    with pytest.raises(ValueError, match="alphas_cumprod"):
        VideoCrafter2Backbone.from_pretrained(d3)
    d4 = _official_ckpt(bb, tmp_path / "short", {UNET_PREFIX + "out.2.bias": torch.zeros(5)})
    with pytest.raises(ValueError, match="out.2.bias"):
        VideoCrafter2Backbone.from_pretrained(d4)


def test_build_backbone_and_config(tmp_path):
    from hydra import compose, initialize_config_dir

    from t2vturbo.backbones import build_backbone, check_paths
    from t2vturbo.config import ModelConfig, TinyModelConfig, validate

    with initialize_config_dir(config_dir=str(MANIFEST.parents[3] / "conf"), version_base="1.3"):
        cfg = validate(compose(config_name="config", overrides=["model=videocrafter2", "model.path=/x"]))
    m = cfg.model
    assert (m.family, m.fps, m.num_frames, m.height, m.width, m.tokenizer_path) == (
        "videocrafter2",
        8,
        16,
        320,
        512,
        None,
    )
    with pytest.raises(FileNotFoundError, match=r"^model.path: .*/x"):
        check_paths(cfg)
    tiny = build_backbone(
        ModelConfig(family="videocrafter2", fps=12, tiny=TinyModelConfig(block_out_channels=[16, 32]))
    )
    assert isinstance(tiny, VideoCrafter2Backbone) and tiny.fps == 12 and tiny.model_dir is None
    tiny.save_pretrained(tmp_path / "t")
    again = build_backbone(
        ModelConfig(family="videocrafter2", path=str(tmp_path / "t")), dtype=torch.bfloat16
    )
    assert again.model_dir == str((tmp_path / "t").resolve()) and again.fps == 8
    assert (
        next(again.teacher.parameters()).dtype == torch.bfloat16
        and again.alphas_cumprod.dtype == torch.float32
    )


# ============================================================================ distillation through the Trainer
def test_tiny_distillation_through_the_trainer_then_sampling(tmp_path, monkeypatch):
    """10 consistency-distillation steps on CPU through t2vturbo.train.trainer.Trainer with a tiny
    official-layout model.ckpt. The batch and its (n, noise, w) draws are fixed (every step reads
    sample positions 0 and 1), so the loss sequence is comparable: it must fall. The target is the
    no-grad student (the reference's default; an EMA target first jumps while it lags the student,
    for every backbone). Then the export samples: teacher DDIM + CFG, student in 4 steps."""
    from t2vturbo.config import validate
    from t2vturbo.sample import load_student, sample_student, sample_teacher
    from t2vturbo.train.data_feed import DataFeed
    from t2vturbo.train.trainer import Trainer

    teacher_dir = _official_ckpt(tiny_backbone(seed=1), tmp_path / "teacher")
    cfg = validate(
        {
            "output_dir": str(tmp_path / "run"),
            "model": {
                "family": "videocrafter2",
                "path": str(teacher_dir),
                "num_frames": NF,
                "height": S,
                "width": S,
            },
            "data": {"kind": "toy", "num_samples": 2},
            "objective": {"target": "student"},
            "train": {
                "max_steps": 10,
                "micro_batch_size": 2,
                "lr": 1e-3,
                "log_every": 1,
                "progress": False,
                "ckpt_every": 0,
                "eval_every": 0,
            },
        }
    )
    monkeypatch.setattr(DataFeed, "positions", lambda self, micro: [0, 1])
    trainer = Trainer(cfg)
    assert isinstance(trainer.bb, VideoCrafter2Backbone)
    assert trainer.train() == 10
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss_cd"] for r in rows if "loss_cd" in r]
    assert len(losses) == 10 and all(math.isfinite(x) for x in losses)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    print(f"\nVideoCrafter2 tiny CD loss: first 3 {first:.5f} -> last 3 {last:.5f}")
    assert last < 0.8 * first and losses[-1] < losses[0]  # 6 seeds measured: last/first 0.29-0.59

    bb, net, meta = load_student(tmp_path / "run" / "export")
    assert meta["family"] == "videocrafter2" and isinstance(bb, VideoCrafter2Backbone)
    video = sample_student(bb, net, PROMPTS, steps=4, num_frames=NF, height=S, width=S, seed=0)
    assert video.shape == (B, NF, 3, S, S) and torch.isfinite(video).all()
    tv = sample_teacher(bb, PROMPTS, steps=4, guidance=7.5, num_frames=NF, height=S, width=S, seed=0)
    assert tv.shape == (B, NF, 3, S, S) and torch.isfinite(tv).all() and tv.abs().max() <= 1
