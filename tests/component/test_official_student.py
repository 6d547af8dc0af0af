"""Official T2V-Turbo student files as our students (t2vturbo/backbones/official.py) and ``objective.init_from``.

The reference here is written independently of the code under test, from the official forward: the timestep
sinusoid (``[cos, sin]``, frequencies ``10000^(-j/half)``), the w / eta embedding (value * 1000, ``[sin, cos]``,
frequencies ``10000^(-j/(half-1))``), ``c = time_cond_proj(e_w)`` or ``combine_proj([time_cond_proj(e_w),
motion_cond_proj(e_eta)])`` added to the sinusoid before ``time_embed``, then ``+ fps_embedding(sinusoid(fps))``.
It runs a *teacher* VC2UNet (no projections) whose ``time_embed`` input is replaced by a forward pre-hook with
the conditioned input computed here; every projection has random non-zero weights. v1 LoRA lists are built
by enumerating the modules as the official injector does (exact ``nn.Linear`` / ``nn.Conv2d`` / ``nn.Conv3d``
in ``named_modules()`` order) and merged here by hand. At full size (meta device) the module order is checked
against the official checkpoint's key order (manifests/videocrafter2_512_v2.json).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from t2vturbo.backbones.official import (
    load_official_modelscope_lora,
    lora_targets,
    random_time_cond_proj,
    save_official_v2,
    to_official_v2,
)
from t2vturbo.backbones.vc2_convert import UNET_PREFIX
from t2vturbo.backbones.vc2_unet import VC2UNet, VC2UNetConfig
from t2vturbo.backbones.videocrafter2 import (
    MANIFEST,
    VideoCrafter2Denoiser,
    load_official_student,
    tiny_config,
)

B, F, H, W, L = 2, 3, 8, 8, 5
FPS = 8
EMB = 256
TARGET_CLASSES = (nn.Linear, nn.Conv2d, nn.Conv3d)


# ---- the independent reference -------------------------------------------------------------------
def ref_timestep_sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def ref_scalar_embedding(v, dim: int = EMB) -> torch.Tensor:
    v = torch.as_tensor(v, dtype=torch.float32).reshape(-1) * 1000.0
    half = dim // 2
    k = math.log(10000.0) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -k)
    args = v[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def reference(teacher, z, t, ctx, w, eta, wt, wm=None, wc=None):
    """The official student's output, computed by the teacher with the conditioned time-MLP input."""
    mc = teacher.config.model_channels
    e_w = ref_scalar_embedding(w).expand(B, -1)
    c = e_w @ wt.T
    if eta is not None:
        e_eta = ref_scalar_embedding(eta).expand(B, -1)
        c = torch.cat([c, e_eta @ wm.T], dim=1) @ wc.T
    calls = []

    def pre_hook(module, args):
        (x,) = args
        torch.testing.assert_close(x, ref_timestep_sinusoid(t, mc), atol=1e-6, rtol=0)  # cos first
        calls.append(1)
        return (x + c,)

    handle = teacher.time_embed.register_forward_pre_hook(pre_hook)
    try:
        with torch.no_grad():
            out = teacher(z, t, ctx, fps=torch.full((B,), FPS))
    finally:
        handle.remove()
    assert len(calls) == 1
    return out


# ---- tiny models ---------------------------------------------------------------------------------
def tiny_unet_config(**kw) -> VC2UNetConfig:
    return VC2UNetConfig(**{**tiny_config()["unet"], **kw})


def _randomize(module: nn.Module, seed: int, std: float = 0.05) -> nn.Module:
    """Random non-zero values for the zero-initialised tensors (every path contributes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def _teacher(seed: int = 0) -> VC2UNet:
    torch.manual_seed(seed)
    return _randomize(VC2UNet(tiny_unet_config()), seed).eval()


def _proj(seed: int, shape) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.02


@pytest.fixture(scope="module")
def teacher():
    return _teacher(0)


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(B, 4, F, H, W, generator=g)
    ctx = torch.randn(B, L, tiny_unet_config().context_dim, generator=g)
    return z, torch.tensor([999, 421]), ctx


@pytest.fixture(scope="module")
def projections(teacher):
    mc = teacher.config.model_channels
    return _proj(10, (mc, EMB)), _proj(11, (mc, EMB)), _proj(12, (mc, 2 * mc))


def _v2_dict(teacher, projections, motion: bool = True) -> dict:
    wt, wm, wc = projections
    sd = {**teacher.state_dict(), "time_cond_proj.weight": wt}
    if motion:
        sd.update({"motion_cond_proj.weight": wm, "combine_proj.weight": wc})
    return {k: v.clone() for k, v in sd.items()}


def _official_targets(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The official injector's walk: exact classes, named_modules() order."""
    return [(n, m) for n, m in model.named_modules() if type(m) in TARGET_CLASSES]


def _lora_list(model: nn.Module, rank: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _, m in _official_targets(model):
        shape = m.weight.shape
        r = min(rank, shape[0], shape[1])
        ones = (1,) * (len(shape) - 2)
        out.append(torch.randn(shape[0], r, *ones, generator=g) * 0.05)  # up
        out.append(torch.randn(r, *shape[1:], generator=g) * 0.05)  # down
    return out


def _merge_by_hand(model: nn.Module, lora: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for i, (_, m) in enumerate(_official_targets(model)):
            up, down = lora[2 * i], lora[2 * i + 1]
            m.weight += (up.flatten(1) @ down.flatten(1)).reshape(m.weight.shape)


def _run(student, inputs, w, eta=None):
    z, t, ctx = inputs
    with torch.no_grad():
        return student(z, t, ctx, w, eta)


ATOL = 1e-4


# ---- v2 files ------------------------------------------------------------------------------------
def test_v2_unet_mg_loads_strictly_and_matches_the_official_forward(teacher, projections, inputs, tmp_path):
    sd = _v2_dict(teacher, projections)
    path = tmp_path / "unet_mg.pt"
    torch.save(sd, path)
    student = load_official_student(path, tiny_unet_config().to_dict())
    unet = student.base.unet
    assert isinstance(student.base, VideoCrafter2Denoiser) and student.base.fps == FPS and student.motion
    assert (unet.config.time_cond_proj_dim, unet.config.motion_cond_proj_dim) == (EMB, EMB)
    keys = list(unet.state_dict())
    assert sorted(keys) == sorted(sd)  # strict: the same tensors; in the official order:
    at = keys.index("fps_embedding.2.bias") + 1
    assert keys[at : at + 3] == ["time_cond_proj.weight", "motion_cond_proj.weight", "combine_proj.weight"]
    for k, v in unet.state_dict().items():
        assert torch.equal(v, sd[k]), k
    z, t, ctx = inputs
    outs = []
    for w, eta in [(7.5, 0.05), (12.0, 0.3), (torch.tensor([5.0, 15.0]), None)]:
        got = _run(student, inputs, w, eta)
        ref = reference(teacher, z, t, ctx, w, eta, *projections)
        torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
        outs.append(got)
    assert (outs[0] - outs[1]).abs().max() > 1e-3 and (outs[0] - outs[2]).abs().max() > 1e-3
    # an already-loaded state dict works the same, and is not aliased
    student2 = load_official_student(sd, tiny_unet_config())
    torch.testing.assert_close(_run(student2, inputs, 7.5, 0.05), outs[0], atol=0, rtol=0)
    assert student2.base.unet.time_cond_proj.weight.data_ptr() != sd["time_cond_proj.weight"].data_ptr()


def test_v2_unet_no_mg_without_motion_keys(teacher, projections, inputs, tmp_path):
    path = tmp_path / "unet_no_mg.pt"
    torch.save(_v2_dict(teacher, projections, motion=False), path)
    student = load_official_student(str(path), tiny_unet_config())
    unet = student.base.unet
    assert unet.motion_cond_proj is None and unet.combine_proj is None and not student.motion
    assert len(unet.state_dict()) == len(teacher.state_dict()) + 1
    z, t, ctx = inputs
    ref = reference(teacher, z, t, ctx, 9.0, None, projections[0])
    torch.testing.assert_close(_run(student, inputs, 9.0), ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(_run(student, inputs, 9.0, 0.05), ref, atol=ATOL, rtol=0)  # eta: no input


# ---- v1 LoRA lists -------------------------------------------------------------------------------
def test_v1_lora_list_merges_into_the_teacher(teacher, inputs, tmp_path):
    cfg1 = tiny_unet_config(time_cond_proj_dim=EMB)
    torch.manual_seed(5)
    shaped = VC2UNet(cfg1)  # only for the walk (shapes and order)
    lora = _lora_list(shaped, rank=3, seed=7)
    names = [n for n, _ in _official_targets(shaped)]
    assert names[4] == "time_cond_proj" and names[:4] == [
        "time_embed.0",
        "time_embed.2",
        "fps_embedding.0",
        "fps_embedding.2",
    ]
    lora_path = tmp_path / "unet_lora.pt"
    torch.save(lora, lora_path)
    # the teacher as an official model.ckpt (Lightning-style, with other parts beside the UNet)
    ckpt = tmp_path / "model.ckpt"
    base_sd = {UNET_PREFIX + k: v for k, v in teacher.state_dict().items()}
    base_sd["first_stage_model.encoder.conv_in.weight"] = torch.zeros(2, 3)
    torch.save({"state_dict": base_sd}, ckpt)
    w0 = _proj(20, (cfg1.model_channels, EMB))

    # the reference: merged by hand into a copy of the teacher and of the base projection
    merged = copy.deepcopy(teacher)
    ref_model = VC2UNet(cfg1)
    ref_model.load_state_dict({**teacher.state_dict(), "time_cond_proj.weight": w0})
    _merge_by_hand(ref_model, lora)
    merged.load_state_dict({k: v for k, v in ref_model.state_dict().items() if k != "time_cond_proj.weight"})
    wt = ref_model.time_cond_proj.weight.detach()
    assert not torch.equal(wt, w0)  # time_cond_proj has a LoRA pair too

    student = load_official_student(lora_path, tiny_unet_config(), base=ckpt, time_cond_proj=w0)
    assert not student.motion and student.base.unet.config.time_cond_proj_dim == EMB
    z, t, ctx = inputs
    for w in (7.5, 13.0):
        ref = reference(merged, z, t, ctx, w, None, wt)
        torch.testing.assert_close(_run(student, inputs, w), ref, atol=ATOL, rtol=0)

    # base / list given as objects: same student, and the caller's tensors are untouched
    tsd = {k: v.clone() for k, v in teacher.state_dict().items()}
    s2 = load_official_student(lora, tiny_unet_config(), base=tsd, time_cond_proj=w0)
    torch.testing.assert_close(_run(s2, inputs, 7.5), _run(student, inputs, 7.5), atol=0, rtol=0)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in tsd.items())
    # a seed draws the base projection like nn.Linear's default init, reproducibly
    a = load_official_student(lora, tiny_unet_config(), base=tsd, time_cond_proj=3)
    b = load_official_student(lora, tiny_unet_config(), base=tsd, time_cond_proj=3)
    c = load_official_student(lora, tiny_unet_config(), base=tsd, time_cond_proj=4)
    assert torch.equal(_run(a, inputs, 7.5), _run(b, inputs, 7.5))
    assert not torch.equal(_run(a, inputs, 7.5), _run(c, inputs, 7.5))
    r = random_time_cond_proj(3, 320)
    assert (
        r.shape == (320, EMB) and r.abs().max() <= 1 / math.sqrt(EMB) and r.std() > 0.5 / math.sqrt(3 * EMB)
    )


def test_modelscope_lora_list(inputs):
    from diffusers import UNet3DConditionModel

    from t2vturbo.backbones.unet3d import tiny_components

    base = tiny_components(seed=0, block_out_channels=(16, 32), text_dim=16)[0]
    _randomize(base, 1)
    base.eval()
    config = {k: v for k, v in base.config.items() if not k.startswith("_")}
    torch.manual_seed(2)
    ref = UNet3DConditionModel.from_config({**config, "time_cond_proj_dim": EMB})
    names = [n for n, _ in _official_targets(ref)]
    assert names[:4] == [
        "conv_in",
        "time_embedding.linear_1",
        "time_embedding.cond_proj",
        "time_embedding.linear_2",
    ]
    lora = _lora_list(ref, rank=4, seed=8)
    c0 = base.config.block_out_channels[0]
    w0 = _proj(21, (c0, EMB))
    missing, unexpected = ref.load_state_dict(base.state_dict(), strict=False)
    assert missing == ["time_embedding.cond_proj.weight"] and not unexpected
    with torch.no_grad():
        ref.time_embedding.cond_proj.weight.copy_(w0)
    _merge_by_hand(ref, lora)
    ref.eval()

    student = load_official_modelscope_lora(lora, base, time_cond_proj=w0)
    assert not student.motion
    z, t, _ = inputs
    ctx = torch.randn(B, L, 16, generator=torch.Generator().manual_seed(3))
    outs = []
    for w in (7.5, 12.0):
        with torch.no_grad():
            expect = ref(
                z, t, encoder_hidden_states=ctx, timestep_cond=ref_scalar_embedding(w).expand(B, -1)
            ).sample
            got = student(z, t, ctx, w)
        torch.testing.assert_close(got, expect, atol=ATOL, rtol=0)
        outs.append(got)
    assert (outs[0] - outs[1]).abs().max() > 1e-4
    assert base.config.get("time_cond_proj_dim") is None and "cond_proj" not in dict(
        base.time_embedding.named_children()
    )
    with pytest.raises(ValueError, match=r"list of \d+ tensors.*ModelScope"):
        load_official_modelscope_lora(lora[:-2], base, time_cond_proj=w0)
    with pytest.raises(ValueError, match="stores in no file"):
        load_official_modelscope_lora(lora, base)


# ---- wrong files ---------------------------------------------------------------------------------
def test_wrong_files_are_refused_with_clear_messages(teacher, projections, tmp_path):
    cfg = tiny_unet_config()
    # a teacher model.ckpt passed as the student (Lightning dict, or its flat state dict)
    base_sd = {UNET_PREFIX + k: v for k, v in teacher.state_dict().items()}
    torch.save({"state_dict": base_sd}, tmp_path / "model.ckpt")
    for src in (tmp_path / "model.ckpt", base_sd):
        with pytest.raises(ValueError, match="teacher checkpoint"):
            load_official_student(src, cfg)
    # a teacher's bare UNet state dict: no time_cond_proj
    with pytest.raises(ValueError, match=r"no time_cond_proj\.weight"):
        load_official_student(teacher.state_dict(), cfg)
    # another UNet size than unet_config
    with pytest.raises(ValueError, match="model_channels=320"):
        load_official_student(_v2_dict(teacher, projections))
    # half of the motion pair
    sd = _v2_dict(teacher, projections)
    del sd["combine_proj.weight"]
    with pytest.raises(ValueError, match="motion_cond_proj.weight without combine_proj.weight"):
        load_official_student(sd, cfg)
    # a v2 dict with a key too many
    sd = _v2_dict(teacher, projections)
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="extra.weight"):
        load_official_student(sd, cfg)
    # v1 lists: no base, no base projection, wrong count, wrong shape (named)
    shaped = VC2UNet(tiny_unet_config(time_cond_proj_dim=EMB))
    lora = _lora_list(shaped, rank=2, seed=1)
    tsd = teacher.state_dict()
    with pytest.raises(ValueError, match="pass base="):
        load_official_student(lora, cfg, time_cond_proj=0)
    with pytest.raises(ValueError, match="stores in no file.*time_cond_proj="):
        load_official_student(lora, cfg, base=tsd)
    n = len(_official_targets(shaped))
    with pytest.raises(ValueError, match=rf"list of {2 * n - 2} tensors.*{n} LoRA targets.*{2 * n} tensors"):
        load_official_student(lora[:-2], cfg, base=tsd, time_cond_proj=0)
    bad = list(lora)
    bad[11] = torch.zeros(bad[11].shape[0], bad[11].shape[1] + 1, *bad[11].shape[2:])
    name = _official_targets(shaped)[5][0]
    with pytest.raises(ValueError, match=rf"LoRA pair 5 \(list entries 10, 11\) for {name}"):
        load_official_student(bad, cfg, base=tsd, time_cond_proj=0)
    with pytest.raises(ValueError, match=r"time_cond_proj= has shape \[3, 3\]"):
        load_official_student(lora, cfg, base=tsd, time_cond_proj=torch.zeros(3, 3))
    # files that are none of these
    with pytest.raises(FileNotFoundError, match="unet_mg.pt"):
        load_official_student(tmp_path / "nope.pt", cfg)
    torch.save({"sd": tsd, "args": argparse.Namespace(lr=1)}, tmp_path / "pickled.pt")
    with pytest.raises(RuntimeError, match=r"weights_only=True.*never unpickles"):
        load_official_student(tmp_path / "pickled.pt", cfg)
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match="holds a Tensor"):
        load_official_student(tmp_path / "tensor.pt", cfg)
    # the v2 writer refuses a teacher and non-VC2 modules
    with pytest.raises(ValueError, match="teacher"):
        to_official_v2(teacher)
    with pytest.raises(TypeError, match="VideoCrafter2"):
        to_official_v2(nn.Linear(2, 2))


# ---- the v2 writer -------------------------------------------------------------------------------
def test_to_official_v2_round_trips(teacher, inputs, tmp_path):
    from t2vturbo.backbones.base import GuidedDenoiser

    unet = copy.deepcopy(teacher).add_guidance_conditioning(EMB, motion=True)
    _randomize(unet, 3)
    with torch.no_grad():  # random non-zero projections (their default init is already; make sure)
        for m in (unet.time_cond_proj, unet.motion_cond_proj, unet.combine_proj):
            m.weight.add_(_proj(30, m.weight.shape))
    ours = GuidedDenoiser(VideoCrafter2Denoiser(unet, FPS)).eval()
    sd = to_official_v2(ours)
    assert list(sd) == list(unet.state_dict()) and len(sd) == len(teacher.state_dict()) + 3
    assert all(v.dtype == torch.float32 and v.is_contiguous() and v.device.type == "cpu" for v in sd.values())
    path = save_official_v2(ours, tmp_path / "out" / "unet_official.pt")
    loaded = torch.load(path, map_location="cpu", weights_only=True)  # as the official demo reads it
    assert isinstance(loaded, dict) and list(loaded) == list(sd)
    back = load_official_student(path, tiny_unet_config())
    for w, eta in [(7.5, 0.05), (11.0, None)]:
        torch.testing.assert_close(_run(back, inputs, w, eta), _run(ours, inputs, w, eta), atol=0, rtol=0)


# ---- full size, meta device ----------------------------------------------------------------------
def test_full_size_student_matches_the_official_layout_and_module_order():
    with torch.device("meta"):
        v2 = VC2UNet(VC2UNetConfig(time_cond_proj_dim=EMB, motion_cond_proj_dim=EMB))
        v1 = VC2UNet(VC2UNetConfig(time_cond_proj_dim=EMB))
    sd = v2.state_dict()
    assert len(sd) == 1487 and sum(p.numel() for p in v2.parameters()) == 1_413_653_060
    assert (sd["time_cond_proj.weight"].shape, sd["motion_cond_proj.weight"].shape) == (
        (320, EMB),
        (320, EMB),
    )
    assert sd["combine_proj.weight"].shape == (320, 640)

    keys = json.loads(MANIFEST.read_text())["keys"]
    weights = [  # the official teacher's Linear / Conv2d / Conv3d weights in checkpoint (module) order
        k[len(UNET_PREFIX) : -len(".weight")]
        for k, shape in keys.items()
        if k.startswith(UNET_PREFIX) and k.endswith(".weight") and len(shape) in (2, 4, 5)
    ]
    at = weights.index("fps_embedding.2") + 1
    expect_v1 = weights[:at] + ["time_cond_proj"] + weights[at:]
    expect_v2 = weights[:at] + ["time_cond_proj", "motion_cond_proj", "combine_proj"] + weights[at:]
    got_v1 = [n for n, _ in lora_targets(v1)]
    got_v2 = [n for n, _ in lora_targets(v2)]
    assert (len(got_v1), len(got_v2)) == (575, 577)
    assert got_v1 == expect_v1 and got_v2 == expect_v2
    assert got_v1 == [n for n, _ in _official_targets(v1)]
    # every target's weight shape is the manifest's
    for n, m in lora_targets(v1):
        if n != "time_cond_proj":
            assert list(m.weight.shape) == keys[f"{UNET_PREFIX}{n}.weight"], n


# ---- objective.init_from -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vc2_bb():
    from t2vturbo.backbones.videocrafter2 import tiny_backbone

    return tiny_backbone(seed=0)


def _cfg(**objective):
    from t2vturbo.config import validate

    return validate(
        {
            "model": {"family": "videocrafter2", "path": None},
            "objective": {"name": "consistency_distillation", **objective},
        }
    )


def test_init_from_official_files(vc2_bb, tmp_path):
    from t2vturbo.config import ConfigError
    from t2vturbo.train.objectives import RunContext, build_objective, student_module

    t_unet = vc2_bb.teacher.unet
    mc = t_unet.config.model_channels
    projections = _proj(40, (mc, EMB)), _proj(41, (mc, EMB)), _proj(42, (mc, 2 * mc))
    sd = _v2_dict(t_unet, projections)
    path = tmp_path / "unet_mg.pt"
    torch.save(sd, path)
    # distillation: the objective's student starts from the file
    obj = build_objective(_cfg(init_from=str(path)), vc2_bb, RunContext())
    got = obj.module.base.unet.state_dict()
    assert sorted(got) == sorted(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
    # unet_no_mg: the motion projections keep their init
    torch.save(_v2_dict(t_unet, projections, motion=False), tmp_path / "unet_no_mg.pt")
    m = student_module(_cfg(), vc2_bb, str(tmp_path / "unet_no_mg.pt"))
    assert torch.equal(m.base.unet.time_cond_proj.weight, projections[0])
    assert not torch.equal(m.base.unet.motion_cond_proj.weight, projections[1])
    # v1 LoRA list merged into this teacher, base projection from the seed option
    shaped = VC2UNet(dataclasses.replace(t_unet.config, time_cond_proj_dim=EMB))
    lora = _lora_list(shaped, rank=2, seed=9)
    torch.save(lora, tmp_path / "unet_lora.pt")
    cfg = _cfg(init_from=str(tmp_path / "unet_lora.pt"), init_from_time_cond_proj_seed=5)
    m = student_module(cfg, vc2_bb, cfg.objective.init_from)
    ref = load_official_student(lora, t_unet.config, base=t_unet.state_dict(), time_cond_proj=5)
    ref_sd = ref.base.unet.state_dict()
    for k, v in ref_sd.items():
        assert torch.allclose(m.base.unet.state_dict()[k], v, atol=0, rtol=0), k
    with pytest.raises(ValueError, match="objective.init_from_time_cond_proj_seed"):
        student_module(_cfg(), vc2_bb, str(tmp_path / "unet_lora.pt"))
    # errors: a missing path, a non-VideoCrafter2 teacher, the seed without init_from
    with pytest.raises(FileNotFoundError, match="objective.init_from=.*does not exist"):
        student_module(_cfg(), vc2_bb, str(tmp_path / "missing.pt"))
    from t2vturbo.backbones.unet3d import tiny_backbone as tiny_unet3d

    with pytest.raises(ConfigError, match="model.family=videocrafter2"):
        student_module(_cfg(), tiny_unet3d(seed=0), str(path))
    with pytest.raises(ConfigError, match="init_from_time_cond_proj_seed"):
        _cfg(init_from_time_cond_proj_seed=1)


def test_export_writes_unet_official_for_videocrafter2(vc2_bb, tmp_path, inputs):
    """A VideoCrafter2 student export also holds unet_official.pt (the official v2 layout), which loads as the
    official student with the same output and starts a new run through objective.init_from."""
    from types import SimpleNamespace

    from t2vturbo.train.export import OFFICIAL_V2_FILE, export_run
    from t2vturbo.train.objectives import student_module

    out = tmp_path / "export"
    cfg = _cfg()
    cfg.train.export_dir = str(out)
    student = vc2_bb.make_student()
    _randomize(student, 4)
    with torch.no_grad():
        for m in (student.base.unet.time_cond_proj, student.base.unet.combine_proj):
            m.weight.add_(_proj(50, m.weight.shape))
    objective = SimpleNamespace(trains_student=True, ema=None)
    export_run(cfg, vc2_bb, objective, SimpleNamespace(module=student), step=3, rank=0)
    path = out / OFFICIAL_V2_FILE
    assert path.is_file() and (out / "student.safetensors").is_file()
    sd = torch.load(path, map_location="cpu", weights_only=True)
    assert sorted(sd) == sorted(student.base.unet.state_dict())
    back = load_official_student(path, vc2_bb.teacher.unet.config)
    z, t, _ = inputs
    ctx = torch.randn(
        B, 77, vc2_bb.teacher.unet.config.context_dim, generator=torch.Generator().manual_seed(4)
    )
    student.eval()
    with torch.no_grad():
        torch.testing.assert_close(back(z, t, ctx, 7.5, 0.05), student(z, t, ctx, 7.5, 0.05), atol=0, rtol=0)
    again = student_module(cfg, vc2_bb, str(path))
    assert all(torch.equal(v, sd[k]) for k, v in again.base.unet.state_dict().items())


def test_sample_cli_samples_an_official_student(tmp_path):
    """``python -m t2vturbo.sample --official unet_mg.pt --checkpoint TEACHER_DIR``: the released layout
    (written here from a tiny student of a tiny teacher folder) sampled with the teacher's VAE and text
    encoder; the video equals sample_student of the same weights; wrong inputs are refused before sampling."""
    from t2vturbo.backbones import load_backbone
    from t2vturbo.backbones.official import save_official_v2
    from t2vturbo.backbones.videocrafter2 import write_tiny_checkpoint
    from t2vturbo.data.video_io import read_video
    from t2vturbo.sample import OFFICIAL_SAMPLING, load_official, main, sample_student

    teacher_dir = write_tiny_checkpoint(tmp_path / "vc2")
    torch.manual_seed(0)
    bb = load_backbone("videocrafter2", str(teacher_dir))
    student = bb.make_student()
    f = save_official_v2(student, tmp_path / "unet_mg.pt")
    size = ["--num-frames", "4", "--height", "32", "--width", "32"]
    out = tmp_path / "out"
    rc = main(
        ["--official", str(f), "--checkpoint", str(teacher_dir), "--prompt", "a red circle"]
        + ["--steps", "2", "--out", str(out), *size]
    )
    assert rc == 0
    (video,) = sorted(out.glob("*_official_2steps_*.mp4"))
    bb2, net, meta = load_official(f, teacher_dir)
    assert meta["eta"] == OFFICIAL_SAMPLING["eta"] and net.motion
    with torch.no_grad():
        ref = sample_student(
            bb2,
            net,
            ["a red circle"],
            steps=2,
            guidance=7.5,
            eta=0.05,
            motion_percentage=0.5,
            num_frames=4,
            height=32,
            width=32,
            seed=0,
        )
        own = sample_student(
            bb,
            student.eval(),
            ["a red circle"],
            steps=2,
            guidance=7.5,
            eta=0.05,
            motion_percentage=0.5,
            num_frames=4,
            height=32,
            width=32,
            seed=0,
        )
    torch.testing.assert_close(ref, own, rtol=1e-4, atol=1e-4)  # the file is our student, sampled alike
    got = read_video(video)
    assert got.shape[0] == 4
    # a teacher checkpoint given as the student, and a missing file: exit 2 with the reason
    for wrong in (teacher_dir / "model.ckpt", tmp_path / "nope.pt"):
        args = [
            "--official",
            str(wrong),
            "--checkpoint",
            str(teacher_dir),
            "--prompt",
            "a",
            "--out",
            str(out),
        ]
        assert main([*args, *size]) == 2, wrong
    with pytest.raises(SystemExit):
        main(["--official", str(f), "--prompt", "a"])  # no teacher folder
