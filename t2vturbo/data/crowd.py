"""The "crowd" toy world: where few-step sampling is hard (issue #24).

Every clip shows one, two or three balls of one colour, translating together at one velocity
(left / right / up / down at a slow or fast speed, or standing still) on a dark background.  The
caption names the count, the colour, the direction and the speed class::

    "two red balls moving left fast"      "a blue ball moving up slow"      "three green balls standing still"

and leaves the rest to chance: where each ball starts (uniform over every placement that keeps
all balls inside the frame and apart), each ball's radius and the exact speed inside its class.
So the clean clip is under-determined by the prompt, and the posterior mean of a noisy clip at
high noise is a blur over many placements -- the regime in which a teacher's 4-step DDIM is poor
(the single-object world of :mod:`t2vturbo.data.toy` fixes almost everything, docs/TOY_WORLDS.md).

Conventions are those of :mod:`t2vturbo.data.toy` (image coordinates, rasterisation rule, the
palette and background, ``render_clip`` a pure function of the attributes and the seed).

Geometry (32 px frames, 8 frames; scaled with the frame size):

* radius uniform in ``[0.08, 0.11] * size`` (2.56 .. 3.52 px);
* speed uniform in :data:`SPEED_CLASSES` (px/frame): slow ``[0.75, 1.5]``, fast ``[2.0, 2.75]``
  -- the classes are separated by 0.5 px/frame = 3.5 px over the clip;
* every pair of balls keeps a centre distance >= ``r_i + r_j + MIN_GAP`` (3 px) in every frame
  (they share one velocity, so the first frame decides), so each ball is its own connected
  component with >= 2.5 px of background between rasterised balls.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .toy import COLORS, DIRECTION_VECTORS, DIRECTIONS, ToyClipDataset, _background, _shape_masks

__all__ = [
    "COUNT_WORDS",
    "CROWD_WORDS",
    "MIN_GAP",
    "SPEED_CLASSES",
    "CrowdAttributes",
    "CrowdClipDataset",
    "caption",
    "held_out_prompts",
    "parse_caption",
    "radius_range",
    "render_clip",
    "sample_attributes",
]

#: Caption word of each ball count.
COUNT_WORDS: dict[int, str] = {1: "a", 2: "two", 3: "three"}
#: Speed classes (caption word -> uniform range in px/frame).
SPEED_CLASSES: dict[str, tuple[float, float]] = {"slow": (0.75, 1.5), "fast": (2.0, 2.75)}
#: Minimum background gap between two balls' edges (px, before rasterisation).
MIN_GAP: float = 3.0
#: Words the crowd captions use beyond the toy world's vocabulary (the teacher's tokenizer adds them).
CROWD_WORDS: tuple[str, ...] = ("two", "three", "ball", "balls")

_PLACEMENT_TRIES = 2000


@dataclass(frozen=True)
class CrowdAttributes:
    """Everything needed to render one crowd clip.

    ``speed`` in px/frame (0 when still), ``radii`` and ``starts`` (``(x, y)`` centres at frame 0)
    one per ball.
    """

    color: str
    count: int
    direction: str
    speed_class: str | None
    speed: float
    radii: tuple[float, ...]
    starts: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise ValueError(f"unknown color {self.color!r}; expected one of {sorted(COLORS)}")
        if self.count not in COUNT_WORDS:
            raise ValueError(f"count must be one of {sorted(COUNT_WORDS)}, got {self.count}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {self.direction!r}; expected one of {DIRECTIONS}")
        if (self.direction == "still") != (self.speed_class is None):
            raise ValueError("speed_class is None exactly when the direction is 'still'")
        if self.speed_class is not None and self.speed_class not in SPEED_CLASSES:
            raise ValueError(
                f"unknown speed class {self.speed_class!r}; expected one of {sorted(SPEED_CLASSES)}"
            )
        if len(self.radii) != self.count or len(self.starts) != self.count:
            raise ValueError(f"{self.count} balls need {self.count} radii and starts")

    def velocity(self) -> tuple[float, float]:
        dx, dy = DIRECTION_VECTORS[self.direction]
        return (dx * float(self.speed), dy * float(self.speed))

    def centers(self, num_frames: int) -> np.ndarray:
        """Ball centres, float64 ``[count, num_frames, 2]`` as ``(x, y)``."""
        t = np.arange(num_frames, dtype=np.float64)[None, :, None]
        return np.asarray(self.starts, dtype=np.float64)[:, None, :] + t * np.asarray(self.velocity())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (lists for the per-ball fields)."""
        return {
            "color": self.color,
            "count": int(self.count),
            "direction": self.direction,
            "speed_class": self.speed_class,
            "speed": float(self.speed),
            "radii": [float(r) for r in self.radii],
            "starts": [[float(x), float(y)] for x, y in self.starts],
        }


# --------------------------------------------------------------------------- captions

_CAPTION_RE = re.compile(
    r"^(?P<count>a|two|three) (?P<color>\w+) (?P<noun>balls?) "
    r"(?:moving (?P<direction>\w+) (?P<speed>\w+)|standing still)$"
)


def caption(attrs: CrowdAttributes) -> str:
    """``"two red balls moving left fast"`` / ``"a blue ball standing still"``."""
    noun = "ball" if attrs.count == 1 else "balls"
    motion = (
        "standing still" if attrs.direction == "still" else f"moving {attrs.direction} {attrs.speed_class}"
    )
    return f"{COUNT_WORDS[attrs.count]} {attrs.color} {noun} {motion}"


def parse_caption(text: str) -> dict[str, Any]:
    """Inverse of :func:`caption`: ``{"color", "count", "direction", "speed_class"}`` (speed_class
    None for "standing still").  Case and whitespace are normalised; anything else raises ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"caption must be a str, got {type(text).__name__}")
    norm = " ".join(text.strip().lower().split())
    m = _CAPTION_RE.match(norm)
    if m is None:
        raise ValueError(f"not a crowd caption: {text!r}")
    count = {w: n for n, w in COUNT_WORDS.items()}[m.group("count")]
    direction, speed = m.group("direction"), m.group("speed")
    if (
        m.group("color") not in COLORS
        or (m.group("noun") == "ball") != (count == 1)
        or (direction is not None and (direction not in DIRECTIONS or direction == "still"))
        or (speed is not None and speed not in SPEED_CLASSES)
    ):
        raise ValueError(f"not a crowd caption: {text!r}")
    return {
        "color": m.group("color"),
        "count": count,
        "direction": direction if direction is not None else "still",
        "speed_class": speed,
    }


def held_out_prompts() -> list[str]:
    """Every caption: 4 colours x 3 counts x (4 directions x 2 speeds + still) = 108, in a fixed order."""
    motions = [f"moving {d} {s}" for d in DIRECTIONS if d != "still" for s in SPEED_CLASSES] + [
        "standing still"
    ]
    return [
        f"{COUNT_WORDS[n]} {c} {'ball' if n == 1 else 'balls'} {m}"
        for c in COLORS
        for n in COUNT_WORDS
        for m in motions
    ]


# --------------------------------------------------------------------------- sampling


def radius_range(size: int) -> tuple[float, float]:
    """``(min, max)`` ball radius for a ``size`` px frame ((2.56, 3.52) at 32 px)."""
    return 0.08 * size, 0.11 * size


def sample_attributes(
    rng: np.random.Generator, size: int = 32, num_frames: int = 8, directions: Sequence[str] | None = None
) -> CrowdAttributes:
    """Uniform colour, count, direction (from ``directions``, default all) and speed class; speed,
    radii and start positions uniform subject to every ball staying inside ``[0, size - 1]`` in every
    frame and the balls keeping :data:`MIN_GAP` apart (rejection sampling, bounded)."""
    color = list(COLORS)[int(rng.integers(len(COLORS)))]
    count = int(rng.integers(1, len(COUNT_WORDS) + 1))
    pool = DIRECTIONS if directions is None else tuple(directions)
    direction = pool[int(rng.integers(len(pool)))]
    if direction == "still":
        speed_class, speed = None, 0.0
    else:
        speed_class = list(SPEED_CLASSES)[int(rng.integers(len(SPEED_CLASSES)))]
        speed = float(rng.uniform(*SPEED_CLASSES[speed_class]))
    r_lo, r_hi = radius_range(size)
    travel = speed * max(num_frames - 1, 0)
    vx, vy = (d * travel for d in DIRECTION_VECTORS[direction])
    if size - 1 - 2 * r_hi - travel < 0:
        raise ValueError(f"a {size} px frame is too small for {num_frames} frames at {speed:.2f} px/frame")

    def axis(r: float, v: float) -> float:
        # centre range keeping [c - r, c + r] and [c + v - r, c + v + r] inside [0, size - 1]
        return float(rng.uniform(r + max(0.0, -v), size - 1 - r - max(0.0, v)))

    for _ in range(_PLACEMENT_TRIES):
        radii = [float(rng.uniform(r_lo, r_hi)) for _ in range(count)]
        starts = [(axis(r, vx), axis(r, vy)) for r in radii]
        ok = all(
            np.hypot(starts[i][0] - starts[j][0], starts[i][1] - starts[j][1])
            >= radii[i] + radii[j] + MIN_GAP
            for i in range(count)
            for j in range(i)
        )
        if ok:
            return CrowdAttributes(color, count, direction, speed_class, speed, tuple(radii), tuple(starts))
    raise RuntimeError(
        f"no placement of {count} balls found in {_PLACEMENT_TRIES} tries ({size} px, {direction})"
    )


# --------------------------------------------------------------------------- rendering


def render_clip(
    attrs: CrowdAttributes, num_frames: int = 8, size: int = 32, textured: bool = False, seed: int = 0
) -> np.ndarray:
    """``attrs`` as a uint8 ``[num_frames, size, size, 3]`` RGB clip (balls exactly ``COLORS[color]``)."""
    if num_frames < 1 or size < 1:
        raise ValueError("num_frames and size must be >= 1")
    out = np.repeat(_background(size, textured, seed)[None], num_frames, axis=0)
    mask = np.zeros((num_frames, size, size), dtype=bool)
    for r, centers in zip(attrs.radii, attrs.centers(num_frames)):
        mask |= _shape_masks("circle", centers, r, size)
    out[mask] = np.asarray(COLORS[attrs.color], dtype=np.uint8)
    return out


# --------------------------------------------------------------------------- dataset


class CrowdClipDataset(ToyClipDataset):
    """Map-style dataset of crowd clips: :class:`t2vturbo.data.toy.ToyClipDataset` with the crowd world's sampler,
    renderer and captions. Item ``i`` is a pure function of ``(seed, i)``; ``video`` float32 ``[F, 3, H, W]`` in
    [-1, 1], ``caption``, ``attrs`` (flat: color, count, direction, speed, speed_class ("" when still)), ``index``."""

    _sample_attributes = staticmethod(sample_attributes)
    _render_clip = staticmethod(render_clip)
    _caption = staticmethod(caption)

    @staticmethod
    def _flat_attrs(attrs: CrowdAttributes) -> dict[str, Any]:
        flat = {k: attrs.to_dict()[k] for k in ("color", "count", "direction", "speed")}
        flat["speed_class"] = attrs.speed_class or ""
        return flat
