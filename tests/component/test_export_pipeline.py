"""Student -> diffusers pipeline (t2vturbo/export_pipeline.py): the exported UNet is the student's, and
``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)(prompt, num_inference_steps=4,
guidance_scale=w)`` gives the latents of ``sample_student`` at that w (and the export's eta / percentage)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from t2vturbo.backbones import UNet3DBackbone, write_tiny_model_dir
from t2vturbo.diffusion import lcm_sampling_timesteps, scalar_embedding
from t2vturbo.export_pipeline import (
    T2VTurboUNet3DConditionModel,
    diffusers_unet,
    export_pipeline,
    guidance_embedding,
    main,
)
from t2vturbo.sample import STUDENT_FILE, STUDENT_META, sample_student

W, ETA, PCT = 4.5, 0.3, 0.5
PROMPTS = ["a red circle moving left"]
SIZE = dict(num_frames=4, height=16, width=16)


@pytest.fixture(scope="module")
def student_export(tmp_path_factory):
    """A tiny (AutoencoderKL) teacher and the export of a fresh student (random w / eta projections, as the
    official init: w and eta already change the output)."""
    root = tmp_path_factory.mktemp("pipe")
    teacher = write_tiny_model_dir(
        root / "teacher", vae="autoencoder_kl", block_out_channels=(16, 32), prediction_type="epsilon"
    )
    bb = UNet3DBackbone.from_pretrained(teacher)
    torch.manual_seed(0)
    net = bb.make_student().eval()
    export = root / "export"
    export.mkdir()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(export / STUDENT_FILE))
    meta = {
        "family": "unet3d",
        "teacher_path": str(teacher),
        "prediction_type": "epsilon",
        "num_ddim_timesteps": 200,
        "sigma_data": 0.5,
        "timestep_scaling": 10.0,
        "guidance": W,
        "eta": ETA,
        "motion_percentage": PCT,
        "step": 7,
        **SIZE,
    }
    (export / STUDENT_META).write_text(json.dumps(meta))
    return bb, net, export


@pytest.fixture(scope="module")
def pipeline_dir(student_export, tmp_path_factory):
    return export_pipeline(student_export[2], tmp_path_factory.mktemp("out") / "pipe")


def _inputs(bb):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 4, 4, 8, 8, generator=g)
    t = torch.tensor([999, 249])
    cond = bb.encode_text(["a red circle moving left", "a blue square moving up"])
    return z, t, cond


def test_embedding_is_ours():
    v = torch.tensor([0.0, 0.05, 4.5, 12.0])
    torch.testing.assert_close(guidance_embedding(v, 256), scalar_embedding(v, 256), rtol=0, atol=0)


def test_exported_unet_is_the_student(student_export):
    bb, net, _ = student_export
    unet = diffusers_unet(net)
    assert isinstance(unet, T2VTurboUNet3DConditionModel) and unet.config.time_cond_proj_dim == 256
    assert not any(m is net.base.unet for m in unet.modules())  # a copy: the student is unchanged
    z, t, cond = _inputs(bb)
    e = lambda v: scalar_embedding(torch.full((2,), v), 256)  # noqa: E731
    with torch.no_grad():
        for w, eta in ((W, ETA), (9.0, 0.0)):
            ours = net(z, t, cond, torch.full((2,), w), torch.full((2,), eta))
            got = unet(
                z, t, encoder_hidden_states=cond, timestep_cond=e(w), motion_cond=e(eta), return_dict=False
            )
            torch.testing.assert_close(got[0], ours, atol=1e-5, rtol=1e-5)
        # eta absent: combine_proj skipped, on both sides
        ours = net(z, t, cond, torch.full((2,), W), None)
        got = unet(z, t, encoder_hidden_states=cond, timestep_cond=e(W), return_dict=False)[0]
        torch.testing.assert_close(got, ours, atol=1e-5, rtol=1e-5)
        other = net(z, t, cond, torch.full((2,), 9.0), None)
    assert not torch.allclose(other, ours, atol=1e-4)  # w matters


def test_diffusers_pipeline_samples_like_sample_student(student_export, pipeline_dir):
    from diffusers import DiffusionPipeline, LCMScheduler, UNet3DConditionModel

    bb, net, _ = student_export
    pipe = DiffusionPipeline.from_pretrained(pipeline_dir, trust_remote_code=True)
    assert type(pipe).__name__ == "T2VTurboPipeline" and isinstance(pipe.scheduler, LCMScheduler)
    assert isinstance(pipe.unet, UNet3DConditionModel) and pipe.unet.config.time_cond_proj_dim == 256
    assert (pipe.config.guidance_scale, pipe.config.motion_gs, pipe.config.percentage) == (W, ETA, PCT)
    pipe.scheduler.set_timesteps(4)
    assert (
        pipe.scheduler.timesteps.tolist()
        == lcm_sampling_timesteps(4, 200, 1000).tolist()
        == [999, 749, 499, 249]
    )

    def run(**kw):
        out = pipe(
            PROMPTS,
            num_inference_steps=4,
            output_type="latent",
            generator=torch.Generator().manual_seed(3),
            **SIZE,
            **kw,
        )
        return torch.as_tensor(out.frames)

    def ours(w, pct=PCT):
        return sample_student(
            bb,
            net,
            PROMPTS,
            steps=4,
            guidance=w,
            eta=ETA,
            motion_percentage=pct,
            seed=3,
            decode=False,
            **SIZE,
        )

    got = {w: run(guidance_scale=w) for w in (W, 9.0)}
    assert pipe.scheduler.timesteps.tolist() == [999, 749, 499, 249]
    for w, v in got.items():  # guidance_scale is our w itself (no -1)
        torch.testing.assert_close(v, ours(w), atol=1e-4, rtol=1e-4)
    assert (got[W] - got[9.0]).abs().max() > 1e-3  # and w changes the samples
    torch.testing.assert_close(run(), got[W], rtol=0, atol=0)  # the default is the export's w
    # percentage 1.0: eta at every step, in both
    torch.testing.assert_close(run(guidance_scale=W, percentage=1.0), ours(W, 1.0), atol=1e-4, rtol=1e-4)

    video = pipe(
        PROMPTS, num_inference_steps=2, output_type="pt", generator=torch.Generator().manual_seed(0), **SIZE
    )
    assert tuple(video.frames.shape) == (1, 4, 3, 16, 16)


def test_folder_without_trusting_its_code_is_refused_and_stock_unet_loads(student_export, pipeline_dir):
    from diffusers import DiffusionPipeline, UNet3DConditionModel

    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusionPipeline.from_pretrained(pipeline_dir)
    # the stock class reads the UNet folder (w through its cond_proj; no motion layers: the student without eta)
    bb, net, _ = student_export
    unet = UNet3DConditionModel.from_pretrained(pipeline_dir / "unet").eval()
    assert unet.config.time_cond_proj_dim == 256
    z, t, cond = _inputs(bb)
    with torch.no_grad():
        got = unet(z, t, cond, timestep_cond=scalar_embedding(torch.full((2,), W)), return_dict=False)[0]
        ours = net(z, t, cond, torch.full((2,), W), None)
    torch.testing.assert_close(got, ours, atol=1e-5, rtol=1e-5)


def test_cli_and_errors(student_export, tmp_path, capsys):
    _, _, export = student_export
    assert main([str(export), str(tmp_path / "p"), "--guidance", "3", "--motion-percentage", "0.3"]) == 0
    rec = json.loads((tmp_path / "p" / "t2vturbo_pipeline.json").read_text())
    assert (rec["guidance_scale"], rec["motion_gs"], rec["percentage"]) == (3.0, ETA, 0.3)
    index = json.loads((tmp_path / "p" / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_t2vturbo", "T2VTurboPipeline"]
    assert index["unet"] == ["unet_t2vturbo", "T2VTurboUNet3DConditionModel"]
    assert (index["guidance_scale"], index["percentage"]) == (3.0, 0.3)
    assert (tmp_path / "p" / "pipeline_t2vturbo.py").is_file()
    assert (tmp_path / "p" / "unet" / "unet_t2vturbo.py").is_file()
    out = capsys.readouterr().out
    assert "trust_remote_code=True" in out and "guidance_scale=3" in out
    with pytest.raises(FileNotFoundError, match="not a t2vturbo student"):
        export_pipeline(tmp_path / "nothing", tmp_path / "q")


def test_trainer_export_writes_the_pipeline(student_export, tmp_path):
    from diffusers import DiffusionPipeline

    from t2vturbo.config import validate
    from t2vturbo.train.trainer import Trainer

    _, _, export = student_export
    teacher = json.loads((export / STUDENT_META).read_text())["teacher_path"]
    cfg = validate(
        {
            "output_dir": str(tmp_path / "run"),
            "model": {"path": teacher, "num_frames": 4, "height": 16, "width": 16},
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
    meta = json.loads((tmp_path / "run" / "export" / STUDENT_META).read_text())
    assert meta["motion_percentage"] == 0.5  # guidance.tau
    pipe = DiffusionPipeline.from_pretrained(
        tmp_path / "run" / "export" / "diffusers", trust_remote_code=True
    )
    assert pipe.config.guidance_scale == meta["guidance"]
    video = pipe(
        ["a red circle moving left"],
        num_inference_steps=4,
        num_frames=4,
        height=16,
        width=16,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).frames
    assert tuple(video.shape) == (1, 4, 3, 16, 16)


@pytest.mark.parametrize("n", [50, 200, 1000])
def test_pipeline_timesteps_are_the_samplers_on_any_grid(n):
    """The pipeline samples at t2vturbo.sample's grid points for every step count, also where S does not divide
    N (LCMScheduler's own rounding gives other points there: N = 50, S = 4)."""
    from diffusers import LCMScheduler

    from t2vturbo.export_pipeline import consistency_timesteps

    for s in (1, 2, 3, 4, 6, 8):
        ours = lcm_sampling_timesteps(s, n, 1000).tolist()
        assert consistency_timesteps(s, n, 1000) == ours
        sch = LCMScheduler(original_inference_steps=n)
        sch.set_timesteps(timesteps=ours)  # accepted: every point is on the scheduler's N-grid
        assert sch.timesteps.tolist() == ours
    sch = LCMScheduler(original_inference_steps=50)
    sch.set_timesteps(4)
    assert sch.timesteps.tolist() != lcm_sampling_timesteps(4, 50, 1000).tolist()
    with pytest.raises(ValueError, match="distillation grid"):
        consistency_timesteps(n + 1, n)
