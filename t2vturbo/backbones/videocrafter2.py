"""VideoCrafter2 teacher (T2V-Turbo-v2's): native 3D UNet + official ``model.ckpt``.

A teacher is the single official checkpoint plus a CLIP BPE tokenizer folder::

    MODEL_DIR/
      model.ckpt | model.safetensors   the official Lightning checkpoint (huggingface.co/VideoCrafter/
                                       VideoCrafter2, model.ckpt), or its flat state dict
      tokenizer/                       CLIP BPE tokenizer (vocab.json + merges.txt or tokenizer.json),
                                       e.g. the one of laion/CLIP-ViT-H-14-laion2B-s32B-b79K
      videocrafter2_config.json        optional; absent = the official v2 configuration

``model.path`` may also name the checkpoint file itself (tokenizer: ``tokenizer/`` beside it, or
``model.tokenizer_path``). Parts (keys, see :mod:`.vc2_convert`):

- UNet (``model.diffusion_model.*``): :class:`~.vc2_unet.VC2UNet`, loaded with ``strict=True``
  (1,413,284,420 parameters at full size, 1484 tensors: ``manifests/videocrafter2_512_v2.json``).
- VAE (``first_stage_model.*``): converted to diffusers ``AutoencoderKL`` (ch 128, mult 1,2,4,4,
  2 res blocks, 4 latent channels, factor 8), applied per frame, latents scaled by 0.18215.
- Text (``cond_stage_model.model.*``): open_clip ViT-H-14 text tower converted to transformers
  ``CLIPTextModel`` (width 1024, 24 layers, 16 heads, GELU). The prompt embedding is the
  *penultimate* layer's output with the final LayerNorm applied (FrozenOpenCLIPEmbedder,
  ``layer="penultimate"``: it runs 23 of the 24 blocks, then ``ln_final``), 77 tokens x 1024;
  tokens are padded with id 0 as ``open_clip.tokenize`` does. Empty prompt = unconditional.

Schedule (ddpm3d defaults + the v2 config): ``linear_start=0.00085, linear_end=0.012`` with the
LDM "linear" rule ``beta = linspace(sqrt(start), sqrt(end), 1000)^2`` (= diffusers'
``scaled_linear``), 1000 steps, eps prediction (the config sets no ``parameterization``; the
default is ``eps``). The v2 config's ``use_scale: true, scale_b: 0.7`` (a ramp on x0 in the
forward process) is *off* here, as in T2V-Turbo-v2 (``--no_scale_pred_x0``; its trainer asserts
``not use_scale``).

fps conditioning: ``fps_cond: true``; the UNet adds ``fps_embedding(sinusoid(fps))`` to the time
embedding. T2V-Turbo-v2 trains and samples with ``fps=8`` (``--fps 8``); VideoCrafter2's own
sampling script uses 28 (``scripts/run_text2video.sh``). Config key: ``model.fps`` (default 8).
"""

from __future__ import annotations

import copy
import gzip
import json
import logging
import os
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file
from torch import nn
from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from ..diffusion import make_alphas_cumprod
from .base import GuidedDenoiser, VideoBackbone, encode_frames
from .vc2_convert import (
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
from .vc2_unet import VC2UNet, VC2UNetConfig

log = logging.getLogger("t2vturbo")

CHECKPOINT_FILES = ("model.ckpt", "model.safetensors")
CONFIG_FILE = "videocrafter2_config.json"
OPEN_CLIP_BPE = "bpe_simple_vocab_16e6.txt.gz"
MANIFEST = Path(__file__).parent / "manifests" / "videocrafter2_512_v2.json"
EXPECTED_LAYOUT = (
    "MODEL_DIR/{model.ckpt | model.safetensors} (official VideoCrafter2 checkpoint: model.diffusion_model.*, "
    "first_stage_model.*, cond_stage_model.model.*) + MODEL_DIR/tokenizer/ (CLIP BPE tokenizer) "
    f"[+ optional MODEL_DIR/{CONFIG_FILE}]"
)
DEFAULT_FPS = 8  # T2V-Turbo-v2's --fps


def official_config() -> dict:
    """The v2 configuration (configs/inference_t2v_512_v2.0.yaml) in this module's terms."""
    return {
        "unet": VC2UNetConfig().to_dict(),
        "vae": autoencoder_kl_config(),
        "text": clip_text_config(),
        "text_layer": "penultimate",
        "schedule": {
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "num_train_timesteps": 1000,
            "prediction_type": "epsilon",
        },
    }


# ---------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------
def resolve_paths(path, tokenizer_path=None) -> tuple[Path, Path, Path]:
    """``(checkpoint file, tokenizer folder, model folder)``; FileNotFoundError naming the path and
    the expected layout when something is missing."""
    p = Path(path)
    if p.is_file():
        ckpt, root = p, p.parent
    elif p.is_dir():
        found = [p / f for f in CHECKPOINT_FILES if (p / f).is_file()]
        if not found:
            raise FileNotFoundError(
                f"VideoCrafter2 folder {str(p)!r} has no {' or '.join(CHECKPOINT_FILES)}; expected {EXPECTED_LAYOUT}"
            )
        ckpt, root = found[-1], p  # model.safetensors wins over model.ckpt when both are there
    else:
        raise FileNotFoundError(
            f"VideoCrafter2 checkpoint {str(p)!r} does not exist; expected {EXPECTED_LAYOUT}"
        )
    tok = Path(tokenizer_path) if tokenizer_path else root / "tokenizer"
    if not tok.is_dir():
        raise FileNotFoundError(
            f"VideoCrafter2 tokenizer folder {str(tok)!r} does not exist (set model.tokenizer_path, or put the "
            f"CLIP BPE tokenizer files in it); expected {EXPECTED_LAYOUT}"
        )
    return ckpt, tok, root


def _strict_load(module: nn.Module, sd: dict, what: str, source: str) -> None:
    try:
        missing, unexpected = module.load_state_dict(sd, strict=False, assign=True)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"{what} in {source} does not fit the model: {e}") from None
    if missing or unexpected:
        raise ValueError(
            f"{what} in {source} does not fit the model: {len(missing)} missing {missing[:5]}, "
            f"{len(unexpected)} unexpected {unexpected[:5]}"
        )
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if t.is_meta:
            raise ValueError(f"{what} in {source}: {name} was not loaded")


def _build(cls, *args, **kwargs):
    with torch.device("meta"):
        return cls(*args, **kwargs)


def _build_text_encoder(cfg: dict):
    return _build(CLIPTextModel, CLIPTextConfig(**cfg))


def _fix_position_ids(model: nn.Module) -> None:
    """Non-persistent ``position_ids`` buffers of a meta-built CLIP (arange)."""
    for m in model.modules():
        buf = getattr(m, "position_ids", None)
        if isinstance(buf, torch.Tensor) and buf.is_meta:
            m.register_buffer("position_ids", torch.arange(buf.shape[-1]).expand(buf.shape), persistent=False)


def load_tokenizer(folder):
    """The CLIP BPE tokenizer in ``folder``: a transformers tokenizer folder (tokenizer.json /
    tokenizer_config.json), bare ``vocab.json`` + ``merges.txt``, or open_clip's own
    ``bpe_simple_vocab_16e6.txt.gz`` (the same vocabulary: bytes, bytes + '</w>', 48894 merges,
    start/end of text = ids 49406/49407)."""
    d = Path(folder)
    if (d / "tokenizer.json").is_file() or (d / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(d))
    if (d / "vocab.json").is_file() and (d / "merges.txt").is_file():
        return CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), model_max_length=77)
    if (d / OPEN_CLIP_BPE).is_file():
        lines = gzip.open(d / OPEN_CLIP_BPE).read().decode("utf-8").split("\n")
        return write_clip_bpe(None, lines[1 : 49152 - 256 - 2 + 1])
    raise FileNotFoundError(
        f"tokenizer folder {str(d)!r} has none of tokenizer.json, tokenizer_config.json, vocab.json + merges.txt, "
        f"{OPEN_CLIP_BPE} (a CLIP BPE tokenizer)"
    )


# ---------------------------------------------------------------------------------------------
# Denoiser and backbone
# ---------------------------------------------------------------------------------------------
class VideoCrafter2Denoiser(nn.Module):
    """``forward(z [B,4,F,h,w], t [B], cond [B,77,1024]) -> eps`` at a fixed fps condition."""

    def __init__(self, unet: VC2UNet, fps: int = DEFAULT_FPS):
        super().__init__()
        self.unet = unet
        self.fps = int(fps)

    def forward(self, z_t, t, cond, timestep_cond=None, motion_cond=None):
        fps = torch.full((z_t.shape[0],), self.fps, dtype=torch.long, device=z_t.device)
        return self.unet(z_t, t, cond, fps=fps, timestep_cond=timestep_cond, motion_cond=motion_cond)


class VideoCrafter2Backbone(VideoBackbone):
    """VideoCrafter2: native UNet, diffusers AutoencoderKL per frame, CLIPTextModel (penultimate)."""

    def __init__(
        self,
        unet: VC2UNet,
        vae,
        text_encoder,
        tokenizer,
        config: dict | None = None,
        fps: int = DEFAULT_FPS,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        self.config = copy.deepcopy(config or official_config())
        self.teacher = VideoCrafter2Denoiser(unet, fps)
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        for m in (self.teacher, self.vae, self.text_encoder):
            m.requires_grad_(False)
            m.eval()
        sched = self.config["schedule"]
        self.prediction_type = sched["prediction_type"]
        self.num_train_timesteps = int(sched["num_train_timesteps"])
        ac = make_alphas_cumprod(
            sched["beta_schedule"], self.num_train_timesteps, sched["beta_start"], sched["beta_end"]
        )
        self.register_buffer("alphas_cumprod", ac, persistent=False)
        self.latent_channels = unet.config.in_channels
        self.gradient_checkpointing = gradient_checkpointing
        self.text_layer = self.config.get("text_layer", "penultimate")
        self.max_length = int(self.config["text"]["max_position_embeddings"])
        self.decode_chunk_size: int | None = None  # frames per VAE decode call (None: all at once)
        self.model_dir: str | None = None
        self._null_cache: torch.Tensor | None = None

    @property
    def fps(self) -> int:
        return self.teacher.fps

    # ---- loading / saving ----------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path,
        tokenizer_path=None,
        fps: int = DEFAULT_FPS,
        gradient_checkpointing: bool = False,
        dtype=torch.float32,
    ):
        """Load the official ``model.ckpt`` (or ``.safetensors``) + tokenizer (see module docstring)."""
        ckpt, tok_dir, root = resolve_paths(path, tokenizer_path)
        config = official_config()
        if (root / CONFIG_FILE).is_file():
            config.update(json.loads((root / CONFIG_FILE).read_text()))
        parts = split_checkpoint(read_state_dict(ckpt))
        src = str(ckpt)

        def cast(sd):
            return {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}

        unet = _build(VC2UNet, VC2UNetConfig(**config["unet"]))
        _strict_load(unet, cast(parts["unet"]), f"{UNET_PREFIX}*", src)
        vae = _build(AutoencoderKL, **config["vae"])
        _strict_load(vae, cast(ldm_vae_to_diffusers(parts["vae"])), f"{VAE_PREFIX}*", src)
        text_sd, unused = open_clip_text_to_clip(parts["text"])
        text_encoder = _build_text_encoder(config["text"])
        _fix_position_ids(text_encoder)
        _strict_load(text_encoder, cast(match_text_prefix(text_sd, text_encoder)), f"{TEXT_PREFIX}*", src)
        bb = cls(unet, vae, text_encoder, load_tokenizer(tok_dir), config, fps, gradient_checkpointing)
        bb.check_schedule(parts["schedule"], src)
        if unused:
            log.info(
                "VideoCrafter2: %s keys not used by the penultimate-layer text encoder: %s",
                TEXT_PREFIX,
                unused,
            )
        bb.model_dir = str(Path(path).resolve())
        return bb

    @classmethod
    def check_path(cls, model_cfg) -> None:
        resolve_paths(model_cfg.path, getattr(model_cfg, "tokenizer_path", None))

    def export_kwargs(self, model_cfg) -> dict:
        return {"fps": int(model_cfg.fps), "tokenizer_path": model_cfg.tokenizer_path}

    @classmethod
    def from_model_config(cls, model_cfg, gradient_checkpointing: bool = False, dtype=torch.float32):
        """From ``cfg.model``: ``path`` (+ ``tokenizer_path``, ``fps``), or a tiny random model when
        ``path`` is null (sizes from ``model.tiny``). The networks are cast to ``dtype``."""
        bb = cls._from_model_config(model_cfg, gradient_checkpointing, dtype)
        if dtype != torch.float32:  # the networks only: the schedule stays float32
            for m in (bb.teacher, bb.vae, bb.text_encoder):
                m.to(dtype)
        return bb

    @classmethod
    def _from_model_config(cls, model_cfg, gradient_checkpointing: bool = False, dtype=torch.float32):
        fps = int(getattr(model_cfg, "fps", DEFAULT_FPS))
        if model_cfg.path is None:
            t = model_cfg.tiny
            bo = list(t.block_out_channels)
            if any(c % bo[0] for c in bo):
                raise ValueError(f"model.tiny.block_out_channels={bo}: each must be a multiple of the first")
            return tiny_backbone(
                seed=t.seed,
                model_channels=bo[0],
                channel_mult=tuple(c // bo[0] for c in bo),
                num_res_blocks=t.layers_per_block,
                num_head_channels=t.attention_head_dim,
                text_dim=t.text_dim,
                latent_channels=t.latent_channels,
                fps=fps,
                gradient_checkpointing=gradient_checkpointing,
            )
        return cls.from_pretrained(
            model_cfg.path,
            tokenizer_path=getattr(model_cfg, "tokenizer_path", None),
            fps=fps,
            gradient_checkpointing=gradient_checkpointing,
            dtype=dtype,
        )

    def check_schedule(self, buffers: dict, source: str = "the checkpoint") -> None:
        """A checkpoint's own ``betas`` / ``alphas_cumprod`` must be ours (else it is another model)."""
        ours = {"alphas_cumprod": self.alphas_cumprod.double()}
        ours["betas"] = 1 - ours["alphas_cumprod"] / torch.cat(
            [torch.ones(1, dtype=torch.float64), ours["alphas_cumprod"][:-1]]
        )
        for name, ref in ours.items():
            if name in buffers:
                got = buffers[name].double().cpu()
                if got.shape != ref.shape or not torch.allclose(got, ref.cpu(), rtol=1e-4, atol=1e-7):
                    raise ValueError(
                        f"{name} in {source} differs from the VideoCrafter2 schedule "
                        f"(scaled_linear 0.00085 -> 0.012, {self.num_train_timesteps} steps)"
                    )

    def official_state_dict(self, unet: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """Every tensor in the official checkpoint layout (UNet, LDM VAE, open_clip text tower
        without its unused projection, and the DDPM schedule buffers ``betas``/``alphas_cumprod``)."""
        unet = unet or self.teacher.unet
        sd = {UNET_PREFIX + k: v for k, v in unet.state_dict().items()}
        sd.update({VAE_PREFIX + k: v for k, v in diffusers_vae_to_ldm(self.vae.state_dict()).items()})
        sd.update(
            {TEXT_PREFIX + k: v for k, v in clip_text_to_open_clip(self.text_encoder.state_dict()).items()}
        )
        ac = self.alphas_cumprod.double().cpu()
        sd["alphas_cumprod"] = ac.float()
        sd["betas"] = (1 - ac / torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])).float()
        return {k: v.detach().contiguous().cpu() for k, v in sd.items()}

    def save_pretrained(self, path, unet: nn.Module | None = None, filename: str = "model.safetensors"):
        """Write ``path/{filename}`` (official key layout; ``.ckpt`` = ``torch.save({'state_dict': sd})``),
        ``path/tokenizer/`` and ``path/videocrafter2_config.json``."""
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        sd = self.official_state_dict(unet)
        if filename.endswith(".safetensors"):
            save_file(sd, str(p / filename))
        else:
            torch.save({"state_dict": sd}, p / filename)
        self.tokenizer.save_pretrained(str(p / "tokenizer"))
        (p / CONFIG_FILE).write_text(json.dumps(self.config, indent=2))

    # ---- interface -----------------------------------------------------------------------
    @property
    def device(self):
        return self.alphas_cumprod.device

    @property
    def vae_scale(self) -> float:
        return float(self.vae.config.scaling_factor)

    def token_ids(self, prompts: list[str]) -> torch.Tensor:
        """[B, 77] ids: <start> + BPE tokens (truncated) + <end>, then zeros (open_clip.tokenize)."""
        ids = self.tokenizer(list(prompts), truncation=True, max_length=self.max_length, padding=False)[
            "input_ids"
        ]
        out = torch.zeros(len(ids), self.max_length, dtype=torch.long)
        for i, row in enumerate(ids):
            out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        return out

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        ids = self.token_ids(prompts).to(self.device)
        if self.text_layer == "last":
            return self.text_encoder(ids).last_hidden_state
        hidden = self.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        return getattr(self.text_encoder, "text_model", self.text_encoder).final_layer_norm(hidden)

    def null_cond(self, batch_size: int) -> torch.Tensor:
        if self._null_cache is None or self._null_cache.device != self.device:
            self._null_cache = self.encode_text([""])
        return self._null_cache.expand(batch_size, -1, -1)

    def latent_shape(self, num_frames, height, width):
        f = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if height % f or width % f:
            raise ValueError(f"height={height}, width={width} must be multiples of the VAE factor {f}")
        return (self.latent_channels, num_frames, height // f, width // f)

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """Per-frame VAE encode (posterior mean) times 0.18215: [B,F,3,H,W] -> [B,4,F,H/8,W/8]."""
        return encode_frames(self.vae, video, self.vae_scale, self.device)

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        b, c, f = z.shape[:3]
        x = (z.permute(0, 2, 1, 3, 4).reshape(b * f, c, *z.shape[3:]) / self.vae_scale).to(self.vae.dtype)
        n = self.decode_chunk_size or x.shape[0]
        out = torch.cat([self.vae.decode(x[i : i + n]).sample for i in range(0, x.shape[0], n)])
        return out.reshape(b, f, *out.shape[1:]).clamp(-1, 1)

    def make_student(self, dropout: bool = False) -> GuidedDenoiser:
        """A trainable copy of the teacher UNet with T2V-Turbo-v2's ``time_cond_proj`` /
        ``motion_cond_proj`` / ``combine_proj`` (w and eta onto the timestep sinusoid, random init)."""
        unet = copy.deepcopy(self.teacher.unet)
        unet.requires_grad_(True)
        unet.train()
        if not dropout:  # temporal convs have p=0.1; the consistency student is deterministic
            for m in unet.modules():
                if isinstance(m, nn.Dropout):
                    m.p = 0.0
        unet.gradient_checkpointing = self.gradient_checkpointing
        unet.add_guidance_conditioning(embed_dim=256, motion=True)
        return GuidedDenoiser(VideoCrafter2Denoiser(unet, self.fps))

    def trainable_teacher(self, clone: bool = False) -> nn.Module:
        teacher = copy.deepcopy(self.teacher) if clone else self.teacher
        teacher.requires_grad_(True)
        teacher.train()
        teacher.unet.gradient_checkpointing = self.gradient_checkpointing
        return teacher


# ---------------------------------------------------------------------------------------------
# Tiny configs of the same classes (tests)
# ---------------------------------------------------------------------------------------------
def _bytes_to_unicode() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE, in the order CLIP's vocabulary lists them."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in keep]
    return [chr(c) for c in keep] + [chr(256 + i) for i in range(len(extra))]


TINY_MERGES = ("r e", "re d</w>", "c i", "ci r", "l e", "le f", "lef t</w>", "m o", "mo v", "i n", "in g</w>")


def write_clip_bpe(folder: str | os.PathLike | None, merges):
    """A CLIP BPE tokenizer from its merges: vocabulary = CLIP's byte alphabet (ids 0-511, id 0 =
    '!'), the merged symbols, then <|startoftext|>/<|endoftext|>; written to ``folder`` (or a
    temp dir) as vocab.json + merges.txt."""
    merges = [m for m in merges if m.strip()]
    chars = _bytes_to_unicode()
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    d = Path(folder or tempfile.mkdtemp(prefix="vc2_tok_"))
    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), model_max_length=77)


def build_tiny_clip_tokenizer(folder: str | os.PathLike | None = None, merges=TINY_MERGES):
    """A tiny CLIP BPE tokenizer (a handful of merges; see :func:`write_clip_bpe`)."""
    return write_clip_bpe(folder, merges)


def _randomize_zero_init(module: nn.Module, generator: torch.Generator, std: float = 0.05) -> None:
    """Give the layers the official code zero-initialises (out convs, proj_out, temporal conv4)
    small random weights, so that every path of a tiny random model contributes to its output."""
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim > 0 and not p.any():
                p.copy_(torch.randn(p.shape, generator=generator) * std)


def tiny_config(
    model_channels: int = 16,
    channel_mult=(1, 2),
    num_res_blocks: int = 1,
    num_head_channels: int = 8,
    text_dim: int = 32,
    text_layers: int = 3,
    latent_channels: int = 4,
    vae_channels=(16, 32),
    norm_groups: int = 8,
    vocab_size: int = 514,
) -> dict:
    """A small configuration of the same classes (official: :func:`official_config`)."""
    cfg = official_config()
    cfg["unet"] = VC2UNetConfig(
        in_channels=latent_channels,
        out_channels=latent_channels,
        model_channels=model_channels,
        channel_mult=list(channel_mult),
        num_res_blocks=num_res_blocks,
        attention_resolutions=[2**i for i in range(len(channel_mult))],
        num_head_channels=num_head_channels,
        context_dim=text_dim,
        norm_groups=norm_groups,
    ).to_dict()
    ch = vae_channels[0]
    cfg["vae"] = autoencoder_kl_config(
        ch=ch,
        ch_mult=[c // ch for c in vae_channels],
        num_res_blocks=1,
        z_channels=latent_channels,
        embed_dim=latent_channels,
        resolution=32,
        norm_groups=norm_groups,
    )
    cfg["text"] = clip_text_config(width=text_dim, layers=text_layers, heads=2, vocab_size=vocab_size)
    return cfg


def tiny_backbone(
    seed: int = 0, fps: int = DEFAULT_FPS, gradient_checkpointing: bool = False, **config_kwargs
) -> VideoCrafter2Backbone:
    """A tiny random VideoCrafter2 (same classes, small sizes; CPU friendly)."""
    tokenizer = build_tiny_clip_tokenizer()
    config_kwargs.setdefault("vocab_size", len(tokenizer))
    cfg = tiny_config(**config_kwargs)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    unet = VC2UNet(VC2UNetConfig(**cfg["unet"]))
    _randomize_zero_init(unet, g)
    vae = AutoencoderKL(**cfg["vae"])
    text_encoder = CLIPTextModel(CLIPTextConfig(**cfg["text"]))
    return VideoCrafter2Backbone(unet, vae, text_encoder, tokenizer, cfg, fps, gradient_checkpointing)


def write_tiny_checkpoint(path, filename: str = "model.ckpt", **kwargs) -> Path:
    """A tiny teacher folder in the official layout (``model.ckpt`` + ``tokenizer/`` + config)."""
    tiny_backbone(**kwargs).save_pretrained(path, filename=filename)
    return Path(path)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def __getattr__(name: str):
    """``load_official_student`` (official T2V-Turbo student files) lives in :mod:`.official`, which imports
    this module: re-exported lazily."""
    if name == "load_official_student":
        from .official import load_official_student

        return load_official_student
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
