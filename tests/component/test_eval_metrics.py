"""Weight-free video metrics (t2vturbo.eval.metrics) on synthetic clips with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("cv2")

from t2vturbo.eval.metrics import (  # noqa: E402
    METRIC_KEYS,
    clip_metrics,
    dynamic_count_needed,
    dynamic_degree,
    dynamic_threshold,
    main,
    motion_smoothness,
    sharpness,
    temporal_flicker,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    import cv2

    n, m = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    yield
    torch.set_num_threads(n)
    cv2.setNumThreads(m)


def _smooth_noise(rng, h, w, sigma=1.5):
    """Smooth random texture in 0..1 (separable box blurs of uniform noise)."""
    x = rng.uniform(0, 1, (h + 8, w + 8))
    k = max(1, int(round(sigma * 2)))
    for axis in (0, 1):
        x = np.mean([np.roll(x, s, axis=axis) for s in range(-k, k + 1)], axis=0)
    x = x[4:-4, 4:-4]
    return (x - x.min()) / (x.max() - x.min() + 1e-9)


def square_clip(num_frames=8, size=64, side=16, velocity=(2, 0), start=(4, 8), textured=True, seed=0):
    """uint8 [F, H, W, 3]: a (textured) square translating by ``velocity`` px/frame over a static background."""
    rng = np.random.default_rng(seed)
    bg = 50 + 30 * _smooth_noise(rng, size, size) if textured else np.full((size, size), 60.0)
    tex = 150 + 100 * _smooth_noise(rng, side, side, 1.0) if textured else np.full((side, side), 200.0)
    frames = []
    for t in range(num_frames):
        f = bg.copy()
        x0, y0 = start[0] + velocity[0] * t, start[1] + velocity[1] * t
        f[y0 : y0 + side, x0 : x0 + side] = tex
        frames.append(f)
    gray = np.clip(np.rint(np.stack(frames)), 0, 255).astype(np.uint8)
    rgb = np.stack([gray, np.clip(gray.astype(int) + 20, 0, 255).astype(np.uint8), gray // 2], axis=-1)
    return np.ascontiguousarray(rgb)


def test_static_clip():
    frame = square_clip(num_frames=1)[0]
    clip = np.repeat(frame[None], 8, axis=0)
    m = clip_metrics(clip)
    assert m["temporal_flicker"] == 1.0
    assert m["flow_magnitude"] < 1e-3 and m["flow_magnitude_max"] < 1e-3
    assert m["dynamic"] is False
    assert m["motion_smoothness"] == pytest.approx(1.0, abs=1e-6)
    assert set(METRIC_KEYS) <= set(m)
    assert (m["num_frames"], m["height"], m["width"]) == (8, 64, 64)


@pytest.mark.parametrize("velocity", [(2, 0), (0, -3), (2, 2)])
def test_translating_square_flow_equals_speed(velocity):
    start = (4, 40) if velocity[1] < 0 else (4, 8)
    clip = square_clip(num_frames=8, velocity=velocity, start=start)
    d = dynamic_degree(clip)
    speed = float(np.hypot(*velocity))
    assert d["flow_magnitude"] == pytest.approx(speed, rel=0.1)
    assert all(abs(p - speed) < 0.2 * speed for p in d["per_pair"])
    assert d["threshold"] == pytest.approx(6.0 * 64 / 256)  # 1.5 px at 64x64
    assert d["dynamic"] is True


def test_untextured_square_flow_and_threshold():
    """A flat-coloured square at 1 px/frame: flow ~1 px, below the 1.5 px threshold -> not dynamic."""
    slow = dynamic_degree(square_clip(velocity=(1, 0), textured=False))
    assert slow["flow_magnitude"] == pytest.approx(1.0, rel=0.15)
    assert slow["dynamic"] is False
    fast = dynamic_degree(square_clip(velocity=(3, 0), textured=False))
    assert fast["flow_magnitude"] == pytest.approx(3.0, rel=0.15)
    assert fast["dynamic"] is True


def test_dynamic_rule_scales_with_resolution_and_length():
    assert dynamic_threshold(256, 256) == pytest.approx(6.0)
    assert dynamic_threshold(320, 512) == pytest.approx(7.5)
    assert dynamic_threshold(32, 32) == pytest.approx(0.75)
    assert [dynamic_count_needed(f) for f in (2, 4, 8, 16, 32)] == [1, 1, 2, 4, 8]


def test_motion_smoothness_linear_vs_shuffled():
    clip = square_clip(num_frames=10, velocity=(2, 1), start=(4, 8), textured=False)
    smooth = motion_smoothness(clip)
    order = np.array([3, 7, 0, 9, 5, 1, 8, 2, 6, 4])
    shuffled = motion_smoothness(clip[order])
    assert smooth > 0.99
    assert shuffled < smooth - 0.02
    assert 0.0 <= shuffled <= 1.0
    # textured content behaves the same way
    tex = square_clip(num_frames=10, velocity=(2, 1), start=(4, 8))
    assert motion_smoothness(tex) > motion_smoothness(tex[order]) + 0.02


def test_blur_lowers_sharpness():
    clip = square_clip(num_frames=4, velocity=(1, 0))
    blurred = clip.astype(np.float32)
    for axis in (1, 2):  # 5-tap box blur along H and W
        blurred = np.mean([np.roll(blurred, s, axis=axis) for s in range(-2, 3)], axis=0)
    blurred = np.rint(blurred).astype(np.uint8)
    s_sharp, s_blur = sharpness(clip), sharpness(blurred)
    assert s_sharp.shape == (4,)
    assert np.all(s_blur < 0.5 * s_sharp)
    assert clip_metrics(blurred)["sharpness"] < clip_metrics(clip)["sharpness"]
    assert np.all(sharpness(np.full((3, 16, 16, 3), 128, np.uint8)) == 0.0)


def test_alternating_black_white_flickers():
    clip = np.zeros((6, 16, 16, 3), np.uint8)
    clip[1::2] = 255
    assert temporal_flicker(clip) == 0.0
    assert motion_smoothness(clip) < 0.01  # the neighbours predict the opposite colour
    half = clip.copy()
    half[1::2] = 51  # every step changes by 51 levels -> (255 - 51) / 255
    assert temporal_flicker(half) == pytest.approx(0.8)


def test_float_and_uint8_inputs_agree():
    clip = square_clip(num_frames=5, size=32, side=10, velocity=(1, 1), start=(2, 2))
    as_float = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # [F, 3, H, W] in [-1, 1]
    a, b = clip_metrics(clip), clip_metrics(as_float)
    for k in METRIC_KEYS:
        assert float(a[k]) == pytest.approx(float(b[k]), abs=1e-6), k


def test_metrics_cli_on_video_file(tmp_path, capsys):
    from t2vturbo.data.video_io import write_video

    clip = square_clip(num_frames=6, size=32, side=10, velocity=(2, 0), start=(2, 8))
    write_video(tmp_path / "vids" / "a square-0.mp4", clip)
    out = tmp_path / "m.json"
    assert main([str(tmp_path / "vids"), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert len(res["videos"]) == 1 and not res["failed"]
    assert res["mean"]["flow_magnitude"] == pytest.approx(2.0, rel=0.2)
    assert "MEAN over 1 videos" in capsys.readouterr().out
