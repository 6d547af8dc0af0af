"""Analytic, differentiable rewards for the toy world (:mod:`t2vturbo.data.toy`).

No weights: both rewards read the prompt with its toy world's caption parser (the single-shape
world's or the crowd world's, :func:`t2vturbo.data.worlds.world_of_prompt`: both name a colour and a
direction, on the same background) and score pixel statistics of a *soft* foreground mask.  A prompt that is
not a toy-world caption (real prompts may be mixed into a batch) scores exactly 0 with zero gradient and
is counted in ``reward.num_unparsable`` (``reward.last_valid`` is the mask of the last
call); it never raises.

Soft foreground (all colours in [0, 1] units, ``x = (frames + 1) / 2``)::

    s = ||x - background||²                  per pixel (background = (30, 30, 30) / 255)
    w = s² / (s² + kappa⁴)                   in [0, 1), kappa = 0.3

``w`` is the Hill function of the colour distance ``d = sqrt(s)`` with exponent 4 and
half-point ``kappa``: exactly 0 on the plain background, <= 2e-3 on the textured one
(<= 9 levels per channel), 0.96-0.99 on palette colours (distance 0.68-1.06 from the
background), 0.5 at distance 0.3.  Unlike a sharp sigmoid its slope on the foreground is
large (dw/dd ~ 0.2 at d = 0.68), so gradients reach the pixels.  Pure polynomial in
``x``: no sqrt, no NaN on empty frames.

``toy_color`` (kind ``image``): per frame the foreground-weighted mean colour, with one
pseudo-pixel of background colour (weight ``1e-3``) so an empty frame's mean is the
background colour::

    m_f = (sum_i w_i x_i + 1e-3 * bg) / (sum_i w_i + 1e-3)
    mode="distance" (default):  r = mean_f -||m_f - target||          range [-sqrt(3), 0]
    mode="logprob":             r = mean_f log softmax_k(-||m_f - p_k|| / T)[target]
                                over the 4 palette colours p_k, T = 0.1, range (-inf, 0]

0 (distance) is reached iff the foreground mean equals the prompt colour exactly; the
score ignores the area of the foreground (that is shape, not colour).  Ground-truth
clips: ~0 for the right colour (>= -0.002 on the textured background), -0.67 (red vs
yellow, the closest pair) down to -1.17 (blue vs yellow) for wrong colours; an empty
frame scores -||bg - target|| (-0.68 to -1.06).  The gradient of the distance w.r.t. the
mean colour has unit norm, spread over the foreground pixels (weights ``w_i / sum w``).

``toy_motion`` (kind ``video``): soft centroid per frame (``x`` = column, ``y`` = row,
image coordinates, "up" = ``y`` decreasing; an empty frame's centroid is the frame
centre), velocity ``v`` (px/frame) = least-squares slope of centroid vs frame index,
frames weighted by their (detached) presence ``a_t = M_t / (M_t + 1)``, ``M_t = sum_i w_i``
(foreground mass in pixels).  With the prompt's unit direction ``u``, ``v_par = v . u``,
``v_perp = ||v - v_par u||``::

    moving prompt:  r_dir = tanh((v_par - v_perp - margin) / scale)
    "still":        r_dir = tanh((margin - ||v||) / scale)
    reward          = p * (r_dir + 1) - 1,   p = mean_t a_t (object presence, with grad)

``margin`` = 0.5 px/frame, ``scale`` = 1 px/frame (at the input resolution).  Range
(-1, 1).  Ground truth at 32 px (speed 1.5-3 px/frame, shapes of >= 25 px, p >= 0.96):
right direction ~ 0.67-0.95 (moving) or ~ 0.40-0.45 ("still"), every wrong direction
<= -0.48; a clip with no object scores ~ -1 for every prompt.  A single frame has
``v = 0``.  Pristine (hard-edged) clips have small pixel gradients for this reward (the
centroid moves only by re-weighting edge pixels); blurry generated frames have larger ones.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import torch

from ..data.toy import BACKGROUND, COLORS, DIRECTION_VECTORS
from ..data.worlds import world_of_prompt
from .base import Reward, to_unit_range
from .registry import register

__all__ = [
    "ToyColorReward",
    "ToyMotionReward",
    "foreground_mean_color",
    "foreground_weight",
    "least_squares_velocity",
    "soft_centroids",
]

logger = logging.getLogger(__name__)

#: Weight of the background-coloured pseudo-pixel / frame-centre pseudo-point.
PRIOR_WEIGHT = 1e-3


@lru_cache(maxsize=4096)
def _parse(prompt: str) -> dict[str, str] | None:
    try:
        return world_of_prompt(prompt).parse_caption(prompt)
    except ValueError:
        return None


def _rgb(color: tuple[int, int, int] | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(color, dtype=like.dtype, device=like.device).reshape(3) / 255.0


def foreground_weight(x01: torch.Tensor, background=BACKGROUND, kappa: float = 0.3) -> torch.Tensor:
    """Soft foreground ``w = s² / (s² + kappa⁴)``, ``s = ||x - bg||²``: ``[..., 3, H, W] -> [..., H, W]``.

    ``x01`` in [0, 1] colour units, ``background`` an RGB uint8 triple.
    """
    bg = _rgb(background, x01).reshape(3, 1, 1)
    s = (x01 - bg).pow(2).sum(dim=-3)
    s2 = s * s
    return s2 / (s2 + kappa**4)


def foreground_mean_color(x01: torch.Tensor, w: torch.Tensor, background=BACKGROUND) -> torch.Tensor:
    """Weighted mean colour per frame ``[..., 3]`` (one background pseudo-pixel of weight 1e-3)."""
    bg = _rgb(background, x01)
    num = (x01 * w.unsqueeze(-3)).sum(dim=(-2, -1)) + PRIOR_WEIGHT * bg
    den = w.sum(dim=(-2, -1)).unsqueeze(-1) + PRIOR_WEIGHT
    return num / den


def soft_centroids(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted centroid ``[..., 2]`` as ``(x, y)`` pixel coordinates, and the mass ``[...]``.

    ``w``: ``[..., H, W]``.  One pseudo-point of weight 1e-3 at the frame centre keeps an
    empty frame finite (its centroid is the centre).
    """
    h, wd = w.shape[-2:]
    ys = torch.arange(h, dtype=w.dtype, device=w.device)
    xs = torch.arange(wd, dtype=w.dtype, device=w.device)
    mass = w.sum(dim=(-2, -1))
    sx = (w.sum(dim=-2) * xs).sum(dim=-1) + PRIOR_WEIGHT * (wd - 1) / 2.0
    sy = (w.sum(dim=-1) * ys).sum(dim=-1) + PRIOR_WEIGHT * (h - 1) / 2.0
    den = mass + PRIOR_WEIGHT
    return torch.stack([sx / den, sy / den], dim=-1), mass


def least_squares_velocity(centroids: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(Weighted) least-squares slope of ``centroids [..., F, 2]`` vs frame index -> ``[..., 2]``.

    ``weights [..., F]`` (default uniform).  ``F = 1`` (or all weight on one frame) gives 0.
    """
    f = centroids.shape[-2]
    t = torch.arange(f, dtype=centroids.dtype, device=centroids.device)
    if weights is None:
        weights = torch.ones(centroids.shape[:-1], dtype=centroids.dtype, device=centroids.device)
    a = weights / (weights.sum(dim=-1, keepdim=True) + 1e-12)
    tc = t - (a * t).sum(dim=-1, keepdim=True)  # [..., F]
    cc = centroids - (a.unsqueeze(-1) * centroids).sum(dim=-2, keepdim=True)
    num = (a * tc).unsqueeze(-1).mul(cc).sum(dim=-2)
    den = (a * tc * tc).sum(dim=-1, keepdim=True) + 1e-8
    return num / den


class _ToyReward(Reward):
    expects = "no weights (analytic)"

    def __init__(self, background=BACKGROUND, kappa: float = 0.3) -> None:
        super().__init__()
        self.background = tuple(int(c) for c in background)
        self.kappa = float(kappa)
        self.num_unparsable = 0
        self.last_valid: torch.Tensor | None = None
        self._warned = False

    @classmethod
    def from_pretrained(cls, path=None, **kwargs):
        """Analytic reward: ``path`` is ignored (accepted so every reward builds the same way)."""
        return cls(**kwargs)

    @classmethod
    def tiny(cls, **kwargs):
        return cls(**kwargs)

    def _parse_batch(self, prompts: list[str], key: str) -> tuple[list[str | None], torch.Tensor]:
        parsed = [_parse(p) if isinstance(p, str) else None for p in prompts]
        values = [None if p is None else p[key] for p in parsed]
        valid = torch.tensor([v is not None for v in values], dtype=torch.bool)
        n_bad = int((~valid).sum())
        if n_bad:
            self.num_unparsable += n_bad
            if not self._warned:
                self._warned = True
                bad = next(p for p, v in zip(prompts, values) if v is None)
                logger.warning("%s: %d non-toy prompt(s) score 0 (first: %r)", self.name, n_bad, bad)
        self.last_valid = valid
        return values, valid

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kappa={self.kappa}"


@register("toy_color")
class ToyColorReward(_ToyReward):
    """Colour alignment of the soft foreground with the prompt's colour (module docstring)."""

    kind = "image"

    def __init__(
        self, mode: str = "distance", temperature: float = 0.1, background=BACKGROUND, kappa: float = 0.3
    ) -> None:
        super().__init__(background=background, kappa=kappa)
        if mode not in ("distance", "logprob"):
            raise ValueError(f"mode must be 'distance' or 'logprob', got {mode!r}")
        self.mode = mode
        self.temperature = float(temperature)
        names = list(COLORS)
        self._color_index = {c: i for i, c in enumerate(names)}
        self.register_buffer(
            "palette", torch.tensor([COLORS[c] for c in names], dtype=torch.float32) / 255.0, persistent=False
        )

    def mean_colors(self, frames: torch.Tensor) -> torch.Tensor:
        """Foreground mean colour ``[B, F, 3]`` in [0, 1] of ``frames [B, F, 3, H, W]`` in [-1, 1]."""
        x = to_unit_range(frames.float())
        w = foreground_weight(x, self.background, self.kappa)
        return foreground_mean_color(x, w, self.background)

    def score(self, frames: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        colors, valid = self._parse_batch(prompts, "color")
        m = self.mean_colors(frames)  # [B, F, 3]
        idx = torch.tensor([self._color_index[c] if c else 0 for c in colors], device=m.device)
        palette = self.palette.to(m.device)
        # Smooth distance sqrt(s + d²) - d: exactly 0 at a match, finite gradient everywhere.
        delta = 1e-4
        if self.mode == "distance":
            target = palette[idx][:, None, :]  # [B, 1, 3]
            r = -(((m - target) ** 2).sum(-1) + delta**2).sqrt() + delta  # [B, F]
        else:
            dist = (((m.unsqueeze(-2) - palette) ** 2).sum(-1) + delta**2).sqrt()  # [B, F, K]
            logp = torch.log_softmax(-dist / self.temperature, dim=-1)
            r = logp.gather(-1, idx[:, None, None].expand(-1, logp.shape[1], 1)).squeeze(-1)
        r = r.mean(dim=1)
        return torch.where(valid.to(r.device), r, torch.zeros_like(r))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode!r}"


@register("toy_motion")
class ToyMotionReward(_ToyReward):
    """Direction alignment of the soft-centroid velocity with the prompt (module docstring)."""

    kind = "video"

    def __init__(
        self,
        margin: float = 0.5,
        scale: float = 1.0,
        presence_px: float = 1.0,
        background=BACKGROUND,
        kappa: float = 0.3,
    ) -> None:
        super().__init__(background=background, kappa=kappa)
        self.margin = float(margin)
        self.scale = float(scale)
        self.presence_px = float(presence_px)

    def velocity(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(v [B, 2] px/frame as (vx, vy), presence [B, F] in [0, 1))`` of ``frames [B, F, 3, H, W]``."""
        x = to_unit_range(frames.float())
        w = foreground_weight(x, self.background, self.kappa)  # [B, F, H, W]
        cent, mass = soft_centroids(w)  # [B, F, 2], [B, F]
        presence = mass / (mass + self.presence_px)
        v = least_squares_velocity(cent, presence.detach())
        return v, presence

    def score(self, frames: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        directions, valid = self._parse_batch(prompts, "direction")
        v, presence = self.velocity(frames)
        u = torch.tensor(
            [DIRECTION_VECTORS[d] if d else (0, 0) for d in directions], dtype=v.dtype, device=v.device
        )
        still = torch.tensor([d == "still" for d in directions], device=v.device)
        eps2 = 1e-8
        v_par = (v * u).sum(-1)
        v_perp = ((v - v_par[:, None] * u).pow(2).sum(-1) + eps2).sqrt()
        speed = (v.pow(2).sum(-1) + eps2).sqrt()
        r_move = torch.tanh((v_par - v_perp - self.margin) / self.scale)
        r_still = torch.tanh((self.margin - speed) / self.scale)
        r_dir = torch.where(still, r_still, r_move)
        p = presence.mean(dim=1)
        r = p * (r_dir + 1.0) - 1.0
        return torch.where(valid.to(r.device), r, torch.zeros_like(r))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.margin}, scale={self.scale}"
