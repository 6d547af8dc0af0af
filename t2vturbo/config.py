"""Typed schema of the Hydra config. Every group is checked against it before any heavy work, so
an unknown key (a typo in a yaml file or an override) fails at once with the key's full name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf


@dataclass
class TinyModelConfig:
    vae: str = "pixel_unshuffle"  # pixel_unshuffle | autoencoder_kl
    pixel_factor: int = 4
    latent_channels: int = 4
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64])
    layers_per_block: int = 1
    attention_head_dim: int = 8
    text_dim: int = 32
    prediction_type: str = "epsilon"
    seed: int = 0
    unet: str = "unet3d"  # unet3d (UNet3DConditionModel) | motion (UNetMotionModel: frame-position-aware temporal attention)
    # Std of the (frozen, random) text encoder's token embeddings; null keeps CLIP's init (0.02), under
    # which "left" and "right" give nearly the same prompt embedding (docs/BENCHMARKS.md, "The toy teacher").
    text_token_std: float | None = None


@dataclass
class LoraConfig:
    enabled: bool = False
    rank: int = 64
    alpha: int = 64
    target_modules: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])


@dataclass
class ModelConfig:
    family: str = "unet3d"
    # Local teacher folder. null -> build the tiny random config below (tests, toy teacher training).
    path: str | None = None
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    num_frames: int = 8
    height: int = 32
    width: int = 32
    # family=videocrafter2 only: the fps condition given to teacher and student (T2V-Turbo-v2: 8) and
    # the CLIP tokenizer folder (null: tokenizer/ beside the checkpoint).
    fps: int = 8
    tokenizer_path: str | None = None


@dataclass
class SourceConfig:
    """One source of a ``data.kind=mixture`` (t2vturbo/data/mixture.py)."""

    name: str = "source"
    urls: str | None = None  # as data.urls
    weight: float = 1.0  # sampling probability = weight / sum of weights
    use_reward: bool = True  # reward terms apply to this source's samples (AND the sample json's flag)
    use_motion_guide: bool = True  # motion guidance applies to this source's samples (AND the json's flag)
    reward_caption_key: str | None = None  # json field the rewards score against (e.g. short_caption)
    frame_stride: int | None = None  # null: data.frame_stride
    target_fps: float | None = None  # null: data.target_fps


@dataclass
class DataConfig:
    kind: str = "toy"  # toy (rendered on the fly) | shards (webdataset: mp4 + txt + json) | mixture
    urls: str | None = None  # shards: brace pattern, list file entries, or pipe: URLs
    sources: list[SourceConfig] = field(default_factory=list)  # mixture: weighted shard sources
    resampled: bool = True  # shards: infinite stream (exact resume)
    shuffle_buffer: int = 64
    frame_stride: int | None = None
    target_fps: float | None = None
    max_skip_fraction: float = 0.2  # stop with a clear error above this corrupt-sample rate
    num_samples: int = 1_000_000
    textured: bool = False
    # toy only: draw directions from this subset (null: all). A curriculum for the toy teacher: an uneven
    # subset first breaks the left/right symmetry that stalls direction learning (docs/BENCHMARKS.md).
    directions: list[str] | None = None
    caption_dropout: float = 0.1  # diffusion objective only (CFG training)
    num_workers: int = 0
    # Two-stage mode: the shards were written by `python -m t2vturbo.precompute` and carry per clip the
    # stored z_t, teacher cond/uncond outputs, motion score and prompt embedding ({key}.pre.safetensors);
    # training runs PrecomputedConsistencyDistillation (no teacher forward / backward).
    precomputed: bool = False
    validation_prompts: list[str] = field(
        default_factory=lambda: ["a red circle moving left", "a blue square moving up", "a green triangle moving right"]
    )


@dataclass
class ObjectiveConfig:
    name: str = "consistency_distillation"  # consistency_distillation | diffusion | reward_finetune (VADER mode)
    num_ddim_timesteps: int = 200
    skip: int = 1  # grid points per solver step (k)
    w_min: float = 5.0
    w_max: float = 15.0
    guidance_form: str = "lcm"  # lcm: cond + w(cond-uncond); imagen: uncond + w(cond-uncond)
    loss: str = "huber"  # huber | l2
    huber_c: float = 0.001
    target: str = "auto"  # auto (LoRA: student, full fine-tune: ema) | ema | student (no-grad student)
    ema_decay: float = 0.95
    sigma_data: float = 0.5
    timestep_scaling: float = 10.0
    # diffusion (teacher training): t ~ U{min_timestep .. T-1}; > 0 trains only the noisier end
    # (e.g. fine-tuning what a toy teacher decides from the prompt alone, docs/BENCHMARKS.md)
    min_timestep: int = 0
    # reward_finetune (t2vturbo/train/reward_finetune.py)
    finetune: str = "student"  # student (consistency sampler) | teacher (DDIM + CFG)
    init_from: str | None = None  # student: a student export folder to start from (null: the teacher's weights)
    sample_steps: int = 4  # K sampling steps per training step
    grad_steps: int | None = None  # K_grad: backpropagate through the last K_grad steps (null: all K)


@dataclass
class GuidanceConfig:
    """Motion guidance (docs/MOTION_GUIDANCE.md): eps_hat = eps_cfg - lam sqrt(1 - sqrt(ab_t)) dE/dz_t
    for grid index n >= (1 - tau) N; E = energy_scale * mean_l(layer_scale * masked MSE)."""

    motion: bool = False  # online motion guidance in the teacher step (consistency distillation only)
    eta: float = 0.0  # student's eta input; with motion on it is given to guided samples only (0 elsewhere)
    lam: float = 0.05  # lambda as in the reference code (paper's 500 = lam * energy_scale * layer_scale)
    tau: float = 0.5  # guided fraction of the grid (the noisier end)
    reference: str = "invert"  # invert (DDIM inversion of the clip to t) | noise (a_t z0 + s_t eps_fixed)
    inversion_stride: int = 1  # grid points per inversion step
    layers: list[str] | None = None  # null: decoder temporal attn1; [all]; or names / fnmatch globs
    topk: int = 1
    energy_scale: float = 100.0
    layer_scale: float = 100.0


@dataclass
class RewardConfig:
    """loss = L_cd - sum_i weights[i] * R_i  (see t2vturbo/train/reward_term.py)."""

    weights: dict[str, float] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)  # local weight folders per reward
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra constructor arguments per reward
    image_frames: int = 2  # frames per clip for image rewards
    frame_mode: str = "random"  # random | strided (image rewards)
    video_frames: int | None = None  # strided frames for video rewards (null: all)
    only_flagged: bool = True  # use the batch's `use_reward` flags when the data provides them
    decode_checkpointing: bool = True
    image_ranks: list[int] | None = None  # null: every rank runs image rewards
    video_ranks: list[int] | None = None


@dataclass
class TrainConfig:
    max_steps: int = 200
    micro_batch_size: int = 4
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    clip_grad: float = 1.0
    precision: str = "fp32"  # fp32 | bf16
    gradient_checkpointing: bool = False
    log_every: int = 10
    ckpt_every: int = 100
    keep_checkpoints: int = 2
    eval_every: int = 0
    eval_steps: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    eval_guidance: float | None = None  # w for validation samples; default (w_min + w_max) / 2
    max_nan_skips: int = 20
    export: bool = True
    export_dir: str | None = None  # where the final model goes (default: OUTPUT_DIR/export)
    # also write a UNet3D student with a diffusers VAE as a diffusers pipeline (EXPORT/diffusers,
    # TextToVideoSDPipeline + LCMScheduler, w folded in; t2vturbo/export_pipeline.py)
    export_diffusers: bool = True
    progress: bool = True


@dataclass
class RootConfig:
    experiment_name: str = "toy"
    output_dir: str = "outputs/toy"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    deepspeed: dict[str, Any] = field(default_factory=dict)


class ConfigError(ValueError):
    pass


def validate(cfg: DictConfig | dict) -> DictConfig:
    """Merge into the typed schema; unknown keys and wrong types raise ConfigError naming the key."""
    raw = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)) if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    raw.pop("hydra", None)
    schema = OmegaConf.structured(RootConfig)
    try:
        merged = OmegaConf.merge(schema, raw)
    except Exception as e:  # omegaconf's errors carry full_key
        key = getattr(e, "full_key", None)
        raise ConfigError(f"invalid config key {key!r}: {e}".replace("\n", " ")) from None
    o = merged.objective
    if o.name not in ("consistency_distillation", "diffusion", "reward_finetune"):
        raise ConfigError(f"objective.name={o.name!r}: expected consistency_distillation, diffusion or reward_finetune")
    if o.name == "reward_finetune":
        if o.finetune not in ("student", "teacher"):
            raise ConfigError(f"objective.finetune={o.finetune!r}: expected 'student' or 'teacher'")
        if not any(float(b) != 0.0 for b in merged.reward.weights.values()):
            raise ConfigError("objective=reward_finetune optimises the rewards: set reward weights "
                              "(e.g. reward=toy, or reward.weights.hpsv2=1.0)")
        if o.sample_steps < 1 or (o.grad_steps is not None and not 1 <= o.grad_steps <= o.sample_steps):
            raise ConfigError(f"objective.sample_steps={o.sample_steps} must be >= 1 and objective.grad_steps="
                              f"{o.grad_steps} in [1, sample_steps] (or null)")
        if o.init_from is not None and o.finetune != "student":
            raise ConfigError("objective.init_from is a student export: it needs objective.finetune=student")
        if merged.guidance.motion or merged.data.precomputed:
            raise ConfigError("objective=reward_finetune uses neither guidance.motion nor data.precomputed")
    if o.min_timestep != 0 and o.name != "diffusion":
        raise ConfigError(f"objective.min_timestep={o.min_timestep} is used by objective.name=diffusion only "
                          f"(got {o.name!r})")
    if o.min_timestep < 0:
        raise ConfigError(f"objective.min_timestep={o.min_timestep} must be >= 0")
    if o.target not in ("auto", "ema", "student"):
        raise ConfigError(f"objective.target={o.target!r}: expected 'auto', 'ema' or 'student'")
    if merged.data.kind not in ("toy", "shards", "mixture"):
        raise ConfigError(f"data.kind={merged.data.kind!r}: expected toy, shards or mixture")
    if merged.data.kind == "shards" and not merged.data.urls:
        raise ConfigError("data.kind=shards needs data.urls (e.g. data.urls='/data/toy/toy-{000000..000009}.tar')")
    if merged.data.kind == "mixture":
        srcs = merged.data.sources
        if not srcs:
            raise ConfigError("data.kind=mixture needs data.sources: a list of {name, urls, weight, ...}")
        names = [s.name for s in srcs]
        if len(set(names)) != len(names):
            raise ConfigError(f"data.sources names must be unique, got {names}")
        for i, s in enumerate(srcs):
            if not s.urls:
                raise ConfigError(f"data.sources[{i}] ({s.name}) needs urls")
            if not s.weight >= 0:
                raise ConfigError(f"data.sources[{i}] ({s.name}): weight={s.weight} must be >= 0")
        if not sum(s.weight for s in srcs) > 0:
            raise ConfigError("data.sources: the weights sum to 0")
    elif merged.data.sources:
        raise ConfigError(f"data.sources is only used with data.kind=mixture (data.kind={merged.data.kind!r})")
    if merged.data.precomputed and (merged.data.kind not in ("shards", "mixture") or o.name != "consistency_distillation"):
        raise ConfigError(
            "data.precomputed=true needs data.kind=shards or mixture (the output of python -m t2vturbo.precompute) "
            "and objective.name=consistency_distillation"
        )
    if merged.train.precision not in ("fp32", "bf16"):
        raise ConfigError(f"train.precision={merged.train.precision!r}: expected fp32 or bf16")
    if not 0.0 <= o.ema_decay <= 1.0:
        raise ConfigError(f"objective.ema_decay={o.ema_decay} must be in [0, 1]")
    if o.w_min > o.w_max:
        raise ConfigError(f"objective.w_min={o.w_min} > objective.w_max={o.w_max}")
    g = merged.guidance
    if g.reference not in ("invert", "noise"):
        raise ConfigError(f"guidance.reference={g.reference!r}: expected 'invert' or 'noise'")
    if not 0.0 <= g.tau <= 1.0:
        raise ConfigError(f"guidance.tau={g.tau} must be in [0, 1]")
    if g.topk < 1 or g.inversion_stride < 1:
        raise ConfigError(f"guidance.topk={g.topk} and guidance.inversion_stride={g.inversion_stride} must be >= 1")
    if g.motion and o.name != "consistency_distillation":
        raise ConfigError("guidance.motion=true needs objective.name=consistency_distillation")
    if o.target == "auto":  # LCM-LoRA / T2V-Turbo: LoRA -> no-grad student target; full fine-tune -> EMA
        o.target = "student" if merged.model.lora.enabled else "ema"
    return merged
