"""Build components from the (validated) config, once."""

from __future__ import annotations

from pathlib import Path

import torch

from ..backbones import UNet3DBackbone, check_model_dir, tiny_backbone


def check_paths(cfg):
    """Fail before any heavy work if a weight path is missing (names the key and the path)."""
    if cfg.model.path is not None:
        try:
            if cfg.model.family == "wan":
                from ..backbones.wan import check_wan_dir

                check_wan_dir(cfg.model.path)
                return
            if cfg.model.family == "videocrafter2":
                from ..backbones.videocrafter2 import resolve_paths

                resolve_paths(cfg.model.path, getattr(cfg.model, "tokenizer_path", None))
                return
            check_model_dir(cfg.model.path)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"model.path: {e}") from None


def build_backbone(model_cfg, gradient_checkpointing: bool = False, device="cpu", dtype=torch.float32):
    if model_cfg.family == "wan":  # Wan2.1 flow-matching teacher (path null: a tiny random one, tests)
        from ..backbones.wan import WanBackbone, tiny_wan_backbone

        if model_cfg.path is None:
            bb = tiny_wan_backbone(seed=model_cfg.tiny.seed, gradient_checkpointing=gradient_checkpointing)
            bb.teacher.to(dtype)
            bb.text_encoder.to(dtype)
        else:  # transformer and text encoder loaded in `dtype`; the VAE stays float32 (diffusers' advice)
            bb = WanBackbone.from_pretrained(Path(model_cfg.path), gradient_checkpointing=gradient_checkpointing,
                                             dtype=dtype)
            bb.model_dir = str(Path(model_cfg.path).resolve())
        return bb.to(device)
    if model_cfg.family == "videocrafter2":  # native VideoCrafter2 UNet + official model.ckpt (path null: tiny)
        from ..backbones.videocrafter2 import VideoCrafter2Backbone

        bb = VideoCrafter2Backbone.from_model_config(model_cfg, gradient_checkpointing, dtype=dtype)
        if dtype != torch.float32:  # the networks only: the schedule stays float32
            for m in (bb.teacher, bb.vae, bb.text_encoder):
                m.to(dtype)
        return bb.to(device)
    if model_cfg.family not in ("unet3d", "modelscope", "zeroscope"):
        raise ValueError(f"model.family={model_cfg.family!r}: available: unet3d, wan, videocrafter2")
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
            gradient_checkpointing=gradient_checkpointing,
        )
    else:
        bb = UNet3DBackbone.from_pretrained(Path(model_cfg.path), gradient_checkpointing=gradient_checkpointing)
        bb.model_dir = str(Path(model_cfg.path).resolve())
    bb.to(device)
    if dtype != torch.float32:  # cast the networks only: the schedule stays float32
        for m in (bb.teacher, bb.vae, bb.text_encoder):
            m.to(dtype)
    return bb


def build_dataset(cfg):
    d = cfg.data
    if d.kind == "toy":
        from ..data.toy import ToyClipDataset

        if cfg.model.height != cfg.model.width:
            raise ValueError("data.kind=toy renders square clips: set model.height == model.width")
        return ToyClipDataset(
            num_samples=d.num_samples,
            num_frames=cfg.model.num_frames,
            size=cfg.model.height,
            seed=cfg.seed,
            textured=d.textured,
            directions=None if d.directions is None else list(d.directions),
        )
    if d.kind in ("shards", "mixture"):
        from ..data.shards import ClipStream

        size = (cfg.model.height, cfg.model.width)  # resize to cover, centre crop (e.g. 320x512)

        def stream(urls, frame_stride, target_fps, salt=0):
            return ClipStream(
                urls,
                num_frames=cfg.model.num_frames,
                size=size,
                frame_stride=frame_stride,
                target_fps=target_fps,
                seed=cfg.seed + salt,
                shuffle_buffer=d.shuffle_buffer,
                resampled=d.resampled,
                max_skip_fraction=d.max_skip_fraction,
                loader_batch_size=cfg.train.micro_batch_size,
            )

        if d.kind == "shards":
            return stream(d.urls, d.frame_stride, d.target_fps)
        from ..data.mixture import MixtureSource, MixtureStream

        sources = []
        for i, s in enumerate(d.sources):
            own = s.frame_stride is not None or s.target_fps is not None  # else data.frame_stride / target_fps
            fs, fps = (s.frame_stride, s.target_fps) if own else (d.frame_stride, d.target_fps)
            sources.append(MixtureSource(
                name=s.name, stream=stream(s.urls, fs, fps, salt=1000 * (i + 1)), weight=s.weight,
                use_reward=s.use_reward, use_motion_guide=s.use_motion_guide, reward_caption_key=s.reward_caption_key,
            ))
        return MixtureStream(sources, seed=cfg.seed, loader_batch_size=cfg.train.micro_batch_size)
    raise ValueError(f"data.kind={d.kind!r}: available: toy, shards, mixture")
