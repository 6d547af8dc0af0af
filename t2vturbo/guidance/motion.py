"""Motion guidance (MotionClone-style temporal-attention energy), as T2V-Turbo-v2 uses it.

For a training clip with latents z0, caption embedding c and the teacher's noisy input z_t at grid
timestep t = t_n (grid index n of an N-point DDIM grid):

1. Reference (no grad, the clip's own caption c): a latent z_ref at the *same* t, either
   ``reference="invert"``: DDIM inversion of z0 with the teacher along the grid up to t
   (T2V-Turbo-v2), or ``reference="noise"``: z_ref = a_t z0 + s_t eps_ref with a fixed noise
   eps_ref (one teacher pass instead of n+1). Its temporal self-attention maps A_ref^l
   ([B*H*W, heads, F, F], layers l = the decoder's temporal attn1) and the top-k mask
   M^l = topk_mask(A_ref^l, k) (k = 1: the argmax of each query row).
2. Energy of the current latent (per sample b; layers l = 1..L):

       MSE_l,b = sum(M ⊙ (A^l(z_t) - A_ref^l)^2) / sum(M)          (mean over the masked entries)
       E_b     = ENERGY_SCALE * mean_l( LAYER_SCALE * MSE_l,b ),    ENERGY_SCALE = LAYER_SCALE = 100

   i.e. E = 100 x mean over layers of [100 x MSE on the masked entries] (``compute_temp_loss`` x
   ``temp_loss_scale`` in the reference code).
3. Score = dE_b/dz_t, one forward + backward through the teacher with the clip's caption. We
   differentiate sum_b E_b, so each sample's score is what a batch of one gives (the reference
   runs its preprocessing with batch size 1), independent of the micro-batch size.
4. Guided noise, only where n >= (1 - tau) * N (the noisier fraction tau of the grid):

       eps_hat = eps_cfg - LAMBDA * sqrt(1 - sqrt(alpha_bar_t)) * score,   LAMBDA = 0.05, tau = 0.5

   ``sqrt(1 - sqrt(alpha_bar_t))`` is what the reference code computes (its ``alpha_schedule`` is
   already sqrt(alpha_bar)); x0_hat is not changed; the DDIM step then uses (x0_hat, eps_hat).

Relation to the paper's lambda = 500: the paper writes the energy without the two factors of 100,
E_paper = mean_l MSE_l. Then LAMBDA * grad(100 * mean_l(100 * MSE_l)) = (0.05 * 100 * 100) *
grad(E_paper) = 500 * grad(E_paper): ``PAPER_LAMBDA = LAMBDA * ENERGY_SCALE * LAYER_SCALE = 500``.

Cost: "invert" needs n+1 teacher passes per guided sample for the reference (n >= N/2, i.e. 100-200
on the 200-grid) plus one forward+backward for the score; ``inversion_stride`` > 1 inverts on a
coarser sub-grid that still ends exactly at t_n. "noise" needs one pass. T2V-Turbo-v2 precomputes
all of this offline once per clip; here it runs online (fresh t and noise every step).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch._subclasses.fake_tensor import is_fake

from ..diffusion import add_noise, alpha_sigma, ddim_inversion_step, to_x0_eps
from .attention_capture import capture_temporal_attention, select_layers

ENERGY_SCALE = 100.0  # reference: --temp_loss_scale 100 (multiplies the layer mean)
LAYER_SCALE = 100.0  # reference: compute_temp_loss multiplies each layer's masked MSE by 100
LAMBDA = 0.05  # reference: --motion_gs 0.05 (lambda as used in code)
TAU = 0.5  # reference: --percentage 0.5 (guide grid indices n >= (1 - tau) * N)
TOPK = 1  # reference: rank_k = 1
PAPER_LAMBDA = LAMBDA * ENERGY_SCALE * LAYER_SCALE  # = 500, the paper's lambda for E_paper = mean_l MSE_l
REFERENCES = ("invert", "noise")


# ---------------------------------------------------------------------------------------------
# Pure pieces
# ---------------------------------------------------------------------------------------------
def topk_mask(a_ref: torch.Tensor, k: int = TOPK) -> torch.Tensor:
    """Boolean mask of the k largest entries of each query row (last dim) of ``a_ref``."""
    if not 1 <= k <= a_ref.shape[-1]:
        raise ValueError(f"topk={k} must be in [1, {a_ref.shape[-1]}] (number of frames)")
    idx = a_ref.topk(k, dim=-1).indices
    return torch.zeros_like(a_ref, dtype=torch.bool).scatter_(-1, idx, True)


def stat_value(x: torch.Tensor) -> float:
    """A logged statistic's value; NaN for a fake tensor (``python -m t2vturbo.plan`` runs the step without data)."""
    return float("nan") if is_fake(x) else float(x)


def _as_list(x) -> list:
    if isinstance(x, Mapping):
        return list(x.values())
    return list(x)


def motion_energy(
    maps: Sequence[torch.Tensor] | Mapping[str, torch.Tensor],
    ref_maps: Sequence[torch.Tensor] | Mapping[str, torch.Tensor],
    masks: Sequence[torch.Tensor] | Mapping[str, torch.Tensor],
    scale: float = ENERGY_SCALE,
    layer_scale: float = LAYER_SCALE,
    batch_size: int | None = None,
) -> torch.Tensor:
    """E = scale * mean_l( layer_scale * MSE_l ), MSE_l = mean of (A_l - A_ref_l)^2 over the entries
    where masks_l is True (computed in float32 or wider).

    ``batch_size=None``: one scalar over the whole batch (the reference's ``F.mse_loss`` on
    ``A[mask]``). ``batch_size=B``: per-sample energies [B]; the leading dim B*H*W of each map is
    split as [B, H*W] (diffusers' temporal layout is batch-major).
    Dicts are matched by key (order of ``maps``), sequences by position.
    """
    if isinstance(maps, Mapping):
        names = list(maps)
        a_l = [maps[n] for n in names]
        r_l = [ref_maps[n] for n in names] if isinstance(ref_maps, Mapping) else _as_list(ref_maps)
        m_l = [masks[n] for n in names] if isinstance(masks, Mapping) else _as_list(masks)
    else:
        a_l, r_l, m_l = list(maps), _as_list(ref_maps), _as_list(masks)
    if not (len(a_l) == len(r_l) == len(m_l)) or not a_l:
        raise ValueError(
            f"need the same non-zero number of maps, references and masks; got {len(a_l)}, {len(r_l)}, {len(m_l)}"
        )
    terms = []
    for a, r, m in zip(a_l, r_l, m_l):
        wide = torch.promote_types(a.dtype, torch.float32)
        d2 = (a.to(wide) - r.to(wide).detach()) ** 2
        d2 = torch.where(m, d2, torch.zeros_like(d2))
        if batch_size is None:
            mse = d2.sum() / m.sum()
        else:
            mse = d2.reshape(batch_size, -1).sum(1) / m.reshape(batch_size, -1).sum(1)
        terms.append(layer_scale * mse)
    return scale * torch.stack(terms).mean(0)


def guidance_coefficient(alphas_cumprod: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """c(t) = sqrt(1 - sqrt(alpha_bar_t)), broadcast against ``like`` (as in the reference code)."""
    a, _ = alpha_sigma(alphas_cumprod, t, like)  # a = sqrt(alpha_bar)
    return (1 - a).sqrt()


def _wide(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or wider if it already is (float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def apply_motion_score(eps_hat, score, t, idx, lam: float, alphas_cumprod):
    """``eps_hat[idx] -= lam * sqrt(1 - sqrt(alpha_bar_t)) * score`` (``score`` holds the rows ``idx``);
    the other samples are returned unchanged. Shared by online guidance and precomputed training."""
    coef = guidance_coefficient(alphas_cumprod, t[idx], score)
    out = eps_hat.clone()
    out[idx] = (_wide(eps_hat[idx]) - lam * coef * score).to(eps_hat.dtype)
    return out


def _dtype_of(module: nn.Module) -> torch.dtype:
    p = next(module.parameters(), None)
    return p.dtype if p is not None else torch.float32


# ---------------------------------------------------------------------------------------------
# Reference latents and maps
# ---------------------------------------------------------------------------------------------
def inversion_schedule(index: int, stride: int = 1) -> list[int]:
    """Ascending grid indices one inversion visits to reach grid index ``index``: every ``stride``-th
    point, ending exactly at ``index`` (stride 1: 0, 1, ..., index)."""
    if stride < 1:
        raise ValueError(f"inversion stride must be >= 1, got {stride}")
    return list(range(int(index), -1, -stride))[::-1]


@torch.no_grad()
def ddim_invert(
    teacher: nn.Module,
    z0: torch.Tensor,
    index: torch.Tensor,
    grid: torch.Tensor,
    cond: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    prediction_type: str,
    stride: int = 1,
) -> torch.Tensor:
    """DDIM inversion of clean latents z0 [B,C,F,h,w] to grid timestep ``grid[index[b]]`` per sample.

    z0 is taken as the latent at timestep 0. Each step from t_from to a noisier t_to uses the eps the
    teacher predicts for the *current* latent at the *target* timestep t_to (the convention of
    diffusers' DDIMInverseScheduler pipelines and of the T2V-Turbo-v2 reference), then
    ``ddim_inversion_step``: x0 = (z - s_from eps)/a_from, z_to = a_to x0 + s_to eps.
    Samples with different targets are batched; a sample leaves the batch when it has arrived.
    Returns float32 (or float64 for float64 z0) latents.
    """
    dev = z0.device
    grid = grid.to(dev)
    index = torch.as_tensor(index, dtype=torch.long).reshape(-1).cpu()
    scheds = [inversion_schedule(int(i), stride) for i in index]
    z = _wide(z0).clone()
    t_prev = torch.zeros(z.shape[0], dtype=torch.long, device=dev)
    dtype = _dtype_of(teacher)
    for j in range(max(len(s) for s in scheds)):
        rows = [b for b, s in enumerate(scheds) if j < len(s)]
        act = torch.tensor(rows, dtype=torch.long, device=dev)
        t_to = grid[torch.tensor([scheds[b][j] for b in rows], dtype=torch.long, device=dev)]
        z_a, t_from = z[act], t_prev[act]
        out = teacher(z_a.to(dtype), t_to, cond[act]).to(z.dtype)
        _, eps = to_x0_eps(out, z_a, t_to, alphas_cumprod, prediction_type)
        z[act] = ddim_inversion_step(z_a, eps, t_from, t_to, alphas_cumprod)
        t_prev[act] = t_to
    return z


@dataclass
class MotionReference:
    """Reference of a batch: ``maps[layer]`` = A_ref [B*H*W, heads, F, F] (detached),
    ``masks[layer]`` = top-k mask (bool, same shape), ``latents`` = z_ref [B,C,F,h,w], ``t`` [B]."""

    maps: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    latents: torch.Tensor
    t: torch.Tensor

    @property
    def layers(self) -> list[str]:
        return list(self.maps)


@torch.no_grad()
def attention_maps(
    teacher: nn.Module,
    z: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor,
    layers: str | Iterable[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Temporal attention maps of one teacher forward (no grad)."""
    with capture_temporal_attention(teacher, layers, detach=True) as store:
        teacher(z.to(_dtype_of(teacher)), t, cond)
        return store.pop()


@torch.no_grad()
def reference_maps(
    teacher: nn.Module,
    z0: torch.Tensor,
    index: torch.Tensor,
    grid: torch.Tensor,
    cond: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    prediction_type: str = "epsilon",
    reference: str = "invert",
    noise: torch.Tensor | None = None,
    layers: str | Iterable[str] | None = None,
    k: int = TOPK,
    stride: int = 1,
) -> MotionReference:
    """Reference maps of the clips z0 at t = grid[index] with their own captions ``cond`` (no grad).

    ``reference="invert"``: z_ref = DDIM inversion of z0 to t (:func:`ddim_invert`, ``stride``);
    ``reference="noise"``: z_ref = a_t z0 + s_t noise (``noise`` required, fixed per clip).
    """
    index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
    t = grid.to(z0.device)[index.to(z0.device)]
    if reference == "invert":
        z_ref = ddim_invert(teacher, z0, index, grid, cond, alphas_cumprod, prediction_type, stride)
    elif reference == "noise":
        if noise is None:
            raise ValueError("reference='noise' needs the fixed reference noise")
        z_ref = add_noise(alphas_cumprod, _wide(z0), noise.to(z0.device, _wide(z0).dtype), t)
    else:
        raise ValueError(f"unknown motion reference {reference!r}; expected one of {REFERENCES}")
    maps = attention_maps(teacher, z_ref, t, cond, layers)
    masks = {n: topk_mask(a, k) for n, a in maps.items()}
    return MotionReference(maps, masks, z_ref, t)


# ---------------------------------------------------------------------------------------------
# Score
# ---------------------------------------------------------------------------------------------
def motion_score(
    teacher: nn.Module,
    z_t: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor,
    ref: MotionReference,
    scale: float = ENERGY_SCALE,
    layer_scale: float = LAYER_SCALE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(score, energy): score = d(sum_b E_b)/dz_t [B,C,F,h,w] in float32 or wider (so score_b = dE_b/dz_b) and
    the per-sample energies E_b [B], by one forward + backward through the teacher with ``cond``.

    Only z_t is differentiated (``torch.autograd.grad`` w.r.t. z_t): the teacher's parameters never
    receive ``.grad``, even if they require grad. Works inside ``torch.no_grad()`` callers.
    """
    b = z_t.shape[0]
    with torch.enable_grad():
        z = _wide(z_t.detach()).requires_grad_(True)
        with capture_temporal_attention(teacher, ref.layers) as store:
            teacher(z.to(_dtype_of(teacher)), t, cond)
            maps = store.pop()
            energy = motion_energy(maps, ref.maps, ref.masks, scale, layer_scale, batch_size=b)
            # inside the block: an activation-checkpointed teacher recomputes through our processors
            (score,) = torch.autograd.grad(energy.sum(), z)
    return score.detach(), energy.detach()


# ---------------------------------------------------------------------------------------------
# The objective's hook
# ---------------------------------------------------------------------------------------------
def _noise_generator(seed: int, position: int) -> torch.Generator:
    g = torch.Generator()
    # a stream of its own (not the training draws' stream: equal noise would give z_ref == z_t)
    g.manual_seed((int(seed) * 1_000_033 + int(position) * 104_729 + 424_242) % (2**63 - 1))
    return g


class MotionGuidance:
    """Motion guidance of the online teacher: ``mg.score(z_t, t, cond, batch) -> (score, guided)`` (used by
    :class:`t2vturbo.train.teacher.OnlineTeacher`) and ``mg(z_t, t, cond, eps_hat, batch) -> eps_hat``.

    Per sample with grid index n (t = grid[n]) and n >= (1 - tau) * N:
        eps_hat <- eps_hat - lam * sqrt(1 - sqrt(alpha_bar_t)) * dE/dz_t
    with E from :func:`motion_energy` against the reference of the sample's own clip
    (``batch["latents"]`` = its clean latents z0, ``cond`` = its caption). Other samples' eps_hat are
    returned bit for bit unchanged, and no teacher pass is spent on them. Samples whose
    ``batch["use_motion_guide"]`` flag is false (a mixture source's setting) are never guided.

    ``lam`` is lambda as the reference *code* uses it (0.05, with E carrying the two factors of 100);
    the paper's lambda = 500 is ``lam * energy_scale * layer_scale`` (see module docstring).

    ``stats`` (after each call): ``mg_fraction`` (guided samples / batch), ``mg_score_abs`` (mean
    |score| over the guided samples' entries, 0 if none), ``mg_energy`` (mean E over guided samples).
    """

    def __init__(
        self,
        backbone,
        grid: torch.Tensor,
        lam: float = LAMBDA,
        tau: float = TAU,
        reference: str = "invert",
        layers: str | Iterable[str] | None = None,
        topk: int = TOPK,
        energy_scale: float = ENERGY_SCALE,
        layer_scale: float = LAYER_SCALE,
        inversion_stride: int = 1,
        seed: int = 0,
    ):
        if reference not in REFERENCES:
            raise ValueError(f"unknown motion reference {reference!r}; expected one of {REFERENCES}")
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"motion guidance tau={tau} must be in [0, 1]")
        self.bb = backbone
        self.teacher = backbone.teacher
        self.grid = torch.as_tensor(grid, dtype=torch.long).cpu()
        self.lam, self.tau, self.reference = float(lam), float(tau), reference
        self.layers = select_layers(self.teacher, layers)
        self.topk = int(topk)
        self.energy_scale, self.layer_scale = float(energy_scale), float(layer_scale)
        self.inversion_stride = int(inversion_stride)
        self.seed = int(seed)
        self.stats: dict[str, float] = {"mg_fraction": 0.0, "mg_score_abs": 0.0, "mg_energy": 0.0}

    @classmethod
    def from_config(cls, gcfg, backbone, grid, seed: int = 0) -> MotionGuidance:
        """From the ``guidance`` config group (keys: lam, tau, reference, layers, topk, energy_scale,
        layer_scale, inversion_stride)."""
        layers = gcfg.layers
        if layers is not None and not isinstance(layers, str):
            layers = list(layers)
        return cls(
            backbone,
            grid,
            lam=gcfg.lam,
            tau=gcfg.tau,
            reference=gcfg.reference,
            layers=layers,
            topk=gcfg.topk,
            energy_scale=gcfg.energy_scale,
            layer_scale=gcfg.layer_scale,
            inversion_stride=gcfg.inversion_stride,
            seed=seed,
        )

    # ---- schedule ---------------------------------------------------------------------------
    @property
    def num_grid(self) -> int:
        return len(self.grid)

    def grid_index(self, t: torch.Tensor) -> torch.Tensor:
        """Grid index n of each timestep t (raises if a t is not a grid point)."""
        t = torch.as_tensor(t, dtype=torch.long).reshape(-1).cpu()
        n = torch.searchsorted(self.grid, t).clamp(max=self.num_grid - 1)
        if not torch.equal(self.grid[n], t):
            raise ValueError(
                f"timesteps {t.tolist()} are not all on the DDIM grid {self.grid.tolist()[:4]}..."
            )
        return n

    def guided(self, t: torch.Tensor, flags=None) -> torch.Tensor:
        """[B] bool: n >= (1 - tau) * N (the reference's condition on the start index), and the
        sample's ``use_motion_guide`` flag where ``flags`` (one bool per sample) is given."""
        g = self.grid_index(t) >= (1.0 - self.tau) * self.num_grid
        if flags is not None:
            f = torch.as_tensor(list(flags), dtype=torch.bool).reshape(-1)
            if f.shape != g.shape:
                raise ValueError(f"use_motion_guide has {f.numel()} flags for a batch of {g.numel()}")
            g = g & f
        return g

    def student_eta(self, t: torch.Tensor, eta: torch.Tensor, flags=None) -> torch.Tensor:
        """The student's eta input per sample: eta where guided, 0 elsewhere (as the reference feeds
        its motion-scale embedding)."""
        eta = torch.as_tensor(eta, dtype=torch.float32).reshape(-1)
        return torch.where(self.guided(t, flags), eta, torch.zeros_like(eta))

    # ---- reference ----------------------------------------------------------------------------
    def reference_noise(self, positions, shape, device) -> torch.Tensor:
        """Fixed reference noise per clip position (reference='noise'); a stream separate from the
        training noise."""
        return torch.stack(
            [torch.randn(tuple(shape), generator=_noise_generator(self.seed, p)) for p in positions]
        ).to(device)

    def reference_for(self, z0, t, cond, positions=None) -> MotionReference:
        """The :class:`MotionReference` of clips z0 at grid timesteps t with captions cond (no grad)."""
        index = self.grid_index(t)
        noise = None
        if self.reference == "noise":
            if positions is None:
                positions = list(range(z0.shape[0]))
            noise = self.reference_noise(positions, z0.shape[1:], z0.device)
        return reference_maps(
            self.teacher,
            z0,
            index,
            self.grid,
            cond,
            self.bb.alphas_cumprod,
            self.bb.prediction_type,
            reference=self.reference,
            noise=noise,
            layers=self.layers,
            k=self.topk,
            stride=self.inversion_stride,
        )

    # ---- hook ---------------------------------------------------------------------------------
    def score(self, z_t, t, cond, batch=None):
        """``(score [B, ...], guided [B] bool)``: dE/dz_t of the guided samples (zeros elsewhere, and no
        teacher pass spent on them). ``batch["latents"]``: the clips' clean latents z0 (the references);
        ``batch["positions"]`` / ``batch["use_motion_guide"]`` as in the training batch. Sets ``stats``."""
        guided = self.guided(t, (batch or {}).get("use_motion_guide"))
        b = z_t.shape[0]
        if not bool(guided.any()):
            self.stats = {"mg_fraction": 0.0, "mg_score_abs": 0.0, "mg_energy": 0.0}
            return torch.zeros(z_t.shape, dtype=torch.float32, device=z_t.device), guided.to(z_t.device)
        if batch is None or batch.get("latents") is None:
            raise ValueError(
                "motion guidance needs the clips' clean latents: pass batch['latents'] = z0 to the teacher "
                "step (see docs/MOTION_GUIDANCE.md)"
            )
        idx = guided.nonzero().squeeze(1).to(z_t.device)
        z0 = batch["latents"][idx]
        positions = batch.get("positions")
        pos = [positions[i] for i in idx.tolist()] if positions is not None else None
        t = torch.as_tensor(t).to(z_t.device)
        ref = self.reference_for(z0, t[idx], cond[idx], pos)
        s, energy = motion_score(
            self.teacher, z_t[idx], t[idx], cond[idx], ref, self.energy_scale, self.layer_scale
        )
        score = torch.zeros(z_t.shape, dtype=_wide(s).dtype, device=z_t.device)
        score[idx] = _wide(s)
        self.stats = {
            "mg_fraction": float(len(idx)) / b,
            "mg_score_abs": stat_value(s.abs().mean()),
            "mg_energy": stat_value(energy.mean()),
        }
        return score, guided.to(z_t.device)

    def __call__(self, z_t, t, cond, eps_hat, batch=None):
        """``eps_hat`` with the guided samples' ``- lam sqrt(1 - sqrt(ab_t)) score`` applied (the others bit
        for bit unchanged)."""
        score, guided = self.score(z_t, t, cond, batch)
        if not bool(guided.any()):
            return eps_hat
        idx = guided.nonzero().squeeze(1)
        return apply_motion_score(
            eps_hat, score[idx], torch.as_tensor(t).to(z_t.device), idx, self.lam, self.bb.alphas_cumprod
        )
