"""The planner against reality on this CPU: predicted vs measured peak memory and FLOPs of real training runs.

    python bench/plan_vs_measured.py                       # the table of docs/BENCHMARKS.md
    python bench/plan_vs_measured.py --only toy-zero0 --json out.json
    python bench/plan_vs_measured.py --only vc2-full wan-1.3b-full --json gpu.json   # on one GPU (full size)

Each row is one config. *Predicted*: ``python -m t2vturbo.plan``'s numbers for one rank (plan.gpus=1), from
one micro-step traced under fake tensors. *Measured*: the real trainer (DeepSpeed, data, EMA) trains 2 steps
in a fresh process under ``torch.profiler`` memory profiling (``python -m t2vturbo.plan.measure``): the peak
of live tensor bytes inside the training loop, and the FLOPs of a micro-step counted by torch's
``FlopCounterMode``. The mid-size rows are tens of millions of parameters.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TOY = ["train.micro_batch_size=2", "train.gradient_checkpointing=true"]
MID = [
    "model.tiny.block_out_channels=[128,256,256]",
    "model.tiny.layers_per_block=2",
    "model.tiny.attention_head_dim=32",
    "model.tiny.text_dim=256",
    "model.num_frames=8",
    "model.height=64",
    "model.width=64",
    "train.micro_batch_size=1",
]
CONFIGS = {
    "toy-zero0": TOY,
    "toy-zero2": TOY + ["deepspeed=zero2"],
    "toy-nockpt-mb4": ["train.micro_batch_size=4"],
    "toy-mb6": ["train.micro_batch_size=6", "train.gradient_checkpointing=true"],
    # tau=1: every sample motion-guided, the worst case the plan reports (its peak does not depend on the draws)
    "toy-motion": TOY + ["guidance=motion", "guidance.eta=0.05", "guidance.tau=1.0"],
    "toy-bf16-zero2": TOY + ["train.precision=bf16", "deepspeed=zero2"],
    "mid-zero0": MID + ["train.gradient_checkpointing=true"],
    "mid-zero2-nockpt": MID + ["deepspeed=zero2"],
}
# full size, random weights: GPU only (--only NAME on a GPU machine; a measured step time then gives the MFU)
FULL = [
    "train.precision=bf16",
    "train.gradient_checkpointing=true",
    "deepspeed=zero2",
    "train.micro_batch_size=1",
]
GPU_CONFIGS = {
    "vc2-full": ["model=videocrafter2", *FULL],
    "wan-1.3b-full": ["model=wan2_1_t2v_1_3b", *FULL],
}


def predicted(overrides: list[str]) -> dict:
    from t2vturbo.plan.__main__ import plan, prepare
    from t2vturbo.plan.measure import compose

    p = plan(
        prepare(
            compose(
                overrides
                + ["plan.gpus=1", "plan.what_if_checkpointing=false", "plan.foreach_optimizer=false"]
            )
        )
    )
    return {"peak_gib": p["memory_gib"]["peak"], "flops_micro": p["flops_micro_batch_traced"], "plan": p}


def measured(overrides: list[str], flops: bool) -> dict:
    cmd = [sys.executable, "-m", "t2vturbo.plan.measure"] + ([] if flops else ["--no-flops"]) + overrides
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    for line in r.stdout.splitlines():
        if line.startswith("MEASURED "):
            return json.loads(line[len("MEASURED ") :])
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    rows = []
    for name, ov in {**CONFIGS, **GPU_CONFIGS}.items():
        if (a.only and name not in a.only) or (not a.only and name in GPU_CONFIGS):
            continue
        motion = any(o.startswith("guidance=motion") for o in ov)
        pr, me = predicted(ov), measured(ov, flops=not motion)
        peak_m = me["peak_bytes"] / 2**30
        row = {
            "config": name,
            "overrides": " ".join(ov),
            "params": pr["plan"]["params"],
            "predicted_peak_gib": pr["peak_gib"],
            "measured_peak_gib": round(peak_m, 4),
            "peak_error": round(pr["peak_gib"] / peak_m - 1, 4),
            "predicted_flops": pr["flops_micro"],
            "measured_flops": me["flops_micro_step"] if not motion else None,
            "device": me["device"],
            "measured_step_s": me["step_seconds"],
            "implied_mfu_at_989": pr["flops_micro"] / me["step_seconds"] / 989e12,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        "\n| config | parameters (trainable + frozen) | predicted peak (MiB) | measured peak (MiB) | error | "
        "predicted GFLOP | measured GFLOP |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        n = (r["params"]["trainable"] + r["params"]["frozen"]) / 1e6
        mf = (
            f"{r['measured_flops'] / 1e9:.4f}" if r["measured_flops"] is not None else "n/a (motion guidance)"
        )
        print(
            f"| {r['config']} | {n:.1f} M | {r['predicted_peak_gib'] * 1024:.1f} | {r['measured_peak_gib'] * 1024:.1f} "
            f"| {r['peak_error']:+.1%} | {r['predicted_flops'] / 1e9:.4f} | {mf} |"
        )
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
