"""No Slurm needed: `t2vturbo.collect` (dedupe of re-logged steps, sweep table) and the trainer's
stop signal agreed by all ranks (a signal that reaches one rank only stops both after the same step)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from conftest import TINY, launch_distill

from t2vturbo import collect


def _write_run(d: Path, steps, overrides, done=True):
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    with open(d / "metrics.jsonl", "w") as f:
        for s, loss in steps:
            f.write(json.dumps({"step": s, "time": 0.0, "loss": loss, "lr": 1e-4}) + "\n")
        f.write('{"step": 9, "tor')  # a torn last line (killed mid-write)
    if done:
        (d / "export").mkdir()


def test_collect_dedupes_and_tabulates(tmp_path):
    # run 0 was killed hard after step 3 (checkpoint at 2): steps 3 was redone by the resumed run
    _write_run(
        tmp_path / "0",
        [(1, 1.0), (2, 0.9), (3, 0.8), (3, 0.7), (4, 0.6)],
        ["experiment=toy", "reward.weights.toy_color=0"],
    )
    _write_run(
        tmp_path / "1", [(1, 1.0), (2, 0.5)], ["experiment=toy", "reward.weights.toy_color=0.5"], done=False
    )
    rows = collect.read_metrics(tmp_path / "0" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[2]["loss"] == 0.7
    runs = collect.collect(tmp_path)
    assert [r["run"] for r in runs] == ["0", "1"] and runs[0]["redone_rows"] == 1
    header, table = collect.table(runs)
    assert header == ["run", "reward.weights.toy_color", "status", "step", "loss"]
    assert table == [["0", "0", "done", "4", "0.6"], ["1", "0.5", "partial", "2", "0.5"]]
    assert collect.main([str(tmp_path), "--csv", str(tmp_path / "t.csv")]) == 0
    assert (tmp_path / "t.csv").read_text().splitlines()[1] == "0,0,done,4,0.6"


def test_signal_to_one_rank_stops_all_ranks_at_the_same_step(tiny_teacher_dir, tmp_path):
    out = tmp_path / "run"
    procs = launch_distill(
        TINY
        + [
            f"model.path={tiny_teacher_dir}",
            f"output_dir={out}",
            "train.max_steps=200",
            "train.ckpt_every=0",
            "train.micro_batch_size=2",
        ],
        nproc=2,
        wait=False,
    )
    t0 = time.time()
    while not (out / "metrics.jsonl").exists() or len((out / "metrics.jsonl").read_text().splitlines()) < 2:
        assert time.time() - t0 < 300 and all(p.poll() is None for p in procs), "training did not start"
        time.sleep(0.1)
    procs[1].send_signal(signal.SIGUSR1)  # rank 1 only: rank 0 learns it through the collective
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    tag = (out / "checkpoints" / "latest").read_text().strip()
    state = json.loads((out / "checkpoints" / tag / "trainer_state.json").read_text())
    logged = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert 2 <= state["step"] < 200 and logged[-1] == state["step"] and state["world_size"] == 2
    assert f"signal SIGUSR1: checkpoint written at step {state['step']}" in outs[0]
    assert not (out / "export").exists()


def test_slurm_env_ignores_inherited_master_port_and_rank():
    """sbatch exports the submitting shell's environment: a leftover MASTER_PORT/RANK there must not
    decide the job's rendezvous (it did, and two jobs fought over one port)."""
    from t2vturbo.distill import slurm_dist_env

    env = {
        "SLURM_STEP_ID": "0",
        "SLURM_PROCID": "1",
        "SLURM_LOCALID": "1",
        "SLURM_NTASKS": "2",
        "SLURM_TASKS_PER_NODE": "2",
        "SLURM_JOB_ID": "123456",
        "MASTER_PORT": "35019",
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "10.0.0.9",
    }
    out = slurm_dist_env(env)
    assert out["RANK"] == "1" and out["WORLD_SIZE"] == "2" and out["LOCAL_WORLD_SIZE"] == "2"
    assert out["MASTER_PORT"] == str(10000 + 123456 % 20000) and out["MASTER_ADDR"] != "10.0.0.9"
    assert slurm_dist_env({**env, "T2V_MASTER_PORT": "29500"})["MASTER_PORT"] == "29500"
