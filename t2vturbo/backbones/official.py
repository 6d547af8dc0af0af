"""The students of the public T2V-Turbo release, loaded as our students, and ours written in its v2 layout.

The release (github.com/Ji4chenLi/t2v-turbo) ships its students in three forms:

``unet_mg.pt`` / ``unet_no_mg.pt`` (T2V-Turbo-v2, VideoCrafter2)
    ``torch.save`` of the whole UNet state dict: bare keys (no ``model.diffusion_model.`` prefix), fp32, the
    teacher's 1484 tensors plus the student's ``time_cond_proj.weight`` [320, 256] and, with motion
    conditioning, ``motion_cond_proj.weight`` [320, 256] and ``combine_proj.weight`` [320, 640] (1487).
    :class:`~.vc2_unet.VC2UNet` has exactly these keys, so the file loads with ``strict=True``; the
    projection widths are read from the keys present (no motion keys: a student without eta).
``unet_lora.pt`` (T2V-Turbo v1, VideoCrafter2)
    A plain Python list ``[up_0, down_0, up_1, down_1, ...]`` of LoRA factors (rank 64, alpha 1), one pair
    per module whose class is exactly ``nn.Linear``, ``nn.Conv2d`` or ``nn.Conv3d`` (subclasses and the
    ``Conv1d`` of ``init_attn`` are not targets), in ``named_modules()`` order of the UNet built with
    ``time_cond_proj_dim=256`` and no motion: 575 modules, ``time_cond_proj`` among them (right after
    ``fps_embedding``). Merged into the teacher's weights: ``W += (up.flatten(1) @ down.flatten(1))
    .reshape(W.shape)``. The base ``time_cond_proj`` under the LoRA is in no file: the official code leaves
    it at PyTorch's random init, in training and again (a different draw) at every start of its demo, so
    the caller chooses it here (a tensor, or a seed for a reproducible draw of the same distribution).
``unet_lora.pt`` (T2V-Turbo v1, ModelScope)
    The same list (rank 32) over diffusers' ``UNet3DConditionModel(time_cond_proj_dim=256)``, whose
    ``TimestepEmbedding`` registers ``linear_1``, ``cond_proj``, ``linear_2`` in that order; its base
    ``cond_proj`` is random in the same way. (The list depends on the diffusers version it was trained with:
    versions whose layers were ``LoRACompatibleLinear`` / ``LoRACompatibleConv`` would have skipped them.)

Files are read with ``torch.load(weights_only=True, map_location="cpu")`` only: nothing here unpickles code.

Conditioning of the returned students (:class:`~.base.GuidedDenoiser`): ``w`` and ``eta`` are embedded as
the release does (sinusoid of value * 1000, 256 wide, sin first) and passed as ``timestep_cond`` /
``motion_cond``, so ``student(z_t, t, cond, w, eta)`` is the official UNet's output for those inputs; the
release embeds the guidance scale itself (LCM form, no -1) and eta only for t >= 1000 * (1 - percentage).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from .base import GuidedDenoiser
from .vc2_convert import UNET_PREFIX, read_state_dict
from .vc2_unet import VC2UNet, VC2UNetConfig
from .videocrafter2 import DEFAULT_FPS, VideoCrafter2Denoiser, _build, _strict_load

__all__ = [
    "EMBED_DIM",
    "LORA_CLASSES",
    "init_student_from_official",
    "load_official_modelscope_lora",
    "load_official_student",
    "lora_targets",
    "official_student_state_dict",
    "random_time_cond_proj",
    "read_official_file",
    "save_official_v2",
    "to_official_v2",
]

EMBED_DIM = 256  # width of the w / eta embeddings of every official student
#: the module classes a v1 LoRA list covers (exact classes, not subclasses)
LORA_CLASSES = (nn.Linear, nn.Conv2d, nn.Conv3d)
STUDENT_KEYS = ("time_cond_proj.weight", "motion_cond_proj.weight", "combine_proj.weight")
MOTION_KEYS = STUDENT_KEYS[1:]
OUR_STUDENT_PREFIX = "base.unet."  # GuidedDenoiser(VideoCrafter2Denoiser(VC2UNet)) keys
V2_FILES = "unet_mg.pt / unet_no_mg.pt (bare VideoCrafter2 UNet keys with time_cond_proj.weight)"
V1_FILE = "unet_lora.pt (a Python list [up_0, down_0, up_1, down_1, ...] of LoRA factors)"

Source = str | os.PathLike | Mapping | list | tuple


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def read_official_file(source: Source, what: str = "T2V-Turbo student"):
    """The object in an official file (a state dict or a LoRA list), or ``source`` itself when it is
    already one. ``torch.load(weights_only=True, map_location="cpu")`` (memory-mapped where possible);
    ``.safetensors`` files are read with safetensors."""
    if isinstance(source, (Mapping, list, tuple)):
        return source
    p = Path(source)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file {str(p)!r} does not exist; expected {V2_FILES} or {V1_FILE}")
    if p.suffix == ".safetensors":
        return load_file(str(p))
    try:
        try:
            return torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            return torch.load(p, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as e:  # noqa: BLE001 - re-raised with the file and what was expected
        raise RuntimeError(
            f"could not read {str(p)!r} with torch.load(weights_only=True): the file is damaged or holds more "
            f"than tensors (pickled classes), and t2vturbo never unpickles code. A {what} file is {V2_FILES} "
            f"or {V1_FILE}. Original error: {e}"
        ) from None


def _source_name(source) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else f"the given {type(source).__name__}"


def _is_file(source) -> bool:
    return isinstance(source, (str, os.PathLike))


def _unet_config(unet_config) -> VC2UNetConfig:
    if unet_config is None:
        return VC2UNetConfig()
    if isinstance(unet_config, VC2UNetConfig):
        return copy.deepcopy(unet_config)
    return VC2UNetConfig(**dict(unet_config))


def _tensors(sd: Mapping, what: str, source: str) -> dict[str, torch.Tensor]:
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{what} {source} holds non-tensor entries {bad[:5]}: expected a flat state dict")
    return dict(sd)


def _teacher_ckpt_error(source: str) -> ValueError:
    return ValueError(
        f"{source} is a VideoCrafter2 teacher checkpoint (model.ckpt layout: {UNET_PREFIX}*, first_stage_model.*, "
        f"cond_stage_model.model.*), not a T2V-Turbo student. A student is {V2_FILES} or {V1_FILE}; the teacher "
        "goes in base= (for a v1 LoRA list)"
    )


def _read_base(base, source: str) -> dict[str, torch.Tensor]:
    """The teacher UNet's state dict (bare keys) of ``base``: a ``model.ckpt`` / ``.safetensors`` path (read
    by :func:`~.vc2_convert.read_state_dict`), such a state dict, or a bare UNet state dict."""
    if base is None:
        raise ValueError(
            f"{source} is a v1 LoRA list: it holds only LoRA factors; pass base= the teacher's VideoCrafter2 "
            "model.ckpt (a path or its state dict), whose UNet weights the factors are merged into"
        )
    if isinstance(base, nn.Module):
        base = base.state_dict()
    sd = read_state_dict(base) if _is_file(base) else base
    if isinstance(sd.get("state_dict"), Mapping):
        sd = sd["state_dict"]
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if any(k.startswith(UNET_PREFIX) for k in sd):
        sd = {k[len(UNET_PREFIX) :]: v for k, v in sd.items() if k.startswith(UNET_PREFIX)}
    if not _is_file(base):  # the caller's tensors: never alias (nor merge into) them
        sd = {k: v.detach().clone() for k, v in sd.items()}
    return sd


def random_time_cond_proj(seed: int, out_features: int = 320, in_features: int = EMBED_DIM) -> torch.Tensor:
    """A base ``time_cond_proj`` weight [out, in] drawn like PyTorch's default ``nn.Linear`` init (the
    distribution of the official one, which no file stores), reproducibly from ``seed``."""
    w = torch.empty(out_features, in_features)
    nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=torch.Generator().manual_seed(int(seed)))
    return w


def _base_projection(time_cond_proj, shape: tuple[int, int], source: str, option: str | None) -> torch.Tensor:
    """The base projection weight under a v1 LoRA: ``time_cond_proj`` (a tensor, or an int seed).
    ``option``: how the caller names that setting in the error raised when it is missing."""
    default = f"time_cond_proj= (a [{shape[0]}, {shape[1]}] tensor, or an int seed for a reproducible draw of that init)"
    if time_cond_proj is None:
        raise ValueError(
            f"{source} is a v1 LoRA list, whose base time_cond_proj (the [{shape[0]}, {shape[1]}] weight under "
            "the LoRA) the official release stores in no file: it is PyTorch's random init there, drawn anew "
            f"each time its demo starts. Pass {option or default}"
        )
    if isinstance(time_cond_proj, bool) or not isinstance(time_cond_proj, (int, torch.Tensor)):
        raise TypeError(
            f"{option or 'time_cond_proj='} must be a tensor or an int seed, got {type(time_cond_proj).__name__}"
        )
    if isinstance(time_cond_proj, int):
        return random_time_cond_proj(time_cond_proj, *shape)
    if tuple(time_cond_proj.shape) != shape:
        raise ValueError(
            f"{option or 'time_cond_proj='} has shape {list(time_cond_proj.shape)}; expected {list(shape)}"
        )
    return time_cond_proj.detach().to(torch.float32).clone()


# ---------------------------------------------------------------------------------------------
# LoRA lists
# ---------------------------------------------------------------------------------------------
def lora_targets(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every module whose class is exactly ``nn.Linear``, ``nn.Conv2d`` or
    ``nn.Conv3d``, in ``named_modules()`` order: the modules a v1 LoRA list covers, in its order."""
    return [(n, m) for n, m in model.named_modules() if type(m) in LORA_CLASSES]


def _lora_deltas(lora, targets, source: str, model_desc: str) -> list[torch.Tensor]:
    """``up @ down`` (fp32, reshaped to each target's weight) of every pair of ``lora``, checked."""
    if not isinstance(lora, (list, tuple)):
        raise ValueError(f"{source} is not a v1 LoRA list (got {type(lora).__name__}); expected {V1_FILE}")
    n = len(targets)
    if len(lora) != 2 * n:
        raise ValueError(
            f"{source} is a list of {len(lora)} tensors; {model_desc} has {n} LoRA targets (modules of exact class "
            f"nn.Linear / nn.Conv2d / nn.Conv3d in named_modules() order), so its v1 LoRA list has {2 * n} "
            "tensors [up_0, down_0, up_1, down_1, ...]"
        )
    deltas = []
    for i, (name, mod) in enumerate(targets):
        up, down = lora[2 * i], lora[2 * i + 1]
        shape = tuple(mod.weight.shape)
        where = f"{source}: LoRA pair {i} (list entries {2 * i}, {2 * i + 1}) for {name} ({type(mod).__name__}, weight {list(shape)})"
        if not isinstance(up, torch.Tensor) or not isinstance(down, torch.Tensor):
            raise ValueError(
                f"{where}: entries must be tensors, got {type(up).__name__}, {type(down).__name__}"
            )
        r = up.shape[1] if up.ndim >= 2 else -1
        fits = (
            up.ndim == down.ndim == len(shape)
            and up.shape[0] == shape[0]
            and all(s == 1 for s in up.shape[2:])
            and down.shape[0] == r
            and tuple(down.shape[1:]) == shape[1:]
        )
        if not fits:
            raise ValueError(
                f"{where}: up {list(up.shape)} / down {list(down.shape)} do not fit; expected up [{shape[0]}, r"
                f"{', 1' * (len(shape) - 2)}] and down [r, {', '.join(map(str, shape[1:]))}]"
            )
        deltas.append((up.float().flatten(1) @ down.float().flatten(1)).reshape(shape))
    return deltas


# ---------------------------------------------------------------------------------------------
# VideoCrafter2 students
# ---------------------------------------------------------------------------------------------
def _v2_state(sd: dict, cfg: VC2UNetConfig, source: str) -> tuple[dict, VC2UNetConfig]:
    if "time_cond_proj.weight" not in sd:
        raise ValueError(
            f"{source} has no time_cond_proj.weight: it is no T2V-Turbo v2 student ({V2_FILES}, where "
            f"time_cond_proj.weight is [{cfg.model_channels}, {EMBED_DIM}]); a teacher UNet's state dict has "
            "none (pass a teacher as base= with a v1 LoRA list, or distil a student from it)"
        )
    tw = sd["time_cond_proj.weight"]
    if tw.ndim != 2 or tw.shape[0] != cfg.model_channels:
        raise ValueError(
            f"{source}: time_cond_proj.weight is {list(tw.shape)}; the UNet configuration has model_channels="
            f"{cfg.model_channels} (expected [{cfg.model_channels}, {EMBED_DIM}]; pass unet_config= for another size)"
        )
    have = [k for k in MOTION_KEYS if k in sd]
    if len(have) == 1:
        raise ValueError(f"{source} has {have[0]} without {[k for k in MOTION_KEYS if k not in have][0]}")
    mdim = int(sd["motion_cond_proj.weight"].shape[1]) if have else None
    if mdim is not None and mdim != tw.shape[1]:
        raise ValueError(
            f"{source}: motion_cond_proj takes {mdim}-wide embeddings, time_cond_proj {tw.shape[1]}; a student "
            "embeds w and eta with one width"
        )
    cfg = dataclasses.replace(cfg, time_cond_proj_dim=int(tw.shape[1]), motion_cond_proj_dim=mdim)
    return sd, cfg


def _v1_state(lora, base, time_cond_proj, cfg: VC2UNetConfig, source: str, option: str | None):
    cfg = dataclasses.replace(cfg, time_cond_proj_dim=EMBED_DIM, motion_cond_proj_dim=None)
    sd = _read_base(base, source)
    extra = [k for k in MOTION_KEYS if k in sd]
    if extra:
        raise ValueError(
            f"base= has {extra}: expected the teacher (VideoCrafter2 model.ckpt), not a v2 student"
        )
    shape = (cfg.model_channels, EMBED_DIM)
    if "time_cond_proj.weight" in sd and time_cond_proj is None:  # a base that has one (e.g. a v1 student)
        time_cond_proj = sd.pop("time_cond_proj.weight")
    sd.pop("time_cond_proj.weight", None)
    sd["time_cond_proj.weight"] = _base_projection(time_cond_proj, shape, source, option)
    targets = lora_targets(_build(VC2UNet, cfg))
    desc = "the official v1 VideoCrafter2 UNet (time_cond_proj_dim=256, no motion)"
    deltas = _lora_deltas(lora, targets, source, desc)
    for (name, _), delta in zip(targets, deltas, strict=True):
        key = f"{name}.weight"
        if key not in sd:
            raise ValueError(
                f"base= has no {key} (not the VideoCrafter2 teacher of this UNet configuration?)"
            )
        if tuple(sd[key].shape) != tuple(delta.shape):
            raise ValueError(f"base= {key} is {list(sd[key].shape)}, the LoRA target {list(delta.shape)}")
        sd[key] = sd[key].float() + delta
    return sd, cfg


def official_student_state_dict(
    checkpoint: Source,
    unet_config=None,
    *,
    base=None,
    time_cond_proj=None,
    option: str | None = None,
) -> tuple[dict[str, torch.Tensor], VC2UNetConfig]:
    """``(state dict, config)`` of the VideoCrafter2 student in ``checkpoint`` (see module docstring): the
    bare :class:`~.vc2_unet.VC2UNet` keys (a v1 LoRA list merged into ``base``), fp32, and the UNet
    configuration with the projection widths of the file. ``option`` names the base-projection setting in
    the error raised when a v1 list comes without one."""
    cfg = _unet_config(unet_config)
    source = _source_name(checkpoint)
    obj = read_official_file(checkpoint)
    if isinstance(obj, (list, tuple)):
        sd, cfg = _v1_state(obj, base, time_cond_proj, cfg, source, option)
    elif isinstance(obj, Mapping):
        if isinstance(obj.get("state_dict"), Mapping) or any(str(k).startswith(UNET_PREFIX) for k in obj):
            raise _teacher_ckpt_error(source)
        sd = _tensors(obj, "state dict", source)
        if sd and all(k.startswith(OUR_STUDENT_PREFIX) for k in sd):  # our GuidedDenoiser keys
            sd = {k[len(OUR_STUDENT_PREFIX) :]: v for k, v in sd.items()}
        if not _is_file(checkpoint):
            sd = {k: v.detach().clone() for k, v in sd.items()}
        sd, cfg = _v2_state(sd, cfg, source)
    else:
        raise ValueError(f"{source} holds a {type(obj).__name__}; expected {V2_FILES} or {V1_FILE}")
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, cfg


def load_official_student(
    checkpoint: Source,
    unet_config: VC2UNetConfig | dict | None = None,
    *,
    base=None,
    time_cond_proj: torch.Tensor | int | None = None,
    fps: int = DEFAULT_FPS,
) -> GuidedDenoiser:
    """An official VideoCrafter2 student as ours: ``GuidedDenoiser(VideoCrafter2Denoiser(VC2UNet))``, fp32,
    in eval mode, whose ``forward(z_t, t, cond, w, eta)`` is the official UNet's output with ``timestep_cond``
    = emb(w) and ``motion_cond`` = emb(eta) (eta None, or a student without motion: no motion_cond).

    ``checkpoint``: ``unet_mg.pt`` / ``unet_no_mg.pt`` (a path or the loaded state dict; loaded strictly,
    projection widths from its keys) or a v1 ``unet_lora.pt`` list, which needs ``base`` (the teacher's
    ``model.ckpt``: a path or its state dict) and ``time_cond_proj`` (the base projection under the LoRA,
    which the release does not store: a [C, 256] tensor or an int seed, :func:`random_time_cond_proj`).
    ``unet_config``: :class:`~.vc2_unet.VC2UNetConfig` fields (default: the official v2 configuration).
    ``fps``: the fps condition (T2V-Turbo samples with 8)."""
    sd, cfg = official_student_state_dict(checkpoint, unet_config, base=base, time_cond_proj=time_cond_proj)
    unet = _build(VC2UNet, cfg)
    _strict_load(unet, sd, "the T2V-Turbo student UNet", _source_name(checkpoint))
    motion = cfg.motion_cond_proj_dim is not None
    return GuidedDenoiser(
        VideoCrafter2Denoiser(unet, fps), embed_dim=cfg.time_cond_proj_dim, motion=motion
    ).eval()


def _vc2_unet(student, what: str = "student") -> VC2UNet:
    m = getattr(student, "module", student)  # a DeepSpeed / DDP wrapper
    if isinstance(m, GuidedDenoiser):
        m = m.base
    if isinstance(m, VideoCrafter2Denoiser):
        m = m.unet
    if not isinstance(m, VC2UNet):
        raise TypeError(
            f"the {what} is a {type(m).__name__}: official T2V-Turbo v2 files are VideoCrafter2 UNets "
            "(GuidedDenoiser(VideoCrafter2Denoiser(VC2UNet)), model.family=videocrafter2)"
        )
    return m


def init_student_from_official(
    student: nn.Module, checkpoint: Source, *, base=None, time_cond_proj=None, option: str | None = None
) -> list[str]:
    """Load an official student file into an existing VideoCrafter2 student (in place, its parameters keep
    their dtype and device). Conditioning weights the file lacks (``unet_no_mg.pt`` / a v1 list: the motion
    projections) keep their current values; their names are returned."""
    unet = _vc2_unet(student)
    cfg = dataclasses.replace(unet.config, time_cond_proj_dim=None, motion_cond_proj_dim=None)
    sd, _ = official_student_state_dict(
        checkpoint, cfg, base=base, time_cond_proj=time_cond_proj, option=option
    )
    source = _source_name(checkpoint)
    try:
        missing, unexpected = unet.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"{source} does not fit the student: {e}") from None
    other = [k for k in missing if k not in MOTION_KEYS]
    if other or unexpected:
        raise ValueError(
            f"{source} does not fit the student: {len(other)} missing {other[:5]}, {len(unexpected)} "
            f"unexpected {unexpected[:5]}"
        )
    return list(missing)


def to_official_v2(student: nn.Module) -> dict[str, torch.Tensor]:
    """Our VideoCrafter2 student as the official v2 ``unet_mg.pt`` state dict: ``VC2UNet.state_dict()`` as
    is (bare keys), fp32, contiguous, on the CPU. The official demo builds its UNet with both projection
    widths 256 and loads strictly, so it takes students with motion conditioning (``make_student``'s)."""
    unet = _vc2_unet(student)
    if unet.time_cond_proj is None:
        raise ValueError("this VC2UNet has no time_cond_proj: a teacher, not a T2V-Turbo student")
    sd = unet.state_dict()
    lora = [k for k in sd if "lora_" in k]
    if lora:
        raise ValueError(f"the student has unmerged LoRA adapters ({lora[:3]}): merge them first")
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in sd.items()}


def save_official_v2(student: nn.Module, path) -> Path:
    """``torch.save(to_official_v2(student), path)``: a file the official demo loads as ``unet_mg.pt``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save(to_official_v2(student), p)
    return p


# ---------------------------------------------------------------------------------------------
# ModelScope (v1)
# ---------------------------------------------------------------------------------------------
def load_official_modelscope_lora(lora: Source, base_unet, time_cond_proj: torch.Tensor | int | None = None):
    """The official v1 ModelScope student: ``GuidedDenoiser(UNet3DDenoiser(unet))`` (fp32, eval mode, no
    motion conditioning), with ``unet`` diffusers' ``UNet3DConditionModel`` of ``base_unet`` (the teacher: a
    module or a diffusers ``unet/`` folder) built with ``time_cond_proj_dim=256``, its weights plus the
    merged LoRA list ``lora`` (a path or the list). ``time_cond_proj``: the base ``time_embedding.cond_proj``
    weight [C, 256] or an int seed (no file stores it; a ``base_unet`` that has one provides it)."""
    from diffusers import UNet3DConditionModel

    from .unet3d import UNet3DDenoiser

    source = _source_name(lora)
    obj = read_official_file(lora, "T2V-Turbo ModelScope LoRA")
    if not isinstance(obj, (list, tuple)):
        raise ValueError(f"{source} is not a v1 LoRA list (got {type(obj).__name__}); expected {V1_FILE}")
    if isinstance(base_unet, (str, os.PathLike)):
        base_unet = UNet3DConditionModel.from_pretrained(base_unet)
    if not hasattr(base_unet, "config") or not hasattr(base_unet, "time_embedding"):
        raise TypeError(
            f"base_unet must be a diffusers UNet3DConditionModel (or its folder), got {type(base_unet)}"
        )
    sd = {k: v.detach().to(torch.float32).clone() for k, v in base_unet.state_dict().items()}
    c0 = base_unet.time_embedding.linear_1.in_features
    key = "time_embedding.cond_proj.weight"
    if key in sd:
        if sd[key].shape[1] != EMBED_DIM:
            raise ValueError(f"base_unet's {key} is {list(sd[key].shape)}; expected [{c0}, {EMBED_DIM}]")
        base_w = sd.pop(key)
        if time_cond_proj is None:
            time_cond_proj = base_w
    sd[key] = _base_projection(time_cond_proj, (c0, EMBED_DIM), source, None)
    config = {k: v for k, v in dict(base_unet.config).items() if not k.startswith("_")}
    with torch.device("meta"):
        unet = UNet3DConditionModel.from_config({**config, "time_cond_proj_dim": EMBED_DIM})
    missing, unexpected = unet.load_state_dict(sd, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(
            f"base_unet does not fit UNet3DConditionModel(time_cond_proj_dim=256): missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    for name, t in list(unet.named_parameters()) + list(unet.named_buffers()):
        if t.is_meta:
            raise ValueError(f"the ModelScope student's {name} was not loaded")
    targets = lora_targets(unet)
    desc = "the official v1 ModelScope UNet3DConditionModel(time_cond_proj_dim=256)"
    deltas = _lora_deltas(obj, targets, source, desc)
    with torch.no_grad():
        for (_, mod), delta in zip(targets, deltas, strict=True):
            mod.weight.add_(delta.to(mod.weight.dtype))
    unet.eval()
    return GuidedDenoiser(UNet3DDenoiser(unet), embed_dim=EMBED_DIM, motion=False).eval()
