"""Component tests for the native video-text rewards ``viclip`` and ``internvideo2``.

Tiny random configurations of the real module classes; the official checkpoints are never
downloaded.  The key layout is checked against names written from the public releases
(OpenGVLab/InternVideo ``Data/InternVid/viclip`` and ``InternVideo2/multi_modality``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from t2vturbo.rewards import available, build
from t2vturbo.rewards.internvideo2 import (
    INTERNVIDEO2_CHECKPOINT,
    InternVideo2Reward,
    interpolate_temporal_pos_embed,
    write_bert_vocab,
)
from t2vturbo.rewards.viclip import (
    VICLIP_CHECKPOINT,
    CheckpointMismatchError,
    ViCLIPReward,
    _SelfAttention,
    write_clip_tokenizer_files,
)

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]
NAMES = ["viclip", "internvideo2"]
PROMPTS = ["a red panda eating bamboo", "an astronaut riding a horse on mars"]

# Representative keys, written from the releases' module names (tiny configs: 2 layers).
EXPECTED_KEYS = {
    "viclip": [
        "temp",
        "vision_encoder.conv1.weight",
        "vision_encoder.class_embedding",
        "vision_encoder.positional_embedding",
        "vision_encoder.temporal_positional_embedding",
        "vision_encoder.ln_pre.weight",
        "vision_encoder.transformer.resblocks.0.attn.in_proj_weight",
        "vision_encoder.transformer.resblocks.0.attn.in_proj_bias",
        "vision_encoder.transformer.resblocks.0.attn.out_proj.weight",
        "vision_encoder.transformer.resblocks.1.ln_1.bias",
        "vision_encoder.transformer.resblocks.1.mlp.c_fc.weight",
        "vision_encoder.transformer.resblocks.1.mlp.c_proj.bias",
        "vision_encoder.transformer.resblocks.1.ln_2.weight",
        "vision_encoder.ln_post.bias",
        "vision_encoder.proj",
        "text_encoder.token_embedding.weight",
        "text_encoder.positional_embedding",
        "text_encoder.transformer.resblocks.0.attn.in_proj_weight",
        "text_encoder.transformer.resblocks.1.mlp.c_proj.weight",
        "text_encoder.ln_final.weight",
        "text_encoder.text_projection",
    ],
    "internvideo2": [
        "vision_encoder.patch_embed.proj.weight",
        "vision_encoder.patch_embed.proj.bias",
        "vision_encoder.cls_token",
        "vision_encoder.pos_embed",
        "vision_encoder.blocks.0.norm1.weight",
        "vision_encoder.blocks.0.attn.qkv.weight",
        "vision_encoder.blocks.0.attn.q_norm.weight",
        "vision_encoder.blocks.0.attn.k_norm.weight",
        "vision_encoder.blocks.0.attn.proj.bias",
        "vision_encoder.blocks.0.ls1.gamma",
        "vision_encoder.blocks.1.norm2.weight",
        "vision_encoder.blocks.1.mlp.fc1.weight",
        "vision_encoder.blocks.1.mlp.fc2.bias",
        "vision_encoder.blocks.1.ls2.gamma",
        "vision_encoder.clip_projector.norm1_q.weight",
        "vision_encoder.clip_projector.norm1_k.bias",
        "vision_encoder.clip_projector.norm1_v.weight",
        "vision_encoder.clip_projector.cross_attn.q.weight",
        "vision_encoder.clip_projector.cross_attn.k_bias",
        "vision_encoder.clip_projector.cross_attn.proj.weight",
        "vision_proj.weight",
        "text_proj.bias",
        "text_encoder.bert.embeddings.word_embeddings.weight",
        "text_encoder.bert.embeddings.position_embeddings.weight",
        "text_encoder.bert.embeddings.token_type_embeddings.weight",
        "text_encoder.bert.embeddings.LayerNorm.weight",
        "text_encoder.bert.encoder.layer.0.attention.self.query.weight",
        "text_encoder.bert.encoder.layer.0.attention.output.dense.bias",
        "text_encoder.bert.encoder.layer.1.attention.output.LayerNorm.weight",
        "text_encoder.bert.encoder.layer.1.intermediate.dense.weight",
        "text_encoder.bert.encoder.layer.1.output.dense.weight",
        "text_encoder.bert.encoder.layer.1.output.LayerNorm.bias",
    ],
}
# Official file name and the container entry holding the state dict.
RELEASE_FILE = {"viclip": (VICLIP_CHECKPOINT, "model"), "internvideo2": (INTERNVIDEO2_CHECKPOINT, "module")}
CLASSES = {"viclip": ViCLIPReward, "internvideo2": InternVideo2Reward}


class _Opaque:
    """A custom class: unpickling it needs arbitrary code (refused by weights_only)."""


@pytest.fixture(scope="module")
def tiny():
    return {name: build(name, tiny=True) for name in NAMES}


def _frames(b=2, f=16, h=40, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, f, 3, h, w, generator=g) * 1.8 - 0.9


def _write_tokenizer(name, reward, folder):
    if name == "viclip":
        write_clip_tokenizer_files(reward.tokenizer, folder)
    else:
        write_bert_vocab(reward.tokenizer, folder)


def _save_release(name, reward, folder, state=None, extra=None):
    """Write a folder laid out as the release: official file name, official container."""
    fname, container = RELEASE_FILE[name]
    state = dict(reward.model.state_dict() if state is None else state)
    torch.save({container: state, **(extra or {})}, folder / fname)
    _write_tokenizer(name, reward, folder)
    return folder


# --------------------------------------------------------------------------- protocol


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_range_and_cosine_formula(tiny, name):
    reward = tiny[name]
    frames = _frames()
    r = reward(frames, PROMPTS)
    assert r.shape == (2,) and r.dtype == torch.float32 and torch.isfinite(r).all()
    assert (r.abs() <= 1 + 1e-6).all()
    # score = cosine(video embedding, text embedding), computed by hand from the model.
    m = reward.model
    v = m.encode_video(reward.preprocess(frames))
    t = m.encode_text(PROMPTS, reward.tokenizer)
    assert torch.allclose(r, F.cosine_similarity(v, t, dim=-1), atol=1e-6)
    assert reward.kind == "video"


@pytest.mark.parametrize("name", NAMES)
def test_gradient_wrt_frames_finite_and_nonzero(tiny, name):
    frames = _frames().requires_grad_(True)
    tiny[name](frames, PROMPTS).sum().backward()
    assert torch.isfinite(frames.grad).all()
    assert (frames.grad.flatten(1).abs().sum(1) > 0).all()
    assert all(p.grad is None for p in tiny[name].parameters())  # frozen: the gradient goes to pixels


@pytest.mark.parametrize("name", NAMES)
def test_activation_checkpointing_gives_same_values_and_gradients(tiny, name, monkeypatch):
    reward = tiny[name]  # the model is shared with the fixture: switch the flag on, then off
    calls = []
    real = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(
        torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    results = []
    for enabled in (False, True):
        reward.set_checkpointing(enabled)
        frames = _frames(seed=5).requires_grad_(True)
        out = reward(frames, PROMPTS)
        out.sum().backward()
        results.append((out.detach(), frames.grad))
    reward.set_checkpointing(False)
    assert len(calls) == 2  # the 2 tiny vision blocks, once (the text runs without grad)
    assert torch.allclose(results[0][0], results[1][0], atol=1e-6)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-6)
    flags = [
        m.grad_checkpointing
        for m in CLASSES[name](reward.model, reward.tokenizer, checkpointing=True).modules()
        if hasattr(m, "grad_checkpointing")
    ]
    assert flags and all(flags)
    reward.set_checkpointing(False)


@pytest.mark.parametrize("name", NAMES)
def test_score_changes_with_prompt(tiny, name):
    reward = tiny[name]
    frames = _frames(b=1).expand(3, -1, -1, -1, -1)
    r = reward(frames, ["a cat", "a dog running on the beach", "a cat"])
    assert r[0] == r[2] and (r[0] - r[1]).abs() > 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_strided_frame_sampling_and_short_clips(tiny, name):
    reward = tiny[name]
    n = reward.num_frames  # 8 (viclip) / 4 (internvideo2), as released
    assert n == {"viclip": 8, "internvideo2": 4}[name]
    frames = _frames(f=16)
    stride = 16 // n
    assert torch.equal(reward.preprocess(frames), reward.preprocess(frames[:, ::stride]))
    # jitter: a random offset in [0, stride), same stride
    jit = CLASSES[name](
        reward.model, reward.tokenizer, jitter=True, generator=torch.Generator().manual_seed(3)
    )
    x = jit.preprocess(frames)
    assert any(torch.equal(x, reward.preprocess(frames[:, o::stride][:, :n])) for o in range(stride))
    # fewer frames than the model needs: frames are repeated
    short = frames[:, :2]
    idx = torch.arange(n) * 2 // n
    assert torch.equal(reward.preprocess(short), reward.preprocess(short[:, idx]))
    assert reward.preprocess(short).shape == (2, n, 3, reward.image_size, reward.image_size)
    assert torch.isfinite(reward(short, PROMPTS)).all()


# --------------------------------------------------------------------------- key layout / loading


@pytest.mark.parametrize("name", NAMES)
def test_key_layout_matches_release_names(tiny, name):
    keys = set(tiny[name].model.state_dict())
    missing = [k for k in EXPECTED_KEYS[name] if k not in keys]
    assert not missing, missing


@pytest.mark.parametrize("name", NAMES)
def test_from_pretrained_roundtrip_is_exact(tiny, name, tmp_path):
    reward = tiny[name]
    _save_release(name, reward, tmp_path)
    loaded = build(name, pretrained=tmp_path, config=reward.model.config)
    assert isinstance(loaded, CLASSES[name])
    sd, ld = reward.model.state_dict(), loaded.model.state_dict()
    assert sd.keys() == ld.keys() and all(torch.equal(sd[k], ld[k]) for k in sd)
    frames = _frames(seed=1)
    assert torch.equal(loaded(frames, PROMPTS), reward(frames, PROMPTS))
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training


@pytest.mark.parametrize("name", NAMES)
def test_renamed_missing_and_misshaped_keys_fail_listing_them(tiny, name, tmp_path):
    reward = tiny[name]
    state = reward.model.state_dict()
    victim = EXPECTED_KEYS[name][1]
    renamed = victim.rsplit(".", 1)[0] + ".renamed_weight"
    broken = {(renamed if k == victim else k): v for k, v in state.items()}
    _save_release(name, reward, tmp_path, state=broken)
    with pytest.raises(CheckpointMismatchError) as ei:
        CLASSES[name].from_pretrained(tmp_path, config=reward.model.config)
    msg = str(ei.value)
    assert "missing keys (1)" in msg and victim in msg
    assert "unexpected keys (1)" in msg and renamed in msg
    assert str(tmp_path) in msg

    gone = EXPECTED_KEYS[name][-1]
    _save_release(name, reward, tmp_path, state={k: v for k, v in state.items() if k != gone})
    with pytest.raises(CheckpointMismatchError, match="missing keys") as ei:
        CLASSES[name].from_pretrained(tmp_path, config=reward.model.config)
    assert gone in str(ei.value)

    shaped = dict(state)
    shaped[victim] = torch.zeros(*state[victim].shape[:-1], state[victim].shape[-1] + 1)
    _save_release(name, reward, tmp_path, state=shaped)
    with pytest.raises(CheckpointMismatchError, match="shape mismatches") as ei:
        CLASSES[name].from_pretrained(tmp_path, config=reward.model.config)
    assert victim in str(ei.value)


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_needing_custom_classes_is_refused(tiny, name, tmp_path):
    reward = tiny[name]
    _save_release(name, reward, tmp_path, extra={"args": _Opaque()})
    with pytest.raises(RuntimeError, match="weights_only=True") as ei:
        CLASSES[name].from_pretrained(tmp_path, config=reward.model.config)
    assert RELEASE_FILE[name][0] in str(ei.value)


@pytest.mark.parametrize("name", NAMES)
def test_missing_folder_or_files_name_path_and_expected_files(tiny, name, tmp_path):
    fname = RELEASE_FILE[name][0]
    tok = "vocab.json" if name == "viclip" else "vocab.txt"
    absent = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as ei:
        build(name, pretrained=absent)
    msg = str(ei.value)
    assert str(absent) in msg and fname in msg and tok in msg

    folder = tmp_path / "only_tokenizer"
    folder.mkdir()
    _write_tokenizer(name, tiny[name], folder)
    with pytest.raises(FileNotFoundError, match="is missing") as ei:
        build(name, pretrained=folder)
    assert str(folder) in str(ei.value) and fname in str(ei.value)


@pytest.mark.parametrize("name", NAMES)
def test_build_without_weights_says_what_to_set(name):
    with pytest.raises(ValueError) as ei:
        build(name)
    msg = str(ei.value)
    assert f"reward.paths.{name}=DIR" in msg and RELEASE_FILE[name][0] in msg and "tiny=True" in msg


def test_registry_and_cli_list_both_as_video():
    reg = available()
    for name in NAMES:
        assert reg[name] is CLASSES[name] and reg[name].kind == "video"
        assert RELEASE_FILE[name][0] in reg[name].expects
    out = subprocess.run(
        [sys.executable, "-m", "t2vturbo.rewards", "list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    for name in NAMES:
        assert lines[name].split()[1] == "video", lines[name]
        assert RELEASE_FILE[name][0] in lines[name]


# --------------------------------------------------------------------------- ViCLIP specifics


def test_viclip_attention_matches_torch_multihead_attention():
    """The release uses nn.MultiheadAttention; same parameters -> same outputs."""
    torch.manual_seed(0)
    ours = _SelfAttention(32, 4)
    ref = torch.nn.MultiheadAttention(32, 4)
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 7, 32)
    xs = x.transpose(0, 1)  # the release's sequence-first layout
    mask = torch.full((7, 7), float("-inf")).triu(1)
    for causal, m in ((False, None), (True, mask)):
        want, _ = ref(xs, xs, xs, need_weights=False, attn_mask=m)
        assert torch.allclose(ours(x, causal=causal), want.transpose(0, 1), atol=1e-6)


def test_viclip_tokens_follow_release_layout(tiny):
    reward = tiny["viclip"]
    n = reward.model.config.context_length
    ids = reward.model.tokenize(["ab", "x" * 100], reward.tokenizer)
    sot, eot = reward.tokenizer.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"])
    assert ids.shape == (2, n) and ids.dtype == torch.long
    assert ids[:, 0].tolist() == [sot, sot]
    assert ids[0, 3] == eot and (ids[0, 4:] == 0).all()  # <sot> a b</w> <eot> 0 ...
    assert ids[1, -1] == eot and (ids[1] == eot).sum() == 1  # truncated, <eot> kept last
    assert (ids.argmax(-1) == torch.tensor([3, n - 1])).all()  # pooled position = EOT


# --------------------------------------------------------------------------- InternVideo2 specifics


def test_internvideo2_bert_matches_transformers_bert(tiny):
    """Same key names as transformers' BertModel; same hidden states (mode="text" layers)."""
    from transformers import BertConfig, BertModel

    m = tiny["internvideo2"].model
    c = m.config
    hf = BertModel(
        BertConfig(
            vocab_size=c.vocab_size,
            hidden_size=c.text_width,
            num_hidden_layers=c.text_layers,
            num_attention_heads=c.text_heads,
            intermediate_size=c.text_mlp_dim,
            max_position_embeddings=c.max_position_embeddings,
            layer_norm_eps=c.text_norm_eps,
        ),
        add_pooling_layer=False,
    ).eval()
    prefix = "text_encoder.bert."
    hf.load_state_dict(
        {k[len(prefix) :]: v for k, v in m.state_dict().items() if k.startswith(prefix)}, strict=True
    )
    ids, mask = m.tokenize(["a cat", "a dog running on the beach"], tiny["internvideo2"].tokenizer)
    assert ids.shape == (2, c.max_text_len) and mask[0].sum() < mask[1].sum()
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        got = m.text_encoder.bert(ids, mask)
    keep = mask.bool()
    assert torch.allclose(got[keep], want[keep], atol=1e-5)


def test_internvideo2_release_extras_are_skipped_and_fusion_layers_checked(tiny, tmp_path):
    reward = tiny["internvideo2"]
    c = reward.model.config
    state = dict(reward.model.state_dict())
    w = c.vision_width
    fusion = f"text_encoder.bert.encoder.layer.{c.text_layers}."
    extras = {
        "vision_encoder.img_pos_embed": torch.zeros(1, 1 + c.grid**2, w),
        "vision_encoder.clip_pos_embed": torch.zeros(1, c.num_tokens, w),
        "vision_encoder.clip_decoder.0.head.weight": torch.zeros(8, w),
        "vision_encoder.final_clip_decoder.norm.bias": torch.zeros(8),
        "text_encoder.cls.predictions.bias": torch.zeros(c.vocab_size),
        "text_encoder.bert.embeddings.position_ids": torch.arange(c.max_position_embeddings)[None],
        fusion + "attention.self.query.weight": torch.zeros(c.text_width, c.text_width),
        fusion + "crossattention.self.query.weight": torch.zeros(c.text_width, c.text_width),
        fusion + "crossattention.self.key.weight": torch.zeros(c.text_width, w),
        "itm_head.weight": torch.zeros(2, c.text_width),
        "temp": torch.tensor(0.07),
    }
    _save_release("internvideo2", reward, tmp_path, state={**state, **extras})
    loaded = InternVideo2Reward.from_pretrained(tmp_path, config=c)
    frames = _frames(seed=2)
    assert torch.equal(loaded(frames, PROMPTS), reward(frames, PROMPTS))

    # A layer past text_layers without cross-attention: the fusion layer is not where we think.
    no_cross = {k: v for k, v in extras.items() if "crossattention" not in k}
    _save_release("internvideo2", reward, tmp_path, state={**state, **no_cross})
    with pytest.raises(CheckpointMismatchError, match="fusion"):
        InternVideo2Reward.from_pretrained(tmp_path, config=c)
    # Cross-attention inside a text-only layer is not skipped: it is an unexpected key.
    bad = {**state, "text_encoder.bert.encoder.layer.0.crossattention.self.query.weight": torch.zeros(2, 2)}
    _save_release("internvideo2", reward, tmp_path, state=bad)
    with pytest.raises(CheckpointMismatchError, match=r"unexpected keys \(1\).*layer\.0\.crossattention"):
        InternVideo2Reward.from_pretrained(tmp_path, config=c)


def test_internvideo2_safetensors_and_temporal_pos_embed_interpolation(tiny, tmp_path):
    from safetensors.torch import save_file

    reward = tiny["internvideo2"]
    c = reward.model.config
    save_file(
        {k: v.contiguous() for k, v in reward.model.state_dict().items()}, tmp_path / "model.safetensors"
    )
    write_bert_vocab(reward.tokenizer, tmp_path)
    frames = _frames(seed=4)
    same = InternVideo2Reward.from_pretrained(tmp_path, config=c)
    assert torch.equal(same(frames, PROMPTS), reward(frames, PROMPTS))

    # 8 frames from the 4-frame checkpoint: pos_embed interpolated linearly in time.
    eight = InternVideo2Reward.from_pretrained(tmp_path, config={**c.to_dict(), "num_frames": 8})
    pe4 = reward.model.vision_encoder.pos_embed.detach()
    pe8 = eight.model.vision_encoder.pos_embed.detach()
    assert pe8.shape == (1, 1 + 8 * c.grid**2, c.vision_width)
    assert torch.equal(pe8, interpolate_temporal_pos_embed(pe4, c.grid, 8))
    g2 = c.grid**2
    assert torch.equal(pe8[:, :1], pe4[:, :1])  # cls entry kept
    assert torch.allclose(pe8[:, 1 : 1 + g2], pe4[:, 1 : 1 + g2])  # first frame (edge of the linear map)
    mid = 0.25 * pe4[:, 1 : 1 + g2] + 0.75 * pe4[:, 1 + g2 : 1 + 2 * g2]  # output t=2 -> source 0.75
    assert torch.allclose(pe8[:, 1 + 2 * g2 : 1 + 3 * g2], mid, atol=1e-6)
    assert eight.num_frames == 8 and torch.isfinite(eight(frames, PROMPTS)).all()
