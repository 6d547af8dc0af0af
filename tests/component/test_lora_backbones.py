"""LoRA on every backbone (UNet3D, VideoCrafter2, Wan2.1): presets resolve to real layers, the
student starts equal to the teacher, only adapters + w/eta train, and merging reproduces the
adapted network."""

from __future__ import annotations

import pytest
import torch

from t2vturbo.train.lora import (
    GUIDANCE_PROJECTIONS,
    LORA_PRESETS,
    add_lora,
    mark_trainable,
    merge_lora,
    resolve_targets,
)


def _unet3d():
    from t2vturbo.backbones import tiny_backbone

    bb = tiny_backbone(vae="pixel_unshuffle", block_out_channels=(16, 32))
    return bb, bb.latent_shape(4, 16, 16)


def _vc2():
    from t2vturbo.backbones.videocrafter2 import tiny_backbone

    bb = tiny_backbone()
    return bb, bb.latent_shape(4, 16, 16)


def _wan():
    from t2vturbo.backbones.wan import tiny_wan_backbone

    bb = tiny_wan_backbone()
    return bb, bb.latent_shape(5, 32, 32)


@pytest.mark.parametrize("make", [_unet3d, _vc2, _wan], ids=["unet3d", "videocrafter2", "wan"])
@pytest.mark.parametrize("preset", sorted(LORA_PRESETS))
def test_lora_presets_on_every_backbone(make, preset):
    torch.manual_seed(0)
    bb, shape = make()
    student = bb.make_student()
    names = resolve_targets(student.base, [preset])
    assert names
    if preset == "attention_ff_conv":
        assert len(names) > len(resolve_targets(student.base, ["attention"]))
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, *shape, generator=g)
    t = torch.tensor([500])
    cond = bb.encode_text(["a red circle moving left"])
    with torch.no_grad():
        before = student(z, t, cond, torch.tensor([4.0]), torch.tensor([0.0]))
    add_lora(student.base, 4, 4, [preset])
    mark_trainable(student, True)
    trainable = [n for n, p in student.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.rsplit(".", 2)[-2] in GUIDANCE_PROJECTIONS for n in trainable)
    assert sum("lora_" in n for n in trainable) == 2 * len(names)  # A and B per wrapped layer
    with torch.no_grad():
        torch.testing.assert_close(student(z, t, cond, torch.tensor([4.0]), torch.tensor([0.0])), before)
        for n, p in student.named_parameters():  # make the adapters non-trivial
            if "lora_B" in n:
                p.normal_(0, 0.02, generator=g)
        adapted = student(z, t, cond, torch.tensor([4.0]), torch.tensor([0.0]))
        assert not torch.allclose(adapted, before)
        merge_lora(student.base)
        assert not any("lora_" in n for n, _ in student.named_parameters())
        torch.testing.assert_close(
            student(z, t, cond, torch.tensor([4.0]), torch.tensor([0.0])), adapted, atol=1e-5, rtol=1e-4
        )


def test_unknown_targets_fail_clearly():
    bb, _ = _unet3d()
    with pytest.raises(ValueError, match="match no Linear/Conv layer"):
        resolve_targets(bb.make_student().base, ["nonexistent_proj"])


def test_consistency_target_defaults_to_the_student_for_lora_and_the_ema_otherwise():
    from t2vturbo.config import validate

    assert validate({}).objective.target == "ema"
    assert validate({"model": {"lora": {"enabled": True}}}).objective.target == "student"
    assert (
        validate({"model": {"lora": {"enabled": True}}, "objective": {"target": "ema"}}).objective.target
        == "ema"
    )
