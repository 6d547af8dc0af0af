"""ViCLIP video-text reward (InternVid, ViT-L/14, 8 frames, 224 px), native torch.

The model mirrors the public ViCLIP release (OpenGVLab/InternVideo, ``Data/InternVid/viclip``:
``viclip.py``, ``viclip_vision.py``, ``viclip_text.py``; identical copy in T2V-Turbo's ``viclip/``)
module for module, so its ``state_dict()`` keys are the release's keys and the official checkpoint
``ViClip-InternVid-10M-FLT.pth`` (``torch.load(...)["model"]``, loaded strictly by the release)
loads with no renaming::

    vision_encoder.conv1.weight                      Conv3d(3, W, (1, 14, 14)), no bias
    vision_encoder.class_embedding                   [W]
    vision_encoder.positional_embedding              [(224/14)^2 + 1, W]   (spatial, per frame)
    vision_encoder.temporal_positional_embedding     [1, 8, W]
    vision_encoder.ln_pre.{weight,bias}
    vision_encoder.transformer.resblocks.N.attn.{in_proj_weight,in_proj_bias,out_proj.weight,out_proj.bias}
    vision_encoder.transformer.resblocks.N.{ln_1,ln_2}.{weight,bias}
    vision_encoder.transformer.resblocks.N.mlp.{c_fc,c_proj}.{weight,bias}
    vision_encoder.ln_post.{weight,bias}
    vision_encoder.proj                              [W, 768]
    text_encoder.token_embedding.weight              [49408, 768]
    text_encoder.positional_embedding                [32, 768]   (context length 32)
    text_encoder.transformer.resblocks.N.*           (same block layout, causal)
    text_encoder.ln_final.{weight,bias}
    text_encoder.text_projection                     [768, 768]
    temp                                             []  (contrastive temperature; unused here)

Forward (as the release): per-frame patch embedding, ``class_embedding + positional_embedding``
(spatial), ``temporal_positional_embedding`` added to the patch tokens, tokens laid out as
``[cls, (patch, frame)...]``, ``ln_pre`` -> pre-LN transformer (QuickGELU MLP) -> ``ln_post`` ->
``x[cls] @ proj``.  Text: CLIP causal transformer over 32 tokens, feature at the EOT token
(``argmax`` of the ids) ``@ text_projection``.

Score (T2V-Turbo-v2 ``get_vi_clip_score_fn``)::

    r = <v / |v|, t / |t|>        (cosine similarity, no logit scale; in [-1, 1])

with ``v`` from 8 strided frames, clamped to [0, 1], bicubic short-side resize to 224 and
centre crop (the reference crops at random), ImageNet mean/std; ``t`` from the CLIP BPE
tokens (computed without gradient).

This module also holds the loading helpers shared with :mod:`t2vturbo.rewards.internvideo2`:
:func:`load_checkpoint_file` (``torch.load(weights_only=True)`` / safetensors) and
:func:`load_state_dict_strict` (missing / unexpected / mis-shaped keys listed in the error).
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from safetensors.torch import load_file
from torch import nn
from transformers import CLIPTokenizer

from .base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Reward,
    normalize,
    require_files,
    resize_center_crop,
    select_frames,
    to_unit_range,
)
from .registry import register

__all__ = [
    "CheckpointMismatchError",
    "NativeVideoTextReward",
    "ViCLIPConfig",
    "ViCLIPModel",
    "ViCLIPReward",
    "load_checkpoint_file",
    "load_state_dict_strict",
    "run_blocks",
    "sample_frames",
    "tiny_clip_tokenizer",
]


# --------------------------------------------------------------------------- loading helpers


class CheckpointMismatchError(RuntimeError):
    """The checkpoint's keys / shapes do not match the module (the message lists them)."""


def load_checkpoint_file(
    path: str | os.PathLike, containers: Sequence[str] = ("model", "module", "state_dict")
) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` without unpickling arbitrary objects.

    ``*.safetensors`` -> :func:`safetensors.torch.load_file`; anything else ->
    ``torch.load(path, map_location="cpu", weights_only=True)``.  A pickled checkpoint that
    needs custom classes fails with a :class:`RuntimeError` explaining how to convert it.
    When the loaded object is a dict holding one of ``containers`` (the releases wrap their
    weights as ``{"model": ...}`` (ViCLIP) or ``{"module": ...}`` (InternVideo2, DeepSpeed)),
    that entry is returned; otherwise the object itself must be the state dict.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        return dict(load_file(str(path), device="cpu"))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RuntimeError(
            f"cannot load {str(path)!r} with torch.load(weights_only=True): it pickles objects other than "
            f"tensors ({first}). This project never unpickles arbitrary code. Convert it once, in an "
            "environment you trust: `ckpt = torch.load(PATH, weights_only=False); "
            "torch.save({k: v for k, v in ckpt[KEY].items()}, PATH)` with KEY the entry holding the "
            f"weights (one of {', '.join(containers)}), or save it as model.safetensors."
        ) from e
    if isinstance(obj, Mapping):
        for key in containers:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointMismatchError(
            f"{str(path)!r} holds no state dict (expected a dict of tensors, or one under {', '.join(containers)})"
        )
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointMismatchError(f"{str(path)!r}: non-tensor entries in the state dict: {_short(bad)}")
    return dict(obj)


def _short(keys: Iterable[str], limit: int = 25) -> str:
    keys = list(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_state_dict_strict(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str = "checkpoint",
    ignore: Sequence[str | Callable[[str], bool]] = (),
) -> list[str]:
    """Load ``state`` into ``module`` requiring an exact key and shape match.

    ``ignore``: regular expressions (``re.fullmatch``) or predicates naming checkpoint keys
    that are known to be unused by this module (e.g. training-only heads); they are
    skipped and returned.  Any other key of ``state`` that the module lacks, any module key
    absent from ``state`` and any shape mismatch raise :class:`CheckpointMismatchError`
    listing them all.
    """
    own = module.state_dict()
    rules = [(lambda k, p=p: re.fullmatch(p, k) is not None) if isinstance(p, str) else p for p in ignore]
    ignored = [k for k in state if k not in own and any(rule(k) for rule in rules)]
    skip = set(ignored)
    unexpected = [k for k in state if k not in own and k not in skip]
    missing = [k for k in own if k not in state]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_short(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {_short(shapes)}")
        raise CheckpointMismatchError(
            f"{type(module).__name__}: {source} does not match the model; " + "; ".join(parts)
        )
    module.load_state_dict({k: state[k] for k in own}, strict=True)
    return ignored


def run_blocks(blocks: Iterable[nn.Module], x: torch.Tensor, checkpointing: bool = False) -> torch.Tensor:
    """``x = blk(x)`` for each block, under activation checkpointing when asked and grad is on."""
    use_ckpt = checkpointing and torch.is_grad_enabled()
    for blk in blocks:
        x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False) if use_ckpt else blk(x)
    return x


def sample_frames(
    frames: torch.Tensor, n: int, *, jitter: bool = False, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``[B, F, ...] -> [B, n, ...]``: strided frames (T2V-Turbo-v2's video-reward frames).

    ``F >= n``: stride ``F // n`` from offset 0 (or a random offset in ``[0, stride)`` with
    ``jitter=True``), see :func:`t2vturbo.rewards.base.frame_indices`.  ``F < n``: frames
    are repeated (index ``floor(i F / n)``) so the model still sees ``n`` frames.
    """
    num = frames.shape[1]
    if num >= n:
        return select_frames(frames, n, mode="strided", generator=generator, jitter=jitter)
    idx = torch.arange(n) * num // n
    return frames.index_select(1, idx.to(frames.device))


# --------------------------------------------------------------------------- shared reward base


class NativeVideoTextReward(Reward):
    """Cosine similarity between a native video encoder and a text encoder (not registered).

    Subclasses provide ``model`` with ``config.num_frames`` / ``config.image_size``,
    ``encode_video(pixels [B,T,3,S,S]) -> [B, D]`` and ``encode_text(prompts, tokenizer)
    -> [B, D]``, plus the class attributes below for the error messages.
    """

    kind: ClassVar[str] = "video"
    #: files :meth:`from_pretrained` requires (entries may be tuples of alternatives)
    required_files: ClassVar[tuple[str | tuple[str, ...], ...]] = ()
    #: where the files come from / how the folder looks (appended to missing-file errors)
    layout_hint: ClassVar[str] = ""

    def __init__(
        self,
        model: nn.Module | None = None,
        tokenizer: Any = None,
        *,
        jitter: bool = False,
        clamp: bool = True,
        generator: torch.Generator | None = None,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if model is None or tokenizer is None:
            raise ValueError(self.no_weights_message())
        self.model = model
        self.tokenizer = tokenizer
        self.jitter = bool(jitter)
        self.clamp = bool(clamp)
        self.generator = generator
        self.set_checkpointing(checkpointing)

    def set_checkpointing(self, enabled: bool = True) -> NativeVideoTextReward:
        """Activation checkpointing of the transformer blocks while gradients are on (the
        releases checkpoint every vision block in training); same values, less memory."""
        for m in self.model.modules():
            if hasattr(m, "grad_checkpointing"):
                m.grad_checkpointing = bool(enabled)
        return self

    @classmethod
    def no_weights_message(cls) -> str:
        files = ", ".join(" | ".join((f,) if isinstance(f, str) else f) for f in cls.required_files)
        return (
            f"reward {cls.name!r} ({cls.__name__}) needs its pretrained weights: set "
            f"reward.paths.{cls.name}=DIR (or build({cls.name!r}, pretrained=DIR)) where DIR is a local "
            f"folder holding {files}. {cls.layout_hint} Use tiny=True for a random tiny model (tests)."
        )

    @classmethod
    def _check_folder(cls, path: str | os.PathLike) -> list[Path]:
        return require_files(path, cls.required_files, layout_hint=cls.layout_hint)

    # ------------------------------------------------------------------ scoring
    @property
    def num_frames(self) -> int:
        return int(self.model.config.num_frames)

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, F, 3, H, W]`` in [-1, 1] -> model pixels ``[B, T, 3, S, S]`` (differentiable).

        Strided sampling to ``num_frames``, [-1, 1] -> [0, 1] (clamped, as the reference
        decodes then clamps), bicubic short-side resize to ``image_size`` + centre crop,
        ImageNet mean / std.
        """
        x = sample_frames(frames, self.num_frames, jitter=self.jitter, generator=self.generator)
        x = to_unit_range(x, clamp=self.clamp)
        x = resize_center_crop(x, self.image_size, mode="bicubic")
        return normalize(x, IMAGENET_MEAN, IMAGENET_STD)

    def _param_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def video_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Unit-norm video embeddings ``[B, D]`` (float32) of clips in [-1, 1]."""
        pixels = self.preprocess(frames).to(self._param_dtype())
        return F.normalize(self.model.encode_video(pixels).float(), dim=-1)

    @torch.no_grad()
    def text_features(self, prompts: list[str]) -> torch.Tensor:
        """Unit-norm text embeddings ``[B, D]`` (float32), computed without gradient."""
        device = next(self.model.parameters()).device
        return F.normalize(self.model.encode_text(prompts, self.tokenizer, device).float(), dim=-1)

    def score(self, frames: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        v = self.video_features(frames)
        t = self.text_features(prompts)
        return (v * t).sum(-1)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, frames={self.num_frames}, size={self.image_size}, jitter={self.jitter}"
        )


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    table = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
    }
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(table)}")
    return table[dtype]


# --------------------------------------------------------------------------- ViCLIP config


@dataclass(frozen=True)
class ViCLIPConfig:
    """ViCLIP hyper-parameters; defaults are the released ViT-L/14 (``clip_joint_l14`` +
    ``clip_text_l14`` with ``context_length = max_txt_l = 32``)."""

    image_size: int = 224
    patch_size: int = 14
    num_frames: int = 8
    vision_width: int = 1024
    vision_layers: int = 24
    vision_heads: int = 16
    embed_dim: int = 768  # vision ``proj`` and ``text_projection`` output
    vocab_size: int = 49408
    context_length: int = 32
    text_width: int = 768
    text_layers: int = 12
    text_heads: int = 12

    @classmethod
    def tiny(cls, **overrides: Any) -> ViCLIPConfig:
        base = cls(
            image_size=32,
            patch_size=8,
            num_frames=8,
            vision_width=32,
            vision_layers=2,
            vision_heads=4,
            embed_dim=24,
            vocab_size=514,
            context_length=16,
            text_width=32,
            text_layers=2,
            text_heads=4,
        )
        return replace(base, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- ViCLIP modules


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _SelfAttention(nn.Module):
    """Multi-head self-attention with ``torch.nn.MultiheadAttention``'s parameter names
    (packed ``in_proj_weight`` / ``in_proj_bias`` in q, k, v order, ``out_proj``), computed
    batch-first with ``scaled_dot_product_attention``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        b, n, c = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(b, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(dim, 4 * dim)
        self.gelu = _QuickGELU()
        self.c_proj = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class _ResidualAttentionBlock(nn.Module):
    def __init__(self, dim: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.causal = causal
        self.attn = _SelfAttention(dim, heads)
        self.ln_1 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim)
        self.ln_2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal=self.causal)
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    def __init__(self, dim: int, layers: int, heads: int, causal: bool = False) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(_ResidualAttentionBlock(dim, heads, causal) for _ in range(layers))
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_blocks(self.resblocks, x, self.grad_checkpointing)


class ViCLIPVisionEncoder(nn.Module):
    """Joint space-time ViT (``VisionTransformer`` of the release, kernel_size 1)."""

    def __init__(self, cfg: ViCLIPConfig) -> None:
        super().__init__()
        w, p = cfg.vision_width, cfg.patch_size
        if cfg.image_size % p:
            raise ValueError(f"image_size {cfg.image_size} is not a multiple of patch_size {p}")
        scale = w**-0.5
        self.conv1 = nn.Conv3d(3, w, (1, p, p), (1, p, p), bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(w))
        self.positional_embedding = nn.Parameter(scale * torch.randn((cfg.image_size // p) ** 2 + 1, w))
        self.temporal_positional_embedding = nn.Parameter(0.02 * torch.randn(1, cfg.num_frames, w))
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = _Transformer(w, cfg.vision_layers, cfg.vision_heads)
        self.ln_post = nn.LayerNorm(w)
        self.proj = nn.Parameter(scale * torch.randn(w, cfg.embed_dim))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, T, 3, S, S]`` (normalised) -> ``[B, embed_dim]``."""
        b, t = pixels.shape[:2]
        x = self.conv1(pixels.transpose(1, 2))  # [B, W, T, h, w]
        x = x.flatten(3).permute(0, 2, 3, 1)  # [B, T, N, W]
        x = x + self.positional_embedding[1:].to(x.dtype)
        if t == 1:  # single frame: the release adds the mean temporal embedding
            temporal = self.temporal_positional_embedding.mean(1, keepdim=True)
        elif t == self.temporal_positional_embedding.shape[1]:
            temporal = self.temporal_positional_embedding
        else:
            raise ValueError(
                f"ViCLIP was built for {self.temporal_positional_embedding.shape[1]} frames, got {t}"
            )
        x = x + temporal.to(x.dtype).unsqueeze(2)  # [1, T, 1, W]
        x = x.transpose(1, 2).reshape(b, -1, x.shape[-1])  # tokens ordered (patch, frame)
        cls = (self.class_embedding + self.positional_embedding[0]).to(x.dtype).expand(b, 1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1))
        x = self.ln_post(self.transformer(x))
        return x[:, 0] @ self.proj.to(x.dtype)


class ViCLIPTextEncoder(nn.Module):
    """CLIP text transformer (``CLIP_TEXT`` of the release): causal, EOT-token feature."""

    def __init__(self, cfg: ViCLIPConfig) -> None:
        super().__init__()
        w = cfg.text_width
        self.context_length = cfg.context_length
        self.transformer = _Transformer(w, cfg.text_layers, cfg.text_heads, causal=True)
        self.token_embedding = nn.Embedding(cfg.vocab_size, w)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(cfg.context_length, w))
        self.ln_final = nn.LayerNorm(w)
        self.text_projection = nn.Parameter(w**-0.5 * torch.randn(w, cfg.embed_dim))
        nn.init.normal_(self.token_embedding.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``[B, context_length]`` token ids (0-padded) -> ``[B, embed_dim]``."""
        x = self.token_embedding(ids) + self.positional_embedding
        x = self.ln_final(self.transformer(x))
        eot = ids.argmax(dim=-1)  # the EOT token has the largest id
        return x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection


class ViCLIPModel(nn.Module):
    """ViCLIP with the release's top-level names (``vision_encoder``, ``text_encoder``, ``temp``)."""

    def __init__(self, config: ViCLIPConfig | None = None) -> None:
        super().__init__()
        self.config = config or ViCLIPConfig()
        self.vision_encoder = ViCLIPVisionEncoder(self.config)
        self.text_encoder = ViCLIPTextEncoder(self.config)
        self.temp = nn.Parameter(torch.tensor(1 / 100.0))  # release's contrastive temperature (unused)

    def encode_video(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vision_encoder(pixels)

    def tokenize(
        self, prompts: Sequence[str], tokenizer: Any, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """CLIP BPE ids ``[B, context_length]``: ``<sot> tokens <eot>``, truncated to the
        context (keeping ``<eot>`` last), zero-padded, as the release's ``tokenize``."""
        n = self.config.context_length
        rows = tokenizer(list(prompts), truncation=True, max_length=n, add_special_tokens=True)["input_ids"]
        ids = torch.zeros(len(rows), n, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.as_tensor(row[:n], dtype=torch.long)
        return ids.to(device)

    def encode_text(
        self, prompts: Sequence[str], tokenizer: Any, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        return self.text_encoder(self.tokenize(prompts, tokenizer, device))


def tiny_clip_tokenizer():
    """A byte-level CLIP BPE tokenizer with no merges (514 ids: 256 bytes, 256 ``byte</w>``,
    ``<|startoftext|>``, ``<|endoftext|>``), the id layout of the real CLIP vocabulary."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in keep]
    chars = [chr(b) for b in keep] + [chr(256 + i) for i in range(len(rest))]
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[])


def write_clip_tokenizer_files(tokenizer: Any, folder: str | os.PathLike) -> None:
    """Write ``vocab.json`` + ``merges.txt`` of a merge-free CLIP tokenizer (tests)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(tokenizer.get_vocab()))
    (folder / "merges.txt").write_text("#version: 0.2\n")


# --------------------------------------------------------------------------- the reward


VICLIP_CHECKPOINT = "ViClip-InternVid-10M-FLT.pth"


@register("viclip")
class ViCLIPReward(NativeVideoTextReward):
    """ViCLIP-L/14 text-video cosine similarity on 8 strided frames at 224 px."""

    expects: ClassVar[str] = (
        f"folder with {VICLIP_CHECKPOINT} (HF OpenGVLab/ViCLIP; or model.safetensors) + CLIP BPE "
        "vocab.json, merges.txt (e.g. from openai/clip-vit-large-patch14; also accepted under tokenizer/)"
    )
    required_files: ClassVar[tuple[str | tuple[str, ...], ...]] = (
        (VICLIP_CHECKPOINT, "model.safetensors"),
        ("vocab.json", "tokenizer/vocab.json"),
        ("merges.txt", "tokenizer/merges.txt"),
    )
    layout_hint: ClassVar[str] = (
        f"Layout: DIR/{VICLIP_CHECKPOINT} (from huggingface.co/OpenGVLab/ViCLIP; its 'model' entry is the "
        "state dict) and the CLIP BPE tokenizer files DIR/vocab.json + DIR/merges.txt (or DIR/tokenizer/...), "
        "e.g. copied from openai/clip-vit-large-patch14."
    )

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        config: ViCLIPConfig | Mapping[str, Any] | None = None,
        dtype: torch.dtype | str | None = None,
        **kwargs: Any,
    ) -> ViCLIPReward:
        """Load the release checkpoint strictly from the folder ``path`` (see :attr:`expects`).

        ``config``: architecture (default: the released ViT-L/14); ``dtype``: cast after
        loading; other ``kwargs`` (``jitter``, ``clamp``, ``generator``) go to the reward.
        """
        weights, vocab, _ = cls._check_folder(path)
        cfg = config if isinstance(config, ViCLIPConfig) else ViCLIPConfig(**dict(config or {}))
        tokenizer = CLIPTokenizer.from_pretrained(str(vocab.parent), local_files_only=True)
        with torch.device("meta"):
            model = ViCLIPModel(cfg)
        model = model.to_empty(device="cpu")
        load_state_dict_strict(model, load_checkpoint_file(weights), source=str(weights))
        if (dt := _resolve_dtype(dtype)) is not None:
            model = model.to(dt)
        return cls(model, tokenizer, **kwargs).freeze()

    @classmethod
    def tiny(cls, seed: int = 0, **kwargs: Any) -> ViCLIPReward:
        """Random tiny ViCLIP (same modules; :meth:`ViCLIPConfig.tiny`) with a byte-level tokenizer.

        Config fields in ``kwargs`` override the tiny config; the rest go to the reward.
        """
        fields = set(ViCLIPConfig.__dataclass_fields__)
        cfg = ViCLIPConfig.tiny(**{k: v for k, v in kwargs.items() if k in fields})
        rest = {k: v for k, v in kwargs.items() if k not in fields}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ViCLIPModel(cfg)
        return cls(model, tiny_clip_tokenizer(), **rest).freeze()
