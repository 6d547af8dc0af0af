"""Stage 2 of the two-stage mode (T2V-Turbo-v2 as published): consistency distillation from
teacher outputs precomputed offline by ``python -m t2vturbo.precompute``.

Per clip the precomputed shards store (``{key}.pre.safetensors``, see :mod:`t2vturbo.precompute`):
``n`` (grid index), ``z_t`` (= z_{t_{n+k}}), ``out_c`` / ``out_u`` (the teacher's raw conditional /
unconditional outputs at (z_t, t_{n+k})), ``score`` (motion score dE/dz_t, zeros where not guided),
``mg`` (guided flag) and ``cond`` (prompt embedding). The augmented teacher step is then rebuilt
without a teacher:

    (x0_c, eps_c) = to_x0_eps(out_c),  (x0_u, eps_u) = to_x0_eps(out_u)
    w             = draw(batch positions).w               (fresh per training position)
    x0_hat, eps   = CFG(x0_c, x0_u, w), CFG(eps_c, eps_u, w)
    eps_hat      -= lam * sqrt(1 - sqrt(alpha_bar_t)) * score    where mg (and guidance.motion)
    z_prev        = ddim_step(x0_hat, eps_hat, t_n)

followed by the same student / target / loss / rewards as :class:`ConsistencyDistillation` (this
class *is* one, over a :class:`NoiseSchedule` instead of a backbone). Each clip keeps the one
(t, noise) drawn for it at precompute time for the whole training, as the reference does; only w
is redrawn at every training position. In the first epoch of a single-rank, unshuffled run the
training position equals the clip's precompute position, so the loss equals the online loss
(tests/component/test_precompute.py checks this to fp32 rounding).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..diffusion import consistency_loss, ddim_step, make_alphas_cumprod
from ..guidance.motion import apply_motion_score
from .objectives import ConsistencyDistillation, cfg_x0_eps, draw

#: tensors of one clip in ``{key}.pre.safetensors``
PRE_TENSORS = ("n", "z_t", "out_c", "out_u", "score", "mg", "cond")
PRE_NAME = "pre"  # the safetensors member name: {key}.pre.safetensors -> item["pre"]


@dataclass
class NoiseSchedule:
    """What the precomputed objective needs of a backbone: the schedule, nothing with weights."""

    alphas_cumprod: torch.Tensor
    prediction_type: str = "epsilon"
    num_train_timesteps: int = 1000

    @classmethod
    def from_backbone(cls, bb) -> NoiseSchedule:
        return cls(bb.alphas_cumprod.detach().float(), bb.prediction_type, int(bb.num_train_timesteps))

    @classmethod
    def from_scheduler_config(cls, sc: dict) -> NoiseSchedule:
        t = int(sc.get("num_train_timesteps", 1000))
        ac = make_alphas_cumprod(sc.get("beta_schedule", "scaled_linear"), t, sc.get("beta_start", 0.00085),
                                 sc.get("beta_end", 0.012))
        return cls(ac, sc.get("prediction_type", "epsilon"), t)

    @classmethod
    def from_model_dir(cls, path) -> NoiseSchedule:
        """From ``path/scheduler/scheduler_config.json`` (no weights are read)."""
        return cls.from_scheduler_config(json.loads((Path(path) / "scheduler" / "scheduler_config.json").read_text()))

    def to(self, device) -> NoiseSchedule:
        return NoiseSchedule(self.alphas_cumprod.to(device), self.prediction_type, self.num_train_timesteps)


def augmented_teacher_step(
    out_c: torch.Tensor,
    out_u: torch.Tensor,
    z_t: torch.Tensor,
    t_start: torch.Tensor,
    t_end: torch.Tensor,
    w: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    prediction_type: str = "epsilon",
    guidance_form: str = "lcm",
    score: torch.Tensor | None = None,
    guided: torch.Tensor | None = None,
    lam: float = 0.0,
) -> torch.Tensor:
    """z_hat_{t_end} from the teacher's stored cond/uncond outputs at (z_t, t_start), in float32:
    CFG on x0 and eps, eps_hat -= lam sqrt(1 - sqrt(ab_t)) score on the ``guided`` samples, one DDIM
    step. The same arithmetic as ``ConsistencyDistillation.teacher_step`` + ``MotionGuidance``."""
    x0_hat, eps_hat = cfg_x0_eps(out_c.float(), out_u.float(), z_t.float(), t_start, w, alphas_cumprod,
                                 prediction_type, guidance_form)
    if score is not None and guided is not None and bool(guided.any()):
        idx = guided.nonzero().squeeze(1)
        eps_hat = apply_motion_score(eps_hat, score[idx].float(), t_start, idx, lam, alphas_cumprod)
    return ddim_step(x0_hat, eps_hat, t_end, alphas_cumprod)


class PrecomputedConsistencyDistillation(ConsistencyDistillation):
    """:class:`ConsistencyDistillation` over precomputed teacher outputs (no teacher in memory).

    Args:
        cfg: the ``objective`` config group.
        schedule: a :class:`NoiseSchedule` (or a backbone: anything with ``alphas_cumprod``,
            ``prediction_type``, ``num_train_timesteps``).
        seed: the run seed (keys the per-position w draws, as online).
        motion: apply the stored motion scores (``guidance.motion``); eta goes to guided samples
            only, as online. False: scores ignored, eta as given.
        lam: lambda of the guidance (``guidance.lam``), applied at train time.
    """

    def __init__(self, cfg, schedule, seed: int, motion: bool = False, lam: float = 0.05):
        super().__init__(cfg, schedule, seed)
        self.motion = bool(motion)
        self.lam = float(lam)
        self.stats: dict[str, float] = {}

    def loss(self, student, target_net, batch, eta, dtype=None):  # noqa: D401 (other signature than the base)
        """(loss, logs, pred) of one micro-batch. ``batch["pre"]``: dict of stacked stored tensors
        (``collate_clips`` of ClipStream items); ``batch["positions"]``: global training positions
        (key the w draw); ``batch["caption"]`` and ``batch.get("use_reward")`` for rewards."""
        pre = batch["pre"]
        if batch.get("meta") is not None:
            self.check_meta(batch["meta"])
        dev = pre["z_t"].device
        dtype = dtype or torch.float32
        ac = self.bb.alphas_cumprod.to(dev)
        index = pre["n"].reshape(-1).long().cpu()
        t_start, t_end = (x.to(dev) for x in self._solver_pair(index))
        w = draw(batch["positions"], (1,), self.seed, len(self.grid), self.cfg.w_min, self.cfg.w_max, 0.0).w.to(dev)
        z_t = pre["z_t"].float()
        cond = pre["cond"].to(dev, dtype)
        eta = torch.as_tensor(eta, dtype=torch.float32).reshape(-1).expand(z_t.shape[0]).to(dev)
        guided = pre["mg"].reshape(-1).bool().to(dev) if self.motion else None
        if self.motion:
            eta = torch.where(guided, eta, torch.zeros_like(eta))
        with torch.no_grad():
            z_prev = augmented_teacher_step(
                pre["out_c"], pre["out_u"], z_t, t_start, t_end, w, ac, self.bb.prediction_type,
                self.cfg.guidance_form, pre["score"] if self.motion else None, guided, self.lam,
            )
        pred = self.consistency_fn(student, z_t.to(dtype), t_start, cond, w, eta)
        with torch.no_grad():
            target = self.consistency_fn(target_net, z_prev.to(dtype), t_end, cond, w, eta)
        loss = consistency_loss(pred, target, self.cfg.loss, self.cfg.huber_c)
        logs = {"loss_cd": loss.detach(), "w_mean": w.mean(), "t_mean": t_start.float().mean()}
        if self.motion:
            g = guided
            sc = pre["score"][g].float() if bool(g.any()) else None
            logs.update({"mg_fraction": float(g.float().mean()),
                         "mg_score_abs": float(sc.abs().mean()) if sc is not None else 0.0})
        if self.reward_term is not None and self.reward_term.active:
            r_loss, r_logs = self.reward_term(
                pred, batch.get("reward_caption") or batch["caption"], batch["positions"], batch.get("use_reward")
            )
            loss = loss + r_loss
            logs.update(r_logs)
        return loss, logs, pred

    def check_meta(self, metas) -> None:
        """Fail if the shards were precomputed for another grid / solver skip, or without motion
        guidance while ``motion`` is on (``meta["precompute"]`` of each clip)."""
        for m in metas:
            p = (m or {}).get("precompute")
            if p is None:
                raise ValueError("data.precomputed=true but a clip has no 'precompute' metadata: "
                                 "point data.urls at the output of `python -m t2vturbo.precompute`")
            if int(p["num_ddim_timesteps"]) != len(self.grid) or int(p["skip"]) != int(self.cfg.skip):
                raise ValueError(
                    f"clip {p.get('src_key')} was precomputed with num_ddim_timesteps={p['num_ddim_timesteps']}, "
                    f"skip={p['skip']}; this run has {len(self.grid)}, {self.cfg.skip}")
            if self.motion and not p.get("motion", False):
                raise ValueError(f"guidance.motion=true but clip {p.get('src_key')} was precomputed without "
                                 "motion guidance (no scores): precompute with guidance=motion")

    def _solver_pair(self, index):
        from ..diffusion import solver_pair

        return solver_pair(index, self.grid, self.cfg.skip)
