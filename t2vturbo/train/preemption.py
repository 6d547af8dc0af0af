"""Preemption: signals, agreement across ranks, and requeueing under Slurm.

USR1 / USR2 (a preemption or time-limit notice: Slurm's ``--signal``, submitit's USR2) and TERM ask the
run to finish the current step, write a checkpoint and stop; after USR1/USR2 under Slurm the job is
requeued (``scontrol requeue``) and resumes from that checkpoint. A handler installed earlier
(``t2vturbo.distill`` puts one in place at start-up) hands over a signal that arrived before the loop.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time

import torch
import torch.distributed as dist

log = logging.getLogger("t2vturbo")

SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)


class Preemption:
    """``install()`` once before the loop; ``agreed()`` after every optimiser step returns the signal all
    ranks stop on (0: go on); ``requeue()`` after the stop checkpoint."""

    def __init__(self, rank: int, world: int, device):
        self.rank, self.world, self.device = rank, world, device
        self.signal: int | None = None
        self.slurm_job: str | None = None

    def install(self) -> None:
        def handler(signum, frame):
            if self.signal is None or signum == signal.SIGTERM:
                self.signal = signum

        for s in SIGNALS:
            early = getattr(signal.getsignal(s), "received", None)
            if early is not None and self.signal is None:
                self.signal = early
            try:
                signal.signal(s, handler)
            except ValueError:  # not the main thread
                pass
        self.slurm_job = os.environ.get("SLURM_JOB_ID") if os.environ.get("T2V_REQUEUE", "1") != "0" else None

    def agreed(self) -> int:
        """The signal every rank stops on after this step (0: none). A signal reaches the tasks at slightly
        different times, so they agree on it: the max over ranks (TERM wins over USR1/USR2)."""
        if self.signal is None and self.world == 1:
            return 0
        stop = torch.tensor([float(self.signal or 0)], device=self.device)
        if self.world > 1:
            dist.all_reduce(stop, op=dist.ReduceOp.MAX)
        stop = int(stop.item())
        if stop:
            self.signal = stop
        return stop

    def requeue(self, step: int, flush=None) -> None:
        """After USR1/USR2 under Slurm: ``scontrol requeue`` the job (rank 0), then wait for Slurm to end
        this run, so that nothing after the checkpoint (export, a launcher's "job done" file) runs in a
        requeued job. Nothing happens after TERM or outside Slurm."""
        if self.signal in (None, signal.SIGTERM) or not self.slurm_job:
            return
        requeued = torch.zeros(1, device=self.device)
        if self.rank == 0:
            if flush is not None:
                flush()
            try:
                r = subprocess.run(
                    ["scontrol", "requeue", self.slurm_job], capture_output=True, text=True, timeout=120
                )
                err = "" if r.returncode == 0 else (r.stderr or r.stdout).strip()
            except (OSError, subprocess.TimeoutExpired) as e:
                err = str(e)
            if not err:
                log.warning("requeued Slurm job %s: it resumes from step %d", self.slurm_job, step)
                requeued[0] = 1
            else:
                log.error(
                    "scontrol requeue %s failed (%s): resubmit to resume from step %d",
                    self.slurm_job,
                    err,
                    step,
                )
        if self.world > 1:
            dist.all_reduce(requeued, op=dist.ReduceOp.MAX)
        if requeued.item() > 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # Slurm now ends this run (TERM, then KILL)
            time.sleep(float(os.environ.get("T2V_REQUEUE_WAIT_S", "300")))
