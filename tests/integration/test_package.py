"""The package as users install it: a wheel built from this tree, installed into a fresh venv, run from a
folder outside the repo through its console scripts (configs and the toy teacher are package data).

The fresh venv gets the heavy dependencies (torch, diffusers, ...) from this test run's environment through
a folder of links (no download, no copy), and nothing of this checkout: not its editable install, not its
source tree on ``sys.path``. ``pip install --no-index`` of the wheel with its extras then resolves
``pyproject.toml``'s dependency specifiers against those installed versions, so a false bound fails here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = [
    "t2vturbo-distill",
    "t2vturbo-sample",
    "t2vturbo-plan",
    "t2vturbo-precompute",
    "t2vturbo-report",
    "t2vturbo-toybench",
    "t2vturbo-curate",
    "t2vturbo-toy-world",
    "t2vturbo-hub",
]
# what a wheel built from a checkout must not see of it
_NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "outputs", "artifacts", "multirun", "runs", "build", "dist", "*.egg-info", "__pycache__",
    ".pytest_cache", ".ruff_cache", "samples",
)  # fmt: skip


def _run(cmd, cwd, env, timeout=600):
    p = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert p.returncode == 0, (
        f"{' '.join(map(str, cmd))} -> {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    )
    return p


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(venv_bin, env, workdir)``: the wheel installed in a fresh venv, and an empty folder outside the repo."""
    root = tmp_path_factory.mktemp("package")
    src = root / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=_NOT_COPIED)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", root / "dist",
          src], cwd=root, env=os.environ)  # fmt: skip
    (wheel,) = (root / "dist").glob("t2vturbo-*.whl")

    # this environment's packages, less t2vturbo itself (its editable install and dist-info)
    here = Path(sysconfig.get_paths()["purelib"])
    deps = root / "deps"
    deps.mkdir()
    for entry in here.iterdir():
        if entry.name.startswith(("t2vturbo", "__editable__", "data_recipes", "_t2vturbo")):
            continue
        (deps / entry.name).symlink_to(entry)
    venv = root / "venv"
    _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", venv], cwd=root,
         env=os.environ)  # fmt: skip
    py = venv / "bin" / "python"
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root, os.environ)
                .stdout.strip())  # fmt: skip
    (site / "zz_deps.pth").write_text(f"{deps}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    _run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-index", "--no-build-isolation",
          f"{wheel}[dev,curate]"], cwd=root, env=env)  # fmt: skip
    work = root / "work"
    work.mkdir()
    return venv / "bin", env, work


def test_wheel_holds_configs_and_toy_teacher_and_runs_outside_the_repo(installed):
    bin_, env, work = installed
    probe = _run([bin_ / "python", "-c", "import t2vturbo, json; print(json.dumps([t2vturbo.__file__, "
                  "str(t2vturbo.CONF_DIR), t2vturbo.asset('toy_teacher')]))"], work, env)  # fmt: skip
    mod, conf, teacher = json.loads(probe.stdout)
    assert not mod.startswith(str(REPO)), f"imported the checkout, not the wheel: {mod}"
    assert (Path(conf) / "config.yaml").is_file() and (Path(conf) / "experiment" / "toy.yaml").is_file()
    assert (Path(teacher) / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    for s in SCRIPTS:
        assert (bin_ / s).is_file(), f"console script {s} not installed"

    # a tiny distillation of the shipped toy teacher on the toy world's shards (one step, CFG only: the package is
    # under test here, not motion guidance), then a 4-step sample
    _run([bin_ / "t2vturbo-toy-world", "--out", "artifacts/toy_shards", "--num-clips", "32", "--shard-size", "16",
          "--textured-fraction", "0"], work, env)  # fmt: skip
    _run([bin_ / "t2vturbo-distill", "experiment=toy", "data.urls='artifacts/toy_shards/toy-{000000..000001}.tar'",
          "data.num_samples=32", "train.max_steps=1", "train.micro_batch_size=2", "train.ckpt_every=0",
          "train.eval_every=0", "guidance=cfg"], work, env)  # fmt: skip
    export = work / "outputs" / "toy" / "export"
    assert (export / "student.safetensors").is_file()
    out = _run([bin_ / "t2vturbo-sample", "--steps", "4", "--prompt", "a red circle moving left",
                "--checkpoint", export, "--out", "samples"], work, env)  # fmt: skip
    (video,) = (work / "samples").glob("*.mp4")
    assert video.stat().st_size > 0 and str(video.name) in out.stdout


def test_console_script_tab_completion(installed):
    """Hydra's bash completion, installed the way ``t2vturbo-distill --hydra-help`` says, completes the
    config groups of the packaged configs."""
    bin_, env, work = installed
    helptext = _run([bin_ / "t2vturbo-distill", "--hydra-help"], work, env).stdout
    assert 'eval "$(t2vturbo-distill -sc install=bash)"' in helptext
    script = (
        'eval "$(t2vturbo-distill -sc install=bash)"; COMP_LINE="t2vturbo-distill experiment=toy_t"; '
        'COMP_POINT=${#COMP_LINE}; COMP_CWORD=1; hydra_bash_completion; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    got = _run(["bash", "-c", script], work, env).stdout.split()
    assert got == [
        "experiment=toy_teacher",
        "experiment=toy_teacher_direction",
        "experiment=toy_teacher_finish",
    ]
