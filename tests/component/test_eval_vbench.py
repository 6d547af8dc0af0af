"""VBench generation CLI (t2vturbo.eval.vbench), its layout validator, and the score table.

A tiny random teacher (4 frames of 16x16) is sampled for 2 prompts x 2 samples.  Videos are read
back with t2vturbo.data.video_io.read_video (decord cannot decode 16-pixel-wide videos).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from t2vturbo.data.video_io import read_video
from t2vturbo.eval import score_table
from t2vturbo.eval.vbench import (
    MANIFEST_NAME,
    MAX_STEM_BYTES,
    PROMPT_MAP_NAME,
    VIDEOS_SUBDIR,
    check_video,
    main,
    parse_video_filename,
    plan_jobs,
    read_prompts,
    sample_counts,
    sanitize_prompt,
    validate_layout,
    video_filename,
)
from t2vturbo.eval.vbench_constants import (
    ALL_DIMS,
    DIM_WEIGHT,
    NORMALIZE,
    QUALITY_DIMS,
    REFERENCE_ROWS,
    SEMANTIC_DIMS,
    TEMPORAL_FLICKERING_PROMPTS,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "vbench"
F, H, W = 4, 16, 16
PROMPTS = ['a red circle moving "left"', "AC/DC: a blue square's path up"]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    from t2vturbo.backbones.unet3d import write_tiny_model_dir

    return write_tiny_model_dir(
        tmp_path_factory.mktemp("vb_teacher"), vae="pixel_unshuffle", block_out_channels=(16, 32)
    )


def _vbench_prompt_from_filename(name: str) -> str:
    """VBench's custom_input rule (vbench/utils.py get_prompt_from_filename), re-stated: stem minus -<digits>."""
    stem = Path(name).stem
    return re.sub(r"-\d+$", "", stem)


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "prompt, stem",
    [
        ("A 3D model of a 1800s victorian house.", "A 3D model of a 1800s victorian house."),
        (
            "Cinematic shot of Van Gogh's selfie, Van Gogh style",
            "Cinematic shot of Van Gogh's selfie, Van Gogh style",
        ),
        ('a "quoted" word', 'a "quoted" word'),
        ("rock-carved façades", "rock-carved façades"),
        ("  padded prompt \t", "padded prompt"),
        ("AC/DC live", "AC_DC live"),
        ("a/b/c", "a_b_c"),
        ("route-66", "route-66"),
    ],
)
def test_sanitize_prompt(prompt, stem):
    assert sanitize_prompt(prompt) == stem
    name = video_filename(prompt, 3)
    assert name == f"{stem}-3.mp4"
    assert "/" not in name
    assert parse_video_filename(name) == (stem, 3)
    assert _vbench_prompt_from_filename(name) == stem


def test_sanitize_edge_cases():
    with pytest.raises(ValueError):
        sanitize_prompt("   ")
    long = "é" * 300  # 600 UTF-8 bytes: cut at a character boundary
    s = sanitize_prompt(long)
    assert len(s.encode()) <= MAX_STEM_BYTES and set(s) == {"é"}
    assert len(video_filename(long, 24).encode()) <= 255
    assert parse_video_filename("x-01.mp4") is None  # VBench writes str(index): no leading zeros
    assert parse_video_filename("x.mp4") is None
    assert parse_video_filename("-0.mp4") is None
    assert parse_video_filename("x-0.avi") is None
    assert parse_video_filename("x-0-1.mp4") == ("x-0", 1)


def test_counts_seeds_and_collisions(tmp_path):
    f = tmp_path / "p.txt"
    flick = TEMPORAL_FLICKERING_PROMPTS[0]
    f.write_text(f"a cat\n\n  a dog  \na cat\n{flick}\n")
    prompts = read_prompts(f)
    assert prompts == ["a cat", "a dog", flick]
    counts = sample_counts(prompts, samples=2, flicker_samples=25, overrides={"a dog": 3})
    assert counts == {"a cat": 2, "a dog": 3, flick: 25}
    assert sample_counts(prompts, samples=5, flicker_samples=None)[flick] == 5
    with pytest.raises(ValueError):
        sample_counts(prompts, overrides={"a cow": 3})
    jobs = plan_jobs(counts, seed_base=1000)
    assert len(jobs) == 30
    assert [j.global_index for j in jobs] == list(range(30))
    assert all(j.seed == 1000 + j.global_index for j in jobs)
    assert [(j.prompt, j.index) for j in jobs[:6]] == [
        ("a cat", 0),
        ("a cat", 1),
        ("a dog", 0),
        ("a dog", 1),
        ("a dog", 2),
        (flick, 0),
    ]
    with pytest.raises(ValueError, match="same file name"):
        plan_jobs({"a/b": 1, "a_b": 1})


@pytest.mark.skipif(not (SHARED / "all_dimension.txt").exists(), reason="shared VBench data not present")
def test_vbench_prompt_suite_names_are_verbatim():
    lines = [ln.strip() for ln in (SHARED / "all_dimension.txt").read_text().splitlines() if ln.strip()]
    assert len(lines) == 946
    for p in lines:  # VBench standard mode looks up f"{prompt}-{i}.mp4" literally
        assert sanitize_prompt(p) == p
        assert len(video_filename(p, 24).encode()) <= 255
    prompts = read_prompts(SHARED / "all_dimension.txt")
    assert len(prompts) == 944  # two prompts are listed twice
    assert tuple(lines[:75]) == TEMPORAL_FLICKERING_PROMPTS
    assert sum(sample_counts(prompts, 5, flicker_samples=None).values()) == 4720  # VBench's check_count
    assert sum(sample_counts(prompts).values()) == 75 * 25 + 869 * 5


@pytest.mark.skipif(not (SHARED / "score_constants.json").exists(), reason="shared VBench data not present")
def test_constants_match_shared_json():
    c = json.loads((SHARED / "score_constants.json").read_text())
    assert tuple(c["quality_dims"]) == QUALITY_DIMS and tuple(c["semantic_dims"]) == SEMANTIC_DIMS
    assert {k: float(v) for k, v in c["dim_weight"].items()} == DIM_WEIGHT
    assert {k: tuple(v) for k, v in c["normalize"].items()} == NORMALIZE
    assert c["quality_weight"] == 4 and c["semantic_weight"] == 1
    assert c["reference_rows"] == REFERENCE_ROWS


# --------------------------------------------------------------------------- generation + validation


def _gen_args(prompts_file, teacher_dir, out, *extra):
    return [
        "--prompts",
        str(prompts_file),
        "--samples",
        "2",
        "--teacher",
        "--checkpoint",
        str(teacher_dir),
        "--steps",
        "2",
        "--num-frames",
        str(F),
        "--height",
        str(H),
        "--width",
        str(W),
        "--seed-base",
        "100",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
        *extra,
    ]


def test_teacher_generation_resume_and_validation(tmp_path, teacher_dir, capsys):
    from t2vturbo.backbones import load_backbone
    from t2vturbo.sample import sample_teacher

    pf = tmp_path / "prompts.txt"
    pf.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "out"
    assert main(_gen_args(pf, teacher_dir, out)) == 0
    vdir = out / VIDEOS_SUBDIR
    names = [video_filename(p, i) for p in PROMPTS for i in range(2)]
    assert names[0] == 'a red circle moving "left"-0.mp4'
    assert names[2] == "AC_DC: a blue square's path up-0.mp4"
    assert sorted(p.name for p in vdir.iterdir()) == sorted(names)  # nothing else in the videos folder
    assert not (out / ".partial").exists()
    for n in names:
        assert read_video(vdir / n).shape == (F, H, W, 3)

    man = json.loads((out / MANIFEST_NAME).read_text())
    assert [(v["filename"], v["seed"], v["global_index"]) for v in man["videos"]] == [
        (n, 100 + i, i) for i, n in enumerate(names)
    ]
    assert [v["prompt"] for v in man["videos"]] == [p for p in PROMPTS for _ in range(2)]
    assert all(v["status"] == "generated" for v in man["videos"])
    s = man["settings"]
    assert (s["who"], s["steps"], s["guidance"], s["num_frames"], s["height"], s["width"], s["fps"]) == (
        "teacher",
        2,
        7.5,
        F,
        H,
        W,
        8.0,
    )
    assert man["seed_base"] == 100 and "seed_base + global_index" in man["seed_rule"]
    assert man["command"][-12:] == _gen_args(pf, teacher_dir, out)[-12:]
    assert man["validation"]["ok"] is True
    assert json.loads((out / PROMPT_MAP_NAME).read_text())[names[2]] == PROMPTS[1]
    assert "RESULT: OK" in capsys.readouterr().out

    # the recorded seed is the one used: re-sample video 3 (seed 103) alone and compare
    bb = load_backbone("unet3d", str(teacher_dir))
    bb.teacher.eval()
    ref = sample_teacher(bb, [PROMPTS[1]], steps=2, guidance=7.5, num_frames=F, height=H, width=W, seed=103)[
        0
    ]
    ref_u8 = np.rint((ref.clamp(-1, 1).permute(0, 2, 3, 1).numpy() + 1) * 127.5)
    assert (
        np.abs(read_video(vdir / names[3]).astype(float) - ref_u8).max() <= 3
    )  # lossless up to YUV round-off

    # resume: existing files are kept untouched, a missing one and a truncated one are regenerated
    before = {n: (vdir / n).stat().st_mtime_ns for n in names}
    good_frames = read_video(vdir / names[1])
    (vdir / names[1]).unlink()
    data = (vdir / names[2]).read_bytes()
    (vdir / names[2]).write_bytes(data[: len(data) // 2])
    assert check_video(vdir / names[2]) is not None
    assert main(_gen_args(pf, teacher_dir, out)) == 0
    man = json.loads((out / MANIFEST_NAME).read_text())
    assert [v["status"] for v in man["videos"]] == ["existing", "generated", "regenerated", "existing"]
    assert (vdir / names[0]).stat().st_mtime_ns == before[names[0]]
    assert (vdir / names[3]).stat().st_mtime_ns == before[names[3]]
    assert np.array_equal(read_video(vdir / names[1]), good_frames)  # same seed -> same video
    assert check_video(vdir / names[2], F, H, W) is None

    # a resume with other settings would mix videos: refused
    assert main(_gen_args(pf, teacher_dir, out, "--guidance", "3.0")) == 2
    assert "other settings" in capsys.readouterr().err

    # the validator catches a wrong name, a missing sample and an unreadable file
    shutil.move(vdir / names[0], vdir / "a red circle moving left-0.mp4")  # quotes lost: wrong name
    (vdir / names[1]).unlink()  # missing
    data = (vdir / names[3]).read_bytes()
    (vdir / names[3]).write_bytes(data[: len(data) // 3])  # truncated
    (vdir / f"{sanitize_prompt(PROMPTS[1])}-2.mp4").write_bytes(data)  # index beyond the plan
    (vdir / "notes.txt").write_text("stray")
    counts = {p: 2 for p in PROMPTS}
    rep = validate_layout(vdir, counts, num_frames=F, height=H, width=W)
    assert not rep.ok
    assert sorted(rep.missing) == sorted([names[0], names[1]])
    assert [n for n, _ in rep.unreadable] == [names[3]]
    unexpected = dict(rep.unexpected)
    assert set(unexpected) == {
        "a red circle moving left-0.mp4",
        f"{sanitize_prompt(PROMPTS[1])}-2.mp4",
        "notes.txt",
    }
    assert "prompt not in the prompt list" in unexpected["a red circle moving left-0.mp4"]
    assert "index 2" in unexpected[f"{sanitize_prompt(PROMPTS[1])}-2.mp4"]
    assert rep.found == {PROMPTS[0]: 0, PROMPTS[1]: 1}
    text = rep.format()
    assert (
        "RESULT: FAILED" in text
        and "missing (2)" in text
        and "unreadable (1)" in text
        and "unexpected (3)" in text
    )

    # --validate-only, with the manifest as the plan (no --prompts), and with --no-decode
    capsys.readouterr()
    assert main(["--validate-only", "--out", str(out), "--no-progress"]) == 1
    printed = capsys.readouterr().out
    assert "RESULT: FAILED" in printed and "cannot decode" in printed
    rep2 = validate_layout(vdir, counts, decode=False)
    assert rep2.unreadable == [] and len(rep2.missing) == 2 and not rep2.ok


def test_validate_only_ok_and_missing_folder(tmp_path):
    from t2vturbo.data.video_io import write_video

    vdir = tmp_path / "out" / VIDEOS_SUBDIR
    clip = np.zeros((F, H, W, 3), np.uint8)
    for i in range(2):
        write_video(vdir / video_filename("a cat", i), clip)
    pf = tmp_path / "p.txt"
    pf.write_text("a cat\n")
    args = [
        "--validate-only",
        "--prompts",
        str(pf),
        "--samples",
        "2",
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
    ]
    assert main(args) == 0
    assert main([*args[:-1], "--num-frames", "5", "--no-progress"]) == 1  # wrong frame count
    rep = validate_layout(tmp_path / "nowhere", {"a cat": 2})
    assert not rep.ok and len(rep.missing) == 2


def test_student_generation(tmp_path, teacher_dir):
    """A student export (as Trainer.export writes it) works through the same CLI."""
    from safetensors.torch import save_file

    from t2vturbo.backbones import load_backbone
    from t2vturbo.sample import STUDENT_FILE, STUDENT_META

    bb = load_backbone("unet3d", str(teacher_dir))
    net = bb.make_student()
    export = tmp_path / "run" / "export"
    export.mkdir(parents=True)
    save_file({k: v.contiguous().float() for k, v in net.state_dict().items()}, str(export / STUDENT_FILE))
    meta = {
        "family": "unet3d",
        "teacher_path": str(Path(teacher_dir).resolve()),
        "num_ddim_timesteps": 50,
        "sigma_data": 0.5,
        "timestep_scaling": 10.0,
        "num_frames": F,
        "height": H,
        "width": W,
        "guidance": 6.0,
    }
    (export / STUDENT_META).write_text(json.dumps(meta))
    pf = tmp_path / "p.txt"
    pf.write_text("a green triangle\n")
    out = tmp_path / "out"
    assert (
        main(
            [
                "--prompts",
                str(pf),
                "--samples",
                "1",
                "--checkpoint",
                str(tmp_path / "run"),
                "--steps",
                "1",
                "--out",
                str(out),
                "--device",
                "cpu",
                "--no-progress",
                "--seed-base",
                "7",
            ]
        )
        == 0
    )
    man = json.loads((out / MANIFEST_NAME).read_text())
    assert man["settings"]["who"] == "student" and man["settings"]["guidance"] == 6.0
    assert man["settings"]["num_ddim_timesteps"] == 50 and man["videos"][0]["seed"] == 7
    assert read_video(out / VIDEOS_SUBDIR / "a green triangle-0.mp4").shape == (F, H, W, 3)


# --------------------------------------------------------------------------- score table


@pytest.mark.parametrize("name", list(REFERENCE_ROWS))
def test_reference_rows_total_from_quality_and_semantic(name):
    row = REFERENCE_ROWS[name]
    # the published Quality / Semantic are rounded to 0.01, so Total agrees to ~0.01
    assert score_table.total_score(row["quality"], row["semantic"]) == pytest.approx(row["total"], abs=0.0101)


@pytest.mark.skipif(not (SHARED / "score_constants.json").exists(), reason="shared VBench data not present")
def test_shared_reference_rows_total():
    for row in json.loads((SHARED / "score_constants.json").read_text())["reference_rows"].values():
        assert score_table.total_score(row["quality"], row["semantic"]) == pytest.approx(
            row["total"], abs=0.0101
        )


def _vbench_json(values: dict[str, float]) -> dict:
    """VBench's result format: {dimension_with_underscores: [score, per-video list]}."""
    return {
        d.replace(" ", "_"): [v, [{"video_path": "x-0.mp4", "video_results": v}]] for d, v in values.items()
    }


def test_score_table_known_outcome(tmp_path, capsys):
    lo = {d: NORMALIZE[d][0] for d in ALL_DIMS}
    hi = {d: NORMALIZE[d][1] for d in ALL_DIMS}
    assert score_table.compute_scores(hi)["total"] == pytest.approx(100.0)
    assert score_table.compute_scores(lo)["total"] == pytest.approx(0.0)

    # quality: all at max except dynamic degree at 0 -> 6 / 6.5; semantic: every dimension halfway -> 50
    raw = {d: hi[d] for d in QUALITY_DIMS}
    raw["dynamic degree"] = 0.0
    raw.update({d: (lo[d] + hi[d]) / 2 for d in SEMANTIC_DIMS})
    q, s = 100 * 6 / 6.5, 50.0
    # split over two files as VBench writes one per run; the CLI merges them
    qf, sf = tmp_path / "q_eval_results.json", tmp_path / "s_eval_results.json"
    qf.write_text(json.dumps(_vbench_json({d: raw[d] for d in QUALITY_DIMS})))
    sf.write_text(json.dumps(_vbench_json({d: raw[d] for d in SEMANTIC_DIMS})))
    scores = score_table.compute_scores(score_table.load_results([qf, sf]))
    assert scores["quality"] == pytest.approx(q)
    assert scores["semantic"] == pytest.approx(s)
    assert scores["total"] == pytest.approx((4 * q + s) / 5)  # 83.846
    assert not scores["partial"]
    assert scores["normalized"]["scene"] == pytest.approx(50.0)

    out_json = tmp_path / "scores.json"
    assert score_table.main([str(qf), str(sf), "--markdown", "--name", "toy", "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "| toy | 92.31 | 50.00 | 83.85 |" in printed
    assert "| T2V-Turbo-v2 (with MG, 16 steps) | 85.13 | 77.12 | 83.52 |" in printed
    assert "| VideoCrafter2 | 82.20 | 73.42 | 80.44 |" in printed
    assert json.loads(out_json.read_text())["total"] == pytest.approx((4 * q + s) / 5)
    assert score_table.main([str(qf), str(sf)]) == 0
    assert "83.85" in capsys.readouterr().out


def test_score_table_partial_results(tmp_path, capsys):
    f = tmp_path / "r.json"
    f.write_text(json.dumps(_vbench_json({"temporal flickering": 1.0, "dynamic degree": 0.5, "color": 0.8})))
    scores = score_table.compute_scores(score_table.load_results(f))
    assert scores["partial"] and len(scores["missing"]) == 13
    assert scores["quality"] == pytest.approx(100 * (1.0 + 0.5 * 0.5) / 1.5)
    assert scores["semantic"] == pytest.approx(80.0)
    assert score_table.main([str(f)]) == 0
    printed = capsys.readouterr().out
    assert "partial" in printed and "*" in printed
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"something": [1.0, []]}))
    assert score_table.main([str(bad)]) == 2
