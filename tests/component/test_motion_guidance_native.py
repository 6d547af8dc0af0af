"""Motion guidance on a native backbone (VideoCrafter2's VC2UNet): temporal-attention capture by
forward hooks is exact, and the energy's score matches a finite difference."""

from __future__ import annotations

import pytest
import torch

from t2vturbo.backbones.videocrafter2 import tiny_backbone
from t2vturbo.diffusion import ddim_grid
from t2vturbo.guidance.attention_capture import (
    capture_temporal_attention,
    list_temporal_attention_layers,
    select_layers,
)
from t2vturbo.guidance.motion import motion_energy, motion_score, reference_maps, topk_mask


@pytest.fixture(scope="module")
def vc2():
    bb = tiny_backbone(seed=0)
    bb.teacher.eval()
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, *bb.latent_shape(4, 16, 16), generator=g)
    cond = bb.encode_text(["a red circle moving left", "a blue square moving up"])
    return bb, z, cond


def test_layers_and_default_selection(vc2):
    bb, _, _ = vc2
    layers = list_temporal_attention_layers(bb.teacher)
    assert layers and all(n.endswith("transformer_blocks.0.attn1") for n in layers)
    dec = select_layers(bb.teacher)
    assert dec == [n for n in layers if n.startswith("output_blocks.")] and len(dec) < len(layers)
    assert select_layers(bb.teacher, "all") == layers
    with pytest.raises(ValueError, match="no temporal self-attention layer matches"):
        select_layers(bb.teacher, ["nothing.*"])


def test_capture_is_exact_and_matches_an_independent_softmax(vc2):
    bb, z, cond = vc2
    t = torch.tensor([500, 700])
    with torch.no_grad():
        plain = bb.teacher(z, t, cond)
        with capture_temporal_attention(bb.teacher, "all") as store:
            captured = bb.teacher(z, t, cond)
            maps = store.pop()
    assert torch.equal(plain, captured)  # bit for bit: the hooks do not touch the output
    name = select_layers(bb.teacher)[0]
    attn = dict(bb.teacher.unet.named_modules())[name]
    seen = {}
    h = attn.register_forward_hook(lambda m, a, o: seen.setdefault("x", a[0]))
    with torch.no_grad():
        bb.teacher(z, t, cond)
    h.remove()
    x = seen["x"]  # [B*H*W, F, C]
    heads = attn.heads
    q = attn.to_q(x).reshape(x.shape[0], x.shape[1], heads, -1).permute(0, 2, 1, 3)
    k = attn.to_k(x).reshape(x.shape[0], x.shape[1], heads, -1).permute(0, 2, 1, 3)
    d = q.shape[-1]
    ref = torch.softmax(torch.einsum("nhid,nhjd->nhij", q, k) / d**0.5, dim=-1)
    a = maps[name]
    assert a.shape == (x.shape[0], heads, 4, 4)
    torch.testing.assert_close(a, ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(a.sum(-1), torch.ones_like(a.sum(-1)))
    # nothing stays installed
    assert not attn._forward_hooks


def test_motion_score_matches_finite_difference(vc2):
    bb, z, cond = vc2
    grid = ddim_grid(20, bb.num_train_timesteps)
    idx = torch.tensor([15, 18])
    t = grid[idx]
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(1))
    ref = reference_maps(
        bb.teacher, z, idx, grid, cond, bb.alphas_cumprod, bb.prediction_type, reference="noise", noise=noise
    )
    z_t = torch.randn(z.shape, generator=torch.Generator().manual_seed(2)).double().float()
    score, energy = motion_score(bb.teacher, z_t, t, cond, ref)
    assert torch.isfinite(score).all() and score.abs().sum() > 0 and (energy > 0).all()
    names = select_layers(bb.teacher)

    def e_of(zz):
        with torch.no_grad(), capture_temporal_attention(bb.teacher) as store:
            bb.teacher(zz, t, cond)
            maps = store.pop()
        assert all(torch.equal(ref.masks[n], topk_mask(ref.maps[n])) for n in names)
        return motion_energy(maps, ref.maps, ref.masks, batch_size=2).sum()

    direction = torch.randn(z.shape, generator=torch.Generator().manual_seed(3))
    direction /= direction.norm()
    eps = 1e-2
    fd = (e_of(z_t + eps * direction) - e_of(z_t - eps * direction)) / (2 * eps)
    analytic = (score * direction).sum()
    assert torch.allclose(fd, analytic.to(fd.dtype), rtol=0.05, atol=1e-4 * float(score.abs().sum())), (
        fd,
        analytic,
    )


def test_online_motion_guidance_in_the_trainer_with_videocrafter2(tmp_path):
    import json

    from t2vturbo.backbones.videocrafter2 import write_tiny_checkpoint
    from t2vturbo.config import validate
    from t2vturbo.train.trainer import Trainer

    ckpt = write_tiny_checkpoint(tmp_path / "vc2")
    cfg = validate(
        {
            "output_dir": str(tmp_path / "run"),
            "model": {
                "family": "videocrafter2",
                "path": str(ckpt),
                "num_frames": 4,
                "height": 16,
                "width": 16,
            },
            "guidance": {"motion": True, "reference": "noise", "tau": 1.0},
            "train": {
                "max_steps": 2,
                "micro_batch_size": 2,
                "log_every": 1,
                "progress": False,
                "eval_every": 0,
                "ckpt_every": 0,
            },
        }
    )
    Trainer(cfg).train()
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["mg_fraction"] == 1.0 and r["mg_score_abs"] > 0 for r in rows)
