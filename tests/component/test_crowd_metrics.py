"""Analytic crowd-world metrics (t2vturbo.eval.crowd_metrics) on rendered clips with known answers."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from t2vturbo.data import crowd
from t2vturbo.data.toy import BACKGROUND, COLORS, DIRECTIONS
from t2vturbo.eval import crowd_metrics as cm

F, S = 8, 32
PROMPTS = crowd.held_out_prompts()
MOVING = [d for d in DIRECTIONS if d != "still"]
ACCS = ("color_acc", "count_acc", "direction_acc", "speed_acc")


def _attrs_for(target: dict, rng: np.random.Generator) -> crowd.CrowdAttributes:
    """Sampled attributes (placement, radii, speed) of a clip matching the parsed prompt ``target``."""
    for _ in range(1000):
        a = crowd.sample_attributes(rng, size=S, num_frames=F, directions=[target["direction"]])
        if a.count == target["count"] and a.speed_class == target["speed_class"]:
            return dataclasses.replace(a, color=target["color"])
    raise AssertionError(f"no attributes for {target}")


def _accs(r: dict) -> tuple[float, ...]:
    return tuple(r[k] for k in ACCS)


def _blur(clip: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a uint8 ``[F, H, W, 3]`` clip over H and W (edge padding), rounded."""
    r = int(np.ceil(3 * sigma))
    k = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * sigma**2))
    k /= k.sum()
    a = clip.astype(np.float64)
    for ax in (1, 2):
        n = a.shape[ax]
        pad = [(r, r) if i == ax else (0, 0) for i in range(4)]
        p = np.pad(a, pad, mode="edge")
        a = sum(w * np.take(p, np.arange(j, j + n), axis=ax) for j, w in enumerate(k))
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _line_starts(count, r, direction, speed, rng):
    """Starts of ``count`` (1 or 3) balls of radius ``r`` spread across the motion, at a random offset."""
    travel = speed * (F - 1)
    v = {"left": -1, "up": -1, "right": 1, "down": 1}.get(direction, 0) * travel
    along = rng.uniform(r + max(0.0, -v), S - 1 - r - max(0.0, v))
    across = [15.5] if count == 1 else [5.0, 15.5, 26.0]  # 10.5 px apart >= 2 * 3.52 + MIN_GAP
    o = rng.uniform(-1.4, 1.4)
    horizontal = direction in ("left", "right", "still")
    return tuple((along, c + o) if horizontal else (c + o, along) for c in across)


# --------------------------------------------------------------------------- constants


def test_thresholds_derive_from_the_world():
    slow, fast = crowd.SPEED_CLASSES["slow"], crowd.SPEED_CLASSES["fast"]
    assert slow[1] < cm.SPEED_SPLIT < fast[0]
    assert cm.SPEED_SPLIT == pytest.approx(1.75)
    # The smallest ball rasterises to >= 2 * MIN_BALL_AREA pixels at every sub-pixel offset.
    r_min = crowd.radius_range(S)[0]
    rng = np.random.default_rng(0)
    balls = [
        crowd.CrowdAttributes("red", 1, "still", None, 0.0, (r_min,), (tuple(p),))
        for p in rng.uniform(10, 11, (300, 2))
    ]
    areas = [(crowd.render_clip(b, 1, S) != BACKGROUND).any(axis=-1).sum() for b in balls]
    assert min(areas) >= 2 * cm.MIN_BALL_AREA
    assert cm.MIN_BALL_AREA > 4


# --------------------------------------------------------------------------- clean clips


@pytest.mark.parametrize("textured", [False, True])
def test_clean_clips_of_every_prompt_score_one(textured):
    for seed in range(3):
        rng = np.random.default_rng([seed, int(textured)])
        for p in PROMPTS:
            t = crowd.parse_caption(p)
            a = _attrs_for(t, rng)
            r = cm.score_clip(crowd.render_clip(a, F, S, textured=textured, seed=seed), p)
            assert _accs(r) == (1.0, 1.0, 1.0, 1.0), (p, seed, r)
            assert r["score"] == 1.0
            assert (r["pred_color"], r["pred_count"], r["pred_direction"], r["pred_speed_class"]) == (
                t["color"],
                t["count"],
                t["direction"],
                t["speed_class"],
            )
            assert abs(r["pred_speed"] - a.speed) < 0.1, (p, r["pred_speed"], a.speed)
            assert abs(r["dynamic_degree"] - a.speed) < 0.3, (p, r["dynamic_degree"], a.speed)
            assert r["detected_frac"] == r["count_consistency"] == r["background_clean"] == 1.0


def test_extreme_radii_and_class_edge_speeds():
    """Smallest / largest balls at the ends of both speed classes, every direction, random offsets."""
    rng = np.random.default_rng(7)
    r_lo, r_hi = crowd.radius_range(S)
    speeds = [(c, v) for c, rg in crowd.SPEED_CLASSES.items() for v in rg]
    for r, (cls, v), d, n, _ in itertools.product((r_lo, r_hi), speeds, MOVING, (1, 3), range(4)):
        a = crowd.CrowdAttributes("green", n, d, cls, v, (r,) * n, _line_starts(n, r, d, v, rng))
        res = cm.score_clip(crowd.render_clip(a, F, S), crowd.caption(a))
        assert _accs(res) == (1.0,) * 4, (r, v, d, n, res)
    for r, n, _ in itertools.product((r_lo, r_hi), (1, 3), range(4)):
        a = crowd.CrowdAttributes(
            "yellow", n, "still", None, 0.0, (r,) * n, _line_starts(n, r, "still", 0, rng)
        )
        res = cm.score_clip(crowd.render_clip(a, F, S), crowd.caption(a))
        assert _accs(res) == (1.0,) * 4 and res["pred_speed"] < 0.1, res


# --------------------------------------------------------------------------- wrong attributes


def test_a_clip_of_another_attribute_scores_zero_on_that_accuracy():
    rng = np.random.default_rng(3)
    colors = list(COLORS)
    for p in PROMPTS:
        t = crowd.parse_caption(p)
        variants = [
            ({**t, "count": t["count"] % 3 + 1}, (1.0, 0.0, 1.0, 1.0)),
            ({**t, "color": colors[(colors.index(t["color"]) + 1) % 4]}, (0.0, 1.0, 1.0, 1.0)),
        ]
        if t["direction"] == "still":
            variants.append(({**t, "direction": "left", "speed_class": "slow"}, (1.0, 1.0, 0.0, 0.0)))
        else:
            other = "slow" if t["speed_class"] == "fast" else "fast"
            turned = MOVING[(MOVING.index(t["direction"]) + 1) % 4]
            variants += [
                ({**t, "speed_class": other}, (1.0, 1.0, 1.0, 0.0)),
                ({**t, "direction": turned}, (1.0, 1.0, 0.0, 1.0)),
                ({**t, "direction": "still", "speed_class": None}, (1.0, 1.0, 0.0, 0.0)),
            ]
        for wrong, expected in variants:
            r = cm.score_clip(crowd.render_clip(_attrs_for(wrong, rng), F, S), p)
            assert _accs(r) == expected, (p, wrong, r)
            assert r["score"] == sum(expected) / 4


# --------------------------------------------------------------------------- blur, specks, noise


def _pair(gap_centres: float, direction="right", speed=1.2, r=3.0):
    """Two red balls side by side (centre distance ``gap_centres``), bypassing MIN_GAP."""
    y = 16.0
    x0 = 4.0 if direction == "right" else 9.0
    cls = None if direction == "still" else "slow"
    return crowd.CrowdAttributes(
        "red", 2, direction, cls, speed if cls else 0.0, (r, r), ((x0, y), (x0 + gap_centres, y))
    )


@pytest.mark.parametrize("direction", ["right", "still"])
def test_balls_that_merge_under_blur_count_one(direction):
    # r = 3 disks 1.5 px apart: drawn with radius 3.25, a 1 px background column between the rasters.
    a = _pair(7.5, direction)
    clean = crowd.render_clip(a, F, S)
    assert cm.ball_components(clean)["counts"].tolist() == [2] * F
    blurred = _blur(clean, 1.0)
    assert cm.ball_components(blurred)["counts"].tolist() == [1] * F
    r = cm.score_clip(blurred, crowd.caption(a))
    assert r["pred_count"] == 1 and r["count_acc"] == 0.0
    assert (r["color_acc"], r["direction_acc"], r["speed_acc"]) == (1.0, 1.0, 1.0), r
    # The same two balls MIN_GAP apart stay two under a milder blur (sigma = 1 merges them at some
    # sub-pixel offsets: a known limit, merged balls count as one).
    far = _pair(6.0 + crowd.MIN_GAP, direction)
    assert cm.ball_components(_blur(crowd.render_clip(far, F, S), 0.8))["counts"].tolist() == [2] * F


def test_blurred_dataset_clips_keep_every_accuracy():
    ds = crowd.CrowdClipDataset(num_samples=150, textured=True, seed=5)
    for i in range(len(ds)):
        a, bg = ds.attributes(i)
        r = cm.score_clip(_blur(crowd.render_clip(a, F, S, textured=True, seed=bg), 0.8), crowd.caption(a))
        assert _accs(r) == (1.0,) * 4, (i, crowd.caption(a), r)


def test_specks_below_min_area_are_not_balls():
    a = crowd.CrowdAttributes("blue", 1, "down", "fast", 2.3, (3.0,), ((20.0, 5.0),))
    clip = crowd.render_clip(a, F, S)
    blue = np.asarray(COLORS["blue"], np.uint8)
    specky = clip.copy()
    rng = np.random.default_rng(0)
    for f in range(F):  # isolated 1-px specks in the left half (the ball moves down at x = 20)
        ys, xs = rng.integers(0, S, 6), rng.integers(0, 10, 6)
        specky[f, ys, xs] = blue
    r = cm.score_clip(specky, crowd.caption(a))
    assert _accs(r) == (1.0,) * 4 and r["background_clean"] < 1.0
    # A 3 x 3 blob (9 px) is a speck, a 2 x 5 blob (10 px) a ball.
    for (h, w), count in (((3, 3), 1), ((2, 5), 2)):
        c = clip.copy()
        c[:, 2 : 2 + h, 2 : 2 + w] = blue
        assert h * w - cm.MIN_BALL_AREA == count - 2
        assert cm.predict_count(c) == count


def test_noise_blank_and_solid_clips_score_zero():
    rng = np.random.default_rng(0)
    blank = np.broadcast_to(np.asarray(BACKGROUND, np.uint8), (F, S, S, 3)).copy()
    clips = {
        "uniform noise": rng.integers(0, 256, (F, S, S, 3), dtype=np.uint8),
        "gaussian float": torch.randn(F, 3, S, S, generator=torch.Generator().manual_seed(0)),
        "blank": blank,
        # a sub-pixel ball outside the frame draws nothing: the textured background alone
        "textured background": crowd.render_clip(
            crowd.CrowdAttributes("red", 1, "still", None, 0.0, (0.1,), ((-9.0, -9.0),)), F, S, True, 1
        ),
        "solid red": np.broadcast_to(np.asarray(COLORS["red"], np.uint8), (F, S, S, 3)).copy(),
    }
    for name, clip in clips.items():
        a = cm.analyze_clip(clip)
        assert a["pred_count"] == 0 and a["detected_frac"] == 0.0, name
        assert a["pred_color"] is None and a["pred_direction"] is None and a["pred_speed_class"] is None, name
        for p in PROMPTS[::7]:
            assert cm.score_clip(clip, p)["score"] == 0.0, (name, p)
    # 0 never matches, even a target that says 0
    r = cm.score_clip(blank, {"color": "red", "count": 0, "direction": "left", "speed_class": "slow"})
    assert r["count_acc"] == 0.0


# --------------------------------------------------------------------------- counting rule


def _three_in_a_row(direction="right", speed=2.5):
    # ball 2 is 14 px to the right of ball 0 and 9 px below ball 1: dropping it shifts the mean a lot
    return crowd.CrowdAttributes(
        "red", 3, direction, "fast", speed, (3.0, 3.0, 3.0), ((4.0, 5.0), (4.0, 16.0), (18.0, 25.0))
    )


def test_frames_with_a_missing_ball_are_left_out_of_the_fit():
    a = _three_in_a_row()
    two = dataclasses.replace(a, count=2, radii=a.radii[:2], starts=a.starts[:2])
    clip = crowd.render_clip(a, F, S)
    clip[[6, 7]] = crowd.render_clip(two, F, S)[[6, 7]]  # ball 2 vanishes in the last two frames
    r = cm.score_clip(clip, crowd.caption(a))
    assert _accs(r) == (1.0,) * 4, r
    assert r["count_consistency"] == 0.75 and r["detected_frac"] == 1.0
    assert abs(r["pred_speed"] - a.speed) < 0.1
    # Reference: fitting the mean of the balls present in every frame would be far off.
    mean_all = np.array(
        [a.centers(F)[:3, t].mean(0) if t < 6 else a.centers(F)[:2, t].mean(0) for t in range(F)]
    )
    naive = np.polyfit(np.arange(F), mean_all[:, 0], 1)[0]
    assert abs(naive - a.speed) > 0.5


def test_count_ties_go_to_the_smaller_count_and_extra_balls_never_match():
    a = _three_in_a_row("down", 2.2)
    two = dataclasses.replace(a, count=2, radii=a.radii[:2], starts=a.starts[:2])
    a = dataclasses.replace(a, starts=((4.0, 3.5), (15.0, 3.5), (27.0, 3.5)))
    two = dataclasses.replace(two, starts=a.starts[:2])
    clip = crowd.render_clip(a, F, S)
    clip[:4] = crowd.render_clip(two, F, S)[:4]  # 2 balls in frames 0-3, 3 in frames 4-7
    r = cm.score_clip(clip, "two red balls moving down fast")
    assert r["pred_count"] == 2 and _accs(r) == (1.0,) * 4, r
    assert abs(r["pred_speed"] - 2.2) < 0.1  # fitted on frames 0-3 only
    # four balls (two 2-ball clips side by side) match no prompt's count
    left = crowd.CrowdAttributes("red", 2, "still", None, 0.0, (3.0, 3.0), ((5.0, 5.0), (5.0, 26.0)))
    right = dataclasses.replace(left, starts=((26.0, 5.0), (26.0, 26.0)))
    four = np.maximum(crowd.render_clip(left, F, S), crowd.render_clip(right, F, S))
    res = [
        cm.score_clip(four, f"{w} red {'ball' if n == 1 else 'balls'} standing still")
        for n, w in crowd.COUNT_WORDS.items()
    ]
    assert [x["pred_count"] for x in res] == [4, 4, 4]
    assert [_accs(x) for x in res] == [(1.0, 0.0, 1.0, 1.0)] * 3


# --------------------------------------------------------------------------- inputs and outputs


def test_float_and_uint8_inputs_agree():
    rng = np.random.default_rng(11)
    for i in range(6):
        a = crowd.sample_attributes(rng)
        u8 = crowd.render_clip(a, F, S, textured=True, seed=i)
        f32 = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # [F, 3, H, W] in [-1, 1]
        ref = cm.analyze_clip(u8)
        assert ref["pred_count"] == a.count
        for other in (f32, f32.numpy(), f32.double(), torch.from_numpy(u8)):
            assert cm.analyze_clip(other) == ref


def test_score_clip_fields_and_dict_prompt():
    rng = np.random.default_rng(2)
    a = _attrs_for(crowd.parse_caption("two yellow balls moving up slow"), rng)
    clip = crowd.render_clip(a, F, S)
    r = cm.score_clip(clip, "two yellow balls moving up slow")
    assert set(cm.METRIC_KEYS) <= set(r)
    assert r["prompt"] == "two yellow balls moving up slow"
    assert (r["target_color"], r["target_count"], r["target_direction"], r["target_speed_class"]) == (
        "yellow",
        2,
        "up",
        "slow",
    )
    d = cm.score_clip(clip, {"color": "yellow", "count": 2, "direction": "up", "speed_class": "fast"})
    assert d["prompt"] is None and _accs(d) == (1.0, 1.0, 1.0, 0.0) and d["score"] == 0.75


def test_aggregate_by_hand():
    base = {"flicker": 0.0, "background_clean": 0.0, "dynamic_degree": 0.0}
    rs = [
        {**base, "color_acc": 1.0, "count_acc": 0.0, "direction_acc": 1.0, "speed_acc": 0.0, "dynamic_degree": 2.0,
         "flicker": 0.9, "background_clean": 1.0, "detected_frac": 1.0, "count_consistency": 0.5,
         "pred_direction": "left"},
        {**base, "color_acc": 0.0, "count_acc": 1.0, "direction_acc": 1.0, "speed_acc": 1.0, "flicker": 1.0,
         "background_clean": 0.8, "detected_frac": 0.5, "count_consistency": 1.0, "pred_direction": "still"},
        {**base, "color_acc": 1.0, "count_acc": 1.0, "direction_acc": 0.0, "speed_acc": 0.0, "dynamic_degree": 1.0,
         "flicker": 0.8, "background_clean": 0.6, "detected_frac": 0.0, "count_consistency": 0.0,
         "pred_direction": None},
    ]  # fmt: skip
    out = cm.aggregate(rs)
    expected = {
        "color_acc": 2 / 3, "count_acc": 2 / 3, "direction_acc": 2 / 3, "speed_acc": 1 / 3,
        "score": (2 / 3 + 2 / 3 + 2 / 3 + 1 / 3) / 4, "dynamic_degree": 1.0, "flicker": 0.9,
        "background_clean": 0.8, "detected_frac": 0.5, "count_consistency": 0.5, "moving_frac": 1 / 3,
        "num_clips": 3,
    }  # fmt: skip
    assert out.keys() == expected.keys()
    assert out == pytest.approx(expected)
    assert list(out)[: len(cm.METRIC_KEYS)] == list(cm.METRIC_KEYS)
    # on real results the aggregated score is the mean of the per-clip scores
    rng = np.random.default_rng(4)
    real = []
    for p in PROMPTS[::9]:
        a = crowd.sample_attributes(rng)
        real.append(cm.score_clip(crowd.render_clip(a, F, S), p))
    agg = cm.aggregate(real)
    assert agg["score"] == pytest.approx(np.mean([r["score"] for r in real]))
    assert 0.0 < agg["score"] < 1.0
    with pytest.raises(ValueError):
        cm.aggregate([])
