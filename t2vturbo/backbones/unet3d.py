"""Adapter for diffusers ``UNet3DConditionModel`` teachers (ModelScope / Zeroscope layout).

A teacher is a local folder::

    MODEL_DIR/
      unet/config.json + diffusion_pytorch_model.safetensors   (UNet3DConditionModel)
      vae/config.json  + diffusion_pytorch_model.safetensors   (AutoencoderKL, or our PixelUnshuffleVAE)
      text_encoder/config.json + model.safetensors             (CLIPTextModel)
      tokenizer/                                               (any transformers tokenizer)
      scheduler/scheduler_config.json                          (beta schedule, prediction_type)

``tiny_components`` builds the same classes with tiny random configs (and a word-level tokenizer
built locally) so that every code path runs on a CPU without downloads.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet3DConditionModel, UNetMotionModel
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from ..diffusion import make_alphas_cumprod
from .base import DiffusersTimeCondition, GuidedDenoiser, VideoBackbone, encode_frames
from .pixel_vae import PixelUnshuffleVAE

EXPECTED_LAYOUT = (
    "unet/{config.json, diffusion_pytorch_model.safetensors}, vae/{config.json, *.safetensors}, "
    "text_encoder/{config.json, model.safetensors}, tokenizer/, scheduler/scheduler_config.json"
)


class UNet3DDenoiser(DiffusersTimeCondition):
    """``forward(z [B,C,F,h,w], t [B], cond [B,L,D], timestep_cond=None, motion_cond=None) -> model
    output`` around a UNet3DConditionModel (a student: w through diffusers' ``timestep_cond``, see
    :class:`DiffusersTimeCondition`)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet
        self._setup_condition(unet, unet.time_embedding)

    def forward(self, z_t, t, cond, timestep_cond=None, motion_cond=None):
        if type(self.unet).__name__ == "UNetMotionModel":  # it expects the prompt repeated per frame
            cond = cond.repeat_interleave(z_t.shape[2], dim=0)

        def call(tc):
            return self.unet(z_t, t, encoder_hidden_states=cond, timestep_cond=tc, return_dict=False)[0]

        return self._run(call, timestep_cond, motion_cond)


_CKPT_CLASSES: dict[type, type] = {}


def _checkpointed_class(cls: type) -> type:
    """A subclass of ``cls`` whose forward is recomputed in backward while grad is enabled.
    (A class, not an instance attribute, so ``copy.deepcopy`` of the model stays correct.)"""
    if cls not in _CKPT_CLASSES:

        def forward(self, *args, **kwargs):
            if torch.is_grad_enabled():
                return checkpoint(super(sub, self).forward, *args, use_reentrant=False, **kwargs)
            return super(sub, self).forward(*args, **kwargs)

        sub = type(f"Checkpointed{cls.__name__}", (cls,), {"forward": forward})
        _CKPT_CLASSES[cls] = sub
    return _CKPT_CLASSES[cls]


def enable_block_checkpointing(unet: nn.Module) -> None:
    """Activation checkpointing for UNet3DConditionModel, whose diffusers class does not support
    ``enable_gradient_checkpointing``: each down/mid/up block is recomputed in backward
    (non-reentrant ``torch.utils.checkpoint``)."""
    for block in [*unet.down_blocks, unet.mid_block, *unet.up_blocks]:
        if type(block) not in _CKPT_CLASSES.values():
            block.__class__ = _checkpointed_class(type(block))


def disable_dropout(module: nn.Module) -> None:
    """Set every dropout probability to 0 (a consistency student should be deterministic, like its
    target; diffusers UNet3D has p=0.1 in its temporal convolutions)."""
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0


def check_model_dir(path: str | os.PathLike) -> Path:
    """Fail early, naming the path and the expected layout, if a teacher folder is incomplete."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(
            f"teacher folder {str(p)!r} does not exist; expected a diffusers layout: {EXPECTED_LAYOUT}"
        )
    missing = [
        sub
        for sub in (
            "unet/config.json",
            "vae/config.json",
            "text_encoder/config.json",
            "tokenizer",
            "scheduler/scheduler_config.json",
        )
        if not (p / sub).exists()
    ]
    if missing:
        raise FileNotFoundError(
            f"teacher folder {str(p)!r} is missing {', '.join(missing)}; expected a diffusers layout: {EXPECTED_LAYOUT}"
        )
    return p


def _load_unet(unet_dir: Path, dtype=torch.float32):
    """UNet3DConditionModel (ModelScope layout) or UNetMotionModel (AnimateDiff-style motion modules with
    sinusoidal frame positions), chosen by ``unet/config.json``'s ``_class_name``."""
    cls_name = json.loads((unet_dir / "config.json").read_text()).get("_class_name", "UNet3DConditionModel")
    cls = {"UNet3DConditionModel": UNet3DConditionModel, "UNetMotionModel": UNetMotionModel}.get(cls_name)
    if cls is None:
        raise ValueError(
            f"{unet_dir}/config.json: unsupported UNet class {cls_name!r} "
            "(expected UNet3DConditionModel or UNetMotionModel)"
        )
    return cls.from_pretrained(unet_dir, torch_dtype=dtype)


def _load_vae(vae_dir: Path):
    cfg = json.loads((vae_dir / "config.json").read_text())
    if cfg.get("_class_name") == PixelUnshuffleVAE.__name__:
        return PixelUnshuffleVAE.from_pretrained(vae_dir)
    return AutoencoderKL.from_pretrained(vae_dir)


class UNet3DBackbone(VideoBackbone):
    """ModelScope-style teacher: UNet3DConditionModel + 2D VAE applied per frame + CLIP text encoder."""

    def __init__(
        self, unet, vae, text_encoder, tokenizer, scheduler_config: dict, gradient_checkpointing: bool = False
    ):
        super().__init__()
        self.teacher = UNet3DDenoiser(unet)
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.scheduler_config = dict(scheduler_config)
        for m in (self.teacher, self.vae, self.text_encoder):
            m.requires_grad_(False)
            m.eval()
        self.prediction_type = scheduler_config.get("prediction_type", "epsilon")
        self.num_train_timesteps = int(scheduler_config.get("num_train_timesteps", 1000))
        ac = make_alphas_cumprod(
            scheduler_config.get("beta_schedule", "scaled_linear"),
            self.num_train_timesteps,
            scheduler_config.get("beta_start", 0.00085),
            scheduler_config.get("beta_end", 0.012),
        )
        self.register_buffer("alphas_cumprod", ac, persistent=False)
        self.latent_channels = unet.config.in_channels
        self.gradient_checkpointing = gradient_checkpointing
        self._null_cache: torch.Tensor | None = None

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def check_path(cls, model_cfg) -> None:
        check_model_dir(model_cfg.path)

    @classmethod
    def from_model_config(cls, model_cfg, gradient_checkpointing: bool = False, dtype=torch.float32):
        """From ``cfg.model``: the diffusers-layout folder ``path``, or the tiny random config ``model.tiny``
        when ``path`` is null. The networks are cast to ``dtype``; the schedule stays float32."""
        if model_cfg.path is None:
            t = model_cfg.tiny
            bb = tiny_backbone(
                seed=t.seed,
                vae=t.vae,
                pixel_factor=t.pixel_factor,
                latent_channels=t.latent_channels,
                block_out_channels=tuple(t.block_out_channels),
                layers_per_block=t.layers_per_block,
                attention_head_dim=t.attention_head_dim,
                text_dim=t.text_dim,
                prediction_type=t.prediction_type,
                unet=t.unet,
                text_token_std=t.text_token_std,
                vae_shift=t.vae_shift,
                vae_scaling_factor=t.vae_scaling_factor,
                extra_words=tuple(t.extra_words),
                gradient_checkpointing=gradient_checkpointing,
            )
        else:
            bb = cls.from_pretrained(Path(model_cfg.path), gradient_checkpointing=gradient_checkpointing)
            bb.model_dir = str(Path(model_cfg.path).resolve())
        if dtype != torch.float32:
            for m in (bb.teacher, bb.vae, bb.text_encoder):
                m.to(dtype)
        return bb

    def diffusers_export_problem(self) -> str | None:
        """None when the student can be written as a plain diffusers pipeline (a diffusers VAE), else why not."""
        if not isinstance(self.vae, AutoencoderKL):
            return f"needs a diffusers AutoencoderKL VAE (have {type(self.vae).__name__})"
        return None

    @classmethod
    def from_pretrained(cls, path, gradient_checkpointing: bool = False, dtype=torch.float32):
        p = check_model_dir(path)
        unet = _load_unet(p / "unet", dtype)
        vae = _load_vae(p / "vae").to(dtype)
        text_encoder = CLIPTextModel.from_pretrained(p / "text_encoder", torch_dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(p / "tokenizer")
        sched = json.loads((p / "scheduler" / "scheduler_config.json").read_text())
        bb = cls(unet, vae, text_encoder, tokenizer, sched, gradient_checkpointing)
        bb.model_dir = str(p)
        return bb

    def save_pretrained(self, path, unet: nn.Module | None = None):
        """Write the diffusers layout (optionally with another UNet, e.g. a trained one)."""
        p = Path(path)
        (unet or self.teacher.unet).save_pretrained(p / "unet")
        self.vae.save_pretrained(p / "vae")
        self.text_encoder.save_pretrained(p / "text_encoder")
        self.tokenizer.save_pretrained(p / "tokenizer")
        (p / "scheduler").mkdir(parents=True, exist_ok=True)
        (p / "scheduler" / "scheduler_config.json").write_text(json.dumps(self.scheduler_config, indent=2))

    # ---- interface -----------------------------------------------------------------------
    @property
    def device(self):
        return self.alphas_cumprod.device

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        tok = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        ids = tok.input_ids.to(self.device)
        return self.text_encoder(ids)[0]

    def null_cond(self, batch_size: int) -> torch.Tensor:
        if self._null_cache is None or self._null_cache.device != self.device:
            self._null_cache = self.encode_text([""])
        return self._null_cache.expand(batch_size, -1, -1)

    @property
    def vae_scale(self) -> float:
        return float(getattr(self.vae.config, "scaling_factor", 1.0))

    def _spatial_factor(self) -> int:
        if isinstance(self.vae, PixelUnshuffleVAE):
            return self.vae.factor
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def latent_shape(self, num_frames, height, width):
        f = self._spatial_factor()
        return (self.latent_channels, num_frames, height // f, width // f)

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """Per-frame VAE encode (posterior mean, so encoding is deterministic) times the scale."""
        return encode_frames(self.vae, video, self.vae_scale, self.device)

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        b, c, f = z.shape[:3]
        x = z.permute(0, 2, 1, 3, 4).reshape(b * f, c, *z.shape[3:]) / self.vae_scale
        out = self.vae.decode(x.to(self.vae.dtype)).sample
        return out.reshape(b, f, *out.shape[1:]).clamp(-1, 1)

    def make_student(self, dropout: bool = False) -> GuidedDenoiser:
        unet = copy.deepcopy(self.teacher.unet)
        unet.requires_grad_(True)
        unet.train()
        if not dropout:
            disable_dropout(unet)
        if self.gradient_checkpointing:
            enable_block_checkpointing(unet)
        net = UNet3DDenoiser(unet)
        net.add_guidance_conditioning(embed_dim=256, motion=True)
        return GuidedDenoiser(net)

    def trainable_teacher(self, clone: bool = False) -> nn.Module:
        """The teacher denoiser itself made trainable (plain diffusion training), or with ``clone`` a
        trainable copy of it (reward fine-tuning of the teacher: ``self.teacher`` stays frozen)."""
        teacher = copy.deepcopy(self.teacher) if clone else self.teacher
        teacher.requires_grad_(True)
        teacher.train()
        if self.gradient_checkpointing:
            enable_block_checkpointing(teacher.unet)
        return teacher


# ---------------------------------------------------------------------------------------------
# Tiny configs of the same classes (tests, toy world)
# ---------------------------------------------------------------------------------------------
TOY_WORDS = tuple(
    (
        "a an the red green blue yellow circle square triangle moving left right up down standing still "
        "fast slow small big on plain textured background"
    ).split()
)


def build_word_tokenizer(words=TOY_WORDS, max_length: int = 16):
    """A word-level tokenizer built locally (no hub): [PAD]=0, [UNK]=1, [BOS]=2, [EOS]=3, then words."""
    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, "[EOS]": 3}
    for w in words:
        vocab.setdefault(w.lower(), len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        model_max_length=max_length,
    )


def default_scheduler_config(prediction_type: str = "epsilon") -> dict:
    """The SD/ModelScope noise schedule (scaled_linear 0.00085 -> 0.012 over 1000 steps) as a
    diffusers ``scheduler_config.json`` dict."""
    return {
        "_class_name": "DDIMScheduler",
        "num_train_timesteps": 1000,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "prediction_type": prediction_type,
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
    }


def tiny_components(
    seed: int = 0,
    block_out_channels=(32, 64),
    latent_channels: int = 4,
    vae: str = "autoencoder_kl",
    pixel_factor: int = 4,
    text_dim: int = 32,
    prediction_type: str = "epsilon",
    attention_head_dim: int = 8,
    layers_per_block: int = 1,
    unet: str = "unet3d",
    text_token_std: float | None = None,
    vae_shift: float = 0.0,
    vae_scaling_factor: float = 1.0,
    extra_words: tuple[str, ...] = (),
):
    """(unet, vae, text_encoder, tokenizer, scheduler_config) with tiny random configs.

    ``unet='unet3d'``: diffusers' UNet3DConditionModel (ModelScope); ``unet='motion'``: diffusers'
    UNetMotionModel (AnimateDiff-style motion modules, whose temporal attention has sinusoidal frame
    positions: UNet3D's temporal attention is permutation-equivariant over frames).

    ``vae='autoencoder_kl'``: a tiny AutoencoderKL (factor 2, ``latent_channels``);
    ``vae='pixel_unshuffle'``: the exact invertible PixelUnshuffleVAE (latent channels 3*f^2).

    ``text_token_std``: redraw the text encoder's token embeddings from N(0, std^2) (seeded). With
    CLIP's init (std 0.02, the position embeddings 0.01) the frozen random encoder maps prompts that
    differ in one word to nearly the same states, and a UNet trained on it cannot tell "moving left"
    from "moving right"; std 1 makes every word's embedding distinct (the toy teacher uses 1.0).

    ``vae_shift`` / ``vae_scaling_factor``: the pixel-unshuffle VAE's shift and scale (latents
    ``(x - shift) * scale``); ``extra_words``: appended to the tokenizer's toy vocabulary.
    """
    torch.manual_seed(seed)
    tokenizer = build_word_tokenizer(TOY_WORDS + tuple(extra_words))
    te_cfg = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=text_dim,
        intermediate_size=2 * text_dim,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=tokenizer.model_max_length,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    text_encoder = CLIPTextModel(te_cfg)
    if text_token_std is not None:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            text_encoder.embeddings.token_embedding.weight.normal_(0.0, float(text_token_std), generator=g)
    if vae == "pixel_unshuffle":
        vae_m = PixelUnshuffleVAE(factor=pixel_factor, scaling_factor=vae_scaling_factor, shift=vae_shift)
        latent_channels = 3 * pixel_factor**2
    elif vae == "autoencoder_kl":
        vae_m = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(16, 32),
            layers_per_block=1,
            latent_channels=latent_channels,
            norm_num_groups=8,
            sample_size=32,
        )
    else:
        raise ValueError(f"unknown tiny vae {vae!r}; expected 'autoencoder_kl' or 'pixel_unshuffle'")
    if unet not in ("unet3d", "motion"):
        raise ValueError(f"unknown tiny unet {unet!r}; expected 'unet3d' or 'motion'")
    # One layout for both classes; only the block family and the attention-head arguments differ.
    n = len(block_out_channels)
    fam = "Motion" if unet == "motion" else "3D"
    layout = dict(
        in_channels=latent_channels,
        out_channels=latent_channels,
        down_block_types=(f"CrossAttnDownBlock{fam}",) * (n - 1) + (f"DownBlock{fam}",),
        up_block_types=(f"UpBlock{fam}",) + (f"CrossAttnUpBlock{fam}",) * (n - 1),
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        norm_num_groups=min(8, block_out_channels[0]),
        cross_attention_dim=text_dim,
    )
    if unet == "motion":
        heads = tuple(max(1, c // attention_head_dim) for c in block_out_channels)
        net = UNetMotionModel(
            **layout, num_attention_heads=heads, motion_num_attention_heads=heads, motion_max_seq_length=32
        )
    else:
        net = UNet3DConditionModel(**layout, attention_head_dim=attention_head_dim)
    return net, vae_m, text_encoder, tokenizer, default_scheduler_config(prediction_type)


def tiny_backbone(**kwargs) -> UNet3DBackbone:
    gc = kwargs.pop("gradient_checkpointing", False)
    unet, vae, te, tok, sched = tiny_components(**kwargs)
    return UNet3DBackbone(unet, vae, te, tok, sched, gradient_checkpointing=gc)


def write_tiny_model_dir(path, **kwargs) -> Path:
    """Create a complete tiny teacher folder in the ModelScope/diffusers layout."""
    bb = tiny_backbone(**kwargs)
    bb.save_pretrained(path)
    return Path(path)
