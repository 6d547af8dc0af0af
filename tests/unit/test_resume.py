"""resume.plan: what a rerun in an existing output dir does, decided from the checkpoint's JSON before any
engine exists (train.resume=auto|force|never, the config identity, another number of ranks)."""

import json

import pytest

from t2vturbo.config import validate
from t2vturbo.train import resume


def _cfg(tmp_path, **train):
    return validate({"output_dir": str(tmp_path), "train": {"micro_batch_size": 2, "grad_accum": 1, **train}})


def _checkpoint(tmp_path, cfg, world, step=3):
    d = tmp_path / "checkpoints" / f"step-{step:08d}"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"")
    mb = cfg.train.micro_batch_size
    micro = step * cfg.train.grad_accum
    state = {
        "step": step,
        "micro": micro,
        "samples": micro * mb * world,
        "world_size": world,
        "global_batch": resume.global_batch(cfg, world),
        "identity": resume.identity(cfg, world),
    }
    (d / "trainer_state.json").write_text(json.dumps(state))
    (tmp_path / "checkpoints" / "latest").write_text(d.name)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    return d


def test_no_checkpoint_starts_at_step_zero(tmp_path):
    assert resume.plan(_cfg(tmp_path), tmp_path, 0, 1) is None


def test_the_same_config_resumes_at_the_saved_position(tmp_path):
    cfg = _cfg(tmp_path)
    _checkpoint(tmp_path, cfg, world=1)
    st = resume.plan(_cfg(tmp_path, lr=5e-5, max_steps=999), tmp_path, 0, 1)  # lr, steps: not identity
    assert st["step"] == 3 and st["micro"] == 3 and st["same_world"]


def test_a_changed_model_or_data_config_is_refused_naming_the_keys(tmp_path):
    _checkpoint(tmp_path, _cfg(tmp_path), world=1)
    changed = validate(
        {
            "output_dir": str(tmp_path),
            "seed": 7,
            "model": {"lora": {"enabled": True}},
            "data": {"num_samples": 50},
            "train": {"micro_batch_size": 2},
        }
    )
    with pytest.raises(resume.ResumeConfigError) as ei:
        resume.plan(changed, tmp_path, 0, 1)
    msg = str(ei.value)
    for line in ("model.lora.enabled: False -> True", "seed: 0 -> 7", "data.num_samples: 1000000 -> 50"):
        assert line in msg
    assert "train.resume=force" in msg and "train.resume=never" in msg and "config.yaml" in msg
    with pytest.raises(resume.ResumeConfigError, match="global_batch: 2 -> 4"):
        resume.plan(_cfg(tmp_path, micro_batch_size=4), tmp_path, 0, 1)
    forced = validate(
        {"output_dir": str(tmp_path), "seed": 7, "train": {"micro_batch_size": 2, "resume": "force"}}
    )
    assert resume.plan(forced, tmp_path, 0, 1)["step"] == 3


def test_never_starts_over_and_keeps_the_old_run(tmp_path):
    _checkpoint(tmp_path, _cfg(tmp_path), world=1)
    (tmp_path / "tensorboard").mkdir()  # the old run's events would mix with the new run's curves and hparams
    (tmp_path / "tensorboard" / "events.out.tfevents.1").write_bytes(b"old")
    assert resume.plan(_cfg(tmp_path, resume="never"), tmp_path, 0, 1) is None
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.jsonl").exists()
    assert not (tmp_path / "tensorboard").exists()
    (kept,) = tmp_path.glob("replaced-*")
    assert (kept / "checkpoints" / "step-00000003" / "trainer_state.json").exists()
    assert (kept / "metrics.jsonl").read_text() == '{"step": 1}\n'
    assert (kept / "tensorboard" / "events.out.tfevents.1").read_bytes() == b"old"


def test_another_number_of_ranks_keeps_the_global_batch_and_the_data_position(tmp_path):
    saved = _cfg(tmp_path, grad_accum=2)
    _checkpoint(tmp_path, saved, world=2, step=3)  # global batch 2 x 2 x 2 = 8; 3 steps = 24 clips
    cfg = _cfg(tmp_path, grad_accum=2)
    st = resume.plan(cfg, tmp_path, 0, 1)  # 1 rank: 4 micro-batches of 2 per step
    assert cfg.train.grad_accum == 4 and resume.global_batch(cfg, 1) == 8
    assert st["micro"] == 12 and not st["same_world"]  # 12 x 2 x 1 = 24 clips
    cfg4 = _cfg(tmp_path, grad_accum=2)
    st4 = resume.plan(cfg4, tmp_path, 0, 4)  # 4 ranks: 1 micro-batch of 2 per step
    assert cfg4.train.grad_accum == 1 and st4["micro"] == 3
    with pytest.raises(resume.ResumeConfigError, match="global batch of 8 clips on 2 ranks"):
        resume.plan(_cfg(tmp_path, micro_batch_size=3), tmp_path, 0, 1)
