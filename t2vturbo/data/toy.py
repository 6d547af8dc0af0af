"""A small, fully procedural text-to-video "toy world".

Every clip shows one coloured shape (circle / square / triangle) on a dark
background, translating at constant velocity in one of four directions or
standing still.  The caption describes colour, shape and direction, so a
student model distilled on this data can be checked for prompt adherence with
simple pixel statistics (colour match, foreground area, centroid motion).

Conventions
-----------
* Image coordinates: ``x`` is the column index (grows to the right), ``y`` is
  the row index (grows *downwards*).  "left" means ``x`` decreasing, "up" means
  ``y`` decreasing.
* A pixel ``(row=y, col=x)`` is sampled at its integer coordinates; the shape
  centre ``(cx, cy)`` is a float, so shapes move with sub-pixel accuracy (no
  anti-aliasing: each pixel is either exactly the shape colour or background).
* ``size`` of a shape is its radius (circle) or half-side (square, and the
  triangle's half-base == half-height).  The shape is contained in the
  axis-aligned box ``[cx - size, cx + size] x [cy - size, cy + size]``.
* Rasterisation rule: a pixel is foreground iff its centre lies inside the
  shape grown by :data:`RASTER_DILATION` (1/4 px) along every edge normal.
  Without it, hard point sampling of an integer-width shape makes the pixel
  centroid jitter with the sub-pixel offset by up to ~1 px peak-to-peak
  (square) / ~1.2 px (triangle, vertically); with 1/4 px the
  peak-to-peak centroid jitter is <= 0.5 px (square), < 0.65 px (circle) and
  < 0.87 px (triangle), so the measured centroid displacement of a clip always
  matches ``speed * (F - 1)`` within 1 px.  The dilation is < 1/2 px, so a
  shape whose box lies inside ``[0, size - 1]`` never touches pixels outside
  the frame.

:func:`render_clip` is a pure function of ``(attrs, num_frames, size,
textured, seed)`` and is meant to be reused by the webdataset shard writer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "BACKGROUND",
    "COLORS",
    "DIRECTIONS",
    "DIRECTION_VECTORS",
    "RASTER_DILATION",
    "SHAPES",
    "SPEED_RANGE",
    "ToyAttributes",
    "ToyClipDataset",
    "caption",
    "held_out_prompts",
    "parse_caption",
    "render_clip",
    "sample_attributes",
    "shape_size_range",
]

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (40, 80, 230),
    "yellow": (230, 210, 40),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down", "still")

#: Unit velocity per direction, in image coordinates (dx, dy).
DIRECTION_VECTORS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
    "still": (0, 0),
}

#: Plain background colour (RGB).
BACKGROUND: tuple[int, int, int] = (30, 30, 30)

#: Speed range in pixels/frame for moving shapes ("still" has speed 0).
SPEED_RANGE: tuple[float, float] = (1.5, 3.0)

#: Pixel centres are tested against the shape grown by this many pixels (see module docstring).
RASTER_DILATION: float = 0.25

# Amplitude (in uint8 levels) of the textured background; kept small so that
# the background stays far from every shape colour (exact-colour masks work).
_TEXTURE_AMPLITUDE = 8


@dataclass(frozen=True)
class ToyAttributes:
    """Everything needed to render one clip.

    ``speed`` is in pixels/frame, ``size`` is the radius / half-side in pixels,
    ``start`` is the ``(x, y)`` shape centre at frame 0.
    """

    color: str
    shape: str
    direction: str
    speed: float
    size: int
    start: tuple[float, float]

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise ValueError(f"unknown color {self.color!r}; expected one of {sorted(COLORS)}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {SHAPES}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {self.direction!r}; expected one of {DIRECTIONS}")
        if self.speed < 0:
            raise ValueError(f"speed must be >= 0, got {self.speed}")
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")

    def velocity(self) -> tuple[float, float]:
        """Velocity ``(vx, vy)`` in pixels/frame (image coordinates)."""
        dx, dy = DIRECTION_VECTORS[self.direction]
        return (dx * float(self.speed), dy * float(self.speed))

    def centers(self, num_frames: int) -> np.ndarray:
        """Shape centres for each frame, float64 ``[num_frames, 2]`` as ``(x, y)``."""
        t = np.arange(num_frames, dtype=np.float64)[:, None]
        return np.asarray(self.start, dtype=np.float64)[None, :] + t * np.asarray(self.velocity())[None, :]

    def to_dict(self) -> dict[str, Any]:
        """Flat dict of plain str/float/int values (collates with the default collate_fn)."""
        d = asdict(self)
        sx, sy = d.pop("start")
        d["speed"] = float(d["speed"])
        d["size"] = int(d["size"])
        d["start_x"] = float(sx)
        d["start_y"] = float(sy)
        return d


# --------------------------------------------------------------------------- captions

_CAPTION_RE = re.compile(r"^a (?P<color>\w+) (?P<shape>\w+) (?:moving (?P<direction>\w+)|standing still)$")


def caption(attrs: ToyAttributes) -> str:
    """``"a red circle moving left"`` or ``"a blue square standing still"``."""
    motion = "standing still" if attrs.direction == "still" else f"moving {attrs.direction}"
    return f"a {attrs.color} {attrs.shape} {motion}"


def parse_caption(text: str) -> dict[str, str]:
    """Inverse of :func:`caption`: returns ``{"color", "shape", "direction"}``.

    Case and surrounding / repeated whitespace are normalised; anything else
    that is not exactly a toy caption raises :class:`ValueError`.
    """
    if not isinstance(text, str):
        raise ValueError(f"caption must be a str, got {type(text).__name__}")
    norm = " ".join(text.strip().lower().split())
    m = _CAPTION_RE.match(norm)
    if m is None:
        raise ValueError(f"not a toy caption: {text!r}")
    color, shape, moving = m.group("color"), m.group("shape"), m.group("direction")
    # "moving still" is not a valid caption ("standing still" is).
    if (
        color not in COLORS
        or shape not in SHAPES
        or (moving is not None and (moving not in DIRECTIONS or moving == "still"))
    ):
        raise ValueError(f"not a toy caption: {text!r}")
    direction = moving if moving is not None else "still"
    return {"color": color, "shape": shape, "direction": direction}


def held_out_prompts() -> list[str]:
    """All 4 x 3 x 5 = 60 colour x shape x direction captions, in a fixed order."""
    return [
        f"a {c} {s} " + ("standing still" if d == "still" else f"moving {d}")
        for c in COLORS
        for s in SHAPES
        for d in DIRECTIONS
    ]


# --------------------------------------------------------------------------- sampling


def shape_size_range(size: int) -> tuple[int, int]:
    """Inclusive ``(min, max)`` shape radius / half-side for a ``size`` x ``size`` frame.

    For 32 px frames this is ``(3, 6)``.
    """
    lo = max(2, int(round(0.1 * size)))
    hi = max(lo, int(round(0.18 * size)))
    return lo, hi


def sample_attributes(
    rng: np.random.Generator, size: int = 32, num_frames: int = 8, directions: Sequence[str] | None = None
) -> ToyAttributes:
    """Draw uniformly random attributes such that the shape stays inside the frame.

    colour / shape / direction are uniform; speed is uniform in
    :data:`SPEED_RANGE` (0 for "still"); the shape size is uniform in
    :func:`shape_size_range` capped by what still fits given the travel
    distance; the start centre is uniform over all positions that keep the
    whole shape box inside ``[0, size - 1]`` for every frame.  If a frame is
    too small for the full speed range, the speed is capped so the smallest
    shape still fits (never happens for the default 32 px / 8 frames).
    ``directions`` restricts the direction to a subset (uniform over it; same number of draws, so
    ``None`` gives exactly the full-set stream).
    """
    if num_frames < 1:
        raise ValueError("num_frames must be >= 1")
    r_lo, r_hi = shape_size_range(size)
    if 2 * r_lo > size - 1:
        raise ValueError(f"frame size {size} too small for toy shapes")

    color = list(COLORS)[int(rng.integers(len(COLORS)))]
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    pool = DIRECTIONS if directions is None else tuple(directions)
    direction = pool[int(rng.integers(len(pool)))]

    steps = num_frames - 1
    if direction == "still":
        speed = 0.0
    else:
        speed = float(rng.uniform(*SPEED_RANGE))
        if steps > 0:
            speed = min(speed, (size - 1 - 2 * r_lo) / steps)
    travel = speed * steps

    r_fit = int(np.floor((size - 1 - travel) / 2.0 + 1e-9))
    radius = int(rng.integers(r_lo, min(r_hi, r_fit) + 1))

    vx, vy = (d * travel for d in DIRECTION_VECTORS[direction])

    def _axis(v: float) -> float:
        # Centre range so that [c - r, c + r] and [c + v - r, c + v + r] lie in [0, size - 1].
        lo = radius + max(0.0, -v)
        hi = size - 1 - radius - max(0.0, v)
        return float(rng.uniform(lo, hi)) if hi > lo else float(lo)

    start = (_axis(vx), _axis(vy))
    return ToyAttributes(color=color, shape=shape, direction=direction, speed=speed, size=radius, start=start)


# --------------------------------------------------------------------------- rendering


def _background(size: int, textured: bool, seed: int) -> np.ndarray:
    """``[size, size, 3]`` uint8 background (static over the clip)."""
    base = np.asarray(BACKGROUND, dtype=np.int16)
    if not textured:
        return np.broadcast_to(base, (size, size, 3)).astype(np.uint8)
    rng = np.random.default_rng([int(seed), 0x7E47])
    a = _TEXTURE_AMPLITUDE
    # Coarse 4x4-cell blobs plus fine grain, grayscale-ish with a faint tint.
    cells = -(-size // 4)
    coarse = rng.integers(-a // 2, a // 2 + 1, size=(cells, cells, 1), dtype=np.int16)
    coarse = np.repeat(np.repeat(coarse, 4, axis=0), 4, axis=1)[:size, :size]
    fine = rng.integers(-a // 2, a // 2 + 1, size=(size, size, 1), dtype=np.int16)
    tint = rng.integers(-1, 2, size=(size, size, 3), dtype=np.int16)
    bg = base + coarse + fine + tint
    return np.clip(bg, 0, 255).astype(np.uint8)


def _shape_masks(shape: str, centers: np.ndarray, radius: float, size: int) -> np.ndarray:
    """Boolean ``[F, size, size]`` masks of the shape at each centre (vectorised).

    Each test is the exact shape test with every edge pushed out by
    :data:`RASTER_DILATION` along its unit normal.
    """
    coords = np.arange(size, dtype=np.float64)
    dx = coords[None, None, :] - centers[:, 0, None, None]  # [F, 1, W]
    dy = coords[None, :, None] - centers[:, 1, None, None]  # [F, H, 1]
    r = float(radius)
    d = RASTER_DILATION
    if shape == "circle":
        return dx * dx + dy * dy <= (r + d) ** 2
    if shape == "square":
        return (np.abs(dx) <= r + d) & (np.abs(dy) <= r + d)
    if shape == "triangle":
        # Upward isosceles triangle: apex (cx, cy - r), base (cx -/+ r, cy + r).
        # Half-planes: on/above the base line (dy <= r), and inside both legs
        # (2|dx| <= dy + r: the half-width grows linearly from the apex).  The
        # legs' normals have length sqrt(5) in these units, hence the factor.
        h = dy + r + np.sqrt(5.0) * d
        return (dy <= r + d) & (2.0 * dx <= h) & (-2.0 * dx <= h)
    raise ValueError(f"unknown shape {shape!r}")


def render_clip(
    attrs: ToyAttributes,
    num_frames: int = 8,
    size: int = 32,
    textured: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """Render ``attrs`` to a uint8 ``[num_frames, size, size, 3]`` RGB clip.

    Pure numpy, vectorised over frames and pixels.  ``seed`` only affects the
    textured background (which is static over the clip); with
    ``textured=False`` the output depends on ``attrs`` alone.  Foreground pixels
    are exactly ``COLORS[attrs.color]``; the background never takes that value.
    """
    if num_frames < 1 or size < 1:
        raise ValueError("num_frames and size must be >= 1")
    centers = attrs.centers(num_frames)
    mask = _shape_masks(attrs.shape, centers, attrs.size, size)  # [F, H, W]
    bg = _background(size, textured, seed)
    out = np.repeat(bg[None], num_frames, axis=0)  # [F, H, W, 3], writable copy
    out[mask] = np.asarray(COLORS[attrs.color], dtype=np.uint8)
    return out


# --------------------------------------------------------------------------- dataset


class ToyClipDataset(Dataset):
    """Infinite-ish map-style dataset of procedural toy clips.

    Item ``i`` is a pure function of ``(seed, i)`` (drawn from
    ``numpy.random.default_rng([seed, i])``), so it is reproducible across
    workers, epochs and processes.  Returns a dict with

    * ``video``: float32 tensor ``[F, 3, H, W]`` in ``[-1, 1]``
    * ``caption``: str
    * ``attrs``: flat dict ``{color, shape, direction, speed, size, start_x, start_y}``
    * ``index``: int
    """

    def __init__(
        self,
        num_samples: int = 100_000,
        num_frames: int = 8,
        size: int = 32,
        seed: int = 0,
        textured: bool = False,
        directions: Sequence[str] | None = None,
    ) -> None:
        if num_samples < 0:
            raise ValueError("num_samples must be >= 0")
        if directions is not None:
            bad = [d for d in directions if d not in DIRECTIONS]
            if bad or not directions:
                raise ValueError(
                    f"directions must be a non-empty subset of {list(DIRECTIONS)}, got {list(directions)}"
                )
        self.directions = None if directions is None else tuple(directions)
        self.num_samples = int(num_samples)
        self.num_frames = int(num_frames)
        self.size = int(size)
        self.seed = int(seed)
        self.textured = bool(textured)

    # The world's pieces; another toy world's dataset (t2vturbo/data/crowd.py) overrides these four.
    _sample_attributes = staticmethod(sample_attributes)
    _render_clip = staticmethod(render_clip)
    _caption = staticmethod(caption)

    @staticmethod
    def _flat_attrs(attrs: ToyAttributes) -> dict[str, Any]:
        return attrs.to_dict()

    def __len__(self) -> int:
        return self.num_samples

    def attributes(self, i: int) -> tuple[ToyAttributes, int]:
        """Attributes and background seed of item ``i`` (no rendering)."""
        rng = np.random.default_rng([self.seed, int(i)])
        attrs = self._sample_attributes(
            rng, size=self.size, num_frames=self.num_frames, directions=self.directions
        )
        bg_seed = int(rng.integers(2**31 - 1))
        return attrs, bg_seed

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        if i < 0:
            i += self.num_samples
        if not 0 <= i < self.num_samples:
            raise IndexError(f"index {i} out of range for dataset of length {self.num_samples}")
        attrs, bg_seed = self.attributes(i)
        clip = self._render_clip(attrs, self.num_frames, self.size, textured=self.textured, seed=bg_seed)
        video = torch.from_numpy(clip).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).contiguous()
        return {"video": video, "caption": self._caption(attrs), "attrs": self._flat_attrs(attrs), "index": i}
