"""Two-stage mode: ``t2vturbo.precompute`` (stage 1) and ``ConsistencyDistillation`` over a
``StoredTeacher`` (stage 2) against online consistency distillation (the same step over an ``OnlineTeacher``).

6 toy clips (4 frames, 32 px) in 2 source shards, a tiny teacher folder (pixel-unshuffle VAE, blocks
16/32), CPU, one thread. The precomputed shards are read back with ClipStream (they keep the mp4).
"""

from __future__ import annotations

import copy
import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from data_recipes.toy_world import write_toy_shards
from t2vturbo.backbones.unet3d import UNet3DBackbone, write_tiny_model_dir
from t2vturbo.data.shards import ClipStream, collate_clips
from t2vturbo.diffusion import Parameterisation
from t2vturbo.guidance import MotionGuidance
from t2vturbo.precompute import precompute, split_config
from t2vturbo.train.objectives import ConsistencyDistillation
from t2vturbo.train.teacher import StoredTeacher

N_CLIPS, FRAMES, SIZE = 6, 4, 32
ETA = 0.05
LAM = 5.0  # 100x the reference: a random tiny teacher has small scores; makes their effect visible


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    shards = write_toy_shards(root / "src", num_clips=N_CLIPS, shard_size=3, frames=FRAMES, size=SIZE, seed=0)
    model = write_tiny_model_dir(root / "teacher", vae="pixel_unshuffle", block_out_channels=(16, 32))
    return root, shards, model


def _raw_cfg(world, motion: bool, out: Path, dtype="fp32", **pre):
    root, shards, model = world
    raw = {
        "seed": 0,
        "model": {"path": str(model), "num_frames": FRAMES, "height": SIZE, "width": SIZE},
        "data": {
            "kind": "shards",
            "urls": "::".join(str(s) for s in shards),
            "resampled": False,
            "shuffle_buffer": 0,
        },
        "objective": {"num_ddim_timesteps": 50, "w_min": 2.0, "w_max": 6.0},
        "guidance": {"motion": motion, "eta": ETA, "reference": "noise", "tau": 0.5, "lam": LAM},
        "precompute": {"out": str(out), "dtype": dtype, "shard_size": 2, **pre},
    }
    return OmegaConf.create(raw)


def _run_all_chunks(world, motion, out, dtype="fp32", k=2):
    summaries = []
    for i in range(k):
        cfg, pre = split_config(
            _raw_cfg(world, motion, out, dtype, shard_index=i, num_shard_lists=k, batch_size=3)
        )
        summaries.append(precompute(cfg, pre))
    return cfg, summaries


def _read_pre(out: Path):
    urls = sorted(str(p) for p in out.glob("*.tar"))
    items = list(ClipStream(urls, FRAMES, SIZE, shuffle_buffer=0, resampled=False, rank=0, world_size=1))
    items.sort(key=lambda it: it["meta"]["precompute"]["position"])
    return items


@pytest.fixture(scope="module")
def nets(world):
    _, _, model = world
    bb = UNet3DBackbone.from_pretrained(model)
    torch.manual_seed(0)
    student = bb.make_student()
    with torch.no_grad():  # a student that differs from its target (as after some training)
        for p in student.parameters():
            p.add_(0.01 * torch.randn_like(p))
    target = copy.deepcopy(bb.make_student())
    return bb, student, target


def _online_loss(cfg, bb, student, target, motion):
    stream = ClipStream(cfg.data.urls, FRAMES, SIZE, shuffle_buffer=0, resampled=False, rank=0, world_size=1)
    b = collate_clips(list(stream))
    positions = list(range(N_CLIPS))
    obj = ConsistencyDistillation(cfg.objective, bb, cfg.seed, eta=ETA)
    if motion:
        obj.motion_guidance = MotionGuidance.from_config(cfg.guidance, bb, obj.grid, seed=cfg.seed)
    obj.target = target
    d = obj.draws(positions, bb.latent_shape(FRAMES, SIZE, SIZE))
    loss, logs = obj.loss(student, {"video": b["video"], "caption": b["caption"], "positions": positions})
    return loss, d, logs


def _pre_loss(cfg, out, motion, student, target):
    items = _read_pre(out)
    b = collate_clips(items)
    positions = [it["meta"]["precompute"]["position"] for it in items]
    assert positions == list(range(N_CLIPS))
    param = Parameterisation.from_model_dir(cfg.model.path)  # no teacher weights are read
    obj = ConsistencyDistillation(
        cfg.objective,
        param,
        cfg.seed,
        StoredTeacher(param, cfg.objective.guidance_form, motion, cfg.guidance.lam),
        eta=ETA,
    )
    obj.target = target
    batch = {"pre": b["pre"], "positions": positions, "caption": b["caption"], "meta": b["meta"]}
    loss, logs = obj.loss(student, batch)
    return loss, b, logs


@pytest.mark.parametrize("motion", [False, True], ids=["cfg", "motion"])
def test_precomputed_loss_equals_online(world, nets, tmp_path, motion):
    bb, student, target = nets
    out = tmp_path / "pre"
    cfg, summaries = _run_all_chunks(world, motion, out)
    assert sum(s["clips"] for s in summaries) == N_CLIPS
    assert summaries[1]["chunk"] == [1, 2]
    on, d, on_logs = _online_loss(cfg, bb, student, target, motion)
    pre, b, pre_logs = _pre_loss(cfg, out, motion, student, target)
    # the stored draws are those of online training at the same positions
    assert torch.equal(b["pre"]["n"].long(), d.index)
    assert b["pre"]["z_t"].dtype == torch.float32
    if motion:
        mg = b["pre"]["mg"].bool()
        assert 0 < int(mg.sum()) < N_CLIPS, "want guided and unguided clips"
        assert torch.all(b["pre"]["score"][~mg] == 0) and bool(b["pre"]["score"][mg].abs().sum() > 0)
        assert pre_logs["mg_fraction"] == pytest.approx(on_logs["mg_fraction"])
        # the stored scores matter: ignoring them changes the loss well beyond the tolerance
        no_mg, _, _ = _pre_loss(cfg, out, False, student, target)
        assert abs(float(no_mg.detach()) - float(pre.detach())) > 1e-4 * abs(float(pre.detach()))
    torch.testing.assert_close(pre.detach(), on.detach(), rtol=1e-5, atol=0)
    # gradients flow into the student
    pre.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    student.zero_grad(set_to_none=True)


def test_fp16_storage_close_not_identical(world, nets, tmp_path):
    bb, student, target = nets
    cfg32, _ = _run_all_chunks(world, True, tmp_path / "p32", "fp32")
    cfg16, _ = _run_all_chunks(world, True, tmp_path / "p16", "fp16")
    l32, _, _ = _pre_loss(cfg32, tmp_path / "p32", True, student, target)
    l16, b16, _ = _pre_loss(cfg16, tmp_path / "p16", True, student, target)
    assert b16["pre"]["out_c"].dtype == torch.float16 and b16["pre"]["n"].dtype == torch.int64
    assert float(l16.detach()) != float(l32.detach())
    torch.testing.assert_close(l16.detach(), l32.detach(), rtol=2e-2, atol=0)


def test_restart_skips_finished_and_no_pickle(world, tmp_path):
    out = tmp_path / "pre"
    cfg, first = _run_all_chunks(world, False, out)
    tars = sorted(out.glob("*.tar"))
    assert len(tars) == 4  # 2 source shards of 3 clips, 2 clips per output shard
    mtimes = {p: p.stat().st_mtime_ns for p in tars}
    _, again = _run_all_chunks(world, False, out)
    assert all(not s["written"] for s in again)
    assert {p: p.stat().st_mtime_ns for p in tars} == mtimes
    # a source shard interrupted after its first part: only the missing part is computed
    src0 = Path(cfg.data.urls.split("::")[0]).name.rsplit(".", 1)[0]
    (out / f"{src0}.done.json").unlink()
    (out / f"{src0}-0001.tar").unlink()
    _, part = _run_all_chunks(world, False, out)
    assert [Path(p).name for p in part[0]["written"]] == [f"{src0}-0001.tar"]
    assert (out / f"{src0}-0000.tar").stat().st_mtime_ns == mtimes[out / f"{src0}-0000.tar"]
    assert not list(out.glob(".*.tmp-*"))
    # only mp4 / txt / json / safetensors members; the tensors load with safetensors (no pickle)
    from safetensors.torch import load

    for p in sorted(out.glob("*.tar")):
        with tarfile.open(p) as tf:
            for m in tf.getmembers():
                ext = m.name.split(".", 1)[1]
                assert ext in ("mp4", "txt", "json", "pre.safetensors"), m.name
                data = tf.extractfile(m).read()
                if ext == "pre.safetensors":
                    t = load(data)
                    assert set(t) == {"n", "z_t", "out_c", "out_u", "score", "mg", "cond"}
                elif ext == "json":
                    meta = json.loads(data)["precompute"]
                    assert {
                        "short_caption",
                        "n",
                        "t_start",
                        "t_end",
                        "mg",
                        "position",
                        "src_url",
                        "src_key",
                    } <= set(meta)


def test_meta_mismatch_is_an_error(world, nets, tmp_path):
    _, student, target = nets
    out = tmp_path / "pre"
    cfg, _ = _run_all_chunks(world, False, out)
    with pytest.raises(ValueError, match="without motion guidance"):
        _pre_loss(cfg, out, True, student, target)
    cfg.objective.num_ddim_timesteps = 25
    with pytest.raises(ValueError, match="num_ddim_timesteps=50"):
        _pre_loss(cfg, out, False, student, target)


def test_unsafe_source_keys_do_not_become_unsafe_member_names(world, tmp_path):
    """A source shard whose keys climb out of the folder (``../x``) or are absolute (``/abs/x``): the precomputed
    shard's member names stay relative and inside it; the source key is kept in the json."""
    from t2vturbo.precompute import safe_member_key

    assert safe_member_key("../../etc/x") == "etc/x" and safe_member_key("/abs/./y") == "abs/y"
    assert safe_member_key("clip-00/0001") == "clip-00/0001" and safe_member_key("..") == "_"
    root, shards, model = world
    src = tmp_path / "evil-000000.tar"
    with tarfile.open(shards[0]) as tin, tarfile.open(src, "w") as tout:
        keys = {}
        for m in tin.getmembers():
            stem, ext = m.name.split(".", 1)
            new = keys.setdefault(stem, ["../../escaped", "/abs/clip", "ok/clip"][len(keys) % 3])
            data = tin.extractfile(m).read()
            m.name = f"{new}.{ext}"
            tout.addfile(m, io.BytesIO(data))
    raw = _raw_cfg(world, False, tmp_path / "out")
    raw["data"]["urls"] = str(src)
    cfg, pre = split_config(raw)
    summary = precompute(cfg, pre)
    names = [n for p in summary["written"] for n in tarfile.open(p).getnames()]
    assert names and not any(n.startswith("/") or ".." in n.split("/") for n in names), names
    assert {n.split(".", 1)[0] for n in names} == {"escaped", "abs/clip", "ok/clip"}
