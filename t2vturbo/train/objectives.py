"""Training objectives behind one protocol, and their registry.

An objective is built once from the config and a backbone (``build_objective(cfg, backbone, ctx)``) and
holds what it trains (``module``, plus an ``ema`` copy where the target is an EMA network); the trainer
wraps ``module`` in DeepSpeed and calls ``objective.loss(engine, batch) -> (loss, logs)`` once per
micro-batch. Registered objectives (``objective.name``):

* ``consistency_distillation`` -- :class:`ConsistencyDistillation`, the T2V-Turbo-v2 step (this file);
* ``diffusion`` -- :class:`DiffusionTraining`, plain denoising training of a (toy) teacher;
* ``reward_finetune`` -- :class:`~t2vturbo.train.reward_finetune.RewardFinetune`, VADER mode.

A new objective is a class with that protocol and a builder registered with ``@register("name")`` (plus
its config dataclass in :mod:`t2vturbo.config`).

The whole consistency-distillation step is :meth:`ConsistencyDistillation.loss`; the augmented teacher
solver it calls lives in :mod:`t2vturbo.train.teacher` (online teacher, or stored teacher outputs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..config import ConfigError
from ..diffusion import Parameterisation, consistency_loss, training_target
from ..guidance import MotionGuidance
from ..student_export import StudentExport
from .draws import Draws, draw, sample_generator
from .ema import EMA
from .lora import add_lora, mark_trainable
from .reward_finetune import RewardFinetune
from .reward_term import RewardTerm
from .teacher import OnlineTeacher, SolverStep, StoredTeacher

__all__ = [
    "OBJECTIVES",
    "ConsistencyDistillation",
    "DiffusionTraining",
    "Draws",
    "Objective",
    "RunContext",
    "build_objective",
    "draw",
    "register",
    "sample_generator",
]

log = logging.getLogger("t2vturbo")


# ---- the protocol and the registry --------------------------------------------------------------------
@dataclass
class RunContext:
    """What an objective needs of the run besides the config: where it runs and its seed."""

    rank: int = 0
    world: int = 1
    device: Any = "cpu"
    dtype: torch.dtype = torch.float32
    seed: int = 0


class Objective(Protocol):
    module: nn.Module  # what the optimiser trains (wrapped in the DeepSpeed engine by the trainer)
    ema: EMA | None  # the EMA target network, updated by the trainer after each optimiser step
    trains_student: bool  # the module is a student (consistency sampler, student export) or a teacher

    def loss(self, net, batch: dict) -> tuple[torch.Tensor, dict]: ...


OBJECTIVES: dict[str, Callable[[Any, Any, RunContext], Objective]] = {}


def register(name: str):
    def deco(fn):
        OBJECTIVES[name] = fn
        return fn

    return deco


def build_objective(cfg, backbone, ctx: RunContext) -> Objective:
    """The objective named by ``cfg.objective.name``, with its trainable module built."""
    try:
        builder = OBJECTIVES[cfg.objective.name]
    except KeyError:
        raise ConfigError(
            f"objective.name={cfg.objective.name!r}: available: {', '.join(OBJECTIVES)}"
        ) from None
    return builder(cfg, backbone, ctx)


def init_student(module, init_from, backbone, time_cond_proj_seed=None) -> None:
    """Load ``init_from`` into the fresh student ``module``: a student export folder, or an official T2V-Turbo
    student file (VideoCrafter2 only: ``unet_mg.pt`` / ``unet_no_mg.pt`` / v1 ``unet_lora.pt`` merged into this
    teacher with a base ``time_cond_proj`` drawn from ``time_cond_proj_seed``, or our ``unet_official.pt``;
    t2vturbo/backbones/official.py)."""
    p = Path(init_from)
    if not p.exists():
        raise FileNotFoundError(
            f"objective.init_from={str(init_from)!r} does not exist; expected a student export folder "
            "(t2vturbo_student.json + student.safetensors) or an official T2V-Turbo student file (unet_mg.pt, "
            "unet_no_mg.pt, unet_lora.pt, or an export's unet_official.pt)"
        )
    if p.is_dir():
        StudentExport.resolve(p).load_into(module, teacher_path=getattr(backbone, "model_dir", None))
        return
    from ..backbones.official import init_student_from_official
    from ..backbones.videocrafter2 import VideoCrafter2Backbone

    if not isinstance(backbone, VideoCrafter2Backbone):
        raise ConfigError(
            f"objective.init_from={str(init_from)!r} is a file (an official T2V-Turbo student): those are "
            f"VideoCrafter2 UNets and need model.family=videocrafter2, not a {type(backbone).__name__} teacher "
            "(a student export folder works for every family)"
        )
    kept = init_student_from_official(
        module,
        p,
        base=backbone.teacher.unet,
        time_cond_proj=time_cond_proj_seed,
        option="objective.init_from_time_cond_proj_seed=SEED (an int: a reproducible draw of that random init)",
    )
    log.info(
        "student initialised from %s%s",
        p,
        f" ({', '.join(kept)} not in it: kept at their random init)" if kept else "",
    )


def student_module(cfg, backbone, init_from=None) -> nn.Module:
    """A trainable student of ``backbone``: equal to the teacher, or loaded from ``init_from`` (a student
    export folder or an official student file, :func:`init_student`); with LoRA adapters when
    ``model.lora.enabled`` (only they and the w/eta projections train)."""
    module = backbone.make_student()
    if init_from:
        init_student(module, init_from, backbone, cfg.objective.get("init_from_time_cond_proj_seed"))
    lcfg = cfg.model.lora
    if lcfg.enabled:
        add_lora(module.base, lcfg.rank, lcfg.alpha, lcfg.target_modules)
    mark_trainable(module, lcfg.enabled)
    return module


def reward_term(cfg, backbone, ctx: RunContext) -> RewardTerm:
    term = RewardTerm(cfg.reward, backbone, cfg.seed, ctx.rank, ctx.world, ctx.device)
    # The reward term decodes a subset of *latent* frames as a clip; with a temporally compressing causal
    # VAE (Wan: 4 frames per latent frame) that is not a subset of the clip's frames.
    factor = getattr(backbone, "temporal_factor", 1)
    if factor > 1 and term.active:
        kinds = {r.kind for r in term.rewards.values()}
        if "image" in kinds or ("video" in kinds and term.cfg.video_frames is not None):
            raise ConfigError(
                f"rewards with a temporally compressed VAE (factor {factor}, model.family={cfg.model.family}) "
                "need the whole clip decoded: use video rewards with reward.video_frames=null; image rewards "
                "and strided reward.video_frames would decode a subset of latent frames, not of the clip's frames"
            )
    if ctx.rank == 0:
        log.info(
            "rewards %s (image on ranks %s, video on ranks %s)",
            term.betas,
            cfg.reward.image_ranks or "all",
            cfg.reward.video_ranks or "all",
        )
    return term


# ---- consistency distillation ----------------------------------------------------------------------
class ConsistencyDistillation:
    """Latent consistency distillation with an augmented (CFG, optionally motion-guided) teacher solver.

    One step, for clip latents z0 and prompt embedding c (every family: ``param`` gives (a_t, s_t) and
    (x0, eps), so the same lines are DDIM for eps/v/x0 teachers and Euler for flow teachers):
      1. n ~ U{0..N-1}, eps ~ N(0, I), w ~ U[w_min, w_max];  z_{t_{n+k}} = a z0 + s eps
      2. teacher (no grad, ``self.solver``): cond/uncond outputs -> (x0, eps) each; CFG in the LCM form
         x_hat = cond + w (cond - uncond) on x0 and eps; [motion guidance on eps]; one solver step to
         z_hat_{t_n} = a_{t_n} x0_hat + s_{t_n} eps_hat
      3. student: f_theta(z_{t_{n+k}}) = c_skip z + c_out x0_theta(z, t, c, w, eta)
      4. target (no grad): f_theta^-(z_hat_{t_n}, t_n, c, w, eta) with theta^- = EMA or theta
      5. loss = pseudo-Huber(f_theta, target) - sum_i beta_i R_i(decode(f_theta), prompts)
         (rewards on the student's one-step prediction; see reward_term.py)

    ``solver``: an :class:`~t2vturbo.train.teacher.OnlineTeacher` (default) or a
    :class:`~t2vturbo.train.teacher.StoredTeacher`; ``target``: the target network (None: the no-grad
    student itself); ``eta``: the student's motion-strength input.
    """

    trains_student = True

    def __init__(self, cfg, backbone, seed: int, solver=None, eta: float = 0.0):
        self.cfg = cfg
        self.seed = int(seed)
        self.param = Parameterisation.of(backbone)
        self.grid = self.param.grid(cfg.num_ddim_timesteps)
        self.solver = solver if solver is not None else OnlineTeacher(backbone, cfg.guidance_form)
        self.eta = float(eta)
        self.reward_term: RewardTerm | None = None
        self.module: nn.Module | None = None
        self.ema: EMA | None = None
        self.target: nn.Module | None = None  # the target network (None: the no-grad student)

    @property
    def motion_guidance(self):
        """The online teacher's :class:`~t2vturbo.guidance.MotionGuidance` (None: off)."""
        return getattr(self.solver, "motion", None)

    @motion_guidance.setter
    def motion_guidance(self, mg):
        self.solver.motion = mg

    def draws(self, positions, latent_shape) -> Draws:
        c = self.cfg
        return draw(positions, latent_shape, self.seed, len(self.grid), c.w_min, c.w_max, 0.0)

    def teacher_step(self, z_t, t_start, t_end, cond, uncond, w, batch=None):
        """The augmented solver of the online teacher: one CFG (+ motion-guided) step, float32."""
        return self.solver.step(z_t, t_start, t_end, cond, uncond, w, batch)

    def consistency_fn(self, net, z, t, cond, w, eta):
        """``f(z, t) = c_skip(t) z + c_out(t) x0_pred(net(z, t, c, w, eta))`` in float32."""
        out = net(z, self.param.net_time(t), cond, w, eta).float()
        x0, _ = self.param.x0_eps(out, z.float(), t)
        return self.param.boundary(z.float(), x0, t, self.cfg.sigma_data, self.cfg.timestep_scaling)

    def loss(self, net, batch):
        """``(loss, logs)`` of one micro-batch; ``logs["pred"]`` is not included (see :meth:`step`)."""
        loss, logs, _ = self.step(net, batch)
        return loss, logs

    def step(self, net, batch):
        """``(loss, logs, student prediction)`` of one micro-batch: the whole T2V-Turbo-v2 step."""
        s: SolverStep = self.solver(self, batch)
        pred = self.consistency_fn(net, s.z_t, s.t_start, s.cond, s.w, s.eta)
        target_net = self.target if self.target is not None else getattr(net, "module", net)
        with torch.no_grad():
            target = self.consistency_fn(target_net, s.z_prev.to(s.z_t.dtype), s.t_end, s.cond, s.w, s.eta)
        loss = consistency_loss(pred, target, self.cfg.loss, self.cfg.huber_c)
        logs = {
            "loss_cd": loss.detach(),
            "w_mean": s.w.mean(),
            "t_mean": self.param.net_time(s.t_start).float().mean(),
            **s.stats,
        }
        if self.reward_term is not None and self.reward_term.active:
            r_loss, r_logs = self.reward_term(
                pred,
                batch.get("reward_caption") or batch["caption"],
                batch["positions"],
                batch.get("use_reward"),
            )
            loss = loss + r_loss
            logs.update(r_logs)
        return loss, logs, pred


@register("consistency_distillation")
def build_consistency_distillation(cfg, bb, ctx: RunContext) -> ConsistencyDistillation:
    o, g = cfg.objective, cfg.guidance
    param = Parameterisation.of(bb)
    if g.motion and param.is_flow:
        raise ConfigError(
            f"guidance.motion=true is not supported with a flow-matching teacher (model.family={cfg.model.family}, "
            "prediction_type='flow'): use guidance=cfg (guidance.motion=false)"
        )
    if cfg.data.precomputed and param.is_flow:
        raise ConfigError(
            f"data.precomputed=true needs a DDPM-schedule teacher (model.family={cfg.model.family} is "
            "flow-matching): train it online"
        )
    if cfg.data.precomputed:  # stored teacher outputs / motion scores: the objective needs the schedule only
        solver = StoredTeacher(param.to(ctx.device), o.guidance_form, g.motion, g.lam, ctx.dtype)
    else:
        mg = (
            MotionGuidance.from_config(g, bb, param.grid(o.num_ddim_timesteps), seed=cfg.seed)
            if g.motion
            else None
        )
        solver = OnlineTeacher(bb, o.guidance_form, mg, ctx.dtype)
    obj = ConsistencyDistillation(o, bb, cfg.seed, solver, eta=g.eta)
    if cfg.reward.weights:
        obj.reward_term = reward_term(cfg, bb, ctx)
    obj.module = student_module(cfg, bb, o.init_from)
    if cfg.data.precomputed:  # the teacher only initialised the student (and the export): off the GPU
        bb.teacher.to("cpu")
    if o.target == "ema":
        obj.ema = EMA(obj.module, o.ema_decay)
        obj.target = obj.ema.model
    return obj


# ---- plain diffusion training ----------------------------------------------------------------------
class DiffusionTraining:
    """Plain denoising training of the teacher: t ~ U{t_min..T-1} (t_min = objective.min_timestep,
    default 0), regress the prediction-type target, captions dropped with probability p (replaced by
    the empty prompt) for CFG."""

    trains_student = False
    ema = None

    def __init__(self, cfg, backbone, seed: int, caption_dropout: float, dtype=torch.float32):
        self.cfg = cfg
        self.bb = backbone
        self.seed = seed
        self.caption_dropout = caption_dropout
        self.dtype = dtype
        self.param = Parameterisation.of(backbone)
        self.t_min = int(cfg.min_timestep)
        self.module: nn.Module | None = None
        if not 0 <= self.t_min < backbone.num_train_timesteps:
            raise ValueError(
                f"objective.min_timestep={self.t_min} must be in [0, {backbone.num_train_timesteps - 1}]"
            )

    def draws(self, positions, latent_shape) -> Draws:
        d = draw(
            positions,
            latent_shape,
            self.seed,
            self.bb.num_train_timesteps - self.t_min,
            0.0,
            0.0,
            self.caption_dropout,
        )
        d.index += self.t_min
        return d

    def loss(self, net, batch):
        bb = self.bb
        z0 = bb.encode_video(batch["video"].to(bb.device, self.dtype))
        cond = bb.encode_text(batch["caption"])
        uncond = bb.null_cond(len(batch["caption"]))
        d = self.draws(batch["positions"], tuple(z0.shape[1:]))
        dev = z0.device
        t = d.index.to(dev)
        noise = d.noise.to(dev)
        drop = d.drop.to(dev).reshape(-1, 1, 1)
        c = torch.where(drop, uncond, cond)
        z_t = self.param.add_noise(z0.float(), noise, t)
        out = net(z_t.to(z0.dtype), t, c).float()
        target = training_target(z0.float(), noise, t, bb.alphas_cumprod, bb.prediction_type)
        loss = torch.mean((out - target) ** 2)
        return loss, {"loss_diffusion": loss.detach(), "t_mean": t.float().mean()}


@register("diffusion")
def build_diffusion(cfg, bb, ctx: RunContext) -> DiffusionTraining:
    obj = DiffusionTraining(cfg.objective, bb, cfg.seed, cfg.data.caption_dropout, ctx.dtype)
    obj.module = bb.trainable_teacher()
    return obj


@register("reward_finetune")
def build_reward_finetune(cfg, bb, ctx: RunContext):
    o, lcfg = cfg.objective, cfg.model.lora
    obj = RewardFinetune(
        o, bb, cfg.seed, bb.latent_shape(cfg.model.num_frames, cfg.model.height, cfg.model.width)
    )
    obj.reward_term = reward_term(cfg, bb, ctx)
    obj.trains_student = o.finetune == "student"
    if obj.trains_student:
        obj.module = student_module(cfg, bb, o.init_from)
    else:  # a copy: bb.teacher stays the clean frozen teacher (the export merges into a copy of it)
        obj.module = bb.trainable_teacher(clone=True)
        if lcfg.enabled:
            add_lora(obj.module.unet, lcfg.rank, lcfg.alpha, lcfg.target_modules)
        mark_trainable(obj.module, lcfg.enabled)
    if ctx.rank == 0:
        log.info(
            "reward fine-tuning (VADER mode) of the %s: %d sampling steps, gradient through the last %s; "
            "rewards %s",
            o.finetune,
            o.sample_steps,
            o.grad_steps or "all",
            obj.reward_term.betas,
        )
    return obj
