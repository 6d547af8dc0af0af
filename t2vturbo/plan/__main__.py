"""``python -m t2vturbo.plan [experiment=NAME] [key=value ...] [plan.gpus=8 plan.gpu_mem_gib=80 ...]``

The capacity plan of a training run before its first GPU hour: the same Hydra config and overrides as
``python -m t2vturbo.distill``, plus ``plan.*`` (t2vturbo/config.py ``PlanConfig``). It runs one real training
micro-step of the configured recipe at full size under fake tensors (t2vturbo/plan/step.py: no weights, no
GPU, no memory) and writes ``plan.md`` and ``plan.json`` (plan.out, default OUTPUT_DIR/plan): FLOPs per
component and per optimizer step, peak memory per rank by category for the configured ZeRO stage and the
what-ifs (ZeRO 0-3, checkpointing, CPU offload, micro-batch), predicted step time and GPU-hours at plan.mfu,
and a verdict with the override that makes the run fit. ``model.path`` may be omitted: the networks are
built from ``model.arch`` (the model options set it).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from ..config import ConfigError, validate

log = logging.getLogger("t2vturbo")
PLANNED = "(planned at its released size)"  # a reward path the plan builds from its architecture
UNREAD = "(not read by the plan)"  # a data path the plan does not need


def _zero(cfg) -> tuple[int, bool]:
    z = (cfg.deepspeed or {}).get("zero_optimization", {}) or {}
    off = (z.get("offload_optimizer") or {}).get("device", "none") == "cpu"
    return int(z.get("stage", 0)), bool(off)


def guided_stats(cfg) -> tuple[float, float]:
    """(P(a sample is motion-guided), E[inversion passes | guided]) over the uniform grid-index draw."""
    from ..guidance.motion import inversion_schedule

    g, n_grid = cfg.guidance, int(cfg.objective.num_ddim_timesteps)
    if not g.motion:
        return 0.0, 0.0
    guided = [n for n in range(n_grid) if n >= (1.0 - g.tau) * n_grid]
    if not guided:
        return 0.0, 0.0
    passes = (
        [len(inversion_schedule(n, g.inversion_stride)) for n in guided] if g.reference == "invert" else [0]
    )
    return len(guided) / n_grid, sum(passes) / len(passes)


def expected_flops(cfg, tr) -> dict[str, float]:
    """FLOPs per component of one micro-batch, in expectation over the draws (motion guidance: only the
    guided fraction, with the expected number of inversion passes), from a worst-case trace."""
    p_g, passes = guided_stats(cfg)
    out = {k: float(v) for k, v in tr.flops.items() if k not in ("mg_inversion", "motion_guidance", "other")}
    if "motion_guidance" in tr.flops or "mg_inversion" in tr.flops:
        run = max(1, tr.inversion[0])  # passes run: one per guided sample
        per_pass = tr.flops.get("mg_inversion", 0) / run
        out["motion_guidance"] = p_g * (tr.flops.get("motion_guidance", 0) + per_pass * passes * run)
    out["other"] = float(tr.flops.get("other", 0))
    return out


def plan(cfg) -> dict:
    from . import model as M
    from .step import trace_step

    pc, tc = cfg.plan, cfg.train
    stage, offload = _zero(cfg)
    n = int(pc.gpus)
    limit = pc.gpu_mem_gib * M.GIB
    mb = int(tc.micro_batch_size)
    t0 = time.time()
    ckpts = [bool(tc.gradient_checkpointing)]
    if pc.what_if_checkpointing:
        ckpts.append(not ckpts[0])
    traces = {}
    for ck in ckpts:
        for b in sorted({1, 2, mb}):
            log.info("tracing one micro-step: micro-batch %d, checkpointing %s", b, ck)
            traces[(ck, b)] = trace_step(cfg, micro_batch=b, checkpointing=ck, fake=True)
    trace_s = time.time() - t0
    tr = traces[(ckpts[0], mb)]
    p_bytes = tr.param_bytes["trainable"] // max(1, tr.params["trainable"])
    psi = tr.params["trainable"]
    largest = tr.largest_module_params

    def fit(ck):
        pts = {b: traces[(ck, b)] for b in sorted({1, 2, mb})}
        base = {
            b: t.peak_bytes - t.param_bytes["trainable"] - t.peak_breakdown["gradients"]
            for b, t in pts.items()
        }
        return M.linear_fit(base)

    fitted = {ck: fit(ck) for ck in ckpts}

    zcfg = (cfg.deepspeed or {}).get("zero_optimization", {}) or {}
    bucket = int(zcfg.get("reduce_bucket_size", M.REDUCE_BUCKET))
    opt_tmp: dict[tuple, int] = {}

    def step_temporaries(stage_, off) -> int:
        """The optimizer step's temporaries on the GPU (none with offload: the step runs on the CPU)."""
        if off or psi == 0:
            return 0
        flat = stage_ >= 1 or p_bytes != 4  # DeepSpeed's flat fp32 partition; ZeRO-0 fp32: the module's list
        key = (flat, stage_ >= 1 or p_bytes != 4)
        if key not in opt_tmp:
            numel = -(-psi // n) if flat else psi
            opt_tmp[key] = M.optimizer_step_temporaries(
                numel, pc.foreach_optimizer, 1 if flat else tr.trainable_tensors
            )
        return opt_tmp[key]

    def predict(stage_, ck, b, off=False) -> dict:
        a, s = fitted[ck]
        off = off and stage_ >= 1
        st = M.model_states(psi, p_bytes, stage_, n, off, largest, bucket)
        t = traces.get((ck, b)) or traces[(ck, 1)]
        rest = a + s * b
        frozen = t.param_bytes["frozen"] + t.peak_breakdown["buffers"]
        dyn = rest - frozen
        states = st.parameters + st.gradients + st.optimizer
        peak = max(rest + states, frozen + states + step_temporaries(stage_, off))
        return {
            "parameters": t.param_bytes["frozen"] + st.parameters,
            "gradients": st.gradients,
            "optimizer": st.optimizer,
            "activations_and_temporaries": dyn,
            "peak": peak,
        }

    conf = predict(stage, ckpts[0], mb, offload)
    b_conf = tr.peak_breakdown
    act_share = b_conf["activations"] / max(1, b_conf["activations"] + b_conf["temporaries"])
    memory = {
        "parameters": M.gib(conf["parameters"]),
        "gradients": M.gib(conf["gradients"]),
        "optimizer": M.gib(conf["optimizer"]),
        "activations": M.gib(conf["activations_and_temporaries"] * act_share),
        "temporaries": M.gib(conf["activations_and_temporaries"] * (1 - act_share)),
        "peak": M.gib(conf["peak"]),
    }
    what_if = []
    for ck in ckpts:
        for z in (0, 1, 2, 3):
            for off in (False, True) if z >= 1 else (False,):
                p = predict(z, ck, mb, off)
                mx = M.max_fitting(
                    lambda b, z=z, ck=ck, off=off: predict(z, ck, b, off)["peak"], limit, pc.max_micro_batch
                )
                what_if.append(
                    {
                        "zero": z,
                        "checkpointing": ck,
                        "offload": off,
                        "peak_gib": M.gib(p["peak"]),
                        "fits": p["peak"] <= limit,
                        "max_micro_batch": mx,
                    }
                )
    flops_mb = expected_flops(cfg, tr)
    per_micro = sum(flops_mb.values())
    flops_step = per_micro * int(tc.grad_accum)
    step_s = M.step_seconds(flops_step, pc.peak_tflops, pc.mfu)
    fits = conf["peak"] <= limit
    max_mb = M.max_fitting(lambda b: predict(stage, ckpts[0], b, offload)["peak"], limit, pc.max_micro_batch)
    verdict, override = _verdict(cfg, stage, ckpts[0], offload, mb, fits, max_mb, memory, what_if, n, pc)
    return {
        "command": "python -m t2vturbo.plan " + " ".join(sys.argv[1:]),
        "model": {"family": cfg.model.family, "arch": cfg.model.arch, "path": cfg.model.path},
        "shape": {"frames": cfg.model.num_frames, "height": cfg.model.height, "width": cfg.model.width},
        "latent_shape": list(tr.latent_shape),
        "precision": tc.precision,
        "params": tr.params,
        "gpus": n,
        "gpu_mem_gib": pc.gpu_mem_gib,
        "zero": stage,
        "offload": offload,
        "checkpointing": ckpts[0],
        "micro_batch": mb,
        "grad_accum": int(tc.grad_accum),
        "flops": {k: v for k, v in flops_mb.items() if v},
        "flops_worst_case_micro_batch": float(sum(tr.flops.values()) - tr.flops.get("mg_inversion", 0))
        + float(tr.flops.get("mg_inversion", 0)) * (tr.inversion[1] / max(1, tr.inversion[0])),
        "flops_per_step": flops_step,
        "flops_micro_batch_traced": int(sum(tr.flops.values())),
        "motion_guidance": dict(zip(("p_guided", "expected_inversion_passes"), guided_stats(cfg))),
        "memory_gib": memory,
        "peak_phase": tr.peak_phase,
        "fits": fits,
        "max_micro_batch": max_mb,
        "what_if": what_if,
        "peak_tflops": pc.peak_tflops,
        "mfu": pc.mfu,
        "step_seconds": step_s,
        "max_steps": int(tc.max_steps),
        "gpu_hours": step_s * int(tc.max_steps) * n / 3600.0,
        "implied_mfu": (
            M.implied_mfu(flops_step, pc.measured_step_s, pc.peak_tflops) if pc.measured_step_s else None
        ),
        "verdict": verdict,
        "override": override,
        "trace_seconds": round(trace_s, 1),
    }


def _verdict(cfg, stage, ck, offload, mb, fits, max_mb, memory, what_if, n, pc) -> tuple[str, str | None]:
    where = f"{n}x{pc.gpu_mem_gib:g} GiB"
    setup = f"ZeRO-{stage}" + (" + CPU offload" if offload else "") + (" + checkpointing" if ck else "")
    if fits:
        text = (
            f"fits on {where} at micro-batch {mb} with {setup} (peak {memory['peak']} GiB per rank; largest "
        )
        return text + f"micro-batch that fits: {max_mb})", None
    worst = max(
        ("activations", "temporaries", "parameters", "optimizer", "gradients"), key=lambda k: memory[k]
    )
    msg = f"does not fit on {where} at micro-batch {mb} with {setup}: peak {memory['peak']} GiB ({worst} {memory[worst]} GiB)"
    # the cheapest change that fits at this micro-batch: checkpointing, then a higher stage, then offload
    order = sorted(
        (w for w in what_if if w["fits"]),
        key=lambda w: (w["checkpointing"] != ck, w["zero"] < stage, w["offload"], w["zero"]),
    )
    if order:
        w = order[0]
        ov = []
        if w["checkpointing"] != ck:
            ov.append(f"train.gradient_checkpointing={str(w['checkpointing']).lower()}")
        if w["zero"] != stage:
            ov.append(
                f"deepspeed=zero{w['zero']}"
                if w["zero"] in (0, 2, 3)
                else f"+deepspeed.zero_optimization.stage={w['zero']}"
            )
        if w["offload"]:
            ov.append("+deepspeed.zero_optimization.offload_optimizer.device=cpu")
        return msg + f"; fits with {' '.join(ov)} (peak {w['peak_gib']} GiB)", " ".join(ov)
    if max_mb >= 1:
        accum = -(-mb * cfg.train.grad_accum // max_mb)
        ov = f"train.micro_batch_size={max_mb} train.grad_accum={accum}"
        return msg + f"; fits at micro-batch {max_mb} ({ov} keeps about the same global batch)", ov
    if worst == "parameters":
        hint = (
            "; the frozen networks (teacher, EMA target, text encoder, VAE, rewards) are whole on every rank -- ZeRO "
            "shards only what trains"
        )
        if not cfg.model.lora.enabled:
            hint += ": model.lora.enabled=true trains LoRA adapters against the student itself (no EMA copy); plan it"
        return msg + hint, None
    return msg + "; no what-if fits at micro-batch 1 (activations do not shrink with more GPUs)", None


def markdown(p: dict) -> str:
    tf = lambda x: f"{x / 1e12:,.2f}" if x >= 1e13 else f"{x / 1e12:.3g}"  # noqa: E731
    gb = lambda x: f"{x:.2f}" if x >= 1 else f"{x:.3g}"  # noqa: E731
    lines = [
        f"# Plan: {p['model']['arch'] or p['model']['family']} ({p['shape']['frames']}x{p['shape']['height']}x"
        f"{p['shape']['width']}, latents {p['latent_shape']}), {p['precision']}",
        "",
        f"`{p['command']}`",
        "",
        f"**{p['verdict']}**",
        "",
        f"Parameters: {p['params']['trainable'] / 1e9:.3f} B trainable, {p['params']['frozen'] / 1e9:.3f} B frozen. "
        f"{p['gpus']} ranks, ZeRO-{p['zero']}{' + offload' if p['offload'] else ''}, micro-batch {p['micro_batch']}, "
        f"grad_accum {p['grad_accum']}.",
        "",
        "| component | TFLOP per micro-batch (expected) |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {tf(v)} |" for k, v in p["flops"].items()]
    lines += [
        f"| **optimizer step (per rank)** | **{tf(p['flops_per_step'])}** |",
        "",
        "| memory per rank (GiB) | " + " | ".join(p["memory_gib"]) + " |",
        "|---|" + "---:|" * len(p["memory_gib"]),
        "| configured | " + " | ".join(gb(v) for v in p["memory_gib"].values()) + " |",
        "",
        f"Peak reached in: {p['peak_phase']}. Step time at {p['mfu']:.0%} MFU of {p['peak_tflops']:g} TFLOP/s: "
        f"**{p['step_seconds']:.2f} s**; {p['max_steps']} steps on {p['gpus']} GPUs: **{p['gpu_hours']:.1f} GPU-hours**."
        + (f" A measured step time implies MFU {p['implied_mfu']:.1%}." if p["implied_mfu"] else ""),
        "",
        "| ZeRO | checkpointing | offload | peak GiB | fits | largest micro-batch |",
        "|---:|---|---|---:|---|---:|",
    ]
    lines += [
        f"| {w['zero']} | {w['checkpointing']} | {w['offload']} | {gb(w['peak_gib'])} | {w['fits']} | {w['max_micro_batch']} |"
        for w in p["what_if"]
    ]
    return "\n".join(lines) + "\n"


def run(cfg) -> dict:
    p = plan(cfg)
    out = Path(cfg.plan.out or Path(cfg.output_dir) / "plan")
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps(p, indent=2))
    md = markdown(p)
    (out / "plan.md").write_text(md)
    print(md)
    print(f"written: {out / 'plan.md'}, {out / 'plan.json'}")
    return p


def prepare(cfg: DictConfig) -> DictConfig:
    """The validated config; a model option's required ``model.path`` (???) may be omitted: the plan builds
    the networks from ``model.arch``."""
    raw = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    raw.pop("hydra", None)
    if OmegaConf.is_missing(raw.model, "path"):
        if not raw.model.get("arch"):
            raise ConfigError("model.path is missing and model.arch is not set: the plan needs one of them")
        with open_dict(raw):
            raw.model.path = None
    data = raw.get("data") or {}
    if "urls" in data.keys() and OmegaConf.is_missing(data, "urls"):
        data.urls = UNREAD
    if data.get("kind") == "shards" and not data.get("urls"):
        data.urls = UNREAD
    for src in data.get("sources") or []:
        if "urls" not in src.keys() or OmegaConf.is_missing(src, "urls") or src.urls is None:
            src.urls = UNREAD  # the plan traces a micro-batch of the configured clip size, no data is read
    paths = raw.get("reward", {}).get("paths", {}) or {}
    for name in list(paths):
        if OmegaConf.is_missing(paths, name):  # a reward option's required weights: planned at full size
            paths[name] = PLANNED
    return validate(raw)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .archs import PlanError

    try:
        vcfg = prepare(cfg)
        run(vcfg)
    except (ConfigError, PlanError) as e:
        print(f"plan error: {e}", file=sys.stderr)
        sys.exit(2)


#: The plan writes plan.md / plan.json only: no Hydra run files (``.hydra/``, a ``.log``) in OUTPUT_DIR, where they
#: would replace those of the training run the plan is about.
QUIET_HYDRA = ("hydra.output_subdir=null", "hydra/job_logging=stdout")


def cli() -> None:
    """``t2vturbo-plan`` / ``python -m t2vturbo.plan``: Hydra without its run files (:data:`QUIET_HYDRA`)."""
    given = {a.split("=", 1)[0].lstrip("+~") for a in sys.argv[1:]}
    sys.argv[1:1] = [o for o in QUIET_HYDRA if o.split("=", 1)[0] not in given]
    main()


if __name__ == "__main__":
    cli()
