"""Student -> plain diffusers pipeline (t2vturbo/export_pipeline.py): the folded UNet equals the
student at its (w, eta), and DiffusionPipeline.from_pretrained samples it in 4 steps exactly as our
multistep consistency sampler does."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from t2vturbo.backbones import UNet3DBackbone, write_tiny_model_dir
from t2vturbo.diffusion import consistency_sample, lcm_sampling_timesteps
from t2vturbo.export_pipeline import export_pipeline, fold_guidance, main
from t2vturbo.sample import STUDENT_FILE, STUDENT_META

W, ETA = 4.5, 0.05


@pytest.fixture(scope="module")
def student_export(tmp_path_factory):
    """A tiny (AutoencoderKL) teacher and a student export whose w/eta embeddings are non-zero."""
    root = tmp_path_factory.mktemp("pipe")
    teacher = write_tiny_model_dir(
        root / "teacher", vae="autoencoder_kl", block_out_channels=(16, 32), prediction_type="epsilon"
    )
    bb = UNet3DBackbone.from_pretrained(teacher)
    net = bb.make_student()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in (net.w_proj.weight, net.eta_proj.weight, net.fuse.weight):
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
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
        "num_frames": 4,
        "height": 16,
        "width": 16,
        "guidance": W,
        "eta": ETA,
        "step": 7,
    }
    (export / STUDENT_META).write_text(json.dumps(meta))
    return bb, net, export


def test_folded_unet_equals_the_student_at_its_guidance(student_export):
    bb, net, _ = student_export
    unet = fold_guidance(net, W, ETA)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 4, 4, 8, 8, generator=g)
    t = torch.tensor([999, 249])
    cond = bb.encode_text(["a red circle moving left", "a blue square moving up"])
    with torch.no_grad():
        ours = net(z, t, cond, torch.full((2,), W), torch.full((2,), ETA))
        folded = unet(z, t, encoder_hidden_states=cond, return_dict=False)[0]
        other = net(z, t, cond, torch.full((2,), 9.0), torch.full((2,), ETA))
    torch.testing.assert_close(folded, ours, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(other, ours, atol=1e-4)  # w matters, so the fold is not a no-op
    assert not any(m is net.base.unet for m in unet.modules())  # a copy: the student is unchanged


def test_diffusers_pipeline_samples_like_our_sampler(student_export, tmp_path):
    from diffusers import DiffusionPipeline, LCMScheduler, TextToVideoSDPipeline

    bb, net, export = student_export
    out = export_pipeline(export, tmp_path / "pipe")
    pipe = DiffusionPipeline.from_pretrained(out)
    assert isinstance(pipe, TextToVideoSDPipeline) and isinstance(pipe.scheduler, LCMScheduler)
    pipe.scheduler.set_timesteps(4)
    assert (
        pipe.scheduler.timesteps.tolist()
        == lcm_sampling_timesteps(4, 200, 1000).tolist()
        == [999, 749, 499, 249]
    )
    prompts = ["a red circle moving left"]
    shape = (1, 4, 4, 8, 8)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    res = pipe(
        prompts,
        num_inference_steps=4,
        guidance_scale=1.0,
        latents=latents.clone(),
        num_frames=4,
        height=16,
        width=16,
        output_type="latent",
        generator=torch.Generator().manual_seed(3),
    ).frames
    # the pipeline's scheduler draws its re-noising noise per frame ([B*F, C, h, w]) from the generator
    g = torch.Generator().manual_seed(3)
    renoise = torch.stack([torch.randn((4, 4, 8, 8), generator=g) for _ in range(3)])  # [K-1, B*F, C, h, w]
    renoise = renoise.reshape(3, 1, 4, 4, 8, 8).permute(1, 0, 3, 2, 4, 5)  # -> [B, K-1, C, F, h, w]
    cond = bb.encode_text(prompts)
    with torch.no_grad():
        ours = consistency_sample(
            lambda z, t: net(z, t, cond, torch.full((1,), W), torch.full((1,), ETA)),
            shape,
            lcm_sampling_timesteps(4, 200, 1000),
            bb.alphas_cumprod,
            "epsilon",
            noise=latents,
            renoise=renoise,
        )
    torch.testing.assert_close(torch.as_tensor(res), ours, atol=1e-4, rtol=1e-4)
    rec = json.loads((out / "t2vturbo_pipeline.json").read_text())
    assert rec["guidance_folded"] == W and rec["eta_folded"] == ETA and rec["guidance_scale"] == 1.0


def test_cli_and_errors(student_export, tmp_path, capsys):
    _, _, export = student_export
    assert main([str(export), str(tmp_path / "p"), "--guidance", "3"]) == 0
    assert json.loads((tmp_path / "p" / "t2vturbo_pipeline.json").read_text())["guidance_folded"] == 3.0
    assert "num_inference_steps=4" in capsys.readouterr().out
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
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "run" / "export" / "diffusers")
    video = pipe(
        ["a red circle moving left"],
        num_inference_steps=4,
        guidance_scale=1.0,
        num_frames=4,
        height=16,
        width=16,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).frames
    assert tuple(video.shape) == (1, 4, 3, 16, 16)
