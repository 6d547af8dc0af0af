"""Typed schema of ``conf/curate.yaml`` + ``conf/curate_recipe/*.yaml``.

Every key is checked against these dataclasses before any heavy work: an unknown key (a typo in a
recipe yaml or a ``+key=value`` override) or a wrong type fails at once with the key's full name
(:class:`ConfigError`).  Paths of model weights are checked here too, with the expected layout in
the message.  docs/DATA.md ("Curation") documents every key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

__all__ = [
    "CLIP_LAYOUT",
    "AESTHETIC_LAYOUT",
    "CAPTIONER_LAYOUT",
    "ConfigError",
    "CurateConfig",
    "RecipeConfig",
    "check_model_path",
    "validate",
]

#: Scores a filter threshold or ``dedup.keep`` can refer to.
SCORE_NAMES = ("motion", "text_area", "aesthetic", "clip_similarity")

CLIP_LAYOUT = (
    "a transformers CLIPModel folder as written by CLIPModel.save_pretrained / a hub snapshot "
    "(config.json + model.safetensors or pytorch_model.bin) with its tokenizer files "
    "(tokenizer.json, or vocab.json + merges.txt), e.g. a local copy of openai/clip-vit-large-patch14"
)
AESTHETIC_LAYOUT = (
    "the LAION improved-aesthetic-predictor MLP weights: a .safetensors file, or a .pth/.pt state dict "
    "(loaded with torch.load(weights_only=True)), with keys layers.{0,2,4,6,7}.{weight,bias} = "
    "Linear D->1024 (Dropout) ->128 (Dropout) ->64 (Dropout) ->16 ->1, D = the CLIP projection dim "
    "(768 for ViT-L/14), e.g. sac+logos+ava1-l14-linearMSE.pth"
)
CAPTIONER_LAYOUT = (
    "a transformers image-to-text model folder (save_pretrained layout: config.json + weights, its "
    "image processor preprocessor_config.json and tokenizer files), loadable with "
    "AutoModelForImageTextToText, e.g. a local copy of Salesforce/blip-image-captioning-base"
)


class ConfigError(ValueError):
    """An invalid curation config (unknown key, bad value, missing weights)."""


# --------------------------------------------------------------------------- recipe


@dataclass
class ScenesConfig:
    threshold: float = 27.0  # PySceneDetect ContentDetector threshold (HSV content change, 0-255)
    min_scene_len: float = 0.5  # seconds; shorter scenes are merged by the detector
    backend: str = "pyav"  # pyav | opencv (PySceneDetect video backend)


@dataclass
class ClipsConfig:
    min_seconds: float = 2.0  # pieces shorter than this are dropped (too_short)
    max_seconds: float = 10.0  # longer scenes are split into consecutive pieces of at most this


@dataclass
class MotionConfig:
    size: int = 128  # short side (pixels) of the grey analysis frames (never upscaled)
    num_pairs: int = 8  # frame pairs per clip (evenly spaced)
    gap_seconds: float = 0.125  # pair spacing: max(1, round(gap_seconds * fps)) frames


@dataclass
class OcrConfig:
    enabled: bool = True
    num_frames: int = 3  # evenly spaced frames per clip; the score is the max over them
    engine_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to RapidOCR(**engine_kwargs)


@dataclass
class ClipScoreConfig:
    num_frames: int = 4  # evenly spaced frames per clip for the aesthetic and CLIP-similarity scores
    batch_size: int = 32  # frames per CLIP forward


@dataclass
class PhashConfig:
    num_frames: int = 3  # evenly spaced frames per clip
    hash_size: int = 8  # imagehash.phash hash_size (hash_size**2 bits per frame)


@dataclass
class ScoresConfig:
    motion: MotionConfig = field(default_factory=MotionConfig)
    ocr: OcrConfig = field(default_factory=OcrConfig)
    clip: ClipScoreConfig = field(default_factory=ClipScoreConfig)
    phash: PhashConfig = field(default_factory=PhashConfig)


@dataclass
class FilterConfig:  # null = that filter is off
    min_motion: float | None = None
    max_motion: float | None = None
    max_text_area: float | None = None
    min_aesthetic: float | None = None
    min_clip_similarity: float | None = None


@dataclass
class DedupConfig:
    enabled: bool = True
    max_distance: float = 6.0  # mean per-frame Hamming distance <= this -> near duplicate
    keep: str = "first"  # first (input order) | a score name: keep the highest-scored of each group


@dataclass
class CaptionConfig:
    allow_empty: bool = False  # keep clips without any caption (empty .txt)
    model_mode: str = "missing"  # with models.captioner: missing (only uncaptioned clips) | always
    max_new_tokens: int = 30
    num_beams: int = 1
    batch_size: int = 8


@dataclass
class OutputConfig:
    shard_size: int = 1000  # samples per tar shard
    shard_prefix: str = "clips"  # shard names: {prefix}-{chunk:05d}-{shard:06d}.tar
    max_short_side: int | None = 512  # downscale so the short side is at most this (null: keep)
    crf: int = 18  # x264 constant rate factor
    preset: str = "medium"  # x264 preset


@dataclass
class RecipeConfig:
    name: str = "default"
    scenes: ScenesConfig = field(default_factory=ScenesConfig)
    clips: ClipsConfig = field(default_factory=ClipsConfig)
    scores: ScoresConfig = field(default_factory=ScoresConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


# --------------------------------------------------------------------------- root


@dataclass
class ChunkConfig:
    index: int = 0
    count: int = 1


@dataclass
class ModelsConfig:  # local weights; null = that score / the captioner is off
    clip: str | None = None
    aesthetic: str | None = None
    captioner: str | None = None


@dataclass
class CurateConfig:
    experiment_name: str = "curate"  # Slurm job name: t2vturbo-${experiment_name} (hydra/launcher=slurm)
    input: str = MISSING  # a folder (recursive) or a list file (.txt paths / .jsonl {"path","caption"})
    output: str = MISSING  # shards + index files
    work_dir: str | None = None  # stage files; null: {output}/_work (one sub-folder per chunk)
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    device: str = "cpu"  # torch device of the CLIP / aesthetic / captioning models
    progress: bool = True  # tqdm bars
    curate_recipe: RecipeConfig = field(default_factory=RecipeConfig)


# --------------------------------------------------------------------------- validation


def check_model_path(what: str, path: str | os.PathLike, layout: str, *, is_dir: bool) -> Path:
    """``path`` as a Path, or :class:`FileNotFoundError` naming it and the expected layout."""
    p = Path(path).expanduser()
    if is_dir:
        if not p.is_dir():
            raise FileNotFoundError(f"{what}={str(path)!r}: no such directory; expected {layout}")
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"{what}={str(path)!r}: no config.json in it; expected {layout}")
    elif not p.is_file():
        raise FileNotFoundError(f"{what}={str(path)!r}: no such file; expected {layout}")
    return p


def validate(cfg: DictConfig | dict, *, check_paths: bool = True) -> DictConfig:
    """Merge ``cfg`` into :class:`CurateConfig`; raise :class:`ConfigError` naming the bad key."""
    if isinstance(cfg, DictConfig):
        raw = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    else:
        raw = OmegaConf.create(cfg)
    raw.pop("hydra", None)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(CurateConfig), raw)
    except Exception as e:  # omegaconf errors carry full_key
        key = getattr(e, "full_key", None)
        msg = str(e).split("\n")[0]
        raise ConfigError(f"invalid config key {key!r}: {msg}") from None
    for key in ("input", "output"):
        if OmegaConf.is_missing(merged, key):
            raise ConfigError(f"{key} is required (e.g. input=/raw/videos output=/data/shards)")
    c, r = merged.chunk, merged.curate_recipe
    if not 0 <= c.index < c.count:
        raise ConfigError(
            f"need 0 <= chunk.index < chunk.count, got chunk.index={c.index} chunk.count={c.count}"
        )
    if r.scenes.backend not in ("pyav", "opencv"):
        raise ConfigError(f"curate_recipe.scenes.backend={r.scenes.backend!r}: expected pyav or opencv")
    if not r.scenes.min_scene_len >= 0:
        raise ConfigError(f"curate_recipe.scenes.min_scene_len={r.scenes.min_scene_len} must be >= 0")
    if not 0 < r.clips.min_seconds <= r.clips.max_seconds:
        raise ConfigError(
            f"need 0 < curate_recipe.clips.min_seconds <= max_seconds, got {r.clips.min_seconds}, "
            f"{r.clips.max_seconds}"
        )
    s = r.scores
    for name, v in (
        ("scores.motion.size", s.motion.size),
        ("scores.motion.num_pairs", s.motion.num_pairs),
        ("scores.ocr.num_frames", s.ocr.num_frames),
        ("scores.clip.num_frames", s.clip.num_frames),
        ("scores.clip.batch_size", s.clip.batch_size),
        ("scores.phash.num_frames", s.phash.num_frames),
        ("scores.phash.hash_size", s.phash.hash_size),
        ("caption.max_new_tokens", r.caption.max_new_tokens),
        ("caption.num_beams", r.caption.num_beams),
        ("caption.batch_size", r.caption.batch_size),
        ("output.shard_size", r.output.shard_size),
    ):
        if v < 1:
            raise ConfigError(f"curate_recipe.{name}={v} must be >= 1")
    if s.phash.hash_size < 2:
        raise ConfigError(f"curate_recipe.scores.phash.hash_size={s.phash.hash_size} must be >= 2")
    if not s.motion.gap_seconds > 0:
        raise ConfigError(f"curate_recipe.scores.motion.gap_seconds={s.motion.gap_seconds} must be > 0")
    if r.output.max_short_side is not None and r.output.max_short_side < 2:
        raise ConfigError(
            f"curate_recipe.output.max_short_side={r.output.max_short_side} must be >= 2 or null"
        )
    if not 0 <= r.output.crf <= 51:
        raise ConfigError(f"curate_recipe.output.crf={r.output.crf} must be in [0, 51]")
    if not r.output.shard_prefix or any(ch in r.output.shard_prefix for ch in "/\\. {}"):
        raise ConfigError(
            f"curate_recipe.output.shard_prefix={r.output.shard_prefix!r}: no '/', '.', spaces or braces"
        )
    if r.caption.model_mode not in ("missing", "always"):
        raise ConfigError(
            f"curate_recipe.caption.model_mode={r.caption.model_mode!r}: expected missing or always"
        )
    if r.dedup.keep != "first" and r.dedup.keep not in SCORE_NAMES:
        raise ConfigError(
            f"curate_recipe.dedup.keep={r.dedup.keep!r}: expected first or one of {SCORE_NAMES}"
        )

    m, f = merged.models, r.filter
    if m.aesthetic is not None and m.clip is None:
        raise ConfigError("models.aesthetic needs models.clip (the MLP scores CLIP image embeddings)")
    available = {
        "motion": True,
        "text_area": bool(s.ocr.enabled),
        "aesthetic": m.aesthetic is not None,
        "clip_similarity": m.clip is not None,
    }
    how = {
        "text_area": "curate_recipe.scores.ocr.enabled=true",
        "aesthetic": "models.clip and models.aesthetic",
        "clip_similarity": "models.clip",
    }
    for key, score in (
        ("max_text_area", "text_area"),
        ("min_aesthetic", "aesthetic"),
        ("min_clip_similarity", "clip_similarity"),
    ):
        if f[key] is not None and not available[score]:
            raise ConfigError(
                f"curate_recipe.filter.{key} is set but the {score} score is off (set {how[score]})"
            )
    if r.dedup.keep != "first" and not available[r.dedup.keep]:
        raise ConfigError(
            f"curate_recipe.dedup.keep={r.dedup.keep!r} but the {r.dedup.keep} score is off (set {how[r.dedup.keep]})"
        )

    if check_paths:
        if not Path(merged.input).exists():
            raise ConfigError(f"input={merged.input!r}: no such file or directory")
        try:
            if m.clip is not None:
                check_model_path("models.clip", m.clip, CLIP_LAYOUT, is_dir=True)
            if m.aesthetic is not None:
                check_model_path("models.aesthetic", m.aesthetic, AESTHETIC_LAYOUT, is_dir=False)
            if m.captioner is not None:
                check_model_path("models.captioner", m.captioner, CAPTIONER_LAYOUT, is_dir=True)
        except FileNotFoundError as e:
            raise ConfigError(str(e)) from None
    return merged
