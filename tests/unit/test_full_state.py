"""full_state: a DeepSpeed engine's module and AdamW state as whole tensors, written on N ranks and loaded on
M ranks (any ZeRO stage): loaded back bitwise, and the next step equals an uninterrupted M-rank run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, free_port
from safetensors.torch import load_file

WORKER = Path(__file__).parent / "workers" / "full_state_worker.py"


def run(mode, d, stage, precision, nproc):
    port, procs = free_port(), []
    for r in range(nproc):
        env = dict(
            os.environ, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc)
        )
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), mode, str(d), str(stage), precision],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outs = [p.communicate(timeout=300)[0] for p in procs]
    bad = [
        f"rank {r} exited {p.returncode}: {out[-3000:]}"
        for r, (p, out) in enumerate(zip(procs, outs))
        if p.returncode
    ]
    assert not bad, "\n".join(bad[::-1])  # the failing rank's own error first


@pytest.mark.parametrize(
    "stage,precision,n,m",
    [
        (0, "fp32", 1, 2),
        (1, "fp32", 2, 1),
        (2, "fp32", 1, 2),
        (2, "fp32", 2, 1),
        (3, "fp32", 1, 2),
        (3, "fp32", 2, 1),
        (2, "bf16", 2, 1),
        (0, "bf16", 1, 2),
    ],
)
def test_state_moves_between_world_sizes(tmp_path, stage, precision, n, m):
    run("save", tmp_path, stage, precision, n)
    saved_model = load_file(str(tmp_path / "model.safetensors"))
    saved_optim = load_file(str(tmp_path / "optim.safetensors"))
    # every parameter (the frozen one too) and the buffer; moments of the trained ones only
    assert set(saved_model) == {"0.weight", "0.bias", "2.weight", "2.bias", "scale"}
    assert set(saved_optim) == {
        f"{k}.{n_}" for k in ("exp_avg", "exp_avg_sq") for n_ in ("0.weight", "2.weight", "2.bias")
    }
    assert saved_model["0.weight"].dtype == torch.float32  # the fp32 master, also under bf16
    assert all(v.abs().sum() > 0 for v in saved_optim.values())
    run("resume", tmp_path, stage, precision, m)
    again = load_file(str(tmp_path / f"regathered-{m}.safetensors"))
    for k, v in saved_model.items():
        assert torch.equal(again[f"model.{k}"], v), k  # bitwise: nothing lost or rounded in the move
    for k, v in saved_optim.items():
        assert torch.equal(again[f"optim.{k}"], v), k
    after = load_file(str(tmp_path / f"after-{m}.safetensors"))
    ref = load_file(str(tmp_path / f"uninterrupted-{m}.safetensors"))
    meta = json.loads((tmp_path / f"meta-{m}.json").read_text())
    assert meta["resumed"]["adam_step"] == meta["uninterrupted"]["adam_step"]
    assert meta["resumed"]["global_steps"] == meta["uninterrupted"]["global_steps"] == 3
    tol = 1e-6 if precision == "fp32" else 2e-2
    for k, v in ref.items():
        assert torch.allclose(after[k], v, rtol=tol, atol=tol), (k, (after[k] - v).abs().max())


def test_a_checkpoint_of_another_model_is_refused_by_name(tmp_path):
    run("save", tmp_path, 2, "fp32", 1)
    run("mismatch", tmp_path, 2, "fp32", 1)
    msg = (tmp_path / "mismatch.txt").read_text()
    assert "0.weight: checkpoint (3, 3), this run (7, 5)" in msg
