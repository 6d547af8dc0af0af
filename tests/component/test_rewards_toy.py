"""Component tests for the reward protocol, registry, preprocessing and the toy rewards."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from t2vturbo.data.toy import (
    BACKGROUND,
    COLORS,
    DIRECTION_VECTORS,
    DIRECTIONS,
    SHAPES,
    ToyAttributes,
    render_clip,
)
from t2vturbo.rewards import (
    Reward,
    available,
    build,
    frame_indices,
    normalize,
    require_files,
    resize_center_crop,
    select_frames,
)
from t2vturbo.rewards.toy import ToyColorReward, ToyMotionReward

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]
F, S = 8, 32


def _prompt(color: str, shape: str, direction: str) -> str:
    return f"a {color} {shape} " + ("standing still" if direction == "still" else f"moving {direction}")


def _clip(color="red", shape="circle", direction="still", speed=1.5, size=4, textured=False, seed=0):
    """Ground-truth clip centred on the frame, as float [F, 3, H, W] in [-1, 1]."""
    sp = 0.0 if direction == "still" else speed
    dx, dy = DIRECTION_VECTORS[direction]
    half = sp * (F - 1) / 2
    start = ((S - 1) / 2 - dx * half, (S - 1) / 2 - dy * half)
    attrs = ToyAttributes(color=color, shape=shape, direction=direction, speed=sp, size=size, start=start)
    clip = render_clip(attrs, num_frames=F, size=S, textured=textured, seed=seed)
    return torch.from_numpy(clip).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _background_clip(b=1, textured=False):
    bg = torch.tensor(BACKGROUND, dtype=torch.float32).div(127.5).sub(1.0).reshape(1, 1, 3, 1, 1)
    x = bg.expand(b, F, 3, S, S).clone()
    if textured:
        x = x + torch.empty_like(x).uniform_(
            -8 / 127.5, 8 / 127.5, generator=torch.Generator().manual_seed(0)
        )
    return x


# --------------------------------------------------------------------------- toy_color


@pytest.mark.parametrize("textured", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_toy_color_prefers_true_color(shape, textured):
    reward = build("toy_color")
    colors = list(COLORS)
    for true in colors:
        clip = _clip(true, shape, "right", size=3, textured=textured, seed=7)
        frames = clip.unsqueeze(0).expand(len(colors), -1, -1, -1, -1)
        r = reward(frames, [_prompt(c, shape, "right") for c in colors])
        assert r.dtype == torch.float32 and r.shape == (len(colors),)
        i = colors.index(true)
        assert r[i] > -0.01, (true, r)  # ~0: the foreground mean is the palette colour
        others = torch.cat([r[:i], r[i + 1 :]])
        assert (r[i] > others + 0.5).all(), (true, r)
        assert (r <= 0).all()


def test_toy_color_logprob_mode_ranks_and_is_log_probability():
    reward = ToyColorReward(mode="logprob")
    colors = list(COLORS)
    for true in colors:
        frames = _clip(true, "square", "still").unsqueeze(0).expand(len(colors), -1, -1, -1, -1)
        r = reward(frames, [_prompt(c, "square", "still") for c in colors])
        assert torch.allclose(r.exp().sum(), torch.tensor(1.0), atol=1e-4)  # a distribution over the palette
        assert r.argmax().item() == colors.index(true)


def test_toy_color_gradient_ascent_recolours_towards_prompt():
    reward = build("toy_color")
    x = _clip("red", "circle", "right", size=4).unsqueeze(0).clone().requires_grad_(True)
    prompt = ["a blue circle moving right"]
    blue = torch.tensor(COLORS["blue"]) / 255.0
    opt = torch.optim.SGD([x], lr=100.0)
    rewards, dists = [], []
    for _ in range(10):
        r = reward(x, prompt)
        rewards.append(r.item())
        dists.append((reward.mean_colors(x.detach())[0].mean(0) - blue).norm().item())
        opt.zero_grad()
        (-r.sum()).backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        opt.step()
    rewards.append(reward(x, prompt).item())
    dists.append((reward.mean_colors(x.detach())[0].mean(0) - blue).norm().item())
    assert all(b > a for a, b in zip(rewards, rewards[1:])), rewards
    assert all(b < a for a, b in zip(dists, dists[1:])), dists
    assert rewards[-1] - rewards[0] > 0.3


# --------------------------------------------------------------------------- toy_motion


@pytest.mark.parametrize("textured", [False, True])
@pytest.mark.parametrize(
    ("shape", "size", "speed"), [("circle", 3, 3.0), ("square", 5, 1.5), ("triangle", 3, 1.5)]
)
def test_toy_motion_prefers_true_direction(shape, size, speed, textured):
    reward = build("toy_motion")
    for true in DIRECTIONS:
        clip = _clip("green", shape, true, speed=speed, size=size, textured=textured, seed=3)
        frames = clip.unsqueeze(0).expand(len(DIRECTIONS), -1, -1, -1, -1)
        r = reward(frames, [_prompt("green", shape, d) for d in DIRECTIONS])
        i = DIRECTIONS.index(true)
        others = torch.cat([r[:i], r[i + 1 :]])
        assert (r[i] > others + 0.5).all(), (true, r)
        assert r[i] > 0.3 and (r > -1).all() and (r < 1).all(), (true, r)


def test_toy_motion_velocity_matches_ground_truth():
    reward = ToyMotionReward()
    frames = torch.stack([_clip("blue", "circle", d, speed=2.0) for d in DIRECTIONS])
    v, presence = reward.velocity(frames)
    expected = torch.tensor([DIRECTION_VECTORS[d] for d in DIRECTIONS], dtype=torch.float32) * 2.0
    assert torch.allclose(v, expected, atol=0.15), v
    assert (presence > 0.95).all()


def test_toy_motion_gradient_ascent_moves_shape():
    reward = build("toy_motion")
    x = _clip("red", "circle", "still", size=4).unsqueeze(0).clone().requires_grad_(True)
    prompt = ["a red circle moving right"]
    opt = torch.optim.Adam([x], lr=0.05)
    rewards = []
    for _ in range(8):
        r = reward(x, prompt)
        rewards.append(r.item())
        opt.zero_grad()
        (-r.sum()).backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        opt.step()
    rewards.append(reward(x, prompt).item())
    assert all(b > a for a, b in zip(rewards, rewards[1:])), rewards
    vx = reward.velocity(x.detach())[0][0, 0].item()
    assert vx > 0.01


# --------------------------------------------------------------------------- both toy rewards


@pytest.mark.parametrize("name", ["toy_color", "toy_motion"])
def test_toy_gradients_finite_and_nonzero(name):
    reward = build(name)
    frames = torch.stack(
        [_clip("yellow", "triangle", "down", size=4), _clip("blue", "square", "left", textured=True)]
    )
    frames.requires_grad_(True)
    r = reward(frames, ["a yellow triangle moving down", "a blue square moving left"])
    r.sum().backward()
    assert torch.isfinite(frames.grad).all()
    assert (frames.grad.flatten(1).abs().sum(1) > 0).all()


@pytest.mark.parametrize("name", ["toy_color", "toy_motion"])
@pytest.mark.parametrize("textured", [False, True])
def test_toy_empty_frames_are_finite(name, textured):
    reward = build(name)
    frames = _background_clip(b=2, textured=textured).requires_grad_(True)
    r = reward(frames, ["a red circle standing still", "a blue square moving up"])
    assert torch.isfinite(r).all()
    r.sum().backward()
    assert torch.isfinite(frames.grad).all()
    # An empty clip is never better than the matching ground-truth clip.
    good = torch.stack([_clip("red", "circle", "still"), _clip("blue", "square", "up")])
    assert (reward(good, ["a red circle standing still", "a blue square moving up"]) > r.detach()).all()


@pytest.mark.parametrize("name", ["toy_color", "toy_motion"])
def test_toy_unparsable_prompts_score_zero_and_are_counted(name):
    reward = build(name)
    frames = torch.stack([_clip("red", "circle", "left"), _clip("red", "circle", "left")]).requires_grad_(
        True
    )
    prompts = ["a cat playing piano", "a red circle moving left"]
    r = reward(frames, prompts)
    assert r[0].item() == 0.0 and r[1].item() != 0.0
    assert reward.num_unparsable == 1 and reward.last_valid.tolist() == [False, True]
    r.sum().backward()
    assert frames.grad[0].abs().sum() == 0 and torch.isfinite(frames.grad).all()
    reward(frames, ["a blue blob", "red circle"])
    assert reward.num_unparsable == 3


def test_toy_rewards_accept_low_precision_and_single_frame():
    color, motion = build("toy_color"), build("toy_motion")
    frames = _clip("green", "circle", "right").unsqueeze(0)
    for reward in (color, motion):
        out = reward(frames.bfloat16(), ["a green circle moving right"])
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # One frame: no motion measurable -> v = 0; colour still works.
    v, _ = motion.velocity(frames[:, :1])
    assert torch.equal(v, torch.zeros_like(v))
    assert color(frames[:, :1], ["a green circle moving right"]).item() > -0.01


def test_reward_input_validation():
    reward = build("toy_color")
    with pytest.raises(ValueError, match=r"\[B, F, 3, H, W\]"):
        reward(torch.zeros(2, 3, 8, 8), ["a", "b"])
    with pytest.raises(ValueError, match="prompts"):
        reward(torch.zeros(2, 1, 3, 8, 8), ["only one"])


# --------------------------------------------------------------------------- registry


def test_registry_lists_toy_rewards_with_kind_and_expects():
    reg = available()
    assert reg["toy_color"] is ToyColorReward and reg["toy_motion"] is ToyMotionReward
    assert ToyColorReward.kind == "image" and ToyMotionReward.kind == "video"
    for name in ("toy_color", "toy_motion"):
        cls = reg[name]
        assert cls.name == name and "no weights" in cls.expects
        assert isinstance(build(name, tiny=True), cls)
        assert isinstance(build(name, pretrained="/nonexistent"), cls)  # analytic: path ignored
    assert build("toy_motion", margin=0.25).margin == 0.25


def test_cli_list_prints_rewards():
    out = subprocess.run(
        [sys.executable, "-m", "t2vturbo.rewards", "list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    assert "image" in lines["toy_color"] and "no weights (analytic)" in lines["toy_color"]
    assert "video" in lines["toy_motion"] and "no weights (analytic)" in lines["toy_motion"]


def test_build_unknown_name_lists_available():
    with pytest.raises(KeyError) as ei:
        build("nope")
    assert "nope" in str(ei.value) and "toy_color" in str(ei.value) and "toy_motion" in str(ei.value)
    with pytest.raises(ValueError):
        build("nope")


def test_base_defaults_name_the_class():
    class Dummy(Reward):
        kind = "video"
        expects = "a folder with dummy.safetensors"

    with pytest.raises(NotImplementedError, match="Dummy") as ei:
        Dummy.from_pretrained("/somewhere")
    assert "dummy.safetensors" in str(ei.value)
    with pytest.raises(NotImplementedError, match="Dummy"):
        Dummy.tiny()
    with pytest.raises(NotImplementedError, match="Dummy"):
        Dummy()(torch.zeros(1, 1, 3, 4, 4), ["x"])


# --------------------------------------------------------------------------- helpers


def test_require_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    found = require_files(tmp_path, ["config.json", ("model.safetensors", "pytorch_model.bin")])
    assert found == [tmp_path / "config.json", tmp_path / "pytorch_model.bin"]

    with pytest.raises(FileNotFoundError) as ei:
        require_files(tmp_path, ["config.json", "open_clip_pytorch_model.bin"], layout_hint="from HF repo X")
    msg = str(ei.value)
    assert str(tmp_path) in msg and "open_clip_pytorch_model.bin" in msg and "config.json" in msg
    assert "from HF repo X" in msg

    missing = tmp_path / "absent"
    with pytest.raises(FileNotFoundError) as ei:
        require_files(missing, ["weights.pt"])
    assert str(missing) in str(ei.value) and "weights.pt" in str(ei.value)


def test_resize_center_crop_exact_crop_when_short_side_matches():
    x = torch.arange(32 * 48, dtype=torch.float32).reshape(1, 1, 32, 48).expand(2, 3, 32, 48)
    y = resize_center_crop(x, 32)
    assert y.shape == (2, 3, 32, 32)
    assert torch.equal(y, x[..., :, 8:40])
    # Leading dims are preserved ([B, F, C, H, W]).
    assert resize_center_crop(torch.zeros(2, 4, 3, 32, 48), 32).shape == (2, 4, 3, 32, 32)


def test_resize_center_crop_40x56_to_32_is_centred():
    # Columns: 8 of -1 | 40 of 0 | 8 of +1; rows constant.  Short side 40 -> 32 gives
    # 32 x 44 (= int(32 * 56 / 40)), centre crop drops 6 columns each side: the borders are
    # cut away (only the antialias footprint reaches the outermost output columns).
    x = torch.zeros(1, 1, 3, 40, 56)
    x[..., :8] = -1.0
    x[..., 48:] = 1.0
    x.requires_grad_(True)
    y = resize_center_crop(x, 32)
    assert y.shape == (1, 1, 3, 32, 32)
    assert torch.allclose(y[..., 1:-1], torch.zeros(()), atol=1e-6)
    assert y[..., 0].max() <= 0 and y[..., -1].min() >= 0 and y[..., 0].min() > -0.5
    assert torch.allclose(y, -y.flip(-1), atol=1e-6)  # antisymmetric input -> centred crop
    assert torch.allclose(y, y[..., :1, :].expand_as(y))  # rows stay constant
    # Differentiable, and the reference geometry: resize to (32, 44), crop columns 6:38.
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    ref = torch.nn.functional.interpolate(x.detach()[0], size=(32, 44), mode="bilinear", antialias=True)
    assert torch.allclose(y.detach()[0], ref[..., 6:38])
    # A (h, w) target covers both sides: 40 x 56 -> (16, 32) resizes to 22 x 32 then crops rows.
    assert resize_center_crop(x.detach(), (16, 32)).shape == (1, 1, 3, 16, 32)


def test_normalize_channels():
    x = torch.full((2, 3, 4, 4), 0.5)
    y = normalize(x, (0.5, 0.25, 0.0), (0.5, 0.25, 0.5))
    assert torch.allclose(y[:, 0], torch.zeros(())) and torch.allclose(y[:, 1], torch.ones(()))
    assert torch.allclose(y[:, 2], torch.ones(()))


def test_select_frames_strided_and_random():
    assert frame_indices(16, 4, "strided").tolist() == [0, 4, 8, 12]
    assert frame_indices(8, 2, "strided").tolist() == [0, 4]
    assert frame_indices(8, 3, "strided").tolist() == [0, 2, 4]
    assert frame_indices(4, 8, "strided").tolist() == [0, 1, 2, 3]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = frame_indices(16, 4, "strided", generator=g, jitter=True).tolist()
        assert idx[0] in range(4) and [b - a for a, b in zip(idx, idx[1:])] == [4, 4, 4]
    r1 = frame_indices(16, 2, "random", generator=torch.Generator().manual_seed(1))
    r2 = frame_indices(16, 2, "random", generator=torch.Generator().manual_seed(1))
    assert torch.equal(r1, r2) and len(set(r1.tolist())) == 2 and r1.tolist() == sorted(r1.tolist())
    with pytest.raises(ValueError):
        frame_indices(8, 2, "middle")

    frames = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 16, 1, 1, 1).expand(2, 16, 3, 2, 2)
    sel = select_frames(frames, 4, mode="strided")
    assert sel.shape == (2, 4, 3, 2, 2)
    assert sel[:, :, 0, 0, 0].tolist() == [[0, 4, 8, 12], [16, 20, 24, 28]]
    sel = select_frames(frames, 2, mode="random", generator=torch.Generator().manual_seed(1))
    assert sel[0, :, 0, 0, 0].tolist() == r1.float().tolist()
