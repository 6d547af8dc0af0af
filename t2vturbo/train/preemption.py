"""Preemption: signals, agreement across ranks, and requeueing under Slurm.

What a signal does depends on whether a training step is running (inside :meth:`Preemption.running`,
which the trainer wraps around each iteration of its loop: batch, forward/backward, optimiser step and
the checkpoint written at that step):

* TERM / INT (``scancel``, a time limit, Ctrl-C, a launcher stopping the run) while a step is running:
  the run finishes the step, writes a checkpoint at it and stops (no requeue).
* TERM / INT while no step is running (start-up: model build, DeepSpeed init, checkpoint load; the
  validation and export after the loop), or a second TERM / INT: the process exits at once with status
  128 + signum (``os._exit`` after one line on stderr and a flush of stdout/stderr; a ``SystemExit``
  raised inside a collective may never unwind). Checkpoints are written into ``.tmp-step-N`` and renamed,
  so the last complete one is intact whenever this happens.
* USR1 / USR2 (a preemption or time-limit notice: Slurm's ``--signal``, submitit's USR2): the run finishes
  the current step (the first one, when the notice came during start-up), writes a checkpoint and stops;
  under Slurm the job is then requeued (``scontrol requeue``) and resumes from that checkpoint. These
  never end the process at once.

A TERM / INT that comes within :data:`REPEAT_S` of the first is taken for the same one delivered twice
(Slurm signals the tasks and ``launch/distill.sbatch`` forwards the batch shell's TERM through ``srun``
too; torchrun passes a Ctrl-C on to its workers as TERM): it is ignored, it is not a second signal.

One process-wide :class:`SignalGate` handles all four. ``t2vturbo.distill`` puts it in place in its first
lines (:func:`install_signal_handlers`), so that TERM / INT exit at once during start-up and a USR1 / USR2
notice that arrives then is kept for the loop; :meth:`Preemption.install` takes it over before the loop.

A Python signal handler only runs when the main thread is back in the interpreter, which a rendezvous, a
collective or a read blocked in C++ can put off until its timeout (30 min for a process group). The gate
therefore also watches the signal module's wakeup fd (:func:`signal.set_wakeup_fd`) from a thread, which
sees every signal at once and decides there; the Python handler then only acknowledges it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger("t2vturbo")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # finish the step, checkpoint, stop; or exit at once
NOTICE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)  # finish the step, checkpoint, stop, requeue
SIGNALS = NOTICE_SIGNALS + STOP_SIGNALS

#: seconds after the first TERM / INT within which another one is the same signal delivered twice
REPEAT_S = 2.0
#: how long a Python handler waits for the watcher thread to have seen its signal before deciding itself
_HANDOFF_S = 0.5
#: how long the exit waits for its log line and the stdio flush (a full pipe must not hold it)
_FLUSH_S = 2.0


def _exit_now(signum: int, why: str) -> None:
    """One line on stderr, flush stdout/stderr (bounded), then ``os._exit(128 + signum)``."""
    name = signal.Signals(signum).name

    def say():
        log.warning("%s received %s: exiting now; the last checkpoint is intact", name, why)
        for f in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                f.flush()

    try:
        t = threading.Thread(target=say, name="t2vturbo-exit", daemon=True)
        t.start()
        t.join(_FLUSH_S)
    except Exception:  # e.g. no new thread at interpreter shutdown: exit without the line
        pass
    os._exit(128 + signum)


class SignalGate:
    """The process's handler of :data:`SIGNALS` (one instance, :data:`GATE`).

    ``received``: the signal the training loop is to stop on (None: go on); a TERM / INT replaces a
    USR1 / USR2, the first USR1 / USR2 stays. ``running()``: the context of one training step."""

    def __init__(self):
        self.received: int | None = None
        self._running = 0
        self._stop_at: float | None = None  # time.monotonic() of the TERM / INT recorded in a step
        self._lock = threading.RLock()
        self._installed: dict[int, object] = {}  # signal -> the handler it had before
        self._watching = False
        self._pipe: tuple[int, int] | None = None
        self._seen = dict.fromkeys(SIGNALS, 0)  # signals the watcher thread delivered
        self._acked = dict.fromkeys(SIGNALS, 0)  # ... and the Python handler acknowledged

    @contextlib.contextmanager
    def running(self):
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1

    def deliver(self, signum: int) -> None:
        """Act on one signal: record it for the loop, or exit at once (see the module docstring)."""
        with self._lock:
            if signum in NOTICE_SIGNALS:
                if self.received is None:
                    self.received = signum
                return
            now = time.monotonic()
            if self._stop_at is not None and now - self._stop_at < REPEAT_S:
                return  # the same TERM / INT, delivered twice
            if self._stop_at is not None:  # this process's own first one (agreed() may have set received)
                _exit_now(signum, "a second time")
            if not self._running:
                _exit_now(signum, "while no training step is running")
            self._stop_at = now
            self.received = signum
        name = signal.Signals(signum).name
        log.warning(
            "%s received: stopping after this step with a checkpoint (a second one exits at once)", name
        )

    def __call__(self, signum, frame):
        """The Python-level handler. When the watcher thread is on, it has decided already: acknowledge."""
        deadline = time.monotonic() + _HANDOFF_S
        while self._watching:
            with self._lock:
                if self._seen[signum] > self._acked[signum]:
                    self._acked[signum] = self._seen[signum]  # signals that came together run this once
                    return
            if time.monotonic() > deadline:  # no byte: the signal came before the fd was ours, or the fd
                break  # was taken over since, or the thread died
            time.sleep(0.002)
        self.deliver(signum)

    # ---- installation -------------------------------------------------------------------------
    def install(self, replace: bool) -> None:
        """Become the handler of :data:`SIGNALS` (main thread only; elsewhere nothing happens).
        ``replace=False`` (start-up) leaves a handler someone else installed in place (submitit's, say)
        and takes only signals at their default or ignored; ``replace=True`` takes them all. An ignored
        INT stays ignored (a shell's background job). A signal recorded by a handler that exposes
        ``received`` is handed over."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._watch()  # first: a signal that reaches the gate finds the fd in place
        for s in SIGNALS:
            cur = signal.getsignal(s)
            if cur is self:
                continue
            if s == signal.SIGINT and cur == signal.SIG_IGN:
                continue
            default = cur in (signal.SIG_DFL, signal.SIG_IGN, None) or cur is signal.default_int_handler
            if not replace and not default:
                continue
            early = getattr(cur, "received", None)
            if early is not None and self.received is None:
                self.received = early
            try:
                signal.signal(s, self)
            except (ValueError, OSError):
                continue
            self._installed.setdefault(s, cur)

    def _watch(self) -> None:
        """Own the wakeup fd and start the thread that reads it (once); if another fd is set, leave it
        and let the Python handler decide."""
        if self._pipe is None:
            r, w = os.pipe()
            os.set_blocking(w, False)
            self._pipe = (r, w)
            threading.Thread(target=self._read, args=(r,), name="t2vturbo-signals", daemon=True).start()
            os.register_at_fork(after_in_child=self._after_fork_child)
        try:
            old = signal.set_wakeup_fd(self._pipe[1], warn_on_full_buffer=False)
        except (ValueError, OSError):
            self._watching = False
            return
        if old not in (-1, self._pipe[1]):
            signal.set_wakeup_fd(old)
            self._watching = False
            return
        self._watching = True

    def _read(self, fd: int) -> None:
        while True:
            try:
                data = os.read(fd, 256)
            except OSError:
                return
            if not data:
                return
            for s in data:  # every signal with a Python handler writes here: only the gate's count
                if s in self._seen and signal.getsignal(s) is self:
                    with self._lock:
                        self._seen[s] += 1
                    self.deliver(s)

    def _after_fork_child(self) -> None:
        """A forked child (a DataLoader worker, say) is not the trainer: its signals must not reach the
        parent's watcher through the shared pipe, and it gets the handlers it had before the gate."""
        if self._pipe is None:
            return
        self._watching = False
        self._lock = threading.RLock()  # the parent's watcher thread may have held it
        with contextlib.suppress(ValueError, OSError):
            old = signal.set_wakeup_fd(-1)
            if old not in (-1, self._pipe[1]):
                signal.set_wakeup_fd(old)
        for fd in self._pipe:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._pipe = None
        for s, old in self._installed.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                if signal.getsignal(s) is self:
                    signal.signal(s, signal.SIG_DFL if old is None else old)
        self._installed = {}
        self._running, self._stop_at, self.received = 0, None, None
        self._seen, self._acked = dict.fromkeys(SIGNALS, 0), dict.fromkeys(SIGNALS, 0)


GATE = SignalGate()


def install_signal_handlers(replace: bool = False) -> SignalGate:
    """Put the process's :class:`SignalGate` in place (``t2vturbo.distill`` calls this first thing)."""
    GATE.install(replace)
    return GATE


# A signal's precedence when the ranks agree on one (the max): TERM > INT > USR2 > USR1.
_PRECEDENCE = {signal.SIGUSR1: 1, signal.SIGUSR2: 2, signal.SIGINT: 3, signal.SIGTERM: 4}
_BY_PRECEDENCE = {v: k for k, v in _PRECEDENCE.items()}


class Preemption:
    """``install()`` once before the loop; ``with running():`` around each iteration of the loop (batch,
    forward/backward, optimiser step, the checkpoint of that step): a TERM / INT inside it is recorded and
    the loop stops after the step, one outside it (start-up, between the loop and the end: validation,
    export) or a second one exits at once (module docstring); ``agreed()`` after every optimiser step
    returns the signal all ranks stop on (0: go on); ``requeue()`` after the stop checkpoint."""

    def __init__(self, rank: int, world: int, device):
        self.rank, self.world, self.device = rank, world, device
        self.gate = GATE
        self.slurm_job: str | None = None

    @property
    def signal(self) -> int | None:
        return self.gate.received

    @signal.setter
    def signal(self, value: int | None) -> None:
        self.gate.received = value

    def install(self) -> None:
        self.gate.install(replace=True)
        self.slurm_job = os.environ.get("SLURM_JOB_ID") if os.environ.get("T2V_REQUEUE", "1") != "0" else None

    def running(self):
        """Context manager: a training step is running (a first TERM / INT then waits for its end)."""
        return self.gate.running()

    def agreed(self) -> int:
        """The signal every rank stops on after this step (0: none). A signal reaches the tasks at slightly
        different times, so they agree on it: the one of highest precedence over the ranks (TERM and INT
        win over USR1/USR2)."""
        if self.signal is None and self.world == 1:
            return 0
        import torch
        import torch.distributed as dist

        stop = torch.tensor([float(_PRECEDENCE.get(self.signal, 0))], device=self.device)
        if self.world > 1:
            dist.all_reduce(stop, op=dist.ReduceOp.MAX)
        stop = int(_BY_PRECEDENCE.get(int(stop.item()), 0))
        if stop:
            self.signal = stop
        return stop

    def requeue(self, step: int, flush=None) -> None:
        """After USR1/USR2 under Slurm: ``scontrol requeue`` the job (rank 0), then wait for Slurm to end
        this run, so that nothing after the checkpoint (export, a launcher's "job done" file) runs in a
        requeued job. Nothing happens after TERM / INT or outside Slurm."""
        if self.signal in (None, *STOP_SIGNALS) or not self.slurm_job:
            return
        import torch
        import torch.distributed as dist

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
