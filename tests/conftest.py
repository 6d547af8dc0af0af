import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Tiny, fast distillation settings shared by the trainer tests (a 0.46 M-parameter UNet3D,
# 4 frames of 16x16 -> 48x4x4x4 latents).
TINY = [
    "model.tiny.block_out_channels=[16,32]",
    "model.num_frames=4",
    "model.height=16",
    "model.width=16",
    "train.log_every=1",
    "train.progress=false",
    "train.eval_every=0",
]


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread_from_the_start():
    """Also for the module- and session-scoped fixtures, which run before any function-scoped one (a fresh
    pytest-xdist worker starts with torch's default of one thread per core)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny ops are dominated by OpenMP spin/wait on shared cores: one thread is much faster here. Set before
    every test: a Trainer built in-process sets the thread count of a real run (cores per local rank), which leaked
    into later tests (test_rewards_image's bitwise batch checks failed after test_backbone_wan)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_distill(overrides, nproc: int = 1, timeout: float = 600, wait: bool = True, extra_env=None):
    """Run ``python -m t2vturbo.distill`` as ``nproc`` ranks wired by torch.distributed env vars."""
    port = free_port()
    procs = []
    for r in range(nproc):
        env = dict(os.environ)
        env.update(
            RANK=str(r),
            LOCAL_RANK=str(r),
            WORLD_SIZE=str(nproc),
            LOCAL_WORLD_SIZE=str(nproc),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS="1",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra_env or {})
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "t2vturbo.distill", *overrides],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    if not wait:
        return procs
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        outs.append(out)
    for p, out in zip(procs, outs):
        if p.returncode != 0:
            raise AssertionError(f"distill rank exited {p.returncode}:\n{out[-6000:]}")
    return outs


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory):
    """A tiny random teacher folder (diffusers layout) shared by the trainer tests."""
    from t2vturbo.backbones import write_tiny_model_dir

    d = tmp_path_factory.mktemp("teacher")
    write_tiny_model_dir(d, vae="pixel_unshuffle", block_out_channels=(16, 32))
    return d


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """A tiny random teacher folder and the export of a freshly made student of it (random teacher weights;
    the student's w / eta projections at their random init)."""
    from safetensors.torch import save_file

    from t2vturbo.backbones import load_backbone, write_tiny_model_dir
    from t2vturbo.sample import STUDENT_FILE, STUDENT_META

    root = tmp_path_factory.mktemp("tiny_export")
    teacher = write_tiny_model_dir(root / "teacher", vae="pixel_unshuffle", block_out_channels=(16, 32))
    bb = load_backbone("unet3d", str(teacher))
    net = bb.make_student()
    export = root / "run" / "export"
    export.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(export / STUDENT_FILE))
    meta = dict(
        family="unet3d",
        teacher_path=str(teacher),
        num_frames=4,
        height=16,
        width=16,
        num_ddim_timesteps=50,
        sigma_data=0.5,
        timestep_scaling=10.0,
        w_range=[2.0, 6.0],
        step=0,
    )
    (export / STUDENT_META).write_text(json.dumps(meta))
    return teacher, export


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``make test`` runs ``-n 2 --dist loadgroup``): the Slurm tests share one throw-away
    cluster per file and their daemons' ports, so they all run on one worker, one after another."""
    for item in items:
        if "/tests/slurm/" in str(item.fspath):
            item.add_marker(pytest.mark.xdist_group("slurm"))
