"""Dataset mixtures (t2vturbo/data/mixture.py): weights, per-source flags, determinism, resume,
config validation, and the per-sample motion-guidance flag."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from data_recipes.toy_world import write_toy_shards
from t2vturbo.config import ConfigError, validate
from t2vturbo.data.mixture import MixtureSource, MixtureStream
from t2vturbo.data.shards import ClipStream, collate_clips

F, S = 4, 16


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory):
    """Set A (3 shards x 8 clips) and set B (2 shards x 8 clips, with a short caption in the json
    and one sample whose json opts out of rewards)."""
    root = tmp_path_factory.mktemp("mix")
    a = write_toy_shards(root / "a", 24, 8, frames=F, size=S, seed=1, textured_fraction=0.0)
    b_src = write_toy_shards(root / "b_src", 16, 8, frames=F, size=S, seed=2, textured_fraction=0.0)
    b = []
    for url in b_src:  # rewrite B's json: + short_caption, sample 3 opts out of rewards
        out = root / "b" / Path(url).name
        out.parent.mkdir(exist_ok=True)
        with open(out, "wb") as f:
            w = wds.TarWriter(f, encoder=False, mtime=0.0)
            for s in wds.WebDataset(url, shardshuffle=False):
                meta = json.loads(s["json"])
                meta["short_caption"] = "short " + s["txt"].decode().split()[1]
                if s["__key__"] == "00000003":
                    meta["use_reward"] = False
                w.write(
                    {
                        "__key__": s["__key__"],
                        "mp4": s["mp4"],
                        "txt": s["txt"],
                        "json": json.dumps(meta).encode(),
                    }
                )
            w.close()
        b.append(str(out))
    return a, b


def _mix(two_sets, weights=(3.0, 1.0), seed=0, resampled=True, batch=1, **src_kw):
    a, b = two_sets

    def cs(urls, salt):
        return ClipStream(
            urls,
            F,
            S,
            seed=seed + salt,
            shuffle_buffer=4,
            resampled=resampled,
            rank=0,
            world_size=1,
            loader_batch_size=batch,
        )

    return MixtureStream(
        [
            MixtureSource("a", cs(a, 1), weights[0], use_reward=False, use_motion_guide=True),
            MixtureSource(
                "b",
                cs(b, 2),
                weights[1],
                use_reward=True,
                use_motion_guide=False,
                reward_caption_key=src_kw.get("reward_caption_key", "short_caption"),
            ),
        ],
        seed=seed,
        loader_batch_size=batch,
    )


def _ids(items):
    return [(it["meta"]["source"], it["url"].rsplit("/", 1)[-1], it["key"]) for it in items]


def test_sources_follow_the_seeded_draws_and_the_weights(two_sets):
    mix = _mix(two_sets)
    items = list(itertools.islice(iter(mix), 200))
    draws = list(itertools.islice(mix.source_draws(0, 1), 200))
    assert [it["meta"]["source"] for it in items] == ["ab"[i] for i in draws]
    frac_a = sum(it["meta"]["source"] == "a" for it in items) / len(items)
    assert abs(frac_a - 0.75) < 0.1, frac_a  # binomial sd 0.031
    assert mix.skip_stats()["by_source"] == {
        "a": Counter(d for d in draws)[0],
        "b": Counter(d for d in draws)[1],
    }
    # each source's samples come from that source's shards only
    a_urls, b_urls = ({Path(u).name for u in s} for s in two_sets)
    assert {Path(it["url"]).parent.name for it in items if it["meta"]["source"] == "a"} == {"a"}
    assert {Path(it["url"]).parent.name for it in items if it["meta"]["source"] == "b"} == {"b"}
    assert a_urls and b_urls
    # zero weight: never drawn
    zero = list(itertools.islice(iter(_mix(two_sets, weights=(0.0, 1.0))), 20))
    assert {it["meta"]["source"] for it in zero} == {"b"}


def test_flags_and_reward_caption(two_sets):
    items = list(itertools.islice(iter(_mix(two_sets, weights=(1.0, 1.0))), 60))
    for it in items:
        m = it["meta"]
        if m["source"] == "a":
            assert m["use_reward"] is False and m["use_motion_guide"] is True and "reward_caption" not in m
        else:
            assert m["use_motion_guide"] is False
            assert m["use_reward"] is (it["key"] != "00000003")  # the sample's own json opt-out wins
            assert m["reward_caption"] == "short " + it["caption"].split()[1]
    assert any(it["key"] == "00000003" and it["meta"]["source"] == "b" for it in items)
    batch = collate_clips(items[:4])
    assert [m["source"] for m in batch["meta"]] == [it["meta"]["source"] for it in items[:4]]


def test_deterministic_and_resumes_exactly(two_sets):
    full = _ids(itertools.islice(iter(_mix(two_sets, seed=5)), 40))
    assert full == _ids(itertools.islice(iter(_mix(two_sets, seed=5)), 40))
    assert full != _ids(itertools.islice(iter(_mix(two_sets, seed=6)), 40))
    m = _mix(two_sets, seed=5)
    m.load_state_dict({"epoch": 0, "samples_seen": 17})
    assert _ids(itertools.islice(iter(m), 23)) == full[17:]
    assert m.skip_stats()["fast_forwarded"] == 17


def test_resume_with_two_dataloader_workers(two_sets):
    def run(skip, n):
        m = _mix(two_sets, seed=3, batch=2)
        if skip:
            m.load_state_dict({"epoch": 0, "samples_seen": skip})
        # spawned workers: a fork of a process with other threads (a pytest-xdist worker's) can deadlock the child
        dl = DataLoader(
            m,
            batch_size=2,
            num_workers=2,
            collate_fn=collate_clips,
            multiprocessing_context="spawn",
            timeout=300,
        )
        out = []
        for b in itertools.islice(dl, n):
            out += list(zip([x["source"] for x in b["meta"]], b["key"], b["url"]))
        return out

    full = run(0, 8)
    assert run(6, 5) == full[6:16]


def test_finite_source_ends_the_epoch(two_sets):
    mix = _mix(two_sets, weights=(1.0, 1.0), resampled=False)
    items = list(iter(mix))
    per = Counter(it["meta"]["source"] for it in items)
    assert per["a"] == 24 or per["b"] == 16  # one source was exhausted, then the epoch ended
    assert len({(it["url"], it["key"]) for it in items}) == len(items)  # no repeats within the epoch


def test_mixture_config_validation():
    src = {"name": "vg", "urls": "/d/vg-{000000..000009}.tar", "weight": 0.5}
    cfg = validate(
        {"data": {"kind": "mixture", "sources": [src, {**src, "name": "wv", "use_reward": False}]}}
    )
    assert [s.name for s in cfg.data.sources] == ["vg", "wv"] and cfg.data.sources[1].use_reward is False
    with pytest.raises(ConfigError, match="needs data.sources"):
        validate({"data": {"kind": "mixture"}})
    with pytest.raises(ConfigError, match="use_rewards"):
        validate({"data": {"kind": "mixture", "sources": [{**src, "use_rewards": True}]}})
    with pytest.raises(ConfigError, match="unique"):
        validate({"data": {"kind": "mixture", "sources": [src, src]}})
    with pytest.raises(ConfigError, match=r"sources\[0\].*needs urls"):
        validate({"data": {"kind": "mixture", "sources": [{"name": "x"}]}})
    with pytest.raises(ConfigError, match="only used with data.kind=mixture"):
        validate({"data": {"kind": "shards", "urls": "x.tar", "sources": [src]}})


def test_named_recipe_experiments_compose():
    """experiment=t2v_turbo_v2_vg_wv has the paper's VG+WV shape; experiment=toy_mixture runs here."""
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        vg = compose(
            "config",
            overrides=[
                "experiment=t2v_turbo_v2_vg_wv",
                "model.path=/m",  # model=modelscope: a teacher folder is required
                "data.sources.0.urls=/d/vg.tar",
                "data.sources.1.urls=/d/wv.tar",
            ],
        )
        toy = compose("config", overrides=["experiment=toy_mixture"])
    v = validate(vg)
    assert v.data.kind == "mixture" and [s.name for s in v.data.sources] == ["vidgen", "webvid"]
    assert [s.weight for s in v.data.sources] == [0.5, 0.5]
    assert [s.use_reward for s in v.data.sources] == [False, True] and v.guidance.motion
    t = validate(toy)
    assert t.data.kind == "mixture" and len(t.data.sources) == 2


def test_motion_guide_flag_masks_guided_samples():
    from t2vturbo.diffusion import ddim_grid
    from t2vturbo.guidance.motion import MotionGuidance

    grid = ddim_grid(10, 1000)
    mg = MotionGuidance.__new__(MotionGuidance)  # guided() needs only the grid and tau
    mg.grid, mg.tau = torch.as_tensor(grid, dtype=torch.long), 0.5
    t = torch.as_tensor([grid[9], grid[9], grid[1]])
    assert mg.guided(t).tolist() == [True, True, False]
    assert mg.guided(t, [True, False, True]).tolist() == [True, False, False]
    assert mg.student_eta(t, torch.full((3,), 0.05), [False, True, True]).tolist() == pytest.approx(
        [0.0, 0.05, 0.0]
    )
    with pytest.raises(ValueError, match="2 flags for a batch of 3"):
        mg.guided(t, [True, False])
