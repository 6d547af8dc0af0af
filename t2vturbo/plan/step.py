"""One training step of the configured recipe, traced (:class:`~t2vturbo.plan.trace.StepTrace`).

:func:`trace_step` builds what the trainer builds -- the backbone (``build_backbone``; at full size from
``model.arch`` / the config files under ``model.path``), the objective (``build_objective``: student, LoRA,
EMA target, motion guidance, reward models) -- and runs the trainer's micro-step on one micro-batch of
clips: ``objective.loss`` (VAE encode, text encode, teacher cond + uncond, motion guidance, student forward,
target forward, rewards through the VAE decode), ``backward``, the EMA update. With ``fake=True`` every
weight and input is a fake tensor (no memory, any size); with ``fake=False`` the same step runs on real
tensors (the check of the planner against reality, tests/component/test_plan.py).

Motion guidance's DDIM inversion costs one teacher pass per grid point between 0 and the sample's grid
index (100-200 on the 200-point grid). The trace runs one pass per guided sample (the last; each pass costs
the same and none is kept for backward, so the peak is unchanged) and records how many the real schedule
has: :attr:`StepTrace.inversion` ``(passes run, passes of the real schedule)``.

The draws of the traced micro-batch are the worst case the config allows: every sample at the top of the
grid (all motion-guided when guidance is on; samples flagged for rewards), so the peak is the worst step's.
Expected FLOPs over the draws are computed in :mod:`t2vturbo.plan.model`.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field

import torch

from ..backbones import build_backbone
from ..train import draws as draws_mod
from ..train.objectives import RunContext, build_objective
from .archs import RELEASED_REWARDS, PlanError, build_full_size, full_size_reward
from .trace import StepTrace, fake_input, fake_parameters, module_apply_by_assignment, new_fake_mode

#: phases of a step (the order of the report); ``backward`` holds the student's and the rewards' backward
PHASES = (
    "text_encoder",
    "vae_encode",
    "teacher",
    "motion_guidance",
    "mg_inversion",
    "student",
    "target",
    "vae_decode",
    "rewards",
    "backward",
    "ema",
    "other",
)


@dataclass
class TraceResult:
    micro_batch: int
    checkpointing: bool
    flops: dict[str, int]  # per phase, this micro-batch (inversion: the passes run, see inversion)
    peak_bytes: int
    peak_breakdown: dict[str, int]
    peak_phase: str
    inversion: tuple[int, int] = (0, 0)  # (teacher passes run, passes of the real schedule) per micro-batch
    params: dict[str, int] = field(default_factory=dict)  # numel: trainable, frozen (on the device)
    param_bytes: dict[str, int] = field(default_factory=dict)  # bytes: trainable, frozen
    latent_shape: tuple = ()
    largest_module_params: int = 0  # the student's largest module (own parameters): ZeRO-3's gathered set
    trainable_tensors: int = 0  # trainable parameter tensors (the optimizer's list at ZeRO-0)


def _worst_case_draw(top_index: int):
    real = draws_mod.draw

    def draw(positions, latent_shape, seed, n_index, w_min, w_max, drop_p):
        d = real(positions, latent_shape, seed, n_index, w_min, w_max, drop_p)
        d.index.fill_(min(top_index, n_index - 1) if top_index >= 0 else n_index - 1)
        return d

    return draw


@contextlib.contextmanager
def _patched(pairs):
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in pairs]
    try:
        for obj, name, value in pairs:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def _networks(bb, obj, precomputed: bool = False) -> list[torch.nn.Module]:
    """The networks on the training device (precomputed: the trainer moves the teacher off it)."""
    if precomputed:
        nets = [m for name, m in bb.named_children() if name != "teacher"] + [obj.module]
    else:
        nets = [bb, obj.module]
    if getattr(obj, "ema", None) is not None:
        nets.append(obj.ema.model)
    term = getattr(obj, "reward_term", None)
    if term is not None:
        nets += list(term.rewards.values())
    return nets


def _count(nets) -> tuple[dict, dict]:
    seen, numel, nbytes = set(), {"trainable": 0, "frozen": 0}, {"trainable": 0, "frozen": 0}
    for net in nets:
        for p in net.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            k = "trainable" if p.requires_grad else "frozen"
            numel[k] += p.numel()
            nbytes[k] += p.numel() * p.element_size()
    return numel, nbytes


def trace_step(cfg, micro_batch: int | None = None, checkpointing: bool | None = None, fake: bool = True):
    """Build the configured run and trace one micro-step (see the module docstring)."""
    from ..guidance import motion as motion_mod
    from ..train import objectives, reward_finetune, teacher

    tc = cfg.train
    mb = int(micro_batch or tc.micro_batch_size)
    ckpt = tc.gradient_checkpointing if checkpointing is None else bool(checkpointing)
    if cfg.objective.name != "consistency_distillation":
        raise PlanError(
            f"objective.name={cfg.objective.name!r}: the planner plans consistency distillation (the step "
            "T2V-Turbo trains); plan the teacher's or VADER's step with bench/ scripts"
        )
    dtype = torch.bfloat16 if tc.precision == "bf16" else torch.float32
    # copy.deepcopy of a fake parameter (the EMA target) asks for its data pointer: harmless, it has none
    warnings.filterwarnings("ignore", message="Accessing the data pointer of FakeTensor")
    mode = new_fake_mode()
    build_ctx = fake_parameters(mode) if fake else contextlib.nullcontext()
    torch.manual_seed(cfg.seed)
    from ..rewards import registry

    real_build = registry.build

    def reward_build(name, *, pretrained=None, tiny=False, **kwargs):
        """Rewards at their released architectures, weights fake (reward.paths.NAME=tiny: the tiny config)."""
        if tiny or not fake or (pretrained is None and name not in RELEASED_REWARDS):
            return real_build(
                name, pretrained=pretrained, tiny=tiny, **kwargs
            )  # (toy rewards need no weights)
        return full_size_reward(name, **kwargs)

    with build_ctx, _patched([(registry, "build", reward_build)]):
        full = fake and (cfg.model.path is not None or cfg.model.arch is not None)
        bb = (
            build_full_size(cfg.model, ckpt, dtype) if full else build_backbone(cfg.model, ckpt, "cpu", dtype)
        )
        obj = build_objective(cfg, bb, RunContext(dtype=dtype, seed=cfg.seed))
    pre = bool(cfg.data.precomputed)
    nets = _networks(bb, obj, pre)
    numel, nbytes = _count(nets)
    largest = max(
        (sum(p.numel() for p in m.parameters(recurse=False)) for m in obj.module.modules()), default=0
    )
    apply_ctx = module_apply_by_assignment() if fake else contextlib.nullcontext()
    with apply_ctx, torch.no_grad():
        bb.null_cond(1)  # cached after the first step: the traced step is a steady-state one
    f, h, w = cfg.model.num_frames, cfg.model.height, cfg.model.width
    shape = (mb, f, 3, h, w)
    video = fake_input(mode, shape) if fake else torch.rand(shape, generator=torch.Generator().manual_seed(0))
    batch = {
        "video": video,
        "caption": ["a red circle moving left"] * mb,
        "positions": list(range(mb)),
    }
    if pre:  # what python -m t2vturbo.precompute stored per clip (worst case: every clip motion-guided)
        lat = tuple(bb.latent_shape(f, h, w))
        with module_apply_by_assignment() if fake else contextlib.nullcontext(), torch.no_grad():
            text = tuple(bb.null_cond(1).shape[1:])
        make = (lambda shape: fake_input(mode, shape)) if fake else (lambda shape: torch.randn(shape))
        n_grid = int(cfg.objective.num_ddim_timesteps)
        stored = {k: make((mb, *lat)) for k in ("z_t", "out_c", "out_u", "score")}
        stored |= {
            "n": torch.full((mb,), n_grid - 1),
            "mg": torch.ones(mb, dtype=torch.bool),
            "cond": make((mb, *text)),
        }
        batch = {"pre": stored, "caption": batch["caption"], "positions": batch["positions"]}
    inversion = [0, 0]
    real_schedule = motion_mod.inversion_schedule

    def one_pass_schedule(index, stride=1):
        s = real_schedule(index, stride)
        inversion[0] += 1
        inversion[1] += len(s)
        return s[-1:]

    draw = _worst_case_draw(-1)
    pairs = [
        (m, "draw", draw) for m in (draws_mod, objectives, teacher, reward_finetune) if hasattr(m, "draw")
    ]
    pairs.append((motion_mod, "inversion_schedule", one_pass_schedule))
    tr = StepTrace()
    tr.register(*nets)
    tr.label(bb.teacher, "teacher")
    tr.label(obj.module, "student")
    if obj.target is not None:
        tr.label(obj.target, "target")
    tr.label(bb.text_encoder, "text_encoder")
    for sub, name in (("encoder", "vae_encode"), ("decoder", "vae_decode")):
        m = getattr(bb.vae, sub, None)
        if isinstance(m, torch.nn.Module):
            tr.label(m, name)
    term = getattr(obj, "reward_term", None)
    for r in term.rewards.values() if term is not None else ():
        tr.label(r, "rewards")
    mg = obj.motion_guidance
    if mg is not None and not isinstance(mg, bool):  # online (the stored teacher's is a flag)
        score, ddim_invert = mg.score, motion_mod.ddim_invert

        def traced_score(*a, **k):
            with tr.phase("motion_guidance"):
                return score(*a, **k)

        def traced_invert(*a, **k):
            with tr.phase("mg_inversion"):
                return ddim_invert(*a, **k)

        pairs += [(mg, "score", traced_score), (motion_mod, "ddim_invert", traced_invert)]
    apply_ctx = module_apply_by_assignment() if fake else contextlib.nullcontext()
    with _patched(pairs), apply_ctx, tr:
        loss, _ = obj.loss(obj.module, batch)
        with tr.phase("backward"):
            loss.backward()
        if obj.ema is not None:
            with tr.phase("ema"), torch.no_grad():
                obj.ema.update(obj.module)
    tr.close()
    lat = tuple(bb.latent_shape(f, h, w))
    return TraceResult(
        mb,
        ckpt,
        {k: int(v) for k, v in tr.flops.items()},
        tr.peak,
        dict(tr.peak_breakdown),
        tr.peak_phase,
        (inversion[0], inversion[1]),
        numel,
        nbytes,
        lat,
        2 * largest,  # the running module and the prefetched next one
        sum(1 for p in obj.module.parameters() if p.requires_grad),
    )
