"""One consistency-distillation training step on a real-size teacher: step time, peak memory, MFU.

    python bench/teacher_step.py --family videocrafter2 --size full --batch 1      # on one GPU
    python bench/teacher_step.py --family wan --size full --batch 1 --frames 81 --height 480 --width 832
    python bench/teacher_step.py --family videocrafter2 --size tiny --device cpu  # smoke test (CPU)

The denoisers are the real classes at the official sizes with random weights (timings do not depend
on the weights): VideoCrafter2's VC2UNet (1.41 B parameters, 16 frames of 320x512 -> latents
4 x 16 x 40 x 64, text 77 x 1024) and Wan2.1-T2V-1.3B's WanTransformer3DModel (dim 1536, 30 layers,
81 frames of 480x832 -> latents 16 x 21 x 60 x 104, text 512 x 4096). Text embeddings and clip
latents are random tensors of the right shapes: the VAE and text encoder are frozen and run once
per sample outside this loop, so they are not part of the step.

The step is the library's own: ``ConsistencyDistillation.loss`` (every family)
(teacher cond + uncond forward, student forward + backward, target forward) through the DeepSpeed
engine (``--zero`` stage, bf16, activation checkpointing in the student), with the EMA update.
Reported: median step time over ``--steps`` after ``--warmup``, peak GPU memory
(``torch.cuda.max_memory_allocated``), the step's FLOPs (``torch.utils.flop_counter`` on one
step) and MFU = FLOPs / (step time x ``--peak-tflops``; 989 = H100/H200 dense bf16).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# Wan2.1-T2V-1.3B's transformer: the planner's public config (t2vturbo/plan/archs.py), one copy for both
def wan_1_3b_config() -> dict:
    from t2vturbo.plan.archs import WAN_COMMON, WAN_TRANSFORMERS

    return {**WAN_COMMON, **WAN_TRANSFORMERS["wan2.1_t2v_1.3b"]}


def build(family: str, size: str, frames: int, height: int, width: int, checkpointing: bool):
    """(backbone with the denoiser at the requested size, latent shape, text shape)."""
    if family == "videocrafter2":
        from t2vturbo.backbones.vc2_unet import VC2UNet, VC2UNetConfig
        from t2vturbo.backbones.videocrafter2 import VideoCrafter2Denoiser, official_config, tiny_backbone

        bb = tiny_backbone(gradient_checkpointing=checkpointing)
        if size == "full":
            unet = VC2UNet(VC2UNetConfig(**official_config()["unet"]))
            unet.requires_grad_(False)
            bb.teacher = VideoCrafter2Denoiser(unet, bb.fps)
            lat, ctx = (4, frames, height // 8, width // 8), (77, 1024)
        else:
            lat, ctx = bb.latent_shape(frames, height, width), tuple(bb.encode_text(["x"]).shape[1:])
        return bb, lat, ctx
    if family == "wan":
        from diffusers import WanTransformer3DModel

        from t2vturbo.backbones.wan import WanDenoiser, tiny_wan_backbone

        bb = tiny_wan_backbone(gradient_checkpointing=checkpointing)
        if size == "full":
            tr = WanTransformer3DModel(**wan_1_3b_config())
            tr.requires_grad_(False)
            bb.teacher = WanDenoiser(tr)
            lat, ctx = (16, (frames - 1) // 4 + 1, height // 8, width // 8), (512, 4096)
        else:
            lat, ctx = bb.latent_shape(frames, height, width), tuple(bb.encode_text(["x"]).shape[1:])
        return bb, lat, ctx
    raise SystemExit(f"unknown family {family!r}: videocrafter2 | wan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="videocrafter2", choices=["videocrafter2", "wan"])
    p.add_argument("--size", default="full", choices=["full", "tiny"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument(
        "--frames", type=int, default=None, help="default: 16 (videocrafter2), 81 (wan); tiny: 4 / 5"
    )
    p.add_argument("--height", type=int, default=None, help="default: 320 / 480; tiny: 16 / 32")
    p.add_argument("--width", type=int, default=None, help="default: 512 / 832; tiny: 16 / 32")
    p.add_argument("--zero", type=int, default=2)
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--no-checkpointing", action="store_true")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="accelerator peak (dense bf16 TFLOP/s)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    tiny = a.size == "tiny"
    defaults = {
        ("videocrafter2", False): (16, 320, 512),
        ("wan", False): (81, 480, 832),
        ("videocrafter2", True): (4, 16, 16),
        ("wan", True): (5, 32, 32),
    }[(a.family, tiny)]
    frames, height, width = a.frames or defaults[0], a.height or defaults[1], a.width or defaults[2]

    from t2vturbo.config import validate
    from t2vturbo.train.ema import EMA
    from t2vturbo.train.engine import init_distributed, initialize
    from t2vturbo.train.objectives import ConsistencyDistillation
    from t2vturbo.train.teacher import OnlineTeacher

    init_distributed()
    dev = torch.device(a.device)
    dtype = torch.bfloat16 if a.precision == "bf16" else torch.float32
    bb, lat, ctx = build(a.family, a.size, frames, height, width, not a.no_checkpointing)
    bb.to(dev)
    bb.teacher.to(dtype)
    cfg = validate(
        {
            "train": {"micro_batch_size": a.batch, "precision": a.precision, "lr": 1e-5},
            "objective": {"w_min": 5.0, "w_max": 15.0},
        }
    )
    obj = ConsistencyDistillation(
        cfg.objective, bb, 0, OnlineTeacher(bb, cfg.objective.guidance_form, dtype=dtype)
    )
    student = bb.make_student().to(dev)
    engine, _, _ = initialize(student, cfg.train, {"zero_optimization": {"stage": a.zero}}, 1)
    ema = EMA(engine.module, 0.95)
    n_student = sum(p.numel() for p in student.parameters())
    n_teacher = sum(p.numel() for p in bb.teacher.parameters())
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(a.batch, *lat, generator=g).to(dev, dtype)
    cond = torch.randn(a.batch, *ctx, generator=g).to(dev, dtype)
    uncond = torch.randn(a.batch, *ctx, generator=g).to(dev, dtype)

    obj.target = ema.model

    def step(i):
        batch = {
            "latents": z0,
            "cond": cond,
            "uncond": uncond,
            "caption": [""] * a.batch,
            "positions": list(range(i * a.batch, (i + 1) * a.batch)),
        }
        loss, _ = obj.loss(engine, batch)
        engine.backward(loss)
        engine.step()
        ema.update(engine.module)
        return float(loss)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    times = []
    for i in range(a.warmup + a.steps):
        sync()
        t0 = time.perf_counter()
        loss = step(i)
        sync()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step(10_000)
    flops = fc.get_total_flops()
    med = statistics.median(times)
    res = {
        "family": a.family,
        "size": a.size,
        "batch": a.batch,
        "frames": frames,
        "height": height,
        "width": width,
        "latent": list(lat),
        "zero": a.zero,
        "precision": a.precision,
        "checkpointing": not a.no_checkpointing,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "teacher_params": n_teacher,
        "student_params": n_student,
        "step_times_s": [round(t, 4) for t in times],
        "median_step_s": med,
        "step_tflop": flops / 1e12,
        "achieved_tflops": flops / med / 1e12,
        "mfu": flops / med / (a.peak_tflops * 1e12),
        "last_loss": loss,
    }
    if dev.type == "cuda":
        res["peak_memory_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
    print(json.dumps(res, indent=2))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
