"""Measure a real training run's peak tensor memory and FLOPs on this machine (the planner's check).

:func:`measure_run` builds the real :class:`~t2vturbo.train.trainer.Trainer` (DeepSpeed engine, data, EMA)
and trains ``steps`` optimizer steps under ``torch.profiler`` with memory profiling: every allocation and
free of the CPU allocator is an event, so the live bytes over time are their running sum and the peak is
the largest value inside the training loop (model build, checkpoints and the export are outside it). The
FLOPs of one more micro-step, after that window, are counted with ``torch.utils.flop_counter.FlopCounterMode``
(torch's own counter, independent of the planner's trace; it holds references that would inflate the peak).
On a GPU the peak is ``torch.cuda.max_memory_allocated`` over the same window, and the mean step time is
reported. Without ``model.path`` and with a ``model.arch`` (``model=videocrafter2``, ...) the networks are the
full-size architecture with random weights, as the plan builds them (a full-size check needs a GPU). Run it in a fresh process (``python -m t2vturbo.plan.measure
KEY=VALUE ...`` prints JSON), so that nothing allocated before it distorts the baseline.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time

import torch


def _live_peak(prof, start_ns: int, end_ns: int) -> tuple[int, int]:
    """(peak live bytes within [start_ns, end_ns], live bytes at start_ns) from the profiler's memory events."""
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live, peak, at_start, started = 0, 0, None, False
    for e in events:
        if not started and e.start_ns() >= start_ns:
            at_start, started, peak = live, True, live
        if e.start_ns() > end_ns:
            break
        live += e.nbytes()
        if started:
            peak = max(peak, live)
    return peak, (at_start if at_start is not None else live)


def compose(overrides: list[str]):
    """The config ``python -m t2vturbo.distill OVERRIDES`` would train (Hydra's compose of conf/)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from .. import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", list(overrides))


def measure_run(overrides: list[str], steps: int = 2, count_flops: bool = True) -> dict:
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    from ..train import trainer as trainer_mod
    from ..train.trainer import Trainer
    from .__main__ import prepare
    from .archs import build_full_size

    out = tempfile.mkdtemp(prefix="t2v-measure-")
    run = [f"output_dir={out}", f"train.max_steps={steps}", "train.export=false", "train.progress=false"]
    cfg = prepare(compose(list(overrides) + run + ["train.log_every=1000000", "train.eval_every=0"]))
    build = trainer_mod.build_backbone
    if (
        cfg.model.path is None and cfg.model.arch
    ):  # full size, random weights (a GPU check of a full-size plan)

        def random_full_size(model_cfg, ckpt=False, device="cpu", dtype=torch.float32):
            return build_full_size(model_cfg, ckpt, dtype).to(device)

        trainer_mod.build_backbone = random_full_size
    cuda = torch.cuda.is_available()
    flops = {}
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        trainer = Trainer(cfg)
        trainer.save_checkpoint = lambda: None  # a checkpoint is not part of a step
        micro = trainer.micro_loss

        backward = trainer.engine.backward

        def counted(batch):
            # the micro-step's forward and backward inside torch's counter; the trainer's own backward call
            # that follows is then skipped
            with FlopCounterMode(display=False) as fc:
                loss, logs = micro(batch)
                backward(loss)
            flops["last"] = fc.get_total_flops()
            trainer.engine.backward = lambda _loss: None
            return loss, logs

        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t_start = time.perf_counter()
        with torch.profiler.record_function(WINDOW):
            trainer.train()
        if cuda:
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - t_start) / steps
        cuda_peak = torch.cuda.max_memory_allocated() if cuda else None
        if count_flops:  # one more step, counted (outside the memory window: the counter holds references)
            trainer.micro_loss = counted
            trainer.cfg.train.max_steps = steps + 1
            trainer.logger.log = lambda *a, **k: None  # (closed by the first train())
            trainer.train()
    trainer_mod.build_backbone = build
    t0, t1 = _window(prof)
    peak, base = _live_peak(prof, t0, t1)
    if cuda_peak is not None:  # on a GPU: the tensors live on the GPU, torch's allocator counts them
        peak = cuda_peak
    return {
        "peak_bytes": peak,
        "live_at_start_bytes": base,
        "flops_micro_step": flops.get("last", 0),
        "step_seconds": seconds,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
    }


WINDOW = "t2vturbo.train"


def _window(prof) -> tuple[int, int]:
    """(start, end) ns of the training loop on the profiler's clock."""
    for e in prof.profiler.kineto_results.events():
        if e.name() == WINDOW:
            return e.start_ns(), e.start_ns() + e.duration_ns()
    raise RuntimeError("the profiler recorded no training window")


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    steps, count = 2, True
    while args and args[0].startswith("--"):
        a = args.pop(0)
        if a.startswith("--steps="):
            steps = int(a.split("=", 1)[1])
        elif a == "--no-flops":
            count = False
    print("MEASURED " + json.dumps(measure_run(args, steps, count)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
