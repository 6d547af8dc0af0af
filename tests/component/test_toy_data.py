"""Component tests for the procedural toy text-to-video world (t2vturbo.data.toy)."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from t2vturbo.data.toy import (
    BACKGROUND,
    COLORS,
    DIRECTION_VECTORS,
    DIRECTIONS,
    SHAPES,
    SPEED_RANGE,
    ToyAttributes,
    ToyClipDataset,
    caption,
    held_out_prompts,
    parse_caption,
    render_clip,
    sample_attributes,
    shape_size_range,
)

F, S = 8, 32
ALL_COMBOS = list(itertools.product(COLORS, SHAPES, DIRECTIONS))


def _attrs(color="red", shape="circle", direction="still", speed=0.0, size=5, start=(15.3, 16.7)):
    return ToyAttributes(color=color, shape=shape, direction=direction, speed=speed, size=size, start=start)


def _fg_mask(clip: np.ndarray, color: str) -> np.ndarray:
    """Exact-colour foreground mask [F, H, W]."""
    return np.all(clip == np.asarray(COLORS[color], dtype=np.uint8), axis=-1)


def _centroids(mask: np.ndarray) -> np.ndarray:
    """(x, y) foreground centroid per frame, [F, 2]."""
    ys, xs = np.mgrid[: mask.shape[1], : mask.shape[2]]
    n = mask.sum(axis=(1, 2))
    assert np.all(n > 0)
    return np.stack([(mask * xs).sum(axis=(1, 2)) / n, (mask * ys).sum(axis=(1, 2)) / n], axis=1)


def _samples(n: int, seed: int = 1234) -> list[ToyAttributes]:
    rng = np.random.default_rng(seed)
    return [sample_attributes(rng, size=S, num_frames=F) for _ in range(n)]


# --------------------------------------------------------------------------- captions


def test_caption_examples():
    assert caption(_attrs("red", "circle", "left", 2.0)) == "a red circle moving left"
    assert caption(_attrs("blue", "square", "still", 0.0)) == "a blue square standing still"


@pytest.mark.parametrize("color,shape,direction", ALL_COMBOS)
def test_caption_round_trip(color, shape, direction):
    a = _attrs(color, shape, direction, 0.0 if direction == "still" else 2.0)
    assert parse_caption(caption(a)) == {"color": color, "shape": shape, "direction": direction}


def test_held_out_prompts_cover_all_combos_deterministically():
    prompts = held_out_prompts()
    assert len(prompts) == 60 == len(set(prompts))
    assert prompts == held_out_prompts()
    assert prompts == [caption(_attrs(c, s, d)) for c, s, d in ALL_COMBOS]
    parsed = {tuple(parse_caption(p).values()) for p in prompts}
    assert parsed == set(ALL_COMBOS)


def test_parse_caption_normalises_case_and_whitespace():
    assert parse_caption("  A Red   CIRCLE moving\tLeft ") == {
        "color": "red",
        "shape": "circle",
        "direction": "left",
    }


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello world",
        "a purple circle moving left",
        "a red hexagon moving left",
        "a red circle moving sideways",
        "a red circle moving still",
        "a red circle standing",
        "a red circle moving left fast",
        "the red circle moving left",
    ],
)
def test_parse_caption_rejects_unknown_text(text):
    with pytest.raises(ValueError):
        parse_caption(text)


def test_attributes_validate():
    with pytest.raises(ValueError):
        _attrs(color="purple")
    with pytest.raises(ValueError):
        _attrs(shape="hexagon")
    with pytest.raises(ValueError):
        _attrs(direction="sideways")


# --------------------------------------------------------------------------- sampling


def test_sample_attributes_ranges():
    lo, hi = shape_size_range(S)
    assert (lo, hi) == (3, 6)
    seen = set()
    for a in _samples(2000):
        seen.add((a.color, a.shape, a.direction))
        assert lo <= a.size <= hi
        if a.direction == "still":
            assert a.speed == 0.0
        else:
            assert SPEED_RANGE[0] <= a.speed <= SPEED_RANGE[1]
    assert seen == set(ALL_COMBOS)  # uniform choices reach every combination


def test_sample_attributes_deterministic():
    a = [sample_attributes(np.random.default_rng([7, i])) for i in range(20)]
    b = [sample_attributes(np.random.default_rng([7, i])) for i in range(20)]
    assert a == b
    assert len(set(a)) == 20


# --------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("textured", [False, True])
@pytest.mark.parametrize("color,shape", list(itertools.product(COLORS, SHAPES)))
def test_render_colour_and_background(color, shape, textured):
    clip = render_clip(_attrs(color, shape, "right", 2.0), F, S, textured=textured, seed=3)
    assert clip.shape == (F, S, S, 3) and clip.dtype == np.uint8
    fg = _fg_mask(clip, color)
    assert fg.sum(axis=(1, 2)).min() > 0
    # Every non-background pixel carries exactly the requested colour.
    bg_clip = render_clip(
        _attrs(color, shape, "right", 2.0, size=1, start=(-100.0, -100.0)), F, S, textured, 3
    )
    changed = np.any(clip != bg_clip, axis=-1)
    np.testing.assert_array_equal(changed, fg)
    # The mask does not depend on the background.
    plain = render_clip(_attrs(color, shape, "right", 2.0), F, S, textured=False)
    np.testing.assert_array_equal(fg, _fg_mask(plain, color))
    if not textured:
        assert np.all(clip[~fg] == np.asarray(BACKGROUND, dtype=np.uint8))


def test_textured_background_is_low_contrast_and_deterministic():
    a = _attrs(size=1, start=(-100.0, -100.0))  # shape fully off-canvas: background only
    bg = render_clip(a, F, S, textured=True, seed=5).astype(int)
    assert np.array_equal(bg, render_clip(a, F, S, textured=True, seed=5))
    assert not np.array_equal(bg, render_clip(a, F, S, textured=True, seed=6))
    assert np.all(bg == bg[:1])  # static over time
    assert bg.std() > 1.0  # actually textured
    assert np.abs(bg - np.asarray(BACKGROUND)).max() <= 10  # low contrast around dark gray


def test_plain_render_depends_only_on_attrs():
    a = _attrs("green", "triangle", "down", 1.7)
    np.testing.assert_array_equal(render_clip(a, seed=0), render_clip(a, seed=99))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_centroid_motion(direction, shape):
    """Centroid moves by velocity * (F - 1) (within 1 px) in image coordinates."""
    rng = np.random.default_rng([11, DIRECTIONS.index(direction), SHAPES.index(shape)])
    checked = 0
    while checked < 15:
        a = sample_attributes(rng, S, F)
        if a.direction != direction:
            continue
        a = ToyAttributes(a.color, shape, a.direction, a.speed, a.size, a.start)
        clip = render_clip(a, F, S)
        c = _centroids(_fg_mask(clip, a.color))
        disp = c[-1] - c[0]
        dx, dy = DIRECTION_VECTORS[direction]
        expected = np.array([dx, dy], dtype=float) * a.speed * (F - 1)
        np.testing.assert_allclose(disp, expected, atol=1.0)
        if direction == "still":
            assert np.all(clip == clip[:1])  # nothing moves at all
        else:
            axis = 0 if dx else 1
            sign = dx or dy
            assert sign * disp[axis] >= a.speed * (F - 1) - 1.0
            # Motion is monotone frame to frame along the direction.
            assert np.all(sign * np.diff(c[:, axis]) >= -0.5)
        checked += 1


@pytest.mark.parametrize("shape", SHAPES)
def test_centroid_quantisation_jitter_below_one_pixel(shape):
    """Over a dense sweep of sub-pixel offsets the centroid error varies by < 1 px.

    This is what makes the centroid-displacement check hold for *any* start /
    speed, not just the sampled ones (see RASTER_DILATION in the module docs).
    """
    n = 40  # offsets k / n in both axes; x is swept by moving right at 1/n px per frame
    for radius in range(2, 10):
        errs = []
        for k in range(n):
            a = _attrs(shape=shape, direction="right", speed=1.0 / n, size=radius, start=(14.0, 14.0 + k / n))
            c = _centroids(_fg_mask(render_clip(a, n, S), "red"))
            errs.append(c - a.centers(n))
        ptp = np.ptp(np.concatenate(errs), axis=0)
        assert ptp.max() < 0.9, (shape, radius, ptp)


def test_directions_in_image_coordinates():
    left = _centroids(_fg_mask(render_clip(_attrs(direction="left", speed=2.0, start=(24.0, 16.0))), "red"))
    up = _centroids(_fg_mask(render_clip(_attrs(direction="up", speed=2.0, start=(16.0, 24.0))), "red"))
    assert left[-1, 0] < left[0, 0]  # left: x (column) decreases
    assert up[-1, 1] < up[0, 1]  # up: y (row) decreases


def test_shape_stays_inside_frame_500_samples():
    """Analytic box within the frame, and no pixels are clipped by the frame border.

    Rendering on a 3x larger canvas with the start shifted by ``S`` must give
    the same per-frame foreground pixel count and the same pixels in the
    central crop: if the shape left the frame, the big canvas would show more.
    """
    for a in _samples(500, seed=2024):
        centers = a.centers(F)
        assert np.all(centers - a.size >= 0) and np.all(centers + a.size <= S - 1), a
        small = _fg_mask(render_clip(a, F, S), a.color)
        shifted = ToyAttributes(
            a.color, a.shape, a.direction, a.speed, a.size, (a.start[0] + S, a.start[1] + S)
        )
        big = _fg_mask(render_clip(shifted, F, 3 * S), a.color)
        np.testing.assert_array_equal(big.sum(axis=(1, 2)), small.sum(axis=(1, 2)))
        np.testing.assert_array_equal(big[:, S : 2 * S, S : 2 * S], small)
        assert small.sum(axis=(1, 2)).min() > 0


@pytest.mark.parametrize("radius", [3, 4, 5, 6, 8])
def test_shape_areas_are_distinguishable(radius):
    areas = {}
    for shape in SHAPES:
        clip = render_clip(_attrs("blue", shape, size=radius, start=(15.0, 15.0)), 1, S)
        areas[shape] = int(_fg_mask(clip, "blue").sum())
    assert areas["square"] > areas["circle"] > areas["triangle"] > 0
    # Close to the analytic areas 4 r^2, pi r^2, 2 r^2 (pixel-centre sampling, integer centre).
    assert areas["square"] == (2 * radius + 1) ** 2
    assert abs(areas["circle"] - np.pi * radius**2) < 4 * radius
    assert abs(areas["triangle"] - 2 * radius**2) < 4 * radius


def test_triangle_points_up():
    m = _fg_mask(render_clip(_attrs("red", "triangle", size=6, start=(15.0, 15.0)), 1, S), "red")[0]
    widths = m.sum(axis=1)
    rows = np.nonzero(widths)[0]
    w = widths[rows]
    assert np.all(np.diff(w) >= 0)  # widens monotonically downwards
    assert w[-1] > 3 * w[0]  # apex at the top, base at the bottom
    cols = np.nonzero(m.sum(axis=0))[0]
    assert cols.min() + cols.max() == 30  # symmetric about x = 15


def test_render_is_fast():
    attrs = _samples(2000, seed=5)
    t0 = time.perf_counter()
    for a in attrs:
        render_clip(a, F, S)
    per_clip = (time.perf_counter() - t0) / len(attrs)
    assert per_clip < 2e-3, f"{per_clip * 1e6:.0f} us per clip"  # ~40 us expected; generous for CI


# --------------------------------------------------------------------------- dataset


def test_dataset_item_format():
    ds = ToyClipDataset(num_samples=50, num_frames=F, size=S, seed=0)
    assert len(ds) == 50
    item = ds[3]
    assert set(item) == {"video", "caption", "attrs", "index"}
    v = item["video"]
    assert isinstance(v, torch.Tensor) and v.dtype == torch.float32
    assert v.shape == (F, 3, S, S)
    assert v.min() >= -1.0 and v.max() <= 1.0
    assert item["index"] == 3
    at = item["attrs"]
    assert set(at) == {"color", "shape", "direction", "speed", "size", "start_x", "start_y"}
    assert all(isinstance(x, (str, int, float)) for x in at.values())
    assert parse_caption(item["caption"]) == {k: at[k] for k in ("color", "shape", "direction")}
    # The video is the rendered clip, normalised x / 127.5 - 1.
    attrs = ToyAttributes(
        at["color"], at["shape"], at["direction"], at["speed"], at["size"], (at["start_x"], at["start_y"])
    )
    expected = torch.from_numpy(render_clip(attrs, F, S)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    torch.testing.assert_close(v, expected)
    with pytest.raises(IndexError):
        ds[50]


@pytest.mark.parametrize("textured", [False, True])
def test_dataset_determinism(textured):
    a = ToyClipDataset(num_samples=100, seed=0, textured=textured)
    b = ToyClipDataset(num_samples=100, seed=0, textured=textured)
    for i in (0, 1, 17, 99):
        x, y = a[i], b[i]
        assert torch.equal(x["video"], y["video"])
        assert x["caption"] == y["caption"] and x["attrs"] == y["attrs"]
        assert torch.equal(a[i]["video"], x["video"])  # repeated access
    videos = [a[i]["video"] for i in range(10)]
    for i, j in itertools.combinations(range(10), 2):
        assert not torch.equal(videos[i], videos[j])
    other = ToyClipDataset(num_samples=100, seed=1, textured=textured)
    assert not torch.equal(other[0]["video"], a[0]["video"])
    for i in range(30):
        v = a[i]["video"]
        assert v.shape == (8, 3, 32, 32) and v.min() >= -1.0 and v.max() <= 1.0


def test_dataloader_collation():
    ds = ToyClipDataset(num_samples=16, seed=0)
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    assert batch["video"].shape == (4, F, 3, S, S) and batch["video"].dtype == torch.float32
    assert isinstance(batch["caption"], list) and len(batch["caption"]) == 4
    assert batch["index"].tolist() == [0, 1, 2, 3]
    assert isinstance(batch["attrs"]["color"], list) and len(batch["attrs"]["color"]) == 4
    assert batch["attrs"]["speed"].shape == (4,) and batch["attrs"]["size"].shape == (4,)
    for k in range(4):
        assert torch.equal(batch["video"][k], ds[k]["video"])
        assert batch["caption"][k] == ds[k]["caption"]


def test_directions_subset_restricts_and_keeps_the_full_stream():
    """``directions`` draws only from the subset; ``None`` is exactly the default stream; bad subsets
    are refused with the valid names."""
    full = ToyClipDataset(num_samples=200, seed=4)
    same = ToyClipDataset(num_samples=200, seed=4, directions=None)
    sub = ToyClipDataset(num_samples=200, seed=4, directions=["left", "up", "still"])
    dirs = [sub.attributes(i)[0].direction for i in range(200)]
    assert set(dirs) == {"left", "up", "still"}
    assert all(full.attributes(i)[0] == same.attributes(i)[0] for i in range(50))
    # the other attributes are drawn as before where the direction agrees
    a, b = full.attributes(7)[0], sub.attributes(7)[0]
    assert (a.color, a.shape) == (b.color, b.shape)
    with pytest.raises(ValueError, match="subset of"):
        ToyClipDataset(directions=["left", "sideways"])
    with pytest.raises(ValueError, match="subset of"):
        ToyClipDataset(directions=[])
