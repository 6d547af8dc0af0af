"""Component tests for the crowd toy world (t2vturbo.data.crowd): captions, sampling, rendering, dataset."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from t2vturbo.data import crowd
from t2vturbo.data.toy import BACKGROUND, COLORS, DIRECTIONS, RASTER_DILATION

F, S = 8, 32
NUMBER = {"a": 1, "two": 2, "three": 3}


# --------------------------------------------------------------------------- captions


def test_every_prompt_round_trips():
    prompts = crowd.held_out_prompts()
    assert len(prompts) == len(set(prompts)) == 4 * 3 * 9 == 108
    seen = set()
    for p in prompts:
        words = p.split()
        t = crowd.parse_caption(p)
        # reference parse, word by word
        assert t["count"] == NUMBER[words[0]] and t["color"] == words[1]
        assert words[2] == ("ball" if t["count"] == 1 else "balls")
        if words[3] == "standing":
            assert words[3:] == ["standing", "still"] and (t["direction"], t["speed_class"]) == (
                "still",
                None,
            )
        else:
            assert words[3] == "moving" and (t["direction"], t["speed_class"]) == (words[4], words[5])
        seen.add((t["color"], t["count"], t["direction"], t["speed_class"]))
        n = t["count"]
        speed = 0.0 if t["speed_class"] is None else crowd.SPEED_CLASSES[t["speed_class"]][0]
        a = crowd.CrowdAttributes(
            t["color"], n, t["direction"], t["speed_class"], speed, (3.0,) * n, ((5.0, 5.0),) * n
        )
        assert crowd.caption(a) == p
        assert crowd.parse_caption("  " + p.upper().replace(" ", "   ") + "\n") == t
    motions = [(d, s) for d in DIRECTIONS if d != "still" for s in crowd.SPEED_CLASSES] + [("still", None)]
    assert seen == {(c, n, d, s) for c in COLORS for n in (1, 2, 3) for d, s in motions}


@pytest.mark.parametrize(
    "bad",
    [
        "a red balls moving left fast",
        "two red ball moving left fast",
        "a red ball moving still fast",
        "a purple ball moving left fast",
        "a red ball moving left",
        "a red ball moving left medium",
        "a red ball moving sideways fast",
        "four red balls standing still",
        "one red ball standing still",
        "a red ball standing",
        "two red balls standing still fast",
        "a red circle moving left fast",
        "a red ball moving left fast please",
        "",
    ],
)
def test_parse_rejects_bad_captions(bad):
    with pytest.raises(ValueError):
        crowd.parse_caption(bad)


def test_parse_rejects_non_strings():
    with pytest.raises(ValueError):
        crowd.parse_caption(None)  # type: ignore[arg-type]


def test_attributes_validate():
    ok = dict(color="red", count=2, direction="left", speed_class="slow", speed=1.0, radii=(3.0, 3.0))
    starts = ((5.0, 5.0), (20.0, 20.0))
    crowd.CrowdAttributes(**ok, starts=starts)
    for change in (
        {"color": "purple"},
        {"count": 0},
        {"count": 4},
        {"direction": "still"},  # still needs speed_class None
        {"speed_class": None},
        {"speed_class": "medium"},
        {"radii": (3.0,)},
    ):
        with pytest.raises(ValueError):
            crowd.CrowdAttributes(**{**ok, **change}, starts=starts)


# --------------------------------------------------------------------------- sampling


def test_balls_stay_inside_and_apart_at_their_class_speed():
    rng = np.random.default_rng(0)
    r_lo, r_hi = crowd.radius_range(S)
    assert (r_lo, r_hi) == pytest.approx((2.56, 3.52))
    for _ in range(500):
        a = crowd.sample_attributes(rng, size=S, num_frames=F)
        c = a.centers(F)  # [n, F, 2]
        r = np.asarray(a.radii)
        assert c.shape == (a.count, F, 2) and r.shape == (a.count,)
        assert np.all((r >= r_lo) & (r <= r_hi))
        assert np.all(c - r[:, None, None] >= 0) and np.all(c + r[:, None, None] <= S - 1), a
        for i, j in itertools.combinations(range(a.count), 2):
            dist = np.hypot(*(c[i] - c[j]).T)  # [F]
            assert np.all(dist >= r[i] + r[j] + crowd.MIN_GAP - 1e-9), a
        # constant velocity along the named direction, at a speed inside the class range
        steps = np.diff(c, axis=1)
        assert np.allclose(steps, np.asarray(a.velocity())[None, None])
        if a.direction == "still":
            assert a.speed_class is None and a.speed == 0.0
        else:
            lo, hi = crowd.SPEED_CLASSES[a.speed_class]
            assert lo <= a.speed <= hi
            assert np.linalg.norm(steps[0, 0]) == pytest.approx(a.speed)


def test_attribute_frequencies_are_about_uniform():
    rng = np.random.default_rng(1)
    draws = [crowd.sample_attributes(rng) for _ in range(3000)]
    counts = Counter(a.count for a in draws)
    dirs = Counter(a.direction for a in draws)
    colors = Counter(a.color for a in draws)
    speeds = Counter(a.speed_class for a in draws if a.direction != "still")
    # expected 1000 / 600 / 750 / ~1200 each; bounds are > 5 binomial standard deviations
    assert set(counts) == {1, 2, 3} and all(850 <= v <= 1150 for v in counts.values()), counts
    assert set(dirs) == set(DIRECTIONS) and all(480 <= v <= 720 for v in dirs.values()), dirs
    assert set(colors) == set(COLORS) and all(620 <= v <= 880 for v in colors.values()), colors
    assert set(speeds) == set(crowd.SPEED_CLASSES)
    n_moving = sum(speeds.values())
    assert all(abs(v - n_moving / 2) <= 150 for v in speeds.values()), speeds
    # within a class, the speed covers its range (uniform: the mean is near the midpoint)
    for cls, (lo, hi) in crowd.SPEED_CLASSES.items():
        v = np.array([a.speed for a in draws if a.speed_class == cls])
        assert abs(v.mean() - (lo + hi) / 2) < 0.05 and v.min() < lo + 0.05 and v.max() > hi - 0.05


def test_directions_subset_is_respected():
    rng = np.random.default_rng(2)
    assert {crowd.sample_attributes(rng, directions=["up", "still"]).direction for _ in range(200)} == {
        "up",
        "still",
    }


# --------------------------------------------------------------------------- rendering


def _reference_mask(a: crowd.CrowdAttributes, t: int) -> np.ndarray:
    """Pixels whose centre lies within radius + RASTER_DILATION of some ball centre (loop reference)."""
    m = np.zeros((S, S), dtype=bool)
    for (cx, cy), r in zip(a.centers(F)[:, t], a.radii):
        for y in range(S):
            for x in range(S):
                if (x - cx) ** 2 + (y - cy) ** 2 <= (r + RASTER_DILATION) ** 2:
                    m[y, x] = True
    return m


@pytest.mark.parametrize("textured", [False, True])
def test_rendered_balls_are_exactly_the_palette_colour(textured):
    rng = np.random.default_rng(3)
    bg = np.asarray(BACKGROUND, np.int16)
    for i in range(12):
        a = crowd.sample_attributes(rng)
        clip = crowd.render_clip(a, F, S, textured=textured, seed=i)
        assert clip.dtype == np.uint8 and clip.shape == (F, S, S, 3)
        color = np.asarray(COLORS[a.color], np.uint8)
        fg = np.all(clip == color, axis=-1)
        for t in (0, F // 2, F - 1):
            assert np.array_equal(fg[t], _reference_mask(a, t)), (a, t)
        # everything else is background (within the texture amplitude when textured)
        dev = np.abs(clip[~fg].astype(np.int16) - bg).max()
        assert dev == 0 if not textured else 0 < dev <= 9
        # the background is static and the clip a pure function of (attrs, seed)
        assert np.array_equal(clip[0][~fg[0] & ~fg[-1]], clip[-1][~fg[0] & ~fg[-1]])
        assert np.array_equal(clip, crowd.render_clip(a, F, S, textured=textured, seed=i))


# --------------------------------------------------------------------------- dataset


def test_dataset_items_are_pure_functions_of_seed_and_index():
    ds = crowd.CrowdClipDataset(num_samples=50, seed=4, textured=True)
    again = crowd.CrowdClipDataset(num_samples=50, seed=4, textured=True)
    other = crowd.CrowdClipDataset(num_samples=50, seed=5, textured=True)
    for i in (0, 7, 49):
        x = ds[i]
        _ = [ds[j] for j in (3, 1, 2)]  # access order does not matter
        y = again[i]
        assert (
            torch.equal(x["video"], y["video"]) and x["caption"] == y["caption"] and x["attrs"] == y["attrs"]
        )
        assert not torch.equal(x["video"], other[i]["video"])
    assert torch.equal(ds[-1]["video"], ds[49]["video"]) and ds[-1]["index"] == 49
    with pytest.raises(IndexError):
        ds[50]
    assert len(crowd.CrowdClipDataset(num_samples=0)) == 0


def test_dataset_item_video_caption_and_attrs():
    ds = crowd.CrowdClipDataset(num_samples=20, seed=6)
    for i in range(len(ds)):
        item = ds[i]
        v = item["video"]
        assert v.dtype == torch.float32 and v.shape == (F, 3, S, S)
        assert v.min() >= -1.0 and v.max() <= 1.0
        a, bg_seed = ds.attributes(i)
        clip = crowd.render_clip(a, F, S, seed=bg_seed)
        assert np.array_equal(np.rint((v.permute(0, 2, 3, 1).numpy() + 1) * 127.5).astype(np.uint8), clip)
        assert (
            item["caption"] == crowd.caption(a) and crowd.parse_caption(item["caption"])["count"] == a.count
        )
        assert item["attrs"] == {
            "color": a.color,
            "count": a.count,
            "direction": a.direction,
            "speed": a.speed,
            "speed_class": a.speed_class or "",
        }
        assert item["index"] == i
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["video"].shape == (4, F, 3, S, S) and len(batch["caption"]) == 4


def test_dataset_rejects_bad_arguments():
    with pytest.raises(ValueError):
        crowd.CrowdClipDataset(num_samples=-1)
    with pytest.raises(ValueError):
        crowd.CrowdClipDataset(directions=["sideways"])
    with pytest.raises(ValueError):
        crowd.CrowdClipDataset(directions=[])
