"""Key conversions for VideoCrafter2's frozen parts (and reading its checkpoint).

``model.ckpt`` (a Lightning checkpoint of ``lvdm.models.ddpm3d.LatentDiffusion``) holds

    model.diffusion_model.*    the 3D UNet (loaded as is into :class:`~.vc2_unet.VC2UNet`)
    first_stage_model.*        the 2D KL autoencoder in the LDM layout -> diffusers ``AutoencoderKL``
    cond_stage_model.model.*   open_clip ViT-H-14 without ``visual`` (FrozenOpenCLIPEmbedder)
                               -> transformers ``CLIPTextModel``
    betas, alphas_cumprod, ... the DDPM schedule buffers (checked, not loaded)

VAE, LDM -> diffusers (per encoder/decoder; ``n`` = number of resolution levels)::

    conv_in, conv_out                      same
    norm_out                               conv_norm_out
    down.i.block.j.{norm1,conv1,norm2,conv2,nin_shortcut}
                                           down_blocks.i.resnets.j.{..., conv_shortcut}
    down.i.downsample.conv                 down_blocks.i.downsamplers.0.conv
    up.i.block.j / up.i.upsample.conv      up_blocks.(n-1-i).resnets.j / .upsamplers.0.conv
                                           (LDM indexes decoder levels by resolution, diffusers
                                           in processing order)
    mid.block_1 / mid.block_2              mid_block.resnets.0 / .1
    mid.attn_1.{norm,q,k,v,proj_out}       mid_block.attentions.0.{group_norm,to_q,to_k,to_v,to_out.0}
                                           (1x1 conv weights [C,C,1,1] -> linear [C,C])
    quant_conv, post_quant_conv            same (top level)

Text, open_clip -> transformers ``CLIPTextModel`` (keys of its text transformer; older transformers
versions nest them under ``text_model.``, see :func:`match_text_prefix`)::

    token_embedding.weight                 embeddings.token_embedding.weight
    positional_embedding                   embeddings.position_embedding.weight
    transformer.resblocks.N.ln_1 / ln_2    encoder.layers.N.layer_norm1 / layer_norm2
    ...attn.in_proj_{weight,bias}          ...self_attn.{q,k,v}_proj (rows q | k | v)
    ...attn.out_proj                       ...self_attn.out_proj
    ...mlp.c_fc / mlp.c_proj               ...mlp.fc1 / mlp.fc2
    ln_final                               final_layer_norm
    text_projection, logit_scale           not used (the UNet reads token features, not the
                                           pooled projection); reported as unused

Both converters raise ``KeyError`` on keys they do not know instead of dropping them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file

# ---------------------------------------------------------------------------------------------
# VAE
# ---------------------------------------------------------------------------------------------
_RESNET = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "nin_shortcut": "conv_shortcut",
}
_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def _levels(keys, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    ids = {int(m.group(1)) for k in keys if (m := pat.match(k))}
    return max(ids) + 1 if ids else 0


def _vae_part_to_diffusers(rest: str, n_up: int) -> str | None:
    """One encoder/decoder key (after ``encoder.``/``decoder.``) in the diffusers layout."""
    parts = rest.split(".")
    if parts[0] in ("conv_in", "conv_out"):
        return rest
    if parts[0] == "norm_out":
        return "conv_norm_out." + ".".join(parts[1:])
    if parts[0] in ("down", "up") and len(parts) >= 5:
        i = int(parts[1]) if parts[0] == "down" else n_up - 1 - int(parts[1])
        blocks = f"{parts[0]}_blocks.{i}"
        if parts[2] == "block" and parts[4] in _RESNET:
            return f"{blocks}.resnets.{parts[3]}.{_RESNET[parts[4]]}." + ".".join(parts[5:])
        if parts[2] in ("downsample", "upsample") and parts[3] == "conv":
            return f"{blocks}.{parts[2]}rs.0.conv." + ".".join(parts[4:])
        return None
    if parts[0] == "mid" and len(parts) >= 3:
        if parts[1] in ("block_1", "block_2") and parts[2] in _RESNET:
            return f"mid_block.resnets.{int(parts[1][-1]) - 1}.{_RESNET[parts[2]]}." + ".".join(parts[3:])
        if parts[1] == "attn_1" and parts[2] in _ATTN:
            return f"mid_block.attentions.0.{_ATTN[parts[2]]}." + ".".join(parts[3:])
    return None


def ldm_vae_to_diffusers(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LDM ``AutoencoderKL`` state dict (``first_stage_model.`` stripped) -> diffusers keys."""
    n_up = _levels(sd, "decoder.up.")
    out, unknown = {}, []
    for k, v in sd.items():
        top, _, rest = k.partition(".")
        if top in ("quant_conv", "post_quant_conv"):
            out[k] = v
            continue
        new = _vae_part_to_diffusers(rest, n_up) if top in ("encoder", "decoder") else None
        if new is None:
            unknown.append(k)
            continue
        if ".mid_block.attentions.0.to_" in f".{new}" and new.endswith(".weight") and v.ndim == 4:
            v = v[:, :, 0, 0]
        out[f"{top}.{new}"] = v
    if unknown:
        raise KeyError(f"VAE keys the LDM->diffusers converter does not handle: {unknown[:10]}")
    return out


def diffusers_vae_to_ldm(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`ldm_vae_to_diffusers` (writes checkpoints in the official layout)."""
    n_up = _levels(sd, "decoder.up_blocks.")
    res_inv = {v: k for k, v in _RESNET.items()}
    attn_inv = {v: k for k, v in _ATTN.items()}
    out, unknown = {}, []
    for k, v in sd.items():
        top, _, rest = k.partition(".")
        if top in ("quant_conv", "post_quant_conv"):
            out[k] = v
            continue
        p = rest.split(".")
        new = None
        if p[0] in ("conv_in", "conv_out"):
            new = rest
        elif p[0] == "conv_norm_out":
            new = "norm_out." + ".".join(p[1:])
        elif p[0] in ("down_blocks", "up_blocks"):
            kind = p[0][:-7]  # down | up
            i = int(p[1]) if kind == "down" else n_up - 1 - int(p[1])
            if p[2] == "resnets" and p[4] in res_inv:
                new = f"{kind}.{i}.block.{p[3]}.{res_inv[p[4]]}." + ".".join(p[5:])
            elif p[2] in ("downsamplers", "upsamplers") and p[4] == "conv":
                new = f"{kind}.{i}.{kind}sample.conv." + ".".join(p[5:])
        elif p[0] == "mid_block" and p[1] == "resnets" and p[3] in res_inv:
            new = f"mid.block_{int(p[2]) + 1}.{res_inv[p[3]]}." + ".".join(p[4:])
        elif p[0] == "mid_block" and p[1] == "attentions":
            name = "to_out.0" if p[3] == "to_out" else p[3]
            tail = p[5:] if p[3] == "to_out" else p[4:]
            if name in attn_inv:
                new = f"mid.attn_1.{attn_inv[name]}." + ".".join(tail)
                if name != "group_norm" and tail == ["weight"]:
                    v = v[:, :, None, None]
        if new is None or top not in ("encoder", "decoder"):
            unknown.append(k)
            continue
        out[f"{top}.{new}"] = v
    if unknown:
        raise KeyError(f"VAE keys the diffusers->LDM converter does not handle: {unknown[:10]}")
    return out


def autoencoder_kl_config(
    ch: int = 128,
    ch_mult=(1, 2, 4, 4),
    num_res_blocks: int = 2,
    z_channels: int = 4,
    embed_dim: int = 4,
    in_channels: int = 3,
    out_ch: int = 3,
    resolution: int = 512,
    norm_groups: int = 32,
    scale_factor: float = 0.18215,
) -> dict:
    """diffusers ``AutoencoderKL`` kwargs for an LDM ``ddconfig`` (defaults: VideoCrafter2's)."""
    if embed_dim != z_channels:
        raise ValueError(
            f"embed_dim={embed_dim} != z_channels={z_channels}: not expressible as a diffusers AutoencoderKL"
        )
    n = len(ch_mult)
    return {
        "in_channels": in_channels,
        "out_channels": out_ch,
        "down_block_types": ["DownEncoderBlock2D"] * n,
        "up_block_types": ["UpDecoderBlock2D"] * n,
        "block_out_channels": [ch * m for m in ch_mult],
        "layers_per_block": num_res_blocks,
        "act_fn": "silu",
        "latent_channels": z_channels,
        "norm_num_groups": norm_groups,
        "sample_size": resolution,
        "scaling_factor": scale_factor,
    }


# ---------------------------------------------------------------------------------------------
# Text encoder
# ---------------------------------------------------------------------------------------------
_BLOCK = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
_TOP = {
    "token_embedding.weight": "embeddings.token_embedding.weight",
    "positional_embedding": "embeddings.position_embedding.weight",
    "ln_final.weight": "final_layer_norm.weight",
    "ln_final.bias": "final_layer_norm.bias",
}
#: open_clip text-tower keys the penultimate-layer encoder does not use.
TEXT_UNUSED = ("text_projection", "logit_scale", "logit_bias", "attn_mask")


def open_clip_text_to_clip(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """open_clip text tower (``cond_stage_model.model.`` stripped) -> ``CLIPTextModel`` keys.

    Returns ``(state_dict, unused_keys)``; unused keys are those of :data:`TEXT_UNUSED`."""
    out, unused, unknown = {}, [], []
    pat = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)[._](weight|bias)$")
    for k, v in sd.items():
        if k in _TOP:
            out[_TOP[k]] = v
        elif k in TEXT_UNUSED:
            unused.append(k)
        elif m := pat.match(k):
            n, name, kind = m.groups()
            dst = f"encoder.layers.{n}."
            if name == "attn.in_proj":  # attn.in_proj_weight / attn.in_proj_bias: rows q | k | v
                for x, part in zip("qkv", v.chunk(3, dim=0)):
                    out[f"{dst}self_attn.{x}_proj.{kind}"] = part
            elif name in _BLOCK and k.endswith(f".{kind}"):
                out[f"{dst}{_BLOCK[name]}.{kind}"] = v
            else:
                unknown.append(k)
        else:
            unknown.append(k)
    if unknown:
        raise KeyError(f"open_clip text keys the converter does not handle: {unknown[:10]}")
    return out, unused


def clip_text_to_open_clip(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`open_clip_text_to_clip` (without the unused keys)."""
    top_inv = {v: k for k, v in _TOP.items()}
    block_inv = {v: k for k, v in _BLOCK.items()}
    sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    out, unknown = {}, []
    pat = re.compile(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")
    for k, v in sd.items():
        if k in top_inv:
            out[top_inv[k]] = v
        elif m := pat.match(k):
            n, name, kind = m.groups()
            if name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                continue  # joined below
            if name not in block_inv:
                unknown.append(k)
                continue
            out[f"transformer.resblocks.{n}.{block_inv[name]}.{kind}"] = v
        elif not k.endswith("position_ids"):
            unknown.append(k)
    for n in range(_levels(sd, "encoder.layers.")):
        for kind in ("weight", "bias"):
            qkv = [sd[f"encoder.layers.{n}.self_attn.{x}_proj.{kind}"] for x in "qkv"]
            out[f"transformer.resblocks.{n}.attn.in_proj_{kind}"] = torch.cat(qkv, dim=0)
    if unknown:
        raise KeyError(f"CLIPTextModel keys the converter does not handle: {unknown[:10]}")
    return out


def match_text_prefix(sd: Mapping[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Keys of :func:`open_clip_text_to_clip` as ``model`` names them (``text_model.`` prefixed in
    transformers < 5, bare in 5.x)."""
    nested = any(k.startswith("text_model.") for k in model.state_dict())
    return {("text_model." + k if nested else k): v for k, v in sd.items()}


def clip_text_config(
    width: int = 1024,
    layers: int = 24,
    heads: int = 16,
    vocab_size: int = 49408,
    context_length: int = 77,
    mlp_ratio: int = 4,
) -> dict:
    """``CLIPTextConfig`` kwargs of an open_clip text tower (defaults: ViT-H-14's; open_clip uses
    ``nn.GELU`` (not QuickGELU) and LayerNorm eps 1e-5 for it; token ids of the CLIP BPE vocab,
    padding with id 0 as ``open_clip.tokenize`` does)."""
    return {
        "vocab_size": vocab_size,
        "hidden_size": width,
        "intermediate_size": mlp_ratio * width,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "max_position_embeddings": context_length,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": width,
        "bos_token_id": vocab_size - 2,
        "eos_token_id": vocab_size - 1,
        "pad_token_id": 0,
    }


# ---------------------------------------------------------------------------------------------
# Reading the checkpoint
# ---------------------------------------------------------------------------------------------
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.model."
#: Top-level buffers of ``LatentDiffusion`` (its DDPM schedule; ``scale_arr`` is the v2 "use_scale"
#: ramp that T2V-Turbo switches off). Recognised and checked, never loaded.
SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "scale_arr",
    "logvar",
    "lvlb_weights",
)


def read_state_dict(file: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The flat state dict of ``model.ckpt`` (``torch.load(weights_only=True)``, memory-mapped
    where possible; the tensors may sit under ``"state_dict"``) or of a ``.safetensors`` file."""
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint {str(file)!r} does not exist")
    if file.suffix == ".safetensors":
        return load_file(str(file))
    try:
        try:
            obj = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            obj = torch.load(file, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as e:  # noqa: BLE001 - re-raised with the file and what to do
        raise RuntimeError(
            f"could not read {str(file)!r} with torch.load(weights_only=True): the file is damaged or holds "
            f"more than tensors (pickled classes, e.g. Lightning extras), and t2vturbo never unpickles code. "
            f"Re-save its weights once, in an environment where you trust the file, as a plain state dict "
            f"(torch.save({{'state_dict': sd}}, ...)) or as .safetensors, and point model.path at that. "
            f"Original error: {e}"
        ) from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{str(file)!r} does not hold a state dict (got {type(obj).__name__})")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def split_checkpoint(sd: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{"unet", "vae", "text", "schedule"}`` parts with their prefixes stripped. Any other key
    raises ``KeyError`` (listed), so nothing is dropped silently."""
    parts: dict[str, dict[str, torch.Tensor]] = {"unet": {}, "vae": {}, "text": {}, "schedule": {}}
    unknown = []
    for k, v in sd.items():
        for name, prefix in (("unet", UNET_PREFIX), ("vae", VAE_PREFIX), ("text", TEXT_PREFIX)):
            if k.startswith(prefix):
                parts[name][k[len(prefix) :]] = v
                break
        else:
            if k in SCHEDULE_BUFFERS:
                parts["schedule"][k] = v
            else:
                unknown.append(k)
    if unknown:
        raise KeyError(
            f"unexpected keys in the VideoCrafter2 checkpoint (expected {UNET_PREFIX}*, {VAE_PREFIX}*, "
            f"{TEXT_PREFIX}* and the schedule buffers): {unknown[:10]}{' ...' if len(unknown) > 10 else ''}"
        )
    return parts
