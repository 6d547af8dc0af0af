"""A faster step (issue 22): ``model.attention`` (sdpa | eager) and ``train.compile``.

Tolerances (float32, relative to the largest magnitude): sdpa vs eager attention, outputs and gradients with
respect to the input within 1e-5, parameter gradients within 1e-3 (the two kernels only round differently); compiled (``aot_eager``: the graphs dynamo captures, run by
AOTAutograd without code generation) vs not, loss and gradients within 1e-6 relative; compiled with inductor
(slow test: minutes of C++ compilation on 2 cores) within 1e-4 relative (fused kernels reorder sums).
"""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from t2vturbo.backbones import build_backbone
from t2vturbo.backbones.attention import set_attention
from t2vturbo.config import ConfigError, validate

ATTN_TOL = 1e-5  # outputs and d/dz
# parameter gradients: the softmax's gradient is a sum of cancelling terms (Wan's cross-attention to_q over 512
# text positions differs by 1.5e-4 of its largest entry)
ATTN_PARAM_TOL = 1e-3


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _family(name):
    if name == "unet3d":
        from t2vturbo.backbones.unet3d import tiny_backbone

        return tiny_backbone(vae="pixel_unshuffle", block_out_channels=(16, 32)), (4, 16, 16), 500
    if name == "videocrafter2":
        from t2vturbo.backbones.videocrafter2 import tiny_backbone

        return tiny_backbone(), (4, 16, 16), 500
    from t2vturbo.backbones.wan import tiny_wan_backbone

    return tiny_wan_backbone(), (5, 32, 32), 500.0


def _forward_and_grads(net, z, t, cond):
    net.zero_grad(set_to_none=True)
    z = z.clone().requires_grad_(True)
    out = net(z, t, cond)
    (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    return out.detach(), z.grad.clone(), grads


@pytest.mark.parametrize("family", ["unet3d", "videocrafter2", "wan"])
def test_sdpa_equals_eager_attention_forward_and_gradients(family):
    torch.manual_seed(0)
    bb, (frames, h, w), t = _family(family)
    net = bb.teacher.float().requires_grad_(True)
    z = torch.randn(2, *bb.latent_shape(frames, h, w))
    cond = bb.encode_text(["a red circle moving left", "a blue square moving up"])
    t = torch.tensor([t, t])
    assert set_attention(net, "sdpa") > 0
    ref = _forward_and_grads(net, z, t, cond)
    assert set_attention(net, "eager") > 0
    got = _forward_and_grads(net, z, t, cond)
    assert _rel(got[0], ref[0]) < ATTN_TOL  # output
    assert _rel(got[1], ref[1]) < ATTN_TOL  # d/dz
    assert got[2].keys() == ref[2].keys() and len(ref[2]) > 0
    for n in ref[2]:
        assert _rel(got[2][n], ref[2][n]) < ATTN_PARAM_TOL, n


def test_model_attention_reaches_teacher_student_and_target():
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    from t2vturbo.train.objectives import RunContext, build_objective

    cfg = validate(
        {
            "model": {"tiny": {"block_out_channels": [16, 32]}, "attention": "eager"},
            "objective": {"target": "ema"},
        }
    )
    bb = build_backbone(cfg.model)
    obj = build_objective(cfg, bb, RunContext())
    for net in (bb.teacher, obj.module, obj.target):
        kinds = {type(m.processor) for m in net.modules() if hasattr(m, "processor")}
        assert kinds == {AttnProcessor}
    default = build_backbone(validate({"model": {"tiny": {"block_out_channels": [16, 32]}}}).model)
    assert {type(m.processor) for m in default.teacher.modules() if hasattr(m, "processor")} == {
        AttnProcessor2_0
    }


@pytest.mark.parametrize("kind", ["sdpa", "eager"])
def test_attention_capture_works_with_either_kernel(kind):
    from t2vturbo.backbones.unet3d import tiny_backbone
    from t2vturbo.guidance.attention_capture import capture_temporal_attention

    torch.manual_seed(0)
    bb = tiny_backbone(vae="pixel_unshuffle", block_out_channels=(16, 32))
    set_attention(bb.teacher, kind)
    z = torch.randn(1, *bb.latent_shape(4, 16, 16))
    cond = bb.encode_text(["a red circle moving left"])
    t = torch.tensor([500])
    plain = bb.teacher(z, t, cond)
    with capture_temporal_attention(bb.teacher) as store:
        out = bb.teacher(z, t, cond)
        maps = store.pop()
    assert torch.equal(out, plain) and maps
    for m in maps.values():
        torch.testing.assert_close(m.sum(-1), torch.ones_like(m.sum(-1)))
    kinds = {type(m.processor).__name__ for m in bb.teacher.modules() if hasattr(m, "processor")}
    assert kinds == {"AttnProcessor" if kind == "eager" else "AttnProcessor2_0"}  # restored after capture


def test_bad_attention_or_compile_value_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model\.attention"):
        validate({"model": {"attention": "flash"}})
    with pytest.raises(ConfigError, match=r"train\.compile"):
        validate({"train": {"compile": "sometimes"}})
    with pytest.raises(ValueError, match=r"model\.attention='flash'"):
        set_attention(torch.nn.Linear(2, 2), "flash")
    assert validate({}).model.attention == "sdpa" and validate({}).train.compile is False


# ---- train.compile ------------------------------------------------------------------------------------
def _cd_pieces(tmp_path, **train):
    from t2vturbo.train.engine import init_distributed, initialize
    from t2vturbo.train.objectives import RunContext, build_objective

    init_distributed()
    cfg = validate(
        {
            "output_dir": str(tmp_path),
            "model": {"tiny": {"block_out_channels": [16, 32]}, "num_frames": 4, "height": 16, "width": 16},
            "objective": {"target": "ema", "num_ddim_timesteps": 50},
            "train": {"micro_batch_size": 2, "progress": False, **train},
        }
    )
    torch.manual_seed(0)
    bb = build_backbone(cfg.model, cfg.train.gradient_checkpointing)
    obj = build_objective(cfg, bb, RunContext())
    engine, _, _ = initialize(obj.module, cfg.train, OmegaConf.to_container(cfg.deepspeed), 1)
    video = torch.rand(2, 4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    batch = {"video": video, "caption": ["a red circle moving left", "a blue square moving up"]}
    return bb, obj, engine, batch


def _loss_and_grads(obj, engine, batch, positions):
    loss, _ = obj.loss(engine, {**batch, "positions": positions})
    engine.backward(loss)
    grads = {n: p.grad.clone() for n, p in engine.module.named_parameters() if p.grad is not None}
    for p in engine.module.parameters():
        p.grad = None
    return loss.detach(), grads


def _check_compiled_step(tmp_path, tol, grad_tol=None, **options):
    import torch._dynamo

    from t2vturbo.train.compile import compile_networks

    torch._dynamo.reset()
    bb, obj, engine, batch = _cd_pieces(tmp_path, gradient_checkpointing=True)
    keys = {
        "student": list(obj.module.state_dict()),
        "engine": list(engine.module.state_dict()),
        "ema": list(obj.ema.state_dict()),
        "teacher": list(bb.teacher.state_dict()),
    }
    ref_loss, ref_grads = _loss_and_grads(obj, engine, batch, [0, 1])
    assert compile_networks(obj, bb, False) == []
    assert compile_networks(obj, bb, True, **options) == ["trained", "target", "teacher"]
    loss, grads = _loss_and_grads(obj, engine, batch, [0, 1])  # the same draws
    assert _rel(loss, ref_loss) < tol
    assert grads.keys() == ref_grads.keys() and len(grads) > 0
    for n in grads:
        assert _rel(grads[n], ref_grads[n]) < (grad_tol or tol), n
    # the compiled modules are the same modules: state_dict keys, the engine's, the EMA's, the teacher's
    assert keys == {
        "student": list(obj.module.state_dict()),
        "engine": list(engine.module.state_dict()),
        "ema": list(obj.ema.state_dict()),
        "teacher": list(bb.teacher.state_dict()),
    }
    assert engine.module is obj.module and obj.module._compiled_call_impl is not None
    loss, _ = obj.loss(engine, {**batch, "positions": [2, 3]})  # a whole optimizer step, then the EMA
    engine.backward(loss)
    engine.step()
    obj.ema.update(engine.module)
    assert torch.isfinite(loss)


def test_compile_is_in_place_and_keeps_state_dict_keys(tmp_path):
    from t2vturbo.train.compile import compile_networks

    bb, obj, engine, _ = _cd_pieces(tmp_path)
    nets = {"student": obj.module, "engine": engine.module, "ema": obj.ema.model, "teacher": bb.teacher}
    keys = {k: list(m.state_dict()) for k, m in nets.items()}
    assert compile_networks(obj, bb, False) == [] and obj.module._compiled_call_impl is None
    assert compile_networks(obj, bb, True) == ["trained", "target", "teacher"]  # compiled at the first call
    assert {k: list(m.state_dict()) for k, m in nets.items()} == keys
    assert engine.module is obj.module and obj.target is obj.ema.model
    assert all(m._compiled_call_impl is not None for m in nets.values())


@pytest.mark.slow  # ~80 s of CPU (dynamo traces the UNet's forward and backward)
def test_compile_gives_the_same_step_and_keeps_state_dict_keys(tmp_path):
    _check_compiled_step(tmp_path, 1e-6, backend="aot_eager")


@pytest.mark.slow
def test_inductor_compile_gives_the_same_step(tmp_path):
    # inductor fuses and reorders float32 reductions: the loss to 1e-4, the gradients to 1e-3 (measured: the
    # w projection's weight gradient, the smallest, at 3.6e-4)
    _check_compiled_step(tmp_path, 1e-4, grad_tol=1e-3)


def test_motion_guidance_keeps_the_teacher_eager(tmp_path):
    from t2vturbo.train.compile import networks
    from t2vturbo.train.objectives import RunContext, build_objective

    cfg = validate(
        {
            "model": {"tiny": {"block_out_channels": [16, 32]}},
            "guidance": {"motion": True, "reference": "noise"},
            "objective": {"target": "ema"},
        }
    )
    bb = build_backbone(cfg.model)
    obj = build_objective(cfg, bb, RunContext())
    assert list(networks(obj, bb)) == ["trained", "target"]
