"""python -m t2vturbo.plan: the traced fake step equals the real one, and the plan predicts real runs.

Reality here is the real trainer (DeepSpeed, data, EMA) in a fresh process under torch.profiler's memory
profiling (t2vturbo/plan/measure.py) and torch's own FlopCounterMode; bench/plan_vs_measured.py prints
the full table (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from t2vturbo.config import ConfigError, validate
from t2vturbo.plan import model as M
from t2vturbo.plan.__main__ import plan, prepare, run
from t2vturbo.plan.archs import PlanError
from t2vturbo.plan.measure import compose
from t2vturbo.plan.step import trace_step

REPO = Path(__file__).resolve().parents[2]
TOY = ["train.gradient_checkpointing=true"]


def _measured(overrides, flops=True) -> dict:
    cmd = [sys.executable, "-m", "t2vturbo.plan.measure"] + ([] if flops else ["--no-flops"]) + overrides
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    lines = [x for x in r.stdout.splitlines() if x.startswith("MEASURED ")]
    assert r.returncode == 0 and lines, r.stderr[-3000:]
    return json.loads(lines[0][len("MEASURED ") :])


def _predicted(overrides) -> dict:
    extra = ["plan.gpus=1", "plan.what_if_checkpointing=false", "plan.foreach_optimizer=false"]
    return plan(prepare(compose(overrides + extra)))


def test_fake_step_is_the_real_step():
    """Under fake tensors the traced step has the real step's FLOPs per phase and its peak bytes by category,
    with motion guidance (inversion, capture, score) and a reward term on."""
    cfg = validate(
        {
            "train": {"micro_batch_size": 2, "gradient_checkpointing": True},
            "guidance": {"motion": True, "eta": 0.05},
            "reward": {"weights": {"toy_motion": 1.0}},
        }
    )
    fake, real = trace_step(cfg, fake=True), trace_step(cfg, fake=False)
    assert fake.flops == real.flops
    assert {"teacher", "motion_guidance", "mg_inversion", "student", "target", "backward"} <= set(fake.flops)
    assert fake.peak_breakdown == real.peak_breakdown and fake.peak_bytes == real.peak_bytes
    assert fake.inversion == real.inversion and fake.inversion[1] > fake.inversion[0] >= 1
    assert fake.params == real.params


@pytest.fixture(scope="module")
def toy_mb2():
    ov = TOY + ["train.micro_batch_size=2"]
    return _predicted(ov), _measured(ov)


def test_plan_predicts_a_real_run(toy_mb2):
    """The plan's FLOPs of a micro-step equal torch's FlopCounterMode on the real trainer's step, and its peak
    per rank is within 15 % of the real run's (profiler allocation events)."""
    pred, meas = toy_mb2
    assert pred["flops_micro_batch_traced"] == meas["flops_micro_step"]
    err = pred["memory_gib"]["peak"] * 2**30 / meas["peak_bytes"] - 1
    assert abs(err) < 0.15, (pred["memory_gib"], meas)


def test_a_bigger_micro_batch_raises_the_prediction_as_measured(toy_mb2):
    pred2, meas2 = toy_mb2
    ov = TOY + ["train.micro_batch_size=6"]
    pred6, meas6 = _predicted(ov), _measured(ov, flops=False)
    grow_pred = (pred6["memory_gib"]["peak"] - pred2["memory_gib"]["peak"]) * 2**30
    grow_meas = meas6["peak_bytes"] - meas2["peak_bytes"]
    assert grow_meas > 0 and abs(grow_pred / grow_meas - 1) < 0.15, (grow_pred, grow_meas)
    assert abs(pred6["memory_gib"]["peak"] * 2**30 / meas6["peak_bytes"] - 1) < 0.15


def test_model_states_follow_the_zero_accounting():
    psi, n, gb = 1_000_000, 8, 2**30
    z0 = M.model_states(psi, 2, 0, n)
    assert (z0.parameters, z0.gradients, z0.optimizer) == (2 * psi, 6 * psi, 12 * psi / n)
    z0f = M.model_states(psi, 4, 0, n)
    assert (z0f.parameters, z0f.gradients, z0f.optimizer) == (4 * psi, 4 * psi, 8 * psi)
    z2 = M.model_states(psi, 2, 2, n, reduce_bucket=gb)
    assert (z2.parameters, z2.gradients, z2.optimizer) == (2 * psi, 4 * psi / n + 2 * gb, 12 * psi / n)
    z3 = M.model_states(psi, 2, 3, n, largest=1000, reduce_bucket=gb)
    assert z3.parameters == 2 * psi / n + 2 * 1000
    off = M.model_states(psi, 2, 2, n, offload=True, reduce_bucket=gb)
    assert off.optimizer == 0 and off.gradients == 2 * gb
    assert M.linear_fit({1: 10.0, 2: 14.0, 4: 22.0}) == pytest.approx((6.0, 4.0))
    assert M.max_fitting(lambda b: 10 + 5 * b, 31, 16) == 4 and M.max_fitting(lambda b: 99, 31, 16) == 0
    # AdamW's foreach step allocates temporaries for all tensors at once, the loop one tensor at a time
    assert (
        M.optimizer_step_temporaries(1 << 20, True, 8) > M.optimizer_step_temporaries(1 << 20, False, 8) > 0
    )


def test_cli_writes_the_plan(tmp_path):
    out = tmp_path / "p"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "t2vturbo.plan",
            f"output_dir={tmp_path}",
            f"plan.out={out}",
            "plan.what_if_checkpointing=false",
        ],  # fmt: skip
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    p = json.loads((out / "plan.json").read_text())
    for k in (
        "flops_per_step",
        "flops",
        "memory_gib",
        "fits",
        "max_micro_batch",
        "step_seconds",
        "gpu_hours",
    ):
        assert k in p
    assert set(p["memory_gib"]) >= {
        "parameters",
        "gradients",
        "optimizer",
        "activations",
        "temporaries",
        "peak",
    }
    assert p["fits"] and p["max_micro_batch"] == 16 and p["verdict"].startswith("fits on 8x80 GiB")
    assert p["flops_per_step"] == pytest.approx(sum(p["flops"].values()))
    assert (out / "plan.md").read_text().startswith("# Plan")


def test_cli_refuses_what_it_cannot_plan(tmp_path):
    """The CLI exits 2 with the reason (one case through the process: its exit status and stderr), and leaves
    no Hydra run files in OUTPUT_DIR (they would replace those of the training run being planned)."""
    run = tmp_path / "run"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "t2vturbo.plan",
            f"output_dir={run}",
            f"plan.out={tmp_path}",
            "objective=diffusion",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 2 and "plans consistency distillation" in r.stderr, r.stderr[-2000:]
    assert not (run / ".hydra").exists() and not list(run.glob("*.log")), list(run.rglob("*"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model=videocrafter2", "model.arch=nope"], "model.arch='nope'"),
        (["model=modelscope", "model.arch=wan2.1_t2v_1.3b"], "is a wan architecture"),
    ],
)
def test_plan_refuses_an_unknown_or_mismatched_arch(tmp_path, overrides, message):
    """What the CLI prints after ``plan error:`` (the errors its main catches), without a process per case."""
    with pytest.raises((ConfigError, PlanError)) as e:
        run(prepare(compose([f"plan.out={tmp_path}", *overrides])))
    assert message in str(e.value)


@pytest.mark.slow  # ~1-3 minutes each on 2 cores
@pytest.mark.parametrize("model", ["videocrafter2", "wan2_1_t2v_1_3b"])
def test_full_size_plans_complete(tmp_path, model):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "t2vturbo.plan",
            f"model={model}",
            "train.precision=bf16",
            f"plan.out={tmp_path}",
            f"output_dir={tmp_path}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    p = json.loads((tmp_path / "plan.json").read_text())
    assert p["params"]["trainable"] > 1.3e9 and p["flops_per_step"] > 1e14


def test_reward_models_are_planned_at_their_released_size():
    """reward=t2v_turbo_v2 (HPSv2.1 + CLIP ViT-H-14 image rewards, InternVideo2-1B video reward) needs weight
    folders to train; the plan builds the released architectures instead (3.27 B frozen parameters besides
    the tiny teacher) and runs them through the VAE decode, forward and backward."""
    cfg = prepare(compose(["reward=t2v_turbo_v2", "train.micro_batch_size=1"]))
    t = trace_step(cfg, fake=True)
    assert t.params["frozen"] > 3.2e9
    assert t.flops["rewards"] > 1e12 and t.flops["backward"] > t.flops["rewards"] / 2


def test_a_recipe_is_planned_without_weights_or_data():
    """The T2V-Turbo-v2 recipe's required paths (teacher, reward weights, shard urls) are not needed to plan."""
    cfg = prepare(compose(["experiment=t2v_turbo_v2_vg_wv", "reward=t2v_turbo_v2"]))
    assert cfg.model.path is None and cfg.model.arch == "modelscope_1.7b"
    assert all(s.urls for s in cfg.data.sources) and all(cfg.reward.paths.values())


def test_the_precomputed_step_is_planned_without_the_teacher():
    """data.precomputed=true (T2V-Turbo-v2's two-stage mode): the stored teacher outputs replace the teacher,
    which the trainer moves off the device; the trace equals the real step."""
    cfg = prepare(
        compose(["data=precomputed", "guidance=motion", "guidance.eta=0.05", "train.micro_batch_size=2"])
    )
    online = trace_step(
        prepare(compose(["guidance=motion", "guidance.eta=0.05", "train.micro_batch_size=2"]))
    )
    fake, real = trace_step(cfg, fake=True), trace_step(cfg, fake=False)
    assert fake.flops == real.flops and fake.peak_bytes == real.peak_bytes
    assert set(fake.flops) == {"student", "target", "backward"}
    assert (
        fake.params["frozen"] < online.params["frozen"]
        and fake.params["trainable"] == online.params["trainable"]
    )
