"""A LoRA student's adapter alone (t2vturbo/lora_formats.py): diffusers' layout, loaded with
``pipe.load_lora_weights`` into the teacher + the w / eta layers, samples as the merged student; for Wan, the
ComfyUI file (original Wan names) reads back through diffusers' Wan converter to the same tensors, and the
diffusers-layout adapter on the teacher gives the merged student's output."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from t2vturbo.backbones import UNet3DBackbone, write_tiny_model_dir
from t2vturbo.lora_formats import (
    COMFYUI_FILE,
    GUIDANCE_FILE,
    LORA_FILE,
    T2VTurboLoraPipeline,
    teacher_pipeline,
    wan_original_names,
    write_lora_files,
)
from t2vturbo.sample import sample_student
from t2vturbo.student_export import STUDENT_META, StudentExport, teacher_reference
from t2vturbo.train.lora import add_lora, merge_lora

LCFG = SimpleNamespace(rank=4, alpha=8)  # scale 2: folded into lora_B
SIZE = dict(num_frames=4, height=16, width=16)
PROMPTS = ["a red circle moving left"]


def _lora_student(bb, targets, seed=0):
    """A student with non-trivial adapters (lora_B drawn) and random w / eta projections, eval mode."""
    torch.manual_seed(seed)
    s = bb.make_student().eval()
    add_lora(s.base, LCFG.rank, LCFG.alpha, targets)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, p in s.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return s


@pytest.fixture(scope="module")
def unet_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora_unet")
    teacher = write_tiny_model_dir(root / "teacher", vae="autoencoder_kl", block_out_channels=(16, 32))
    bb = UNet3DBackbone.from_pretrained(teacher)
    student = _lora_student(bb, ["attention"])
    sd = {k: v.detach().clone() for k, v in student.state_dict().items()}
    export = root / "export"
    info = write_lora_files(export, "unet3d", sd, LCFG, bb.teacher.unet.state_dict())
    merged = merge_lora(copy.deepcopy(student))
    meta = {
        "family": "unet3d",
        "teacher": teacher_reference(teacher, export),
        "num_ddim_timesteps": 200,
        "guidance": 6.0,
        "eta": 0.3,
        "motion_percentage": 0.5,
        "lora": info,
        **SIZE,
    }
    StudentExport.write(export, merged.state_dict(), meta)
    return bb, student, merged, export, info


def test_unet_adapter_files_are_diffusers_layout(unet_export):
    bb, student, _, export, info = unet_export
    n_layers = sum(1 for n, _ in student.named_modules() if n.endswith("lora_A"))
    assert (
        info["files"] == {"diffusers": LORA_FILE, "guidance_layers": GUIDANCE_FILE}
        and info["layers"] == n_layers
    )
    sd = load_file(str(export / LORA_FILE))
    assert len(sd) == 2 * n_layers and all(k.startswith("unet.") and ".lora_" in k for k in sd)
    key = next(k for k in sd if k.endswith("attn1.to_q.lora_B.weight"))
    ours = student.state_dict()["base." + key.replace(".lora_B.", ".lora_B.default.")]
    torch.testing.assert_close(sd[key], ours * 2.0, rtol=0, atol=0)  # alpha / r folded into B
    g = load_file(str(export / GUIDANCE_FILE))
    assert set(g) == {
        "unet.time_embedding.cond_proj.weight",
        "unet.motion_cond_proj.weight",
        "unet.combine_proj.weight",
    }


def test_load_lora_weights_on_the_teacher_samples_as_the_merged_student(unet_export):
    bb, _, merged, export, _ = unet_export
    pipe = teacher_pipeline(export)
    assert isinstance(pipe, T2VTurboLoraPipeline)

    def run():
        out = pipe(
            PROMPTS,
            num_inference_steps=4,
            output_type="latent",
            generator=torch.Generator().manual_seed(3),
            **SIZE,
        )
        return torch.as_tensor(out.frames)

    without = run()
    pipe.load_lora_weights(export)  # pytorch_lora_weights.safetensors
    got = run()
    ref = sample_student(
        bb,
        merged,
        PROMPTS,
        steps=4,
        num_ddim_timesteps=200,
        guidance=6.0,
        eta=0.3,
        seed=3,
        decode=False,
        **SIZE,
    )
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    assert (without - ref).abs().max() > 1e-3  # the adapter is what makes it the student


def test_adapter_is_not_written_when_the_base_is_not_the_teacher(unet_export, tmp_path):
    bb, student, _, _, _ = unet_export
    sd = dict(student.state_dict())
    k = next(k for k in sd if k.endswith("conv_in.weight"))
    sd[k] = sd[k] + 1.0  # e.g. objective.init_from another student
    info = write_lora_files(tmp_path, "unet3d", sd, LCFG, bb.teacher.unet.state_dict())
    assert "conv_in.weight" in info["skipped"] and not (tmp_path / LORA_FILE).exists()
    assert "no diffusers LoRA layout" in write_lora_files(tmp_path, "videocrafter2", sd, LCFG)["skipped"]
    with pytest.raises(
        FileNotFoundError, match="guidance_layers.safetensors.*not the export of a LoRA student"
    ):
        export = tmp_path / "plain"
        meta = json.loads((unet_export[3] / STUDENT_META).read_text())
        StudentExport.write(
            export, unet_export[2].state_dict(), {**meta, "teacher": teacher_reference(bb.model_dir, export)}
        )
        teacher_pipeline(export)


@pytest.fixture(scope="module")
def wan_lora(tmp_path_factory):
    from t2vturbo.backbones.wan import tiny_wan_backbone

    bb = tiny_wan_backbone()
    student = _lora_student(bb, ["attention_ff_conv"])  # attention, ffn and proj_out (head.head)
    out = tmp_path_factory.mktemp("lora_wan")
    info = write_lora_files(out, "wan", student.state_dict(), LCFG, bb.teacher.transformer.state_dict())
    return bb, student, out, info


def test_wan_comfyui_file_reads_back_as_the_diffusers_file(wan_lora):
    from diffusers import WanPipeline

    _, _, out, info = wan_lora
    assert info["files"]["comfyui"] == COMFYUI_FILE
    comfy, ours = load_file(str(out / COMFYUI_FILE)), load_file(str(out / LORA_FILE))
    assert all(k.startswith("diffusion_model.") for k in comfy) and len(comfy) == len(ours)
    for k in (
        "diffusion_model.blocks.0.self_attn.q.lora_A.weight",
        "diffusion_model.blocks.1.cross_attn.o.lora_B.weight",
        "diffusion_model.blocks.0.ffn.0.lora_A.weight",
        "diffusion_model.blocks.1.ffn.2.lora_B.weight",
        "diffusion_model.head.head.lora_B.weight",
    ):
        assert k in comfy, k
    back = WanPipeline.lora_state_dict(comfy)  # diffusers' converter of the original Wan layout
    assert set(back) == set(ours) and all(k.startswith("transformer.") for k in back)
    for k, v in ours.items():
        assert torch.equal(back[k], v), k


def test_wan_adapter_on_the_teacher_gives_the_merged_student(wan_lora):
    bb, student, out, _ = wan_lora
    merged = merge_lora(copy.deepcopy(student))
    fresh = bb.make_student().eval()  # the teacher's weights, random w / eta layers: replaced by the file's
    g = {k.removeprefix("transformer."): v for k, v in load_file(str(out / GUIDANCE_FILE)).items()}
    missing, unexpected = fresh.base.transformer.load_state_dict(g, strict=False)
    assert not unexpected and len(g) == 3
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(1, *bb.latent_shape(5, 32, 32), generator=gen)
    t, cond, w, eta = torch.tensor([500.0]), bb.encode_text(PROMPTS), torch.tensor([4.0]), torch.tensor([0.2])
    with torch.no_grad():
        before = fresh(z, t, cond, w, eta)
        fresh.base.transformer.load_lora_adapter(load_file(str(out / LORA_FILE)), prefix="transformer")
        got = fresh(z, t, cond, w, eta)
        ref = merged(z, t, cond, w, eta)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(before, ref, atol=1e-4)  # the adapter is what makes it the student


def test_wan_names_without_an_original_layout_are_refused():
    t = torch.zeros(2, 2)
    assert wan_original_names({"blocks.3.attn2.to_k.lora_A.weight": t}) == {
        "diffusion_model.blocks.3.cross_attn.k.lora_A.weight": t
    }
    with pytest.raises(ValueError, match=r"no original Wan \(ComfyUI\) name .*patch_embedding"):
        wan_original_names({"patch_embedding.lora_A.weight": t})
