"""A faster training step: eager attention vs SDPA (``model.attention``), and ``train.compile`` off vs on.

    python bench/faster_step.py --json faster_step.json                 # toy and mid, 5 interleaved repeats
    python bench/faster_step.py --configs toy --repeats 3               # quicker

The step is the library's own, built as the trainer builds it (``build_backbone`` with ``model.attention``,
``build_objective``, ``compile_networks`` with ``train.compile``, the DeepSpeed engine): one
``ConsistencyDistillation.loss`` (teacher solver, student forward, target forward), ``engine.backward``,
``engine.step`` and the EMA update, on a fixed batch of clips (data loading is not part of it). Configs:

* ``toy``: ``experiment=toy`` (what ``make distill`` trains): the shipped 5.1 M-parameter toy teacher
  (UNet3D 64/128), 8 frames of 32x32, micro-batch 8, 50-point grid, online motion guidance (DDIM inversion
  every 10th grid point);
* ``mid``: a 37 M-parameter UNet3D (``model.tiny.block_out_channels=[128,256,256]``, random weights), 8 frames
  of 32x32 (latents 48x8x8x8), micro-batch 2, CFG only.

Variants per config (each its own backbone / student / engine in this process): ``eager`` (the reference
attention, compile off: the baseline), ``sdpa`` (compile off), ``sdpa+compile``. Each variant's first two steps
are timed separately (compilation happens there); then ``--repeats`` rounds run every variant once per round
at the same sample positions (the same draws: t, noise, w, motion-guided or not), interleaved, and the median
per variant is reported with speedup = eager median / variant median. ``compile_s`` = the first two steps minus
two median steps (the one-off cost), and ``break_even_steps`` = compile_s / (time saved per step).
Inductor's on-disk cache is pointed at a fresh folder unless ``--warm-cache`` (a cold compile, as a new run
on a new machine pays it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIGS = {
    "toy": ["experiment=toy"],
    "mid": [
        "model.tiny.block_out_channels=[128,256,256]",
        "model.num_frames=8",
        "model.height=32",
        "model.width=32",
        "train.micro_batch_size=2",
        "objective.num_ddim_timesteps=50",
    ],
}
VARIANTS = {"eager": ("eager", False), "sdpa": ("sdpa", False), "sdpa+compile": ("sdpa", True)}
CAPTIONS = ["a red circle moving left", "a blue square moving up", "a green triangle moving right"]


def compose(overrides):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    from t2vturbo.config import validate

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return validate(hcompose(config_name="config", overrides=list(overrides)))


class Variant:
    """One variant's trainer pieces, built as ``Trainer.__init__`` builds them."""

    def __init__(self, overrides, attention: str, compile_: bool, out: str):
        import torch
        from omegaconf import OmegaConf

        from t2vturbo.backbones import build_backbone
        from t2vturbo.train.compile import compile_networks
        from t2vturbo.train.engine import initialize
        from t2vturbo.train.objectives import RunContext, build_objective

        cfg = compose([*overrides, f"model.attention={attention}", f"train.compile={compile_}"])
        cfg.output_dir = out
        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        self.bb = build_backbone(cfg.model, cfg.train.gradient_checkpointing)
        self.obj = build_objective(cfg, self.bb, RunContext(seed=cfg.seed))
        self.compiled = compile_networks(self.obj, self.bb, cfg.train.compile)
        self.engine, _, _ = initialize(self.obj.module, cfg.train, OmegaConf.to_container(cfg.deepspeed), 1)
        self.params = sum(p.numel() for p in self.obj.module.parameters())
        m = cfg.model
        self.batch_size = int(cfg.train.micro_batch_size)
        g = torch.Generator().manual_seed(0)
        self.video = torch.rand(self.batch_size, m.num_frames, 3, m.height, m.width, generator=g) * 2 - 1
        self.captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(self.batch_size)]

    def step(self, i: int) -> float:
        """One optimizer step at sample positions of round ``i``; its seconds."""
        b = self.batch_size
        batch = {
            "video": self.video,
            "caption": self.captions,
            "positions": list(range(i * b, (i + 1) * b)),
        }
        t0 = time.perf_counter()
        loss, _ = self.obj.loss(self.engine, batch)
        self.engine.backward(loss)
        self.engine.step()
        if self.obj.ema is not None:
            self.obj.ema.update(self.engine.module)
        return time.perf_counter() - t0


def run_config(name, repeats, variants, out_dir):
    print(f"[{name}] building {', '.join(variants)}", flush=True)
    vs = {v: Variant(CONFIGS[name], *VARIANTS[v], out=f"{out_dir}/{name}-{v}") for v in variants}
    first = {}
    for v, var in vs.items():  # warm-up: the first two steps (compilation) per variant
        first[v] = [var.step(10_000), var.step(10_001)]
        print(f"[{name}] {v}: first two steps {first[v][0]:.1f} s, {first[v][1]:.1f} s", flush=True)
    times = {v: [] for v in vs}
    for r in range(repeats):
        order = list(vs) if r % 2 == 0 else list(vs)[::-1]  # alternate the order within a round
        for v in order:
            times[v].append(vs[v].step(r))
        print(f"[{name}] round {r}: " + ", ".join(f"{v} {times[v][-1]:.2f} s" for v in vs), flush=True)
    med = {v: statistics.median(t) for v, t in times.items()}
    base = med.get("eager", next(iter(med.values())))
    rows = []
    for v in vs:
        uncompiled = med.get(VARIANTS[v][0], med[v])  # the same attention without compile
        saved = uncompiled - med[v]
        compile_s = max(0.0, sum(first[v]) - 2 * med[v]) if vs[v].compiled else 0.0
        rows.append(
            {
                "config": name,
                "variant": v,
                "attention": VARIANTS[v][0],
                "compile": VARIANTS[v][1],
                "compiled": vs[v].compiled,
                "student_params": vs[v].params,
                "micro_batch": vs[v].batch_size,
                "median_step_s": med[v],
                "step_times_s": [round(t, 4) for t in times[v]],
                "first_steps_s": [round(t, 3) for t in first[v]],
                "speedup_vs_eager": base / med[v],
                "compile_s": compile_s,
                "break_even_steps": (compile_s / saved if saved > 0 else None) if vs[v].compiled else None,
            }
        )
    return rows


def table(rows) -> str:
    lines = [
        "| config | variant | student params | median step (s) | speedup vs eager | compile (s) | break-even steps |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        be = r["break_even_steps"]
        lines.append(
            f"| {r['config']} | {r['variant']} | {r['student_params'] / 1e6:.1f} M | {r['median_step_s']:.3f} | "
            f"{r['speedup_vs_eager']:.2f}x | {r['compile_s']:.0f} | "
            f"{'-' if not r['compiled'] else ('never' if be is None else f'{be:.0f}')} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=["toy", "mid"], choices=sorted(CONFIGS))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds (every variant once per round)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--warm-cache", action="store_true", help="keep inductor's on-disk cache (default: cold)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="faster_step_")
    if not a.warm_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor")
    import torch

    from t2vturbo.train.engine import init_distributed

    if a.threads:
        torch.set_num_threads(a.threads)
    init_distributed()
    rows = []
    for c in a.configs:
        rows += run_config(c, a.repeats, a.variants, tmp)
    res = {
        "command": " ".join(["python", "bench/faster_step.py", *(argv or sys.argv[1:])]),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "cold_inductor_cache": not a.warm_cache,
        "rows": rows,
    }
    print(table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
