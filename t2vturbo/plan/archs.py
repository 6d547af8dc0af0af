"""Full-size teachers built from their configurations, without weights (for :mod:`t2vturbo.plan`).

``model.arch`` names a public architecture (the model options set it: conf/model/*.yaml); with
``model.path`` set, the networks' configurations are read from that folder instead (config.json files;
no weight is read). Built inside :func:`t2vturbo.plan.trace.fake_parameters`, every parameter is a fake
tensor: a 14 B model costs no memory. Tokenizers are not part of a plan (token ids are what the text
encoder sees; their count is the family's padded length), so a small local one stands in.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..backbones import FAMILIES
from ..backbones.unet3d import UNet3DBackbone, build_word_tokenizer, default_scheduler_config
from ..backbones.vc2_convert import autoencoder_kl_config, clip_text_config
from ..backbones.videocrafter2 import (
    DEFAULT_FPS,
    VideoCrafter2Backbone,
    _build_text_encoder,
    _fix_position_ids,
    build_tiny_clip_tokenizer,
    official_config,
)

#: Wan2.1 text-to-video transformers (the public config.json of each release, diffusers layout)
WAN_TRANSFORMERS = {
    "wan2.1_t2v_1.3b": dict(num_attention_heads=12, ffn_dim=8960, num_layers=30),
    "wan2.1_t2v_14b": dict(num_attention_heads=40, ffn_dim=13824, num_layers=40),
}
WAN_COMMON = dict(
    patch_size=(1, 2, 2),
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    cross_attn_norm=True,
    eps=1e-6,
    rope_max_seq_len=1024,
)
#: the umt5-xxl encoder of every Wan2.1 release
UMT5_XXL = dict(
    vocab_size=256384,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
    tie_word_embeddings=False,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)
#: ModelScope text-to-video-ms-1.7b: diffusers' UNet3DConditionModel defaults are its UNet; the SD VAE; the
#: OpenCLIP ViT-H text tower (penultimate layer: 23 of its 24 layers)
MODELSCOPE = {
    "unet": {"sample_size": 32},
    "vae": autoencoder_kl_config(),
    "text": clip_text_config(layers=23),
}

ARCHS = {
    "videocrafter2_512_v2": "videocrafter2",
    "modelscope_1.7b": "unet3d",
    **{name: "wan" for name in WAN_TRANSFORMERS},
}


class PlanError(ValueError):
    """A config the planner cannot plan (the message says why and what to change)."""


def _clip_tokenizer(max_length: int = 77):
    tok = build_tiny_clip_tokenizer()
    tok.model_max_length = max_length
    return tok


def _json(path: Path) -> dict:
    if not path.is_file():
        raise PlanError(
            f"{path} not found: model.path must be a {path.parent.parent.name} folder with {path}"
        )
    cfg = json.loads(path.read_text())
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def _videocrafter2(model_cfg, ckpt: bool):
    from ..backbones.vc2_unet import VC2UNet, VC2UNetConfig

    config = official_config()
    if model_cfg.path is not None:
        extra = Path(model_cfg.path) / "config.json"
        if extra.is_file():
            config.update(json.loads(extra.read_text()))
    unet = VC2UNet(VC2UNetConfig(**config["unet"]))
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**config["vae"])
    text = _build_text_encoder(config["text"])
    _fix_position_ids(text)
    fps = int(getattr(model_cfg, "fps", DEFAULT_FPS))
    return VideoCrafter2Backbone(unet, vae, text, _clip_tokenizer(), config, fps, ckpt)


def _unet3d(model_cfg, ckpt: bool):
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if model_cfg.path is not None:
        p = Path(model_cfg.path)
        unet_cfg, vae_cfg, text_cfg = (_json(p / d / "config.json") for d in ("unet", "vae", "text_encoder"))
        sched = _json(p / "scheduler" / "scheduler_config.json")
    else:
        unet_cfg, vae_cfg, text_cfg = MODELSCOPE["unet"], MODELSCOPE["vae"], MODELSCOPE["text"]
        sched = default_scheduler_config()
    unet = UNet3DConditionModel(**unet_cfg)
    vae = AutoencoderKL(**vae_cfg)
    text = CLIPTextModel(CLIPTextConfig(**text_cfg))
    _fix_position_ids(text)
    return UNet3DBackbone(unet, vae, text, _clip_tokenizer(), sched, ckpt)


def _wan(model_cfg, ckpt: bool):
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from ..backbones.wan import TEXT_LEN, WanBackbone, wan_scheduler_config

    if model_cfg.path is not None:
        p = Path(model_cfg.path)
        tr_cfg, vae_cfg, text_cfg = (
            _json(p / d / "config.json") for d in ("transformer", "vae", "text_encoder")
        )
        sched = _json(p / "scheduler" / "scheduler_config.json")
        text_cfg = {k: v for k, v in text_cfg.items() if k not in ("architectures", "transformers_version")}
    else:
        tr_cfg = {**WAN_COMMON, **WAN_TRANSFORMERS[model_cfg.arch]}
        vae_cfg, text_cfg, sched = {}, UMT5_XXL, wan_scheduler_config(3.0)
    tr = WanTransformer3DModel(**tr_cfg)
    vae = AutoencoderKLWan(**vae_cfg)
    text = UMT5EncoderModel(UMT5Config(**text_cfg))
    tok = build_word_tokenizer(max_length=TEXT_LEN)
    return WanBackbone(tr, vae, text, tok, sched, gradient_checkpointing=ckpt)


BUILDERS = {"videocrafter2": _videocrafter2, "unet3d": _unet3d, "modelscope": _unet3d, "zeroscope": _unet3d}
BUILDERS["wan"] = _wan


def build_full_size(model_cfg, gradient_checkpointing: bool, dtype) -> torch.nn.Module:
    """The teacher of ``model_cfg`` at full size (``model.arch``, or the config files under ``model.path``),
    networks in ``dtype`` (Wan's VAE stays float32, as the trainer loads it). Call inside
    :func:`~t2vturbo.plan.trace.fake_parameters`."""
    family = model_cfg.family
    if family not in FAMILIES:
        raise PlanError(f"model.family={family!r}: the planner knows {', '.join(FAMILIES)}")
    if model_cfg.path is None:
        arch = model_cfg.arch
        if arch not in ARCHS:
            raise PlanError(
                f"model.arch={arch!r}: a plan without model.path needs a public architecture, one of "
                f"{', '.join(ARCHS)} (or model.path=FOLDER to read the networks' config.json files there)"
            )
        if ARCHS[arch] != ("unet3d" if family in ("modelscope", "zeroscope") else family):
            raise PlanError(
                f"model.arch={arch!r} is a {ARCHS[arch]} architecture, not model.family={family!r}"
            )
    bb = BUILDERS[family](model_cfg, gradient_checkpointing)
    if dtype != torch.float32:
        nets = (bb.teacher, bb.text_encoder) if family == "wan" else (bb.teacher, bb.vae, bb.text_encoder)
        for m in nets:
            m.to(dtype)
    return bb


# ---- reward models at their released sizes ----------------------------------------------------------------
def _clip_config(vision: dict, projection_dim: int, text: dict | None = None):
    from transformers import CLIPConfig

    text = text or dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16
    )
    return CLIPConfig(
        text_config={**text, "max_position_embeddings": 77, "vocab_size": 49408, "hidden_act": "gelu"},
        vision_config={**vision, "image_size": 224, "patch_size": 14, "hidden_act": "gelu"},
        projection_dim=projection_dim,
    )


#: OpenCLIP ViT-H-14 (HPSv2.1, PickScore, CLIP score) and the ViT-L/14 vision tower of the aesthetic predictor
VIT_H14 = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16)
VIT_L14 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16)


def _clip_reward(cls):
    from transformers import CLIPModel

    from ..rewards.clip_rewards import tiny_clip_tokenizer

    return cls(CLIPModel(_clip_config(VIT_H14, 1024)), tiny_clip_tokenizer())


#: the rewards :func:`full_size_reward` builds at their released architectures
RELEASED_REWARDS = ("hpsv2", "clip", "pickscore", "hpsv2_clip", "aesthetic", "internvideo2", "viclip")


def full_size_reward(name: str, **kwargs):
    """The reward ``name`` at its released architecture, weights fake (inside ``fake_parameters``); small local
    tokenizers stand in for the released ones (token ids only)."""
    from ..rewards import registry

    cls = registry.get(name)
    if name in ("hpsv2", "clip", "pickscore"):
        return _clip_reward(cls)
    if name == "hpsv2_clip":
        from ..rewards.clip_rewards import CLIPScoreReward, HPSv2Reward

        return cls(_clip_reward(HPSv2Reward), _clip_reward(CLIPScoreReward), **kwargs)
    if name == "aesthetic":
        from transformers import CLIPVisionModelWithProjection

        config = _clip_config(VIT_L14, 768).vision_config
        config.projection_dim = 768
        return cls(CLIPVisionModelWithProjection(config))
    if name == "internvideo2":
        from ..rewards.internvideo2 import InternVideo2Config, InternVideo2Model, tiny_bert_tokenizer

        return cls(InternVideo2Model(InternVideo2Config()), tiny_bert_tokenizer())
    if name == "viclip":
        from ..rewards.viclip import ViCLIPConfig, ViCLIPModel, tiny_clip_tokenizer

        return cls(ViCLIPModel(ViCLIPConfig()), tiny_clip_tokenizer())
    raise PlanError(
        f"reward {name!r}: the planner has no released architecture for it; reward.paths.{name}=tiny plans its "
        "tiny config, or leave it out (reward.weights.NAME=0)"
    )
