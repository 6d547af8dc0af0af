"""Trainer modes: NaN losses, LoRA, ZeRO-3 on 2 ranks, bf16, the diffusion objective."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY, launch_distill
from safetensors.torch import load_file

from t2vturbo.config import validate


def tiny_cfg(teacher_dir, out, **train):
    return validate(
        {
            "output_dir": str(out),
            "model": {"path": str(teacher_dir), "num_frames": 4, "height": 16, "width": 16},
            "train": {"log_every": 1, "progress": False, "micro_batch_size": 2, "lr": 1e-3, **train},
        }
    )


def metrics(out_dir):
    return [json.loads(ln) for ln in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


def test_nonfinite_losses_are_skipped_and_counted(tiny_teacher_dir, tmp_path, monkeypatch):
    from t2vturbo.train.objectives import ConsistencyDistillation
    from t2vturbo.train.trainer import Trainer

    orig = ConsistencyDistillation.loss
    bad_micro = {1, 3}

    def loss(self, net, batch):
        out = orig(self, net, batch)
        if batch["positions"][0] // 2 in bad_micro:
            return (out[0] * float("nan"), *out[1:])
        return out

    monkeypatch.setattr(ConsistencyDistillation, "loss", loss)
    t = Trainer(tiny_cfg(tiny_teacher_dir, tmp_path / "run", max_steps=4, ckpt_every=2))
    assert t.train() == 4
    assert t.skipped == 2 and t.micro == 6
    rows = metrics(tmp_path / "run")
    assert sum(r.get("event") == "nonfinite_loss" for r in rows) == 2
    assert [r["skipped_nonfinite"] for r in rows if "loss_cd" in r][-1] == 2
    sd = load_file(str(tmp_path / "run" / "export" / "student.safetensors"))
    assert all(torch.isfinite(v).all() for v in sd.values())


def test_too_many_nonfinite_losses_abort_with_last_checkpoint_intact(tiny_teacher_dir, tmp_path, monkeypatch):
    from t2vturbo.train import checkpoint as ckpt
    from t2vturbo.train.objectives import ConsistencyDistillation
    from t2vturbo.train.trainer import NonFiniteLossError, Trainer

    orig = ConsistencyDistillation.loss

    def loss(self, net, batch):
        out = orig(self, net, batch)
        if batch["positions"][0] >= 4:  # from micro 2 on
            return (out[0] * float("nan"), *out[1:])
        return out

    monkeypatch.setattr(ConsistencyDistillation, "loss", loss)
    run = tmp_path / "run"
    t = Trainer(tiny_cfg(tiny_teacher_dir, run, max_steps=10, ckpt_every=2, max_nan_skips=3))
    with pytest.raises(NonFiniteLossError, match="step-00000002"):
        t.train()
    assert ckpt.latest_tag(run / "checkpoints") == "step-00000002"
    state = json.loads((run / "checkpoints" / "step-00000002" / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["micro"] == 2
    sd = load_file(str(run / "checkpoints" / "step-00000002" / "ema.safetensors"))
    assert all(torch.isfinite(v).all() for v in sd.values())
    assert not (run / "export").exists()


def test_lora_student_distils_and_exports_merged(tiny_teacher_dir, tmp_path):
    out = tmp_path / "lora"
    launch_distill(
        TINY
        + [
            f"model.path={tiny_teacher_dir}",
            f"output_dir={out}",
            "train.max_steps=3",
            "train.micro_batch_size=2",
            "model.lora.enabled=true",
            "model.lora.rank=4",
            "model.lora.alpha=4",
            "objective.target=student",
            "train.lr=1e-2",
            "train.ckpt_every=0",
        ]
    )
    from t2vturbo.backbones import UNet3DBackbone
    from t2vturbo.sample import load_student

    sd = load_file(str(out / "export" / "student.safetensors"))
    assert not any("lora_" in k for k in sd)
    bb, net, meta = load_student(out)
    teacher = UNet3DBackbone.from_pretrained(tiny_teacher_dir).teacher.unet.state_dict()
    changed = [k for k in teacher if not torch.equal(teacher[k], sd["base.unet." + k])]
    assert changed and all(any(t in k for t in ("to_q", "to_k", "to_v", "to_out")) for k in changed)


def test_zero3_two_ranks_and_bf16(tiny_teacher_dir, tmp_path):
    z3 = tmp_path / "z3"
    launch_distill(
        TINY
        + [
            f"model.path={tiny_teacher_dir}",
            f"output_dir={z3}",
            "train.max_steps=2",
            "train.micro_batch_size=1",
            "deepspeed=zero3",
            "train.ckpt_every=1",
        ],
        nproc=2,
    )
    sd = load_file(str(z3 / "export" / "student.safetensors"))
    assert all(v.numel() > 0 and torch.isfinite(v).all() for v in sd.values())
    # resume a ZeRO-3 run from its checkpoint on the same world size
    launch_distill(
        TINY
        + [
            f"model.path={tiny_teacher_dir}",
            f"output_dir={z3}",
            "train.max_steps=3",
            "train.micro_batch_size=1",
            "deepspeed=zero3",
            "train.ckpt_every=1",
        ],
        nproc=2,
    )
    assert [r["step"] for r in metrics(z3) if "loss_cd" in r] == [1, 2, 3]
    bf = tmp_path / "bf16"
    launch_distill(
        TINY
        + [
            f"model.path={tiny_teacher_dir}",
            f"output_dir={bf}",
            "train.max_steps=2",
            "train.micro_batch_size=2",
            "train.precision=bf16",
            "train.ckpt_every=0",
        ]
    )
    rows = [r for r in metrics(bf) if "loss_cd" in r]
    assert len(rows) == 2 and all(isinstance(r["loss_cd"], float) for r in rows)


def test_diffusion_objective_trains_and_exports_teacher_folder(tmp_path):
    out = tmp_path / "teacher_run"
    export = tmp_path / "toy_teacher"
    launch_distill(
        TINY
        + [
            "objective=diffusion",
            f"output_dir={out}",
            f"train.export_dir={export}",
            "train.max_steps=25",
            "train.micro_batch_size=4",
            "train.lr=2e-3",
            "train.ckpt_every=0",
            "model.tiny.prediction_type=sample",
        ]
    )
    rows = [r for r in metrics(out) if "loss_diffusion" in r]
    first = sum(r["loss_diffusion"] for r in rows[:5]) / 5
    last = sum(r["loss_diffusion"] for r in rows[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    from t2vturbo.backbones import UNet3DBackbone

    bb = UNet3DBackbone.from_pretrained(export)
    assert bb.prediction_type == "sample"
    assert json.loads((export / "t2vturbo_teacher.json").read_text())["step"] == 25


def test_shard_stream_with_corrupt_samples_counts_exact_skips(tiny_teacher_dir, tmp_path):
    """20 clips in webdataset shards, 2 of them corrupt (10%): one epoch of training reads the 18
    good ones and reports exactly 2 skips with their keys."""
    import io
    import tarfile

    from data_recipes.toy_world import write_toy_shards

    shard_dir = tmp_path / "shards"
    write_toy_shards(shard_dir, num_clips=20, shard_size=20, frames=4, size=18, seed=0, textured_fraction=0.0)
    src = shard_dir / "toy-000000.tar"
    dst = shard_dir / "bad-000000.tar"
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read()
            if m.name in ("00000003.mp4", "00000011.mp4"):
                data = data[: len(data) // 3] if m.name.startswith("00000003") else b""
            info = tarfile.TarInfo(m.name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))
    out = tmp_path / "run"
    launch_distill(
        TINY
        + [
            f"model.path={tiny_teacher_dir}",
            f"output_dir={out}",
            "data=toy_shards",
            f"data.urls={dst}",
            "data.resampled=false",
            "data.shuffle_buffer=0",
            "model.height=16",
            "model.width=16",
            "train.micro_batch_size=2",
            "train.max_steps=9",
            "train.ckpt_every=0",
        ]
    )
    rows = [r for r in metrics(out) if "loss_cd" in r]
    assert len(rows) == 9
    assert rows[-1]["data_skipped"] == 2 and rows[-1]["data_seen"] == 20
    assert "00000003" in rows[-1]["data_first_skips"] and "00000011" in rows[-1]["data_first_skips"]


def test_online_motion_guidance_runs_in_the_distillation_step(tiny_teacher_dir, tmp_path):
    out = tmp_path / "mg"
    launch_distill(
        TINY
        + [
            f"model.path={tiny_teacher_dir}",
            f"output_dir={out}",
            "guidance=motion",
            "guidance.reference=noise",
            "train.max_steps=3",
            "train.micro_batch_size=4",
            "train.ckpt_every=0",
        ]
    )
    rows = [r for r in metrics(out) if "loss_cd" in r]
    assert len(rows) == 3 and all("mg_fraction" in r for r in rows)
    assert any(r["mg_fraction"] > 0 for r in rows)  # some samples fell in the guided half of the grid
    meta = json.loads((out / "export" / "t2vturbo_student.json").read_text())
    assert meta["eta"] == 0.05


def test_two_stage_precompute_then_train_without_teacher_forward(tiny_teacher_dir, tmp_path):
    """Stage 1 writes teacher outputs into new shards; stage 2 trains from them (data.precomputed)."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    from data_recipes.toy_world import write_toy_shards

    src = tmp_path / "src"
    write_toy_shards(src, num_clips=4, shard_size=4, frames=4, size=32, seed=0, textured_fraction=0.0)
    pre = tmp_path / "pre"
    common = [
        f"model.path={tiny_teacher_dir}",
        "model.num_frames=4",
        "model.height=32",
        "model.width=32",
        "model.tiny.block_out_channels=[16,32]",
    ]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "t2vturbo.precompute",
            *common,
            "data=toy_shards",
            f"data.urls={src / 'toy-000000.tar'}",
            "data.resampled=false",
            f"precompute.out={pre}",
            f"output_dir={tmp_path / 'pre_run'}",
        ],
        cwd=REPO,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    shards = sorted(pre.glob("*.tar"))
    assert shards
    out = tmp_path / "train"
    launch_distill(
        TINY
        + common
        + [
            f"output_dir={out}",
            "data=precomputed",
            f"data.urls={shards[0]}",
            "train.max_steps=2",
            "train.micro_batch_size=2",
            "train.ckpt_every=0",
        ]
    )
    rows = [r for r in metrics(out) if "loss_cd" in r]
    assert len(rows) == 2 and all(r["loss_cd"] > 0 for r in rows)


def test_mixture_flags_reach_the_reward_term_and_motion_guidance(tiny_teacher_dir, tmp_path, monkeypatch):
    """data.kind=mixture in the trainer: rewards see only use_reward samples with their short
    captions, motion guidance only use_motion_guide samples; samples drawn per source are logged."""
    import webdataset as wds

    from data_recipes.toy_world import write_toy_shards
    from t2vturbo.guidance.motion import MotionGuidance
    from t2vturbo.train.data_feed import DataFeed
    from t2vturbo.train.reward_term import RewardTerm
    from t2vturbo.train.trainer import Trainer

    a = write_toy_shards(tmp_path / "a", 8, 8, frames=4, size=16, seed=1, textured_fraction=0.0)[0]
    b_src = write_toy_shards(tmp_path / "b_src", 8, 8, frames=4, size=16, seed=2, textured_fraction=0.0)[0]
    b = tmp_path / "b.tar"
    with open(b, "wb") as f:
        w = wds.TarWriter(f, encoder=False, mtime=0.0)
        for s in wds.WebDataset(b_src, shardshuffle=False):
            meta = {**json.loads(s["json"]), "short": "short " + s["txt"].decode()}
            w.write(
                {"__key__": s["__key__"], "mp4": s["mp4"], "txt": s["txt"], "json": json.dumps(meta).encode()}
            )
        w.close()
    seen_reward, seen_mg = [], []
    orig_reward, orig_guided = RewardTerm.__call__, MotionGuidance.guided

    def reward_call(self, x0, prompts, positions, use_reward=None):
        seen_reward.append((list(prompts), list(use_reward)))
        return orig_reward(self, x0, prompts, positions, use_reward)

    def guided(self, t, flags=None):
        seen_mg.append(None if flags is None else list(flags))
        return orig_guided(self, t, flags)

    monkeypatch.setattr(RewardTerm, "__call__", reward_call)
    monkeypatch.setattr(MotionGuidance, "guided", guided)
    cfg = validate(
        {
            "output_dir": str(tmp_path / "run"),
            "model": {"path": str(tiny_teacher_dir), "num_frames": 4, "height": 16, "width": 16},
            "data": {
                "kind": "mixture",
                "shuffle_buffer": 0,
                "sources": [
                    {"name": "a", "urls": a, "weight": 1.0, "use_reward": True, "use_motion_guide": False},
                    {
                        "name": "b",
                        "urls": str(b),
                        "weight": 1.0,
                        "use_reward": False,
                        "use_motion_guide": True,
                        "reward_caption_key": "short",
                    },
                ],
            },
            "reward": {"weights": {"toy_color": 1.0}, "image_frames": 1},
            "guidance": {"motion": True, "reference": "noise", "tau": 1.0},
            "train": {
                "log_every": 1,
                "progress": False,
                "micro_batch_size": 4,
                "max_steps": 2,
                "ckpt_every": 0,
                "eval_every": 0,
            },
        }
    )
    metas = []
    orig_batch = DataFeed.batch

    def batch(self, micro):
        out = orig_batch(self, micro)
        metas.append(out)
        return out

    monkeypatch.setattr(DataFeed, "batch", batch)
    Trainer(cfg).train()
    assert len(metas) == 2 and len(seen_reward) == 2
    for bt, (prompts, flags) in zip(metas, seen_reward):
        src = [c.startswith("short ") for c in bt["reward_caption"]]
        assert flags == [not s for s in src]  # source a: rewards on; b: off
        assert prompts == bt["reward_caption"]
        assert all(p.startswith("short ") == s for p, s in zip(prompts, src))
        assert bt["use_motion_guide"] == src  # b: guided, a: not
    # per step: the student's eta and the teacher's guidance both ask with the batch's flags
    assert seen_mg == [bt["use_motion_guide"] for bt in metas for _ in range(2)]
    rows = metrics(tmp_path / "run")
    last = rows[-1]
    assert last["data_drawn/a"] + last["data_drawn/b"] == 8


def test_skip_rate_above_the_limit_stops_with_the_last_checkpoint_intact(tiny_teacher_dir, tmp_path):
    """10 good clips, then 20 zero-byte ones: the run stops with an error naming the limit and the
    first bad keys; the checkpoints written before are complete and a rerun resumes from them."""
    import io
    import tarfile

    from data_recipes.toy_world import write_toy_shards
    from t2vturbo.train.trainer import Trainer

    shard_dir = tmp_path / "shards"
    write_toy_shards(shard_dir, num_clips=30, shard_size=30, frames=4, size=16, seed=0, textured_fraction=0.0)
    dst = shard_dir / "bad-000000.tar"
    with tarfile.open(shard_dir / "toy-000000.tar") as tin, tarfile.open(dst, "w") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read()
            if m.name.endswith(".mp4") and int(m.name[:8]) >= 10:
                data = b""
            info = tarfile.TarInfo(m.name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))
    out = tmp_path / "run"
    cfg = validate(
        {
            "output_dir": str(out),
            "model": {"path": str(tiny_teacher_dir), "num_frames": 4, "height": 16, "width": 16},
            "data": {
                "kind": "shards",
                "urls": str(dst),
                "resampled": False,
                "shuffle_buffer": 0,
                "max_skip_fraction": 0.2,
            },
            "train": {
                "log_every": 1,
                "progress": False,
                "micro_batch_size": 2,
                "max_steps": 20,
                "ckpt_every": 2,
                "eval_every": 0,
            },
        }
    )
    with pytest.raises(RuntimeError, match=r"max_skip_fraction=0.2.*00000010") as ei:
        Trainer(cfg).train()
    assert "empty_video" in str(ei.value)
    latest = (out / "checkpoints" / "latest").read_text().strip()
    state = json.loads((out / "checkpoints" / latest / "trainer_state.json").read_text())
    assert state["step"] == 4  # 10 good clips = 5 micro-batches; the 6th needs 2 more good ones
    t = Trainer(cfg)  # resumes from the intact checkpoint
    assert t.step == 4


def test_toy_teacher_stages_chain_and_stage_two_trains_the_noisy_end_only(tmp_path):
    """`make toy-teacher`'s three experiments, 2 steps each at test size: each stage starts from the
    previous stage's export, and stage 2 draws t >= 800 only (its batch means show it; the exact draw is
    unit-tested in test_cd_step.py)."""
    from t2vturbo.backbones import UNet3DBackbone

    stages = ["toy_teacher", "toy_teacher_direction", "toy_teacher_finish"]
    prev = None
    for i, e in enumerate(stages, 1):
        out = tmp_path / str(i)
        args = [
            f"experiment={e}",
            *TINY,
            f"output_dir={out}",
            "train.max_steps=2",
            "train.micro_batch_size=4",
            "train.ckpt_every=0",
            f"train.export_dir={out / 'export'}",
        ]
        if prev is not None:
            args.append(f"model.path={prev}")
        launch_distill(args)
        rows = [r for r in metrics(out) if "loss_diffusion" in r]
        assert [r["step"] for r in rows] == [1, 2]
        if i == 2:
            assert all(r["t_mean"] >= 800 for r in rows), rows
        prev = out / "export"
        meta = json.loads((prev / "t2vturbo_teacher.json").read_text())
        ran = yaml.safe_load((out / ".hydra" / "config.yaml").read_text())  # this machine's paths
        assert ran["experiment_name"] == e and ran["model"]["path"] == (
            None if i == 1 else str(tmp_path / str(i - 1) / "export")
        )
        # the export's copy is shareable: a path outside the working dir is cut to its name
        assert meta["config"]["experiment_name"] == e and meta["config"]["model"]["path"] == (
            None if i == 1 else "export"
        )
    assert UNet3DBackbone.from_pretrained(prev).prediction_type == "sample"
