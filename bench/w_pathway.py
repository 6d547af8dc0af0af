"""Does the student's w pathway learn? Consistency distillation of an analytic Gaussian-mixture teacher.

    python bench/w_pathway.py [--seeds 0 1 2] [--steps 3000] [--json OUT]

A small problem where the answer is known in closed form, distilled with the project's own pieces:

* data: x0 in R^d from a class-conditional Gaussian mixture (``classes`` prompts, each a mixture of two
  isotropic Gaussians, so the conditional and unconditional posteriors differ and move with t);
* teacher: the exact posterior mean ``E[x0 | z_t, c]`` (x0-prediction, ``prediction_type="sample"``) under the
  project's VP schedule (scaled_linear 0.00085..0.012, 1000 steps, :func:`t2vturbo.diffusion.make_alphas_cumprod`),
  the empty prompt being the mixture of every component; CFG in the LCM form (:func:`~t2vturbo.diffusion.apply_cfg`);
* "the teacher model": a small MLP whose time input is diffusers' ``Timesteps`` + ``TimestepEmbedding`` (the UNets'
  time MLP), fitted to the analytic teacher (cond and uncond, i.e. w = 0);
* student: a copy of it wrapped like :class:`~t2vturbo.backbones.unet3d.UNet3DDenoiser`
  (:class:`~t2vturbo.backbones.base.DiffusersTimeCondition`, ``add_guidance_conditioning(256, motion=False)``,
  :class:`~t2vturbo.backbones.base.GuidedDenoiser`): w reaches it only through ``cond_proj`` onto the timestep
  sinusoid, before the time MLP;
* distillation: :class:`t2vturbo.train.objectives.ConsistencyDistillation` itself (its :class:`OnlineTeacher` augmented
  DDIM step, boundary form, pseudo-Huber, per-sample draws), EMA target (:class:`t2vturbo.train.ema.EMA`), Adam;
* measurement: :func:`t2vturbo.eval.guidance_response.response_table` -- the student's 4-step multistep consistency
  samples (:func:`~t2vturbo.diffusion.multistep_consistency_sample`) against the teacher's 50-step DDIM + CFG
  (:func:`~t2vturbo.diffusion.ode_sample`) from the same z_T at the same w; ``response`` = MSE(S(w_lo), S(w_hi)) /
  MSE(T(w_lo), T(w_hi)), ``effective_guidance`` = the teacher's w nearest (latent MSE) to the student at each w.
  The bench adds a distribution-level nearest teacher w (per-class Frechet distance on a finer teacher w grid).

Variants of the w projection (``cond_proj.weight``): ``random`` (PyTorch's default init, the official code and
this project's default), ``zero`` (zeroed at the start, trainable), ``frozen`` (zeroed and not trained: w is
ignored; the negative control). tests/component/test_w_pathway_learns.py runs a short version.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffusers.models.embeddings import TimestepEmbedding, Timesteps  # noqa: E402

from t2vturbo.backbones.base import DiffusersTimeCondition, GuidedDenoiser  # noqa: E402
from t2vturbo.config import ConsistencyDistillationConfig  # noqa: E402
from t2vturbo.diffusion import (  # noqa: E402
    Parameterisation,
    apply_cfg,
    make_alphas_cumprod,
    multistep_consistency_sample,
    ode_sample,
)
from t2vturbo.eval.guidance_response import default_guidance_scales, response_table  # noqa: E402
from t2vturbo.train.ema import EMA  # noqa: E402
from t2vturbo.train.objectives import ConsistencyDistillation  # noqa: E402

INITS = ("random", "zero", "frozen")


# ---- the problem and its analytic teacher ---------------------------------------------------------------
@dataclass
class Problem:
    means: torch.Tensor  # [K, 2, d] component means (two per class)
    std: float  # isotropic component std
    alphas_cumprod: torch.Tensor  # [T] float32

    @property
    def classes(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[2]

    def onehot(self, labels: torch.Tensor) -> torch.Tensor:
        """The "prompt embedding" [B, K + 1]; label K is the empty prompt."""
        return nn.functional.one_hot(labels.long(), self.classes + 1).float()

    def null(self, batch: int) -> torch.Tensor:
        return self.onehot(torch.full((batch,), self.classes))

    def sample(self, labels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        comp = torch.randint(0, 2, labels.shape, generator=g)
        return self.means[labels, comp] + self.std * torch.randn(len(labels), self.dim, generator=g)


def make_problem(
    seed: int = 0, dim: int = 8, classes: int = 3, spread: float = 1.0, split: float = 1.5, std: float = 0.25
) -> Problem:
    """Class centres ~ N(0, spread^2 I); each class's two components at its centre + N(0, split^2 I / dim) (about
    ``split`` away), std ``std``."""
    g = torch.Generator().manual_seed(10_000 + seed)
    centres = spread * torch.randn(classes, 1, dim, generator=g)
    offsets = split * torch.randn(classes, 2, dim, generator=g) / math.sqrt(dim)
    return Problem(centres + offsets, std, make_alphas_cumprod("scaled_linear"))


class AnalyticTeacher(nn.Module):
    """``forward(z_t [B, d], t [B], cond [B, K+1]) -> E[x0 | z_t, c]`` of the mixture, exactly: per component k,
    z_t ~ N(a mu_k, v I) with v = a^2 s^2 + s_t^2, responsibilities r_k from the prompt's component weights, and
    E[x0 | z_t, k] = mu_k + (a s^2 / v) (z_t - a mu_k)."""

    def __init__(self, problem: Problem):
        super().__init__()
        k = problem.classes
        self.register_buffer("mu", problem.means.reshape(2 * k, -1).clone())
        weights = torch.zeros(k + 1, 2 * k)
        for c in range(k):
            weights[c, 2 * c : 2 * c + 2] = 0.5
        weights[k] = 1.0 / (2 * k)
        self.register_buffer("log_pi", weights.clamp_min(1e-30).log())
        self.register_buffer("ac", problem.alphas_cumprod.double())
        self.std = float(problem.std)

    def forward(self, z_t, t, cond):
        ab = self.ac[t.long()]
        a, s2 = ab.sqrt()[:, None, None], (1 - ab)[:, None, None]
        z, mu = z_t.double()[:, None, :], self.mu.double()[None]
        v = a * a * self.std**2 + s2
        loglik = -0.5 * ((z - a * mu) ** 2).sum(-1) / v[..., 0] - 0.5 * z.shape[-1] * torch.log(v[..., 0])
        r = torch.softmax(cond.double() @ self.log_pi.double() + loglik, dim=1)
        post = mu + (a * self.std**2 / v) * (z - a * mu)
        return (r[..., None] * post).sum(1).to(z_t.dtype)


class ToyBackbone:
    """What :class:`ConsistencyDistillation` / :class:`OnlineTeacher` ask of a backbone."""

    prediction_type = "sample"
    num_train_timesteps = 1000
    device = torch.device("cpu")

    def __init__(self, problem: Problem):
        self.problem = problem
        self.alphas_cumprod = problem.alphas_cumprod
        self.teacher = AnalyticTeacher(problem).requires_grad_(False)


# ---- the network: a UNet-like time MLP, and the student wrapper ---------------------------------------
class ToyNet(nn.Module):
    """x0-prediction MLP with the UNets' time path (``Timesteps`` sinusoid -> ``TimestepEmbedding``) and a
    prompt embedding, both modulating every block (scale and shift, as a ResNet block's time embedding)."""

    def __init__(self, dim: int, num_cond: int, hidden: int = 128, time_channels: int = 64, blocks: int = 3):
        super().__init__()
        self.time_proj = Timesteps(time_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(time_channels, hidden)
        self.cond_embedding = nn.Linear(num_cond, hidden, bias=False)
        self.inp = nn.Linear(dim, hidden)
        self.mods = nn.ModuleList(nn.Linear(hidden, 2 * hidden) for _ in range(blocks))
        self.lin1 = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(blocks))
        self.lin2 = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(blocks))
        self.out = nn.Linear(hidden, dim)

    def forward(self, z, t, cond, timestep_cond=None):
        temb = self.time_embedding(self.time_proj(t).to(z.dtype), timestep_cond)
        emb = nn.functional.silu(temb + self.cond_embedding(cond))
        h = self.inp(z)
        for mod, l1, l2 in zip(self.mods, self.lin1, self.lin2):
            scale, shift = mod(emb).chunk(2, dim=1)
            h = h + l2(nn.functional.silu(l1(nn.functional.silu(h) * (1 + scale) + shift)))
        return self.out(nn.functional.silu(h))


class ToyDenoiser(DiffusersTimeCondition):
    """The student's base, as :class:`~t2vturbo.backbones.unet3d.UNet3DDenoiser` wraps a UNet."""

    def __init__(self, net: ToyNet):
        super().__init__()
        self.net = net
        self._setup_condition(net, net.time_embedding)

    def forward(self, z_t, t, cond, timestep_cond=None, motion_cond=None):
        return self._run(lambda tc: self.net(z_t, t, cond, tc), timestep_cond, motion_cond)


def make_student(teacher_net: ToyNet, init: str = "random", seed: int = 0) -> GuidedDenoiser:
    """A copy of the fitted network with the w projection (``init``: random | zero | frozen)."""
    if init not in INITS:
        raise ValueError(f"init={init!r}; expected one of {INITS}")
    torch.manual_seed(seed)  # the random cond_proj init
    base = ToyDenoiser(copy.deepcopy(teacher_net))
    base.add_guidance_conditioning(embed_dim=256, motion=False)
    student = GuidedDenoiser(base, motion=False)
    proj = base.time_embedding.cond_proj
    if init in ("zero", "frozen"):
        nn.init.zeros_(proj.weight)
    proj.weight.requires_grad_(init != "frozen")
    return student


# ---- training ------------------------------------------------------------------------------------------
def fit_teacher_net(problem: Problem, seed: int = 0, steps: int = 800, batch: int = 256, lr: float = 2e-3):
    """ "The teacher model": the MLP regressed on the analytic teacher's x0 (cond, and the empty prompt with p = 0.2)
    at t ~ U{0..T-1}, z_t from the data. Returns ``(net, final mse)``."""
    torch.manual_seed(seed)
    bb = ToyBackbone(problem)
    net = ToyNet(problem.dim, problem.classes + 1)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(20_000 + seed)
    param = Parameterisation("sample", problem.alphas_cumprod)
    mse = float("nan")
    for _ in range(steps):
        labels = torch.randint(0, problem.classes, (batch,), generator=g)
        x0 = problem.sample(labels, g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        z = param.add_noise(x0, torch.randn(x0.shape, generator=g), t)
        drop = torch.rand(batch, generator=g) < 0.2
        cond = problem.onehot(torch.where(drop, torch.full_like(labels, problem.classes), labels))
        with torch.no_grad():
            target = bb.teacher(z, t, cond)
        loss = torch.mean((net(z, t, cond) - target) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        mse = float(loss.detach())
    return net, mse


def cd_config(w_min: float, w_max: float, num_ddim_timesteps: int) -> ConsistencyDistillationConfig:
    return ConsistencyDistillationConfig(
        num_ddim_timesteps=num_ddim_timesteps, w_min=w_min, w_max=w_max, target="ema", ema_decay=0.95
    )


def distill(
    student: GuidedDenoiser,
    problem: Problem,
    *,
    seed: int = 0,
    steps: int = 800,
    batch: int = 128,
    lr: float = 1e-3,
    w_range=(1.0, 8.0),
    num_ddim_timesteps: int = 50,
) -> list[float]:
    """Consistency distillation with :class:`ConsistencyDistillation` (its online augmented teacher step and its loss),
    EMA target, Adam; the CD loss of every step."""
    bb = ToyBackbone(problem)
    obj = ConsistencyDistillation(cd_config(*w_range, num_ddim_timesteps), bb, seed)
    obj.module = student
    obj.ema = EMA(student, obj.cfg.ema_decay)
    obj.target = obj.ema.model
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(30_000 + seed)
    null = problem.null(batch)
    losses = []
    for step in range(steps):
        labels = torch.randint(0, problem.classes, (batch,), generator=g)
        data = {
            "latents": problem.sample(labels, g),
            "cond": problem.onehot(labels),
            "uncond": null,
            "positions": range(step * batch, (step + 1) * batch),
        }
        loss, _ = obj.loss(student, data)
        opt.zero_grad()
        loss.backward()
        opt.step()
        obj.ema.update(student)
        losses.append(float(loss.detach()))
    return losses


# ---- measurement ---------------------------------------------------------------------------------------
def student_sampler(student: GuidedDenoiser, problem: Problem, steps: int = 4, num_ddim_timesteps: int = 50):
    """``(labels, w, seed) -> x0`` as :func:`t2vturbo.sample.sample_student`: z_T drawn first from the seed's
    generator, the sampler's re-noising continues the stream."""
    param = Parameterisation("sample", problem.alphas_cumprod)
    times = param.consistency_times(steps, num_ddim_timesteps)
    student.eval()

    def sample(labels, w, seed):
        labels = torch.as_tensor(labels)
        cond, wb = problem.onehot(labels), torch.full((len(labels),), float(w))
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(len(labels), problem.dim, generator=g)
        return multistep_consistency_sample(
            lambda z, t: student(z, t, cond, wb), noise.shape, times, param, generator=g, noise=noise
        )

    return sample


def teacher_sampler(problem: Problem, steps: int = 50):
    """``(labels, w, seed) -> x0`` as :func:`t2vturbo.sample.sample_teacher`: DDIM + CFG (LCM form) of the analytic
    teacher from the seed's z_T."""
    param = Parameterisation("sample", problem.alphas_cumprod)
    teacher = AnalyticTeacher(problem)

    def sample(labels, w, seed):
        labels = torch.as_tensor(labels)
        cond, uncond = problem.onehot(labels), problem.null(len(labels))
        g = torch.Generator().manual_seed(seed)
        z_T = torch.randn(len(labels), problem.dim, generator=g)

        def denoise(z, t):
            return param.x0_eps(apply_cfg(teacher(z, t, cond), teacher(z, t, uncond), w), z, t)

        return ode_sample(denoise, z_T, param.teacher_times(steps), param)

    return sample


def eval_labels(problem: Problem, per_class: int) -> list[int]:
    return [c for c in range(problem.classes) for _ in range(per_class)]


def measure(student, problem, w_range=(1.0, 8.0), per_class: int = 500, num_ddim_timesteps: int = 50) -> dict:
    """:func:`response_table` of the student's 4-step samples against the teacher's DDIM-50 + CFG (one batch, seed 0)
    at the four w of :func:`default_guidance_scales`; each "prompt" is one (class, z_T) pair."""
    labels = eval_labels(problem, per_class)
    with torch.no_grad():
        return response_table(
            student_sampler(student, problem, 4, num_ddim_timesteps),
            teacher_sampler(problem),
            labels,
            default_guidance_scales(w_range),
            batch=len(labels),
        )


def frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet (Gaussian W2^2) distance between the mean / covariance of two sample sets [N, d]."""
    a, b = a.double(), b.double()
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    ea, va = torch.linalg.eigh(ca)
    sa = va @ torch.diag(ea.clamp_min(0).sqrt()) @ va.T
    cross = torch.linalg.eigvalsh(sa @ cb @ sa).clamp_min(0).sqrt().sum()
    return float((a.mean(0) - b.mean(0)).pow(2).sum() + torch.trace(ca) + torch.trace(cb) - 2 * cross)


def distribution_nearest_w(
    student, problem, ws, teacher_ws, per_class: int = 400, num_ddim_timesteps: int = 50
):
    """Per student w, the teacher w (of ``teacher_ws``) whose samples are nearest in the class-averaged Frechet
    distance (student and teacher from different noise: a distribution match, not a paired one)."""
    labels = eval_labels(problem, per_class)
    lab = torch.as_tensor(labels)
    s, r = student_sampler(student, problem, 4, num_ddim_timesteps), teacher_sampler(problem)
    with torch.no_grad():
        tea = {w: r(labels, w, 1) for w in teacher_ws}
        out = []
        for w in ws:
            x = s(labels, w, 2)
            d = [
                np.mean([frechet(x[lab == c], tea[tw][lab == c]) for c in range(problem.classes)])
                for tw in teacher_ws
            ]
            out.append(float(teacher_ws[int(np.argmin(d))]))
    return out


def run(
    init: str,
    seed: int,
    *,
    fit_steps: int = 800,
    cd_steps: int = 800,
    batch: int = 128,
    lr: float = 1e-3,
    w_range=(1.0, 8.0),
    per_class: int = 500,
    num_ddim_timesteps: int = 50,
    teacher_net=None,
    problem=None,
) -> dict:
    """The whole experiment for one init and seed (``teacher_net`` / ``problem`` reuse a fitted one)."""
    t0 = time.perf_counter()
    problem = problem if problem is not None else make_problem(seed)
    fit_mse = None
    if teacher_net is None:
        teacher_net, fit_mse = fit_teacher_net(problem, seed, fit_steps)
    student = make_student(teacher_net, init, seed)
    before = measure(student, problem, w_range, per_class, num_ddim_timesteps)
    student.train()
    losses = distill(
        student,
        problem,
        seed=seed,
        steps=cd_steps,
        batch=batch,
        lr=lr,
        w_range=w_range,
        num_ddim_timesteps=num_ddim_timesteps,
    )
    rep = measure(student, problem, w_range, per_class, num_ddim_timesteps)
    proj = student.base.time_embedding.cond_proj.weight
    return {
        "init": init,
        "seed": seed,
        "fit_mse": fit_mse,
        "response_before": before["response"],
        "response": rep["response"],
        "response_ci95": rep["response_ci95"],
        "effective_guidance": rep["effective_guidance"],
        "guidance": rep["guidance"],
        "mse_diag": [rep["mse"][i][i] for i in range(len(rep["guidance"]))],
        "loss_first100": float(np.mean(losses[:100])),
        "loss_last100": float(np.mean(losses[-100:])),
        "cond_proj_norm": float(proj.detach().norm()),
        "student": student,
        "problem": problem,
        "seconds": time.perf_counter() - t0,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--inits", nargs="+", default=list(INITS), choices=INITS)
    ap.add_argument("--steps", type=int, default=2000, help="consistency-distillation steps")
    ap.add_argument("--fit-steps", type=int, default=800, help="steps fitting the teacher MLP")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--w-range", type=float, nargs=2, default=[1.0, 8.0])
    ap.add_argument("--per-class", type=int, default=500)
    ap.add_argument("--no-frechet", action="store_true", help="skip the distribution-level nearest teacher w")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)

    w_range = tuple(a.w_range)
    teacher_ws = [float(w) for w in np.round(np.arange(0.0, w_range[1] + 2.0 + 1e-9, 0.25), 2)]
    rows = []
    for seed in a.seeds:
        problem = make_problem(seed)
        t0 = time.perf_counter()
        net, fit_mse = fit_teacher_net(problem, seed, steps=a.fit_steps)
        fit_s = time.perf_counter() - t0
        for init in a.inits:
            r = run(
                init,
                seed,
                cd_steps=a.steps,
                batch=a.batch,
                lr=a.lr,
                w_range=w_range,
                per_class=a.per_class,
                teacher_net=net,
                problem=problem,
            )
            r["fit_mse"], r["fit_seconds"] = fit_mse, fit_s
            if not a.no_frechet:
                r["nearest_w_frechet"] = distribution_nearest_w(
                    r["student"], problem, r["guidance"], teacher_ws
                )
            del r["student"], r["problem"]
            rows.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "mse_diag"}), flush=True)

    print()
    print(
        f"CD of the analytic mixture teacher: {a.steps} steps, batch {a.batch}, lr {a.lr:g}, w ~ U{list(w_range)}, "
        f"N = 50, EMA 0.95, pseudo-Huber c = 0.001; student 4 steps vs teacher DDIM 50 + CFG"
    )
    head = "| init | seed | response before | response [95 %] | nearest teacher w (latent MSE) |"
    if not a.no_frechet:
        head += " nearest teacher w (Frechet) |"
    print(head + " CD loss first/last 100 | |cond_proj| | s |")
    print("|" + " --- |" * (head.count("|") + 2))
    for r in rows:
        lo, hi = r["response_ci95"]
        cells = [
            r["init"],
            str(r["seed"]),
            f"{r['response_before']:.3f}",
            f"{r['response']:.3f} [{lo:.3f}, {hi:.3f}]",
            ", ".join(f"{w:g}" for w in r["effective_guidance"]),
        ]
        if not a.no_frechet:
            cells.append(", ".join(f"{w:g}" for w in r["nearest_w_frechet"]))
        cells += [
            f"{r['loss_first100']:.4f} / {r['loss_last100']:.4f}",
            f"{r['cond_proj_norm']:.2f}",
            f"{r['seconds']:.0f}",
        ]
        print("| " + " | ".join(cells) + " |")
    print()
    print("| init | response mean (sd) over seeds | CD loss last 100, mean |")
    print("| --- | --- | --- |")
    for init in a.inits:
        rs = [r for r in rows if r["init"] == init]
        resp = np.array([r["response"] for r in rs])
        loss = np.mean([r["loss_last100"] for r in rs])
        print(f"| {init} | {resp.mean():.3f} ({resp.std(ddof=1) if len(rs) > 1 else 0:.3f}) | {loss:.4f} |")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"args": vars(a), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
