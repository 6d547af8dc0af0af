"""The toy worlds by name (t2vturbo/data/worlds.py) and the pieces that pick one: the trainer's data feed, the
shard writer (``--world crowd``), the tiny teacher's tokenizer words and VAE shift, and ToyBench's world choice."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import webdataset as wds

from data_recipes.toy_world import main as shards_main
from data_recipes.toy_world import write_toy_shards
from t2vturbo.backbones.pixel_vae import PixelUnshuffleVAE
from t2vturbo.backbones.unet3d import TOY_WORDS, tiny_components
from t2vturbo.data import crowd, toy
from t2vturbo.data.worlds import WORLDS, get_world, world_of_prompt, world_of_teacher
from t2vturbo.eval import toybench as tb


def crowd_clip(prompt: str, seed: int) -> np.ndarray:
    """A clean crowd clip for ``prompt``: the generator's own draws, rejected until count, direction and speed class
    match (the colour does not change the geometry)."""
    target = crowd.parse_caption(prompt)
    rng = np.random.default_rng([seed, 23])
    while True:
        a = crowd.sample_attributes(rng)
        if (a.count, a.direction, a.speed_class) == (
            target["count"],
            target["direction"],
            target["speed_class"],
        ):
            return crowd.render_clip(dataclasses.replace(a, color=target["color"]))


def test_world_of_prompt_and_registry():
    assert world_of_prompt("two red balls moving left fast").name == "crowd"
    assert world_of_prompt("a red circle moving left").name == "toy"
    with pytest.raises(ValueError, match="not a toy-world caption.*two red balls"):
        world_of_prompt("a cat playing piano")
    with pytest.raises(ValueError, match="unknown toy world 'cats'"):
        get_world("cats")
    for w in WORLDS.values():  # every held-out prompt belongs to its own world, and only to it
        assert {world_of_prompt(p).name for p in w.held_out_prompts()} == {w.name}
    assert len(WORLDS["toy"].held_out_prompts()) == 60 and len(WORLDS["crowd"].held_out_prompts()) == 108


def test_world_of_teacher(tmp_path):
    assert world_of_teacher(None).name == "toy"
    assert world_of_teacher(None, {"config": {"data": {"world": "crowd"}}}).name == "crowd"
    assert world_of_teacher(None, {"world": "crowd"}).name == "crowd"
    (tmp_path / "MANIFEST.json").write_text(json.dumps({"world": "crowd"}))
    assert world_of_teacher(tmp_path).name == "crowd"
    assert (
        world_of_teacher(tmp_path, {"config": {"data": {"world": "toy"}}}).name == "toy"
    )  # the export's own wins


def test_data_feed_builds_the_configured_world():
    from types import SimpleNamespace

    from t2vturbo.train.data_feed import build_dataset

    d = SimpleNamespace(kind="toy", world="crowd", num_samples=10, textured=False, directions=None)
    cfg = SimpleNamespace(data=d, model=SimpleNamespace(height=32, width=32, num_frames=8), seed=3)
    ds = build_dataset(cfg)
    assert isinstance(ds, crowd.CrowdClipDataset)
    assert crowd.parse_caption(ds[4]["caption"])
    assert torch.equal(ds[4]["video"], crowd.CrowdClipDataset(seed=3)[4]["video"])
    d.world = "toy"
    assert isinstance(build_dataset(cfg), toy.ToyClipDataset)


def test_crowd_shards_hold_the_crowd_dataset_clips(tmp_path):
    (shard,) = write_toy_shards(
        tmp_path, 6, 6, frames=8, size=32, seed=4, textured_fraction=0.0, world="crowd"
    )
    idx = json.loads((tmp_path / "index.json").read_text())
    assert idx["args"]["world"] == "crowd" and idx["command"].endswith("--world crowd")
    ds = crowd.CrowdClipDataset(seed=4)
    from t2vturbo.data.video_io import read_video

    for i, s in enumerate(wds.WebDataset(shard, shardshuffle=False)):
        meta = json.loads(s["json"])
        assert meta["source"] == "crowd" and s["txt"].decode() == ds[i]["caption"]
        assert meta["attributes"]["count"] == ds.attributes(i)[0].count
        (tmp_path / "c.mp4").write_bytes(s["mp4"])
        frames = read_video(tmp_path / "c.mp4")  # lossless: within the colour conversion's round-off
        want = crowd.render_clip(*ds.attributes(i)[:1])
        assert np.abs(frames.astype(int) - want.astype(int)).max() <= 1
    # the toy world's records are unchanged (no "world" key), so existing toy shards stay up to date
    write_toy_shards(tmp_path / "t", 2, 2, frames=4, size=16, seed=0, textured_fraction=0.0)
    rec = json.loads((tmp_path / "t" / "index.json").read_text())
    assert "world" not in rec["args"] and "--world" not in rec["command"]
    with pytest.raises(ValueError, match="unknown toy world"):
        write_toy_shards(tmp_path / "x", 2, 2, world="cats")
    with pytest.raises(SystemExit):
        shards_main(
            ["--out", str(tmp_path / "y"), "--num-clips", "1", "--shard-size", "1", "--world", "cats"]
        )


def test_tiny_teacher_words_and_vae_shift():
    *_, tok, _ = tiny_components(vae="pixel_unshuffle", extra_words=crowd.CROWD_WORDS)
    ids = [tok.convert_tokens_to_ids(w) for w in (*TOY_WORDS, *crowd.CROWD_WORDS)]
    assert ids == list(range(4, 4 + len(TOY_WORDS) + len(crowd.CROWD_WORDS)))  # the toy ids are unchanged
    unk = tok.unk_token_id
    for p in crowd.held_out_prompts():
        assert unk not in tok(p).input_ids, p
    # the crowd words are known to the crowd teacher's tokenizer only
    assert tiny_components(vae="pixel_unshuffle")[3].convert_tokens_to_ids("balls") == unk

    vae = PixelUnshuffleVAE(4, scaling_factor=4.0, shift=-0.7)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    z = vae.encode(x).latent_dist.mode()
    assert torch.allclose(
        z, torch.nn.functional.pixel_unshuffle(x + 0.7, 4)
    )  # the shift is applied before unshuffle
    assert torch.allclose(vae.decode(z).sample, x, atol=1e-6)


def test_pixel_vae_shift_round_trips_through_save(tmp_path):
    PixelUnshuffleVAE(2, scaling_factor=3.0, shift=-0.5).save_pretrained(tmp_path)
    v = PixelUnshuffleVAE.from_pretrained(tmp_path)
    assert (v.factor, v.config.scaling_factor, v.shift) == (2, 3.0, -0.5)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.pop("shift")
    (tmp_path / "config.json").write_text(json.dumps(cfg))  # a folder written before the shift: 0
    assert PixelUnshuffleVAE.from_pretrained(tmp_path).shift == 0.0


def test_toybench_scores_crowd_prompts_with_the_crowd_metrics(monkeypatch):
    def perfect(bb, prompts, seed=0, **kw):
        vids = np.stack([crowd_clip(p, seed) for p in prompts])
        return torch.from_numpy(vids).permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0

    monkeypatch.setattr(tb, "sample_teacher", perfect)
    prompts = tb.select_prompts(12, seed=1, world="crowd")
    assert prompts == [crowd.held_out_prompts()[i] for i in np.random.default_rng(1).permutation(108)[:12]]
    res = tb.run_toybench(object(), None, steps=2, prompts=prompts, batch_size=5)
    assert res["world"] == "crowd" and res["score"] == 1.0
    assert set(tb.WORLD_ACCURACY_KEYS["crowd"]) <= set(res) and "shape_acc" not in res
    row = res["per_prompt"][prompts[0]]
    assert row == {
        "score": 1.0,
        "color_acc": 1.0,
        "count_acc": 1.0,
        "direction_acc": 1.0,
        "speed_acc": 1.0,
        "clips": 1,
    }
    line = tb.format_summary(res)
    assert "count=1.000" in line and "speed=1.000" in line and "shape" not in line
    # without prompts, the world comes from the meta (an export's training config)
    res2 = tb.run_toybench(
        object(), None, steps=2, meta={"config": {"data": {"world": "crowd"}}}, batch_size=64
    )
    assert res2["num_prompts"] == 108 and res2["world"] == "crowd"
    with pytest.raises(ValueError, match="mix toy worlds"):
        tb.run_toybench(object(), None, prompts=[prompts[0], "a red circle moving left"])
    toy_res = dict(
        res,
        per_prompt={
            p: {"score": 1.0, "color_acc": 1.0, "shape_acc": 1.0, "direction_acc": 1.0} for p in prompts
        },
    )
    with pytest.raises(ValueError, match="different toy worlds"):
        tb.paired_difference(res, toy_res)


def test_model_card_names_the_world():
    from t2vturbo.hub import _data_line

    assert _data_line({"data": {"kind": "toy", "world": "crowd"}}).startswith(
        "the crowd world, rendered on the fly"
    )
    assert _data_line({"data": {"kind": "toy"}}).startswith("the toy world, rendered on the fly")


def test_toy_rewards_read_crowd_captions():
    """The toy colour and motion rewards score crowd prompts (both worlds name a colour and a direction): the right
    colour / direction beats every wrong one on clean crowd clips; an unparsable prompt still scores 0."""
    from t2vturbo.rewards import build

    color, motion = build("toy_color"), build("toy_motion")
    for true in crowd.COLORS:
        prompt = f"two {true} balls moving right fast"
        clip = torch.from_numpy(crowd_clip(prompt, 5)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        prompts = [f"two {c} balls moving right fast" for c in crowd.COLORS]
        r = color(clip.unsqueeze(0).expand(len(prompts), -1, -1, -1, -1), prompts)
        i = list(crowd.COLORS).index(true)
        assert r[i] > -0.01 and (torch.cat([r[:i], r[i + 1 :]]) < r[i] - 0.5).all(), (true, r)
    clip = (
        torch.from_numpy(crowd_clip("three red balls moving up slow", 6)).permute(0, 3, 1, 2).float() / 127.5
        - 1
    )
    dirs = ["moving up slow", "moving down slow", "moving left slow", "moving right slow", "standing still"]
    r = motion(clip.unsqueeze(0).expand(len(dirs), -1, -1, -1, -1), [f"three red balls {d}" for d in dirs])
    assert r[0] > 0.3 and (r[1:] < r[0] - 0.5).all(), r
    assert color(clip.unsqueeze(0), ["a cat"]).item() == 0.0
