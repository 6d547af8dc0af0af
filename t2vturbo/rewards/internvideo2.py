"""InternVideo2-stage2 (1B, 224 px, 4 frames) video-text reward, native torch.

T2V-Turbo-v2's best video reward (``--video_rm_name vi_clip2``,
``--video_rm_ckpt_dir model_cache/InternVideo2-stage2_1b-224p-f4.pt``,
``--video_rm_frame_bsz 4``).  The modules mirror the public code (OpenGVLab/InternVideo,
``InternVideo2/multi_modality``: ``models/backbones/internvideo2/internvideo2.py``
(``PretrainInternVideo2`` via ``pretrain_internvideo2_1b_patch14_224``),
``models/backbones/bert/xbert.py``, ``configs/config_bert_large.json``; T2V-Turbo's copy in
``intern_vid2/`` and its ``reward_fn.get_intern_vid2_score_fn``), so ``state_dict()`` keys are
the checkpoint's keys (``torch.load(...)["module"]``, a DeepSpeed state dict)::

    vision_encoder.patch_embed.proj.{weight,bias}        Conv3d(3, 1408, (1, 14, 14))
    vision_encoder.cls_token                             [1, 1, 1408]
    vision_encoder.pos_embed                             [1, 1 + 4*16*16, 1408]
    vision_encoder.blocks.N.norm1.weight                 RMSNorm (eps 1e-6), N < 40
    vision_encoder.blocks.N.attn.qkv.weight              [3*1408, 1408], no bias
    vision_encoder.blocks.N.attn.{q_norm,k_norm}.weight  RMSNorm over all heads (qk-normalisation)
    vision_encoder.blocks.N.attn.proj.{weight,bias}
    vision_encoder.blocks.N.ls1.gamma / ls2.gamma        layer scale
    vision_encoder.blocks.N.norm2.weight
    vision_encoder.blocks.N.mlp.{fc1,fc2}.{weight,bias}  1408 -> 6144 -> 1408
    vision_encoder.clip_projector.norm1_{q,k,v}.{weight,bias}          attention pooling
    vision_encoder.clip_projector.cross_attn.{q,k,v}.weight, {q,k,v}_bias, proj.{weight,bias}  -> 768
    vision_proj.{weight,bias}                            768 -> 512
    text_encoder.bert.embeddings.{word,position,token_type}_embeddings.weight, LayerNorm.*
    text_encoder.bert.encoder.layer.N.attention.self.{query,key,value}.*        N < 19
    text_encoder.bert.encoder.layer.N.attention.output.{dense,LayerNorm}.*
    text_encoder.bert.encoder.layer.N.{intermediate.dense,output.dense,output.LayerNorm}.*
    text_proj.{weight,bias}                              1024 -> 512

Checkpoint keys this reward does not use are skipped by name (:data:`UNUSED_KEYS`): the
image / distillation position embeddings, the UTA ``clip_decoder`` / ``final_clip_decoder``
heads, the MLM head ``text_encoder.cls.*``, BERT layers >= ``fusion_layer`` (19: the
cross-attention layers that ``mode="text"`` never runs), ``itm_head``, ``temp``; any other
difference (missing, unexpected, mis-shaped key) fails loudly.

Forward (as the release, eval mode): ``patch_embed`` -> ``[cls] + tokens (frame-major)``
``+ pos_embed`` -> 40 pre-norm blocks ``x += ls1(attn(norm1(x))); x += ls2(mlp(norm2(x)))``
(no final norm) -> ``clip_projector`` (one query = the token mean) -> ``vision_proj``.
Text: BERT-large, first 19 layers (``mode="text"``), ``[CLS]`` state -> ``text_proj``.

Score (T2V-Turbo-v2 ``get_intern_vid2_score_fn``)::

    r = <vision_proj(pool(x)) / |.|, text_proj(bert(prompt)[CLS]) / |.|>    (cosine, in [-1, 1])

with 4 strided frames clamped to [0, 1], bicubic short-side resize to 224 + centre crop (the
reference crops at random), ImageNet mean / std, and the BERT uncased WordPiece tokens
padded / truncated to 40.

Not verified against the real checkpoint file (not available here): the exact set of keys it
holds (the public loaders use ``strict=False``); the MLP activation: the release runs
flash-attn's ``FusedMLP`` (tanh-approximate GELU, the default ``mlp_act="gelu_tanh"``) when
its fused kernels are on, ``nn.GELU`` (``mlp_act="gelu"``) otherwise; whether the BERT buffer
``embeddings.position_ids`` is stored (skipped either way).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertTokenizer

from .registry import register
from .viclip import (
    CheckpointMismatchError,
    NativeVideoTextReward,
    _resolve_dtype,
    load_checkpoint_file,
    load_state_dict_strict,
    run_blocks,
)

__all__ = [
    "INTERNVIDEO2_CHECKPOINT",
    "UNUSED_KEYS",
    "InternVideo2Config",
    "InternVideo2Model",
    "InternVideo2Reward",
    "interpolate_temporal_pos_embed",
    "tiny_bert_tokenizer",
]

INTERNVIDEO2_CHECKPOINT = "InternVideo2-stage2_1b-224p-f4.pt"

#: Checkpoint keys that the retrieval score never reads (skipped when loading).
UNUSED_KEYS: tuple[str, ...] = (
    r"vision_encoder\.(img_pos_embed|clip_pos_embed|clip_img_pos_embed)",  # image / distillation pos-embeds
    r"vision_encoder\.(clip_decoder|final_clip_decoder)\..+",  # stage-1/2 UTA distillation heads
    r"text_encoder\.cls\..+",  # MLM head
    r"text_encoder\.bert\.embeddings\.position_ids",  # buffer, recomputed
    r"itm_head\..+",  # video-text matching head
    r"temp",  # contrastive temperature
    r"clip_teacher\..+",  # InternVL teacher, if it was saved
)


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class InternVideo2Config:
    """Defaults: ``pretrain_internvideo2_1b_patch14_224`` + ``bert_large`` (T2V-Turbo-v2 config)."""

    image_size: int = 224
    patch_size: int = 14
    num_frames: int = 4
    tubelet_size: int = 1
    vision_width: int = 1408
    vision_layers: int = 40
    vision_heads: int = 16
    vision_mlp_dim: int = 6144  # int(1408 * 48 / 11)
    mlp_act: str = "gelu_tanh"  # flash-attn FusedMLP; "gelu" for the unfused nn.GELU path
    norm_eps: float = 1e-6
    layerscale_init: float = 1e-5  # random init only
    pool_heads: int = 16
    clip_embed_dim: int = 768  # attention-pooling output (``vision_width`` of the stage-2 model)
    embed_dim: int = 512
    vocab_size: int = 30522
    text_width: int = 1024
    text_layers: int = 19  # = fusion_layer: layers run by mode="text"
    text_heads: int = 16
    text_mlp_dim: int = 4096
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    text_norm_eps: float = 1e-12
    max_text_len: int = 40

    @classmethod
    def tiny(cls, **overrides: Any) -> InternVideo2Config:
        base = cls(
            image_size=32,
            patch_size=8,
            num_frames=4,
            vision_width=48,
            vision_layers=2,
            vision_heads=4,
            vision_mlp_dim=96,
            layerscale_init=0.5,
            pool_heads=4,
            clip_embed_dim=40,
            embed_dim=24,
            vocab_size=len(_TINY_BERT_VOCAB),
            text_width=32,
            text_layers=2,
            text_heads=4,
            text_mlp_dim=64,
            max_position_embeddings=64,
        )
        return replace(base, **overrides)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return 1 + (self.num_frames // self.tubelet_size) * self.grid**2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- vision tower


class _RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class _LayerScale(nn.Module):
    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() * self.gamma.float()).to(x.dtype)


class _Attention(nn.Module):
    """Self-attention with a bias-free packed ``qkv`` and RMS-normalised q, k (over all heads)."""

    def __init__(self, dim: int, heads: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm = _RMSNorm(dim, eps)
        self.k_norm = _RMSNorm(dim, eps)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, c).unbind(2)
        q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.reshape(b, n, self.heads, c // self.heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str) -> None:
        super().__init__()
        if act not in ("gelu", "gelu_tanh"):
            raise ValueError(f"mlp_act must be 'gelu' or 'gelu_tanh', got {act!r}")
        self.approximate = "tanh" if act == "gelu_tanh" else "none"
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


class _Block(nn.Module):
    def __init__(self, cfg: InternVideo2Config) -> None:
        super().__init__()
        w = cfg.vision_width
        self.norm1 = _RMSNorm(w, cfg.norm_eps)
        self.attn = _Attention(w, cfg.vision_heads, cfg.norm_eps)
        self.ls1 = _LayerScale(w, cfg.layerscale_init)
        self.norm2 = _RMSNorm(w, cfg.norm_eps)
        self.mlp = _Mlp(w, cfg.vision_mlp_dim, cfg.mlp_act)
        self.ls2 = _LayerScale(w, cfg.layerscale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _PatchEmbed(nn.Module):
    def __init__(self, cfg: InternVideo2Config) -> None:
        super().__init__()
        k = (cfg.tubelet_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(3, cfg.vision_width, kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, H, W] -> [B, T' * h * w, C]`` (frame-major token order)."""
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2)


class _PoolCrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int, out_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.k_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, out_dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, c, h = q.shape[0], q.shape[-1], self.heads

        def heads(t: torch.Tensor, lin: nn.Linear, bias: torch.Tensor) -> torch.Tensor:
            return F.linear(t, lin.weight, bias).reshape(b, t.shape[1], h, c // h).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(q, self.q, self.q_bias), heads(k, self.k, self.k_bias), heads(v, self.v, self.v_bias)
        )
        return self.proj(out.transpose(1, 2).reshape(b, q.shape[1], c))


class _AttentionPooling(nn.Module):
    """One query (the mean token) attends over all tokens -> ``[B, out_dim]``."""

    def __init__(self, dim: int, heads: int, out_dim: int) -> None:
        super().__init__()
        self.norm1_q = nn.LayerNorm(dim, eps=1e-5)
        self.norm1_k = nn.LayerNorm(dim, eps=1e-5)
        self.norm1_v = nn.LayerNorm(dim, eps=1e-5)
        self.cross_attn = _PoolCrossAttention(dim, heads, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.norm1_q(x.mean(1, keepdim=True))
        return self.cross_attn(q, self.norm1_k(x), self.norm1_v(x)).squeeze(1)


class InternVideo2VisionEncoder(nn.Module):
    def __init__(self, cfg: InternVideo2Config) -> None:
        super().__init__()
        if cfg.image_size % cfg.patch_size or cfg.num_frames % cfg.tubelet_size:
            raise ValueError("image_size / num_frames must be multiples of patch_size / tubelet_size")
        self.patch_embed = _PatchEmbed(cfg)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, cfg.vision_width))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, cfg.num_tokens, cfg.vision_width))
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.vision_layers))
        self.clip_projector = _AttentionPooling(cfg.vision_width, cfg.pool_heads, cfg.clip_embed_dim)
        self.grad_checkpointing = False

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, T, 3, S, S]`` (normalised) -> pooled ``[B, clip_embed_dim]``."""
        x = self.patch_embed(pixels.transpose(1, 2))
        if x.shape[1] + 1 != self.pos_embed.shape[1]:
            raise ValueError(f"got {x.shape[1]} patch tokens, pos_embed holds {self.pos_embed.shape[1] - 1}")
        x = torch.cat([self.cls_token.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed.to(x.dtype)
        x = run_blocks(self.blocks, x, self.grad_checkpointing)
        return self.clip_projector(x)


# --------------------------------------------------------------------------- text tower (BERT)


class _BertEmbeddings(nn.Module):
    def __init__(self, cfg: InternVideo2Config) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.text_width, padding_idx=0)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.text_width)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.text_width)
        self.LayerNorm = nn.LayerNorm(cfg.text_width, eps=cfg.text_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_embeddings(ids) + self.token_type_embeddings(torch.zeros_like(ids))
        return self.LayerNorm(x + self.position_embeddings(pos))


class _BertSelfAttention(nn.Module):
    def __init__(self, cfg: InternVideo2Config) -> None:
        super().__init__()
        self.heads = cfg.text_heads
        self.query = nn.Linear(cfg.text_width, cfg.text_width)
        self.key = nn.Linear(cfg.text_width, cfg.text_width)
        self.value = nn.Linear(cfg.text_width, cfg.text_width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, c // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(self.query(x)), split(self.key(x)), split(self.value(x)), attn_mask=mask
        )
        return out.transpose(1, 2).reshape(b, n, c)


class _BertDenseNorm(nn.Module):
    """``LayerNorm(dense(h) + residual)`` (BERT's ``*Output`` modules)."""

    def __init__(self, d_in: int, d_out: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h) + residual)


class _BertAttention(nn.Module):
    def __init__(self, cfg: InternVideo2Config) -> None:
        super().__init__()
        self.self = _BertSelfAttention(cfg)
        self.output = _BertDenseNorm(cfg.text_width, cfg.text_width, cfg.text_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class _BertIntermediate(nn.Module):
    def __init__(self, cfg: InternVideo2Config) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.text_width, cfg.text_mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class _BertLayer(nn.Module):
    def __init__(self, cfg: InternVideo2Config) -> None:
        super().__init__()
        self.attention = _BertAttention(cfg)
        self.intermediate = _BertIntermediate(cfg)
        self.output = _BertDenseNorm(cfg.text_mlp_dim, cfg.text_width, cfg.text_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class _BertEncoder(nn.Module):
    def __init__(self, cfg: InternVideo2Config) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_BertLayer(cfg) for _ in range(cfg.text_layers))


class BertTextEncoder(nn.Module):
    """The text-only part of the release's BERT (``mode="text"``: layers ``< fusion_layer``)."""

    def __init__(self, cfg: InternVideo2Config) -> None:
        super().__init__()
        self.embeddings = _BertEmbeddings(cfg)
        self.encoder = _BertEncoder(cfg)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids / 0-1 mask ``[B, L]`` -> hidden states ``[B, L, C]``."""
        x = self.embeddings(ids)
        mask = ((1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0).to(x.dtype)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return x


class _TextEncoder(nn.Module):
    """Holds ``bert`` so the keys read ``text_encoder.bert.*`` as in the checkpoint."""

    def __init__(self, cfg: InternVideo2Config) -> None:
        super().__init__()
        self.bert = BertTextEncoder(cfg)


class InternVideo2Model(nn.Module):
    """The retrieval path of ``InternVideo2_Stage2`` with the release's module names."""

    def __init__(self, config: InternVideo2Config | None = None) -> None:
        super().__init__()
        self.config = cfg = config or InternVideo2Config()
        self.vision_encoder = InternVideo2VisionEncoder(cfg)
        self.text_encoder = _TextEncoder(cfg)
        self.vision_proj = nn.Linear(cfg.clip_embed_dim, cfg.embed_dim)
        self.text_proj = nn.Linear(cfg.text_width, cfg.embed_dim)
        if not _is_meta(self):
            self.apply(_init_weights)

    def encode_video(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vision_proj(self.vision_encoder(pixels))

    def tokenize(self, prompts: Sequence[str], tokenizer: Any, device: torch.device | str = "cpu"):
        enc = tokenizer(
            list(prompts),
            padding="max_length",
            truncation=True,
            max_length=self.config.max_text_len,
            return_tensors="pt",
        )
        return enc["input_ids"].to(device), enc["attention_mask"].to(device)

    def encode_text(
        self, prompts: Sequence[str], tokenizer: Any, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        ids, mask = self.tokenize(prompts, tokenizer, device)
        return self.text_proj(self.text_encoder.bert(ids, mask)[:, 0])


def _is_meta(module: nn.Module) -> bool:
    return any(p.is_meta for p in module.parameters())


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.normal_(m.weight, std=0.02)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- checkpoint handling


def interpolate_temporal_pos_embed(pos: torch.Tensor, grid: int, new_t: int) -> torch.Tensor:
    """``[1, 1 + T*grid^2, C] -> [1, 1 + new_t*grid^2, C]``: linear interpolation along time
    of the patch entries (cls kept), as the release's ``interpolate_pos_embed_internvideo2``."""
    c = pos.shape[-1]
    cls_tok, tokens = pos[:, :1], pos[:, 1:]
    t = tokens.shape[1] // (grid * grid)
    if t * grid * grid != tokens.shape[1]:
        raise CheckpointMismatchError(
            f"pos_embed with {tokens.shape[1]} patch entries is not T x {grid}x{grid}"
        )
    if t == new_t:
        return pos
    x = tokens.reshape(1, t, grid * grid, c).permute(0, 2, 3, 1).reshape(-1, c, t)
    x = F.interpolate(x.float(), size=new_t, mode="linear").to(pos.dtype)
    x = x.reshape(1, grid * grid, c, new_t).permute(0, 3, 1, 2).reshape(1, -1, c)
    return torch.cat([cls_tok, x], dim=1)


def _text_layer_index(key: str) -> int | None:
    m = re.match(r"text_encoder\.bert\.encoder\.layer\.(\d+)\.", key)
    return int(m.group(1)) if m else None


def prepare_state_dict(state: Mapping[str, torch.Tensor], cfg: InternVideo2Config) -> dict[str, torch.Tensor]:
    """Release state dict -> this model's: temporal pos-embed interpolation when
    ``cfg.num_frames`` differs from the checkpoint's, and a check that the BERT layers
    beyond ``cfg.text_layers`` are the release's cross-attention (fusion) layers."""
    state = dict(state)
    key = "vision_encoder.pos_embed"
    if key in state and state[key].ndim == 3 and state[key].shape[1] != cfg.num_tokens:
        state[key] = interpolate_temporal_pos_embed(state[key], cfg.grid, cfg.num_frames // cfg.tubelet_size)
    extra = sorted({i for k in state if (i := _text_layer_index(k)) is not None and i >= cfg.text_layers})
    if extra:
        first = f"text_encoder.bert.encoder.layer.{extra[0]}.crossattention.self.query.weight"
        if extra[0] != cfg.text_layers or first not in state:
            raise CheckpointMismatchError(
                f"text layers {extra[0]}..{extra[-1]} of the checkpoint are expected to be the fusion "
                f"(cross-attention) layers starting at text_layers={cfg.text_layers}, but {first!r} is missing; "
                "the checkpoint's fusion_layer differs from this config"
            )
    return state


def _unused_key_rules(cfg: InternVideo2Config) -> list:
    def fusion_layer(k: str) -> bool:
        i = _text_layer_index(k)
        return i is not None and i >= cfg.text_layers

    return [*UNUSED_KEYS, fusion_layer]


# --------------------------------------------------------------------------- tokenizer for tests

_TINY_BERT_VOCAB: tuple[str, ...] = (
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    *"abcdefghijklmnopqrstuvwxyz0123456789",
    *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"),
    ".",
    ",",
    "!",
    "?",
    "-",
    "'",
)


def tiny_bert_tokenizer():
    """Character-level uncased WordPiece tokenizer (``[PAD]`` = 0, as in BERT's vocab)."""
    return BertTokenizer(vocab={t: i for i, t in enumerate(_TINY_BERT_VOCAB)}, do_lower_case=True)


def write_bert_vocab(tokenizer: Any, folder: str | os.PathLike) -> None:
    """Write ``vocab.txt`` (one token a line, in id order) of a WordPiece tokenizer (tests)."""
    vocab = tokenizer.get_vocab()
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / "vocab.txt").write_text("\n".join(sorted(vocab, key=vocab.get)) + "\n")


# --------------------------------------------------------------------------- the reward


@register("internvideo2")
class InternVideo2Reward(NativeVideoTextReward):
    """InternVideo2-stage2-1B text-video cosine similarity on 4 strided frames at 224 px."""

    expects: ClassVar[str] = (
        f"folder with {INTERNVIDEO2_CHECKPOINT} (HF OpenGVLab/InternVideo2-Stage2_1B-224p-f4; or "
        "model.safetensors) + BERT WordPiece vocab.txt of bert-large-uncased (also accepted under tokenizer/)"
    )
    required_files: ClassVar[tuple[str | tuple[str, ...], ...]] = (
        (INTERNVIDEO2_CHECKPOINT, "model.safetensors"),
        ("vocab.txt", "tokenizer/vocab.txt"),
    )
    layout_hint: ClassVar[str] = (
        f"Layout: DIR/{INTERNVIDEO2_CHECKPOINT} (from huggingface.co/OpenGVLab/InternVideo2-Stage2_1B-224p-f4; "
        "its 'module' entry is the state dict) and DIR/vocab.txt (or DIR/tokenizer/vocab.txt, with an optional "
        "tokenizer_config.json) from google-bert/bert-large-uncased."
    )

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        config: InternVideo2Config | Mapping[str, Any] | None = None,
        dtype: torch.dtype | str | None = None,
        **kwargs: Any,
    ) -> InternVideo2Reward:
        """Load the stage-2 checkpoint from the folder ``path`` (see :attr:`expects`).

        ``config``: architecture (default: the released 1B / BERT-large; ``num_frames`` other
        than the checkpoint's 4 interpolates ``pos_embed`` in time as the release does);
        ``dtype``: cast after loading; other ``kwargs`` (``jitter``, ``clamp``, ``generator``)
        go to the reward.
        """
        weights, vocab = cls._check_folder(path)
        cfg = config if isinstance(config, InternVideo2Config) else InternVideo2Config(**dict(config or {}))
        tokenizer = BertTokenizer.from_pretrained(str(vocab.parent), local_files_only=True)
        with torch.device("meta"):
            model = InternVideo2Model(cfg)
        model = model.to_empty(device="cpu")
        state = prepare_state_dict(load_checkpoint_file(weights), cfg)
        load_state_dict_strict(model, state, source=str(weights), ignore=_unused_key_rules(cfg))
        if (dt := _resolve_dtype(dtype)) is not None:
            model = model.to(dt)
        return cls(model, tokenizer, **kwargs).freeze()

    @classmethod
    def tiny(cls, seed: int = 0, **kwargs: Any) -> InternVideo2Reward:
        """Random tiny InternVideo2 (same modules; :meth:`InternVideo2Config.tiny`) with a
        character-level WordPiece tokenizer.  Config fields in ``kwargs`` override the tiny
        config; the rest go to the reward."""
        fields = set(InternVideo2Config.__dataclass_fields__)
        cfg = InternVideo2Config.tiny(**{k: v for k, v in kwargs.items() if k in fields})
        rest = {k: v for k, v in kwargs.items() if k not in fields}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = InternVideo2Model(cfg)
        return cls(model, tiny_bert_tokenizer(), **rest).freeze()
