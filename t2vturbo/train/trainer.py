"""The training loop: one config in, components built once, a short loop, DeepSpeed as a wrapper.

Components (each in its own module): the backbone (``backbones.build_backbone``), the objective
(``objectives.build_objective``: what is trained and its ``loss``), the DeepSpeed engine
(``engine.initialize``), the data (``data_feed.DataFeed``), checkpoints (``checkpoint``), preemption
(``preemption.Preemption``), validation (``validation.Validator``), the export (``export.export_run``)
and the metric logger. :meth:`Trainer.train` is the loop.
"""

from __future__ import annotations

import logging
import random
import resource
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from tqdm import tqdm

from ..backbones import build_backbone, check_paths
from . import checkpoint as ckpt
from . import resume
from .compile import compile_networks
from .data_feed import DataFeed
from .engine import device_for, init_distributed, initialize
from .export import export_run
from .logger import MetricLogger, run_hparams
from .objectives import RunContext, build_objective
from .preemption import Preemption
from .validation import Validator

log = logging.getLogger("t2vturbo")


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def memory_stats(device) -> dict[str, float]:
    """Peak memory so far: ``max_rss_mib`` (this process, from getrusage) and, on CUDA,
    ``cuda_max_allocated_mib`` (torch's allocator peak on ``device``)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"max_rss_mib": rss / (2**20 if sys.platform == "darwin" else 1024)}  # bytes on macOS, KiB on Linux
    if torch.device(device).type == "cuda":
        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


class NonFiniteLossError(RuntimeError):
    pass


def _all_true(flag: bool, device) -> bool:
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


class Trainer:
    def __init__(self, cfg):
        self.cfg = cfg
        check_paths(cfg)
        self.rank, self.world, local_rank = init_distributed()
        seed_everything(cfg.seed)  # same initial student (w/eta projections) on every rank and run
        self.device = device_for(local_rank)
        tc = cfg.train
        self.dtype = torch.bfloat16 if tc.precision == "bf16" else torch.float32
        self.out = Path(cfg.output_dir)
        # before any model is built: a checkpoint of another config is refused at once, and on another number of
        # ranks train.grad_accum keeps the checkpoint's global batch
        self.resume_from = resume.plan(cfg, self.out, self.rank, self.world)
        self.bb = build_backbone(cfg.model, tc.gradient_checkpointing, self.device, self.dtype)
        ctx = RunContext(self.rank, self.world, self.device, self.dtype, cfg.seed)
        self.objective = build_objective(cfg, self.bb, ctx)
        compile_networks(self.objective, self.bb, tc.compile)
        self.objective.module.to(self.device)
        self.engine, self.optimizer, self.ds_config = initialize(
            self.objective.module, tc, OmegaConf.to_container(cfg.deepspeed), self.world
        )
        self.data = DataFeed(cfg, self.rank, self.world)
        self.logger = MetricLogger(self.out, enabled=self.rank == 0)
        self.preemption = Preemption(self.rank, self.world, self.device)
        self.validate = (
            Validator(cfg, self.bb, self.logger, self.out, self.rank)
            if self.objective.trains_student
            else None
        )
        self.step = 0
        self.micro = 0  # global micro-batches consumed (the data position)
        self.skipped = 0
        self._resume()

    @property
    def ema(self):
        return self.objective.ema

    # ---- state ---------------------------------------------------------------------------
    @property
    def ckpt_dir(self):
        return self.out / "checkpoints"

    def _resume(self):
        st = self.resume_from
        if st is None:
            return
        # per-rank RNG states belong to the ranks that wrote them: restored on the same number of ranks only
        # (every draw of a step is keyed by its global sample positions, not by these states)
        ckpt.load(self.engine, self.ckpt_dir, self.ema, state=st, restore_rng=st["same_world"])
        self.step, self.micro, self.skipped = st["step"], st["micro"], st.get("skipped", 0)
        if self.rank == 0:
            log.info(
                "resumed from %s (step %d, written by %d ranks)",
                self.ckpt_dir / st["tag"],
                self.step,
                st["world_size"],
            )
            if not st["same_world"] and self.cfg.data.kind != "toy":
                log.warning(
                    "a shard stream is split over the ranks: on %d ranks it goes on at the saved global sample "
                    "count, but with other clips than an uninterrupted %d-rank run would read",
                    self.world,
                    self.world,
                )

    def save_checkpoint(self):
        mb = int(self.cfg.train.micro_batch_size)
        state = {
            "step": self.step,
            "micro": self.micro,
            "samples": self.micro * mb * self.world,  # the data position: global sample count
            "skipped": self.skipped,
            "world_size": self.world,
            "global_batch": resume.global_batch(self.cfg, self.world),
            "identity": resume.identity(self.cfg, self.world),
        }
        return ckpt.save(
            self.engine,
            self.ckpt_dir,
            self.step,
            state,
            self.ema,
            self.cfg.train.keep_checkpoints,
            config_yaml=OmegaConf.to_yaml(self.cfg),
        )

    # ---- one micro-batch -----------------------------------------------------------------
    def micro_loss(self, batch):
        return self.objective.loss(self.engine, batch)

    def _nonfinite(self):
        """Count a non-finite loss (the step is skipped); abort past ``train.max_nan_skips``."""
        self.skipped += 1
        self.logger.log(self.step, {"skipped_nonfinite": self.skipped, "event": "nonfinite_loss"})
        if self.skipped > self.cfg.train.max_nan_skips:
            latest = ckpt.latest_tag(self.ckpt_dir) if self.ckpt_dir.exists() else None
            raise NonFiniteLossError(
                f"{self.skipped} non-finite losses (limit train.max_nan_skips={self.cfg.train.max_nan_skips}); "
                f"last good checkpoint: {self.ckpt_dir / latest if latest else 'none'}"
            )

    # ---- loop ----------------------------------------------------------------------------
    def train(self):
        tc = self.cfg.train
        self.preemption.install()
        bar = None
        if self.rank == 0 and tc.progress:
            bar = tqdm(
                total=tc.max_steps, initial=self.step, desc=self.cfg.experiment_name, dynamic_ncols=True
            )
        t_last, logs_acc = time.time(), {}
        while self.step < tc.max_steps:
            with self.preemption.running():  # a first TERM / INT in here stops after the step
                batch = self.data.batch(self.micro)
                self.micro += 1
                loss, logs = self.micro_loss(batch)
                if not _all_true(bool(torch.isfinite(loss).item()), self.device):
                    self._nonfinite()
                    continue
                boundary = self.engine.is_gradient_accumulation_boundary()
                self.engine.backward(loss)
                own_norm = (
                    self._grad_norm() if boundary and self.engine.get_global_grad_norm() is None else None
                )
                self.engine.step()
                for k, v in logs.items():
                    logs_acc[k] = logs_acc.get(k, 0.0) + float(v) / tc.grad_accum
                if not boundary:
                    continue
                self.step += 1
                if self.ema is not None:
                    self.ema.update(self.engine.module)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.4f}")
                if self.step % tc.log_every == 0 or self.step == tc.max_steps:
                    self._log(loss, logs_acc, own_norm, t_last)
                    t_last = time.time()
                logs_acc = {}
                if tc.eval_every and self.step % tc.eval_every == 0 and self.validate is not None:
                    self.validate(self.step, self.student_for_inference())
                saved = (tc.ckpt_every and self.step % tc.ckpt_every == 0) or self.step == tc.max_steps
                if saved:
                    self.save_checkpoint()
                stop = self.preemption.agreed()
                if stop:
                    if not saved:
                        self.save_checkpoint()  # at this very step: the resumed run logs step + 1 next
                    if self.rank == 0:
                        log.warning(
                            "signal %s: checkpoint written at step %d, exiting",
                            signal.Signals(stop).name,
                            self.step,
                        )
                    if self.step < tc.max_steps:
                        self.log_hparams(finished=False)  # before a requeue, which may not return
                        self.preemption.requeue(self.step, flush=self.logger.flush)
                    break
        if bar is not None:
            bar.close()
        if self.step >= tc.max_steps:
            if tc.export:
                self.export()
            self.log_hparams(finished=True)
        self.logger.close()
        return self.step

    def _log(self, loss, logs_acc, own_norm, t_last):
        tc = self.cfg.train
        dt = (time.time() - t_last) / max(1, tc.log_every if self.step % tc.log_every == 0 else 1)
        gn = self.engine.get_global_grad_norm()
        gn = own_norm if gn is None else gn
        self.logger.log(
            self.step,
            {
                **logs_acc,
                "loss": loss.item(),
                "lr": self.optimizer.param_groups[0]["lr"],
                "grad_norm": float(gn) if gn is not None else float("nan"),
                "step_time": dt,
                "samples_per_s": tc.micro_batch_size * tc.grad_accum * self.world / dt,
                "skipped_nonfinite": self.skipped,
                **memory_stats(self.device),
                **self.data.stats(),
            },
        )

    def log_hparams(self, finished: bool):
        """Rank 0: the run's hparams session in tensorboard (the main config values and the final metrics of
        metrics.jsonl, see :meth:`MetricLogger.log_hparams`); ``finished``: the run reached train.max_steps."""
        if self.rank == 0:
            self.logger.log_hparams(self.step, run_hparams(self.cfg, self.world), finished=finished)

    def _grad_norm(self):
        """Global grad norm before clipping (ZeRO-0 fp32, where DeepSpeed does not report it;
        gradients are already averaged over ranks at the boundary)."""
        if self.engine.zero_optimization_stage() > 0 or self.dtype != torch.float32:
            return None
        sq = [
            p.grad.detach().float().pow(2).sum()
            for p in self.engine.module.parameters()
            if p.grad is not None
        ]
        return torch.stack(sq).sum().sqrt().item() if sq else 0.0

    # ---- validation and export -----------------------------------------------------------
    def student_for_inference(self):
        """The network sampled for validation and exported: the EMA target when there is one."""
        return self.ema.model if self.ema is not None else self.engine.module

    def export(self):
        return export_run(self.cfg, self.bb, self.objective, self.engine, self.step, self.rank)
