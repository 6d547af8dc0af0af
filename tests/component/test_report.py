"""t2vturbo.eval.report: the evaluation of `make distill` as one command over a run dir."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

from t2vturbo.data.worlds import world_of_prompt
from t2vturbo.eval import report as rp
from t2vturbo.eval import toybench as tb
from t2vturbo.eval.guidance_response import format_table, guidance_response
from t2vturbo.sample import load_student

# 3 prompts x 2 samples, 2 steps everywhere (the reference DDIM line too), 3 guidance-response prompts
SMALL = [
    "--num-prompts",
    "3",
    "--samples-per-prompt",
    "2",
    "--steps",
    "2",
    "--reference-steps",
    "2",
    "--guidance-response-prompts",
    "3",
    "--batch-size",
    "4",
    "--device",
    "cpu",
]
SIZE = ["--num-frames", "4", "--height", "16", "--width", "16"]  # the fixture export's clip size
TEACHERS = ("teacher_at_student_w", "teacher_at_teacher_w", "teacher_reference")


@pytest.fixture(scope="module")
def reported(tiny_dirs, tmp_path_factory):
    """(teacher folder, run dir, report dict, printed lines) of one report over a copy of the fixture run."""
    teacher, export = tiny_dirs
    run = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(export.parent, run)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert rp.main([str(run), *SMALL]) == 0
    return teacher, run, json.loads((run / "report.json").read_text()), out.getvalue().splitlines()


def test_json_fields(reported):
    teacher, run, rep, _ = reported
    assert rep["run_dir"] == str(run) and rep["export"] == str(run / "export")
    assert rep["teacher"] == str(teacher) and rep["train_step"] == 0 and rep["toy_world"] is None
    s = rep["settings"]
    assert s["guidance"] == tb.DEFAULT_GUIDANCE  # the fixture's export records no guidance
    assert (s["teacher_guidance"], s["num_prompts"], s["samples_per_prompt"], s["steps"]) == (4.0, 3, 2, 2)
    assert list(rep["toybench"]) == [*TEACHERS, "student"]
    prompts = tb.select_prompts(3, 0)
    for key, r in rep["toybench"].items():
        assert list(r["per_prompt"]) == prompts and r["num_frames"] == 4 and r["height"] == r["width"] == 16
        assert {"score", "score_ci95", "color_acc", "shape_acc", "direction_acc", "label", "guidance"} <= set(
            r
        )
        assert r["who"] == ("student" if key == "student" else "teacher")
        assert r["samples_per_prompt"] == (1 if key == "teacher_reference" else 2)
    assert rep["toybench"]["teacher_at_teacher_w"]["guidance"] == 4.0
    assert (
        rep["toybench"]["teacher_at_student_w"]["guidance"] == rep["toybench"]["student"]["guidance"] == 7.5
    )
    assert list(rep["comparisons"]) == list(TEACHERS)
    for c in rep["comparisons"].values():
        assert (
            c["num_prompts"] == 3 and len(c["score"]["ci95"]) == 2 and c["label"].startswith("student minus ")
        )
    g = rep["guidance_response"]
    assert g["guidance"] == [2.0, 3.0, 4.0, 6.0] and g["num_prompts"] == 3
    # the fixture student's w projection is at its random init: w moves its samples
    assert g["response"] > 0.0
    assert rep["command"].startswith(
        f"python -m t2vturbo.eval.report {run} --teacher {teacher} --num-prompts 3 "
    )


def test_printed_lines_are_toybench_and_guidance_response_lines(reported):
    _, run, rep, lines = reported
    t, student = rep["toybench"], rep["toybench"]["student"]
    expected = [tb.format_summary(r, r["label"]) for r in t.values()]
    expected += [tb.format_comparison(student, t[k], rep["comparisons"][k], t[k]["label"]) for k in TEACHERS]
    expected += format_table(rep["guidance_response"]).splitlines()
    assert lines == [*expected, f"report: {run / 'report.json'}, {run / 'report.md'}"]
    assert lines[0].startswith("ToyBench teacher steps=2 (teacher DDIM 2, student's w=7.5) score=")


def test_comparisons_equal_toybench_own(reported, tmp_path):
    """The same numbers as `make distill`'s separate toybench runs: the teacher line from the bare teacher folder,
    the student line with --baseline reports, its paired comparisons."""
    teacher, run, rep, _ = reported
    t = rep["toybench"]
    for k in TEACHERS:  # toybench's own paired comparison of the same reports
        cmp = tb.paired_difference(t["student"], t[k], seed=0)
        assert cmp == {key: v for key, v in rep["comparisons"][k].items() if key != "label"}
    common = [
        "--num-prompts",
        "3",
        "--samples-per-prompt",
        "2",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--device",
        "cpu",
    ]
    f = tmp_path / "teacher.json"
    assert (
        tb.main(
            ["--teacher", "--checkpoint", str(teacher), "--guidance", "7.5", *common, *SIZE, "--json", str(f)]
        )
        == 0
    )
    own = json.loads(f.read_text())
    assert (
        own["per_prompt"] == t["teacher_at_student_w"]["per_prompt"]
        and own["score"] == t["teacher_at_student_w"]["score"]
    )
    bases = []
    for k in TEACHERS:
        bases += ["--baseline", str(tmp_path / f"{k}.json")]
        (tmp_path / f"{k}.json").write_text(json.dumps(t[k]))
    f = tmp_path / "student.json"
    assert tb.main(["--checkpoint", str(run), *common, "--json", str(f), *bases]) == 0
    own = json.loads(f.read_text())
    assert own["per_prompt"] == t["student"]["per_prompt"]
    for k in TEACHERS:
        cmp = {key: v for key, v in rep["comparisons"][k].items() if key != "label"}
        assert own["baselines"][str(tmp_path / f"{k}.json")] == cmp


def test_guidance_response_equals_the_module(reported):
    _, run, rep, _ = reported
    bb, net, meta = load_student(run)
    g = guidance_response(bb, net, meta, num_prompts=3, steps=2, reference_steps=2)
    # equal up to float32 round-off: the report ran in this module's fixture, and under pytest-xdist other modules'
    # tests run in the same process in between (different allocations: CPU kernels' rounding can follow alignment)
    assert _differences(g, rep["guidance_response"]) == []


def _differences(a, b, path="", rel=1e-4, abs_=1e-6) -> list[str]:
    """Where the nested results ``a`` and ``b`` differ (numbers: beyond ``rel`` / ``abs_``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a)} != {sorted(b)}"]
        return [d for k in a for d in _differences(a[k], b[k], f"{path}.{k}", rel, abs_)]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [
            d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]", rel, abs_)
        ]
    if isinstance(a, float) or isinstance(b, float):
        return [] if b == pytest.approx(a, rel=rel, abs=abs_) else [f"{path}: {a!r} != {b!r}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_markdown(reported):
    _, run, rep, _ = reported
    md = (run / "report.md").read_text()
    assert md.startswith(f"# Evaluation report: {run}\n") and md == rp.format_markdown(rep)
    assert "## ToyBench" in md and "## Student minus teacher" in md and "## Guidance response" in md
    for r in rep["toybench"].values():
        assert f"| {r['label']} | {r['score']:.3f} [" in md
    for c in rep["comparisons"].values():
        assert f"| {c['label']} | {c['score']['diff']:+.3f} |" in md
    assert "nearest teacher w" in md


def test_missing_or_invalid_run_dir_names_the_path(tmp_path, capsys):
    missing = tmp_path / "no such run"
    assert rp.main([str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"RUN_DIR {str(missing)!r} does not exist" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert rp.main([str(empty)]) == 2
    assert f"RUN_DIR {str(empty)!r} holds no usable student export" in capsys.readouterr().err
    (empty / "export").mkdir()
    (empty / "export" / "t2vturbo_student.json").write_text("{not json")
    assert rp.main([str(empty)]) == 2
    assert str(empty / "export" / "t2vturbo_student.json") in capsys.readouterr().err
    assert not (empty / "report.json").exists()
    assert rp.main([str(empty), "--num-prompts", "0"]) == 2  # refused before the export is read
    err = capsys.readouterr().err
    assert "num_prompts must be in [1, P]" in err and "(toy 60, crowd 108), got 0" in err


def _export_trained_on(d, data):
    (d / "export").mkdir(parents=True)
    (d / "export" / "t2vturbo_student.json").write_text(
        json.dumps({"teacher_path": "nowhere", "config": {"data": data}})
    )
    return d


def test_prompt_counts_are_bounded_by_the_students_world(tmp_path, capsys):
    """--num-prompts and --guidance-response-prompts count the held-out prompts of the export's world (toy 60,
    crowd 108); refused before any model is loaded (these exports have no weights, and their teacher is nowhere)."""
    assert rp.NUM_PROMPTS == {"toy": 60, "crowd": 108}
    toy = _export_trained_on(tmp_path / "toy", {"kind": "toy"})
    crowd = _export_trained_on(tmp_path / "crowd", {"kind": "toy", "world": "crowd"})
    for run, args, want in [
        (
            toy,
            ["--num-prompts", "61"],
            "num_prompts must be in [1, 60], got 61 (the toy world's held-out prompts)",
        ),
        (crowd, ["--num-prompts", "109"], "num_prompts must be in [1, 108], got 109 (the crowd world's"),
        (
            toy,
            ["--guidance-response-prompts", "61"],
            "guidance_response_prompts must be in [0, 60] (the toy world's",
        ),
        (
            crowd,
            ["--guidance-response-prompts", "109"],
            "must be in [0, 108] (the crowd world's held-out prompts)",
        ),
        (crowd, ["--guidance-response-prompts", "-1"], "guidance_response_prompts must be >= 0, got -1"),
    ]:
        assert rp.main([str(run), *args]) == 2
        assert want in capsys.readouterr().err
    # within the crowd world's bound (past the toy world's): accepted, so the report goes on to load the student
    assert rp.main([str(crowd), "--num-prompts", "108", "--guidance-response-prompts", "100"]) == 2
    err = capsys.readouterr().err
    assert "prompts" not in err and "nowhere" in err


def test_non_toy_students_are_refused_before_loading(tmp_path, capsys):
    run = _export_trained_on(
        tmp_path / "run", {"kind": "shards", "urls": "/data/webvid/wv-{000000..000001}.tar"}
    )
    assert rp.main([str(run)]) == 2
    err = capsys.readouterr().err
    assert "ToyBench measures toy-world students only" in err and "wv-000000.tar" in err and "--force" in err
    assert rp.main([str(run), "--if-toy"]) == 0  # what the Slurm job runs: say so, succeed
    assert "report: skipped" in capsys.readouterr().out
    assert not (run / "report.json").exists()


def test_toy_world_data(tmp_path):
    toy, other = tmp_path / "toy_shards", tmp_path / "other"
    toy.mkdir()
    other.mkdir()
    (toy / "index.json").write_text(json.dumps({"format": "t2vturbo-toy-shards/v1"}))
    (other / "index.json").write_text(json.dumps({"format": "precomputed/v1"}))
    tar = "toy-{000000..000001}.tar"
    assert rp.toy_world_data({"config": {"data": {"kind": "toy"}}})[0] is True
    assert rp.toy_world_data({"config": {"data": {"kind": "shards", "urls": f"{toy}/{tar}"}}})[0] is True
    mixed = {"kind": "mixture", "sources": [{"urls": f"{toy}/{tar}"}, {"urls": f"{other}/{tar}"}]}
    ok, why = rp.toy_world_data({"config": {"data": mixed}})
    assert ok is False and f"{other}/toy-000000.tar" in why
    assert rp.toy_world_data(
        {"config": {"data": {"kind": "mixture", "sources": [{"urls": f"{toy}/{tar}"}]}}}
    )[0]
    assert rp.toy_world_data({"config": {"data": {"kind": "shards", "urls": None}}})[0] is False
    assert rp.toy_world_data({})[0] is None  # no recorded config: cannot tell (the report runs)
    # an export records shard urls outside the working dir by name only (shareable); the run's own Hydra config
    # keeps the real ones, and the report reads that first
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(f"data:\n  kind: shards\n  urls: {toy}/{tar}\n")
    shared = {"config": {"data": {"kind": "shards", "urls": tar}}}
    assert rp.toy_world_data(shared)[0] is False
    assert rp.toy_world_data({"config": rp.training_config(run / "export", shared)})[0] is True
    assert rp.training_config(tmp_path / "elsewhere" / "export", shared) == shared["config"]


def test_crowd_world_data_and_the_reports_world(tmp_path):
    """Crowd-world students are toy-world students: data.kind=toy with data.world=crowd, or the shards
    `python -m data_recipes.toy_world --world crowd` writes (its index.json records the world). The report's world
    is the shards', else the config's data.world, else the teacher's MANIFEST.json world, else toy."""
    from data_recipes.toy_world import write_toy_shards

    crowd, toy = tmp_path / "crowd_shards", tmp_path / "toy_shards"
    write_toy_shards(crowd, 2, 1, frames=2, size=16, world="crowd")
    write_toy_shards(toy, 1, 1, frames=2, size=16)
    assert json.loads((crowd / "index.json").read_text())["args"]["world"] == "crowd"
    tar = "toy-{000000..000001}.tar"

    def world(data, **meta):
        ok, why = rp.toy_world_data({"config": {"data": data}})
        return ok, why, rp.report_world({**meta, "config": {"data": data}}).name

    ok, why, w = world({"kind": "toy", "world": "crowd"})
    assert (ok, w) == (True, "crowd") and "data.world=crowd" in why
    assert world({"kind": "toy"})[::2] == (True, "toy") and world({"kind": "toy", "world": "toy"})[2] == "toy"
    ok, why, w = world({"kind": "shards", "urls": f"{crowd}/{tar}", "world": "crowd"})
    assert (ok, w) == (True, "crowd") and "crowd-world shards" in why and "data.world says" not in why
    # the shards decide: a config that forgot data.world=crowd (its default, toy) still gets the crowd prompts
    ok, why, w = world({"kind": "shards", "urls": f"{crowd}/{tar}"})
    assert (ok, w) == (True, "crowd")
    ok, why, w = world({"kind": "shards", "urls": f"{toy}/toy-000000.tar", "world": "crowd"})
    assert (ok, w) == (True, "toy") and "toy-world shards" in why and "data.world says crowd" in why
    ok, why, _ = world(
        {"kind": "mixture", "sources": [{"urls": f"{crowd}/{tar}"}, {"urls": f"{toy}/toy-000000.tar"}]}
    )
    assert ok is False and "2 toy worlds" in why and f"crowd: e.g. {crowd}/toy-000000.tar" in why
    assert f"toy: e.g. {toy}/toy-000000.tar" in why
    assert world({"kind": "toy", "world": "city"})[0] is False
    assert world({"kind": "mixture", "sources": [{"urls": f"{crowd}/{tar}"}]})[::2] == (True, "crowd")
    # no recorded config: the teacher's MANIFEST.json (the shipped teachers record their world), else toy
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    assert rp.report_world({"teacher_path": str(teacher)}).name == "toy"
    (teacher / "MANIFEST.json").write_text(json.dumps({"world": "crowd"}))
    assert rp.report_world({"teacher_path": str(teacher)}).name == "crowd"
    assert rp.toy_world_data({"teacher_path": str(teacher)})[0] is None


@pytest.fixture(scope="module")
def crowd_reported(tiny_dirs, tmp_path_factory):
    """(run dir, report dict, printed lines) of the report of the fixture student, its export saying it was trained
    on the crowd world (config data.kind=toy, data.world=crowd); the run has a tensorboard dir."""
    _, export = tiny_dirs
    run = tmp_path_factory.mktemp("crowd_report") / "run"
    shutil.copytree(export.parent, run)
    meta = json.loads((run / "export" / "t2vturbo_student.json").read_text())
    meta["config"] = {"data": {"kind": "toy", "world": "crowd"}}
    (run / "export" / "t2vturbo_student.json").write_text(json.dumps(meta))
    (run / "tensorboard").mkdir()
    small = [*SMALL[:3], "1", *SMALL[4:]]  # 1 sample per prompt
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert rp.main([str(run), *small]) == 0
    return run, json.loads((run / "report.json").read_text()), out.getvalue().splitlines()


def test_crowd_report_round_trip(crowd_reported):
    """A crowd-world student's report: the crowd world's prompts, accuracies (colour, count, direction, speed),
    report.md columns and tensorboard keys. (A random teacher: the scores themselves are near 0.)"""
    run, rep, lines = crowd_reported
    assert rep["world"] == "crowd" and rep["toy_world"] is True and "data.world=crowd" in rep["data"]
    prompts = tb.select_prompts(3, 0, "crowd")
    assert all(world_of_prompt(p).name == "crowd" for p in prompts)
    accs = tb.WORLD_ACCURACY_KEYS["crowd"]
    assert accs == ("score", "color_acc", "count_acc", "direction_acc", "speed_acc")
    for r in rep["toybench"].values():
        assert r["world"] == "crowd" and list(r["per_prompt"]) == prompts
        assert set(accs) <= set(r) and "shape_acc" not in r
        for row in r["per_prompt"].values():
            assert set(row) == {*accs, "clips"}
            assert row["score"] == pytest.approx(sum(row[k] for k in accs[1:]) / 4)
    for c in rep["comparisons"].values():
        assert set(accs) <= set(c) and "shape_acc" not in c
    assert rep["guidance_response"]["world"] == "crowd" and rep["guidance_response"]["num_prompts"] == 3
    assert lines[0].startswith("ToyBench teacher steps=2 (teacher DDIM 2, student's w=7.5) score=")
    assert " count=" in lines[0] and " speed=" in lines[0] and " shape=" not in lines[0]
    md = (run / "report.md").read_text()
    assert md == rp.format_markdown(rep) and "3 held-out crowd-world prompts" in md
    assert "| run | score [95 % CI] | colour | count | direction | speed | dynamic |" in md
    assert "| comparison | score | 95 % CI | verdict | colour | count | direction | speed | prompts |" in md
    s = rep["toybench"]["student"]
    cells = " | ".join(f"{s[k]:.3f}" for k in accs[1:])
    assert (
        f"| {s['label']} | {s['score']:.3f} [{s['score_ci95'][0]:.3f}, {s['score_ci95'][1]:.3f}] | {cells} |"
        in md
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for k in (*TEACHERS, "student"):
        assert {f"final/toybench/{k}", *(f"final/toybench/{k}/{a}" for a in accs[1:])} <= tags
    assert not any("shape" in t for t in tags)
    assert acc.Scalars("final/toybench/student/count_acc")[0].value == pytest.approx(s["count_acc"])


class _Prompts(Exception):
    pass


def test_default_num_prompts_is_all_of_the_worlds(crowd_reported, tiny_dirs, monkeypatch):
    """num_prompts None (the CLI's default): every held-out prompt of the student's world, seeded shuffle."""

    def stop(bb, net, steps, guidance, *, prompts, **kw):
        raise _Prompts(prompts)

    monkeypatch.setattr(tb, "run_toybench", stop)
    run, _, _ = crowd_reported
    for d, world, n in [(run, "crowd", 108), (tiny_dirs[1], "toy", 60)]:
        with pytest.raises(_Prompts) as e:
            rp.run_report(d, guidance_response_prompts=0, seed=1, echo=None)
        (prompts,) = e.value.args
        assert len(prompts) == n and prompts == tb.select_prompts(None, 1, world)
        assert {world_of_prompt(p).name for p in prompts} == {world}


# --------------------------------------------------------------------------- the Slurm job's report step
# launch/distill.sbatch run by bash with a stand-in `srun` (runs its command) and a stand-in python whose
# `-m t2vturbo.distill` does what $T2V_FAKE_DISTILL says; every other command goes to this python.
FAKE_PY = """#!/usr/bin/env bash
if [[ "$1 $2" == "-m t2vturbo.distill" ]]; then
    case "$T2V_FAKE_DISTILL" in
        export) mkdir -p "$T2V_REPORT_DIR" && cp -r "$T2V_FAKE_EXPORT" "$T2V_REPORT_DIR/export" \\
                && touch "$T2V_REPORT_DIR/export/t2vturbo_student.json" ;;
        preempted) echo "checkpoint written; requeued Slurm job" ;;
        fail) exit 3 ;;
    esac
    exit 0
fi
exec {python} "$@"
"""
FAKE_SRUN = """#!/usr/bin/env bash
while [[ "$1" == --* ]]; do shift; done
exec "$@"
"""


def _sbatch(tmp_path, run, export, mode, report_args=""):
    bin_ = tmp_path / "bin"
    bin_.mkdir(exist_ok=True)
    (bin_ / "python").write_text(FAKE_PY.format(python=sys.executable))
    (bin_ / "srun").write_text(FAKE_SRUN)
    for f in bin_.iterdir():
        f.chmod(0o755)
    env = dict(
        os.environ,
        PATH=f"{bin_}:{os.environ['PATH']}",
        T2V_PYTHON=str(bin_ / "python"),
        T2V_REPO=str(REPO),
        T2V_REPORT_DIR=str(run),
        T2V_REPORT_ARGS=report_args,
        T2V_FAKE_DISTILL=mode,
        T2V_FAKE_EXPORT=str(export),
        SLURM_JOB_ID="7",
        SLURM_JOB_NODELIST="node0",
        SLURM_NNODES="1",
        SLURM_NTASKS="1",
        OMP_NUM_THREADS="1",
    )
    r = subprocess.run(
        ["bash", str(REPO / "launch" / "distill.sbatch"), "experiment=toy"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return r.returncode, r.stdout + r.stderr


def test_sbatch_reports_the_student_it_exported(tiny_dirs, tmp_path):
    _, export = tiny_dirs
    run = tmp_path / "run"
    rc, log = _sbatch(tmp_path, run, export, "export", " ".join(SMALL))
    assert rc == 0, log
    assert "srun exited with 0" in log and f"report of {run}" in log and "report exited with 0" in log
    assert "ToyBench student steps=2 (student 2 steps, w=7.5)" in log and "nearest teacher w" in log
    assert json.loads((run / "report.json").read_text())["settings"]["num_prompts"] == 3


def test_sbatch_skips_or_passes_failures_on(tiny_dirs, tmp_path):
    _, export = tiny_dirs
    run = tmp_path / "run"
    shutil.copytree(export, run / "export")  # an earlier run's export, older than the job
    old = (run / "export" / "t2vturbo_student.json").stat().st_mtime - 3600
    os.utime(run / "export" / "t2vturbo_student.json", (old, old))
    rc, log = _sbatch(tmp_path, run, export, "preempted")
    assert rc == 0 and f"report: skipped (this job exported no student under {run})" in log, log
    rc, log = _sbatch(tmp_path, run, export, "fail")
    assert rc == 3 and "srun exited with 3" in log and "report" not in log, log
    assert not (run / "report.json").exists()
    other = tmp_path / "webvid"  # a fresh export trained on other data: noted, not reported, the job succeeds
    _export_trained_on(other / "src", {"kind": "shards", "urls": "/data/webvid/wv-000000.tar"})
    rc, log = _sbatch(tmp_path, other / "run", other / "src" / "export", "export")
    assert rc == 0 and "report: skipped: " in log and "toy-world students only" in log, log
