"""Image-text rewards on CLIP (transformers ``CLIPModel``): HPSv2.1, PickScore, CLIP score, LAION
aesthetic, and T2V-Turbo-v2's weighted HPSv2.1 + CLIP.

All are ``kind = "image"``: every frame given is scored against the clip's prompt and the
scores are averaged over frames.  The pixel path is torch only and differentiable::

    frames [B,F,3,H,W] in [-1,1] -> [0,1] (clamped, as the reference decodes) -> resize to the
    model's image size (bicubic, antialiased) -> CLIP mean/std -> vision tower -> projection
    -> L2-normalise                                         = image embedding e_i  [B,F,D]
    prompt -> CLIP BPE tokenizer (truncated to 77 tokens, BOS/EOS kept) -> text tower (causal
    mask, pooled at the first EOS) -> projection -> L2-normalise   = text embedding e_t [B,D]
    score = mean_f  s * <e_i[f], e_t>,   s = exp(logit_scale) or 1

Resize modes: ``"crop"`` (short side -> size, centre crop: the CLIP / open_clip / HPSv2
validation transform) and ``"squash"`` (resize straight to size x size, ignoring the aspect:
what T2V-Turbo's ``CLIP_RESIZE = Resize((224, 224))`` does for its CLIP and PickScore rewards).

Facts taken from the reference code (read, not copied):

* HPSv2 (tgxs002/HPSv2 ``hpsv2/img_score.py``): open_clip ViT-H-14 with the HPS_v2.1 state dict
  loaded from ``checkpoint['state_dict']``; score = ``image_features @ text_features.T`` with
  both normalised (a cosine, no logit scale); validation transform = Resize(224, bicubic),
  CenterCrop(224), OpenAI mean/std (``hpsv2/src/open_clip/transform.py``).  T2V-Turbo's
  ``get_hpsv2_fn`` (Ji4chenLi/t2v-turbo ``reward_fn/reward_fn.py``) applies the same
  Resize/CenterCrop/Normalize on the decoded frames and returns the cosine
  (``* logit_scale.exp()`` only with ``return_logits=True``, never used in training).
* CLIP score (same T2V-Turbo file, ``get_clip_score_fn``): open_clip ``ViT-H-14``,
  ``laion2B-s32B-b79K``; frames ``Resize((224, 224))`` bicubic (aspect not kept, no crop) +
  Normalize; score = cosine of normalised features.
* Weighted HPSv2 + CLIP (``get_weighted_hpsv2_clip_fn``): ``w0 * hpsv2 + w1 * clip``; the
  function's own default is ``[1.0, 5.0]`` but ``train_latent_t2v_turbo_v2.py`` always passes
  ``--reward_weights``, default ``(1.0, 1.0)`` (and ``train_t2v_turbo_v2.sh`` keeps it): our
  default is ``(1.0, 1.0)``.
* PickScore (yuvalkirstain/PickScore ``README.md``): ``PickScore_v1`` is a transformers
  CLIPModel (ViT-H-14), processor from ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``, score =
  ``logit_scale.exp() * cosine`` (our default).  T2V-Turbo's ``get_pick_score_fn`` returns the
  bare cosine and squashes to 224 x 224: ``use_logit_scale=False, resize="squash"``.
* LAION aesthetic (christophschuhmann/improved-aesthetic-predictor ``simple_inference.py``):
  OpenAI CLIP ViT-L/14 image embedding, L2-normalised, into ``MLP(768)`` =
  ``layers = Sequential(Linear(768,1024), Dropout(0.2), Linear(1024,128), Dropout(0.2),
  Linear(128,64), Dropout(0.1), Linear(64,16), Linear(16,1))`` (no activations; state dict keys
  ``layers.{0,2,4,6,7}.{weight,bias}``), weights ``sac+logos+ava1-l14-linearMSE.pth``.

Weights are read from local folders only (never downloaded); see ``docs/REWARDS.md`` for
each layout, or ``python -m t2vturbo.rewards list``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import pre_tokenizers
from torch import nn
from transformers import AutoConfig, CLIPConfig, CLIPModel, CLIPTokenizer, CLIPVisionModelWithProjection

from .base import CLIP_MEAN, CLIP_STD, Reward, normalize, require_files, resize_center_crop, to_unit_range
from .open_clip_convert import OPEN_CLIP_FILES, load_open_clip_state_dict, open_clip_to_clip_model
from .registry import register

__all__ = [
    "AESTHETIC_MLP_FILES",
    "AestheticMLP",
    "AestheticReward",
    "CLIPRewardBase",
    "CLIPScoreReward",
    "HPSv2CLIPReward",
    "HPSv2Reward",
    "PickScoreReward",
    "load_clip_folder",
    "load_clip_tokenizer",
    "tiny_clip_model",
    "tiny_clip_tokenizer",
]

MAX_TOKENS = 77
HPS_CHECKPOINT = "HPS_v2.1_compressed.pt"
AESTHETIC_MLP_FILES: tuple[str, ...] = (
    "sac+logos+ava1-l14-linearMSE.pth",
    "aesthetic_mlp.safetensors",
    "aesthetic_mlp.pth",
)
_TOKENIZER_HINT = "tokenizer = vocab.json + merges.txt (or tokenizer.json) of a CLIP BPE tokenizer"
_MODEL_FILES = ["config.json", ("model.safetensors", "pytorch_model.bin")]


# --------------------------------------------------------------------------- loading helpers


def _has_tokenizer(d: Path) -> bool:
    return (d / "tokenizer.json").is_file() or ((d / "vocab.json").is_file() and (d / "merges.txt").is_file())


def load_clip_tokenizer(path: str | os.PathLike, layout_hint: str = ""):
    """``CLIPTokenizer`` from ``path/tokenizer/`` or ``path`` (the first holding ``tokenizer.json``
    or ``vocab.json`` + ``merges.txt``); :class:`FileNotFoundError` naming both otherwise."""
    root = Path(path).expanduser()
    for d in (root / "tokenizer", root):
        if _has_tokenizer(d):
            return CLIPTokenizer.from_pretrained(str(d), local_files_only=True)
    hint = f"{_TOKENIZER_HINT}, in {str(root / 'tokenizer')!r} or {str(root)!r}"
    require_files(root / "tokenizer", ["vocab.json", "merges.txt"], f"{hint}\n{layout_hint}".strip())
    raise AssertionError("unreachable")  # pragma: no cover


def load_clip_folder(
    path: str | os.PathLike,
    *,
    eos_token_id: int | None = None,
    vision_only: bool = False,
    dtype: torch.dtype | None = torch.float32,
    layout_hint: str = "",
):
    """A transformers CLIP folder (``config.json`` + ``model.safetensors | pytorch_model.bin``) as
    ``CLIPModel``, or as ``CLIPVisionModelWithProjection`` with ``vision_only=True`` (the folder may
    hold either; a full CLIPModel's text weights are then skipped).  ``eos_token_id`` overrides
    the text config's so pooling happens at the tokenizer's first EOS."""
    root = Path(path).expanduser()
    require_files(root, _MODEL_FILES, layout_hint)
    if vision_only:
        model = CLIPVisionModelWithProjection.from_pretrained(str(root), local_files_only=True)
    else:
        config = AutoConfig.from_pretrained(str(root), local_files_only=True)
        if getattr(config, "model_type", None) != "clip":
            raise ValueError(
                f"{str(root)!r} holds a {config.model_type!r} model, expected a CLIPModel ('clip')"
            )
        if eos_token_id is not None:
            config.text_config.eos_token_id = int(eos_token_id)
        model = CLIPModel.from_pretrained(str(root), config=config, local_files_only=True)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def tiny_clip_tokenizer():
    """An in-memory ``CLIPTokenizer`` with a tiny BPE vocabulary: the 256 byte-level symbols, each
    also as an end-of-word symbol ``c</w>``, a few merges, then ``<|startoftext|>`` and
    ``<|endoftext|>`` as the two largest ids (as in the real vocabulary, so open_clip's
    ``argmax`` pooling and "first EOS" pooling agree).  Pad = EOS (transformers' default)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for c in alphabet:
        vocab[c] = len(vocab)
    for c in alphabet:
        vocab[c + "</w>"] = len(vocab)
    merges = [("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>"), ("t", "h"), ("th", "e</w>")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TOKENS)


def tiny_clip_model(
    tokenizer=None,
    *,
    hidden_act: str = "gelu",
    vision_only: bool = False,
    seed: int = 0,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 32,
    projection_dim: int = 16,
):
    """A randomly initialised tiny ``CLIPModel`` (or ``CLIPVisionModelWithProjection``), 2 layers
    of width 32 / 4 heads per tower, 77 text positions, 32 px images in 8 px patches.  The global
    RNG is left untouched (init runs under a forked RNG seeded with ``seed``)."""
    tok = tokenizer if tokenizer is not None else tiny_clip_tokenizer()
    common = {
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "hidden_act": hidden_act,
        "projection_dim": projection_dim,
    }
    text = dict(common, vocab_size=len(tok), max_position_embeddings=MAX_TOKENS)
    text.update(eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    vision = dict(common, image_size=image_size, patch_size=patch_size)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if vision_only:
            model = CLIPVisionModelWithProjection(config.vision_config)
        else:
            model = CLIPModel(config)
            # A logit scale away from the init value, so tests see it applied.
            model.logit_scale.data.fill_(2.0)
    return model.eval()


def _missing_weights(cls: type[Reward]) -> ValueError:
    return ValueError(
        f"reward {cls.name!r} needs local weights: set reward.paths.{cls.name}=DIR (or build({cls.name!r}, "
        f"pretrained=DIR)), where DIR holds {cls.expects}. Nothing is downloaded; tests use tiny=True."
    )


# --------------------------------------------------------------------------- shared base


class CLIPRewardBase(Reward):
    """A CLIP image encoder with differentiable torch preprocessing, a CLIP text encoder, cosine.

    ``model``: transformers ``CLIPModel`` (or, for image-only rewards, anything with
    ``vision_model`` + ``visual_projection``, e.g. ``CLIPVisionModelWithProjection``);
    ``tokenizer``: a ``CLIPTokenizer`` (``None`` for image-only rewards).

    Options: ``resize`` (``"crop"`` | ``"squash"``, default per reward), ``use_logit_scale``
    (multiply the cosine by ``exp(logit_scale)``), ``clamp`` (clamp pixels to [0, 1] first, as
    the reference does after decoding; no gradient to out-of-range pixels), ``max_length``
    (tokens incl. BOS/EOS, at most the model's 77 positions).  Constructing without a model
    raises a ``ValueError`` telling which ``reward.paths.NAME`` to set.
    """

    kind: ClassVar[str] = "image"
    needs_tokenizer: ClassVar[bool] = True
    default_resize: ClassVar[str] = "crop"
    default_logit_scale: ClassVar[bool] = False
    #: ``hidden_act`` of the real model, used by :meth:`tiny`.
    tiny_act: ClassVar[str] = "gelu"

    def __init__(
        self,
        model: nn.Module | None = None,
        tokenizer: Any = None,
        *,
        resize: str | None = None,
        use_logit_scale: bool | None = None,
        clamp: bool = True,
        max_length: int = MAX_TOKENS,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
    ):
        super().__init__()
        if model is None or (self.needs_tokenizer and tokenizer is None):
            raise _missing_weights(type(self))
        self.model = model
        self.tokenizer = tokenizer
        self.resize = self.default_resize if resize is None else resize
        if self.resize not in ("crop", "squash"):
            raise ValueError(f"resize must be 'crop' or 'squash', got {self.resize!r}")
        self.use_logit_scale = self.default_logit_scale if use_logit_scale is None else bool(use_logit_scale)
        self.clamp = clamp
        self.mean, self.std = tuple(mean), tuple(std)
        vcfg = model.config.vision_config if hasattr(model.config, "vision_config") else model.config
        self.image_size = int(vcfg.image_size)
        if tokenizer is not None:
            positions = int(model.config.text_config.max_position_embeddings)
            self.max_length = min(int(max_length), positions)
            # Pool at the tokenizer's first EOS (transformers reads eos_token_id at forward time).
            model.text_model.eos_token_id = model.config.text_config.eos_token_id = int(
                tokenizer.eos_token_id
            )
        self.freeze()

    # ------------------------------------------------------------------ construction
    @classmethod
    def tiny(cls, seed: int = 0, **kwargs) -> CLIPRewardBase:
        tok = tiny_clip_tokenizer()
        return cls(tiny_clip_model(tok, hidden_act=cls.tiny_act, seed=seed), tok, **kwargs)

    # ------------------------------------------------------------------ encoders
    @property
    def _param(self) -> torch.Tensor:
        return self.model.visual_projection.weight

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``[N,3,H,W]`` in [-1, 1] -> normalised ``[N,3,S,S]`` pixel values (float32, differentiable)."""
        x = to_unit_range(images.float(), clamp=self.clamp)
        s = self.image_size
        if self.resize == "crop":
            x = resize_center_crop(x, s, mode="bicubic")
        elif x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bicubic", align_corners=False, antialias=True)
        return normalize(x, self.mean, self.std)

    def encode_images(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B,F,3,H,W]`` in [-1, 1] -> L2-normalised image embeddings ``[B,F,D]`` (float32)."""
        b, f = frames.shape[:2]
        p = self._param
        x = self.preprocess(frames.flatten(0, 1)).to(device=p.device, dtype=p.dtype)
        pooled = self.model.vision_model(pixel_values=x).pooler_output
        emb = self.model.visual_projection(pooled)
        return F.normalize(emb.float(), dim=-1).reshape(b, f, -1)

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """Token ids ``[B, L]``, ``L <= max_length``: BOS + text (truncated) + EOS, padded."""
        enc = self.tokenizer(
            list(prompts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return enc["input_ids"]

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prompts -> L2-normalised text embeddings ``[B, D]`` (float32, no gradient needed).

        No padding mask is passed: the causal mask already keeps the padding after the EOS
        out of the pooled EOS state, exactly as open_clip (which pads with zeros, unmasked)."""
        ids = self.tokenize(prompts).to(self._param.device)
        pooled = self.model.text_model(input_ids=ids).pooler_output
        return F.normalize(self.model.text_projection(pooled).float(), dim=-1)

    def similarity(self, frames: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Per-frame (optionally logit-scaled) cosine ``[B, F]``."""
        img = self.encode_images(frames)
        txt = self.encode_prompts(prompts).to(img.device)
        sim = (img * txt[:, None]).sum(-1)
        if self.use_logit_scale:
            sim = sim * self.model.logit_scale.detach().float().exp()
        return sim

    def score(self, frames: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return self.similarity(frames, prompts).mean(1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, resize={self.resize!r}, use_logit_scale={self.use_logit_scale}"


def _load_text_image(
    cls: type[CLIPRewardBase],
    path: str | os.PathLike,
    *,
    open_clip_files: Sequence[str],
    prefer: str,
    arch: Any = None,
    dtype: torch.dtype | None = torch.float32,
    **kwargs,
) -> CLIPRewardBase:
    """Shared ``from_pretrained``: a transformers CLIP folder, or an open_clip state dict converted
    on load (architecture: ``arch``, else ``DIR/open_clip_config.json``, else ViT-H-14)."""
    root = Path(path).expanduser()
    oc_file = next((root / f for f in open_clip_files if (root / f).is_file()), None)
    is_hf = (root / "config.json").is_file()
    hint = f"{cls.name}: DIR holds {cls.expects}"
    if is_hf and (prefer == "transformers" or oc_file is None):
        tok = load_clip_tokenizer(root, hint)
        model = load_clip_folder(root, eos_token_id=tok.eos_token_id, dtype=dtype, layout_hint=hint)
        return cls(model, tok, **kwargs)
    [oc_file] = require_files(root, [tuple(open_clip_files)], hint)
    tok = load_clip_tokenizer(root, hint)
    if arch is None:
        cfg_file = root / "open_clip_config.json"
        arch = cfg_file if cfg_file.is_file() else "ViT-H-14"
    sd = load_open_clip_state_dict(oc_file)
    model = open_clip_to_clip_model(
        sd,
        arch,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        pad_token_id=tok.pad_token_id,
        dtype=dtype,
    )
    return cls(model, tok, **kwargs)


# --------------------------------------------------------------------------- rewards


@register("hpsv2")
class HPSv2Reward(CLIPRewardBase):
    """HPSv2.1: cosine of HPS-tuned open_clip ViT-H-14 image / text embeddings (no logit scale),
    CLIP preprocessing Resize(224, bicubic) + CenterCrop(224).  Typical values ~0.2-0.35."""

    expects: ClassVar[str] = (
        f"{HPS_CHECKPOINT} (open_clip ViT-H-14 state dict, hub xswu/HPSv2) + tokenizer/ (CLIP BPE "
        "vocab.json + merges.txt or tokenizer.json, e.g. from laion/CLIP-ViT-H-14-laion2B-s32B-b79K); "
        "optional open_clip_config.json; or a converted transformers CLIP folder (config.json + model.safetensors)"
    )
    default_resize = "crop"
    default_logit_scale = False

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, *, checkpoint: str = HPS_CHECKPOINT, arch: Any = None, **kwargs
    ) -> HPSv2Reward:
        return _load_text_image(
            cls, path, open_clip_files=(checkpoint,), prefer="open_clip", arch=arch, **kwargs
        )


@register("clip")
class CLIPScoreReward(CLIPRewardBase):
    """CLIP score as T2V-Turbo(-v2): open_clip ViT-H-14 laion2B-s32B-b79K, frames squashed to
    224 x 224 (bicubic), cosine of the normalised embeddings (no logit scale)."""

    expects: ClassVar[str] = (
        "a transformers CLIPModel folder (config.json + model.safetensors|pytorch_model.bin + tokenizer "
        "files, e.g. laion/CLIP-ViT-H-14-laion2B-s32B-b79K) or an open_clip checkpoint "
        f"({' | '.join(OPEN_CLIP_FILES)}) + tokenizer/ (or tokenizer files beside it); optional open_clip_config.json"
    )
    default_resize = "squash"
    default_logit_scale = False

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, arch: Any = None, **kwargs) -> CLIPScoreReward:
        return _load_text_image(
            cls, path, open_clip_files=OPEN_CLIP_FILES, prefer="transformers", arch=arch, **kwargs
        )


@register("pickscore")
class PickScoreReward(CLIPRewardBase):
    """PickScore_v1: ``exp(logit_scale) * cosine`` (the PickScore definition, ~20-23 on real
    images), CLIP crop preprocessing.  T2V-Turbo's variant: ``use_logit_scale=False,
    resize="squash"``."""

    expects: ClassVar[str] = (
        "a transformers CLIPModel folder of yuvalkirstain/PickScore_v1 (config.json + "
        "model.safetensors|pytorch_model.bin) with the CLIP tokenizer files (vocab.json + merges.txt or "
        "tokenizer.json, those of laion/CLIP-ViT-H-14-laion2B-s32B-b79K) in it or in tokenizer/"
    )
    default_resize = "crop"
    default_logit_scale = True

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, *, dtype: torch.dtype | None = torch.float32, **kwargs
    ) -> PickScoreReward:
        root = Path(path).expanduser()
        hint = f"pickscore: DIR holds {cls.expects}"
        require_files(root, _MODEL_FILES, hint)
        tok = load_clip_tokenizer(root, hint)
        return cls(
            load_clip_folder(root, eos_token_id=tok.eos_token_id, dtype=dtype, layout_hint=hint),
            tok,
            **kwargs,
        )


class AestheticMLP(nn.Module):
    """LAION improved-aesthetic-predictor head: ``layers`` = Linear, Dropout(0.2), Linear,
    Dropout(0.2), Linear, Dropout(0.1), Linear, Linear (no activations), dims
    ``768 -> 1024 -> 128 -> 64 -> 16 -> 1`` for ViT-L/14 (state dict keys ``layers.{0,2,4,6,7}``)."""

    def __init__(self, dims: Sequence[int] = (768, 1024, 128, 64, 16)):
        super().__init__()
        d = list(dims)
        if len(d) != 5:
            raise ValueError(f"dims must be (in, h1, h2, h3, h4), got {dims}")
        self.layers = nn.Sequential(
            nn.Linear(d[0], d[1]),
            nn.Dropout(0.2),
            nn.Linear(d[1], d[2]),
            nn.Dropout(0.2),
            nn.Linear(d[2], d[3]),
            nn.Dropout(0.1),
            nn.Linear(d[3], d[4]),
            nn.Linear(d[4], 1),
        )

    @property
    def in_dim(self) -> int:
        return self.layers[0].in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    @classmethod
    def from_file(cls, file: str | os.PathLike) -> AestheticMLP:
        """Load a ``.pth`` (``torch.load(weights_only=True)``) or ``.safetensors`` state dict."""
        file = Path(file)
        if file.suffix == ".safetensors":
            sd = load_file(str(file))
        else:
            sd = torch.load(file, map_location="cpu", weights_only=True)
            sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
        idx = (0, 2, 4, 6, 7)
        missing = [f"layers.{i}.{p}" for i in idx for p in ("weight", "bias") if f"layers.{i}.{p}" not in sd]
        if missing:
            raise KeyError(f"{str(file)!r} is not an aesthetic MLP state dict: missing {missing}")
        dims = [sd["layers.0.weight"].shape[1]] + [sd[f"layers.{i}.weight"].shape[0] for i in idx[:-1]]
        mlp = cls(dims)
        mlp.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
        return mlp


@register("aesthetic")
class AestheticReward(CLIPRewardBase):
    """LAION aesthetic score: ``MLP(normalise(CLIP ViT-L/14 image embedding))`` per frame (~1-10).

    Ignores the prompt by design (an image-quality prior, the same for every prompt)."""

    expects: ClassVar[str] = (
        f"the LAION aesthetic MLP ({' | '.join(AESTHETIC_MLP_FILES)}) + a transformers CLIP ViT-L/14 "
        "folder (openai/clip-vit-large-patch14: config.json + model.safetensors|pytorch_model.bin, "
        "CLIPModel or vision-only) in clip/ or DIR itself; no tokenizer (prompt ignored)"
    )
    needs_tokenizer = False
    default_resize = "crop"
    tiny_act = "quick_gelu"  # OpenAI CLIP

    def __init__(self, model: nn.Module | None = None, mlp: AestheticMLP | None = None, **kwargs):
        if mlp is None:
            raise _missing_weights(type(self))
        super().__init__(model, None, **kwargs)
        proj = self.model.visual_projection.out_features
        if mlp.in_dim != proj:
            raise ValueError(f"aesthetic MLP expects {mlp.in_dim}-d embeddings, the CLIP model gives {proj}")
        self.mlp = mlp
        self.freeze()

    @classmethod
    def tiny(cls, seed: int = 0, **kwargs) -> AestheticReward:
        model = tiny_clip_model(hidden_act=cls.tiny_act, vision_only=True, seed=seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            mlp = AestheticMLP((model.config.projection_dim, 64, 32, 16, 8))
        return cls(model, mlp, **kwargs)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, *, dtype: torch.dtype | None = torch.float32, **kwargs
    ) -> AestheticReward:
        root = Path(path).expanduser()
        hint = f"aesthetic: DIR holds {cls.expects}"
        [mlp_file] = require_files(root, [AESTHETIC_MLP_FILES], hint)
        clip_dir = root / "clip" if (root / "clip").is_dir() else root
        model = load_clip_folder(clip_dir, vision_only=True, dtype=dtype, layout_hint=hint)
        return cls(model, AestheticMLP.from_file(mlp_file), **kwargs)

    def score(self, frames: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        del prompts  # prompt-independent by design
        emb = self.encode_images(frames)  # [B, F, D], L2-normalised as in the reference
        w = self.mlp.layers[0].weight
        return self.mlp(emb.to(w.dtype)).squeeze(-1).float().mean(1)


@register("hpsv2_clip")
class HPSv2CLIPReward(Reward):
    """T2V-Turbo-v2's image reward: ``weights[0] * hpsv2 + weights[1] * clip`` (default (1, 1))."""

    kind: ClassVar[str] = "image"
    expects: ClassVar[str] = "hpsv2/ (the hpsv2 layout) + clip/ (the clip layout)"

    def __init__(
        self,
        hpsv2: HPSv2Reward | None = None,
        clip: CLIPScoreReward | None = None,
        weights: Sequence[float] = (1.0, 1.0),
    ):
        super().__init__()
        if hpsv2 is None or clip is None:
            raise _missing_weights(type(self))
        if len(weights) != 2:
            raise ValueError(f"weights must be (w_hpsv2, w_clip), got {weights}")
        self.hpsv2, self.clip = hpsv2, clip
        self.weights = (float(weights[0]), float(weights[1]))
        self.freeze()

    @classmethod
    def tiny(cls, seed: int = 0, weights: Sequence[float] = (1.0, 1.0), **kwargs) -> HPSv2CLIPReward:
        return cls(HPSv2Reward.tiny(seed, **kwargs), CLIPScoreReward.tiny(seed + 1, **kwargs), weights)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike | None,
        *,
        weights: Sequence[float] = (1.0, 1.0),
        hpsv2_path: str | os.PathLike | None = None,
        clip_path: str | os.PathLike | None = None,
        hpsv2_kwargs: dict | None = None,
        clip_kwargs: dict | None = None,
    ) -> HPSv2CLIPReward:
        """``path/hpsv2`` and ``path/clip`` (or the explicit ``hpsv2_path`` / ``clip_path``)."""
        root = Path(path).expanduser() if path is not None else None
        if (hpsv2_path is None or clip_path is None) and root is None:
            raise _missing_weights(cls)
        hp = Path(hpsv2_path) if hpsv2_path is not None else root / "hpsv2"
        cp = Path(clip_path) if clip_path is not None else root / "clip"
        return cls(
            HPSv2Reward.from_pretrained(hp, **(hpsv2_kwargs or {})),
            CLIPScoreReward.from_pretrained(cp, **(clip_kwargs or {})),
            weights,
        )

    def score(self, frames: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        w_h, w_c = self.weights
        return w_h * self.hpsv2.score(frames, prompts) + w_c * self.clip.score(frames, prompts)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weights={self.weights}"
