"""Component tests for t2vturbo.train.lora (peft LoRA on the student UNet, trainable-parameter
selection, merging back into plain Linear layers for export)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from peft.tuners.lora import LoraLayer

from t2vturbo.backbones import tiny_backbone
from t2vturbo.train.lora import add_lora, mark_trainable, merge_lora

B, NF, S = 2, 4, 16
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


@pytest.fixture(scope="module")
def bb():
    return tiny_backbone(vae="pixel_unshuffle", block_out_channels=(16, 32))


@pytest.fixture(scope="module")
def inputs(bb):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(B, *bb.latent_shape(NF, S, S), generator=g)
    t = torch.tensor([33, 777])
    cond = bb.encode_text(["a red circle moving left", "a green triangle standing still"])
    return z, t, cond


def _perturb(params, seed: int, std: float = 0.1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=g) * std)


PROJECTIONS = {
    "base.unet.time_embedding.cond_proj.weight",
    "base.unet.motion_cond_proj.weight",
    "base.unet.combine_proj.weight",
}


def _student(bb):
    """Student in eval mode (dropout off); its w/eta projections are randomly initialised, so w/eta matter."""
    s = bb.make_student()
    s.eval()
    return s


def _target_linear_names(unet_module) -> list[str]:
    return [
        n
        for n, m in unet_module.named_modules()
        if isinstance(m, torch.nn.Linear) and any(n == k or n.endswith("." + k) for k in TARGETS)
    ]


def _lora_student(bb, rank=4, alpha=4):
    s = _student(bb)
    plain = copy.deepcopy(s)
    add_lora(s.base, rank=rank, alpha=alpha, target_modules=TARGETS)
    return s, plain


def _run(m, inputs, w=6.0, eta=0.4):
    z, t, cond = inputs
    return m(z, t, cond, w=w, eta=eta)


def test_add_lora_wraps_every_target_and_starts_at_identity(bb, inputs):
    s, plain = _lora_student(bb)
    targets = _target_linear_names(plain.base)
    assert len(targets) > 10
    lora_layers = {n for n, m in s.base.named_modules() if isinstance(m, LoraLayer)}
    assert lora_layers == set(targets)
    for n in targets:
        layer = s.base.get_submodule(n)
        assert layer.r["default"] == 4 and layer.scaling["default"] == 1.0
        assert torch.count_nonzero(layer.lora_B["default"].weight) == 0  # peft: B = 0
        assert layer.lora_A["default"].weight.abs().sum() > 0
    with torch.no_grad():
        assert torch.equal(_run(s, inputs), _run(plain, inputs))


def test_mark_trainable_lora_selects_adapters_and_guidance_projections(bb, inputs):
    s, _ = _lora_student(bb)
    mark_trainable(s, lora=True)
    trainable = {n for n, p in s.named_parameters() if p.requires_grad}
    lora_names = {n for n, _ in s.named_parameters() if "lora_" in n}
    n_layers = sum(isinstance(m, LoraLayer) for m in s.modules())
    assert len(lora_names) == 2 * n_layers  # lora_A + lora_B weights, no bias
    assert trainable == lora_names | PROJECTIONS
    # Gradient reaches exactly those: lora_B (A is behind B = 0 at init) and the w/eta projections.
    _run(s, inputs).square().mean().backward()
    for n, p in s.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, n
    for n, p in s.named_parameters():
        if "lora_B" in n or n in PROJECTIONS:
            assert p.grad is not None and p.grad.abs().sum() > 0, n

    mark_trainable(s, lora=False)
    assert all(p.requires_grad for p in s.parameters())


def test_lora_output_changes_after_perturbing_B(bb, inputs):
    s, plain = _lora_student(bb)
    with torch.no_grad():
        ref = _run(plain, inputs)
        _perturb([p for n, p in s.named_parameters() if "lora_B" in n], seed=3)
        out = _run(s, inputs)
    assert (out - ref).abs().max() > 1e-3


def test_merge_lora_equals_unmerged_and_loads_into_plain_student(bb, inputs):
    s, plain = _lora_student(bb, rank=4, alpha=8)  # scaling 2
    _perturb([p for n, p in s.named_parameters() if "lora_B" in n], seed=4)
    with torch.no_grad():
        unmerged = _run(s, inputs)
        other_w = _run(s, inputs, w=12.0, eta=0.0)

    # Expected merged weight of one layer, written out: W + (alpha / r) * B @ A.
    name = _target_linear_names(plain.base)[0]
    lay = s.base.get_submodule(name)
    expect_w = lay.base_layer.weight + 2.0 * lay.lora_B["default"].weight @ lay.lora_A["default"].weight

    merged = merge_lora(copy.deepcopy(s))
    assert not any(isinstance(m, LoraLayer) for m in merged.modules())
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert type(merged.base.get_submodule(name)) is torch.nn.Linear
    torch.testing.assert_close(merged.base.get_submodule(name).weight, expect_w, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(_run(merged, inputs), unmerged, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(_run(merged, inputs, w=12.0, eta=0.0), other_w, rtol=1e-5, atol=1e-5)
        # The unmerged model is untouched by merging a copy.
        assert torch.equal(_run(s, inputs), unmerged)

    # Same keys as a plain student (the teacher UNet's + the w/eta projections): loads strictly into a fresh
    # make_student().
    assert merged.state_dict().keys() == plain.state_dict().keys()
    keys = {f"base.unet.{k}" for k in merged.base.unet.state_dict()}
    assert keys == {f"base.unet.{k}" for k in bb.teacher.unet.state_dict()} | PROJECTIONS
    fresh = bb.make_student()
    fresh.eval()
    fresh.load_state_dict(merged.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(_run(fresh, inputs), unmerged, rtol=1e-5, atol=1e-5)
    # And the merged UNet alone loads into a fresh student's UNet (the teacher's class with the projections).
    bb.make_student().base.unet.load_state_dict(merged.base.unet.state_dict(), strict=True)


def test_merge_lora_in_place_on_unet_only(bb, inputs):
    """merge_lora also works on the denoiser (not only on the GuidedDenoiser wrapper)."""
    s, _ = _lora_student(bb)
    _perturb([p for n, p in s.named_parameters() if "lora_B" in n], seed=5)
    z, t, cond = inputs
    with torch.no_grad():
        before = s.base(z, t, cond)
        out = merge_lora(s.base)
        assert out is s.base
        assert not any(isinstance(m, LoraLayer) for m in s.base.modules())
        torch.testing.assert_close(s.base(z, t, cond), before, rtol=1e-5, atol=1e-5)


def test_lora_student_gradient_step_changes_output(bb, inputs):
    """One SGD step on the LoRA parameters moves the output and leaves the base weights alone."""
    s, plain = _lora_student(bb)
    mark_trainable(s, lora=True)
    base_before = {n: p.detach().clone() for n, p in s.named_parameters() if not p.requires_grad}
    opt = torch.optim.SGD([p for p in s.parameters() if p.requires_grad], lr=1.0)
    target = torch.zeros_like(_run(plain, inputs))
    F.mse_loss(_run(s, inputs), target).backward()
    opt.step()
    with torch.no_grad():
        assert (_run(s, inputs) - _run(plain, inputs)).abs().max() > 1e-5
    for n, p in s.named_parameters():
        if n in base_before:
            assert torch.equal(p, base_before[n]), n
