#!/usr/bin/env python
"""Sampling benchmark: teacher (DDIM-50 + classifier-free guidance) vs student (4 consistency steps).

    python bench/sampling.py [--size tiny|modelscope] [--device cpu|cuda] [--repeats R] [--prompts P]
                             [--frames F --height H --width W] [--threads N] [--json OUT]

Both samplers are timed END TO END (text encode + denoising loop + VAE decode) with the library's own
``t2vturbo.sample.sample_teacher`` / ``sample_student``, in one process, on ONE backbone (the student
is ``bb.make_student()``, a copy of the teacher UNet with the w/eta embeddings), interleaved
teacher, student, teacher, student, ... after one warm-up of each.

* teacher: ``sample_teacher(steps=50, guidance=7.5)``: 50 UNet calls on the batched [cond; uncond]
  input, i.e. 100 UNet evaluations per video;
* student: ``sample_student(steps=4)``: 4 UNet evaluations per video.

So 100 / 4 = 25x is the bound set by the UNet evaluations: the speed-up of the denoising loop when
a UNet call on a batch of 2B costs exactly twice one on a batch of B (a ratio above or below 2
moves it either way); the per-batch costs that both samplers pay once (text encoding, VAE
decoding, Python overhead) pull the end-to-end ratio below it.
The UNet evaluations are counted with forward hooks during the runs, not assumed. A breakdown
(``--no-breakdown`` skips it) splits each run into the time inside the UNet calls (measured by the
same hooks; on CPU during the timed runs themselves, on cuda in separate runs with the device
synchronised around each call) and the time outside them, plus the median of separate
text-encode and VAE-decode calls.

Sizes:
  tiny (default): the tiny random configs of ``t2vturbo.backbones.unet3d.tiny_components``
      (UNet3DConditionModel 32/64 channels, AutoencoderKL factor 2 with 4 latent channels, 2-layer
      CLIP text encoder), 8 frames at 32x32; ``--tiny-vae pixel_unshuffle`` selects the toy world's
      exact pixel-unshuffle "VAE" (conf/model/tiny_unet3d.yaml). CPU: well under a minute.
  modelscope: ModelScope-sized (text-to-video-ms-1.7b layout) random-init modules: UNet3DConditionModel
      with block_out_channels 320/640/1280/1280, cross_attention_dim 1024, attention_head_dim 64,
      4 latent channels; the Stable Diffusion AutoencoderKL config (128/256/512/512, 4 latent
      channels); a CLIPTextModel with hidden size 1024 and 23 layers; 16 frames at 256x256.
      Meant for a GPU (``--device cuda``, fp16 by default there).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

try:  # run from a checkout without installing the package
    import t2vturbo  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from t2vturbo.backbones.unet3d import (
    UNet3DBackbone,
    build_word_tokenizer,
    default_scheduler_config,
    tiny_backbone,
)
from t2vturbo.sample import sample_student, sample_teacher

TEACHER_STEPS = 50
TEACHER_GUIDANCE = 7.5
STUDENT_STEPS = 4
PROMPTS = (
    "a red circle moving left",
    "a blue square moving up",
    "a green triangle moving right on a textured background",
    "a yellow circle standing still",
    "a big red square moving down fast",
    "a small blue triangle moving left slow",
    "a green circle moving up on a plain background",
    "a yellow square moving right",
)
DEFAULT_SHAPE = {"tiny": (8, 32, 32), "modelscope": (16, 256, 256)}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# --------------------------------------------------------------------------------------------- models
def modelscope_components(seed: int = 0):
    """(unet, vae, text_encoder, tokenizer, scheduler_config) with ModelScope-sized random weights."""
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet3DConditionModel(
        in_channels=4,
        out_channels=4,
        down_block_types=(
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "DownBlock3D",
        ),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        norm_num_groups=32,
        cross_attention_dim=1024,
        attention_head_dim=64,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=256,
        scaling_factor=0.18215,
    )
    # The real tokenizer (CLIP BPE) needs a download; token ids do not change the cost, only the
    # sequence length (77) and the embedding table (49408 x 1024) matter, and both are kept.
    tokenizer = build_word_tokenizer(max_length=77)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=23,
            num_attention_heads=16,
            max_position_embeddings=77,
            hidden_act="gelu",
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        )
    )
    sched = default_scheduler_config("epsilon")
    return unet, vae, text_encoder, tokenizer, sched


def build(size: str, tiny_vae: str, seed: int):
    if size == "tiny":
        return tiny_backbone(vae=tiny_vae, seed=seed)
    if size == "modelscope":
        return UNet3DBackbone(*modelscope_components(seed))
    raise ValueError(f"unknown size {size!r}; expected 'tiny' or 'modelscope'")


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# --------------------------------------------------------------------------------------------- timing
def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EvalCounter:
    """Counts UNet evaluations (sum of batch sizes) with forward hooks; when ``timing`` is on, also
    the time spent inside the UNet (synchronising the device around each call)."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        self.device = device
        self.timing = False
        self.reset()
        module.register_forward_pre_hook(self._pre)
        module.register_forward_hook(self._post)

    def _pre(self, module, args):
        self.calls += 1
        self.samples += int(args[0].shape[0])
        if self.timing:
            sync(self.device)
            self._t0 = time.perf_counter()

    def _post(self, module, args, output):
        if self.timing:
            sync(self.device)
            self.unet_s += time.perf_counter() - self._t0

    def reset(self):
        self.samples = self.calls = 0
        self.unet_s = 0.0


def timed(fn, device):
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return dt, out, peak


def median_time(fn, device, k: int) -> float:
    return statistics.median(timed(fn, device)[0] for _ in range(k))


# --------------------------------------------------------------------------------------------- machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    import diffusers
    import transformers

    info = {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


# --------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=("tiny", "modelscope"), default="tiny")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument(
        "--repeats", type=int, default=3, help="timed runs of each sampler (after one warm-up each)"
    )
    ap.add_argument("--prompts", type=int, default=1, help="videos per batch (prompts)")
    ap.add_argument("--frames", type=int, help="default: 8 (tiny), 16 (modelscope)")
    ap.add_argument("--height", type=int, help="default: 32 (tiny), 256 (modelscope)")
    ap.add_argument("--width", type=int, help="default: 32 (tiny), 256 (modelscope)")
    ap.add_argument(
        "--dtype", choices=tuple(DTYPES), help="default: float16 for modelscope on cuda, else float32"
    )
    ap.add_argument("--tiny-vae", choices=("autoencoder_kl", "pixel_unshuffle"), default="autoencoder_kl")
    ap.add_argument(
        "--threads",
        type=int,
        help="torch.set_num_threads; default: 1 for --size tiny on cpu (see bench/README.md), "
        "else torch's default; 0 = torch's default",
    )
    ap.add_argument(
        "--warmup-teacher-steps",
        type=int,
        default=2,
        help="DDIM steps of the teacher warm-up run (same shapes as the timed runs)",
    )
    ap.add_argument(
        "--no-breakdown",
        action="store_true",
        help="skip the breakdown (time inside vs outside the UNet calls)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if not 1 <= args.prompts <= len(PROMPTS):
        ap.error(f"--prompts must be in [1, {len(PROMPTS)}]")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch.cuda.is_available() is False")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads is None and args.size == "tiny" and args.device == "cpu":
        args.threads = 1  # tiny ops: per-op overhead dominates, and 1 thread is immune to oversubscription
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = DTYPES[
        args.dtype or ("float16" if args.size == "modelscope" and device.type == "cuda" else "float32")
    ]
    frames, height, width = (
        v if v is not None else d
        for v, d in zip((args.frames, args.height, args.width), DEFAULT_SHAPE[args.size])
    )
    prompts = list(PROMPTS[: args.prompts])
    load0 = loadavg()

    t0 = time.perf_counter()
    bb = build(args.size, args.tiny_vae, args.seed)
    net = bb.make_student().eval().requires_grad_(False)
    bb.to(device=device, dtype=dtype)
    bb.alphas_cumprod = bb.alphas_cumprod.float()  # schedule stays fp32 (the samplers index into it)
    net.to(device=device, dtype=dtype)
    build_s = time.perf_counter() - t0
    latent_shape = bb.latent_shape(frames, height, width)
    teacher_count, student_count = EvalCounter(bb.teacher, device), EvalCounter(net.base, device)

    kw = dict(num_frames=frames, height=height, width=width, seed=args.seed)

    def run_teacher(steps=TEACHER_STEPS):
        return sample_teacher(bb, prompts, steps=steps, guidance=TEACHER_GUIDANCE, **kw)

    def run_student():
        return sample_student(bb, net, prompts, steps=STUDENT_STEPS, guidance=TEACHER_GUIDANCE, **kw)

    print(
        f"[bench] {args.size}: {n_params(bb.teacher) / 1e6:.2f}M-param UNet, latent {tuple(latent_shape)}, "
        f"{len(prompts)} prompt(s), {frames}x{height}x{width}, {dtype}, {device}; built in {build_s:.1f}s",
        file=sys.stderr,
        flush=True,
    )

    # warm-up (one-time allocations, kernel selection, lazy init); same shapes as the timed runs
    t_warm_teacher, video, _ = timed(lambda: run_teacher(args.warmup_teacher_steps), device)
    t_warm_student, video, _ = timed(run_student, device)
    assert tuple(video.shape) == (len(prompts), frames, 3, height, width), video.shape
    print(
        f"[bench] warm-up: teacher ({args.warmup_teacher_steps} steps) {t_warm_teacher:.2f}s, "
        f"student {t_warm_student:.2f}s",
        file=sys.stderr,
        flush=True,
    )

    res = {
        name: {
            "times_s": [],
            "unet_s": [],
            "unet_calls": None,
            "unet_evals_per_video": None,
            "peak_mem_bytes": 0,
        }
        for name in ("teacher", "student")
    }
    samplers = (("teacher", run_teacher, teacher_count), ("student", run_student, student_count))

    def one_run(name, fn, counter, instrumented):
        counter.reset()
        counter.timing = instrumented
        dt, video, peak = timed(fn, device)
        counter.timing = False
        del video
        return dt, counter, peak

    # On CPU the hooks that time the UNet calls cost two perf_counter() calls each (no device to
    # synchronise), so the timed runs themselves are instrumented; on cuda the synchronisation
    # would remove CPU/GPU overlap, so the breakdown comes from separate runs afterwards.
    in_situ = device.type != "cuda" and not args.no_breakdown
    for r in range(args.repeats):
        for name, fn, counter in samplers:
            dt, counter, peak = one_run(name, fn, counter, in_situ)
            e = res[name]
            e["times_s"].append(dt)
            if in_situ:
                e["unet_s"].append(counter.unet_s)
            e["unet_calls"] = counter.calls
            e["unet_evals_per_video"] = counter.samples / len(prompts)
            if peak is not None:
                e["peak_mem_bytes"] = max(e["peak_mem_bytes"], peak)
            print(f"[bench] run {r + 1}/{args.repeats} {name}: {dt:.3f}s", file=sys.stderr, flush=True)
    for e in res.values():
        e["median_s"] = statistics.median(e["times_s"])
        e["min_s"] = min(e["times_s"])
        if device.type != "cuda":
            e.pop("peak_mem_bytes")
    res["teacher"].update(
        steps=TEACHER_STEPS, guidance=TEACHER_GUIDANCE, sampler="DDIM (eta=0) + CFG, [cond; uncond] batched"
    )
    res["student"].update(
        steps=STUDENT_STEPS, guidance=TEACHER_GUIDANCE, sampler="multistep consistency (LCM)"
    )
    ratio = res["teacher"]["median_s"] / res["student"]["median_s"]
    ratio_min = res["teacher"]["min_s"] / res["student"]["min_s"]
    bound = res["teacher"]["unet_evals_per_video"] / res["student"]["unet_evals_per_video"]

    breakdown = None
    if not args.no_breakdown:
        breakdown = {
            "source": "the timed runs (in situ)" if in_situ else f"{args.repeats} extra instrumented runs"
        }
        for name, fn, counter in samplers:
            if in_situ:
                e2e, unet = res[name]["times_s"], res[name]["unet_s"]
            else:
                e2e, unet = [], []
                for _ in range(args.repeats):
                    dt, counter, _ = one_run(name, fn, counter, True)
                    e2e.append(dt)
                    unet.append(counter.unet_s)
            unet_s = statistics.median(unet)
            breakdown[name] = {
                "unet_calls": res[name]["unet_calls"],
                "unet_s": unet_s,
                "unet_per_call_s": unet_s / res[name]["unet_calls"],
                "outside_unet_s": statistics.median(t - u for t, u in zip(e2e, unet)),
            }
            res[name].pop("unet_s")
        k = max(5, args.repeats)
        with torch.no_grad():
            z = torch.randn((len(prompts), *latent_shape), generator=torch.Generator().manual_seed(1)).to(
                device, dtype
            )
            breakdown["text_encode_s"] = median_time(lambda: bb.encode_text(prompts), device, k)
            breakdown["vae_decode_s"] = median_time(lambda: bb.decode_latents(z), device, k)
        bt, bs = breakdown["teacher"], breakdown["student"]
        breakdown["unet_only_ratio"] = bt["unet_s"] / bs["unet_s"]
        breakdown["unet_call_2B_over_B"] = bt["unet_per_call_s"] / bs["unet_per_call_s"]
    else:
        for e in res.values():
            e.pop("unet_s")

    if device.type == "cuda":
        peak = {
            "kind": "torch.cuda.max_memory_allocated, per sampler",
            "teacher_bytes": res["teacher"]["peak_mem_bytes"],
            "student_bytes": res["student"]["peak_mem_bytes"],
        }
    else:  # ru_maxrss is KiB on Linux, bytes on macOS
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        peak = {
            "kind": "resource.getrusage(RUSAGE_SELF).ru_maxrss: whole process (both models + runs)",
            "process_bytes": rss,
        }

    out = {
        "benchmark": "sampling: teacher DDIM-50 + CFG vs student 4-step",
        "command": " ".join(["python", "bench/sampling.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.date.today().isoformat(),
        "machine": {**machine_info(device), "loadavg_start": load0, "loadavg_end": loadavg()},
        "config": {
            "size": args.size,
            "tiny_vae": args.tiny_vae if args.size == "tiny" else None,
            "dtype": str(dtype).replace("torch.", ""),
            "prompts": len(prompts),
            "frames": frames,
            "height": height,
            "width": width,
            "latent_shape": list(latent_shape),
            "repeats": args.repeats,
            "warmup_teacher_steps": args.warmup_teacher_steps,
            "seed": args.seed,
            "params": {
                "unet": n_params(bb.teacher),
                "student_extra": n_params(net) - n_params(bb.teacher),
                "vae": n_params(bb.vae),
                "text_encoder": n_params(bb.text_encoder),
            },
            "build_s": build_s,
        },
        "teacher": res["teacher"],
        "student": res["student"],
        "ratio_teacher_over_student": ratio,
        "ratio_teacher_over_student_min": ratio_min,
        "unet_eval_bound": bound,
        "breakdown": breakdown,
        "peak_memory": peak,
    }
    print_table(out)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _mib(x):
    return f"{x / 2**20:.0f} MiB"


def print_table(o: dict):
    m, c, te, st = o["machine"], o["config"], o["teacher"], o["student"]
    dev = m["device"] + (f" ({m['gpu']})" if "gpu" in m else "")
    print(f"\n{o['benchmark']}  [{o['date']}]")
    print(
        f"machine: {m['cpu_model']}, {m['cpu_cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
        f"device {dev}, load avg {m['loadavg_start']} -> {m['loadavg_end']}"
    )
    print(
        f"model: {c['size']}, UNet {c['params']['unet'] / 1e6:.2f}M params, {c['dtype']}, "
        f"{c['prompts']} video(s) of {c['frames']}x{c['height']}x{c['width']} per batch, latent {c['latent_shape']}"
    )
    rows = [
        ("", f"teacher DDIM-{te['steps']} + CFG", f"student {st['steps']}-step"),
        ("UNet calls / batch", str(te["unet_calls"]), str(st["unet_calls"])),
        ("UNet evaluations / video", f"{te['unet_evals_per_video']:g}", f"{st['unet_evals_per_video']:g}"),
        ("median s / batch (end to end)", f"{te['median_s']:.3f}", f"{st['median_s']:.3f}"),
        ("min s / batch (end to end)", f"{te['min_s']:.3f}", f"{st['min_s']:.3f}"),
        (
            "all runs (s)",
            " ".join(f"{x:.3f}" for x in te["times_s"]),
            " ".join(f"{x:.3f}" for x in st["times_s"]),
        ),
    ]
    if "peak_mem_bytes" in te:
        rows.append(("peak memory (cuda)", _mib(te["peak_mem_bytes"]), _mib(st["peak_mem_bytes"])))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    for r in rows:
        print(f"  {r[0]:<{w0}}  {r[1]:<{w1}}  {r[2]}")
    print(
        f"  speed-up teacher/student (median, end to end): {o['ratio_teacher_over_student']:.1f}x   "
        f"(of the minima: {o['ratio_teacher_over_student_min']:.1f}x; bound from UNet evaluations: "
        f"{o['unet_eval_bound']:g}x)"
    )
    if "process_bytes" in o["peak_memory"]:
        print(f"  peak RSS of the process (both models): {_mib(o['peak_memory']['process_bytes'])}")
    b = o["breakdown"]
    if b:
        bt, bs = b["teacher"], b["student"]
        print(f"  breakdown (medians over {b['source']}; text encode / VAE decode: separate calls):")
        for name, x in (("teacher", bt), ("student", bs)):
            print(
                f"    {name}: {x['unet_s']:.3f}s in {x['unet_calls']} UNet calls ({x['unet_per_call_s'] * 1e3:.1f} ms each)"
                f" + {x['outside_unet_s'] * 1e3:.1f} ms outside the UNet"
            )
        print(
            f"    text encode {b['text_encode_s'] * 1e3:.1f} ms, VAE decode {b['vae_decode_s'] * 1e3:.1f} ms (per batch)"
        )
        print(
            f"    UNet time only: teacher/student = {b['unet_only_ratio']:.1f}x "
            f"(a batch-2B call costs {b['unet_call_2B_over_B']:.2f}x a batch-B call)"
        )


if __name__ == "__main__":
    sys.exit(main())
