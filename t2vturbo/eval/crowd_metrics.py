"""Analytic, pixel-based scoring of crowd-world videos (see :mod:`t2vturbo.data.crowd`).

The crowd analogue of :mod:`t2vturbo.eval.toy_metrics` (same public API: :data:`METRIC_KEYS`,
:func:`analyze_clip`, :func:`score_clip`, :func:`aggregate`), built from its helpers: the raw
foreground rule, 4-connected labelling, palette matching, the least-squares velocity fit, the
direction rule, flicker and background cleanliness.  No learned judge.

Pipeline per clip
-----------------
1. *Raw foreground*: toy_metrics' rule, Chebyshev distance from ``BACKGROUND`` >
   :data:`~t2vturbo.eval.toy_metrics.FG_THRESHOLD` (60 levels).
2. *Balls*: per frame, the 4-connected components of the raw foreground whose area lies in
   ``[MIN_BALL_AREA, MAX_OBJECT_FRACTION * H * W]``.  The smallest ball (radius 2.56 px, grown by
   the 1/4 px rasterisation dilation) covers 21..28 px depending on its sub-pixel offset (measured
   over 5000 offsets), so :data:`MIN_BALL_AREA` = 10 keeps a ball that blur or a washed-out sample
   has shrunk to under half its area while dropping the specks a blurred sample fragments into.
   Components covering > 40 % of the frame (pure noise, a solid frame) are no ball, as in
   toy_metrics.  Clean balls keep >= 2.5 px of background between them (``crowd.MIN_GAP``), so
   each is its own component; balls that touch (or merge under blur) are one component -- one ball.
3. *Count*: the frame's count is its number of balls; the clip's count is the most common
   per-frame count, ties broken towards the *smaller* count (a ball seen in only half the frames
   is not credited; a clip blank in half its frames counts 0).  ``count_acc`` is 1 iff the count
   equals the prompt's and lies in 1..3 (0 or > 3 balls never match).
4. *Colour*: toy_metrics' colour rule (nearest palette colour, up to a contrast scale, to the
   per-channel median) over the pixels of all balls of all frames (specks and rejected
   components excluded); ``None`` when no ball was found.
5. *Motion*: all balls share one velocity, so the per-frame *position* is the unweighted mean of
   the centroids of its balls: within 0.32 px of the mean of the ball centres on clean clips.  (The
   centroid of all foreground pixels weights the balls by their areas, which differ with the radii
   and jitter with each ball's sub-pixel offset: up to 3 px from the mean centre, and twice the
   speed error below, 0.15 px/frame, over 1500 clean clips.)  A frame in which a
   ball is missing or two merged shifts that mean by several px, so only frames whose count equals
   the clip's count enter the fit (NaN elsewhere).  Velocity: toy_metrics' least-squares fit over
   frame index; direction: toy_metrics' rule ("still" below
   :data:`~t2vturbo.eval.toy_metrics.STILL_DISPLACEMENT_PX` = 3 px over the fitted span; the
   slowest moving clip travels 0.75 * 7 = 5.25 px).  Speed class: "slow" if ``|v|`` <
   :data:`SPEED_SPLIT` else "fast", only for moving predictions (``None`` otherwise);
   :data:`SPEED_SPLIT` = 1.75 px/frame is the midpoint of the gap between the classes of
   ``crowd.SPEED_CLASSES`` (slow <= 1.5, fast >= 2.0), leaving 0.25 px/frame (1.75 px over the
   clip) of margin to each class; the fitted speed of clean clips is within 0.075 px/frame of
   the true speed (1500 sampled clips).  ``speed_acc``: for a moving prompt, the prediction
   moves (in any direction) with the prompt's speed class; for "standing still", the prediction
   is "still".

``score`` is the mean of ``color_acc``, ``count_acc``, ``direction_acc`` and ``speed_acc``.
Statistics: ``dynamic_degree`` (mean step of the per-frame position over consecutive fitted
frames, px/frame), ``flicker`` and ``background_clean`` (toy_metrics', the ball masks standing in
for the object mask, so specks count as dirt), ``detected_frac`` (frames with >= 1 ball) and
``count_consistency`` (frames whose count equals the clip's; 0 when the clip count is 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..data.crowd import COUNT_WORDS, SPEED_CLASSES, parse_caption
from .toy_metrics import (
    FG_THRESHOLD,
    MAX_OBJECT_FRACTION,
    _background_cleanliness,
    _bg_distance,
    _dynamic_degree,
    _fit_velocity,
    _label_components,
    _predict_color,
    _predict_direction,
    flicker,
    to_uint8_clip,
)

__all__ = [
    "METRIC_KEYS",
    "MIN_BALL_AREA",
    "SPEED_SPLIT",
    "aggregate",
    "analyze_clip",
    "ball_components",
    "predict_count",
    "score_clip",
]

#: Minimum area (px) of a connected component that counts as a ball (the smallest ball covers >= 21 px).
MIN_BALL_AREA: int = 10
#: Speed (px/frame) separating "slow" from "fast": the midpoint of the gap between the two classes.
SPEED_SPLIT: float = (SPEED_CLASSES["slow"][1] + SPEED_CLASSES["fast"][0]) / 2.0

#: Keys of :func:`score_clip` / :func:`aggregate` results that are numbers.
METRIC_KEYS: tuple[str, ...] = (
    "score",
    "color_acc",
    "count_acc",
    "direction_acc",
    "speed_acc",
    "dynamic_degree",
    "flicker",
    "background_clean",
)

_ACC_KEYS = ("color_acc", "count_acc", "direction_acc", "speed_acc")
_VALID_COUNTS = frozenset(COUNT_WORDS)


# --------------------------------------------------------------------------- balls


def ball_components(clip: Any, threshold: int = FG_THRESHOLD) -> dict[str, np.ndarray]:
    """The balls of every frame of ``clip``.

    Returns ``masks`` (bool ``[F, H, W]``, union of the frame's balls), ``counts`` (int ``[F]``),
    ``frame`` (int ``[K]``, frame of each of the ``K`` balls of the clip) and ``centroid``
    (float ``[K, 2]``, ``(x, y)`` pixel centroid of each ball).  A ball is a 4-connected component
    of the raw foreground with area in ``[MIN_BALL_AREA, MAX_OBJECT_FRACTION * H * W]``.
    """
    c = to_uint8_clip(clip)
    f, h, w = c.shape[:3]
    labels = _label_components(_bg_distance(c) > threshold).reshape(-1)
    fg = np.nonzero(labels)[0]
    uniq, inv, area = np.unique(labels[fg], return_inverse=True, return_counts=True)
    valid = (area >= MIN_BALL_AREA) & (area <= MAX_OBJECT_FRACTION * h * w)
    # Labels are the flat index + 1 of a component's first pixel, hence its frame.
    frame_of = (uniq - 1) // (h * w)
    ys, xs = np.divmod(fg % (h * w), w)
    cx = np.bincount(inv, weights=xs, minlength=uniq.size) / area
    cy = np.bincount(inv, weights=ys, minlength=uniq.size) / area
    masks = np.zeros(f * h * w, dtype=bool)
    masks[fg[valid[inv]]] = True
    return {
        "masks": masks.reshape(f, h, w),
        "counts": np.bincount(frame_of[valid], minlength=f).astype(np.int64),
        "frame": frame_of[valid].astype(np.int64),
        "centroid": np.stack([cx[valid], cy[valid]], axis=1),
    }


def _clip_count(counts: np.ndarray) -> int:
    """Most common per-frame count; ties go to the smaller count (``argmax`` takes the first)."""
    return int(np.argmax(np.bincount(counts))) if counts.size else 0


def predict_count(clip: Any) -> int:
    """Number of balls in the clip: the most common per-frame count (ties: the smaller)."""
    return _clip_count(ball_components(clip)["counts"])


def _positions(balls: Mapping[str, np.ndarray], count: int) -> np.ndarray:
    """Float ``[F, 2]``: mean ball centroid of each frame whose count is ``count`` (NaN elsewhere)."""
    counts = balls["counts"]
    out = np.full((counts.size, 2), np.nan)
    if count == 0:
        return out
    sums = np.stack(
        [np.bincount(balls["frame"], weights=balls["centroid"][:, k], minlength=counts.size) for k in (0, 1)],
        axis=1,
    )
    keep = counts == count
    out[keep] = sums[keep] / count
    return out


# --------------------------------------------------------------------------- scoring


def analyze_clip(clip: Any) -> dict[str, Any]:
    """All predictions and statistics of one clip (no prompt needed)."""
    c = to_uint8_clip(clip)
    balls = ball_components(c)
    counts = balls["counts"]
    count = _clip_count(counts)
    pos = _positions(balls, count)
    direction = _predict_direction(pos)
    fit = _fit_velocity(pos)
    speed = float(np.hypot(*fit[0])) if fit is not None else None
    moving = direction is not None and direction != "still"
    return {
        "pred_color": _predict_color(c, balls["masks"]),
        "pred_count": count,
        "pred_direction": direction,
        "pred_speed_class": ("slow" if speed < SPEED_SPLIT else "fast") if moving else None,
        "pred_speed": speed,
        "dynamic_degree": _dynamic_degree(pos),
        "flicker": flicker(c),
        "background_clean": _background_cleanliness(c, balls["masks"]),
        "detected_frac": float((counts > 0).mean()) if counts.size else 0.0,
        "count_consistency": float((counts == count).mean()) if count > 0 else 0.0,
    }


def score_clip(clip: Any, prompt: str | Mapping[str, Any]) -> dict[str, Any]:
    """Score one clip against its prompt (a crowd caption or a parsed
    ``{color, count, direction, speed_class}``, ``speed_class`` None for "still").

    Returns the numeric :data:`METRIC_KEYS` (accuracies are 0.0 / 1.0 per clip, ``score`` is their
    mean), ``detected_frac``, ``count_consistency``, ``prompt``, the ``target_*`` attributes and the
    ``pred_*`` predictions (``pred_speed``: fitted px/frame, None when no fit).
    """
    target = parse_caption(prompt) if isinstance(prompt, str) else dict(prompt)
    a = analyze_clip(clip)
    color_acc = float(a["pred_color"] == target["color"])
    count_acc = float(a["pred_count"] in _VALID_COUNTS and a["pred_count"] == target["count"])
    direction_acc = float(a["pred_direction"] == target["direction"])
    if target["direction"] == "still":
        speed_acc = float(a["pred_direction"] == "still")
    else:  # pred_speed_class is None unless the prediction moves
        speed_acc = float(a["pred_speed_class"] == target["speed_class"])
    return {
        "score": (color_acc + count_acc + direction_acc + speed_acc) / 4.0,
        "color_acc": color_acc,
        "count_acc": count_acc,
        "direction_acc": direction_acc,
        "speed_acc": speed_acc,
        "dynamic_degree": a["dynamic_degree"],
        "flicker": a["flicker"],
        "background_clean": a["background_clean"],
        "detected_frac": a["detected_frac"],
        "count_consistency": a["count_consistency"],
        "prompt": prompt if isinstance(prompt, str) else None,
        "target_color": target["color"],
        "target_count": target["count"],
        "target_direction": target["direction"],
        "target_speed_class": target.get("speed_class"),
        "pred_color": a["pred_color"],
        "pred_count": a["pred_count"],
        "pred_direction": a["pred_direction"],
        "pred_speed_class": a["pred_speed_class"],
        "pred_speed": a["pred_speed"],
    }


def aggregate(results: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Means of :data:`METRIC_KEYS` (and ``detected_frac`` / ``count_consistency`` when every result
    has them) over per-clip results.

    ``score`` is recomputed as the mean of the four aggregated accuracies (equal to the mean of
    per-clip scores).  Also returns ``num_clips`` and ``moving_frac`` (fraction of clips whose
    predicted direction is neither None nor "still").
    """
    rs = list(results)
    if not rs:
        raise ValueError("aggregate() needs at least one result")
    out: dict[str, float] = {}
    for k in (*_ACC_KEYS, "dynamic_degree", "flicker", "background_clean"):
        out[k] = float(np.mean([float(r[k]) for r in rs]))
    out["score"] = sum(out[k] for k in _ACC_KEYS) / len(_ACC_KEYS)
    for k in ("detected_frac", "count_consistency"):
        if all(k in r for r in rs):
            out[k] = float(np.mean([float(r[k]) for r in rs]))
    if all("pred_direction" in r for r in rs):
        out["moving_frac"] = float(
            np.mean([r["pred_direction"] is not None and r["pred_direction"] != "still" for r in rs])
        )
    out["num_clips"] = len(rs)
    return {k: out[k] for k in (*METRIC_KEYS, *(k for k in out if k not in METRIC_KEYS))}
