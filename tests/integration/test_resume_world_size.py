"""Resume on another number of ranks (ZeRO-2 and ZeRO-3): a run saved on 1 rank goes on on 2, then on 1 again,
and at each point equals an uninterrupted run on the new number of ranks (same global batches; the float
reduction of two micro-batches is exact in either order, so "equals" is bitwise here)."""

import json
import shutil

import pytest
import torch
from conftest import TINY, launch_distill
from test_trainer import assert_same_training, metrics, student

LR = 1e-3


def common(teacher, out, stage, steps):
    return TINY + [
        f"model.path={teacher}",
        f"output_dir={out}",
        f"train.max_steps={steps}",
        "train.ckpt_every=0",
        f"train.lr={LR}",
        "objective.target=ema",
        "objective.ema_decay=0.5",
        f"deepspeed=zero{stage}",
        "train.micro_batch_size=2",
        "train.grad_accum=2",  # 4 clips per step: on 2 ranks the resumed run sets grad_accum=1
        "train.export_diffusers=false",
    ]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("stage", [2, 3])
def test_a_run_moves_from_one_rank_to_two_and_back(tiny_teacher_dir, tmp_path, stage):
    ref2, ref1, run = tmp_path / "two", tmp_path / "one", tmp_path / "run"
    launch_distill(
        common(tiny_teacher_dir, ref2, stage, 4) + ["train.grad_accum=1"], nproc=2
    )  # uninterrupted
    launch_distill(common(tiny_teacher_dir, ref1, stage, 6), nproc=1)  # uninterrupted
    launch_distill(common(tiny_teacher_dir, run, stage, 2), nproc=1)  # steps 1-2 on 1 rank
    out = launch_distill(common(tiny_teacher_dir, run, stage, 4), nproc=2)[0]  # 3-4 on 2 ranks
    assert "resumed from" in out and "written by 1 ranks" in out
    assert "train.grad_accum=1 keeps its global batch of 4 clips" in out
    state = json.loads((run / "checkpoints" / "step-00000004" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["samples"] == 16 and state["global_batch"] == 4
    # a 2-rank all-reduce of two micro-batches sums them in either order exactly: the runs agree bitwise
    assert same(student(run), student(ref2))
    shutil.rmtree(run / "export")
    launch_distill(common(tiny_teacher_dir, run, stage, 6), nproc=1)  # 5-6 on 1 rank
    assert same(student(run), student(ref1))
    assert_same_training(student(run), student(ref1), tiny_teacher_dir, lr=LR, steps=6)  # it trained
    assert [r["step"] for r in metrics(run) if "loss" in r] == [1, 2, 3, 4, 5, 6]
