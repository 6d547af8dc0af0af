"""Component tests for ToyBench (t2vturbo.eval.toy_metrics / t2vturbo.eval.toybench)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from t2vturbo.data.toy import (
    BACKGROUND,
    COLORS,
    DIRECTIONS,
    SHAPES,
    SPEED_RANGE,
    ToyAttributes,
    ToyClipDataset,
    held_out_prompts,
    parse_caption,
    render_clip,
    sample_attributes,
    shape_size_range,
)
from t2vturbo.eval import toy_metrics as tm
from t2vturbo.eval import toybench as tb

torch.set_num_threads(1)

F, S = 8, 32
SEEDS = (0, 1, 2)
PROMPTS = held_out_prompts()
MOVING = [p for p in PROMPTS if parse_caption(p)["direction"] != "still"]


def gt_clip(prompt: str, seed: int, textured: bool = False, num_frames: int = F, size: int = S):
    """A ground-truth generator clip for ``prompt``: attributes drawn by the generator itself
    (rejection on the direction; colour and shape do not affect the geometry)."""
    target = parse_caption(prompt)
    rng = np.random.default_rng([seed, PROMPTS.index(prompt) if prompt in PROMPTS else 0, 17])
    while True:
        a = sample_attributes(rng, size=size, num_frames=num_frames)
        if a.direction == target["direction"]:
            break
    a = dataclasses.replace(a, color=target["color"], shape=target["shape"])
    return render_clip(a, num_frames, size, textured=textured, seed=seed), a


def _attrs(color="red", shape="circle", direction="still", speed=0.0, size=3, start=(15.3, 16.7)):
    return ToyAttributes(color=color, shape=shape, direction=direction, speed=speed, size=size, start=start)


def _acc(results, key):
    return float(np.mean([r[key] for r in results]))


# --------------------------------------------------------------------------- clean clips


@pytest.mark.parametrize("textured", [False, True])
def test_clean_clips_all_prompts_are_recognised(textured):
    results = []
    for p in PROMPTS:
        for s in SEEDS:
            clip, _ = gt_clip(p, s, textured)
            results.append(tm.score_clip(clip, p))
    agg = tm.aggregate(results)
    assert agg["num_clips"] == len(PROMPTS) * len(SEEDS)
    for k in ("color_acc", "shape_acc", "direction_acc", "score"):
        assert agg[k] >= 0.97, (k, agg, [r for r in results if r["score"] < 1][:5])
    assert agg["detected_frac"] == 1.0
    assert agg["background_clean"] >= 0.99
    assert agg["flicker"] > 0.95
    # 4 of 5 directions move.
    assert agg["moving_frac"] == pytest.approx(0.8, abs=0.02)


def test_smallest_and_largest_shapes_at_many_offsets():
    """Radius 3 (the smallest the generator uses for 32 px frames) is the hard case."""
    r_lo, r_hi = shape_size_range(S)
    assert (r_lo, r_hi) == (3, 6)
    rng = np.random.default_rng(0)
    hits = {s: [] for s in SHAPES}
    for shape in SHAPES:
        for radius in (r_lo, r_hi):
            for _ in range(12):
                start = (float(rng.uniform(10, 21)), float(rng.uniform(10, 21)))
                clip = render_clip(_attrs("green", shape, "still", 0.0, radius, start), F, S)
                hits[shape].append(tm.predict_shape(clip) == shape)
                # A single frame suffices too (no help from the vote).
                hits[shape].append(tm.classify_shape_mask(tm.object_weights(clip[:1])[0][0]) == shape)
    for shape, h in hits.items():
        assert np.mean(h) == 1.0, shape


def test_min_speed_moves_and_still_is_still():
    lo, hi = SPEED_RANGE
    # Threshold justification: far below the slowest travel (also for 4-frame clips), above jitter.
    assert 1.0 < tm.STILL_DISPLACEMENT_PX < lo * (4 - 1) < lo * (F - 1)
    for d in DIRECTIONS:
        for speed in (0.0,) if d == "still" else (lo, hi):
            for shape in SHAPES:
                dx, dy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}[d]
                travel = speed * (F - 1)
                start = (15.5 - dx * travel / 2 + 0.37, 15.5 - dy * travel / 2 + 0.21)
                clip = render_clip(_attrs("blue", shape, d, speed, 3, start), F, S)
                assert tm.predict_direction(clip) == d, (d, speed, shape)
                dyn = tm.dynamic_degree(clip)
                if d == "still":
                    assert dyn == pytest.approx(0.0, abs=1e-9)
                else:
                    assert dyn == pytest.approx(speed, abs=0.3), (d, speed, shape, dyn)


def test_dynamic_degree_tracks_speed_on_dataset_clips():
    ds = ToyClipDataset(60, seed=4, textured=True)
    errs, still = [], []
    for i in range(len(ds)):
        a, bg = ds.attributes(i)
        dyn = tm.dynamic_degree(render_clip(a, F, S, textured=True, seed=bg))
        (still if a.direction == "still" else errs).append(
            dyn if a.direction == "still" else abs(dyn - a.speed)
        )
    assert still and errs
    assert max(still) < 1e-9
    assert max(errs) < 0.3 and np.mean(errs) < 0.1


def test_float_tensor_input_matches_uint8():
    ds = ToyClipDataset(8, seed=1, textured=True)
    for i in range(len(ds)):
        item = ds[i]
        a, bg = ds.attributes(i)
        clip = render_clip(a, F, S, textured=True, seed=bg)
        assert np.array_equal(tm.to_uint8_clip(item["video"]), clip)
        r_t, r_u = tm.score_clip(item["video"], item["caption"]), tm.score_clip(clip, item["caption"])
        assert r_t == r_u
        assert r_t["score"] == 1.0
        # A parsed-caption dict works as the prompt too.
        assert tm.score_clip(clip, parse_caption(item["caption"]))["score"] == 1.0


def test_predictors_on_a_known_clip():
    clip = render_clip(_attrs("yellow", "triangle", "up", 2.0, 4, (16.2, 24.4)), F, S, textured=True, seed=3)
    assert tm.predict_color(clip) == "yellow"
    assert tm.predict_shape(clip) == "triangle"
    assert tm.predict_direction(clip) == "up"
    assert tm.dynamic_degree(clip) == pytest.approx(2.0, abs=0.3)
    assert tm.flicker(clip) == pytest.approx(1 - np.abs(np.diff(clip.astype(np.int16), axis=0)).mean() / 255)
    assert tm.background_cleanliness(clip) == 1.0
    fg = tm.foreground_mask(clip)
    assert np.array_equal(fg, np.all(clip == np.asarray(COLORS["yellow"], np.uint8), axis=-1))


# --------------------------------------------------------------------------- corrupted clips


def _dataset(textured=True, seeds=(0,)):
    return [(p, *gt_clip(p, s, textured)) for p in PROMPTS for s in seeds]


def test_pure_noise_and_solid_clips_score_zero():
    rng = np.random.default_rng(0)
    solids = [BACKGROUND, (0, 0, 0), (255, 255, 255), *COLORS.values()]
    for i, p in enumerate(PROMPTS):
        noise = rng.integers(0, 256, (F, S, S, 3), dtype=np.uint8)
        solid = np.broadcast_to(np.asarray(solids[i % len(solids)], np.uint8), (F, S, S, 3)).copy()
        for clip in (noise, solid):
            r = tm.score_clip(clip, p)
            assert r["color_acc"] == r["shape_acc"] == r["direction_acc"] == r["score"] == 0.0, (p, r)
            assert r["pred_color"] is None and r["pred_shape"] is None and r["pred_direction"] is None
            assert r["dynamic_degree"] == 0.0 and r["detected_frac"] == 0.0
        assert tm.background_cleanliness(noise) < 0.05
        assert tm.flicker(noise) < 0.75
        assert tm.flicker(solid) == 1.0
    assert tm.background_cleanliness(np.full((F, S, S, 3), 30, np.uint8)) == 1.0
    assert tm.background_cleanliness(np.full((F, S, S, 3), 200, np.uint8)) == 0.0


def test_time_shuffled_and_reversed_frames_break_direction():
    data = [(p, c, a) for p, c, a in _dataset(seeds=(0, 1)) if p in MOVING]
    rng = np.random.default_rng(0)
    rev = [tm.score_clip(c[::-1], p) for p, c, _ in data]
    shuf = [tm.score_clip(c[rng.permutation(F)], p) for p, c, _ in data]
    assert _acc(rev, "direction_acc") == 0.0
    assert _acc(shuf, "direction_acc") < 0.5
    # ... while colour and shape are untouched.
    assert _acc(shuf, "color_acc") == 1.0 and _acc(shuf, "shape_acc") >= 0.97
    # Shuffled motion is jerky: the mean step length grows well above the true speed.
    assert np.mean([r["dynamic_degree"] for r in shuf]) > 1.5 * np.mean([a.speed for _, _, a in data])


@pytest.mark.parametrize("perm", [(1, 2, 0), (2, 0, 1)])
def test_permuted_colour_channels_give_wrong_colour(perm):
    res = [tm.score_clip(c[..., list(perm)], p) for p, c, _ in _dataset()]
    assert _acc(res, "color_acc") <= 0.1
    assert _acc(res, "shape_acc") >= 0.97 and _acc(res, "direction_acc") >= 0.97


def test_heavy_per_frame_noise_lowers_flicker_and_background():
    rng = np.random.default_rng(0)
    data = _dataset(textured=False)[::3]
    clean = tm.aggregate([tm.score_clip(c, p) for p, c, _ in data])
    noisy = tm.aggregate(
        [
            tm.score_clip(np.clip(c + rng.normal(0, 40, c.shape), 0, 255).astype(np.uint8), p)
            for p, c, _ in data
        ]
    )
    assert clean["flicker"] - noisy["flicker"] > 0.1
    assert clean["background_clean"] == 1.0 and noisy["background_clean"] < 0.5


def test_mild_generation_noise_and_blur_are_tolerated():
    rng = np.random.default_rng(1)
    data = _dataset(textured=True)

    def blur(c):
        x = np.pad(c.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
        return sum(x[:, dy : dy + S, dx : dx + S] for dy in range(3) for dx in range(3)) / 9.0

    res = [
        tm.score_clip(np.clip(np.rint(blur(c) + rng.normal(0, 10, c.shape)), 0, 255).astype(np.uint8), p)
        for p, c, _ in data
    ]
    assert _acc(res, "color_acc") >= 0.97 and _acc(res, "direction_acc") >= 0.97
    assert _acc(res, "shape_acc") >= 0.85


# --------------------------------------------------------------------------- aggregation


def test_aggregate_by_hand():
    rs = [
        dict(
            score=1.0,
            color_acc=1.0,
            shape_acc=1.0,
            direction_acc=1.0,
            dynamic_degree=2.0,
            flicker=0.9,
            background_clean=1.0,
        ),
        dict(
            score=1 / 3,
            color_acc=1.0,
            shape_acc=0.0,
            direction_acc=0.0,
            dynamic_degree=0.0,
            flicker=0.8,
            background_clean=0.5,
        ),
        dict(
            score=2 / 3,
            color_acc=0.0,
            shape_acc=1.0,
            direction_acc=1.0,
            dynamic_degree=1.0,
            flicker=0.7,
            background_clean=0.0,
        ),
        dict(
            score=0.0,
            color_acc=0.0,
            shape_acc=0.0,
            direction_acc=0.0,
            dynamic_degree=5.0,
            flicker=0.6,
            background_clean=0.5,
        ),
    ]
    agg = tm.aggregate(rs)
    assert agg["color_acc"] == pytest.approx(0.5)
    assert agg["shape_acc"] == pytest.approx(0.5)
    assert agg["direction_acc"] == pytest.approx(0.5)
    assert agg["score"] == pytest.approx(0.5)
    assert agg["score"] == pytest.approx(np.mean([r["score"] for r in rs]))
    assert agg["dynamic_degree"] == pytest.approx(2.0)
    assert agg["flicker"] == pytest.approx(0.75)
    assert agg["background_clean"] == pytest.approx(0.5)
    assert agg["num_clips"] == 4
    assert set(tm.METRIC_KEYS) <= set(agg)
    with pytest.raises(ValueError):
        tm.aggregate([])


def test_score_clip_keys_and_score_is_mean_of_accuracies():
    clip, _ = gt_clip("a red square moving left", 0)
    r = tm.score_clip(clip, "a red square moving right")  # wrong direction only
    assert set(tm.METRIC_KEYS) <= set(r)
    assert (r["color_acc"], r["shape_acc"], r["direction_acc"]) == (1.0, 1.0, 0.0)
    assert r["score"] == pytest.approx(2 / 3)
    assert r["pred_direction"] == "left"
    with pytest.raises(ValueError):
        tm.score_clip(clip, "a purple blob")


# --------------------------------------------------------------------------- benchmark runner


def test_select_prompts_is_a_seeded_shuffle():
    all60 = tb.select_prompts()
    assert sorted(all60) == sorted(PROMPTS) and len(set(all60)) == 60
    assert tb.select_prompts(5, seed=0) == all60[:5] == tb.select_prompts(5, seed=0)
    assert tb.select_prompts(10, seed=1) != tb.select_prompts(10, seed=0)
    with pytest.raises(ValueError):
        tb.select_prompts(61)


def test_run_toybench_pipeline_with_a_perfect_sampler(monkeypatch):
    """Batching / prompt bookkeeping: a sampler that renders the true clips scores 1.0."""
    calls = []

    def fake_teacher(bb, prompts, steps=50, guidance=7.5, num_frames=8, height=32, width=32, seed=0, **kw):
        calls.append((list(prompts), seed, num_frames, height))
        vids = [gt_clip(p, seed, True, num_frames, height)[0] for p in prompts]
        return torch.from_numpy(np.stack(vids)).permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0

    monkeypatch.setattr(tb, "sample_teacher", fake_teacher)
    prompts = tb.select_prompts(9, seed=3)
    res = tb.run_toybench(
        object(),
        None,
        steps=3,
        guidance=2.0,
        prompts=prompts,
        samples_per_prompt=2,
        batch_size=4,
        seed=10,
        return_samples=True,
    )
    assert [len(c[0]) for c in calls] == [4, 4, 4, 4, 2]
    assert [c[1] for c in calls] == [10, 11, 12, 13, 14]
    assert sum((c[0] for c in calls), []) == [p for p in prompts for _ in range(2)]
    assert res["score"] == 1.0 and res["num_clips"] == 18 and res["num_prompts"] == 9
    assert res["steps"] == 3 and res["guidance"] == 2.0 and res["who"] == "teacher"
    assert [s["prompt"] for s in res["samples"]] == [p for p in prompts for _ in range(2)]
    assert list(res["per_prompt"]) == prompts
    assert all(
        v == {"score": 1.0, "color_acc": 1.0, "shape_acc": 1.0, "direction_acc": 1.0, "clips": 2}
        for v in res["per_prompt"].values()
    )
    assert res["score_ci95"] == [1.0, 1.0]
    line = tb.format_summary(res)
    assert line.startswith("ToyBench teacher steps=3 score=1.000 color=1.000 shape=1.000 direction=1.000")
    # Frame size / count come from meta when given.
    calls.clear()
    tb.run_toybench(
        object(), None, steps=1, prompts=prompts[:1], meta={"num_frames": 4, "height": 16, "width": 16}
    )
    assert calls[0][2:] == (4, 16)


def test_student_eta_comes_from_the_export_unless_given(monkeypatch):
    """A motion-guided student is sampled at its export's eta (the strength it was trained with)."""
    etas = []

    def fake_student(bb, net, prompts, steps=4, eta=0.0, seed=0, num_frames=8, height=32, width=32, **kw):
        etas.append(eta)
        vids = [gt_clip(p, seed, True, num_frames, height)[0] for p in prompts]
        return torch.from_numpy(np.stack(vids)).permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0

    monkeypatch.setattr(tb, "sample_student", fake_student)
    prompts = tb.select_prompts(2)
    res = tb.run_toybench(object(), torch.nn.Identity(), steps=4, prompts=prompts, meta={"eta": 0.05})
    assert etas == [0.05] and res["eta"] == 0.05 and res["who"] == "student"
    res = tb.run_toybench(
        object(), torch.nn.Identity(), steps=4, prompts=prompts, meta={"eta": 0.05}, eta=0.0
    )
    assert etas[-1] == 0.0 and res["eta"] == 0.0
    tb.run_toybench(
        object(), torch.nn.Identity(), steps=4, prompts=prompts
    )  # no meta: the trainer's default, 0
    assert etas[-1] == 0.0


# --------------------------------------------------------------------------- uncertainty


def _clip(prompt, c, s, d):
    return {"prompt": prompt, "color_acc": c, "shape_acc": s, "direction_acc": d, "score": (c + s + d) / 3}


def test_per_prompt_scores_by_hand():
    rs = [_clip("a", 1, 0, 1), _clip("b", 0, 0, 0), _clip("a", 1, 1, 0), _clip("a", 0, 1, 1)]
    t = tb.per_prompt_scores(rs)
    assert list(t) == ["a", "b"]
    assert t["a"]["clips"] == 3 and t["b"]["clips"] == 1
    assert t["a"]["color_acc"] == pytest.approx(2 / 3) and t["a"]["shape_acc"] == pytest.approx(2 / 3)
    assert t["a"]["direction_acc"] == pytest.approx(2 / 3) and t["a"]["score"] == pytest.approx(2 / 3)
    assert t["b"]["score"] == 0.0


def test_bootstrap_ci_against_the_normal_approximation():
    assert tb.bootstrap_ci([0.7] * 10) == (0.7, 0.7)
    assert tb.bootstrap_ci([0.3]) == (0.3, 0.3)
    v = np.random.default_rng(5).random(400)
    lo, hi = tb.bootstrap_ci(v, n_boot=4000, seed=1)
    half = 1.959964 * v.std(ddof=0) / math.sqrt(v.size)  # the CLT interval, computed independently
    assert lo < v.mean() < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert (lo + hi) / 2 == pytest.approx(v.mean(), abs=0.1 * half)
    assert tb.bootstrap_ci(v, seed=3) == tb.bootstrap_ci(v, seed=3)
    with pytest.raises(ValueError):
        tb.bootstrap_ci([])
    with pytest.raises(ValueError):
        tb.bootstrap_ci([1.0, 2.0], level=1.0)


def _report(scores: dict[str, float]) -> dict:
    return {
        "per_prompt": {
            p: {"score": s, "color_acc": 1.0, "shape_acc": s, "direction_acc": 2 * s - 1.0}
            for p, s in scores.items()
        }
    }


def test_paired_difference_identities_and_loop_reference():
    a = _report({f"p{i}": 0.5 + 0.01 * i for i in range(20)})
    same = tb.paired_difference(a, a)
    assert all(same[k] == {"diff": 0.0, "ci95": [0.0, 0.0]} for k in tb.ACCURACY_KEYS)
    # A constant shift on every prompt: the difference and both interval ends equal the shift.
    b = _report({f"p{i}": 0.4 + 0.01 * i for i in range(20)})
    d = tb.paired_difference(a, b)
    assert d["num_prompts"] == 20
    assert d["score"]["diff"] == pytest.approx(0.1) and d["score"]["ci95"] == pytest.approx([0.1, 0.1])
    assert d["direction_acc"]["diff"] == pytest.approx(0.2) and d["color_acc"]["diff"] == 0.0
    # Only shared prompts count; the interval equals a loop over the same resampling.
    rng = np.random.default_rng(2)
    c = _report({f"p{i}": float(rng.random()) for i in range(5, 30)})
    d = tb.paired_difference(a, c, n_boot=500, seed=7)
    shared = [f"p{i}" for i in range(5, 20)]
    diffs = np.array([a["per_prompt"][p]["score"] - c["per_prompt"][p]["score"] for p in shared])
    idx = np.random.default_rng(7).integers(0, len(shared), size=(500, len(shared)))
    means = sorted(float(np.mean([diffs[j] for j in row])) for row in idx)
    assert d["num_prompts"] == 15 and d["score"]["diff"] == pytest.approx(diffs.mean())
    assert d["score"]["ci95"] == pytest.approx(list(np.quantile(means, [0.025, 0.975])))
    assert d["score"]["ci95"][0] < d["score"]["diff"] < d["score"]["ci95"][1]
    with pytest.raises(ValueError, match="share no prompt"):
        tb.paired_difference(a, _report({"other": 1.0}))
    with pytest.raises(ValueError, match="no per_prompt table"):
        tb.paired_difference(a, {"score": 0.9})


def test_format_comparison_verdicts():
    base = {"who": "teacher", "steps": 4}
    res = {"who": "student", "steps": 4}
    a = _report({f"p{i}": 0.9 for i in range(10)})
    b = _report({f"p{i}": 0.8 for i in range(10)})
    line = tb.format_comparison(res, base, tb.paired_difference(a, b), "t4.json")
    assert line.startswith(
        "ToyBench student steps=4 vs teacher steps=4 (t4.json): score +0.100 [95% CI +0.100, +0.100]"
    )
    assert "(above)" in line and "10 shared prompts" in line
    assert "(below)" in tb.format_comparison(res, base, tb.paired_difference(b, a))
    mixed = _report({f"p{i}": 0.8 + (0.2 if i % 2 else -0.2) for i in range(10)})
    assert "(not separable)" in tb.format_comparison(res, base, tb.paired_difference(mixed, b))


REPORT_KEYS = {
    "score",
    "color_acc",
    "shape_acc",
    "direction_acc",
    "dynamic_degree",
    "flicker",
    "background_clean",
    "steps",
    "seconds",
    "guidance",
    "num_prompts",
    "who",
    "checkpoint",
}


def _check_report(rep, steps, who, num_prompts):
    assert REPORT_KEYS <= set(rep)
    assert rep["steps"] == steps and rep["who"] == who and rep["num_prompts"] == num_prompts
    for k in ("score", "color_acc", "shape_acc", "direction_acc", "flicker", "background_clean"):
        assert 0.0 <= rep[k] <= 1.0, k
    assert rep["dynamic_degree"] >= 0.0 and math.isfinite(rep["dynamic_degree"])
    assert rep["seconds"] > 0
    # A random network must not pass the benchmark.
    assert rep["score"] < 0.5


def test_cli_teacher_smoke(tiny_dirs, tmp_path, capsys):
    teacher, _ = tiny_dirs
    out = tmp_path / "tb.json"
    rc = tb.main(
        ["--teacher", "--checkpoint", str(teacher), "--steps", "2", "--num-prompts", "3", "--json", str(out)]
    )
    assert rc == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("ToyBench")]
    assert len(lines) == 1 and lines[0].startswith("ToyBench teacher steps=2 score=")
    rep = json.loads(out.read_text())
    _check_report(rep, 2, "teacher", 3)
    assert rep["checkpoint"] == str(teacher)
    assert (rep["num_frames"], rep["height"], rep["width"]) == (8, 32, 32)


def test_cli_student_and_teacher_of_export(tiny_dirs, tmp_path, capsys):
    _, export = tiny_dirs
    out = tmp_path / "s.json"
    # The run folder (parent of export/) is accepted as well.
    rc = tb.main(
        [
            "--checkpoint",
            str(export.parent),
            "--steps",
            "2",
            "--num-prompts",
            "4",
            "--batch-size",
            "3",
            "--samples-per-prompt",
            "2",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    rep = json.loads(out.read_text())
    _check_report(rep, 2, "student", 4)
    assert rep["num_clips"] == 8 and (rep["num_frames"], rep["height"]) == (4, 16)

    out2 = tmp_path / "t.json"
    assert (
        tb.main(
            [
                "--teacher",
                "--checkpoint",
                str(export),
                "--steps",
                "2",
                "--num-prompts",
                "2",
                "--json",
                str(out2),
            ]
        )
        == 0
    )
    rep2 = json.loads(out2.read_text())
    _check_report(rep2, 2, "teacher", 2)
    assert (rep2["num_frames"], rep2["height"]) == (4, 16)
    assert "ToyBench student steps=2" in capsys.readouterr().out


def test_cli_baseline_comparison(tiny_dirs, tmp_path, capsys):
    teacher, export = tiny_dirs
    t_json, s_json = tmp_path / "t.json", tmp_path / "s.json"
    assert (
        tb.main(
            [
                "--teacher",
                "--checkpoint",
                str(teacher),
                "--steps",
                "1",
                "--num-prompts",
                "3",
                "--json",
                str(t_json),
            ]
        )
        == 0
    )
    rep_t = json.loads(t_json.read_text())
    assert (
        len(rep_t["per_prompt"]) == 3 and rep_t["score_ci95"][0] <= rep_t["score"] <= rep_t["score_ci95"][1]
    )
    capsys.readouterr()
    assert (
        tb.main(
            [
                "--checkpoint",
                str(export),
                "--steps",
                "1",
                "--num-prompts",
                "3",
                "--json",
                str(s_json),
                "--baseline",
                str(t_json),
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith(f"ToyBench student steps=1 vs teacher steps=1 ({t_json}): score ")
    rep_s = json.loads(s_json.read_text())
    cmp = rep_s["baselines"][str(t_json)]
    assert cmp["num_prompts"] == 3
    assert cmp["score"]["diff"] == pytest.approx(rep_s["score"] - rep_t["score"])
    # Bad baselines: a clear error, exit 2, nothing run.
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"score": 0.5}))
    assert (
        tb.main(["--checkpoint", str(export), "--steps", "1", "--num-prompts", "3", "--baseline", str(old)])
        == 2
    )
    assert "has no per_prompt table" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"per_prompt": {"a purple star moving sideways": {"score": 1.0}}}))
    assert (
        tb.main(["--checkpoint", str(export), "--steps", "1", "--num-prompts", "3", "--baseline", str(other)])
        == 2
    )
    assert "shares no prompt with this run" in capsys.readouterr().err
    assert (
        tb.main(
            [
                "--checkpoint",
                str(export),
                "--steps",
                "1",
                "--num-prompts",
                "1",
                "--seed",
                "9",
                "--baseline",
                str(tmp_path / "missing.json"),
            ]
        )
        == 2
    )
    assert "cannot read the baseline report" in capsys.readouterr().err


def test_run_toybench_restores_train_mode(tiny_dirs):
    from t2vturbo.sample import load_student

    _, export = tiny_dirs
    bb, net, meta = load_student(export)
    net.train()
    res = tb.run_toybench(bb, net, steps=1, prompts=tb.select_prompts(2), meta=meta)
    assert net.training and all(m.training for m in net.modules())
    assert res["who"] == "student" and res["num_clips"] == 2


def test_cli_missing_checkpoint(tmp_path, capsys):
    assert tb.main(["--teacher", "--checkpoint", str(tmp_path), "--steps", "1"]) == 2
    assert "neither a teacher folder" in capsys.readouterr().err


def test_cli_missing_checkpoint_names_the_path_whole(tmp_path, capsys):
    """The error quotes the path as given (the first quote used to be stripped off)."""
    missing = tmp_path / "no such dir"
    assert tb.main(["--checkpoint", str(missing), "--num-prompts", "1"]) == 2
    err = capsys.readouterr().err
    assert f"error: {str(missing)!r} is not a t2vturbo student" in err
