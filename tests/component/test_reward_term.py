"""The reward term of the loss against an independent computation on toy clips."""

import torch
import torch.nn.functional as F

from t2vturbo.backbones import tiny_backbone
from t2vturbo.config import RewardConfig
from t2vturbo.data.toy import ToyClipDataset
from t2vturbo.rewards import registry
from t2vturbo.train.reward_term import RewardTerm


def setup_module():
    torch.set_num_threads(1)


def _batch(n=3):
    ds = ToyClipDataset(num_frames=8, size=32, seed=0)
    items = [ds[i] for i in range(n)]
    video = torch.stack([it["video"] for it in items])  # [B,F,3,H,W]
    return video, [it["caption"] for it in items]


def test_reward_term_equals_direct_reward_on_decoded_frames():
    bb = tiny_backbone(vae="pixel_unshuffle", block_out_channels=(16, 32))
    video, captions = _batch()
    x0 = bb.encode_video(video).requires_grad_(True)
    cfg = RewardConfig(weights={"toy_color": 0.7, "toy_motion": 0.3}, image_frames=2, frame_mode="strided")
    term = RewardTerm(cfg, bb, seed=0)
    loss, logs = term(x0, captions, positions=[0, 1, 2])
    color = registry.build("toy_color")
    motion = registry.build("toy_motion")
    frames = video[:, [0, 4]]  # strided, 2 of 8
    r_c = (
        color(frames.reshape(6, 1, 3, 32, 32), [c for c in captions for _ in range(2)]).reshape(3, 2).mean(1)
    )
    r_m = motion(video, captions)
    expected = -(0.7 * r_c.mean() + 0.3 * r_m.mean())
    assert torch.allclose(loss, expected, atol=1e-5), (loss, expected)
    assert torch.allclose(logs["reward/toy_color"], r_c.mean(), atol=1e-6)
    loss.backward()
    assert torch.isfinite(x0.grad).all() and x0.grad.abs().sum() > 0


def test_reward_term_flags_ranks_and_random_frames_are_position_keyed():
    bb = tiny_backbone(vae="pixel_unshuffle", block_out_channels=(16, 32))
    video, captions = _batch(4)
    x0 = bb.encode_video(video)
    cfg = RewardConfig(weights={"toy_color": 1.0}, image_frames=1, frame_mode="random")
    term = RewardTerm(cfg, bb, seed=5)
    full, _ = term(x0, captions, [10, 11, 12, 13])
    part, _ = term(x0[2:], captions[2:], [12, 13])
    # the same samples get the same frames whatever batch they sit in
    a = term._frames(x0, [10, 11, 12, 13], 1, "random", 1)[2:]
    b = term._frames(x0[2:], [12, 13], 1, "random", 1)
    assert torch.equal(a, b)
    flagged, logs = term(x0, captions, [10, 11, 12, 13], use_reward=[False, False, True, True])
    assert torch.allclose(flagged, part, atol=1e-6)
    none, logs = term(x0, captions, [10, 11, 12, 13], use_reward=[False] * 4)
    assert none.item() == 0.0 and not logs
    off_rank = RewardTerm(RewardConfig(weights={"toy_color": 1.0}, image_ranks=[1]), bb, seed=0, rank=0)
    zero, logs = off_rank(x0, captions, [0, 1, 2, 3])
    assert zero.item() == 0.0 and "reward/toy_color" not in logs


def test_reward_gradient_pushes_colour_of_latent():
    """Gradient descent on the reward term alone recolours a latent towards the prompt."""
    bb = tiny_backbone(vae="pixel_unshuffle", block_out_channels=(16, 32))
    video, _ = _batch(1)
    x0 = bb.encode_video(video).clone().requires_grad_(True)
    term = RewardTerm(RewardConfig(weights={"toy_color": 1.0}, image_frames=8), bb, seed=0)
    caption = ["a blue square moving left"] if "red" in _batch(1)[1][0] else ["a red square moving left"]
    opt = torch.optim.Adam([x0], lr=0.05)
    first = None
    for _ in range(15):
        loss, _ = term(x0, caption, [0])
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.1, (first, loss.item())
    assert F.mse_loss(x0, bb.encode_video(video)).item() > 0
