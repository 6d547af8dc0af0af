"""Adapter for Wan2.1 text-to-video teachers (flow matching) in the diffusers layout.

A teacher is a local folder, e.g. ``Wan2.1-T2V-1.3B-Diffusers``::

    MODEL_DIR/
      transformer/config.json + diffusion_pytorch_model*.safetensors   (WanTransformer3DModel)
      vae/config.json + diffusion_pytorch_model.safetensors            (AutoencoderKLWan, causal 3D VAE)
      text_encoder/config.json + model*.safetensors                    (UMT5EncoderModel, umt5-xxl encoder)
      tokenizer/                                                       (the umt5 tokenizer)
      scheduler/scheduler_config.json                                  (flow shift; see below)

Conventions (as diffusers' ``WanPipeline``):
- The transformer predicts the flow velocity ``v = eps - x0`` of ``z_sigma = (1 - sigma) x0 + sigma eps``
  at the float timestep ``t = sigma * 1000`` (``prediction_type = "flow"``; math in diffusion/flow.py).
- Shift: the scheduler config's ``flow_shift`` (UniPCMultistepScheduler with ``use_flow_sigmas``, the
  Diffusers release: 3.0) or ``shift`` (FlowMatchEulerDiscreteScheduler); resolution-dependent dynamic
  shifting is refused. The teacher is sampled with the Euler solver on that shifted grid.
- Latents: ``(mode of the VAE posterior - latents_mean) / latents_std`` per channel (the pipeline decodes
  ``z * latents_std + latents_mean``); the clip ``[B, F, 3, H, W]`` is encoded as a whole (causal in time:
  ``F = 1 + 4k`` frames -> ``1 + k`` latent frames; 8x spatially).
- Text: prompts cleaned (html-unescaped, whitespace collapsed; ftfy when installed), padded/truncated to
  512 UMT5 tokens, ``last_hidden_state`` with the padded positions set to zero. The unconditional
  embedding is that of the empty prompt (the pipeline's default negative prompt).

The student hooks the transformer's ``condition_embedder.time_embedder`` output (the time embedding
``temb`` that feeds both the per-block modulation and the output norm) with the w/eta term.
"""

from __future__ import annotations

import copy
import html
import json
import os
import re
from pathlib import Path

import diffusers
import torch
from torch import nn
from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

from ..diffusion.flow import time_shift
from .base import DiffusersTimeCondition, GuidedDenoiser, VideoBackbone
from .unet3d import build_word_tokenizer, disable_dropout

TEXT_LEN = 512  # Wan2.1 text_len / WanPipeline max_sequence_length
EXPECTED_LAYOUT = (
    "transformer/{config.json, diffusion_pytorch_model*.safetensors}, vae/{config.json, *.safetensors}, "
    "text_encoder/{config.json, model*.safetensors}, tokenizer/, scheduler/scheduler_config.json "
    "(the Wan2.1-T2V-1.3B-Diffusers layout)"
)
_REQUIRED = (
    "transformer/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "tokenizer",
    "scheduler/scheduler_config.json",
)


def check_wan_dir(path: str | os.PathLike) -> Path:
    """Fail early, naming the path and the expected layout, if a Wan teacher folder is incomplete."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(
            f"Wan teacher folder {str(p)!r} does not exist; expected a diffusers layout: {EXPECTED_LAYOUT}"
        )
    missing = [sub for sub in _REQUIRED if not (p / sub).exists()]
    if missing:
        raise FileNotFoundError(
            f"Wan teacher folder {str(p)!r} is missing {', '.join(missing)}; expected a "
            f"diffusers layout: {EXPECTED_LAYOUT}"
        )
    return p


def flow_shift_from_config(sc: dict) -> float:
    """The flow shift of a diffusers scheduler config (``flow_shift`` for UniPC/DPM with flow sigmas,
    ``shift`` for FlowMatchEulerDiscreteScheduler)."""
    if sc.get("use_dynamic_shifting"):
        raise ValueError(
            "scheduler config has use_dynamic_shifting=true (resolution-dependent shift): "
            "set a fixed flow_shift / shift in scheduler/scheduler_config.json"
        )
    pt = sc.get("prediction_type", "flow_prediction")
    if pt != "flow_prediction":
        raise ValueError(
            f"scheduler config prediction_type={pt!r}: a Wan teacher predicts the flow velocity "
            "(flow_prediction)"
        )
    if "flow_shift" in sc:
        return float(sc["flow_shift"])
    return float(sc.get("shift", 1.0))


def clean_prompt(text: str) -> str:
    """WanPipeline's prompt cleaning: ftfy (if installed), html-unescape twice, collapse whitespace."""
    try:
        import ftfy  # optional: not a t2vturbo dependency (WanPipeline also uses it only when installed)

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


class WanDenoiser(DiffusersTimeCondition):
    """``forward(z [B,C,F,h,w], t [B] float (= sigma*1000), cond [B,L,D], timestep_cond=None,
    motion_cond=None) -> velocity`` around a WanTransformer3DModel (a student: w and eta on the sinusoid
    input of ``condition_embedder.time_embedder``, see :class:`DiffusersTimeCondition`)."""

    inject_condition = True  # WanTransformer3DModel forwards no timestep_cond to its time embedder

    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.transformer = transformer
        self._setup_condition(transformer, transformer.condition_embedder.time_embedder)

    def forward(self, z_t, t, cond, timestep_cond=None, motion_cond=None):
        return self._run(lambda _: self._forward(z_t, t, cond), timestep_cond, motion_cond)

    def _forward(self, z_t, t, cond):
        # inputs in the dtype of the patch embedding: a transformer loaded with torch_dtype=bf16 keeps some
        # parameters (time_embedder, norms, scale_shift_table) in float32
        dtype = self.transformer.patch_embedding.weight.dtype
        t = torch.as_tensor(t, device=z_t.device).float()
        return self.transformer(
            hidden_states=z_t.to(dtype), timestep=t, encoder_hidden_states=cond.to(dtype), return_dict=False
        )[0]


class WanBackbone(VideoBackbone):
    """Wan2.1 T2V teacher: WanTransformer3DModel (flow velocity) + AutoencoderKLWan + UMT5 encoder."""

    prediction_type = "flow"

    def __init__(
        self,
        transformer,
        vae,
        text_encoder,
        tokenizer,
        scheduler_config: dict,
        gradient_checkpointing: bool = False,
        text_len: int = TEXT_LEN,
    ):
        super().__init__()
        self.teacher = WanDenoiser(transformer)
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.scheduler_config = dict(scheduler_config)
        for m in (self.teacher, self.vae, self.text_encoder):
            m.requires_grad_(False)
            m.eval()
        self.num_train_timesteps = int(scheduler_config.get("num_train_timesteps", 1000))
        self.flow_shift = flow_shift_from_config(scheduler_config)
        # the training sigmas of FlowMatchEulerDiscreteScheduler (ascending): sigma_i = shift((i + 1) / T)
        u = torch.arange(1, self.num_train_timesteps + 1, dtype=torch.float64) / self.num_train_timesteps
        self.register_buffer("sigmas", time_shift(u, self.flow_shift).float(), persistent=False)
        self.latent_channels = transformer.config.in_channels
        self.gradient_checkpointing = gradient_checkpointing
        self.text_len = int(text_len)
        cfg = vae.config
        self.temporal_factor = int(
            getattr(cfg, "scale_factor_temporal", None) or 2 ** sum(cfg.temperal_downsample)
        )
        self.spatial_factor = int(getattr(cfg, "scale_factor_spatial", None) or 2 ** (len(cfg.dim_mult) - 1))
        self.patch_size = tuple(transformer.config.patch_size)
        self._null_cache: torch.Tensor | None = None

    @property
    def alphas_cumprod(self):
        raise NotImplementedError(
            "model.family=wan is a flow-matching teacher (prediction_type='flow'): it has no DDPM alphas_cumprod. "
            "It supports objective=consistency_distillation with online teacher steps and t2vturbo.sample; "
            "data.precomputed, objective=reward_finetune and objective=diffusion need a DDPM-schedule teacher."
        )

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def check_path(cls, model_cfg) -> None:
        check_wan_dir(model_cfg.path)

    @classmethod
    def from_model_config(cls, model_cfg, gradient_checkpointing: bool = False, dtype=torch.float32):
        """From ``cfg.model``: a diffusers-layout Wan2.1 folder ``path`` (transformer and text encoder loaded in
        ``dtype``, the VAE in float32 as diffusers advises), or a tiny random one when ``path`` is null."""
        if model_cfg.path is None:
            bb = tiny_wan_backbone(seed=model_cfg.tiny.seed, gradient_checkpointing=gradient_checkpointing)
            bb.teacher.to(dtype)
            bb.text_encoder.to(dtype)
            return bb
        bb = cls.from_pretrained(
            Path(model_cfg.path), gradient_checkpointing=gradient_checkpointing, dtype=dtype
        )
        bb.model_dir = str(Path(model_cfg.path).resolve())
        return bb

    @classmethod
    def from_pretrained(
        cls, path, gradient_checkpointing: bool = False, dtype=torch.float32, vae_dtype=torch.float32
    ):
        """Load a diffusers-layout folder; transformer and text encoder in ``dtype`` (loaded directly in it:
        the umt5-xxl encoder is ~5.7 B parameters), the VAE in ``vae_dtype`` (diffusers recommends float32)."""
        # optional: Wan needs diffusers >= 0.33 (pyproject allows >= 0.32); at module level its absence
        # would break `import t2vturbo.backbones` for every family
        from diffusers import AutoencoderKLWan, WanTransformer3DModel

        p = check_wan_dir(path)
        transformer = WanTransformer3DModel.from_pretrained(p / "transformer", torch_dtype=dtype)
        vae = AutoencoderKLWan.from_pretrained(p / "vae", torch_dtype=vae_dtype)
        text_encoder = UMT5EncoderModel.from_pretrained(p / "text_encoder", torch_dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(p / "tokenizer")
        sched = json.loads((p / "scheduler" / "scheduler_config.json").read_text())
        bb = cls(transformer, vae, text_encoder, tokenizer, sched, gradient_checkpointing)
        bb.model_dir = str(p)
        return bb

    def save_pretrained(self, path, transformer: nn.Module | None = None):
        """Write the diffusers layout (optionally with another transformer, e.g. a trained one), with a
        ``model_index.json`` so that ``diffusers.WanPipeline.from_pretrained`` reads the folder too."""
        p = Path(path)
        (transformer or self.teacher.transformer).save_pretrained(p / "transformer")
        self.vae.save_pretrained(p / "vae")
        self.text_encoder.save_pretrained(p / "text_encoder")
        self.tokenizer.save_pretrained(p / "tokenizer")
        (p / "scheduler").mkdir(parents=True, exist_ok=True)
        (p / "scheduler" / "scheduler_config.json").write_text(json.dumps(self.scheduler_config, indent=2))
        index = {
            "_class_name": "WanPipeline",
            "_diffusers_version": diffusers.__version__,
            "scheduler": ["diffusers", self.scheduler_config.get("_class_name", "UniPCMultistepScheduler")],
            "text_encoder": ["transformers", type(self.text_encoder).__name__],
            "tokenizer": ["transformers", type(self.tokenizer).__name__],
            "transformer": ["diffusers", type(self.teacher.transformer).__name__],
            "vae": ["diffusers", type(self.vae).__name__],
        }
        (p / "model_index.json").write_text(json.dumps(index, indent=2))

    # ---- interface -----------------------------------------------------------------------
    @property
    def device(self):
        return self.sigmas.device

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        tok = self.tokenizer(
            [clean_prompt(p) for p in prompts],
            padding="max_length",
            max_length=self.text_len,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids, mask = tok.input_ids.to(self.device), tok.attention_mask.to(self.device)
        emb = self.text_encoder(ids, mask).last_hidden_state
        # the pipeline keeps the first sum(mask) positions and zero-pads the rest (right padding)
        keep = torch.arange(emb.shape[1], device=emb.device)[None, :] < mask.sum(dim=1, keepdim=True)
        return emb * keep[..., None].to(emb.dtype)

    def null_cond(self, batch_size: int) -> torch.Tensor:
        if self._null_cache is None or self._null_cache.device != self.device:
            self._null_cache = self.encode_text([""])
        return self._null_cache.expand(batch_size, -1, -1)

    def _latent_stats(self, z: torch.Tensor):
        cfg = self.vae.config
        mean = torch.tensor(cfg.latents_mean, dtype=torch.float32, device=z.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(cfg.latents_std, dtype=torch.float32, device=z.device).view(1, -1, 1, 1, 1)
        return mean, std

    def latent_shape(self, num_frames, height, width):
        ft, fs = self.temporal_factor, self.spatial_factor
        if num_frames < 1 or (num_frames - 1) % ft:
            raise ValueError(
                f"model.num_frames={num_frames}: the Wan VAE is causal with temporal factor {ft}, "
                f"use 1 + {ft}k frames (e.g. {1 + ft * max(1, (num_frames - 1) // ft)}; Wan2.1 uses 81)"
            )
        mh, mw = fs * self.patch_size[1], fs * self.patch_size[2]
        if height % mh or width % mw:
            raise ValueError(
                f"model.height={height}, model.width={width}: must be multiples of {mh} and {mw} "
                f"(VAE factor {fs} x transformer patch {self.patch_size[1:]})"
            )
        return (self.latent_channels, (num_frames - 1) // ft + 1, height // fs, width // fs)

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, F, 3, H, W]`` in [-1, 1] -> normalised latents ``[B, C, 1 + (F-1)/4, H/8, W/8]`` (posterior
        mode, so deterministic), in the dtype of ``video``."""
        x = video.permute(0, 2, 1, 3, 4).to(self.device, self.vae.dtype)
        z = self.vae.encode(x).latent_dist.mode().float()
        mean, std = self._latent_stats(z)
        return ((z - mean) / std).to(video.dtype).contiguous()

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> ``[B, F, 3, H, W]`` in [-1, 1] (differentiable)."""
        mean, std = self._latent_stats(z)
        x = z.float() * std + mean
        out = self.vae.decode(x.to(self.vae.dtype)).sample
        return out.permute(0, 2, 1, 3, 4).clamp(-1, 1)

    def make_student(self, dropout: bool = False) -> GuidedDenoiser:
        tr = copy.deepcopy(self.teacher.transformer)
        tr.requires_grad_(True)
        tr.train()
        if not dropout:
            disable_dropout(tr)
        if self.gradient_checkpointing:
            tr.enable_gradient_checkpointing()
        net = WanDenoiser(tr)
        net.add_guidance_conditioning(embed_dim=256, motion=True)
        return GuidedDenoiser(net)

    def trainable_teacher(self, clone: bool = False) -> nn.Module:
        raise NotImplementedError(
            "training the teacher (objective=diffusion, reward_finetune on the teacher) is not implemented for "
            "model.family=wan; use objective=consistency_distillation"
        )


# ---------------------------------------------------------------------------------------------
# Tiny configs of the same classes (tests)
# ---------------------------------------------------------------------------------------------
def wan_scheduler_config(flow_shift: float = 3.0) -> dict:
    """The scheduler config of the Wan2.1-T2V-*-Diffusers releases (UniPC with flow sigmas, flow_shift 3.0)."""
    return {
        "_class_name": "UniPCMultistepScheduler",
        "num_train_timesteps": 1000,
        "prediction_type": "flow_prediction",
        "use_flow_sigmas": True,
        "flow_shift": float(flow_shift),
        "solver_order": 2,
        "solver_type": "bh2",
        "predict_x0": True,
        "lower_order_final": True,
        "final_sigmas_type": "zero",
        "timestep_spacing": "linspace",
        "beta_schedule": "linear",
        "beta_start": 0.0001,
        "beta_end": 0.02,
    }


def tiny_wan_components(
    seed: int = 0,
    z_dim: int = 4,
    text_dim: int = 32,
    heads: int = 2,
    head_dim: int = 16,
    num_layers: int = 2,
    vae_base_dim: int = 8,
    flow_shift: float = 3.0,
):
    """(transformer, vae, text_encoder, tokenizer, scheduler_config) with tiny random configs of the real
    classes: the VAE keeps Wan's factors (4 in time, 8 in space) and non-trivial latents_mean/std."""
    # optional: Wan needs diffusers >= 0.33 (see WanBackbone.from_pretrained)
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    torch.manual_seed(seed)
    tokenizer = build_word_tokenizer()
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=text_dim,
            d_kv=text_dim // 4,
            d_ff=2 * text_dim,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=3,
            decoder_start_token_id=0,
        )
    )
    g = torch.Generator().manual_seed(seed + 1)
    vae = AutoencoderKLWan(
        base_dim=vae_base_dim,
        z_dim=z_dim,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=[False, True, True],
        latents_mean=[round(float(x), 4) for x in torch.randn(z_dim, generator=g) * 0.5],
        latents_std=[round(float(x), 4) for x in 0.5 + torch.rand(z_dim, generator=g) * 2],
    )
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=z_dim,
        out_channels=z_dim,
        text_dim=text_dim,
        freq_dim=32,
        ffn_dim=2 * heads * head_dim,
        num_layers=num_layers,
        rope_max_seq_len=64,
    )
    return transformer, vae, text_encoder, tokenizer, wan_scheduler_config(flow_shift)


def tiny_wan_backbone(gradient_checkpointing: bool = False, **kwargs) -> WanBackbone:
    tr, vae, te, tok, sched = tiny_wan_components(**kwargs)
    return WanBackbone(tr, vae, te, tok, sched, gradient_checkpointing=gradient_checkpointing)


def write_tiny_wan_dir(path, **kwargs) -> Path:
    """Create a complete tiny Wan teacher folder in the Wan2.1-T2V-*-Diffusers layout."""
    tiny_wan_backbone(**kwargs).save_pretrained(path)
    return Path(path)
