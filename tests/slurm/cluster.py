"""A throw-away one-node Slurm cluster (munged + slurmctld + slurmd) in a temp dir.

ARCHITECTURE.md §8: slurm.conf in a temp dir (high ports, state and spool in the temp dir,
proctrack/linuxproc, task/none, select/cons_tres, one node of $(nproc) CPUs, one partition), a
private munge key and socket, daemons started in the foreground and stopped by PID. Installs
nothing: :func:`missing_binaries` says what is absent and the fixture skips.

Usable by hand too::

    python tests/slurm/cluster.py /tmp/slurm-here   # prints `export SLURM_CONF=...`, Ctrl-C stops it
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "sinfo", "squeue", "scancel")
PARTITION = "debug"


def missing_binaries() -> list[str]:
    extra = ["/usr/sbin"]  # daemons live in sbin, which a non-login PATH may lack
    path = os.pathsep.join([os.environ.get("PATH", ""), *extra])
    return [b for b in BINARIES if shutil.which(b, path=path) is None]


def _which(b: str) -> str:
    return shutil.which(b, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"])) or b


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def slurm_conf(
    d: Path,
    host: str,
    cpus: int,
    ctld_port: int,
    slurmd_port: int,
    user: str,
    first_job_id: int = 1,
    munge_sock: str | None = None,
) -> str:
    munge_sock = munge_sock or f"{d}/munge/munge.socket"
    # A random first job id: MASTER_PORT is derived from the job id, so two test clusters on one
    # machine do not hand the same port to their first jobs.
    return f"""\
ClusterName=t2vtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_sock},cred_expire=30
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
FirstJobId={first_job_id}
KillWait=30
MinJobAge=600
InactiveLimit=0
Waittime=0
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class Cluster:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.procs: dict[str, subprocess.Popen] = {}
        self.env: dict[str, str] = {}

    def start(self, timeout: float = 60.0) -> dict[str, str]:
        d = self.root
        for sub in ("munge", "state", "spool", "log"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(d / "munge", 0o700)
        self.munge_dir = d / "munge"
        if len(str(self.munge_dir / "munge.socket")) > 100:  # a unix socket path has at most 107 bytes
            import tempfile

            self.munge_dir = Path(tempfile.mkdtemp(prefix="t2v-munge-"))
        host = socket.gethostname().split(".")[0]
        cpus = os.cpu_count() or 1
        ctld_port, slurmd_port = _free_ports(2)
        user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
        conf = d / "slurm.conf"
        first = random.randrange(1000, 1_000_000)
        sock = self.munge_dir / "munge.socket"
        conf.write_text(slurm_conf(d, host, cpus, ctld_port, slurmd_port, user, first, str(sock)))
        key = d / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        env = dict(os.environ, SLURM_CONF=str(conf))
        env["PATH"] = os.pathsep.join([env.get("PATH", ""), "/usr/sbin"])
        self.env = env
        self._spawn(
            "munged",
            [
                _which("munged"),
                "-F",
                "--force",
                f"--socket={sock}",
                f"--key-file={key}",
                f"--log-file={d}/log/munged.log",
                f"--pid-file={d}/munge/munged.pid",
                f"--seed-file={d}/munge/munged.seed",
            ],
        )
        self._wait(lambda: sock.exists(), timeout, "munged socket")
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(conf)])
        self._wait(lambda: self._ok(["scontrol", "ping"]), timeout, "slurmctld")
        self._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(conf)])
        self._wait(self._idle, timeout, "an idle node in sinfo")
        return env

    def _spawn(self, name, argv):
        log = open(self.root / "log" / f"{name}.stdout", "ab")
        self.procs[name] = subprocess.Popen(
            argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def _ok(self, argv) -> bool:
        r = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=30)
        return r.returncode == 0 and "DOWN" not in r.stdout

    def _idle(self) -> bool:
        r = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], env=self.env, capture_output=True, text=True, timeout=30
        )
        return r.returncode == 0 and r.stdout.strip() == "idle"

    def _wait(self, cond, timeout, what):
        t0 = time.time()
        while time.time() - t0 < timeout:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {p.returncode} while waiting for {what}:\n{self.logs()}"
                    )
            if cond():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {timeout}s waiting for {what}:\n{self.logs()}")

    def logs(self, tail: int = 3000) -> str:
        out = []
        for f in sorted((self.root / "log").glob("*")):
            out.append(f"--- {f.name}\n{f.read_text(errors='replace')[-tail:]}")
        return "\n".join(out)

    def stop(self):
        if self.env and self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            # cancel what is left (a failed test's job) so that no job processes outlive the cluster
            subprocess.run(
                ["scancel", "--full", "--partition", PARTITION], env=self.env, capture_output=True, timeout=30
            )
            t0 = time.time()
            while time.time() - t0 < 40:
                r = subprocess.run(
                    ["squeue", "-h", "-t", "RUNNING,COMPLETING"],
                    env=self.env,
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                if r.returncode != 0 or not r.stdout.strip():
                    break
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        md = getattr(self, "munge_dir", None)
        if md is not None and self.root not in md.parents:
            shutil.rmtree(md, ignore_errors=True)


def skip_reason() -> str | None:
    missing = missing_binaries()
    if missing:
        return (
            f"Slurm test cluster needs {', '.join(missing)}: apt-get install -y slurm-wlm munge "
            "(.ci/run does this; as root)"
        )
    if os.geteuid() != 0:
        return "Slurm test cluster needs root (slurmd starts job steps as the submitting user)"
    return None


def job_info(env: dict, job_id: str) -> dict[str, str]:
    """``scontrol show job -o`` as a dict (JobState, Restarts, ExitCode, ...); {} once it is gone."""
    r = subprocess.run(
        ["scontrol", "show", "job", "-o", str(job_id)], env=env, capture_output=True, text=True, timeout=60
    )
    if r.returncode != 0:
        return {}
    out = {}
    for tok in r.stdout.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            out.setdefault(k, v)
    return out


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/t2v-slurm")
    reason = skip_reason()
    if reason:
        sys.exit(reason)
    c = Cluster(root)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        c.start()
        print(f"export SLURM_CONF={root / 'slurm.conf'}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        c.stop()
