"""bench/time_embedding_probe.py (issue #24, item 2): does a teacher use its timestep input?

On tiny random UNet3D teachers (pixel-unshuffle VAE, 4 frames of 16x16 -> 48x4x4x4 latents): the hook zeroes what
the resnets receive of the time embedding (and an identity hook changes nothing, bitwise); the x0 conversion is the
raw output for x0-prediction and ``sqrt(a) z - sqrt(1-a) v`` for v-prediction with ``a`` from an independent
scaled-linear schedule, at the TRUE t for the shifted calls; shift 0 changes nothing; the reported mean squares
match an independent recomputation and the ratios are change / gap of the reported numbers.
"""

from __future__ import annotations

import importlib.util
import math
import sys

import numpy as np
import pytest
import torch
from conftest import REPO

from t2vturbo.backbones.unet3d import tiny_backbone
from t2vturbo.data import crowd, toy

_spec = importlib.util.spec_from_file_location(
    "time_embedding_probe", REPO / "bench" / "time_embedding_probe.py"
)
tep = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("time_embedding_probe", tep)
_spec.loader.exec_module(tep)

FRAMES, SIZE = 4, 16
PROMPTS = ["a red circle moving left", "a blue square standing still"]


def _alpha_bar(t: int) -> float:
    """SD's scaled-linear schedule (0.00085 .. 0.012, 1000 steps) in float64, written out here."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    return float(np.cumprod(1.0 - betas)[t])


@pytest.fixture(scope="module")
def bb_v():
    return tiny_backbone(seed=0, vae="pixel_unshuffle", prediction_type="v_prediction").eval()


@pytest.fixture(scope="module")
def bb_x0():
    return tiny_backbone(seed=1, vae="pixel_unshuffle", prediction_type="sample").eval()


def _inputs(bb, t: int, seed: int = 0):
    x0 = tep.clean_latents(bb, PROMPTS, seed, FRAMES, SIZE)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    a = _alpha_bar(t)
    return x0, math.sqrt(a) * x0 + math.sqrt(1 - a) * eps


def test_clean_clip_matches_its_prompt():
    for prompt, mod in (("a red circle moving left", toy), ("two blue balls moving up fast", crowd)):
        video, i, world = tep.clean_clip(prompt, seed=3, num_frames=8, size=32)
        assert world == mod.__name__.rsplit(".", 1)[1]
        ds = (crowd.CrowdClipDataset if mod is crowd else toy.ToyClipDataset)(
            10**5, 8, 32, seed=3, directions=[mod.parse_caption(prompt)["direction"]]
        )
        item = ds[i]
        assert item["caption"] == prompt and torch.equal(item["video"], video)
    with pytest.raises(ValueError):
        tep.world_of("a purple elephant dancing")


def test_hook_zeroes_the_time_embedding(bb_v):
    t = 500
    _, z = _inputs(bb_v, t)
    cond = bb_v.encode_text(PROMPTS)
    seen = []
    proj = bb_v.teacher.unet.down_blocks[0].resnets[0].time_emb_proj
    grab = proj.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    try:
        ref, _ = tep.predict(bb_v, z, t, t, cond)
        with tep.zero_time_embedding(bb_v):
            zeroed, _ = tep.predict(bb_v, z, t, t, cond)
        with tep.time_embedding_hook(bb_v, lambda o: o):
            same, _ = tep.predict(bb_v, z, t, t, cond)
        after, _ = tep.predict(bb_v, z, t, t, cond)  # the hook is removed on exit
    finally:
        grab.remove()
    # what the resnet receives is silu(time embedding): nonzero normally, exactly 0 under the hook
    assert seen[0].abs().max() > 1e-3 and torch.count_nonzero(seen[1]) == 0
    assert (zeroed - ref).pow(2).mean() > 1e-8
    assert torch.equal(same, ref) and torch.equal(after, ref)


def test_x0_conversion(bb_v, bb_x0):
    t = 600
    _, z = _inputs(bb_x0, t)
    out, x0 = tep.predict(bb_x0, z, t, t, bb_x0.encode_text(PROMPTS))
    assert torch.equal(x0, out)  # x0-prediction: the raw output

    _, z = _inputs(bb_v, t)
    cond = bb_v.encode_text(PROMPTS)
    for t_net in (t, t + 300, t - 300):  # the shifted calls convert at the true t
        v, x0 = tep.predict(bb_v, z, t_net, t, cond)
        a = _alpha_bar(t)
        expected = math.sqrt(a) * z.double() - math.sqrt(1 - a) * v.double()
        torch.testing.assert_close(x0.double(), expected, rtol=0, atol=1e-5)
    v_other, _ = tep.predict(bb_v, z, t + 300, t, cond)
    assert (v_other - v).abs().max() > 1e-4  # the network input t does reach the model


def test_shift_zero_changes_nothing(bb_v):
    res = tep.probe(bb_v, PROMPTS, [999, 250], shift=0, seed=0, num_frames=FRAMES, size=SIZE)
    for row in [*res["per_t"], res["overall"]]:
        for space in tep.SPACES:
            m = row[space]
            assert m["shift_plus"] == 0.0 and m["shift_minus"] == 0.0
            assert m["ratio_shift_plus"] == 0.0 and m["gap"] > 0 and m["zeroed"] > 0
    assert [(r["t_minus"], r["t_plus"]) for r in res["per_t"]] == [(999, 999), (250, 250)]


def test_reported_numbers(bb_v):
    timesteps = [999, 500, 100]
    res = tep.probe(bb_v, PROMPTS, timesteps, shift=300, seed=0, num_frames=FRAMES, size=SIZE)
    assert [(r["t"], r["t_minus"], r["t_plus"]) for r in res["per_t"]] == [
        (999, 699, 999),
        (500, 200, 800),
        (100, 0, 400),
    ]
    # t + 300 clamps to 999 at t = 999: the same call as the reference
    assert res["per_t"][0]["x0"]["shift_plus"] == 0.0

    # an independent recomputation at t = 500 (x0 space): gap, zeroed, both shifts
    t = 500
    x0_true, z = _inputs(bb_v, t)
    cond, uncond = bb_v.encode_text(PROMPTS), bb_v.encode_text([""] * len(PROMPTS))
    a = _alpha_bar(t)

    def x0_at(t_net, c, zero=False):
        tt = torch.full((len(PROMPTS),), t_net, dtype=torch.long)
        hook = bb_v.teacher.unet.time_embedding.register_forward_hook(lambda m, i, o: o * 0) if zero else None
        try:
            with torch.no_grad():
                v = bb_v.teacher.unet(z, tt, encoder_hidden_states=c).sample.double()
        finally:
            if hook is not None:
                hook.remove()
        return math.sqrt(a) * z.double() - math.sqrt(1 - a) * v

    ref = x0_at(t, cond)
    expected = {
        "gap": (ref - x0_at(t, uncond)).pow(2).mean(),
        "zeroed": (x0_at(t, cond, zero=True) - ref).pow(2).mean(),
        "shift_plus": (x0_at(800, cond) - ref).pow(2).mean(),
        "shift_minus": (x0_at(200, cond) - ref).pow(2).mean(),
    }
    got = res["per_t"][1]["x0"]
    for k, v in expected.items():
        assert got[k] == pytest.approx(float(v), rel=1e-4), k
    assert res["per_t"][1]["ref_error"] == pytest.approx(
        float((ref - x0_true.double()).pow(2).mean()), rel=1e-4
    )

    # ratios are change / gap of the reported numbers; overall = mean over t, its ratios of those means
    for space in tep.SPACES:
        for row in [*res["per_t"], res["overall"]]:
            m = row[space]
            for var in tep.VARIANTS:
                assert m[f"ratio_{var}"] == pytest.approx(m[var] / m["gap"], rel=1e-12)
        for k in ("gap", *tep.VARIANTS):
            assert res["overall"][space][k] == pytest.approx(
                np.mean([r[space][k] for r in res["per_t"]]), rel=1e-12
            )
    table = tep.format_table(res)
    assert (
        "x0 space (latent) -- the headline" in table
        and f"{res['overall']['x0']['ratio_zeroed']:6.3f}" in table
    )
