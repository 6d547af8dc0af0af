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
    assert rp.main([str(empty), "--num-prompts", "0"]) == 2
    assert "num_prompts must be in [1, 60]" in capsys.readouterr().err


def _export_trained_on(d, data):
    (d / "export").mkdir(parents=True)
    (d / "export" / "t2vturbo_student.json").write_text(
        json.dumps({"teacher_path": "nowhere", "config": {"data": data}})
    )
    return d


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
