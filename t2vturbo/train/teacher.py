"""The augmented teacher solver of consistency distillation, and where its inputs come from.

The solver itself is one function, :func:`augmented_teacher_step`: from the teacher's conditional and
unconditional outputs at ``(z_t, t_start)``,

    (x0_c, eps_c), (x0_u, eps_u) = param.x0_eps(out_c), param.x0_eps(out_u)
    x0_hat, eps_hat = CFG(x0_c, x0_u, w), CFG(eps_c, eps_u, w)           LCM form: c + w (c - u)
    eps_hat        -= lam sqrt(1 - sqrt(alpha_bar_t)) score                only on motion-guided samples
    z_hat_{t_end}   = a_{t_end} x0_hat + s_{t_end} eps_hat                 DDIM; Euler for flow teachers

Two strategies feed it (``ConsistencyDistillation.solver``):

* :class:`OnlineTeacher` -- draws (n, eps, w) per sample, noises the clip's latents and runs the teacher
  (cond and uncond in one batch) and, with ``guidance=motion``, the motion-guidance energy's score;
* :class:`StoredTeacher` -- reads what ``python -m t2vturbo.precompute`` stored per clip (the two-stage
  mode of T2V-Turbo-v2): ``n``, ``z_t``, the raw outputs and the motion score; only w is redrawn.

Both return a :class:`SolverStep`: the student's input and the target's input, so the rest of the
step (:meth:`t2vturbo.train.objectives.ConsistencyDistillation.loss`) does not know which one ran.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..diffusion import Parameterisation, apply_cfg, solver_pair
from ..guidance.motion import apply_motion_score, stat_value
from .draws import Draws, draw

#: the member of a precomputed clip, ``{key}.pre.safetensors`` (read as ``item["pre"]``), and its tensors:
#: n [] int64 (grid index), z_t, out_c / out_u (the teacher's raw outputs at (z_t, t_{n+k})), score
#: (dE/dz_t, zeros where not guided), mg [] bool (guided), cond [L, D] (prompt embedding)
STORED_MEMBER = "pre"
STORED_TENSORS = ("n", "z_t", "out_c", "out_u", "score", "mg", "cond")


@dataclass
class Noised:
    """A batch encoded and noised at its draws (:meth:`OnlineTeacher.noised`)."""

    z0: torch.Tensor  # [B, C, F, h, w] clean latents
    cond: torch.Tensor  # [B, L, D] prompt embeddings
    uncond: torch.Tensor  # [B, L, D] the empty prompt's
    draws: Draws  # n, eps, w of each sample
    t_start: torch.Tensor  # [B] t_{n+k}
    t_end: torch.Tensor  # [B] t_n
    z_t: torch.Tensor  # [B, C, F, h, w] float32: a_{t_start} z0 + s_{t_start} eps


@dataclass
class SolverStep:
    """One micro-batch's solver step: the student sees ``(z_t, t_start)``, its target ``(z_prev, t_end)``."""

    z_t: torch.Tensor  # [B, C, F, h, w] in the network dtype, as the teacher saw it
    t_start: torch.Tensor  # [B] solver times t_{n+k}
    t_end: torch.Tensor  # [B] solver times t_n
    z_prev: torch.Tensor  # [B, C, F, h, w] float32: the augmented teacher step's result at t_end
    cond: torch.Tensor  # [B, L, D] prompt embeddings
    w: torch.Tensor  # [B] guidance scales
    eta: torch.Tensor  # [B] the student's motion-strength input (0 where not motion-guided)
    stats: dict  # solver logs (motion-guidance statistics)


def augmented_teacher_step(
    out_c,
    out_u,
    z_t,
    t_start,
    t_end,
    w,
    param: Parameterisation,
    guidance_form: str = "lcm",
    score=None,
    guided=None,
    lam: float = 0.0,
) -> torch.Tensor:
    """``z_hat_{t_end}`` from the teacher's cond / uncond outputs at ``(z_t, t_start)``, in float32: CFG on
    x0 and eps, ``eps_hat -= lam sqrt(1 - sqrt(ab_t)) score`` on the ``guided`` samples, one solver step."""
    z_t = z_t.float()
    x0_c, eps_c = param.x0_eps(out_c.float(), z_t, t_start)
    x0_u, eps_u = param.x0_eps(out_u.float(), z_t, t_start)
    x0_hat, eps_hat = apply_cfg(x0_c, x0_u, w, guidance_form), apply_cfg(eps_c, eps_u, w, guidance_form)
    if score is not None and guided is not None and bool(guided.any()):
        idx = guided.nonzero().squeeze(1)
        eps_hat = apply_motion_score(eps_hat, score[idx].float(), t_start, idx, lam, param.alphas_cumprod)
    return param.step(x0_hat, eps_hat, t_end)


class OnlineTeacher:
    """The teacher in memory: fresh (n, eps, w) at every training position; optional motion guidance
    (``motion``: a :class:`~t2vturbo.guidance.MotionGuidance`, DDPM teachers only)."""

    def __init__(self, backbone, guidance_form: str = "lcm", motion=None, dtype=None):
        self.bb = backbone
        self.param = Parameterisation.of(backbone)
        self.guidance_form = guidance_form
        self.motion = motion
        self.dtype = dtype

    @torch.no_grad()
    def outputs(self, z_t, t_start, cond, uncond):
        """The teacher's raw (cond, uncond) outputs at ``(z_t, t_start)`` in one batch, float32."""
        t = self.param.net_time(t_start)
        out = self.bb.teacher(torch.cat([z_t, z_t]), torch.cat([t, t]), torch.cat([cond, uncond])).float()
        return out.chunk(2)

    @torch.no_grad()
    def step(self, z_t, t_start, t_end, cond, uncond, w, batch=None):
        """The augmented solver step from ``z_t`` (the teacher's input dtype) at ``t_start`` to ``t_end``.
        With motion guidance, ``batch`` carries the clips' clean ``latents`` (and ``positions``,
        ``use_motion_guide``) for the reference maps."""
        out_c, out_u = self.outputs(z_t, t_start, cond, uncond)
        score = guided = None
        lam = 0.0
        if self.motion is not None:
            score, guided = self.motion.score(z_t, t_start, cond, batch)
            lam = self.motion.lam
        return augmented_teacher_step(
            out_c, out_u, z_t, t_start, t_end, w, self.param, self.guidance_form, score, guided, lam
        )

    def noised(self, obj, batch) -> Noised:
        """The batch encoded and noised at the draws of its ``positions``: ``video`` [B, F, 3, H, W] and
        ``caption`` (encoded here), or already encoded ``latents`` z0 / ``cond`` (/ ``uncond``). Also what
        ``python -m t2vturbo.precompute`` stores, so stored clips are online training's first epoch."""
        bb, dev = self.bb, self.bb.device
        z0 = (
            batch["latents"]
            if "latents" in batch
            else bb.encode_video(batch["video"].to(dev, self.dtype or torch.float32))
        )
        cond = batch["cond"] if "cond" in batch else bb.encode_text(batch["caption"])
        uncond = batch["uncond"] if "uncond" in batch else bb.null_cond(cond.shape[0])
        d = obj.draws(batch["positions"], tuple(z0.shape[1:]))
        t_start, t_end = (x.to(dev) for x in solver_pair(d.index, obj.grid, obj.cfg.skip))
        z_t = self.param.add_noise(z0.float(), d.noise.to(dev), t_start)
        return Noised(z0, cond, uncond, d, t_start, t_end, z_t)

    def __call__(self, obj, batch) -> SolverStep:
        """The step of a training batch (see :meth:`noised` for what it holds)."""
        dtype = self.dtype or torch.float32
        nb = self.noised(obj, batch)
        cond, t_start, t_end = nb.cond, nb.t_start, nb.t_end
        w = nb.draws.w.to(t_start.device)
        z_t = nb.z_t.to(dtype)
        eta = torch.full((z_t.shape[0],), float(obj.eta))
        stats = {}
        if self.motion is not None:  # the reference maps need the clean latents; eta only on guided samples
            batch = {**batch, "latents": nb.z0}
            eta = self.motion.student_eta(t_start, eta, batch.get("use_motion_guide"))
        z_prev = self.step(z_t, t_start, t_end, cond, nb.uncond, w, batch)
        if self.motion is not None:
            stats = dict(self.motion.stats)
        return SolverStep(z_t, t_start, t_end, z_prev, cond, w, eta, stats)


class StoredTeacher:
    """Teacher outputs precomputed per clip (``batch["pre"]``, see :mod:`t2vturbo.precompute`); no teacher in
    memory. Each clip keeps its stored (n, eps) for the whole training, as the reference; w is drawn per
    training position as online. ``motion``: apply the stored scores with ``lam`` (eta to guided samples
    only); False: scores ignored."""

    def __init__(
        self,
        param: Parameterisation,
        guidance_form: str = "lcm",
        motion: bool = False,
        lam: float = 0.05,
        dtype=None,
    ):
        self.param = param
        self.guidance_form = guidance_form
        self.motion = bool(motion)
        self.lam = float(lam)
        self.dtype = dtype

    def check_meta(self, metas, num_grid: int, skip: int) -> None:
        """Fail if the shards were precomputed for another grid / solver skip, or without motion guidance
        while ``motion`` is on (``meta["precompute"]`` of each clip)."""
        for m in metas:
            p = (m or {}).get("precompute")
            if p is None:
                raise ValueError(
                    "data.precomputed=true but a clip has no 'precompute' metadata: "
                    "point data.urls at the output of `python -m t2vturbo.precompute`"
                )
            if int(p["num_ddim_timesteps"]) != num_grid or int(p["skip"]) != int(skip):
                raise ValueError(
                    f"clip {p.get('src_key')} was precomputed with num_ddim_timesteps={p['num_ddim_timesteps']}, "
                    f"skip={p['skip']}; this run has {num_grid}, {skip}"
                )
            if self.motion and not p.get("motion", False):
                raise ValueError(
                    f"guidance.motion=true but clip {p.get('src_key')} was precomputed without "
                    "motion guidance (no scores): precompute with guidance=motion"
                )

    def __call__(self, obj, batch) -> SolverStep:
        if STORED_MEMBER not in batch:
            raise ValueError(
                f"data.precomputed=true but the shards have no {{key}}.{STORED_MEMBER}.safetensors"
            )
        if batch.get("meta") is not None:
            self.check_meta(batch["meta"], len(obj.grid), obj.cfg.skip)
        dtype = self.dtype or torch.float32
        param = self.param
        dev = param.alphas_cumprod.device
        pre = {k: v.to(dev) for k, v in batch[STORED_MEMBER].items()}
        index = pre["n"].reshape(-1).long().cpu()
        t_start, t_end = (x.to(dev) for x in solver_pair(index, obj.grid, obj.cfg.skip))
        w = draw(batch["positions"], (1,), obj.seed, len(obj.grid), obj.cfg.w_min, obj.cfg.w_max, 0.0).w.to(
            dev
        )
        z_t = pre["z_t"].float()
        eta = torch.full((z_t.shape[0],), float(obj.eta), device=dev)
        guided = pre["mg"].reshape(-1).bool() if self.motion else None
        stats = {}
        if self.motion:
            eta = torch.where(guided, eta, torch.zeros_like(eta))
            idx = guided.nonzero().squeeze(
                1
            )  # (index_select, not a mask: python -m t2vturbo.plan runs this shapes-only)
            sc = pre["score"][idx].float() if len(idx) else None
            stats = {
                "mg_fraction": float(guided.float().mean()),
                "mg_score_abs": stat_value(sc.abs().mean()) if sc is not None else 0.0,
            }
        with torch.no_grad():
            z_prev = augmented_teacher_step(
                pre["out_c"],
                pre["out_u"],
                z_t,
                t_start,
                t_end,
                w,
                param,
                self.guidance_form,
                pre["score"] if self.motion else None,
                guided,
                self.lam,
            )
        return SolverStep(z_t.to(dtype), t_start, t_end, z_prev, pre["cond"].to(dtype), w, eta, stats)
