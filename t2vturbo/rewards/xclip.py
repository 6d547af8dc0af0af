"""``xclip``: video-text alignment with transformers' :class:`~transformers.XCLIPModel`.

X-CLIP (Ni et al. 2022) extends CLIP to video: a cross-frame ViT encodes every frame, a
multi-frame integration transformer ("MIT") pools the frame embeddings into one video
embedding ``v``, and a *video-specific prompt generator* ``PG`` adds video context to the
text embedding ``t`` before the two are compared.  The reward is the cosine similarity::

    x        = clip resampled to n = vision_config.num_frames frames (uniform indices,
               see :func:`uniform_frame_indices`), clamped to [0, 1] (``clamp=True``, as
               the reference decodes then clamps), short side resized to
               S = vision_config.image_size (bilinear, antialiased), centre-cropped S x S,
               normalised with the ImageNet mean / std
    v        = MIT(visual_projection(ViT(x)))                          [B, D]
    t        = text_projection(TextTransformer(prompt))                [B, D]
    prompt_conditioned=True  (default):  t' = t + PG(t, visual tokens of x)
    prompt_conditioned=False:            t' = t
    r        = cos(v, t') = <v, t'> / (||v|| ||t'||)                   in [-1, 1]

``prompt_conditioned=True`` is what X-CLIP itself scores with: ``XCLIPModel.forward``
returns ``logits_per_video[b, k] = exp(logit_scale) * cos(v_b, t'_{b,k})``, so our reward
is the diagonal of ``logits_per_video`` divided by ``exp(logit_scale)`` (the test checks
this exactly) — computed for the B matching (clip, prompt) pairs only, not the B x B grid.
The logit scale (100 for the released checkpoints) is left out so that the reward has the
unit range of the other CLIP-style rewards; put it in the reward weight if wanted.
``prompt_conditioned=False`` is the plain two-tower cosine of ``get_video_features`` and
``get_text_features``.

Preprocessing facts (checked against the released checkpoints' ``preprocessor_config.json``
on the Hub, e.g. ``microsoft/xclip-base-patch32``): VideoMAE-style processor, bilinear
resize of the short side to 224 then centre crop 224, **ImageNet** mean / std (not the
OpenAI-CLIP statistics, although the backbone started from CLIP).  The vision tower's
cross-frame attention reshapes by ``vision_config.num_frames``, so exactly that many frames
are fed (8 for ``xclip-base-patch32``, 16 for the ``-16-frames`` variants).

Weights: a local folder written by ``save_pretrained`` / downloaded from the Hub
(``microsoft/xclip-base-patch32``): ``config.json``, ``model.safetensors`` or
``pytorch_model.bin``, and the CLIP tokenizer (``tokenizer.json``, or ``vocab.json`` +
``merges.txt``).  :meth:`XCLIPReward.tiny` builds a random tiny ``XCLIPModel`` and a
:class:`~transformers.CLIPTokenizer` over an in-memory character vocabulary (letters,
digits, a little punctuation; no merges), so tests need no files.

This module also holds the helpers the other transformers-backed rewards share
(:func:`uniform_frame_indices`, :func:`resample_frames`, :func:`load_pretrained`,
:func:`missing_weights_error`).
"""

from __future__ import annotations

import os
import string
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import CLIPTokenizer, XCLIPConfig, XCLIPModel

from .base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Reward,
    normalize,
    require_files,
    resize_center_crop,
    to_unit_range,
)
from .registry import register

__all__ = [
    "WEIGHT_FILES",
    "XCLIPReward",
    "load_pretrained",
    "missing_weights_error",
    "resample_frames",
    "tiny_clip_tokenizer",
    "uniform_frame_indices",
]

#: The weight files every transformers-backed reward needs (alternatives in a tuple).
WEIGHT_FILES: list[str | tuple[str, ...]] = ["config.json", ("model.safetensors", "pytorch_model.bin")]


# --------------------------------------------------------------------------- shared helpers


def uniform_frame_indices(num_frames: int, n: int) -> torch.Tensor:
    """``floor(i * num_frames / n)`` for ``i = 0 .. n-1`` (int64).

    Covers the whole clip: equals the strided choice ``0, s, 2s, ...`` (``s = num_frames / n``)
    when ``n`` divides ``num_frames`` (16 -> 8: ``0, 2, ..., 14``), spreads the picks when it
    does not (20 -> 16), and repeats frames when the clip is shorter than ``n``
    (4 -> 8: ``0, 0, 1, 1, 2, 2, 3, 3``), because the models below need exactly ``n`` frames.
    """
    if n < 1 or num_frames < 1:
        raise ValueError(f"need n >= 1 and num_frames >= 1, got n={n}, num_frames={num_frames}")
    return torch.div(torch.arange(n) * num_frames, n, rounding_mode="floor")


def resample_frames(frames: torch.Tensor, n: int) -> torch.Tensor:
    """``[B, F, ...] -> [B, n, ...]`` with :func:`uniform_frame_indices` (differentiable)."""
    idx = uniform_frame_indices(frames.shape[1], n).to(frames.device)
    return frames.index_select(1, idx)


def missing_weights_error(cls: type[Reward]) -> ValueError:
    """The error a weights-backed reward raises when built with neither weights nor ``tiny``."""
    return ValueError(
        f"reward {cls.name!r} needs pretrained weights: set reward.paths.{cls.name}=DIR, where DIR "
        f"holds {cls.expects}. Tests use build({cls.name!r}, tiny=True)."
    )


def load_pretrained(
    model_cls,
    path: str | os.PathLike,
    extra_files: Sequence[str | Sequence[str]] = (),
    layout_hint: str = "",
    **config_overrides,
):
    """``model_cls.from_pretrained(path)`` from local files only, after :func:`require_files`.

    Raises :class:`FileNotFoundError` naming ``path`` and the expected files (``config.json``,
    ``model.safetensors`` | ``pytorch_model.bin`` and ``extra_files``) before transformers
    is asked for anything, so a wrong path never turns into a Hub lookup.
    ``config_overrides`` are passed to ``from_pretrained`` (config attributes).
    """
    require_files(path, [*WEIGHT_FILES, *extra_files], layout_hint=layout_hint)
    return model_cls.from_pretrained(os.fspath(path), local_files_only=True, **config_overrides)


def tiny_clip_tokenizer():
    """A :class:`~transformers.CLIPTokenizer` over a ~90-token character vocabulary (no merges).

    Lower-case letters, digits and ``.,!?'-`` (each also with the ``</w>`` end-of-word form),
    then ``<|startoftext|>`` and ``<|endoftext|>`` as the two highest ids: X-CLIP's text
    tower pools the hidden state at ``argmax(input_ids)`` (the legacy CLIP rule), which must
    be the end-of-text token.  Padding uses ``<|endoftext|>`` too, as in CLIP.
    """
    chars = list(string.ascii_lowercase + string.digits + ".,!?'-")
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def _image_size(size) -> int:
    if isinstance(size, int):
        return size
    h, w = size
    if h != w:
        raise ValueError(f"expected a square model input size, got {tuple(size)}")
    return int(h)


# --------------------------------------------------------------------------- reward


@register("xclip")
class XCLIPReward(Reward):
    """Cosine between X-CLIP's video embedding and the (prompt-conditioned) text embedding."""

    kind = "video"
    expects = (
        "a transformers XCLIPModel folder (e.g. microsoft/xclip-base-patch32): config.json, "
        "model.safetensors | pytorch_model.bin, tokenizer.json | vocab.json (+ merges.txt)"
    )
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __init__(
        self,
        model=None,
        tokenizer=None,
        prompt_conditioned: bool = True,
        max_length: int | None = None,
        clamp: bool = True,
    ):
        super().__init__()
        if model is None or tokenizer is None:
            raise missing_weights_error(type(self))
        self.model = model
        self.tokenizer = tokenizer
        self.prompt_conditioned = bool(prompt_conditioned)
        self.clamp = bool(clamp)
        vc = model.config.vision_config
        self.num_frames = int(vc.num_frames)
        self.image_size = _image_size(vc.image_size)
        self.max_length = int(max_length or model.config.text_config.max_position_embeddings)
        self.freeze()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs) -> XCLIPReward:
        """Load ``XCLIPModel`` + ``CLIPTokenizer`` from the local folder ``path``."""
        hint = f"{cls.name!r} expects {cls.expects}"
        files = require_files(path, [*WEIGHT_FILES, ("tokenizer.json", "vocab.json")], layout_hint=hint)
        if files[-1].name == "vocab.json":
            require_files(path, ["vocab.json", "merges.txt"], layout_hint=hint)
        model = load_pretrained(XCLIPModel, path, layout_hint=hint)
        tokenizer = CLIPTokenizer.from_pretrained(os.fspath(path), local_files_only=True)
        return cls(model, tokenizer, **kwargs)

    @classmethod
    def tiny(cls, seed: int = 0, num_frames: int = 4, image_size: int = 32, **kwargs) -> XCLIPReward:
        """Random tiny ``XCLIPModel`` (2-layer towers, width 32) + :func:`tiny_clip_tokenizer`."""
        tokenizer = tiny_clip_tokenizer()
        config = XCLIPConfig(
            text_config=dict(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=2,
                max_position_embeddings=24,
            ),
            vision_config=dict(
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=2,
                mit_hidden_size=16,
                mit_intermediate_size=24,
                mit_num_hidden_layers=1,
                mit_num_attention_heads=2,
                image_size=image_size,
                patch_size=16,
                num_frames=num_frames,
            ),
            projection_dim=16,
            prompt_layers=1,
            prompt_num_attention_heads=2,
        )
        torch.manual_seed(seed)
        return cls(XCLIPModel(config), tokenizer, **kwargs)

    # ------------------------------------------------------------------ scoring
    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, F, 3, H, W]`` in [-1, 1] -> model input ``[B, n, 3, S, S]`` (differentiable)."""
        x = resample_frames(frames, self.num_frames)
        x = resize_center_crop(to_unit_range(x, clamp=self.clamp), self.image_size, mode="bilinear")
        dtype = next(self.model.parameters()).dtype
        return normalize(x, self.mean, self.std).to(dtype)

    def tokenize(self, prompts: list[str], device) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}

    def embeddings(self, frames: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(v, t')``: unnormalised video and (prompt-conditioned) text embeddings, ``[B, D]`` each.

        Same computation as ``XCLIPModel.forward`` restricted to the pairs ``(clip b, prompt b)``.
        """
        m = self.model
        x = self.preprocess(frames)
        b, n, c, h, w = x.shape
        vision = m.vision_model(pixel_values=x.reshape(b * n, c, h, w))
        frame_emb = m.visual_projection(vision.pooler_output).reshape(b, n, -1)
        video = m.mit(frame_emb).pooler_output  # [B, D]
        text = m.text_model(**self.tokenize(prompts, x.device)).pooler_output
        text = m.text_projection(text)  # [B, D]
        if self.prompt_conditioned:
            tokens = m.prompts_visual_layernorm(vision.last_hidden_state[:, 1:, :])
            tokens = (tokens @ m.prompts_visual_projection).reshape(b, n, -1, video.shape[-1]).mean(dim=1)
            text = text + m.prompts_generator(text[:, None, :], tokens)[:, 0, :]
        return video, text

    def score(self, frames: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        video, text = self.embeddings(frames, prompts)
        return F.cosine_similarity(video.float(), text.float(), dim=-1, eps=1e-8)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, num_frames={self.num_frames}, image_size={self.image_size}, "
            f"prompt_conditioned={self.prompt_conditioned}"
        )
