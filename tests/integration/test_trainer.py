"""The distillation loop end to end: loss goes down, ranks agree, resume is exact, bad input fails
clearly. Runs real DeepSpeed (gloo on CPU) in subprocesses wired by torch.distributed env vars."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import REPO, TINY, launch_distill
from safetensors.torch import load_file


def metrics(out_dir):
    return [json.loads(ln) for ln in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


def student(out_dir):
    return load_file(str(Path(out_dir) / "export" / "student.safetensors"))


def test_cd_loss_goes_down(tiny_teacher_dir, tmp_path):
    out = tmp_path / "run"
    launch_distill(
        TINY
        + [
            f"model.path={tiny_teacher_dir}",
            f"output_dir={out}",
            "train.max_steps=30",
            "train.lr=1e-3",
            "train.micro_batch_size=4",
            "train.ckpt_every=0",
            "objective.target=ema",
            "train.eval_every=30",
            "train.eval_steps=[1,4]",
        ]
    )
    # validation videos at the eval step: 3 prompts x {1, 4} steps
    vids = sorted(p.name for p in (out / "samples" / "step-00000030").iterdir())
    assert vids == [f"{s}steps_{i}.mp4" for s in (1, 4) for i in range(3)]
    val = {k: v for r in metrics(out) if any(k.startswith("val/") for k in r) for k, v in r.items()}
    assert val["step"] == 30
    assert 0.0 <= val["val/4steps/temporal_flicker"] <= 1.0 and val["val/1steps/sharpness"] >= 0.0
    rows = [r for r in metrics(out) if "loss_cd" in r]
    assert len(rows) == 30
    first = sum(r["loss_cd"] for r in rows[:5]) / 5
    last = sum(r["loss_cd"] for r in rows[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert all(isinstance(r["grad_norm"], float) and r["grad_norm"] > 0 for r in rows)
    assert all(r["samples_per_s"] > 0 for r in rows)
    assert (out / "tensorboard").is_dir() and any((out / "tensorboard").iterdir())
    # the exported student is loadable by the sampler
    from t2vturbo.sample import load_student, sample_student

    bb, net, meta = load_student(out)
    assert meta["weights"] == "ema" and meta["step"] == 30
    v = sample_student(bb, net, ["a red circle moving left"], steps=4, num_frames=4, height=16, width=16)
    assert v.shape == (1, 4, 3, 16, 16) and torch.isfinite(v).all()


def assert_same_training(a: dict, b: dict, teacher_dir, lr: float, steps: int):
    """Two runs of the same global batches agree: the UNet's parameter updates (student starts as
    the teacher) differ by < 1% in L2, and 99.5% of elements agree to 1e-5. Adam turns gradients
    at float-noise level into full-size steps of either sign, so a few elements may differ by at
    most the Adam bound 2*lr*steps."""
    from t2vturbo.backbones import UNet3DBackbone

    init = UNet3DBackbone.from_pretrained(teacher_dir).teacher.unet.state_dict()
    keys = [k for k in a if k.startswith("base.unet.") and k[len("base.unet.") :] in init]
    da = torch.cat([(a[k] - init[k[len("base.unet.") :]]).flatten() for k in keys])
    db = torch.cat([(b[k] - init[k[len("base.unet.") :]]).flatten() for k in keys])
    assert da.norm() > 10 * lr, "the runs did not train"
    rel = ((da - db).norm() / da.norm()).item()
    close = ((da - db).abs() <= 1e-5).float().mean().item()
    assert rel < 1e-2 and close > 0.995, (rel, close)
    assert (da - db).abs().max().item() <= 2 * lr * steps + 1e-6
    for k in a:  # the w/eta projections too (not in the teacher; identical seeded init on every rank)
        if k not in keys:
            assert torch.allclose(a[k], b[k], atol=2 * lr * steps + 1e-6), k


def test_two_rank_zero2_matches_one_rank(tiny_teacher_dir, tmp_path):
    common = TINY + [
        f"model.path={tiny_teacher_dir}",
        "train.max_steps=3",
        "train.ckpt_every=0",
        "train.lr=1e-3",
        "objective.target=student",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    launch_distill(common + [f"output_dir={one}", "train.micro_batch_size=4", "deepspeed=zero0"], nproc=1)
    launch_distill(common + [f"output_dir={two}", "train.micro_batch_size=2", "deepspeed=zero2"], nproc=2)
    a, b = student(one), student(two)
    assert a.keys() == b.keys()
    assert_same_training(a, b, tiny_teacher_dir, lr=1e-3, steps=3)
    assert len({r["step"] for r in metrics(two)}) == 3


def test_grad_accumulation_matches_bigger_micro_batch(tiny_teacher_dir, tmp_path):
    common = TINY + [
        f"model.path={tiny_teacher_dir}",
        "train.max_steps=2",
        "train.ckpt_every=0",
        "train.lr=1e-3",
        "objective.target=student",
    ]
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    launch_distill(common + [f"output_dir={a_dir}", "train.micro_batch_size=4", "train.grad_accum=1"])
    launch_distill(common + [f"output_dir={b_dir}", "train.micro_batch_size=2", "train.grad_accum=2"])
    assert_same_training(student(a_dir), student(b_dir), tiny_teacher_dir, lr=1e-3, steps=2)


def _wait_for_checkpoint(ckpt_dir: Path, tag: str, proc, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        latest = ckpt_dir / "latest"
        if latest.exists() and latest.read_text().strip() == tag:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before checkpoint {tag}: {proc.stdout.read()[-4000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint {tag} after {timeout}s")


def test_killed_run_resumes_exactly(tiny_teacher_dir, tmp_path):
    common = TINY + [
        f"model.path={tiny_teacher_dir}",
        "train.max_steps=6",
        "train.ckpt_every=3",
        "train.lr=1e-3",
        "objective.target=ema",
        "objective.ema_decay=0.9",
        "train.keep_checkpoints=1",
    ]
    ref, run = tmp_path / "ref", tmp_path / "run"
    launch_distill(common + [f"output_dir={ref}"])
    (p,) = launch_distill(common + [f"output_dir={run}"], wait=False)
    _wait_for_checkpoint(run / "checkpoints", "step-00000003", p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (run / "export").exists()
    launch_distill(common + [f"output_dir={run}"])
    a, b = student(ref), student(run)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the resumed run logged that it resumed, and only the newest checkpoint is kept
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step-")) == [
        "step-00000006"
    ]
    steps = [r["step"] for r in metrics(run) if "loss_cd" in r]
    assert steps[-3:] == [4, 5, 6]


def test_unknown_key_and_missing_path_fail_fast(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "t2vturbo.distill", *args, f"output_dir={tmp_path / 'x'}"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    r = run("model.path=/no/such/teacher")
    assert r.returncode != 0
    assert "/no/such/teacher" in r.stderr and "unet/" in r.stderr and "model.path" in r.stderr
    r = run("train.bogus_key=1")  # Hydra's struct check
    assert r.returncode != 0 and "bogus_key" in r.stderr
    r = run("+train.typo_lr=1")  # added keys still meet the schema
    assert r.returncode == 2 and "train.typo_lr" in r.stderr
    assert not (tmp_path / "x" / "checkpoints").exists()


def test_a_launch_starts_although_a_killed_build_left_its_lock(tiny_teacher_dir, tmp_path):
    """A run killed while DeepSpeed JIT-built its CPU comm op left ``<extensions>/deepspeed_shm_comm/lock``;
    every later launch used to wait on it for ever, silently. Now the next launch removes it, says so, and trains."""
    ext = tmp_path / "torch_extensions"
    (ext / "deepspeed_shm_comm").mkdir(parents=True)
    (ext / "deepspeed_shm_comm" / "lock").write_text("")  # what the killed build left behind
    (out,) = launch_distill(
        TINY
        + [
            f"model.path={tiny_teacher_dir}",
            f"output_dir={tmp_path / 'run'}",
            "train.max_steps=1",
            "train.micro_batch_size=2",
            "train.ckpt_every=0",
            "train.export=false",
        ],
        timeout=300,
        extra_env={"TORCH_EXTENSIONS_DIR": str(ext)},
    )
    assert "a torch-extension build lock no live process holds" in out
    assert not (ext / "deepspeed_shm_comm" / "lock").exists()
    assert (tmp_path / "run" / "metrics.jsonl").read_text().strip()


def test_term_during_start_up_exits_at_once_and_leaves_the_checkpoint(tiny_teacher_dir, tmp_path):
    """Issue 20: a TERM while no step is running (start-up: imports, model build, DeepSpeed init, the
    checkpoint load of a resumed run) ends the run at once with status 128 + 15 and one line, instead of
    waiting for the end of a step that may never come; the last checkpoint is left as it was."""
    out = tmp_path / "run"
    common = TINY + [f"model.path={tiny_teacher_dir}", f"output_dir={out}", "train.export=false"]
    launch_distill(common + ["train.max_steps=1", "train.ckpt_every=1"], timeout=300)
    ckpts = out / "checkpoints"
    before = {p.relative_to(ckpts): p.read_bytes() for p in ckpts.rglob("*") if p.is_file()}
    assert (ckpts / "latest").read_text().strip() == "step-00000001"

    (p,) = launch_distill(common + ["train.max_steps=50"], wait=False)
    first = p.stdout.readline()  # the first output is the start-up's (the handlers are in place before it)
    t0 = time.time()
    p.send_signal(signal.SIGTERM)
    rest, _ = p.communicate(timeout=60)
    took = time.time() - t0
    assert p.returncode == 128 + signal.SIGTERM, first + rest
    assert took < 5, (took, first + rest)
    assert (
        "SIGTERM received while no training step is running: exiting now; the last checkpoint is intact"
        in rest
    )
    assert "Traceback" not in rest, rest
    after = {p.relative_to(ckpts): p.read_bytes() for p in ckpts.rglob("*") if p.is_file()}
    assert after == before  # no step ran, nothing was written, the checkpoint is whole
    assert [r["step"] for r in metrics(out) if "loss" in r] == [1]
