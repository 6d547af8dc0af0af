"""EMA, checkpoint bookkeeping, config validation, per-sample draws: independent computations."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from t2vturbo.config import ConfigError, validate
from t2vturbo.train import checkpoint as ckpt
from t2vturbo.train.ema import EMA
from t2vturbo.train.objectives import draw


def _net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_ema_formula_and_mu_zero_copies():
    src = _net(0)
    ema = EMA(src, decay=0.9)
    before = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
    ema.update(src)
    for k, v in ema.model.state_dict().items():
        expected = 0.9 * before[k] + 0.1 * src.state_dict()[k]
        assert torch.allclose(v, expected, atol=1e-6), k
    copy0 = EMA(_net(1), decay=0.0)
    copy0.update(src)
    for k, v in copy0.model.state_dict().items():
        assert torch.equal(v, src.state_dict()[k])
    frozen = EMA(_net(2), decay=1.0)
    ref = {k: v.clone() for k, v in frozen.model.state_dict().items()}
    frozen.update(src)
    assert all(torch.equal(ref[k], v) for k, v in frozen.model.state_dict().items())
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_ema_is_independent_copy():
    src = _net(0)
    ema = EMA(src, decay=0.5)
    with torch.no_grad():
        src[0].weight.add_(3.0)
    assert not torch.equal(ema.model[0].weight, src[0].weight)


def test_latest_tag_and_prune(tmp_path):
    assert ckpt.latest_tag(tmp_path) is None
    for s in (1, 2, 3):
        d = tmp_path / ckpt.tag_for(s)
        d.mkdir()
        (d / "trainer_state.json").write_text(json.dumps({"step": s}))
    (tmp_path / ".tmp-step-00000004").mkdir()  # a crashed write is ignored
    (tmp_path / "latest").write_text(ckpt.tag_for(3))
    assert ckpt.latest_tag(tmp_path) == "step-00000003"
    ckpt.prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("step-")) == [
        "step-00000002",
        "step-00000003",
    ]
    (tmp_path / "latest").write_text("step-00000009")
    with pytest.raises(RuntimeError, match="incomplete"):
        ckpt.latest_tag(tmp_path)


def _engine(seed=0):
    """What checkpoint.save/load use of a DeepSpeed engine, around a plain module and AdamW (one process)."""
    m = _net(seed)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    m(torch.ones(2, 3)).sum().backward()
    opt.step()
    return SimpleNamespace(module=m, optimizer=opt, global_steps=1, global_samples=2, lr_scheduler=None)


def test_a_failed_checkpoint_write_names_the_disk_removes_the_partial_write_and_keeps_the_last(
    tmp_path, monkeypatch
):
    ckpt.save(_engine(), tmp_path, 1, {"step": 1})
    assert ckpt.latest_tag(tmp_path) == "step-00000001"
    real = ckpt.save_file

    def full_disk(tensors, path, *a, **k):
        Path(path).write_bytes(b"x" * 1000)  # part of the file, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    with pytest.raises(ckpt.CheckpointWriteError) as ei:
        ckpt.save(_engine(), tmp_path, 2, {"step": 2})
    msg = str(ei.value)
    assert "step-00000002" in msg and "MiB free" in msg and "full disk" in msg and "No space left" in msg
    assert f"{tmp_path / 'step-00000001'}) is intact" in msg
    assert not (tmp_path / ".tmp-step-00000002").exists()  # the partial write is gone
    assert ckpt.latest_tag(tmp_path) == "step-00000001"
    monkeypatch.setattr(ckpt, "save_file", real)
    state = ckpt.read_state(tmp_path)
    assert state["step"] == 1 and state["tag"] == "step-00000001"


def test_a_checkpoint_round_trips_model_and_optimizer_bitwise(tmp_path):
    a, b = _engine(0), _engine(1)
    ckpt.save(a, tmp_path, 1, {"step": 1})
    assert {p.name for p in (tmp_path / "step-00000001").iterdir()} == {
        "model.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
        "rng_rank0.json",
    }
    ckpt.load(b, tmp_path)
    for (n, p), q in zip(a.module.named_parameters(), b.module.parameters()):
        assert torch.equal(p, q), n
        sa, sb = a.optimizer.state[p], b.optimizer.state[q]
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
        assert float(sa["step"]) == float(sb["step"]) == 1.0
    assert b.global_steps == 1 and b.global_samples == 2


def test_a_deepspeed_pickle_in_the_output_dir_is_never_unpickled(tmp_path):
    """An output dir lives on shared storage: a planted ``latest`` + ``step-N/*.pt`` whose unpickling runs code
    (this one creates a file) must not run; the error says what the folder holds."""
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    d = tmp_path / "step-00000005"
    d.mkdir()
    torch.save({"module": Payload()}, d / "mp_rank_00_model_states.pt")
    (d / "trainer_state.json").write_text(json.dumps({"step": 5, "micro": 5}))
    (tmp_path / "latest").write_text("step-00000005")
    with pytest.raises(RuntimeError, match="mp_rank_00_model_states.pt: DeepSpeed's pickle files") as ei:
        ckpt.load(_engine(), tmp_path)
    assert "never unpickled" in str(ei.value)
    assert not marker.exists()


@pytest.mark.parametrize("text", ["../../etc", "/tmp/x", "step-1", "step-00000001/../../x"])
def test_latest_must_name_a_checkpoint_of_the_folder(tmp_path, text):
    """``latest`` is read from the output dir (shared storage): its text is used as a path only if it is a tag."""
    (tmp_path / "latest").write_text(text)
    with pytest.raises(RuntimeError, match="not a checkpoint of this folder"):
        ckpt.latest_tag(tmp_path)


def test_rng_state_round_trip():
    import random

    import numpy as np

    st = ckpt.rng_state()
    a = (random.random(), np.random.rand(), torch.rand(3))
    ckpt.set_rng_state(json.loads(json.dumps(st)))
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_validate_unknown_key_and_values():
    cfg = validate({"train": {"lr": 1e-3}})
    assert cfg.train.lr == 1e-3 and cfg.objective.num_ddim_timesteps == 200
    with pytest.raises(ConfigError, match="train.lrr"):
        validate({"train": {"lrr": 1e-3}})
    with pytest.raises(ConfigError, match="model.tiny.vea"):
        validate({"model": {"tiny": {"vea": "x"}}})
    with pytest.raises(ConfigError, match="objective.target"):
        validate({"objective": {"target": "teacher"}})
    with pytest.raises(ConfigError, match="w_min"):
        validate({"objective": {"w_min": 9.0, "w_max": 2.0}})
    with pytest.raises(ConfigError, match="train.max_steps"):
        validate({"train": {"max_steps": "many"}})
    assert validate({"objective": {"name": "diffusion", "min_timestep": 800}}).objective.min_timestep == 800
    with pytest.raises(ConfigError, match="min_timestep=800 is used by objective.name=diffusion only"):
        validate({"objective": {"min_timestep": 800}})
    with pytest.raises(ConfigError, match="min_timestep=-1 must be >= 0"):
        validate({"objective": {"name": "diffusion", "min_timestep": -1}})


def test_hydra_tree_composes_and_validates():
    from conftest import REPO
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for overrides in (
            [],
            ["experiment=toy"],
            ["experiment=toy_teacher"],
            ["deepspeed=zero3", "objective=diffusion"],
            ["model=modelscope", "model.path=/x"],
        ):
            cfg = validate(compose(config_name="config", overrides=overrides))
            assert cfg.objective.name == "diffusion" or cfg.objective.guidance_form == "lcm"
        cfg = validate(compose(config_name="config", overrides=["experiment=toy_teacher"]))
        assert cfg.objective.name == "diffusion" and cfg.model.tiny.prediction_type == "sample"
        assert cfg.model.tiny.text_token_std == 1.0 and list(cfg.data.directions) == ["left", "up", "still"]
        # the three toy-teacher stages chain: each starts from the previous stage's export
        stages = [
            validate(compose(config_name="config", overrides=[f"experiment={e}"]))
            for e in ("toy_teacher", "toy_teacher_direction", "toy_teacher_finish")
        ]
        assert [s.objective.min_timestep for s in stages] == [0, 800, 0]
        assert [s.data.directions for s in stages[1:]] == [None, None]
        for prev, nxt in zip(stages, stages[1:]):
            assert nxt.model.path == f"{prev.output_dir}/export" and nxt.objective.name == "diffusion"
        assert stages[-1].train.export_dir == "artifacts/toy_teacher"


def test_draws_depend_only_on_seed_and_position():
    a = draw([0, 1, 2, 3], (2, 2, 1, 1), seed=7, n_index=200, w_min=5, w_max=15, drop_p=0.5)
    b = draw([2, 3], (2, 2, 1, 1), seed=7, n_index=200, w_min=5, w_max=15, drop_p=0.5)
    assert (
        torch.equal(a.noise[2:], b.noise) and torch.equal(a.index[2:], b.index) and torch.equal(a.w[2:], b.w)
    )
    c = draw([0, 1, 2, 3], (2, 2, 1, 1), seed=8, n_index=200, w_min=5, w_max=15, drop_p=0.5)
    assert not torch.equal(a.noise, c.noise)
    big = draw(list(range(400)), (1,), seed=0, n_index=200, w_min=5, w_max=15, drop_p=0.25)
    assert big.index.min() >= 0 and big.index.max() <= 199 and len(set(big.index.tolist())) > 100
    assert 5 <= big.w.min() and big.w.max() <= 15 and abs(big.w.mean().item() - 10) < 0.6
    assert 0.15 < big.drop.float().mean().item() < 0.35
