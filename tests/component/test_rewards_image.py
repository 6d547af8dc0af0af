"""Component tests for the image-text rewards (hpsv2, clip, pickscore, aesthetic, hpsv2_clip) and
the open_clip -> transformers CLIP converter.  Tiny random models only; nothing is downloaded."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from t2vturbo.rewards import CLIP_MEAN, CLIP_STD, build, normalize, open_clip_convert
from t2vturbo.rewards.clip_rewards import (
    AestheticMLP,
    AestheticReward,
    CLIPScoreReward,
    HPSv2CLIPReward,
    HPSv2Reward,
    PickScoreReward,
    tiny_clip_model,
    tiny_clip_tokenizer,
)
from t2vturbo.rewards.open_clip_convert import (
    clip_to_open_clip_state_dict,
    load_open_clip_state_dict,
    open_clip_to_clip_model,
    open_clip_to_clip_state_dict,
)

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]
NAMES = ["hpsv2", "clip", "pickscore", "aesthetic", "hpsv2_clip"]
TEXT_NAMES = [n for n in NAMES if n != "aesthetic"]
PROMPTS = ["a cat sitting on the sofa", "the dog runs across a green field"]
LONG = " ".join(["zebra"] * 40)  # ~80+ BPE tokens with the tiny vocabulary: truncated to 77


def _frames(b=2, f=3, h=40, w=56, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, f, 3, h, w, generator=g) * 1.8 - 0.9


@pytest.fixture(scope="module")
def tiny():
    return {n: build(n, tiny=True) for n in NAMES}


# --------------------------------------------------------------------------- protocol


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_gradient(tiny, name):
    reward = tiny[name]
    assert reward.kind == "image" and reward.name == name
    x = _frames().requires_grad_(True)
    r = reward(x, PROMPTS)
    assert r.shape == (2,) and r.dtype == torch.float32 and torch.isfinite(r).all()
    r.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad.flatten(1).abs().sum(1) > 0).all()  # every clip gets a gradient
    assert all(not p.requires_grad for p in reward.parameters())  # gradient goes to pixels only


@pytest.mark.parametrize("name", NAMES)
def test_score_is_mean_of_per_frame_scores(tiny, name):
    reward = tiny[name]
    x = _frames(f=3)
    per_frame = torch.stack([reward(x[:, i : i + 1], PROMPTS) for i in range(3)], 1)
    torch.testing.assert_close(reward(x, PROMPTS), per_frame.mean(1), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", TEXT_NAMES)
def test_prompt_changes_score(tiny, name):
    reward = tiny[name]
    x = _frames(b=1).expand(2, -1, -1, -1, -1)
    r = reward(x, PROMPTS)
    assert (r[0] - r[1]).abs() > 1e-4, r


def test_aesthetic_ignores_prompt(tiny):
    reward = tiny["aesthetic"]
    x = _frames(b=1).expand(3, -1, -1, -1, -1)
    r = reward(x, ["a cat", "the dog runs", ""])
    assert torch.equal(r, r[:1].expand(3)), r
    # ... but not the image.
    assert (reward(_frames(b=1, seed=5), ["a cat"]) - r[0]).abs() > 1e-6


def test_logit_scale_and_combination_weights():
    plain = PickScoreReward.tiny(use_logit_scale=False)
    scaled = PickScoreReward.tiny()  # PickScore definition: exp(logit_scale) * cosine
    x = _frames()
    scale = plain.model.logit_scale.exp().item()
    assert scale == pytest.approx(math.exp(2.0))
    torch.testing.assert_close(scaled(x, PROMPTS), scale * plain(x, PROMPTS), rtol=1e-5, atol=1e-6)
    assert HPSv2Reward.tiny().use_logit_scale is False and CLIPScoreReward.tiny().use_logit_scale is False

    combo = HPSv2CLIPReward.tiny(weights=(0.5, 3.0))
    expected = 0.5 * combo.hpsv2(x, PROMPTS) + 3.0 * combo.clip(x, PROMPTS)
    torch.testing.assert_close(combo(x, PROMPTS), expected)
    assert HPSv2CLIPReward.tiny().weights == (1.0, 1.0)  # T2V-Turbo-v2's --reward_weights default


def test_resize_modes():
    crop, squash = HPSv2Reward.tiny(), HPSv2Reward.tiny(resize="squash")
    assert crop.resize == "crop" and CLIPScoreReward.tiny().resize == "squash"
    x = _frames(b=1, f=1, h=32, w=64)
    assert crop.preprocess(x[:, 0]).shape == squash.preprocess(x[:, 0]).shape == (1, 3, 32, 32)
    # Crop keeps the centre 32 x 32 untouched (short side already 32); squash resamples it.
    centre = normalize(x[:, 0, :, :, 16:48] * 0.5 + 0.5, CLIP_MEAN, CLIP_STD)
    torch.testing.assert_close(crop.preprocess(x[:, 0]), centre)
    assert not torch.allclose(squash.preprocess(x[:, 0]), centre)
    with pytest.raises(ValueError, match="resize"):
        HPSv2Reward.tiny(resize="pad")


def test_prompts_truncated_to_77_tokens(tiny):
    reward = tiny["hpsv2"]
    ids = reward.tokenize([LONG, "a cat"])
    tok = reward.tokenizer
    assert ids.shape == (2, 77)
    assert ids[0, 0] == tok.bos_token_id and ids[0, -1] == tok.eos_token_id
    # Prompts that differ only after the 75th text token score identically ...
    x = _frames(b=1).expand(2, -1, -1, -1, -1)
    r = reward(x, [LONG, LONG + " and a red car"])
    assert torch.equal(r[0], r[1])
    # ... while a change in the kept part changes the score.
    assert (reward(x[:1], ["a " + LONG]) - r[0]).abs() > 1e-6


def test_low_precision_model_returns_float32():
    reward = HPSv2Reward.tiny()
    x = _frames(b=1)
    ref = reward(x, PROMPTS[:1])
    out = reward.to(torch.bfloat16)(x.bfloat16(), PROMPTS[:1])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=0.05, rtol=0.0)


# --------------------------------------------------------------------------- weights on disk


def _save_tokenizer(tok, folder: Path, as_vocab_merges: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if as_vocab_merges:  # the classic CLIP BPE files (e.g. from laion/CLIP-ViT-H-14-laion2B-s32B-b79K)
        (folder / "vocab.json").write_text(json.dumps(tok.get_vocab()))
        merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
        lines = [m if isinstance(m, str) else " ".join(m) for m in merges]
        (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines) + "\n")
    else:
        tok.save_pretrained(str(folder))


def _open_clip_cfg(model) -> dict:
    v, t = model.config.vision_config, model.config.text_config
    return {
        "model_cfg": {
            "embed_dim": model.config.projection_dim,
            "quick_gelu": v.hidden_act == "quick_gelu",
            "vision_cfg": {
                "width": v.hidden_size,
                "layers": v.num_hidden_layers,
                "head_width": v.hidden_size // v.num_attention_heads,
                "patch_size": v.patch_size,
                "image_size": v.image_size,
            },
            "text_cfg": {
                "width": t.hidden_size,
                "heads": t.num_attention_heads,
                "layers": t.num_hidden_layers,
                "context_length": t.max_position_embeddings,
                "vocab_size": t.vocab_size,
            },
        }
    }


def _save_open_clip(reward, folder: Path, file: str, wrap: bool) -> None:
    """open_clip layout: the state dict (optionally under 'state_dict', as HPSv2 ships it),
    tokenizer/ with vocab.json + merges.txt, and open_clip_config.json (tiny heads)."""
    folder.mkdir(parents=True, exist_ok=True)
    sd = clip_to_open_clip_state_dict(reward.model.state_dict())
    torch.save({"state_dict": sd} if wrap else sd, folder / file)
    _save_tokenizer(reward.tokenizer, folder / "tokenizer", as_vocab_merges=True)
    (folder / "open_clip_config.json").write_text(json.dumps(_open_clip_cfg(reward.model)))


def _save_hf(reward, folder: Path, tokenizer_subdir: bool) -> None:
    reward.model.save_pretrained(str(folder))
    _save_tokenizer(
        reward.tokenizer, folder / "tokenizer" if tokenizer_subdir else folder, as_vocab_merges=False
    )


def _assert_same_scores(a, b) -> None:
    x = _frames()
    torch.testing.assert_close(a(x, PROMPTS), b(x, PROMPTS), atol=1e-6, rtol=1e-6)


def test_hpsv2_from_pretrained_round_trip(tmp_path):
    reward = HPSv2Reward.tiny()
    _save_open_clip(reward, tmp_path, "HPS_v2.1_compressed.pt", wrap=True)
    loaded = build("hpsv2", pretrained=tmp_path)
    assert isinstance(loaded, HPSv2Reward)
    _assert_same_scores(reward, loaded)
    # A converted transformers folder is accepted too.
    _save_hf(reward, tmp_path / "hf", tokenizer_subdir=True)
    _assert_same_scores(reward, HPSv2Reward.from_pretrained(tmp_path / "hf"))


@pytest.mark.parametrize("layout", ["transformers", "open_clip"])
def test_clip_from_pretrained_round_trip(tmp_path, layout):
    reward = CLIPScoreReward.tiny(seed=3)
    if layout == "transformers":
        _save_hf(reward, tmp_path, tokenizer_subdir=False)
    else:
        _save_open_clip(reward, tmp_path, "open_clip_pytorch_model.bin", wrap=False)
    loaded = build("clip", pretrained=tmp_path)
    assert isinstance(loaded, CLIPScoreReward) and loaded.resize == "squash"
    _assert_same_scores(reward, loaded)


def test_pickscore_from_pretrained_round_trip(tmp_path):
    reward = PickScoreReward.tiny(seed=4)
    _save_hf(reward, tmp_path, tokenizer_subdir=True)
    loaded = build("pickscore", pretrained=tmp_path)
    assert loaded.use_logit_scale
    _assert_same_scores(reward, loaded)


@pytest.mark.parametrize("clip_kind", ["vision_only", "full_clip"])
def test_aesthetic_from_pretrained_round_trip(tmp_path, clip_kind):
    if clip_kind == "vision_only":
        reward = AestheticReward.tiny(seed=5)
    else:  # a full CLIPModel folder (e.g. openai/clip-vit-large-patch14 as published)
        model = tiny_clip_model(hidden_act="quick_gelu", seed=6)
        reward = AestheticReward(model, AestheticMLP((16, 64, 32, 16, 8)))
    reward.model.save_pretrained(str(tmp_path / "clip"))
    torch.save(reward.mlp.state_dict(), tmp_path / "sac+logos+ava1-l14-linearMSE.pth")
    loaded = build("aesthetic", pretrained=tmp_path)
    assert type(loaded.model).__name__ == "CLIPVisionModelWithProjection"
    _assert_same_scores(reward, loaded)


def test_hpsv2_clip_from_pretrained_round_trip(tmp_path):
    reward = HPSv2CLIPReward.tiny(seed=7, weights=(1.0, 2.0))
    _save_open_clip(reward.hpsv2, tmp_path / "hpsv2", "HPS_v2.1_compressed.pt", wrap=True)
    _save_hf(reward.clip, tmp_path / "clip", tokenizer_subdir=False)
    loaded = build("hpsv2_clip", pretrained=tmp_path, weights=(1.0, 2.0))
    assert loaded.weights == (1.0, 2.0)
    _assert_same_scores(reward, loaded)


@pytest.mark.parametrize("name", NAMES)
def test_build_without_weights_says_what_to_set(name):
    with pytest.raises(ValueError) as ei:
        build(name)
    msg = str(ei.value)
    assert f"reward.paths.{name}=DIR" in msg
    expected = {
        "hpsv2": "HPS_v2.1_compressed.pt",
        "clip": "config.json",
        "pickscore": "PickScore_v1",
        "aesthetic": "sac+logos+ava1-l14-linearMSE.pth",
        "hpsv2_clip": "hpsv2/",
    }[name]
    assert expected in msg


@pytest.mark.parametrize(
    ("name", "expected_file"),
    [
        ("hpsv2", "HPS_v2.1_compressed.pt"),
        ("clip", "open_clip_pytorch_model.bin"),
        ("pickscore", "config.json"),
        ("aesthetic", "sac+logos+ava1-l14-linearMSE.pth"),
        ("hpsv2_clip", "HPS_v2.1_compressed.pt"),
    ],
)
def test_missing_path_names_path_and_expected_file(tmp_path, name, expected_file):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as ei:
        build(name, pretrained=missing)
    assert str(missing) in str(ei.value) and expected_file in str(ei.value)


def test_missing_files_name_the_missing_file(tmp_path):
    # hpsv2: checkpoint present, tokenizer missing -> names the tokenizer folder and its files.
    hps = HPSv2Reward.tiny()
    _save_open_clip(hps, tmp_path / "hps", "HPS_v2.1_compressed.pt", wrap=True)
    for f in ("vocab.json", "merges.txt"):
        (tmp_path / "hps" / "tokenizer" / f).unlink()
    with pytest.raises(FileNotFoundError) as ei:
        build("hpsv2", pretrained=tmp_path / "hps")
    assert str(tmp_path / "hps" / "tokenizer") in str(ei.value) and "vocab.json" in str(ei.value)

    # pickscore: config.json without the weights file.
    (tmp_path / "pick").mkdir()
    (tmp_path / "pick" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError) as ei:
        build("pickscore", pretrained=tmp_path / "pick")
    assert str(tmp_path / "pick") in str(ei.value) and "model.safetensors" in str(ei.value)

    # aesthetic: MLP present, CLIP folder missing.
    (tmp_path / "aes").mkdir()
    torch.save(AestheticReward.tiny().mlp.state_dict(), tmp_path / "aes" / "aesthetic_mlp.pth")
    with pytest.raises(FileNotFoundError) as ei:
        build("aesthetic", pretrained=tmp_path / "aes")
    assert str(tmp_path / "aes") in str(ei.value) and "config.json" in str(ei.value)

    # hpsv2_clip: hpsv2/ fine, clip/ missing -> names clip/.
    _save_open_clip(hps, tmp_path / "combo" / "hpsv2", "HPS_v2.1_compressed.pt", wrap=True)
    with pytest.raises(FileNotFoundError) as ei:
        build("hpsv2_clip", pretrained=tmp_path / "combo")
    assert str(tmp_path / "combo" / "clip") in str(ei.value)


# --------------------------------------------------------------------------- converter vs an open_clip reference


V_WIDTH, V_LAYERS, V_HEAD_WIDTH, PATCH, GRID = 32, 2, 8, 8, 4
T_WIDTH, T_LAYERS, T_HEADS, CTX, EMBED = 24, 2, 3, 77, 16


def _random_open_clip_sd(vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in open_clip's CLIP key layout (distinct vision / text widths)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, std=0.2):
        return torch.randn(*shape, generator=g) * std

    def blocks(prefix: str, w: int, layers: int, mlp: int) -> dict:
        out = {}
        for i in range(layers):
            p = f"{prefix}transformer.resblocks.{i}."
            out.update(
                {
                    p + "ln_1.weight": 1 + r(w, std=0.1),
                    p + "ln_1.bias": r(w, std=0.1),
                    p + "attn.in_proj_weight": r(3 * w, w, std=w**-0.5),
                    p + "attn.in_proj_bias": r(3 * w, std=0.1),
                    p + "attn.out_proj.weight": r(w, w, std=w**-0.5),
                    p + "attn.out_proj.bias": r(w, std=0.1),
                    p + "ln_2.weight": 1 + r(w, std=0.1),
                    p + "ln_2.bias": r(w, std=0.1),
                    p + "mlp.c_fc.weight": r(mlp, w, std=w**-0.5),
                    p + "mlp.c_fc.bias": r(mlp, std=0.1),
                    p + "mlp.c_proj.weight": r(w, mlp, std=mlp**-0.5),
                    p + "mlp.c_proj.bias": r(w, std=0.1),
                }
            )
        return out

    sd = {
        "visual.conv1.weight": r(V_WIDTH, 3, PATCH, PATCH, std=0.1),
        "visual.class_embedding": r(V_WIDTH, std=0.5),
        "visual.positional_embedding": r(GRID * GRID + 1, V_WIDTH, std=0.5),
        "visual.ln_pre.weight": 1 + r(V_WIDTH, std=0.1),
        "visual.ln_pre.bias": r(V_WIDTH, std=0.1),
        "visual.ln_post.weight": 1 + r(V_WIDTH, std=0.1),
        "visual.ln_post.bias": r(V_WIDTH, std=0.1),
        "visual.proj": r(V_WIDTH, EMBED, std=V_WIDTH**-0.5),
        "token_embedding.weight": r(vocab, T_WIDTH, std=0.5),
        "positional_embedding": r(CTX, T_WIDTH, std=0.5),
        "ln_final.weight": 1 + r(T_WIDTH, std=0.1),
        "ln_final.bias": r(T_WIDTH, std=0.1),
        "text_projection": r(T_WIDTH, EMBED, std=T_WIDTH**-0.5),
        "logit_scale": torch.tensor(math.log(1 / 0.07)),
    }
    sd.update(blocks("visual.", V_WIDTH, V_LAYERS, 4 * V_WIDTH))
    sd.update(blocks("", T_WIDTH, T_LAYERS, 3 * T_WIDTH))
    return sd


def _ref_ln(x, sd, p):
    return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], 1e-5)


def _ref_blocks(x, sd, prefix, layers, heads, act, causal):
    """open_clip's pre-LN residual blocks on [N, L, w], attention written out from in_proj."""
    n, length, w = x.shape
    hd = w // heads
    mask = torch.full((length, length), float("-inf")).triu(1) if causal else torch.zeros(length, length)
    for i in range(layers):
        p = f"{prefix}transformer.resblocks.{i}."
        h = _ref_ln(x, sd, p + "ln_1")
        qkv = h @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]
        q, k, v = (t.reshape(n, length, heads, hd).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, dim=-1)
        o = (att @ v).transpose(1, 2).reshape(n, length, w)
        x = x + o @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        h = _ref_ln(x, sd, p + "ln_2") @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"]
        h = F.gelu(h) if act == "gelu" else h * torch.sigmoid(1.702 * h)
        x = x + h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]
    return x


def _ref_encode_image(sd, pixels, act):
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=PATCH).flatten(2).transpose(1, 2)
    cls = sd["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], 1) + sd["visual.positional_embedding"]
    x = _ref_ln(x, sd, "visual.ln_pre")
    x = _ref_blocks(x, sd, "visual.", V_LAYERS, V_WIDTH // V_HEAD_WIDTH, act, causal=False)
    return _ref_ln(x[:, 0], sd, "visual.ln_post") @ sd["visual.proj"]


def _ref_encode_text(sd, ids, act):
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"][: ids.shape[1]]
    x = _ref_blocks(x, sd, "", T_LAYERS, T_HEADS, act, causal=True)
    x = _ref_ln(x, sd, "ln_final")
    return x[torch.arange(x.shape[0]), ids.argmax(-1)] @ sd["text_projection"]  # EOT = largest id


def _open_clip_ids(tok, prompts):
    """open_clip's tokenisation: [SOT] + tokens + [EOT], truncated to 77 (last = EOT), zero-padded."""
    out = torch.zeros(len(prompts), CTX, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids = [tok.bos_token_id] + tok(p, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = ids[:CTX]
        ids[-1] = tok.eos_token_id
        out[i, : len(ids)] = torch.tensor(ids)
    return out


@pytest.mark.parametrize("act", ["gelu", "quick_gelu"])
def test_converter_matches_open_clip_reference(act):
    tok = tiny_clip_tokenizer()
    sd = _random_open_clip_sd(len(tok))
    cfg = {
        "quick_gelu": act == "quick_gelu",
        "vision_cfg": {"width": V_WIDTH, "head_width": V_HEAD_WIDTH},
        "text_cfg": {"width": T_WIDTH, "heads": T_HEADS},
    }
    model = open_clip_to_clip_model(sd, cfg, eos_token_id=tok.eos_token_id)
    assert model.config.vision_config.hidden_act == model.config.text_config.hidden_act == act
    assert (
        model.config.vision_config.num_attention_heads == 4
        and model.config.text_config.num_attention_heads == 3
    )
    assert model.config.vision_config.image_size == GRID * PATCH
    reward = HPSv2Reward(model, tok)

    # Image tower: identical projected features, then identical normalised embeddings.
    frames = _frames(b=2, f=2, h=32, w=32)
    pixels = normalize(frames.flatten(0, 1) * 0.5 + 0.5, CLIP_MEAN, CLIP_STD)
    with torch.no_grad():
        ours = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        ref_img = _ref_encode_image(sd, pixels, act)
        torch.testing.assert_close(ours, ref_img, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(
            reward.encode_images(frames).flatten(0, 1), F.normalize(ref_img, dim=-1), atol=1e-5, rtol=1e-5
        )

        # Text tower: the reward's HF tokenisation + first-EOS pooling == open_clip's zero-padded
        # 77-token ids + argmax pooling, including a prompt truncated at 77 tokens.
        prompts = ["a cat", LONG + " and more words"]
        ref_txt = F.normalize(_ref_encode_text(sd, _open_clip_ids(tok, prompts), act), dim=-1)
        torch.testing.assert_close(reward.encode_prompts(prompts), ref_txt, atol=1e-5, rtol=1e-5)

        # Score: HPS = cosine (no logit scale), averaged over frames.
        ref_score = (F.normalize(ref_img, dim=-1).reshape(2, 2, -1) * ref_txt[:, None]).sum(-1).mean(1)
        torch.testing.assert_close(reward(frames, prompts), ref_score, atol=1e-5, rtol=1e-5)
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))


def test_converter_round_trip_and_unknown_keys(tmp_path):
    sd = _random_open_clip_sd(vocab=100, seed=1)
    back = clip_to_open_clip_state_dict(open_clip_to_clip_state_dict(sd))
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)

    # HPSv2's checkpoint format ({"state_dict": ...}, possibly DataParallel "module." keys).
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "ckpt.pt")
    loaded = load_open_clip_state_dict(tmp_path / "ckpt.pt")
    assert loaded.keys() == sd.keys()

    bad = dict(sd, **{"visual.transformer.resblocks.0.ls_1.gamma": torch.ones(V_WIDTH)})
    with pytest.raises(KeyError, match="ls_1.gamma"):
        open_clip_to_clip_state_dict(bad)
    with pytest.raises(ValueError, match="preset"):
        open_clip_to_clip_model(sd, "ViT-Nope")
    with pytest.raises(ValueError, match="width"):  # ViT-H-14 preset on a tiny checkpoint
        open_clip_to_clip_model(sd, "ViT-H-14")


def test_converter_cli_writes_a_transformers_folder(tmp_path):
    reward = CLIPScoreReward.tiny(seed=8)
    _save_open_clip(reward, tmp_path / "oc", "open_clip_pytorch_model.bin", wrap=False)
    out = tmp_path / "hf"
    assert (
        open_clip_convert.main(
            [
                str(tmp_path / "oc" / "open_clip_pytorch_model.bin"),
                str(out),
                "--arch",
                str(tmp_path / "oc" / "open_clip_config.json"),
            ]
        )
        == 0
    )
    _save_tokenizer(reward.tokenizer, out, as_vocab_merges=False)
    _assert_same_scores(reward, CLIPScoreReward.from_pretrained(out))


# --------------------------------------------------------------------------- registry / CLI


def test_cli_list_shows_image_rewards():
    proc = subprocess.run(
        [sys.executable, "-m", "t2vturbo.rewards", "list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = {ln.split()[0]: ln for ln in proc.stdout.splitlines() if ln.strip()}
    for name in NAMES:
        assert name in lines, proc.stdout
        assert lines[name].split()[1] == "image", lines[name]
    assert "HPS_v2.1_compressed.pt" in lines["hpsv2"]
    assert "clip_rewards" not in proc.stderr and "open_clip_convert" not in proc.stderr, proc.stderr
