"""open_clip CLIP checkpoints -> transformers :class:`~transformers.CLIPModel` (no open_clip needed).

HPSv2.1 (``HPS_v2.1_compressed.pt``) and the open_clip release of ViT-H-14 laion2B-s32B-b79K
(``open_clip_pytorch_model.bin``) are state dicts of open_clip's ``CLIP`` class.  This module
renames / reshapes them into transformers' CLIP layout so the rewards run on ``CLIPModel``.
It registers no reward (the registry imports it during discovery and finds nothing).

open_clip layout (``CLIP`` with a ``VisionTransformer`` under ``visual.`` and the text tower's
modules directly on the model), width ``w``, ``L`` layers, projection dim ``D``::

    visual.conv1.weight                    [w, 3, p, p]  (no bias)
    visual.class_embedding                 [w]
    visual.positional_embedding            [1 + (S/p)^2, w]
    visual.ln_pre.{weight,bias}
    visual.transformer.resblocks.N.ln_1 / ln_2               LayerNorms (pre-LN blocks)
    visual.transformer.resblocks.N.attn.in_proj_weight       [3w, w]  rows = q | k | v
    visual.transformer.resblocks.N.attn.in_proj_bias         [3w]
    visual.transformer.resblocks.N.attn.out_proj.{weight,bias}
    visual.transformer.resblocks.N.mlp.c_fc / mlp.c_proj     Linear w -> m -> w
    visual.ln_post.{weight,bias}           applied to the class token
    visual.proj                            [w, D]   (pooled @ proj)
    token_embedding.weight                 [vocab, w]
    positional_embedding                   [ctx, w]
    transformer.resblocks.N...             as above
    ln_final.{weight,bias}
    text_projection                        [w, D]   (pooled @ text_projection)
    logit_scale                            []       (log of the softmax temperature)

Differences handled here: ``in_proj`` is split into ``q_proj / k_proj / v_proj``; ``proj`` and
``text_projection`` are matrices applied on the right, transformers' projections are
``nn.Linear`` (weight = transpose); the activation is not in the weights (open_clip: ``nn.GELU``
unless ``quick_gelu``; OpenAI-trained models use QuickGELU) and the head counts are not
inferable from shapes, so both come from the open_clip model config (``open_clip_config.json``
or a built-in preset, :data:`OPEN_CLIP_PRESETS`).  open_clip's text tower uses a causal mask and
pools at ``text.argmax(-1)`` (the end-of-text id 49407 is the largest id of the CLIP BPE
vocabulary, so that is the first EOT token); transformers' ``CLIPTextModel`` pools at the first
position equal to ``config.text_config.eos_token_id`` (or ``argmax`` when that is the legacy
value 2): the rewards set it to the tokenizer's ``eos_token_id``, the same position.  The
attention scale (head_dim^-0.5) and LayerNorm eps (1e-5) agree.

``python -m t2vturbo.rewards.open_clip_convert CKPT OUT_DIR [--arch ViT-H-14]`` writes a
transformers folder (``config.json`` + ``model.safetensors``) once, if preferred.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from transformers import CLIPConfig, CLIPModel

from ..cli import prog

__all__ = [
    "OPEN_CLIP_FILES",
    "OPEN_CLIP_PRESETS",
    "clip_config_from_open_clip",
    "clip_to_open_clip_state_dict",
    "load_open_clip_state_dict",
    "open_clip_model_cfg",
    "open_clip_to_clip_model",
    "open_clip_to_clip_state_dict",
]

#: open_clip checkpoint file names the rewards look for (HF hub names of laion/CLIP-* repos).
OPEN_CLIP_FILES: tuple[str, ...] = (
    "open_clip_pytorch_model.bin",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
)

#: open_clip ``model_configs/*.json`` facts (the fields that shapes cannot tell: heads and
#: activation); dims are read from the state dict.  ``head_width`` defaults to 64.
OPEN_CLIP_PRESETS: dict[str, dict[str, Any]] = {
    "ViT-B-32": {"vision_cfg": {"width": 768, "head_width": 64}, "text_cfg": {"width": 512, "heads": 8}},
    "ViT-B-16": {"vision_cfg": {"width": 768, "head_width": 64}, "text_cfg": {"width": 512, "heads": 8}},
    "ViT-L-14": {"vision_cfg": {"width": 1024, "head_width": 64}, "text_cfg": {"width": 768, "heads": 12}},
    "ViT-H-14": {"vision_cfg": {"width": 1280, "head_width": 80}, "text_cfg": {"width": 1024, "heads": 16}},
    "ViT-g-14": {"vision_cfg": {"width": 1408, "head_width": 88}, "text_cfg": {"width": 1024, "heads": 16}},
    "ViT-bigG-14": {
        "vision_cfg": {"width": 1664, "head_width": 104},
        "text_cfg": {"width": 1280, "heads": 20},
    },
}

# Keys that may appear in open_clip checkpoints and carry nothing we need.
_IGNORED = re.compile(r"^(attn_mask|visual\.attn_mask|text\.attn_mask)$")

_BLOCK = {  # open_clip resblock suffix -> transformers encoder-layer suffix
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_VISION = {  # open_clip (under visual.) -> transformers (under vision_model. unless absolute)
    "conv1.weight": "embeddings.patch_embedding.weight",
    "class_embedding": "embeddings.class_embedding",
    "positional_embedding": "embeddings.position_embedding.weight",
    "ln_pre.weight": "pre_layrnorm.weight",
    "ln_pre.bias": "pre_layrnorm.bias",
    "ln_post.weight": "post_layernorm.weight",
    "ln_post.bias": "post_layernorm.bias",
}
_TEXT = {  # open_clip (top level) -> transformers (under text_model.)
    "token_embedding.weight": "embeddings.token_embedding.weight",
    "positional_embedding": "embeddings.position_embedding.weight",
    "ln_final.weight": "final_layer_norm.weight",
    "ln_final.bias": "final_layer_norm.bias",
}


# --------------------------------------------------------------------------- loading


def load_open_clip_state_dict(file: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an open_clip checkpoint: ``.safetensors`` or a torch file holding the state dict,
    bare or as ``{"state_dict": ...}`` (HPSv2's format), keys optionally ``module.``-prefixed.

    Torch files are read with ``weights_only=True`` (no code from the file runs)."""
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"open_clip checkpoint {str(file)!r} does not exist")
    if file.suffix == ".safetensors":
        sd: Any = load_file(str(file))
    else:
        try:
            sd = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - re-raised with the path and what was expected
            raise RuntimeError(
                f"could not read {str(file)!r} as a weights-only torch checkpoint "
                f"(expected an open_clip state dict, bare or under 'state_dict'): {e}"
            ) from e
    if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping):
        raise ValueError(f"{str(file)!r} does not hold a state dict (got {type(sd).__name__})")
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            continue
        out[k[len("module.") :] if k.startswith("module.") else k] = v
    return out


def open_clip_model_cfg(cfg: str | Mapping[str, Any] | os.PathLike | None = "ViT-H-14") -> dict[str, Any]:
    """An open_clip model config as a dict: a preset name (:data:`OPEN_CLIP_PRESETS`), a path to
    ``open_clip_config.json`` (``{"model_cfg": ...}``) / a model-config JSON, or a dict."""
    if cfg is None:
        cfg = "ViT-H-14"
    if isinstance(cfg, str) and cfg in OPEN_CLIP_PRESETS:
        return json.loads(json.dumps(OPEN_CLIP_PRESETS[cfg]))
    if isinstance(cfg, (str, os.PathLike)):
        p = Path(cfg)
        if not p.is_file():
            raise ValueError(
                f"unknown open_clip architecture {str(cfg)!r}: not a preset ({', '.join(OPEN_CLIP_PRESETS)}) "
                "and not a JSON file"
            )
        cfg = json.loads(p.read_text())
    cfg = dict(cfg)
    return dict(cfg.get("model_cfg", cfg))


# --------------------------------------------------------------------------- config


def _prefix_layers(sd: Mapping[str, torch.Tensor], prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.")
    ids = {int(m.group(1)) for k in sd if (m := pat.match(k))}
    return max(ids) + 1 if ids else 0


def clip_config_from_open_clip(
    sd: Mapping[str, torch.Tensor],
    model_cfg: str | Mapping[str, Any] | os.PathLike | None = "ViT-H-14",
    *,
    eos_token_id: int | None = None,
    bos_token_id: int | None = None,
    pad_token_id: int | None = None,
):
    """:class:`~transformers.CLIPConfig` for an open_clip ViT CLIP state dict.

    Every dim is read from the tensor shapes; heads (``vision_cfg.width // head_width``,
    ``text_cfg.heads``) and the activation (``quick_gelu`` -> ``"quick_gelu"``, else ``"gelu"``)
    from ``model_cfg``.  Token ids default to the CLIP BPE vocabulary's (eos = vocab - 1).
    """
    cfg = open_clip_model_cfg(model_cfg)
    vcfg, tcfg = dict(cfg.get("vision_cfg", {})), dict(cfg.get("text_cfg", {}))
    act = "quick_gelu" if cfg.get("quick_gelu", False) else "gelu"
    for tower, c in (("vision_cfg", vcfg), ("text_cfg", tcfg)):
        for flag in (
            "attentional_pool",
            "embed_cls",
            "no_ln_pre",
            "proj_bias",
            "timm_model_name",
            "hf_model_name",
        ):
            if c.get(flag):
                raise NotImplementedError(f"open_clip {tower}.{flag} is not supported by the converter")
        if c.get("pool_type", "tok" if tower == "vision_cfg" else "argmax") not in ("tok", "argmax"):
            raise NotImplementedError(f"open_clip {tower}.pool_type={c['pool_type']!r} is not supported")
    need = ["visual.conv1.weight", "visual.positional_embedding", "visual.proj", "token_embedding.weight"]
    need += ["positional_embedding", "text_projection"]
    missing = [k for k in need if k not in sd]
    if missing:
        raise KeyError(f"not an open_clip ViT CLIP state dict: missing {missing}")

    v_width, _, patch, _ = sd["visual.conv1.weight"].shape
    n_pos = sd["visual.positional_embedding"].shape[0]
    grid = math.isqrt(n_pos - 1)
    if grid * grid != n_pos - 1:
        raise ValueError(f"visual.positional_embedding has {n_pos} rows: not 1 + a square number of patches")
    vocab, t_width = sd["token_embedding.weight"].shape
    context = sd["positional_embedding"].shape[0]
    proj_dim = sd["visual.proj"].shape[1]
    if sd["text_projection"].shape != (t_width, proj_dim):
        raise ValueError(f"text_projection {tuple(sd['text_projection'].shape)} != ({t_width}, {proj_dim})")
    head_width = int(vcfg.get("head_width", 64))
    if "width" in vcfg and int(vcfg["width"]) != v_width:
        raise ValueError(f"model config vision width {vcfg['width']} != checkpoint width {v_width}")
    if "width" in tcfg and int(tcfg["width"]) != t_width:
        raise ValueError(f"model config text width {tcfg['width']} != checkpoint width {t_width}")
    v_heads, t_heads = v_width // head_width, int(tcfg.get("heads", 8))
    if v_heads * head_width != v_width or t_width % t_heads:
        raise ValueError(
            f"heads do not divide widths: vision {v_width}/{head_width}, text {t_width}/{t_heads}"
        )

    eos = vocab - 1 if eos_token_id is None else eos_token_id
    text_config = {
        "vocab_size": vocab,
        "hidden_size": t_width,
        "intermediate_size": sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "num_hidden_layers": _prefix_layers(sd, ""),
        "num_attention_heads": t_heads,
        "max_position_embeddings": context,
        "hidden_act": act,
        "layer_norm_eps": 1e-5,
        "projection_dim": proj_dim,
        "eos_token_id": eos,
        "bos_token_id": eos - 1 if bos_token_id is None else bos_token_id,
        "pad_token_id": eos if pad_token_id is None else pad_token_id,
    }
    vision_config = {
        "hidden_size": v_width,
        "intermediate_size": sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "num_hidden_layers": _prefix_layers(sd, "visual."),
        "num_attention_heads": v_heads,
        "image_size": grid * patch,
        "patch_size": patch,
        "hidden_act": act,
        "layer_norm_eps": 1e-5,
        "projection_dim": proj_dim,
    }
    return CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=proj_dim)


# --------------------------------------------------------------------------- state dicts


def _convert_block(src: str, dst: str, sd: Mapping[str, torch.Tensor], out: dict, used: set) -> None:
    """One tower's resblocks ``{src}transformer.resblocks.N.*`` -> ``{dst}encoder.layers.N.*``."""
    for n in range(_prefix_layers(sd, src)):
        a, b = f"{src}transformer.resblocks.{n}.", f"{dst}encoder.layers.{n}."
        for k_src, k_dst in _BLOCK.items():
            out[b + k_dst] = sd[a + k_src]
            used.add(a + k_src)
        w, bias = sd[a + "attn.in_proj_weight"], sd[a + "attn.in_proj_bias"]
        used.update((a + "attn.in_proj_weight", a + "attn.in_proj_bias"))
        for name, wi, bi in zip(("q", "k", "v"), w.chunk(3, dim=0), bias.chunk(3, dim=0)):
            out[f"{b}self_attn.{name}_proj.weight"] = wi.contiguous()
            out[f"{b}self_attn.{name}_proj.bias"] = bi.contiguous()


def open_clip_to_clip_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an open_clip ViT CLIP state dict to transformers' ``CLIPModel`` keys.

    Raises :class:`KeyError` on keys it does not know (layer scale, attentional pooling, ...)
    rather than dropping them silently."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for k_src, k_dst in _VISION.items():
        out["vision_model." + k_dst] = sd["visual." + k_src]
        used.add("visual." + k_src)
    for k_src, k_dst in _TEXT.items():
        out["text_model." + k_dst] = sd[k_src]
        used.add(k_src)
    _convert_block("visual.", "vision_model.", sd, out, used)
    _convert_block("", "text_model.", sd, out, used)
    out["visual_projection.weight"] = sd["visual.proj"].t().contiguous()
    out["text_projection.weight"] = sd["text_projection"].t().contiguous()
    used.update(("visual.proj", "text_projection"))
    if "logit_scale" in sd:
        out["logit_scale"] = sd["logit_scale"].reshape(())
        used.add("logit_scale")
    unknown = sorted(k for k in sd if k not in used and not _IGNORED.match(k))
    if unknown:
        raise KeyError(
            f"open_clip keys the converter does not handle: {unknown[:10]}{' ...' if len(unknown) > 10 else ''}"
        )
    return out


def clip_to_open_clip_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`open_clip_to_clip_state_dict` (tests write tiny models in open_clip layout)."""
    out: dict[str, torch.Tensor] = {}
    for k_src, k_dst in _VISION.items():
        out["visual." + k_src] = sd["vision_model." + k_dst]
    for k_src, k_dst in _TEXT.items():
        out[k_src] = sd["text_model." + k_dst]
    for src, dst in (("visual.", "vision_model."), ("", "text_model.")):
        pat = re.compile(re.escape(dst) + r"encoder\.layers\.(\d+)\.")
        n_layers = max((int(m.group(1)) + 1 for k in sd if (m := pat.match(k))), default=0)
        for n in range(n_layers):
            a, b = f"{src}transformer.resblocks.{n}.", f"{dst}encoder.layers.{n}."
            for k_src, k_dst in _BLOCK.items():
                out[a + k_src] = sd[b + k_dst]
            out[a + "attn.in_proj_weight"] = torch.cat([sd[f"{b}self_attn.{x}_proj.weight"] for x in "qkv"])
            out[a + "attn.in_proj_bias"] = torch.cat([sd[f"{b}self_attn.{x}_proj.bias"] for x in "qkv"])
    out["visual.proj"] = sd["visual_projection.weight"].t().contiguous()
    out["text_projection"] = sd["text_projection.weight"].t().contiguous()
    if "logit_scale" in sd:
        out["logit_scale"] = sd["logit_scale"].reshape(())
    return out


def _materialize_position_ids(model: torch.nn.Module) -> None:
    """Non-persistent ``position_ids`` buffers (``arange``) left on the meta device by an empty init."""
    for mod in model.modules():
        buf = getattr(mod, "position_ids", None)
        if isinstance(buf, torch.Tensor) and buf.is_meta:
            mod.register_buffer(
                "position_ids", torch.arange(buf.shape[-1]).expand(buf.shape), persistent=False
            )
    left = [n for n, b in model.named_buffers() if b.is_meta]
    if left:
        raise RuntimeError(f"buffers left uninitialised after conversion: {left}")


def open_clip_to_clip_model(
    sd: Mapping[str, torch.Tensor],
    model_cfg: str | Mapping[str, Any] | os.PathLike | None = "ViT-H-14",
    *,
    eos_token_id: int | None = None,
    bos_token_id: int | None = None,
    pad_token_id: int | None = None,
    dtype: torch.dtype | None = torch.float32,
):
    """A transformers ``CLIPModel`` holding the weights of the open_clip state dict ``sd``.

    Built on the meta device and filled with ``load_state_dict(assign=True, strict=True)``
    (no random init of a 1B-parameter model)."""
    config = clip_config_from_open_clip(
        sd, model_cfg, eos_token_id=eos_token_id, bos_token_id=bos_token_id, pad_token_id=pad_token_id
    )
    new_sd = open_clip_to_clip_state_dict(sd)
    if "logit_scale" not in new_sd:
        new_sd["logit_scale"] = torch.tensor(config.logit_scale_init_value)
    if dtype is not None:
        new_sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in new_sd.items()}
    with torch.device("meta"):
        model = CLIPModel(config)
    model.load_state_dict(new_sd, strict=True, assign=True)
    _materialize_position_ids(model)
    return model.eval()


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog=prog("t2vturbo.rewards.open_clip_convert"),
        description="Convert an open_clip ViT CLIP checkpoint (e.g. HPS_v2.1_compressed.pt) to a transformers CLIPModel folder.",
    )
    p.add_argument("checkpoint", help="open_clip state dict (.pt/.bin/.safetensors)")
    p.add_argument("out_dir", help="output folder (config.json + model.safetensors)")
    p.add_argument(
        "--arch", default="ViT-H-14", help="preset name or open_clip_config.json (default ViT-H-14)"
    )
    args = p.parse_args(argv)
    model = open_clip_to_clip_model(load_open_clip_state_dict(args.checkpoint), args.arch)
    model.save_pretrained(args.out_dir)
    print(f"wrote {args.out_dir} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
