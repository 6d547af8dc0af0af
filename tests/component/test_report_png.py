"""The picture of a run (report.png: training losses and ToyBench bars), --plot-only, the report without
matplotlib, and the ToyBench scores in the run's tensorboard."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from t2vturbo.eval import report as rp

needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="matplotlib is not installed (the plots extra)"
)

LINES = {  # key: (label, score, colour, shape, direction)
    "teacher_at_student_w": ("teacher DDIM 4, student's w=7.5", 0.62, 0.7, 0.6, 0.55),
    "teacher_at_teacher_w": ("teacher DDIM 4, w=4", 0.71, 0.8, 0.7, 0.63),
    "teacher_reference": ("teacher DDIM 50 reference, w=4", 0.9, 0.95, 0.9, 0.85),
    "student": ("student 4 steps, w=7.5", 0.8, 0.9, 0.8, 0.7),
}


# the crowd world's lines: (label, score, colour, count, direction, speed)
CROWD_LINES = {
    "teacher_at_student_w": ("teacher DDIM 4, student's w=7.5", 0.3, 0.6, 0.2, 0.25, 0.15),
    "teacher_at_teacher_w": ("teacher DDIM 4, w=4", 0.35, 0.65, 0.3, 0.25, 0.2),
    "teacher_reference": ("teacher DDIM 50 reference, w=4", 0.85, 0.95, 0.85, 0.8, 0.8),
    "student": ("student 4 steps, w=7.5", 0.6, 0.9, 0.5, 0.55, 0.45),
}


def fake_report(run, student=None, world=None) -> dict:
    """A report.json of known values, every field format_markdown reads (the numbers are made up). ``world``:
    None -- a toy-world report of before the worlds (no ``world`` field), or "crowd" (its accuracies, named)."""
    lines, names = (
        (CROWD_LINES, ("color_acc", "count_acc", "direction_acc", "speed_acc"))
        if world == "crowd"
        else (LINES, ("color_acc", "shape_acc", "direction_acc"))
    )
    tbl = {}
    for k, (label, score, *accs) in lines.items():
        if k == "student" and student is not None:
            score, accs = student, [student] * len(accs)
        tbl[k] = dict(
            label=label,
            score=score,
            score_ci95=[score - 0.05, min(1.0, score + 0.05)],
            **dict(zip(names, accs)),
            dynamic_degree=1.0,
            flicker=0.97,
            background_clean=0.99,
            seconds=1.5,
        )
    cmp = {
        k: dict(
            label=f"student minus {tbl[k]['label']}",
            num_prompts=12,
            score=dict(diff=tbl["student"]["score"] - tbl[k]["score"], ci95=[-0.02, 0.04]),
            **{a: dict(diff=tbl["student"][a] - tbl[k][a]) for a in names},
        )
        for k in tbl
        if k != "student"
    }
    settings = dict(num_prompts=12, samples_per_prompt=2, seed=0, device="cpu")
    return dict(
        **({"world": world} if world else {}),
        run_dir=str(run),
        export=str(run / "export"),
        teacher="teacher",
        train_step=120,
        data="data.kind=toy",
        toy_world=True,
        command="python -m t2vturbo.eval.report RUN",
        settings=settings,
        toybench=tbl,
        comparisons=cmp,
        guidance_response=None,
        seconds=12.0,
    )


def write_metrics(run, n=120, resumed_at=None):
    """metrics.jsonl of a run: loss_cd = exp(-step / 30) (+ a validation row every 40 steps); a resumed run
    logs steps after ``resumed_at`` again with value 2x."""
    with open(run / "metrics.jsonl", "w") as f:
        for s in range(1, n + 1):
            f.write(
                json.dumps({"step": s, "loss_cd": math.exp(-s / 30), "loss": math.exp(-s / 30), "lr": 1e-4})
            )
            f.write("\n")
            if s % 40 == 0:
                f.write(json.dumps({"step": s, "val/4steps/sharpness": 3.0}) + "\n")
        for s in range((resumed_at or n) + 1, n + 1):
            f.write(json.dumps({"step": s, "loss_cd": 2 * math.exp(-s / 30), "loss": 2 * math.exp(-s / 30)}))
            f.write("\n")
        f.write('{"step": 1')  # a line cut short by a kill


def _colour_pixels(png, hex_colour: str) -> int:
    a = np.asarray(Image.open(png).convert("RGB")).astype(int)
    rgb = [int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]
    return int((np.abs(a - rgb).sum(-1) <= 6).sum())


def test_loss_series_and_smoothing():
    rows = [
        {"step": 1, "loss_cd": 1.0, "loss": 1.0},
        {"step": 2, "loss_cd": "nan", "loss": 0.5},
        {"step": 2, "val/4steps/sharpness": 3.0},
        {"step": 3, "loss_cd": 0.25, "loss": 0.25},
        {"step": 3, "loss_cd": 0.125, "loss": 0.125},  # step 3 again (resumed run): the later value
    ]
    # the total equals the one term where both are logged: only the term is drawn
    assert rp.loss_series(rows) == {"loss_cd": ([1, 3], [1.0, 0.125])}
    rows[0]["loss_reward"] = -0.5
    rows[0]["loss"] = 0.5  # two terms: the total is drawn too
    assert rp.loss_series(rows) == {
        "loss_cd": ([1, 3], [1.0, 0.125]),
        "loss_reward": ([1], [-0.5]),
        "loss": ([1, 2, 3], [0.5, 0.5, 0.125]),
    }
    assert rp.smooth([1, 2, 3, 4, 5], 3) == [1.5, 2.0, 3.0, 4.0, 4.5] and rp.smooth([1, 2], 1) == [1, 2]


@needs_matplotlib
def test_loss_axes_log_scale_only_over_a_decade():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3)
    steps = list(range(1, 31))
    rp._plot_losses(axes[0], steps, [math.exp(-s / 5) for s in steps], "loss_cd")
    rp._plot_losses(axes[1], steps, [1 + 0.1 * math.sin(s) for s in steps], "loss_cd")
    rp._plot_losses(axes[2], steps, [-math.exp(-s / 5) for s in steps], "loss_reward")
    assert [ax.get_yscale() for ax in axes] == ["log", "linear", "linear"]
    # raw and a centred moving mean of 3 (30 logs)
    raw, mean = axes[0].get_lines()
    assert list(raw.get_ydata()) == [math.exp(-s / 5) for s in steps]
    np.testing.assert_allclose(mean.get_ydata(), rp.smooth(raw.get_ydata(), 3))
    assert axes[0].get_title() == "training loss: loss_cd"
    plt.close(fig)


@needs_matplotlib
def test_plot_only_renders_from_report_json_and_metrics(tmp_path, capsys):
    run = tmp_path / "run"  # no export, no teacher: nothing is loaded or evaluated
    run.mkdir()
    write_metrics(run, resumed_at=100)
    rep = fake_report(run)
    (run / "report.json").write_text(json.dumps(rep))
    assert rp.main([str(run), "--plot-only"]) == 0
    assert capsys.readouterr().err.strip() == f"report: {run / 'report.png'}"
    im = Image.open(run / "report.png")
    assert im.format == "PNG" and im.size == (1400, 600)  # 14 x 6 in at 100 dpi (one loss panel)
    a = np.asarray(im.convert("L"), dtype=float)
    assert a.std() > 20 and (a < 128).mean() > 0.01  # not blank: lines, bars and text
    # report.md now shows the picture, and report.json records it
    rep2 = json.loads((run / "report.json").read_text())
    assert rep2 == {**rep, "plot": "report.png"}
    md = (run / "report.md").read_text()
    assert md == rp.format_markdown(rep2) and "![ToyBench and training losses](report.png)\n" in md
    # the bars are the report's numbers: the student's (orange) bars scale with its scores
    full = _colour_pixels(run / "report.png", "#ff7f0e")
    (run / "report.json").write_text(json.dumps(fake_report(run, student=0.5)))
    assert rp.main([str(run), "--plot-only"]) == 0
    half = _colour_pixels(run / "report.png", "#ff7f0e")
    student = LINES["student"][1:]
    assert half / full == pytest.approx(4 * 0.5 / sum(student), rel=0.08), (
        half,
        full,
    )  # measured 0.628 / 0.625
    assert _colour_pixels(run / "report.png", rp.TEACHER_COLOURS[0]) > 500


@needs_matplotlib
def test_plot_only_without_a_report_draws_the_losses(tmp_path, capsys):
    run = tmp_path / "teacher_run"  # a run the report does not measure: losses only, no report.md
    run.mkdir()
    write_metrics(run)
    assert rp.main([str(run), "--plot-only"]) == 0
    assert Image.open(run / "report.png").size == (1400, 600)
    assert not (run / "report.md").exists() and not (run / "report.json").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    capsys.readouterr()
    assert rp.main([str(empty), "--plot-only"]) == 2
    err = capsys.readouterr().err
    assert f"nothing to plot in {str(empty)!r}" in err and "report.json" in err and "metrics.jsonl" in err
    assert rp.main([str(tmp_path / "missing"), "--plot-only"]) == 2
    assert f"RUN_DIR {str(tmp_path / 'missing')!r} does not exist" in capsys.readouterr().err
    (empty / "report.json").write_text("{}")
    assert rp.main([str(empty), "--plot-only"]) == 2
    assert f"{empty / 'report.json'} is not a report" in capsys.readouterr().err


def test_without_matplotlib_the_report_still_writes_json_and_md(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    write_metrics(run)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    rep = fake_report(run)
    paths = rp.write_report(rep, run)
    assert paths == (run / "report.json", run / "report.md") and not (run / "report.png").exists()
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("report: no report.png (") and "pip install 'matplotlib>=3.8'" in line
    assert json.loads(paths[0].read_text())["plot"] is None and "report.png" not in paths[1].read_text()
    assert rp.main([str(run), "--plot-only"]) == 2
    assert "--plot-only needs matplotlib" in capsys.readouterr().err


@pytest.mark.parametrize("world", [None, "crowd"])
def test_toybench_scores_go_to_the_runs_tensorboard(tmp_path, world):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    run.mkdir()
    rep = fake_report(run, world=world)
    rep["guidance_response"] = {"response": 0.25}
    assert rp.toybench_to_tensorboard(rep, run) is None and not (run / "tensorboard").exists()
    (run / "tensorboard").mkdir()
    assert rp.toybench_to_tensorboard(rep, run) == run / "tensorboard"
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    got = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    want = {f"final/toybench/{k}": r["score"] for k, r in rep["toybench"].items()}
    accs = ("count_acc", "speed_acc") if world == "crowd" else ("shape_acc",)  # besides colour and direction
    for k, r in rep["toybench"].items():  # the world's accuracies, each line's
        want |= {f"final/toybench/{k}/{a}": r[a] for a in ("color_acc", *accs, "direction_acc")}
    assert set(want) - set(rep["toybench"]) > {"final/toybench/student/color_acc"}
    want |= {f"final/toybench/student_minus_{k}": c["score"]["diff"] for k, c in rep["comparisons"].items()}
    want["final/guidance_response"] = 0.25
    assert got == {k: [(120, pytest.approx(v))] for k, v in want.items()}


@pytest.mark.parametrize("world", [None, "crowd"])
def test_markdown_columns_are_the_worlds_accuracies(tmp_path, world):
    """report.md's ToyBench and comparison tables: toy colour / shape / direction (a report without ``world``: from
    the accuracies its lines carry), crowd colour / count / direction / speed, each cell its line's number."""
    rep = fake_report(tmp_path, world=world)
    md = rp.format_markdown(rep)
    names = "colour | count | direction | speed" if world == "crowd" else "colour | shape | direction"
    n = 4 if world == "crowd" else 3
    assert f"| run | score [95 % CI] | {names} | dynamic | flicker | background | seconds |\n" in md
    assert "| --- " * (6 + n) + "|\n" in md
    assert f"| comparison | score | 95 % CI | verdict | {names} | prompts |\n" in md
    assert "| --- " * (5 + n) + "|\n" in md
    assert ("count" in md) == (world == "crowd") and ("shape" in md) == (world != "crowd")
    assert f"12 held-out {world or 'toy'}-world prompts" in md
    for label, score, *accs in (CROWD_LINES if world == "crowd" else LINES).values():
        lo, hi = score - 0.05, min(1.0, score + 0.05)
        cells = " | ".join(f"{a:.3f}" for a in accs)
        assert f"| {label} | {score:.3f} [{lo:.3f}, {hi:.3f}] | {cells} | 1.00 | 0.970 | 0.990 | 1.5 |" in md
    c = rep["comparisons"]["teacher_reference"]
    diffs = [CROWD_LINES["student"][i] - CROWD_LINES["teacher_reference"][i] for i in range(2, 6)]
    if world == "crowd":  # count -0.35, speed -0.35: the student's cells minus the reference's
        assert f"| {c['label']} | {c['score']['diff']:+.3f} | [-0.020, +0.040] | " in md
        assert " | ".join(f"{d:+.3f}" for d in diffs) + " | 12 |" in md


@needs_matplotlib
def test_bars_are_the_worlds_accuracies():
    """The bar groups of the report's world (toy: score, colour, shape, direction; crowd: score, colour, count,
    direction, speed); each bar the line's number."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert [k for k, _ in rp.TOYBENCH_BARS["crowd"]] == [
        "score",
        "color_acc",
        "count_acc",
        "direction_acc",
        "speed_acc",
    ]
    for world in (None, "crowd"):
        fig, (ax, note) = plt.subplots(2)
        rp._plot_toybench(ax, note, fake_report(Path("run"), world=world))
        labels = [t.get_text() for t in ax.get_xticklabels()]
        lines = CROWD_LINES if world else LINES
        want = (
            ["score", "colour", "count", "direction", "speed"]
            if world
            else ["score", "colour", "shape", "direction"]
        )
        assert labels == want
        # the bars, line by line (4 lines x the groups): their heights are the report's numbers
        heights = [p.get_height() for p in ax.patches]
        assert heights == pytest.approx([v for _, *vals in lines.values() for v in vals])
        assert f"held-out {world or 'toy'}-world prompts" in ax.get_title()
        plt.close(fig)
