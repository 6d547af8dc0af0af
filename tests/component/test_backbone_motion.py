"""The toy teacher's UNetMotionModel option (AnimateDiff-style motion modules with sinusoidal frame
positions): same backbone interface, a student conditioned through diffusers' timestep_cond (the teacher when its
w / eta projections are zero), save/load round trip, and motion
guidance capture on its motion modules (exact)."""

from __future__ import annotations

import torch

from t2vturbo.backbones import UNet3DBackbone, tiny_backbone
from t2vturbo.config import validate
from t2vturbo.guidance.attention_capture import capture_temporal_attention, select_layers


def test_motion_unet_backbone(tmp_path):
    torch.manual_seed(0)
    bb = tiny_backbone(
        vae="pixel_unshuffle", block_out_channels=(16, 32), prediction_type="sample", unet="motion"
    )
    assert type(bb.teacher.unet).__name__ == "UNetMotionModel"
    z = torch.randn(2, *bb.latent_shape(4, 16, 16), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([500, 900])
    cond = bb.encode_text(["a red circle moving left", "a blue square moving up"])
    with torch.no_grad():
        out = bb.teacher(z, t, cond)
        assert out.shape == z.shape
        student = bb.make_student()
        w, eta = torch.tensor([4.0, 4.0]), torch.zeros(2)
        assert (student(z, t, cond, w, eta) - out).abs().max() > 1e-6  # random init: w acts from the start
        unet = student.base.unet
        for m in (unet.time_embedding.cond_proj, unet.motion_cond_proj, unet.combine_proj):
            m.weight.zero_()
        assert torch.equal(student(z, t, cond, w, eta), out)
        # frame order matters to this network
        assert not torch.allclose(bb.teacher(z.flip(2), t, cond).flip(2), out, atol=1e-6)
    layers = select_layers(bb.teacher)
    assert layers and all(".motion_modules." in n and n.startswith("up_blocks.") for n in layers)
    with torch.no_grad(), capture_temporal_attention(bb.teacher) as store:
        again = bb.teacher(z, t, cond)
        maps = store.pop()
    assert torch.equal(again, out)
    assert all(m.shape[-2:] == (4, 4) for m in maps.values())
    bb.save_pretrained(tmp_path / "t")
    bb2 = UNet3DBackbone.from_pretrained(tmp_path / "t")
    with torch.no_grad():
        assert torch.equal(bb2.teacher(z, t, cond), out)
    assert validate({"model": {"tiny": {"unet": "motion"}}}).model.tiny.unet == "motion"
