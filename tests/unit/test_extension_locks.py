"""JIT-built torch extensions: a per-environment build dir, and build locks left by killed builds are cleared
(they made every later launch on the machine wait for ever, with no message)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from t2vturbo.train.engine import clear_stale_build_locks, extensions_dir

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="needs Linux /proc")


def test_extensions_build_in_this_environment_unless_told_otherwise(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    assert extensions_dir() == __import__("pathlib").Path(sys.prefix) / "torch_extensions"
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert extensions_dir() == tmp_path


def test_a_lock_of_a_killed_builder_is_removed_and_a_live_one_is_kept(tmp_path):
    lock = tmp_path / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir()
    # a "builder" that creates the lock the way torch's FileBaton does and holds it open
    code = (
        "import os, sys, time; fd = os.open(sys.argv[1], os.O_CREAT | os.O_EXCL); "
        "print('held', flush=True); time.sleep(600)"
    )
    p = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        assert clear_stale_build_locks(tmp_path) == [] and lock.exists()  # a live build: kept
        p.send_signal(signal.SIGKILL)  # killed mid-build: the file stays, nobody holds it
        p.wait(timeout=30)
        t0 = time.time()
        assert lock.exists()
        assert clear_stale_build_locks(tmp_path) == [lock] and not lock.exists()
        assert time.time() - t0 < 30
    finally:
        p.kill()
