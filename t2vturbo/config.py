"""Typed schema of the Hydra config, registered in Hydra's ConfigStore.

conf/config.yaml starts from ``base_config`` (:class:`RootConfig`) and every objective option from its
own schema (``objective/base_NAME``: :class:`ConsistencyDistillationConfig`, :class:`DiffusionConfig`,
:class:`RewardFinetuneConfig`), so Hydra checks keys and types while it composes: an unknown key (a typo
in a yaml file or an override) fails at once with the key's full name. Defaults are written here only;
the yaml files hold what differs from them.

OmegaConf 2.3 rejects ``typing.Literal`` annotations, so an enumerated field is declared
``Annotated[str, Literal[...]]`` (OmegaConf sees ``str``) and a bounded one ``Annotated[int, Range(...)]``;
:func:`validate` checks both for every field in one place (:func:`check_fields`), then the rules that
involve several fields.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Range:
    """``Annotated`` metadata of a numeric field: ``lo <= value`` (and ``value <= hi``); null values pass."""

    lo: float
    hi: float | None = None


# ---- model -----------------------------------------------------------------------------------


@dataclass
class TinyModelConfig:
    """The tiny random teacher built when ``model.path`` is null (tests, toy teacher training)."""

    # pixel_unshuffle: exact invertible 32x32x3 -> 48x8x8 "latent" | autoencoder_kl: a tiny diffusers VAE
    vae: Annotated[str, Literal["pixel_unshuffle", "autoencoder_kl"]] = "pixel_unshuffle"
    pixel_factor: int = 4  # pixel_unshuffle's downsampling factor
    latent_channels: int = 4  # autoencoder_kl's latent channels
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64])  # UNet widths per resolution
    layers_per_block: int = 1  # UNet resnet/attention layers per block
    attention_head_dim: int = 8  # UNet attention head size
    text_dim: int = 32  # width of the (frozen, random) CLIP text encoder
    # what the teacher predicts (the toy teacher: sample, i.e. x0)
    prediction_type: Annotated[str, Literal["epsilon", "v_prediction", "sample"]] = "epsilon"
    seed: int = 0  # seed of the random initialisation
    # unet3d: UNet3DConditionModel | motion: UNetMotionModel (frame-position-aware temporal attention)
    unet: Annotated[str, Literal["unet3d", "motion"]] = "unet3d"
    # Std of the (frozen, random) text encoder's token embeddings; null keeps CLIP's init (0.02), under
    # which "left" and "right" give nearly the same prompt embedding (docs/log/toy-teacher.md).
    text_token_std: float | None = None
    # pixel_unshuffle only: latents = (pixels - vae_shift) * vae_scaling_factor (the crowd teacher: the data's
    # mean and 1 / std, so its latents have unit variance)
    vae_shift: float = 0.0
    vae_scaling_factor: float = 1.0
    extra_words: list[str] = field(default_factory=list)  # appended to the tokenizer's toy vocabulary


@dataclass
class LoraConfig:
    """LoRA on the trained network (merged into it at export)."""

    enabled: bool = False  # false: full fine-tune
    rank: int = 64  # r
    alpha: int = 64  # scale alpha / r
    # module name suffixes, or a preset: [attention] | [attention_ff_conv] (LCM-LoRA)
    target_modules: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])


@dataclass
class ModelConfig:
    """The teacher (and the student built from it)."""

    # unet3d (= modelscope, zeroscope): diffusers UNet3D layout | videocrafter2: official checkpoint |
    # wan: Wan2.1 flow matching, diffusers layout (docs/TEACHERS.md)
    family: Annotated[str, Literal["unet3d", "modelscope", "zeroscope", "videocrafter2", "wan"]] = "unet3d"
    # Local teacher folder. null -> build the tiny random config below (tests, toy teacher training).
    path: str | None = None
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)  # used only when path is null
    lora: LoraConfig = field(default_factory=LoraConfig)  # LoRA on the trained network (student or teacher)
    num_frames: int = 8  # frames per training clip
    height: int = 32  # pixel height of the training clips
    width: int = 32  # pixel width of the training clips
    fps: int = 8  # family=videocrafter2 only: the fps condition of teacher and student (T2V-Turbo-v2: 8)
    # family=videocrafter2 only: CLIP tokenizer folder (null: beside the checkpoint)
    tokenizer_path: str | None = None
    # teacher and student attention: sdpa (F.scaled_dot_product_attention) | eager (softmax(QK^T s) V)
    attention: Annotated[str, Literal["sdpa", "eager"]] = "sdpa"
    # the public architecture `python -m t2vturbo.plan` builds (without weights) when model.path is unset
    # (t2vturbo/plan/archs.py: videocrafter2_512_v2, modelscope_1.7b, wan2.1_t2v_1.3b, wan2.1_t2v_14b)
    arch: str | None = None


# ---- data ------------------------------------------------------------------------------------


@dataclass
class SourceConfig:
    """One source of a ``data.kind=mixture`` (t2vturbo/data/mixture.py)."""

    name: str = "source"  # unique among data.sources; written into each sample's meta
    urls: str | None = None  # as data.urls
    weight: Annotated[float, Range(0)] = 1.0  # sampling probability = weight / sum of weights
    use_reward: bool = True  # reward terms apply to this source's samples (AND the sample json's flag)
    use_motion_guide: bool = True  # motion guidance applies to this source's samples (AND the json's flag)
    reward_caption_key: str | None = None  # json field the rewards score against (e.g. short_caption)
    frame_stride: int | None = None  # null: data.frame_stride
    target_fps: float | None = None  # null: data.target_fps


@dataclass
class DataConfig:
    """Training clips (t2vturbo/data/)."""

    # toy: rendered on the fly | shards: webdataset (mp4 + txt + json) | mixture: weighted shard sources
    kind: Annotated[str, Literal["toy", "shards", "mixture"]] = "toy"
    urls: str | None = None  # shards: brace pattern, list file entries, or pipe: URLs
    sources: list[SourceConfig] = field(default_factory=list)  # mixture: weighted shard sources
    resampled: bool = True  # shards: infinite stream (exact resume); false: one pass
    shuffle_buffer: int = 64  # shards: samples in the shuffle buffer
    frame_stride: int | None = None  # shards: take every k-th frame (null: from target_fps, else 1)
    target_fps: float | None = None  # shards: resample clips to this frame rate (null: as stored)
    max_skip_fraction: float = 0.2  # stop with a clear error above this corrupt-sample rate
    max_pixels: int | None = 4096 * 2160  # shards: skip clips with larger frames (width * height; null: any)
    max_duration_s: float | None = 600.0  # shards: skip clips longer than this, in seconds (null: any)
    num_samples: int = 1_000_000  # epoch length of the toy world / the nominal length of a shard stream
    # which toy world -- toy: one shape (t2vturbo/data/toy.py) | crowd: one to three balls at random places and
    # speeds (t2vturbo/data/crowd.py), where few-step sampling is hard. kind=toy renders that world's clips;
    # with shards it names the world the toy shards hold (the run's report and ToyBench read it)
    world: Annotated[str, Literal["toy", "crowd"]] = "toy"
    textured: bool = False  # toy only: textured shapes and backgrounds
    # toy only: draw directions from this subset (null: all). A curriculum for the toy teacher: an uneven
    # subset first breaks the left/right symmetry that stalls direction learning (docs/log/toy-teacher.md).
    directions: Annotated[list[str] | None, Literal["left", "right", "up", "down", "still"]] = None
    caption_dropout: float = 0.1  # diffusion objective only (CFG training): empty-prompt probability
    num_workers: int = 0  # DataLoader workers per rank
    # Two-stage mode: the shards were written by `python -m t2vturbo.precompute` and carry per clip the
    # stored z_t, teacher cond/uncond outputs, motion score and prompt embedding ({key}.pre.safetensors);
    # training runs PrecomputedConsistencyDistillation (no teacher forward / backward).
    precomputed: bool = False
    validation_prompts: list[str] = field(  # prompts of the validation samples (train.eval_every)
        default_factory=lambda: [
            "a red circle moving left",
            "a blue square moving up",
            "a green triangle moving right",
        ]
    )


# ---- objectives: one schema each, picked by conf/objective/NAME.yaml (objective=NAME) ---------


@dataclass
class ObjectiveConfig:
    """Base of the objective schemas; ``name`` says which one (:data:`OBJECTIVES`)."""

    name: str = MISSING  # consistency_distillation | diffusion | reward_finetune


@dataclass
class StudentSolverConfig(ObjectiveConfig):
    """The grid, guidance range and boundary condition a few-step student is trained and sampled on
    (the trainer writes them into the student's export)."""

    num_ddim_timesteps: int = 200  # N: the teacher's DDIM grid (200: t = 4, 9, ..., 999)
    w_min: float = 5.0  # guidance scale per sample ~ U[w_min, w_max] (the student's w input)
    w_max: float = 15.0  # upper end of the w range (the paper's [5, 15])
    # CFG form: lcm: cond + w (cond - uncond) | imagen: uncond + w (cond - uncond)  (lcm w == imagen w + 1)
    guidance_form: Annotated[str, Literal["lcm", "imagen"]] = "lcm"
    sigma_data: float = 0.5  # boundary condition c_skip / c_out (LCM)
    timestep_scaling: float = 10.0  # c_skip / c_out are taken at timestep_scaling * t
    # start the student from: a student export folder, or an official T2V-Turbo student file (VideoCrafter2:
    # unet_mg.pt / unet_no_mg.pt / v1 unet_lora.pt, or an export's unet_official.pt); null: the teacher's weights
    init_from: str | None = None
    # a v1 unet_lora.pt holds no base time_cond_proj (random in the official code): the seed of its random draw
    init_from_time_cond_proj_seed: int | None = None


@dataclass
class ConsistencyDistillationConfig(StudentSolverConfig):
    """Latent consistency distillation (T2V-Turbo-v2 settings; t2vturbo/train/objectives.py)."""

    name: Annotated[str, Literal["consistency_distillation"]] = "consistency_distillation"
    skip: Annotated[int, Range(1)] = 1  # k: grid points per solver step
    loss: Annotated[str, Literal["huber", "l2"]] = "huber"  # huber: pseudo-Huber with c = huber_c
    huber_c: float = 0.001  # c of the pseudo-Huber loss sqrt(d^2 + c^2) - c
    # consistency target network: auto (LoRA: student, as the official code and LCM-LoRA; full fine-tune:
    # ema) | ema | student (the no-grad student)
    target: Annotated[str, Literal["auto", "ema", "student"]] = "auto"
    ema_decay: Annotated[float, Range(0.0, 1.0)] = 0.95  # target=ema


@dataclass
class DiffusionConfig(ObjectiveConfig):
    """Plain denoising training of a teacher (eps / v / x0 prediction from the model's scheduler config)."""

    name: Annotated[str, Literal["diffusion"]] = "diffusion"
    # t ~ U{min_timestep .. T-1}; > 0 trains only the noisier end (e.g. fine-tuning what a toy teacher
    # decides from the prompt alone, docs/log/toy-teacher.md)
    min_timestep: Annotated[int, Range(0)] = 0


@dataclass
class RewardFinetuneConfig(StudentSolverConfig):
    """VADER mode: fine-tune by backpropagating rewards through K sampling steps
    (t2vturbo/train/reward_finetune.py). The solver fields are the student's (as distilled)."""

    name: Annotated[str, Literal["reward_finetune"]] = "reward_finetune"
    w_min: float = 2.0  # w per sample ~ U[w_min, w_max] (student embedding / teacher CFG scale)
    w_max: float = 6.0  # upper end of the w range
    # student: K-step consistency sampler | teacher: K-step DDIM + CFG
    finetune: Annotated[str, Literal["student", "teacher"]] = "student"
    sample_steps: Annotated[int, Range(1)] = 4  # K sampling steps per training step
    grad_steps: int | None = None  # K_grad: backpropagate through the last K_grad steps (null: all K)


OBJECTIVES: dict[str, type[ObjectiveConfig]] = {
    "consistency_distillation": ConsistencyDistillationConfig,
    "diffusion": DiffusionConfig,
    "reward_finetune": RewardFinetuneConfig,
}


# ---- guidance, rewards, training ---------------------------------------------------------------


@dataclass
class GuidanceConfig:
    """Motion guidance (docs/MOTION_GUIDANCE.md): eps_hat = eps_cfg - lam sqrt(1 - sqrt(ab_t)) dE/dz_t
    for grid index n >= (1 - tau) N; E = energy_scale * mean_l(layer_scale * masked MSE).
    Classifier-free guidance's w is configured in objective/."""

    motion: bool = False  # online motion guidance in the teacher step (consistency distillation only)
    # student's eta input (motion-strength embedding); with motion on it is given to guided samples only
    # (0 elsewhere), as the reference feeds its motion scale to the student: keep eta = lam
    eta: float = 0.0
    # lambda as in the reference code (--motion_gs); paper's 500 = lam * energy_scale * layer_scale
    lam: float = 0.05
    # guided fraction of the grid, the noisier end (--percentage)
    tau: Annotated[float, Range(0.0, 1.0)] = 0.5
    # invert: DDIM inversion of the clip to t (n+1 teacher passes) | noise: a_t z0 + s_t eps_fixed (1 pass)
    reference: Annotated[str, Literal["invert", "noise"]] = "invert"
    # grid points per inversion step (1 = reference; larger: cheaper)
    inversion_stride: Annotated[int, Range(1)] = 1
    # null: decoder temporal self-attentions (up_blocks.*.temp_attentions.*.transformer_blocks.0.attn1,
    # 9 layers in a ModelScope/VideoCrafter2-shaped UNet); [all]; or a list of names / fnmatch globs
    layers: list[str] | None = None
    topk: Annotated[int, Range(1)] = 1  # mask: top-k entries per query row of the reference map
    energy_scale: float = 100.0  # --temp_loss_scale
    layer_scale: float = 100.0  # per-layer factor (compute_temp_loss)


@dataclass
class RewardConfig:
    """loss = L_cd - sum_i weights[i] * R_i  (see t2vturbo/train/reward_term.py)."""

    weights: dict[str, float] = field(default_factory=dict)  # beta_i per reward (t2vturbo.rewards list)
    paths: dict[str, str] = field(default_factory=dict)  # local weight folders per reward
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra constructor arguments per reward
    image_frames: int = 2  # frames per clip for image rewards
    frame_mode: Annotated[str, Literal["random", "strided"]] = "random"  # how image rewards pick their frames
    video_frames: int | None = None  # strided frames for video rewards (null: all)
    only_flagged: bool = True  # use the batch's `use_reward` flags when the data provides them
    decode_checkpointing: bool = True  # recompute the VAE decode in backward (memory)
    image_ranks: list[int] | None = None  # ranks that run image rewards (null: every rank)
    video_ranks: list[int] | None = None  # ranks that run video rewards (null: every rank)


@dataclass
class TrainConfig:
    """Optimisation, checkpoints, validation samples and the final export (t2vturbo/train/trainer.py)."""

    max_steps: int = 200  # optimizer steps
    micro_batch_size: int = 4  # clips per rank per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-4  # AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW betas
    clip_grad: float = 1.0  # gradient norm clipping
    precision: Annotated[str, Literal["fp32", "bf16"]] = "fp32"  # networks' dtype (bf16: DeepSpeed bf16)
    gradient_checkpointing: bool = False  # recompute the trained network's blocks in backward (memory)
    compile: bool = False  # torch.compile student, teacher and target in place (t2vturbo/train/compile.py)
    log_every: int = 10  # steps between metric lines
    ckpt_every: int = 100  # steps between checkpoints (0: only at the end); a re-run resumes from the newest
    # a re-run in the same output_dir: auto resumes when the checkpoint's model/objective/data/seed/global batch
    # equal this run's (else refuses, naming the keys) | force resumes anyway | never starts over (the old
    # checkpoints move to OUTPUT_DIR/replaced-<time>/)
    resume: Annotated[str, Literal["auto", "force", "never"]] = "auto"
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    eval_every: int = 0  # steps between validation samples of a student (0: none)
    eval_steps: list[int] = field(default_factory=lambda: [1, 2, 4, 8])  # sampling steps of validation
    eval_guidance: float | None = None  # w for validation samples; null: (w_min + w_max) / 2
    max_nan_skips: int = 20  # stop after this many non-finite losses
    export: bool = True  # write the final model (student export or teacher folder)
    export_dir: str | None = None  # where the final model goes (null: OUTPUT_DIR/export)
    # also write a UNet3D student with a diffusers VAE as a diffusers pipeline (EXPORT/diffusers: our
    # T2VTurboPipeline + LCMScheduler, guidance_scale = w as the timestep_cond; t2vturbo/export_pipeline.py)
    export_diffusers: bool = True
    # a Hugging Face Hub repo id (user/name): upload the student export there at the end (t2vturbo/hub.py; needs
    # `hf auth login` or HF_TOKEN). null: no upload (later: python -m t2vturbo.hub push EXPORT_DIR REPO_ID)
    push_to_hub: str | None = None
    progress: bool = True  # progress bar on rank 0


@dataclass
class PrecomputeConfig:
    """``python -m t2vturbo.precompute`` (stage 1 of the two-stage mode); unused by training."""

    out: str | None = None  # output folder of the precomputed shards (required by precompute)
    dtype: Annotated[str, Literal["fp32", "fp16", "bf16"]] = "fp16"  # storage of the float tensors
    shard_size: int = 0  # clips per output shard (0: one output shard per source shard)
    # this process handles the contiguous chunk shard_index of the source shard list cut into num_shard_lists
    # chunks: one process per chunk (e.g. a Slurm array: precompute.shard_index=$SLURM_ARRAY_TASK_ID)
    shard_index: Annotated[int, Range(0)] = 0
    num_shard_lists: Annotated[int, Range(1)] = 1  # number of chunks (processes)
    batch_size: Annotated[int, Range(1)] = 1  # clips per teacher call
    device: str | None = None  # null: cuda if available, else cpu


@dataclass
class PlanConfig:
    """``python -m t2vturbo.plan``: the cluster a plan is made for; unused by training."""

    gpus: Annotated[int, Range(1)] = 8  # data-parallel ranks (the world size the plan is for)
    gpu_mem_gib: Annotated[float, Range(1)] = 80.0  # usable memory per GPU (GiB)
    peak_tflops: Annotated[float, Range(1)] = 989.0  # dense bf16 peak per GPU (H100 SXM: 989; A100: 312)
    mfu: Annotated[float, Range(0.01, 1.0)] = 0.4  # model FLOPs utilisation assumed for the step time
    measured_step_s: float | None = None  # a measured step time (s): the plan reports the MFU it implies
    max_micro_batch: Annotated[int, Range(1)] = 16  # largest micro-batch the what-if table tries
    # what-ifs that need another traced step (the others are exact from one trace): checkpointing on/off
    what_if_checkpointing: bool = True
    # the optimizer step as torch runs it on a GPU (foreach: all tensors at once); false: the loop (torch's CPU
    # default, what bench/plan_vs_measured.py checks against on a CPU)
    foreach_optimizer: bool = True
    out: str | None = None  # where plan.md / plan.json go (null: OUTPUT_DIR/plan)


@dataclass
class RootConfig:
    """The whole config (``base_config``): what ``validate`` returns and ``train/`` reads."""

    experiment_name: str = "toy"  # names the run (output dir, Slurm job)
    # re-running the same command on the same output_dir resumes from its newest checkpoint
    output_dir: str = "outputs/${experiment_name}"
    seed: int = 0  # model init, per-position draws (t, noise, w), data order
    # the teacher (group model/). model.path is MISSING here, not ModelConfig's null: OmegaConf's merge keeps a
    # destination value over a source's ???, so a default of null would swallow a model option's
    # `path: ???` (model=modelscope without model.path would build a random full-size teacher). The default
    # option conf/model/tiny_unet3d.yaml sets path: null; validate() gives a partial config without
    # model.path the same null.
    model: ModelConfig = field(default_factory=lambda: ModelConfig(path=MISSING))
    data: DataConfig = field(default_factory=DataConfig)  # training clips (group data/)
    objective: ObjectiveConfig = MISSING  # one of OBJECTIVES, chosen by objective=NAME (objective.name)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)  # motion guidance (group guidance/)
    reward: RewardConfig = field(default_factory=RewardConfig)  # reward terms (group reward/)
    train: TrainConfig = field(default_factory=TrainConfig)  # optimisation, checkpoints, validation, export
    deepspeed: dict[str, Any] = field(default_factory=dict)  # merged over the trainer's DeepSpeed config
    precompute: PrecomputeConfig = field(default_factory=PrecomputeConfig)  # t2vturbo.precompute only
    plan: PlanConfig = field(default_factory=PlanConfig)  # t2vturbo.plan only


def register_configs() -> None:
    """``base_config`` (the root schema) and ``objective/base_NAME`` (one schema per objective)."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=RootConfig)
    for name, schema in OBJECTIVES.items():
        cs.store(group="objective", name=f"base_{name}", node=schema)


register_configs()


# ---- validation --------------------------------------------------------------------------------


def check_fields(node: DictConfig, prefix: str = "") -> None:
    """Check every ``Literal`` / :class:`Range` annotation of the schema under ``node`` (recursively,
    list elements included); the error names the full key and the allowed values."""
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return
    hints = typing.get_type_hints(schema, include_extras=True)
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        if OmegaConf.is_missing(node, f.name):
            continue
        value = node[f.name]
        values = list(value) if isinstance(value, ListConfig) else [value]
        for rule in getattr(hints[f.name], "__metadata__", ()):
            for v in values:
                if v is None:
                    continue
                if typing.get_origin(rule) is Literal and v not in typing.get_args(rule):
                    choices = ", ".join(map(repr, typing.get_args(rule)))
                    raise ConfigError(f"{key}={v!r}: expected one of {choices}")
                if isinstance(rule, Range) and not (rule.lo <= v and (rule.hi is None or v <= rule.hi)):
                    bound = f">= {rule.lo}" if rule.hi is None else f"in [{rule.lo}, {rule.hi}]"
                    raise ConfigError(f"{key}={v} must be {bound}")
        for i, v in enumerate(values):
            if isinstance(v, DictConfig):
                check_fields(v, f"{key}[{i}]." if isinstance(value, ListConfig) else f"{key}.")


def _typed(raw: DictConfig) -> DictConfig:
    """``raw`` merged into the schema, the objective's schema chosen by ``objective.name``."""
    obj = raw.get("objective") or {}
    name = obj.get("name", "consistency_distillation")
    if name not in OBJECTIVES:
        raise ConfigError(f"objective.name={name!r}: expected one of {', '.join(map(repr, OBJECTIVES))}")
    fields = {n: {f.name for f in dataclasses.fields(s)} for n, s in OBJECTIVES.items()}
    for key in obj:
        users = [n for n in OBJECTIVES if key in fields[n]]
        if users and key not in fields[name]:  # a key of another objective (unknown keys: the merge below)
            raise ConfigError(
                f"objective.{key}={obj[key]!r} is used by objective.name={' or '.join(users)} only "
                f"(got {name!r}); objective=NAME picks the objective"
            )
    schema = OmegaConf.structured(RootConfig)
    schema.objective = OmegaConf.structured(OBJECTIVES[name])
    try:
        merged = OmegaConf.merge(schema, raw)
        OmegaConf.resolve(merged)
    except OmegaConfBaseException as e:  # omegaconf's errors carry full_key
        key = getattr(e, "full_key", None)
        raise ConfigError(f"invalid config key {key!r}: {e}".replace("\n", " ")) from None
    return merged


def validate(cfg: DictConfig | dict) -> DictConfig:
    """The typed, resolved config (a DictConfig over :class:`RootConfig`) of a composed Hydra config or of
    a partial plain dict (the rest from the defaults; as the default model option is tiny_unet3d, a missing
    ``model.path`` is null there: the tiny random teacher). Unknown keys, wrong types and values outside a
    field's ``Literal`` / :class:`Range` raise ConfigError naming the key; so does a ``model.path`` left at
    ``???`` by a model option (model=modelscope, videocrafter2, wan2_1_t2v_1_3b or a user's own); then the
    cross-field rules."""
    raw = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg)
    raw.pop("hydra", None)
    # A config without a model.path key (a partial dict) takes it from the default model option,
    # conf/model/tiny_unet3d.yaml: path: null, the tiny random teacher. A composed Hydra config always has the
    # key; ??? (MISSING) there means that its model option requires a path (the root schema's default).
    model = raw.get("model")
    if model is None:
        raw.model = {"path": None}
    elif isinstance(model, DictConfig) and "path" not in model.keys():  # `in model` is False for ??? too
        model.path = None
    merged = _typed(raw)
    check_fields(merged)
    if OmegaConf.is_missing(merged.model, "path"):
        raise ConfigError(
            f"model.path is missing (???): the chosen model option (model.family={merged.model.family!r}) "
            "needs a teacher: model.path=/local/teacher/folder (docs/TEACHERS.md); model.path=null builds "
            "the tiny random teacher"
        )
    o, d, g = merged.objective, merged.data, merged.guidance
    if "init_from" in o and o.init_from_time_cond_proj_seed is not None and o.init_from is None:
        raise ConfigError("objective.init_from_time_cond_proj_seed is used with objective.init_from only")
    if "w_min" in o and o.w_min > o.w_max:
        raise ConfigError(f"objective.w_min={o.w_min} > objective.w_max={o.w_max}")
    if o.name == "reward_finetune":
        if not any(float(b) != 0.0 for b in merged.reward.weights.values()):
            raise ConfigError(
                "objective=reward_finetune optimises the rewards: set reward weights "
                "(e.g. reward=toy, or reward.weights.hpsv2=1.0)"
            )
        if o.grad_steps is not None and not 1 <= o.grad_steps <= o.sample_steps:
            raise ConfigError(
                f"objective.grad_steps={o.grad_steps} must be in [1, objective.sample_steps="
                f"{o.sample_steps}] (or null)"
            )
        if o.init_from is not None and o.finetune != "student":
            raise ConfigError(
                "objective.init_from is a student (an export folder or an official T2V-Turbo student file): "
                "it needs objective.finetune=student"
            )
        if g.motion or d.precomputed:
            raise ConfigError("objective=reward_finetune uses neither guidance.motion nor data.precomputed")
    if d.kind == "shards" and not d.urls:
        raise ConfigError(
            "data.kind=shards needs data.urls (e.g. data.urls='/data/toy/toy-{000000..000009}.tar')"
        )
    if d.kind == "mixture":
        if not d.sources:
            raise ConfigError("data.kind=mixture needs data.sources: a list of {name, urls, weight, ...}")
        names = [s.name for s in d.sources]
        if len(set(names)) != len(names):
            raise ConfigError(f"data.sources names must be unique, got {names}")
        for i, s in enumerate(d.sources):
            if not s.urls:
                raise ConfigError(f"data.sources[{i}] ({s.name}) needs urls")
        if not sum(s.weight for s in d.sources) > 0:
            raise ConfigError("data.sources: the weights sum to 0")
    elif d.sources:
        raise ConfigError(f"data.sources is only used with data.kind=mixture (data.kind={d.kind!r})")
    if d.precomputed and (d.kind not in ("shards", "mixture") or o.name != "consistency_distillation"):
        raise ConfigError(
            "data.precomputed=true needs data.kind=shards or mixture (the output of python -m t2vturbo.precompute) "
            "and objective.name=consistency_distillation"
        )
    if g.motion and o.name != "consistency_distillation":
        raise ConfigError("guidance.motion=true needs objective.name=consistency_distillation")
    p = merged.precompute
    if not p.shard_index < p.num_shard_lists:
        raise ConfigError(
            f"precompute.shard_index={p.shard_index} not in [0, num_shard_lists={p.num_shard_lists})"
        )
    if o.name == "consistency_distillation" and o.target == "auto":  # LCM-LoRA / T2V-Turbo: LoRA -> student
        o.target = "student" if merged.model.lora.enabled else "ema"
    return merged
