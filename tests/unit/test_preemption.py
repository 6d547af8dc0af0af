"""Signals end the process in bounded time (issue 20): a TERM / INT while no training step is running, or a
second one, exits at once with status 128 + signum; a first one inside a step is recorded and the loop
stops after the step; USR1 / USR2 never exit at once.

Each test drives a child process that installs the handlers and then reads commands from stdin (a
blocking read in the main thread: "outside a step" unless it was told to enter one)."""

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import REPO

from t2vturbo.train import preemption

CHILD = r"""
import os, signal, sys, time
mode = sys.argv[1]
if mode == "early":
    from t2vturbo.distill import install_early_signal_handlers
    install_early_signal_handlers()
from t2vturbo.train.preemption import Preemption
p = Preemption(0, 1, "cpu")
if mode == "trainer":
    p.install()
step = None

def out(*a):
    print(*a, flush=True)

out("ready")
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "install":
        p.install()
        out("installed")
    elif cmd[0] == "enter":
        step = p.running()
        step.__enter__()
        out("entered")
    elif cmd[0] == "leave":
        step.__exit__(None, None, None)
        out("left")
    elif cmd[0] == "state":
        out("signal", int(p.signal or 0))
    elif cmd[0] == "agreed":
        out("agreed", p.agreed())
    elif cmd[0] == "requeue":
        p.requeue(7)
        out("requeue returned")
    elif cmd[0] == "block":  # outside a step, blocked in C++ (as in a rendezvous): no Python handler runs
        from datetime import timedelta
        import torch.distributed as dist
        store = dist.TCPStore("127.0.0.1", 0, 1, True, timeout=timedelta(seconds=60))
        out("blocking")
        store.get("never-set")
        out("unblocked")
    elif cmd[0] == "fork":  # a forked child (a DataLoader worker) that gets TERM itself
        pid = os.fork()
        if pid == 0:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)
            os._exit(0)
        out("forked child", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Child:
    def __init__(self, mode: str, env=None):
        self.p = subprocess.Popen(
            [sys.executable, "-c", CHILD, mode],
            cwd=REPO,
            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # a shell starts background jobs with SIGINT ignored, and an ignored signal stays ignored across exec:
            # the child gets the default disposition, whoever launched the tests
            preexec_fn=_default_sigint,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.expect("ready")

    def _pump(self):
        for line in self.p.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def expect(self, want: str, timeout: float = 60) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"child said nothing for {timeout}s (wanted {want!r})") from None
        if line is None:
            self.p.wait()
            raise AssertionError(
                f"child exited {self.p.returncode} (wanted {want!r}): {self.p.stderr.read()}"
            )
        assert line.startswith(want), (line, want)
        return line

    def send(self, cmd: str, want: str) -> str:
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self.expect(want)

    def kill(self, sig):
        self.p.send_signal(sig)

    def signal_becomes(self, value: int, timeout: float = 5):
        t0 = time.time()
        while True:
            line = self.send("state", "signal")
            if line == f"signal {value}":
                return
            assert time.time() - t0 < timeout, line
            time.sleep(0.05)

    def exits(self, timeout: float = 2.0) -> tuple[int, float, str]:
        """The exit status, the seconds it took, and stderr."""
        t0 = time.time()
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {timeout}s after the signal") from None
        took = time.time() - t0
        return rc, took, self.p.stderr.read()

    def alive_after(self, seconds: float = 0.5) -> bool:
        time.sleep(seconds)
        return self.p.poll() is None

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


@pytest.fixture
def child():
    made = []

    def make(mode: str, env=None):
        made.append(Child(mode, env))
        return made[-1]

    yield make
    for c in made:
        c.close()


def _assert_exit_now(rc, stderr, sig, why):
    assert rc == 128 + sig, (rc, stderr)
    name = signal.Signals(sig).name
    assert f"{name} received {why}: exiting now; the last checkpoint is intact" in stderr, stderr
    assert "Traceback" not in stderr, stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("mode", ["trainer", "early"])
def test_a_stop_signal_outside_a_step_exits_at_once(child, mode, sig):
    """``trainer``: after ``Preemption.install()``, between/after steps (validation, export); ``early``:
    the handlers ``t2vturbo.distill`` installs first thing, during start-up."""
    c = child(mode)
    c.kill(sig)
    rc, took, err = c.exits()
    _assert_exit_now(rc, err, sig, "while no training step is running")
    assert took < 2.0


def test_a_stop_signal_exits_at_once_while_the_main_thread_is_blocked_in_cxx(child):
    """A rendezvous or collective in C++ holds off Python signal handlers until its timeout (60 s here, 30
    min for a process group): the exit must not wait for it."""
    c = child("trainer")
    c.send("block", "blocking")
    time.sleep(0.2)
    c.kill(signal.SIGTERM)
    rc, _, err = c.exits(timeout=5.0)
    _assert_exit_now(rc, err, signal.SIGTERM, "while no training step is running")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_first_stop_signal_in_a_step_is_recorded_and_a_second_exits_at_once(child, sig):
    c = child("trainer", env={"SLURM_JOB_ID": "4242"})
    c.send("enter", "entered")
    c.kill(sig)
    c.signal_becomes(int(sig))
    assert c.alive_after(0.3)
    # the loop stops on it after the step, and does not requeue after TERM / INT
    assert c.send("agreed", "agreed") == f"agreed {int(sig)}"
    assert c.send("requeue", "requeue") == "requeue returned"
    time.sleep(preemption.REPEAT_S)
    c.kill(signal.SIGTERM)
    rc, took, err = c.exits()
    _assert_exit_now(rc, err, signal.SIGTERM, "a second time")
    assert f"{signal.Signals(sig).name} received: stopping after this step with a checkpoint" in err


def test_a_stop_signal_delivered_twice_at_once_is_one_signal(child):
    """Slurm signals the tasks and the batch shell forwards its TERM through srun as well (torchrun turns
    a Ctrl-C into TERM for its workers): a repeat within preemption.REPEAT_S is not a second signal."""
    c = child("trainer")
    c.send("enter", "entered")
    c.kill(signal.SIGTERM)
    c.kill(signal.SIGTERM)
    c.signal_becomes(int(signal.SIGTERM))
    c.kill(signal.SIGINT)
    assert c.alive_after(0.5)
    c.signal_becomes(int(signal.SIGTERM))
    # after the step (outside it) the next one exits at once
    c.send("leave", "left")
    time.sleep(preemption.REPEAT_S)
    c.kill(signal.SIGINT)
    rc, _, err = c.exits()
    _assert_exit_now(rc, err, signal.SIGINT, "a second time")


def test_usr1_usr2_never_exit_at_once(child):
    c = child("trainer")
    c.kill(signal.SIGUSR1)  # outside a step
    c.signal_becomes(int(signal.SIGUSR1))
    assert c.alive_after(0.3)
    c.send("enter", "entered")
    c.kill(signal.SIGUSR2)  # inside a step: the first notice stays
    c.kill(signal.SIGUSR1)
    assert c.alive_after(0.5)
    c.signal_becomes(int(signal.SIGUSR1))
    c.kill(signal.SIGTERM)  # a first TERM in the step wins over the notice, and is recorded
    c.signal_becomes(int(signal.SIGTERM))
    assert c.alive_after(0.3)


def test_a_notice_during_start_up_is_handed_to_the_trainer_and_term_still_exits(child):
    c = child("early")
    c.kill(signal.SIGUSR1)
    assert c.alive_after(0.5)
    c.send("install", "installed")  # the trainer's Preemption.install(), before its loop
    c.signal_becomes(int(signal.SIGUSR1))
    c.kill(signal.SIGTERM)  # after install() and outside a step
    rc, _, err = c.exits()
    _assert_exit_now(rc, err, signal.SIGTERM, "while no training step is running")


def test_a_forked_child_neither_feeds_the_parent_nor_keeps_its_handlers(child):
    """A DataLoader worker (a fork) that gets TERM dies of it, and the trainer neither records nor acts
    on it (the signal module's wakeup pipe the gate watches is shared with the fork)."""
    c = child("trainer")
    assert c.send("fork", "forked child") == f"forked child {-signal.SIGTERM}"
    assert c.alive_after(0.5)
    c.signal_becomes(0)
