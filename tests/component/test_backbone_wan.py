"""Component tests for the Wan2.1 flow-matching backbone (t2vturbo.backbones.wan), its consistency
distillation (the one ConsistencyDistillation step over the flow parameterisation) and flow sampling
through t2vturbo.sample.

A tiny random teacher of the real classes (WanTransformer3DModel, AutoencoderKLWan, UMT5EncoderModel) is
written to a folder in the Wan2.1-T2V-*-Diffusers layout; diffusers' own WanPipeline /
WanVideoToVideoPipeline read the same folder and serve as the independent reference for text encoding,
latent normalisation, Euler sampling with CFG and decoding. Clips: 5 frames (1 + 4k) of 32x32 pixels ->
4 x 2 x 4 x 4 latents.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from t2vturbo.backbones import GuidedDenoiser, load_backbone
from t2vturbo.backbones.wan import WanBackbone, check_wan_dir, tiny_wan_backbone, write_tiny_wan_dir
from t2vturbo.config import ConfigError, validate
from t2vturbo.sample import sample_student, sample_teacher

B, NF, S = 2, 5, 32
PROMPTS = ["a red circle moving left", "a blue square moving up fast"]


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    return write_tiny_wan_dir(tmp_path_factory.mktemp("wan") / "Wan2.1-T2V-tiny-Diffusers")


@pytest.fixture(scope="module")
def bb(wan_dir):
    return WanBackbone.from_pretrained(wan_dir)


def _video(seed=0, b=B, f=NF, s=S):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, f, 3, s, s, generator=g) * 2 - 1


def _pipe(bb, cls_name="WanPipeline"):
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler

    cls = getattr(diffusers, cls_name)
    return cls(
        tokenizer=bb.tokenizer,
        text_encoder=bb.text_encoder,
        vae=bb.vae,
        transformer=bb.teacher.transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=bb.flow_shift),
    )


# ---- folder layout, loading, errors -----------------------------------------------------------
def test_folder_layout_and_round_trip(wan_dir, bb):
    for sub in (
        "transformer/config.json",
        "vae/config.json",
        "text_encoder/config.json",
        "tokenizer",
        "scheduler/scheduler_config.json",
        "model_index.json",
    ):
        assert (wan_dir / sub).exists(), sub
    sc = json.loads((wan_dir / "scheduler" / "scheduler_config.json").read_text())
    assert sc["_class_name"] == "UniPCMultistepScheduler" and sc["prediction_type"] == "flow_prediction"
    assert bb.prediction_type == "flow" and bb.flow_shift == sc["flow_shift"] == 3.0
    assert bb.num_train_timesteps == 1000 and bb.text_len == 512 and bb.model_dir == str(wan_dir)
    assert (bb.temporal_factor, bb.spatial_factor, bb.patch_size) == (4, 8, (1, 2, 2))
    fresh = tiny_wan_backbone()  # same seed as the folder: from_pretrained must give the same networks
    for a, b in ((fresh.teacher, bb.teacher), (fresh.vae, bb.vae), (fresh.text_encoder, bb.text_encoder)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(fresh.encode_text(PROMPTS), bb.encode_text(PROMPTS))
    other = load_backbone("wan", str(wan_dir))  # the registry used by t2vturbo.sample.load_student
    assert isinstance(other, WanBackbone)
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(wan_dir)  # diffusers reads our folder as a Wan pipeline
    assert type(pipe.transformer).__name__ == "WanTransformer3DModel"
    with pytest.raises(NotImplementedError, match="flow-matching"):
        _ = bb.alphas_cumprod


def test_missing_or_incomplete_folder_errors(wan_dir, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere.*transformer/"):
        WanBackbone.from_pretrained(missing)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_backbone("wan", str(missing))
    part = tmp_path / "partial"
    shutil.copytree(wan_dir, part)
    shutil.rmtree(part / "vae")
    with pytest.raises(FileNotFoundError, match=r"partial.*missing vae/config\.json"):
        check_wan_dir(part)
    from t2vturbo.backbones import check_paths

    with pytest.raises(FileNotFoundError, match=r"^model\.path: .*missing vae/config\.json"):
        check_paths(validate({"model": {"family": "wan", "path": str(part)}}))
    check_paths(validate({"model": {"family": "wan", "path": str(wan_dir)}}))


# ---- text, latents ----------------------------------------------------------------------------
def test_text_encoding_equals_wan_pipeline(bb):
    pipe = _pipe(bb)
    pe, ne = pipe.encode_prompt(
        PROMPTS, do_classifier_free_guidance=True, max_sequence_length=512, device="cpu"
    )
    cond = bb.encode_text(PROMPTS)
    assert cond.shape == (B, 512, 32)
    torch.testing.assert_close(cond, pe, atol=0, rtol=0)
    torch.testing.assert_close(bb.null_cond(B), ne, atol=0, rtol=0)
    n_tok = bb.tokenizer(PROMPTS[0]).input_ids
    assert cond[0, len(n_tok) :].abs().max() == 0 and cond[0, : len(n_tok)].abs().min() > 0


def test_encode_decode_shapes_and_normalisation(bb):
    video = _video()
    z = bb.encode_video(video)
    assert z.shape == (B, 4, 2, 4, 4) == (B, *bb.latent_shape(NF, S, S))
    assert torch.equal(z, bb.encode_video(video))  # posterior mode: deterministic
    # reference: WanVideoToVideoPipeline.prepare_latents = scale_noise((mode - mean) / std, t, noise)
    pipe = _pipe(bb, "WanVideoToVideoPipeline")
    pipe.scheduler.set_timesteps(10)
    t = pipe.scheduler.timesteps[3:4]
    sigma = float(pipe.scheduler.sigmas[3])
    ref = pipe.prepare_latents(
        video.permute(0, 2, 1, 3, 4),
        B,
        4,
        S,
        S,
        torch.float32,
        "cpu",
        torch.Generator().manual_seed(7),
        None,
        t.repeat(B),
    )
    noise = torch.randn(ref.shape, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close((1 - sigma) * z + sigma * noise, ref, atol=1e-5, rtol=0)
    # decoding: z * std + mean through the VAE, [B, F, 3, H, W] in [-1, 1], differentiable
    zz = z.clone().requires_grad_(True)
    x = bb.decode_latents(zz)
    assert x.shape == (B, NF, 3, S, S) and x.min() >= -1 and x.max() <= 1
    x.float().pow(2).mean().backward()
    assert zz.grad is not None and zz.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        bb.latent_shape(8, S, S)
    with pytest.raises(ValueError, match="multiples of 16"):
        bb.latent_shape(NF, 24, S)


# ---- student -----------------------------------------------------------------------------------
def test_student_conditions_the_time_embedder_input_and_learns_w(bb):
    """w (and eta) reach the sinusoid input of ``condition_embedder.time_embedder`` through its own
    ``cond_proj`` (diffusers' TimestepEmbedding form); zeroed projections give the teacher bit for bit."""
    student = bb.make_student()
    assert isinstance(student, GuidedDenoiser)
    tr = student.base.transformer
    te = tr.condition_embedder.time_embedder
    assert te.cond_proj.weight.shape == (te.linear_1.in_features, 256) and te.cond_proj.bias is None
    assert tr.combine_proj.weight.shape == (te.linear_1.in_features, 2 * te.linear_1.in_features)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(B, *bb.latent_shape(NF, S, S), generator=g)
    t = torch.tensor([999.0, 17.5])
    cond = bb.encode_text(PROMPTS)
    with torch.no_grad():
        ref = bb.teacher(z, t, cond)
        a = student(z, t, cond, torch.tensor([5.0, 5.0]), torch.tensor([0.0, 0.3]))
        b = student(z, t, cond, torch.tensor([9.0, 9.0]), torch.tensor([0.0, 0.3]))
    assert (a - b).abs().max() > 1e-4 and (a - ref).abs().max() > 1e-4
    out = student(z, t, cond, torch.tensor([5.0, 12.0]), None)
    out.pow(2).mean().backward()
    assert te.cond_proj.weight.grad.abs().sum() > 0  # the time embedder's input feeds the output
    assert all(p.grad is None for p in bb.teacher.parameters())  # the teacher stays frozen
    with torch.no_grad():
        for m in (te.cond_proj, tr.motion_cond_proj, tr.combine_proj):
            m.weight.zero_()
        assert torch.equal(student(z, t, cond, torch.tensor([5.0, 12.0]), torch.tensor([0.0, 0.3])), ref)


# ---- sampling ------------------------------------------------------------------------------------
def test_teacher_sampling_equals_wan_pipeline_with_euler(bb):
    """sample_teacher (dispatched to Euler + CFG on v) == WanPipeline with FlowMatchEulerDiscreteScheduler:
    LCM w = 3 is the pipeline's guidance_scale 4; same initial latents, latents and decoded frames."""
    pipe = _pipe(bb)
    ours = sample_teacher(
        bb, PROMPTS[:1], steps=6, guidance=3.0, num_frames=NF, height=S, width=S, seed=0, decode=False
    )
    lat = torch.randn((1, *bb.latent_shape(NF, S, S)), generator=torch.Generator().manual_seed(0))
    kw = dict(
        prompt=PROMPTS[0],
        height=S,
        width=S,
        num_frames=NF,
        num_inference_steps=6,
        guidance_scale=4.0,
        latents=lat,
    )
    ref = pipe(**kw, output_type="latent").frames
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    video = sample_teacher(bb, PROMPTS[:1], steps=6, guidance=3.0, num_frames=NF, height=S, width=S, seed=0)
    ref_video = pipe(**kw, output_type="pt").frames  # [B, F, 3, H, W] in [0, 1]
    assert video.shape == (1, NF, 3, S, S)
    torch.testing.assert_close((video + 1) / 2, ref_video, atol=1e-5, rtol=0)


def test_student_sampling_shapes(bb):
    student = bb.make_student().eval()
    for steps in (1, 4):
        v = sample_student(
            bb,
            student,
            PROMPTS,
            steps=steps,
            num_ddim_timesteps=200,
            guidance=7.5,
            num_frames=NF,
            height=S,
            width=S,
            seed=0,
        )
        assert v.shape == (B, NF, 3, S, S) and torch.isfinite(v).all()
    z = sample_student(bb, student, PROMPTS, steps=4, num_frames=NF, height=S, width=S, seed=3, decode=False)
    assert z.shape == (B, *bb.latent_shape(NF, S, S))
    assert torch.equal(
        z,
        sample_student(bb, student, PROMPTS, steps=4, num_frames=NF, height=S, width=S, seed=3, decode=False),
    )


# ---- distillation through the real trainer -----------------------------------------------------
def _cfg(wan_dir, out, **over):
    cfg = {
        "output_dir": str(out),
        "seed": 0,
        "model": {"family": "wan", "path": str(wan_dir), "num_frames": NF, "height": S, "width": S},
        "data": {"kind": "toy", "num_samples": 64},
        # target=student: the official T2V-Turbo default (no EMA); an EMA 0.95 target lags a fast tiny student
        "objective": {"target": "student"},
        "train": {
            "max_steps": 10,
            "micro_batch_size": 2,
            "lr": 1e-3,
            "log_every": 1,
            "progress": False,
            "ckpt_every": 0,
        },
    }
    for k, v in over.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    return validate(cfg)


def test_tiny_distillation_lowers_the_loss_and_exports(wan_dir, tmp_path):
    from t2vturbo.sample import load_student
    from t2vturbo.train.objectives import ConsistencyDistillation
    from t2vturbo.train.trainer import Trainer

    t = Trainer(_cfg(wan_dir, tmp_path / "run"))
    # the one consistency-distillation step, over the flow parameterisation (Euler teacher steps)
    assert isinstance(t.objective, ConsistencyDistillation) and t.objective.param.is_flow
    assert t.bb.latent_shape(NF, S, S) == (4, 2, 4, 4)

    def fixed_loss(micros):  # the micro-batches' own draws (positions key n, eps, w), no grad
        vals = []
        for m in micros:
            with torch.no_grad():
                loss, logs, pred = t.objective.step(t.engine, t.data.batch(m))
            assert pred.shape == (2, 4, 2, 4, 4) and 0 < logs["t_mean"] <= 1000
            vals.append(loss.item())
        return sum(vals) / len(vals)

    before, held_before = fixed_loss(range(10)), fixed_loss(range(1000, 1008))
    assert t.train() == 10
    after, held_after = fixed_loss(range(10)), fixed_loss(range(1000, 1008))
    assert after < 0.95 * before, (before, after)  # the 10 batches it was trained on
    assert held_after < held_before, (held_before, held_after)  # and fresh draws
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss_cd"])) for r in rows if "loss_cd" in r)
    # the export samples through t2vturbo.sample (load_backbone("wan") + the flow consistency sampler)
    bb2, net, meta = load_student(tmp_path / "run" / "export")
    assert meta["family"] == "wan" and meta["prediction_type"] == "flow" and isinstance(bb2, WanBackbone)
    video = sample_student(
        bb2,
        net,
        PROMPTS,
        steps=4,
        num_ddim_timesteps=meta["num_ddim_timesteps"],
        num_frames=NF,
        height=S,
        width=S,
    )
    assert video.shape == (B, NF, 3, S, S) and torch.isfinite(video).all()


def test_motion_guidance_is_refused_for_flow_teachers(wan_dir, tmp_path):
    from t2vturbo.train.trainer import Trainer

    with pytest.raises(ConfigError, match="guidance.motion.*flow"):
        Trainer(_cfg(wan_dir, tmp_path / "mg", guidance={"motion": True, "eta": 0.05}))


def test_video_reward_on_the_whole_clip_trains_and_subset_decodes_are_refused(wan_dir, tmp_path):
    """Rewards decode through the causal Wan VAE: a video reward on all frames runs (gradient through the
    checkpointed decode); image rewards / strided video frames (a subset of latent frames) are refused."""
    from t2vturbo.train.trainer import Trainer

    t = Trainer(
        _cfg(
            wan_dir,
            tmp_path / "rw",
            reward={"weights": {"toy_motion": 1.0}, "video_frames": None},
            train={"max_steps": 2, "export": False},
        )
    )
    assert t.train() == 2
    rows = [json.loads(ln) for ln in (tmp_path / "rw" / "metrics.jsonl").read_text().splitlines()]
    assert all("reward/toy_motion" in r for r in rows if "loss_cd" in r)
    with pytest.raises(ConfigError, match="reward.video_frames=null"):
        Trainer(_cfg(wan_dir, tmp_path / "img", reward={"weights": {"toy_color": 1.0}}))
    with pytest.raises(ConfigError, match="latent frames"):
        Trainer(
            _cfg(wan_dir, tmp_path / "strided", reward={"weights": {"toy_motion": 1.0}, "video_frames": 2})
        )


def test_bf16_with_gradient_checkpointing_trains_and_validates(wan_dir, tmp_path):
    """bf16: transformer and text encoder load in bf16 (diffusers keeps time_embedder, norms and
    scale_shift_table in float32), the VAE stays float32; validation sampling runs on the mixed-dtype student."""
    from t2vturbo.train.trainer import Trainer

    t = Trainer(
        _cfg(
            wan_dir,
            tmp_path / "bf16",
            train={
                "max_steps": 1,
                "precision": "bf16",
                "export": False,
                "gradient_checkpointing": True,
                "eval_every": 1,
                "eval_steps": [2],
            },
        )
    )
    tr = t.bb.teacher.transformer
    assert tr.patch_embedding.weight.dtype == torch.bfloat16 and tr.scale_shift_table.dtype == torch.float32
    assert t.bb.vae.dtype == torch.float32 and t.bb.text_encoder.dtype == torch.bfloat16
    assert t.engine.module.base.transformer.gradient_checkpointing
    assert t.train() == 1
    assert (tmp_path / "bf16" / "samples" / "step-00000001" / "2steps_0.mp4").exists()
