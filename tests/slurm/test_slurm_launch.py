"""Cluster scale on a real one-node Slurm (munged + slurmctld + slurmd started in a temp dir, see
cluster.py and ARCHITECTURE.md §8): `make distill LAUNCHER=slurm` with 2 tasks, USR1 preemption
with checkpoint + requeue + resume, a submitit multirun collected by `t2vturbo.collect`, argument
quoting, and a Slurm array running the toy-world shard writer. Skips when Slurm is not installed."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cluster import Cluster, job_info, skip_reason
from conftest import REPO, TINY

pytestmark = pytest.mark.slurm

PROMPT = 'a "red" circle moving left'
PROMPTS_OVERRIDE = f"data.validation_prompts=['{PROMPT}']"


@pytest.fixture(scope="session")
def slurm_env(tmp_path_factory):
    """Environment (SLURM_CONF, ...) of a running one-node cluster; stops it at the end."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    c = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        env = c.start()
        env.update(
            OMP_NUM_THREADS="1",
            PYTHONUNBUFFERED="1",
            T2V_PYTHON=sys.executable,
            T2V_POLL_S="1",
            # the report at the end of each distill job, small (its defaults take ~1 min on a tiny student)
            T2V_REPORT_ARGS="--num-prompts 2 --samples-per-prompt 1 --reference-steps 2 "
            "--guidance-response-prompts 2",
        )
        env["T2V_TEST_SLURM_ROOT"] = str(c.root)
        yield env
    finally:
        c.stop()


def make(env, *args, timeout=600):
    r = subprocess.run(
        ["make", "-o", "setup", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    return r


def make_distill(env, overrides, *extra, timeout=600):
    """`make distill LAUNCHER=slurm EXPERIMENT=toy` with 2 CPU tasks; ARGS is a shell-quoted command line."""
    return make(
        env,
        "distill",
        "LAUNCHER=slurm",
        "EXPERIMENT=toy",
        "GPUS=0",
        "TASKS_PER_NODE=2",
        "CPUS_PER_TASK=1",
        "TIME=00:30:00",
        "ARGS=" + " ".join(shlex.quote(o) for o in overrides),
        *extra,
        timeout=timeout,
    )


def job_id(make_out: str) -> str:
    m = re.search(r"submitted job (\d+)", make_out)
    assert m, make_out
    return m.group(1)


def metrics(out: Path) -> list[dict]:
    f = out / "metrics.jsonl"
    return [json.loads(ln) for ln in f.read_text().splitlines()] if f.exists() else []


def base(teacher, out, steps):
    # guidance=cfg: these tests are about launching; experiment=toy's motion guidance is tested elsewhere
    return TINY + [
        f"model.path={teacher}",
        f"output_dir={out}",
        f"train.max_steps={steps}",
        "data=toy",
        "guidance=cfg",
        "train.micro_batch_size=2",
        "objective.target=student",
    ]


@pytest.fixture(scope="module")
def two_task_run(slurm_env, tiny_teacher_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("slurm_run") / "dir with space"
    t0 = time.time()
    r = make_distill(slurm_env, [*base(tiny_teacher_dir, out, 4), PROMPTS_OVERRIDE], "WAIT=1")
    print(f"2-task slurm run: {time.time() - t0:.1f}s")
    return out, r


def test_make_distill_slurm_two_tasks(two_task_run):
    out, r = two_task_run
    jid = job_id(r.stdout)
    log = out / "slurm" / f"t2vturbo-toy-{jid}.out"
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{log.read_text() if log.exists() else ''}"
    assert f"log:    {log}" in r.stdout
    text = log.read_text()
    assert "2 task(s)" in text and "srun exited with 0" in text
    state = json.loads((out / "checkpoints" / "step-00000004" / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["world_size"] == 2
    assert [m["step"] for m in metrics(out)] == [1, 2, 3, 4]
    assert all(m["samples_per_s"] > 0 for m in metrics(out))
    from t2vturbo.sample import load_student

    _, _, meta = load_student(out)
    assert meta["step"] == 4
    # the job ends with the run's report (t2vturbo.eval.report) of the student it exported
    assert (
        f"report of {out}" in text and "ToyBench student steps=4" in text and "report exited with 0" in text
    )
    assert json.loads((out / "report.json").read_text())["train_step"] == 4


def test_overrides_with_spaces_and_quotes_survive(two_task_run):
    out, r = two_task_run
    assert r.returncode == 0, r.stdout + r.stderr
    import yaml

    overrides = yaml.safe_load((out / ".hydra" / "overrides.yaml").read_text())
    assert PROMPTS_OVERRIDE in overrides and f"output_dir={out}" in overrides
    cfg = yaml.safe_load((out / ".hydra" / "config.yaml").read_text())
    assert cfg["data"]["validation_prompts"] == [PROMPT] and cfg["output_dir"] == str(out)
    meta = json.loads((out / "export" / "t2vturbo_student.json").read_text())
    assert meta["config"]["data"]["validation_prompts"] == [PROMPT]


def test_usr1_checkpoints_requeues_and_resumes(slurm_env, tiny_teacher_dir, tmp_path):
    out, steps = tmp_path / "preempted", 30
    t0 = time.time()
    r = make_distill(slurm_env, [*base(tiny_teacher_dir, out, steps), "train.ckpt_every=0"])
    assert r.returncode == 0, r.stdout + r.stderr
    jid = job_id(r.stdout)
    log = out / "slurm" / f"t2vturbo-toy-{jid}.out"

    def wait_for(cond, what, timeout=300):
        t = time.time()
        while time.time() - t < timeout:
            info = job_info(slurm_env, jid)
            if cond(info):
                return info
            if info.get("JobState") in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"):
                break
            time.sleep(0.2)
        raise AssertionError(
            f"{what}: job {job_info(slurm_env, jid)}\n{log.read_text() if log.exists() else ''}\n"
            f"{Cluster(slurm_env['T2V_TEST_SLURM_ROOT']).logs(tail=6000)}"
        )

    # preempt once it trains (metrics written), like Slurm does 120 s before the time limit
    wait_for(lambda i: len(metrics(out)) >= 2, "training did not start")
    r = make(slurm_env, "distill-cancel", f"JOB={jid}", "SIGNAL=USR1")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda i: i.get("Restarts") == "1" and i.get("JobState") == "PENDING", "not requeued")
    stopped = (out / "checkpoints" / "latest").read_text().strip()
    stop_step = json.loads((out / "checkpoints" / stopped / "trainer_state.json").read_text())["step"]
    assert 2 <= stop_step < steps and not (out / "export").exists()
    # Slurm holds a requeued job until the old job's credential has expired (BeginTime: cred_expire + 1 s,
    # 2 min by default, 30 s in the test cluster): wait for that as a real preemption would (starting
    # it earlier by hand with `scontrol update StartTime=now` raced the old allocation's teardown).
    info = wait_for(lambda i: i.get("JobState") == "COMPLETED", "did not complete after requeue", timeout=480)
    print(f"USR1 at step {stop_step}, requeue, resume, done: {time.time() - t0:.1f}s")
    assert info["Restarts"] == "1"
    text = log.read_text()
    assert "batch shell got SIGUSR1" in text and "(restart 1)" in text
    assert f"checkpoint written at step {stop_step}" in text and "requeued Slurm job" in text
    assert f"resumed from {out / 'checkpoints' / stopped} (step {stop_step}, written by " in text
    state = json.loads((out / "checkpoints" / f"step-{steps:08d}" / "trainer_state.json").read_text())
    assert state["step"] == steps and state["world_size"] == 2
    logged = [m["step"] for m in metrics(out)]
    assert logged == list(range(1, steps + 1)), logged  # each step once: nothing redone after resume
    from t2vturbo.sample import load_student

    assert load_student(out)[2]["step"] == steps


def test_submitit_multirun_and_collect(slurm_env, tiny_teacher_dir, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    t0 = time.time()
    cmd = [
        sys.executable,
        "-m",
        "t2vturbo.distill",
        "-m",
        *TINY,
        f"model.path={tiny_teacher_dir}",
        "data=toy",
        "train.max_steps=2",
        "train.micro_batch_size=2",
        "reward=toy",
        "reward.weights.toy_color=0,0.5",
        "hydra/launcher=slurm",
        f"hydra.sweep.dir={sweep}",
        "hydra.launcher.timeout_min=20",
    ]
    env = dict(slurm_env, T2V_GPUS_PER_NODE="0", T2V_TASKS_PER_NODE="1", T2V_CPUS_PER_TASK="1")
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sweep.glob(".submitit/*/*.out"))
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}\n{logs}"
    print(f"2-job submitit multirun: {time.time() - t0:.1f}s")
    for num, w in (("0", "0"), ("1", "0.5")):
        run = sweep / num
        assert f"reward.weights.toy_color={w}" in (run / ".hydra" / "overrides.yaml").read_text()
        assert [m["step"] for m in metrics(run) if "loss" in m] == [1, 2]
        assert (run / "export" / "student.safetensors").exists()
    r = subprocess.run(
        [sys.executable, "-m", "t2vturbo.collect", str(sweep), "--markdown"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("| run | reward.weights.toy_color | status | step | loss"), r.stdout
    assert lines[2].startswith("| 0 | 0 | done | 2 |") and lines[3].startswith("| 1 | 0.5 | done | 2 |"), (
        r.stdout
    )
    r = subprocess.run(
        [sys.executable, "-m", "t2vturbo.collect", str(sweep), "--csv", str(tmp_path / "t.csv")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and len((tmp_path / "t.csv").read_text().splitlines()) == 3


def test_array_job_writes_toy_shards(slurm_env, tmp_path):
    out = tmp_path / "toy shards"
    logs = tmp_path / "logs"
    logs.mkdir()
    r = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--wait",
            "--array=0-1",
            "--cpus-per-task=1",
            f"--output={logs}/%x-%A_%a.out",
            f"--chdir={REPO}",
            str(REPO / "launch" / "array.sbatch"),
            sys.executable,
            "-m",
            "data_recipes.toy_world",
            "--out",
            f"{out}/part-{{i}}",
            "--num-clips",
            "2",
            "--shard-size",
            "1",
            "--frames",
            "4",
            "--size",
            "16",
            "--seed",
            "{i}",
        ],
        env=slurm_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = "\n".join(p.read_text() for p in logs.glob("*.out"))
    assert r.returncode == 0, r.stdout + r.stderr + text
    from t2vturbo.data.shards import expand_shard_urls

    for i in (0, 1):
        idx = json.loads((out / f"part-{i}" / "index.json").read_text())
        assert idx["seed"] == i and idx["count"] == 2
    urls = expand_shard_urls(f"{out}/part-{{0..1}}/toy-{{000000..000001}}.tar")
    assert len(urls) == 4 and all(os.path.exists(u) for u in urls)
